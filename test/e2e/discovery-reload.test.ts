// DNS discovery together with reload and sticky tunnels, end to end with the real `portico start` and
// `portico reload` (2 workers) and a DNS server the test runs on loopback (test/helpers/dns-server.ts): a reload
// that adds an upstream with a DNS name routes to its targets at once, one that removes it stops following the
// name; a reload that keeps a name (its upstream changed, so its pool is replaced) serves the same targets with
// no failed request while the DNS server fails, and does not look the name up again; a hash upstream whose SRV
// answer grows keeps a key with open tunnels on its target. Waits on log lines and bounded polls, never sleeps.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WebSocket } from 'ws';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend, startWsEchoBackend, type WsEchoBackend } from '../helpers/backends.js';
import { echo, openWebSocket, request } from '../helpers/clients.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { movingKey } from '../helpers/hash-keys.js';
import { get, getLoop, progress } from '../helpers/loops.js';
import { plainListener, reloadPortico, startPortico, type Portico } from '../helpers/portico.js';
import { adminStatus, adminUrl } from '../helpers/admin.js';
import { until } from '../helpers/until.js';

const SETTLE_MS = 10_000;

function config(dns: TestDnsServer, upstreams: NonNullable<ConfigInput['upstreams']>, routes: NonNullable<ConfigInput['routes']>): ConfigInput {
  const resolver = { servers: [`127.0.0.1:${dns.port}`], timeout: '500ms', min_ttl: '200ms', backoff: { min: '200ms', max: '1s' }, family: 'ipv4' as const };
  return { workers: 2, listeners: [plainListener()], admin: { address: '127.0.0.1:0' }, resolver, upstreams, routes, log: { access: false } };
}

async function metrics(portico: Portico): Promise<string> {
  const res = await request(`${adminUrl(portico)}/metrics`);
  assert.equal(res.status, 200);
  return res.body.toString();
}

/** Polls `done` until it holds, bounded by SETTLE_MS; fails with `what`. */
async function settled(what: string, done: () => boolean | Promise<boolean>): Promise<void> {
  await until(what, done, (ok) => ok, SETTLE_MS, 25);
}

test('a reload that adds an upstream with a DNS name routes to its targets at once; one that removes it stops following the name', { timeout: 60_000 }, async (t) => {
  const dns = await startDnsServer(t);
  const app = await startHttpBackend(t, { name: 'app' });
  const fresh = await startHttpBackend(t, { name: 'fresh', host: '127.0.0.2' });
  const id = `127.0.0.2:${fresh.port}`;
  dns.set('fresh.test', { A: [{ address: '127.0.0.2', ttl: 1 }] });
  const v1 = config(dns, { app: { targets: [`127.0.0.1:${app.port}`] } }, [{ match: { path: '/app' }, proxy: 'app' }]);
  const portico = await startPortico(t, v1);
  assert.deepEqual((await adminStatus(portico)).discovery, {}, 'no name to follow yet');

  const v2 = config(
    dns,
    { app: { targets: [`127.0.0.1:${app.port}`] }, fresh: { targets: [{ address: `fresh.test:${fresh.port}`, resolve: true }] } },
    [{ match: { path: '/app' }, proxy: 'app' }, { match: { path: '/fresh' }, proxy: 'fresh' }],
  );
  dns.delayMs = 300; // a slow answer (within resolver.timeout): the reload waits for it
  const r = await reloadPortico(portico, v2);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /generation 2: upstreams \+fresh/);
  dns.delayMs = 0;
  // No wait and no retry: the name was looked up before the workers applied the config. New connections, so
  // both workers answer some.
  for (let i = 0; i < 10; i++) {
    const res = await get('127.0.0.1', portico.httpPort, `/fresh/${i}`);
    assert.equal(res.status, 200, `request ${i}: ${res.body}`);
    assert.equal(res.headers['x-backend'], 'fresh');
  }
  const s = await adminStatus(portico);
  assert.equal(s.config.generation, 2);
  assert.deepEqual(s.workers.map((w) => w.generation), [2, 2]);
  assert.deepEqual(s.discovery.fresh.map((d) => [d.name, d.targets]), [['fresh.test', [id]]]);
  assert.deepEqual(s.upstreams.fresh.map(({ target, available, active }) => ({ target, available, active })), [{ target: id, available: true, active: 0 }]);
  const m = await metrics(portico);
  assert.match(m, /^portico_config_generation 2$/m);
  assert.match(m, /^portico_discovery_targets\{upstream="fresh",name="fresh\.test"\} 1$/m);

  const back = await reloadPortico(portico, v1);
  assert.equal(back.code, 0, back.stderr);
  assert.match(back.stdout, /generation 3: upstreams -fresh/);
  assert.equal((await get('127.0.0.1', portico.httpPort, '/fresh/x')).status, 404);
  assert.deepEqual((await adminStatus(portico)).discovery, {}, 'the name is no longer followed');
  const m3 = await metrics(portico);
  assert.doesNotMatch(m3, /portico_discovery_targets\{/);
  assert.match(m3, /^portico_config_generation 3$/m);
});

