// Property tests of the head parser and chunked scanner with fast-check, under a time budget (~5 s in all):
// never throws, never reads past the input, split delivery equals whole delivery, limits hold,
// and every done head keeps the invariants the proxy relies on (no CTL in values, no CL+TE, tokens only).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ChunkedScanner, parseRequestHead, parseResponseHead, type HeadLimits, type ParseResult, type RequestHead, type ResponseHead } from '../../src/wire/http-head.js';
import { inJunk, mutate, mutationArb as mutationArbOf } from '../helpers/fuzz.js';

/** Per-property time budget; properties stop early (as a pass) when it runs out. */
const BUDGET_MS = 700;
const RUNS = 1_000_000;
const opts = { numRuns: RUNS, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

const VALID_REQUESTS = [
  'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
  'GET /Tomcat/x?y=1 HTTP/1.1\r\nHost: Example.com:8443\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n',
  '\r\nPOST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'POST /u HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 3\r\n\r\nabc',
  'GET http://a.example:81/p?q HTTP/1.1\r\nHost: A.example:81\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n',
  'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n',
  'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n',
].map((s) => Buffer.from(s, 'latin1'));

const VALID_RESPONSES = [
  'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello',
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: keep-alive\r\n\r\n',
  'HTTP/1.0 204\r\nServer: x\r\n\r\n',
].map((s) => Buffer.from(s, 'latin1'));

const VALID_CHUNKED = [
  '5\r\nhello\r\n0\r\n\r\n',
  '3;a=b;c="d\\"e"\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: v\r\n\r\n',
  '0\r\n\r\n',
].map((s) => Buffer.from(s, 'latin1'));

/** Bytes that sit on the parser's decision edges. */
const EDGE_BYTES = [0x0d, 0x0a, 0x20, 0x09, 0x3a, 0x2c, 0x3b, 0x3d, 0x22, 0x5c, 0x00, 0x7f, 0x80, 0xff, 0x30, 0x31, 0x39, 0x61, 0x66, 0x41, 0x2f, 0x3f, 0x23, 0x2a, 0x5b, 0x5d];

const limitsArb: fc.Arbitrary<HeadLimits> = fc.record({
  headerSize: fc.constantFrom(16, 48, 100, 300, 32 * 1024),
  uriSize: fc.constantFrom(1, 8, 40, 8 * 1024),
  headers: fc.constantFrom(0, 1, 2, 100),
});

const mutationArb = mutationArbOf(EDGE_BYTES);



/** Delivers growing prefixes cut at `cuts`; the first result that is not 'more' (or the whole one) is returned. */
function deliverSplit<H>(buf: Buffer, cuts: readonly number[], parse: (b: Buffer) => ParseResult<H>): ParseResult<H> {
  const points = [...new Set(cuts.map((c) => (buf.length === 0 ? 0 : c % buf.length)))].sort((a, b) => a - b);
  for (const p of points) {
    const r = parse(Buffer.from(buf.subarray(0, p)));
    if (r.kind !== 'more') return r;
  }
  return parse(Buffer.from(buf));
}

const TCHAR = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// eslint-disable-next-line no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;

function checkCommon(r: ParseResult<RequestHead> | ParseResult<ResponseHead>, buf: Buffer, limits: HeadLimits): void {
  if (r.kind === 'more') {
    assert.ok(buf.length < limits.headerSize, 'more although the head window is full');
    return;
  }
  if (r.kind === 'error') {
    assert.ok(r.reason.length > 0);
    return;
  }
  const h = r.head;
  assert.ok(r.used > 0 && r.used <= buf.length && r.used <= limits.headerSize, `used ${r.used}`);
  assert.ok(h.headers.length / 2 <= limits.headers);
  assert.equal(h.headers.length % 2, 0);
  for (let i = 0; i < h.headers.length; i += 2) {
    assert.match(h.headers[i], TCHAR);
    assert.doesNotMatch(h.headers[i + 1], BAD_VALUE);
    assert.equal(h.headers[i + 1], h.headers[i + 1].replace(/^[ \t]+|[ \t]+$/g, ''));
  }
  assert.ok(!(h.chunked && h.contentLength >= 0) || h.bodyKind === 'none', 'CL and TE together');
  assert.ok(h.contentLength >= -1 && h.contentLength <= Number.MAX_SAFE_INTEGER);
  assert.equal(buf.subarray(r.used - 4, r.used).toString('latin1'), '\r\n\r\n');
}

function checkRequest(r: ParseResult<RequestHead>, buf: Buffer, limits: HeadLimits): void {
  checkCommon(r, buf, limits);
  if (r.kind !== 'done') return;
  const h = r.head;
  assert.match(h.method, TCHAR);
  assert.ok(h.target.length <= limits.uriSize);
  assert.doesNotMatch(h.target, /[\x00-\x20\x7f-\xff#]/);
  assert.notEqual(h.bodyKind, 'close');
  if (h.versionMinor === 1) assert.ok(h.host !== undefined);
  if (h.host !== undefined) assert.equal(h.host, h.host.toLowerCase());
  assert.equal(h.headers.filter((_, i) => i % 2 === 0 && h.headers[i].toLowerCase() === 'content-length').length <= 1, true);
}

test('fuzz: request parser never throws on random bytes; limits and invariants hold', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), limitsArb, (arr, limits) => {
      const buf = Buffer.from(arr);
      checkRequest(parseRequestHead(buf, limits), buf, limits);
    }),
    opts,
  );
});

