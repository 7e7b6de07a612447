// Which FastCGI requests the addon may start itself (the native exchange, src/native/exchange.h), and what it is
// told to do so: per config the route table and head limits (made current when a connection of that config is first
// marked ready), per route its params plan and pool (handed over with the route's first known script), per script
// its pairs (fastcgi-script.ts knownUntil: the script cache's entries end before JS's own, so JS re-checks the file),
// per route its head memo (fastcgi.ts), per client connection "ready" (connection.ts, between exchanges). The
// exchange it starts comes back as a STARTED event that fastcgi.ts adopts. Nothing here runs per native request.
import type { Config, RouteConfig } from '../config/schema.js';
import type { CompiledFastcgi, CompiledRoute, Router } from '../route/router.js';
import { compileNativeRoutes } from '../route/native-routes.js';
import type { UpstreamPool } from '../upstream/pool.js';
import type { NativeSocket, NativeStart } from '../native/io.js';
import { exchangeConfig, exchangeDrop, exchangeMemo, exchangeReady, exchangeRoute, exchangeScript, exchangeScriptForget, nativeExchangeOn } from '../native/exchange.js';
import { nativeParamsPlan, scriptParams } from './fastcgi-params.js';
import { knownUntil, onScriptForgotten, onScriptFound, type Script } from './fastcgi-script.js';

/**
 * Why route `r`'s requests must stay JavaScript's, or undefined when the addon may start them. What the addon does
 * is Scan (GET/HEAD without a body, the subset of request-head.h), MatchRoute, the records with the route's fixed
 * params and the script's pairs, a lent connection, and the answer armed with the route's memo; everything else a
 * request may need is JS's before the upstream is asked:
 * - not a fastcgi route: the other actions have their own handlers;
 * - cors: a preflight is answered by JS, and the grant depends on the request's Origin;
 * - rate_limit: counted per request in JS (route/policy);
 * - compress: the answer's encoding is negotiated per request;
 * - params rendered per request ($host, $remote_addr, ...): templates are JS's (fastcgi-params.ts);
 * - the upstream: round robin only (the addon takes lent connections target after target; least_conn, random_two,
 *   hash and cookie choose per request in JS), no send_proxy_protocol (a connection speaks for one client), no TLS
 *   to FPM, keepalive.max_idle above 0 (only idle kept-alive connections are lent). UpstreamPool.lendAs checks the
 *   same on the pool itself.
 * Listener and connection switches are checked when a connection is marked ready (markReady): TLS, a PROXY header
 * read, https_redirect; ACME tokens are the route table's (it says "not mine" for their prefix).
 */
export function nativeStartReason(config: Config, r: RouteConfig): string | undefined {
  const f = r.fastcgi;
  if (f === undefined) return 'not a fastcgi route';
  if (r.cors !== undefined) return 'cors';
  if (r.rate_limit !== undefined) return 'rate_limit';
  if (r.compress !== undefined) return 'compress';
  if (Object.values(f.params).some((v) => v.includes('$'))) return 'params with variables';
  const pool = config.upstreams[f.upstream];
  if (pool === undefined) return 'missing upstream';
  if (pool.balance !== 'round_robin') return `balance ${typeof pool.balance === 'string' ? pool.balance : pool.balance.policy}`;
  if (pool.send_proxy_protocol !== 'off') return 'send_proxy_protocol';
  if (pool.tls !== undefined) return 'upstream tls';
  if (pool.keepalive.max_idle <= 0) return 'no kept-alive connections';
  return undefined;
}

/** The config the addon has as current: made for one router (one runtime), dropped when the worker swaps. */
interface Installed {
  readonly id: number;
  readonly router: Router;
  readonly reasons: ReadonlyArray<string | undefined>;
  /** Routes whose plan was handed over: index -> the CompiledFastcgi it was made from. */
  readonly routes: Map<number, CompiledFastcgi>;
  readonly byFastcgi: WeakMap<CompiledFastcgi, number>;
}

let installed: Installed | null = null;
/** What each Script was handed as (config id and until), so that a known script is handed once per renewal. */
const handed = new WeakMap<Script, { config: number; until: number }>();
let nextLendId = 1;
const lendId = (): number => nextLendId++;

onScriptForgotten((f, path) => {
  const i = installed;
  const route = i?.byFastcgi.get(f);
  if (i !== null && route !== undefined) exchangeScriptForget(i.id, route, path);
});

