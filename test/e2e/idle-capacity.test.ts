// Idle WebSockets at the file-descriptor limit, with the default config: one worker run under a lowered
// RLIMIT_NOFILE (prlimit) holds as many idle tunnels as its descriptors allow (two per tunnel) with none refused,
// plain (spliced) and TLS (more than max_connections to one target); each still echoes after sitting idle; fds and
// the pipe pool return to their baseline. Past the limit a connection is refused, logged once and counted, and
// service resumes when descriptors free up.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { WebSocket } from 'ws';
import { FD_RESERVE } from '../../src/worker/fd-limit.js';
import { startWsEchoBackend } from '../helpers/backends.js';
import { closed, echo, openWebSocket, request } from '../helpers/clients.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { plainListener, startPortico, tlsListener, type Portico } from '../helpers/portico.js';
import { adminUrl } from '../helpers/admin.js';
import { until } from '../helpers/until.js';

const HAS_PRLIMIT = hasCommand('prlimit', ['--version']);

interface WorkerStatus {
  pid: number;
  tunnels?: number;
  connections?: number;
  fds?: { open: number; limit: number };
  pipes?: { open: number; inUse: number; cap: number; copies: number };
}

async function worker(portico: Portico): Promise<WorkerStatus> {
  const res = await request(`${adminUrl(portico)}/status`);
  assert.equal(res.status, 200);
  const s = JSON.parse(res.body.toString()) as { workers: WorkerStatus[] };
  return s.workers[0];
}

/** Polls /status (bounded) until `ok` holds; returns the last status. */
function workerUntil(portico: Portico, ok: (w: WorkerStatus) => boolean, what: string, timeoutMs = 30_000): Promise<WorkerStatus> {
  return until(what, () => worker(portico), ok, timeoutMs, 100);
}

async function fdRefusals(portico: Portico): Promise<number> {
  const text = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  const m = /^portico_connections_refused_total\{reason="fd_limit"\} (\d+)$/m.exec(text);
  return m === null ? 0 : Number(m[1]);
}

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]);
}

/** Opens `n` WebSockets, `batch` at a time; every one must open. */
async function openMany(t: TestContext, url: string, n: number, batch = 50): Promise<WebSocket[]> {
  const out: WebSocket[] = [];
  for (let i = 0; i < n; i += batch) {
    const k = Math.min(batch, n - i);
    out.push(...(await Promise.all(Array.from({ length: k }, () => openWebSocket(t, url)))));
  }
  return out;
}

async function echoAll(sockets: WebSocket[], batch = 100): Promise<void> {
  for (let i = 0; i < sockets.length; i += batch) {
    await Promise.all(sockets.slice(i, i + batch).map(async (ws, j) => assert.equal(await echo(ws, `after idle ${i + j}`), `after idle ${i + j}`)));
  }
}

async function closeAll(sockets: WebSocket[]): Promise<void> {
  await Promise.all(
    sockets.map((ws) => {
      const done = closed(ws, 20_000);
      ws.close(1000);
      return done;
    }),
  );
}

const LIMIT = 1300;

