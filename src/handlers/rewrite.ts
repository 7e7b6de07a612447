// The header rewriting of a forwarded HTTP/1.1 exchange (RFC 9110 §7.6), in one place: the request head sent
// upstream, the response head sent to the client, the hop-by-hop and framing fields both drop, and the
// WebSocket accept check. Pure functions over parsed heads and a route's compiled rules: no sockets, no state
// beyond per-route caches of name sets (computed once per route, read per request).
import * as crypto from 'node:crypto';
import type { RequestHead, ResponseHead } from '../wire/http-head.js';
import type { CompiledHeaderOps, CompiledRoute, RequestVars } from '../route/router.js';
import { forwardedElement } from '../route/forwarding.js';

/**
 * Dropped when copying headers either way: RFC 9110 §7.6.1 hop-by-hop fields (plus the legacy Proxy-Connection
 * and h2c's HTTP2-Settings), and the framing fields, which are never copied but written from the framing Portico
 * read the body with (so nothing a peer lists in `Connection` can take them away: request smuggling).
 */
const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'http2-settings', 'content-length', 'transfer-encoding']);
/** Forwarding fields: a client's copies count only from a trusted proxy (see forwarding.ts); Portico sets its own. */
const F_FOR = 1;
const F_REAL_IP = 2;
const F_PROTO = 3;
const F_HOST = 4;
const F_PORT = 5;
const F_FORWARDED = 6;
const FORWARDING: ReadonlyMap<string, number> = new Map([
  ['x-forwarded-for', F_FOR],
  ['x-real-ip', F_REAL_IP],
  ['x-forwarded-proto', F_PROTO],
  ['x-forwarded-host', F_HOST],
  ['x-forwarded-port', F_PORT],
  ['forwarded', F_FORWARDED],
]);
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * A route's header plan, computed once per CompiledHeaderOps: the names its rules own (removed, or replaced by
 * `set`), the names dropped when copying a message's fields (hop-by-hop and framing, and the route's own), and
 * `maybe`, which rules out most field names without lower-casing them: a name can be one of `skip` (or, for a
 * request, a forwarding field or X-Request-Id) only when bit `lengthBit(length)` of `maybe[first char | 0x20]`
 * is set. Field names are tchar (RFC 9110 §5.6.2, ASCII: every parser and the config schema make sure), so
 * lower-casing keeps a name's length and maps its first character as `| 0x20` does; a first character past
 * ASCII is always looked at.
 */
interface HeaderPlan {
  readonly own: ReadonlySet<string>;
  readonly skip: ReadonlySet<string>;
  readonly maybe: Int32Array;
}

const plans = new WeakMap<CompiledHeaderOps, HeaderPlan>();
/** The last plan asked for: most requests of a worker go through one or two routes (no WeakMap lookup for them). */
let lastOps: CompiledHeaderOps | null = null;
let lastPlan: HeaderPlan | null = null;

function lengthBit(length: number): number {
  return 1 << (length < 31 ? length : 31);
}

/** Marks `lower` (a lower-case name) as a candidate in `maybe`. */
function markName(maybe: Int32Array, lower: string): void {
  const c = lower.charCodeAt(0) | 0x20;
  if (c < 128) maybe[c] |= lengthBit(lower.length);
}

/**
 * Could `name` (as received) lower-case to a name marked in `maybe`, or to one of the message's Connection tokens
 * (their lengths in `tokenBits`)? False rules it out (copied as received); true means look.
 */
function mayDrop(maybe: Int32Array, tokenBits: number, name: string): boolean {
  const c = name.charCodeAt(0) | 0x20;
  const bit = lengthBit(name.length);
  return c >= 128 || (maybe[c] & bit) !== 0 || (tokenBits & bit) !== 0;
}

function planOf(ops: CompiledHeaderOps): HeaderPlan {
  if (ops === lastOps) return lastPlan!;
  let plan = plans.get(ops);
  if (plan === undefined) {
    const own = new Set<string>([...ops.remove, ...ops.set.map((h) => h.lower)]);
    const skip = new Set<string>([...HOP_BY_HOP, ...own]);
    const maybe = new Int32Array(128);
    for (const name of skip) markName(maybe, name);
    for (const name of FORWARDING.keys()) markName(maybe, name);
    markName(maybe, 'x-request-id');
    plan = { own, skip, maybe };
    plans.set(ops, plan);
  }
  lastOps = ops;
  lastPlan = plan;
  return plan;
}