test('fuzz: mutated valid requests: split delivery equals whole, no read past the input, invariants hold', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...VALID_REQUESTS),
      fc.array(mutationArb, { maxLength: 4 }),
      fc.array(fc.nat(), { maxLength: 6 }),
      limitsArb,
      fc.constantFrom(0x0a, 0x0d, 0x41),
      (base, mutations, cuts, limits, junk) => {
        const buf = mutate(base, mutations);
        const whole = parseRequestHead(buf, limits);
        checkRequest(whole, buf, limits);
        assert.deepEqual(parseRequestHead(inJunk(buf, junk), limits), whole, 'result depends on bytes past the input');
        assert.deepEqual(deliverSplit(buf, cuts, (b) => parseRequestHead(b, limits)), whole, 'split differs from whole');
      },
    ),
    opts,
  );
});

test('fuzz: response parser never throws; mutated valid responses split like the whole', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
        fc.tuple(fc.constantFrom(...VALID_RESPONSES), fc.array(mutationArb, { maxLength: 4 })).map(([b, m]) => mutate(b, m)),
      ),
      fc.array(fc.nat(), { maxLength: 6 }),
      limitsArb,
      fc.constantFrom('GET', 'HEAD', 'CONNECT', 'POST'),
      (buf, cuts, limits, method) => {
        const whole = parseResponseHead(buf, limits, method);
        checkCommon(whole, buf, limits);
        if (whole.kind === 'done') {
          if (whole.head.bodyKind === 'close') assert.equal(whole.head.keepAlive, false);
          assert.ok(whole.head.status >= 100 && whole.head.status <= 599);
        }
        assert.deepEqual(parseResponseHead(inJunk(buf, 0x0a), limits, method), whole);
        assert.deepEqual(deliverSplit(buf, cuts, (b) => parseResponseHead(b, limits, method)), whole);
      },
    ),
    opts,
  );
});

test('fuzz: large heads (native terminator search path) split like the whole', () => {
  const filler = (n: number): string => Array.from({ length: n }, (_, i) => `X-F${i}: ${'v'.repeat(50)}\r\n`).join('');
  const big = [
    Buffer.from(`GET / HTTP/1.1\r\nHost: a\r\n${filler(60)}\r\n`, 'latin1'),
    Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: 1\r\n${filler(60)}\r\n`, 'latin1'),
  ];
  fc.assert(
    fc.property(fc.constantFrom(0, 1), fc.array(mutationArb, { maxLength: 3 }), fc.array(fc.nat(), { maxLength: 4 }), (which, mutations, cuts) => {
      const limits: HeadLimits = { headerSize: 32 * 1024, uriSize: 8 * 1024, headers: 100 };
      const buf = mutate(big[which], mutations);
      if (which === 0) {
        const whole = parseRequestHead(buf, limits);
        checkRequest(whole, buf, limits);
        assert.deepEqual(deliverSplit(buf, cuts, (b) => parseRequestHead(b, limits)), whole);
      } else {
        const whole = parseResponseHead(buf, limits, 'GET');
        checkCommon(whole, buf, limits);
        assert.deepEqual(deliverSplit(buf, cuts, (b) => parseResponseHead(b, limits, 'GET')), whole);
      }
    }),
    opts,
  );
});

interface ScanOutcome {
  consumed: number;
  done: boolean;
  failed: boolean;
}

function scanPieces(buf: Buffer, cuts: readonly number[]): ScanOutcome {
  const points = [...new Set(cuts.map((c) => (buf.length === 0 ? 0 : c % buf.length)))].sort((a, b) => a - b);
  const bounds = [0, ...points, buf.length];
  const s = new ChunkedScanner(64, 128);
  let consumed = 0;
  for (let i = 0; i + 1 < bounds.length; i++) {
    // pushes with a start offset into a shared buffer, as the forwarder does with a read chunk
    const piece = buf.subarray(0, bounds[i + 1]);
    const n = s.push(piece, bounds[i]);
    if (n < 0) return { consumed: -1, done: false, failed: true };
    assert.ok(n <= bounds[i + 1] - bounds[i], 'consumed more than given');
    consumed += n;
    if (s.done) return { consumed, done: true, failed: false };
    assert.equal(n, bounds[i + 1] - bounds[i], 'stopped early without being done');
  }
  return { consumed, done: s.done, failed: false };
}

test('fuzz: chunked scanner never takes more than given, never throws, split equals whole', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
        fc.tuple(fc.constantFrom(...VALID_CHUNKED), fc.array(mutationArb, { maxLength: 4 }), fc.uint8Array({ maxLength: 8 })).map(([b, m, tail]) =>
          Buffer.concat([mutate(b, m), Buffer.from(tail)]),
        ),
      ),
      fc.array(fc.nat(), { maxLength: 6 }),
      (buf, cuts) => {
        const whole = scanPieces(buf, []);
        assert.deepEqual(scanPieces(buf, cuts), whole);
        if (whole.done) assert.ok(whole.consumed <= buf.length);
      },
    ),
    opts,
  );
});

test('fuzz: unmutated chunked bodies end exactly where they end, whatever follows', () => {
  fc.assert(
    fc.property(fc.constantFrom(...VALID_CHUNKED), fc.uint8Array({ maxLength: 20 }), fc.array(fc.nat(), { maxLength: 6 }), (body, tail, cuts) => {
      const buf = Buffer.concat([body, Buffer.from(tail)]);
      assert.deepEqual(scanPieces(buf, cuts), { consumed: body.length, done: true, failed: false });
    }),
    opts,
  );
});
