// Portico's own HTTP/1.x head parser: request and response heads, strict (RFC 9112), incremental and bounded.
// Pure functions over bytes: no sockets, no allocation beyond the result, never throws on input (STYLE.md 7).
// Also the body-framing scanner for chunked bodies: it finds where a message ends, it does not decode.
// Ambiguity is rejected, never guessed: this file is where request smuggling is stopped.
import type { ErrorCode } from '../core/errors.js';

export interface HeadLimits {
  /** Max bytes of request line + headers + final CRLF (-> CLIENT_HEADERS_TOO_LARGE / 431). */
  headerSize: number;
  /** Max bytes of the request-target (-> CLIENT_URI_TOO_LONG / 414). */
  uriSize: number;
  /** Max number of header fields (-> CLIENT_HEADERS_TOO_LARGE / 431). */
  headers: number;
}

/** Message framing after the head (RFC 9112 §6.3). */
export type BodyKind = 'none' | 'length' | 'chunked' | 'close';

interface HeadCommon {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor: 0 | 1;
  /** Flat list: name, value, name, value... names as received (case kept), values trimmed of OWS. */
  headers: string[];
  /** Content-Length value, or -1 when absent. */
  contentLength: number;
  /** Transfer-Encoding is exactly chunked as the final coding. */
  chunked: boolean;
  bodyKind: BodyKind;
  /** Persistent connection per version and Connection header (RFC 9112 §9.3). */
  keepAlive: boolean;
  /**
   * Lower-cased tokens of the Connection header(s): hop-by-hop names to drop (RFC 9110 §7.6.1). Never `host`,
   * `content-length` or `transfer-encoding`: a peer cannot make Portico drop the fields that say where a
   * message goes and where it ends (framing is Portico's own; such tokens are ignored, as nginx and HAProxy do).
   */
  connection: string[];
  /** Transfer-Encoding value(s) as received, joined with ", "; undefined when absent. */
  transferEncoding: string | undefined;
  /** Lower-cased Upgrade header value when Connection lists "upgrade", else undefined. */
  upgrade: string | undefined;
}

export interface RequestHead extends HeadCommon {
  method: string;
  /** Raw request-target as received. */
  target: string;
  /** Path part of an origin-form target (before '?'); for absolute-form, the path of the URL. */
  path: string;
  /** Query including the leading '?', or ''. */
  query: string;
  /** Host header value lower-cased with any port removed; undefined when absent (then HTTP/1.1 -> error). */
  host: string | undefined;
  /** Host header exactly as received (for $host / X-Forwarded-Host). */
  hostRaw: string | undefined;
  /** Expect: 100-continue was sent. */
  expectContinue: boolean;
}

export interface ResponseHead extends HeadCommon {
  status: number;
  reason: string;
}

export type ParseResult<H> =
  | { kind: 'more' }
  | { kind: 'done'; head: H; /** bytes of buf the head used, final CRLF included */ used: number }
  | { kind: 'error'; code: ErrorCode; reason: string };

/** RFC 9112 §2.2 lets a server ignore "at least one" CRLF before the request-line; we allow a few, not a stream. */
export const MAX_LEADING_EMPTY_LINES = 4;
/** Default bound of one chunk-size line (size + extensions + CRLF). */
export const DEFAULT_CHUNK_LINE_BYTES = 4096;
/** Default bound of the whole trailer section of a chunked body (fields + final CRLF). */
export const DEFAULT_CHUNK_TRAILER_BYTES = 16384;

// How the incremental contract is kept cheap. Callers re-parse a growing buffer, so an incomplete head must
// not cost a full JS validation pass each time (a client dripping a 32 KiB head byte by byte would make that
// quadratic in JS); a native terminator search is several times cheaper per byte and bounded by headerSize.
// The result is defined as a function of the bytes within the headerSize window:
//  - leading empty lines and the request/status line are checked byte by byte in order; their errors
//    (414 included) are reported as soon as the offending byte arrives;
//  - everything after the start line is judged only once a head terminator candidate is present
//    (an LF followed by an empty line: LF CRLF, which CRLFCRLF contains, or LF LF, a bare LF): then the first
//    problem in byte order wins.
//    Until then the answer is 'more', or 431 when the window is full.
// Small heads are scanned directly; large ones are first searched natively for a terminator. Both paths
// compute the same function, which is what makes split delivery equal whole delivery.
const DIRECT_SCAN_BYTES = 2048;

// ---- byte classes -------------------------------------------------------------------------------------------
const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const COMMA = 0x2c;
const SEMI = 0x3b;
const EQUALS = 0x3d;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const SLASH = 0x2f;
const QUESTION = 0x3f;
const HASH = 0x23;
const STAR = 0x2a;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const MAX_SAFE = Number.MAX_SAFE_INTEGER; // 2^53-1: the largest length we can count exactly

function byteTable(accept: (c: number) => boolean): Uint8Array {
  const t = new Uint8Array(256);
  for (let c = 0; c < 256; c++) t[c] = accept(c) ? 1 : 0;
  return t;
}
const isAlnum = (c: number): boolean => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
/** tchar (RFC 9110 §5.6.2): method, field names, transfer-codings, chunk-ext names. */
const TCHAR = byteTable((c) => isAlnum(c) || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c)));
/** field-vchar / SP / HTAB, obs-text included (RFC 9110 §5.5): no NUL, CR, LF, DEL or other CTL. */
const FIELD_VALUE = byteTable((c) => c === HTAB || (c >= 0x20 && c !== 0x7f));
/**
 * request-target bytes: visible ASCII except '#'. RFC 3986 is narrower, but browsers send `|^{}[]\` unescaped
 * (WHATWG URL percent-encode sets), so only what cannot be a target is refused: SP, CTL, non-ASCII, fragments.
 */
const TARGET_CHAR = byteTable((c) => c > 0x20 && c < 0x7f && c !== HASH);
/**
 * Host name bytes. RFC 3986 reg-name also admits sub-delims and pct-encoded, but no DNS name uses them and
 * they invite routing and log-template confusion, so an edge proxy accepts unreserved characters only.
 */
const HOST_CHAR = byteTable((c) => isAlnum(c) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e);
const IPV6_CHAR = byteTable((c) => (c >= 0x30 && c <= 0x3a) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66) || c === 0x2e);
/** qdtext (RFC 9110 §5.6.4) for quoted chunk-ext values. */
const QDTEXT = byteTable((c) => c === HTAB || c === SP || c === 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || c >= 0x80);
const HEX_VALUE = (() => {
  const t = new Int8Array(256).fill(-1);
  for (let c = 0; c < 256; c++) {
    if (c >= 0x30 && c <= 0x39) t[c] = c - 0x30;
    else if (c >= 0x41 && c <= 0x46) t[c] = c - 0x41 + 10;
    else if (c >= 0x61 && c <= 0x66) t[c] = c - 0x61 + 10;
  }
  return t;
})();

