// The addon's PROXY header reader (src/native/proxy-header.h, used by native L4 listeners with proxy_protocol) held
// to the JS one (src/wire/proxy-protocol.ts parseProxyHeader) with fast-check under a time budget: on built v1/v2
// headers (TLVs, CRC32C, unix, LOCAL, UNKNOWN), mutated ones, random v1 lines from address-like pieces, arbitrary
// bytes behind each signature and every prefix, under the default and small v2 bounds, both give the same kind, on
// 'error' the same reason, on 'done' the same length and fields. Its CIDR matcher (proxy_protocol.trusted) is held to
// createCidrMatcher the same way. Run under ASan by scripts/asan.sh, where a read past the input is a crash.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildProxyV1, buildProxyV2, buildProxyV2Local, createCidrMatcher, parseProxyHeader } from '../../src/wire/proxy-protocol.js';
import { native } from '../../src/native/addon.js';
import { mutate, mutationArb as mutationArbOf } from '../helpers/fuzz.js';
import { needAddonExport } from '../helpers/peers.js';

interface NativeEndpoint {
  address?: string;
  path?: Buffer;
  port: number;
}
interface NativeProxy {
  kind: 'more' | 'none' | 'done' | 'error';
  reason?: string;
  used?: number;
  version?: number;
  command?: string;
  family?: string;
  source?: NativeEndpoint;
  destination?: NativeEndpoint;
  tlvs?: Array<{ type: number; value: Buffer }>;
}
type Addon = { l4ParseProxy?: (b: Buffer, max?: number) => NativeProxy; l4MatchCidrs?: (cidrs: string[], address: string) => boolean | null };
const addon = native() as unknown as Addon | undefined;
const parseNative = addon?.l4ParseProxy;
const matchNative = addon?.l4MatchCidrs;

/** The addon here, or a loud skip: a missing build fails under PORTICO_REQUIRE_PEERS=1, PORTICO_NATIVE=0 does not. */
function needAddon(t: TestContext): boolean {
  return needAddonExport(t, parseNative !== undefined && matchNative !== undefined, 'the native addon (with its PROXY header reader)');
}

const BUDGET_MS = 1_000;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };
const SIG = Buffer.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const EDGE = [0x00, 0x0a, 0x0d, 0x20, 0x2e, 0x2f, 0x30, 0x31, 0x39, 0x3a, 0x41, 0x50, 0x66, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x20, 0x03, 0x80, 0xff];
const mutationArb = mutationArbOf(EDGE);

let decided = { more: 0, none: 0, done: 0, error: 0 };

/** Both readers decide `buf` (under `maxV2`) alike. */
function agree(buf: Buffer, maxV2?: number): void {
  const js = parseProxyHeader(buf, maxV2);
  const cc = maxV2 === undefined ? parseNative!(buf) : parseNative!(buf, maxV2);
  const what = `${buf.toString('hex')} (max ${maxV2 ?? 'default'})`;
  assert.equal(cc.kind, js.kind, `kind of ${what}: ${cc.reason ?? ''}`);
  decided[js.kind]++;
  if (js.kind === 'error') assert.equal(cc.reason, js.reason, `reason for ${what}`);
  if (js.kind !== 'done') return;
  const h = js.header;
  assert.equal(cc.used, js.used, `used of ${what}`);
  assert.equal(cc.version, h.version);
  assert.equal(cc.command, h.command);
  assert.equal(cc.family, h.family, `family of ${what}`);
  for (const [mine, theirs] of [
    [cc.source, h.source],
    [cc.destination, h.destination],
  ] as const) {
    if (theirs === undefined) {
      assert.equal(mine, undefined, `no endpoint in ${what}`);
      continue;
    }
    assert.ok(mine !== undefined, `an endpoint in ${what}`);
    // a unix path as bytes: decoded here as the JS reader decodes it
    assert.equal(mine.path !== undefined ? mine.path.toString('utf8') : mine.address, theirs.address, `address in ${what}`);
    assert.equal(mine.port, theirs.port);
  }
  assert.deepEqual(
    (cc.tlvs ?? []).map((t) => [t.type, t.value.toString('hex')]),
    h.tlvs.map((t) => [t.type, t.value.toString('hex')]),
    `TLVs of ${what}`,
  );
}

/** `buf` and every prefix of it agree, under the default bound and a small one. */
function agreeAllPrefixes(buf: Buffer): void {
  for (let p = 0; p <= buf.length; p++) {
    agree(buf.subarray(0, p));
    agree(buf.subarray(0, p), 40);
  }
}

const endpointArb = fc.record({ address: fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((a) => `::ffff:${a}`)), port: fc.integer({ min: 0, max: 65535 }) });
const tlvArb = fc.record({ type: fc.integer({ min: 0, max: 255 }).filter((t) => t !== 3), value: fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)) });

