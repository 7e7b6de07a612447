// Balancers: one shared suite runs for every policy (STYLE.md 10), then what is specific to each policy, the
// hash keys and sticky cookies of hash-key.ts, and the `balance` config forms. Randomness is seeded, so the
// statistical checks give the same answer on every run; bounds are wide enough for any fair seed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { formatErrors, loadConfig, type ConfigError } from '../../src/config/load.js';
import { parseRequestHead, type RequestHead } from '../../src/wire/http-head.js';
import { buildMaglevTable, createBalancer, hashString, readsLoad, type Balancer, type BalanceSpec, type Target } from '../../src/upstream/balancer.js';
import { parseKeySpec } from '../../src/config/key-spec.js';
import {
  compileKey,
  cookieOf,
  findTargetByCookie,
  keyExtractorFor,
  queryParamOf,
  setCookieHeader,
  stickyCookieFor,
  stickyCookieValue,
} from '../../src/upstream/hash-key.js';

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeTargets(...weights: number[]): Target[] {
  return weights.map((weight, i) => ({ id: `127.0.0.1:${9000 + i}`, host: '127.0.0.1', port: 9000 + i, weight, available: true, active: 0 }));
}

const nameOf = (targets: readonly Target[], t: Target | undefined): string => (t === undefined ? '-' : `t${targets.indexOf(t)}`);

function counts(ids: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const id of ids) out[id] = (out[id] ?? 0) + 1;
  return out;
}

interface PolicyCase {
  readonly name: string;
  readonly spec: BalanceSpec;
  /** The key request `i` carries: distinct client addresses for hash, no cookie (new visitors) for cookie. */
  readonly key: (i: number) => string | undefined;
  /** exact: smooth round robin underneath, weights hold over every cycle; approx: on average only. */
  readonly weights: 'exact' | 'approx';
}

const CASES: readonly PolicyCase[] = [
  { name: 'round_robin', spec: 'round_robin', key: () => undefined, weights: 'exact' },
  { name: 'least_conn', spec: 'least_conn', key: () => undefined, weights: 'exact' },
  { name: 'random_two', spec: 'random_two', key: () => undefined, weights: 'approx' },
  { name: 'hash', spec: { policy: 'hash', key: '$remote_addr' }, key: (i) => `203.0.${(i >> 8) & 255}.${i & 255}`, weights: 'approx' },
  { name: 'cookie', spec: { policy: 'cookie', name: 'portico_sticky', fallback: 'round_robin' }, key: () => undefined, weights: 'exact' },
];

/** A balancer for `c` over `targets` and a `next(exclude?)` that makes request after request through pickFor. */
function driver(c: PolicyCase, targets: Target[], seed = 1): { balancer: Balancer; next: (exclude?: ReadonlySet<Target>) => Target | undefined } {
  const balancer = createBalancer(c.spec, targets, { random: seeded(seed) });
  let i = 0;
  return { balancer, next: (exclude) => balancer.pickFor(c.key(i++), exclude) };
}

function run(c: PolicyCase, targets: Target[], n: number, exclude?: ReadonlySet<Target>): string[] {
  const { next } = driver(c, targets);
  return Array.from({ length: n }, () => nameOf(targets, next(exclude)));
}

