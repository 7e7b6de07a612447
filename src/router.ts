// The config's routes compiled once into matchers: (host, method, path) -> Decision.
// Everything above the router parses, everything below executes; Decision is the typed hand-off.
// Also compiles header set/remove rules with nginx-style variables into cheap templates.
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
// ## Header templates
// `request_headers.set` / `response_headers.set` values may use `$remote_addr`, `$host`, `$scheme`,
// `$request_uri`, `$server_port` (nginx's names and meaning), also written `${name}` to glue text after a
// name (`${host}_x`). `$$` is a literal `$`; a `$` not followed by a letter, `_` or `{` is literal too
// (`5$`, `$ 1`). Any other `$name` is a config error (validateHeaderTemplates reports it with its path).
import type { Config, RouteConfig, TunnelConfig } from './config/schema.js';
import type { ErrorCode } from './errors.js';
import { compileForwarding, type ForwardingPolicy } from './http/forwarding.js';

/** Values a header template may use (nginx names and meaning). */
export interface RequestVars {
  remoteAddr: string; // $remote_addr
  host: string; // $host: request-line or Host host, lower-cased, without port; else the address the client reached
  scheme: 'http' | 'https'; // $scheme
  requestUri: string; // $request_uri: the original target with query
  serverPort: number; // $server_port
  /** The peer is one of `forwarding.trusted_proxies`: its X-Forwarded-* and Forwarded fields are kept. Not a template variable. */
  trustedPeer: boolean;
}

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
  upstream: string;
  /** The path prefix to remove before forwarding ('' when strip_prefix is off or the match is not a prefix). */
  stripPrefix: string;
  requestHeaders: CompiledHeaderOps;
  responseHeaders: CompiledHeaderOps;
  tunnel: TunnelConfig;
  /** The config's forwarding policy (the same object for every route of one config). */
  forwarding: ForwardingPolicy;
}

export type Decision =
  | { kind: 'proxy'; route: CompiledRoute }
  | { kind: 'reject'; code: ErrorCode };

/** A problem found while compiling the routes, with its path in the config (as zod reports them). */
export interface RouterIssue {
  path: (string | number)[];
  message: string;
}

