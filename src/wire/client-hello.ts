// TLS ClientHello reader for routing before the handshake: SNI, ALPN and versions from the first flight,
// reassembled across TLS records (RFC 8446 §5.1, RFC 5246 §6.2.1). Pure, incremental and bounded over bytes:
// it never throws, never reads past `buf.length`, and neither consumes nor changes the bytes it looks at (the
// caller forwards them untouched). It does no crypto and judges nothing beyond the ClientHello itself.
//
// Strictness matters here: the name we route on must be the name the TLS server will see, so anything a
// conforming server would reject, or could read differently (duplicate extensions, trailing bytes, odd names),
// is an error rather than a guess.

export interface ClientHello {
  /** server_name host_name (RFC 6066 §3), validated as a DNS name and lower-cased; undefined when absent or an IP literal. */
  sni?: string;
  /** ALPN protocol names in client order (RFC 7301 §3.1), latin1-decoded; empty when the extension is absent. */
  alpn: string[];
  /** ClientHello.legacy_version (client_version in TLS 1.2), e.g. 0x0303. */
  tlsVersion: number;
  /** legacy_record_version of the first record, e.g. 0x0301. */
  recordVersion: number;
  /** supported_versions (RFC 8446 §4.2.1) in client order, GREASE values kept; empty when absent (TLS <= 1.2). */
  supportedVersions: number[];
  /** Bytes of the TLS records that carried the ClientHello: buf[0..recordBytes) is the whole first flight part. */
  recordBytes: number;
}

export type ClientHelloResult =
  | { kind: 'more' }
  | { kind: 'done'; hello: ClientHello }
  | { kind: 'not_tls' }
  | { kind: 'error'; reason: string };

/** Default bound on the records carrying a ClientHello (post-quantum key shares make ~1.8 KB hellos common). */
export const DEFAULT_CLIENT_HELLO_BYTES = 16 * 1024;

const CONTENT_HANDSHAKE = 0x16; // RFC 8446 §5.1 ContentType.handshake (22)
const HANDSHAKE_CLIENT_HELLO = 0x01; // RFC 8446 §4 HandshakeType.client_hello
const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
const MAX_PLAINTEXT = 16384; // RFC 8446 §5.1: TLSPlaintext.length MUST NOT exceed 2^14

const EXT_SERVER_NAME = 0; // RFC 6066 §3
const EXT_ALPN = 16; // RFC 7301 §3.1
const EXT_SUPPORTED_VERSIONS = 43; // RFC 8446 §4.2.1
const EXT_PRE_SHARED_KEY = 41; // RFC 8446 §4.2.11
const NAME_TYPE_HOST = 0;
const MAX_DNS_NAME = 253; // RFC 1035 §2.3.4 (255 octets on the wire = 253 characters without the root dot)
const MAX_LABEL = 63;

const CONTENT_ALERT = 0x15; // RFC 8446 §5.1 ContentType.alert (21)
const ALERT_FATAL = 2; // RFC 8446 §6 AlertLevel.fatal

/** Alerts Portico sends itself, before any handshake, when it refuses a ClientHello (RFC 8446 §6). */
export const TLS_ALERT = {
  /** RFC 8446 §9.2: a server that requires SNI answers a ClientHello without it with missing_extension. */
  missingExtension: 109,
  /** RFC 6066 §3: a server that does not recognise the name SHOULD abort with unrecognized_name. */
  unrecognizedName: 112,
} as const;

/** A fatal alert record; legacy_record_version 0x0303 as TLS 1.3 servers write it (RFC 8446 §5.1). */
export function tlsFatalAlert(description: number): Buffer {
  return Buffer.from([CONTENT_ALERT, 0x03, 0x03, 0x00, 0x02, ALERT_FATAL, description & 0xff]);
}

const MORE: ClientHelloResult = Object.freeze({ kind: 'more' });
const NOT_TLS: ClientHelloResult = Object.freeze({ kind: 'not_tls' });

function error(reason: string): ClientHelloResult {
  return { kind: 'error', reason };
}

/**
 * Reads the ClientHello at the start of `buf` (the first bytes a client sent). Call again with more bytes on
 * 'more'. 'not_tls' as soon as the first byte is not a handshake record, so a plaintext request on the same port
 * is told apart after one byte. `maxBytes` bounds the records carrying the hello: a larger hello is an error as
 * soon as a record header or the handshake length shows it cannot fit.
 */