const lit = (s: string): Uint8Array => Uint8Array.from(s, (ch) => ch.charCodeAt(0));
const L_HTTP = lit('HTTP/');
const L_HOST = lit('host');
const L_EXPECT = lit('expect');
const L_UPGRADE = lit('upgrade');
const L_CONNECTION = lit('connection');
const L_CONTENT_LENGTH = lit('content-length');
const L_TRANSFER_ENCODING = lit('transfer-encoding');
const L_CHUNKED = lit('chunked');
const L_CLOSE = lit('close');
const L_KEEP_ALIVE = lit('keep-alive');
const L_100_CONTINUE = lit('100-continue');
const L_HTTP_SCHEME = lit('http://');
const L_HTTPS_SCHEME = lit('https://');
const L_CONNECT = lit('CONNECT');
const L_OPTIONS = lit('OPTIONS');
const LFLF = Buffer.from('\n\n', 'latin1');
const LFCRLF = Buffer.from('\n\r\n', 'latin1');

/** ASCII case-insensitive compare of buf[at..] with a lower-case literal. Safe for tchar input: no non-letter ORs into a letter. */
function eqLower(buf: Buffer, at: number, l: Uint8Array): boolean {
  for (let k = 0; k < l.length; k++) if ((buf[at + k] | 0x20) !== l[k]) return false;
  return true;
}
function eqExact(buf: Buffer, at: number, end: number, l: Uint8Array): boolean {
  if (end - at !== l.length) return false;
  for (let k = 0; k < l.length; k++) if (buf[at + k] !== l[k]) return false;
  return true;
}

interface Latin1Buffer extends Buffer {
  latin1Slice(start: number, end: number): string;
}
/** Node's undocumented direct decoder skips toString's argument handling; fall back if a runtime lacks it. */
const HAS_LATIN1_SLICE = typeof (Buffer.prototype as Partial<Latin1Buffer>).latin1Slice === 'function';
/** One latin1 decode per head; names and values are then cheap slices of it (measured ~4x faster than per-field decodes). */
function latin1(buf: Buffer, start: number, end: number): string {
  return HAS_LATIN1_SLICE ? (buf as Latin1Buffer).latin1Slice(start, end) : buf.toString('latin1', start, end);
}

// ---- scan state (module scratch: parsing is synchronous, so one set is enough and nothing is allocated) ----
const INCOMPLETE = -1;
const FAILED = -2;
const TOO_MANY = -3;

let failCode: ErrorCode = 'CLIENT_BAD_REQUEST';
let failReason = '';
function fail(code: ErrorCode, reason: string): number {
  failCode = code;
  failReason = reason;
  return FAILED;
}

// start line
let lineMethodEnd = 0;
let lineTargetEnd = 0;
let lineQuery = -1;
let lineMinor: 0 | 1 = 1;
let lineStatus = 0;
let lineReasonStart = 0;
let lineReasonEnd = 0;

// field positions: name start, name end, value start, value end; and a kind for the fields we interpret
const K_OTHER = 0;
const K_HOST = 1;
const K_CONTENT_LENGTH = 2;
const K_TRANSFER_ENCODING = 3;
const K_CONNECTION = 4;
const K_UPGRADE = 5;
const K_EXPECT = 6;
let fieldPos = new Int32Array(4 * 128);
let fieldKind = new Uint8Array(128);
let fieldCount = 0;

function growFields(): void {
  const pos = new Int32Array(fieldPos.length * 2);
  pos.set(fieldPos);
  fieldPos = pos;
  const kind = new Uint8Array(fieldKind.length * 2);
  kind.set(fieldKind);
  fieldKind = kind;
}

function kindOf(buf: Buffer, ns: number, len: number): number {
  switch (len) {
    case 4:
      return eqLower(buf, ns, L_HOST) ? K_HOST : K_OTHER;
    case 6:
      return eqLower(buf, ns, L_EXPECT) ? K_EXPECT : K_OTHER;
    case 7:
      return eqLower(buf, ns, L_UPGRADE) ? K_UPGRADE : K_OTHER;
    case 10:
      return eqLower(buf, ns, L_CONNECTION) ? K_CONNECTION : K_OTHER;
    case 14:
      return eqLower(buf, ns, L_CONTENT_LENGTH) ? K_CONTENT_LENGTH : K_OTHER;
    case 17:
      return eqLower(buf, ns, L_TRANSFER_ENCODING) ? K_TRANSFER_ENCODING : K_OTHER;
    default:
      return K_OTHER;
  }
}

/**
 * Field lines from `pos` to the empty line (RFC 9112 §5). Returns the index after the final CRLF, INCOMPLETE,
 * FAILED (failReason set) or TOO_MANY. Every loop stops at CR or LF, so it never runs past a terminator.
 */
function scanFields(buf: Buffer, pos: number, end: number, maxFields: number): number {
  let n = 0;
  for (;;) {
    if (pos >= end) return INCOMPLETE;
    let c = buf[pos];
    if (c === CR) {
      if (pos + 1 >= end) return INCOMPLETE;
      if (buf[pos + 1] !== LF) return fail('CLIENT_BAD_REQUEST', 'bare CR in head (CRLF only, RFC 9112 §2.2)');
      fieldCount = n;
      return pos + 2;
    }
    if (n >= maxFields) return TOO_MANY;
    const ns = pos;
    while (pos < end && TCHAR[buf[pos]] === 1) pos++;
    if (pos >= end) return INCOMPLETE;
    c = buf[pos];
    if (c !== COLON || pos === ns) {
      if (pos === ns) {
        if (c === SP || c === HTAB) return fail('CLIENT_BAD_REQUEST', 'obs-fold or whitespace before a field name (RFC 9112 §5.2)');
        if (c === LF) return fail('CLIENT_BAD_REQUEST', 'bare LF in head (CRLF only, RFC 9112 §2.2)');
        return fail('CLIENT_BAD_REQUEST', c === COLON ? 'empty field name' : 'invalid character in field name');
      }
      if (c === SP || c === HTAB) return fail('CLIENT_BAD_REQUEST', 'whitespace between field name and colon (RFC 9112 §5.1)');
      if (c === CR || c === LF) return fail('CLIENT_BAD_REQUEST', 'field line without a colon');
      return fail('CLIENT_BAD_REQUEST', 'invalid character in field name');
    }
    const ne = pos++;
    while (pos < end && (buf[pos] === SP || buf[pos] === HTAB)) pos++;
    const vs = pos;
    // the hottest loop of the parser: a compare is measurably cheaper here than the FIELD_VALUE table
    while (pos < end) {
      c = buf[pos];
      if (c < 0x20 ? c !== HTAB : c === 0x7f) break;
      pos++;
    }
    if (pos >= end) return INCOMPLETE;
    if (c !== CR) {
      return fail('CLIENT_BAD_REQUEST', c === LF ? 'bare LF in head (CRLF only, RFC 9112 §2.2)' : 'control character in field value (RFC 9110 §5.5)');
    }
    if (pos + 1 >= end) return INCOMPLETE;
    if (buf[pos + 1] !== LF) return fail('CLIENT_BAD_REQUEST', 'bare CR in head (CRLF only, RFC 9112 §2.2)');
    let ve = pos;
    while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
    if (n >= fieldKind.length) growFields();
    const p = n << 2;
    fieldPos[p] = ns;
    fieldPos[p + 1] = ne;
    fieldPos[p + 2] = vs;
    fieldPos[p + 3] = ve;
    fieldKind[n] = kindOf(buf, ns, ne - ns);
    n++;
    pos += 2;
  }
}