/** Thrown by `new Router()` when the config has issues that validateHeaderTemplates/validateRouteMatches report. */
export class RouterConfigError extends Error {
  readonly issues: readonly RouterIssue[];
  constructor(issues: RouterIssue[]) {
    super(`invalid routes:\n${issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`);
    this.name = 'RouterConfigError';
    this.issues = issues;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Header templates

type Part = string | ((v: RequestVars) => string);

const VARIABLES: Readonly<Record<string, (v: RequestVars) => string>> = {
  remote_addr: (v) => v.remoteAddr,
  host: (v) => v.host,
  scheme: (v) => v.scheme,
  request_uri: (v) => v.requestUri,
  server_port: (v) => String(v.serverPort),
};
const KNOWN = Object.keys(VARIABLES).map((n) => `$${n}`).join(', ');

const isNameStart = (c: number): boolean => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95; // a-z A-Z _
const isNameChar = (c: number): boolean => isNameStart(c) || (c >= 48 && c <= 57);

function unknownVariable(name: string): string {
  // nginx configs often carry these; Portico does their job by itself, so say so instead of a bare "unknown".
  if (name.startsWith('http_') || name === 'connection_upgrade') {
    return `unknown variable $${name}: Portico forwards Upgrade/Connection for WebSockets and request headers by itself (known: ${KNOWN})`;
  }
  if (name === 'proxy_add_x_forwarded_for') return `unknown variable $${name}: Portico sends X-Forwarded-For by default (known: ${KNOWN})`;
  return `unknown variable $${name} (known: ${KNOWN}; write $$ for a literal $)`;
}

/** Splits a header value template into literal text and variable getters, or says what is wrong with it. */
export function parseHeaderTemplate(value: string): { ok: true; parts: Part[] } | { ok: false; message: string } {
  const parts: Part[] = [];
  let text = '';
  let i = 0;
  while (i < value.length) {
    const dollar = value.indexOf('$', i);
    if (dollar === -1) {
      text += value.slice(i);
      break;
    }
    text += value.slice(i, dollar);
    const next = value.charCodeAt(dollar + 1); // NaN past the end
    let name: string;
    if (next === 36 /* $ */) {
      text += '$';
      i = dollar + 2;
      continue;
    } else if (next === 123 /* { */) {
      const close = value.indexOf('}', dollar + 2);
      if (close === -1) return { ok: false, message: `unterminated \${ at offset ${dollar}` };
      name = value.slice(dollar + 2, close);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        return { ok: false, message: `invalid variable name \${${name}} at offset ${dollar}` };
      }
      i = close + 1;
    } else if (isNameStart(next)) {
      let end = dollar + 2;
      while (end < value.length && isNameChar(value.charCodeAt(end))) end++;
      name = value.slice(dollar + 1, end);
      i = end;
    } else {
      text += '$'; // a lone `$` (end of value, before a space or a digit) is literal
      i = dollar + 1;
      continue;
    }
    const getter = Object.hasOwn(VARIABLES, name) ? VARIABLES[name] : undefined;
    if (getter === undefined) return { ok: false, message: unknownVariable(name) };
    if (text !== '') parts.push(text);
    text = '';
    parts.push(getter);
  }
  if (text !== '' || parts.length === 0) parts.push(text);
  return { ok: true, parts };
}

/** Builds the renderer: a constant, a single getter, or a loop that concatenates precomputed parts. */
function renderer(parts: readonly Part[]): (v: RequestVars) => string {
  if (parts.length === 1) {
    const only = parts[0];
    if (typeof only === 'string') return () => only;
    return only;
  }
  return (v) => {
    let out = '';
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      out += typeof p === 'string' ? p : p(v);
    }
    return out;
  };
}

/** Compiles one template, throwing on an invalid one (validateHeaderTemplates reports them all first). */
export function compileHeaderTemplate(value: string): (v: RequestVars) => string {
  const parsed = parseHeaderTemplate(value);
  if (!parsed.ok) throw new RouterConfigError([{ path: [], message: parsed.message }]);
  return renderer(parsed.parts);
}

const HEADER_SECTIONS = ['request_headers', 'response_headers'] as const;

/**
 * Every header `set` value with an unknown variable or a malformed `${...}`, with its config path
 * (e.g. ['routes', 1, 'request_headers', 'set', 'X-Real-IP']). The config loader reports these with the
 * schema's errors, so a bad template never reaches a running router.
 */
export function validateHeaderTemplates(config: Config): RouterIssue[] {
  const issues: RouterIssue[] = [];
  config.routes.forEach((route, i) => {
    for (const section of HEADER_SECTIONS) {
      for (const [name, value] of Object.entries(route[section].set)) {
        const parsed = parseHeaderTemplate(value);
        if (!parsed.ok) issues.push({ path: ['routes', i, section, 'set', name], message: parsed.message });
      }
    }
  });
  return issues;
}

/**
 * Match conditions the schema cannot judge alone: host patterns (`*` only as a leading `*.` label) and
 * method names (compared case-sensitively, so `get` would never match).
 */
