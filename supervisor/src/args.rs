//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use megavisor_core::pack::ModuleSource;
pub use megavisor_core::policy::{parse_duration, parse_size};

/// megavisor: microsecond tool calls from a verified, warm WebAssembly megabinary.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a tool of the bundle (or an ad-hoc module) in a fresh sandbox.
    Run(RunArgs),
    /// List the bundle's tools.
    Tools(ToolsArgs),
    /// Run the entry that stands for the native binary at PATH (by content hash), or refuse
    /// with EACCES and exit 126.
    Exec(ExecArgs),
    /// Map every executable of a container image (OCI layout or tarball) to a bundle entry,
    /// the native sandbox or nothing, and write the signed image map and the recompiled
    /// image.
    Recompile(RecompileArgs),
    /// Run PATH of a recompiled image as its image map says, or refuse with EACCES and
    /// exit 126.
    RunImage(RunImageArgs),
    /// Verify a bundle: signature, sizes and digests of every file.
    Verify(VerifyArgs),
    /// Generate an Ed25519 key pair for signing bundles.
    Keygen(KeygenArgs),
    /// Build a signed bundle from a megabinary and an entries file.
    Pack(PackArgs),
    /// Serve the bundle to local clients over a Unix socket (shared-memory rings or frames).
    Serve(ServeArgs),
    /// The policy in force: `megavisor policy show [--json]`.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Print the policy a command with these flags runs under, every default filled in.
    Show(PolicyShowArgs),
}

#[derive(Args)]
pub struct PolicyShowArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub serve: ServePolicyArgs,
    /// Print JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
}

