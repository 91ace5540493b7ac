'use strict';
// The installed `megavisor` package, embedded and connected, against real components.

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const megavisor = require('megavisor');
const { KEY, TEST_BUNDLE, startSupervisor } = require('./helpers.js');

test('the default bundle ships inside the package', () => {
  const pkg = path.dirname(require.resolve('megavisor'));
  assert.equal(megavisor.DEFAULT_BUNDLE, path.join(pkg, 'bundle'));
  assert.ok(fs.existsSync(path.join(pkg, 'bundle', 'manifest.json')));
  assert.ok(fs.existsSync(path.join(pkg, 'bundle', 'megabin.cwasm')));
  assert.ok(fs.existsSync(megavisor.DEFAULT_TRUSTED_KEY));
});

for (const mode of ['embedded', 'connected']) {
  describe(`${mode} driver`, () => {
    let supervisor;
    let testSupervisor;
    let driver;
    let testDriver;
    before(async () => {
      supervisor = await startSupervisor(path.join(megavisor.DEFAULT_BUNDLE));
      testSupervisor = await startSupervisor(TEST_BUNDLE);
      driver = mode === 'embedded' ? megavisor.embedded() : megavisor.connect(supervisor.socket);
      testDriver = mode === 'embedded'
        ? megavisor.embedded({ bundle: TEST_BUNDLE, trustedKey: KEY })
        : megavisor.connect(testSupervisor.socket);
    });
    after(() => {
      supervisor.stop();
      testSupervisor.stop();
    });

    test('run resolves to output, exit code and timings', async () => {
      assert.equal(driver.mode, mode);
      const r = await driver.run('echo', ['hello', 'world']);
      assert.equal(r.exitCode, 0);
      assert.equal(r.ok, true);
      assert.ok(Buffer.isBuffer(r.stdout));
      assert.equal(r.stdout.toString(), 'hello world\n');
      assert.equal(r.stderr.length, 0);
      assert.equal(r.stdoutTotal, 12);
      assert.ok(r.timings.totalUs >= r.timings.runUs && r.timings.runUs > 0);
      assert.equal(r.cached, false);
    });

    test('runSync, stdin and a non-zero exit', () => {
      assert.equal(driver.runSync('wc', ['-l'], { stdin: Buffer.from('a\nb\nc\n') }).stdout.toString().trim(), '3');
      assert.equal(driver.runSync('wc', ['-l'], { stdin: 'x\n' }).stdout.toString().trim(), '1');
      const failed = driver.runSync('false');
      assert.equal(failed.exitCode, 1);
      assert.equal(failed.ok, false);
    });

    test('params are rendered through the schema', async () => {
      const r = await driver.run('wc', [], { params: { lines: true, stdin: 'x\ny\n' } });
      assert.equal(r.stdout.toString().trim(), '2');
    });

    test('an execution id replays from the cache', async () => {
      const executionId = `node-${mode}-${process.hrtime.bigint()}`;
      const first = await driver.run('echo', ['once'], { executionId });
      const again = await driver.run('echo', ['once'], { executionId });
      assert.deepEqual([first.cached, again.cached], [false, true]);
      assert.equal(again.executionId, executionId);
      assert.equal(again.stdout.toString(), 'once\n');
    });

    test('tools have a name, description and schema', () => {
      const tools = new Map(driver.tools().map((t) => [t.name, t]));
      for (const name of ['true', 'echo', 'wc', 'calc']) assert.ok(tools.has(name), name);
      assert.deepEqual(tools.get('calc').schema.required, ['expression']);
      assert.ok(tools.get('calc').description.length > 0);
      assert.ok(tools.get('calc').timeoutMs > 0);
    });

    test('artifacts reach JavaScript', async () => {
      const r = await testDriver.run('artifacts');
      assert.equal(r.artifacts.report, '/out/report.txt');
      assert.equal(r.artifacts.count, '2');
    });

    test('many concurrent calls each get their own reply', async () => {
      const payloads = Array.from({ length: 300 }, (_, i) => `payload-${mode}-${i}`);
      const results = await Promise.all(payloads.map((p) => driver.run('cat', [], { stdin: p })));
      assert.deepEqual(results.map((r) => r.stdout.toString()), payloads);
    });

    test('run never blocks the event loop', async () => {
      let ticks = 0;
      const timer = setInterval(() => { ticks += 1; }, 5);
      await testDriver.run('spin', ['300']);
      clearInterval(timer);
      assert.ok(ticks >= 20, `the event loop ticked only ${ticks} times during a 300 ms call`);
    });
  });
}

test('connect() uses MEGAVISOR_SOCKET', async () => {
  const supervisor = await startSupervisor();
  process.env.MEGAVISOR_SOCKET = supervisor.socket;
  try {
    assert.equal(megavisor.connect().runSync('args', ['x']).stdout.toString().split('\n')[1], 'x');
  } finally {
    delete process.env.MEGAVISOR_SOCKET;
    supervisor.stop();
  }
});

