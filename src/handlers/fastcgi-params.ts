// The FastCGI params of one request: nginx's fastcgi_params set with nginx's meaning (CGI/1.1 meta-variables,
// RFC 3875 §4.1), SCRIPT_FILENAME and PATH_INFO from the resolved script, HTTP_* from the request headers
// (never HTTP_PROXY: httpoxy), the real client address, then the route's extra params. Pure: a flat
// name/value list for wire/fastcgi.ts encodeParams; no sockets, no file system.
import { isIP } from 'node:net';
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
 * HTTP_ + the name upper-cased with `-` as `_`; undefined for a name nginx would not pass (ignore_invalid_headers:
 * letters, digits and `-` only). An `_` is refused too: X_Foo and X-Foo would both be HTTP_X_FOO, so a client
 * could pass off one as the other (nginx underscores_in_headers off).
 */
function cgiName(name: string): string | undefined {
  if (!CGI_HEADER_NAME.test(name)) return undefined;
  return 'HTTP_' + name.toUpperCase().replace(/-/g, '_');
}

/** The params of one request as a flat list: name, value, ... (later entries of a name win in PHP; extras come last and are deduplicated). */
export function buildParams(head: RequestHead, script: Script, f: CompiledFastcgi, ctx: ParamContext): string[] {
  const v = ctx.vars;
  const query = head.query.length > 0 ? head.query.slice(1) : '';
  const remoteAddr = realClient(head, v, ctx.forwarding);
  const https = v.scheme === 'https';
  const values: Record<FastcgiVariable, string> = {
    remote_addr: remoteAddr,
    remote_port: ctx.remotePort,
    host: v.host,
    scheme: v.scheme,
    request_uri: head.target,
    request_method: head.method,
    server_port: String(v.serverPort),
    server_addr: ctx.serverAddr,
    document_root: f.root,
    fastcgi_script_name: script.scriptName,
    fastcgi_path_info: script.pathInfo,
    uri: script.uri,
    args: query,
    query_string: query,
  };
  const out = new Map<string, string>([
    ['GATEWAY_INTERFACE', 'CGI/1.1'],
    ['SERVER_SOFTWARE', 'portico'],
    ['QUERY_STRING', query],
    ['REQUEST_METHOD', head.method],
    ['CONTENT_TYPE', headerOf(head, 'content-type') ?? ''],
    ['CONTENT_LENGTH', head.bodyKind === 'length' ? String(head.contentLength) : ''],
    ['SCRIPT_FILENAME', script.filename],
    ['SCRIPT_NAME', script.scriptName],
    ['PATH_INFO', script.pathInfo],
    ['REQUEST_URI', head.target],
    ['DOCUMENT_URI', script.uri],
    ['DOCUMENT_ROOT', f.root],
    ['SERVER_PROTOCOL', `HTTP/1.${head.versionMinor}`],
    ['REQUEST_SCHEME', v.scheme],
    ['REMOTE_ADDR', remoteAddr],
    ['REMOTE_PORT', ctx.remotePort],
    ['SERVER_ADDR', ctx.serverAddr],
    ['SERVER_PORT', String(v.serverPort)],
    ['SERVER_NAME', v.host],
    // php-cgi built with force-cgi-redirect refuses to run without it (nginx fastcgi_params sets it too)
    ['REDIRECT_STATUS', '200'],
  ]);
  if (https) out.set('HTTPS', 'on');
  const hs = head.headers;
  for (let i = 0; i < hs.length; i += 2) {
    const lower = hs[i].toLowerCase();
    if (SKIPPED.has(lower) || (!v.trustedPeer && FORWARDING.has(lower))) continue;
    const name = cgiName(hs[i]);
    if (name === undefined) continue;
    const prev = out.get(name);
    // repeated fields are one list (RFC 9110 §5.3); Cookie's separator is "; " (RFC 6265 §5.4)
    out.set(name, prev === undefined ? hs[i + 1] : `${prev}${lower === 'cookie' ? '; ' : ', '}${hs[i + 1]}`);
  }
  for (const p of f.params) out.set(p.name, render(p.parts, values));
  const flat: string[] = [];
  for (const [name, value] of out) flat.push(name, value);
  return flat;
}

function render(parts: readonly TemplatePart[], values: Record<FastcgiVariable, string>): string {
  let s = '';
  for (const p of parts) s += 'text' in p ? p.text : values[p.variable];
  return s;
}

function headerOf(head: RequestHead, lowerName: string): string | undefined {
  const hs = head.headers;
  for (let i = 0; i < hs.length; i += 2) if (hs[i].length === lowerName.length && hs[i].toLowerCase() === lowerName) return hs[i + 1];
  return undefined;
}
