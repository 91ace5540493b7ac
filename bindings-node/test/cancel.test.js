'use strict';
// Giving up on a call: an AbortSignal stops the tool within milliseconds and frees its
// place, embedded and connected; a queued call's time limit covers its wait.

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const megavisor = require('megavisor');
const { KEY, TEST_BUNDLE, startSupervisor } = require('./helpers.js');

for (const mode of ['embedded', 'connected']) {
  describe(`${mode}, one call at a time`, () => {
    let supervisor;
    let driver;
    before(async () => {
      supervisor = await startSupervisor(TEST_BUNDLE, ['--max-concurrency', '1']);
      driver = mode === 'embedded'
        ? megavisor.embedded({ bundle: TEST_BUNDLE, trustedKey: KEY, maxConcurrency: 1 })
        : megavisor.connect(supervisor.socket);
    });
    after(() => supervisor.stop());

    for (const [tool, args] of [['spin', []], ['sleep', ['60000']]]) {
      test(`an aborted ${tool} rejects at once and gives its place back`, async () => {
        const started = Date.now();
        await assert.rejects(
          driver.run(tool, args, { signal: AbortSignal.timeout(200) }),
          (err) => err.name === 'TimeoutError',
        );
        assert.ok(Date.now() - started < 400, `rejected after ${Date.now() - started} ms`);
        const next = Date.now();
        const r = await driver.run('true');
        assert.ok(r.ok);
        assert.ok(Date.now() - next < 200, `the next call waited ${Date.now() - next} ms`);
      });
    }

    test('a signal aborted already rejects without running', async () => {
      const controller = new AbortController();
      controller.abort(new Error('never mind'));
      await assert.rejects(driver.run('spin', [], { signal: controller.signal }), /never mind/);
    });

    test('a signal that never aborts changes nothing', async () => {
      const r = await driver.run('args', ['x'], { signal: new AbortController().signal });
      assert.equal(r.stdout.toString(), 'args\nx\n');
    });

    test("a queued call's time limit covers its wait", async () => {
      const busy = driver.run('spin', ['400']);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const started = Date.now();
      await assert.rejects(driver.run('true', [], { timeout: 100 }), (err) => err.code === 'TIMEOUT');
      assert.ok(Date.now() - started < 250, `answered after ${Date.now() - started} ms`);
      const r = await driver.run('true');
      assert.ok(r.timings.queueUs > 100000, `queued ${r.timings.queueUs} µs`);
      assert.ok((await busy).ok);
    });
  });
}