for (const c of CASES) {
  test(`${c.name}: requests held open spread over the targets in proportion to their weights`, () => {
    const targets = makeTargets(5, 3, 2);
    const { next } = driver(c, targets);
    const n = c.weights === 'exact' ? 1000 : 20_000;
    for (let i = 0; i < n; i++) {
      const t = next();
      assert.ok(t);
      t.active++;
    }
    const shares = targets.map((t) => t.active / n);
    if (c.weights === 'exact') assert.deepEqual(shares, [0.5, 0.3, 0.2]);
    else for (const [i, want] of [0.5, 0.3, 0.2].entries()) assert.ok(Math.abs(shares[i] - want) < 0.02, `shares ${shares.join(', ')}`);
  });

  test(`${c.name}: idle targets with equal weights all get their share (ties do not all go to the first)`, () => {
    const ids = run(c, makeTargets(1, 1, 1, 1), 4000);
    const got = counts(ids);
    assert.deepEqual(Object.keys(got).sort(), ['t0', 't1', 't2', 't3']);
    for (const id of Object.keys(got)) assert.ok(got[id] > 800, `${JSON.stringify(got)}`);
    if (c.weights === 'exact') assert.deepEqual(got, { t0: 1000, t1: 1000, t2: 1000, t3: 1000 });
  });

  test(`${c.name}: unavailable targets are skipped, and picked again once available`, () => {
    const targets = makeTargets(1, 1, 1);
    const { next } = driver(c, targets);
    targets[1].available = false;
    const during = counts(Array.from({ length: 600 }, () => nameOf(targets, next())));
    assert.equal(during.t1, undefined);
    assert.ok(during.t0 > 200 && during.t2 > 200, JSON.stringify(during));
    targets[1].available = true;
    const after = counts(Array.from({ length: 600 }, () => nameOf(targets, next())));
    assert.ok(after.t1 > 120, `t1 gets its share back: ${JSON.stringify(after)}`);
  });

  test(`${c.name}: weight 0 targets are never picked, even when marked available`, () => {
    const got = counts(run(c, makeTargets(0, 2, 0, 1), 3000));
    assert.deepEqual(Object.keys(got).sort(), ['t1', 't3']);
    if (c.weights === 'exact') assert.deepEqual(got, { t1: 2000, t3: 1000 });
    assert.deepEqual(run(c, makeTargets(0, 0), 3), ['-', '-', '-']);
  });

  test(`${c.name}: excluded (already tried) targets are skipped`, () => {
    const targets = makeTargets(1, 3, 1);
    const got = counts(run(c, targets, 1000, new Set([targets[1]])));
    assert.deepEqual(Object.keys(got).sort(), ['t0', 't2']);
    if (c.weights === 'exact') assert.deepEqual(got, { t0: 500, t2: 500 });
    assert.deepEqual(run(c, targets, 5, new Set([targets[0], targets[2]])), ['t1', 't1', 't1', 't1', 't1']);
    assert.deepEqual(run(c, targets, 2, new Set(targets)), ['-', '-']);
  });

  test(`${c.name}: undefined when nothing is available or there are no targets, with or without a key`, () => {
    const targets = makeTargets(1, 2);
    for (const t of targets) t.available = false;
    const b = createBalancer(c.spec, targets);
    assert.equal(b.pick(), undefined);
    assert.equal(b.pickFor('some-key'), undefined);
    assert.equal(b.pickFor(undefined), undefined);
    const empty = createBalancer(c.spec, []);
    assert.equal(empty.pick(), undefined);
    assert.equal(empty.pickFor('some-key'), undefined);
  });

  test(`${c.name}: one available target is picked every time`, () => {
    const targets = makeTargets(1, 7, 1);
    targets[0].available = false;
    targets[1].available = false;
    assert.deepEqual(run(c, targets, 4), ['t2', 't2', 't2', 't2']);
  });
}

// ---- round_robin / least_conn ----

test('round_robin: smooth order for weights 5,1,1 is a a b a c a a (nginx)', () => {
  const targets = makeTargets(5, 1, 1);
  const b = createBalancer('round_robin', targets);
  const ids = Array.from({ length: 14 }, () => ({ t0: 'a', t1: 'b', t2: 'c' })[nameOf(targets, b.pick())]);
  assert.deepEqual(ids.join(' '), 'a a b a c a a a a b a c a a');
});

test('round_robin and least_conn: picks follow the weights exactly within every cycle', () => {
  for (const spec of ['round_robin', 'least_conn'] as const) {
    const targets = makeTargets(5, 3, 2);
    const b = createBalancer(spec, targets);
    const ids = Array.from({ length: 1000 }, () => nameOf(targets, b.pick()));
    for (let i = 0; i < ids.length; i += 10) assert.deepEqual(counts(ids.slice(i, i + 10)), { t0: 5, t1: 3, t2: 2 }, spec);
  }
});

