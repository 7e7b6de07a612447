// DNS discovery end to end: the real `portico start` (2 workers) resolving through a DNS server the test runs
// on loopback (test/helpers/dns-server.ts). A name answering A, then A+B with a short TTL: traffic reaches B
// without a restart; the server failing (SERVFAIL, then no answer at all): Portico keeps serving the last set;
// an SRV name with two backends on two ports; a target leaving the answer gets no new work while its open
// tunnel goes on. Backends share one port on 127.0.0.1 and 127.0.0.2 (both loopback), as pods of a headless
// service do. Waits on DNS queries and log lines; request loops are bounded.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend, startWsEchoBackend, type HttpBackend, type WsEchoBackend } from '../helpers/backends.js';
import { closed, echo, openWebSocket, request } from '../helpers/clients.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { plainListener, startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import { adminStatus } from '../helpers/admin.js';

/** Two backends on one port, one on 127.0.0.1 and one on 127.0.0.2; a few tries when that port is taken there. */
async function pairOnOnePort<B extends { port: number }>(start: (host: string, port: number) => Promise<B>): Promise<[B, B]> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 10; attempt++) {
    const a = await start('127.0.0.1', 0);
    try {
      return [a, await start('127.0.0.2', a.port)];
    } catch (err) {
      lastError = err; // a's port is in use on 127.0.0.2: try another (a is closed after the test)
    }
  }
  throw new Error(`no port free on both 127.0.0.1 and 127.0.0.2 after 10 tries: ${String(lastError)}`);
}

function resolver(dns: TestDnsServer): NonNullable<ConfigInput['resolver']> {
  return { servers: [`127.0.0.1:${dns.port}`], timeout: '500ms', min_ttl: '200ms', backoff: { min: '200ms', max: '1s' }, family: 'ipv4' };
}

function config(dns: TestDnsServer, upstreams: ConfigInput['upstreams'], routes: ConfigInput['routes'] = [{ match: { path: '/' }, proxy: 'api' }]): ConfigInput {
  return { workers: 2, listeners: [plainListener()], admin: { address: '127.0.0.1:0' }, resolver: resolver(dns), upstreams, routes, log: { access: false } };
}

const CHANGED = 'upstream targets changed by discovery';
const FAILED = 'discovery lookup failed: keeping the last good targets';
const changed = (pred: (l: LogLine) => boolean) => (l: LogLine) => l.msg === CHANGED && pred(l);
const listed = (field: string, id: string) => (l: LogLine) => Array.isArray(l[field]) && (l[field] as unknown[]).includes(id);

/** Which backend answered each of `n` GETs (fresh connections, so both workers serve some). */
async function backendsOf(portico: Portico, n: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await request(`http://127.0.0.1:${portico.httpPort}/x`);
    assert.equal(res.status, 200, `request ${i}: ${res.body.toString()}`);
    names.push(String(res.headers['x-backend']));
  }
  return names;
}

/** GETs until `name` answered (the workers got the new set), at most `max`; returns how many it took. */
async function requestsUntil(portico: Portico, name: string, max = 60): Promise<number> {
  for (let i = 1; i <= max; i++) if ((await backendsOf(portico, 1))[0] === name) return i;
  throw new Error(`backend ${name} never answered in ${max} requests`);
}

test('a name answering A, then A+B (short TTL), then failing: traffic follows the answer without restart and keeps the last set', { timeout: 90_000 }, async (t) => {
  const dns = await startDnsServer(t);
  const [a, b] = await pairOnOnePort<HttpBackend>((host, port) => startHttpBackend(t, { name: host === '127.0.0.1' ? 'A' : 'B', host, port }));
  const port = a.port;
  const idA = `127.0.0.1:${port}`;
  const idB = `127.0.0.2:${port}`;
  dns.set('api.test', { A: [{ address: '127.0.0.1', ttl: 1 }] });
  const portico = await startPortico(t, config(dns, { api: { targets: [{ address: `api.test:${port}`, resolve: true }] } }));

  assert.deepEqual(new Set(await backendsOf(portico, 10)), new Set(['A']));
  assert.equal(b.requests.length, 0);

  dns.set('api.test', { A: [{ address: '127.0.0.1', ttl: 1 }, { address: '127.0.0.2', ttl: 1 }] });
  await portico.waitForLog(changed(listed('added', idB)), 15_000);
  await requestsUntil(portico, 'B');
  assert.deepEqual(new Set(await backendsOf(portico, 20)), new Set(['A', 'B']), 'round robin over both');
  const s1 = await adminStatus(portico);
  assert.deepEqual(s1.discovery.api[0].targets, [idA, idB]);
  assert.equal(s1.discovery.api[0].ttl, 1);
  assert.equal(s1.discovery.api[0].lastError, null);
  assert.deepEqual(s1.upstreams.api.map((x) => x.target), [idA, idB]);
  assert.deepEqual(s1.health.api.map((x) => x.target), [idA, idB]);

  // SERVFAIL: the last good set stays, lookups go on with backoff.
  dns.mode = 'servfail';
  await portico.waitForLog((l) => l.msg === FAILED && /SERVFAIL/.test(String(l.reason)), 15_000);
  await dns.nextQuery((q) => q.outcome === 'SERVFAIL');
  assert.deepEqual(new Set(await backendsOf(portico, 20)), new Set(['A', 'B']));
  const s2 = await adminStatus(portico);
  assert.deepEqual(s2.discovery.api[0].targets, [idA, idB]);
  assert.match(s2.discovery.api[0].lastError ?? '', /api\.test A: SERVFAIL/);
  assert.ok(s2.discovery.api[0].failures >= 1);

  // No answer at all: the same. (Each failure is a warning only the first time and every tenth: wait on queries.)
  dns.mode = 'drop';
  await dns.nextQuery((q) => q.outcome === 'dropped', 15_000);
  await dns.nextQuery((q) => q.outcome === 'dropped', 15_000);
  assert.deepEqual(new Set(await backendsOf(portico, 20)), new Set(['A', 'B']));
  assert.match((await adminStatus(portico)).discovery.api[0].lastError ?? '', /api\.test A: timeout/);

  // Answering again, with A gone: A leaves, B stays.
  dns.set('api.test', { A: [{ address: '127.0.0.2', ttl: 1 }] });
  dns.mode = 'answer';
  await portico.waitForLog(changed(listed('removed', idA)), 15_000);
  const hitsA = a.requests.length;
  // The primary logs before the workers apply it: a request or two may still reach A, then none.
  await requestsUntil(portico, 'B');
  await requestsUntil(portico, 'B');
  const settled = a.requests.length;
  assert.deepEqual(new Set(await backendsOf(portico, 20)), new Set(['B']));
  assert.equal(a.requests.length, settled, 'no new request reaches a target that left');
  assert.ok(settled - hitsA <= 2);
  assert.equal(portico.logs.filter((l) => l.msg === 'listening').length, 1, 'never restarted');
});