test('a reload that keeps a DNS name serves its targets throughout (its pool replaced, the DNS server failing) and does not look it up again', { timeout: 90_000 }, async (t) => {
  const dns = await startDnsServer(t);
  const api = await startHttpBackend(t, { name: 'api', host: '127.0.0.2' });
  const id = `127.0.0.2:${api.port}`;
  dns.set('api.test', { A: [{ address: '127.0.0.2', ttl: 3600 }] });
  const upstreams = (maxConnections: number): NonNullable<ConfigInput['upstreams']> => ({
    api: { targets: [{ address: `api.test:${api.port}`, resolve: true }], max_connections: maxConnections },
  });
  const portico = await startPortico(t, config(dns, upstreams(512), [{ match: { path: '/api' }, proxy: 'api' }]));
  const port = portico.httpPort;
  const asked = (): number => dns.queries.filter((q) => q.name === 'api.test').length;
  const askedAtStart = asked();
  assert.ok(askedAtStart >= 1);

  const onApi = (r: { headers: Record<string, unknown> }): string | undefined => (r.headers['x-backend'] === 'api' ? undefined : `answered by ${String(r.headers['x-backend'])}`);
  const loops = [getLoop(port, '/api', true, onApi), getLoop(port, '/api', true, onApi), getLoop(port, '/api', false, onApi), getLoop(port, '/api', false, onApi)];
  t.after(() => Promise.all(loops.map((l) => l.stop())));
  await progress(loops, 5);
  dns.mode = 'servfail'; // a new lookup of the name would fail now: only the set kept across the reload can serve

  // max_connections changes: the upstream gets a new pool, which must start with the discovered target
  const r = await reloadPortico(portico, config(dns, upstreams(100), [{ match: { path: '/api' }, proxy: 'api' }, { match: { path: '/new' }, proxy: 'api' }]));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /generation 2: upstreams ~api/);
  await progress(loops, 20);
  const results = await Promise.all(loops.map((l) => l.stop()));
  assert.deepEqual(results.flatMap((x) => x.failures), [], 'no request failed or reached another backend');

  const viaNew = await get('127.0.0.1', port, '/new');
  assert.equal(viaNew.status, 200, 'the new config serves');
  assert.equal(viaNew.headers['x-backend'], 'api');
  assert.equal(asked(), askedAtStart, 'the kept name was not looked up again');
  const s = await adminStatus(portico);
  assert.deepEqual(s.workers.map((w) => w.generation), [2, 2]);
  assert.deepEqual(s.upstreams.api.map((x) => [x.target, x.available]), [[id, true]]);
  const d = s.discovery.api[0];
  assert.deepEqual([d.name, d.targets, d.failures, d.lastError, d.lookups], ['api.test', [id], 0, null, { ok: 1, failed: 0 }], 'its state carried on');
});

test('a hash upstream whose SRV answer grows keeps a key with open tunnels on its target; other keys, and the key once closed, follow the new hash', { timeout: 90_000 }, async (t) => {
  const dns = await startDnsServer(t);
  const backends: WsEchoBackend[] = [];
  for (let i = 0; i < 4; i++) backends.push(await startWsEchoBackend(t));
  const byId = new Map(backends.map((b) => [`127.0.0.1:${b.port}`, b]));
  const ids = [...byId.keys()].sort(); // discovery's order: by id
  const before = ids.slice(0, 2);
  const srv = (list: string[]) => ({ SRV: list.map((x) => ({ target: 'ws.test', port: Number(x.split(':')[1]), ttl: 1 })) });
  dns.set('ws.test', { A: [{ address: '127.0.0.1', ttl: 1 }] });
  dns.set('_ws._tcp.chat.test', srv(before));
  const T = before[0];
  const weight = 10; // the test server's SRV weight, used as it is
  const { key, home } = movingKey(before, ids, T, [], weight);
  const other = movingKey(before, ids, before[1], [T, home], weight);
  const portico = await startPortico(t, config(dns, { chat: { targets: [{ srv: '_ws._tcp.chat.test' }], balance: { policy: 'hash', key: 'header:x-session' } } }, [{ match: { path: '/chat' }, proxy: 'chat' }]));
  const url = `ws://127.0.0.1:${portico.httpPort}/chat`;
  const tunnel = (k: string): Promise<WebSocket> => openWebSocket(t, url, { headers: { 'x-session': k } });
  const open = (): string => JSON.stringify([...byId].map(([x, b]) => [x, b.open]));

  const mine: WebSocket[] = [await tunnel(key)];
  assert.equal(byId.get(T)!.open, 1, `the key hashes to T among two targets: ${open()}`);

  dns.set('_ws._tcp.chat.test', srv(ids));
  await portico.waitForLog((l) => l.msg === 'upstream targets changed by discovery' && l.upstream === 'chat' && Array.isArray(l.targets) && l.targets.length === 4, 15_000);
  // The primary sent the set and the pins before it asks the workers for /status: both have them.
  const s = await adminStatus(portico);
  assert.equal(s.upstreams.chat.length, 4);
  assert.deepEqual(s.sticky, { keys: 1, pins: 1 }, 'the key is pinned to T, off its new home');
  for (let i = 0; i < 6; i++) mine.push(await tunnel(key)); // new connections: both workers take some
  assert.equal(byId.get(T)!.open, mine.length, `every tunnel of the key on T: ${open()}`);
  const otherWs = await tunnel(other.key);
  assert.equal(byId.get(other.home)!.open, 1, `a key without open tunnels follows the new hash: ${open()}`);

  for (const ws of mine) ws.terminate();
  await settled('the pin is gone', async () => (await adminStatus(portico)).sticky.pins === 0);
  await settled('the backend saw the tunnels close', () => byId.get(T)!.open === 0);
  await adminStatus(portico); // one more round trip: every worker handled the unpin before it answered
  const again = await tunnel(key);
  assert.equal(await echo(again, 'hi'), 'hi');
  assert.equal(byId.get(home)!.open, 1, `the key is on its new home: ${open()}`);
  otherWs.terminate();
});
