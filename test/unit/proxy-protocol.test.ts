// PROXY protocol v1/v2 parser, builders and trusted-sender CIDR matcher: the spec's own examples, build -> parse
// round trips, delivery cut at every offset, a malformed corpus where each case names the rule it breaks,
// and CIDR tables (IPv4-mapped IPv6 included).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIPv6 } from 'node:net';
import {
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  PP2_TYPE_CRC32C,
  buildProxyV1,
  buildProxyV2,
  buildProxyV2Local,
  checkCidr,
  crc32c,
  createCidrMatcher,
  parseProxyHeader,
  type ProxyHeader,
  type ProxyParseResult,
} from '../../src/wire/proxy-protocol.js';

const SIG = Buffer.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const v1 = (s: string): Buffer => Buffer.from(s, 'latin1');

function v2(verCmd: number, fam: number, body: Buffer, lenOverride?: number): Buffer {
  const h = Buffer.alloc(4);
  h[0] = verCmd;
  h[1] = fam;
  h.writeUInt16BE(lenOverride ?? body.length, 2);
  return Buffer.concat([SIG, h, body]);
}

function done(r: ProxyParseResult): { header: ProxyHeader; used: number } {
  assert.equal(r.kind, 'done', r.kind === 'error' ? r.reason : r.kind);
  return r as { kind: 'done'; header: ProxyHeader; used: number };
}

/** Every strict prefix is 'more' (or the same final answer); the whole, as a view inside junk, equals `expected`. */
function assertSplitEverywhere(buf: Buffer, expected: ProxyParseResult): void {
  for (let i = 0; i < buf.length; i++) {
    const r = parseProxyHeader(Buffer.from(buf.subarray(0, i)));
    if (r.kind !== 'more') assert.deepEqual(r, expected, `prefix ${i} of ${buf.length}`);
  }
  const big = Buffer.alloc(buf.length + 300, 0x20);
  buf.copy(big, 100);
  assert.deepEqual(parseProxyHeader(big.subarray(100, 100 + buf.length)), expected);
}

// ---- v1 -----------------------------------------------------------------------------------------------------

test('v1 spec example before an HTTP request -> endpoints, used stops at CRLF', () => {
  const line = 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n';
  const buf = v1(`${line}GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n`);
  const r = done(parseProxyHeader(buf));
  assert.equal(r.used, line.length);
  assert.deepEqual(r.header, {
    version: 1,
    command: 'proxy',
    family: 'tcp4',
    source: { address: '192.168.0.1', port: 56324 },
    destination: { address: '192.168.0.11', port: 443 },
    tlvs: [],
  });
  assertSplitEverywhere(buf, parseProxyHeader(buf));
});

test('v1 TCP6 -> addresses normalised to RFC 5952, longest line accepted', () => {
  const r = done(parseProxyHeader(v1('PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::FFFF:10.0.0.1 65535 0\r\n')));
  assert.deepEqual(r.header.source, { address: '2001:db8::1', port: 65535 });
  assert.deepEqual(r.header.destination, { address: '::ffff:10.0.0.1', port: 0 });
  const full = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  const longest = `PROXY UNKNOWN ${full} ${full} 65535 65535\r\n`;
  assert.equal(longest.length, 107);
  assert.equal(done(parseProxyHeader(v1(longest))).used, 107);
  const tcp6 = `PROXY TCP6 ${full} ${full} 65535 65535\r\n`;
  assert.equal(done(parseProxyHeader(v1(tcp6))).header.source?.address, full);
});

test('v1 UNKNOWN -> family unknown, rest of line ignored (§2.1)', () => {
  for (const s of ['PROXY UNKNOWN\r\n', 'PROXY UNKNOWN anything at all 1 2\r\n']) {
    const r = done(parseProxyHeader(v1(s)));
    assert.deepEqual(r, { kind: 'done', used: s.length, header: { version: 1, command: 'proxy', family: 'unknown', tlvs: [] } });
  }
});