test('key-less policies ignore the key given to pickFor', () => {
  for (const spec of ['round_robin', 'least_conn'] as const) {
    const targets = makeTargets(1, 1, 1);
    const b = createBalancer(spec, targets);
    assert.deepEqual(['k', 'k', 'k'].map((k) => nameOf(targets, b.pickFor(k))), ['t0', 't1', 't2']);
  }
});

test('least_conn: picks the lowest active/weight, compared without floats', () => {
  const targets = makeTargets(3, 1, 1);
  targets[0].active = 5; // 5/3 ≈ 1.67
  targets[1].active = 1; // 1/1
  targets[2].active = 2; // 2/1
  const b = createBalancer('least_conn', targets);
  assert.equal(nameOf(targets, b.pick()), 't1');
  targets[1].active = 2; // now t0 (1.67) is lowest
  assert.equal(nameOf(targets, b.pick()), 't0');
  targets[0].active = 0;
  targets[2].active = 0;
  targets[1].active = 0; // all idle: a tie, shared by weight
  assert.deepEqual(counts(Array.from({ length: 5 }, () => nameOf(targets, b.pick()))), { t0: 3, t1: 1, t2: 1 });
});

test('least_conn: ties are shared by weight among the tied targets only', () => {
  const targets = makeTargets(3, 1, 1);
  targets[0].active = 3; // 3/3 = 1
  targets[1].active = 1; // 1/1 = 1 (tied with t0)
  targets[2].active = 4; // 4/1: never picked while the others tie lower
  const b = createBalancer('least_conn', targets);
  assert.deepEqual(counts(Array.from({ length: 8 }, () => nameOf(targets, b.pick()))), { t0: 6, t1: 2 });
});

test('least_conn: under held-open load, the next requests go where requests finished', () => {
  const targets = makeTargets(3, 1);
  const b = createBalancer('least_conn', targets);
  for (let i = 0; i < 40; i++) {
    const t = b.pick();
    assert.ok(t);
    t.active++;
  }
  assert.deepEqual(targets.map((t) => t.active), [30, 10]);
  targets[0].active -= 6; // six finish on t0: the next six go there
  for (let i = 0; i < 6; i++) {
    const t = b.pick();
    assert.equal(nameOf(targets, t), 't0', `pick ${i}`);
    if (t) t.active++;
  }
  assert.deepEqual(targets.map((t) => t.active), [30, 10]);
});

test('least_conn and random_two balance on active + remote (the other workers\' load); hash and round robin ignore it', () => {
  const targets = makeTargets(1, 1);
  targets[0].active = 1;
  targets[1].remote = 3; // idle here, but busier in the other workers
  assert.equal(nameOf(targets, createBalancer('least_conn', targets).pick()), 't0');
  assert.equal(nameOf(targets, createBalancer('random_two', targets, { random: seeded(3) }).pick()), 't0');
  assert.equal(nameOf(targets, createBalancer({ policy: 'cookie', name: 's', fallback: 'least_conn' }, targets).pick()), 't0');
  // remote ties are shared as active ties are
  targets[0].remote = 2;
  const b = createBalancer('least_conn', targets);
  assert.deepEqual(counts(Array.from({ length: 4 }, () => nameOf(targets, b.pick()))), { t0: 2, t1: 2 });
  // round robin reads no load
  const rr = createBalancer('round_robin', targets);
  assert.deepEqual(counts(Array.from({ length: 4 }, () => nameOf(targets, rr.pick()))), { t0: 2, t1: 2 });
  assert.deepEqual([readsLoad('least_conn'), readsLoad('random_two'), readsLoad('round_robin'), readsLoad({ policy: 'hash', key: '$remote_addr' })], [true, true, false, false]);
  assert.deepEqual([readsLoad({ policy: 'cookie', name: 's', fallback: 'least_conn' }), readsLoad({ policy: 'cookie', name: 's', fallback: 'round_robin' })], [true, false]);
});

