// PROXY protocol v1 and v2 (haproxy doc/proxy-protocol.txt): the incremental, bounded header parser used on
// listeners that accept it, the builders used towards upstreams that want it, and the trusted-sender CIDR
// matcher. Pure functions over bytes and strings: no sockets, never throws on input. Whether a header is
// required, and from whom, is the caller's policy (spec §2: a receiver must not guess, and must filter senders).
// Section numbers (§) below are those of proxy-protocol.txt.

export type ProxyFamily = 'tcp4' | 'tcp6' | 'unix' | 'unknown';

export interface ProxyEndpoint {
  /** IPv4 dotted quad, IPv6 in RFC 5952 form (IPv4-mapped as ::ffff:a.b.c.d), or a unix socket path. */
  address: string;
  /** 0 for unix sockets. */
  port: number;
}

export interface ProxyTlv {
  type: number;
  value: Buffer;
}

export interface ProxyHeader {
  version: 1 | 2;
  /** 'local': health check or the sender's own connection; use the real socket endpoints (§2.2). */
  command: 'proxy' | 'local';
  /** 'unknown': v1 UNKNOWN, v2 UNSPEC, LOCAL, or a datagram family (which falls back to UNSPEC, §2.2). */
  family: ProxyFamily;
  source?: ProxyEndpoint;
  destination?: ProxyEndpoint;
  /** v2 TLVs in wire order, values copied out of the input. A verified CRC32C TLV is kept too. */
  tlvs: ProxyTlv[];
}

export type ProxyParseResult =
  | { kind: 'more' }
  | { kind: 'none' }
  | { kind: 'done'; header: ProxyHeader; /** header bytes to skip; what follows is the client's data */ used: number }
  | { kind: 'error'; reason: string };

/** §2.1: the longest v1 line ("PROXY UNKNOWN" with two full IPv6 addresses and ports), CRLF included. */
export const PROXY_V1_MAX_LINE = 107;
/** Default bound of a whole v2 header (16 + len): HAProxy's default buffer, far above what senders emit. */
export const DEFAULT_PROXY_V2_MAX_BYTES = 16 * 1024;

export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;
export const PP2_TYPE_CRC32C = 0x03;
export const PP2_TYPE_NOOP = 0x04;
export const PP2_TYPE_UNIQUE_ID = 0x05;
export const PP2_TYPE_SSL = 0x20;
export const PP2_TYPE_NETNS = 0x30;

const V1_SIG = Uint8Array.from('PROXY ', (c) => c.charCodeAt(0));
/** §2.2 */
const V2_SIG = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const V2_HEADER = 16;
const UNIX_ADDR = 108;
const CR = 0x0d;
const LF = 0x0a;

const MORE: ProxyParseResult = Object.freeze({ kind: 'more' });
const NONE: ProxyParseResult = Object.freeze({ kind: 'none' });

function error(reason: string): ProxyParseResult {
  return { kind: 'error', reason };
}

/**
 * Reads a PROXY header at the start of `buf`. 'none' as soon as the bytes cannot be a signature (a plain
 * connection); 'more' while they still could be or the header is incomplete; errors as early as the bytes
 * show them. `maxV2Bytes` bounds a v2 header (v1 is bounded by the spec's 107 bytes).
 */
export function parseProxyHeader(buf: Buffer, maxV2Bytes: number = DEFAULT_PROXY_V2_MAX_BYTES): ProxyParseResult {
  const len = buf.length;
  if (len === 0) return MORE;
  if (buf[0] === V1_SIG[0]) return parseV1(buf, len);
  if (buf[0] === V2_SIG[0]) return parseV2(buf, len, maxV2Bytes);
  return NONE;
}

// ---- v1 (§2.1) ----------------------------------------------------------------------------------------------

