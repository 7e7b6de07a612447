// Health: consecutive thresholds, the passive max_fails/fail_timeout window (injected times and mocked timers),
// the pool's `available` bit (drain, active state, passive, panic), the health config, and the real probes
// (http, tcp, websocket) and HealthChecker against loopback servers. Waits on events, never on sleeps.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { configSchema, type ActiveHealthConfig, type ConfigInput } from '../../src/config/schema.js';
import { isToWorker } from '../../src/worker/ipc.js';
import { createLogger } from '../../src/core/log.js';
import { parseProxyHeader, type ProxyHeader } from '../../src/wire/proxy-protocol.js';
import { HealthChecker, PassiveWindow, Thresholds, probe, probeProxyHeader, renderHealthMetrics, type ProbeTarget } from '../../src/upstream/health.js';
import { UpstreamPool } from '../../src/upstream/pool.js';
import { poolFor } from '../helpers/pool.js';

type UpstreamInput = NonNullable<ConfigInput['upstreams']>[string];
type HealthInput = NonNullable<UpstreamInput['health']>;

const silent = createLogger('silent');

function upstreamConfig(targets: string[], health: HealthInput = {}) {
  return configSchema.parse({ listeners: [{ address: '127.0.0.1:0' }], upstreams: { u: { targets, health } } }).upstreams.u;
}

function activeConfig(active: NonNullable<HealthInput['active']>): ActiveHealthConfig {
  const cfg = upstreamConfig(['127.0.0.1:1'], { active }).health.active;
  assert.ok(cfg !== undefined);
  return cfg;
}

// --- thresholds -------------------------------------------------------------------------------------------

test('thresholds: a healthy target goes down only after `fails` consecutive failures', () => {
  const th = new Thresholds(2, 3);
  assert.equal(th.healthy, true);
  assert.equal(th.record(false), false);
  assert.equal(th.record(false), false);
  assert.equal(th.record(true), false); // a success in between restarts the count
  assert.equal(th.record(false), false);
  assert.equal(th.record(false), false);
  assert.equal(th.healthy, true);
  assert.equal(th.record(false), true);
  assert.equal(th.healthy, false);
  assert.equal(th.record(false), false); // already down: no second flip
});

test('thresholds: a down target comes back only after `passes` consecutive successes', () => {
  const th = new Thresholds(2, 1);
  assert.equal(th.record(false), true);
  assert.equal(th.record(true), false);
  assert.equal(th.record(false), false);
  assert.equal(th.record(true), false);
  assert.equal(th.healthy, false);
  assert.equal(th.record(true), true);
  assert.equal(th.healthy, true);
});

// --- passive window -----------------------------------------------------------------------------------------

test('passive window: max_fails failures within fail_timeout take the target down for fail_timeout', () => {
  const w = new PassiveWindow(3, 10_000);
  assert.equal(w.failure(1_000), false);
  assert.equal(w.failure(2_000), false);
  assert.equal(w.failures(2_000), 2);
  assert.equal(w.failure(3_000), true);
  assert.equal(w.isDown(3_000), true);
  assert.equal(w.isDown(12_999), true);
  assert.equal(w.failure(5_000), false); // failures while down neither count nor extend the down period
  assert.equal(w.downUntil, 13_000);
  assert.equal(w.isDown(13_000), false);
  assert.equal(w.failures(13_000), 0); // back with a clean slate
  assert.equal(w.failure(13_001), false);
});

test('passive window: failures older than fail_timeout expire and do not add up', () => {
  const w = new PassiveWindow(2, 1_000);
  assert.equal(w.failure(0), false);
  assert.equal(w.failure(1_000), false); // the first one is exactly fail_timeout old: expired
  assert.equal(w.failures(1_500), 1);
  assert.equal(w.failure(1_999), true);
  assert.equal(w.downUntil, 2_999);
});

test('passive window: max_fails 1 (nginx default) takes the target down on the first failure', () => {
  const w = new PassiveWindow(1, 10_000);
  assert.equal(w.failure(5), true);
  assert.equal(w.isDown(10_004), true);
  assert.equal(w.isDown(10_005), false);
});

test('passive window: max_fails 0 or fail_timeout off disables it', () => {
  for (const w of [new PassiveWindow(0, 10_000), new PassiveWindow(3, 0)]) {
    assert.equal(w.enabled, false);
    for (let i = 0; i < 10; i++) assert.equal(w.failure(i), false);
    assert.equal(w.isDown(5), false);
  }
});

