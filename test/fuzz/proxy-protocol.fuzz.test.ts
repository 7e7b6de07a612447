// Property tests of the PROXY protocol parser, builders and CIDR matcher with fast-check under a time budget
// (~3 s in all): never throws, never reads past the input, split delivery equals whole delivery, limits hold,
// build -> parse is the identity, and the address code agrees with node:net and with plain integer arithmetic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP, isIPv6 } from 'node:net';
import fc from 'fast-check';
import { PROXY_V1_MAX_LINE, buildProxyV1, buildProxyV2, createCidrMatcher, parseProxyHeader, type ProxyParseResult } from '../../src/wire/proxy-protocol.js';
import { inJunk as inJunkBy, mutate, mutationArb as mutationArbOf } from '../helpers/fuzz.js';

const BUDGET_MS = 500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

const SIG = Buffer.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const SEEDS: Buffer[] = [
  Buffer.from('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n', 'latin1'),
  Buffer.from('PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 1 65535\r\n', 'latin1'),
  Buffer.from('PROXY UNKNOWN\r\n', 'latin1'),
  buildProxyV2({ address: '10.0.0.1', port: 1234 }, { address: '10.0.0.2', port: 443 }, [{ type: 2, value: Buffer.from('a.example') }]),
  buildProxyV2({ address: '2001:db8::1', port: 1 }, { address: '::1', port: 2 }, [{ type: 0x20, value: Buffer.alloc(9) }], { crc32c: true }),
  Buffer.concat([SIG, Buffer.of(0x21, 0x31, 0, 216), Buffer.alloc(216, 0x41)]),
  Buffer.concat([SIG, Buffer.of(0x20, 0x00, 0, 3), Buffer.alloc(3)]),
];

const EDGE = [0x00, 0x0d, 0x0a, 0x20, 0x2e, 0x3a, 0x30, 0x39, 0x66, 0x11, 0x21, 0x31, 0x20, 0x03, 0xff];
const mutationArb = mutationArbOf(EDGE);


const inJunk = (buf: Buffer, junk: number): Buffer => inJunkBy(buf, junk, 300);

function checkResult(r: ProxyParseResult, buf: Buffer, maxV2: number): void {
  if (r.kind === 'error') return assert.ok(r.reason.length > 0);
  if (r.kind === 'none') {
    const v1 = Buffer.from('PROXY', 'latin1');
    const compatible = (sig: Buffer): boolean => buf.subarray(0, sig.length).equals(sig.subarray(0, Math.min(sig.length, buf.length)));
    return assert.ok(buf.length > 0 && !compatible(v1) && !compatible(SIG), 'none for bytes that start like a signature');
  }
  if (r.kind === 'more') {
    assert.ok(buf.length < Math.max(PROXY_V1_MAX_LINE, maxV2), 'more past every bound');
    if (buf[0] === 0x50) assert.ok(buf.length < PROXY_V1_MAX_LINE, 'v1 more past 107 bytes');
    return;
  }
  const h = r.header;
  assert.ok(r.used > 0 && r.used <= buf.length);
  if (h.version === 1) {
    assert.ok(r.used <= PROXY_V1_MAX_LINE);
    assert.equal(buf.toString('latin1', r.used - 2, r.used), '\r\n');
  } else {
    assert.ok(r.used <= maxV2);
    assert.ok(buf.subarray(0, 12).equals(SIG));
  }
  for (const ep of [h.source, h.destination]) if (ep !== undefined) assert.ok(Number.isInteger(ep.port) && ep.port >= 0 && ep.port <= 65535);
  if (h.family === 'tcp6') assert.ok(isIPv6(h.source?.address ?? '') && isIPv6(h.destination?.address ?? ''));
}

function checkAll(buf: Buffer, maxV2: number, cuts: readonly number[]): void {
  const whole = parseProxyHeader(buf, maxV2);
  checkResult(whole, buf, maxV2);
  assert.deepEqual(parseProxyHeader(inJunk(buf, 0x00), maxV2), whole);
  assert.deepEqual(parseProxyHeader(inJunk(buf, 0x0a), maxV2), whole);
  for (const c of cuts) {
    const p = buf.length === 0 ? 0 : c % buf.length;
    const r = parseProxyHeader(buf.subarray(0, p), maxV2);
    if (r.kind !== 'more') assert.deepEqual(r, whole, `prefix ${p} decided differently from the whole`);
  }
}

