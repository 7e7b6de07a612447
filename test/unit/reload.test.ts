// Reload building blocks without processes: which listeners keep their socket, what a config diff says, pool
// hand-over (retire, state carried to a changed pool, discovered targets included), sticky tunnel bookkeeping
// and pins (worker counts, primary aggregate, Maglev honouring pins, homes over discovered targets), the IPC
// guards of the new messages, and the control files that `portico reload` reads. Real loopback sockets where a
// pool needs a peer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { ByteSocket } from '../../src/core/socket.js';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfigText } from '../../src/config/load.js';
import { describeChanges, diffConfigs, equalValues, isEmpty, listenerKeys, planListeners, renderReloadMetrics } from '../../src/config/reload.js';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import { controlPaths, readOutcome, removeControlFiles, requestReload, writeOutcome, writePidFile } from '../../src/primary/state-files.js';
import { MAX_PUBLISH_BATCH, isToPrimary, isToWorker } from '../../src/worker/ipc.js';
import { createBalancer, maglevHome, type Target } from '../../src/upstream/balancer.js';
import { UpstreamPool } from '../../src/upstream/pool.js';
import { startSilentPeer } from '../helpers/tcp-server.js';
import { MAX_STICKY_KEY_LENGTH, OpenKeys, PinTable, StickyAggregate, hashHomes, type PinUpdate } from '../../src/upstream/sticky.js';

function config(input: Partial<ConfigInput> = {}): Config {
  return configSchema.parse({ listeners: [{ address: '127.0.0.1:8080' }], ...input });
}

function targets(...ports: number[]): Target[] {
  return ports.map((port) => ({ id: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, available: true, active: 0 }));
}

// ---- listeners and diffs ----

test('listener keys: host and port; port-0 listeners on one host are told apart by their order', () => {
  const c = config({ listeners: [{ address: '127.0.0.1:0' }, { address: '[::1]:8443' }, { address: '127.0.0.1:0' }, { address: ':8080' }, { address: 'LocalHost:0' }] });
  assert.deepEqual(listenerKeys(c.listeners), ['127.0.0.1:0', '[::1]:8443', '127.0.0.1:0#2', '0.0.0.0:8080', 'localhost:0']);
});

test('listener plan: sockets of addresses that stay are kept, new ones opened, the rest closed', () => {
  const next = config({ listeners: [{ address: '127.0.0.1:8443' }, { address: '127.0.0.1:9000' }] });
  const plan = planListeners(new Set(['127.0.0.1:8443', '127.0.0.1:8080']), next.listeners);
  assert.deepEqual(plan.entries, [
    { index: 0, key: '127.0.0.1:8443', keep: true },
    { index: 1, key: '127.0.0.1:9000', keep: false },
  ]);
  assert.deepEqual(plan.removed, ['127.0.0.1:8080']);
  // a worker with no socket yet (boot) opens everything
  assert.deepEqual(planListeners(new Set(), next.listeners).entries.map((e) => e.keep), [false, false]);
});

test('config diff: listeners, upstreams, routes and settings by name; workers needs a restart', () => {
  const old = config({
    workers: 2,
    listeners: [{ address: '127.0.0.1:8080' }, { address: '127.0.0.1:8081' }],
    upstreams: { a: { targets: ['127.0.0.1:1'] }, b: { targets: ['127.0.0.1:2'] }, c: { targets: ['127.0.0.1:3'] } },
    routes: [{ match: { path: '/a' }, proxy: 'a' }],
  });
  const next = config({
    workers: 4,
    listeners: [{ address: '127.0.0.1:8080', proxy_protocol: { trusted: ['127.0.0.1'] } }, { address: '127.0.0.1:9090' }],
    upstreams: { a: { targets: ['127.0.0.1:1'] }, b: { targets: ['127.0.0.1:2', '127.0.0.1:4'] }, d: { targets: ['127.0.0.1:5'] } },
    routes: [{ match: { path: '/a' }, proxy: 'a' }, { match: { path: '/d' }, proxy: 'd' }],
    log: { level: 'debug' },
  });
  const d = diffConfigs(old, next);
  assert.deepEqual(d.listeners, { added: ['127.0.0.1:9090'], removed: ['127.0.0.1:8081'], changed: ['127.0.0.1:8080'] });
  assert.deepEqual(d.upstreams, { added: ['d'], removed: ['c'], changed: ['b'] });
  assert.deepEqual(d.routes, { before: 1, after: 2, changed: true });
  assert.deepEqual(d.settings, ['log']);
  assert.deepEqual(d.workers, { running: 2, configured: 4 });
  assert.equal(
    describeChanges(d),
    'listeners +127.0.0.1:9090 -127.0.0.1:8081 ~127.0.0.1:8080; upstreams +d -c ~b; routes 1 -> 2; settings: log; workers 2 -> 4 (needs a restart)',
  );
  const same = diffConfigs(old, config({ ...structuredCloneInput(old) }));
  assert.equal(isEmpty(same), true);
  assert.equal(describeChanges(same), 'no changes');
});