export function parseClientHello(buf: Buffer, maxBytes: number = DEFAULT_CLIENT_HELLO_BYTES): ClientHelloResult {
  const len = buf.length;
  if (len === 0) return MORE;
  if (buf[0] !== CONTENT_HANDSHAKE) return NOT_TLS;

  // Walk the record layer. Handshake bytes are counted, not copied, until the whole message is known to be
  // present: a client dripping its hello costs one header walk per call, not one body parse.
  let pos = 0;
  let hsBytes = 0; // handshake bytes seen in complete-or-partial records so far
  let hsHeader = 0; // the 4 handshake header bytes as they arrive (type << 24 | length)
  let need = -1; // HANDSHAKE_HEADER + body length, once known
  let records = 0;
  let recordVersion = 0;
  while (true) {
    // Checked before looking at the next byte, so every prefix of an input gives 'more' or the input's answer.
    if (pos >= maxBytes) return tooLarge(maxBytes);
    if (pos >= len) return MORE;
    if (buf[pos] !== CONTENT_HANDSHAKE) {
      // RFC 8446 §5.1: handshake messages MUST NOT be interleaved with other record types.
      return error('non-handshake record before the ClientHello was complete (RFC 8446 §5.1)');
    }
    if (pos + 1 < len && buf[pos + 1] !== 0x03) return error('record version major is not 3 (RFC 8446 §5.1)');
    if (pos + RECORD_HEADER > len) return MORE;
    const version = (buf[pos + 1] << 8) | buf[pos + 2];
    if (records === 0) recordVersion = version;
    const fragLen = (buf[pos + 3] << 8) | buf[pos + 4];
    if (fragLen > MAX_PLAINTEXT) return error('record longer than 2^14 bytes (RFC 8446 §5.1)');
    if (fragLen === 0) return error('zero-length handshake record (RFC 8446 §5.1)');
    const recEnd = pos + RECORD_HEADER + fragLen;
    if (recEnd > maxBytes) return tooLarge(maxBytes);
    records++;
    const dataStart = pos + RECORD_HEADER;
    const avail = (recEnd < len ? recEnd : len) - dataStart;

    // Collect the handshake header bytes (they may themselves be split over records).
    for (let k = 0; k < avail && hsBytes + k < HANDSHAKE_HEADER; k++) {
      const b = buf[dataStart + k];
      const at = hsBytes + k;
      if (at === 0 && b !== HANDSHAKE_CLIENT_HELLO) return error('first handshake message is not a ClientHello (RFC 8446 §4)');
      hsHeader = hsHeader * 256 + b;
      if (at === HANDSHAKE_HEADER - 1) {
        need = HANDSHAKE_HEADER + (hsHeader & 0xffffff);
        // Fewest bytes such a message can take on the wire: every 2^14 bytes need one more record header.
        const minWire = need + RECORD_HEADER * Math.ceil(need / MAX_PLAINTEXT);
        if (minWire > maxBytes) return tooLarge(maxBytes);
      }
    }
    hsBytes += avail;
    if (need >= 0 && hsBytes >= need) {
      // The message ends in this record. Nothing else may follow it there: the client's first flight has no
      // other handshake message, and bytes the server would read differently are not something to route on.
      const usedHere = need - (hsBytes - avail);
      if (fragLen > usedHere) return error('bytes after the ClientHello in its record (RFC 8446 §5.1)');
      return finish(buf, records, need, recEnd, recordVersion);
    }
    if (recEnd > len) return MORE;
    pos = recEnd;
  }
}

function tooLarge(maxBytes: number): ClientHelloResult {
  return error(`ClientHello larger than ${maxBytes} bytes`);
}

/** Parses the complete message: in place when one record carries it, else from a reassembled copy. */
function finish(buf: Buffer, records: number, need: number, recordBytes: number, recordVersion: number): ClientHelloResult {
  if (records === 1) return parseBody(buf, RECORD_HEADER + HANDSHAKE_HEADER, RECORD_HEADER + need, recordBytes, recordVersion);
  const hs = Buffer.allocUnsafe(need);
  let out = 0;
  let pos = 0;
  while (out < need) {
    const fragLen = (buf[pos + 3] << 8) | buf[pos + 4];
    const take = fragLen < need - out ? fragLen : need - out;
    buf.copy(hs, out, pos + RECORD_HEADER, pos + RECORD_HEADER + take);
    out += take;
    pos += RECORD_HEADER + fragLen;
  }
  return parseBody(hs, HANDSHAKE_HEADER, need, recordBytes, recordVersion);
}

// ---- the ClientHello body (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) --------------------------------------------
//   ProtocolVersion legacy_version; Random random[32]; opaque legacy_session_id<0..32>;
//   CipherSuite cipher_suites<2..2^16-2>; opaque legacy_compression_methods<1..2^8-1>;
//   Extension extensions<8..2^16-1>   (TLS 1.2: optional, may be absent entirely)