/** Status codes (100..599, RFC 9110 §15) as text, made once: not a number-to-string per response. */
const STATUS_TEXTS: readonly string[] = Array.from({ length: 600 }, (_, i) => String(i));
function statusText(status: number): string {
  return status >= 0 && status < 600 ? STATUS_TEXTS[status] : String(status);
}

/** The last listener port written as text (a worker's requests come through one or two listeners). */
let lastPort = -1;
let lastPortText = '';
function portText(port: number): string {
  if (port !== lastPort) {
    lastPortText = String(port);
    lastPort = port;
  }
  return lastPortText;
}

/** Lengths of a message's Connection tokens (lower-case), as lengthBit bits: the fields they name are dropped too. */
function tokenLengths(tokens: readonly string[]): number {
  let bits = 0;
  for (let i = 0; i < tokens.length; i++) bits |= lengthBit(tokens[i].length);
  return bits;
}

/**
 * The request head sent upstream: origin-form target (prefix stripped when configured), hop-by-hop fields and
 * the client's Connection-named fields dropped, framing written from the parsed head, forwarding fields per the
 * route's forwarding policy: a trusted proxy's are kept (X-Forwarded-For and Forwarded appended to), anyone
 * else's replaced by Portico's (X-Forwarded-For appended to when `x_forwarded_for: append`).
 */
export function buildRequestHead(h: RequestHead, route: CompiledRoute, vars: RequestVars, tunnel: boolean): string {
  let path = h.path;
  if (route.stripPrefix !== '') {
    path = path.slice(route.stripPrefix.length);
    if (path === '' || path.charCodeAt(0) !== 47 /* / */) path = '/' + path;
  }
  const ops = route.requestHeaders;
  const { own, skip, maybe } = planOf(ops);
  const connTokens = h.connection;
  const tokenBits = tokenLengths(connTokens);
  const trusted = vars.trustedPeer;
  let out = `${h.method} ${path}${h.query}${h.versionMinor === 1 ? ' HTTP/1.1\r\n' : ' HTTP/1.0\r\n'}`;
  let xff: string | undefined;
  let fwd: string | undefined;
  let realIp: string | undefined;
  let proto: string | undefined;
  let fhost: string | undefined;
  let port: string | undefined;
  const hs = h.headers;
  for (let i = 0; i < hs.length; i += 2) {
    const name = hs[i];
    if (!mayDrop(maybe, tokenBits, name)) {
      out += `${name}: ${hs[i + 1]}\r\n`;
      continue;
    }
    const lower = name.toLowerCase();
    if (skip.has(lower) || (connTokens.length > 0 && connTokens.includes(lower))) continue;
    const f = FORWARDING.get(lower);
    if (f === undefined) {
      // the request id goes once, as Portico chose it (the client's own when it was usable: http/request-id.ts)
      if (lower.length === 12 && vars.requestId !== undefined && lower === 'x-request-id') continue;
      out += `${name}: ${hs[i + 1]}\r\n`;
      continue;
    }
    const v = hs[i + 1];
    // repeated fields are one list (RFC 9110 §5.3); only X-Forwarded-For is read from untrusted peers (append mode)
    if (f === F_FOR) xff = xff === undefined ? v : `${xff}, ${v}`;
    else if (!trusted) continue;
    else if (f === F_FORWARDED) fwd = fwd === undefined ? v : `${fwd}, ${v}`;
    else if (f === F_REAL_IP) realIp ??= v;
    else if (f === F_PROTO) proto ??= v;
    else if (f === F_HOST) fhost ??= v;
    else port ??= v;
  }
  // RFC 9112 §6: the framing Portico reads the body with, whatever the client listed in Connection.
  if (h.bodyKind === 'chunked') out += 'Transfer-Encoding: chunked\r\n';
  else if (h.bodyKind === 'length') out += `Content-Length: ${h.contentLength}\r\n`;
  // Defaults, unless the route removes them or sets its own value (nginx proxy_set_header semantics).
  const policy = route.forwarding;
  if (!own.has('x-forwarded-for')) {
    const keep = xff !== undefined && (trusted || policy.xForwardedFor === 'append');
    out += `X-Forwarded-For: ${keep ? `${xff}, ${vars.remoteAddr}` : vars.remoteAddr}\r\n`;
  }
  if (!own.has('x-forwarded-proto')) out += `X-Forwarded-Proto: ${proto ?? vars.scheme}\r\n`;
  const host = fhost ?? h.hostRaw;
  if (host !== undefined && !own.has('x-forwarded-host')) out += `X-Forwarded-Host: ${host}\r\n`;
  if (!own.has('x-forwarded-port')) out += `X-Forwarded-Port: ${port ?? portText(vars.serverPort)}\r\n`;
  if (!own.has('x-real-ip')) out += `X-Real-IP: ${realIp ?? vars.remoteAddr}\r\n`;
  if (!own.has('forwarded')) {
    if (policy.forwarded) {
      const mine = forwardedElement(vars.remoteAddr, h.hostRaw, vars.scheme);
      out += `Forwarded: ${fwd === undefined ? mine : `${fwd}, ${mine}`}\r\n`;
    } else if (fwd !== undefined) {
      out += `Forwarded: ${fwd}\r\n`;
    }
  }
  if (vars.requestId !== undefined && !own.has('x-request-id')) out += `X-Request-Id: ${vars.requestId}\r\n`;
  for (const s of ops.set) out += `${s.name}: ${s.render(vars)}\r\n`;
  if (tunnel) out += `Connection: Upgrade\r\nUpgrade: ${h.upgrade}\r\n`;
  else if (h.versionMinor === 0) out += 'Connection: keep-alive\r\n';
  return out + '\r\n';
}

