'use strict';
// Every error kind reaches JavaScript as a MegavisorError with its code.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');
const megavisor = require('megavisor');
const { KEY, TEST_BUNDLE, startSupervisor, tamperedBundle, strangerKey, tempDir } = require('./helpers.js');

test('the kinds and codes are the one table of kinds, and index.d.ts names them all', () => {
  assert.equal(megavisor.KINDS.length, 15);
  const err = new megavisor.MegavisorError('tool_not_found', 'x');
  assert.equal(err.code, 'TOOL_NOT_FOUND');
  const types = require('node:fs').readFileSync(path.join(path.dirname(require.resolve('megavisor')), 'index.d.ts'), 'utf8');
  const union = types.match(/export type ErrorKind =([^;]*);/)[1].match(/'([a-z_]+)'/g).map((k) => k.slice(1, -1));
  assert.deepEqual(union, megavisor.KINDS);
});

function expectCode(code, pattern) {
  return (err) => {
    assert.ok(err instanceof megavisor.MegavisorError, `not a MegavisorError: ${err}`);
    assert.ok(err instanceof Error);
    assert.equal(err.code, code);
    assert.equal(err.kind, code.toLowerCase());
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

const embeddedTest = () => megavisor.embedded({ bundle: TEST_BUNDLE, trustedKey: KEY });

test('HASH_MISMATCH names the file', () => {
  assert.throws(() => megavisor.embedded({ bundle: tamperedBundle(), trustedKey: KEY }), expectCode('HASH_MISMATCH', /megabin\.wasm/));
});

test('BAD_SIGNATURE for an untrusted key', () => {
  assert.throws(() => megavisor.embedded({ trustedKey: strangerKey() }), expectCode('BAD_SIGNATURE'));
});

test('INTERNAL names the missing file', () => {
  const bundle = path.join(tempDir(), 'absent');
  assert.throws(() => megavisor.embedded({ bundle, trustedKey: KEY }), expectCode('INTERNAL', /manifest\.json/));
});

test('call errors, embedded and connected', async () => {
  const supervisor = await startSupervisor();
  try {
    for (const driver of [embeddedTest(), megavisor.connect(supervisor.socket)]) {
      await assert.rejects(driver.run('no-such-tool'), expectCode('TOOL_NOT_FOUND', /available: /));
      assert.throws(() => driver.runSync('no-such-tool'), expectCode('TOOL_NOT_FOUND'));
      await assert.rejects(driver.run('spin', [], { timeout: 50 }), (err) => {
        expectCode('TIMEOUT')(err);
        assert.notEqual(err.partial, null);
        return true;
      });
      await assert.rejects(driver.run('alloc', [], { memory: 8 << 20 }), expectCode('MEMORY_LIMIT'));
      await assert.rejects(driver.run('trap'), expectCode('TRAP'));
      await assert.rejects(driver.run('true', [], { timeout: -1 }), expectCode('BAD_REQUEST', /timeout/));
      await assert.rejects(driver.run('true', [], { memory: 1.5 }), expectCode('BAD_REQUEST', /memory/));
    }
  } finally {
    supervisor.stop();
  }
});

test('NOT_ALLOWED for an environment variable no capability allows', async () => {
  const supervisor = await startSupervisor(megavisor.DEFAULT_BUNDLE);
  try {
    for (const driver of [megavisor.embedded(), megavisor.connect(supervisor.socket)]) {
      await assert.rejects(driver.run('echo', [], { env: { SECRET: 'x' } }), expectCode('NOT_ALLOWED', /SECRET/));
    }
  } finally {
    supervisor.stop();
  }
});

test('BUSY when the supervisor is saturated', async () => {
  const supervisor = await startSupervisor(TEST_BUNDLE, ['--max-concurrency', '1', '--queue-depth', '0']);
  try {
    const client = megavisor.connect(supervisor.socket);
    const holder = client.run('spin', ['1500']);
    await sleep(200);
    await assert.rejects(megavisor.connect(supervisor.socket).run('spin', ['1']), expectCode('BUSY'));
    await holder;
  } finally {
    supervisor.stop();
  }
});

test('SHUTTING_DOWN while draining, and the call in flight finishes', async () => {
  const supervisor = await startSupervisor();
  try {
    const client = megavisor.connect(supervisor.socket);
    const inFlight = client.run('spin', ['1000']);
    await sleep(200);
    supervisor.terminate();
    await sleep(200);
    await assert.rejects(client.run('true'), expectCode('SHUTTING_DOWN'));
    assert.equal((await inFlight).stdout.toString().trim(), 'spun');
  } finally {
    supervisor.stop();
  }
});

test('CONNECTION_LOST with nobody there, and when the supervisor dies', async () => {
  assert.throws(() => megavisor.connect(path.join(tempDir(), 'nobody.sock')), expectCode('CONNECTION_LOST'));
  const supervisor = await startSupervisor();
  const client = megavisor.connect(supervisor.socket);
  assert.equal((await client.run('true')).ok, true);
  supervisor.stop();
  await sleep(100);
  await assert.rejects(client.run('true'), expectCode('CONNECTION_LOST'));
});

test('PROTOCOL when the server answers with garbage', async () => {
  const socket = path.join(tempDir(), 'garbage.sock');
  const server = net.createServer((conn) => {
    conn.once('data', () => {
      const body = Buffer.from('\xff\xff\xff\xff not protobuf', 'latin1');
      const prefix = Buffer.alloc(4);
      prefix.writeUInt32LE(body.length);
      conn.write(Buffer.concat([prefix, body]));
    });
  });
  await new Promise((resolve) => server.listen(socket, resolve));
  try {
    // connect() waits for the handshake on the calling thread, so it runs in another
    // process while this one's event loop serves the garbage.
    const { execFile } = require('node:child_process');
    const { stdout } = await require('node:util').promisify(execFile)(process.execPath, ['-e', `
      try { require(${JSON.stringify(require.resolve('megavisor'))}).connect(${JSON.stringify(socket)}); console.log('connected'); }
      catch (err) { console.log(err.code); }`]);
    assert.equal(stdout.trim(), 'PROTOCOL');
  } finally {
    server.close();
  }
});
