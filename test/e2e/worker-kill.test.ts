// SIGKILL of one of 2 workers under load, with the real `portico start`: kept-alive GET loops and WebSockets
// on both workers (which worker accepted each client connection is read from /proc, not guessed). Only the
// killed worker's connections end; the other worker's WebSockets stay open and echo, its GET loops never fail;
// the primary starts the replacement within 1 s of the kill (a generous bound on exit detection: a first restart
// has no backoff, and the standby worker takes the slot, or a fresh fork when there is none; it checks the
// supervisor restarts at once, not a speed). The time to the replacement's "worker ready" adds its apply (and,
// for a fresh fork, loading its modules), which depends on the machine's load (`npm run bench:restart` measures
// it): it is reported (diagnostic), bounded at 15 s.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { WebSocket } from 'ws';
import { startHttpBackend, startWsEchoBackend } from '../helpers/backends.js';
import { closed, echo } from '../helpers/clients.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { acceptedBy, workerPids } from '../helpers/proc-stats.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { ResponseReader } from '../helpers/wire.js';

/** Kill to the replacement's fork ("worker started"), at most (see the header). */
const RESTART_BOUND_MS = 1_000;
/** Of each kind, on each worker, at least this many before the kill. */
const PER_WORKER_WS = 10;
const PER_WORKER_LOOPS = 2;

async function connectPlain(t: TestContext, port: number): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port });
  t.after(() => {
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => {});
  return socket;
}

