// Rules of the config language that belong to routes but are checked when a config is loaded: header value
// templates with nginx-style variables, compiled once into cheap renderers, and host/method match conditions.
// Pure: the loader reports their issues with the schema's, the router compiles with them; no sockets here.
//
// Header templates:
// `request_headers.set` / `response_headers.set` values may use `$remote_addr`, `$host`, `$scheme`,
// `$request_uri`, `$server_port` (nginx's names and meaning), also written `${name}` to glue text after a
// name (`${host}_x`). `$$` is a literal `$`; a `$` not followed by a letter, `_` or `{` is literal too
// (`5$`, `$ 1`). Any other `$name` is a config error (validateHeaderTemplates reports it with its path).
import type { Config } from './schema.js';
import { scanTemplate } from './template.js';

/** Values a header template may use (nginx names and meaning). */
export interface RequestVars {
  remoteAddr: string; // $remote_addr
  host: string; // $host: request-line or Host host, lower-cased, without port; else the address the client reached
  scheme: 'http' | 'https'; // $scheme
  requestUri: string; // $request_uri: the original target with query
  serverPort: number; // $server_port
  /** The peer is one of `forwarding.trusted_proxies`: its X-Forwarded-* and Forwarded fields are kept. Not a template variable. */
  trustedPeer: boolean;
  /** $request_id: the X-Request-Id sent upstream (log.request_id); absent when that is off. */
  requestId?: string;
}

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

type Getter = (v: RequestVars) => string;
type Part = string | Getter;

const VARIABLES: Readonly<Record<string, Getter>> = {
  remote_addr: (v) => v.remoteAddr,
  host: (v) => v.host,
  scheme: (v) => v.scheme,
  request_uri: (v) => v.requestUri,
  /** The query string without its `?` ('' when none); `$is_args` is "?" when there is one (nginx's pair). */
  args: (v) => {
    const q = v.requestUri.indexOf('?');
    return q < 0 ? '' : v.requestUri.slice(q + 1);
  },
  is_args: (v) => (v.requestUri.indexOf('?') < 0 ? '' : '?'),
  server_port: (v) => String(v.serverPort),
  request_id: (v) => v.requestId ?? '',
};
const KNOWN = Object.keys(VARIABLES).map((n) => `$${n}`).join(', ');

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
  return scanTemplate<Getter>(value, (name) => (Object.hasOwn(VARIABLES, name) ? VARIABLES[name] : { refused: unknownVariable(name) }));
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
export function normaliseHost(host: string): string {
  const h = host.trim().toLowerCase();
  return h.endsWith('.') ? h.slice(0, -1) : h;
}