function seeds(): Buffer[] {
  const a = { address: '192.0.2.7', port: 56324 };
  const b = { address: '198.51.100.1', port: 443 };
  const a6 = { address: '2001:db8::1', port: 1 };
  const b6 = { address: '::1', port: 65535 };
  const unix = (cmd: number, fam: number) => Buffer.concat([SIG, Buffer.of(cmd, fam, 0, 216 + 4), Buffer.from('/run/a.sock'), Buffer.alloc(97), Buffer.alloc(108, 0x62), Buffer.of(0x04, 0, 1, 0x7a)]);
  return [
    buildProxyV1(a, b),
    buildProxyV1(a6, b6),
    Buffer.from('PROXY TCP6 ::ffff:1.2.3.4 fe80::1:2 0 1\r\n', 'latin1'),
    Buffer.from('PROXY UNKNOWN\r\n', 'latin1'),
    Buffer.from('PROXY UNKNOWN ffff::1 junk 1 2\r\nhello', 'latin1'),
    Buffer.concat([buildProxyV1(a, b), Buffer.from('GET / HTTP/1.1\r\n\r\n')]),
    buildProxyV2(a, b),
    buildProxyV2(a6, b6, [{ type: 2, value: Buffer.from('a.example') }, { type: 0x20, value: Buffer.alloc(9) }], { crc32c: true }),
    buildProxyV2({ address: '::ffff:10.0.0.1', port: 9 }, { address: '10.0.0.2', port: 10 }, [], { crc32c: true }),
    buildProxyV2(undefined, undefined),
    buildProxyV2Local(),
    buildProxyV2Local([{ type: 4, value: Buffer.alloc(3) }], { crc32c: true }),
    Buffer.concat([SIG, Buffer.of(0x20, 0x77, 0, 3), Buffer.alloc(3)]),
    Buffer.concat([SIG, Buffer.of(0x21, 0x12, 0, 12), Buffer.alloc(12)]),
    Buffer.concat([SIG, Buffer.of(0x21, 0x22, 0, 36), Buffer.alloc(36)]),
    unix(0x21, 0x31),
    unix(0x21, 0x32),
    Buffer.concat([buildProxyV2(a, b, [{ type: 5, value: Buffer.from('id') }]), Buffer.of(0x16, 0x03, 0x01)]),
  ];
}

test('native PROXY reader = the JS one on built headers (v1, v2, TLVs, CRC32C, LOCAL, UNKNOWN, unix) and all their prefixes', (t) => {
  if (!needAddon(t)) return;
  decided = { more: 0, none: 0, done: 0, error: 0 };
  for (const seed of seeds()) agreeAllPrefixes(seed);
  fc.assert(
    fc.property(endpointArb, endpointArb, fc.array(tlvArb, { maxLength: 4 }), fc.boolean(), fc.uint8Array({ maxLength: 20 }), (src, dst, tlvs, crc, tail) => {
      for (const hdr of [buildProxyV1(src, dst), buildProxyV2(src, dst, tlvs, { crc32c: crc }), buildProxyV2Local(tlvs, { crc32c: crc })]) {
        const buf = Buffer.concat([hdr, Buffer.from(tail)]);
        agree(buf);
        agree(buf, hdr.length);
        agree(buf, hdr.length - 1);
      }
    }),
    opts,
  );
  assert.ok(decided.done > 100 && decided.more > 100 && decided.error > 10, `every verdict met: ${JSON.stringify(decided)}`);
});

test('native PROXY reader = the JS one on mutated headers, cut anywhere', (t) => {
  if (!needAddon(t)) return;
  decided = { more: 0, none: 0, done: 0, error: 0 };
  const all = seeds();
  fc.assert(
    fc.property(fc.constantFrom(...all), fc.array(mutationArb, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 4 }), fc.constantFrom(undefined, 16, 64, 250), (seed, mutations, cuts, max) => {
      const buf = mutate(seed, mutations);
      agree(buf, max);
      for (const c of cuts) agree(buf.subarray(0, buf.length === 0 ? 0 : c % buf.length), max);
    }),
    opts,
  );
  assert.ok(decided.done > 10 && decided.error > 100 && decided.none > 0, `every verdict met: ${JSON.stringify(decided)}`);
});

/** A v1 line from pieces that look like its fields: addresses valid and nearly so, ports at their edges, odd spacing. */
const v1PieceArb = fc.oneof(
  fc.constantFrom('TCP4', 'TCP6', 'UNKNOWN', 'TCP', 'tcp4', 'UDP4', ''),
  fc.ipV4(),
  fc.ipV6(),
  fc.ipV4().map((a) => `::ffff:${a}`),
  fc.constantFrom('0', '00', '01', '65535', '65536', '99999', '123456', '-1', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '::', ':::', '1::2::3', '::1.2.3.4', 'fffff::', '1:2:3:4:5:6:7:8:9', 'a:b:c:d:e:f:1.2.3.4'),
  fc.stringMatching(/^[0-9a-fA-F:.]{0,12}$/),
);
const portArb = fc.oneof(fc.integer({ min: 0, max: 65535 }).map(String), fc.constantFrom('0', '00', '01', '65535', '65536', '99999', '123456', '', '1a', '+1'));
const addressArb = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((a) => `::ffff:${a}`), v1PieceArb);
/** Either any pieces, or the five fields in their places (each valid or nearly), so that every rule is reached. */
const v1LineArb = fc.oneof(
  fc.tuple(fc.array(v1PieceArb, { minLength: 1, maxLength: 7 }), fc.constantFrom(' ', ' ', ' ', '  ', '\t')).map(([pieces, sep]) => `PROXY ${pieces.join(sep)}`),
  fc.tuple(fc.constantFrom('TCP4', 'TCP6'), addressArb, addressArb, portArb, portArb).map((f) => `PROXY ${f.join(' ')}`),
);

