// Request keys for the `hash` and `cookie` balance policies: compiles a key spec ("$remote_addr",
// "header:NAME", "cookie:NAME", "query:NAME") once into an extractor over a parsed request head, and owns the
// sticky cookie (its opaque value per target, lookup, Set-Cookie). Pure functions: no sockets, no picking
// (balancer.ts), and it never throws on request bytes: a missing or malformed key is `undefined`.
import { createHmac, randomBytes } from 'node:crypto';
import type { RequestHead } from '../wire/http-head.js';
import { parseKeySpec, type KeySpec } from '../config/key-spec.js';
import type { BalanceSpec, Target } from './target.js';
import { unmapIPv4 } from '../core/util.js';

/** The key of one request, or undefined when the request has none (the balancer then falls back). */
export type KeyExtractor = (head: RequestHead, remoteAddr: string) => string | undefined;

/** Cookie pairs and query parameters looked at per request: a crafted header cannot make the scan unbounded. */
const MAX_PAIRS = 256;
/** Longer keys are not keys anyone meant (browsers cap a cookie at 4096 bytes): no key, fallback policy. */
const MAX_KEY_LENGTH = 4096;

/** Compiles a key spec into an extractor; throws TypeError on a spec parseKeySpec refuses (a config bug). */
export function compileKey(spec: string): KeyExtractor {
  const parsed = parseKeySpec(spec);
  if (typeof parsed === 'string') throw new TypeError(parsed);
  switch (parsed.from) {
    case 'remote_addr':
      return (_head, remoteAddr) => nonEmpty(remoteAddr);
    case 'header': {
      const lower = parsed.name.toLowerCase();
      return (head) => nonEmpty(headerOf(head.headers, lower));
    }
    case 'cookie': {
      const name = parsed.name;
      return (head) => cookieOf(head.headers, name);
    }
    case 'query': {
      const name = parsed.name;
      return (head) => queryParamOf(head.query, name);
    }
    default: {
      const never: never = parsed;
      throw new TypeError(`unknown key ${JSON.stringify(never)}`);
    }
  }
}

/**
 * The extractor a pool needs for its balance policy: the configured key for `hash`, the sticky cookie for
 * `cookie`, undefined for key-less policies (then pass `undefined` to Balancer.pickFor).
 */
export function keyExtractorFor(spec: BalanceSpec): KeyExtractor | undefined {
  if (typeof spec === 'string') return undefined;
  return spec.policy === 'hash' ? compileKey(spec.key) : compileKey(`cookie:${spec.name}`);
}

/**
 * The balancing key of an L4 connection (a `hash` upstream of a tcp listener or a passthrough name): it has no
 * request, so `$remote_addr` is the only key it can have (portico check refuses the others there). The client's
 * address as the HTTP path's $remote_addr: the PROXY header's source when one was accepted, else the socket's
 * peer, an IPv4-mapped address as IPv4, no port. undefined for the other policies, or without an address.
 */
export function connectionKey(spec: BalanceSpec, remoteAddr: string | undefined): string | undefined {
  if (typeof spec === 'string' || spec.policy !== 'hash' || remoteAddr === undefined) return undefined;
  return nonEmpty(unmapIPv4(remoteAddr));
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.length === 0 || v.length > MAX_KEY_LENGTH ? undefined : v;
}

/** ASCII case-insensitive equality against an already lower-cased name, without allocating. */
function equalsLower(s: string, lower: string): boolean {
  if (s.length !== lower.length) return false;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/** First value of the header `lower` (the head keeps names as received and values trimmed). */
function headerOf(headers: readonly string[], lower: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (equalsLower(headers[i], lower)) return headers[i + 1];
  return undefined;
}

const isOws = (c: number): boolean => c === 0x20 || c === 0x09;

/**
 * Value of cookie `name` across every Cookie header, parsed as a server should read what RFC 6265 §5.4 lets
 * user agents send, tolerantly (§5.2): pairs split on ';', whitespace around names and values ignored, pairs
 * without '=' skipped, a value wrapped in DQUOTEs unwrapped (§4.1.1). Names compare case-sensitively. The
 * first match wins (§5.4 sends the most specific path first). At most MAX_PAIRS pairs are looked at.
 */
export function cookieOf(headers: readonly string[], name: string): string | undefined {
  let pairs = 0;
  for (let h = 0; h < headers.length; h += 2) {
    if (!equalsLower(headers[h], 'cookie')) continue;
    const s = headers[h + 1];
    let pos = 0;
    while (pos <= s.length) {
      if (++pairs > MAX_PAIRS) return undefined;
      let end = s.indexOf(';', pos);
      if (end === -1) end = s.length;
      const eq = s.indexOf('=', pos);
      if (eq !== -1 && eq < end) {
        let ns = pos;
        let ne = eq;
        while (ns < ne && isOws(s.charCodeAt(ns))) ns++;
        while (ne > ns && isOws(s.charCodeAt(ne - 1))) ne--;
        if (ne - ns === name.length && s.startsWith(name, ns)) {
          let vs = eq + 1;
          let ve = end;
          while (vs < ve && isOws(s.charCodeAt(vs))) vs++;
          while (ve > vs && isOws(s.charCodeAt(ve - 1))) ve--;
          if (ve - vs >= 2 && s.charCodeAt(vs) === 0x22 && s.charCodeAt(ve - 1) === 0x22) {
            vs++;
            ve--;
          }
          return nonEmpty(s.slice(vs, ve));
        }
      }
      pos = end + 1;
    }
  }
  return undefined;
}

/**
 * Value of query parameter `name` in `query` ('' or '?...'), per the WHATWG application/x-www-form-urlencoded
 * parser: split on '&', name and value split at the first '=', '+' is a space, %XX decoded as UTF-8 bytes
 * (malformed escapes kept as written). The first match wins. E.g. socket.io's `sid`.
 */
export function queryParamOf(query: string, name: string): string | undefined {
  let pos = query.charCodeAt(0) === 0x3f /* ? */ ? 1 : 0;
  let pairs = 0;
  while (pos < query.length) {
    if (++pairs > MAX_PAIRS) return undefined;
    let end = query.indexOf('&', pos);
    if (end === -1) end = query.length;
    if (end > pos) {
      let eq = query.indexOf('=', pos);
      if (eq === -1 || eq > end) eq = end;
      if (formDecode(query, pos, eq) === name) return nonEmpty(eq < end ? formDecode(query, eq + 1, end) : '');
    }
    pos = end + 1;
  }
  return undefined;
}

const hexValue = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : (c | 0x20) >= 97 && (c | 0x20) <= 102 ? (c | 0x20) - 87 : -1);