function parseV1(buf: Buffer, len: number): ProxyParseResult {
  // "PROXY" identifies v1; with anything but one space after it, it is a broken v1 header, not a plain connection.
  const sigEnd = len < V1_SIG.length ? len : V1_SIG.length;
  for (let i = 1; i < sigEnd; i++) {
    if (buf[i] !== V1_SIG[i]) return i < V1_SIG.length - 1 ? NONE : error('PROXY v1: "PROXY" not followed by a single space (§2.1)');
  }
  if (len <= V1_SIG.length) return MORE;
  // The line is decoded only once its CRLF is in (§2.1); a lone CR or LF is refused as soon as it is seen.
  // The CR may sit at most at index 105, so that CRLF ends within the 107 bytes.
  const crLimit = PROXY_V1_MAX_LINE - 1;
  const end = len < crLimit ? len : crLimit;
  let cr = -1;
  for (let i = V1_SIG.length; i < end; i++) {
    const c = buf[i];
    if (c === LF) return error('PROXY v1: LF without CR (§2.1)');
    if (c === CR) {
      if (i + 1 >= len) return MORE;
      if (buf[i + 1] !== LF) return error('PROXY v1: CR not followed by LF (§2.1)');
      cr = i;
      break;
    }
  }
  if (cr < 0) return len >= crLimit ? error(`PROXY v1: no CRLF in the first ${PROXY_V1_MAX_LINE} bytes (§2.1)`) : MORE;
  const line = buf.toString('latin1', V1_SIG.length, cr);
  const used = cr + 2;

  if (line.startsWith('UNKNOWN') && (line.length === 7 || line.charCodeAt(7) === 0x20)) {
    // §2.1: for UNKNOWN the receiver must ignore anything before the CRLF.
    return { kind: 'done', header: { version: 1, command: 'proxy', family: 'unknown', tlvs: [] }, used };
  }
  const f = line.split(' ');
  if (f[0] !== 'TCP4' && f[0] !== 'TCP6') return error('PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN (§2.1)');
  if (f.length !== 5) return error('PROXY v1: expected "PROTO SRC DST SPORT DPORT" separated by single spaces (§2.1)');
  const v4 = f[0] === 'TCP4';
  const src = v4 ? v4Text(f[1]) : v6Text(f[1]);
  const dst = v4 ? v4Text(f[2]) : v6Text(f[2]);
  if (src === undefined || dst === undefined) return error(`PROXY v1: address is not a valid ${v4 ? 'IPv4' : 'IPv6'} address (§2.1)`);
  const sport = portText(f[3]);
  const dport = portText(f[4]);
  if (sport < 0 || dport < 0) return error('PROXY v1: port is not a decimal in 0..65535 without leading zeros (§2.1)');
  return {
    kind: 'done',
    header: { version: 1, command: 'proxy', family: v4 ? 'tcp4' : 'tcp6', source: { address: src, port: sport }, destination: { address: dst, port: dport }, tlvs: [] },
    used,
  };
}

function v4Text(s: string): string | undefined {
  return parseIPv4(s, 0, s.length) >= 0 ? s : undefined;
}

function v6Text(s: string): string | undefined {
  return parseIPv6(s, WORDS) ? formatIPv6(WORDS) : undefined;
}

/** §2.1: decimal 0..65535, no heading zeroes. -1 when invalid. */
function portText(s: string): number {
  const n = s.length;
  if (n === 0 || n > 5 || (n > 1 && s.charCodeAt(0) === 0x30)) return -1;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const d = s.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v <= 65535 ? v : -1;
}

// ---- v2 (§2.2) ----------------------------------------------------------------------------------------------

