// The config's routes compiled once into matchers: (host, method, path) -> Decision.
// Everything above the router parses, everything below executes; Decision is the typed hand-off.
// Header set/remove rules are compiled with config/route-rules.ts's templates.
// It opens no sockets and never throws at request time: route() only reads precomputed tables.
//
// ## Route precedence (copied to README)
// A request is matched against three host classes, most specific first:
//   1. routes whose `match.host` lists the request's host exactly (case-insensitive, port ignored);
//   2. routes with a `*.suffix` wildcard that matches it, longest suffix first (`*.example.com` matches
//      `a.example.com` and `a.b.example.com`, not `example.com`);
//   3. routes without `match.host`.
// Within one host class the path decides:
//   a. `path_exact` (the whole path, query ignored);
//   b. `path_regex`, in file order (a JavaScript RegExp tested against the path);
//   c. `path` prefixes, longest first. A prefix matches on a segment boundary: `/wss` matches `/wss`,
//      `/wss/` and `/wss/x`, not `/wssx`; a prefix ending in `/` is a plain prefix; `/` matches every path;
//   d. routes without a path condition.
// Ties (routes with the same host class and the same path condition) go to routes that list `match.method`
// before routes that do not, then to file order. Methods are compared exactly (`GET` does not imply `HEAD`).
// A route whose method list does not contain the request's method is skipped, and matching goes on.
// Fallthrough: when a host matches some host-specific routes but none of their paths (or methods), matching
// continues with the next, less specific class, down to the host-less routes. (nginx picks one `server` by
// host and never leaves it; Portico's way lets host-less routes serve as a shared default.)
// No route matches -> ROUTE_NOT_FOUND (404).
// `proxy.strip_prefix: true` removes the matched prefix before forwarding: `/api` turns `/api/x` into `/x` and
// `/api` into `/`; a prefix written `/api/` strips the same way. It applies to `path` prefixes only.
//
import type { Config, RouteConfig, TunnelConfig, WebsocketConfig } from '../config/schema.js';
import type { ErrorCode } from '../core/errors.js';
import { unmapIPv4 } from '../core/util.js';
import { RouterConfigError, compileHeaderTemplate, normaliseHost, validateHeaderTemplates, validateRouteMatches, type RequestVars } from '../config/route-rules.js';
import { compileForwarding, type ForwardingPolicy } from './forwarding.js';
import { compileRedirectTarget, validateRedirects, type RedirectRenderer } from '../config/redirect-target.js';
import { CorsPolicy } from './policy/cors.js';

/** A static route's config (config/static.ts), paths absolute. */
export type StaticConfig = NonNullable<RouteConfig['static']>;
/** A route's compression options (config/compress.ts). */
export type CompressConfig = NonNullable<RouteConfig['compress']>;
import type { FastcgiActionConfig } from '../config/fastcgi.js';
import { parseParamTemplate, type TemplatePart } from '../config/fastcgi-params.js';
import { parseFallback, type ParsedFallback } from '../config/static-fallback.js';


export interface CompiledHeaderOps {
  /** Lower-cased names to drop. */
  remove: ReadonlySet<string>;
  /** Headers to set (replace): name as written in config, and a renderer over the request's variables. */
  set: ReadonlyArray<{ name: string; lower: string; render: (v: RequestVars) => string }>;
}

export interface CompiledRoute {
  index: number;
  /** config name or "routes[i]" */
  name: string;
  /** The proxy action's upstream (undefined for routes with another action). */
  upstream: string | undefined;
  /** The path prefix to remove before forwarding ('' when strip_prefix is off or the match is not a prefix). */
  stripPrefix: string;
  requestHeaders: CompiledHeaderOps;
  responseHeaders: CompiledHeaderOps;
  tunnel: TunnelConfig;
  /** The config's forwarding policy (the same object for every route of one config). */
  forwarding: ForwardingPolicy;
  /** The route's CORS policy (route/policy/cors.ts), or undefined. */
  cors: CorsPolicy | undefined;
  /** The route's compression options, or undefined (off). */
  compress: CompressConfig | undefined;
}