/**
 * Is a head terminator candidate wholly inside buf[from..end)? Every candidate is an LF followed by an empty
 * line: LF CRLF (which CRLFCRLF contains) or LF LF (bare). `from` is the start line's LF.
 */
function hasTerminator(buf: Buffer, from: number, end: number): boolean {
  const i = buf.indexOf(LFCRLF, from);
  if (i >= 0 && i + 3 <= end) return true;
  const j = buf.indexOf(LFLF, from);
  return j >= 0 && j + 2 <= end;
}

/** Runs scanFields under the incremental contract above: header-section errors count only once a terminator is present. */
function scanFieldsWhenTerminated(buf: Buffer, start: number, end: number, maxFields: number): number {
  if (end - start <= DIRECT_SCAN_BYTES) {
    const r = scanFields(buf, start, end, maxFields);
    if (r >= 0 || r === INCOMPLETE) return r;
    return hasTerminator(buf, start - 1, end) ? r : INCOMPLETE;
  }
  return hasTerminator(buf, start - 1, end) ? scanFields(buf, start, end, maxFields) : INCOMPLETE;
}

/**
 * "HTTP/" DIGIT "." DIGIT at buf[v..v+8) (RFC 9112 §2.3; the name is case-sensitive). Returns the version as
 * major*10+minor, INCOMPLETE or FAILED. `code` is the error code for a syntax error.
 */
function scanVersion(buf: Buffer, v: number, end: number, code: ErrorCode): number {
  for (let k = 0; k < 5; k++) {
    if (v + k >= end) return INCOMPLETE;
    if (buf[v + k] !== L_HTTP[k]) return fail(code, 'invalid HTTP version');
  }
  if (v + 5 >= end) return INCOMPLETE;
  const major = buf[v + 5] - 0x30;
  if (major < 0 || major > 9) return fail(code, 'invalid HTTP version');
  if (v + 6 >= end) return INCOMPLETE;
  if (buf[v + 6] !== 0x2e) return fail(code, 'invalid HTTP version');
  if (v + 7 >= end) return INCOMPLETE;
  const minor = buf[v + 7] - 0x30;
  if (minor < 0 || minor > 9) return fail(code, 'invalid HTTP version');
  return major * 10 + minor;
}

/** CRLF at buf[i], i+1. Returns i+2, INCOMPLETE or FAILED. */
function scanCrlf(buf: Buffer, i: number, end: number, code: ErrorCode, what: string): number {
  if (i >= end) return INCOMPLETE;
  const c = buf[i];
  if (c !== CR) return fail(code, c === LF ? 'bare LF in head (CRLF only, RFC 9112 §2.2)' : what);
  if (i + 1 >= end) return INCOMPLETE;
  if (buf[i + 1] !== LF) return fail(code, 'bare CR in head (CRLF only, RFC 9112 §2.2)');
  return i + 2;
}

/** request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 §3). Returns the index after CRLF. */
function scanRequestLine(buf: Buffer, s: number, end: number, uriSize: number): number {
  let i = s;
  while (i < end && TCHAR[buf[i]] === 1) i++;
  if (i >= end) return INCOMPLETE;
  if (buf[i] !== SP) return fail('CLIENT_BAD_REQUEST', 'invalid character in method (RFC 9110 §9.1: token)');
  if (i === s) return fail('CLIENT_BAD_REQUEST', 'empty method');
  lineMethodEnd = i;
  const ts = ++i;
  const tmax = ts + uriSize;
  const stop = end < tmax ? end : tmax;
  let q = -1;
  while (i < stop) {
    const c = buf[i];
    if (TARGET_CHAR[c] !== 1) break;
    if (c === QUESTION && q < 0) q = i;
    i++;
  }
  if (i >= end) return INCOMPLETE;
  const c = buf[i];
  if (c !== SP) {
    if (TARGET_CHAR[c] === 1) return fail('CLIENT_URI_TOO_LONG', `request-target longer than ${uriSize} bytes`);
    if (c === HASH) return fail('CLIENT_BAD_REQUEST', 'fragment in request-target (RFC 9112 §3.2)');
    if (c >= 0x80) return fail('CLIENT_BAD_REQUEST', 'non-ASCII byte in request-target');
    if (c === CR || c === LF) return fail('CLIENT_BAD_REQUEST', 'request-line without an HTTP version');
    return fail('CLIENT_BAD_REQUEST', 'control character in request-target');
  }
  if (i === ts) return fail('CLIENT_BAD_REQUEST', 'empty request-target');
  lineTargetEnd = i;
  lineQuery = q;
  i++;
  const v = scanVersion(buf, i, end, 'CLIENT_BAD_REQUEST');
  if (v < 0) return v;
  const le = scanCrlf(buf, i + 8, end, 'CLIENT_BAD_REQUEST', 'invalid HTTP version');
  if (le < 0) return le;
  // RFC 9110 §15.6.6: 505 for a major version we do not speak (HTTP/2 preface "PRI * HTTP/2.0" lands here too).
  if (v !== 10 && v !== 11) return fail('CLIENT_UNSUPPORTED_VERSION', `HTTP/${(v / 10) | 0}.${v % 10} is not supported`);
  lineMinor = v === 11 ? 1 : 0;
  return le;
}