test('an SRV name with two backends on two ports: both serve; its status names the record; health checks cover them', { timeout: 60_000 }, async (t) => {
  const dns = await startDnsServer(t);
  const one = await startHttpBackend(t, { name: 'one' });
  const two = await startHttpBackend(t, { name: 'two' });
  dns.set('_http._tcp.api.test', { SRV: [{ target: 'one.test', port: one.port, weight: 1 }, { target: 'two.test', port: two.port, weight: 1 }] });
  dns.set('one.test', { A: [{ address: '127.0.0.1', ttl: 30 }] });
  dns.set('two.test', { A: [{ address: '127.0.0.1', ttl: 30 }] });
  const portico = await startPortico(t, config(dns, { api: { targets: [{ srv: '_http._tcp.api.test' }], health: { active: { type: 'tcp', interval: '200ms', timeout: '500ms', fails: 1 } } } }));
  const seen = await backendsOf(portico, 20);
  assert.deepEqual(new Set(seen), new Set(['one', 'two']));
  assert.ok(Math.abs(seen.filter((n) => n === 'one').length - 10) <= 2, `equal weights share the load: ${seen.join(',')}`);
  const s = await adminStatus(portico);
  assert.deepEqual(s.discovery.api, [
    {
      ...s.discovery.api[0],
      name: '_http._tcp.api.test',
      type: 'srv',
      targets: [`127.0.0.1:${one.port}`, `127.0.0.1:${two.port}`].sort(),
      ttl: 30,
      lastError: null,
      failures: 0,
    },
  ]);
  assert.ok(s.discovery.api[0].lastResolved !== null);

  // The primary probes discovered targets like any other: a backend that stops is taken out of every worker.
  await two.close();
  await portico.waitForLog((l) => l.msg === 'upstream target is down: active health check failed' && l.target === `127.0.0.1:${two.port}`, 15_000);
  assert.deepEqual(new Set(await backendsOf(portico, 10)), new Set(['one']));
});

test('a target that leaves the answer gets no new tunnel, and its open tunnel goes on until it closes', { timeout: 60_000 }, async (t) => {
  const dns = await startDnsServer(t);
  const [wsA, wsB] = await pairOnOnePort<WsEchoBackend>((host, port) => startWsEchoBackend(t, { host, port }));
  const port = wsA.port;
  dns.set('chat.test', { A: [{ address: '127.0.0.1', ttl: 1 }] });
  const portico = await startPortico(t, config(dns, { chat: { targets: [{ address: `chat.test:${port}`, resolve: true }] } }, [{ match: { path: '/' }, proxy: 'chat' }]));
  const url = `ws://127.0.0.1:${portico.httpPort}/ws`;
  const old = await openWebSocket(t, url);
  assert.equal(await echo(old, 'hello'), 'hello');
  assert.equal(wsA.open, 1);

  dns.set('chat.test', { A: [{ address: '127.0.0.2', ttl: 1 }] });
  await portico.waitForLog(changed(listed('removed', `127.0.0.1:${port}`)), 15_000);
  // New tunnels go to B once every worker has the set. The log line is the primary's, so a worker may still send
  // one to A: bounded tries, each closed before the next, or one left open on A would keep A listed below.
  for (let i = 0; i < 20 && wsB.upgrades.length === 0; i++) {
    const ws = await openWebSocket(t, url);
    assert.equal(await echo(ws, `new ${i}`), `new ${i}`);
    ws.close();
    await closed(ws);
  }
  assert.ok(wsB.upgrades.length >= 1, 'a new tunnel reached B');
  assert.equal(await echo(old, 'still here'), 'still here', 'the tunnel to the target that left goes on');
  const s = await adminStatus(portico);
  const leaving = s.upstreams.chat.find((x) => x.target === `127.0.0.1:${port}`);
  assert.ok(leaving !== undefined && leaving.leaving === true && leaving.available === false, JSON.stringify(s.upstreams.chat));
  assert.ok(leaving.active >= 1);

  old.close();
  await closed(old);
  // The worker counts a tunnel gone when both legs closed, a little after the client saw its close; /status stops
  // listing the target then. Polled, bounded in count and time.
  let gone = false;
  const deadline = Date.now() + 10_000;
  for (let i = 0; i < 400 && !gone && Date.now() < deadline; i++) {
    gone = !(await adminStatus(portico)).upstreams.chat.some((x) => x.target === `127.0.0.1:${port}`);
    if (!gone) await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.ok(gone, 'a target that left is listed only while it has open tunnels');
});
