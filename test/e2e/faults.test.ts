// Fault injection with real sockets against the real `portico start` (one worker, so every count is that
// worker's): a client resets its connection (RST) at each phase (upstream connect pending, request body,
// response body, 101 pending, tunnel), a backend resets mid-request, mid-response and mid-tunnel, a backend
// stalls before its response head (504) or in its body (cut). After each fault the worker is the same process
// and its resources are back at their baseline: open fds (/proc/PID/fd, less idle pooled sockets), client
// connections, tunnels, and per target requests in progress and upstream sockets in use (/status). Client
// faults run over the plain listener (splice tunnels where the addon is built) and the TLS one (JS relay).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { WebSocket } from 'ws';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend, startWsEchoBackend, type WsEchoBackend } from '../helpers/backends.js';
import { startBacklogPeer, type BacklogPeer } from '../helpers/backlog-peer.js';
import { closed, echo } from '../helpers/clients.js';
import { plainListener, startPortico, tlsListener, type Portico } from '../helpers/portico.js';
import { establishedTo, singleWorkerResources, synSentTo, type WorkerResources } from '../helpers/proc-stats.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { ResponseReader, testCaCert } from '../helpers/wire.js';

type Mode = 'plain' | 'tls';
const MODES: readonly Mode[] = ['plain', 'tls'];
/** Bound of every wait for a state to settle (it normally takes a few hundred ms: the sweep runs every 250 ms). */
const SETTLE_MS = 15_000;

/**
 * A backend that misbehaves on purpose, by path: `/stall-head` reads the request and never answers;
 * `/stall-body` sends a head announcing 1 MiB and 64 KiB of it, then nothing; `/rst-response` sends the same
 * and then resets; `/rst-request` resets once 64 KiB of the request body arrived; anything else gets a 200 and a close.
 */
interface ScriptedBackend {
  readonly port: number;
  /** Connections from Portico still open on the backend's side. */
  readonly open: number;
  /** Request paths seen, in order (a test may empty it). */
  readonly paths: string[];
}