/** An HTTP request on a proxy route: forwarded to the route's upstream pool (handlers/forward.ts). */
export interface ForwardDecision {
  readonly kind: 'forward';
  readonly route: CompiledRoute;
  /** The upstream pool's name (the route's `proxy.upstream`). */
  readonly upstream: string;
}

/** A WebSocket opening handshake on a proxy route: forwarded, then relayed as a tunnel once a valid 101 comes back. */
export interface TunnelDecision {
  readonly kind: 'tunnel';
  readonly route: CompiledRoute;
  /** The upstream pool's name (the route's `proxy.upstream`). */
  readonly upstream: string;
}

/** A request on a static route: a file from the route's root (handlers/static.ts). */
export interface StaticDecision {
  readonly kind: 'static';
  readonly route: CompiledRoute;
  readonly site: StaticConfig;
  /** The route's `fallback`, parsed once (config/static-fallback.ts), or undefined (a miss is a 404). */
  readonly fallback: ParsedFallback | undefined;
}

/** A request on a redirect route: a Location rendered from the request (handlers/fixed.ts). */
export interface RedirectDecision {
  readonly kind: 'redirect';
  readonly route: CompiledRoute;
  readonly status: number;
  readonly render: RedirectRenderer;
  /** The route's path_regex, run again for its captures (undefined when the target uses none). */
  readonly captures: RegExp | undefined;
}

/** A request on a `return` route: a fixed status and body, built once (handlers/fixed.ts). */
export interface ReturnDecision {
  readonly kind: 'return';
  readonly route: CompiledRoute;
  readonly status: number;
  readonly body: Buffer;
  readonly contentType: string;
}

/**
 * A WebSocket opening handshake on a proxy route with `websocket.mode: terminate`: the backend's handshake is
 * made first (as for a tunnel), then the client's WebSocket is handed to the worker's uWebSockets.js app and
 * messages are relayed (src/terminate/).
 */
export interface TerminateDecision {
  readonly kind: 'terminate';
  readonly route: CompiledRoute;
  /** The upstream pool's name (the route's `proxy.upstream`). */
  readonly upstream: string;
  /** The route's `websocket` section (mode terminate). */
  readonly websocket: WebsocketConfig;
}

/** A request on a fastcgi route: a script under `fastcgi.root` run by the route's FastCGI upstream (handlers/fastcgi.ts). */
export interface FastcgiDecision {
  readonly kind: 'fastcgi';
  readonly route: CompiledRoute;
  /** The upstream pool's name (the route's `fastcgi.upstream`). */
  readonly upstream: string;
  readonly fastcgi: CompiledFastcgi;
}

/** A fastcgi route's settings, compiled once (config/fastcgi.ts says what each means). */
export interface CompiledFastcgi {
  /** Absolute document root, without a trailing `/` (but `/` itself). */
  readonly root: string;
  readonly index: string;
  /** split_path_info with its two groups, or null (the whole path is the script). */
  readonly split: RegExp | null;
  /** Extra params in config order: name and template. */
  readonly params: ReadonlyArray<{ readonly name: string; readonly parts: readonly TemplatePart[] }>;
}

function compileFastcgi(f: FastcgiActionConfig): CompiledFastcgi {
  const params = Object.entries(f.params).map(([name, value]) => {
    const parts = parseParamTemplate(value);
    // the schema refused bad templates already; a string here would be a schema/loader mismatch
    if (typeof parts === 'string') throw new Error(`fastcgi param ${name}: ${parts}`);
    return Object.freeze({ name, parts: Object.freeze(parts) });
  });
  const root = f.root.length > 1 ? f.root.replace(/\/+$/, '') : f.root;
  return Object.freeze({ root, index: f.index, split: f.split_path_info === undefined ? null : new RegExp(f.split_path_info), params: Object.freeze(params) });
}