test('v1 malformed corpus -> error', () => {
  const cases: Array<[string, RegExp]> = [
    ['PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n', /single spaces/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n', /single spaces/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', /single spaces/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', /port/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n', /port/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n', /port/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n', /single spaces|port/],
    ['PROXY TCP4 ::1 5.6.7.8 1 2\r\n', /IPv4/],
    ['PROXY TCP6 1.2.3.4 ::1 1 2\r\n', /IPv6/],
    ['PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n', /IPv4/],
    ['PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', /IPv4/],
    ['PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n', /IPv4/],
    ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', /IPv6/],
    ['PROXY TCP6 1::2::3 ::1 1 2\r\n', /IPv6/],
    ['PROXY TCP6 12345::1 ::1 1 2\r\n', /IPv6/],
    ['PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n', /protocol/],
    ['PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n', /protocol/],
    ['PROXY UNKNOWNX\r\n', /protocol/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', /LF without CR/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX', /CR not followed by LF/],
    ['PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n', /single space/],
    ['PROXYTCP4', /single space/],
    [`PROXY UNKNOWN ${'x'.repeat(92)}\r\n`, /no CRLF in the first 107/], // 108 bytes
    [`PROXY UNKNOWN ${'x'.repeat(200)}`, /no CRLF/],
  ];
  for (const [s, re] of cases) {
    const buf = v1(s);
    const r = parseProxyHeader(buf);
    assert.equal(r.kind, 'error', JSON.stringify(s));
    assert.match((r as { reason: string }).reason, re, JSON.stringify(s));
    assertSplitEverywhere(buf, r);
  }
});

test('no signature -> none as soon as the bytes differ; partial signature -> more', () => {
  for (const s of ['GET / HTTP/1.1\r\n', 'POST /', 'PUT', '\x16\x03\x01', 'X', '\r\nGET /', 'PR0XY']) {
    assert.deepEqual(parseProxyHeader(v1(s)), { kind: 'none' }, JSON.stringify(s));
  }
  for (const s of ['', 'P', 'PROX', 'PROXY ', 'PROXY TCP4 1.2.3.4', '\r\n\r\n\x00\r\nQUIT', '\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00']) {
    assert.deepEqual(parseProxyHeader(v1(s)), { kind: 'more' }, JSON.stringify(s));
  }
  assert.deepEqual(parseProxyHeader(Buffer.concat([SIG.subarray(0, 11), v1('X')])), { kind: 'none' });
});

// ---- v2 -----------------------------------------------------------------------------------------------------

test('v2 TCP4 as HAProxy sends it (captured bytes from the spec thread) -> endpoints and used', () => {
  const hex = '0d0a0d0a000d0a515549540a2111000cac130001ac130003a6520050';
  const buf = Buffer.concat([Buffer.from(hex, 'hex'), v1('GET / HTTP/1.1\r\n')]);
  const r = done(parseProxyHeader(buf));
  assert.equal(r.used, 28);
  assert.deepEqual(r.header, {
    version: 2,
    command: 'proxy',
    family: 'tcp4',
    source: { address: '172.19.0.1', port: 42578 },
    destination: { address: '172.19.0.3', port: 80 },
    tlvs: [],
  });
  assertSplitEverywhere(buf, parseProxyHeader(buf));
});