/** GETs back to back on one kept-alive connection until stopped or the connection fails (bounded). */
function keptAliveLoop(socket: net.Socket, name: string): { readonly ok: number; readonly failure: string | undefined; stop(): Promise<void> } {
  const reader = new ResponseReader(socket);
  let ok = 0;
  let failure: string | undefined;
  let stopped = false;
  const done = (async () => {
    const deadline = Date.now() + 90_000;
    for (let i = 0; i < 100_000 && !stopped && Date.now() < deadline; i++) {
      try {
        socket.write(`GET /keep/${name}/${i} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
        const res = await reader.next({ timeoutMs: 10_000 });
        if (res.status !== 200) throw new Error(`status ${res.status}`);
        ok++;
      } catch (err) {
        failure = (err as Error).message;
        return;
      }
    }
  })();
  return {
    get ok() {
      return ok;
    },
    get failure() {
      return failure;
    },
    async stop() {
      stopped = true;
      await done;
    },
  };
}

test('SIGKILL of one worker under load: only its connections end, the other worker never fails, a replacement is started within 1 s', { timeout: 120_000 }, async (t) => {
  const app = await startHttpBackend(t, { name: 'app' });
  const wsBackend = await startWsEchoBackend(t);
  const portico = await startPortico(t, {
    workers: 2,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${app.port}`] }, ws: { targets: [`127.0.0.1:${wsBackend.port}`] } },
    routes: [
      { match: { path: '/ws' }, proxy: 'ws' },
      { match: { path: '/' }, proxy: 'app' },
    ],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  const port = portico.httpPort;
  const pids = await workerPids(portico);
  const [victim, survivor] = pids;
  const owners = (): Map<number, number> => acceptedBy(pids, port);

  // WebSockets on fresh connections until each worker holds enough (the kernel picks the worker).
  const sockets: Array<{ ws: WebSocket; localPort: number; owner: number; closedCode: number | undefined }> = [];
  const count = (pid: number): number => sockets.filter((s) => s.owner === pid).length;
  for (let batch = 0; batch < 30 && pids.some((p) => count(p) < PER_WORKER_WS); batch++) {
    const opened = await Promise.all(
      Array.from({ length: 10 }, async () => {
        let raw: net.Socket | undefined;
        const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
          handshakeTimeout: 10_000,
          createConnection: () => (raw = net.connect({ host: '127.0.0.1', port })),
        });
        t.after(() => ws.terminate());
        ws.on('error', () => {});
        await new Promise<void>((resolve, reject) => {
          ws.once('open', resolve);
          ws.once('close', (code: number) => reject(new Error(`closed (${code}) before open`)));
        });
        return { ws, localPort: raw?.localPort ?? 0 };
      }),
    );
    // A worker may be handing a socket to the splice relay (dup, then close) while /proc is read: read again
    // until every connection is found (bounded), rather than trust one snapshot.
    const map = await until('a worker holds each WebSocket connection', owners, (m) => opened.every((o) => m.has(o.localPort)), 5_000);
    for (const o of opened) {
      const entry = { ...o, owner: map.get(o.localPort) ?? -1, closedCode: undefined as number | undefined };
      assert.notEqual(entry.owner, -1, 'each WebSocket connection is held by a worker');
      o.ws.on('close', (code: number) => (entry.closedCode = code));
      sockets.push(entry);
    }
  }
  assert.ok(count(victim) >= PER_WORKER_WS && count(survivor) >= PER_WORKER_WS, `WebSockets per worker: ${count(victim)}, ${count(survivor)}`);

  // Kept-alive GET loops, likewise on both workers.
  const loops: Array<{ loop: ReturnType<typeof keptAliveLoop>; owner: number }> = [];
  t.after(() => Promise.all(loops.map((l) => l.loop.stop())));
  const loopCount = (pid: number): number => loops.filter((l) => l.owner === pid).length;
  for (let i = 0; i < 60 && pids.some((p) => loopCount(p) < PER_WORKER_LOOPS); i++) {
    const socket = await connectPlain(t, port);
    // connect() resolves once the kernel queued the connection; a worker holds it only after its accept()
    const owner = await until('a worker accepted the loop connection', () => owners().get(socket.localPort ?? 0) ?? -1, (o) => o !== -1, 5_000);
    loops.push({ loop: keptAliveLoop(socket, String(i)), owner });
  }
  assert.ok(loopCount(victim) >= PER_WORKER_LOOPS && loopCount(survivor) >= PER_WORKER_LOOPS, `loops per worker: ${loopCount(victim)}, ${loopCount(survivor)}`);
  await until('every loop made 5 requests', () => loops.map((l) => l.loop.ok), (oks) => oks.every((n) => n >= 5), 15_000);

  const killedAt = Date.now();
  process.kill(victim, 'SIGKILL');
  const started = await portico.waitForLog((l) => l.msg === 'worker started' && l.worker === 1 && l.workerPid !== victim, 15_000);
  const ready = await portico.waitForLog((l) => l.msg === 'worker ready' && l.worker === 1 && l.workerPid === started.workerPid, 15_000);
  const restartMs = Date.parse(String(started.time)) - killedAt;
  const readyMs = Date.parse(String(ready.time)) - killedAt;

  // The survivor's loops go on: each makes 20 more requests, none fails.
  const survivorLoops = loops.filter((l) => l.owner === survivor);
  const before = survivorLoops.map((l) => l.loop.ok);
  await until('the other worker keeps serving', () => survivorLoops.map((l) => [l.loop.ok, l.loop.failure] as const), (xs) => xs.every(([ok, failure], i) => failure !== undefined || ok >= before[i] + 20), 30_000);
  const victimLoops = loops.filter((l) => l.owner === victim);
  await until('the killed worker\'s loops saw their connections end', () => victimLoops.map((l) => l.loop.failure), (fs) => fs.every((f) => f !== undefined), 15_000);
  await Promise.all(loops.map((l) => l.loop.stop()));
  assert.deepEqual(survivorLoops.map((l) => l.loop.failure), survivorLoops.map(() => undefined), 'no request of the other worker failed');

  // WebSockets: the victim's are closed, the survivor's are open and echo.
  const mine = sockets.filter((s) => s.owner === victim);
  const theirs = sockets.filter((s) => s.owner === survivor);
  await Promise.all(mine.map((s) => closed(s.ws, 15_000)));
  const replies = await Promise.all(theirs.map((s, i) => echo(s.ws, `after kill ${i}`)));
  replies.forEach((m, i) => assert.equal(m, `after kill ${i}`));
  assert.deepEqual(theirs.filter((s) => s.closedCode !== undefined).map((s) => s.closedCode), [], 'no WebSocket of the other worker closed');
  const s = await until('the tunnels are counted', () => adminStatus(portico), (x) => x.tunnels === theirs.length && x.workers.every((w) => w.pid !== null && w.state === 'ready'), 10_000);
  assert.equal(s.workers.find((w) => w.id === 2)?.pid, survivor, 'the other worker was not restarted');
  assert.equal(wsBackend.open, theirs.length, 'the killed worker\'s tunnels are closed on the backend side too');

  // Times from the primary's log lines (its clock is this machine's): kill -> fork, kill -> ready.
  assert.ok(restartMs < RESTART_BOUND_MS, `replacement forked ${restartMs} ms after the kill (bound ${RESTART_BOUND_MS} ms)`);
  t.diagnostic(`replacement started ${restartMs} ms (${started.standby === true ? 'the standby' : 'a fresh fork'}) and ready ${readyMs} ms after SIGKILL`);
});
