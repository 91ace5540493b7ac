//! The one seam for running a tool. A backend ([`crate::wasm::WasmBackend`], the warm pool;
//! [`crate::native::NativeBackend`], allowlisted host binaries) admits a call it can run
//! and runs it; everything around that is the runtime's, once for every backend: resolving
//! the tool, idempotency, the limits every call shares, the call's output directory and
//! `MEGAVISOR_*` variables, the concurrency permit, and (here) turning what a run came to
//! into an [`Output`] or an error.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::artifacts;
use crate::caller::{Caller, Credentials};
use crate::capture::Captured;
use crate::epoch::{Stop, Stopped};
use crate::error::{Error, Result};
use crate::request::Request;
use crate::result::{Output, ResourceUsage, Timings};

/// One way of running a tool.
pub(crate) trait Backend {
    /// What the runtime resolved the request's tool to, for this backend.
    type Tool<'a>
    where
        Self: 'a;
    /// A call this backend has checked and may run.
    type Admitted;

    /// Checks what only this backend knows of the request (capabilities, mounts, the
    /// allowlist, its memory cap), before the call waits for a permit. Nothing runs, and
    /// nothing is created, if this fails. `peer` is the caller when it is another user than
    /// this process.
    fn admit(
        &self,
        tool: Self::Tool<'_>,
        request: &Request,
        caller: &Caller,
        peer: Option<&Credentials>,
    ) -> Result<Self::Admitted>;

    /// Where the tool sees the call's output directory `host`, made ready for it.
    fn out_dir_seen_at(&self, host: &Path) -> Result<String>;

    /// Runs an admitted call, holding a permit, until it ends or its `Stop` says so.
    fn run(&self, admitted: Self::Admitted, call: &Call<'_>) -> Result<Ran>;
}

/// A call as every backend runs it: checked by the runtime, with its permit taken.
pub(crate) struct Call<'a> {
    /// The tool's name, as the caller called it (an entry's name, or a native binary's
    /// path).
    pub name: Cow<'a, str>,
    pub request: &'a Request,
    pub caller: &'a Caller,
    /// The caller, when it is another user than this process.
    pub peer: Option<&'a Credentials>,
    pub stop: &'a Stop,
    /// The request's environment, checked, with the runtime's `MEGAVISOR_*` variables.
    pub env: Vec<(String, String)>,
    /// Bytes of stdout and of stderr kept in full.
    pub output_bytes: usize,
    /// `<out-dir>/<execution_id>/` on the host, when the call has one.
    pub out_dir: Option<PathBuf>,
    /// How long the call waited for its permit (from when it arrived).
    pub queued: Duration,
}

/// What one run of a tool came to, before it is an [`Output`] or an error.
pub(crate) struct Ran {
    /// The exit status (0 for a guest whose `_start` returned; 128 + N for a process killed
    /// by signal N).
    pub exit_code: i32,
    pub stdout: Captured,
    pub stderr: Captured,
    /// Time to create the instance (zero for a process, whose start counts as running).
    pub instantiate: Duration,
    pub run: Duration,
    /// What the kernel counted, for native tools.
    pub usage: Option<ResourceUsage>,
    pub ending: Ending,
}

/// How a run stopped.
pub(crate) enum Ending {
    /// By itself, with [`Ran::exit_code`].
    Exited,
    /// At its time limit or deadline, or because its caller gave up.
    Stopped(Stopped),
    /// At its memory cap: it asked for (or reached) `requested` bytes.
    MemoryLimit { requested: u64, limit: u64 },
    /// Out of fuel, of which it had `limit` units.
    OutOfFuel { limit: u64 },
    /// A trap, or an error of the host on the guest's behalf.
    Trapped(String),
}

/// The caller's answer for a run: its output, or the error of how it stopped carrying the
/// output so far.
pub(crate) fn settle(call: &Call<'_>, ran: Ran) -> Result<Output> {
    let execution_id = call.request.execution_id.clone();
    let mut artifacts = artifacts::from_stdout(&ran.stdout.tail);
    if let (Some(dir), Some(id)) = (&call.out_dir, &execution_id) {
        artifacts.extend(artifacts::from_file(&dir.join(format!("{id}.json"))));
    }
    let output = Output {
        tool: call.name.clone().into_owned(),
        exit_code: ran.exit_code,
        stdout: ran.stdout.head,
        stderr: ran.stderr.head,
        stdout_tail: ran.stdout.tail,
        stderr_tail: ran.stderr.tail,
        stdout_total: ran.stdout.total,
        stderr_total: ran.stderr.total,
        artifacts,
        timings: Timings {
            queue_us: call.queued.as_micros() as u64,
            instantiate_us: ran.instantiate.as_micros() as u64,
            run_us: ran.run.as_micros() as u64,
            total_us: call.caller.received.elapsed().as_micros() as u64,
        },
        execution_id,
        cached: false,
        usage: ran.usage,
    };
    match ran.ending {
        Ending::Exited => Ok(output),
        Ending::Stopped(reason) => Err(call.stop.error(reason, output, true)),
        Ending::MemoryLimit { requested, limit } => Err(Error::MemoryLimit {
            tool: output.tool.clone(),
            requested,
            limit,
            partial: Box::new(output),
        }),
        Ending::OutOfFuel { limit } => Err(Error::Timeout {
            tool: output.tool.clone(),
            limit: format!("fuel limit of {limit} units"),
            partial: Box::new(output),
        }),
        Ending::Trapped(message) => Err(Error::Trap {
            tool: output.tool.clone(),
            message,
            partial: Box::new(output),
        }),
    }
}
