//! `megavisor serve`: a long-lived supervisor that keeps the verified megabinary and its
//! instance pool warm and serves calls over a Unix socket, through per-client shared-memory
//! rings or plain socket frames.
//!
//! Threads: the main thread waits for signals (SIGTERM/SIGINT drain, SIGHUP reloads); one
//! thread accepts connections; each connection has a reader; a fixed pool of guest threads
//! under a seccomp filter runs the calls.

mod budget;
mod connection;
mod executor;
mod fit;
pub(crate) mod grpc;
mod listener;
mod peers;
mod seccomp;
mod stragglers;
mod systemd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use megavisor_core::{Caller, Error, Policy, Result, Runtime, StartupReport};
use megavisor_wire::proto::RingGeometry;
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

pub use peers::PeerPolicy;

use crate::args::ServeArgs;
use crate::commands::{bundle_dir, policy, trust_policy};
use executor::Executor;
use seccomp::GuestFilter;
use stragglers::StragglerWatch;

/// The supervisor's settings, fixed at start.
pub struct ServeConfig {
    pub socket: PathBuf,
    pub grpc_socket: Option<PathBuf>,
    pub socket_group: Option<u32>,
    pub peers: PeerPolicy,
    pub max_concurrency: u32,
    pub queue_depth: usize,
    pub client_in_flight: u32,
    pub max_clients: usize,
    pub ring: RingGeometry,
    pub drain_timeout: Duration,
    pub max_held_bytes: usize,
    pub hello_timeout: Duration,
    pub reply_timeout: Duration,
}

/// What every connection and guest thread shares.
pub struct Shared {
    runtime: RwLock<Arc<Runtime>>,
    executor: Executor,
    /// The bytes held for clients, under `--max-held-bytes`.
    budget: Arc<budget::Budget>,
    filter: Arc<GuestFilter>,
    stragglers: StragglerWatch,
    draining: AtomicBool,
    config: ServeConfig,
    /// Start of the supervisor's clock (see [`Shared::clock_us`]).
    epoch: Instant,
}

impl Shared {
    /// The runtime new calls use (replaced whole on reload; calls in flight keep theirs).
    fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().expect("runtime lock").clone()
    }

    /// Microseconds since the supervisor started: a cheap, comparable timestamp to keep
    /// in an atomic.
    fn clock_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// `megavisor/<version>`, as handshakes report it.
fn server_name() -> String {
    format!("megavisor/{}", env!("CARGO_PKG_VERSION"))
}

/// Runs the supervisor until SIGTERM or SIGINT has drained it.
pub fn run(args: ServeArgs) -> Result<ExitCode> {
    // Blocked before any thread starts, so every thread inherits the mask and the signals
    // wait for the main thread's sigwait.
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]);
    signals
        .thread_block()
        .map_err(|e| internal("block signals", e))?;

    let policy = policy::load(&args.bundle.policy, Some(&args.serve_policy))?;
    let config = args.config(&policy)?;
    // The guest threads' filter is installed once per thread, at start: a new
    // `seccomp.filters` on SIGHUP reaches sandboxed tools, and guest threads at the next start.
    let filters = policy.seccomp_filters()?;
    let filter = GuestFilter::compile(filters.as_deref())
        .map_err(|e| internal("compile the seccomp filter", e))?;
    let filter = Arc::new(filter);
    let runtime = open(&args, &policy)?;
    let startup = runtime.startup();
    let executor = Executor::start(
        config.max_concurrency as usize,
        config.queue_depth,
        filter.clone(),
    )
    .map_err(|e| internal("start the guest threads", e))?;
    let listener = listener::bind(&config.socket, config.socket_group)?;
    let shared = Arc::new(Shared {
        runtime: RwLock::new(Arc::new(runtime)),
        executor,
        budget: budget::Budget::new(config.max_held_bytes),
        filter,
        stragglers: StragglerWatch::default(),
        draining: AtomicBool::new(false),
        config,
        epoch: Instant::now(),
    });
    StragglerWatch::start(&shared).map_err(|e| internal("start the straggler watch", e))?;
    listener::spawn_acceptor(shared.clone(), listener)
        .map_err(|e| internal("start the acceptor thread", e))?;
    if let Some(path) = &shared.config.grpc_socket {
        let grpc_listener = listener::bind(path, shared.config.socket_group)?;
        grpc::spawn(shared.clone(), grpc_listener)
            .map_err(|e| internal("start the gRPC server", e))?;
    }

    announce_ready(&shared, &args, &startup);
    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => reload(&shared, &args, &policy),
            Ok(signal) => {
                info!("{signal} received: draining");
                return Ok(drain(&shared));
            }
            Err(e) => warn!("sigwait failed: {e}"),
        }
    }
}