async function startScriptedBackend(t: TestContext): Promise<ScriptedBackend> {
  const sockets = new Set<net.Socket>();
  const paths: string[] = [];
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let path: string | undefined;
    let body = 0;
    socket.on('data', (chunk: Buffer) => {
      if (path !== undefined) {
        body += chunk.length;
        if (path === '/rst-request' && body >= 64 * 1024) socket.resetAndDestroy();
        return;
      }
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      path = /^[A-Z]+ (\S+) /.exec(buf.toString('latin1'))?.[1] ?? '';
      body = buf.length - end - 4;
      paths.push(path);
      const partial = `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${1024 * 1024}\r\n\r\n`;
      if (path === '/stall-head' || path === '/rst-request') return;
      if (path === '/stall-body') socket.write(Buffer.concat([Buffer.from(partial), Buffer.alloc(64 * 1024, 120)]));
      else if (path === '/rst-response') socket.write(Buffer.concat([Buffer.from(partial), Buffer.alloc(64 * 1024, 120)]), () => socket.resetAndDestroy());
      else {
        // closed after each answer: no pooled connection to this backend outlives a test step
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return {
    port: (server.address() as AddressInfo).port,
    get open() {
      return sockets.size;
    },
    paths,
  };
}

interface Setup {
  portico: Portico;
  ws: WsEchoBackend;
  scripted: ScriptedBackend;
  backlog: BacklogPeer;
  baseline: WorkerResources;
  ports: Record<Mode, number>;
}

async function setup(t: TestContext): Promise<Setup> {
  const app = await startHttpBackend(t, { name: 'app' });
  const ws = await startWsEchoBackend(t);
  const scripted = await startScriptedBackend(t);
  const backlog = await startBacklogPeer(t);
  const config: ConfigInput = {
    workers: 1,
    listeners: [plainListener(), tlsListener()],
    upstreams: {
      app: { targets: [`127.0.0.1:${app.port}`] },
      ws: { targets: [`127.0.0.1:${ws.port}`] },
      // short phase timeouts, so the stall cases end quickly; no retries, so a fault is seen once
      scripted: { targets: [`127.0.0.1:${scripted.port}`], timeouts: { response_headers: '1s', idle: '1s' }, retries: { max: 0 } },
      // a connect the kernel keeps retrying for longer than any test waits
      pending: { targets: [`127.0.0.1:${backlog.port}`], timeouts: { connect: '30s' }, retries: { max: 0 } },
    },
    routes: [
      { match: { path: '/ws' }, proxy: 'ws' },
      { match: { path: '/scripted' }, proxy: { upstream: 'scripted', strip_prefix: true } },
      { match: { path: '/pending' }, proxy: 'pending' },
      { match: { path: '/' }, proxy: 'app' },
    ],
    admin: { address: '127.0.0.1:0' },
  };
  const portico = await startPortico(t, config);
  const ports = { plain: portico.httpPort, tls: portico.tlsPort };
  // Warm-up: every path once (plain and TLS, HTTP and tunnel), so what a worker creates lazily exists before
  // the baseline is taken.
  for (const mode of MODES) {
    const c = await connect(t, mode, ports[mode]);
    c.socket.write('GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\nGET /scripted/ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    assert.equal((await c.reader.next()).status, 200);
    assert.equal((await c.reader.next()).status, 200);
    const w = await openWs(t, mode, ports[mode]);
    assert.equal(await echo(w.ws, 'warm'), 'warm');
    w.ws.close();
    await closed(w.ws);
  }
  const baseline = await quiet(portico);
  return { portico, ws, scripted, backlog, baseline, ports };
}

/** Resources once no client connection, tunnel, request or busy upstream socket is left. */
async function quiet(portico: Portico): Promise<WorkerResources> {
  return until('worker quiet', () => singleWorkerResources(portico), (r) => r.connections === 0 && r.tunnels === 0 && Object.values(r.busy).every((b) => b.active === 0 && b.inUse === 0), SETTLE_MS);
}

/** Waits until the worker is back at its baseline; fails with what stayed (and if the worker was replaced). */
async function backToBaseline(s: Setup, what: string): Promise<void> {
  const r = await until(
    `${what}: back to baseline ${JSON.stringify(s.baseline)}`,
    () => singleWorkerResources(s.portico),
    (x) => x.pid !== s.baseline.pid || (x.fdsBeyondIdle === s.baseline.fdsBeyondIdle && x.connections === 0 && x.tunnels === 0 && Object.values(x.busy).every((b) => b.active === 0 && b.inUse === 0)),
    SETTLE_MS,
  );
  assert.equal(r.pid, s.baseline.pid, `${what}: the worker was replaced (it crashed); log:\n${crashLines(s.portico)}`);
  assert.equal(crashLines(s.portico), '', `${what}: no uncaught exception`);
}

function crashLines(portico: Portico): string {
  return portico.logs
    .filter((l) => l.level === 60 || (typeof l.msg === 'string' && /uncaught|exited unexpectedly/.test(l.msg)))
    .map((l) => JSON.stringify(l))
    .join('\n');
}

/** A client connection whose reset() sends an RST (the TCP socket under TLS, for the tls mode). */
interface RawClient {
  socket: net.Socket;
  reader: ResponseReader;
  reset(): void;
}

async function connect(t: TestContext, mode: Mode, port: number): Promise<RawClient> {
  const raw = net.connect({ host: '127.0.0.1', port });
  raw.on('error', () => {});
  t.after(() => {
    raw.destroy();
  });
  let socket: net.Socket = raw;
  if (mode === 'tls') {
    const secure = tls.connect({ socket: raw, servername: 'localhost', ca: testCaCert(), ALPNProtocols: ['http/1.1'] });
    secure.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    socket = secure;
  } else {
    await new Promise<void>((resolve, reject) => {
      raw.once('connect', resolve);
      raw.once('error', reject);
    });
  }
  return { socket, reader: new ResponseReader(socket), reset: () => raw.resetAndDestroy() };
}

/** A `ws` client over a socket the test can reset. */
async function openWs(t: TestContext, mode: Mode, port: number): Promise<{ ws: WebSocket; reset(): void }> {
  let raw: net.Socket | undefined;
  const ws = new WebSocket(`${mode === 'tls' ? 'wss' : 'ws'}://localhost:${port}/ws`, {
    handshakeTimeout: 10_000,
    createConnection: () => {
      raw = net.connect({ host: '127.0.0.1', port });
      raw.on('error', () => {});
      return mode === 'tls' ? tls.connect({ socket: raw, servername: 'localhost', ca: testCaCert() }) : raw;
    },
  });
  t.after(() => ws.terminate());
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('close', (code: number) => reject(new Error(`WebSocket closed (${code}) before open`)));
  });
  return { ws, reset: () => raw?.resetAndDestroy() };
}

/** One target's row in /status. */
async function target(portico: Portico, upstream: string): Promise<{ active: number; open: number; idle: number }> {
  const row = (await adminStatus(portico)).upstreams[upstream]?.[0];
  assert.ok(row !== undefined, `upstream ${upstream} in /status`);
  return row;
}

test('client RST while the upstream connect is pending: the upstream socket is closed or pooled, never leaked; a later backend RST crashes nothing', { timeout: 90_000 }, async (t) => {
  const s = await setup(t);
  for (const mode of MODES) {
    const c = await connect(t, mode, s.ports[mode]);
    c.socket.write(`GET /pending/${mode} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    await until('the upstream connect is pending', () => synSentTo(s.backlog.port), (n) => n === 1, SETTLE_MS);
    assert.equal((await target(s.portico, 'pending')).active, 1, 'the request waits for its connect');
    c.reset();
    await until('the client connection is gone', () => adminStatus(s.portico), (x) => x.connections === 0, SETTLE_MS);
    // Let the connect complete (if Portico still has it): the kernel's next SYN retransmit gets through.
    s.backlog.accept();
    await until('no connect pending any more', () => synSentTo(s.backlog.port), (n) => n === 0, SETTLE_MS);
    // and the peer has accepted every connection that completed (one still in its accept queue would miss the RST
    // and stay pooled: not a leak, but not what this checks)
    await until('the peer holds every established connection', () => establishedTo(s.backlog.port) - s.backlog.held, (n) => n === 0, SETTLE_MS);
    // A socket Portico kept is now either idle in the pool (fine) or leaked; an RST on it must not crash the worker.
    s.backlog.reset();
    await backToBaseline(s, `${mode}: RST while connect pending`);
    assert.equal((await target(s.portico, 'pending')).open, 0, 'no socket left towards the reset backend');
    await s.backlog.block();
  }
});

test('client RST mid request body: the upstream request is aborted, its socket closed', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  for (const mode of MODES) {
    const c = await connect(t, mode, s.ports[mode]);
    c.socket.write(`POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${16 * 1024 * 1024}\r\n\r\n`);
    c.socket.write(Buffer.alloc(256 * 1024, 97));
    await until('the request is forwarded', () => target(s.portico, 'app'), (x) => x.active === 1 && x.open - x.idle === 1, SETTLE_MS);
    c.reset();
    await backToBaseline(s, `${mode}: RST mid request body`);
  }
});

test('client RST mid response body: the upstream response is abandoned, its socket closed', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  for (const mode of MODES) {
    const c = await connect(t, mode, s.ports[mode]);
    const firstBytes = new Promise<void>((resolve) => c.socket.once('data', () => resolve()));
    c.socket.write(`GET /stream?bytes=${256 * 1024 * 1024} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    await firstBytes;
    c.socket.pause();
    assert.equal((await target(s.portico, 'app')).active, 1, 'the response is still streaming');
    c.reset();
    await backToBaseline(s, `${mode}: RST mid response body`);
  }
});

test('client RST while the backend has not answered its upgrade yet: the upstream socket is closed', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  for (const mode of MODES) {
    const c = await connect(t, mode, s.ports[mode]);
    const upgrade = ['GET /scripted/stall-head HTTP/1.1', 'Host: localhost', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='];
    c.socket.write(`${upgrade.join('\r\n')}\r\n\r\n`);
    await until('the upgrade reached the backend', () => s.scripted.paths.length, (n) => n > 0 && s.scripted.open === 1, SETTLE_MS);
    s.scripted.paths.length = 0;
    c.reset();
    await until('the backend saw its connection closed', () => s.scripted.open, (n) => n === 0, SETTLE_MS);
    await backToBaseline(s, `${mode}: RST while the 101 is pending`);
  }
});

test('client RST mid tunnel: the backend side of the tunnel is closed, the tunnel unregistered', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  for (const mode of MODES) {
    const w = await openWs(t, mode, s.ports[mode]);
    assert.equal(await echo(w.ws, `before reset ${mode}`), `before reset ${mode}`);
    assert.equal(s.ws.open, 1);
    w.reset();
    await until('the backend WebSocket is closed', () => s.ws.open, (n) => n === 0, SETTLE_MS);
    await backToBaseline(s, `${mode}: RST mid tunnel`);
  }
});

test('backend RST mid request body: the client gets 502 and its connection closed', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  const c = await connect(t, 'plain', s.ports.plain);
  c.socket.write(`POST /scripted/rst-request HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${4 * 1024 * 1024}\r\n\r\n`);
  // The body is offered in full; Portico stops reading it once the backend is gone.
  c.socket.write(Buffer.alloc(4 * 1024 * 1024, 98));
  const res = await c.reader.next();
  assert.equal(res.status, 502);
  await c.reader.rest();
  await backToBaseline(s, 'backend RST mid request body');
});

test('backend RST mid response body: the client connection is cut (no complete response), nothing kept', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  const c = await connect(t, 'plain', s.ports.plain);
  c.socket.write('GET /scripted/rst-response HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const rest = await c.reader.rest();
  const text = rest.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 200 /, 'the head was forwarded');
  assert.ok(rest.length - text.indexOf('\r\n\r\n') - 4 < 1024 * 1024, 'the body is cut short: the client can tell');
  assert.equal(s.scripted.open, 0);
  await backToBaseline(s, 'backend RST mid response body');
});

