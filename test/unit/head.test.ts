// Head parser and chunked scanner: valid heads of every form, a named corpus of malformed and smuggling heads,
// split delivery at every offset equal to whole delivery, limits (431/414) complete and incomplete,
// response framing rules (RFC 9112 §6.3), and chunked bodies valid and invalid, split at every offset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ChunkedScanner,
  MAX_LEADING_EMPTY_LINES,
  parseRequestHead,
  parseResponseHead,
  type HeadLimits,
  type ParseResult,
  type RequestHead,
  type ResponseHead,
} from '../../src/wire/http-head.js';
import type { ErrorCode } from '../../src/core/errors.js';

const LIMITS: HeadLimits = { headerSize: 32 * 1024, uriSize: 8 * 1024, headers: 100 };

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');
const req = (s: string | Buffer, limits: HeadLimits = LIMITS): ParseResult<RequestHead> => parseRequestHead(typeof s === 'string' ? bytes(s) : s, limits);
const res = (s: string, method = 'GET', limits: HeadLimits = LIMITS): ParseResult<ResponseHead> => parseResponseHead(bytes(s), limits, method);

function done<H>(r: ParseResult<H>): { head: H; used: number } {
  if (r.kind !== 'done') assert.fail(`expected done, got ${JSON.stringify(r)}`);
  return r;
}
function reqHead(s: string, limits?: HeadLimits): RequestHead {
  return done(req(s, limits)).head;
}
function resHead(s: string, method = 'GET'): ResponseHead {
  return done(res(s, method)).head;
}
function assertError<H>(r: ParseResult<H>, code: ErrorCode, what: string): void {
  if (r.kind !== 'error') assert.fail(`${what}: expected ${code}, got ${JSON.stringify(r)}`);
  assert.equal(r.code, code, `${what}: ${r.reason}`);
  assert.ok(r.reason.length > 0);
}

/** Grows the input one byte at a time, as a caller accumulating a slow client would; returns the first final result. */
function deliverByteByByte<H>(buf: Buffer, parse: (b: Buffer) => ParseResult<H>): ParseResult<H> {
  for (let n = 1; n <= buf.length; n++) {
    const r = parse(Buffer.from(buf.subarray(0, n)));
    if (r.kind !== 'more') return r;
  }
  return { kind: 'more' };
}

/** Every two-piece split: the first piece is 'more' or already the whole result; then the whole result. */
function assertSplitEqualsWhole<H>(buf: Buffer, parse: (b: Buffer) => ParseResult<H>, what: string): void {
  const whole = parse(buf);
  assert.deepEqual(deliverByteByByte(buf, parse), whole, `${what}: byte-by-byte delivery`);
  for (let k = 1; k < buf.length; k++) {
    const first = parse(Buffer.from(buf.subarray(0, k)));
    if (first.kind !== 'more') assert.deepEqual(first, whole, `${what}: split at ${k}`);
    else assert.deepEqual(parse(Buffer.concat([buf.subarray(0, k), buf.subarray(k)])), whole, `${what}: split at ${k}`);
  }
}

// ---- valid request heads ------------------------------------------------------------------------------------

test('origin-form GET: method, target, path/query split, host, headers as received', () => {
  const r = done(req('GET /Tomcat/a%20b?x=1&y=?2 HTTP/1.1\r\nHost: Example.COM:8443\r\nX-Mixed-Case:  v1 \t\r\nAccept: */*\r\n\r\nNEXT'));
  assert.equal(r.used, 'GET /Tomcat/a%20b?x=1&y=?2 HTTP/1.1\r\nHost: Example.COM:8443\r\nX-Mixed-Case:  v1 \t\r\nAccept: */*\r\n\r\n'.length);
  assert.deepEqual(r.head, {
    method: 'GET',
    target: '/Tomcat/a%20b?x=1&y=?2',
    path: '/Tomcat/a%20b',
    query: '?x=1&y=?2',
    versionMinor: 1,
    headers: ['Host', 'Example.COM:8443', 'X-Mixed-Case', 'v1', 'Accept', '*/*'],
    contentLength: -1,
    chunked: false,
    bodyKind: 'none',
    keepAlive: true,
    connection: [],
    transferEncoding: undefined,
    upgrade: undefined,
    host: 'example.com',
    hostRaw: 'Example.COM:8443',
    expectContinue: false,
  });
});

test('browser-style characters that RFC 3986 lists as unsafe are accepted in the target', () => {
  const h = reqHead('GET /a|b^c/{d}[e]\\f?q=`x`&r="y" HTTP/1.1\r\nHost: a\r\n\r\n');
  assert.equal(h.path, '/a|b^c/{d}[e]\\f');
  assert.equal(h.query, '?q=`x`&r="y"');
});