/** status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF (RFC 9112 §4); a missing final SP is tolerated. */
function scanStatusLine(buf: Buffer, end: number): number {
  const v = scanVersion(buf, 0, end, 'UPSTREAM_BAD_RESPONSE');
  if (v < 0) return v;
  if (8 >= end) return INCOMPLETE;
  if (buf[8] !== SP) return fail('UPSTREAM_BAD_RESPONSE', 'invalid status-line');
  if (v !== 10 && v !== 11) return fail('UPSTREAM_BAD_RESPONSE', `HTTP/${(v / 10) | 0}.${v % 10} response is not supported`);
  let status = 0;
  for (let i = 9; i < 12; i++) {
    if (i >= end) return INCOMPLETE;
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) return fail('UPSTREAM_BAD_RESPONSE', 'status code is not 3 digits');
    status = status * 10 + d;
  }
  if (12 >= end) return INCOMPLETE;
  let i = 12;
  if (buf[i] === SP) {
    i++;
    while (i < end && FIELD_VALUE[buf[i]] === 1) i++;
  }
  lineReasonStart = i > 12 ? 13 : 12;
  lineReasonEnd = i;
  const le = scanCrlf(buf, i, end, 'UPSTREAM_BAD_RESPONSE', 'invalid status-line');
  if (le < 0) return le;
  // RFC 9110 §15: status codes are 100..599.
  if (status < 100 || status > 599) return fail('UPSTREAM_BAD_RESPONSE', `status code ${status} out of range`);
  lineStatus = status;
  lineMinor = v === 11 ? 1 : 0;
  return le;
}

// authority parse results
let authHostEnd = 0;
let authPort = -1;
let authUpper = false;

/**
 * uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2) over buf[a..b). Host: IP-literal (IPv6 in brackets) or a
 * DNS-style name / IPv4 (see HOST_CHAR). Sets authHostEnd, authPort (-1 when absent), authUpper.
 */
function scanAuthority(buf: Buffer, a: number, b: number, portRequired: boolean): boolean {
  let i = a;
  let upper = false;
  if (i >= b) return false;
  if (buf[i] === LBRACKET) {
    i++;
    let colons = 0;
    while (i < b && IPV6_CHAR[buf[i]] === 1) {
      const c = buf[i];
      if (c === COLON) colons++;
      else if (c >= 0x41 && c <= 0x46) upper = true;
      i++;
    }
    if (i >= b || buf[i] !== RBRACKET || colons < 2) return false;
    i++;
  } else {
    while (i < b && HOST_CHAR[buf[i]] === 1) {
      const c = buf[i];
      if (c >= 0x41 && c <= 0x5a) upper = true;
      i++;
    }
    if (i === a) return false;
  }
  authHostEnd = i;
  authUpper = upper;
  authPort = -1;
  if (i === b) return !portRequired;
  if (buf[i] !== COLON) return false;
  i++;
  if (i === b) return !portRequired; // RFC 3986: port = *DIGIT, so "host:" is the default port
  if (b - i > 5) return false;
  let port = 0;
  for (; i < b; i++) {
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) return false;
    port = port * 10 + d;
  }
  if (port > 65535) return false;
  authPort = port;
  return true;
}

/** 1*DIGIT (RFC 9110 §8.6). -1 not a number, -2 larger than 2^53-1. */
function parseDecimal(buf: Buffer, a: number, b: number): number {
  if (a >= b) return -1;
  let v = 0;
  for (let i = a; i < b; i++) {
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
    if (v > MAX_SAFE) return -2;
  }
  return v;
}

// field semantics shared by requests and responses
let fContentLength = -1;
let fContentLengthSeen = false;
let fTeSeen = false;
let fTeChunkedCount = 0;
let fTeLastChunked = false;
let fTeOther = false;
let fClose = false;
let fKeepAliveToken = false;
let fUpgradeToken = false;
let fUpgrade: string | undefined;
let fExpectContinue = false;
let fHostIndex = -1;
let fHostEnd = 0;
let fHostPort = -1;
let fHostUpper = false;
let fConnection: string[] = [];
let fTransferEncoding: string | undefined;

/** Connection = #connection-option (RFC 9110 §7.6.1); list elements trimmed, empty ones ignored (RFC 9110 §5.6.1). */
function readConnection(buf: Buffer, str: string, a: number, b: number): void {
  let i = a;
  while (i < b) {
    const c = buf[i];
    if (c === COMMA || c === SP || c === HTAB) {
      i++;
      continue;
    }
    const es = i;
    while (i < b && buf[i] !== COMMA) i++;
    let ee = i;
    while (ee > es && (buf[ee - 1] === SP || buf[ee - 1] === HTAB)) ee--;
    const n = ee - es;
    if (n === 5 && eqLower(buf, es, L_CLOSE)) {
      fClose = true;
      fConnection.push('close');
    } else if (n === 10 && eqLower(buf, es, L_KEEP_ALIVE)) {
      fKeepAliveToken = true;
      fConnection.push('keep-alive');
    } else if (n === 7 && eqLower(buf, es, L_UPGRADE)) {
      fUpgradeToken = true;
      fConnection.push('upgrade');
    } else if ((n === 4 && eqLower(buf, es, L_HOST)) || (n === 14 && eqLower(buf, es, L_CONTENT_LENGTH)) || (n === 17 && eqLower(buf, es, L_TRANSFER_ENCODING))) {
      // never hop-by-hop: dropping them would let the peer reframe the message (request smuggling)
    } else {
      fConnection.push(str.slice(es, ee).toLowerCase());
    }
  }
}

/** Transfer-Encoding = #transfer-coding (RFC 9112 §6.1); only the coding names matter for framing. */
function readCodings(buf: Buffer, a: number, b: number): void {
  fTeSeen = true;
  let i = a;
  while (i < b) {
    const c = buf[i];
    if (c === COMMA || c === SP || c === HTAB) {
      i++;
      continue;
    }
    const es = i;
    while (i < b && buf[i] !== COMMA) i++;
    let ee = i;
    while (ee > es && (buf[ee - 1] === SP || buf[ee - 1] === HTAB)) ee--;
    if (ee - es === 7 && eqLower(buf, es, L_CHUNKED)) {
      fTeChunkedCount++;
      fTeLastChunked = true;
    } else {
      fTeOther = true;
      fTeLastChunked = false;
    }
  }
}

/**
 * Builds the flat header list and reads the framing fields. Returns null with failReason set on the first
 * semantic problem, in field order. `request` selects the request-only rules.
 */
