// Native accept (src/native/io.cc, NativeListener in src/native/io.ts) as clients see it through a running Portico:
// a burst of connections is accepted in batches with none refused; past the fd limit a connection is refused at
// accept, counted and logged, and service resumes; SIGTERM stops accepting at once while a request in flight
// finishes; ~10,000 idle spliced tunnels in one worker with the default config, fds back after they close and RSS
// settled (a third round of as many tunnels takes no more memory).
// With PORTICO_NATIVE_IO=0 (or no addon) the same behaviours hold on Node's net.Server, which /status names.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { native } from '../../src/native/addon.js';
import { nativeIoAvailable } from '../../src/native/io.js';
import { FD_RESERVE } from '../../src/worker/fd-limit.js';
import { adminStatus, adminUrl, statusUntil, type StatusReport } from '../helpers/admin.js';
import { connectOutcome } from '../helpers/backends.js';
import { PYTHON, request } from '../helpers/clients.js';
import { startScriptedHttpPeer } from '../helpers/tcp-server.js';
import { FIXTURES } from '../helpers/paths.js';
import { collectGarbage, INSPECT_ENV } from '../helpers/inspector-gc.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { fdCount, rssBytes } from '../helpers/proc-stats.js';
import { until } from '../helpers/until.js';
import { connectPlain, ResponseReader, statusLineUntilClose } from '../helpers/wire.js';

/** GET a path no route serves on a connection of its own, read until the server closes (the status line or what failed). */
const burstRequest = (port: number): Promise<string> => statusLineUntilClose(port, 'GET /burst HTTP/1.1\r\nHost: burst.test\r\nConnection: close\r\n\r\n');

const HAS_PRLIMIT = hasCommand('prlimit', ['--version']);
/** Who should be accepting in this run: the addon unless PORTICO_NATIVE_IO=0 or PORTICO_NATIVE=0 (or no build). */
const EXPECTED_ACCEPT = nativeIoAvailable() ? 'native' : 'node';

function worker(s: StatusReport): StatusReport['workers'][number] {
  assert.equal(s.workers.length, 1);
  return s.workers[0];
}

