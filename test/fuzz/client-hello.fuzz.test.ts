// Property tests of the ClientHello parser with fast-check under a time budget (~3 s in all), seeded with real
// hellos from Node's TLS client: never throws, never reads past the input, split delivery equals whole delivery,
// re-fragmenting the records changes nothing but recordBytes, and the limits and name rules hold on every 'done'.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseClientHello, type ClientHelloResult } from '../../src/wire/client-hello.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { inJunk, mutate, mutationArb as mutationArbOf } from '../helpers/fuzz.js';

const BUDGET_MS = 600;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

const SEEDS: Buffer[] = [
  await captureNodeHello({ servername: 'fuzz.example', ALPNProtocols: ['h2', 'http/1.1'] }),
  await captureNodeHello({ servername: 'twelve.example', maxVersion: 'TLSv1.2' }),
  await captureNodeHello({}),
];

const EDGE = [0x00, 0x01, 0x02, 0x03, 0x04, 0x10, 0x16, 0x2b, 0x2d, 0x2e, 0x40, 0x41, 0x5f, 0x7f, 0x80, 0xff];
const mutationArb = mutationArbOf(EDGE);



const NAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** Everything a caller may rely on, checked on any result. */
function checkResult(r: ClientHelloResult, buf: Buffer, maxBytes: number): void {
  if (r.kind === 'error') return assert.ok(r.reason.length > 0);
  if (r.kind === 'not_tls') return assert.notEqual(buf[0], 0x16);
  if (r.kind === 'more') return assert.ok(buf.length < maxBytes, 'more although maxBytes were available');
  const h = r.hello;
  assert.ok(h.recordBytes > 0 && h.recordBytes <= buf.length && h.recordBytes <= maxBytes, `recordBytes ${h.recordBytes}`);
  if (h.sni !== undefined) {
    assert.match(h.sni, NAME);
    assert.doesNotMatch(h.sni, /(^|\.)[0-9]+$/, 'IP-like name');
  }
  for (const a of h.alpn) assert.ok(a.length >= 1 && a.length <= 255);
  for (const v of h.supportedVersions) assert.ok(v >= 0 && v <= 0xffff);
}

/** Parse of `buf` under every property: checked, same as a view in two kinds of junk, prefixes consistent. */
function checkAll(buf: Buffer, maxBytes: number, cuts: readonly number[]): void {
  const whole = parseClientHello(buf, maxBytes);
  checkResult(whole, buf, maxBytes);
  assert.deepEqual(parseClientHello(inJunk(buf, 0x00), maxBytes), whole);
  assert.deepEqual(parseClientHello(inJunk(buf, 0x16), maxBytes), whole);
  for (const c of cuts) {
    const p = buf.length === 0 ? 0 : c % buf.length;
    const r = parseClientHello(buf.subarray(0, p), maxBytes);
    if (r.kind !== 'more') assert.deepEqual(r, whole, `prefix ${p} decided differently from the whole`);
  }
}

test('arbitrary bytes (raw and behind a handshake record header) -> never throws, invariants hold', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), fc.array(fc.nat(), { maxLength: 6 }), (bytes, framed, cuts) => {
      const buf = framed ? Buffer.concat([Buffer.of(0x16, 0x03, 0x01, bytes.length >> 8, bytes.length & 0xff, 0x01), Buffer.from(bytes)]) : Buffer.from(bytes);
      checkAll(buf, 16384, cuts);
    }),
    opts,
  );
});

test('mutated real hellos -> never throws, split equals whole, never reads past the input', () => {
  fc.assert(
    fc.property(fc.constantFrom(...SEEDS), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 6 }), (seed, ms, cuts) => {
      checkAll(mutate(seed, ms), 16384, cuts);
    }),
    opts,
  );
});

test('real hellos re-fragmented at random record sizes -> same hello, recordBytes = the new stream', () => {
  const wholes = SEEDS.map((s) => parseClientHello(s));
  fc.assert(
    fc.property(fc.integer({ min: 0, max: SEEDS.length - 1 }), fc.array(fc.integer({ min: 1, max: 600 }), { minLength: 1, maxLength: 12 }), (i, sizes) => {
      const w = wholes[i];
      assert.equal(w.kind, 'done');
      if (w.kind !== 'done') return;
      const hs = SEEDS[i].subarray(5, w.hello.recordBytes); // the seeds are one record each
      const parts: Buffer[] = [];
      for (let at = 0, k = 0; at < hs.length; k++) {
        const n = Math.min(sizes[k % sizes.length], hs.length - at);
        parts.push(Buffer.of(0x16, 0x03, 0x01, n >> 8, n & 0xff), hs.subarray(at, at + n));
        at += n;
      }
      const buf = Buffer.concat(parts);
      const r = parseClientHello(buf);
      assert.equal(r.kind, 'done');
      if (r.kind !== 'done') return;
      assert.deepEqual({ ...r.hello, recordBytes: 0 }, { ...w.hello, recordBytes: 0 });
      assert.equal(r.hello.recordBytes, buf.length);
    }),
    opts,
  );
});

test('maxBytes holds: done only within it, and never more once it is reached', () => {
  fc.assert(
    fc.property(fc.constantFrom(...SEEDS), fc.integer({ min: 1, max: 4096 }), fc.array(mutationArb, { maxLength: 2 }), (seed, maxBytes, ms) => {
      const buf = mutate(seed, ms);
      checkAll(buf, maxBytes, [maxBytes, maxBytes - 1]);
      const r = parseClientHello(buf, maxBytes);
      if (buf.length >= maxBytes) assert.notEqual(r.kind, 'more');
    }),
    opts,
  );
});