test('native PROXY reader = the JS one on v1 lines made of address-like pieces, with CRLF, a lone CR or LF, or none', (t) => {
  if (!needAddon(t)) return;
  decided = { more: 0, none: 0, done: 0, error: 0 };
  fc.assert(
    fc.property(v1LineArb, fc.constantFrom('\r\n', '\r\n', '\r', '\n', '\rx', ''), fc.nat(), (line, end, cut) => {
      const buf = Buffer.from(line + end + 'after', 'latin1');
      agree(buf);
      agree(buf.subarray(0, cut % (buf.length + 1)));
    }),
    opts,
  );
  assert.ok(decided.done > 10 && decided.error > 100, `every verdict met: ${JSON.stringify(decided)}`);
});

test('native PROXY reader = the JS one on arbitrary bytes behind each signature, and on long lines and large v2 lengths', (t) => {
  if (!needAddon(t)) return;
  const prefixes = [Buffer.alloc(0), Buffer.from('P'), Buffer.from('PROXY ', 'latin1'), Buffer.from('PROXY TCP4 ', 'latin1'), SIG, Buffer.concat([SIG, Buffer.of(0x21)]), Buffer.concat([SIG, Buffer.of(0x21, 0x11)])];
  fc.assert(
    fc.property(fc.constantFrom(...prefixes), fc.uint8Array({ maxLength: 300 }), fc.constantFrom(undefined, 16, 17, 64, 300), (pre, bytes, max) => {
      agree(Buffer.concat([pre, Buffer.from(bytes)]), max);
    }),
    opts,
  );
  // v1 at its 107-byte bound (CR at 105 and 106) and past it; a v2 length at and past the default bound
  for (const n of [98, 99, 100, 101, 102]) {
    const line = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(n - 14)}\r\n`, 'latin1');
    agreeAllPrefixes(line);
  }
  agree(Buffer.from(`PROXY ${'1'.repeat(200)}`, 'latin1'));
  for (const len of [16384 - 16, 16384 - 15, 0xffff]) {
    const head = Buffer.concat([SIG, Buffer.of(0x21, 0x11, len >> 8, len & 0xff)]);
    agree(head);
    agree(Buffer.concat([head, Buffer.alloc(Math.min(len, 16384 - 16), 0x04)]));
  }
});

test('native CIDR matcher (proxy_protocol.trusted) = createCidrMatcher on random networks and addresses', (t) => {
  if (!needAddon(t)) return;
  const cidrArb = fc.oneof(
    fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 33 })).map(([a, p]) => `${a}/${p}`),
    fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 129 })).map(([a, p]) => `${a}/${p}`),
    fc.ipV4(),
    fc.ipV6(),
    fc.constantFrom('0.0.0.0/0', '::/0', '127.0.0.0/8', '::ffff:127.0.0.0/104', '10.0.0.0/08', '10.0.0.0/', 'fe80::/10', '1.2.3.4/32'),
  );
  const addressArb = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((a) => `::ffff:${a}`), fc.constantFrom('127.0.0.1', '::1', '10.1.2.3', 'fe80::1'));
  let matched = 0;
  fc.assert(
    fc.property(fc.array(cidrArb, { minLength: 1, maxLength: 3 }), addressArb, (cidrs, address) => {
      const js = createCidrMatcher(cidrs);
      const cc = matchNative!(cidrs, address);
      if (!js.ok) return assert.equal(cc, null, `${JSON.stringify(cidrs)} refused by JS`);
      assert.equal(cc, js.match(address), `${address} in ${JSON.stringify(cidrs)}`);
      if (cc === true) matched++;
    }),
    opts,
  );
  // networks derived from the address itself: most of these match
  fc.assert(
    fc.property(fc.ipV4(), fc.integer({ min: 0, max: 32 }), (a, p) => {
      const n = a.split('.').reduce((v, x) => v * 256 + Number(x), 0);
      const mask = p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0;
      const net = (n & mask) >>> 0;
      const cidr = `${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${p}`;
      assert.equal(matchNative!([cidr], a), true, `${a} in ${cidr}`);
      assert.equal(matchNative!([cidr], `::ffff:${a}`), true);
      matched++;
    }),
    opts,
  );
  assert.ok(matched > 100);
});