test('backend RST mid tunnel: the client WebSocket is closed, the tunnel unregistered', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  for (const mode of MODES) {
    const w = await openWs(t, mode, s.ports[mode]);
    assert.equal(await echo(w.ws, 'hi'), 'hi');
    w.ws.send('reset');
    assert.equal(await closed(w.ws), 1006, 'no Close frame: the backend vanished');
    await backToBaseline(s, `${mode}: backend RST mid tunnel`);
  }
});

test('backend stalls before its response head: 504 at timeouts.response_headers, the upstream socket closed', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  const c = await connect(t, 'plain', s.ports.plain);
  const started = Date.now();
  c.socket.write('GET /scripted/stall-head HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const res = await c.reader.next();
  assert.equal(res.status, 504);
  assert.ok(Date.now() - started >= 900, 'not before the 1s response_headers timeout');
  await until('the backend saw its connection closed', () => s.scripted.open, (n) => n === 0, SETTLE_MS);
  await s.portico.waitForLog((l) => (l.err as { code?: string } | undefined)?.code === 'UPSTREAM_HEADERS_TIMEOUT', SETTLE_MS);
  c.socket.destroy();
  await backToBaseline(s, 'backend stall before head');
});

test('backend stalls mid response body: the client connection is cut at timeouts.idle, the upstream socket closed', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  const c = await connect(t, 'plain', s.ports.plain);
  c.socket.write('GET /scripted/stall-body HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const rest = await c.reader.rest(SETTLE_MS);
  const text = rest.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 200 /);
  assert.equal(rest.length - text.indexOf('\r\n\r\n') - 4, 64 * 1024, 'what the backend sent, then the cut');
  await until('the backend saw its connection closed', () => s.scripted.open, (n) => n === 0, SETTLE_MS);
  await s.portico.waitForLog((l) => (l.err as { code?: string } | undefined)?.code === 'UPSTREAM_IDLE_TIMEOUT', SETTLE_MS);
  await backToBaseline(s, 'backend stall mid body');
});
