//! What an invocation returns.

use std::collections::BTreeMap;

use serde::Serialize;

/// Where the time of one invocation went, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    /// From the call's arrival to its pool permit: the time it queued (in a supervisor,
    /// then for a free instance slot) and its admission checks.
    pub queue_us: u64,
    /// Creating the store and instantiating from the pre-linked module.
    pub instantiate_us: u64,
    /// Running `_start` (WASI start-up and the tool itself).
    pub run_us: u64,
    /// Everything, from the call's arrival to the returned result.
    pub total_us: u64,
}

/// The outcome of a tool that ran to its exit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Output {
    /// The entry that ran.
    pub tool: String,
    /// The guest's exit code (0 when `_start` returned normally).
    pub exit_code: i32,
    /// Stdout, up to the output limit.
    #[serde(skip)]
    pub stdout: Vec<u8>,
    /// Stderr, up to the output limit.
    #[serde(skip)]
    pub stderr: Vec<u8>,
    /// The last 8 KiB of stdout.
    #[serde(skip)]
    pub stdout_tail: Vec<u8>,
    /// The last 8 KiB of stderr.
    #[serde(skip)]
    pub stderr_tail: Vec<u8>,
    /// Total bytes written to stdout (more than `stdout.len()` when truncated).
    pub stdout_total: u64,
    /// Total bytes written to stderr.
    pub stderr_total: u64,
    /// Artifacts reported by the tool (last-line JSON and `<out-dir>/<execution_id>.json`).
    pub artifacts: BTreeMap<String, String>,
    /// Where the time went.
    pub timings: Timings,
    /// The execution id, when the request had one.
    pub execution_id: Option<String>,
    /// True when this result was replayed from the idempotency cache.
    pub cached: bool,
    /// What a native tool used (`None` for the megabinary's entries).
    pub usage: Option<ResourceUsage>,
}

/// The resources a native tool used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceUsage {
    /// Peak memory of the call's cgroup, or else the largest resident set of one process.
    pub peak_memory_bytes: u64,
    /// User CPU time of every process of the call.
    pub user_us: u64,
    /// System CPU time of every process of the call.
    pub system_us: u64,
    /// The limits the call ran into: `memory_limit`, `timeout`, `pids_limit`.
    pub limits_hit: Vec<&'static str>,
    /// The cgroup hierarchy that limited and counted the call (`v1`, `v2`), if any.
    pub cgroup: Option<&'static str>,
}

impl Output {
    /// Whether the tool exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Whether stdout was cut at the output limit.
    pub fn stdout_truncated(&self) -> bool {
        self.stdout_total > self.stdout.len() as u64
    }

    /// Whether stderr was cut at the output limit.
    pub fn stderr_truncated(&self) -> bool {
        self.stderr_total > self.stderr.len() as u64
    }
}
