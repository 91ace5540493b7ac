'use strict';
/**
 * megavisor: run WebAssembly tools in microseconds, each call in a fresh sandbox.
 *
 *   const { embedded, connect } = require('megavisor');
 *   const r = await embedded().run('echo', ['hello']);   // r.exitCode, r.stdout (Buffer), ...
 *
 * Two drivers with the same methods, results and errors: `embedded()` runs the engine in
 * this process on the bundle shipped in this package; `connect()` talks to a running
 * `megavisor serve` through its shared-memory ring. `run` does not block the event loop
 * (connected, sending waits only while the connection has its maximum of calls in flight);
 * `runSync` waits on the calling thread.
 */

const path = require('node:path');
const native = loadAddon();

function loadAddon() {
  try {
    return require('./megavisor.node');
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND') throw err;
    throw new Error(`megavisor: ${path.join(__dirname, 'megavisor.node')} is missing: this package is built from the megavisor repository with \`make node-package\``);
  }
}

/** The bundle shipped in this package ($MEGAVISOR_BUNDLE overrides it). */
const DEFAULT_BUNDLE = path.join(__dirname, 'bundle');
/** The key that signed it, beside it: a key inside the bundle it verifies is never trusted. */
const DEFAULT_TRUSTED_KEY = path.join(__dirname, 'bundle.pub');

/** The error kinds, from the one table of the native module; `err.code` is CODES[kind]. */
const KINDS = native.errorKinds().map((k) => k.name);
const CODES = Object.fromEntries(native.errorKinds().map((k) => [k.name, k.code]));

/** A call that did not run to an exit, or a driver that could not be opened. */
class MegavisorError extends Error {
  constructor(kind, message, partial) {
    super(message);
    this.name = 'MegavisorError';
    /** The stable snake-case kind, as in every megavisor binding. */
    this.kind = kind;
    /** The kind in upper case: `TIMEOUT`, `HASH_MISMATCH`, ... */
    this.code = CODES[kind];
    /** What the tool wrote before it was stopped (timeout, memory limit, trap), or null. */
    this.partial = partial ?? null;
  }
}

function failure(error) {
  const kind = KINDS.includes(error.kind) ? error.kind : 'internal';
  return new MegavisorError(kind, error.message, error.partial);
}

function settle(outcome) {
  if (outcome.error) throw failure(outcome.error);
  return outcome.result;
}

function nativeOptions(options) {
  if (options === undefined || options === null) return undefined;
  if (typeof options !== 'object') throw new TypeError('options must be an object');
  const { stdin, env, timeout, memory, executionId, params, mounts, session, signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError('options.signal must be an AbortSignal');
  }
  return {
    stdin: typeof stdin === 'string' ? Buffer.from(stdin) : stdin,
    env,
    timeout,
    memory,
    executionId,
    paramsJson: params === undefined || params === null ? undefined : JSON.stringify(params),
    mounts,
    session,
  };
}

function argv(args) {
  if (args === undefined) return [];
  if (!Array.isArray(args)) throw new TypeError('args must be an array of strings');
  return args;
}

/** An embedded or connected megavisor. Safe to use from any number of concurrent calls. */
class Driver {
  #native;

  /** @internal Use `embedded()` or `connect()`. */
  constructor(nativeDriver) {
    this.#native = nativeDriver;
  }

  /** `'embedded'` or `'connected'`. */
  get mode() {
    return this.#native.mode;
  }

