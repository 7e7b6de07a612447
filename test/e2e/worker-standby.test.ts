// The standby worker (`standby_worker`, primary/supervisor.ts) with the real `portico start`: once the workers
// serve, a spare worker process is forked with its modules loaded and no listener; a SIGKILLed worker's slot is
// taken by it (the "worker started" line names its pid), it serves, and another standby is forked. Without the
// option a new process is forked instead; a reload turns it off and on; a stop ends it with the instance.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { startHttpBackend } from '../helpers/backends.js';
import { adminStatus } from '../helpers/admin.js';
import { request } from '../helpers/clients.js';
import { plainListener, reloadPortico, startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import { listeningSockets } from '../helpers/proc-stats.js';
import { until } from '../helpers/until.js';

async function start(t: TestContext, standby?: boolean): Promise<Portico> {
  const app = await startHttpBackend(t, { name: 'app' });
  return startPortico(t, {
    workers: 2,
    ...(standby === undefined ? {} : { standby_worker: standby }),
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { app: { targets: [`127.0.0.1:${app.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    log: { access: false },
    timeouts: { shutdown_grace: '2s' },
  });
}

const pidOf = (l: LogLine): number => Number(l.workerPid);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Requests on new connections until `n` got 200 (bounded): both workers take some, by the kernel's choice. */
async function serves(portico: Portico, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await request(`http://127.0.0.1:${portico.httpPort}/after/${i}`, { timeoutMs: 10_000 });
    assert.equal(res.status, 200);
  }
}

test('a SIGKILLed worker\'s slot is taken by the standby worker (loaded, not listening), which serves; another standby follows', { timeout: 60_000 }, async (t) => {
  const portico = await start(t);
  const first = await portico.waitForLog((l) => l.msg === 'standby worker ready', 20_000);
  const standbyPid = pidOf(first);
  assert.equal(listeningSockets(standbyPid, portico.httpPort), 0, 'a standby holds no listening socket');
  assert.deepEqual((await adminStatus(portico)).standby, { pid: standbyPid, state: 'ready' }, '/status shows the standby');
  const victim = pidOf(await portico.waitForLog((l) => l.msg === 'worker ready' && l.worker === 1));
  assert.ok(listeningSockets(victim, portico.httpPort) >= 1, 'a worker does (the check sees listeners)');

  process.kill(victim, 'SIGKILL');
  const started = await portico.waitForLog((l) => l.msg === 'worker started' && l.worker === 1 && pidOf(l) !== victim, 15_000);
  assert.equal(pidOf(started), standbyPid, 'the standby took the slot');
  assert.equal(started.standby, true);
  await portico.waitForLog((l) => l.msg === 'worker ready' && l.worker === 1 && pidOf(l) === standbyPid, 15_000);
  assert.ok(listeningSockets(standbyPid, portico.httpPort) >= 1, 'the former standby listens now');
  await serves(portico, 10);

  const next = await portico.waitForLog((l) => l.msg === 'standby worker ready' && pidOf(l) !== standbyPid, 20_000);
  assert.ok(alive(pidOf(next)), 'a new standby waits');
  assert.deepEqual((await adminStatus(portico)).standby, { pid: pidOf(next), state: 'ready' }, '/status shows the new standby');
  assert.equal(portico.logs.filter((l) => l.msg === 'standby worker started').length, 2, 'one standby at a time: the first, then its successor');
});

test('standby_worker: false -> no standby; a SIGKILLed worker is replaced by a new process', { timeout: 60_000 }, async (t) => {
  const portico = await start(t, false);
  const victim = pidOf(await portico.waitForLog((l) => l.msg === 'worker ready' && l.worker === 2));
  process.kill(victim, 'SIGKILL');
  const started = await portico.waitForLog((l) => l.msg === 'worker started' && l.worker === 2 && pidOf(l) !== victim, 15_000);
  assert.equal(started.standby, false);
  await portico.waitForLog((l) => l.msg === 'worker ready' && l.worker === 2 && pidOf(l) === pidOf(started), 15_000);
  await serves(portico, 5);
  assert.deepEqual(portico.logs.filter((l) => String(l.msg).startsWith('standby')), [], 'no standby was ever started');
  assert.equal((await adminStatus(portico)).standby, null, '/status: no standby');
});

test('a reload turns the standby off (it exits) and on again (one is forked); a stop ends it with the instance', { timeout: 60_000 }, async (t) => {
  const app = await startHttpBackend(t, { name: 'app' });
  const config = (standby: boolean) => ({
    workers: 1,
    standby_worker: standby,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${app.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    log: { access: false },
  });
  const portico = await startPortico(t, config(true));
  const first = pidOf(await portico.waitForLog((l) => l.msg === 'standby worker ready', 20_000));
  const off = await reloadPortico(portico, config(false));
  assert.equal(off.code, 0, off.stderr);
  await until('the standby exits after the reload that turned it off', () => alive(first), (a) => !a, 10_000);
  const on = await reloadPortico(portico, config(true));
  assert.equal(on.code, 0, on.stderr);
  const second = pidOf(await portico.waitForLog((l) => l.msg === 'standby worker ready' && pidOf(l) !== first, 20_000));
  assert.equal(await portico.stop('SIGTERM'), 0, 'a clean stop with a standby waiting');
  assert.equal(alive(second), false, 'the standby ended with the instance');
});
