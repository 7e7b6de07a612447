// Hot reload end to end with the real `portico start` and `portico reload` (and SIGHUP), 2 workers: open
// WebSockets survive while GETs keep flowing and routes change; an invalid config is refused with its YAML path
// and line while the old one serves; listeners added and removed (both listen strategies); a certificate
// changed for new handshakes; a hash key kept on its target while its tunnels are open, across a reload that
// moves its hash. Real backends on loopback; waits on events and bounded polls, never on sleeps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import type { WebSocket } from 'ws';
import type { ConfigInput } from '../../src/config/schema.js';
import { closedPort, connectOutcome, startHttpBackend, startWsEchoBackend, type WsEchoBackend } from '../helpers/backends.js';
import { echo, openWebSocket, request } from '../helpers/clients.js';
import { TEST_CERT, TEST_KEY, plainListener, reloadPortico, startPortico, tlsListener, writeConfig, type LogLine, type Portico } from '../helpers/portico.js';
import { adminPort, adminStatus, statusUntil } from '../helpers/admin.js';
import { movingKey } from '../helpers/hash-keys.js';
import { get, getLoop, progress } from '../helpers/loops.js';
import { testCaCert } from '../helpers/wire.js';

/** Bounds of the polls below (they normally end within a few hundred ms). */
const SETTLE_MS = 10_000;
const POLL_MS = 25;

