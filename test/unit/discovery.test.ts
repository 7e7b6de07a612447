// DNS discovery: the pure pieces (TTL clamp, backoff, SRV weights and priorities, ids), lookups and the
// Discovery timer chains against a DNS server on loopback (test/helpers/dns-server.ts), and what a pool does
// with a discovered set (targets joining, leaving with their sockets drained, waiters moved, hash remapping).
// Waits on callbacks and socket events, never on sleeps; the DNS TTLs and backoffs are made short.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import type { ByteSocket } from '../../src/core/socket.js';
import { configSchema, type Config, type ConfigInput, type DiscoverySpec } from '../../src/config/schema.js';
import type { ProxyError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/log.js';
import { hashKey, type Target } from '../../src/upstream/balancer.js';
import {
  Discovery,
  backoffMs,
  clampTtl,
  lookupDns,
  lookupSrv,
  nodeDnsClient,
  srvTargets,
  srvWeights,
  targetId,
  type DiscoveryStatus,
} from '../../src/upstream/discovery.js';
import { UpstreamPool, type TargetSpec } from '../../src/upstream/pool.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { tcpEchoServer } from '../helpers/tcp-server.js';
import { poolFor } from '../helpers/pool.js';

const silent = createLogger('silent');

function config(input: Omit<ConfigInput, 'listeners'>): Config {
  return configSchema.parse({ listeners: [{ address: '127.0.0.1:0' }], ...input });
}

/** A resolver config pointed at the test server, with short TTL bounds and backoff. */
function resolverFor(dns: TestDnsServer, extra: Record<string, unknown> = {}): NonNullable<ConfigInput['resolver']> {
  return { servers: [`127.0.0.1:${dns.port}`], timeout: '300ms', min_ttl: '50ms', max_ttl: '1h', backoff: { min: '50ms', max: '200ms' }, ...extra };
}

test('TTL clamp, backoff and ids', () => {
  assert.equal(clampTtl(30, 1000, 3_600_000), 30_000);
  assert.equal(clampTtl(0, 1000, 3_600_000), 1000, 'TTL 0 (Consul default) is looked up again after min_ttl');
  assert.equal(clampTtl(undefined, 1000, 3_600_000), 1000);
  assert.equal(clampTtl(86_400, 1000, 3_600_000), 3_600_000);
  assert.deepEqual([1, 2, 3, 4, 5, 6, 40].map((n) => backoffMs(n, 1000, 30_000)), [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
  assert.equal(targetId('10.0.0.1', 80), '10.0.0.1:80');
  assert.equal(targetId('fd00::1', 80), '[fd00::1]:80');
});

test('SRV weights: 0 becomes 1, large weights scale down to at most 1000 keeping their ratio', () => {
  assert.deepEqual(srvWeights([0, 0]), [1, 1]);
  assert.deepEqual(srvWeights([10, 30, 0]), [10, 30, 1]);
  assert.deepEqual(srvWeights([65535, 32768, 1]), [1000, 500, 1]);
});

test('SRV records to targets: host addresses on the record port, lowest priority primary, the rest backups, one per id, sorted', () => {
  const addresses: Record<string, string[]> = { a: ['10.0.0.2', '10.0.0.1'], b: ['10.0.0.3'], c: ['10.0.0.1'], gone: [] };
  const targets = srvTargets(
    [
      { name: 'b', port: 8080, priority: 20, weight: 5 },
      { name: 'a', port: 8080, priority: 10, weight: 3 },
      { name: 'c', port: 8080, priority: 30, weight: 9 }, // same address:port as a's first: a's record wins (priority)
      { name: 'gone', port: 1, priority: 10, weight: 1 },
      { name: 'unknown', port: 1, priority: 10, weight: 1 },
    ],
    (h) => addresses[h],
  );
  assert.deepEqual(targets, [
    { id: '10.0.0.1:8080', host: '10.0.0.1', port: 8080, weight: 3, backup: false },
    { id: '10.0.0.2:8080', host: '10.0.0.2', port: 8080, weight: 3, backup: false },
    { id: '10.0.0.3:8080', host: '10.0.0.3', port: 8080, weight: 5, backup: true },
  ]);
  assert.deepEqual(srvTargets([], () => ['10.0.0.1']), []);
});

const dnsSpec = (name: string, port: number, weight = 1): Extract<DiscoverySpec, { kind: 'dns' }> => ({ kind: 'dns', index: 0, name, address: `${name}:${port}`, port, weight, backup: false });

test('A/AAAA lookup: every address on the entry port, sorted, TTL = the shortest, clamped; family limits the queries', async (t) => {
  const dns = await startDnsServer(t);
  dns.set('api.test', { A: [{ address: '127.0.0.2', ttl: 30 }, { address: '127.0.0.1', ttl: 20 }], AAAA: [{ address: '::1', ttl: 40 }] });
  const resolver = config({ resolver: resolverFor(dns) }).resolver;
  const r = await lookupDns(nodeDnsClient(resolver), dnsSpec('api.test', 8080, 3), resolver);
  assert.equal(r.ok, true);
  assert.ok(r.ok);
  assert.deepEqual(
    r.targets.map((x) => [x.id, x.weight]),
    [
      ['127.0.0.1:8080', 3],
      ['127.0.0.2:8080', 3],
      ['[::1]:8080', 3],
    ],
  );
  assert.equal(r.ttlMs, 20_000);
  const v4 = config({ resolver: resolverFor(dns, { family: 'ipv4', min_ttl: '25s' }) }).resolver;
  const only4 = await lookupDns(nodeDnsClient(v4), dnsSpec('api.test', 8080), v4);
  assert.ok(only4.ok);
  assert.deepEqual(only4.targets.map((x) => x.id), ['127.0.0.1:8080', '127.0.0.2:8080']);
  assert.equal(only4.ttlMs, 25_000, 'below min_ttl: min_ttl');
  // A name with A records only is fine with family any: the empty AAAA answer is an answer.
  dns.set('v4only.test', { A: [{ address: '127.0.0.1' }] });
  const mixed = await lookupDns(nodeDnsClient(resolver), dnsSpec('v4only.test', 1), resolver);
  assert.ok(mixed.ok);
  assert.deepEqual(mixed.targets.map((x) => x.id), ['127.0.0.1:1']);
});

test('a failing lookup says why: NXDOMAIN, empty answer, SERVFAIL, no answer at all (timeout)', async (t) => {
  const dns = await startDnsServer(t);
  const resolver = config({ resolver: resolverFor(dns) }).resolver;
  const client = nodeDnsClient(resolver);
  const reason = async (name: string): Promise<string> => {
    const r = await lookupDns(client, dnsSpec(name, 80), resolver);
    assert.equal(r.ok, false, name);
    return r.ok ? '' : r.reason;
  };
  assert.match(await reason('missing.test'), /missing\.test: NXDOMAIN/);
  dns.set('empty.test', {});
  assert.match(await reason('empty.test'), /empty\.test: empty answer \(no A\/AAAA records\)/);
  dns.set('api.test', { A: [{ address: '127.0.0.1' }] });
  dns.mode = 'servfail';
  assert.match(await reason('api.test'), /api\.test A: SERVFAIL/);
  dns.mode = 'drop';
  const started = Date.now();
  assert.match(await reason('api.test'), /api\.test A: timeout/);
  assert.ok(Date.now() - started < 5_000, 'bounded by resolver.timeout (300ms) and the guard');
});

test('SRV lookup: two hosts on two ports; a host that fails keeps its last addresses; none left fails', async (t) => {
  const dns = await startDnsServer(t);
  dns.set('_http._tcp.api.test', { SRV: [{ target: 'a.test', port: 8081, weight: 1 }, { target: 'b.test.', port: 8082, weight: 3, ttl: 60 }] });
  dns.set('a.test', { A: [{ address: '127.0.0.1', ttl: 7 }] });
  dns.set('b.test', { A: [{ address: '127.0.0.2', ttl: 9 }] });
  const resolver = config({ resolver: resolverFor(dns, { family: 'ipv4' }) }).resolver;
  const client = nodeDnsClient(resolver);
  const spec: Extract<DiscoverySpec, { kind: 'srv' }> = { kind: 'srv', index: 0, name: '_http._tcp.api.test' };
  const first = await lookupSrv(client, spec, resolver, new Map());
  assert.ok(first.ok);
  assert.deepEqual(first.targets, [
    { id: '127.0.0.1:8081', host: '127.0.0.1', port: 8081, weight: 1, backup: false },
    { id: '127.0.0.2:8082', host: '127.0.0.2', port: 8082, weight: 3, backup: false },
  ]);
  assert.equal(first.ttlMs, 7_000, 'the shortest TTL of the hosts');
  assert.equal(first.warning, null);

  dns.delete('b.test');
  const partial = await lookupSrv(client, spec, resolver, first.hosts ?? new Map());
  assert.ok(partial.ok);
  assert.deepEqual(partial.targets.map((x) => x.id), ['127.0.0.1:8081', '127.0.0.2:8082'], 'b.test failed: its last addresses stay');
  assert.match(partial.warning ?? '', /b\.test: NXDOMAIN/);
  const fresh = await lookupSrv(client, spec, resolver, new Map());
  assert.ok(fresh.ok);
  assert.deepEqual(fresh.targets.map((x) => x.id), ['127.0.0.1:8081'], 'nothing known of b.test: left out');

  dns.delete('a.test');
  const none = await lookupSrv(client, spec, resolver, new Map());
  assert.equal(none.ok, false);
  assert.match(none.ok ? '' : none.reason, /no host resolved/);
  dns.delete('_http._tcp.api.test');
  const nx = await lookupSrv(client, spec, resolver, new Map());
  assert.match(nx.ok ? '' : nx.reason, /_http\._tcp\.api\.test SRV: NXDOMAIN/);
});

/** Collects Discovery's reports; next() resolves with the next one (bounded in time). */
function reports(): { listener: ConstructorParameters<typeof Discovery>[1]; next(timeoutMs?: number): Promise<{ upstream: string; ids: string[]; added: string[]; removed: string[] }> } {
  const queue: Array<{ upstream: string; ids: string[]; added: string[]; removed: string[] }> = [];
  let wake: (() => void) | null = null;
  return {
    listener: (upstream, targets, change) => {
      queue.push({ upstream, ids: targets.map((x) => x.id), added: change.added, removed: change.removed });
      wake?.();
    },
    async next(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (queue.length === 0) {
        if (Date.now() > deadline) throw new Error('no discovery report in time');
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 100).unref(); // bounded wait between checks of the deadline
        });
        wake = null;
      }
      return queue.shift()!;
    },
  };
}