// --- pool availability ---------------------------------------------------------------------------------------

const availability = (pool: UpstreamPool): boolean[] => pool.targets.map((t) => t.available);

test('pool: passive failures take a target out of this pool, and it comes back after fail_timeout', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  const events: string[] = [];
  const pool = new UpstreamPool('u', upstreamConfig(['127.0.0.1:1', '127.0.0.1:2'], { passive: { max_fails: 2, fail_timeout: '10s' } }), {
    passive: (target, down, code) => events.push(`${target.id} ${down ? 'down' : 'up'} ${code}`),
  });
  t.after(() => pool.close());
  const [a] = pool.targets;
  pool.reportFailure(a, 'UPSTREAM_CONNECT_REFUSED');
  assert.deepEqual(availability(pool), [true, true]);
  pool.reportFailure(a, 'CLIENT_TIMEOUT' as never); // not a failure of the target: ignored
  pool.reportStatus(a, 503); // on_5xx is off by default
  assert.deepEqual(availability(pool), [true, true]);
  t.mock.timers.tick(5_000);
  pool.reportFailure(a, 'UPSTREAM_HEADERS_TIMEOUT');
  assert.deepEqual(availability(pool), [false, true]);
  assert.deepEqual(pool.health()[0], { target: '127.0.0.1:1', healthy: true, draining: false, passiveDown: true, failures: 0 });
  t.mock.timers.tick(9_999);
  assert.deepEqual(availability(pool), [false, true]);
  t.mock.timers.tick(1);
  assert.deepEqual(availability(pool), [true, true]);
  assert.deepEqual(events, ['127.0.0.1:1 down UPSTREAM_HEADERS_TIMEOUT', '127.0.0.1:1 up null']);
});

test('pool: 5xx responses count as failures only with on_5xx', (t) => {
  const pool = poolFor(t, { targets: ['127.0.0.1:1', '127.0.0.1:2'], health: { passive: { on_5xx: true } } });
  pool.reportStatus(pool.targets[1], 404);
  pool.reportStatus(pool.targets[1], 200);
  assert.deepEqual(availability(pool), [true, true]);
  pool.reportStatus(pool.targets[1], 502);
  assert.deepEqual(availability(pool), [true, false]);
});

test('pool: when every target is down all non-drained ones are tried anyway (panic), drained ones never', (t) => {
  const panics: boolean[] = [];
  const pool = new UpstreamPool('u', upstreamConfig(['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']), { panic: (on) => panics.push(on) });
  t.after(() => pool.close());
  assert.equal(pool.setTargetState('127.0.0.1:3', { healthy: true, draining: true }), true);
  assert.deepEqual(availability(pool), [true, true, false]);
  pool.setTargetState('127.0.0.1:1', { healthy: false, draining: false });
  assert.deepEqual(availability(pool), [false, true, false]);
  pool.reportFailure(pool.targets[1], 'UPSTREAM_CONNECT_REFUSED');
  assert.equal(pool.panic, true);
  assert.deepEqual(availability(pool), [true, true, false]);
  pool.setTargetState('127.0.0.1:1', { healthy: true, draining: false });
  assert.equal(pool.panic, false);
  assert.deepEqual(availability(pool), [true, false, false]);
  assert.deepEqual(panics, [true, false]);
  assert.equal(pool.setTargetState('127.0.0.1:9', { healthy: false, draining: false }), false);
});

