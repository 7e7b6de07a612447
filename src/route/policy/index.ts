// The policies a routed request passes before its handler runs: the route's CORS preflight (answered by Portico,
// cors.ts) and its rate limits (requests, and WebSocket handshakes for a tunnel). The connection calls
// checkPolicies once after routing and answers a refusal or a preflight itself; this file writes to no socket.
import type { RequestHead } from '../../wire/http-head.js';
import type { RoutedDecision } from '../router.js';
import type { Refusal, RouteLimits } from './route-limits.js';
import type { CorsPreflight } from './cors.js';

export type { CorsPreflight };

/** The requesting client as policies see it; the key is built on first use (a route without limits never asks). */
export interface PolicyClient {
  /** The client key of limits (client-address.ts). */
  readonly clientKey: string;
  /** The client address, for refusal logs. */
  readonly remoteAddr: string;
}

/**
 * Admits a request (null), answers it (a CORS preflight: never counted against rate limits, never forwarded), or
 * says why not. `routeLimits`: rate limits by route index (undefined entry = the
 * route has none and pays one array read). Reject decisions never get here (the connection answers them first).
 */
export function checkPolicies(routeLimits: ReadonlyArray<RouteLimits | undefined> | undefined, decision: RoutedDecision, head: RequestHead, client: PolicyClient): Refusal | CorsPreflight | null {
  const cors = decision.route.cors;
  if (cors !== undefined && head.method === 'OPTIONS') {
    const preflight = cors.preflight(head);
    if (preflight !== null) return preflight;
  }
  const limits = routeLimits?.[decision.route.index];
  if (limits !== undefined) return limits.check(head, client.clientKey, client.remoteAddr, decision.kind === 'tunnel' || decision.kind === 'terminate', Date.now());
  return null;
}