test('v2 TCP6, UNIX and TLVs -> parsed; LOCAL discards its block; datagram families fall back to unknown', () => {
  const addr6 = Buffer.alloc(36);
  addr6[0] = 0x20;
  addr6[1] = 0x01;
  addr6[15] = 1;
  addr6[31] = 2;
  addr6.writeUInt16BE(1234, 32);
  addr6.writeUInt16BE(443, 34);
  const tlv = Buffer.concat([Buffer.of(PP2_TYPE_AUTHORITY, 0, 11), v1('example.com'), Buffer.of(0xe0, 0, 0)]);
  const r6 = done(parseProxyHeader(v2(0x21, 0x21, Buffer.concat([addr6, tlv]))));
  assert.deepEqual(r6.header.source, { address: '2001::1', port: 1234 });
  assert.deepEqual(r6.header.destination, { address: '::2', port: 443 });
  assert.deepEqual(r6.header.tlvs, [
    { type: PP2_TYPE_AUTHORITY, value: v1('example.com') },
    { type: 0xe0, value: Buffer.alloc(0) },
  ]);

  const unix = Buffer.alloc(216);
  unix.write('/run/client.sock', 0);
  unix.write('/run/portico.sock', 108);
  const ru = done(parseProxyHeader(v2(0x21, 0x31, unix)));
  assert.equal(ru.header.family, 'unix');
  assert.deepEqual(ru.header.source, { address: '/run/client.sock', port: 0 });
  assert.deepEqual(ru.header.destination, { address: '/run/portico.sock', port: 0 });

  // LOCAL: block (even a bogus family and garbage) discarded, length still honoured (§2.2).
  const rl = done(parseProxyHeader(v2(0x20, 0xff, Buffer.alloc(7, 0xee))));
  assert.deepEqual(rl, { kind: 'done', used: 23, header: { version: 2, command: 'local', family: 'unknown', tlvs: [] } });

  for (const [fam, n] of [
    [0x12, 12],
    [0x22, 36],
    [0x32, 216],
  ]) {
    const r = done(parseProxyHeader(v2(0x21, fam, Buffer.alloc(n))));
    assert.equal(r.header.family, 'unknown');
    assert.equal(r.header.source, undefined);
  }
  const unspec = done(parseProxyHeader(v2(0x21, 0x00, Buffer.of(PP2_TYPE_ALPN, 0, 2, 0x68, 0x32))));
  assert.deepEqual(unspec.header.tlvs, [{ type: PP2_TYPE_ALPN, value: v1('h2') }]);
});

test('v2 malformed corpus -> error', () => {
  const addr4 = Buffer.alloc(12);
  const cases: Array<[string, Buffer, RegExp, number?]> = [
    ['version 1', v2(0x11, 0x11, addr4), /version is not 2/],
    ['version 3', v2(0x31, 0x11, addr4), /version is not 2/],
    ['command 2', v2(0x22, 0x11, addr4), /command/],
    ['family 4', v2(0x21, 0x41, addr4), /family/],
    ['transport 3', v2(0x21, 0x13, addr4), /family/],
    ['TCP4 length shorter than addresses', v2(0x21, 0x11, Buffer.alloc(11)), /shorter than the address/],
    ['TCP6 length 12', v2(0x21, 0x21, addr4), /shorter than the address/],
    ['TLV header cut', v2(0x21, 0x11, Buffer.concat([addr4, Buffer.of(1, 0)])), /truncated TLV/],
    ['TLV overrun', v2(0x21, 0x11, Buffer.concat([addr4, Buffer.of(1, 0, 5, 0x61, 0x62)])), /runs past/],
    ['TLV overrun by one', v2(0x21, 0x11, Buffer.concat([addr4, Buffer.of(2, 0, 3, 0x61, 0x62)])), /runs past/],
    ['CRC32C of 3 bytes', v2(0x21, 0x11, Buffer.concat([addr4, Buffer.of(PP2_TYPE_CRC32C, 0, 3, 1, 2, 3)])), /not 4 bytes/],
    ['CRC32C wrong', v2(0x21, 0x11, Buffer.concat([addr4, Buffer.of(PP2_TYPE_CRC32C, 0, 4, 1, 2, 3, 4)])), /mismatch/],
    ['larger than maxV2Bytes', v2(0x21, 0x11, Buffer.alloc(100)), /larger than 64/, 64],
  ];
  for (const [name, buf, re, max] of cases) {
    const r = parseProxyHeader(buf, max);
    assert.equal(r.kind, 'error', name);
    assert.match((r as { reason: string }).reason, re, name);
    for (let i = 0; i < buf.length; i++) {
      const p = parseProxyHeader(buf.subarray(0, i), max);
      if (p.kind !== 'more') assert.deepEqual(p, r, `${name}: prefix ${i}`);
    }
  }
});

test('v2 length past the buffer -> more until the bytes arrive; over the bound -> error from the header alone', () => {
  const whole = v2(0x21, 0x11, Buffer.alloc(12 + 201));
  assert.equal(parseProxyHeader(whole.subarray(0, 100)).kind, 'more');
  assert.equal(done(parseProxyHeader(whole)).used, whole.length);
  const huge = v2(0x21, 0x11, Buffer.alloc(0), 0xffff);
  assert.match((parseProxyHeader(huge) as { reason: string }).reason, /larger than 16384/);
  assert.equal(parseProxyHeader(huge, 16 + 0xffff).kind, 'more');
});