// ---- random_two ----

/** A random source that returns `values` in turn (then the last one forever). */
function scripted(...values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)];
}

test('random_two: of the two targets drawn, the one with fewer active per weight wins', () => {
  const targets = makeTargets(1, 1, 1);
  targets[0].active = 0;
  targets[1].active = 4;
  targets[2].active = 2;
  // draws t1 then t2: t2 is lighter
  assert.equal(nameOf(targets, createBalancer('random_two', targets, { random: scripted(0.4, 0.9) }).pick()), 't2');
  // draws t2 then t0: t0 is lighter
  assert.equal(nameOf(targets, createBalancer('random_two', targets, { random: scripted(0.9, 0.1) }).pick()), 't0');
  // with two targets both are always drawn: the lighter one is picked every time
  const two = makeTargets(1, 1);
  two[0].active = 3;
  const b = createBalancer('random_two', two, { random: seeded(7) });
  assert.deepEqual(new Set(Array.from({ length: 50 }, () => nameOf(two, b.pick()))), new Set(['t1']));
});

test('random_two: load is compared per weight, and idle targets share requests by weight', () => {
  const targets = makeTargets(4, 1);
  targets[0].active = 6; // 6/4 = 1.5
  targets[1].active = 2; // 2/1 = 2
  const b = createBalancer('random_two', targets, { random: seeded(5) });
  assert.deepEqual(new Set(Array.from({ length: 50 }, () => nameOf(targets, b.pick()))), new Set(['t0']));
  targets[0].active = 0;
  targets[1].active = 0; // short requests: nothing is ever open when the next one comes
  const got = counts(Array.from({ length: 10_000 }, () => nameOf(targets, b.pick())));
  assert.ok(Math.abs(got.t0 / 10_000 - 0.8) < 0.02, JSON.stringify(got));
});

test('random_two: never draws the same target twice, and finds the only eligible ones when draws keep missing', () => {
  const targets = makeTargets(1, 1, 1, 1, 1, 1, 1, 1);
  for (const t of targets) t.available = false;
  targets[6].available = true;
  targets[7].available = true;
  targets[7].active = 1;
  // every draw lands on t0 (unavailable): the exact draw over the eligible ones takes over, for both choices
  assert.equal(nameOf(targets, createBalancer('random_two', targets, { random: scripted(0) }).pick()), 't6');
  targets[6].available = false;
  assert.equal(nameOf(targets, createBalancer('random_two', targets, { random: scripted(0.99) }).pick()), 't7');
});

test('random_two: under held-open load the busiest target stays close to the average (two choices)', () => {
  const targets = makeTargets(...Array.from({ length: 20 }, () => 1));
  const b = createBalancer('random_two', targets, { random: seeded(3) });
  for (let i = 0; i < 2000; i++) (b.pick() as Target).active++;
  const max = Math.max(...targets.map((t) => t.active));
  const min = Math.min(...targets.map((t) => t.active));
  assert.ok(max - min <= 4, `active spread ${min}..${max}`); // one random choice spreads by dozens here
});

// ---- hash (Maglev) ----

const HASH: BalanceSpec = { policy: 'hash', key: '$remote_addr' };

function randomKeys(n: number, seed: number): string[] {
  const r = seeded(seed);
  return Array.from({ length: n }, () => `${Math.floor(r() * 2 ** 32).toString(36)}-${Math.floor(r() * 2 ** 32).toString(36)}`);
}

function addressTargets(n: number): Target[] {
  return Array.from({ length: n }, (_, i) => ({ id: `10.1.${i >> 8}.${i & 255}:8080`, host: `10.1.${i >> 8}.${i & 255}`, port: 8080, weight: 1, available: true, active: 0 }));
}