/// Verifies the bundle and opens it under `policy`.
fn open(args: &ServeArgs, policy: &Policy) -> Result<Runtime> {
    let dir = bundle_dir(&args.bundle);
    let trust = trust_policy(&args.bundle.trust)?;
    let mut options = policy.runtime_options(args.bundle.trust.cache_dir.clone())?;
    options.max_stdin_bytes = options.max_stdin_bytes.min(args.ring_request_spill);
    Runtime::open(&dir, &trust, options)
}

fn announce_ready(shared: &Shared, args: &ServeArgs, startup: &StartupReport) {
    let runtime = shared.runtime();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let grpc = match &shared.config.grpc_socket {
        Some(path) => format!(" grpc_socket={}", path.display()),
        None => String::new(),
    };
    println!(
        "megavisor ready: socket={}{grpc} bundle={} modules={} tools={} verify_ms={:.2} load_ms={:.2} warm_ms={:.2} module={:?} guest_threads={} pid={}",
        shared.config.socket.display(),
        bundle_dir(&args.bundle).display(),
        runtime.manifest().modules.len(),
        runtime.entries().len(),
        ms(startup.verify),
        ms(startup.load),
        ms(startup.warm),
        startup.origin,
        shared.config.max_concurrency,
        std::process::id(),
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    systemd::notify("READY=1");
}

/// Reads the policy and verifies and warms the bundle again; only a runtime that is
/// entirely ready replaces the serving one. On any failure (a broken policy included) the
/// old one keeps serving. `started` is the policy the supervisor started with: its keys
/// that shape the process (guest threads, peers, the socket's group) take a restart.
fn reload(shared: &Shared, args: &ServeArgs, started: &Policy) {
    info!(
        "SIGHUP received: reloading {}",
        bundle_dir(&args.bundle).display()
    );
    systemd::notify("RELOADING=1");
    let reopened = policy::load(&args.bundle.policy, Some(&args.serve_policy)).and_then(|new| {
        let at_start = (&started.peers, started.limits.max_concurrency, &started.seccomp);
        if (&new.peers, new.limits.max_concurrency, &new.seccomp) != at_start {
            warn!(
                "the policy's [peers], limits.max_concurrency and the guest threads' [seccomp] take effect at the next start; the rest applies now"
            );
        }
        open(args, &new)
    });
    match reopened {
        Ok(runtime) => {
            let startup = runtime.startup();
            *shared.runtime.write().expect("runtime lock") = Arc::new(runtime);
            info!(
                verify_ms = startup.verify.as_secs_f64() * 1e3,
                load_ms = startup.load.as_secs_f64() * 1e3,
                warm_ms = startup.warm.as_secs_f64() * 1e3,
                "reloaded: new calls use the new bundle and policy"
            );
        }
        Err(err) => error!("reload failed, still serving the previous bundle and policy: {err}"),
    }
    systemd::notify("READY=1");
}

/// Refuses new calls, waits for those in flight (up to the drain timeout), removes the
/// socket and reports how it went.
fn drain(shared: &Shared) -> ExitCode {
    systemd::notify("STOPPING=1");
    shared.draining.store(true, Ordering::Release);
    let _ = std::fs::remove_file(&shared.config.socket);
    if let Some(path) = &shared.config.grpc_socket {
        let _ = std::fs::remove_file(path);
    }
    let deadline = Instant::now() + shared.config.drain_timeout;
    while shared.executor.outstanding() > 0 {
        if Instant::now() >= deadline {
            warn!(
                "drain timeout: {} calls still running are abandoned",
                shared.executor.outstanding()
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    info!("drained: every call in flight has been answered");
    ExitCode::SUCCESS
}

/// What a call's job hands its deliverer: the engine's outcome, or `None` when the engine
/// panicked (a bug, logged, that costs only this call).
type Delivered = Option<Result<megavisor_core::Output>>;

/// The job of one call: it runs `request` for `caller` and hands the outcome to `deliver`;
/// should the call's end come while it is queued, `deliver` gets the error saying so
/// instead, at that moment.
fn call_job(
    runtime: Arc<Runtime>,
    request: megavisor_core::Request,
    caller: Caller,
    deliver: impl FnOnce(Delivered) + Send + 'static,
) -> Box<dyn executor::Job> {
    Box::new(CallJob {
        runtime,
        request,
        caller,
        deliver,
    })
}

/// See [`call_job`].
struct CallJob<F> {
    runtime: Arc<Runtime>,
    request: megavisor_core::Request,
    caller: Caller,
    deliver: F,
}

impl<F: FnOnce(Delivered) + Send + 'static> executor::Job for CallJob<F> {
    fn stop(&self) -> megavisor_core::Stop {
        // A request whose limit cannot be settled fails at once when it runs; while it
        // waits, the runtime's own maximum is as long as it may wait.
        let limit = self
            .runtime
            .time_limit(&self.request)
            .unwrap_or(megavisor_core::RuntimeOptions::default().max_timeout);
        megavisor_core::Stop::new(&self.caller, limit)
    }

    fn run(self: Box<Self>, permit: executor::Place) {
        let outcome = run_call(&self.runtime, &self.request, &self.caller, permit);
        (self.deliver)(outcome);
    }

    fn ended(self: Box<Self>, reason: megavisor_core::Stopped) {
        let tool = match &self.request.tool {
            megavisor_core::ToolRef::Name(name) | megavisor_core::ToolRef::Digest(name) => {
                name.clone()
            }
            megavisor_core::ToolRef::Native(path) => path.display().to_string(),
        };
        let id = self.request.execution_id.clone();
        let error = self.stop().ended_before_start(reason, &tool, id);
        (self.deliver)(Some(Err(error)));
    }
}

/// Runs a call on the engine for `caller`, then frees its place in the pool before anything
/// is sent back (see `executor`). `None` when the engine panicked: a bug, logged here, that
/// costs only this call.
fn run_call(
    runtime: &Runtime,
    request: &megavisor_core::Request,
    caller: &Caller,
    permit: executor::Place,
) -> Option<Result<megavisor_core::Output>> {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.run_for(request, caller)
    }));
    drop(permit);
    if ran.is_err() {
        error!("the engine panicked running {:?}", request.tool);
    }
    ran.ok()
}

