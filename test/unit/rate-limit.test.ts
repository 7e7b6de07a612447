// Connection and rate limits as pure code (src/policy/): the bucket arithmetic on an injected clock, the bounded
// key table (100k distinct keys), IPv6 prefixes as client keys, the once-per-interval refusal log, the open
// connection counts, the config forms (rates written with their unit, bare numbers refused) and `portico check`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { loadConfigText } from '../../src/config/load.js';
import { parseRequestHead, type RequestHead } from '../../src/wire/http-head.js';
import { clientKey } from '../../src/route/policy/client-address.js';
import { ConnectionsPerClient } from '../../src/route/policy/conn-limit.js';
import { parseRate } from '../../src/config/rate.js';
import { RateTable } from '../../src/route/policy/rate-limit.js';
import { RefusalLog, type RefusalReport } from '../../src/route/policy/refusal-log.js';
import { LimitStore, refusalLine } from '../../src/route/policy/store.js';
import { rateLimitedResponse } from '../../src/core/errors.js';
import { CLI, ROOT } from '../helpers/paths.js';

/** A full collection in this process: the flag is set at run time and `gc` taken from a fresh context. */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

test('parseRate: a count per s, m or h becomes ms between requests; bare numbers and zero are refused', () => {
  assert.equal(parseRate('100/s'), 10);
  assert.equal(parseRate('6000/m'), 10);
  assert.equal(parseRate('10/h'), 360_000);
  assert.equal(parseRate('0.5/s'), 2000);
  assert.equal(parseRate('5r/s'), 200);
  for (const bad of [100, '100', '0/s', '-1/s', '10/d', '1/', 'ten/s', '2000000/s']) {
    assert.equal(typeof parseRate(bad), 'string', JSON.stringify(bad));
  }
  assert.match(parseRate(100) as string, /bare number is ambiguous/);
});

test('bucket: burst admitted at once, then one per interval; Retry-After is the time to the next token', () => {
  const t = new RateTable({ intervalMs: 100, burst: 3, maxKeys: 10 }); // 10/s, burst 3
  assert.deepEqual([t.take('a', 0), t.take('a', 0), t.take('a', 0)], [0, 0, 0]);
  assert.equal(t.take('a', 0), 100, 'the 4th at once: one interval to wait');
  assert.equal(t.take('a', 40), 60, 'a refusal takes no token: the wait shrinks with time');
  assert.equal(t.take('a', 100), 0, 'one token back after one interval');
  assert.equal(t.take('a', 100), 100);
  assert.equal(t.take('a', 150), 50);
  // idle long enough: the bucket is full again, never fuller than burst
  assert.deepEqual([t.take('a', 10_000), t.take('a', 10_000), t.take('a', 10_000), t.take('a', 10_000)], [0, 0, 0, 100]);
  // another key has its own bucket
  assert.equal(t.take('b', 10_000), 0);
  // steady sending at the rate is always admitted
  const s = new RateTable({ intervalMs: 100, burst: 1, maxKeys: 10 });
  for (let i = 0; i < 50; i++) assert.equal(s.take('k', i * 100), 0, `request ${i}`);
  assert.equal(s.take('k', 4950), 50);
});

test('bucket table: 100k distinct keys never hold more than max_keys; a busy key keeps its bucket (CLOCK)', () => {
  const t = new RateTable({ intervalMs: 1000, burst: 2, maxKeys: 1000 });
  t.take('hot', 0);
  t.take('hot', 0);
  let now = 0;
  for (let i = 0; i < 100_000; i++) {
    now = i / 1000; // 100 ms in all: no bucket refills
    t.take(`key-${i}`, now);
    if (i % 100 === 0) assert.ok(t.take('hot', now) > 0, `the hot key stays refused at ${i}`);
    assert.ok(t.size <= 1000, `size ${t.size} at ${i}`);
  }
  assert.equal(t.size, 1000);
  collectGarbage();
  const before = process.memoryUsage().heapUsed;
  for (let i = 100_000; i < 200_000; i++) t.take(`key-${i}-${'x'.repeat(40)}`, now);
  assert.equal(t.size, 1000);
  // measured after a full collection (without it the 100k keys' garbage, ~9 MB, decided the result): 1000 buckets
  // stay far under 4 MB, while 100k kept keys would hold more than twice that
  collectGarbage();
  const grown = process.memoryUsage().heapUsed - before;
  assert.ok(grown < 4 * 1024 * 1024, `heap grew ${grown} bytes`);
});