/** Share of `keys` whose target id differs between two balancers. */
function movedShare(keys: readonly string[], a: Balancer, b: Balancer): number {
  let moved = 0;
  for (const k of keys) if (a.pickFor(k)?.id !== b.pickFor(k)?.id) moved++;
  return moved / keys.length;
}

test('hash: the same key always goes to the same target, in every balancer built from the same addresses', () => {
  const targets = makeTargets(1, 1, 1, 1, 1);
  const a = createBalancer(HASH, targets);
  const b = createBalancer(HASH, [...targets].reverse()); // config order does not matter, addresses do
  for (const key of randomKeys(2000, 11)) {
    const t = a.pickFor(key);
    assert.equal(a.pickFor(key), t);
    assert.equal(b.pickFor(key), t);
  }
});

test('hash: the lookup table has a prime size of at least 100 slots per target, split by weight', () => {
  const isPrime = (n: number): boolean => {
    for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
    return n > 1;
  };
  for (const n of [1, 3, 300, 1000]) {
    const table = buildMaglevTable(addressTargets(n));
    assert.ok(table.length >= Math.max(65_537, 100 * n) && isPrime(table.length), `${n} targets: ${table.length}`);
  }
  const table = buildMaglevTable(makeTargets(5, 0, 3, 2));
  const slots = [0, 0, 0, 0];
  for (const i of table) slots[i]++;
  assert.equal(slots[1], 0, 'weight 0 owns no slot');
  assert.deepEqual(slots.map((s) => Math.round((s / table.length) * 100)), [50, 0, 30, 20]);
});

for (const n of [3, 10, 30]) {
  test(`hash: when one of ${n} targets leaves or joins the config, about 1/${n} of 100k keys move`, () => {
    const keys = randomKeys(100_000, n);
    const all = addressTargets(n + 1);
    const before = createBalancer(HASH, all.slice(0, n));
    const left = createBalancer(HASH, all.slice(0, n).filter((_, i) => i !== 1));
    const joined = createBalancer(HASH, all);
    const leave = movedShare(keys, before, left);
    const join = movedShare(keys, before, joined);
    // Maglev is near-minimal, not minimal: measured 1.00-1.17 x the ideal share (see the report).
    assert.ok(leave >= (1 / n) * 0.9 && leave <= (1 / n) * 1.25 + 0.005, `leave: ${leave} of keys moved, ideal ${1 / n}`);
    assert.ok(join >= (1 / (n + 1)) * 0.9 && join <= (1 / (n + 1)) * 1.25 + 0.005, `join: ${join} of keys moved, ideal ${1 / (n + 1)}`);
  });
}

test('hash: when a target goes down only its own keys move, spread over the others, and they come back', () => {
  const targets = addressTargets(10);
  const b = createBalancer(HASH, targets);
  const keys = randomKeys(50_000, 5);
  const before = keys.map((k) => b.pickFor(k) as Target);
  targets[4].available = false;
  const moved: Record<string, number> = {};
  keys.forEach((k, i) => {
    const now = b.pickFor(k) as Target;
    if (before[i] === targets[4]) {
      assert.notEqual(now, targets[4]);
      moved[now.id] = (moved[now.id] ?? 0) + 1;
    } else {
      assert.equal(now, before[i], 'a key of a healthy target never moves');
    }
  });
  const spread = Object.values(moved);
  assert.equal(spread.length, 9, 'the orphaned keys spread over all nine others');
  assert.ok(Math.max(...spread) < 3 * Math.min(...spread), JSON.stringify(moved));
  targets[4].available = true;
  keys.forEach((k, i) => assert.equal(b.pickFor(k), before[i]));
});

test('hash: an excluded target sends the key to the same next target every time', () => {
  const targets = addressTargets(5);
  const b = createBalancer(HASH, targets);
  for (const key of randomKeys(200, 9)) {
    const first = b.pickFor(key) as Target;
    const tried = new Set([first]);
    const second = b.pickFor(key, tried) as Target;
    assert.notEqual(second, first);
    assert.equal(b.pickFor(key, tried), second);
    tried.add(second);
    const third = b.pickFor(key, tried) as Target;
    assert.ok(third !== first && third !== second);
  }
});