function parseV2(buf: Buffer, len: number, maxBytes: number): ProxyParseResult {
  const sigEnd = len < V2_SIG.length ? len : V2_SIG.length;
  for (let i = 1; i < sigEnd; i++) if (buf[i] !== V2_SIG[i]) return NONE;
  if (len <= V2_SIG.length) return MORE;
  const verCmd = buf[12];
  if (verCmd >> 4 !== 2) return error('PROXY v2: version is not 2 (§2.2)');
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return error('PROXY v2: command is neither LOCAL nor PROXY (§2.2)');
  if (len < 14) return MORE;
  const fam = buf[13];
  let family: ProxyFamily;
  let addrLen: number;
  switch (fam) {
    case 0x00:
      family = 'unknown';
      addrLen = 0;
      break;
    case 0x11:
      family = 'tcp4';
      addrLen = 12;
      break;
    case 0x21:
      family = 'tcp6';
      addrLen = 36;
      break;
    case 0x31:
      family = 'unix';
      addrLen = 2 * UNIX_ADDR;
      break;
    // §2.2: a receiver that does not support a valid combination falls back to UNSPEC (ignores the addresses).
    case 0x12:
      family = 'unknown';
      addrLen = 12;
      break;
    case 0x22:
      family = 'unknown';
      addrLen = 36;
      break;
    case 0x32:
      family = 'unknown';
      addrLen = 2 * UNIX_ADDR;
      break;
    default:
      // LOCAL ignores the family byte entirely (§2.2), so only PROXY rejects what is not in the table.
      if (cmd === 1) return error('PROXY v2: invalid address family / transport byte (§2.2)');
      family = 'unknown';
      addrLen = 0;
  }
  if (len < V2_HEADER) return MORE;
  const bodyLen = (buf[14] << 8) | buf[15];
  const total = V2_HEADER + bodyLen;
  if (total > maxBytes) return error(`PROXY v2: header of ${total} bytes is larger than ${maxBytes}`);
  if (cmd === 1 && bodyLen < addrLen) return error('PROXY v2: length shorter than the address block (§2.2)');
  if (len < total) return MORE;

  if (cmd === 0) {
    // §2.2 LOCAL: use the real endpoints and discard the whole block, family included.
    return { kind: 'done', header: { version: 2, command: 'local', family: 'unknown', tlvs: [] }, used: total };
  }
  const header: ProxyHeader = { version: 2, command: 'proxy', family, tlvs: [] };
  const a = V2_HEADER;
  if (family === 'tcp4') {
    header.source = { address: formatIPv4(buf.readUInt32BE(a)), port: (buf[a + 8] << 8) | buf[a + 9] };
    header.destination = { address: formatIPv4(buf.readUInt32BE(a + 4)), port: (buf[a + 10] << 8) | buf[a + 11] };
  } else if (family === 'tcp6') {
    header.source = { address: formatIPv6(wordsAt(buf, a)), port: (buf[a + 32] << 8) | buf[a + 33] };
    header.destination = { address: formatIPv6(wordsAt(buf, a + 16)), port: (buf[a + 34] << 8) | buf[a + 35] };
  } else if (family === 'unix') {
    header.source = { address: unixPath(buf, a), port: 0 };
    header.destination = { address: unixPath(buf, a + UNIX_ADDR), port: 0 };
  }

  // TLVs (§2.2): type(1) length(2) value; each must end within the header.
  let p = V2_HEADER + addrLen;
  let crcAt = -1;
  while (p < total) {
    if (p + 3 > total) return error('PROXY v2: truncated TLV header (§2.2)');
    const type = buf[p];
    const vLen = (buf[p + 1] << 8) | buf[p + 2];
    const v = p + 3;
    if (v + vLen > total) return error('PROXY v2: TLV runs past the header length (§2.2)');
    if (type === PP2_TYPE_CRC32C) {
      if (vLen !== 4) return error('PROXY v2: CRC32C TLV is not 4 bytes (§2.2.3)');
      if (crcAt >= 0) return error('PROXY v2: more than one CRC32C TLV (§2.2.3)');
      crcAt = v;
    }
    header.tlvs.push({ type, value: Buffer.from(buf.subarray(v, v + vLen)) });
    p = v + vLen;
  }
  if (crcAt >= 0) {
    // §2.2.3: the checksum covers the whole header with the checksum field zeroed.
    const sent = buf.readUInt32BE(crcAt);
    let c = crc32cUpdate(0xffffffff, buf, 0, crcAt);
    c = crc32cUpdate(c, ZERO4, 0, 4);
    c = crc32cUpdate(c, buf, crcAt + 4, total);
    if (((c ^ 0xffffffff) >>> 0) !== sent) return error('PROXY v2: CRC32C checksum mismatch (§2.2.3)');
  }
  return { kind: 'done', header, used: total };
}

function wordsAt(buf: Buffer, at: number): Uint16Array {
  for (let k = 0; k < 8; k++) WORDS[k] = (buf[at + 2 * k] << 8) | buf[at + 2 * k + 1];
  return WORDS;
}

function unixPath(buf: Buffer, at: number): string {
  let e = at;
  const end = at + UNIX_ADDR;
  while (e < end && buf[e] !== 0) e++;
  return buf.toString('utf8', at, e);
}

// ---- CRC32C (RFC 4960 Appendix B, Castagnoli, reflected) ----------------------------------------------------
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
const ZERO4 = Buffer.alloc(4);

function crc32cUpdate(crc: number, buf: Uint8Array, start: number, end: number): number {
  let c = crc;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return c;
}