  /**
   * Runs a tool without waiting for it on the event loop; rejects with a `MegavisorError`.
   * An `options.signal` that aborts gives up on the call: the promise rejects with the
   * signal's reason at once, and the tool is stopped within a few milliseconds.
   */
  async run(tool, args, options) {
    const signal = options?.signal;
    const call = nativeOptions(options);
    if (signal === undefined) {
      return settle(await this.#native.run(tool, argv(args), call));
    }
    signal.throwIfAborted();
    const cancellation = new native.Cancellation();
    let onAbort;
    const aborted = new Promise((_, reject) => {
      onAbort = () => {
        cancellation.cancel();
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      const outcome = this.#native.run(tool, argv(args), call, cancellation);
      return settle(await Promise.race([outcome, aborted]));
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** Runs a tool and waits for it on this thread; throws a `MegavisorError`. */
  runSync(tool, args, options) {
    return settle(this.#native.runSync(tool, argv(args), nativeOptions(options)));
  }

  /**
   * Opens a session of `tool` (an entry like `python` or `js`): one instance kept alive
   * across the session's calls, so what one call defines is there in the next. It holds one
   * of the pool's places until closed, idle too long, or ended by a call that failed other
   * than by exiting; a call on it after that fails with `SESSION_GONE`.
   */
  openSession(tool) {
    const outcome = this.#native.openSession(tool);
    if (outcome.error) throw failure(outcome.error);
    return new Session(this, tool, outcome.session);
  }

  /** @internal Closes session `id` (use `Session.close`). */
  closeSession(id) {
    const outcome = this.#native.closeSession(id);
    if (outcome.error) throw failure(outcome.error);
  }

  /** The tools this driver can run, each with its description and argument schema. */
  tools() {
    const outcome = this.#native.tools();
    if (outcome.error) throw failure(outcome.error);
    return outcome.tools.map((tool) => ({
      name: tool.name,
      description: tool.description,
      schema: JSON.parse(tool.schemaJson),
      capabilities: tool.capabilities,
      memoryBytes: tool.memoryBytes,
      timeoutMs: tool.timeoutMs,
    }));
  }
}

/** One instance of a tool kept alive across calls (`Driver.openSession`). */
class Session {
  constructor(driver, tool, id) {
    this.driver = driver;
    this.tool = tool;
    this.id = id;
  }

  /** Runs the session's tool in its instance (options as `Driver.run`). */
  run(args, options) {
    return this.driver.run(this.tool, args, { ...options, session: this.id });
  }

  /** Runs the session's tool in its instance, on this thread. */
  runSync(args, options) {
    return this.driver.runSync(this.tool, args, { ...options, session: this.id });
  }

  /** Ends the session; throws `SESSION_GONE` when it already has ended. */
  close() {
    this.driver.closeSession(this.id);
  }
}

function opened(result) {
  if (result instanceof native.Driver) return new Driver(result);
  throw failure(result);
}

/**
 * Verifies a bundle and loads it into this process: `options.bundle` (else
 * $MEGAVISOR_BUNDLE, else the bundle shipped here), trusting `options.trustedKey` (else
 * $MEGAVISOR_TRUSTED_KEY, else the key that signed the shipped bundle). Native tools (named
 * by absolute path) run, as plain processes, only if `allowBinaries`, `allowlist` or
 * `allowDigests` allow them; `nativeEnv` names the variables they may be passed.
 * `options.policy` is the operator's policy: the path of a TOML file (the format of
 * docs/policy.example.toml), or the same structure as an object; the options above
 * override single keys of it.
 */
function embedded(options = {}) {
  const { bundle, trustedKey, maxConcurrency, allowBinaries, allowlist, allowDigests, nativeEnv, policy } = options;
  const nativeTools = { allowBinaries, allowlist, allowDigests, nativeEnv };
  const policyPath = typeof policy === 'string' ? policy : undefined;
  const policyJson = policy !== undefined && typeof policy !== 'string' ? JSON.stringify(policy) : undefined;
  return opened(native.Driver.embedded(bundle, trustedKey, DEFAULT_BUNDLE, DEFAULT_TRUSTED_KEY, maxConcurrency,
    nativeTools, policyPath, policyJson));
}

/** Connects to a running supervisor at `socket` (else $MEGAVISOR_SOCKET, else the default). */
function connect(socket) {
  return opened(native.Driver.connect(socket));
}

module.exports = { embedded, connect, Driver, Session, MegavisorError, KINDS, DEFAULT_BUNDLE, DEFAULT_TRUSTED_KEY };