test('Discovery follows a name on its TTL, reports only changes, keeps the last good set while lookups fail, and says so in status', async (t) => {
  const dns = await startDnsServer(t);
  dns.set('api.test', { A: [{ address: '127.0.0.1', ttl: 0 }] }); // TTL 0: looked up again after min_ttl (50ms)
  const cfg = config({ resolver: resolverFor(dns, { family: 'ipv4' }), upstreams: { api: { targets: ['127.0.0.9:1', { address: 'api.test:8080', resolve: true }] } } });
  const r = reports();
  const discovery = new Discovery(cfg, r.listener, silent);
  t.after(() => discovery.stop());
  assert.equal(discovery.active, true);
  discovery.start();
  await discovery.ready(5_000);
  assert.deepEqual(await r.next(), { upstream: 'api', ids: ['127.0.0.1:8080'], added: ['127.0.0.1:8080'], removed: [] });
  assert.deepEqual(discovery.targets('api').map((x) => x.id), ['127.0.0.1:8080'], 'only discovered targets: the fixed one is the pool\'s');

  // Unchanged answers are not reported; a changed one is.
  await dns.nextQuery((q) => q.name === 'api.test');
  dns.set('api.test', { A: [{ address: '127.0.0.1', ttl: 0 }, { address: '127.0.0.2', ttl: 0 }] });
  assert.deepEqual(await r.next(), { upstream: 'api', ids: ['127.0.0.1:8080', '127.0.0.2:8080'], added: ['127.0.0.2:8080'], removed: [] });

  // Failures keep the set and are retried (backoff 50ms..200ms), nothing is reported.
  dns.mode = 'servfail';
  await dns.nextQuery((q) => q.outcome === 'SERVFAIL');
  await dns.nextQuery((q) => q.outcome === 'SERVFAIL');
  dns.mode = 'drop';
  await dns.nextQuery((q) => q.outcome === 'dropped');
  dns.mode = 'nxdomain';
  await dns.nextQuery((q) => q.outcome === 'NXDOMAIN');
  await dns.nextQuery((q) => q.outcome === 'NXDOMAIN'); // the NXDOMAIN lookup has finished and was recorded
  const status: DiscoveryStatus = discovery.status().api[0];
  assert.deepEqual(status.targets, ['127.0.0.1:8080', '127.0.0.2:8080'], 'the last good set stays');
  assert.equal(status.lastError, 'api.test: NXDOMAIN');
  assert.ok(status.failures >= 3);
  assert.equal(status.type, 'dns');
  assert.equal(status.port, 8080);
  assert.equal(status.entry, 1);
  assert.ok(status.lastResolved !== null && status.nextResolve !== null && status.lastErrorAt !== null);
  assert.equal(discovery.targets('api').length, 2);
  assert.match(discovery.renderMetrics(), /portico_discovery_targets\{upstream="api",name="api\.test"\} 2/);
  assert.match(discovery.renderMetrics(), /portico_discovery_lookups_total\{upstream="api",name="api\.test",result="fail"\} [1-9]/);

  // Back to answering, with one address gone: it is reported removed.
  dns.set('api.test', { A: [{ address: '127.0.0.2', ttl: 0 }] });
  dns.mode = 'answer';
  assert.deepEqual(await r.next(), { upstream: 'api', ids: ['127.0.0.2:8080'], added: [], removed: ['127.0.0.1:8080'] });
  assert.equal(discovery.status().api[0].failures, 0);
  discovery.stop();
  const asked = dns.queries.length;
  await new Promise((resolve) => setTimeout(resolve, 300)); // several TTLs: a stopped discovery asks nothing
  assert.equal(dns.queries.length, asked);
});