/** CRC32C of `buf` (as in the PP2_TYPE_CRC32C TLV; RFC 3720 check value: crc32c("123456789") = 0xe3069283). */
export function crc32c(buf: Uint8Array): number {
  return (crc32cUpdate(0xffffffff, buf, 0, buf.length) ^ 0xffffffff) >>> 0;
}

// ---- builders (towards upstreams) ---------------------------------------------------------------------------

interface EndpointPair {
  v6: boolean;
  src: Uint16Array;
  dst: Uint16Array;
  sport: number;
  dport: number;
}

/**
 * Both endpoints in one family (§2.1: the destination "matches the same family"): IPv4 when both are IPv4 or
 * IPv4-mapped, else IPv6 with IPv4 written as ::ffff:a.b.c.d (as HAProxy does). Undefined when an endpoint is
 * missing or invalid, e.g. a socket that closed before its address was read.
 */
function pairOf(src: ProxyEndpoint | undefined, dst: ProxyEndpoint | undefined): EndpointPair | undefined {
  if (src === undefined || dst === undefined) return undefined;
  if (!validPort(src.port) || !validPort(dst.port)) return undefined;
  const s = new Uint16Array(8);
  const d = new Uint16Array(8);
  if (!addressWords(src.address, s) || !addressWords(dst.address, d)) return undefined;
  return { v6: !(isV4Mapped(s) && isV4Mapped(d)), src: s, dst: d, sport: src.port, dport: dst.port };
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 0 && p <= 65535;
}

/** `PROXY TCP4|TCP6 src dst sport dport\r\n`, or `PROXY UNKNOWN\r\n` when the endpoints are not known (§2.1). */
export function buildProxyV1(src: ProxyEndpoint | undefined, dst: ProxyEndpoint | undefined): Buffer {
  const p = pairOf(src, dst);
  if (p === undefined) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  const proto = p.v6 ? 'TCP6' : 'TCP4';
  // §2.1 spells IPv6 as hex groups only: a strict receiver may not take a dotted IPv4 tail.
  const fmt = p.v6 ? (w: Uint16Array): string => formatIPv6(w, false) : (w: Uint16Array): string => formatIPv4(((w[6] << 16) | w[7]) >>> 0);
  return Buffer.from(`PROXY ${proto} ${fmt(p.src)} ${fmt(p.dst)} ${p.sport} ${p.dport}\r\n`, 'latin1');
}

export interface ProxyV2Options {
  /** Append a PP2_TYPE_CRC32C TLV over the whole header (§2.2.3). */
  crc32c?: boolean;
}

/**
 * A v2 PROXY header (TCP over IPv4 or IPv6), or PROXY/UNSPEC when the endpoints are not known. TLV values are
 * written as given. Throws RangeError only on a programming error: a TLV type outside 0..255 or a header that
 * would exceed the 16-bit length.
 */
export function buildProxyV2(src: ProxyEndpoint | undefined, dst: ProxyEndpoint | undefined, tlvs: readonly ProxyTlv[] = [], opts: ProxyV2Options = {}): Buffer {
  const p = pairOf(src, dst);
  const addrLen = p === undefined ? 0 : p.v6 ? 36 : 12;
  return v2(0x21, p === undefined ? 0x00 : p.v6 ? 0x21 : 0x11, addrLen, p, tlvs, opts);
}

/** A v2 LOCAL header (health checks: "use the real endpoints", §2.2). */
export function buildProxyV2Local(tlvs: readonly ProxyTlv[] = [], opts: ProxyV2Options = {}): Buffer {
  return v2(0x20, 0x00, 0, undefined, tlvs, opts);
}

