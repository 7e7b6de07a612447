// ClientHello parser: real hellos from Node's TLS client, openssl s_client and curl (captured raw by a plain TCP
// server on loopback), delivered whole, cut at every offset and re-fragmented across TLS records; plus a
// malformed corpus built field by field, each case naming the rule it breaks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { parseClientHello, type ClientHello, type ClientHelloResult } from '../../src/wire/client-hello.js';
import { captureNodeHello, startCapture } from '../helpers/client-hello-capture.js';
import { hasCommand, needPeer } from '../helpers/peers.js';

// ---- building hellos byte by byte -------------------------------------------------------------------------

const u8 = (n: number): Buffer => Buffer.of(n & 0xff);
const u16 = (n: number): Buffer => Buffer.of((n >> 8) & 0xff, n & 0xff);
const u24 = (n: number): Buffer => Buffer.of((n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
const vec8 = (b: Buffer): Buffer => Buffer.concat([u8(b.length), b]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);
const ext = (type: number, data: Buffer): Buffer => Buffer.concat([u16(type), vec16(data)]);
const sniExt = (...names: string[]): Buffer => ext(0, vec16(Buffer.concat(names.map((n) => Buffer.concat([u8(0), vec16(Buffer.from(n, 'latin1'))])))));
const alpnExt = (...names: string[]): Buffer => ext(16, vec16(Buffer.concat(names.map((n) => vec8(Buffer.from(n, 'latin1'))))));
const versionsExt = (...v: number[]): Buffer => ext(43, vec8(Buffer.concat(v.map(u16))));

interface HelloParts {
  version?: number;
  sessionId?: Buffer;
  suites?: Buffer;
  compression?: Buffer;
  /** Extension bytes, or null for no extensions block at all (TLS 1.2 allows it). */
  exts?: Buffer[] | null;
  extsLength?: number;
  trailing?: Buffer;
}

/** A ClientHello handshake message (type + 24-bit length + body). */
function helloMessage(p: HelloParts = {}): Buffer {
  const extBytes = p.exts === null ? null : Buffer.concat(p.exts ?? [sniExt('a.example'), alpnExt('h2', 'http/1.1'), versionsExt(0x0304, 0x0303)]);
  const body = Buffer.concat([
    u16(p.version ?? 0x0303),
    Buffer.alloc(32, 7),
    vec8(p.sessionId ?? Buffer.alloc(32, 1)),
    vec16(p.suites ?? Buffer.of(0x13, 0x01, 0x13, 0x02)),
    vec8(p.compression ?? Buffer.of(0)),
    extBytes === null ? Buffer.alloc(0) : Buffer.concat([u16(p.extsLength ?? extBytes.length), extBytes]),
    p.trailing ?? Buffer.alloc(0),
  ]);
  return Buffer.concat([u8(1), u24(body.length), body]);
}

/** Wraps handshake bytes into handshake records of the given payload sizes (the last size repeats). */
function records(hs: Buffer, sizes: readonly number[] = [16384], version = 0x0301): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  let k = 0;
  while (at < hs.length) {
    const n = Math.min(sizes[Math.min(k++, sizes.length - 1)], hs.length - at);
    out.push(Buffer.concat([u8(0x16), u16(version), u16(n), hs.subarray(at, at + n)]));
    at += n;
  }
  return Buffer.concat(out);
}

/** The handshake bytes carried by a stream of records (inverse of `records`). */
function unwrap(buf: Buffer, recordBytes: number): Buffer {
  const out: Buffer[] = [];
  for (let p = 0; p < recordBytes; ) {
    const n = buf.readUInt16BE(p + 3);
    out.push(buf.subarray(p + 5, p + 5 + n));
    p += 5 + n;
  }
  return Buffer.concat(out);
}

function done(r: ClientHelloResult): ClientHello {
  assert.equal(r.kind, 'done', r.kind === 'error' ? r.reason : r.kind);
  return (r as { kind: 'done'; hello: ClientHello }).hello;
}

function errorOf(buf: Buffer, maxBytes?: number): string {
  const r = parseClientHello(buf, maxBytes);
  assert.equal(r.kind, 'error', `expected an error, got ${r.kind}`);
  return (r as { reason: string }).reason;
}

/** Every strict prefix says 'more'; the whole buffer (also as a view inside junk) gives `expected`. */
function assertSplitEverywhere(buf: Buffer, expected: ClientHelloResult): void {
  for (let i = 0; i < buf.length; i++) {
    const r = parseClientHello(Buffer.from(buf.subarray(0, i)));
    if (r.kind !== 'more') assert.deepEqual(r, expected, `prefix ${i} of ${buf.length}`);
  }
  const big = Buffer.alloc(buf.length + 64, 0x16);
  buf.copy(big, 32);
  assert.deepEqual(parseClientHello(big.subarray(32, 32 + buf.length)), expected);
}

// ---- real clients -------------------------------------------------------------------------------------------

test('Node TLS 1.3 client with SNI and ALPN -> name lower-cased, ALPN in order, 1.3 offered', async () => {
  const raw = await captureNodeHello({ servername: 'Node.Example', ALPNProtocols: ['h2', 'http/1.1'], minVersion: 'TLSv1.3' });
  const h = done(parseClientHello(raw));
  assert.equal(h.sni, 'node.example');
  assert.deepEqual(h.alpn, ['h2', 'http/1.1']);
  assert.deepEqual(h.supportedVersions, [0x0304]);
  assert.equal(h.tlsVersion, 0x0303);
  assert.equal(h.recordBytes, raw.length);
  assertSplitEverywhere(raw, parseClientHello(raw));
});

test('Node TLS 1.2-only client -> no supported_versions, legacy version 1.2', async () => {
  const raw = await captureNodeHello({ servername: 'twelve.example', maxVersion: 'TLSv1.2' });
  const h = done(parseClientHello(raw));
  assert.equal(h.sni, 'twelve.example');
  assert.deepEqual(h.alpn, []);
  assert.ok(!h.supportedVersions.includes(0x0304));
  assert.equal(h.tlsVersion, 0x0303);
  assertSplitEverywhere(raw, parseClientHello(raw));
});

test('Node client to an IP without servername or ALPN -> no SNI, empty ALPN', async () => {
  const raw = await captureNodeHello({});
  const h = done(parseClientHello(raw));
  assert.equal(h.sni, undefined);
  assert.deepEqual(h.alpn, []);
  assert.ok(h.supportedVersions.includes(0x0304));
});

test('real hello re-fragmented across records (1, 2, 3, 7, 100 byte payloads) -> same hello', async () => {
  const raw = await captureNodeHello({ servername: 'frag.example', ALPNProtocols: ['http/1.1'] });
  const whole = done(parseClientHello(raw));
  const hs = unwrap(raw, whole.recordBytes);
  for (const sizes of [[1], [2], [3], [7], [100], [3, 1, 500], [4, 16384]]) {
    const buf = records(hs, sizes);
    const h = done(parseClientHello(buf));
    assert.deepEqual({ ...h, recordBytes: 0 }, { ...whole, recordBytes: 0 }, `sizes ${sizes.join(',')}`);
    assert.equal(h.recordBytes, buf.length);
  }
  // Split delivery of a fragmented stream too (handshake header split over records included).
  const frag = records(hs, [3, 5, 64]);
  assertSplitEverywhere(frag, parseClientHello(frag));
});

test('bytes after the hello (next records) are not counted in recordBytes', async () => {
  const raw = await captureNodeHello({ servername: 'next.example' });
  const h = done(parseClientHello(raw));
  const more = Buffer.concat([raw.subarray(0, h.recordBytes), Buffer.from([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]), Buffer.from('junk')]);
  assert.equal(done(parseClientHello(more)).recordBytes, h.recordBytes);
});

test('openssl s_client hello -> SNI and ALPN read', async (t) => {
  if (!needPeer(t, 'openssl', hasCommand('openssl', ['version']))) return;
  const cap = await startCapture();
  const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${cap.port}`, '-servername', 'OpenSSL.example', '-alpn', 'h2,http/1.1'], { stdio: ['pipe', 'ignore', 'ignore'] });
  t.after(() => {
    child.kill();
    cap.close();
  });
  child.on('error', () => {});
  const raw = await cap.bytes;
  const h = done(parseClientHello(raw));
  assert.equal(h.sni, 'openssl.example');
  assert.deepEqual(h.alpn, ['h2', 'http/1.1']);
  assert.ok(h.supportedVersions.includes(0x0304));
  assertSplitEverywhere(raw, parseClientHello(raw));
});

test('curl hello -> SNI for a name, none for an IP literal (RFC 6066 §3)', async (t) => {
  if (!needPeer(t, 'curl', hasCommand('curl'))) return;
  for (const [url, sni] of [
    ['https://curl.example:PORT/', 'curl.example'],
    ['https://127.0.0.1:PORT/', undefined],
  ] as const) {
    const cap = await startCapture();
    const target = url.replace('PORT', String(cap.port));
    const child = spawn('curl', ['-sk', '--max-time', '10', '--resolve', `curl.example:${cap.port}:127.0.0.1`, target], { stdio: 'ignore' });
    t.after(() => {
      child.kill();
      cap.close();
    });
    child.on('error', () => {});
    const raw = await cap.bytes;
    const h = done(parseClientHello(raw));
    assert.equal(h.sni, sni, target);
    assert.ok(h.alpn.includes('http/1.1'), `ALPN ${h.alpn.join(',')}`);
  }
});

// ---- telling TLS from plaintext -----------------------------------------------------------------------------

test('plaintext HTTP, HTTP/2 preface and SSLv2 hellos -> not_tls after one byte', () => {
  for (const s of ['GET / HTTP/1.1\r\n', 'PRI * HTTP/2.0\r\n', 'P', '\r\n']) assert.deepEqual(parseClientHello(Buffer.from(s, 'latin1')), { kind: 'not_tls' });
  assert.deepEqual(parseClientHello(Buffer.of(0x80, 0x2e, 0x01)), { kind: 'not_tls' });
  assert.deepEqual(parseClientHello(Buffer.alloc(0)), { kind: 'more' });
  assert.deepEqual(parseClientHello(Buffer.of(0x16)), { kind: 'more' });
});

// ---- synthetic hellos ---------------------------------------------------------------------------------------

test('synthetic hello -> all fields; TLS 1.2 hello without any extensions block', () => {
  const h = done(parseClientHello(records(helloMessage())));
  assert.deepEqual(h, { sni: 'a.example', alpn: ['h2', 'http/1.1'], tlsVersion: 0x0303, recordVersion: 0x0301, supportedVersions: [0x0304, 0x0303], recordBytes: h.recordBytes });
  const bare = done(parseClientHello(records(helloMessage({ exts: null }), [16384], 0x0303)));
  assert.deepEqual(bare.alpn, []);
  assert.equal(bare.sni, undefined);
  assert.equal(bare.recordVersion, 0x0303);
});

test('valid names: upper case lowered, underscore, punycode, 63-char labels, 253 chars', () => {
  const label63 = 'a'.repeat(63);
  const name253 = [label63, label63, label63, 'b'.repeat(61)].join('.');
  for (const [name, want] of [
    ['WWW.Example.COM', 'www.example.com'],
    ['_svc.internal', '_svc.internal'],
    ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
    ['localhost', 'localhost'],
    [`${label63}.example`, `${label63}.example`],
    [name253, name253],
    ['1.2.3.example', '1.2.3.example'],
  ]) {
    assert.equal(done(parseClientHello(records(helloMessage({ exts: [sniExt(name)] })))).sni, want, name);
  }
});

test('unknown name types in server_name are skipped as opaque', () => {
  const other = Buffer.concat([u8(7), vec16(Buffer.from('whatever'))]);
  const host = Buffer.concat([u8(0), vec16(Buffer.from('ok.example'))]);
  const h = done(parseClientHello(records(helloMessage({ exts: [ext(0, vec16(Buffer.concat([other, host])))] }))));
  assert.equal(h.sni, 'ok.example');
});

test('an IP literal in SNI names no host, as OpenSSL takes it (wrk, older Java send one): done without sni; a second host_name after it is still refused', () => {
  const hello = (names: string[]): Buffer => records(helloMessage({ exts: [sniExt(...names)] }));
  for (const ip of ['192.168.0.1', '127.0.0.1', '1.2.3.999', 'a.b.3', '::1', '2001:DB8::7', '::ffff:10.0.0.1']) {
    const h = done(parseClientHello(hello([ip])));
    assert.equal(h.sni, undefined, ip);
    assertSplitEverywhere(hello([ip]), parseClientHello(hello([ip])));
  }
  assert.deepEqual(parseClientHello(hello(['10.0.0.1', 'a.example'])), { kind: 'error', reason: 'more than one host_name in server_name (RFC 6066 §3)' });
  assert.deepEqual(parseClientHello(hello(['a.example', '10.0.0.1'])), { kind: 'error', reason: 'more than one host_name in server_name (RFC 6066 §3)' });
  // still validated as a name first: a broken label is an error, not an address
  assert.equal(parseClientHello(hello(['1..2'])).kind, 'error');
});

test('malformed corpus -> error naming the broken rule', () => {
  const hello = (p: HelloParts): Buffer => records(helloMessage(p));
  const cases: Array<[string, Buffer, RegExp, number?]> = [
    ['SNI trailing dot', hello({ exts: [sniExt('a.example.')] }), /trailing dot/],
    ['SNI IPv6-like with another character', hello({ exts: [sniExt('::1g')] }), /character/],
    ['SNI space', hello({ exts: [sniExt('a b.example')] }), /character/],
    ['SNI non-ASCII', hello({ exts: [sniExt('b\xfccher.example')] }), /character/],
    ['SNI empty label', hello({ exts: [sniExt('a..example')] }), /empty label/],
    ['SNI leading dot', hello({ exts: [sniExt('.example')] }), /empty label/],
    ['SNI label of 64', hello({ exts: [sniExt(`${'a'.repeat(64)}.example`)] }), /63/],
    ['SNI of 254 chars', hello({ exts: [sniExt(`${'a'.repeat(63)}.`.repeat(3) + 'b'.repeat(62))] }), /253/],
    ['SNI hyphen edge', hello({ exts: [sniExt('-a.example')] }), /hyphen/],
    ['two host_names', hello({ exts: [sniExt('a.example', 'b.example')] }), /more than one host_name/],
    ['empty server_name list', hello({ exts: [ext(0, u16(0))] }), /server_name list/],
    ['empty server_name extension', hello({ exts: [ext(0, Buffer.alloc(0))] }), /truncated/],
    ['zero-length host name', hello({ exts: [ext(0, vec16(Buffer.concat([u8(0), u16(0)])))] }), /entry length/],
    ['server_name list overrun', hello({ exts: [ext(0, Buffer.concat([u16(40), u8(0), vec16(Buffer.from('a.example'))]))] }), /list length/],
    ['empty ALPN name', hello({ exts: [ext(16, vec16(Buffer.concat([vec8(Buffer.from('h2')), u8(0)])))] }), /empty ALPN/],
    ['ALPN name overrun', hello({ exts: [ext(16, vec16(Buffer.concat([u8(9), Buffer.from('h2')])))] }), /runs past/],
    ['ALPN list too short', hello({ exts: [ext(16, u16(0))] }), /ALPN list length/],
    ['supported_versions odd', hello({ exts: [ext(43, vec8(Buffer.of(3, 4, 3)))] }), /supported_versions/],
    ['supported_versions empty', hello({ exts: [ext(43, vec8(Buffer.alloc(0)))] }), /supported_versions/],
    ['duplicate extension', hello({ exts: [alpnExt('h2'), alpnExt('h2')] }), /duplicate/],
    ['pre_shared_key not last', hello({ exts: [ext(41, Buffer.alloc(4)), alpnExt('h2')] }), /pre_shared_key/],
    ['extension past block', hello({ exts: [Buffer.concat([u16(16), u16(50), Buffer.alloc(4)])] }), /runs past/],
    ['extension header cut', hello({ exts: [Buffer.of(0, 1)] }), /header truncated/],
    ['extensions length mismatch', hello({ extsLength: 3 }), /extensions length/],
    ['trailing bytes after extensions', hello({ trailing: Buffer.of(0) }), /extensions length/],
    ['session id of 33', hello({ sessionId: Buffer.alloc(33) }), /session_id/],
    ['odd cipher_suites', hello({ suites: Buffer.of(0x13, 0x01, 0x13) }), /cipher_suites/],
    ['no cipher_suites', hello({ suites: Buffer.alloc(0) }), /cipher_suites/],
    ['no compression methods', hello({ compression: Buffer.alloc(0) }), /compression/],
    ['legacy_version 2.0', hello({ version: 0x0200 }), /legacy_version/],
    ['handshake type 2', records(Buffer.concat([u8(2), helloMessage().subarray(1)])), /not a ClientHello/],
    ['record version 2.x', Buffer.concat([Buffer.of(0x16, 0x02, 0x00), hello({}).subarray(3)]), /major is not 3/],
    ['record longer than 2^14', Buffer.concat([Buffer.of(0x16, 0x03, 0x01), u16(16385)]), /2\^14/],
    ['zero-length record', Buffer.concat([Buffer.of(0x16, 0x03, 0x01, 0, 0), hello({})]), /zero-length/],
    ['alert between fragments', (() => {
      const f = records(helloMessage(), [10]);
      return Buffer.concat([f.subarray(0, 15), Buffer.of(0x15, 0x03, 0x03, 0, 2, 2, 40), f.subarray(15)]);
    })(), /non-handshake/],
    ['bytes after the hello in its record', (() => {
      const hs = Buffer.concat([helloMessage(), Buffer.of(1, 0, 0, 0)]);
      return records(hs);
    })(), /after the ClientHello/],
    ['body shorter than its fixed fields', records(Buffer.concat([u8(1), u24(10), Buffer.alloc(10)])), /too short/],
    ['cipher_suites past the message', records(Buffer.concat([u8(1), u24(38), u16(0x0303), Buffer.alloc(32), u8(0), u16(100), Buffer.of(0)])), /truncated/],
    ['hello larger than maxBytes', hello({}), /larger than 64 bytes/, 64],
    ['handshake length beyond maxBytes', Buffer.concat([Buffer.of(0x16, 0x03, 0x01), u16(4), Buffer.of(1), u24(20000)]), /larger than 16384/],
  ];
  for (const [name, buf, re, max] of cases) {
    assert.equal(parseClientHello(buf, max).kind, 'error', name);
    assert.match(errorOf(buf, max), re, name);
    // Every prefix is 'more' or the same error: nothing depends on where a read ended.
    const expected = parseClientHello(buf, max);
    for (let i = 0; i < buf.length; i++) {
      const r = parseClientHello(buf.subarray(0, i), max);
      if (r.kind !== 'more') assert.deepEqual(r, expected, `${name}: prefix ${i}`);
    }
  }
});

test('a hello that fits maxBytes exactly is accepted; one byte less is refused early', () => {
  const buf = records(helloMessage());
  assert.equal(done(parseClientHello(buf, buf.length)).recordBytes, buf.length);
  assert.match(errorOf(buf, buf.length - 1), /larger than/);
  // Refused from the handshake header alone, long before the bytes arrive.
  assert.match(errorOf(buf.subarray(0, 9), buf.length - 1), /larger than/);
});

test('a stream of tiny records is bounded by maxBytes, not by the hello length', () => {
  const buf = records(helloMessage(), [1]);
  assert.ok(buf.length > 400);
  assert.equal(parseClientHello(buf.subarray(0, 300), 300).kind, 'error');
  assert.equal(done(parseClientHello(buf, buf.length)).recordBytes, buf.length);
});