test('hash: a request without a key is balanced by smooth weighted round robin', () => {
  const targets = makeTargets(2, 1);
  const b = createBalancer(HASH, targets);
  assert.deepEqual(Array.from({ length: 6 }, () => nameOf(targets, b.pickFor(undefined))), ['t0', 't1', 't0', 't0', 't1', 't0']);
  assert.deepEqual(Array.from({ length: 3 }, () => nameOf(targets, b.pick())), ['t0', 't1', 't0']);
});

test('hashString spreads similar keys (addresses differing in one digit) over the range', () => {
  const buckets = new Array<number>(16).fill(0);
  for (let i = 0; i < 16_000; i++) buckets[hashString(`192.168.${i >> 8}.${i & 255}`) >>> 28]++;
  for (const b of buckets) assert.ok(b > 800 && b < 1200, buckets.join(' '));
});

// ---- cookie stickiness ----

const COOKIE: BalanceSpec = { policy: 'cookie', name: 'portico_sticky', fallback: 'round_robin' };

test('cookie: a request carrying a target cookie goes to that target while it is eligible', () => {
  const targets = makeTargets(1, 1, 1);
  const b = createBalancer(COOKIE, targets);
  const value = stickyCookieValue(targets[2]);
  assert.deepEqual(Array.from({ length: 5 }, () => nameOf(targets, b.pickFor(value))), ['t2', 't2', 't2', 't2', 't2']);
  targets[2].available = false; // down: the fallback picks another, and the caller re-sets the cookie
  const moved = b.pickFor(value) as Target;
  assert.notEqual(moved, targets[2]);
  assert.match(stickyCookieFor(COOKIE, moved, value, true) ?? '', /^portico_sticky=[A-Za-z0-9_-]{12}; Path=\/; HttpOnly; SameSite=Lax; Secure$/);
  targets[2].available = true;
  assert.notEqual(b.pickFor(value, new Set([targets[2]])), targets[2], 'an already tried target is not picked again');
  assert.equal(b.pickFor('not-a-target'), targets[0], 'unknown values fall back');
});

test('cookie: the value is opaque, stable, distinct per target and maps back to its target', () => {
  const targets = addressTargets(300);
  const values = targets.map((t) => stickyCookieValue(t));
  assert.equal(new Set(values).size, 300);
  for (const v of values) {
    assert.match(v, /^[A-Za-z0-9_-]{12}$/);
    assert.ok(!v.includes('10.1'));
  }
  const again = addressTargets(300); // new Target objects, same addresses (another worker, a reload)
  assert.deepEqual(again.map((t) => stickyCookieValue(t)), values);
  assert.equal(findTargetByCookie(targets, values[123]), targets[123]);
  assert.equal(findTargetByCookie(targets, 'nope'), undefined);
});

test('cookie: round trip through Set-Cookie and a Cookie header from a browser', () => {
  const targets = makeTargets(1, 1, 1);
  const spec: BalanceSpec = { policy: 'cookie', name: 'sid_lb', fallback: 'least_conn' };
  const b = createBalancer(spec, targets);
  const extract = keyExtractorFor(spec);
  assert.ok(extract);
  const first = b.pickFor(extract(head('GET / HTTP/1.1\r\nHost: a\r\n'), '192.0.2.1')) as Target;
  const set = stickyCookieFor(spec, first, undefined, false);
  assert.ok(set !== undefined && !set.includes('Secure'));
  const pair = set.split(';')[0]; // what a browser sends back
  const h = head(`GET / HTTP/1.1\r\nHost: a\r\nCookie: theme=dark; ${pair}; other="x"\r\n`);
  const key = extract(h, '192.0.2.1');
  for (let i = 0; i < 5; i++) assert.equal(b.pickFor(key), first);
  assert.equal(stickyCookieFor(spec, first, key, false), undefined, 'no Set-Cookie when the cookie is already right');
  assert.equal(stickyCookieFor('round_robin', first, key, false), undefined);
  assert.equal(setCookieHeader('a', 'b', true), 'a=b; Path=/; HttpOnly; SameSite=Lax; Secure');
});