// ---- builders -----------------------------------------------------------------------------------------------

test('build -> parse round trips (v1 and v2, IPv4, IPv6, mapped, TLVs, CRC32C)', () => {
  const cases: Array<[{ address: string; port: number }, { address: string; port: number }, string, string, string]> = [
    [{ address: '192.0.2.1', port: 5000 }, { address: '198.51.100.2', port: 443 }, 'tcp4', '192.0.2.1', '198.51.100.2'],
    [{ address: '::ffff:192.0.2.1', port: 1 }, { address: '192.0.2.9', port: 2 }, 'tcp4', '192.0.2.1', '192.0.2.9'],
    [{ address: '2001:db8::1', port: 0 }, { address: '2001:DB8:0:0:1:0:0:1', port: 65535 }, 'tcp6', '2001:db8::1', '2001:db8::1:0:0:1'],
    [{ address: '192.0.2.1', port: 7 }, { address: '::1', port: 8 }, 'tcp6', '::ffff:192.0.2.1', '::1'],
    [{ address: 'fe80::1%eth0', port: 7 }, { address: '::1', port: 8 }, 'tcp6', 'fe80::1', '::1'],
  ];
  const tlvs = [
    { type: PP2_TYPE_AUTHORITY, value: v1('a.example') },
    { type: PP2_TYPE_ALPN, value: v1('h2') },
  ];
  for (const [src, dst, family, sa, da] of cases) {
    for (const buf of [buildProxyV1(src, dst), buildProxyV2(src, dst), buildProxyV2(src, dst, tlvs, { crc32c: true })]) {
      const r = done(parseProxyHeader(buf));
      assert.equal(r.used, buf.length);
      assert.equal(r.header.family, family);
      assert.deepEqual(r.header.source, { address: sa, port: src.port });
      assert.deepEqual(r.header.destination, { address: da, port: dst.port });
      assertSplitEverywhere(buf, parseProxyHeader(buf));
    }
  }
  const withCrc = done(parseProxyHeader(buildProxyV2(cases[0][0], cases[0][1], tlvs, { crc32c: true })));
  assert.deepEqual(withCrc.header.tlvs.slice(0, 2), tlvs);
  assert.equal(withCrc.header.tlvs[2].type, PP2_TYPE_CRC32C);
});

