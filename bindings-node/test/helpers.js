'use strict';
// Real components for the tests: the repository's build (bundles, keys, the megavisor
// binary) and `megavisor serve` processes. The package under test is the installed one.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = process.env.MEGAVISOR_ROOT || path.resolve(__dirname, '..', '..');
const BUILD = path.join(ROOT, 'build');
const MEGAVISOR = process.env.MEGAVISOR || path.join(ROOT, 'target', 'release', 'megavisor');
const KEY = path.join(BUILD, 'keys', 'megavisor.pub');
const DEFAULT_BUNDLE = path.join(BUILD, 'bundle');
const TEST_BUNDLE = path.join(BUILD, 'test-bundle');

function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'megavisor-node-'));
}

/** Starts `megavisor serve` on a private socket; resolves once it is ready. */
function startSupervisor(bundle = TEST_BUNDLE, extra = []) {
  const dir = tempDir();
  const socket = path.join(dir, 'megavisor.sock');
  const child = spawn(MEGAVISOR, ['serve', '--socket', socket, '--bundle', bundle, '--trusted-key', KEY, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  return new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      if (stdout.includes('megavisor ready')) {
        resolve({
          socket,
          child,
          terminate: () => child.kill('SIGTERM'),
          stop: () => {
            child.kill('SIGKILL');
            fs.rmSync(dir, { recursive: true, force: true });
          },
        });
      }
    });
    child.on('exit', (code) => reject(new Error(`megavisor serve exited ${code}: ${stderr}`)));
  });
}

/** A copy of the default bundle whose wasm has one byte changed. */
function tamperedBundle() {
  const bundle = path.join(tempDir(), 'bundle');
  fs.cpSync(DEFAULT_BUNDLE, bundle, { recursive: true });
  const wasm = path.join(bundle, 'megabin.wasm');
  const data = fs.readFileSync(wasm);
  data[data.length >> 1] ^= 0xff;
  fs.writeFileSync(wasm, data);
  return bundle;
}

/** A freshly generated key that signed nothing. */
function strangerKey() {
  const key = path.join(tempDir(), 'stranger');
  execFileSync(MEGAVISOR, ['keygen', '--out', key], { stdio: 'ignore' });
  return `${key}.pub`;
}

module.exports = { ROOT, BUILD, KEY, TEST_BUNDLE, startSupervisor, tamperedBundle, strangerKey, tempDir };