// ---- key extraction ----

function head(text: string): RequestHead {
  const r = parseRequestHead(Buffer.from(`${text}\r\n`, 'latin1'), { headerSize: 65536, uriSize: 8192, headers: 100 });
  assert.equal(r.kind, 'done', text);
  return (r as { head: RequestHead }).head;
}

test('compileKey extracts the key from the remote address, a header, a cookie or a query parameter', () => {
  const h = head(
    [
      'GET /socket.io/?EIO=4&transport=polling&sid=abc%2D1&empty=&flag&a+b=c+d&caf%C3%A9=%E2%9C%93&bad=%zz%4 HTTP/1.1',
      'Host: example.com',
      'X-User: alice',
      'x-user: bob',
      'X-Empty:',
      'Cookie: a=1; session = "s-42" ;lang=en',
      'cookie: later=2; a=shadowed',
      '',
    ].join('\r\n'),
  );
  const table: [string, string | undefined][] = [
    ['$remote_addr', '198.51.100.7'],
    ['header:X-User', 'alice'],
    ['header:x-USER', 'alice'],
    ['header:X-Missing', undefined],
    ['header:X-Empty', undefined],
    ['cookie:session', 's-42'],
    ['cookie:a', '1'],
    ['cookie:later', '2'],
    ['cookie:lang', 'en'],
    ['cookie:Lang', undefined],
    ['cookie:missing', undefined],
    ['query:sid', 'abc-1'],
    ['query:EIO', '4'],
    ['query:empty', undefined],
    ['query:flag', undefined],
    ['query:a b', 'c d'],
    ['query:café', '✓'],
    ['query:bad', '%zz%4'],
    ['query:missing', undefined],
  ];
  for (const [spec, want] of table) assert.equal(compileKey(spec)(h, '198.51.100.7'), want, spec);
  assert.equal(compileKey('$remote_addr')(h, ''), undefined);
  assert.equal(compileKey('query:sid')(head('GET /x HTTP/1.1\r\nHost: a\r\n'), ''), undefined);
});

test('cookie and query parsing tolerate junk and stay bounded', () => {
  const hs = (v: string): string[] => ['Cookie', v];
  assert.equal(cookieOf(hs(';;; =x; noequals; a=; b=2'), 'b'), '2');
  assert.equal(cookieOf(hs('a=""'), 'a'), undefined);
  assert.equal(cookieOf(hs('a="x'), 'a'), '"x');
  assert.equal(cookieOf(hs(`${'x=1;'.repeat(300)} a=1`), 'a'), undefined, 'gives up after 256 pairs');
  assert.equal(cookieOf(hs(`a=${'v'.repeat(5000)}`), 'a'), undefined, 'a key longer than 4096 is no key');
  assert.equal(queryParamOf('', 'a'), undefined);
  assert.equal(queryParamOf('?', 'a'), undefined);
  assert.equal(queryParamOf('?&&a=1&&', 'a'), '1');
  assert.equal(queryParamOf('?a=1&a=2', 'a'), '1');
  assert.equal(queryParamOf('?a=x=y', 'a'), 'x=y');
  assert.equal(queryParamOf(`?${'x=1&'.repeat(300)}a=1`, 'a'), undefined, 'gives up after 256 pairs');
});