/**
 * The response head sent to the client, hop-by-hop fields dropped (kept for a 101), Connection set by us, the
 * framing fields written from the parsed head (a backend's `Connection: content-length` removes nothing).
 * `setCookie`: a stickiness cookie Portico adds (balance: cookie). `cors`: the route's CORS lines (route/policy/cors.ts).
 */
export function buildResponseHead(r: ResponseHead, ops: CompiledHeaderOps, vars: RequestVars, connection: 'close' | 'keep-alive' | 'upgrade' | '', setCookie?: string, cors?: string): string {
  const { skip, maybe } = planOf(ops);
  const connTokens = r.connection;
  const tokenBits = tokenLengths(connTokens);
  let out = `HTTP/1.1 ${statusText(r.status)} ${r.reason}\r\n`;
  const hs = r.headers;
  for (let i = 0; i < hs.length; i += 2) {
    const name = hs[i];
    if (mayDrop(maybe, tokenBits, name)) {
      const lower = name.toLowerCase();
      if (skip.has(lower) || (connTokens.length > 0 && connTokens.includes(lower))) continue;
    }
    // a route with a CORS policy: Portico's grant is the only one (two Allow-Origin values fail in browsers)
    if (cors !== undefined && isAccessControl(name)) continue;
    out += `${name}: ${hs[i + 1]}\r\n`;
  }
  // The body is relayed as received, so its codings are too; a HEAD or 304 answer keeps its Content-Length.
  if (r.transferEncoding !== undefined) out += `Transfer-Encoding: ${r.transferEncoding}\r\n`;
  else if (r.contentLength >= 0) out += `Content-Length: ${r.contentLength}\r\n`;
  out += routeResponseLines(ops, vars, setCookie);
  if (cors !== undefined) out += cors;
  if (connection === 'upgrade') out += `Connection: Upgrade\r\nUpgrade: ${r.upgrade ?? 'websocket'}\r\n`;
  else if (connection !== '') out += `Connection: ${connection}\r\n`;
  return out + '\r\n';
}

/** The lines a route adds to every response head after the framing: its `set` rules, then a stickiness cookie. */
export function routeResponseLines(ops: CompiledHeaderOps, vars: RequestVars, setCookie?: string): string {
  let out = '';
  for (const s of ops.set) out += `${s.name}: ${s.render(vars)}\r\n`;
  if (setCookie !== undefined) out += `Set-Cookie: ${setCookie}\r\n`;
  return out;
}

/** The lower-case names buildResponseHead drops from a response under `ops` (besides the Connection-listed ones). */
export function responseSkipNames(ops: CompiledHeaderOps): string[] {
  return [...planOf(ops).skip];
}

/** crypto.hash (Node >= 20.12): one call, no Hash object per digest (a third of createHash's cost); else undefined. */
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: 'base64') => string }).hash;

/** RFC 6455 §4.2.2: the accept value a server must answer for a client's Sec-WebSocket-Key. */
export function websocketAccept(key: string): string {
  if (oneShotHash !== undefined) return oneShotHash('sha1', key + WS_GUID, 'base64');
  return crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
}

/** `access-control-*`, in any case (the CORS response fields). */
function isAccessControl(name: string): boolean {
  return name.length >= 15 && (name.charCodeAt(0) | 0x20) === 0x61 && name.slice(0, 15).toLowerCase() === 'access-control-';
}

export function headerValue(headers: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i].length === lowerName.length && headers[i].toLowerCase() === lowerName) return headers[i + 1];
  return undefined;
}