/** Extension types seen in the current hello (a 65536-bit set), cleared after each parse via `seenList`. */
const seen = new Uint32Array(2048);
const seenList = new Uint16Array(65536 / 4); // an extension takes at least 4 of the block's < 2^16 bytes

function parseBody(b: Buffer, start: number, end: number, recordBytes: number, recordVersion: number): ClientHelloResult {
  let p = start;
  if (end - p < 2 + 32 + 1) return error('ClientHello too short');
  const tlsVersion = (b[p] << 8) | b[p + 1];
  if (b[p] !== 0x03) return error('ClientHello legacy_version major is not 3 (RFC 8446 §4.1.2)');
  p += 2 + 32;
  const sidLen = b[p++];
  if (sidLen > 32) return error('legacy_session_id longer than 32 bytes (RFC 8446 §4.1.2)');
  p += sidLen;
  if (p + 2 > end) return error('ClientHello truncated in cipher_suites');
  const csLen = (b[p] << 8) | b[p + 1];
  p += 2;
  if (csLen < 2 || (csLen & 1) !== 0) return error('cipher_suites length is not a positive even number (RFC 8446 §4.1.2)');
  p += csLen;
  if (p + 1 > end) return error('ClientHello truncated in cipher_suites');
  const cmLen = b[p++];
  if (cmLen < 1) return error('legacy_compression_methods is empty (RFC 8446 §4.1.2)');
  p += cmLen;
  if (p > end) return error('ClientHello truncated in legacy_compression_methods');

  const hello: ClientHello = { alpn: [], tlsVersion, recordVersion, supportedVersions: [], recordBytes };
  if (p === end) return { kind: 'done', hello }; // RFC 5246 §7.4.1.2: no extensions at all
  if (p + 2 > end) return error('ClientHello truncated in extensions length');
  const extLen = (b[p] << 8) | b[p + 1];
  p += 2;
  if (p + extLen !== end) return error('extensions length does not match the ClientHello length (RFC 8446 §4.1.2)');

  let nSeen = 0;
  let reason: string | undefined;
  while (p < end) {
    if (p + 4 > end) {
      reason = 'extension header truncated';
      break;
    }
    const type = (b[p] << 8) | b[p + 1];
    const dLen = (b[p + 2] << 8) | b[p + 3];
    p += 4;
    if (p + dLen > end) {
      reason = 'extension data runs past the extensions block';
      break;
    }
    const word = type >>> 5;
    const bit = 1 << (type & 31);
    if ((seen[word] & bit) !== 0) {
      reason = 'duplicate extension (RFC 8446 §4.2)';
      break;
    }
    seen[word] |= bit;
    seenList[nSeen++] = type;
    if (type === EXT_PRE_SHARED_KEY && p + dLen !== end) {
      reason = 'pre_shared_key is not the last extension (RFC 8446 §4.2.11)';
      break;
    }
    if (type === EXT_SERVER_NAME) reason = readServerName(b, p, p + dLen, hello);
    else if (type === EXT_ALPN) reason = readAlpn(b, p, p + dLen, hello);
    else if (type === EXT_SUPPORTED_VERSIONS) reason = readSupportedVersions(b, p, p + dLen, hello);
    if (reason !== undefined) break;
    p += dLen;
  }
  for (let k = 0; k < nSeen; k++) seen[seenList[k] >>> 5] = 0;
  return reason === undefined ? { kind: 'done', hello } : error(reason);
}

/** RFC 6066 §3: ServerNameList server_name_list<1..2^16-1>; ServerName { NameType name_type; HostName<1..2^16-1> }. */
function readServerName(b: Buffer, p: number, end: number, hello: ClientHello): string | undefined {
  if (end - p < 2) return 'server_name extension truncated';
  const listLen = (b[p] << 8) | b[p + 1];
  p += 2;
  if (listLen === 0 || p + listLen !== end) return 'server_name list length is wrong (RFC 6066 §3)';
  let named = false;
  while (p < end) {
    if (p + 3 > end) return 'server_name entry truncated';
    const nameType = b[p];
    const nameLen = (b[p + 1] << 8) | b[p + 2];
    p += 3;
    if (nameLen === 0 || p + nameLen > end) return 'server_name entry length is wrong (RFC 6066 §3)';
    // Only host_name is defined; other types are skipped as opaque, as common stacks (Go, BoringSSL) do.
    if (nameType === NAME_TYPE_HOST) {
      // RFC 6066 §3: the list MUST NOT contain more than one name of the same name_type.
      if (named) return 'more than one host_name in server_name (RFC 6066 §3)';
      named = true;
      const name = hostName(b, p, p + nameLen);
      if (name !== null && typeof name !== 'string') return name.reason;
      // an IP literal (null) names no host: RFC 6066 §3 forbids it, yet some clients (wrk, older Java) send one, and
      // a listener without a preface hands it to OpenSSL, which takes it as no name: the same here
      if (name !== null) hello.sni = name;
    }
    p += nameLen;
  }
  return undefined;
}