test('parseKeySpec accepts the four key forms and explains the rest', () => {
  for (const ok of ['$remote_addr', 'header:X-Session', 'cookie:JSESSIONID', 'query:sid', 'query:a b']) assert.equal(typeof parseKeySpec(ok), 'object', ok);
  for (const [bad, why] of [
    ['remote_addr', /use "\$remote_addr"/],
    ['header:', /name is missing/],
    ['header:X Y', /RFC 9110 token/],
    ['cookie:a=b', /RFC 9110 token/],
    ['path:/x', /use "\$remote_addr"/],
    ['query:a\nb', /control characters/],
  ] as const) {
    const r = parseKeySpec(bad);
    assert.ok(typeof r === 'string' && why.test(r), `${bad}: ${String(r)}`);
  }
  assert.throws(() => compileKey('nope'), TypeError);
});

// ---- config ----

function loadYaml(t: TestContext, balance: string): ReturnType<typeof loadConfig> {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-balance-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'portico.yaml');
  writeFileSync(file, `listeners:\n  - address: 127.0.0.1:8080\nupstreams:\n  app:\n    targets: [127.0.0.1:9001, 127.0.0.1:9002]\n${balance}routes:\n  - proxy: app\n`);
  return loadConfig(file);
}

test('config: balance accepts the policy names, hash with a key and cookie stickiness with defaults', (t) => {
  const forms: [string, unknown][] = [
    ['', 'round_robin'],
    ['    balance: random_two\n', 'random_two'],
    ['    balance: least_conn\n', 'least_conn'],
    ['    balance: { policy: hash, key: $remote_addr }\n', { policy: 'hash', key: '$remote_addr' }],
    ['    balance:\n      policy: hash\n      key: "query:sid"\n', { policy: 'hash', key: 'query:sid' }],
    ['    balance: { policy: cookie }\n', { policy: 'cookie', name: 'portico_sticky', fallback: 'round_robin' }],
    ['    balance: { policy: cookie, name: lb, fallback: least_conn }\n', { policy: 'cookie', name: 'lb', fallback: 'least_conn' }],
  ];
  for (const [yaml, want] of forms) {
    const r = loadYaml(t, yaml);
    if (!r.ok) assert.fail(`${yaml}:\n${formatErrors('f', r.errors)}`);
    assert.deepEqual(r.config.upstreams.app.balance, want);
    assert.ok(createBalancer(r.config.upstreams.app.balance, []));
    keyExtractorFor(r.config.upstreams.app.balance); // compiles whatever loaded
  }
});

test('config: bad balance forms are refused with their path and a message that says what to write', (t) => {
  const cases: [string, string, RegExp][] = [
    ['    balance: fastest\n', 'upstreams.app.balance', /"round_robin" or "least_conn" or "random_two" or a map/],
    ['    balance: { policy: sticky }\n', 'upstreams.app.balance.policy', /policy must be "hash" or "cookie"/],
    ['    balance: { policy: hash }\n', 'upstreams.app.balance.key', /is required/],
    ['    balance: { policy: hash, key: "header:" }\n', 'upstreams.app.balance.key', /name is missing/],
    ['    balance: { policy: hash, key: "path:/x" }\n', 'upstreams.app.balance.key', /\$remote_addr/],
    ['    balance: { policy: cookie, name: "a b" }\n', 'upstreams.app.balance.name', /RFC 9110 token/],
    ['    balance: { policy: cookie, fallback: random_two }\n', 'upstreams.app.balance.fallback', /"round_robin" or "least_conn"/],
    ['    balance: { policy: hash, key: $remote_addr, fallback: round_robin }\n', 'upstreams.app.balance.fallback', /unknown key/],
    ['    balance: { policy: cookie, names: lb }\n', 'upstreams.app.balance.names', /unknown key "names" \(did you mean "name"\?\)/],
  ];
  for (const [yaml, at, message] of cases) {
    const r = loadYaml(t, yaml);
    if (r.ok) assert.fail(`${yaml} loaded`);
    const errors: ConfigError[] = r.errors;
    assert.deepEqual(errors.map((e) => e.path), [at], `${yaml}${formatErrors('f', errors)}`);
    assert.match(errors[0].message, message, yaml);
    assert.equal(errors[0].line, 6, yaml.trim());
  }
});
