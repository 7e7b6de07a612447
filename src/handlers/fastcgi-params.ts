// The FastCGI params of one request: nginx's fastcgi_params set with nginx's meaning (CGI/1.1 meta-variables,
// RFC 3875 §4.1), SCRIPT_FILENAME and PATH_INFO from the resolved script, HTTP_* from the request headers
// (never HTTP_PROXY: httpoxy), the real client address, then the route's extra params. What is the same for
// every request of a route is encoded once per compiled route (a reload compiles a new one); the rest is one
// binary string per request for wire/fastcgi.ts encodeRequestStart. Pure: no sockets, no file system.
import { isIP } from 'node:net';
import { binary, binaryPair, encodePairs } from '../wire/fastcgi.js';
import type { TemplatePart, FastcgiVariable } from '../config/fastcgi.js';
import type { CompiledFastcgi, RequestVars } from '../route/router.js';
import type { ForwardingPolicy } from '../route/forwarding.js';
import type { RequestHead } from '../wire/http-head.js';
import type { Script } from './fastcgi-script.js';

/** What the params need besides the head and the script: the connection's ends and the route's policy. */
export interface ParamContext {
  readonly vars: RequestVars;
  /** The client's port (PROXY header source, else the socket's), '' when unknown. */
  readonly remotePort: string;
  /** The address the client reached, '' when unknown. */
  readonly serverAddr: string;
  readonly forwarding: ForwardingPolicy;
}

/**
 * Request headers never passed as HTTP_*: the body's own fields (CONTENT_TYPE and CONTENT_LENGTH carry them),
 * `Proxy` (httpoxy, CVE-2016-5385: HTTP_PROXY is read as a proxy setting by many libraries) and hop-by-hop fields.
 */