test('bucket table: when full, a key seen once goes before an older key that came back', () => {
  const t = new RateTable({ intervalMs: 1000, burst: 1, maxKeys: 2 });
  t.take('busy', 0);
  assert.equal(t.take('busy', 1), 999); // came back: used
  t.take('once', 2);
  t.take('new', 3); // full: 'busy' is older but used, 'once' was seen once
  assert.equal(t.size, 2);
  assert.equal(t.take('busy', 4), 996, 'busy kept its bucket');
  assert.equal(t.take('once', 5), 0, 'once was dropped: a fresh bucket');
});

test('clientKey: IPv4 as it is, IPv6 cut to the prefix, IPv4-mapped as IPv4', () => {
  assert.equal(clientKey('203.0.113.7', 64), '203.0.113.7');
  assert.equal(clientKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd', 64), '2001:db8:1:2::/64');
  assert.equal(clientKey('2001:db8:1:2::1', 64), clientKey('2001:db8:1:2:ffff::9', 64));
  assert.notEqual(clientKey('2001:db8:1:2::1', 64), clientKey('2001:db8:1:3::1', 64));
  assert.equal(clientKey('2001:db8:1:2ff::1', 56), '2001:db8:1:200::/56');
  assert.equal(clientKey('2001:db8::1', 128), '2001:db8::1');
  assert.equal(clientKey('::ffff:198.51.100.1', 64), '198.51.100.1');
  // at /128 too: a dual-stack listener's IPv4 client has one key whichever text (mapped or not) reached the limit
  assert.equal(clientKey('::ffff:198.51.100.1', 128), '198.51.100.1');
  assert.equal(clientKey('::1', 64), '0:0:0:0::/64');
  assert.equal(clientKey('not an address', 64), 'not an address');
});

test('refusal log: the first refusal of a key at once, then one summary per interval, quiet keys forgotten', () => {
  const lines: RefusalReport[] = [];
  const log = new RefusalLog((r) => lines.push(r), 2);
  log.refused('a', '10.0.0.1', 0);
  for (let i = 0; i < 99; i++) log.refused('a', '10.0.0.1', i);
  assert.deepEqual(lines, [{ kind: 'first', key: 'a', client: '10.0.0.1' }], 'one line for 100 refusals');
  log.flush(10_000);
  assert.deepEqual(lines[1], { kind: 'summary', key: 'a', client: '10.0.0.1', count: 99, sinceMs: 10_000 });
  log.flush(20_000); // nothing refused meanwhile: nothing said, key forgotten
  assert.equal(lines.length, 2);
  assert.equal(log.size, 0);
  log.refused('a', '10.0.0.1', 20_001);
  assert.equal(lines[2].kind, 'first', 'after a quiet interval the next refusal is reported at once');
  // beyond maxKeys: summed into one line
  log.refused('b', '10.0.0.2', 20_002);
  log.refused('c', '10.0.0.3', 20_003);
  log.refused('d', '10.0.0.4', 20_004);
  assert.equal(lines.length, 4);
  log.flush(30_000);
  assert.deepEqual(lines.slice(4), [{ kind: 'overflow', count: 2, sinceMs: 9_997 }]);
});

test('refusal lines: header keys are hashed, never logged as sent; address keys as they are', () => {
  const first = refusalLine({ route: 'api', kind: 'requests' }, { kind: 'first', key: 'k secret-api-key', client: '10.0.0.1' });
  assert.equal(first.level, 'warn');
  assert.equal(JSON.stringify(first).includes('secret-api-key'), false);
  assert.match(String(first.fields.keyHash), /^[0-9a-f]{16}$/);
  const summary = refusalLine({ route: undefined, kind: 'connections' }, { kind: 'summary', key: '10.0.0.1', client: '10.0.0.1', count: 7, sinceMs: 10_000 });
  assert.deepEqual(summary.fields, { route: undefined, limit: 'connections_per_ip', remoteAddr: '10.0.0.1', clientKey: '10.0.0.1', refused: 7, durationMs: 10_000 });
});

for (const native of [true, false]) {
  // the addon's table where it is loaded (its L4 listeners count there too), the Map without it: one behaviour
  test(`connections per client${native ? ' (the addon\'s table where loaded)' : ' (the JS Map)'}: counted up to max, refused beyond, entries gone at zero`, () => {
    const c = new ConnectionsPerClient({ native });
    if (!native) assert.equal(c.nativeTable, undefined);
    assert.equal(c.acquire('a', 2), true);
    assert.equal(c.acquire('a', 2), true);
    assert.equal(c.acquire('a', 2), false);
    assert.equal(c.count('a'), 2);
    assert.equal(c.acquire('b', 2), true);
    assert.equal(c.size, 2);
    c.release('a');
    assert.equal(c.acquire('a', 2), true);
    c.release('a');
    c.release('a');
    c.release('b');
    c.release('zzz'); // never counted: no effect
    assert.equal(c.count('a'), 0);
    assert.equal(c.size, 0);
  });
}

test('connections per client: two tables count apart (a worker has one; each test its own)', () => {
  const a = new ConnectionsPerClient();
  const b = new ConnectionsPerClient();
  assert.equal(a.acquire('k', 1), true);
  assert.equal(b.acquire('k', 1), true);
  assert.equal(a.acquire('k', 1), false);
  a.release('k');
  b.release('k');
  assert.equal(a.size + b.size, 0);
});

function headOf(text: string): RequestHead {
  const r = parseRequestHead(Buffer.from(text), { headerSize: 8192, uriSize: 4096, headers: 100 });
  assert.equal(r.kind, 'done');
  return (r as { head: RequestHead }).head;
}

const BASE = `
listeners: [{ address: "127.0.0.1:0" }]
upstreams: { app: { targets: ["127.0.0.1:9"] } }
routes:
  - name: api
    match: { path: / }
    proxy: app
`;

function configWith(rateLimit: string, extra = ''): string {
  return `${BASE}    rate_limit: ${rateLimit}\n${extra}`;
}

test('route limits: requests by header key (address when absent), handshakes apart, kept across an unchanged reload', () => {
  const loaded = loadConfigText(configWith('{ requests: { rate: 1/m, burst: 2, key: "header:X-Api-Key" }, handshakes: { rate: 1/m, burst: 1 } }'), 'portico.yaml');
  assert.ok(loaded.ok);
  const store = new LimitStore(() => {});
  const limits = store.build(loaded.config)[0]!;
  const a = headOf('GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: A\r\n\r\n');
  const b = headOf('GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: B\r\n\r\n');
  const none = headOf('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal(limits.check(a, '10.0.0.1', '10.0.0.1', false, 0), null);
  assert.equal(limits.check(a, '10.0.0.2', '10.0.0.2', false, 0), null, 'same key from another address');
  const refused = limits.check(a, '10.0.0.3', '10.0.0.3', false, 0);
  assert.equal(refused?.limit.kind, 'requests');
  assert.equal(refused?.retryAfterMs, 60_000);
  assert.equal(limits.check(b, '10.0.0.1', '10.0.0.1', false, 0), null, 'another key, its own bucket');
  assert.equal(limits.check(none, '10.0.0.1', '10.0.0.1', true, 0), null, 'no header: keyed by address');
  const ws = limits.check(none, '10.0.0.9', '10.0.0.9', true, 0);
  assert.equal(ws, null);
  assert.equal(limits.check(none, '10.0.0.9', '10.0.0.9', true, 1)?.limit.kind, 'handshakes');
  // a long value is kept as its hash: memory per key stays small whatever the client sends
  const long = (c: string) => headOf(`GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${c.repeat(4000)}\r\n\r\n`);
  const longKey = limits.requests!.keyOf(long('a'), '10.0.0.1');
  assert.ok(longKey.length < 50, longKey);
  assert.notEqual(longKey, limits.requests!.keyOf(long('b'), '10.0.0.1'));
  // a reload with the same limit keeps the buckets; a changed one starts fresh
  const again = store.build(loaded.config)[0]!;
  assert.equal(again.requests, limits.requests);
  assert.notEqual(again.check(a, '10.0.0.1', '10.0.0.1', false, 1), null);
  const changed = loadConfigText(configWith('{ requests: { rate: 2/m, burst: 2, key: "header:X-Api-Key" } }'), 'portico.yaml');
  assert.ok(changed.ok);
  const fresh = store.build(changed.config)[0]!;
  assert.equal(fresh.handshakes, null);
  assert.equal(fresh.check(a, '10.0.0.1', '10.0.0.1', false, 1), null);
  store.stop();
});

test('route limits: two routes of the same name keep apart buckets, across a reload too', () => {
  const yaml = `${BASE}    rate_limit: { requests: { rate: 1/m, burst: 1 } }\n  - name: api\n    match: { path: /b }\n    proxy: app\n    rate_limit: { requests: { rate: 1/m, burst: 1 } }\n`;
  const loaded = loadConfigText(yaml, 'portico.yaml');
  assert.ok(loaded.ok);
  const store = new LimitStore(() => {});
  store.build(loaded.config);
  const [first, second] = store.build(loaded.config); // a reload: each route takes back its own tables
  const head = headOf('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal(first!.check(head, '10.0.0.1', '10.0.0.1', false, 0), null);
  assert.equal(second!.check(head, '10.0.0.1', '10.0.0.1', false, 0), null, 'the second route has its own bucket');
  assert.notEqual(first!.check(head, '10.0.0.1', '10.0.0.1', false, 0), null);
  store.stop();
});

test('config: rate limit and connection limit keys, defaults, and every bad value with its path', () => {
  const ok = loadConfigText(configWith('{ requests: { rate: 100/s } }'), 'portico.yaml');
  assert.ok(ok.ok);
  assert.deepEqual(ok.config.routes[0].rate_limit, { requests: { rate: 10, burst: 100, key: '$remote_addr', max_keys: 100_000 } });
  assert.equal(ok.config.limits.connections_per_ip, 'off');
  assert.equal(ok.config.limits.ipv6_prefix, 64);
  assert.equal(ok.config.log.limit_interval, 10_000);
  const bad = loadConfigText(
    configWith('{ requests: { rate: 100, burst: 0, key: "header:" }, handshakes: { rate: "5/d" } }', 'limits: { connections_per_ip: 0, ipv6_prefix: 129 }\nlog: { limit_interval: "off" }\n'),
    'portico.yaml',
  );
  assert.ok(!bad.ok);
  const got = Object.fromEntries(bad.errors.map((e) => [e.path, e.message]));
  assert.match(got['routes[0].rate_limit.requests.rate'], /bare number is ambiguous/);
  assert.ok(got['routes[0].rate_limit.requests.burst']);
  assert.match(got['routes[0].rate_limit.requests.key'], /header name is missing/);
  assert.match(got['routes[0].rate_limit.handshakes.rate'], /invalid rate "5\/d"/);
  assert.ok(got['limits.connections_per_ip']);
  assert.ok(got['limits.ipv6_prefix']);
  assert.ok(got['log.limit_interval']);
  const empty = loadConfigText(configWith('{}'), 'portico.yaml');
  assert.ok(!empty.ok);
  assert.match(empty.errors[0].message, /set `requests` and\/or `handshakes`/);
});

test('portico check refuses a bare-number rate with its file, line and YAML path', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-rate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(file, configWith('{ requests: { rate: 100 } }'));
  const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, [CLI, 'check', '-c', file], { cwd: ROOT, timeout: 30_000 }, (err, _out, stderr) => resolve({ code: err === null ? 0 : Number(err.code), stderr }));
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bad\.yaml:8:\d+ routes\[0\]\.rate_limit\.requests\.rate: a bare number is ambiguous/);
});

test('429 response: Retry-After in whole seconds, at least 1, connection closed', () => {
  const text = rateLimitedResponse(0.2).toString('latin1');
  assert.match(text, /^HTTP\/1\.1 429 Too Many Requests\r\n/);
  assert.match(text, /\r\nRetry-After: 1\r\n/);
  assert.match(text, /\r\nConnection: close\r\n/);
  assert.match(rateLimitedResponse(59.01).toString('latin1'), /\r\nRetry-After: 60\r\n/);
  assert.match(rateLimitedResponse(3600).toString('latin1'), /\r\nRetry-After: 3600\r\n/);
});