/** The input that gives `c` again (listeners and upstreams as written). */
function structuredCloneInput(c: Config): Partial<ConfigInput> {
  return {
    workers: c.workers,
    listeners: c.listeners.map((l) => ({ address: l.address.address })),
    upstreams: Object.fromEntries(Object.entries(c.upstreams).map(([n, u]) => [n, { targets: u.targets.map((t) => t.address) }])),
    routes: c.routes.map((r) => ({ match: { path: r.match.path }, proxy: r.proxy?.upstream })),
  };
}

test('equalValues: structural, key order does not matter, undefined keys are absent keys', () => {
  assert.equal(equalValues({ a: 1, b: [1, { c: 2 }] }, { b: [1, { c: 2 }], a: 1 }), true);
  assert.equal(equalValues({ a: 1, x: undefined }, { a: 1 }), true);
  assert.equal(equalValues({ a: [1, 2] }, { a: [2, 1] }), false);
  assert.equal(equalValues([], {}), false);
  assert.equal(equalValues(null, {}), false);
});

test('reload metrics: generation, results and sticky gauges in Prometheus text', () => {
  const text = renderReloadMetrics({ generation: 3, ok: 2, failed: 1, loadedAt: 1_700_000_000_500, stickyKeys: 4, pins: 1 });
  assert.match(text, /^portico_config_generation 3$/m);
  assert.match(text, /^portico_config_reloads_total\{result="failed"\} 1$/m);
  assert.match(text, /^portico_config_loaded_timestamp_seconds 1700000000$/m);
  assert.match(text, /^portico_sticky_pins 1$/m);
});

test('loadConfigText: the text the primary sends loads as the file would, relative paths from its folder', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-reload-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const text = 'listeners:\n  - address: 127.0.0.1:0\n    tls: { certificates: [{ cert: a.crt, key: a.key, self_signed: true }] }\n';
  const r = loadConfigText(text, path.join(dir, 'portico.yaml'));
  assert.ok(r.ok);
  assert.equal(r.text, text);
  assert.equal(r.config.listeners[0].tls?.certificates[0].cert, path.join(dir, 'a.crt'));
  const bad = loadConfigText('listeners: []\n', path.join(dir, 'portico.yaml'));
  assert.ok(!bad.ok);
  assert.deepEqual(bad.errors.map((e) => [e.path, e.line]), [['listeners', 1]]);
});

// ---- pools ----

function acquire(pool: UpstreamPool, target: Target): Promise<ByteSocket> {
  return new Promise((resolve, reject) => pool.acquire(target, (err, socket) => (err !== null || socket === null ? reject(err ?? new Error('no socket')) : resolve(socket))));
}

test('retire: idle sockets close, released ones are not kept, requests in flight still get sockets; busy until done', async (t) => {
  const port = await startSilentPeer(t);
  const pool = new UpstreamPool('u', config({ upstreams: { u: { targets: [`127.0.0.1:${port}`] } } }).upstreams.u);
  t.after(() => pool.close());
  const target = pool.targets[0];
  const idle = await acquire(pool, target);
  pool.release(target, idle, true);
  assert.equal(pool.stats()[0].idle, 1);
  target.active++; // a request in flight
  assert.equal(pool.busy, true);
  pool.retire();
  assert.equal(pool.stats()[0].idle, 0);
  await once(idle, 'close');
  const socket = await acquire(pool, target); // a retry of the request in flight
  pool.release(target, socket, true);
  assert.equal(pool.stats()[0].idle, 0, 'a retired pool keeps no idle socket');
  target.active--;
  assert.equal(pool.busy, false);
});