test('arbitrary bytes behind each signature -> never throws, invariants hold', () => {
  const prefixes = [Buffer.alloc(0), Buffer.from('PROXY ', 'latin1'), Buffer.from('PROXY TCP4 ', 'latin1'), SIG, Buffer.concat([SIG, Buffer.of(0x21)])];
  fc.assert(
    fc.property(fc.constantFrom(...prefixes), fc.uint8Array({ maxLength: 300 }), fc.constantFrom(64, 300, 16384), fc.array(fc.nat(), { maxLength: 6 }), (pre, bytes, maxV2, cuts) => {
      checkAll(Buffer.concat([pre, Buffer.from(bytes)]), maxV2, cuts);
    }),
    opts,
  );
});

test('mutated valid headers -> never throws, split equals whole, never reads past the input', () => {
  fc.assert(
    fc.property(fc.constantFrom(...SEEDS), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 8 }), (seed, ms, cuts) => {
      checkAll(mutate(seed, ms), 16384, cuts);
    }),
    opts,
  );
});

const endpointArb = fc.record({ address: fc.oneof(fc.ipV4(), fc.ipV6()), port: fc.integer({ min: 0, max: 65535 }) });
const tlvArb = fc.record({ type: fc.integer({ min: 0, max: 255 }).filter((t) => t !== 3), value: fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)) });

test('build -> parse round trip (v1, v2, TLVs, CRC32C) with data after the header', () => {
  fc.assert(
    fc.property(endpointArb, endpointArb, fc.array(tlvArb, { maxLength: 4 }), fc.boolean(), fc.uint8Array({ maxLength: 20 }), (src, dst, tlvs, crc, tail) => {
      for (const hdr of [buildProxyV1(src, dst), buildProxyV2(src, dst, tlvs, { crc32c: crc })]) {
        const buf = Buffer.concat([hdr, Buffer.from(tail)]);
        const r = parseProxyHeader(buf);
        assert.equal(r.kind, 'done');
        if (r.kind !== 'done') return;
        assert.equal(r.used, hdr.length);
        for (const [sent, got] of [
          [src, r.header.source],
          [dst, r.header.destination],
        ] as const) {
          assert.ok(got !== undefined);
          assert.equal(got.port, sent.port);
          // The same address in another spelling (mapped, compressed): a one-address CIDR of one matches the other.
          const m = createCidrMatcher([got.address]);
          assert.ok(m.ok && m.match(sent.address), `${sent.address} came back as ${got.address}`);
        }
        if (r.header.version === 2) assert.deepEqual(r.header.tlvs.slice(0, tlvs.length), tlvs.map((t) => ({ type: t.type, value: t.value })));
      }
    }),
    opts,
  );
});

test('address text: our parser accepts exactly what node:net accepts (zones excluded)', () => {
  const m = createCidrMatcher(['::/0']);
  assert.ok(m.ok);
  const textArb = fc.oneof(
    fc.ipV6(),
    fc.tuple(fc.ipV6(), fc.array(mutationArb, { minLength: 1, maxLength: 3 })).map(([s, ms]) => mutate(Buffer.from(s, 'latin1'), ms).toString('latin1')),
    fc.stringMatching(/^[0-9a-fA-F:.]{0,46}$/),
  );
  fc.assert(
    fc.property(textArb, (s) => {
      if (s.includes('%')) return;
      assert.equal(m.match(s), isIP(s) !== 0, JSON.stringify(s)); // the matcher also takes IPv4
    }),
    opts,
  );
});

test('IPv4 CIDR matching equals integer arithmetic, for plain and IPv4-mapped addresses', () => {
  const toInt = (a: string): number => a.split('.').reduce((v, p) => v * 256 + Number(p), 0);
  fc.assert(
    fc.property(fc.ipV4(), fc.integer({ min: 0, max: 32 }), fc.ipV4(), (net, prefix, addr) => {
      const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
      const n = (toInt(net) & mask) >>> 0;
      const cidr = `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/${prefix}`;
      const m = createCidrMatcher([cidr]);
      assert.ok(m.ok, cidr);
      const want = ((toInt(addr) & mask) >>> 0) === n;
      assert.equal(m.match(addr), want, `${addr} in ${cidr}`);
      assert.equal(m.match(`::ffff:${addr}`), want);
    }),
    opts,
  );
});