function v2(verCmd: number, fam: number, addrLen: number, p: EndpointPair | undefined, tlvs: readonly ProxyTlv[], opts: ProxyV2Options): Buffer {
  let bodyLen = addrLen + (opts.crc32c === true ? 7 : 0);
  for (const t of tlvs) {
    if (!Number.isInteger(t.type) || t.type < 0 || t.type > 255) throw new RangeError(`PROXY v2 TLV type ${t.type} is not in 0..255`);
    bodyLen += 3 + t.value.length;
  }
  if (bodyLen > 0xffff) throw new RangeError(`PROXY v2 header body of ${bodyLen} bytes exceeds 65535`);
  const out = Buffer.alloc(V2_HEADER + bodyLen);
  out.set(V2_SIG, 0);
  out[12] = verCmd;
  out[13] = fam;
  out.writeUInt16BE(bodyLen, 14);
  let o = V2_HEADER;
  if (p !== undefined) {
    if (p.v6) {
      for (let k = 0; k < 8; k++) out.writeUInt16BE(p.src[k], o + 2 * k);
      for (let k = 0; k < 8; k++) out.writeUInt16BE(p.dst[k], o + 16 + 2 * k);
      o += 32;
    } else {
      out.writeUInt16BE(p.src[6], o);
      out.writeUInt16BE(p.src[7], o + 2);
      out.writeUInt16BE(p.dst[6], o + 4);
      out.writeUInt16BE(p.dst[7], o + 6);
      o += 8;
    }
    out.writeUInt16BE(p.sport, o);
    out.writeUInt16BE(p.dport, o + 2);
    o += 4;
  }
  for (const t of tlvs) {
    out[o] = t.type;
    out.writeUInt16BE(t.value.length, o + 1);
    out.set(t.value, o + 3);
    o += 3 + t.value.length;
  }
  if (opts.crc32c === true) {
    out[o] = PP2_TYPE_CRC32C;
    out.writeUInt16BE(4, o + 1);
    out.writeUInt32BE(crc32c(out), o + 3); // the field is still zero while summing (§2.2.3)
  }
  return out;
}

// ---- trusted senders ----------------------------------------------------------------------------------------
// Every address and CIDR lives in the IPv6 space, IPv4 as ::ffff:a.b.c.d/(96+n): a dual-stack listener reports
// IPv4 clients as IPv4-mapped addresses, and both spellings must match the same rules.

export interface CidrError {
  index: number;
  cidr: string;
  reason: string;
}

export type CidrMatcherResult = { ok: true; match: (address: string) => boolean } | { ok: false; errors: CidrError[] };

interface Cidr {
  words: Uint16Array;
  prefix: number;
}

/** Why `cidr` is not a valid `address/prefix` (or bare address), or undefined when it is. For config validation. */
export function checkCidr(cidr: string): string | undefined {
  const r = parseCidr(cidr);
  return typeof r === 'string' ? r : undefined;
}

function parseCidr(cidr: string): Cidr | string {
  const slash = cidr.indexOf('/');
  const addr = slash < 0 ? cidr : cidr.slice(0, slash);
  const words = new Uint16Array(8);
  let v4: boolean;
  const ip4 = parseIPv4(addr, 0, addr.length);
  if (ip4 >= 0) {
    v4 = true;
    words[5] = 0xffff;
    words[6] = ip4 >>> 16;
    words[7] = ip4 & 0xffff;
  } else if (parseIPv6(addr, words)) {
    v4 = false;
  } else {
    return `"${cidr}" is not an IPv4 or IPv6 address with an optional /prefix`;
  }
  let prefix = v4 ? 32 : 128;
  if (slash >= 0) {
    const ps = cidr.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(ps) || Number(ps) > prefix) return `"${cidr}": prefix must be 0..${prefix}`;
    prefix = Number(ps);
  }
  if (v4) prefix += 96;
  for (let bit = prefix; bit < 128; bit++) {
    if ((words[bit >> 4] >> (15 - (bit & 15))) & 1) {
      return `"${cidr}" has bits set after the /${v4 ? prefix - 96 : prefix} prefix (write the network address)`;
    }
  }
  return { words, prefix };
}

/**
 * Compiles trusted-sender CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or bare addresses) into a matcher for socket
 * addresses (`1.2.3.4`, `::ffff:1.2.3.4`, `fe80::1%eth0`). All invalid entries are reported, with their index,
 * so the config loader can point at each. An address that does not parse never matches.
 */
export function createCidrMatcher(cidrs: readonly string[]): CidrMatcherResult {
  const list: Cidr[] = [];
  const errors: CidrError[] = [];
  cidrs.forEach((cidr, index) => {
    const r = parseCidr(cidr);
    if (typeof r === 'string') errors.push({ index, cidr, reason: r });
    else list.push(r);
  });
  if (errors.length > 0) return { ok: false, errors };
  const n = list.length;
  const words = new Uint16Array(8);
  const match = (address: string): boolean => {
    if (n === 0 || !addressWords(address, words)) return false;
    for (let i = 0; i < n; i++) {
      const c = list[i];
      let bits = c.prefix;
      let k = 0;
      for (; bits >= 16; k++, bits -= 16) if (words[k] !== c.words[k]) break;
      if (bits >= 16) continue;
      if (bits === 0 || ((words[k] ^ c.words[k]) & ((0xffff << (16 - bits)) & 0xffff)) === 0) return true;
    }
    return false;
  };
  return { ok: true, match };
}