/** No handler runs: a canned response with the code's status (core/errors.ts); `reason` goes to the access log. */
export interface RejectDecision {
  readonly kind: 'reject';
  readonly code: ErrorCode;
  readonly reason: string;
}

/**
 * What to do with one request: the typed hand-off from routing to a handler. The forward and tunnel decisions
 * of a route are built once with the router; a request gets one of them, never a new object.
 * Adding a kind (terminate, fastcgi, static, redirect...): add its interface here with `route` and what the
 * handler needs precomputed, build it once per route in `routeDecisions` (or in decide.ts from the
 * head), write its handler under handlers/, and add its case to the switch in http/connection.ts `#dispatch`,
 * whose `never` default does not compile until every kind has one. Policies (route/policy/) apply to it as
 * to every routed kind. No kind without something that produces it.
 */
export type Decision = ForwardDecision | TunnelDecision | TerminateDecision | FastcgiDecision | StaticDecision | RedirectDecision | ReturnDecision | RejectDecision;

/** A decision that names a route (every kind but reject): what policies and handlers get. */
export type RoutedDecision = Exclude<Decision, RejectDecision>;


function compileHeaderOps(ops: RouteConfig['request_headers']): CompiledHeaderOps {
  return Object.freeze({
    remove: new Set(ops.remove.map((n) => n.toLowerCase())),
    set: Object.freeze(
      Object.entries(ops.set).map(([name, value]) => Object.freeze({ name, lower: name.toLowerCase(), render: compileHeaderTemplate(value) })),
    ),
  });
}

// ---------------------------------------------------------------------------------------------------------
// Matching tables

/** One route under one path condition; `methods` undefined = any method. Its decisions are built once. */
interface Candidate extends RouteDecisions {
  readonly methods: ReadonlySet<string> | undefined;
  readonly index: number;
}

/** The two decisions of one route, built once: for a plain request and for a WebSocket opening handshake. */
interface RouteDecisions {
  readonly request: RoutedDecision;
  readonly handshake: RoutedDecision;
}

/** One route's decisions by its action (config ROUTE_ACTIONS: exactly one is set, the schema checks). */
function routeDecisions(r: RouteConfig, route: CompiledRoute): RouteDecisions {
  if (r.proxy !== undefined) {
    const upstream = r.proxy.upstream;
    const ws = r.websocket;
    const handshake: RoutedDecision = ws?.mode === 'terminate' ? { kind: 'terminate', route, upstream, websocket: ws } : { kind: 'tunnel', route, upstream };
    return { request: Object.freeze({ kind: 'forward', route, upstream }), handshake: Object.freeze(handshake) };
  }
  if (r.fastcgi !== undefined) {
    // a WebSocket handshake on a script route is a plain request to the script (FastCGI has no upgrade)
    const d: FastcgiDecision = Object.freeze({ kind: 'fastcgi', route, upstream: r.fastcgi.upstream, fastcgi: compileFastcgi(r.fastcgi) });
    return { request: d, handshake: d };
  }
  let d: RoutedDecision | undefined;
  if (r.static !== undefined) d = Object.freeze({ kind: 'static', route, site: r.static, fallback: compileFallback(r.static.fallback, route) });
  else if (r.redirect !== undefined) {
    const t = compileRedirectTarget(r.redirect.to, r.match.path_regex);
    if (!t.ok) throw new Error(`route ${route.name}: ${t.message}`); // validateRedirects reported it first
    const captures = /\$[1-9]/.test(r.redirect.to.replace(/\$\$/g, '')) && r.match.path_regex !== undefined ? new RegExp(r.match.path_regex) : undefined;
    d = Object.freeze({ kind: 'redirect', route, status: r.redirect.status, render: t.render, captures });
  } else if (r.return !== undefined) {
    d = Object.freeze({ kind: 'return', route, status: r.return.status, body: Buffer.from(r.return.body, 'utf8'), contentType: r.return.content_type });
  }
  // a WebSocket handshake on a route that answers by itself gets the same answer (no tunnel without a backend)
  if (d !== undefined) return { request: d, handshake: d };
  throw new Error(`route ${route.name} has no action`);
}

