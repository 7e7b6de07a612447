// A static route's `fallback` (nginx's last try_files argument, an internal redirect): a path that names no file
// and no folder is routed again, once, as the fallback's URI. The request keeps its target (REQUEST_URI, the access
// log's path) and takes the fallback's path and query (SCRIPT_NAME and QUERY_STRING on a fastcgi route, the target a
// proxy route sends). It decides only: no socket, no answer; the file lookups go through the static cache.
import type { Logger } from '../core/log.js';
import { renderFallbackQuery } from '../config/static-fallback.js';
import type { Decision, RejectDecision, Router, StaticDecision } from '../route/router.js';
import type { RequestHead } from '../wire/http-head.js';
import { staticMiss } from './static.js';

/** Static decisions whose second miss was logged (once per route and config in a worker). */
const cycleLogged = new WeakSet<StaticDecision>();

/**
 * The decision a request on a static route with a fallback goes on with, its head then carrying the fallback's
 * path and query, or null when the route answers it itself (a file, a folder, a refusal). A fallback whose route is again a static route with a fallback that
 * misses too is not followed: 500, as nginx's "rewrite or internal redirection cycle", logged once per route.
 */
export function staticFallback(router: Router, d: StaticDecision, head: RequestHead, log: Logger): Decision | null {
  const fb = d.fallback;
  if (fb === undefined) return null;
  const uri = staticMiss(d.site, head.path);
  if (uri === null) return null;
  // the head itself takes the fallback's path and query, as decide() gave it the normalized path: its target
  // stays the client's (REQUEST_URI, $request_uri, the access line), and the handlers read one head shape
  head.query = renderFallbackQuery(fb.query, { query: head.query, uri: fb.usesUri ? Buffer.from(uri, 'utf8').toString('latin1') : '' });
  head.path = fb.path;
  // a WebSocket handshake falls back as a plain request (the upgrade is not followed through a fallback)
  const decision = router.route(head.host, head.method, fb.path, false);
  if (decision.kind === 'static' && decision.fallback !== undefined && staticMiss(decision.site, fb.path) !== null) {
    if (!cycleLogged.has(decision)) {
      cycleLogged.add(decision);
      log.warn({ route: d.route.name, fallback: fb.path, to: decision.route.name }, 'static fallback: the fallback names nothing on a static route with a fallback too; answered 500 (one re-route per request)');
    }
    return cycleOf(d.route.name, fb.path);
  }
  return decision;
}

function cycleOf(route: string, path: string): RejectDecision {
  return { kind: 'reject', code: 'INTERNAL', reason: `fallback cycle: route ${route} fell back to ${path}, which names nothing either` };
}