function readFields(buf: Buffer, str: string, request: boolean): string[] | null {
  fContentLength = -1;
  fContentLengthSeen = false;
  fTeSeen = false;
  fTeChunkedCount = 0;
  fTeLastChunked = false;
  fTeOther = false;
  fClose = false;
  fKeepAliveToken = false;
  fUpgradeToken = false;
  fUpgrade = undefined;
  fExpectContinue = false;
  fHostIndex = -1;
  fConnection = [];
  fTransferEncoding = undefined;
  const n = fieldCount;
  const headers: string[] = [];
  for (let f = 0; f < n; f++) {
    const p = f << 2;
    const vs = fieldPos[p + 2];
    const ve = fieldPos[p + 3];
    headers.push(str.slice(fieldPos[p], fieldPos[p + 1]), str.slice(vs, ve));
    switch (fieldKind[f]) {
      case K_OTHER:
        break;
      case K_CONTENT_LENGTH: {
        // RFC 9112 §6.3: differing values are unrecoverable; equal duplicates are refused too, since an
        // intermediary that joins them ("1, 1") and one that does not disagree about the body.
        if (fContentLengthSeen) {
          failReason = 'more than one Content-Length';
          return null;
        }
        fContentLengthSeen = true;
        const v = parseDecimal(buf, vs, ve);
        if (v < 0) {
          failReason = v === -2 ? 'Content-Length larger than 2^53-1' : 'Content-Length is not 1*DIGIT (RFC 9110 §8.6)';
          return null;
        }
        fContentLength = v;
        break;
      }
      case K_TRANSFER_ENCODING:
        fTransferEncoding = fTransferEncoding === undefined ? headers[headers.length - 1] : `${fTransferEncoding}, ${headers[headers.length - 1]}`;
        readCodings(buf, vs, ve);
        if (fTeChunkedCount > 1) {
          failReason = 'chunked applied more than once (RFC 9112 §6.1)';
          return null;
        }
        // Requests: only exactly "chunked". RFC 9112 §6.1 allows other codings before chunked, but Portico
        // neither decodes nor re-frames them, and every extra coding is one more place where two parsers on
        // the path could disagree about the body, so "gzip, chunked" is refused as well.
        if (request && (fTeOther || fTeChunkedCount === 0)) {
          failReason = 'Transfer-Encoding other than chunked is not accepted';
          return null;
        }
        break;
      case K_CONNECTION:
        readConnection(buf, str, vs, ve);
        break;
      case K_UPGRADE: {
        const v = str.slice(vs, ve).toLowerCase();
        fUpgrade = fUpgrade === undefined ? v : `${fUpgrade}, ${v}`;
        break;
      }
      case K_EXPECT:
        if (ve - vs === 12 && eqLower(buf, vs, L_100_CONTINUE)) fExpectContinue = true;
        break;
      case K_HOST:
        if (!request) break;
        // RFC 9112 §3.2: more than one Host is a 400.
        if (fHostIndex >= 0) {
          failReason = 'more than one Host header';
          return null;
        }
        // RFC 9110 §7.2: an empty Host is what a client sends when the target has no authority.
        if (ve > vs && !scanAuthority(buf, vs, ve, false)) {
          failReason = 'Host is not a valid authority (RFC 9110 §7.2)';
          return null;
        }
        fHostIndex = f;
        fHostEnd = ve > vs ? authHostEnd : vs;
        fHostPort = ve > vs ? authPort : -1;
        fHostUpper = ve > vs && authUpper;
        break;
    }
  }
  return headers;
}

const MORE: { kind: 'more' } = Object.freeze({ kind: 'more' as const });

function error<H>(code: ErrorCode, reason: string): ParseResult<H> {
  return { kind: 'error', code, reason };
}

/**
 * Parses a request head at the start of `buf`. 'more' when the head is incomplete and still within limits.
 * Errors: CLIENT_BAD_REQUEST (ambiguity or syntax), CLIENT_HEADERS_TOO_LARGE, CLIENT_URI_TOO_LONG,
 * CLIENT_UNSUPPORTED_VERSION (HTTP/2 preface, HTTP/2.0, HTTP/1.2+...).
 */