test('pool: a refused connect counts as a passive failure without the caller reporting it', async (t) => {
  const closed = createServer();
  closed.listen({ host: '127.0.0.1', port: 0 });
  await once(closed, 'listening');
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`, '127.0.0.1:1'] });
  const err = await new Promise<unknown>((resolve) => pool.acquire(pool.targets[0], (e) => resolve(e)));
  assert.equal((err as { code?: string }).code, 'UPSTREAM_CONNECT_REFUSED');
  assert.deepEqual(availability(pool), [false, true]);
});

// --- ipc ---------------------------------------------------------------------------------------------------

test('ipc: target state messages are checked before a worker applies them', () => {
  const c = { upstream: 'u', target: '127.0.0.1:1', healthy: false, draining: true };
  assert.equal(isToWorker({ type: 'target-state', ...c }), true);
  assert.equal(isToWorker({ type: 'upstream-state', targets: [c] }), true);
  assert.equal(isToWorker({ type: 'target-state', ...c, healthy: 'no' }), false);
  assert.equal(isToWorker({ type: 'upstream-state', targets: [{ ...c, target: 1 }] }), false);
  assert.equal(isToWorker({ type: 'upstream-state', targets: {} }), false);
});

// --- config ----------------------------------------------------------------------------------------------

test('config: health defaults are passive on (max_fails 1, 10s) and active off', () => {
  assert.deepEqual(upstreamConfig(['127.0.0.1:1']).health, { passive: { max_fails: 1, fail_timeout: 10_000, on_5xx: false } });
  assert.deepEqual(activeConfig({}), { type: 'http', path: '/healthz', method: 'GET', expect_status: [[200, 399]], interval: 5_000, timeout: 2_000, passes: 2, fails: 3 });
  assert.deepEqual(activeConfig({ expect_status: '200, 204-206' }).expect_status, [[200, 200], [204, 206]]);
});

test('config: bad health settings are reported with their paths', () => {
  const r = configSchema.safeParse({
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { u: { targets: ['127.0.0.1:1'], health: { active: { type: 'tcp', body_contains: 'x', interval: 'off', expect_status: '399-200', fails: 0 }, passive: { max_fails: -1 } } } },
    admin: { address: '127.0.0.1:0', token: 'short' },
  });
  assert.equal(r.success, false);
  const paths = r.error.issues.map((i) => i.path.join('.')).sort();
  assert.deepEqual(paths, [
    'admin.token',
    'upstreams.u.health.active.body_contains',
    'upstreams.u.health.active.expect_status',
    'upstreams.u.health.active.fails',
    'upstreams.u.health.active.interval',
    'upstreams.u.health.passive.max_fails',
  ]);
});

// --- probes ------------------------------------------------------------------------------------------------

async function listen(t: TestContext, server: Server | http.Server): Promise<ProbeTarget> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  return { id: `127.0.0.1:${port}`, host: '127.0.0.1', port };
}

async function refusedTarget(): Promise<ProbeTarget> {
  const s = createServer();
  s.listen({ host: '127.0.0.1', port: 0 });
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return { id: `127.0.0.1:${port}`, host: '127.0.0.1', port };
}

test('http probe: status inside expect_status passes, outside fails; method, path and Host are as configured', async (t) => {
  const seen: Array<{ method?: string; url?: string; host?: string }> = [];
  let status = 204;
  const target = await listen(t, http.createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, host: req.headers.host });
    res.writeHead(status).end();
  }));
  assert.deepEqual(await probe(target, activeConfig({ method: 'HEAD', path: '/ready?x=1', host: 'app.internal' })), { ok: true });
  assert.deepEqual(seen, [{ method: 'HEAD', url: '/ready?x=1', host: 'app.internal' }]);
  status = 503;
  assert.deepEqual(await probe(target, activeConfig({})), { ok: false, reason: 'status 503' });
  assert.equal(seen[1].host, target.id); // default Host: the target's address
  status = 404;
  assert.deepEqual(await probe(target, activeConfig({ expect_status: '200,404' })), { ok: true });
});

test('http probe with a PROXY header: v1 UNKNOWN and v2 LOCAL reach the server first, each on a fresh connection', async (t) => {
  assert.equal(probeProxyHeader('off'), undefined);
  const seen: ProxyHeader[] = [];
  // a raw server: parse the header, then answer one HTTP request and close
  const target = await listen(t, createServer((s) => {
    s.on('error', () => s.destroy());
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const r = parseProxyHeader(buf);
      if (r.kind === 'more') return;
      if (r.kind !== 'done') return void s.destroy();
      if (!buf.subarray(r.used).includes('\r\n\r\n')) return;
      seen.push(r.header);
      s.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    });
  }));
  for (const version of ['v1', 'v2'] as const) {
    assert.deepEqual(await probe({ ...target, proxyHeader: probeProxyHeader(version) }, activeConfig({})), { ok: true }, version);
  }
  assert.deepEqual(seen.map((h) => [h.version, h.command, h.family]), [[1, 'proxy', 'unknown'], [2, 'local', 'unknown']]);
  // without the header the same server sees none and answers nothing: the probe must fail
  assert.equal((await probe(target, activeConfig({ timeout: '300ms' }))).ok, false);
});

test('http probe: body_contains matches across chunk boundaries and fails when the text is missing', async (t) => {
  const target = await listen(t, http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.write('status: al');
    setImmediate(() => res.end(req.url === '/bad' ? 'l broken' : 'l good'));
  }));
  assert.deepEqual(await probe(target, activeConfig({ path: '/good', body_contains: 'all good' })), { ok: true });
  assert.deepEqual(await probe(target, activeConfig({ path: '/bad', body_contains: 'all good' })), { ok: false, reason: 'body_contains not found' });
});

test('http probe: a target that never answers fails at the timeout; a closed port fails at once', async (t) => {
  const target = await listen(t, createServer((s) => s.on('error', () => {})));
  assert.deepEqual(await probe(target, activeConfig({ timeout: '150ms' })), { ok: false, reason: 'timeout after 150ms' });
  assert.deepEqual(await probe(await refusedTarget(), activeConfig({})), { ok: false, reason: 'ECONNREFUSED' });
});

test('tcp probe: a listening port passes, a closed one fails', async (t) => {
  const target = await listen(t, createServer((s) => s.on('error', () => {})));
  assert.deepEqual(await probe(target, activeConfig({ type: 'tcp' })), { ok: true });
  assert.deepEqual(await probe(await refusedTarget(), activeConfig({ type: 'tcp' })), { ok: false, reason: 'ECONNREFUSED' });
});

test('websocket probe: a real handshake with a `ws` server passes and closes with a Close frame', async (t) => {
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  const wss = new WebSocketServer({ server, path: '/ws' });
  t.after(() => wss.close());
  const closes: number[] = [];
  wss.on('connection', (ws) => ws.on('close', (code) => closes.push(code)));
  const target = await listen(t, server);
  const closed = once(wss, 'connection').then(([ws]) => once(ws as import('ws').WebSocket, 'close'));
  assert.deepEqual(await probe(target, activeConfig({ type: 'websocket', path: '/ws' })), { ok: true });
  await closed;
  assert.deepEqual(closes, [1001]);
  // a path the WebSocket server does not serve: `ws` refuses the upgrade with 400
  assert.deepEqual(await probe(target, activeConfig({ type: 'websocket', path: '/other' })), { ok: false, reason: 'status 400 (expected 101)' });
});

test('websocket probe: a 101 with a wrong Sec-WebSocket-Accept fails', async (t) => {
  const target = await listen(t, createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => {
      const wrong = createHash('sha1').update('not the key').digest('base64');
      s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wrong}\r\n\r\n`);
    });
  }));
  assert.deepEqual(await probe(target, activeConfig({ type: 'websocket' })), { ok: false, reason: 'invalid Sec-WebSocket-Accept' });
});

