// The pure rules behind static files, compression and CORS: Range and entity-tag lists (wire/range.ts),
// Accept-Encoding q-values (wire/accept-encoding.ts), and a route's CORS policy (route/policy/cors.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { etagListMatches, ifRangeHolds, parseRange } from '../../src/wire/range.js';
import { chooseEncoding } from '../../src/wire/accept-encoding.js';
import { CorsPolicy } from '../../src/route/policy/cors.js';
import type { RequestHead } from '../../src/wire/http-head.js';

test('parseRange: single, suffix, open, clamped, unsatisfiable, several, malformed', () => {
  assert.deepEqual(parseRange('bytes=0-4', 10), { kind: 'single', start: 0, end: 4 });
  assert.deepEqual(parseRange('bytes=-3', 10), { kind: 'single', start: 7, end: 9 });
  assert.deepEqual(parseRange('bytes=-30', 10), { kind: 'single', start: 0, end: 9 });
  assert.deepEqual(parseRange('bytes=8-', 10), { kind: 'single', start: 8, end: 9 });
  assert.deepEqual(parseRange('bytes=8-100', 10), { kind: 'single', start: 8, end: 9 });
  assert.deepEqual(parseRange('bytes=10-', 10), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=-0', 10), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=0-1, 4-5', 10), { kind: 'multi' });
  assert.deepEqual(parseRange('bytes=0-1, 40-50', 10), { kind: 'single', start: 0, end: 1 });
  for (const bad of ['bytes=5-3', 'bytes=a-b', 'items=0-1', 'bytes', 'bytes=1', 'bytes=--1']) assert.deepEqual(parseRange(bad, 10), { kind: 'none' }, bad);
  assert.deepEqual(parseRange(undefined, 10), { kind: 'none' });
  assert.deepEqual(parseRange(`bytes=${Array.from({ length: 100 }, (_, i) => `${i}-${i}`).join(',')}`, 1000), { kind: 'none' });
});

test('etag lists: weak comparison and *; If-Range needs a strong tag or the exact date', () => {
  assert.ok(etagListMatches('"a", W/"b"', '"b"'));
  assert.ok(etagListMatches('*', '"x"'));
  assert.ok(!etagListMatches('"a"', '"b"'));
  assert.ok(ifRangeHolds('"b"', '"b"', 0));
  assert.ok(!ifRangeHolds('W/"b"', '"b"', 0));
  assert.ok(!ifRangeHolds('"b"', 'W/"b"', 0));
  assert.ok(ifRangeHolds('Fri, 02 Jan 2026 03:04:05 GMT', undefined, Date.UTC(2026, 0, 2, 3, 4, 5) / 1000));
  assert.ok(!ifRangeHolds('Fri, 02 Jan 2026 03:04:06 GMT', undefined, Date.UTC(2026, 0, 2, 3, 4, 5) / 1000));
});

test('chooseEncoding: q-values, *, x-gzip, refusals, the offered order at equal q', () => {
  const both = ['br', 'gzip'] as const;
  assert.equal(chooseEncoding('gzip, deflate, br', both), 'br');
  assert.equal(chooseEncoding('gzip;q=1, br;q=0.9', both), 'gzip');
  assert.equal(chooseEncoding('br;q=0, *', both), 'gzip');
  assert.equal(chooseEncoding('*;q=0', both), null);
  assert.equal(chooseEncoding('x-gzip', both), 'gzip');
  assert.equal(chooseEncoding('identity', both), null);
  assert.equal(chooseEncoding(undefined, both), null);
  assert.equal(chooseEncoding('gzip;q=bad, br', both), 'br');
  assert.equal(chooseEncoding('GZIP', ['gzip']), 'gzip');
});

function head(method: string, headers: string[]): RequestHead {
  return { method, headers } as unknown as RequestHead;
}

test('CorsPolicy: exact and suffix origins, the grant, Vary, preflights granted and refused', () => {
  const p = new CorsPolicy({ origins: ['https://app.test', 'https://*.example.test'], credentials: true, methods: ['GET', 'PUT'], headers: ['X-Custom'], expose: ['X-Id'], max_age: 60_000 });
  assert.ok(p.allows('https://app.test'));
  assert.ok(p.allows('https://a.b.example.test'));
  assert.ok(!p.allows('https://example.test'));
  assert.ok(!p.allows('https://evilexample.test'));
  assert.ok(!p.allows('http://a.example.test'));
  assert.ok(!p.allows('https://a.example.test:444'));
  assert.equal(p.responseHeaders(head('GET', ['Origin', 'https://app.test'])), 'Access-Control-Allow-Origin: https://app.test\r\nAccess-Control-Allow-Credentials: true\r\nAccess-Control-Expose-Headers: X-Id\r\nVary: Origin\r\n');
  assert.equal(p.responseHeaders(head('GET', ['Origin', 'https://other.test'])), 'Vary: Origin\r\n');
  assert.equal(p.responseHeaders(head('GET', [])), 'Vary: Origin\r\n');
  const ok = p.preflight(head('OPTIONS', ['Origin', 'https://app.test', 'Access-Control-Request-Method', 'PUT', 'Access-Control-Request-Headers', 'x-custom, content-type']));
  assert.equal(ok?.status, 204);
  assert.match(ok?.headers ?? '', /Access-Control-Allow-Methods: GET, PUT\r\n/);
  assert.match(ok?.headers ?? '', /Access-Control-Allow-Headers: X-Custom\r\n/);
  assert.match(ok?.headers ?? '', /Access-Control-Max-Age: 60\r\n/);
  assert.equal(p.preflight(head('OPTIONS', ['Origin', 'https://app.test', 'Access-Control-Request-Method', 'DELETE']))?.status, 403);
  assert.equal(p.preflight(head('OPTIONS', ['Origin', 'https://app.test', 'Access-Control-Request-Method', 'PUT', 'Access-Control-Request-Headers', 'x-secret']))?.status, 403);
  assert.equal(p.preflight(head('OPTIONS', ['Origin', 'https://app.test'])), null);
  const any = new CorsPolicy({ origins: ['*'], credentials: false, methods: ['GET'], expose: [], max_age: 0 });
  assert.equal(any.responseHeaders(head('GET', ['Origin', 'https://x.test'])), 'Access-Control-Allow-Origin: *\r\n');
});
