// The wait queue's one timer under a flood: work per fire bounded by the waiters whose time is up (not by the
// waiters queued), expiry at each waiter's exact expiry in order, moved waiters keeping their deadline, FIFO
// service per target. Real loopback targets hold max_connections; node:test's mocked setTimeout and Date drive
// the queue timer and the pool's clock, so deadlines are exact and nothing waits on wall time.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Target } from '../../src/upstream/balancer.js';
import type { UpstreamPool } from '../../src/upstream/pool.js';
import { ExpiryHeap } from '../../src/upstream/expiry-heap.js';
import { tcpEchoServer } from '../helpers/tcp-server.js';
import { acquire as acquireNow, poolFor } from '../helpers/pool.js';

/** One queued acquire: its answer (code or a socket) and the pool clock when it came; cancel = the client left. */
interface Queued {
  code: string | null;
  at: number;
  waitUntil: number | undefined;
  cancel: () => void;
}

/** Queues an acquire on `target` (mocked clock: the answer's time is exact); sockets it gets are destroyed after. */
function enqueue(t: TestContext, pool: UpstreamPool, target: Target, waitUntil = 0): Queued {
  const q: Queued = { code: null, at: -1, waitUntil: undefined, cancel: () => {} };
  q.cancel = pool.acquire(
    target,
    (err, socket, _reused, until) => {
      q.at = Date.now();
      q.code = err === null ? 'SOCKET' : err.code;
      q.waitUntil = until;
      if (socket !== null) {
        socket.on('error', () => {});
        t.after(() => socket.destroy());
      }
    },
    waitUntil,
  );
  return q;
}

/** Lets the pool's process.nextTick answers run (mocked timers do not cover them). */
const ticks = (): Promise<void> => new Promise((r) => process.nextTick(r));

test('a flood of 100,000 queued waiters with spread deadlines: each timer fire visits only the waiters whose time is up', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 200_000, timeout: '10s' } }, () => Date.now());
  const target = pool.targets[0];
  const held = await acquireNow(t, pool, target); // the target is full from here on: every acquire queues
  assert.equal(held.err, null);
  const T0 = Date.now();
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const N = 100_000;
  const PER_MS = 20; // 20 waiters queued per ms: expiries spread over 5 s, one timer fire each ms
  const waiters: Queued[] = [];
  for (let i = 0; i < N; i++) {
    if (i > 0 && i % PER_MS === 0) t.mock.timers.tick(1);
    waiters.push(enqueue(t, pool, target));
  }
  // a third of the clients go away: their entries are garbage the timer must skip, not a cost per fire
  for (let i = 0; i < N; i += 3) waiters[i].cancel();
  const live = N - Math.ceil(N / 3);
  assert.equal(pool.limits().queued, live);
  t.mock.timers.tick(10_000 - 1 - (N / PER_MS - 1)); // up to 1 ms before the first expiry
  assert.equal(pool.queueTimerVisits, 0, 'nothing expired yet');
  let fires = 0;
  for (let ms = 0; ms < N / PER_MS; ms++) {
    const before = pool.queueTimerVisits;
    t.mock.timers.tick(1);
    const visits = pool.queueTimerVisits - before;
    // this ms's 20 entries are due (answered or skipped), and cancelled ones next in line are dropped from the
    // top; a walk of the whole queue would visit up to 100,000
    assert.ok(visits <= 2 * PER_MS, `fire at +${ms} ms visited ${visits} waiters, ${PER_MS} were due`);
    if (visits > 0) fires++;
  }
  assert.equal(pool.queueTimerVisits, N, 'each entry visited once in all');
  assert.equal(fires, N / PER_MS);
  assert.deepEqual({ queued: pool.limits().queued, timeouts: pool.limits().queueTimeouts }, { queued: 0, timeouts: live });
  for (let i = 0; i < N; i++) {
    const w = waiters[i];
    if (i % 3 === 0) assert.equal(w.code, null, `cancelled waiter ${i} is never answered`);
    else {
      const expires = T0 + Math.floor(i / PER_MS) + 10_000;
      if (w.code !== 'UPSTREAM_QUEUE_TIMEOUT' || w.at !== expires) assert.fail(`waiter ${i}: ${w.code} at ${w.at}, expected UPSTREAM_QUEUE_TIMEOUT at ${expires}`);
    }
  }
});

