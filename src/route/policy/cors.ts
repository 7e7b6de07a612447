// A route's CORS policy compiled once (config/cors.ts): which origins may read its answers, the headers every
// answer carries for them (errors Portico makes itself included, so a browser shows the real status), and the
// answer to a preflight, which Portico gives itself (the backend never sees it). Pure: no sockets, no clock.
import type { RequestHead } from '../../wire/http-head.js';
import type { RouteConfig } from '../../config/schema.js';

type CorsConfig = NonNullable<RouteConfig['cors']>;

/** A preflight answered by Portico: 204 with the grant, or 403 when the origin, method or headers are not allowed. */
export interface CorsPreflight {
  readonly kind: 'preflight';
  readonly status: 204 | 403;
  /** Header lines ("Name: value\r\n"...) of the answer. */
  readonly headers: string;
  readonly reason: string;
}

/** Request headers a page may send without asking (Fetch standard CORS-safelisted names). */
const SAFELISTED = new Set(['accept', 'accept-language', 'content-language', 'content-type', 'range']);

interface Suffix {
  /** "https://" */
  readonly scheme: string;
  /** ".example.com" */
  readonly suffix: string;
  /** ":8443" or "" */
  readonly port: string;
}

/** Finds one header's value (first occurrence), name given lower-case. */
function field(head: RequestHead, lower: string): string | undefined {
  const hs = head.headers;
  for (let i = 0; i < hs.length; i += 2) if (hs[i].length === lower.length && hs[i].toLowerCase() === lower) return hs[i + 1];
  return undefined;
}

export class CorsPolicy {
  readonly #exact: ReadonlySet<string>;
  readonly #suffixes: readonly Suffix[];
  readonly #any: boolean;
  readonly #credentials: boolean;
  readonly #methods: ReadonlySet<string>;
  readonly #methodList: string;
  readonly #headers: ReadonlySet<string> | undefined;
  readonly #headerList: string | undefined;
  /** "Access-Control-Expose-Headers: ...\r\n" or "". */
  readonly #expose: string;
  readonly #maxAge: string;

  constructor(c: CorsConfig) {
    const exact = new Set<string>();
    const suffixes: Suffix[] = [];
    for (const o of c.origins) {
      if (o === '*') continue;
      const star = o.indexOf('://*.');
      if (star === -1) {
        exact.add(o);
        continue;
      }
      const rest = o.slice(star + 4); // ".example.com[:port]"
      const colon = rest.indexOf(':');
      suffixes.push({ scheme: o.slice(0, star + 3), suffix: colon === -1 ? rest : rest.slice(0, colon), port: colon === -1 ? '' : rest.slice(colon) });
    }
    this.#exact = exact;
    this.#suffixes = suffixes;
    this.#any = c.origins.includes('*');
    this.#credentials = c.credentials;
    this.#methods = new Set(c.methods);
    this.#methodList = c.methods.join(', ');
    this.#headers = c.headers === undefined ? undefined : new Set(c.headers.map((h) => h.toLowerCase()));
    this.#headerList = c.headers?.join(', ');
    this.#expose = c.expose.length > 0 ? `Access-Control-Expose-Headers: ${c.expose.join(', ')}\r\n` : '';
    this.#maxAge = c.max_age > 0 ? `Access-Control-Max-Age: ${Math.max(1, Math.round(c.max_age / 1000))}\r\n` : '';
  }

  /** Whether `origin` (as the browser sent it) may read this route's answers. */
  allows(origin: string): boolean {
    if (this.#any) return true;
    const o = origin.toLowerCase();
    if (this.#exact.has(o)) return true;
    for (const s of this.#suffixes) {
      if (!o.startsWith(s.scheme)) continue;
      let host = o.slice(s.scheme.length);
      if (s.port !== '') {
        if (!host.endsWith(s.port)) continue;
        host = host.slice(0, -s.port.length);
      } else if (host.includes(':') && !host.endsWith(']')) continue;
      // "*.example.com" names subdomains only: "example.com" itself and "evilexample.com" do not match
      if (host.length > s.suffix.length && host.endsWith(s.suffix) && /^[a-z0-9.-]+$/.test(host)) return true;
    }
    return false;
  }

  /** "Access-Control-Allow-Origin" and friends for an allowed origin. */
  #grant(origin: string): string {
    const value = this.#any && !this.#credentials ? '*' : origin;
    return `Access-Control-Allow-Origin: ${value}\r\n${this.#credentials ? 'Access-Control-Allow-Credentials: true\r\n' : ''}`;
  }

  /** Caches must key answers by Origin unless every origin gets the same `*`. */
  get #vary(): string {
    return this.#any && !this.#credentials ? '' : 'Vary: Origin\r\n';
  }

  /**
   * Header lines for every answer of this route to `head` (forwarded, static, fixed, or an error Portico makes
   * itself): the grant when its Origin is allowed, and `Vary: Origin` in any case.
   */
  responseHeaders(head: RequestHead): string {
    const origin = field(head, 'origin');
    if (origin === undefined || !this.allows(origin)) return this.#vary;
    return this.#grant(origin) + this.#expose + this.#vary;
  }

  /** The answer to a preflight (OPTIONS with Origin and Access-Control-Request-Method), or null for any other request. */
  preflight(head: RequestHead): CorsPreflight | null {
    if (head.method !== 'OPTIONS') return null;
    const origin = field(head, 'origin');
    const method = field(head, 'access-control-request-method');
    if (origin === undefined || method === undefined) return null;
    const vary = 'Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers\r\n';
    if (!this.allows(origin)) return { kind: 'preflight', status: 403, headers: vary, reason: `origin ${origin} is not allowed` };
    if (!this.#methods.has(method)) return { kind: 'preflight', status: 403, headers: vary, reason: `method ${method} is not allowed` };
    const asked = (field(head, 'access-control-request-headers') ?? '')
      .split(',')
      .map((h) => h.trim())
      .filter((h) => h !== '');
    let allowHeaders = '';
    if (asked.length > 0) {
      if (this.#headers !== undefined) {
        const denied = asked.find((h) => !this.#headers!.has(h.toLowerCase()) && !SAFELISTED.has(h.toLowerCase()));
        if (denied !== undefined) return { kind: 'preflight', status: 403, headers: vary, reason: `request header ${denied} is not allowed` };
        allowHeaders = `Access-Control-Allow-Headers: ${this.#headerList}\r\n`;
      } else if (asked.every((h) => /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(h))) {
        allowHeaders = `Access-Control-Allow-Headers: ${asked.join(', ')}\r\n`;
      }
    }
    const headers = `${this.#grant(origin)}Access-Control-Allow-Methods: ${this.#methodList}\r\n${allowHeaders}${this.#maxAge}${vary}`;
    return { kind: 'preflight', status: 204, headers, reason: 'preflight' };
  }
}