const reloaded = (generation: number) => (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.startsWith('config reloaded') && l.generation === generation;

test('reload with 50 open WebSockets and GETs flowing: no WebSocket closed, no GET failed, new route served, removed route 404', { timeout: 120_000 }, async (t) => {
  const a = await startHttpBackend(t, { name: 'a' });
  const b = await startHttpBackend(t, { name: 'b' });
  const ws1 = await startWsEchoBackend(t);
  const ws2 = await startWsEchoBackend(t);
  const base = (routes: NonNullable<ConfigInput['routes']>, upstreams: NonNullable<ConfigInput['upstreams']>): ConfigInput => ({
    workers: 2,
    listeners: [plainListener()],
    upstreams,
    routes,
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  const v1 = base(
    [
      { match: { path: '/old' }, proxy: { upstream: 'a', strip_prefix: true } },
      { match: { path: '/keep' }, proxy: 'a' },
      { match: { path: '/ws' }, proxy: 'ws' },
    ],
    { a: { targets: [`127.0.0.1:${a.port}`] }, ws: { targets: [`127.0.0.1:${ws1.port}`] } },
  );
  const portico = await startPortico(t, v1);
  const port = portico.httpPort;

  const sockets: WebSocket[] = [];
  let closed = 0;
  for (let batch = 0; batch < 5; batch++) {
    const opened = await Promise.all(Array.from({ length: 10 }, (_, i) => openWebSocket(t, `ws://127.0.0.1:${port}/ws/${batch * 10 + i}`)));
    for (const ws of opened) ws.on('close', () => closed++);
    sockets.push(...opened);
  }
  assert.equal(ws1.open, 50);

  const loops = [getLoop(port, '/keep', true), getLoop(port, '/keep', true), getLoop(port, '/keep', false), getLoop(port, '/keep', false)];
  t.after(() => Promise.all(loops.map((l) => l.stop())));
  await progress(loops, 5);
  // a request in flight on the route the reload removes finishes on the old config
  const slow = get('127.0.0.1', port, '/old/delay?ms=1500');
  for (let i = 0; i < 400 && !a.requests.some((r) => r.url.startsWith('/delay')); i++) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  assert.ok(a.requests.some((r) => r.url.startsWith('/delay')), 'the slow request reached the backend');

  const v2 = base(
    [
      { match: { path: '/new' }, proxy: 'b' },
      { match: { path: '/keep' }, proxy: 'a' },
      { match: { path: '/ws' }, proxy: 'ws' },
    ],
    // ws gains a target: its pool is replaced while 50 tunnels hold the old one
    { a: { targets: [`127.0.0.1:${a.port}`] }, b: { targets: [`127.0.0.1:${b.port}`] }, ws: { targets: [`127.0.0.1:${ws1.port}`, `127.0.0.1:${ws2.port}`] } },
  );
  const r = await reloadPortico(portico, v2);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^reloaded .*portico\.yaml: generation 2: upstreams \+b ~ws; routes changed \(3\)$/m);
  assert.equal((await slow).status, 200, 'the request in flight finished');
  await progress(loops, 20);

  const results = await Promise.all(loops.map((l) => l.stop()));
  assert.deepEqual(results.flatMap((x) => x.failures), [], 'no GET failed');
  assert.equal((await get('127.0.0.1', port, '/new')).status, 200);
  assert.equal(b.requests.length, 1, '/new reached the new upstream');
  assert.equal((await get('127.0.0.1', port, '/old')).status, 404);

  const echoes = await Promise.all(sockets.map((ws, i) => echo(ws, `after reload ${i}`)));
  echoes.forEach((m, i) => assert.equal(m, `after reload ${i}`));
  assert.equal(closed, 0, 'no WebSocket was closed');
  assert.equal(ws1.open, 50);
  // new tunnels use the new pool
  const more = await Promise.all(Array.from({ length: 4 }, (_, i) => openWebSocket(t, `ws://127.0.0.1:${port}/ws/new-${i}`)));
  for (const ws of more) assert.equal(await echo(ws, 'new'), 'new');
  assert.equal(ws1.open + ws2.open, 54);
  const s = await statusUntil(portico, 'tunnels counted', (x) => x.tunnels === 54);
  assert.equal(s.config.generation, 2);
  assert.equal(s.config.lastReload?.ok, true);
  assert.ok(portico.logs.some(reloaded(2)), 'one log line for the reload');
});

test('an invalid config is refused with every error, its YAML path and line; the running config keeps serving', { timeout: 60_000 }, async (t) => {
  const a = await startHttpBackend(t, { name: 'a' });
  const good = (extra: Partial<ConfigInput> = {}): ConfigInput => ({
    workers: 2,
    listeners: [plainListener()],
    upstreams: { a: { targets: [`127.0.0.1:${a.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'a' }],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
    ...extra,
  });
  const portico = await startPortico(t, good());
  const bad = [
    'workers: 2',
    'listeners:',
    '  - address: 127.0.0.1:0',
    'upstreams:',
    `  a: { targets: ["127.0.0.1:${a.port}"] }`,
    'routes:',
    '  - match: { path: / }',
    '    proxy: nope',
    'timeouts: { head: soon }',
    `admin: { address: "127.0.0.1:0" }`,
    '',
  ].join('\n');
  const r = await reloadPortico(portico, bad);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /portico\.yaml:8:5 routes\[0\]\.proxy: unknown upstream "nope" \(defined: a\)/);
  assert.match(r.stderr, /portico\.yaml:9:13 timeouts\.head: invalid duration "soon"/);
  assert.match(r.stderr, /reload refused: 2 errors in .*; generation 1 keeps serving/);
  assert.equal((await get('127.0.0.1', portico.httpPort, '/x')).status, 200, 'the old config serves');
  const s = await adminStatus(portico);
  assert.equal(s.config.generation, 1);
  assert.equal(s.config.lastReload?.ok, false);
  assert.equal(s.config.lastReload?.errors?.length, 2);
  assert.ok(portico.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('config reload refused') && Array.isArray(l.errors) && l.errors.length === 2), 'logged with its errors');

  // a valid config afterwards is taken; a changed worker count is said to need a restart
  const ok = await reloadPortico(portico, good({ workers: 3 }));
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /warning: workers: 2 -> 3 is not applied by a reload/);
  const after = await adminStatus(portico);
  assert.equal(after.config.generation, 2);
  assert.equal(after.workers.length, 2);
});

for (const [strategy, env] of [
  ['default listen strategy', {}],
  ['shared handle', { PORTICO_NATIVE: '0' }],
] as const) {
  test(`listeners: one added by reload accepts, a removed one stops accepting, kept-alive connections go on (${strategy})`, { timeout: 60_000 }, async (t) => {
    const a = await startHttpBackend(t, { name: 'a' });
    const config = (addresses: string[]): ConfigInput => ({
      workers: 2,
      listeners: addresses.map((address) => ({ address })),
      upstreams: { a: { targets: [`127.0.0.1:${a.port}`] } },
      routes: [{ match: { path: '/' }, proxy: 'a' }],
      admin: { address: '127.0.0.1:0' },
      log: { access: false },
    });
    const portico = await startPortico(t, config(['127.0.0.1:0']), { env });
    const first = portico.httpPort;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    assert.equal((await get('127.0.0.1', first, '/', agent)).status, 200);

    await writeConfig(portico, config(['127.0.0.1:0', '[::1]:0']));
    portico.kill('SIGHUP');
    const line = await portico.waitForLog(reloaded(2));
    const listeners = line.listeners as Array<{ port: number }>;
    assert.equal(listeners[0].port, first, 'the kept listener keeps its port');
    const second = listeners[1].port;
    assert.equal((await get('::1', second, '/')).status, 200, 'the new listener accepts');
    const kept = await get('127.0.0.1', first, '/', agent);
    assert.deepEqual([kept.status, kept.reused], [200, true]);

    await writeConfig(portico, config(['[::1]:0']));
    portico.kill('SIGHUP');
    await portico.waitForLog(reloaded(3));
    assert.equal(await connectOutcome(first), 'ECONNREFUSED', 'the removed listener is closed');
    assert.equal((await get('::1', second, '/')).status, 200);
    const still = await get('127.0.0.1', first, '/', agent);
    assert.deepEqual([still.status, still.reused], [200, true], 'a connection the removed listener accepted goes on');
  });
}

/** The SHA-256 fingerprint of the certificate a new TLS client gets from 127.0.0.1:port (SNI localhost). */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    socket.setTimeout(10_000, () => socket.destroy(new Error('no TLS handshake within 10 s')));
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      const fp = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fp);
    });
  });
}

test('a certificate changed by reload is served to new TLS clients; established TLS connections go on', { timeout: 60_000 }, async (t) => {
  const a = await startHttpBackend(t, { name: 'a' });
  const config = (certificates: Array<Record<string, unknown>>): ConfigInput => ({
    workers: 2,
    listeners: [{ ...tlsListener(), tls: { certificates } } as ConfigInput['listeners'][number]],
    upstreams: { a: { targets: [`127.0.0.1:${a.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'a' }],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  const portico = await startPortico(t, config([{ cert: TEST_CERT, key: TEST_KEY }]));
  const port = portico.tlsPort;
  const oldFp = new X509Certificate(readFileSync(TEST_CERT)).fingerprint256;
  assert.equal(await servedFingerprint(port), oldFp);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: testCaCert(), servername: 'localhost' });
  t.after(() => agent.destroy());
  const viaAgent = (): Promise<{ status: number; reused: boolean }> =>
    new Promise((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
      });
      req.setTimeout(15_000, () => req.destroy(new Error('no response within 15 s')));
      req.on('error', reject);
      req.end();
    });
  assert.equal((await viaAgent()).status, 200);

  // a new pair, generated by Portico itself at reload (self_signed), in the test's temp folder
  const cert = path.join(portico.dir, 'renewed.crt');
  const r = await reloadPortico(portico, config([{ cert, key: path.join(portico.dir, 'renewed.key'), self_signed: true, hosts: ['localhost'] }]));
  assert.equal(r.code, 0, r.stderr);
  const newFp = new X509Certificate(readFileSync(cert)).fingerprint256;
  assert.notEqual(newFp, oldFp);
  // several handshakes, so both workers are asked whichever accepts
  for (let i = 0; i < 6; i++) assert.equal(await servedFingerprint(port), newFp, `handshake ${i}`);
  assert.deepEqual(await viaAgent(), { status: 200, reused: true }, 'the connection made with the old certificate goes on');
});

/** Polls `done` (backend-side counts) until it holds, bounded. */
async function settled(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + SETTLE_MS;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${SETTLE_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

test('sticky tunnels: a hash key keeps its target while its tunnels are open, across a reload that moves its hash and across workers', { timeout: 90_000 }, async (t) => {
  const backends: WsEchoBackend[] = [];
  for (let i = 0; i < 4; i++) backends.push(await startWsEchoBackend(t));
  const ids = backends.map((b) => `127.0.0.1:${b.port}`);
  const config = (targets: string[]): ConfigInput => ({
    workers: 2,
    listeners: [plainListener()],
    upstreams: { chat: { targets, balance: { policy: 'hash', key: 'header:x-session' } } },
    routes: [{ match: { path: '/chat' }, proxy: 'chat' }],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  const before = ids.slice(0, 2);
  const T = before[0];
  const { key, home } = movingKey(before, ids, T);
  const byId = new Map(ids.map((id, i) => [id, backends[i]]));
  const open = (): Map<string, number> => new Map(ids.map((id) => [id, byId.get(id)!.open]));
  const portico = await startPortico(t, config(before));
  const url = `ws://127.0.0.1:${portico.httpPort}/chat`;
  const tunnel = (): Promise<WebSocket> => openWebSocket(t, url, { headers: { 'x-session': key } });

  const mine: WebSocket[] = [await tunnel()];
  assert.equal(byId.get(T)!.open, 1, 'the key hashes to T before the reload');

  const r = await reloadPortico(portico, config(ids));
  assert.equal(r.code, 0, r.stderr);
  const s = await adminStatus(portico);
  assert.deepEqual(s.workers.map((w) => w.generation), [2, 2]);
  assert.deepEqual(s.sticky, { keys: 1, pins: 1 }, 'the key is pinned to T');
  // new tunnels for the key, each on a new connection, until both workers hold some (the kernel spreads
  // connections over them): all on T, whichever worker took them
  let perWorker: number[] = [];
  for (let i = 0; i < 40 && (perWorker.length < 2 || perWorker.some((n) => n === 0)); i++) {
    mine.push(await tunnel());
    perWorker = (await statusUntil(portico, 'tunnels counted', (x) => x.tunnels === mine.length)).workers.map((w) => w.tunnels ?? 0);
  }
  assert.deepEqual(perWorker.map((n) => n > 0), [true, true], `tunnels per worker: ${perWorker.join(', ')}`);
  assert.equal(byId.get(T)!.open, mine.length, `all on T: ${JSON.stringify([...open()])}`);
  // a key without open tunnels follows the new hash
  const otherKey = movingKey(before, ids, before[1], [T, home]);
  const other = await openWebSocket(t, url, { headers: { 'x-session': otherKey.key } });
  assert.equal(byId.get(otherKey.home)!.open, 1, `another key follows the new hash: ${JSON.stringify([...open()])}`);

  // T taken out (drained): the key moves, though its tunnels on T stay open
  const admin = `http://127.0.0.1:${adminPort(portico)}`;
  assert.equal((await request(`${admin}/upstreams/chat/targets/${T}/drain`, { method: 'POST', headers: { 'x-portico-admin': '1' } })).status, 200);
  const moved = await tunnel();
  assert.equal(byId.get(home)!.open, 1, 'with T drained the key goes to its hash');
  assert.equal(byId.get(T)!.open, mine.length, 'tunnels on a drained target stay');
  assert.equal((await request(`${admin}/upstreams/chat/targets/${T}/undrain`, { method: 'POST', headers: { 'x-portico-admin': '1' } })).status, 200);
  mine.push(moved);

  // the last tunnel of the key closes: the pin goes, the key follows the hash again
  for (const ws of mine) ws.terminate();
  // (the other key's tunnel is still open: one entry)
  await statusUntil(portico, 'the pin is gone', (x) => x.sticky.keys === 1 && x.sticky.pins === 0);
  await settled('the backends saw the tunnels close', () => byId.get(T)!.open === 0 && byId.get(home)!.open === 0);
  await adminStatus(portico); // one more round trip: every worker handled the unpin before it answered
  const again = await tunnel();
  assert.equal(await echo(again, 'hi'), 'hi');
  assert.equal(byId.get(home)!.open, 1, `the key is on its new home: ${JSON.stringify([...open()])}`);
  assert.equal(byId.get(T)!.open, 0);
  other.terminate();
});

test('least_conn after a reload that changes the pool: tunnels still open on the old pool count, new ones go to the emptier target', { timeout: 60_000 }, async (t) => {
  const a = await startWsEchoBackend(t);
  const b = await startWsEchoBackend(t);
  const A = `127.0.0.1:${a.port}`;
  const B = `127.0.0.1:${b.port}`;
  const config = (targets: string[]): ConfigInput => ({
    workers: 2,
    listeners: [plainListener()],
    upstreams: { live: { targets, balance: 'least_conn' } },
    routes: [{ match: { path: '/' }, proxy: 'live' }],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  const portico = await startPortico(t, config([A]));
  const url = `ws://127.0.0.1:${portico.httpPort}/live`;
  const tunnels: WebSocket[] = [];
  for (let i = 0; i < 4; i++) tunnels.push(await openWebSocket(t, url));
  assert.equal(a.open, 4);
  const r = await reloadPortico(portico, config([A, B]));
  assert.equal(r.code, 0, r.stderr);
  interface LoadStatus {
    upstreams: Record<string, Array<{ target: string; active: number; loadSeen?: number[] }>>;
  }
  // every worker balances on instance-wide counts (its own retired pool's tunnels included) before each open
  const settledOn = async (total: number): Promise<void> => {
    const deadline = Date.now() + SETTLE_MS;
    let last = '';
    while (Date.now() < deadline) {
      const s = JSON.parse((await request(`http://127.0.0.1:${adminPort(portico)}/status`)).body.toString()) as LoadStatus;
      const targets = s.upstreams.live;
      last = JSON.stringify(targets);
      if (targets.reduce((n, x) => n + x.active, 0) === total && targets.every((x) => x.loadSeen?.length === 2 && x.loadSeen.every((n) => n === x.active))) return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    assert.fail(`load did not settle on ${total}; last: ${last}`);
  };
  for (let i = 0; i < 4; i++) {
    await settledOn(4 + i);
    tunnels.push(await openWebSocket(t, url));
    assert.deepEqual([a.open, b.open], [4, i + 1], `tunnel ${5 + i}`);
  }
  for (const ws of tunnels) ws.terminate();
});

test('health checks and admin settings follow a reload: a new check takes a dead target out, a new token guards drains', { timeout: 60_000 }, async (t) => {
  const a = await startHttpBackend(t, { name: 'a' });
  const dead = `127.0.0.1:${await closedPort()}`;
  const A = `127.0.0.1:${a.port}`;
  const config = (extra: Partial<ConfigInput>, upstream: NonNullable<ConfigInput['upstreams']>[string]): ConfigInput => ({
    workers: 2,
    listeners: [plainListener()],
    upstreams: { u: upstream },
    routes: [{ match: { path: '/' }, proxy: 'u' }],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
    ...extra,
  });
  const portico = await startPortico(t, config({}, { targets: [A] }));
  const adminUrl = `http://127.0.0.1:${adminPort(portico)}`;
  interface HealthStatus {
    health: Record<string, Array<{ target: string; active: null | { healthy: boolean } }>>;
  }
  const health = async (): Promise<HealthStatus['health']> => (JSON.parse((await request(`${adminUrl}/status`)).body.toString()) as HealthStatus).health;
  assert.deepEqual((await health()).u.map((x) => x.active), [null]);

  const token = 'reload-test-token-0123456789';
  const r = await reloadPortico(
    portico,
    config({ admin: { address: '127.0.0.1:0', token } }, { targets: [A, dead], health: { active: { type: 'tcp', interval: '100ms', timeout: '1s', fails: 1, passes: 1 }, passive: { max_fails: 0 } } }),
  );
  assert.equal(r.code, 0, r.stderr);
  // the admin address is "127.0.0.1:0" both times: the same listener, now with a token
  const deadline = Date.now() + SETTLE_MS;
  let last: HealthStatus['health'] = {};
  while (Date.now() < deadline) {
    last = await health();
    if (last.u.find((x) => x.target === dead)?.active?.healthy === false) break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  assert.deepEqual(last.u.map((x) => [x.target, x.active?.healthy]), [[A, true], [dead, false]], 'the new check runs');
  for (let i = 0; i < 10; i++) assert.equal((await get('127.0.0.1', portico.httpPort, `/n/${i}`)).status, 200);
  assert.equal(a.requests.length, 10, 'the dead target gets no request');
  assert.equal((await request(`${adminUrl}/upstreams/u/targets/${A}/drain`, { method: 'POST' })).status, 401, 'drains now need the token');
  const authorized = await request(`${adminUrl}/upstreams/u/targets/${A}/drain`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  assert.equal(authorized.status, 200);
});