// a re-check found the script again (JS's entry renewed): the addon's entry is renewed at once, not at the next
// request JS gets for it (until then the addon's has ended: REFRESH_AHEAD_MS before JS's)
onScriptFound((f, path, script) => {
  const i = installed;
  const route = i?.byFastcgi.get(f);
  if (i !== null && route !== undefined) handOver(i, route, f, path, script);
});

/** The connection context's parts this module reads. */
export interface NativeContext {
  readonly config: Config;
  readonly router: Router;
}

/** The addon's current config for `ctx`, made (and made current) on first use; 0 when the addon starts nothing. */
function installedFor(ctx: NativeContext): Installed | null {
  if (installed !== null && installed.router === ctx.router) return installed;
  if (!nativeExchangeOn()) return null;
  const table = compileNativeRoutes(ctx.router, ctx.config);
  if (table === undefined) return null;
  const l = ctx.config.limits;
  const id = exchangeConfig(table.handle, [l.header_size, l.uri_size, l.headers], ctx.config.routes.length);
  if (id === 0) return null;
  installed = { id, router: ctx.router, reasons: ctx.config.routes.map((r) => nativeStartReason(ctx.config, r)), routes: new Map(), byFastcgi: new WeakMap() };
  return installed;
}

/**
 * The client connection `socket` is idle between exchanges with nothing buffered: its next read may start an
 * exchange (when the head is one whole read of the subset, on a route handed over). `plain`: a plain HTTP listener
 * without https_redirect whose connection read no PROXY header.
 */
export function markReady(socket: NativeSocket, ctx: NativeContext, plain: boolean, remoteAddr: string, serverPort: number): void {
  if (!plain || socket.encrypted || socket.peeking) return;
  const i = installedFor(ctx);
  if (i === null) return;
  exchangeReady(socket, i.id, ctx.router.forwarding.trusts(remoteAddr), serverPort);
}

/** A runtime swap: the addon's config goes (a request read from now on is JS's until a connection is marked again). */
export function nativeExchangeSwapped(): void {
  if (installed === null) return;
  installed = null;
  exchangeDrop();
}

/** The installed config of `route`'s router, or null. */
function installedOf(route: CompiledRoute): Installed | null {
  const i = installed;
  return i !== null && route.forwarding === i.router.forwarding ? i : null;
}

/**
 * A request of `route` runs `script` (found now or known): the addon may start the next requests to the same path,
 * once the route's plan, the pool's lending and the script's pairs are handed over (each once; the pairs again
 * when JS renews the entry). `memo`: the route's head memo now.
 */
export function handScript(route: CompiledRoute, f: CompiledFastcgi, path: string, script: Script, pool: UpstreamPool, memo: NativeMemo | null): void {
  const i = installedOf(route);
  if (i === null || i.reasons[route.index] !== undefined) return;
  if (!i.routes.has(route.index)) {
    const poolId = pool.lendAs(lendId);
    if (poolId < 0) return;
    const plan = nativeParamsPlan(f);
    if (plan.perRequest) return;
    i.routes.set(route.index, f);
    i.byFastcgi.set(f, route.index);
    exchangeRoute(i.id, route.index, plan.fixed, plan.overridden, plan.perRequest, poolId);
    exchangeMemo(i.id, route.index, memo);
  }
  handOver(i, route.index, f, path, script);
}

/** The script's pairs to the addon, unless handed with the same end already. */
function handOver(i: Installed, route: number, f: CompiledFastcgi, path: string, script: Script): void {
  const until = knownUntil(path, f);
  if (until <= Date.now()) return;
  const was = handed.get(script);
  if (was !== undefined && was.config === i.id && was.until === until) return;
  handed.set(script, { config: i.id, until });
  exchangeScript(i.id, route, path, scriptParams(f, script), until);
}

/** A head memo as the addon arms answers with it (fastcgi.ts HeadMemo for a chunked answer), or null. */
export interface NativeMemo {
  readonly cgi: Uint8Array;
  readonly head: Uint8Array;
  readonly shape: number;
  readonly status: number;
}

/** `route`'s head memo changed (or is made): the addon arms answers with it from now on. */
export function handMemo(route: CompiledRoute, memo: NativeMemo | null): void {
  const i = installedOf(route);
  if (i === null || !i.routes.has(route.index)) return;
  exchangeMemo(i.id, route.index, memo);
}

/** Whether a STARTED event belongs to `route` of the config installed for `router` (else it is not adopted). */
export function startedFor(start: NativeStart, router: Router, route: CompiledRoute): boolean {
  const i = installed;
  return i !== null && i.router === router && start.config === i.id && start.route === route.index && i.routes.has(route.index);
}
