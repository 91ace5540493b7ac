// Compiled with `tsc --noEmit` by `make node-test`: the package's declarations describe the
// API as the tests use it, and catch misuse.
import { connect, embedded, Driver, MegavisorError, RunResult, Tool } from 'megavisor';
import { tools } from 'megavisor/langchain';

async function typed(): Promise<void> {
  const driver: Driver = embedded({ bundle: '/b', trustedKey: '/k', maxConcurrency: 2 });
  embedded({ policy: '/etc/megavisor/policy.toml' });
  embedded({ policy: { limits: { max_timeout: '5s', max_memory: '64M' }, cgroups: { version: 'v2' } } });
  const result: RunResult = await driver.run('echo', ['hi'], { stdin: 'x', timeout: 100, memory: 1 << 20, executionId: 'id', env: { A: 'b' } });
  const code: number = result.exitCode;
  const out: Buffer = result.stdout;
  const total: number = result.timings.totalUs;
  const sync: RunResult = connect('/s').runSync('wc', ['-l'], { params: { lines: true } });
  await driver.run('spin', [], { signal: AbortSignal.timeout(100) });
  void ((e: MegavisorError) => e.code === 'CANCELLED');
  const list: Tool[] = driver.tools();
  const mode: 'embedded' | 'connected' = driver.mode;
  await driver.run('python', [], { params: { code: 'print(1)' }, mounts: ['/srv/data:/data:ro'] });
  void [code, out, total, sync, list, mode, tools(driver), tools(driver, ['python', 'js'], { mounts: ['/d:/data'] })];
  try {
    driver.runSync('nope');
  } catch (err) {
    if (err instanceof MegavisorError) {
      const kind: 'timeout' | string = err.kind;
      const partial: RunResult | null = err.partial;
      void [kind, partial, err.code === 'TIMEOUT'];
    }
  }
  // @ts-expect-error: args are strings
  void driver.run('echo', [1]);
  // @ts-expect-error: mounts are HOST:GUEST strings
  void driver.run('python', [], { mounts: [{ host: '/d' }] });
  // @ts-expect-error: a signal is an AbortSignal
  void driver.run('spin', [], { signal: 100 });
  // @ts-expect-error: no such error code
  void ((e: MegavisorError) => e.code === 'NO_SUCH_CODE');
}
void typed;