export function parseRequestHead(buf: Buffer, limits: HeadLimits): ParseResult<RequestHead> {
  const len = buf.length;
  const headerSize = limits.headerSize;
  const end = len < headerSize ? len : headerSize;
  const tooLarge = len >= headerSize;

  // RFC 9112 §2.2: a few empty lines before the request-line are ignored (some clients send CRLF after a body).
  let s = 0;
  let empty = 0;
  while (s < end) {
    const c = buf[s];
    if (c === CR) {
      if (s + 1 >= end) break;
      if (buf[s + 1] !== LF) return error('CLIENT_BAD_REQUEST', 'bare CR in head (CRLF only, RFC 9112 §2.2)');
      if (++empty > MAX_LEADING_EMPTY_LINES) return error('CLIENT_BAD_REQUEST', 'too many empty lines before the request-line');
      s += 2;
    } else if (c === LF) {
      return error('CLIENT_BAD_REQUEST', 'bare LF in head (CRLF only, RFC 9112 §2.2)');
    } else {
      break;
    }
  }
  if (s >= end || buf[s] === CR) return tooLarge ? headTooLarge(headerSize) : MORE; // a CR here is the window's last byte

  const le = scanRequestLine(buf, s, end, limits.uriSize);
  if (le === INCOMPLETE) return tooLarge ? headTooLarge(headerSize) : MORE;
  if (le === FAILED) return error(failCode, failReason);

  // request-target forms (RFC 9112 §3.2), judged once the whole line is in so the version error wins for "PRI *".
  const ts = lineMethodEnd + 1;
  const te = lineTargetEnd;
  const q = lineQuery;
  const first = buf[ts];
  const isConnect = eqExact(buf, s, lineMethodEnd, L_CONNECT);
  let absAuthStart = -1;
  let absAuthEnd = -1;
  let absHostEnd = -1;
  let absPort = -1;
  let absUpper = false;
  let absDefaultPort = 80;
  let absPathStart = -1;
  if (isConnect) {
    // RFC 9112 §3.2.3: CONNECT uses authority-form, host and port. The proxy refuses CONNECT later (405).
    if (!scanAuthority(buf, ts, te, true)) return error('CLIENT_BAD_REQUEST', 'CONNECT needs an authority-form target (host:port)');
  } else if (first === SLASH) {
    // origin-form (RFC 9112 §3.2.1)
  } else if (first === STAR && te - ts === 1) {
    // RFC 9112 §3.2.4: asterisk-form only for OPTIONS.
    if (!eqExact(buf, s, lineMethodEnd, L_OPTIONS)) return error('CLIENT_BAD_REQUEST', 'asterisk-form target is only for OPTIONS');
  } else {
    // absolute-form (RFC 9112 §3.2.2): http or https, no userinfo (RFC 9110 §4.2.4), non-empty authority.
    let a = -1;
    if (te - ts >= 7 && eqLower(buf, ts, L_HTTP_SCHEME)) a = ts + 7;
    else if (te - ts >= 8 && eqLower(buf, ts, L_HTTPS_SCHEME)) {
      a = ts + 8;
      absDefaultPort = 443;
    }
    if (a < 0) return error('CLIENT_BAD_REQUEST', 'invalid request-target form');
    let b = a;
    while (b < te && buf[b] !== SLASH && buf[b] !== QUESTION) b++;
    if (!scanAuthority(buf, a, b, false)) return error('CLIENT_BAD_REQUEST', 'invalid authority in absolute-form target');
    absAuthStart = a;
    absAuthEnd = b;
    absHostEnd = authHostEnd;
    absPort = authPort;
    absUpper = authUpper;
    absPathStart = b < te && buf[b] === SLASH ? b : -1;
  }

  const r = scanFieldsWhenTerminated(buf, le, end, limits.headers);
  if (r === INCOMPLETE) return tooLarge ? headTooLarge(headerSize) : MORE;
  if (r === TOO_MANY) return error('CLIENT_HEADERS_TOO_LARGE', `more than ${limits.headers} header fields`);
  if (r === FAILED) return error('CLIENT_BAD_REQUEST', failReason);

  const used = r;
  const str = latin1(buf, 0, used);
  const headers = readFields(buf, str, true);
  if (headers === null) return error('CLIENT_BAD_REQUEST', failReason);
  const minor = lineMinor;
  // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
  if (fTeSeen && minor === 0) return error('CLIENT_BAD_REQUEST', 'Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)');
  // RFC 9112 §6.1 / §11.2: both framings at once is the classic smuggling vector; reject rather than pick one.
  if (fTeSeen && fContentLengthSeen) return error('CLIENT_BAD_REQUEST', 'both Content-Length and Transfer-Encoding (RFC 9112 §6.1)');
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400.
  if (fHostIndex < 0 && minor === 1) return error('CLIENT_BAD_REQUEST', 'missing Host header (RFC 9112 §3.2)');

  let host: string | undefined;
  let hostRaw: string | undefined;
  if (fHostIndex >= 0) {
    const p = fHostIndex << 2;
    const vs = fieldPos[p + 2];
    const ve = fieldPos[p + 3];
    hostRaw = headers[(fHostIndex << 1) + 1];
    const he = fHostEnd;
    host = he === ve && !fHostUpper ? hostRaw : fHostUpper ? str.slice(vs, he).toLowerCase() : str.slice(vs, he);
    if (absAuthStart >= 0) {
      // RFC 9112 §3.2.2 says the target's authority wins over Host; two different hosts in one request
      // are ambiguous for routing and logs, so they must agree (ports defaulted per scheme).
      const hostPort = fHostPort < 0 ? absDefaultPort : fHostPort;
      const targetPort = absPort < 0 ? absDefaultPort : absPort;
      if (vs === ve || hostPort !== targetPort || !sameHost(buf, vs, he, absAuthStart, absHostEnd)) {
        return error('CLIENT_BAD_REQUEST', 'Host does not match the absolute-form authority');
      }
    }
  } else if (absAuthStart >= 0) {
    // HTTP/1.0 absolute-form without Host: the target's authority is the host.
    hostRaw = str.slice(absAuthStart, absAuthEnd);
    host = absUpper ? str.slice(absAuthStart, absHostEnd).toLowerCase() : str.slice(absAuthStart, absHostEnd);
  }

  let path: string;
  let query: string;
  const target = str.slice(ts, te);
  if (absAuthStart >= 0) {
    const pathEnd = q >= 0 ? q : te;
    path = absPathStart >= 0 ? str.slice(absPathStart, pathEnd) : '/';
    query = q >= 0 ? str.slice(q, te) : '';
  } else if (isConnect) {
    path = '';
    query = '';
  } else if (q >= 0) {
    path = str.slice(ts, q);
    query = str.slice(q, te);
  } else {
    path = target;
    query = '';
  }

  const chunked = fTeSeen; // for requests readFields allowed only exactly one "chunked"
  const bodyKind: BodyKind = chunked ? 'chunked' : fContentLengthSeen ? 'length' : 'none'; // RFC 9112 §6.3
  const keepAlive = minor === 1 ? !fClose : fKeepAliveToken && !fClose; // RFC 9112 §9.3
  const head: RequestHead = {
    method: methodString(buf, str, s, lineMethodEnd),
    target,
    path,
    query,
    versionMinor: minor,
    headers,
    contentLength: fContentLength,
    chunked,
    bodyKind,
    keepAlive,
    connection: fConnection,
    transferEncoding: fTransferEncoding,
    // RFC 9110 §7.8 and §10.1.1: a server ignores Upgrade and 100-continue in HTTP/1.0 requests.
    upgrade: fUpgradeToken && minor === 1 ? fUpgrade : undefined,
    host,
    hostRaw,
    expectContinue: fExpectContinue && minor === 1,
  };
  return { kind: 'done', head, used };
}

function headTooLarge(headerSize: number): ParseResult<RequestHead> {
  return error('CLIENT_HEADERS_TOO_LARGE', `request head larger than ${headerSize} bytes`);
}

function sameHost(buf: Buffer, a1: number, b1: number, a2: number, b2: number): boolean {
  if (b1 - a1 !== b2 - a2) return false;
  for (let k = 0; k < b1 - a1; k++) {
    const x = buf[a1 + k];
    const y = buf[a2 + k];
    if (x !== y && ((x | 0x20) !== (y | 0x20) || (x | 0x20) < 0x61 || (x | 0x20) > 0x7a)) return false;
  }
  return true;
}

/** The common methods as constants: no slice, and callers comparing them hit the same string. */
function methodString(buf: Buffer, str: string, s: number, e: number): string {
  const n = e - s;
  const c = buf[s];
  if (n === 3 && c === 0x47 && buf[s + 1] === 0x45 && buf[s + 2] === 0x54) return 'GET';
  if (n === 4 && c === 0x50 && buf[s + 1] === 0x4f && buf[s + 2] === 0x53 && buf[s + 3] === 0x54) return 'POST';
  if (n === 4 && c === 0x48 && buf[s + 1] === 0x45 && buf[s + 2] === 0x41 && buf[s + 3] === 0x44) return 'HEAD';
  return str.slice(s, e);
}

/**
 * Parses a response head. `requestMethod` decides bodyKind (HEAD -> none; 1xx/204/304 -> none; RFC 9112 §6.3).
 * Errors use UPSTREAM_BAD_RESPONSE.
 */
