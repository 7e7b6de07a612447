// What a parsed request head becomes, before any policy or handler: a refused method or path, no route, a
// forward, or a tunnel (a WebSocket handshake on a proxy route). It normalizes the path the route matches and
// the upstream gets (wire/path.ts), and reads only the head and the router's precomputed tables: no socket,
// no clock, no allocation except the reject of a refused request.
import type { RequestHead } from '../wire/http-head.js';
import { isRefused, normalizePath } from '../wire/path.js';
import type { Decision, Router } from './router.js';

/** RFC 9110 methods a reverse proxy route does not serve. */
const REFUSED_METHODS: ReadonlySet<string> = new Set(['CONNECT']);

/** RFC 6455 §4.1: an opening handshake is an HTTP/1.1 GET; other Upgrade offers are dropped (hop-by-hop). */
export function isWebSocketHandshake(head: RequestHead): boolean {
  return head.upgrade === 'websocket' && head.method === 'GET' && head.versionMinor === 1 && head.bodyKind === 'none';
}

/** The Decision for a request head; sets `head.path` to the normalized path (the access log keeps the raw target). */
export function decide(router: Router, head: RequestHead): Decision {
  if (REFUSED_METHODS.has(head.method)) return { kind: 'reject', code: 'CLIENT_METHOD_NOT_ALLOWED', reason: `${head.method} is not served` };
  const path = normalizePath(head.path);
  if (isRefused(path)) return { kind: 'reject', code: 'CLIENT_BAD_REQUEST', reason: path.refused };
  head.path = path;
  return router.route(head.host, head.method, path, isWebSocketHandshake(head));
}

/**
 * The default branch of a switch over Decision kinds: it compiles only when every kind has a case, so a new
 * kind is a compile error until its handler exists. Unreachable at run time.
 */
export function unhandledDecision(d: never): never {
  throw new Error(`no handler for decision kind ${(d as { kind: string }).kind}`);
}