fn internal(action: &'static str, err: impl std::fmt::Display) -> Error {
    Error::Io {
        path: PathBuf::from("megavisor serve"),
        action,
        message: err.to_string(),
    }
}

impl ServeArgs {
    /// Checks the flags and turns them into the supervisor's settings.
    fn config(&self, policy: &Policy) -> Result<ServeConfig> {
        let bad = |m: String| Error::BadRequest(m);
        let u32_of = |name: &str, v: u64| {
            u32::try_from(v).map_err(|_| bad(format!("--{name} {v} is too large")))
        };
        let ring = megavisor_wire::ring::Layout::geometry(
            self.ring_slots,
            u32_of("ring-slot-bytes", self.ring_slot_bytes)?,
            u32_of("ring-request-spill", self.ring_request_spill)?,
            u32_of("ring-reply-spill", self.ring_reply_spill)?,
        );
        megavisor_wire::ring::Layout::new(&ring).map_err(|e| bad(e.to_string()))?;
        let socket_group = match &policy.peers.socket_group {
            None => None,
            Some(group) => Some(match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => nix::unistd::Group::from_name(group)
                    .ok()
                    .flatten()
                    .ok_or_else(|| bad(format!("--socket-group {group:?}: no such group")))?
                    .gid
                    .as_raw(),
            }),
        };
        Ok(ServeConfig {
            socket: self
                .socket
                .clone()
                .unwrap_or_else(megavisor_client::Client::default_socket),
            grpc_socket: self.grpc_socket.clone(),
            socket_group,
            peers: PeerPolicy::new(
                policy.peers.allow_uids.clone(),
                policy.peers.allow_gids.clone(),
            ),
            max_concurrency: policy.limits.max_concurrency,
            queue_depth: self.queue_depth,
            client_in_flight: self.client_in_flight,
            max_clients: self.max_clients,
            ring,
            drain_timeout: self.drain_timeout,
            hello_timeout: self.hello_timeout,
            reply_timeout: self.reply_timeout,
            max_held_bytes: usize::try_from(self.max_held_bytes).map_err(|_| {
                bad(format!(
                    "--max-held-bytes {} is too large",
                    self.max_held_bytes
                ))
            })?,
        })
    }
}