// ---- addresses ----------------------------------------------------------------------------------------------

/** Scratch for parsing: functions here are synchronous, one buffer is enough. */
const WORDS = new Uint16Array(8);

/** A socket address (IPv4, IPv6, optional %zone dropped) as 8 words, IPv4 as IPv4-mapped. */
export function addressWords(address: string, out: Uint16Array): boolean {
  const ip4 = parseIPv4(address, 0, address.length);
  if (ip4 >= 0) {
    out.fill(0, 0, 5);
    out[5] = 0xffff;
    out[6] = ip4 >>> 16;
    out[7] = ip4 & 0xffff;
    return true;
  }
  const zone = address.indexOf('%');
  return parseIPv6(zone < 0 ? address : address.slice(0, zone), out);
}

function isV4Mapped(w: Uint16Array): boolean {
  return w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0xffff;
}

/** Dotted quad in s[start..end): exactly 4 decimals 0..255, no leading zeros (§2.1). Returns uint32 or -1. */
function parseIPv4(s: string, start: number, end: number): number {
  let v = 0;
  let parts = 0;
  let i = start;
  while (parts < 4) {
    const ps = i;
    let n = 0;
    while (i < end && i - ps < 4) {
      const d = s.charCodeAt(i) - 0x30;
      if (d < 0 || d > 9) break;
      n = n * 10 + d;
      i++;
    }
    const digits = i - ps;
    if (digits === 0 || digits > 3 || n > 255 || (digits > 1 && s.charCodeAt(ps) === 0x30)) return -1;
    v = v * 256 + n;
    parts++;
    if (parts < 4) {
      if (i >= end || s.charCodeAt(i) !== 0x2e) return -1;
      i++;
    }
  }
  return i === end ? v : -1;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * RFC 4291 §2.2 text form (1-4 hex digits per group, at most one "::", optional dotted IPv4 tail) into 8 words.
 * No zone, no brackets. Returns false when invalid (then `out` holds garbage).
 */
function parseIPv6(s: string, out: Uint16Array): boolean {
  const n = s.length;
  if (n < 2 || n > 45) return false;
  let g = 0;
  let gap = -1;
  let i = 0;
  if (s.charCodeAt(0) === 0x3a) {
    if (s.charCodeAt(1) !== 0x3a) return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    if (g === 8) return false;
    const gs = i;
    let v = 0;
    while (i < n && i - gs < 5) {
      const h = hexValue(s.charCodeAt(i));
      if (h < 0) break;
      v = v * 16 + h;
      i++;
    }
    if (i < n && s.charCodeAt(i) === 0x2e) {
      if (g > 6) return false;
      const ip4 = parseIPv4(s, gs, n);
      if (ip4 < 0) return false;
      out[g++] = ip4 >>> 16;
      out[g++] = ip4 & 0xffff;
      i = n;
      break;
    }
    const digits = i - gs;
    if (digits === 0 || digits > 4) return false;
    out[g++] = v;
    if (i === n) break;
    if (s.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i === n) return false; // a single trailing colon
    if (s.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return false;
      gap = g;
      i++;
    }
  }
  if (gap < 0) return g === 8;
  if (g > 7) return false;
  const tail = g - gap;
  for (let k = 1; k <= tail; k++) out[8 - k] = out[g - k];
  for (let k = gap; k < 8 - tail; k++) out[k] = 0;
  return true;
}

function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/** RFC 5952 §4: lower-case, no leading zeros, the longest run (>= 2) of zero groups as "::"; §5 mapped IPv4. */
function formatIPv6(w: Uint16Array, dottedMapped = true): string {
  if (dottedMapped && isV4Mapped(w)) return `::ffff:${formatIPv4(((w[6] << 16) | w[7]) >>> 0)}`;
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === best) {
      out += '::';
      i += bestLen - 1;
      continue;
    }
    if (out.length > 0 && !out.endsWith(':')) out += ':';
    out += w[i].toString(16);
  }
  return out;
}