/// Where the bundle is and whom to trust.
#[derive(Args, Clone)]
pub struct TrustArgs {
    /// Public key trusted to sign manifests (repeatable). Default: MEGAVISOR_TRUSTED_KEY, or
    /// the key the set-up generated. Keys inside the bundle itself are never trusted.
    #[arg(long = "trusted-key", value_name = "FILE")]
    pub trusted_keys: Vec<PathBuf>,
    /// Accept a manifest that is unsigned or whose signature does not verify (digests of the
    /// files are still checked).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Directory for modules recompiled for this engine (default ~/.cache/megavisor).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// A bundle directory plus trust settings.
#[derive(Args, Clone)]
pub struct BundleArgs {
    /// Bundle directory. Default: MEGAVISOR_BUNDLE, or the bundle the set-up built.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// The policy document, and flags that override single keys of it (see
/// `docs/policy.example.toml`; `megavisor policy show` prints the result).
#[derive(Args, Clone, Default)]
pub struct PolicyArgs {
    /// The policy (TOML). Default: MEGAVISOR_POLICY, else every key's default.
    #[arg(long, value_name = "FILE", env = "MEGAVISOR_POLICY")]
    pub policy: Option<PathBuf>,
    /// Allow the native binary at this absolute path (repeatable; symlinks are resolved).
    /// Adds to `native.binaries`.
    #[arg(long = "allow-binary", value_name = "PATH")]
    pub binaries: Vec<PathBuf>,
    /// Allow the binaries listed in this file: one absolute path per line, `#` comments;
    /// re-read about every 2 s when it changes (`native.allowlist_file`). Default:
    /// MEGAVISOR_ALLOWLIST.
    #[arg(long, value_name = "FILE", env = "MEGAVISOR_ALLOWLIST")]
    pub allowlist: Option<PathBuf>,
    /// Allow binaries with this SHA-256 or BLAKE3 hex digest wherever they lie (repeatable;
    /// adds to `native.digests`); once any is given, a listed path whose content matches
    /// none is refused.
    #[arg(long = "allow-digest", value_name = "HEX")]
    pub digests: Vec<String>,
    /// Environment variable a request may pass to a native tool: a name, or a prefix ending
    /// in `*` (repeatable; adds to `native.env`).
    #[arg(long = "native-env", value_name = "NAME")]
    pub native_env: Vec<String>,
    /// Run native tools in the sandbox: new user, PID, mount, UTS, IPC and network
    /// namespaces, a read-only root, uid 65534, rlimits, seccomp, a cgroup (needs root;
    /// `sandbox.enabled`).
    #[arg(long)]
    pub sandbox: bool,
    /// The exec gate in the sandbox: tools may execute only files whose content the
    /// allowlist's digests or the manifest's originals allow, enforced by Landlock
    /// (`sandbox.exec_gate`).
    #[arg(long)]
    pub exec_gate: bool,
    /// The sandbox's root directory (`sandbox.root`; default: a fresh one showing /usr,
    /// /bin, /lib, /etc read-only).
    #[arg(long, value_name = "DIR")]
    pub sandbox_root: Option<PathBuf>,
    /// A host directory mounted read-write (noexec) at /workspace, the tools' working
    /// directory (`sandbox.workspace`; default: a private tmpfs).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Keep the host's network (no network namespace; `sandbox.network`).
    #[arg(long)]
    pub network: bool,
    /// The jailer program (`sandbox.jailer`; default: megavisor-jail beside this one).
    #[arg(long, value_name = "PATH")]
    pub jailer: Option<PathBuf>,
    /// CPU quota of each native call, in cores, e.g. 0.5 (`cgroups.cpus`).
    #[arg(long, value_name = "CORES")]
    pub cpus: Option<f64>,
    /// Processes each native call may have at once (`cgroups.pids`).
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// IO weight of each native call, cgroup v2: 1-10000; v1: 10-1000 (`cgroups.io_weight`).
    #[arg(long, value_name = "N")]
    pub io_weight: Option<u32>,
    /// Memory of each native call, e.g. 512M; a request may only lower it
    /// (`cgroups.memory`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub native_memory: Option<u64>,
    /// Cgroup hierarchy of native calls: auto (v2 if it has the controllers, else v1), v1,
    /// v2 or none (`cgroups.version`).
    #[arg(long, value_name = "VERSION", value_parser = ["auto", "v1", "v2", "none"])]
    pub cgroup: Option<String>,
}

/// Policy keys only a supervisor uses: how many calls run at once, who may connect, and
/// where their mounts may lie.
#[derive(Args, Clone, Default)]
pub struct ServePolicyArgs {
    /// Calls running at once: guest threads and warm instance slots
    /// (`limits.max_concurrency`; default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_concurrency: Option<u32>,
    /// Allow peers with this uid (repeatable; adds to `peers.allow_uids`). Default: only the
    /// supervisor's own uid.
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uids: Vec<u32>,
    /// Allow peers whose primary gid is this (repeatable; adds to `peers.allow_gids`).
    #[arg(long = "allow-gid", value_name = "GID")]
    pub allow_gids: Vec<u32>,
    /// Make the socket 0660 and owned by this group (name or gid) instead of 0600
    /// (`peers.socket_group`).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// A host directory under which clients' mounts may lie: DIR[:ro|:rw] (read-only by
    /// default; repeatable; adds to `peers.mount_roots`). None by default: clients can
    /// mount nothing. A client's mounts are resolved beneath their root and opened with
    /// the client's own uid and groups.
    #[arg(long = "mount-root", value_name = "DIR[:MODE]")]
    pub mount_roots: Vec<String>,
}

/// How one invocation is sandboxed and limited.
#[derive(Args, Clone)]
pub struct InvokeArgs {
    /// Preopen a host directory: HOST:GUEST[:ro|:rw] (read-only by default; repeatable).
    #[arg(long = "mount", value_name = "HOST:GUEST[:MODE]")]
    pub mounts: Vec<String>,
    /// Pass an environment variable KEY=VALUE (repeatable; the entry must allow it).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Time limit, e.g. 500ms, 2s, 1m (default: the entry's).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Memory limit, e.g. 16M, 1G, 65536 (default: the entry's).
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Execution id: a repeated id replays the first result.
    #[arg(long = "exec-id", value_name = "ID")]
    pub exec_id: Option<String>,
    /// Print the whole result as JSON instead of passing stdout and stderr through.
    #[arg(long)]
    pub json: bool,
    /// The tool's arguments as a JSON object, checked against its schema and rendered as
    /// it says, instead of ARGS; may also follow TOOL (`run js --params '{"code": "1+1"}'`).
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    #[command(flatten)]
    pub invoke: InvokeArgs,
    /// Call a running supervisor at this socket instead of loading the bundle in-process
    /// (MEGAVISOR_SOCKET is not consulted: in-process is the default).
    #[arg(long, value_name = "PATH", conflicts_with = "module")]
    pub socket: Option<PathBuf>,
    /// Run this .wasm instead of a bundle tool. Refused unless its digest is the bundle's
    /// megabinary or --allow-unsigned is given; it gets exactly the mounts and env passed.
    #[arg(long, value_name = "FILE.wasm")]
    pub module: Option<PathBuf>,
    /// Run the tool as a native binary (TOOL is its absolute path), if the allowlist
    /// (--allow-binary, --allowlist, --allow-digest) allows it.
    #[arg(long, conflicts_with = "module")]
    pub native: bool,
    /// The tool and its arguments (with --module: the arguments only).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "TOOL [ARGS]"
    )]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct ToolsArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// Print the manifest entries as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    #[command(flatten)]
    pub invoke: InvokeArgs,
    /// The native binary to stand in for, and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "PATH [ARGS]"
    )]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct RecompileArgs {
    /// The image: an OCI image layout directory, or an image tarball (OCI or `docker save`).
    pub image: PathBuf,
    /// Directory to write the image map, `oci/` (the image layout) and `image.tar` to.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Secret key that signs the image map (the bundle's signing key, or another the
    /// runtime trusts).
    #[arg(long, value_name = "FILE", env = "MEGAVISOR_SIGNING_KEY")]
    pub key: PathBuf,
    /// The operator's map file (TOML): `[paths]` and `[digests]` tables of `{ entry =
    /// "NAME" }`, `"native"` or `"denied"`, which take precedence over the manifest's
    /// originals.
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
    /// The recompiled image's name (default: the original's).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The largest file a layer may hold, e.g. `512M` (default 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_file_size: Option<u64>,
    /// The most the image's files may add up to, over every layer (default 8G): a gzip
    /// bomb stops there instead of filling the disk.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_image_size: Option<u64>,
    /// Print the outcome, the whole map included, as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bundle: BundleArgs,
}

