'use strict';
// The Node cases of bench/run, all in one run, one JSON object per case on stdout.
//
//   node bench.js SOCKET ITERATIONS SPAWNS     ($MEGAVISOR_BUNDLE, $MEGAVISOR_TRUSTED_KEY)
//
// `true`, and `wc -l` on 4 KiB of stdin, through the installed `megavisor` package, embedded
// and connected (`await run()` and `runSync()`), against what a Node user would otherwise
// do, measured in the same run: `child_process.spawnSync` of the native program (the peer),
// and `node:wasi` running the same megabinary `.wasm` in a new `WebAssembly.Instance` per
// call on a module compiled once. The code cases run the `js` tool beside `node -e` and
// quickjs-emscripten.

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { WASI } = require('node:wasi');
const megavisor = require('megavisor');

const INPUT = `${'a'.repeat(63)}\n`.repeat(64); // 4 KiB, 64 lines

function report(name, samples, wallMs, peers, extra = {}) {
  samples.sort((a, b) => a - b);
  const at = (p) => samples[Math.round((samples.length - 1) * p)];
  const p50 = at(0.5);
  const line = {
    case: name,
    p50_us: +p50.toFixed(2),
    p99_us: +at(0.99).toFixed(2),
    ops_per_s: +(samples.length / (wallMs / 1e3)).toFixed(2),
    iterations: samples.length,
  };
  const keys = ['peer', 'wasm_peer'];
  Object.entries(peers).forEach(([peer, peerP50], i) => {
    line[keys[i]] = peer;
    line[`speedup_vs_${keys[i]}`] = +(peerP50 / p50).toFixed(2);
  });
  console.log(JSON.stringify({ ...line, ...extra }));
  return p50;
}

const nowUs = () => Number(process.hrtime.bigint()) / 1e3;

function timed(op, n) {
  const samples = new Array(n);
  for (let i = 0; i < n; i++) {
    const t = nowUs();
    op();
    samples[i] = nowUs() - t;
  }
  return samples;
}

function measure(name, op, n, peers = {}) {
  timed(op, Math.max(Math.floor(n / 10), 1));
  const started = nowUs();
  const samples = timed(op, n);
  return report(name, samples, (nowUs() - started) / 1e3, peers);
}

async function measureAsync(name, op, n, peers) {
  for (let i = 0; i < Math.max(Math.floor(n / 10), 1); i++) await op();
  const samples = new Array(n);
  const started = nowUs();
  for (let i = 0; i < n; i++) {
    const t = nowUs();
    await op();
    samples[i] = nowUs() - t;
  }
  return report(name, samples, (nowUs() - started) / 1e3, peers);
}

/** node:wasi on the megabinary: compiled once, a new instance per call. */
function nodeWasi(wasmPath, stdinPath) {
  const module = new WebAssembly.Module(fs.readFileSync(wasmPath));
  const devNull = fs.openSync('/dev/null', 'w');
  return (argv, withStdin) => {
    const stdin = withStdin ? fs.openSync(stdinPath, 'r') : 0;
    try {
      const wasi = new WASI({ version: 'preview1', args: argv, env: {}, stdin, stdout: devNull, returnOnExit: true });
      const instance = new WebAssembly.Instance(module, wasi.getImportObject());
      const code = wasi.start(instance);
      if (code !== 0) throw new Error(`${argv[0]} exited ${code}`);
    } finally {
      if (withStdin) fs.closeSync(stdin);
    }
  };
}

// Node 20 crashes (SIGSEGV in V8's LoadIC) after some tens of WASI instances whose guest did
// I/O, so the node:wasi case runs in child processes of CHUNK calls each, every one compiling
// the module once before its calls are timed; a chunk that crashes is run again, and the
// crashes are counted in the case's line.
const CHUNK = 20;

/** In a child process: times `count` node:wasi calls and prints their samples as JSON. */
function nodeWasiChunk([wasmPath, stdinPath, count, withStdin, ...argv]) {
  const run = nodeWasi(wasmPath, stdinPath);
  const call = () => run(argv, withStdin === '1');
  timed(call, 10);
  console.log(JSON.stringify(timed(call, +count)));
}