test('a native tool runs through the supervisor, with its usage', async () => {
  const supervisor = await startSupervisor(TEST_BUNDLE, ['--allow-binary', '/usr/bin/wc']);
  try {
    const client = megavisor.connect(supervisor.socket);
    const r = await client.run('/usr/bin/wc', ['-l'], { stdin: 'a\nb\n' });
    assert.equal(r.stdout.toString().trim(), '2');
    assert.equal(r.tool, '/usr/bin/wc');
    assert.deepEqual(r.usage.limitsHit, []);
    assert.equal(client.runSync('true').usage, undefined);
    await assert.rejects(client.run('/bin/ls'), (err) => err.code === 'NOT_ALLOWED' && /allowlist/.test(err.message));
  } finally {
    supervisor.stop();
  }
});

test('an embedded driver runs the native tools it allows', async () => {
  const eng = megavisor.embedded({ allowBinaries: ['/usr/bin/wc'], nativeEnv: ['LC_*'] });
  const r = await eng.run('/usr/bin/wc', ['-l'], { stdin: 'a\nb\nc\n', env: { LC_ALL: 'C' } });
  assert.equal(r.stdout.toString().trim(), '3');
  assert.equal(r.usage.cgroup, undefined);
  assert.throws(() => eng.runSync('/bin/ls'), (err) => err.code === 'NOT_ALLOWED');
  assert.throws(() => eng.runSync('/usr/bin/wc', [], { env: { SECRET: 'x' } }), (err) => err.code === 'NOT_ALLOWED' && /SECRET/.test(err.message));
  assert.throws(() => megavisor.embedded().runSync('/usr/bin/wc'), (err) => /not enabled/.test(err.message));
});

test('an embedded driver runs under a policy file or object', async () => {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'mv-policy-'));
  const file = path.join(dir, 'policy.toml');
  fs.writeFileSync(file, '[limits]\nmax_timeout = "2s"\n\n[native]\ndefault_timeout = "1s"\nbinaries = ["/usr/bin/wc"]\n');
  const byFile = megavisor.embedded({ policy: file, allowBinaries: ['/usr/bin/id'] });
  assert.equal((await byFile.run('/usr/bin/wc', ['-c'], { stdin: 'four' })).stdout.toString().trim(), '4');
  assert.equal(byFile.runSync('/usr/bin/id', ['-u']).exitCode, 0);
  assert.throws(() => byFile.runSync('true', [], { timeout: 5000 }),
    (err) => err.code === 'BAD_REQUEST' && /maximum of 2000 ms/.test(err.message));
  const inline = megavisor.embedded({ policy: { native: { binaries: ['/usr/bin/wc'] } } });
  assert.equal(inline.runSync('/usr/bin/wc', ['-c'], { stdin: 'ab' }).stdout.toString().trim(), '2');
  assert.throws(() => megavisor.embedded({ policy: { native: { binaries: '/usr/bin/wc' } } }),
    (err) => err.code === 'BAD_REQUEST' && err.message.includes('policy <inline>: key `native.binaries`'));
  fs.writeFileSync(file, '[limits]\nmax_timeout = 5\n');
  assert.throws(() => megavisor.embedded({ policy: file }),
    (err) => err.code === 'BAD_REQUEST' && err.message.includes(`policy ${file}: key \`limits.max_timeout\``));
  fs.rmSync(dir, { recursive: true });
});


for (const mode of ['embedded', 'connected']) {
  describe(`sessions, ${mode}`, () => {
    let supervisor;
    let driver;
    before(async () => {
      supervisor = await startSupervisor(megavisor.DEFAULT_BUNDLE);
      driver = mode === 'embedded' ? megavisor.embedded() : megavisor.connect(supervisor.socket);
    });
    after(() => supervisor.stop());

    test('a function defined in step 1 is called in step 2', async () => {
      const session = driver.openSession('python');
      assert.equal((await session.run([], { params: { code: 'def area(r):\n    return 3 * r * r' } })).exitCode, 0);
      const step2 = session.runSync([], { params: { code: 'print(area(2))' } });
      assert.equal(step2.stdout.toString(), '12\n');
      session.close();
      // Sessions never take the pool's last permit: on two cores, one at a time.
      const js = driver.openSession('js');
      await js.run([], { params: { code: 'globalThis.total = 40' } });
      assert.equal((await js.run([], { params: { code: 'total + 2' } })).stdout.toString(), '42\n');
      js.close();
      await assert.rejects(session.run([], { params: { code: 'print(1)' } }), (err) => err.code === 'SESSION_GONE');
      assert.throws(() => session.close(), (err) => err.kind === 'session_gone');
      assert.throws(() => driver.openSession('wc'), (err) => err.code === 'BAD_REQUEST');
    });
  });
}