test('Discovery with no discovered entry is inactive; ready() is bounded when the server never answers', async (t) => {
  assert.equal(new Discovery(config({ upstreams: { u: { targets: ['127.0.0.1:1'] } } }), () => {}, silent).active, false);
  const dns = await startDnsServer(t);
  dns.mode = 'drop';
  const d = new Discovery(config({ resolver: resolverFor(dns, { timeout: '10s' }), upstreams: { u: { targets: [{ srv: '_x._tcp.u.test' }] } } }), () => {}, silent);
  t.after(() => d.stop());
  d.start();
  const started = Date.now();
  await d.ready(200);
  assert.ok(Date.now() - started < 5_000);
  assert.deepEqual(d.targets('u'), []);
});

test('a reload plan keeps unchanged names (set, state, no new lookup), looks new ones up before commit, stops removed ones; abandon drops its lookups', async (t) => {
  const dns = await startDnsServer(t);
  dns.set('keep.test', { A: [{ address: '127.0.0.1', ttl: 3600 }] });
  dns.set('old.test', { A: [{ address: '127.0.0.2', ttl: 3600 }] });
  dns.set('new.test', { A: [{ address: '127.0.0.3', ttl: 3600 }] });
  dns.set('tick.test', { A: [{ address: '127.0.0.4', ttl: 0 }] }); // looked up every min_ttl (50ms): a clock
  dns.set('dropped.test', { A: [{ address: '127.0.0.5', ttl: 0 }] });
  const resolver = resolverFor(dns, { family: 'ipv4' });
  const keep = { address: 'keep.test:80', resolve: true };
  const tick = { address: 'tick.test:80', resolve: true };
  const v1 = config({ resolver, upstreams: { api: { targets: [keep, { address: 'old.test:80', resolve: true }] }, clock: { targets: [tick] } } });
  const r = reports();
  const d = new Discovery(v1, r.listener, silent);
  t.after(() => d.stop());
  d.start();
  await d.ready(5_000);
  assert.deepEqual(d.targets('api').map((x) => x.id), ['127.0.0.1:80', '127.0.0.2:80']);
  const asked = (name: string): number => dns.queries.filter((q) => q.name === name).length;
  const keepAsked = asked('keep.test');

  // keep.test moves to another position, old.test goes, new.test comes (in api and in a new upstream)
  const upstreams2: NonNullable<ConfigInput['upstreams']> = { api: { targets: ['127.0.0.9:1', { address: 'new.test:80', resolve: true }, keep] }, extra: { targets: [{ address: 'new.test:81', resolve: true }] }, clock: { targets: [tick] } };
  const v2 = config({ resolver, upstreams: upstreams2 });
  const plan = d.plan(v2);
  await plan.ready(5_000);
  const ids = (sets: Record<string, TargetSpec[]>) => Object.fromEntries(Object.entries(sets).map(([u, ts]) => [u, ts.map((x) => x.id)]));
  assert.deepEqual(ids(plan.sets()), { api: ['127.0.0.3:80', '127.0.0.1:80'], extra: ['127.0.0.3:81'], clock: ['127.0.0.4:80'] }, 'new names answered before commit');
  assert.deepEqual(d.targets('api').map((x) => x.id), ['127.0.0.1:80', '127.0.0.2:80'], 'nothing live changes before commit');
  assert.equal(asked('keep.test'), keepAsked, 'an unchanged name is not looked up again');
  d.commit(plan, plan.sets());
  assert.deepEqual(ids(d.sets()), ids(plan.sets()));
  const status = d.status();
  assert.deepEqual(status.api.map((s) => [s.entry, s.name, s.lookups.ok]), [[1, 'new.test', 1], [2, 'keep.test', 1]], 'the kept name keeps its counters, at its new position');
  assert.deepEqual(Object.keys(status).sort(), ['api', 'clock', 'extra']);
  assert.doesNotMatch(d.renderMetrics(), /old\.test/);

  // A plan that is dropped stops the lookups it started; so does a removed name at commit.
  const v3 = config({ resolver, upstreams: { ...upstreams2, gone: { targets: [{ address: 'dropped.test:80', resolve: true }] } } });
  const dropped = d.plan(v3);
  await dropped.ready(5_000);
  await dns.nextQuery((q) => q.name === 'dropped.test'); // it follows its TTL (0: every 50ms) while planned
  d.abandon(dropped);
  const droppedAsked = asked('dropped.test');
  for (let i = 0; i < 5; i++) await dns.nextQuery((q) => q.name === 'tick.test'); // 5 x min_ttl later
  assert.ok(asked('dropped.test') <= droppedAsked + 1, 'an abandoned name is not followed (one lookup may have been in flight)');
  assert.equal(d.status().gone, undefined);

  // New resolver settings: every name gets a new watch, seeded with its last good set, kept while lookups fail.
  dns.mode = 'servfail';
  const v4 = config({ resolver: { ...resolver, timeout: '400ms' }, upstreams: upstreams2 });
  const refreshed = d.plan(v4);
  await refreshed.ready(5_000);
  assert.deepEqual(ids(refreshed.sets()), ids(d.sets()), 'the last good sets stay while the new resolver fails');
  d.commit(refreshed, refreshed.sets());
  const keepStatus = d.status().api[1];
  assert.equal(keepStatus.name, 'keep.test');
  assert.deepEqual(keepStatus.targets, ['127.0.0.1:80']);
  assert.equal(keepStatus.lookups.ok, 1, 'counters carried');
  assert.ok(keepStatus.lookups.failed >= 1 && keepStatus.lastError !== null, 'the failed lookup under the new resolver is said');
});