function measureNodeWasi(name, wasmPath, stdinPath, argv, withStdin, n, peers) {
  const samples = [];
  let crashes = 0;
  while (samples.length < n) {
    const count = Math.min(CHUNK, n - samples.length);
    const args = [__filename, '--node-wasi-chunk', wasmPath, stdinPath, count, withStdin ? '1' : '0', ...argv];
    try {
      samples.push(...JSON.parse(execFileSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'] })));
    } catch (err) {
      if (err.signal !== 'SIGSEGV' || ++crashes > n / CHUNK) throw err;
    }
  }
  const busyMs = samples.reduce((a, b) => a + b, 0) / 1e3;
  return report(name, samples, busyMs, peers, { crashes });
}

async function main() {
  const [socket, iterations, spawns] = [process.argv[2], +process.argv[3], +process.argv[4]];
  const bundle = process.env.MEGAVISOR_BUNDLE;
  const embedded = megavisor.embedded({ bundle, trustedKey: process.env.MEGAVISOR_TRUSTED_KEY });
  const connected = megavisor.connect(socket);
  const stdinPath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mv-bench-')), 'input');
  fs.writeFileSync(stdinPath, INPUT);
  const wasm = path.join(bundle, 'megabin.wasm');
  if (embedded.runSync('wc', ['-l'], { stdin: INPUT }).stdout.toString().trim() !== '64') throw new Error('wc');

  for (const [tool, args, stdin, native] of [
    ['true', [], undefined, ['/bin/true', []]],
    ['wc', ['-l'], Buffer.from(INPUT), ['wc', ['-l']]],
  ]) {
    const peer = `node/spawnsync/${tool}`;
    const peers = {};
    peers[peer] = measure(peer, () => {
      const child = spawnSync(native[0], native[1], { input: stdin });
      if (child.status !== 0) throw new Error(`${native[0]} failed`);
    }, spawns);
    const wasmPeer = `node/node-wasi/${tool}`;
    peers[wasmPeer] = measureNodeWasi(wasmPeer, wasm, stdinPath, [tool, ...args], stdin !== undefined,
      Math.max(iterations / 4, 1), { [peer]: peers[peer] });
    const options = stdin === undefined ? undefined : { stdin };
    for (const [way, driver] of [['embedded', embedded], ['ring', connected]]) {
      await measureAsync(`node/${way}/${tool}`, () => driver.run(tool, args, options), iterations, peers);
      measure(`node/${way}/${tool}/sync`, () => driver.runSync(tool, args, options), iterations, peers);
    }
  }
  fs.rmSync(path.dirname(stdinPath), { recursive: true });
  await codeCases(embedded, connected, iterations, spawns);
}

/**
 * `js/code/expr` through the package, beside `node -e` and a published QuickJS sandbox
 * (quickjs-emscripten from npm: QuickJS compiled to wasm, a fresh context per call, on a
 * module loaded once).
 */
async function codeCases(embedded, connected, iterations, spawns) {
  const { getQuickJS } = require('quickjs-emscripten');
  const QuickJS = await getQuickJS();
  const code = '[1,2,3].map(x=>x*2)';
  const sandboxed = () => {
    const vm = QuickJS.newContext();
    try {
      const result = vm.unwrapResult(vm.evalCode(code));
      const value = vm.dump(result);
      result.dispose();
      return JSON.stringify(value);
    } finally {
      vm.dispose();
    }
  };
  if (sandboxed() !== '[2,4,6]') throw new Error('quickjs-emscripten');
  const peers = {};
  const peer = 'node/code/expr/node-e';
  peers[peer] = measure(peer, () => {
    const child = spawnSync(process.execPath, ['-e', `console.log(JSON.stringify(${code}))`]);
    if (child.stdout.toString() !== '[2,4,6]\n') throw new Error('node -e');
  }, Math.max(Math.floor(spawns / 20), 10));
  const wasmPeer = 'node/code/expr/quickjs-emscripten';
  peers[wasmPeer] = measure(wasmPeer, sandboxed, Math.max(Math.floor(iterations / 20), 1), { [peer]: peers[peer] });
  const params = { params: { code } };
  for (const [way, driver] of [['embedded', embedded], ['ring', connected]]) {
    if (driver.runSync('js', [], params).stdout.toString() !== '[2,4,6]\n') throw new Error(`js ${way}`);
    const n = Math.max(Math.floor(iterations / 10), 1);
    await measureAsync(`node/package/${way}/code/expr`, () => driver.run('js', [], params), n, peers);
    measure(`node/package/${way}/code/expr/sync`, () => driver.runSync('js', [], params), n, peers);
  }
}

(process.argv[2] === '--node-wasi-chunk' ? async () => nodeWasiChunk(process.argv.slice(3)) : main)().catch((err) => {
  console.error(err);
  process.exit(1);
});
