// Health end to end through the real `portico start` with 2 workers: active checks take a failing target out of
// every worker after `fails` probes and bring it back after `passes`; they run once per instance (the backend
// sees one probe stream, not one per worker); an admin drain stops new requests and keeps open tunnels; a
// WebSocket check does a real handshake with a `ws` server. Waits on log lines and backend events.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { WebSocketServer } from 'ws';
import type { ConfigInput } from '../../src/config/schema.js';
import { echo, openWebSocket, request, UnexpectedResponse } from '../helpers/clients.js';
import { plainListener, startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import { adminPort, adminStatus, type StatusReport } from '../helpers/admin.js';

interface Backend {
  readonly name: string;
  readonly port: number;
  readonly address: string;
  /** Answer to /healthz: 200 when true, 503 when false. */
  healthy: boolean;
  /** Arrival times (ms) of /healthz probes. */
  readonly probes: number[];
  /** Requests other than /healthz. */
  readonly hits: number;
  /** Resolves when the backend has seen `n` probes in all (rejects after `timeoutMs`). */
  probed(n: number, timeoutMs?: number): Promise<void>;
}

/** An HTTP backend on 127.0.0.1:0 answering /healthz by its `healthy` flag, anything else "NAME"; also a `ws` echo. */
async function startBackend(t: TestContext, name: string): Promise<Backend> {
  const probes: number[] = [];
  let hits = 0;
  const waiters = new Set<{ n: number; resolve: () => void }>();
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      probes.push(Date.now());
      for (const w of waiters) if (probes.length >= w.n) (waiters.delete(w), w.resolve());
      res.writeHead(backend.healthy ? 200 : 503).end();
      return;
    }
    hits++;
    res.end(name);
  });
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    for (const s of sockets) s.destroy();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  const backend: Backend = {
    name,
    port,
    address: `127.0.0.1:${port}`,
    healthy: true,
    probes,
    get hits() {
      return hits;
    },
    probed(n, timeoutMs = 10_000) {
      if (probes.length >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const w = {
          n,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`backend ${name} saw ${probes.length} probes, not ${n}, within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
  };
  return backend;
}

function config(upstreams: ConfigInput['upstreams'], extra: Partial<ConfigInput> = {}): ConfigInput {
  return {
    workers: 2,
    listeners: [plainListener()],
    upstreams,
    routes: [
      { match: { path: '/ws' }, proxy: 'live' in (upstreams ?? {}) ? 'live' : 'app' },
      { match: { path: '/' }, proxy: 'app' },
    ],
    admin: { address: '127.0.0.1:0' },
    ...extra,
  };
}

/** The admin port of a Portico whose listening line says both of its workers started. */
async function twoWorkersAdmin(portico: Portico): Promise<number> {
  const line = await portico.waitForLog((l) => l.msg === 'listening');
  assert.equal((line.workers as unknown[]).length, 2);
  return adminPort(portico);
}

/** GET /status, every worker answering. */
async function status(portico: Portico): Promise<StatusReport> {
  const s = await adminStatus(portico);
  assert.deepEqual(s.unanswered, []);
  return s;
}

/** `n` GETs on fresh connections (so both workers accept some); returns the bodies (backend names). */
async function fire(port: number, n: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await request(`http://127.0.0.1:${port}/x`);
    assert.equal(res.status, 200);
    names.push(res.body.toString());
  }
  return names;
}

const flip = (target: string, msg: string) => (l: LogLine) => l.msg === msg && l.target === target;
const DOWN = 'upstream target is down: active health check failed';
const UP = 'upstream target is up: active health check passed';

test('a target failing its health check leaves every worker after `fails` probes and returns after `passes`', async (t) => {
  const a = await startBackend(t, 'a');
  const b = await startBackend(t, 'b');
  const active = { path: '/healthz', interval: '150ms', timeout: '500ms', fails: 2, passes: 2 };
  const portico = await startPortico(t, config({ app: { targets: [a.address, b.address], health: { active } } }));
  const admin = await twoWorkersAdmin(portico);

  await a.probed(2); // the first probe's result is recorded before the second starts
  const before = await fire(portico.httpPort, 20);
  assert.ok(before.includes('a') && before.includes('b'));

  a.healthy = false;
  const failingFrom = a.probes.length;
  await portico.waitForLog(flip(a.address, DOWN));
  // Taken out after exactly `fails` failed probes (one more may have arrived while the log line travelled).
  assert.ok(a.probes.length - failingFrom >= 2 && a.probes.length - failingFrom <= 3, `${a.probes.length - failingFrom} failing probes`);
  const s = await status(portico);
  // `available` in /status is true only when every worker has it available: false here means no worker does.
  assert.deepEqual(s.upstreams.app.map((x) => [x.target, x.available]), [[a.address, false], [b.address, true]]);
  const ha = s.health.app[0];
  assert.equal(ha.active?.healthy, false);
  assert.equal(ha.active?.lastResult, 'fail');
  assert.equal(ha.active?.lastReason, 'status 503');
  assert.equal(ha.draining, false);

  const hitsA = a.hits;
  assert.deepEqual(new Set(await fire(portico.httpPort, 20)), new Set(['b']));
  assert.equal(a.hits, hitsA);

  a.healthy = true;
  const passingFrom = a.probes.length;
  await portico.waitForLog(flip(a.address, UP));
  assert.ok(a.probes.length - passingFrom >= 2 && a.probes.length - passingFrom <= 3);
  assert.ok((await fire(portico.httpPort, 20)).includes('a'));
  assert.ok(a.hits > hitsA);

  const metrics = (await request(`http://127.0.0.1:${admin}/metrics`)).body.toString();
  assert.match(metrics, new RegExp(`^portico_health_flips_total\\{upstream="app",target="127\\.0\\.0\\.1:${a.port}",to="down"\\} 1$`, 'm'));
  assert.match(metrics, new RegExp(`^portico_health_flips_total\\{upstream="app",target="127\\.0\\.0\\.1:${a.port}",to="up"\\} 1$`, 'm'));
  // one log line per flip, from the primary only
  assert.equal(portico.logs.filter(flip(a.address, DOWN)).length, 1);
});

test('active checks run once per instance: 2 workers, one probe stream at the backend', async (t) => {
  const a = await startBackend(t, 'a');
  const intervalMs = 100;
  const portico = await startPortico(t, config({ app: { targets: [a.address], health: { active: { interval: `${intervalMs}ms`, timeout: '500ms' } } } }));
  await twoWorkersAdmin(portico);
  await a.probed(11);
  // One checker: consecutive probes are at least 0.9 interval apart (jitter), so 10 gaps take >= 900 ms.
  // A checker per worker would deliver them about twice as fast.
  const span = a.probes[10] - a.probes[0];
  assert.ok(span >= 10 * intervalMs * 0.9 - 5, `11 probes in ${span} ms: more than one checker is probing`);
  const gaps = a.probes.slice(1, 11).map((p, i) => p - a.probes[i]);
  assert.ok(Math.min(...gaps) >= intervalMs * 0.9 - 5, `probe gaps ${gaps.join(',')} ms`);
});

test('an admin drain stops new requests to the target in every worker and keeps its open tunnels', async (t) => {
  const a = await startBackend(t, 'a');
  const b = await startBackend(t, 'b');
  const portico = await startPortico(t, config({ app: { targets: [a.address, b.address] }, live: { targets: [a.address] } }));
  const admin = await twoWorkersAdmin(portico);
  const control = (path: string, method = 'POST') => request(`http://127.0.0.1:${admin}${path}`, { method, headers: { 'x-portico-admin': '1' } });

  const ws = await openWebSocket(t, `ws://127.0.0.1:${portico.httpPort}/ws`);
  assert.equal(await echo(ws, 'before'), 'before');

  const drained = await control(`/upstreams/app/targets/${a.address}/drain`);
  assert.equal(drained.status, 200);
  assert.deepEqual(JSON.parse(drained.body.toString()), { upstream: 'app', target: a.address, draining: true, appliedBy: [1, 2], unanswered: [] });
  const hitsA = a.hits;
  assert.deepEqual(new Set(await fire(portico.httpPort, 20)), new Set(['b']));
  assert.equal(a.hits, hitsA);
  const s = await status(portico);
  assert.equal(s.health.app[0].draining, true);
  assert.equal(s.upstreams.app[0].available, false);

  // Draining the only target of `live`: new tunnels get 503, the open one keeps relaying.
  assert.equal((await control(`/upstreams/live/targets/${encodeURIComponent(a.address)}/drain`)).status, 200);
  await assert.rejects(openWebSocket(t, `ws://127.0.0.1:${portico.httpPort}/ws`), (err: unknown) => err instanceof UnexpectedResponse && err.status === 503);
  assert.equal(await echo(ws, 'after drain'), 'after drain');
  ws.close();

  assert.equal((await control(`/upstreams/app/targets/${a.address}/undrain`)).status, 200);
  assert.ok((await fire(portico.httpPort, 20)).includes('a'));

  assert.equal((await control('/upstreams/app/targets/127.0.0.1:1/drain')).status, 404);
  assert.equal((await control(`/upstreams/nope/targets/${a.address}/drain`)).status, 404);
  assert.equal((await control(`/upstreams/app/targets/${a.address}/drain`, 'GET')).status, 405);
});

test('with admin.token set, a drain needs the bearer token', async (t) => {
  const a = await startBackend(t, 'a');
  const token = 'test-token-0123456789abcdef';
  const portico = await startPortico(t, config({ app: { targets: [a.address] } }, { admin: { address: '127.0.0.1:0', token } }));
  const admin = await twoWorkersAdmin(portico);
  const url = `http://127.0.0.1:${admin}/upstreams/app/targets/${a.address}/drain`;
  const none = await request(url, { method: 'POST' });
  assert.equal(none.status, 401);
  assert.equal(none.headers['www-authenticate'], 'Bearer');
  assert.equal((await request(url, { method: 'POST', headers: { authorization: 'Bearer wrong-token-0123456789abcd' } })).status, 401);
  assert.equal((await request(url, { method: 'POST', headers: { authorization: `Bearer ${token}` } })).status, 200);
  assert.ok(portico.logs.every((l) => !JSON.stringify(l).includes(token)), 'the token is never logged');
});

test('a websocket health check completes a real handshake with a `ws` server; a path it refuses is down', async (t) => {
  const a = await startBackend(t, 'a');
  const handshakes: number[] = [];
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', path: '/ws' });
  t.after(() => wss.close());
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const wsAddress = `127.0.0.1:${(wss.address() as AddressInfo).port}`;
  let notify: (() => void) | null = null;
  wss.on('connection', () => {
    handshakes.push(Date.now());
    if (handshakes.length >= 2) notify?.();
  });
  const check = (path: string) => ({ active: { type: 'websocket' as const, path, interval: '100ms', timeout: '500ms', fails: 2 } });
  const portico = await startPortico(t, config({ app: { targets: [a.address] }, good: { targets: [wsAddress], health: check('/ws') }, bad: { targets: [wsAddress], health: check('/nope') } }));
  const admin = await twoWorkersAdmin(portico);
  // The second handshake starts only after the first probe's result was recorded.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no second websocket probe within 10 s')), 10_000);
    notify = () => {
      clearTimeout(timer);
      resolve();
    };
    if (handshakes.length >= 2) notify();
  });
  const down = await portico.waitForLog((l) => l.msg === DOWN && l.upstream === 'bad');
  assert.equal(down.reason, 'status 400 (expected 101)');
  const s = await status(portico);
  assert.equal(s.health.good[0].active?.type, 'websocket');
  assert.equal(s.health.good[0].active?.healthy, true);
  assert.equal(s.health.good[0].active?.lastResult, 'ok');
  assert.equal(s.health.bad[0].active?.healthy, false);
  assert.ok(portico.logs.every((l) => !(l.msg === DOWN && l.upstream === 'good')));
});