test('absolute-form: path and query come from the URL, Host must agree with its authority', () => {
  let h = reqHead('GET http://Example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: example.COM:8080\r\n\r\n');
  assert.deepEqual([h.target, h.path, h.query, h.host, h.hostRaw], ['http://Example.com:8080/p/q?x=1', '/p/q', '?x=1', 'example.com', 'example.COM:8080']);
  h = reqHead('GET HTTPS://a.example?x HTTP/1.1\r\nHost: a.example:443\r\n\r\n');
  assert.deepEqual([h.path, h.query, h.host], ['/', '?x', 'a.example']);
  h = reqHead('GET http://a.example HTTP/1.1\r\nHost: a.example:80\r\n\r\n');
  assert.deepEqual([h.path, h.query], ['/', '']);
  // HTTP/1.0 without Host: the target's authority is the host
  h = reqHead('GET http://B.example:81/x HTTP/1.0\r\n\r\n');
  assert.deepEqual([h.host, h.hostRaw, h.path], ['b.example', 'B.example:81', '/x']);
});

test('asterisk-form for OPTIONS and authority-form for CONNECT parse to done heads', () => {
  let h = reqHead('OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n');
  assert.deepEqual([h.method, h.target, h.path, h.query], ['OPTIONS', '*', '*', '']);
  h = reqHead('CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n');
  assert.deepEqual([h.method, h.target, h.path, h.query, h.host], ['CONNECT', 'db.internal:5432', '', '', 'db.internal']);
  h = reqHead('CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n');
  assert.equal(h.target, '[::1]:443');
});

test('extension methods are tokens and are kept as sent', () => {
  assert.equal(reqHead('PROPFIND /d HTTP/1.1\r\nHost: a\r\n\r\n').method, 'PROPFIND');
  assert.equal(reqHead("M-SEARCH!#$%&'*+.^_`|~ * HTTP/1.1\r\nHost: a\r\n\r\n".replace(' * ', ' / ')).method, "M-SEARCH!#$%&'*+.^_`|~");
});

test('HTTP/1.0: Host optional, keep-alive only when asked for', () => {
  let h = reqHead('GET / HTTP/1.0\r\n\r\n');
  assert.deepEqual([h.versionMinor, h.host, h.hostRaw, h.keepAlive], [0, undefined, undefined, false]);
  h = reqHead('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n');
  assert.deepEqual([h.keepAlive, h.connection], [true, ['keep-alive']]);
  h = reqHead('GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n');
  assert.equal(h.keepAlive, false);
});

test('HTTP/1.1 keep-alive unless Connection: close; tokens lower-cased and merged across headers', () => {
  assert.equal(reqHead('GET / HTTP/1.1\r\nHost: a\r\n\r\n').keepAlive, true);
  const h = reqHead('GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Foo , CLOSE\r\nconnection: ,TE,\r\n\r\n');
  assert.deepEqual([h.keepAlive, h.connection], [false, ['x-foo', 'close', 'te']]);
});

