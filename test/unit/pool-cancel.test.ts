// CancelAcquire in every phase of an acquire (queued, connecting, a socket on its way): the callback never runs
// after a cancel and the socket stays the pool's (idle, handed to the next waiter, or closed), never leaked.
// Real sockets: a backend whose accept is held shut keeps a connect pending (test/helpers/gate-backend.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { until } from '../helpers/until.js';
import { acquire, counts, makePool } from '../helpers/pool.js';
import { startGateBackend } from '../helpers/gate-backend.js';
import { tcpEchoServer } from '../helpers/tcp-server.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { PYTHON } from '../helpers/clients.js';

/** Resolves once `cond()` holds, checked every 20 ms; rejects after `ms` (a bounded wait on a pool count). */
async function holds(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  await until(what, cond, (ok) => ok, ms, 20);
}

test('cancel while the connect is pending: the socket connected later goes to the next waiter, the cancelled callback never runs', { timeout: 30_000 }, async (t) => {
  if (!needPeer(t, 'python3', hasCommand(PYTHON))) return;
  const gate = await startGateBackend(t, 'hold');
  const { pool, target } = makePool(t, gate.port, { max_connections: 1, queue: { size: 4, timeout: '20s' } });
  let late = false;
  const cancel = pool.acquire(target, () => {
    late = true;
  });
  assert.equal(counts(pool).open, 1, 'the connect is under way');
  cancel();
  const next = acquire(t, pool, target); // queued: the target is at max_connections while the connect is pending
  gate.open();
  const got = await next;
  assert.equal(got.err, null);
  assert.equal(got.reused, true, 'the waiter got the socket made for the cancelled acquire');
  assert.equal(late, false, 'no callback after cancel');
  assert.deepEqual(counts(pool), { open: 1, idle: 0 });
});

test('cancel while the connect is pending, then the backend resets it: no error escapes, the open count returns to 0', { timeout: 30_000 }, async (t) => {
  if (!needPeer(t, 'python3', hasCommand(PYTHON))) return;
  const gate = await startGateBackend(t, 'rst');
  const { pool, target } = makePool(t, gate.port);
  let late = false;
  const cancel = pool.acquire(target, () => {
    late = true;
  });
  cancel();
  gate.open();
  await gate.acceptedReaches(2); // its own filler, then the pool's connection, each answered with a reset
  await holds(() => counts(pool).open === 0, 'the reset socket is closed and uncounted');
  assert.equal(late, false);
});

test('cancel while a released socket is on its way to a queued waiter: the socket stays in the pool', async (t) => {
  const port = await tcpEchoServer(t);
  const { pool, target } = makePool(t, port, { max_connections: 1, queue: { size: 4, timeout: '20s' } });
  const first = await acquire(t, pool, target);
  let late = false;
  const cancel = pool.acquire(target, () => {
    late = true;
  });
  pool.release(target, first.socket, true); // handed to the waiter on the next tick
  cancel();
  await new Promise((r) => setImmediate(r));
  assert.equal(late, false, 'no callback after cancel');
  assert.deepEqual(counts(pool), { open: 1, idle: 1 }, 'kept idle, not lost');
  const again = await acquire(t, pool, target);
  assert.equal(again.reused, true);
  assert.equal(again.socket as Socket, first.socket);
});

test('cancel while an idle socket is on its way: it stays idle for the next acquire', async (t) => {
  const port = await tcpEchoServer(t);
  const { pool, target } = makePool(t, port);
  const first = await acquire(t, pool, target);
  pool.release(target, first.socket, true);
  let late = false;
  const cancel = pool.acquire(target, () => {
    late = true;
  });
  cancel();
  await new Promise((r) => setImmediate(r));
  assert.equal(late, false);
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });
});

test('PROXY-sending pool: a socket connected for a cancelled acquire is closed (its header named a client that is gone)', { timeout: 30_000 }, async (t) => {
  if (!needPeer(t, 'python3', hasCommand(PYTHON))) return;
  const gate = await startGateBackend(t, 'hold');
  const { pool, target } = makePool(t, gate.port, { send_proxy_protocol: 'v1' });
  let late = false;
  const cancel = pool.acquire(target, () => {
    late = true;
  }, 0, { key: 'gone', source: { address: '127.0.0.1', port: 40000 }, destination: { address: '127.0.0.1', port: 443 } });
  cancel();
  gate.open();
  await gate.acceptedReaches(2);
  await holds(() => counts(pool).open === 0, 'the socket closed, not kept idle for a client that is gone');
  assert.equal(counts(pool).idle, 0);
  assert.equal(late, false);
});
