/** Where a call's time went, in microseconds. */
export interface Timings {
  queueUs: number;
  instantiateUs: number;
  runUs: number;
  totalUs: number;
}

/** The outcome of a call that ran to an exit (a non-zero exit code is still a result). */
export interface RunResult {
  tool: string;
  exitCode: number;
  /** True when the tool exited 0. */
  ok: boolean;
  stdout: Buffer;
  stderr: Buffer;
  /** The last 8 KiB of each stream. */
  stdoutTail: Buffer;
  stderrTail: Buffer;
  /** Bytes written in all (more than `stdout.length` when cut at the limit). */
  stdoutTotal: number;
  stderrTotal: number;
  /** Artifacts the tool reported: name to path or value. */
  artifacts: Record<string, string>;
  timings: Timings;
  executionId?: string;
  /** True when replayed from the idempotency cache. */
  cached: boolean;
  /** What a native tool used (absent for the bundle's tools). */
  usage?: Usage;
}

/** The resources a native tool used. */
export interface Usage {
  peakMemoryBytes: number;
  userUs: number;
  systemUs: number;
  /** The limits the call ran into. */
  limitsHit: Array<'memory_limit' | 'timeout' | 'pids_limit'>;
  /** The cgroup hierarchy that limited and counted it. */
  cgroup?: 'v1' | 'v2';
}

/**
 * A tool is an entry's name, or a native binary's absolute path (run if the allowlist of
 * the driver, or of the supervisor it is connected to, allows it).
 */
export interface RunOptions {
  /** Bytes (or text, as UTF-8) for the tool's stdin. */
  stdin?: Buffer | Uint8Array | string;
  /** Environment variables, each allowed by one of the tool's `env:` capabilities. */
  env?: Record<string, string>;
  /** Time limit in milliseconds. */
  timeout?: number;
  /** Memory limit in bytes. */
  memory?: number;
  /** Idempotency key: a call repeated with the same id replays the first result. */
  executionId?: string;
  /** Arguments as an object, rendered to argv and stdin through the tool's schema. */
  params?: Record<string, unknown>;
  /** Host directories the tool sees, each `HOST:GUEST[:ro|:rw]` (read-only without a mode). */
  mounts?: string[];
  /** Run in this session's instance (`Session.id`); `Session.run` sets it. */
  session?: number;
  /**
   * Gives up on the call when it aborts (`run` only): the promise rejects with the signal's
   * reason at once, and the tool is stopped within a few milliseconds.
   */
  signal?: AbortSignal;
}

/** A tool of the bundle: what an agent framework needs to offer it to a model. */
export interface Tool {
  name: string;
  description: string;
  /** JSON Schema of the arguments, with megavisor's `x-argv` rendering hints. */
  schema: Record<string, unknown>;
  /** Capabilities it declares, e.g. `fs:read:/data/**`. */
  capabilities: string[];
  memoryBytes: number;
  timeoutMs: number;
}

export type ErrorKind =
  | 'hash_mismatch' | 'bad_signature' | 'tool_not_found' | 'not_allowed' | 'timeout'
  | 'memory_limit' | 'trap' | 'bad_request' | 'internal' | 'busy' | 'shutting_down'
  | 'cancelled' | 'session_gone' | 'connection_lost' | 'protocol';

export type ErrorCode = Uppercase<ErrorKind>;

/** A call that did not run to an exit, or a driver that could not be opened. */
export class MegavisorError extends Error {
  /** The stable snake-case kind, as in every megavisor binding. */
  readonly kind: ErrorKind;
  /** The kind in upper case: `TIMEOUT`, `HASH_MISMATCH`, ... */
  readonly code: ErrorCode;
  /** What the tool wrote before it was stopped (timeout, memory limit, trap), or null. */
  readonly partial: RunResult | null;
}