test('Connection never nominates Host or the framing fields (request smuggling); their transfer-coding text is kept', () => {
  const h = reqHead('POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, HOST,transfer-encoding , X-Foo\r\nContent-Length: 3\r\n\r\n');
  assert.deepEqual([h.connection, h.bodyKind, h.contentLength, h.keepAlive], [['x-foo'], 'length', 3, true]);
  const c = reqHead('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: transfer-encoding\r\n\r\n');
  assert.deepEqual([c.connection, c.bodyKind, c.transferEncoding], [[], 'chunked', 'Chunked']);
  const r = parseResponseHead(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: content-length, close\r\nTransfer-Encoding: chunked\r\n\r\n', 'latin1'), LIMITS, 'GET');
  assert.equal(r.kind, 'done');
  if (r.kind === 'done') assert.deepEqual([r.head.connection, r.head.transferEncoding, r.head.bodyKind], [['close'], 'gzip, chunked', 'chunked']);
});

test('upgrade is the lower-cased Upgrade value only when Connection lists upgrade', () => {
  let h = reqHead('GET /wss HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n');
  assert.deepEqual([h.upgrade, h.connection], ['websocket', ['keep-alive', 'upgrade']]);
  h = reqHead('GET /wss HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n');
  assert.equal(h.upgrade, undefined);
  h = reqHead('GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n');
  assert.equal(h.upgrade, undefined);
  h = reqHead('GET /wss HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'); // RFC 9110 §7.8
  assert.deepEqual([h.upgrade, h.connection], [undefined, ['upgrade']]);
});

test('Host: IPv6 brackets kept, port stripped, lower-cased; empty Host allowed (RFC 9110 §7.2)', () => {
  assert.deepEqual([reqHead('GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n').host], ['[::1]']);
  assert.deepEqual([reqHead('GET / HTTP/1.1\r\nHost: [FE80::A]\r\n\r\n').host], ['[fe80::a]']);
  assert.deepEqual([reqHead('GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n').host], ['127.0.0.1']);
  assert.deepEqual([reqHead('GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n').host], ['a.example']);
  const h = reqHead('GET / HTTP/1.1\r\nHost:\r\n\r\n');
  assert.deepEqual([h.host, h.hostRaw], ['', '']);
  assert.equal(reqHead('GET / HTTP/1.1\r\nHost: my_host-1.local\r\n\r\n').host, 'my_host-1.local');
});

test('Expect: 100-continue is recognised case-insensitively', () => {
  assert.equal(reqHead('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n').expectContinue, true);
  assert.equal(reqHead('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 200-ok\r\n\r\n').expectContinue, false);
  assert.equal(reqHead('POST / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n').expectContinue, false, 'ignored in HTTP/1.0');
});

test('request framing: chunked, length (0 included) or none; never close', () => {
  let h = reqHead('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n');
  assert.deepEqual([h.bodyKind, h.chunked, h.contentLength], ['chunked', true, -1]);
  h = reqHead('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0042\r\n\r\n');
  assert.deepEqual([h.bodyKind, h.chunked, h.contentLength], ['length', false, 42]);
  h = reqHead('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n');
  assert.deepEqual([h.bodyKind, h.contentLength], ['length', 0]);
  h = reqHead('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740991\r\n\r\n');
  assert.equal(h.contentLength, Number.MAX_SAFE_INTEGER);
  h = reqHead('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n'); // empty list element ignored (RFC 9110 §5.6.1)
  assert.equal(h.bodyKind, 'chunked');
  assert.equal(reqHead('POST / HTTP/1.1\r\nHost: a\r\n\r\n').bodyKind, 'none');
});

test('field values: OWS trimmed, inner whitespace and obs-text kept, latin1 decoded', () => {
  const h = reqHead('GET / HTTP/1.1\r\nHost: a\r\nX-A:\t a  b \t\r\nX-Empty:\r\nX-Blank:   \r\nX-Latin: caf\xe9\xff\r\n\r\n');
  assert.deepEqual(h.headers, ['Host', 'a', 'X-A', 'a  b', 'X-Empty', '', 'X-Blank', '', 'X-Latin', 'caf\u00e9\u00ff']);
});

test(`up to ${MAX_LEADING_EMPTY_LINES} empty lines before the request-line are skipped and counted in used`, () => {
  const head = 'GET / HTTP/1.1\r\nHost: a\r\n\r\n';
  assert.equal(done(req('\r\n' + head)).used, head.length + 2);
  assert.equal(done(req('\r\n'.repeat(MAX_LEADING_EMPTY_LINES) + head)).used, head.length + 2 * MAX_LEADING_EMPTY_LINES);
  assertError(req('\r\n'.repeat(MAX_LEADING_EMPTY_LINES + 1) + head), 'CLIENT_BAD_REQUEST', 'too many empty lines');
  assert.deepEqual(req('\r\n\r'), { kind: 'more' });
  assert.deepEqual(req(''), { kind: 'more' });
});

test('pipelined requests: used stops at the end of the first head', () => {
  const a = 'GET /1 HTTP/1.1\r\nHost: a\r\n\r\n';
  const b = 'GET /2 HTTP/1.1\r\nHost: a\r\n\r\n';
  const buf = bytes(a + b);
  const r1 = done(parseRequestHead(buf, LIMITS));
  assert.equal(r1.used, a.length);
  const r2 = done(parseRequestHead(buf.subarray(r1.used), LIMITS));
  assert.equal(r2.head.path, '/2');
});

// ---- rejections ---------------------------------------------------------------------------------------------

const H = 'Host: a\r\n';
/** name -> head -> expected code. Every entry is also checked under split delivery. */
const REQUEST_REJECTS: ReadonlyArray<readonly [string, string, ErrorCode]> = [
  // smuggling (RFC 9112 §6.1, §6.3, §11.2)
  ['CL then TE', `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE then CL', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE chunked, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, chunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE chunked on two lines', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE with space before colon', `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE with tab before colon', `POST / HTTP/1.1\r\n${H}Transfer-Encoding\t: chunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE chunked-false', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked-false\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE "chunked" quoted', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: "chunked"\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE chunked with parameter', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked;q=1\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE gzip, chunked (codings are not decoded)', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE chunked, gzip (chunked not final)', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, gzip\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE identity', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE empty', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE chunked in HTTP/1.0', `POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TE with vertical tab', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\x0bchunked\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL list 1, 2', `POST / HTTP/1.1\r\n${H}Content-Length: 1, 2\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL list 1, 1', `POST / HTTP/1.1\r\n${H}Content-Length: 1, 1\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL duplicate equal', `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL duplicate differing', `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\ncontent-length: 6\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL leading space on the line', `POST / HTTP/1.1\r\n Content-Length: 5\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL negative', `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL plus sign', `POST / HTTP/1.1\r\n${H}Content-Length: +1\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL hex', `POST / HTTP/1.1\r\n${H}Content-Length: 0x10\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL decimal point', `POST / HTTP/1.1\r\n${H}Content-Length: 1.0\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL empty', `POST / HTTP/1.1\r\n${H}Content-Length:  \r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL inner space', `POST / HTTP/1.1\r\n${H}Content-Length: 1 0\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL 2^53', `POST / HTTP/1.1\r\n${H}Content-Length: 9007199254740992\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CL 20 digits', `POST / HTTP/1.1\r\n${H}Content-Length: 99999999999999999999\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  // syntax of the head (RFC 9112 §2.2, §5)
  ['obs-fold', `GET / HTTP/1.1\r\n${H}X-A: a\r\n b\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['obs-fold with tab', `GET / HTTP/1.1\r\n${H}X-A: a\r\n\tb\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['whitespace before the first field', `GET / HTTP/1.1\r\n ${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['bare LF everywhere', 'GET / HTTP/1.1\nHost: a\n\n', 'CLIENT_BAD_REQUEST'],
  ['bare LF after request-line', `GET / HTTP/1.1\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['bare LF ending a field', `GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['bare LF as the empty line', `GET / HTTP/1.1\r\n${H}\n`, 'CLIENT_BAD_REQUEST'],
  ['LF CR LF terminator', `GET / HTTP/1.1\r\nHost: a\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['bare CR in a value', `GET / HTTP/1.1\r\n${H}X: a\rb\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['bare CR as the empty line', `GET / HTTP/1.1\r\n${H}\rX\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['bare CR in the request-line', `GET /\r HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['NUL in a value', `GET / HTTP/1.1\r\n${H}X: a\x00b\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['DEL in a value', `GET / HTTP/1.1\r\n${H}X: a\x7fb\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['ESC in a value', `GET / HTTP/1.1\r\n${H}X: \x1b[31m\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['NUL in a name', `GET / HTTP/1.1\r\n${H}X\x00Y: a\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['empty field name', `GET / HTTP/1.1\r\n${H}: a\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['field name with a separator', `GET / HTTP/1.1\r\n${H}X(y): a\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['field name with non-ASCII', `GET / HTTP/1.1\r\n${H}X\xe9: a\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['field line without colon', `GET / HTTP/1.1\r\n${H}NoColon\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['leading bare LF', `\nGET / HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['leading bare CR', `\rGET / HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  // Host (RFC 9112 §3.2, RFC 9110 §7.2)
  ['missing Host in HTTP/1.1', 'GET / HTTP/1.1\r\nX: y\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['two Host headers', `GET / HTTP/1.1\r\n${H}host: b\r\n\r\n`, 'CLIENT_BAD_REQUEST'],
  ['two equal Host headers', `GET / HTTP/1.1\r\n${H}${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['Host with a space', 'GET / HTTP/1.1\r\nHost: a b\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host with userinfo', 'GET / HTTP/1.1\r\nHost: user@a\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host with a path', 'GET / HTTP/1.1\r\nHost: a/b\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host list', 'GET / HTTP/1.1\r\nHost: a, b\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host bad port', 'GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host port too big', 'GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host unclosed IPv6', 'GET / HTTP/1.1\r\nHost: [::1\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host IPv6 with junk', 'GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host only a port', 'GET / HTTP/1.1\r\nHost: :80\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['Host percent-encoded', 'GET / HTTP/1.1\r\nHost: a%2eb\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  // request-line (RFC 9112 §3)
  ['lowercase http/1.1', `GET / http/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['HTTP/0.9 request-line', 'GET /\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['version with two-digit minor', `GET / HTTP/1.10\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['version without minor', `GET / HTTP/1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['trailing space after version', `GET / HTTP/1.1 \r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['double space after method', `GET  / HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['double space before version', `GET /  HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['tab as separator', `GET\t/ HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['space inside the target', `GET /a b HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['control char in the target', `GET /a\x01b HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['tab in the target', `GET /a\tb HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['DEL in the target', `GET /a\x7f HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['non-ASCII in the target', `GET /caf\xc3\xa9 HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['fragment in the target', `GET /a#frag HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['empty method', ` / HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['method with a separator', `G@T / HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['method with NUL', `GE\x00T / HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['TLS ClientHello on a plain port', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03', 'CLIENT_BAD_REQUEST'],
  ['asterisk-form for GET', `GET * HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['authority-form for GET', `GET a.example:80 HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['relative target', `GET a/b HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CONNECT with origin-form', `CONNECT / HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['CONNECT without port', `CONNECT a.example HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['absolute-form ftp scheme', `GET ftp://a/ HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['absolute-form with userinfo', `GET http://u@a/ HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['absolute-form empty authority', `GET http:///x HTTP/1.1\r\n${H}\r\n`, 'CLIENT_BAD_REQUEST'],
  ['absolute-form Host mismatch', 'GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['absolute-form Host port mismatch', 'GET http://a/x HTTP/1.1\r\nHost: a:8080\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['absolute-form https default port vs Host :80', 'GET https://a/x HTTP/1.1\r\nHost: a:80\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['absolute-form with empty Host', 'GET http://a/x HTTP/1.1\r\nHost:\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  ['absolute-form missing Host in 1.1', 'GET http://a/x HTTP/1.1\r\n\r\n', 'CLIENT_BAD_REQUEST'],
  // versions we do not speak -> 505
  ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'CLIENT_UNSUPPORTED_VERSION'],
  ['HTTP/2.0 request-line', `GET / HTTP/2.0\r\n${H}\r\n`, 'CLIENT_UNSUPPORTED_VERSION'],
  ['HTTP/1.2', `GET / HTTP/1.2\r\n${H}\r\n`, 'CLIENT_UNSUPPORTED_VERSION'],
  ['HTTP/0.9 with version', `GET / HTTP/0.9\r\n${H}\r\n`, 'CLIENT_UNSUPPORTED_VERSION'],
  ['HTTP/3.0', `GET / HTTP/3.0\r\n${H}\r\n`, 'CLIENT_UNSUPPORTED_VERSION'],
];

for (const [name, head, code] of REQUEST_REJECTS) {
  test(`request rejected: ${name} -> ${code}`, () => {
    assertError(req(head), code, name);
    assertSplitEqualsWhole(bytes(head), (b) => parseRequestHead(b, LIMITS), name);
  });
}

test('the HTTP/2 preface is refused as soon as its request-line is in, without waiting for the rest', () => {
  assertError(req('PRI * HTTP/2.0\r\n'), 'CLIENT_UNSUPPORTED_VERSION', 'preface line');
});

test('garbage in the request-line is refused before any line end arrives', () => {
  assertError(req('\x16\x03\x01'), 'CLIENT_BAD_REQUEST', 'TLS record');
  assertError(req('GET /a\x00'), 'CLIENT_BAD_REQUEST', 'NUL in target');
  assertError(req('GET / HTTQ'), 'CLIENT_BAD_REQUEST', 'bad version prefix');
});

// ---- split delivery ------------------------------------------------------------------------------------------

const VALID_REQUESTS = [
  'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
  'GET /Tomcat/x?y=1 HTTP/1.1\r\nHost: Example.com:8443\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n',
  '\r\n\r\nPOST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'GET http://a.example:81/p?q HTTP/1.1\r\nHost: A.example:81\r\n\r\nGET / HTTP/1.1\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n',
  'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n',
  'GET / HTTP/1.0\r\n\r\n',
  'PUT /x HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\nX: caf\xe9\r\n\r\nabc',
];

test('valid requests delivered at every split offset and byte by byte give the whole-delivery head', () => {
  for (const s of VALID_REQUESTS) {
    const buf = bytes(s);
    assert.equal(req(buf).kind, 'done', s);
    assertSplitEqualsWhole(buf, (b) => parseRequestHead(b, LIMITS), s);
  }
});

test('every strict prefix of a valid head is more', () => {
  for (const s of VALID_REQUESTS) {
    const used = done(req(s)).used;
    for (let k = 0; k < used; k++) assert.deepEqual(req(bytes(s).subarray(0, k)), { kind: 'more' }, `${JSON.stringify(s)} at ${k}`);
  }
});

test('a head larger than the direct-scan window still splits like the whole (native terminator search)', () => {
  const big = `GET /big HTTP/1.1\r\nHost: a\r\n${Array.from({ length: 60 }, (_, i) => `X-Filler-${i}: ${'v'.repeat(60)}\r\n`).join('')}\r\n`;
  const buf = bytes(big);
  assert.ok(buf.length > 4096);
  const whole = done(req(buf));
  assert.equal(whole.head.headers.length, 122);
  assertSplitEqualsWhole(buf, (b) => parseRequestHead(b, LIMITS), 'big head');
  // and a large head with an early error waits for a terminator, then reports that error
  const bad = bytes(big.replace('X-Filler-3: ', 'X-Filler-3: \x00'));
  assertError(req(bad), 'CLIENT_BAD_REQUEST', 'NUL in big head');
  assertSplitEqualsWhole(bad, (b) => parseRequestHead(b, LIMITS), 'big bad head');
});

// ---- limits -------------------------------------------------------------------------------------------------

test('431: a complete head over headerSize, and one exactly at the limit passes', () => {
  const head = `GET / HTTP/1.1\r\nHost: a\r\nX: ${'x'.repeat(100)}\r\n\r\n`;
  const exact: HeadLimits = { ...LIMITS, headerSize: head.length };
  assert.equal(req(head, exact).kind, 'done');
  assertError(req(head, { ...LIMITS, headerSize: head.length - 1 }), 'CLIENT_HEADERS_TOO_LARGE', 'one byte over');
  // trailing body bytes beyond the window do not matter when the head fits
  assert.equal(req(head + 'x'.repeat(500), exact).kind, 'done');
});

test('431: an incomplete head that already fills headerSize is refused without waiting for more', () => {
  const limits: HeadLimits = { ...LIMITS, headerSize: 256 };
  const partial = `GET / HTTP/1.1\r\nHost: a\r\nX: ${'x'.repeat(300)}`;
  assertError(req(partial.slice(0, 256), limits), 'CLIENT_HEADERS_TOO_LARGE', 'exactly full window');
  assertError(req(partial, limits), 'CLIENT_HEADERS_TOO_LARGE', 'window overflowed');
  assert.deepEqual(req(partial.slice(0, 255), limits), { kind: 'more' });
  // the request-line alone can fill the window too (when uriSize is larger)
  assertError(req(`GET /${'a'.repeat(400)}`, { ...limits, uriSize: 1000 }), 'CLIENT_HEADERS_TOO_LARGE', 'long request-line');
  assertSplitEqualsWhole(bytes(partial), (b) => parseRequestHead(b, limits), '431 incomplete');
});

test('431: more header fields than limits.headers', () => {
  const fields = (n: number): string => `GET / HTTP/1.1\r\n${Array.from({ length: n }, (_, i) => (i === 0 ? 'Host: a' : `X-${i}: v`)).join('\r\n')}\r\n\r\n`;
  const limits: HeadLimits = { ...LIMITS, headers: 10 };
  assert.equal(req(fields(10), limits).kind, 'done');
  assertError(req(fields(11), limits), 'CLIENT_HEADERS_TOO_LARGE', '11 fields');
  assertSplitEqualsWhole(bytes(fields(11)), (b) => parseRequestHead(b, limits), 'too many fields');
  // 1000 fields grow the parser's scratch space without trouble
  assert.equal(done(req(fields(1000), { ...LIMITS, headers: 1000 })).head.headers.length, 2000);
});

test('414: a target longer than uriSize, complete or still arriving', () => {
  const limits: HeadLimits = { ...LIMITS, uriSize: 64 };
  const ok = `/${'a'.repeat(63)}`;
  assert.equal(reqHead(`GET ${ok} HTTP/1.1\r\nHost: a\r\n\r\n`, limits).target, ok);
  const long = `GET /${'a'.repeat(64)} HTTP/1.1\r\nHost: a\r\n\r\n`;
  assertError(req(long, limits), 'CLIENT_URI_TOO_LONG', 'complete');
  assertError(req(`GET /${'a'.repeat(64)}`, limits), 'CLIENT_URI_TOO_LONG', 'incomplete, no line end yet');
  assert.deepEqual(req(`GET /${'a'.repeat(63)}`, limits), { kind: 'more' });
  assertSplitEqualsWhole(bytes(long), (b) => parseRequestHead(b, limits), '414');
  // a bad byte before the limit is a 400, in byte order
  assertError(req(`GET /a\x01${'a'.repeat(100)}`, limits), 'CLIENT_BAD_REQUEST', 'bad byte first');
});

// ---- responses ----------------------------------------------------------------------------------------------

test('response head: status, reason, headers, framing by Content-Length', () => {
  const r = done(res('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world!'));
  assert.equal(r.used, 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n'.length);
  assert.deepEqual(r.head, {
    status: 200,
    reason: 'OK',
    versionMinor: 1,
    headers: ['Content-Type', 'text/plain', 'Content-Length', '12'],
    contentLength: 12,
    chunked: false,
    bodyKind: 'length',
    keepAlive: true,
    connection: [],
    transferEncoding: undefined,
    upgrade: undefined,
  });
});

test('status-line: empty reason, reason with spaces, and no space after the code are accepted', () => {
  assert.equal(resHead('HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n').reason, '');
  assert.equal(resHead('HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n').reason, '');
  assert.equal(resHead('HTTP/1.1 503 Service  Unavailable \r\nContent-Length: 0\r\n\r\n').reason, 'Service  Unavailable ');
});

test('response bodyKind follows RFC 9112 §6.3 in order', () => {
  const cases: ReadonlyArray<readonly [string, string, string]> = [
    ['HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n', 'HEAD', 'none'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', 'HEAD', 'none'],
    ['HTTP/1.1 100 Continue\r\n\r\n', 'POST', 'none'],
    ['HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n', 'GET', 'none'],
    ['HTTP/1.1 204 No Content\r\n\r\n', 'GET', 'none'],
    ['HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n', 'GET', 'none'],
    ['HTTP/1.1 200 Connection established\r\n\r\n', 'CONNECT', 'none'],
    ['HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n', 'CONNECT', 'length'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', 'GET', 'chunked'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', 'GET', 'chunked'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n', 'GET', 'chunked'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n', 'GET', 'close'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n', 'GET', 'close'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', 'GET', 'length'],
    ['HTTP/1.1 200 OK\r\n\r\n', 'GET', 'close'],
    ['HTTP/1.0 200 OK\r\n\r\n', 'GET', 'close'],
  ];
  for (const [head, method, kind] of cases) assert.equal(resHead(head, method).bodyKind, kind, `${method} ${JSON.stringify(head)}`);
});

test('response keep-alive: false when the body is close-delimited or the server says close', () => {
  assert.equal(resHead('HTTP/1.1 200 OK\r\n\r\n').keepAlive, false);
  assert.equal(resHead('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n').keepAlive, false);
  assert.equal(resHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n').keepAlive, true);
  assert.equal(resHead('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n').keepAlive, false);
  assert.equal(resHead('HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n').keepAlive, true);
});

test('101 sets upgrade; an Upgrade advertised on a 200 does not', () => {
  const h = resHead('HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n');
  assert.deepEqual([h.status, h.upgrade, h.bodyKind], [101, 'websocket', 'none']);
  assert.equal(resHead('HTTP/1.1 200 OK\r\nUpgrade: h2,h2c\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n').upgrade, undefined);
});

const RESPONSE_REJECTS: ReadonlyArray<readonly [string, string]> = [
  ['CL and TE', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n'],
  ['duplicate differing CL', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n'],
  ['duplicate equal CL', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n'],
  ['CL list', 'HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n'],
  ['CL not digits', 'HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n'],
  ['chunked twice', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n'],
  ['TE in HTTP/1.0', 'HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'],
  ['bare LF', 'HTTP/1.1 200 OK\nContent-Length: 0\n\n'],
  ['bare LF in a field', 'HTTP/1.1 200 OK\r\nX: a\nContent-Length: 0\r\n\r\n'],
  ['obs-fold', 'HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n'],
  ['space before colon', 'HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n'],
  ['NUL in a value', 'HTTP/1.1 200 OK\r\nX: \x00\r\nContent-Length: 0\r\n\r\n'],
  ['HTTP/2.0 status-line', 'HTTP/2.0 200 OK\r\n\r\n'],
  ['lowercase version', 'http/1.1 200 OK\r\n\r\n'],
  ['two-digit status', 'HTTP/1.1 20 OK\r\n\r\n'],
  ['four-digit status', 'HTTP/1.1 2000 OK\r\n\r\n'],
  ['status out of range', 'HTTP/1.1 600 Odd\r\n\r\n'],
  ['status below 100', 'HTTP/1.1 099 Odd\r\n\r\n'],
  ['control char in reason', 'HTTP/1.1 200 O\x01K\r\n\r\n'],
  ['missing space after version', 'HTTP/1.1200 OK\r\n\r\n'],
  ['leading empty line', '\r\nHTTP/1.1 200 OK\r\n\r\n'],
  ['HTML instead of a head', '<html><body>oops</body></html>\r\n\r\n'],
];

for (const [name, head] of RESPONSE_REJECTS) {
  test(`response rejected: ${name} -> UPSTREAM_BAD_RESPONSE`, () => {
    assertError(res(head), 'UPSTREAM_BAD_RESPONSE', name);
    assertSplitEqualsWhole(bytes(head), (b) => parseResponseHead(b, LIMITS, 'GET'), name);
  });
}

test('response limits: head over headerSize or too many fields -> UPSTREAM_BAD_RESPONSE', () => {
  const limits: HeadLimits = { ...LIMITS, headerSize: 128, headers: 3 };
  assertError(res(`HTTP/1.1 200 OK\r\nX: ${'x'.repeat(200)}`, 'GET', limits), 'UPSTREAM_BAD_RESPONSE', 'too large, incomplete');
  assertError(res('HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n', 'GET', limits), 'UPSTREAM_BAD_RESPONSE', 'too many');
  assert.equal(res('HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n', 'GET', limits).kind, 'done');
});

test('valid responses split at every offset equal the whole', () => {
  for (const s of [
    'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello',
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello',
    'HTTP/1.0 404\r\nServer: x\r\n\r\n',
    'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
  ]) {
    assertSplitEqualsWhole(bytes(s), (b) => parseResponseHead(b, LIMITS, 'GET'), s);
  }
});

// ---- chunked scanner ----------------------------------------------------------------------------------------

interface ScanOutcome {
  consumed: number;
  done: boolean;
  error: string | undefined;
}

/** Feeds `pieces` in order; stops at the end of the body or at the first error. */
function scanPieces(pieces: Buffer[], maxLine?: number, maxTrailer?: number): ScanOutcome {
  const s = new ChunkedScanner(maxLine, maxTrailer);
  let consumed = 0;
  for (const p of pieces) {
    const n = s.push(p, 0);
    if (n < 0) return { consumed: -1, done: s.done, error: s.error };
    assert.ok(n <= p.length);
    consumed += n;
    if (s.done) break;
  }
  return { consumed, done: s.done, error: s.error };
}

function assertChunkedSplitsEqual(body: Buffer, what: string): ScanOutcome {
  const whole = scanPieces([body]);
  for (let k = 1; k < body.length; k++) {
    const o = scanPieces([body.subarray(0, k), body.subarray(k)]);
    assert.equal(o.consumed < 0, whole.consumed < 0, `${what}: split at ${k}`);
    if (whole.consumed >= 0) assert.deepEqual(o, whole, `${what}: split at ${k}`);
    else assert.equal(o.done, false);
  }
  const single = scanPieces(Array.from(body, (b) => Buffer.from([b])));
  assert.equal(single.consumed < 0, whole.consumed < 0, `${what}: byte by byte`);
  if (whole.consumed >= 0) assert.deepEqual(single, whole, `${what}: byte by byte`);
  return whole;
}

const VALID_CHUNKED: ReadonlyArray<readonly [string, string]> = [
  ['single chunk', '5\r\nhello\r\n0\r\n\r\n'],
  ['uppercase and lowercase hex, leading zeros', '0A\r\n0123456789\r\n00b\r\nabcdefghijk\r\n000\r\n\r\n'],
  ['chunk data containing CRLF and digits', '8\r\n\r\n0\r\n\r\nX\r\n0\r\n\r\n'],
  ['extensions: name, token value, quoted value with escapes, BWS', '3;a;b=c ; d = "x \\" ;y"\t;e\r\nabc\r\n0;last=1\r\n\r\n'],
  ['trailers', '1\r\nx\r\n0\r\nExpires: never\r\nX-Checksum: abc=\r\nX-Empty:\r\n\r\n'],
  ['empty body', '0\r\n\r\n'],
];

for (const [name, body] of VALID_CHUNKED) {
  test(`chunked valid: ${name}; stops exactly at the end, split at every offset`, () => {
    const buf = bytes(body + 'GET /next HTTP/1.1\r\n');
    const whole = assertChunkedSplitsEqual(buf, name);
    assert.deepEqual(whole, { consumed: body.length, done: true, error: undefined });
  });
}

test('chunked scanner honours the start offset and returns 0 once done', () => {
  const s = new ChunkedScanner();
  const buf = bytes('HEADxx3\r\nabc\r\n0\r\n\r\nrest');
  assert.equal(s.push(buf, 6), 13);
  assert.equal(s.done, true);
  assert.equal(s.push(buf, 19), 0);
  assert.equal(s.push(bytes('more'), 0), 0);
  assert.equal(new ChunkedScanner().push(buf, 100), 0);
});

test('a large chunk is skipped by count across many pushes', () => {
  const s = new ChunkedScanner();
  const size = 50 * 1024 * 1024;
  assert.equal(s.push(bytes(`${size.toString(16)}\r\n`), 0), 9);
  const block = Buffer.alloc(64 * 1024, 0x0a); // LF bytes in data must not matter
  let total = 0;
  for (let i = 0; i < size / block.length; i++) total += s.push(block, 0);
  assert.equal(total, size);
  assert.equal(s.done, false);
  assert.equal(s.push(bytes('\r\n0\r\n\r\n'), 0), 7);
  assert.equal(s.done, true);
});

const INVALID_CHUNKED: ReadonlyArray<readonly [string, string]> = [
  ['negative size', '-1\r\nx\r\n0\r\n\r\n'],
  ['0x prefix', '0x10\r\n0123456789abcdef\r\n0\r\n\r\n'],
  ['plus sign', '+5\r\nhello\r\n0\r\n\r\n'],
  ['space inside the size', '1 0\r\n0123456789abcdef\r\n0\r\n\r\n'],
  ['trailing space without extension', '5 \r\nhello\r\n0\r\n\r\n'],
  ['leading space', ' 5\r\nhello\r\n0\r\n\r\n'],
  ['empty size line', '\r\nhello\r\n0\r\n\r\n'],
  ['extension without size', ';a\r\nhello\r\n0\r\n\r\n'],
  ['missing CRLF after data', '5\r\nhelloX\r\n0\r\n\r\n'],
  ['LF only after data', '5\r\nhello\n0\r\n\r\n'],
  ['more data than the size says', '3\r\nhello\r\n0\r\n\r\n'],
  ['bare LF after the size', '5\nhello\r\n0\r\n\r\n'],
  ['bare CR after the size', '5\rhello\r\n0\r\n\r\n'],
  ['17 hex digits', '10000000000000000\r\n'],
  ['size over 2^53-1', '20000000000000\r\n'],
  ['16 hex digits, too big', 'ffffffffffffffff\r\n'],
  ['empty extension name', '5;=a\r\nhello\r\n0\r\n\r\n'],
  ['empty extension value', '5;a=\r\nhello\r\n0\r\n\r\n'],
  ['invalid char in extension', '5;a@b\r\nhello\r\n0\r\n\r\n'],
  ['NUL in quoted extension', '5;a="\x00"\r\nhello\r\n0\r\n\r\n'],
  ['bare LF in the final CRLF', '0\r\n\n'],
  ['garbage after last-chunk', '0\r\nX\r\n\r\n'],
  ['trailer obs-fold', '0\r\nX: a\r\n b\r\n\r\n'],
  ['trailer space before colon', '0\r\nX : a\r\n\r\n'],
  ['trailer bare LF', '0\r\nX: a\n\r\n'],
  ['trailer NUL', '0\r\nX: a\x00\r\n\r\n'],
  ['trailer without colon', '0\r\nX\r\n\r\n'],
];

for (const [name, body] of INVALID_CHUNKED) {
  test(`chunked invalid: ${name} -> -1 with a reason`, () => {
    const o = assertChunkedSplitsEqual(bytes(body), name);
    assert.equal(o.consumed, -1, name);
    assert.equal(o.done, false);
    assert.ok(o.error !== undefined && o.error.length > 0);
  });
}

test('chunked scanner: error is sticky', () => {
  const s = new ChunkedScanner();
  assert.equal(s.push(bytes('zz\r\n'), 0), -1);
  assert.equal(s.push(bytes('0\r\n\r\n'), 0), -1);
  assert.match(s.error ?? '', /chunk-size/);
});

test('chunked scanner bounds: size line length and trailer section size', () => {
  const ext = `5;${'a'.repeat(100)}\r\nhello\r\n0\r\n\r\n`;
  assert.equal(scanPieces([bytes(ext)], 200).done, true);
  assert.equal(scanPieces([bytes(ext)], 64).consumed, -1);
  assert.equal(scanPieces([bytes(`5${' '.repeat(5000)};a\r\n`)]).consumed, -1, 'default bound 4096');
  const trailers = `0\r\n${Array.from({ length: 20 }, (_, i) => `X-${i}: ${'v'.repeat(40)}\r\n`).join('')}\r\n`;
  assert.equal(scanPieces([bytes(trailers)]).done, true);
  assert.equal(scanPieces([bytes(trailers)], undefined, 512).consumed, -1);
});

test('chunked trailers naming Content-Length, Transfer-Encoding or Host are refused (RFC 9110 §6.5.1), at any split', () => {
  for (const name of ['Content-Length', 'transfer-encoding', 'HOST']) {
    const o = assertChunkedSplitsEqual(Buffer.from(`3\r\nabc\r\n0\r\nX-T: 1\r\n${name}: 5\r\n\r\n`, 'latin1'), name);
    assert.equal(o.consumed, -1, name);
    assert.match(o.error ?? '', /in a trailer/);
  }
  for (const name of ['Content-Lengths', 'Hos', 'X-Host', 'Transfer-Encodin', 'H']) {
    const body = Buffer.from(`3\r\nabc\r\n0\r\n${name}: 5\r\n\r\n`, 'latin1');
    const o = assertChunkedSplitsEqual(body, name);
    assert.deepEqual([o.consumed, o.done], [body.length, true], name);
  }
});