test('waiters served or cancelled in a flood leave bounded garbage: the timer never walks them after compaction', async (t) => {
  const port = await tcpEchoServer(t);
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 200_000, timeout: '10s' } }, () => Date.now());
  const target = pool.targets[0];
  const held = await acquireNow(t, pool, target);
  assert.equal(held.err, null);
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
  const N = 50_000;
  const waiters: Queued[] = [];
  for (let i = 0; i < N; i++) waiters.push(enqueue(t, pool, target));
  for (let i = 0; i < N - 10; i++) waiters[i].cancel(); // all but the last ten clients abort
  pool.release(target, held.socket, true); // and the first of those ten is served
  await ticks();
  assert.equal(waiters[N - 10].code, 'SOCKET');
  t.mock.timers.tick(10_000);
  assert.ok(pool.queueTimerVisits <= 2 * 9, `the fire visited ${pool.queueTimerVisits} entries for 9 live waiters`);
  for (let i = N - 9; i < N; i++) assert.equal(waiters[i].code, 'UPSTREAM_QUEUE_TIMEOUT');
  assert.deepEqual({ queued: pool.limits().queued, timeouts: pool.limits().queueTimeouts }, { queued: 0, timeouts: 9 });
});

test('expiry is exact and in deadline order across targets; a moved waiter keeps its deadline; service stays FIFO per target', async (t) => {
  const [pa, pb] = await Promise.all([tcpEchoServer(t), tcpEchoServer(t)]);
  const pool = poolFor(t, { targets: [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`], max_connections: 1, queue: { size: 16, timeout: '1s' } }, () => Date.now());
  const [a, b] = pool.targets;
  const heldA = await acquireNow(t, pool, a);
  const heldB = await acquireNow(t, pool, b);
  assert.equal(heldA.err, null);
  assert.equal(heldB.err, null);
  const T0 = Date.now();
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const a1 = enqueue(t, pool, a); // expires T0 + 1000
  t.mock.timers.tick(100);
  const a2 = enqueue(t, pool, a); // T0 + 1100
  t.mock.timers.tick(100);
  const b1 = enqueue(t, pool, b); // T0 + 1200
  t.mock.timers.tick(100);
  pool.setTargetState(a.id, { healthy: true, draining: true }); // a's waiters are told to pick again
  await ticks();
  assert.deepEqual([a1.code, a1.waitUntil, a2.code, a2.waitUntil], ['UPSTREAM_TARGET_GONE', T0 + 1000, 'UPSTREAM_TARGET_GONE', T0 + 1100]);
  // the callers pick b and bring their deadlines: queued behind b1, due before it
  const a1b = enqueue(t, pool, b, a1.waitUntil);
  const a2b = enqueue(t, pool, b, a2.waitUntil);
  t.mock.timers.tick(100);
  const b2 = enqueue(t, pool, b); // T0 + 1400
  t.mock.timers.tick(100);
  pool.release(b, heldB.socket, true); // FIFO on b: b1 came first to b, so it gets the socket
  await ticks();
  assert.deepEqual([b1.code, a1b.code, a2b.code, b2.code], ['SOCKET', null, null, null]);
  const answered: string[] = [];
  for (let ms = 500; ms < 1500; ms++) {
    t.mock.timers.tick(1);
    for (const [name, w] of [['a1b', a1b], ['a2b', a2b], ['b2', b2]] as const) if (w.at === T0 + ms + 1) answered.push(`${name}@${w.at - T0}:${w.code}`);
  }
  assert.deepEqual(answered, ['a1b@1000:UPSTREAM_QUEUE_TIMEOUT', 'a2b@1100:UPSTREAM_QUEUE_TIMEOUT', 'b2@1400:UPSTREAM_QUEUE_TIMEOUT']);
  assert.deepEqual({ queued: pool.limits().queued, timeouts: pool.limits().queueTimeouts }, { queued: 0, timeouts: 3 });
});

test('the expiry heap gives back live entries by (expiry, arrival) whatever the push order, and keeps its garbage under half', () => {
  const heap = new ExpiryHeap<{ expires: number; done: boolean; id: number }>();
  const entries: Array<{ expires: number; done: boolean; id: number }> = [];
  let seed = 7;
  const random = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648;
  for (let id = 0; id < 5_000; id++) {
    const e = { expires: Math.floor(random() * 500), done: false, id };
    entries.push(e);
    heap.push(e);
    if (random() < 0.4) {
      const victim = entries[Math.floor(random() * entries.length)];
      if (!victim.done) {
        victim.done = true;
        heap.dropped();
      }
    }
    const live = entries.filter((x) => !x.done).length;
    if (heap.size > 2 * live) assert.fail(`${heap.size} entries held for ${live} live`);
  }
  const want = entries.filter((e) => !e.done).sort((a, b) => a.expires - b.expires || a.id - b.id);
  assert.equal(heap.next(), want[0].expires);
  const got = [...heap.take(249), ...heap.take(499)];
  assert.deepEqual(got.map((e) => e.id), want.map((e) => e.id));
  assert.equal(heap.next(), Infinity);
  assert.equal(heap.size, 0);
});