#[derive(Args)]
pub struct RunImageArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    #[command(flatten)]
    pub invoke: InvokeArgs,
    /// The recompiled image (layout directory, tarball, or an unpacked root).
    pub image: PathBuf,
    /// The path to execute within the image, and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "PATH [ARGS]"
    )]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle directory to verify.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the secret key; the public key goes to the same path plus `.pub`.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct PackArgs {
    /// A module and its entries file (JSON) describing its tools; repeat for each module.
    #[arg(long, value_name = "FILE.wasm:ENTRIES.json", value_parser = parse_module_source)]
    pub module: Vec<ModuleSource>,
    /// A bundle spec file (TOML) naming the bundle and its modules, instead of --module
    /// and --name.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["module", "wasm", "entries"])]
    pub spec: Option<PathBuf>,
    /// One module (with --entries): the same as --module FILE.wasm:ENTRIES.json.
    #[arg(long, value_name = "FILE.wasm", requires = "entries")]
    pub wasm: Option<PathBuf>,
    /// The entries file of --wasm.
    #[arg(long, value_name = "FILE", requires = "wasm")]
    pub entries: Option<PathBuf>,
    /// Secret key to sign the manifest with.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Bundle directory to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Bundle name recorded in the manifest.
    #[arg(long, default_value = "default")]
    pub name: String,
}

/// `FILE.wasm:ENTRIES.json`, split at its last `:`.
fn parse_module_source(value: &str) -> std::result::Result<ModuleSource, String> {
    let (wasm, entries) = value
        .rsplit_once(':')
        .filter(|(wasm, entries)| !wasm.is_empty() && !entries.is_empty())
        .ok_or_else(|| format!("{value:?} is not FILE.wasm:ENTRIES.json"))?;
    Ok(ModuleSource {
        wasm: wasm.into(),
        entries: entries.into(),
    })
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// Unix socket to listen on. Default: MEGAVISOR_SOCKET, else /run/megavisor/megavisor.sock
    /// for root and $XDG_RUNTIME_DIR/megavisor.sock (or /tmp/megavisor-UID.sock) for others.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also serve the RuntimeDriver gRPC API (runtime.v1: Execute, Discover) on this Unix socket,
    /// under the same peer policy, limits and runtime.
    #[arg(long, value_name = "PATH")]
    pub grpc_socket: Option<PathBuf>,
    #[command(flatten)]
    pub serve_policy: ServePolicyArgs,
    /// Calls that may wait for a guest thread; beyond it calls are refused as busy.
    #[arg(long, default_value_t = 64)]
    pub queue_depth: usize,
    /// Calls one client may have in flight (at most the ring's slots).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub client_in_flight: u32,
    /// Clients connected at once.
    #[arg(long, default_value_t = 256)]
    pub max_clients: usize,
    /// Slots of each ring (rounded up to a power of two).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ring_slots: u32,
    /// Bytes of each ring slot; smaller messages travel inline.
    #[arg(long, default_value = "4K", value_parser = parse_size)]
    pub ring_slot_bytes: u64,
    /// Largest call (arguments, stdin) a client may send, on the ring or the socket.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub ring_request_spill: u64,
    /// Largest reply a client is sent, on the ring or the socket; bigger outputs arrive
    /// with stdout and stderr cut to fit (tails and totals kept).
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub ring_reply_spill: u64,
    /// How long SIGTERM waits for calls in flight before exiting anyway.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How long a new connection has for its whole hello.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hello_timeout: Duration,
    /// How long a socket client may take to read one reply (or the rest of a frame it
    /// started to send) before it is disconnected.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub reply_timeout: Duration,
    /// Bytes the supervisor may hold for its clients (requests read or queued, replies not
    /// yet taken, rings); calls and connections beyond it are refused as busy.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub max_held_bytes: u64,
}
