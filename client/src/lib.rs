//! The client of a running `megavisor serve`: one connection, shared safely by every thread
//! of the process, over the shared-memory ring (the fast path) or plain socket frames.
//!
//! ```no_run
//! use megavisor_client::{Call, Client};
//!
//! let client = Client::connect(Client::default_socket())?;
//! let output = client.call(&Call::new("echo").args(["hello"]))?;
//! assert_eq!(output.stdout, b"hello\n");
//! # Ok::<(), megavisor_client::Error>(())
//! ```
//!
//! Every binding (C, Python, Node) wraps this crate; its API is the shape they expose. It
//! contains no engine: it speaks [`megavisor_wire`] and nothing else.

mod call;
mod connection;
mod error;
mod future;
pub mod kinds;
mod link;

pub use call::Call;
pub use connection::{Client, ConnectOptions, Transport};
pub use error::{Error, ErrorKind, Result};
pub use future::{CallFuture, Canceller};
pub use kinds::{KINDS, KindInfo};
pub use megavisor_wire::proto::{Output, Timings, Tool, ToolList};
