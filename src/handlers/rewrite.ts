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

const ownCache = new WeakMap<CompiledHeaderOps, ReadonlySet<string>>();
const skipCache = new WeakMap<CompiledHeaderOps, ReadonlySet<string>>();

/** Names a route's header rules own: removed, or replaced by `set` (computed once per route). */
function ownNames(ops: CompiledHeaderOps): ReadonlySet<string> {
  let s = ownCache.get(ops);
  if (s === undefined) {
    s = new Set<string>([...ops.remove, ...ops.set.map((h) => h.lower)]);
    ownCache.set(ops, s);
  }
  return s;
}

/** Names dropped when copying a message's headers: hop-by-hop and framing, and the route's own names. */
function skipNames(ops: CompiledHeaderOps): ReadonlySet<string> {
  let s = skipCache.get(ops);
  if (s === undefined) {
    s = new Set<string>([...HOP_BY_HOP, ...ownNames(ops)]);
    skipCache.set(ops, s);
  }
  return s;
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
  const skip = skipNames(ops);
  const connTokens = h.connection;
  const trusted = vars.trustedPeer;
  let out = `${h.method} ${path}${h.query} HTTP/1.${h.versionMinor}\r\n`;
  let xff: string | undefined;
  let fwd: string | undefined;
  let realIp: string | undefined;
  let proto: string | undefined;
  let fhost: string | undefined;
  let port: string | undefined;
  const hs = h.headers;
  for (let i = 0; i < hs.length; i += 2) {
    const name = hs[i];
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
  const own = ownNames(ops);
  const policy = route.forwarding;
  if (!own.has('x-forwarded-for')) {
    const keep = xff !== undefined && (trusted || policy.xForwardedFor === 'append');
    out += `X-Forwarded-For: ${keep ? `${xff}, ${vars.remoteAddr}` : vars.remoteAddr}\r\n`;
  }
  if (!own.has('x-forwarded-proto')) out += `X-Forwarded-Proto: ${proto ?? vars.scheme}\r\n`;
  const host = fhost ?? h.hostRaw;
  if (host !== undefined && !own.has('x-forwarded-host')) out += `X-Forwarded-Host: ${host}\r\n`;
  if (!own.has('x-forwarded-port')) out += `X-Forwarded-Port: ${port ?? vars.serverPort}\r\n`;
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
  const skip = skipNames(ops);
  const connTokens = r.connection;
  let out = `HTTP/1.1 ${r.status} ${r.reason}\r\n`;
  const hs = r.headers;
  for (let i = 0; i < hs.length; i += 2) {
    const name = hs[i];
    const lower = name.toLowerCase();
    if (skip.has(lower) || (connTokens.length > 0 && connTokens.includes(lower))) continue;
    // a route with a CORS policy: Portico's grant is the only one (two Allow-Origin values fail in browsers)
    if (cors !== undefined && lower.startsWith('access-control-')) continue;
    out += `${name}: ${hs[i + 1]}\r\n`;
  }
  // The body is relayed as received, so its codings are too; a HEAD or 304 answer keeps its Content-Length.
  if (r.transferEncoding !== undefined) out += `Transfer-Encoding: ${r.transferEncoding}\r\n`;
  else if (r.contentLength >= 0) out += `Content-Length: ${r.contentLength}\r\n`;
  for (const s of ops.set) out += `${s.name}: ${s.render(vars)}\r\n`;
  if (setCookie !== undefined) out += `Set-Cookie: ${setCookie}\r\n`;
  if (cors !== undefined) out += cors;
  if (connection === 'upgrade') out += `Connection: Upgrade\r\nUpgrade: ${r.upgrade ?? 'websocket'}\r\n`;
  else if (connection !== '') out += `Connection: ${connection}\r\n`;
  return out + '\r\n';
}

/** crypto.hash (Node >= 20.12): one call, no Hash object per digest (a third of createHash's cost); else undefined. */
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: 'base64') => string }).hash;

/** RFC 6455 §4.2.2: the accept value a server must answer for a client's Sec-WebSocket-Key. */
export function websocketAccept(key: string): string {
  if (oneShotHash !== undefined) return oneShotHash('sha1', key + WS_GUID, 'base64');
  return crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
}

export function headerValue(headers: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i].length === lowerName.length && headers[i].toLowerCase() === lowerName) return headers[i + 1];
  return undefined;
}
