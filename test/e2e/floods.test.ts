// Floods against the real `portico start` (one worker, so its fd count is the whole story): 300 slowloris
// connections trickle request heads a byte at a time and never finish them, while normal requests are served
// with no failure; each slow one gets 408 when timeouts.head (2s here) runs out, counted from its accept, not
// from its last byte, and the worker's fds come back to their baseline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startHttpBackend } from '../helpers/backends.js';
import { getLoop, progress } from '../helpers/loops.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { singleWorkerResources } from '../helpers/proc-stats.js';
import { until } from '../helpers/until.js';

const SLOW = 300;
const HEAD_TIMEOUT_MS = 2_000;
/** Bytes one slow client sends per tick, and how often: 3,000 writes/s for the whole flood. */
const TICK_MS = 100;

interface SlowClient {
  socket: net.Socket;
  connectedAt: number;
  /** Bytes of the head sent so far (it never ends: no blank line). */
  sent: number;
  reply: Buffer;
  closedAt: number | undefined;
}

test(`${SLOW} slowloris heads: normal requests never fail, each slow one gets 408 at timeouts.head, fds return to baseline`, { timeout: 120_000 }, async (t) => {
  const app = await startHttpBackend(t, { name: 'app' });
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${app.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    timeouts: { head: `${HEAD_TIMEOUT_MS}ms` },
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  const port = portico.httpPort;
  const quiet = (r: Awaited<ReturnType<typeof singleWorkerResources>>): boolean => r.connections === 0 && Object.values(r.busy).every((b) => b.active === 0 && b.inUse === 0);
  // warm-up, then the baseline with nothing open
  const warm = getLoop(port, '/warm', true);
  await progress([warm], 5);
  assert.deepEqual((await warm.stop()).failures, []);
  const baseline = await until('worker quiet', () => singleWorkerResources(portico), quiet);

  const loops = [getLoop(port, '/during', true), getLoop(port, '/during', true), getLoop(port, '/during', false), getLoop(port, '/during', false)];
  t.after(() => Promise.all(loops.map((l) => l.stop())));

  // short header lines, so a line ends every 0.6 s (a parser re-reads the head at line ends)
  const head = Buffer.from(`GET /slow HTTP/1.1\r\nHost: localhost\r\n${'X: a\r\n'.repeat(90)}`);
  const slow: SlowClient[] = [];
  // the loops' counts when the first slow head is closed: normal requests must have been answered before it
  let atFirstClose: number[] | undefined;
  for (let batch = 0; batch < SLOW / 50; batch++) {
    const opened = await Promise.all(
      Array.from(
        { length: 50 },
        () =>
          new Promise<SlowClient>((resolve, reject) => {
            const socket = net.connect({ host: '127.0.0.1', port });
            t.after(() => {
              socket.destroy();
            });
            socket.once('error', reject);
            socket.once('connect', () => {
              const c: SlowClient = { socket, connectedAt: Date.now(), sent: 0, reply: Buffer.alloc(0), closedAt: undefined };
              socket.on('data', (d: Buffer) => (c.reply = Buffer.concat([c.reply, d])));
              socket.on('close', () => {
                c.closedAt ??= Date.now();
                atFirstClose ??= loops.map((l) => l.ok);
              });
              socket.off('error', reject);
              socket.on('error', () => {});
              resolve(c);
            });
          }),
      ),
    );
    slow.push(...opened);
  }
  const atStart = loops.map((l) => l.ok);
  const trickle = setInterval(() => {
    for (const c of slow) {
      if (c.closedAt !== undefined || c.sent >= head.length) continue;
      c.socket.write(head.subarray(c.sent, c.sent + 1));
      c.sent++;
    }
  }, TICK_MS);
  t.after(() => clearInterval(trickle));

  // Normal traffic goes on while every slow head is open: each loop was answered between the trickle's start and the
  // first 408 (read when that close came, so a loaded machine's slower loops do not turn this into a race)
  await progress(loops, 20, 30_000);
  const before = atFirstClose ?? loops.map((l) => l.ok);
  assert.ok(before.every((n, i) => n > atStart[i]), `every loop was answered while all slow heads were open (${atStart.join(',')} -> ${before.join(',')})`);
  await until('every slow connection was closed', () => slow.filter((c) => c.closedAt === undefined).length, (n) => n === 0, 30_000, 100);
  clearInterval(trickle);
  await progress(loops, 5);
  const results = await Promise.all(loops.map((l) => l.stop()));
  assert.deepEqual(results.flatMap((r) => r.failures), [], 'no normal request failed');

  const early: number[] = [];
  const late: number[] = [];
  for (const c of slow) {
    assert.match(c.reply.toString('latin1'), /^HTTP\/1\.1 408 /, 'each slow head gets 408');
    const lived = (c.closedAt as number) - c.connectedAt;
    // The deadline runs from the accept (not refreshed by bytes); a sweep checks it every 250 ms. 250 ms of slack
    // below it for this process's own event-loop lag between the kernel's events and their callbacks.
    if (lived < HEAD_TIMEOUT_MS - 250) early.push(lived);
    if (lived > HEAD_TIMEOUT_MS + 5_000) late.push(lived);
    assert.ok(c.sent < head.length, 'the head never completed');
  }
  assert.deepEqual(early, [], 'no 408 before timeouts.head');
  assert.deepEqual(late, [], 'the trickle did not extend the head deadline (generous bound: +5 s)');

  const after = await until('fds back to baseline', () => singleWorkerResources(portico), (r) => quiet(r) && r.fdsBeyondIdle === baseline.fdsBeyondIdle, 15_000);
  assert.equal(after.pid, baseline.pid, 'the same worker');
});
