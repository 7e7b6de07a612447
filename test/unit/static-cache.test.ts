// The static-file cache (handlers/static-cache.ts) on its own, with a clock the test moves: validity, least
// recently used eviction by entry count and by bytes, refusals only with `errors`, bytes charged later; and its
// config block: defaults, and bad values refused by `portico check` with their YAML path and line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { StaticCache, type CacheEntry, type CacheLimits } from '../../src/handlers/static-cache.js';
import { loadConfig } from '../../src/config/load.js';
import { run } from '../helpers/clients.js';
import { CLI } from '../helpers/paths.js';

const LIMITS: CacheLimits = { entries: 3, valid: 1000, errors: true, file_size: 16, memory: 100 };

function file(real: string, bytes: number): CacheEntry {
  return {
    kind: 'file',
    real,
    dev: 1,
    ino: 2,
    size: bytes,
    mtimeMs: 0,
    mtime: 0,
    contentType: 'text/plain',
    etagCore: '0-0',
    lastModified: '',
    body: Buffer.alloc(bytes),
    bytes,
    variants: null,
    memo: null,
    expires: 0,
  };
}

function refused(status: 403 | 404): CacheEntry {
  return { kind: 'refused', status, bytes: 0, expires: 0 };
}

test('an entry is used for `valid` ms, then get() misses and takeStale() hands it back once', () => {
  let now = 10_000;
  const c = new StaticCache(LIMITS, () => now);
  const e = file('/r/a', 4);
  assert.equal(c.put('/r/a', e), true);
  now += 999;
  assert.equal(c.get('/r/a'), e);
  assert.equal(c.takeStale('/r/a'), undefined, 'a valid entry is not stale');
  now += 1;
  assert.equal(c.get('/r/a'), undefined, 'expired at exactly `valid`');
  assert.equal(c.takeStale('/r/a'), e);
  assert.equal(c.size, 0);
  assert.equal(c.bytes, 0);
  assert.equal(c.takeStale('/r/a'), undefined);
});

test('past `entries` the least recently used entry goes; a hit makes an entry the most recent', () => {
  const c = new StaticCache(LIMITS, () => 0);
  for (const k of ['a', 'b', 'c']) c.put(k, file(k, 1));
  assert.ok(c.get('a') !== undefined); // order now b, c, a
  c.put('d', file('d', 1));
  assert.equal(c.size, 3);
  assert.equal(c.get('b'), undefined, 'b was the least recently used');
  for (const k of ['a', 'c', 'd']) assert.ok(c.get(k) !== undefined, k);
  // many more than the cap: the count never passes it
  for (let i = 0; i < 1000; i++) c.put(`x${i}`, refused(404));
  assert.equal(c.size, 3);
  assert.deepEqual(['x997', 'x998', 'x999'].map((k) => c.get(k)?.kind), ['refused', 'refused', 'refused']);
});

test('past `memory` bytes the least recently used entries go; an entry larger than memory is not held', () => {
  const c = new StaticCache({ ...LIMITS, entries: 100 }, () => 0);
  c.put('a', file('a', 40));
  c.put('b', file('b', 40));
  assert.equal(c.bytes, 80);
  c.put('c', file('c', 40));
  assert.equal(c.bytes, 80);
  assert.equal(c.get('a'), undefined);
  assert.equal(c.put('huge', file('huge', 101)), false);
  assert.equal(c.bytes, 80);
  // bytes charged later (a compressed form) count too, and can push the entry itself out
  const b = c.get('b')!;
  assert.equal(c.charge('b', b, 30), true);
  assert.equal(c.bytes, 70, 'c (40) went to make room: b is the most recent');
  assert.equal(c.get('c'), undefined);
  assert.equal(c.charge('b', b, 200), false, 'b alone is past memory: dropped');
  assert.equal(c.size, 0);
  assert.equal(c.bytes, 0);
  assert.equal(c.charge('b', b, 1), false, 'an entry no longer held takes no charge');
});

test('refusals are held only with `errors`; `entries: 0` holds nothing; replacing a key keeps the byte count right', () => {
  const off = new StaticCache({ ...LIMITS, errors: false }, () => 0);
  assert.equal(off.put('/missing', refused(404)), false);
  assert.equal(off.get('/missing'), undefined);
  const none = new StaticCache({ ...LIMITS, entries: 0 }, () => 0);
  assert.equal(none.put('/a', file('/a', 1)), false);
  assert.equal(none.size, 0);
  const c = new StaticCache(LIMITS, () => 0);
  c.put('/a', file('/a', 10));
  c.put('/a', file('/a', 20));
  assert.equal(c.size, 1);
  assert.equal(c.bytes, 20);
  c.delete('/a');
  assert.equal(c.bytes, 0);
});

function loadYaml(t: TestContext, yaml: string): { file: string; r: ReturnType<typeof loadConfig> } {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-static-cache-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'portico.yaml');
  writeFileSync(file, yaml);
  return { file, r: loadConfig(file) };
}

const BASE = 'listeners:\n  - address: 127.0.0.1:8080\n';

test('static_cache: defaults, and bad values refused by `portico check` with their YAML path and line', async (t) => {
  const ok = loadYaml(t, BASE);
  if (!ok.r.ok) assert.fail('the default config loads');
  assert.deepEqual(ok.r.config.static_cache, { entries: 4096, valid: 5000, errors: true, file_size: 64 * 1024, memory: 32 * 1024 * 1024 });
  const cases: Array<[string, string, RegExp]> = [
    ['valid: 2m', 'static_cache.valid', /at most "60s"/],
    ['valid: off', 'static_cache.valid', /above 0/],
    ['entries: -1', 'static_cache.entries', /./],
    ['file_size: lots', 'static_cache.file_size', /invalid size/],
    ['memory: 0B', 'static_cache.memory', /size/],
    ['open_files: 3', 'static_cache.open_files', /unknown key/],
  ];
  for (const [line, at, message] of cases) {
    const { file, r } = loadYaml(t, `${BASE}static_cache:\n  ${line}\n`);
    if (r.ok) assert.fail(`${line} must be refused`);
    const found = r.errors.filter((e) => e.path === at);
    assert.equal(found.length, 1, `${line}: one error at ${at}, got ${JSON.stringify(r.errors)}`);
    assert.match(found[0].message, message, line);
    assert.equal(found[0].line, 4, `${line}: line`);
    const res = await run(process.execPath, [CLI, 'check', '-c', file]);
    assert.notEqual(res.code, 0, line);
    assert.match(res.stderr + res.stdout, new RegExp(at.replace('.', '\\.')), `${line}: check prints the path`);
  }
});