/** An embedded or connected megavisor. */
export class Driver {
  private constructor();
  readonly mode: 'embedded' | 'connected';
  /** Runs a tool without blocking the event loop; rejects with a `MegavisorError`. */
  run(tool: string, args?: string[], options?: RunOptions): Promise<RunResult>;
  /** Runs a tool and waits for it on this thread; throws a `MegavisorError`. */
  runSync(tool: string, args?: string[], options?: RunOptions): RunResult;
  /**
   * Opens a session of `tool` (an entry like `python` or `js`): one instance kept alive
   * across its calls, so what one call defines is there in the next. Throws
   * `SESSION_GONE` when no session can be kept, `BAD_REQUEST` for a tool that cannot have one.
   */
  openSession(tool: string): Session;
  /** The tools this driver can run. */
  tools(): Tool[];
}

/** One instance of a tool kept alive across calls; its calls run one at a time. */
export class Session {
  private constructor();
  readonly driver: Driver;
  readonly tool: string;
  /** The session's id (at most 53 bits). */
  readonly id: number;
  /** Runs the session's tool in its instance; rejects with `SESSION_GONE` once it has ended. */
  run(args?: string[], options?: RunOptions): Promise<RunResult>;
  /** Runs the session's tool in its instance, on this thread. */
  runSync(args?: string[], options?: RunOptions): RunResult;
  /** Ends the session; throws `SESSION_GONE` when it already has ended. */
  close(): void;
}

export interface EmbeddedOptions {
  /** The bundle directory (default: $MEGAVISOR_BUNDLE, else the bundle shipped here). */
  bundle?: string;
  /** The public key it must be signed with (default: $MEGAVISOR_TRUSTED_KEY, else its own). */
  trustedKey?: string;
  /** Calls that may run at once in this process (default: one per core). */
  maxConcurrency?: number;
  /** Native binaries (absolute paths) this driver may run, as plain processes. */
  allowBinaries?: string[];
  /** An allowlist file: one absolute path per line, `#` comments, re-read when it changes. */
  allowlist?: string;
  /** SHA-256 or BLAKE3 hex digests of binaries allowed wherever they lie. */
  allowDigests?: string[];
  /** Variables (or `PREFIX*`) a native tool may be passed. */
  nativeEnv?: string[];
  /**
   * The operator's policy: the path of a TOML file (the format of
   * docs/policy.example.toml), or the same structure as an object. The options above
   * override single keys of it; a malformed policy throws `bad_request` naming the file
   * (or `<inline>`) and the key.
   */
  policy?: string | Policy;
}

/** A size: bytes, or a string such as `"64K"`, `"16M"`, `"1G"`. */
export type Size = number | string;
/** A duration: a string such as `"500ms"`, `"30s"`, `"10m"`, `"1h"`. */
export type Span = string;

/** The policy document (every key optional; unknown keys are refused). */
export interface Policy {
  limits?: {
    max_concurrency?: number;
    max_memory?: Size;
    max_timeout?: Span;
    max_output?: Size;
    max_stdin?: Size;
    idempotency_entries?: number;
    idempotency_bytes?: Size;
    idempotency_ttl?: Span;
  };
  native?: {
    binaries?: string[];
    allowlist_file?: string;
    digests?: string[];
    env?: string[];
    default_timeout?: Span;
    cwd?: string;
  };
  sandbox?: {
    enabled?: boolean;
    jailer?: string;
    root?: string;
    read_only?: string[];
    workspace?: string;
    network?: boolean;
    tmp_size?: Size;
    uid?: number;
    gid?: number;
    hostname?: string;
    open_files?: number;
    file_size?: Size;
    cpu_seconds?: number;
  };
  cgroups?: {
    version?: 'auto' | 'v1' | 'v2' | 'none';
    cpus?: number;
    pids?: number;
    io_weight?: number;
    memory?: Size;
  };
  peers?: {
    allow_uids?: number[];
    allow_gids?: number[];
    socket_group?: string;
    mount_roots?: string[];
  };
}

/** Verifies a bundle and loads it into this process. Throws `HASH_MISMATCH`, `BAD_SIGNATURE`, ... */
export function embedded(options?: EmbeddedOptions): Driver;
/** Connects to a running supervisor (default: $MEGAVISOR_SOCKET, else the default socket). */
export function connect(socket?: string): Driver;

export const KINDS: readonly ErrorKind[];
export const DEFAULT_BUNDLE: string;
export const DEFAULT_TRUSTED_KEY: string;