const SKIPPED: ReadonlySet<string> = new Set(['content-type', 'content-length', 'proxy', 'connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'http2-settings']);
/** Forwarding fields: passed on only from a trusted proxy (as Portico's proxy routes do), else dropped. */
const FORWARDING: ReadonlySet<string> = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-real-ip', 'forwarded']);

/**
 * The client address: the peer (a PROXY header's source included), or, when the peer is a trusted proxy, the
 * last X-Forwarded-For entry that is not one (nginx real_ip with real_ip_recursive on).
 */
export function realClient(head: RequestHead, vars: RequestVars, forwarding: ForwardingPolicy): string {
  if (!vars.trustedPeer) return vars.remoteAddr;
  let xff: string | undefined;
  const hs = head.headers;
  for (let i = 0; i < hs.length; i += 2) {
    if (hs[i].length === 15 && hs[i].toLowerCase() === 'x-forwarded-for') xff = xff === undefined ? hs[i + 1] : `${xff},${hs[i + 1]}`;
  }
  if (xff === undefined) return vars.remoteAddr;
  const hops = xff.split(',');
  let client = vars.remoteAddr;
  for (let i = hops.length - 1; i >= 0; i--) {
    const a = hops[i].trim();
    if (isIP(a) === 0) break; // a malformed entry: trust nothing left of it
    client = a;
    if (!forwarding.trusts(a)) break;
  }
  return client;
}

const CGI_HEADER_NAME = /^[A-Za-z0-9-]+$/;

/**
 * What a request header becomes: 'skip' (never passed), 'forwarding' (passed from trusted peers only),
 * 'content-type' (CONTENT_TYPE), or passed as `cgi` (HTTP_*). `cookie`: repeated ones join with "; ".
 */
interface HeaderKind {
  readonly kind: 'skip' | 'forwarding' | 'content-type' | 'pass';
  readonly cgi: string;
  readonly cookie: boolean;
}

/**
 * Header names as spelled on the wire -> what they become. Clients send the same few spellings over and over,
 * so a hit saves a lower-casing, two set lookups and the HTTP_ name per header; bounded, emptied when full.
 */
const headerKinds = new Map<string, HeaderKind>();
const HEADER_KINDS_MAX = 512;

function headerKind(name: string): HeaderKind {
  const hit = headerKinds.get(name);
  if (hit !== undefined) return hit;
  const lower = name.toLowerCase();
  const kind: HeaderKind = Object.freeze({
    kind: lower === 'content-type' ? 'content-type' : SKIPPED.has(lower) || !CGI_HEADER_NAME.test(name) ? 'skip' : FORWARDING.has(lower) ? 'forwarding' : 'pass',
    // HTTP_ + the name upper-cased with `-` as `_`, only for names nginx would pass (ignore_invalid_headers:
    // letters, digits and `-`). An `_` is refused: X_Foo and X-Foo would both be HTTP_X_FOO, so a client could
    // pass off one as the other (nginx underscores_in_headers off).
    cgi: 'HTTP_' + name.toUpperCase().replace(/-/g, '_'),
    cookie: lower === 'cookie',
  });
  if (headerKinds.size >= HEADER_KINDS_MAX) headerKinds.clear();
  headerKinds.set(name, kind);
  return kind;
}

/** A route's params as far as they are known before a request: compiled once per CompiledFastcgi. */
interface ParamsPlan {
  /** The pairs every request of the route sends, encoded (PARAMS content). */
  readonly fixed: Buffer;
  /** Names the route's extra params set: the standard pair or header of that name is not sent; null when none. */
  readonly overridden: ReadonlySet<string> | null;
  /** Extra params that use per-request variables, their text parts in binary form. */
  readonly perRequest: ReadonlyArray<{ readonly name: string; readonly parts: readonly TemplatePart[] }>;
  /**
   * The pairs a script gives (SCRIPT_FILENAME, SCRIPT_NAME, PATH_INFO, DOCUMENT_URI) by Script object: a found
   * script is one object per route and path for a while (fastcgi-script.ts), so its pairs are made once.
   */
  readonly scripts: WeakMap<Script, string>;
}

const plans = new WeakMap<CompiledFastcgi, ParamsPlan>();

/** Variables whose value is the route's, not the request's. */
function fixedVariable(v: FastcgiVariable): boolean {
  return v === 'document_root';
}

function planOf(f: CompiledFastcgi): ParamsPlan {
  const hit = plans.get(f);
  if (hit !== undefined) return hit;
  const overridden = new Set<string>();
  for (const p of f.params) overridden.add(p.name);
  const fixed: string[] = [];
  const standard: Array<[string, string]> = [
    ['GATEWAY_INTERFACE', 'CGI/1.1'],
    ['SERVER_SOFTWARE', 'portico'],
    ['DOCUMENT_ROOT', f.root],
    // php-cgi built with force-cgi-redirect refuses to run without it (nginx fastcgi_params sets it too)
    ['REDIRECT_STATUS', '200'],
  ];
  for (const [name, value] of standard) if (!overridden.has(name)) fixed.push(name, value);
  const perRequest: Array<{ name: string; parts: readonly TemplatePart[] }> = [];
  for (const p of f.params) {
    if (p.parts.every((x) => 'text' in x || fixedVariable(x.variable))) {
      fixed.push(p.name, p.parts.map((x) => ('text' in x ? x.text : f.root)).join(''));
    } else {
      perRequest.push({ name: p.name, parts: p.parts.map((x) => ('text' in x ? { text: binary(x.text) } : x)) });
    }
  }
  const plan: ParamsPlan = Object.freeze({ fixed: encodePairs(fixed), overridden: overridden.size === 0 ? null : overridden, perRequest, scripts: new WeakMap<Script, string>() });
  plans.set(f, plan);
  return plan;
}

/** The route's pairs that every request sends, encoded once (see encodeRequestStart's `fixed`). */
export function fixedParams(f: CompiledFastcgi): Buffer {
  return planOf(f).fixed;
}

/**
 * What the addon's request records (src/native/fcgi-request.h) take once per route: the fixed pairs, every extra
 * param's name (each replaces the standard pair or header of its name), and whether some param is rendered per
 * request (such a route stays JavaScript's). Not on the request path yet.
 */
export function nativeParamsPlan(f: CompiledFastcgi): { readonly fixed: Buffer; readonly overridden: readonly string[]; readonly perRequest: boolean } {
  const plan = planOf(f);
  return { fixed: plan.fixed, overridden: f.params.map((p) => p.name), perRequest: plan.perRequest.length > 0 };
}

/** The pairs `script` gives on route `f` (binary form), as requestParams writes them: made once per Script object. */
export function scriptParams(f: CompiledFastcgi, script: Script): string {
  return scriptPairs(planOf(f), script);
}

/**
 * This request's pairs as one binary string (wire/fastcgi.ts binaryPair): the standard ones, HTTP_* from the
 * headers, then the extra params that use request variables. Header values and the request target go as the
 * bytes the client sent (latin1, as the parser read them; as nginx passes them); decoded paths as UTF-8. Names
 * are unique: an extra param replaces a standard pair of its name, repeated headers are joined into one.
 */
export function requestParams(head: RequestHead, script: Script, f: CompiledFastcgi, ctx: ParamContext): string {
  const plan = planOf(f);
  const skip = plan.overridden;
  const v = ctx.vars;
  const query = head.query.length > 0 ? head.query.slice(1) : '';
  const remoteAddr = realClient(head, v, ctx.forwarding);
  const serverPort = String(v.serverPort);

  // headers first: CONTENT_TYPE comes from them; repeated fields are one list (RFC 9110 §5.3), Cookie's
  // separator "; " (RFC 6265 §5.4)
  let contentType = '';
  let names: string[] | null = null;
  let values: string[] | null = null;
  const hs = head.headers;
  for (let i = 0; i < hs.length; i += 2) {
    const k = headerKind(hs[i]);
    if (k.kind === 'content-type') {
      if (contentType === '') contentType = hs[i + 1];
      continue;
    }
    if (k.kind === 'skip' || (k.kind === 'forwarding' && !v.trustedPeer) || (skip !== null && skip.has(k.cgi))) continue;
    names ??= [];
    values ??= [];
    const at = names.indexOf(k.cgi);
    if (at < 0) {
      names.push(k.cgi);
      values.push(hs[i + 1]);
    } else values[at] = `${values[at]}${k.cookie ? '; ' : ', '}${hs[i + 1]}`;
  }
  let out = '';
  out += pairUnless(skip, 'QUERY_STRING', query);
  out += pairUnless(skip, 'REQUEST_METHOD', head.method);
  out += pairUnless(skip, 'CONTENT_TYPE', contentType);
  out += pairUnless(skip, 'CONTENT_LENGTH', head.bodyKind === 'length' ? String(head.contentLength) : '');
  out += scriptPairs(plan, script);
  out += pairUnless(skip, 'REQUEST_URI', head.target);
  out += pairUnless(skip, 'SERVER_PROTOCOL', `HTTP/1.${head.versionMinor}`);
  out += pairUnless(skip, 'REQUEST_SCHEME', v.scheme);
  out += pairUnless(skip, 'REMOTE_ADDR', remoteAddr);
  out += pairUnless(skip, 'REMOTE_PORT', ctx.remotePort);
  out += pairUnless(skip, 'SERVER_ADDR', ctx.serverAddr);
  out += pairUnless(skip, 'SERVER_PORT', serverPort);
  out += pairUnless(skip, 'SERVER_NAME', v.host);
  if (v.scheme === 'https') out += pairUnless(skip, 'HTTPS', 'on');
  if (names !== null && values !== null) for (let i = 0; i < names.length; i++) out += binaryPair(names[i], values[i]);
  if (plan.perRequest.length > 0) {
    const vals: Record<FastcgiVariable, string> = {
      remote_addr: remoteAddr,
      remote_port: ctx.remotePort,
      host: v.host,
      scheme: v.scheme,
      request_uri: head.target,
      request_method: head.method,
      server_port: serverPort,
      server_addr: ctx.serverAddr,
      document_root: binary(f.root),
      fastcgi_script_name: binary(script.scriptName),
      fastcgi_path_info: binary(script.pathInfo),
      uri: binary(script.uri),
      args: query,
      query_string: query,
    };
    for (const p of plan.perRequest) out += binaryPair(p.name, render(p.parts, vals));
  }
  return out;
}

/** The pair, unless an extra param of the route replaces it. */
function pairUnless(overridden: ReadonlySet<string> | null, name: string, value: string): string {
  return overridden !== null && overridden.has(name) ? '' : binaryPair(name, value);
}

/** The pairs of `script` (paths decoded, as UTF-8 bytes), made once per Script object and route. */
function scriptPairs(plan: ParamsPlan, script: Script): string {
  const hit = plan.scripts.get(script);
  if (hit !== undefined) return hit;
  const skip = plan.overridden;
  const pairs =
    pairUnless(skip, 'SCRIPT_FILENAME', binary(script.filename)) +
    pairUnless(skip, 'SCRIPT_NAME', binary(script.scriptName)) +
    pairUnless(skip, 'PATH_INFO', binary(script.pathInfo)) +
    pairUnless(skip, 'DOCUMENT_URI', binary(script.uri));
  plan.scripts.set(script, pairs);
  return pairs;
}

function render(parts: readonly TemplatePart[], values: Record<FastcgiVariable, string>): string {
  let s = '';
  for (const p of parts) s += 'text' in p ? p.text : values[p.variable];
  return s;
}