async function refusedFor(portico: Portico, reason: string): Promise<number> {
  const text = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  const m = new RegExp(`^portico_connections_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

test('2,000 connections at once: accepted in batches by the addon, every one answered, 0 refused', { timeout: 120_000 }, async (t) => {
  native()?.raiseFdLimit();
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener()], routes: [], admin: { address: '127.0.0.1:0' }, log: { access: false } });
  const before = worker(await adminStatus(portico));
  assert.equal(before.accept, EXPECTED_ACCEPT, `/status names who accepts (${before.accept})`);
  const N = 2_000;
  const outcomes = await Promise.all(Array.from({ length: N }, () => burstRequest(portico.httpPort)));
  const tally = new Map<string, number>();
  for (const o of outcomes) tally.set(o, (tally.get(o) ?? 0) + 1);
  assert.equal(tally.get('HTTP/1.1 404 Not Found'), N, `every connection answered: ${JSON.stringify([...tally])}`);
  assert.equal(await refusedFor(portico, 'fd_limit'), 0);
  const after = worker(await statusUntil(portico, 'connections closed', (s) => s.workers[0].connections === 0));
  if (EXPECTED_ACCEPT === 'native') {
    const b = after.acceptBatches;
    assert.ok(b !== undefined, '/status has the accept batches');
    const accepted = b.accepted - (before.acceptBatches?.accepted ?? 0);
    const batches = b.batches - (before.acceptBatches?.batches ?? 0);
    t.diagnostic(`${accepted} accepted in ${batches} batches (mean ${(accepted / batches).toFixed(1)} per batch)`);
    assert.ok(accepted >= N, `${accepted} accepted natively`);
    assert.ok(batches < accepted, `batches (${batches}) hold more than one connection on average`);
  }
});

test('past the fd limit a natively accepted connection is refused at once, counted and logged; service resumes', { timeout: 120_000 }, async (t) => {
  if (!needPeer(t, 'prlimit (util-linux)', HAS_PRLIMIT)) return;
  const limit = 200;
  const portico = await startPortico(
    t,
    { workers: 1, listeners: [plainListener()], routes: [], admin: { address: '127.0.0.1:0' }, log: { access: false } },
    { wrap: ['prlimit', `--nofile=${limit}:${limit}`] },
  );
  const base = worker(await adminStatus(portico));
  assert.equal(base.accept, EXPECTED_ACCEPT);
  // idle connections (the first line of a head sent, the rest not yet) hold one fd each in the worker: open them one
  // by one until refusals come; each is either counted open by the worker or closed by it (one that sent nothing at
  // all would stay in the kernel for a second: TCP_DEFER_ACCEPT, test/e2e/defer-accept.test.ts)
  const fits = limit - (base.fds?.open ?? 0) - FD_RESERVE;
  const held: net.Socket[] = [];
  let refused = 0;
  for (let i = 0; i < fits + 40 && refused < 5; i++) {
    const socket = await connectPlain(t, portico.httpPort);
    // refused with its line unread, the socket is reset (ECONNRESET), not ended: either way it closes
    socket.on('error', () => {});
    socket.write('GET /held HTTP/1.1\r\n');
    const closed = new Promise<'refused'>((resolve) => socket.once('close', () => resolve('refused')));
    const counted = statusUntil(portico, 'connection counted', (s) => s.workers[0].connections === held.length + 1, 10_000).then(() => 'held' as const);
    if ((await Promise.race([closed, counted])) === 'held') held.push(socket);
    else refused++;
  }
  assert.ok(refused > 0, `a connection past the limit is refused (${held.length} held)`);
  assert.ok(await refusedFor(portico, 'fd_limit') >= refused, 'each refusal counted with reason="fd_limit"');
  await portico.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('connections refused: out of file descriptors'));
  for (const s of held.splice(0, 20)) s.destroy();
  await statusUntil(portico, 'freed connections gone', (s) => s.workers[0].connections === held.length);
  // the budget counts descriptors at most every 10 ms near the limit (fd-limit.ts), and a refusal its last count
  // made stands until the next: a connection in the first milliseconds after the closes may still be refused, the
  // next ones are served
  const first = await until('accepting again once fds are free', () => burstRequest(portico.httpPort), (r) => r !== 'closed without a reply', 5_000, 20);
  assert.equal(first, 'HTTP/1.1 404 Not Found', 'accepting again once fds are free');
  for (const s of held) s.destroy();
});

test('SIGTERM: the listener stops accepting at once while a request in flight finishes with its answer', { timeout: 60_000 }, async (t) => {
  // the backend answers only when the test says so: the request stays in flight across the SIGTERM
  let upstream: net.Socket | undefined;
  const backend = await startScriptedHttpPeer(t, (_head, socket) => {
    upstream = socket;
  });
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backend}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    timeouts: { shutdown_grace: '20s' },
    admin: { address: '127.0.0.1:0' },
  });
  assert.equal(worker(await adminStatus(portico)).accept, EXPECTED_ACCEPT);
  const socket = await connectPlain(t, portico.httpPort);
  const reader = new ResponseReader(socket);
  socket.write('GET /slow HTTP/1.1\r\nHost: app\r\n\r\n');
  await until('request at the backend', () => upstream, (u) => u !== undefined, 10_000, 20);
  portico.kill('SIGTERM');
  await portico.waitForLog((l) => l.msg === 'worker draining');
  // not accepting any more: a new connection is refused (no listening socket left on the port)
  await until('new connections refused', () => connectOutcome(portico.httpPort), (o) => o === 'ECONNREFUSED', 10_000, 50);
  upstream!.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  const res = await reader.next({ timeoutMs: 15_000 });
  assert.equal(res.status, 200, 'the request in flight was answered, not cut');
  assert.equal(res.body.toString(), 'ok');
  assert.equal(await portico.exited, 0);
});

/** The upgrade backend (test/fixtures/backends/upgrade-echo.py) in its own process; its port. */
async function startUpgradeBackend(t: TestContext): Promise<number> {
  const child = spawn(PYTHON, [path.join(FIXTURES, 'backends', 'upgrade-echo.py')], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    child.stdin.end();
    child.kill();
  });
  const lines = createInterface({ input: child.stdout });
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('upgrade backend did not start')), 10_000);
    child.once('error', reject);
    lines.on('line', (line) => {
      const [word, n] = line.split(' ');
      if (word !== 'port') return;
      clearTimeout(timer);
      resolve(Number(n));
    });
  });
}

/** A raw WebSocket handshake through Portico; resolves with the socket once the 101 head arrived. */
function openTunnel(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let head = '';
    const timer = setTimeout(() => fail(new Error('no 101 within 30 s')), 30_000);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.on('error', fail);
    socket.on('connect', () => {
      const key = randomBytes(16).toString('base64');
      socket.write(`GET /ws HTTP/1.1\r\nHost: tunnels.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    const onData = (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      clearTimeout(timer);
      if (!head.startsWith('HTTP/1.1 101 ')) return fail(new Error(`upgrade answered ${head.split('\r\n')[0]}`));
      socket.off('error', fail);
      socket.on('error', () => {});
      resolve(socket);
    };
    socket.on('data', onData);
  });
}

function echoed(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => reject(new Error('no echo within 10 s')), 10_000);
    const onData = (c: Buffer) => {
      got += c.toString('latin1');
      if (got.length < text.length) return;
      clearTimeout(timer);
      socket.off('data', onData);
      resolve(got);
    };
    socket.on('data', onData);
    socket.write(text);
  });
}

const TUNNELS = 10_000;