// ---- the pool side ----

const spec = (port: number, host = '127.0.0.1', weight = 1, backup = false): TargetSpec => ({ id: targetId(host, port), host, port, weight, backup });

function acquired(t: TestContext, p: UpstreamPool, target: Target): Promise<{ err: ProxyError | null; socket: ByteSocket | null; waitUntil?: number }> {
  return new Promise((resolve) => {
    p.acquire(target, (err, socket, _reused, waitUntil) => {
      if (socket !== null) {
        socket.on('error', () => {});
        t.after(() => socket.destroy());
      }
      resolve({ err, socket, waitUntil });
    });
  });
}

test('onTargets: told after each set that changed the targets (a new targets array), not for one sent again unchanged; once per listener', () => {
  const p = poolFor(null, { targets: [{ address: 'api.test:80', resolve: true }] });
  const seen: string[][] = [];
  const listener = (): void => void seen.push(p.targets.map((x) => x.id));
  p.onTargets(listener);
  p.onTargets(listener);
  p.setDiscovered([spec(1), spec(2)]);
  const first = p.targets;
  p.setDiscovered([spec(1), spec(2)]);
  assert.equal(p.targets, first, 'the same array: nothing to follow');
  p.setDiscovered([spec(2), spec(3)]);
  p.setDiscovered([spec(2), spec(3, '127.0.0.1', 4)]); // a weight changed: the compiled weights must follow
  assert.deepEqual(seen, [['127.0.0.1:1', '127.0.0.1:2'], ['127.0.0.1:2', '127.0.0.1:3'], ['127.0.0.1:2', '127.0.0.1:3']]);
  p.close();
});