for (const mode of ['plain', 'tls'] as const) {
  test(`default config, one worker at RLIMIT_NOFILE ${LIMIT}: idle ${mode === 'plain' ? 'spliced' : 'TLS'} WebSockets fill its fds (2 per tunnel), 0 refused, each echoes after idling, fds and pipes return to baseline`, { timeout: 300_000 }, async (t) => {
    if (!needPeer(t, 'prlimit (util-linux)', HAS_PRLIMIT)) return;
    const backend = await startWsEchoBackend(t);
    const portico = await startPortico(
      t,
      {
        workers: 1,
        listeners: [mode === 'tls' ? tlsListener() : plainListener()],
        // one target: more tunnels than max_connections (512 by default) go to it
        upstreams: { echo: { targets: [`127.0.0.1:${backend.port}`] } },
        routes: [{ match: { path: '/' }, proxy: 'echo' }],
        admin: { address: '127.0.0.1:0' },
        log: { access: false },
      },
      { wrap: ['prlimit', `--nofile=${LIMIT}:${LIMIT}`] },
    );
    const fdLine = await portico.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('file descriptors:'));
    assert.equal(fdLine.fdLimit, LIMIT, 'the limit is logged once at start');
    const url = mode === 'tls' ? `wss://localhost:${portico.tlsPort}/ws` : `ws://127.0.0.1:${portico.httpPort}/ws`;
    // one tunnel first: the relay thread and the TLS context exist from here on
    await closeAll(await openMany(t, url, 1));
    const base = await workerUntil(portico, (w) => w.tunnels === 0 && w.connections === 0, 'warm-up tunnel gone');
    assert.ok(base.fds !== undefined);
    assert.equal(base.fds.limit, LIMIT);
    const freePipes = (w: WorkerStatus) => (w.pipes === undefined ? 0 : w.pipes.open - w.pipes.inUse);
    const baseFds = base.fds.open - 2 * freePipes(base);
    const rssBefore = rssKiB(base.pid);
    // every descriptor the worker has left, but its reserve and a small margin, holds half a tunnel
    const n = Math.floor((LIMIT - base.fds.open - FD_RESERVE - 8) / 2);
    assert.ok(n > 512, `more tunnels (${n}) than the default max_connections`);

    const sockets = await openMany(t, url, n);
    const full = await workerUntil(portico, (w) => w.tunnels === n, `${n} tunnels open`);
    assert.equal(await fdRefusals(portico), 0, 'nothing refused');
    assert.equal(full.pipes?.inUse ?? 0, 0, 'no idle tunnel holds a pipe');
    const perTunnel = (full.fds!.open - 2 * freePipes(full) - baseFds) / n;
    const rssPerTunnel = (rssKiB(base.pid) - rssBefore) / n;
    t.diagnostic(`${mode}: ${n} idle tunnels, ${perTunnel.toFixed(2)} fds and ${rssPerTunnel.toFixed(1)} KiB RSS per tunnel (worker at fd limit ${LIMIT})`);
    assert.ok(perTunnel <= 2.05, `an idle tunnel costs its two sockets, got ${perTunnel} fds each`);

    await echoAll(sockets);
    await closeAll(sockets);
    const after = await workerUntil(portico, (w) => w.tunnels === 0 && w.connections === 0 && w.fds!.open - 2 * freePipes(w) <= baseFds, 'fds back to the baseline');
    assert.equal(after.pipes?.inUse ?? 0, 0);
    assert.ok((after.pipes?.open ?? 0) <= (after.pipes?.cap ?? 0));
  });
}

test('past the fd limit a connection is refused, logged once and counted; service resumes when fds free up', { timeout: 120_000 }, async (t) => {
  if (!needPeer(t, 'prlimit (util-linux)', HAS_PRLIMIT)) return;
  const limit = 400;
  const backend = await startWsEchoBackend(t);
  const portico = await startPortico(
    t,
    {
      workers: 1,
      listeners: [plainListener()],
      upstreams: { echo: { targets: [`127.0.0.1:${backend.port}`] } },
      routes: [{ match: { path: '/' }, proxy: 'echo' }],
      admin: { address: '127.0.0.1:0' },
      log: { access: false },
    },
    { wrap: ['prlimit', `--nofile=${limit}:${limit}`] },
  );
  const url = `ws://127.0.0.1:${portico.httpPort}/ws`;
  const base = await worker(portico);
  const fits = Math.floor((limit - base.fds!.open - FD_RESERVE) / 2);
  const held: WebSocket[] = [];
  let refused = 0;
  // one at a time, past what fits: the first refusals end the loop
  for (let i = 0; i < fits + 40 && refused < 5; i++) {
    try {
      held.push(await openWebSocket(t, url));
    } catch {
      refused++;
    }
  }
  assert.ok(refused > 0, `a connection past the limit is refused (opened ${held.length})`);
  assert.ok(held.length >= fits - 4, `about ${fits} fit, ${held.length} opened`);
  const counted = await fdRefusals(portico);
  assert.ok(counted >= refused, `${refused} refused, ${counted} counted in portico_connections_refused_total{reason="fd_limit"}`);
  const line = await portico.waitForLog((l) => l.msg === 'connections refused: out of file descriptors (raise the hard limit: LimitNOFILE= in systemd, ulimit -Hn)');
  assert.equal(line.fdLimit, limit);
  const lines = portico.logs.filter((l) => l.msg === line.msg).length;
  assert.ok(lines < refused || lines === 1, `${lines} lines for ${refused} refusals: rate-limited, not one per connection`);
  // the tunnels already open are untouched
  await echoAll(held.slice(0, 10));
  // free some descriptors: the listener accepts again
  await closeAll(held.splice(0, 20));
  await workerUntil(portico, (w) => w.tunnels === held.length, 'closed tunnels gone');
  const again = await openWebSocket(t, url);
  assert.equal(await echo(again, 'back'), 'back');
  await closeAll([again, ...held]);
});