export function parseResponseHead(buf: Buffer, limits: HeadLimits, requestMethod: string): ParseResult<ResponseHead> {
  const len = buf.length;
  const headerSize = limits.headerSize;
  const end = len < headerSize ? len : headerSize;
  const tooLarge = len >= headerSize;
  const le = scanStatusLine(buf, end);
  if (le === INCOMPLETE) return tooLarge ? responseTooLarge(headerSize) : MORE;
  if (le === FAILED) return error('UPSTREAM_BAD_RESPONSE', failReason);

  const r = scanFieldsWhenTerminated(buf, le, end, limits.headers);
  if (r === INCOMPLETE) return tooLarge ? responseTooLarge(headerSize) : MORE;
  if (r === TOO_MANY) return error('UPSTREAM_BAD_RESPONSE', `response with more than ${limits.headers} header fields`);
  if (r === FAILED) return error('UPSTREAM_BAD_RESPONSE', failReason);

  const used = r;
  const str = latin1(buf, 0, used);
  const headers = readFields(buf, str, false);
  if (headers === null) return error('UPSTREAM_BAD_RESPONSE', failReason);
  const minor = lineMinor;
  const status = lineStatus;
  if (fTeSeen && minor === 0) return error('UPSTREAM_BAD_RESPONSE', 'Transfer-Encoding in an HTTP/1.0 response (RFC 9112 §6.1)');
  // Strict like requests: a response with both framings is refused, not resolved in favour of TE.
  if (fTeSeen && fContentLengthSeen) return error('UPSTREAM_BAD_RESPONSE', 'both Content-Length and Transfer-Encoding (RFC 9112 §6.1)');

  // RFC 9112 §6.3, in its order.
  let bodyKind: BodyKind;
  if (requestMethod === 'HEAD' || status < 200 || status === 204 || status === 304) bodyKind = 'none';
  else if (requestMethod === 'CONNECT' && status < 300) bodyKind = 'none';
  else if (fTeSeen) bodyKind = fTeLastChunked ? 'chunked' : 'close';
  else if (fContentLengthSeen) bodyKind = 'length';
  else bodyKind = 'close';

  const keepAlive = bodyKind !== 'close' && (minor === 1 ? !fClose : fKeepAliveToken && !fClose);
  const reasonLen = lineReasonEnd - lineReasonStart;
  const head: ResponseHead = {
    status,
    reason: reasonLen === 2 && buf[lineReasonStart] === 0x4f && buf[lineReasonStart + 1] === 0x4b ? 'OK' : str.slice(lineReasonStart, lineReasonEnd),
    versionMinor: minor,
    headers,
    contentLength: fContentLength,
    chunked: fTeSeen && fTeLastChunked,
    bodyKind,
    keepAlive,
    connection: fConnection,
    transferEncoding: fTransferEncoding,
    // Only a 101 switches protocols; servers also advertise "Upgrade: h2c" on ordinary responses.
    upgrade: status === 101 && fUpgradeToken ? fUpgrade : undefined,
  };
  return { kind: 'done', head, used };
}

function responseTooLarge(headerSize: number): ParseResult<ResponseHead> {
  return error('UPSTREAM_BAD_RESPONSE', `response head larger than ${headerSize} bytes`);
}

// ---- chunked framing ----------------------------------------------------------------------------------------
// States of ChunkedScanner (RFC 9112 §7.1):
//   chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//   last-chunk = 1*("0") [ chunk-ext ] CRLF ; trailer-section = *( field-line CRLF ) ; then CRLF
const C_SIZE = 0; // hex digits of chunk-size
const C_SIZE_WS = 1; // BWS after the size: only ";" may follow
const C_EXT_NAME_START = 2;
const C_EXT_NAME = 3;
const C_EXT_AFTER_NAME = 4;
const C_EXT_VALUE_START = 5;
const C_EXT_VALUE_TOKEN = 6;
const C_EXT_VALUE_QUOTED = 7;
const C_EXT_VALUE_ESCAPE = 8;
const C_EXT_AFTER_VALUE = 9;
const C_SIZE_LF = 10;
const C_DATA = 11;
const C_DATA_CR = 12;
const C_DATA_LF = 13;
const C_TRAILER_START = 14;
const C_TRAILER_NAME = 15;
const C_TRAILER_VALUE = 16;
const C_TRAILER_LF = 17;
const C_FINAL_LF = 18;
const C_DONE = 19;
const C_ERROR = 20;

/** Max hex digits of a chunk-size: 16 would already overflow 2^53, the cap is a syntax bound before the value bound. */
const MAX_SIZE_DIGITS = 16;
/**
 * Trailer names refused (RFC 9110 §6.5.1: fields that frame or route a message are not allowed in trailers; a
 * recipient that merged one into the head would reframe the message). Matched byte by byte as the name arrives:
 * bit k of the scanner's match mask stays set while the name is still a prefix of FORBIDDEN_TRAILERS[k].
 */
const FORBIDDEN_TRAILERS: readonly Uint8Array[] = [L_CONTENT_LENGTH, L_TRANSFER_ENCODING, L_HOST];
const ALL_FORBIDDEN = (1 << FORBIDDEN_TRAILERS.length) - 1;

/**
 * Tracks a chunked body (RFC 9112 §7.1) as it streams, to find its end without decoding it.
 * Strict: hex sizes only (no sign, no 0x, bounded length), CRLF only, chunk-ext and trailers bounded.
 */
export class ChunkedScanner {
  readonly #maxLine: number;
  readonly #maxTrailer: number;
  #state = C_SIZE;
  #size = 0;
  #digits = 0;
  #lineBytes = 0;
  #trailerBytes = 0;
  /** Current trailer name: bytes read and which forbidden names it still matches (see FORBIDDEN_TRAILERS). */
  #nameLen = 0;
  #nameMatch = 0;
  #dataBytes = 0;
  #error: string | undefined;

  /** `maxTrailerBytes` bounds the whole trailer section (optional; Portico addition). */
  constructor(maxLineBytes: number = DEFAULT_CHUNK_LINE_BYTES, maxTrailerBytes: number = DEFAULT_CHUNK_TRAILER_BYTES) {
    this.#maxLine = maxLineBytes;
    this.#maxTrailer = maxTrailerBytes;
  }

  /** True once the last-chunk, trailers and final CRLF were consumed. */
  get done(): boolean {
    return this.#state === C_DONE;
  }

  get error(): string | undefined {
    return this.#error;
  }

  /** Body bytes announced by the chunk sizes read so far (a size counts once its line ends, before its data). */
  get dataBytes(): number {
    return this.#dataBytes;
  }

