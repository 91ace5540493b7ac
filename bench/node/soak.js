'use strict';
// One Node client process of the soak (`bench/soak`): the same calls as the Rust client
// (`bench/src/soak.rs`), 16 in flight at a time through `run`, every reply checked against
// its own request; prints one JSON line with its counts and latency histograms.
//
//     soak.js SOCKET CLIENT CALLS WINDOW_MS

const crypto = require('node:crypto');
const megavisor = require('megavisor');

const WINDOW = 16;

/** [tool, args, stdin, expected stdout (a Buffer) or expected error code] of call `seq`. */
function plan(client, seq) {
  const token = Buffer.from(`${client}:${seq}|`);
  const payload = (length) => {
    const n = Math.max(length, token.length);
    return Buffer.concat(Array(Math.ceil(n / token.length) + 1).fill(token)).subarray(0, n);
  };
  switch (seq % 4) {
    case 0: {
      const stdin = payload((seq * 7919) % 8192);
      return ['cat', [], stdin, stdin];
    }
    case 1: {
      const word = `${client}-${seq}`;
      return ['echo', [word], undefined, Buffer.from(`${word}\n`)];
    }
    case 2: {
      const stdin = payload((seq * 31) % 5000);
      const digest = crypto.createHash('sha256').update(stdin).digest('hex');
      return ['sha256sum', [], stdin, Buffer.from(`${digest}  -\n`)];
    }
    default:
      if (seq % 100 === 3) return [`no-such-tool-${client}-${seq}`, [], undefined, 'TOOL_NOT_FOUND'];
      return ['cat', [], payload(64), payload(64)];
  }
}

const bucket = (ms) => Math.floor(Math.log(Math.max(ms * 1000, 1)) * 20);
const key = (buffer) => crypto.createHash('sha1').update(buffer).digest('base64');

async function main(socket, client, calls, windowMs) {
  const driver = megavisor.connect(socket);
  const started = performance.now();
  const counts = { ok: 0, lost: 0, duplicated: 0, crossed: 0 };
  const errors = {};
  const answered = new Set();
  const windows = [];

  async function one(seq) {
    const [tool, args, stdin, expect] = plan(client, seq);
    const sent = performance.now();
    let stdout = null;
    let error = null;
    try {
      stdout = (await driver.run(tool, args, stdin === undefined ? undefined : { stdin })).stdout;
    } catch (err) {
      if (!(err instanceof megavisor.MegavisorError)) throw err;
      error = err;
    }
    const latency = performance.now() - sent;
    const index = Math.floor((sent - started) / windowMs);
    while (windows.length <= index) windows.push({});
    const b = bucket(latency);
    windows[index][b] = (windows[index][b] || 0) + 1;
    if (Buffer.isBuffer(expect)) {
      if (error) {
        counts.lost += 1;
        errors[error.kind] = (errors[error.kind] || 0) + 1;
      } else if (stdout.equals(expect)) {
        counts.ok += 1;
        answered.add(key(expect));
      } else if (answered.has(key(stdout))) {
        counts.duplicated += 1;
      } else {
        counts.crossed += 1;
      }
    } else if (error && error.code === expect) {
      counts.ok += 1;
    } else if (error) {
      counts.lost += 1;
      errors[error.kind] = (errors[error.kind] || 0) + 1;
    } else {
      counts.crossed += 1;
    }
  }

  for (let first = 0; first < calls; first += WINDOW) {
    const batch = [];
    for (let seq = first; seq < Math.min(first + WINDOW, calls); seq += 1) batch.push(one(seq));
    await Promise.all(batch);
  }
  console.log(JSON.stringify({
    lang: 'node', client, calls, ...counts, errors, window_ms: windowMs, windows,
  }));
}

const [socket, client, calls, windowMs] = process.argv.slice(2);
main(socket, Number(client), Number(calls), Number(windowMs)).catch((err) => {
  console.error(err);
  process.exit(1);
});