test('setDiscovered: fixed targets first, then the discovered ones; staying targets keep their object; a duplicate of a fixed one is skipped', () => {
  const p = poolFor(null, { targets: ['127.0.0.1:1', { address: 'api.test:80', resolve: true }] });
  assert.deepEqual(p.targets.map((x) => x.id), ['127.0.0.1:1'], 'nothing discovered yet');
  const first = p.setDiscovered([spec(2), spec(3), spec(1), spec(2)]);
  assert.deepEqual(first, { added: ['127.0.0.1:2', '127.0.0.1:3'], removed: [] });
  const [fixed, two, three] = p.targets;
  assert.deepEqual(p.targets.map((x) => x.id), ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']);
  const second = p.setDiscovered([spec(3, '127.0.0.1', 5), spec(4)]);
  assert.deepEqual(second, { added: ['127.0.0.1:4'], removed: ['127.0.0.1:2'] });
  assert.equal(p.targets[0], fixed);
  assert.equal(p.targets[1], three, 'the same object: its counters and sockets stay');
  assert.equal(three.weight, 5, 'weight follows the record');
  assert.equal(two.available, false);
  assert.deepEqual(new Set(Array.from({ length: 14 }, () => p.balancer.pick()?.id)), new Set(['127.0.0.1:1', '127.0.0.1:3', '127.0.0.1:4']));
  assert.deepEqual(p.report().map((r) => [r.target, r.leaving]), [['127.0.0.1:1', false], ['127.0.0.1:3', false], ['127.0.0.1:4', false]], 'a target without sockets leaves at once');
  p.close();
});

test('a target that leaves: idle sockets close, a busy one finishes and is closed on release, a tunnel stays; a late acquire is told to pick again', async (t) => {
  const port = await tcpEchoServer(t);
  const p = poolFor(t, { targets: [{ address: 'api.test:80', resolve: true }] });
  p.setDiscovered([spec(port)]);
  const [target] = p.targets;
  const [idle, busy, tunnel] = await Promise.all([acquired(t, p, target), acquired(t, p, target), acquired(t, p, target)]);
  p.release(target, idle.socket!, true);
  p.detach(target, tunnel.socket!);
  const idleClosed = once(idle.socket!, 'close');
  p.setDiscovered([]);
  assert.deepEqual(p.targets, []);
  await idleClosed;
  assert.deepEqual(p.report().map((r) => ({ target: r.target, leaving: r.leaving, available: r.available })), [{ target: `127.0.0.1:${port}`, leaving: true, available: false }]);
  assert.equal(busy.socket!.destroyed, false, 'the request in flight finishes');
  const busyClosed = once(busy.socket!, 'close');
  p.release(target, busy.socket!, true);
  await busyClosed;
  tunnel.socket!.write('still here');
  const [echoed] = (await once(tunnel.socket!, 'data')) as [Buffer];
  assert.equal(echoed.toString(), 'still here', 'the tunnel goes on');
  assert.equal(p.report().length, 1, 'listed while its tunnel is open');
  const late = await acquired(t, p, target);
  assert.equal(late.err?.code, 'UPSTREAM_TARGET_GONE');
  assert.equal(late.err?.retryable, true);
  const tunnelClosed = once(tunnel.socket!, 'close');
  tunnel.socket!.destroy();
  await tunnelClosed;
  assert.deepEqual(p.report(), [], 'its last socket closed: gone');
});

test('waiters queued on a target removed by discovery move to another target', async (t) => {
  const [pa, pb] = await Promise.all([tcpEchoServer(t), tcpEchoServer(t)]);
  const p = poolFor(t, { targets: [{ srv: '_x._tcp.u.test' }], max_connections: 1, queue: { size: 4, timeout: '20s' } });
  p.setDiscovered([spec(pa), spec(pb)]);
  const [a, b] = p.targets;
  await acquired(t, p, a);
  const waiting = acquired(t, p, a);
  await new Promise((r) => setImmediate(r));
  assert.equal(p.limits().queued, 1);
  p.setDiscovered([spec(pb)]);
  const moved = await waiting;
  assert.equal(moved.err?.code, 'UPSTREAM_TARGET_GONE');
  assert.match(moved.err?.message ?? '', /removed by discovery/);
  assert.ok((moved.waitUntil ?? 0) > Date.now());
  assert.equal(p.limits().queued, 0);
  assert.equal(p.balancer.pick(new Set([a])), b);
  assert.equal((await acquired(t, p, b)).err, null);
});

test('a target that joins after the first set slow-starts; the first set and a quick comeback keep their state', () => {
  let now = 1_000_000;
  const p = poolFor(null, { targets: [{ address: 'api.test:80', resolve: true }], slow_start: '30s' }, () => now);
  p.setDiscovered([spec(1)]);
  assert.equal(p.targets[0].rampUntil, 0, 'the first set: the instance had these targets already');
  p.setDiscovered([spec(1), spec(2)]);
  assert.equal(p.targets[1].rampUntil, now + 30_000, 'joined later: ramps up');
  assert.equal(p.stats()[1].rampingUp, true);
  now += 40_000;
  p.setDiscovered([spec(2)]);
  p.setDiscovered([spec(1), spec(2)]);
  assert.equal(p.targets[0].rampUntil, now + 30_000, 'left and came back: ramps again');
  p.close();
});

test('hash balancing over discovered targets: one of 10 leaving or joining moves about 1/10 of the keys', () => {
  const p = poolFor(null, { targets: [{ address: 'api.test:80', resolve: true }], balance: { policy: 'hash', key: 'header:x' } });
  const specs = Array.from({ length: 10 }, (_, i) => spec(8000 + i, `10.0.0.${i + 1}`));
  p.setDiscovered(specs);
  const keys = Array.from({ length: 20_000 }, (_, i) => `client-${i}`);
  const owners = (): string[] => keys.map((k) => p.balancer.pickFor(k)?.id ?? 'none');
  const before = owners();
  p.setDiscovered(specs.filter((_, i) => i !== 4));
  const without = owners();
  const moved = without.filter((id, i) => id !== before[i]).length / keys.length;
  const ofLeaver = before.filter((id) => id === specs[4].id).length / keys.length;
  assert.ok(moved >= ofLeaver, 'at least the keys of the target that left');
  assert.ok(moved < 0.15, `one of 10 left: ${(moved * 100).toFixed(1)}% of keys moved`);
  p.setDiscovered(specs);
  const back = owners();
  const movedBack = back.filter((id, i) => id !== without[i]).length / keys.length;
  assert.ok(movedBack < 0.15, `one of 10 joined: ${(movedBack * 100).toFixed(1)}% of keys moved`);
  assert.ok(back.filter((id, i) => id === before[i]).length / keys.length > 0.97, 'the same set maps keys (almost) as before');
  assert.ok(hashKey('client-1') >= 0);
  p.close();
});