/** WHATWG urlencoded decoding of s[start, end): no allocation beyond the slice when nothing is escaped. */
function formDecode(s: string, start: number, end: number): string {
  let plain = true;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 /* % */ || c === 0x2b /* + */ || c > 0x7f) {
      plain = false;
      break;
    }
  }
  if (plain) return s.slice(start, end);
  // The head parser reads bytes as latin1, so each char is one byte of the original (UTF-8) target.
  const bytes = Buffer.allocUnsafe(end - start);
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) {
      bytes[n++] = 0x20;
    } else if (c === 0x25 && i + 2 < end && hexValue(s.charCodeAt(i + 1)) >= 0 && hexValue(s.charCodeAt(i + 2)) >= 0) {
      bytes[n++] = (hexValue(s.charCodeAt(i + 1)) << 4) | hexValue(s.charCodeAt(i + 2));
      i += 2;
    } else {
      bytes[n++] = c & 0xff;
    }
  }
  return bytes.toString('utf8', 0, n);
}

/**
 * The key sticky cookie values are made with when `balance.secret` is not set. The primary makes one at start and
 * hands it to every worker (setStickySecret) so that all agree, across reloads and worker restarts; until then
 * (unit tests, tools) a random one of this process.
 */
let instanceSecret = randomBytes(32).toString('base64');

/** Sets the instance secret (from the primary, in every worker before it builds its pools). */
export function setStickySecret(secret: string): void {
  instanceSecret = secret;
}

const stickyValues = new WeakMap<Target, { secret: string; value: string }>();

/**
 * The opaque, stable cookie value naming `target`: 12 base64url characters of HMAC-SHA-256 over its address,
 * keyed by `secret` (the upstream's `balance.secret`) or else the instance secret. Keyed, so the value neither
 * shows the backend address nor lets anyone who guesses an address forge a cookie for it (an unkeyed hash of
 * "10.0.0.5:8080" is one lookup away). It stays valid across workers and reloads while the target keeps its
 * address; across restarts, and between instances, only with a configured `balance.secret`.
 * Computed once per Target object and secret.
 */
export function stickyCookieValue(target: Target, secret?: string): string {
  const key = secret ?? instanceSecret;
  const cached = stickyValues.get(target);
  if (cached !== undefined && cached.secret === key) return cached.value;
  const value = createHmac('sha256', key).update(`portico-sticky\u0000${target.id}`).digest('base64url').slice(0, 12);
  stickyValues.set(target, { secret: key, value });
  return value;
}

/** The target a sticky cookie value names (any state: the caller checks `available`), or undefined. */
export function findTargetByCookie(targets: readonly Target[], value: string, secret?: string): Target | undefined {
  for (const t of targets) if (stickyCookieValue(t, secret) === value) return t;
  return undefined;
}

/**
 * A Set-Cookie field value (without the field name). A session cookie: it ends with the browser session,
 * like HAProxy's `cookie ... insert`. Secure only over https, or a plain-http site could never get it back.
 * `name` must be a token (schema.ts checks it); `value` comes from stickyCookieValue().
 */
export function setCookieHeader(name: string, value: string, secure: boolean): string {
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
}

/**
 * For `{ policy: cookie }`: the Set-Cookie value to add to the response when the request did not already
 * carry the cookie for `target` (`current` = the request's cookie value, as keyExtractorFor gave it);
 * undefined when no cookie needs setting or the policy is not `cookie`.
 */
export function stickyCookieFor(spec: BalanceSpec, target: Target, current: string | undefined, secure: boolean): string | undefined {
  if (typeof spec === 'string' || spec.policy !== 'cookie') return undefined;
  const value = stickyCookieValue(target, spec.secret);
  return value === current ? undefined : setCookieHeader(spec.name, value, secure);
}
