//! `megavisor-core`: a verified WebAssembly megabinary, kept warm, serving sandboxed tool
//! invocations in microseconds.
//!
//! The pieces, in the order a bundle flows through them:
//!
//! - [`manifest`]: the manifest every part of megavisor reads (v2: a bundle of modules;
//!   v1 still read);
//! - [`arguments`]: rendering JSON arguments into argv through the schema's `x-argv` hints;
//! - [`signing`]: Ed25519 signatures over the manifest bytes, and the operator's trust policy;
//! - [`bundle`]: opening a bundle, checking signature, sizes and digests before anything runs;
//! - [`engine`]: the Wasmtime engine, its fingerprint, and loading the AOT module safely;
//! - [`runtime`]: serving a call: resolving its tool, idempotency, admission (the limits
//!   every call shares), and one backend to run it: the warm pool of fresh WASI instances
//!   or a native process;
//! - [`caller`]: who a call is for and how long its caller waits (identity, deadline,
//!   cancellation), and [`mounts`]: which host directories a peer's call may see;
//! - [`native`]: allowlisted native binaries, run behind the same API;
//! - [`policy`]: the operator's policy document (limits, native tools, sandbox, cgroups,
//!   peers), read from TOML;
//! - [`session`]: instances kept alive across calls, for agents that keep state;
//! - [`pack`]: building and signing a bundle, pre-initializing modules that ask for it.
//!
//! ```no_run
//! use megavisor_core::{Request, Runtime, RuntimeOptions, TrustPolicy};
//! # fn main() -> megavisor_core::Result<()> {
//! let policy = TrustPolicy::from_key_files(&["keys/default.pub".into()])?;
//! let runtime = Runtime::open("bundle".as_ref(), &policy, RuntimeOptions::default())?;
//! let out = runtime.run(&Request::new("echo").args(["hello"]))?;
//! assert_eq!(out.stdout, b"hello\n");
//! # Ok(())
//! # }
//! ```
//!
//! This crate knows nothing of transports: the supervisor and the bindings build on it.

#![warn(missing_docs)]

mod admission;
pub mod arguments;
mod artifacts;
mod backend;
pub mod bundle;
pub mod caller;
pub mod capability;
mod capture;
mod data;
pub mod digest;
pub mod engine;
mod epoch;
mod error;
mod idempotency;
pub mod manifest;
pub mod mounts;
pub mod native;
pub mod pack;
mod peer_access;
pub mod policy;
mod pool;
mod preinit;
pub mod queue;
mod request;
mod result;
pub mod runtime;
pub mod session;
pub mod signing;
mod sleep;
mod wasm;

pub use caller::{Caller, CancelToken, Credentials, Identity};
pub use capability::{Access, Capability};
pub use capture::TAIL_BYTES;
pub use digest::Digests;
pub use engine::EngineOptions;
pub use epoch::{Stop, Stopped};
pub use error::{Error, ErrorKind, Result};
pub use manifest::{Entry, Manifest};
pub use mounts::MountRoot;
pub use policy::{Policy, PolicyError};
pub use request::{Limits, Mount, Request, ToolRef};
pub use result::{Output, ResourceUsage, Timings};
pub use runtime::{Runtime, RuntimeOptions, StartupReport};
pub use session::SessionOptions;
pub use signing::{ManifestSigner, TrustPolicy, TrustedKey};
