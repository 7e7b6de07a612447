// Limits of production pools: the max_connections wait queue (against a real loopback server) and the moves of
// its waiters when their target leaves rotation, "full" targets leaving rotation, backup targets, slow start
// (injected clock), weight 0 = drained, and the retry budget (fake clock). Waits on socket events and
// callbacks, never on sleeps.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import type { ByteSocket } from '../../src/core/socket.js';
import { configSchema } from '../../src/config/schema.js';
import { cannedResponse, statusOf, type ProxyError } from '../../src/core/errors.js';
import { createBalancer, rampedWeight, SLOW_START_FLOOR, type BalanceSpec, type Target } from '../../src/upstream/balancer.js';
import { UpstreamPool } from '../../src/upstream/pool.js';
import { RetryBudget, RETRY_WINDOW_MS } from '../../src/upstream/retry-budget.js';
import { tcpEchoServer } from '../helpers/tcp-server.js';
import { poolFor } from '../helpers/pool.js';

interface Got {
  err: ProxyError | null;
  socket: ByteSocket | null;
  reused: boolean;
  waitUntil: number | undefined;
}

function acquire(t: TestContext, pool: UpstreamPool, target: Target, waitUntil?: number): { done: Promise<Got>; cancel: () => void; settled: () => boolean } {
  let settled = false;
  let cancel: () => void = () => {};
  const done = new Promise<Got>((resolve) => {
    cancel = pool.acquire(
      target,
      (err, socket, reused, until) => {
        settled = true;
        if (socket !== null) {
          socket.on('error', () => {});
          t.after(() => socket.destroy());
        }
        resolve({ err, socket, reused, waitUntil: until });
      },
      waitUntil,
    );
  });
  return { done, cancel, settled: () => settled };
}

test('at max_connections an acquire waits in the queue and proceeds with the socket released first', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 4, timeout: '5s' } });
  const target = pool.targets[0];
  const first = await acquire(t, pool, target).done;
  assert.equal(first.err, null);
  const second = acquire(t, pool, target);
  const third = acquire(t, pool, target);
  await new Promise((r) => setImmediate(r));
  assert.equal(second.settled(), false, 'the second acquire waits');
  assert.equal(pool.limits().queued, 2);
  assert.equal(pool.stats()[0].queued, 2);
  pool.release(target, first.socket!, true);
  const got = await second.done;
  assert.equal(got.err, null);
  assert.equal(got.socket, first.socket, 'the released socket goes straight to the first waiter');
  assert.equal(got.reused, true);
  assert.equal(third.settled(), false, 'FIFO: the third still waits');
  // A socket that closes instead of coming back makes room for a new connection.
  const closed = once(got.socket!, 'close');
  pool.release(target, got.socket!, false);
  await closed;
  const next = await third.done;
  assert.equal(next.err, null);
  assert.equal(next.reused, false);
  assert.notEqual(next.socket, first.socket);
  assert.deepEqual({ queued: pool.limits().queued, open: pool.stats()[0].open }, { queued: 0, open: 1 });
});

test('queue full -> UPSTREAM_UNAVAILABLE, not retried, answered 503 with Retry-After', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 1 } });
  const target = pool.targets[0];
  await acquire(t, pool, target).done;
  const waiting = acquire(t, pool, target);
  const over = await acquire(t, pool, target).done;
  assert.equal(over.err?.code, 'UPSTREAM_UNAVAILABLE');
  assert.equal(over.err?.retryable, false);
  assert.match(over.err?.message ?? '', /queue full/);
  assert.equal(statusOf('UPSTREAM_UNAVAILABLE'), 503);
  assert.match(cannedResponse('UPSTREAM_UNAVAILABLE').toString('latin1'), /^HTTP\/1\.1 503 [^\r]*\r\n[\s\S]*Retry-After: 1\r\n/);
  assert.equal(pool.limits().queueRejected, 1);
  assert.equal(waiting.settled(), false);
});