export function validateRouteMatches(config: Config): RouterIssue[] {
  const issues: RouterIssue[] = [];
  config.routes.forEach((route, i) => {
    route.match.host?.forEach((host, j) => {
      const message = hostPatternProblem(host);
      if (message !== undefined) issues.push({ path: ['routes', i, 'match', 'host', j], message });
    });
    route.match.method?.forEach((method, j) => {
      if (!/^[!#$%&'*+\-.^_`|~0-9A-Z]+$/.test(method)) {
        issues.push({ path: ['routes', i, 'match', 'method', j], message: `invalid method ${JSON.stringify(method)}: methods are case-sensitive tokens, e.g. GET, POST` });
      }
    });
  });
  return issues;
}

function hostPatternProblem(host: string): string | undefined {
  const h = normaliseHost(host);
  if (h === '') return 'empty host name';
  if (h === '*') return '"*" is not a host pattern: leave match.host out to match every host';
  const star = h.indexOf('*');
  if (star === -1) return /\s|\//.test(h) ? `invalid host name ${JSON.stringify(host)}` : undefined;
  if (star !== 0 || h[1] !== '.' || h.length < 3 || h.indexOf('*', 1) !== -1) {
    return `invalid wildcard ${JSON.stringify(host)}: only a leading "*." is supported, e.g. "*.example.com"`;
  }
  return undefined;
}

/** Lower-cased, without the trailing dot of a fully qualified name. */
function normaliseHost(host: string): string {
  const h = host.trim().toLowerCase();
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

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

type ProxyDecision = { readonly kind: 'proxy'; readonly route: CompiledRoute };

/** One route under one path condition; `methods` undefined = any method. */
interface Candidate {
  readonly methods: ReadonlySet<string> | undefined;
  readonly decision: ProxyDecision;
  readonly index: number;
}

/** Candidates in tie order: method-specific first, then file order. */
function tieOrder(a: Candidate, b: Candidate): number {
  const am = a.methods === undefined ? 1 : 0;
  const bm = b.methods === undefined ? 1 : 0;
  return am - bm || a.index - b.index;
}

function pick(candidates: readonly Candidate[], method: string): ProxyDecision | undefined {
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i];
    if (c.methods === undefined || c.methods.has(method)) return c.decision;
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

  match(method: string, path: string): ProxyDecision | undefined {
    let d: ProxyDecision | undefined;
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

const NOT_FOUND: Decision = Object.freeze({ kind: 'reject', code: 'ROUTE_NOT_FOUND' });

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
    const issues = [...validateRouteMatches(config), ...validateHeaderTemplates(config)];
    if (issues.length > 0) throw new RouterConfigError(issues);

    const routes: CompiledRoute[] = [];
    const forwarding = compileForwarding(config);
    this.forwarding = forwarding;
    let anyHost: PathTable | undefined;
    config.routes.forEach((r, index) => {
      const route: CompiledRoute = Object.freeze({
        index,
        name: r.name ?? `routes[${index}]`,
        upstream: r.proxy.upstream,
        stripPrefix: r.proxy.strip_prefix && r.match.path !== undefined ? r.match.path.replace(/\/+$/, '') : '',
        requestHeaders: compileHeaderOps(r.request_headers),
        responseHeaders: compileHeaderOps(r.response_headers),
        tunnel: r.tunnel ?? config.tunnel,
        forwarding,
      });
      routes.push(route);
      const candidate: Candidate = {
        methods: r.match.method === undefined ? undefined : new Set(r.match.method),
        decision: Object.freeze({ kind: 'proxy', route }),
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

  /** host: lower-cased, no port (undefined when the request has none); path: without query. */
  route(host: string | undefined, method: string, path: string): Decision {
    let d: Decision | undefined;
    if (host !== undefined && host.length > 0) {
      // "example.com." names the same host as "example.com" (absolute DNS form); rare, so the slice is fine.
      if (host.charCodeAt(host.length - 1) === 46 /* . */) host = host.slice(0, -1);
      const exact = this.#exactHosts.get(host);
      if (exact !== undefined && (d = exact.match(method, path)) !== undefined) return d;
      const wildcards = this.#wildcards;
      for (let i = 0; i < wildcards.length; i++) {
        const w = wildcards[i];
        if (host.length > w.suffix.length && host.endsWith(w.suffix) && (d = w.table.match(method, path)) !== undefined) return d;
      }
    }
    if (this.#anyHost !== undefined && (d = this.#anyHost.match(method, path)) !== undefined) return d;
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
  const a = localAddress ?? '';
  if (a.startsWith('::ffff:') && a.includes('.')) return a.slice(7);
  return a.includes(':') ? `[${a}]` : a;
}