// --- checker ---------------------------------------------------------------------------------------------

test('checker: flips down after `fails` failed probes and up after `passes`, once each, and counts them', async (t) => {
  let healthy = true;
  const target = await listen(t, http.createServer((_req, res) => res.writeHead(healthy ? 200 : 500).end()));
  const flips: Array<[string, boolean]> = [];
  let notify: (() => void) | null = null;
  const checker = new HealthChecker('u', [target, target], activeConfig({ interval: '20ms', timeout: '500ms', passes: 2, fails: 3 }), (id, h) => {
    flips.push([id, h]);
    notify?.();
  }, silent);
  t.after(() => checker.stop());
  const nextFlip = () => new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no flip within 5 s')), 5_000);
    notify = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  checker.start();
  healthy = false;
  await nextFlip();
  assert.deepEqual(flips, [[target.id, false]]);
  assert.equal(checker.isHealthy(target.id), false);
  const down = checker.status();
  assert.equal(down.length, 1); // the duplicate address is checked once
  assert.ok(down[0].checksFailed >= 3);
  assert.equal(down[0].lastReason, 'status 500');
  healthy = true;
  await nextFlip();
  checker.stop();
  assert.deepEqual(flips, [[target.id, false], [target.id, true]]);
  const up = checker.status()[0];
  assert.ok(up.checksOk >= 2);
  assert.equal(up.flipsDown, 1);
  assert.equal(up.flipsUp, 1);
  const text = renderHealthMetrics([checker]);
  assert.match(text, new RegExp(`^portico_health_flips_total\\{upstream="u",target="${target.id.replace(/\./g, '\\.')}",to="down"\\} 1$`, 'm'));
  assert.match(text, /^portico_upstream_target_healthy\{upstream="u",target="[^"]+"\} 1$/m);
});