test('queue timeout -> UPSTREAM_QUEUE_TIMEOUT, answered 503 with Retry-After; a cancelled waiter frees its place', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 1, timeout: '30ms' } });
  const target = pool.targets[0];
  await acquire(t, pool, target).done;
  const cancelled = acquire(t, pool, target);
  cancelled.cancel();
  assert.equal(pool.limits().queued, 0);
  const timedOut = await acquire(t, pool, target).done; // the cancelled one no longer takes the only place
  assert.equal(timedOut.err?.code, 'UPSTREAM_QUEUE_TIMEOUT');
  assert.equal(timedOut.err?.retryable, false);
  assert.equal(timedOut.err?.side, 'upstream');
  assert.equal(statusOf('UPSTREAM_QUEUE_TIMEOUT'), 503);
  assert.match(cannedResponse('UPSTREAM_QUEUE_TIMEOUT').toString('latin1'), /^HTTP\/1\.1 503 [\s\S]*Retry-After: 1\r\n/);
  assert.deepEqual({ queued: pool.limits().queued, timeouts: pool.limits().queueTimeouts }, { queued: 0, timeouts: 1 });
  assert.equal(cancelled.settled(), false, 'a cancelled waiter is never called back');
});

test('close() answers queued acquires with UPSTREAM_UNAVAILABLE', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1 });
  const target = pool.targets[0];
  await acquire(t, pool, target).done;
  const waiting = acquire(t, pool, target);
  pool.close();
  assert.equal((await waiting.done).err?.code, 'UPSTREAM_UNAVAILABLE');
});

test('waiters on a target that leaves rotation (health flip, drain, passive down) are told to pick again, with their deadline', async (t) => {
  const ways: Array<[string, (pool: UpstreamPool, target: Target) => void]> = [
    ['health flip', (pool, target) => pool.setTargetState(target.id, { healthy: false, draining: false })],
    ['drain', (pool, target) => pool.setTargetState(target.id, { healthy: true, draining: true })],
    ['passive down', (pool, target) => pool.reportFailure(target, 'UPSTREAM_HEADERS_TIMEOUT')],
  ];
  for (const [why, takeOut] of ways) {
    const [pa, pb] = await Promise.all([tcpEchoServer(t), tcpEchoServer(t)]);
    const pool = poolFor(t, { targets: [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`], max_connections: 1, queue: { size: 4, timeout: '20s' } });
    const [a, b] = pool.targets;
    const holding = await acquire(t, pool, a).done;
    assert.equal(holding.err, null);
    const before = Date.now();
    const waiting = acquire(t, pool, a);
    await new Promise((r) => setImmediate(r));
    assert.equal(waiting.settled(), false, `${why}: queued behind the held socket`);
    takeOut(pool, a);
    const moved = await waiting.done;
    assert.equal(moved.err?.code, 'UPSTREAM_TARGET_GONE', why);
    assert.equal(moved.err?.retryable, true, why);
    assert.equal(moved.err?.side, 'upstream');
    assert.equal(statusOf('UPSTREAM_TARGET_GONE'), 503, 'when no other target takes it');
    assert.ok(moved.waitUntil !== undefined && moved.waitUntil >= before + 20_000 && moved.waitUntil <= Date.now() + 20_000, `${why}: the deadline of the wait already begun`);
    assert.equal(pool.limits().queued, 0);
    assert.equal(pool.limits().queueTimeouts, 0);
    // The caller picks again and keeps the deadline: b has room, so it connects at once.
    assert.equal(pool.balancer.pick(new Set([a])), b);
    const onB = await acquire(t, pool, b, moved.waitUntil).done;
    assert.equal(onB.err, null, why);
    pool.close();
  }
});

test('a moved waiter that must queue again keeps the rest of its wait, not a new queue.timeout', async (t) => {
  const [pa, pb] = await Promise.all([tcpEchoServer(t), tcpEchoServer(t)]);
  const pool = poolFor(t, { targets: [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`], max_connections: 1, queue: { size: 4, timeout: '20s' } });
  const [, b] = pool.targets;
  await acquire(t, pool, b).done;
  const started = Date.now();
  const requeued = await acquire(t, pool, b, Date.now() + 40).done; // 40 ms left of a 20 s queue timeout
  assert.equal(requeued.err?.code, 'UPSTREAM_QUEUE_TIMEOUT');
  assert.ok(Date.now() - started < 10_000, 'timed out on the deadline it brought');
  const late = await acquire(t, pool, b, Date.now() - 1).done; // its time was already up
  assert.equal(late.err?.code, 'UPSTREAM_QUEUE_TIMEOUT');
  assert.equal(pool.limits().queueTimeouts, 2);
});

test('one queue timer for every waiter: a waiter queued after the earlier one was served still times out, never before its expiry', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 4, timeout: '60ms' } });
  const [a] = pool.targets;
  const holding = await acquire(t, pool, a).done;
  const first = acquire(t, pool, a); // arms the queue timer for its expiry
  pool.release(a, holding.socket!, true);
  assert.equal((await first.done).err, null, 'served before its expiry');
  const queuedAt = Date.now();
  const second = await acquire(t, pool, a).done; // the timer armed for the first one must come round to it
  assert.equal(second.err?.code, 'UPSTREAM_QUEUE_TIMEOUT');
  assert.ok(Date.now() - queuedAt >= 59, `answered after its own queue.timeout (${Date.now() - queuedAt} ms)`);
  assert.deepEqual({ queued: pool.limits().queued, timeouts: pool.limits().queueTimeouts }, { queued: 0, timeouts: 1 });
});