test('builders with unknown endpoints -> v1 UNKNOWN, v2 PROXY/UNSPEC; LOCAL builder', () => {
  assert.equal(buildProxyV1(undefined, { address: '1.2.3.4', port: 1 }).toString('latin1'), 'PROXY UNKNOWN\r\n');
  assert.equal(buildProxyV1({ address: 'nope', port: 1 }, { address: '1.2.3.4', port: 1 }).toString('latin1'), 'PROXY UNKNOWN\r\n');
  assert.equal(buildProxyV1({ address: '1.2.3.4', port: 70000 }, { address: '1.2.3.4', port: 1 }).toString('latin1'), 'PROXY UNKNOWN\r\n');
  assert.equal(buildProxyV1({ address: '1.2.3.4', port: 1 }, { address: '5.6.7.8', port: 2 }).toString('latin1'), 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n');
  // §2.1 spells IPv6 as hex groups: no dotted tail on the wire.
  assert.equal(buildProxyV1({ address: '1.2.3.4', port: 1 }, { address: '::1', port: 2 }).toString('latin1'), 'PROXY TCP6 ::ffff:102:304 ::1 1 2\r\n');
  const u = done(parseProxyHeader(buildProxyV2(undefined, undefined)));
  assert.deepEqual(u.header, { version: 2, command: 'proxy', family: 'unknown', tlvs: [] });
  const l = done(parseProxyHeader(buildProxyV2Local()));
  assert.equal(l.header.command, 'local');
  assert.throws(() => buildProxyV2(undefined, undefined, [{ type: 300, value: Buffer.alloc(0) }]), RangeError);
  assert.throws(() => buildProxyV2(undefined, undefined, [{ type: 1, value: Buffer.alloc(70000) }]), RangeError);
});

test('crc32c matches the RFC 3720 check value', () => {
  assert.equal(crc32c(v1('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
});

// ---- CIDR matcher -------------------------------------------------------------------------------------------

test('CIDR matcher tables: IPv4, IPv6, IPv4-mapped both ways, zones, bare addresses', () => {
  const m = createCidrMatcher(['10.0.0.0/8', '192.168.1.7', '2001:db8::/32', '::ffff:172.16.0.0/108', 'fe80::/10']);
  assert.ok(m.ok);
  const table: Array<[string, boolean]> = [
    ['10.1.2.3', true],
    ['10.255.255.255', true],
    ['11.0.0.0', false],
    ['9.255.255.255', false],
    ['::ffff:10.9.9.9', true],
    ['::FFFF:a00:1', true],
    ['192.168.1.7', true],
    ['192.168.1.8', false],
    ['::ffff:192.168.1.7', true],
    ['2001:db8:1::5', true],
    ['2001:db9::1', false],
    ['172.16.5.5', true], // IPv4 address against an IPv4-mapped CIDR
    ['172.32.0.1', false],
    ['fe80::1%eth0', true],
    ['::1', false],
    ['', false],
    ['not an ip', false],
    ['10.0.0.1/8', false],
    ['010.0.0.1', false],
  ];
  for (const [addr, want] of table) assert.equal(m.match(addr), want, addr);

  const all = createCidrMatcher(['0.0.0.0/0']);
  assert.ok(all.ok && all.match('8.8.8.8') && all.match('::ffff:8.8.8.8') && !all.match('::1'));
  const all6 = createCidrMatcher(['::/0']);
  assert.ok(all6.ok && all6.match('::1') && all6.match('1.2.3.4'));
  const loop = createCidrMatcher(['127.0.0.0/8', '::1/128']);
  assert.ok(loop.ok && loop.match('127.0.0.1') && loop.match('::1') && !loop.match('::2'));
  const odd = createCidrMatcher(['10.0.0.0/9', '2001:db8:8000::/33']);
  assert.ok(odd.ok && odd.match('10.127.0.1') && !odd.match('10.128.0.1') && odd.match('2001:db8:8000::1') && !odd.match('2001:db8:7fff::1'));
  const none = createCidrMatcher([]);
  assert.ok(none.ok && !none.match('127.0.0.1'));
});

test('bad CIDRs -> every error listed with its index', () => {
  const bad = ['10.0.0.0/33', '10.0.0.1/8', 'fe80::1%eth0/64', '2001:db8::/129', ' 10.0.0.0/8', '10.0.0.0/', '10.0.0.0/08', 'example.com', '1.2.3.4/-1', '::/x'];
  const r = createCidrMatcher(['127.0.0.1', ...bad]);
  assert.equal(r.ok, false);
  const errors = (r as { errors: Array<{ index: number; cidr: string; reason: string }> }).errors;
  assert.deepEqual(
    errors.map((e) => e.index),
    bad.map((_, i) => i + 1),
  );
  assert.match(errors[1].reason, /bits set after the \/8/);
  assert.match(errors[0].reason, /prefix must be 0\.\.32/);
  for (const b of bad) assert.equal(typeof checkCidr(b), 'string', b);
  for (const g of ['0.0.0.0/0', '::/0', '10.0.0.0/8', '::ffff:0:0/96', '1.2.3.4']) assert.equal(checkCidr(g), undefined, g);
});

test('IPv6 text parsing agrees with node:net on a table of edge cases', () => {
  const samples = ['::', '::1', '1::', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8:9', '1::2::3', ':1::', '1:::2', '::ffff:1.2.3.4', '1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:7:1.2.3.4', '::1.2.3', '::01.2.3.4', '12345::', 'g::', '1:', ':1', '0000:0000::', '::ffff:255.255.255.255'];
  const m = createCidrMatcher(['::/0']);
  assert.ok(m.ok);
  for (const s of samples) assert.equal(m.match(s), isIPv6(s), s);
});