test(`up to ${TUNNELS.toLocaleString('en')} idle plain tunnels in one worker, default config: 2 fds each, 0 refused, each echoes; fds back after they close, RSS back near the baseline after a full GC (three rounds leak nothing)`, { timeout: 600_000 }, async (t) => {
  // this process holds one socket per tunnel: its soft limit must allow them (the backend runs in its own process)
  native()?.raiseFdLimit();
  const backend = await startUpgradeBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { echo: { targets: [`127.0.0.1:${backend}`] } },
    routes: [{ match: { path: '/' }, proxy: 'echo' }],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  }, { env: INSPECT_ENV });
  const first = worker(await adminStatus(portico));
  assert.equal(first.accept, EXPECTED_ACCEPT);
  const pid = first.pid!;
  // one tunnel first: the relay thread, its pipes and the upstream pool exist from here on
  const warm = await openTunnel(portico.httpPort);
  assert.equal(await echoed(warm, 'warm'), 'warm');
  warm.destroy();
  await statusUntil(portico, 'warm-up tunnel gone', (s) => s.workers[0].tunnels === 0 && s.workers[0].connections === 0, 20_000);
  const fdLimit = first.fds?.limit ?? -1;
  const baseFds = fdCount(pid);
  await collectGarbage(portico, pid);
  const baseRss = rssBytes(pid);
  // two fds per tunnel in the worker; where the hard limit is lower than that (20,000 on the development machine)
  // as many as fit beside the reserve, and said so
  const fits = fdLimit < 0 ? TUNNELS : Math.floor((fdLimit - baseFds - FD_RESERVE - 16) / 2);
  const n = Math.min(TUNNELS, fits);
  const ownLimit = native()?.raiseFdLimit().soft ?? -1;
  assert.ok(ownLimit < 0 || ownLimit > n + 200, `this test process can hold ${n} sockets (soft limit ${ownLimit})`);
  if (n < TUNNELS) t.diagnostic(`worker fd limit ${fdLimit}: ${n} tunnels fit (2 fds each, ${FD_RESERVE} kept in reserve), not ${TUNNELS}`);
  assert.ok(n >= 9_000, `at least 9,000 tunnels fit (${n})`);

  const sockets: net.Socket[] = [];
  t.after(() => {
    for (const s of sockets) s.destroy();
  });
  /** Opens n tunnels, checks them, closes them; the worker's RSS with them open and once all are gone. */
  const cycle = async (round: number): Promise<{ peak: number; after: number }> => {
    const BATCH = 200;
    for (let i = 0; i < n; i += BATCH) sockets.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, () => openTunnel(portico.httpPort)))));
    const full = worker(await statusUntil(portico, `${n} tunnels open`, (s) => s.workers[0].tunnels === n, 60_000, 200));
    assert.equal(await refusedFor(portico, 'fd_limit'), 0, 'nothing refused');
    const perTunnelFds = (fdCount(pid) - baseFds) / n;
    const peak = rssBytes(pid);
    t.diagnostic(`round ${round}: ${n} idle tunnels, ${perTunnelFds.toFixed(2)} fds and ${((peak - baseRss) / n / 1024).toFixed(1)} KiB RSS each; pipes in use ${full.pipes?.inUse ?? 0}`);
    assert.ok(perTunnelFds <= 2.01, `an idle tunnel holds its two sockets only (${perTunnelFds.toFixed(3)} fds each)`);
    assert.equal(full.pipes?.inUse ?? 0, 0, 'no idle tunnel holds a pipe');
    // tunnels still carry bytes after sitting idle (every 97th: all would take minutes on this machine)
    for (let i = 0; i < sockets.length; i += 97) assert.equal(await echoed(sockets[i], `idle ${i}`), `idle ${i}`);
    for (const s of sockets.splice(0)) s.destroy();
    await statusUntil(portico, 'every tunnel closed', (s) => s.workers[0].tunnels === 0 && s.workers[0].connections === 0, 120_000, 200);
    await until('fds back to the baseline', () => fdCount(pid), (fds) => fds <= baseFds + 4, 60_000, 200);
    await collectGarbage(portico, pid);
    return { peak, after: rssBytes(pid) };
  };
  const rounds = [await cycle(1), await cycle(2), await cycle(3)];
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  t.diagnostic(`RSS: baseline ${mib(baseRss)}; ${rounds.map((r, i) => `round ${i + 1} open ${mib(r.peak)}, closed ${mib(r.after)}`).join('; ')}`);
  // Each round ends with a full collection in the worker (through the inspector): without it V8 may keep several
  // rounds of garbage when the machine has memory to spare, which says nothing about a leak. What the allocator
  // keeps after that (arenas, V8 pages kept for reuse) serves the next round: after three rounds RSS stays within
  // half of what the first round took above the baseline; a leak of a sixth of a round would pass that by the third.
  const grew = rounds[0].peak - baseRss;
  const held = rounds[2].after - baseRss;
  assert.ok(held <= grew / 2, `after 3 rounds RSS is ${mib(held)} above the baseline, round 1 took ${mib(grew)}: settled`);
});