test('one queue timer for every waiter: a later waiter with an earlier expiry (a moved one) times out first; the others wait on', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 4, timeout: '20s' } });
  const [a] = pool.targets;
  await acquire(t, pool, a).done;
  const long = acquire(t, pool, a); // 20 s: the timer is armed for it
  const started = Date.now();
  const short = await acquire(t, pool, a, Date.now() + 40).done; // 40 ms left: the timer must be brought forward
  assert.equal(short.err?.code, 'UPSTREAM_QUEUE_TIMEOUT');
  assert.ok(Date.now() - started < 10_000, 'timed out on its own deadline, not the first waiter\'s');
  assert.equal(long.settled(), false, 'the first waiter still waits');
  assert.deepEqual({ queued: pool.limits().queued, timeouts: pool.limits().queueTimeouts }, { queued: 1, timeouts: 1 });
  pool.close();
  assert.equal((await long.done).err?.code, 'UPSTREAM_UNAVAILABLE');
});

test('waiters stay on a target that is merely full, and on the last target when every one is down (panic tries it anyway)', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 4, timeout: '20s' } });
  const [a] = pool.targets;
  const holding = await acquire(t, pool, a).done;
  const waiting = acquire(t, pool, a);
  await new Promise((r) => setImmediate(r));
  pool.setTargetState(a.id, { healthy: false, draining: false });
  assert.equal(pool.panic, true);
  await new Promise((r) => setImmediate(r));
  assert.equal(waiting.settled(), false, 'panic: the only target is tried anyway, so its waiters stay');
  // Drained, it is out even in panic: its waiters have nowhere to go but their callers' 503.
  pool.setTargetState(a.id, { healthy: false, draining: true });
  assert.equal((await waiting.done).err?.code, 'UPSTREAM_TARGET_GONE');
  pool.release(a, holding.socket!, true);
});