function compileFallback(value: string | undefined, route: CompiledRoute): ParsedFallback | undefined {
  if (value === undefined) return undefined;
  const f = parseFallback(value);
  // the schema refused bad fallbacks already; a failure here would be a schema/loader mismatch
  if (!f.ok) throw new Error(`route ${route.name}: fallback: ${f.message}`);
  const q = f.fallback.query;
  return Object.freeze({ path: f.fallback.path, query: q === null ? null : Object.freeze(q.map((p) => Object.freeze(p))), usesUri: f.fallback.usesUri });
}

/** Candidates in tie order: method-specific first, then file order. */
function tieOrder(a: Candidate, b: Candidate): number {
  const am = a.methods === undefined ? 1 : 0;
  const bm = b.methods === undefined ? 1 : 0;
  return am - bm || a.index - b.index;
}

function pick(candidates: readonly Candidate[], method: string): Candidate | undefined {
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i];
    if (c.methods === undefined || c.methods.has(method)) return c;
  }
  return undefined;
}

interface RegexEntry {
  readonly source: string;
  readonly re: RegExp;
  readonly candidates: Candidate[];
}

interface PrefixEntry {
  readonly prefix: string;
  /** True unless the prefix ends in '/': the next path character must then be '/' or the end. */
  readonly boundary: boolean;
  readonly candidates: Candidate[];
}

/** One candidate as layout() shows it: the route's index (file order) and its method list (undefined: any). */
export interface CandidateLayout {
  readonly route: number;
  readonly methods: readonly string[] | undefined;
}

/** A sealed PathTable's lists in match order; `regexes` are the path_regex conditions in file order, each with the source and flags it was compiled from. */
export interface PathTableLayout {
  readonly exact: ReadonlyArray<{ readonly path: string; readonly candidates: readonly CandidateLayout[] }>;
  readonly regexes: ReadonlyArray<{ readonly source: string; readonly flags: string; readonly candidates: readonly CandidateLayout[] }>;
  readonly prefixes: ReadonlyArray<{ readonly prefix: string; readonly boundary: boolean; readonly candidates: readonly CandidateLayout[] }>;
  readonly any: readonly CandidateLayout[];
}

/** The router's host classes in match order (Router.layout). */
export interface RouterLayout {
  readonly exactHosts: ReadonlyArray<{ readonly host: string; readonly table: PathTableLayout }>;
  /** Longest suffix first; `suffix` is ".example.com" for "*.example.com". */
  readonly wildcards: ReadonlyArray<{ readonly suffix: string; readonly table: PathTableLayout }>;
  readonly anyHost: PathTableLayout | undefined;
}

/** The routes of one host class (one exact host, one wildcard suffix, or no host), ordered for matching. */
class PathTable {
  readonly #exact = new Map<string, Candidate[]>();
  readonly #regexes: RegexEntry[] = [];
  #prefixes: PrefixEntry[] = [];
  readonly #any: Candidate[] = [];

  add(route: RouteConfig, c: Candidate): void {
    const m = route.match;
    if (m.path_exact !== undefined) {
      const list = this.#exact.get(m.path_exact);
      if (list === undefined) this.#exact.set(m.path_exact, [c]);
      else list.push(c);
    } else if (m.path_regex !== undefined) {
      // Same source = same condition: its routes tie (rule 3); different sources keep file order.
      const source = m.path_regex;
      const entry = this.#regexes.find((e) => e.source === source);
      if (entry === undefined) this.#regexes.push({ source, re: new RegExp(source), candidates: [c] });
      else entry.candidates.push(c);
    } else if (m.path !== undefined) {
      const entry = this.#prefixes.find((e) => e.prefix === m.path);
      if (entry === undefined) this.#prefixes.push({ prefix: m.path, boundary: !m.path.endsWith('/'), candidates: [c] });
      else entry.candidates.push(c);
    } else {
      this.#any.push(c);
    }
  }