const LOWER = (() => {
  // 0 = not allowed; otherwise the lower-cased byte. Letters, digits, '-', '_' (seen in real internal names)
  // and '.'; RFC 6066 §3 HostName is ASCII, IDNs arrive as A-labels ("xn--...").
  const t = new Uint8Array(256);
  for (let c = 0x30; c <= 0x39; c++) t[c] = c;
  for (let c = 0x61; c <= 0x7a; c++) t[c] = c;
  for (let c = 0x41; c <= 0x5a; c++) t[c] = c | 0x20;
  t[0x2d] = 0x2d;
  t[0x5f] = 0x5f;
  t[0x2e] = 0x2e;
  return t;
})();

/**
 * Validates a HostName as a DNS name and lower-cases it (RFC 6066 §3, RFC 1035 §2.3.4, RFC 1123 §2.1); null for an
 * IP literal (one that reads as an IPv4 or IPv6 address), which names no host.
 */
function hostName(b: Buffer, s: number, e: number): string | { reason: string } | null {
  const n = e - s;
  if (n > MAX_DNS_NAME) return { reason: 'server name longer than 253 characters (RFC 1035 §2.3.4)' };
  if (b[e - 1] === 0x2e) return { reason: 'server name has a trailing dot (RFC 6066 §3)' };
  if (ipv6Literal(b, s, e)) return null;
  let labelStart = s;
  let lastLabelNumeric = true;
  let upper = false;
  for (let i = s; i <= e; i++) {
    const c = i < e ? b[i] : 0x2e;
    if (c === 0x2e) {
      const labelLen = i - labelStart;
      if (labelLen === 0) return { reason: 'server name has an empty label' };
      if (labelLen > MAX_LABEL) return { reason: 'server name label longer than 63 characters (RFC 1035 §2.3.4)' };
      if (b[labelStart] === 0x2d || b[i - 1] === 0x2d) return { reason: 'server name label starts or ends with a hyphen (RFC 1123 §2.1)' };
      lastLabelNumeric = true;
      for (let k = labelStart; k < i; k++) {
        if (b[k] < 0x30 || b[k] > 0x39) {
          lastLabelNumeric = false;
          break;
        }
      }
      labelStart = i + 1;
      continue;
    }
    const l = LOWER[c];
    if (l === 0) return { reason: 'server name has a character outside letters, digits, "-", "_" and "." (RFC 6066 §3)' };
    if (l !== c) upper = true;
  }
  // An all-numeric last label is an IPv4 literal (or could be read as one); no TLD is all-numeric (RFC 3696 §2).
  if (lastLabelNumeric) return null;
  const str = b.toString('latin1', s, e);
  return upper ? str.toLowerCase() : str;
}

/** Hex digits, ':' and '.' with at least one ':': what an IPv6 literal (or one with an IPv4 tail) is made of. */
function ipv6Literal(b: Buffer, s: number, e: number): boolean {
  let colon = false;
  for (let i = s; i < e; i++) {
    const c = b[i];
    if (c === 0x3a) colon = true;
    else if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46) || c === 0x2e)) return false;
  }
  return colon;
}

/** RFC 7301 §3.1: ProtocolNameList protocol_name_list<2..2^16-1>; ProtocolName<1..2^8-1>. */
function readAlpn(b: Buffer, p: number, end: number, hello: ClientHello): string | undefined {
  if (end - p < 2) return 'ALPN extension truncated';
  const listLen = (b[p] << 8) | b[p + 1];
  p += 2;
  if (listLen < 2 || p + listLen !== end) return 'ALPN list length is wrong (RFC 7301 §3.1)';
  while (p < end) {
    const n = b[p++];
    if (n === 0) return 'empty ALPN protocol name (RFC 7301 §3.1)';
    if (p + n > end) return 'ALPN protocol name runs past the list';
    hello.alpn.push(b.toString('latin1', p, p + n));
    p += n;
  }
  return undefined;
}

/** RFC 8446 §4.2.1: in a ClientHello, ProtocolVersion versions<2..254>. */
function readSupportedVersions(b: Buffer, p: number, end: number, hello: ClientHello): string | undefined {
  if (end - p < 1) return 'supported_versions extension truncated';
  const listLen = b[p++];
  if (listLen < 2 || (listLen & 1) !== 0 || p + listLen !== end) return 'supported_versions length is wrong (RFC 8446 §4.2.1)';
  for (; p < end; p += 2) hello.supportedVersions.push((b[p] << 8) | b[p + 1]);
  return undefined;
}