test('a full target leaves rotation while another has room, and all-full targets stay available to queue on', async (t) => {
  const [pa, pb] = await Promise.all([tcpEchoServer(t), tcpEchoServer(t)]);
  const pool = poolFor(t, { targets: [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`], max_connections: 1 });
  const [a, b] = pool.targets;
  const onA = await acquire(t, pool, a).done;
  assert.deepEqual([a.available, b.available], [false, true]);
  for (let i = 0; i < 6; i++) assert.equal(pool.balancer.pick(), b);
  const onB = await acquire(t, pool, b).done;
  assert.deepEqual([a.available, b.available], [true, true], 'everything full: pick one and wait in its queue');
  pool.release(b, onB.socket!, true); // idle again: b has a socket to give
  assert.deepEqual([a.available, b.available], [false, true]);
  pool.release(a, onA.socket!, true);
  assert.deepEqual([a.available, b.available], [true, true]);
});

test('backup targets are used only while every primary is down', () => {
  const pool = poolFor(null, { targets: ['127.0.0.1:1', '127.0.0.1:2', { address: '127.0.0.1:3', backup: true }] });
  const [p1, p2, backup] = pool.targets;
  const picks = (): Set<string> => new Set(Array.from({ length: 12 }, () => pool.balancer.pick()?.id ?? 'none'));
  assert.equal(backup.available, false);
  assert.deepEqual([...picks()].sort(), [p1.id, p2.id]);
  pool.setTargetState(p1.id, { healthy: false, draining: false });
  assert.deepEqual([...picks()], [p2.id], 'one primary left: still no backup');
  pool.setTargetState(p2.id, { healthy: false, draining: false });
  assert.deepEqual([...picks()], [backup.id], 'every primary down: the backup serves');
  assert.equal(pool.panic, false);
  pool.setTargetState(p2.id, { healthy: true, draining: false });
  assert.deepEqual([...picks()], [p2.id], 'a primary back: the backup leaves rotation');
  assert.deepEqual(
    pool.stats().map((s) => s.backup),
    [false, false, true],
  );
  pool.close();
});

test('a backup target needs at least one primary in config', () => {
  const r = configSchema.safeParse({ listeners: [{ address: ':0' }], upstreams: { u: { targets: [{ address: '127.0.0.1:1', backup: true }] } } });
  assert.equal(r.success, false);
  assert.match(JSON.stringify(r.error?.issues), /must not be a backup/);
});

test('weight 0 receives nothing, even when every other target is down (panic skips it too)', () => {
  for (const balance of ['round_robin', 'least_conn', 'random_two', { policy: 'hash', key: 'header:x' }] as const) {
    const pool = poolFor(null, { balance, targets: ['127.0.0.1:1', { address: '127.0.0.1:2', weight: 0 }] });
    const [live, drained] = pool.targets;
    for (let i = 0; i < 20; i++) assert.equal(pool.balancer.pickFor(`k${i}`), live, JSON.stringify(balance));
    pool.setTargetState(live.id, { healthy: false, draining: false });
    assert.equal(pool.panic, true);
    for (let i = 0; i < 20; i++) assert.notEqual(pool.balancer.pickFor(`k${i}`), drained);
    assert.equal(drained.available, false);
    pool.close();
  }
});

test('slow start: a target coming back is ramped from 10% to 100% of its share over slow_start (injected clock)', () => {
  for (const balance of ['round_robin', 'least_conn', 'random_two'] as const) {
    let now = 1_000_000;
    const pool = poolFor(null, { balance, slow_start: '30s', targets: ['127.0.0.1:1', '127.0.0.1:2'] }, () => now);
    const [a, b] = pool.targets;
    assert.equal(a.rampUntil, 0, 'no slow start at start');
    pool.setTargetState(b.id, { healthy: false, draining: false });
    pool.setTargetState(b.id, { healthy: true, draining: false });
    assert.equal(b.rampUntil, now + 30_000);
    assert.equal(pool.stats()[1].rampingUp, true);
    const shareOfB = (n: number): number => {
      let hits = 0;
      for (let i = 0; i < n; i++) if (pool.balancer.pick() === b) hits++;
      return hits / n;
    };
    const atStart = shareOfB(2000); // weights 1 : 0.1 -> ~9%
    now += 15_000;
    const halfway = shareOfB(2000); // 1 : 0.55 -> ~35%
    now += 15_000;
    const done = shareOfB(2000); // 1 : 1 -> 50%
    assert.ok(atStart > 0.04 && atStart < 0.15, `${balance}: share at start ${atStart}`);
    assert.ok(halfway > 0.28 && halfway < 0.42, `${balance}: share halfway ${halfway}`);
    assert.ok(done > 0.45 && done < 0.55, `${balance}: share at the end ${done}`);
    assert.equal(pool.stats()[1].rampingUp, false);
    pool.close();
  }
});

test('slow start also follows undrain and passive recovery; hash ignores it', () => {
  let now = 5_000;
  const pool = poolFor(null, { slow_start: '10s', targets: ['127.0.0.1:1', '127.0.0.1:2'], health: { passive: { max_fails: 1, fail_timeout: '1s' } } }, () => now);
  const [a, b] = pool.targets;
  pool.setTargetState(a.id, { healthy: true, draining: true });
  pool.setTargetState(a.id, { healthy: true, draining: false });
  assert.equal(a.rampUntil, 15_000);
  pool.reportFailure(b, 'UPSTREAM_CONNECT_REFUSED');
  assert.equal(b.available, false);
  now += 1_000;
  pool.setTargetState(a.id, { healthy: true, draining: false }); // any refresh sees b's down period over
  assert.equal(b.rampUntil, 16_000);
  pool.close();

  const t: Target = { id: 'x:1', host: 'x', port: 1, weight: 10, available: true, active: 0, rampUntil: 100 };
  assert.ok(Math.abs(rampedWeight(t, 100 - 1000, 1000) - 10 * SLOW_START_FLOOR) < 1e-9);
  assert.ok(Math.abs(rampedWeight(t, 100 - 500, 1000) - 10 * (SLOW_START_FLOOR + (1 - SLOW_START_FLOOR) / 2)) < 1e-9);
  assert.equal(rampedWeight(t, 100, 1000), 10);
  const spec: BalanceSpec = { policy: 'hash', key: 'header:x' };
  const targets: Target[] = [t, { ...t, id: 'y:1', rampUntil: 0 }];
  const hash = createBalancer(spec, targets, { slowStart: 1000, now: () => 0 });
  const plain = createBalancer(spec, targets);
  for (let i = 0; i < 50; i++) assert.equal(hash.pickFor(`key-${i}`), plain.pickFor(`key-${i}`));
});

test('retry budget: retries capped at the share of requests over the window, with a floor per second', () => {
  const budget = new RetryBudget(0.2, 1);
  let now = 0;
  // Floor: 1/s over a 10 s window = 10 retries with no requests at all.
  let granted = 0;
  for (let i = 0; i < 50; i++) if (budget.tryRetry(now)) granted++;
  assert.equal(granted, 10);
  // 100 requests -> 20% = 20 retries in the window (10 already used).
  for (let i = 0; i < 100; i++) budget.request(now);
  granted = 0;
  for (let i = 0; i < 50; i++) if (budget.tryRetry(now)) granted++;
  assert.equal(granted, 10);
  assert.deepEqual(budget.stats(now), { requests: 100, retries: 20, retriesTotal: 20, deniedTotal: 80 });
  // The window slides: after it has passed, the old requests and retries no longer count.
  now += RETRY_WINDOW_MS;
  assert.deepEqual(budget.stats(now), { requests: 0, retries: 0, retriesTotal: 20, deniedTotal: 80 });
  granted = 0;
  for (let i = 0; i < 50; i++) if (budget.tryRetry(now)) granted++;
  assert.equal(granted, 10);
});

test('the pool exposes its retry budget; retries.max bounds a request and the budget bounds the pool', () => {
  let now = 0;
  const pool = poolFor(null, { targets: ['127.0.0.1:1'], retries: { max: 2, budget: 0.5, min_per_second: 0 } }, () => now);
  assert.equal(pool.config.retries.max, 2);
  assert.equal(pool.allowRetry(), false, 'no requests, no floor: no retry');
  for (let i = 0; i < 4; i++) pool.countRequest();
  assert.deepEqual([pool.allowRetry(), pool.allowRetry(), pool.allowRetry()], [true, true, false]);
  now += RETRY_WINDOW_MS + 1;
  assert.equal(pool.allowRetry(), false);
  assert.deepEqual(pool.limits().retries, { requests: 0, retries: 0, retriesTotal: 2, deniedTotal: 3 });
  pool.close();
});