test('a changed pool takes over the passive window and counters of targets that stay', () => {
  const now = 1_000_000;
  const upstream = (ports: number[]) =>
    config({ upstreams: { u: { targets: ports.map((p) => `127.0.0.1:${p}`), health: { passive: { max_fails: 1, fail_timeout: '10s' } }, queue: { size: 0 } } } }).upstreams.u;
  const old = new UpstreamPool('u', upstream([1, 2]), {}, { now: () => now });
  old.reportFailure(old.targets[0], 'UPSTREAM_CONNECT_REFUSED');
  assert.equal(old.health()[0].passiveDown, true);
  const next = new UpstreamPool('u', upstream([1, 2, 3]), {}, { now: () => now + 1000, previous: old });
  old.retire();
  try {
    assert.deepEqual(next.health().map((h) => h.passiveDown), [true, false, false]);
    assert.equal(next.targets[0].available, false);
    // the retired pool counts no more failures into the shared window
    old.reportFailure(old.targets[1], 'UPSTREAM_CONNECT_REFUSED');
    assert.equal(next.health()[1].passiveDown, false);
  } finally {
    old.close();
    next.close();
  }
});


test('a changed pool starts with the discovered targets it is given, carrying their state like fixed ones; a set it has already changes nothing', () => {
  let now = 1_000_000;
  const spec = (port: number) => ({ id: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, backup: false });
  const upstream = (maxConnections = 512) =>
    config({ upstreams: { u: { targets: [{ address: 'api.test:80', resolve: true }], health: { passive: { max_fails: 1, fail_timeout: '10s' } }, slow_start: '30s', max_connections: maxConnections } } }).upstreams.u;
  const old = new UpstreamPool('u', upstream(), {}, { now: () => now });
  old.setDiscovered([spec(1), spec(2)]);
  now += 1000;
  old.setDiscovered([spec(1), spec(2), spec(3)]); // 3 joined later: it ramps up
  const rampUntil = old.targets[2].rampUntil;
  assert.ok(rampUntil !== undefined && rampUntil > now);
  old.reportFailure(old.targets[0], 'UPSTREAM_CONNECT_REFUSED');
  const next = new UpstreamPool('u', upstream(7), {}, { now: () => now, previous: old, discovered: [spec(1), spec(2), spec(3)] });
  old.retire();
  try {
    assert.deepEqual(next.targets.map((x) => x.id), ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'], 'no request of the new pool finds it empty');
    assert.deepEqual(next.health().map((h) => h.passiveDown), [true, false, false], 'passive state carried');
    assert.equal(next.targets[2].rampUntil, rampUntil, 'slow start carried on');
    assert.equal(next.targets[1].rampUntil, 0, 'the first set does not slow-start');
    const balancer = next.balancer;
    assert.deepEqual(next.setDiscovered([spec(1), spec(2), spec(3)]), { added: [], removed: [] });
    assert.equal(next.balancer, balancer, 'the same set again keeps the balancer (and its rotation)');
    const weightChanged = next.setDiscovered([spec(1), { ...spec(2), weight: 5 }, spec(3)]);
    assert.deepEqual(weightChanged, { added: [], removed: [] });
    assert.notEqual(next.balancer, balancer, 'a weight change rebuilds it');
    assert.equal(next.targets[1].weight, 5);
  } finally {
    old.close();
    next.close();
  }
});

// ---- sticky tunnels ----

test('OpenKeys: counts per (upstream, key, target), reports net changes once, bounded key length', () => {
  const keys = new OpenKeys();
  assert.equal(keys.opened('u', 'k', 'A'), true);
  assert.equal(keys.opened('u', 'k', 'A'), true);
  assert.equal(keys.opened('u', 'j', 'B'), true);
  keys.closed('u', 'j', 'B');
  assert.deepEqual(keys.takeChanges(), [['u', 'k', 'A', 2]]);
  assert.deepEqual(keys.takeChanges(), []);
  keys.closed('u', 'k', 'A');
  keys.closed('u', 'k', 'A');
  keys.closed('u', 'k', 'A'); // one too many: ignored
  assert.deepEqual(keys.takeChanges(), [['u', 'k', 'A', -2]]);
  assert.equal(keys.size, 0);
  assert.equal(keys.opened('u', 'x'.repeat(MAX_STICKY_KEY_LENGTH + 1), 'A'), false);
  assert.equal(keys.opened('u', 'a\u0000b', 'A'), true, 'any characters in a key');
});

/** A key whose home is `from` among `before` and something else among `after`. */
function movingKey(before: Target[], after: Target[], from: string): string {
  const homeBefore = maglevHome(before);
  const homeAfter = maglevHome(after);
  for (let i = 0; i < 10_000; i++) {
    const key = `key-${i}`;
    if (homeBefore(key) === from && homeAfter(key) !== from) return key;
  }
  throw new Error('no moving key in 10000 tries');
}

test('StickyAggregate: a key is pinned while tunnels hold it off its home, across workers, until the last closes', () => {
  const before = targets(1, 2);
  const after = targets(1, 2, 3, 4);
  const T = before[0].id;
  const key = movingKey(before, after, T);
  const upstreams = (ts: Target[]) => config({ upstreams: { u: { targets: ts.map((x) => x.id), balance: { policy: 'hash', key: 'header:x-key' } }, rr: { targets: ts.map((x) => x.id) } } }).upstreams;
  const agg = new StickyAggregate();
  assert.deepEqual(agg.setHomes(hashHomes(upstreams(before))), []);
  // worker 1 opens a tunnel for the key on its home: nothing to pin
  assert.deepEqual(agg.apply(1, [['u', key, T, 1]]), []);
  assert.deepEqual(agg.apply(1, [['rr', key, T, 1]]), [], 'upstreams that do not hash have no pins');
  // a reload moves the key's home: pinned to T, in one full update
  assert.deepEqual(agg.setHomes(hashHomes(upstreams(after))), [{ upstream: 'u', full: true, set: [[key, T]], unset: [] }]);
  assert.equal(agg.pinCount, 1);
  // worker 2 opens one too (it followed the pin), worker 1 closes its own: still pinned
  assert.deepEqual(agg.apply(2, [['u', key, T, 1]]), []);
  assert.deepEqual(agg.apply(1, [['u', key, T, -1]]), []);
  assert.deepEqual([...agg.tunnelsOf('u', key)], [[T, 1]]);
  // worker 2 exits: its tunnels are gone, the pin goes
  assert.deepEqual(agg.dropWorker(2), [{ upstream: 'u', full: false, set: [], unset: [key] }]);
  assert.equal(agg.pinCount, 0);
  assert.equal(agg.size, 1, 'the rr entry of worker 1 is still counted');
  // a key whose tunnels sit on a target that is not its home (it went down meanwhile) is pinned there
  const home = maglevHome(after)(key) as string;
  const other = after.find((x) => x.id !== home && x.id !== T)!.id;
  assert.deepEqual(agg.apply(3, [['u', key, other, 1]]), [{ upstream: 'u', full: false, set: [[key, other]], unset: [] }]);
  // more tunnels on the home than elsewhere: no pin; a tie also prefers the home
  assert.deepEqual(agg.apply(3, [['u', key, home, 1]]), [{ upstream: 'u', full: false, set: [], unset: [key] }]);
  assert.deepEqual(agg.full(), []);
});

test('StickyAggregate: changes for entries it never saw opening are ignored (no negative counts)', () => {
  const agg = new StickyAggregate();
  agg.setHomes(hashHomes(config({ upstreams: { u: { targets: ['127.0.0.1:1'], balance: { policy: 'hash', key: '$remote_addr' } } } }).upstreams));
  assert.deepEqual(agg.apply(1, [['u', 'k', '127.0.0.1:9', -1]]), []);
  assert.equal(agg.size, 0);
});

test('Maglev honours pins while the pinned target is eligible; PinTable keeps one live map per upstream', () => {
  const before = targets(1, 2);
  const after = targets(1, 2, 3, 4);
  const T = before[0].id;
  const key = movingKey(before, after, T);
  const pins = new PinTable();
  const live = pins.of('u');
  const balancer = createBalancer({ policy: 'hash', key: 'header:x-key' }, after, { pins: live });
  const home = maglevHome(after)(key);
  assert.equal(balancer.pickFor(key)?.id, home);
  const update: PinUpdate = { upstream: 'u', full: true, set: [[key, T]], unset: [] };
  pins.apply(update);
  assert.equal(pins.of('u'), live, 'the same map object: balancers keep it across updates');
  assert.equal(balancer.pickFor(key)?.id, T);
  assert.equal(balancer.pickFor('another-key')?.id, maglevHome(after)('another-key'), 'other keys follow the hash');
  after[0].available = false; // T goes down: the key moves
  assert.equal(balancer.pickFor(key)?.id, home);
  after[0].available = true;
  assert.equal(balancer.pickFor(key, new Set([after[0]]))?.id, home, 'an excluded (already tried) pinned target is skipped');
  pins.apply({ upstream: 'u', full: false, set: [], unset: [key] });
  assert.equal(balancer.pickFor(key)?.id, home);
  pins.apply({ upstream: 'u', full: false, set: [[key, '127.0.0.1:99']], unset: [] });
  assert.equal(balancer.pickFor(key)?.id, home, 'a pin to a target this pool does not have is ignored');
});

test('hashHomes follows discovered targets: the home of every key is where a pool with that set hashes it', () => {
  const cfg = config({ upstreams: { u: { targets: ['127.0.0.1:9', { srv: '_x._tcp.u.test' }], balance: { policy: 'hash', key: 'header:x-key' } } } });
  const found = [3, 1, 9, 2].map((port) => ({ id: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: port === 2 ? 3 : 1, backup: false }));
  const pool = new UpstreamPool('u', cfg.upstreams.u);
  pool.setDiscovered(found);
  try {
    assert.deepEqual(pool.targets.map((x) => x.id), ['127.0.0.1:9', '127.0.0.1:3', '127.0.0.1:1', '127.0.0.1:2'], 'a discovered copy of a fixed target is left out');
    const home = hashHomes(cfg.upstreams, { u: found }).get('u')!;
    for (let i = 0; i < 2000; i++) assert.equal(home(`k${i}`), pool.balancer.pickFor(`k${i}`)?.id, `key k${i}`);
    const fixedOnly = hashHomes(cfg.upstreams).get('u')!;
    assert.equal(fixedOnly('k1'), '127.0.0.1:9', 'without a discovered set only the fixed target is home');
  } finally {
    pool.close();
  }
});

test('a discovered set rebuilds a hash pool\'s balancer with the pins it was given', () => {
  const cfg = config({ upstreams: { u: { targets: [{ srv: '_x._tcp.u.test' }], balance: { policy: 'hash', key: 'header:x-key' } } } }).upstreams.u;
  const pins = new PinTable();
  const pool = new UpstreamPool('u', cfg, {}, { pins: pins.of('u') });
  const spec = (port: number) => ({ id: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, backup: false });
  pool.setDiscovered([spec(1), spec(2)]);
  try {
    const key = movingKey(targets(1, 2), targets(1, 2, 3, 4), '127.0.0.1:1');
    pins.apply({ upstream: 'u', full: true, set: [[key, '127.0.0.1:1']], unset: [] });
    pool.setDiscovered([spec(1), spec(2), spec(3), spec(4)]); // discovery moves the key's home
    assert.equal(pool.balancer.pickFor(key)?.id, '127.0.0.1:1', 'the pin holds on the rebuilt balancer');
    pins.apply({ upstream: 'u', full: true, set: [], unset: [] });
    assert.notEqual(pool.balancer.pickFor(key)?.id, '127.0.0.1:1', 'unpinned, it follows the new hash');
  } finally {
    pool.close();
  }
});

// ---- IPC ----

test('ipc: apply, listen-handle, pins, applied and sticky messages are checked', () => {
  const discovered = { api: [{ id: '10.0.0.1:80', host: '10.0.0.1', port: 80, weight: 1, backup: false }] };
  const apply = { type: 'apply', seq: 1, generation: 2, file: '/x.yaml', config: { listeners: [], routes: [], upstreams: {} }, ticketKeys: 'k', stickySecret: 's', listeners: [{ index: 0, key: '127.0.0.1:80', via: 'keep' }, { index: 1, key: 'k', via: 'reuse-port', host: '::', port: 0 }], discovered };
  assert.equal(isToWorker(apply), true);
  assert.equal(isToWorker({ ...apply, discovered: undefined }), false, 'an apply brings the discovered sets of its config');
  assert.equal(isToWorker({ ...apply, discovered: { api: [{ id: '10.0.0.1:80', host: '10.0.0.1', port: 0, weight: 1, backup: false }] } }), false);
  assert.equal(isToWorker({ ...apply, listeners: [{ index: 0, key: 'k', via: 'reuse-port', host: '::', port: 70000 }] }), false);
  assert.equal(isToWorker({ ...apply, listeners: [{ index: 0, key: 'k', via: 'teleport' }] }), false);
  assert.equal(isToWorker({ ...apply, config: undefined }), false, 'an apply carries the validated config');
  assert.equal(isToWorker({ ...apply, config: { listeners: {}, routes: [], upstreams: {} } }), false);
  assert.equal(isToWorker({ type: 'listen-handle', seq: 1, index: 0 }), true);
  assert.equal(isToWorker({ type: 'pins', updates: [{ upstream: 'u', full: true, set: [['k', 't']], unset: ['j'] }] }), true);
  assert.equal(isToWorker({ type: 'pins', updates: [{ upstream: 'u', full: true, set: [['k']], unset: [] }] }), false);
  assert.equal(isToWorker({ type: 'remote-load', load: {} }), false, 'remote load names its generation');
  const entry = { topic: 'news', data: 'YQ==', binary: false };
  assert.equal(isToWorker({ type: 'publish', messages: [entry, { ...entry, binary: true }] }), true);
  assert.equal(isToWorker({ type: 'publish', ...entry }), false, 'publishes travel as a batch');
  assert.equal(isToWorker({ type: 'publish', messages: [{ ...entry, data: 1 }] }), false);
  assert.equal(isToWorker({ type: 'publish', messages: Array.from({ length: MAX_PUBLISH_BATCH + 1 }, () => entry) }), false, 'a batch is bounded');
  assert.equal(isToPrimary({ type: 'applied', seq: 1, generation: 2, ok: true, ports: [80] }), true);
  assert.equal(isToPrimary({ type: 'applied', seq: 1, generation: 2, ok: false, error: 'x', errors: [{ path: 'a', line: 1, message: 'm' }] }), true);
  assert.equal(isToPrimary({ type: 'applied', seq: 1, generation: 2, ok: false, error: 'x', errors: [{ path: 'a', line: -1, message: 'm' }] }), false);
  assert.equal(isToPrimary({ type: 'sticky', changes: [['u', 'k', 't', -1]] }), true);
  assert.equal(isToPrimary({ type: 'sticky', changes: [['u', 'k', 't', 0.5]] }), false);
  assert.equal(isToPrimary({ type: 'load', generation: 1, load: { u: [1] } }), true);
});

// ---- control files ----

test('control files: next to the config in .state/, outcome checked on read, removed only by their owner', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-control-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const paths = controlPaths(path.join(dir, 'edge.yml'));
  assert.deepEqual(paths, { dir: path.join(dir, '.state'), pid: path.join(dir, '.state', 'edge.pid'), outcome: path.join(dir, '.state', 'edge.reload.json'), upgrade: path.join(dir, '.state', 'edge.upgrade.json') });
  assert.equal(readOutcome(paths), undefined);
  await writePidFile(paths, 4242);
  await writeOutcome(paths, { ok: false, attempt: 1, startedAt: 1, finishedAt: 2, generation: 1, error: 'bad', errors: [{ path: 'routes', line: 3, message: 'm' }], pid: 4242 });
  assert.equal(readOutcome(paths)?.ok, false);
  writeFileSync(paths.outcome, '{"ok":false,"pid":1,"attempt":1,"startedAt":1,"generation":1,"error":"x","errors":[{"path":3}]}');
  assert.equal(readOutcome(paths), undefined, 'a malformed outcome is not believed');
  await removeControlFiles(paths, 1); // not the owner
  assert.equal(existsSync(paths.pid), true);
  await removeControlFiles(paths, 4242);
  assert.equal(existsSync(paths.pid), false);
});

test('requestReload: no pid file, or a pid file naming no running Portico, is said so without signalling', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-control-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'portico.yaml');
  const none = await requestReload(file, 1000);
  assert.equal(none.kind, 'not-running');
  assert.match(none.kind === 'not-running' ? none.reason : '', /no pid file/);
  // a live process that is not Portico (a pid reused after a crash): never signalled
  const other = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => other.kill('SIGKILL'));
  await once(other, 'spawn');
  await writePidFile(controlPaths(file), other.pid ?? 0);
  const stale = await requestReload(file, 1000);
  assert.equal(other.exitCode, null, 'not signalled');
  assert.equal(stale.kind, 'not-running');
  assert.match(stale.kind === 'not-running' ? stale.reason : '', /not a running Portico/);
});