  #fail(reason: string): number {
    this.#state = C_ERROR;
    this.#error = reason;
    return -1;
  }

  /** Narrows the forbidden-name mask by one trailer name byte (tchar, so `| 0x20` lower-cases letters only). */
  #matchName(c: number): void {
    const at = this.#nameLen++;
    let m = this.#nameMatch;
    for (let k = 0; m !== 0 && k < FORBIDDEN_TRAILERS.length; k++) {
      const l = FORBIDDEN_TRAILERS[k];
      if ((m & (1 << k)) !== 0 && (at >= l.length || (c | 0x20) !== l[at])) m &= ~(1 << k);
    }
    this.#nameMatch = m;
  }

  #forbiddenName(): boolean {
    for (let k = 0; k < FORBIDDEN_TRAILERS.length; k++) {
      if ((this.#nameMatch & (1 << k)) !== 0 && this.#nameLen === FORBIDDEN_TRAILERS[k].length) return true;
    }
    return false;
  }

  /**
   * Consumes bytes from buf[start..]. Returns how many bytes belong to the body (stops at its end), or -1
   * when the framing is invalid (then `error` says why). `onData`, when given, gets each run of chunk data
   * (buf[from..to)) as it is passed over: the decoded body, for a relay that re-encodes it (compression).
   */
  push(buf: Buffer, start: number, onData?: (buf: Buffer, from: number, to: number) => void): number {
    let state = this.#state;
    if (state === C_DONE) return 0;
    if (state === C_ERROR) return -1;
    const n = buf.length;
    const from = start > 0 ? start : 0;
    if (from >= n) return 0;
    let i = from;
    while (i < n) {
      if (state === C_DATA) {
        // Data bytes are skipped by count, never looked at.
        const avail = n - i;
        if (this.#size > avail) {
          this.#size -= avail;
          if (onData !== undefined) onData(buf, i, n);
          i = n;
          break;
        }
        if (onData !== undefined && this.#size > 0) onData(buf, i, i + this.#size);
        i += this.#size;
        this.#size = 0;
        state = C_DATA_CR;
        continue;
      }
      const c = buf[i++];
      if (state <= C_SIZE_LF) {
        if (++this.#lineBytes > this.#maxLine) return this.#fail(`chunk-size line longer than ${this.#maxLine} bytes`);
      } else if (state >= C_TRAILER_START) {
        if (++this.#trailerBytes > this.#maxTrailer) return this.#fail(`chunked trailer section larger than ${this.#maxTrailer} bytes`);
      }
      switch (state) {
        case C_SIZE: {
          const h = HEX_VALUE[c];
          if (h >= 0) {
            if (++this.#digits > MAX_SIZE_DIGITS) return this.#fail('chunk-size has too many digits');
            const size = this.#size * 16 + h;
            if (size > MAX_SAFE) return this.#fail('chunk-size larger than 2^53-1');
            this.#size = size;
          } else if (this.#digits === 0) {
            return this.#fail('chunk-size is not 1*HEXDIG (RFC 9112 §7.1)');
          } else if (c === CR) state = C_SIZE_LF;
          else if (c === SEMI) state = C_EXT_NAME_START;
          else if (c === SP || c === HTAB) state = C_SIZE_WS;
          else return this.#fail('invalid character after chunk-size');
          break;
        }
        case C_SIZE_WS:
          if (c === SEMI) state = C_EXT_NAME_START;
          else if (c !== SP && c !== HTAB) return this.#fail('invalid character after chunk-size');
          break;
        case C_EXT_NAME_START:
          if (TCHAR[c] === 1) state = C_EXT_NAME;
          else if (c !== SP && c !== HTAB) return this.#fail('invalid chunk-ext name');
          break;
        case C_EXT_NAME:
          if (TCHAR[c] === 1) break;
          if (c === EQUALS) state = C_EXT_VALUE_START;
          else if (c === SEMI) state = C_EXT_NAME_START;
          else if (c === CR) state = C_SIZE_LF;
          else if (c === SP || c === HTAB) state = C_EXT_AFTER_NAME;
          else return this.#fail('invalid chunk-ext name');
          break;
        case C_EXT_AFTER_NAME:
          if (c === EQUALS) state = C_EXT_VALUE_START;
          else if (c === SEMI) state = C_EXT_NAME_START;
          else if (c === CR) state = C_SIZE_LF;
          else if (c !== SP && c !== HTAB) return this.#fail('invalid chunk-ext');
          break;
        case C_EXT_VALUE_START:
          if (TCHAR[c] === 1) state = C_EXT_VALUE_TOKEN;
          else if (c === DQUOTE) state = C_EXT_VALUE_QUOTED;
          else if (c !== SP && c !== HTAB) return this.#fail('invalid chunk-ext value');
          break;
        case C_EXT_VALUE_TOKEN:
          if (TCHAR[c] === 1) break;
          if (c === SEMI) state = C_EXT_NAME_START;
          else if (c === CR) state = C_SIZE_LF;
          else if (c === SP || c === HTAB) state = C_EXT_AFTER_VALUE;
          else return this.#fail('invalid chunk-ext value');
          break;
        case C_EXT_VALUE_QUOTED:
          if (c === DQUOTE) state = C_EXT_AFTER_VALUE;
          else if (c === BACKSLASH) state = C_EXT_VALUE_ESCAPE;
          else if (QDTEXT[c] !== 1) return this.#fail('invalid character in quoted chunk-ext value');
          break;
        case C_EXT_VALUE_ESCAPE:
          // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ), RFC 9110 §5.6.4
          if (FIELD_VALUE[c] !== 1) return this.#fail('invalid quoted-pair in chunk-ext value');
          state = C_EXT_VALUE_QUOTED;
          break;
        case C_EXT_AFTER_VALUE:
          if (c === SEMI) state = C_EXT_NAME_START;
          else if (c === CR) state = C_SIZE_LF;
          else if (c !== SP && c !== HTAB) return this.#fail('invalid chunk-ext');
          break;
        case C_SIZE_LF:
          if (c !== LF) return this.#fail('bare CR in chunk-size line');
          this.#lineBytes = 0;
          this.#digits = 0;
          this.#dataBytes += this.#size;
          state = this.#size === 0 ? C_TRAILER_START : C_DATA;
          break;
        case C_DATA_CR:
          if (c !== CR) return this.#fail('chunk data not followed by CRLF');
          state = C_DATA_LF;
          break;
        case C_DATA_LF:
          if (c !== LF) return this.#fail('chunk data not followed by CRLF');
          state = C_SIZE;
          break;
        case C_TRAILER_START:
          if (c === CR) state = C_FINAL_LF;
          else if (TCHAR[c] === 1) {
            state = C_TRAILER_NAME;
            this.#nameLen = 0;
            this.#nameMatch = ALL_FORBIDDEN;
            this.#matchName(c);
          } else if (c === SP || c === HTAB) return this.#fail('obs-fold in trailer section (RFC 9112 §5.2)');
          else return this.#fail(c === LF ? 'bare LF in trailer section' : 'invalid trailer field name');
          break;
        case C_TRAILER_NAME:
          if (c === COLON) {
            if (this.#nameMatch !== 0 && this.#forbiddenName()) return this.#fail('Content-Length, Transfer-Encoding or Host in a trailer (RFC 9110 §6.5.1)');
            state = C_TRAILER_VALUE;
          } else if (TCHAR[c] === 1) this.#matchName(c);
          else return this.#fail(c === SP || c === HTAB ? 'whitespace between trailer name and colon' : 'invalid trailer field name');
          break;
        case C_TRAILER_VALUE:
          if (c === CR) state = C_TRAILER_LF;
          else if (FIELD_VALUE[c] !== 1) return this.#fail(c === LF ? 'bare LF in trailer section' : 'control character in trailer value');
          break;
        case C_TRAILER_LF:
          if (c !== LF) return this.#fail('bare CR in trailer section');
          state = C_TRAILER_START;
          break;
        case C_FINAL_LF:
          if (c !== LF) return this.#fail('bare CR at the end of the chunked body');
          this.#state = C_DONE;
          return i - from;
      }
    }
    this.#state = state;
    return i - from;
  }
}