  /** Sorts every list once; after this the table is only read. */
  seal(): void {
    for (const list of this.#exact.values()) list.sort(tieOrder);
    for (const e of this.#regexes) e.candidates.sort(tieOrder);
    for (const e of this.#prefixes) e.candidates.sort(tieOrder);
    this.#any.sort(tieOrder);
    // Two different prefixes of the same length can never both match one path, so length alone orders them.
    this.#prefixes = this.#prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The sealed lists in the order match() reads them (route/native-routes.ts compiles them for the addon). */
  layout(): PathTableLayout {
    const cands = (list: readonly Candidate[]): CandidateLayout[] => list.map((c) => ({ route: c.index, methods: c.methods === undefined ? undefined : [...c.methods] }));
    return {
      exact: [...this.#exact].map(([path, list]) => ({ path, candidates: cands(list) })),
      regexes: this.#regexes.map((e) => ({ source: e.source, flags: e.re.flags, candidates: cands(e.candidates) })),
      prefixes: this.#prefixes.map((e) => ({ prefix: e.prefix, boundary: e.boundary, candidates: cands(e.candidates) })),
      any: cands(this.#any),
    };
  }

  match(method: string, path: string): Candidate | undefined {
    let d: Candidate | undefined;
    if (this.#exact.size > 0) {
      const list = this.#exact.get(path);
      if (list !== undefined && (d = pick(list, method)) !== undefined) return d;
    }
    const regexes = this.#regexes;
    for (let i = 0; i < regexes.length; i++) {
      if (regexes[i].re.test(path) && (d = pick(regexes[i].candidates, method)) !== undefined) return d;
    }
    const prefixes = this.#prefixes;
    for (let i = 0; i < prefixes.length; i++) {
      const e = prefixes[i];
      const n = e.prefix.length;
      if (path.startsWith(e.prefix) && (!e.boundary || path.length === n || path.charCodeAt(n) === 47 /* / */)) {
        if ((d = pick(e.candidates, method)) !== undefined) return d;
      }
    }
    return this.#any.length > 0 ? pick(this.#any, method) : undefined;
  }
}

interface WildcardEntry {
  /** ".example.com" for "*.example.com": the host must end with it and have at least one more character. */
  readonly suffix: string;
  readonly table: PathTable;
}

const NOT_FOUND: RejectDecision = Object.freeze({ kind: 'reject', code: 'ROUTE_NOT_FOUND', reason: 'no route' });

export class Router {
  /** Compiled routes in file order. */
  readonly routes: readonly CompiledRoute[];
  /** Whom to believe about forwarding headers (config `forwarding`). */
  readonly forwarding: ForwardingPolicy;
  readonly #exactHosts = new Map<string, PathTable>();
  /** Longest suffix first. */
  readonly #wildcards: WildcardEntry[] = [];
  readonly #anyHost: PathTable | undefined;

  constructor(config: Config) {
    const issues = [...validateRouteMatches(config), ...validateHeaderTemplates(config), ...validateRedirects(config)];
    if (issues.length > 0) throw new RouterConfigError(issues);

    const routes: CompiledRoute[] = [];
    const forwarding = compileForwarding(config);
    this.forwarding = forwarding;
    let anyHost: PathTable | undefined;
    config.routes.forEach((r, index) => {
      const route: CompiledRoute = Object.freeze({
        index,
        name: r.name ?? `routes[${index}]`,
        upstream: r.proxy?.upstream,
        stripPrefix: r.proxy?.strip_prefix === true && r.match.path !== undefined ? r.match.path.replace(/\/+$/, '') : '',
        requestHeaders: compileHeaderOps(r.request_headers),
        responseHeaders: compileHeaderOps(r.response_headers),
        tunnel: r.tunnel ?? config.tunnel,
        forwarding,
        cors: r.cors === undefined ? undefined : new CorsPolicy(r.cors),
        compress: r.compress,
      });
      routes.push(route);
      const candidate: Candidate = {
        ...routeDecisions(r, route),
        methods: r.match.method === undefined ? undefined : new Set(r.match.method),
        index,
      };
      if (r.match.host === undefined) {
        anyHost ??= new PathTable();
        anyHost.add(r, candidate);
        return;
      }
      for (const host of new Set(r.match.host.map(normaliseHost))) {
        if (host.startsWith('*.')) {
          const suffix = host.slice(1);
          let w = this.#wildcards.find((e) => e.suffix === suffix);
          if (w === undefined) this.#wildcards.push((w = { suffix, table: new PathTable() }));
          w.table.add(r, candidate);
        } else {
          let t = this.#exactHosts.get(host);
          if (t === undefined) this.#exactHosts.set(host, (t = new PathTable()));
          t.add(r, candidate);
        }
      }
    });
    for (const t of this.#exactHosts.values()) t.seal();
    for (const w of this.#wildcards) w.table.seal();
    this.#wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
    anyHost?.seal();
    this.#anyHost = anyHost;
    this.routes = Object.freeze(routes);
  }

  /** The sealed tables as plain data, in the order route() reads them (route/native-routes.ts compiles them). */
  layout(): RouterLayout {
    return {
      exactHosts: [...this.#exactHosts].map(([host, t]) => ({ host, table: t.layout() })),
      wildcards: this.#wildcards.map((w) => ({ suffix: w.suffix, table: w.table.layout() })),
      anyHost: this.#anyHost?.layout(),
    };
  }

  /**
   * host: lower-cased, no port (undefined when the request has none); path: without query. `handshake`: the
   * request is a WebSocket opening handshake (decide.ts says which are), so a matching route tunnels it.
   */
  route(host: string | undefined, method: string, path: string, handshake = false): Decision {
    let c: Candidate | undefined;
    if (host !== undefined && host.length > 0) {
      // "example.com." names the same host as "example.com" (absolute DNS form); rare, so the slice is fine.
      if (host.charCodeAt(host.length - 1) === 46 /* . */) host = host.slice(0, -1);
      const exact = this.#exactHosts.get(host);
      if (exact !== undefined && (c = exact.match(method, path)) !== undefined) return handshake ? c.handshake : c.request;
      const wildcards = this.#wildcards;
      for (let i = 0; i < wildcards.length; i++) {
        const w = wildcards[i];
        if (host.length > w.suffix.length && host.endsWith(w.suffix) && (c = w.table.match(method, path)) !== undefined) return handshake ? c.handshake : c.request;
      }
    }
    if (this.#anyHost !== undefined && (c = this.#anyHost.match(method, path)) !== undefined) return handshake ? c.handshake : c.request;
    return NOT_FOUND;
  }
}

/**
 * Applies a route's stripPrefix to a request target (path plus optional query): `/api/x?q` -> `/x?q`,
 * `/api` -> `/`, `/api?q` -> `/?q`. Returns the target unchanged when stripPrefix is '' or does not lead it.
 */
export function stripTarget(target: string, stripPrefix: string): string {
  if (stripPrefix === '' || !target.startsWith(stripPrefix)) return target;
  const rest = target.slice(stripPrefix.length);
  return rest === '' || rest.charCodeAt(0) === 63 /* ? */ ? `/${rest}` : rest;
}

/**
 * $host when the request names no host (HTTP/1.0 without Host, or an empty Host): nginx falls back to the
 * server name; Portico has none, so the address the client reached (`localAddress`; IPv4-mapped shown as IPv4,
 * IPv6 in brackets). Otherwise $host is the request's host (absolute-form target or Host, which the parser
 * made agree), lower-cased, without port.
 */
export function listenerHost(localAddress: string | undefined): string {
  const a = unmapIPv4(localAddress ?? '');
  return a.includes(':') ? `[${a}]` : a;
}

export type { RequestVars };
