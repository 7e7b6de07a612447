// Answers Portico gives from config alone, without a backend: a route's `redirect` and `return`, a plain
// listener's `https_redirect`, and a CORS preflight. Each is a status, header lines and a small body, built from
// the decision and the request; the connection frames and writes it (handlers/reply.ts). Pure.
import type { CorsPreflight } from '../route/policy/cors.js';
import type { RedirectDecision, RequestVars, ReturnDecision } from '../route/router.js';
import type { RequestHead } from '../wire/http-head.js';

/** A complete answer but for framing and Connection. `body` is not sent to HEAD requests (its length is). */
export interface FixedAnswer {
  readonly status: number;
  readonly fields: string;
  readonly body: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** A Location value may hold only visible ASCII: anything else (a UTF-8 Host, say) is percent-encoded. */
function safeLocation(v: string): string {
  // eslint-disable-next-line no-control-regex
  return /^[\x21-\x7e]*$/.test(v) ? v : v.replace(/[^\x21-\x7e]/gu, (c) => encodeURIComponent(c));
}

function redirectBody(status: number, location: string): Buffer {
  return Buffer.from(`${status} redirect to ${location}\n`, 'utf8');
}

export function redirectAnswer(d: RedirectDecision, head: RequestHead, vars: RequestVars): FixedAnswer {
  const captures = d.captures === undefined ? null : d.captures.exec(head.path);
  const location = safeLocation(d.render(vars, captures));
  return { status: d.status, fields: `Location: ${location}\r\nContent-Type: text/plain; charset=utf-8\r\n`, body: redirectBody(d.status, location) };
}

export function returnAnswer(d: ReturnDecision): FixedAnswer {
  const noBody = d.status === 204 || d.status === 304;
  return { status: d.status, fields: noBody ? '' : `Content-Type: ${d.contentType}\r\n`, body: noBody ? EMPTY : d.body };
}

/**
 * A plain listener's https_redirect: same host and request target on https, `port` omitted when 443. 301 for
 * GET and HEAD (what browsers and nginx use), 308 for the rest so that the method and body are kept.
 */
export function httpsRedirectAnswer(head: RequestHead, host: string, port: number): FixedAnswer {
  const status = head.method === 'GET' || head.method === 'HEAD' ? 301 : 308;
  const authority = port === 443 ? host : `${host}:${port}`;
  // the raw target for origin-form; an absolute-form target's path and query
  const target = head.target.startsWith('/') ? head.target : `${head.path}${head.query}`;
  const location = safeLocation(`https://${authority}${target}`);
  return { status, fields: `Location: ${location}\r\nContent-Type: text/plain; charset=utf-8\r\n`, body: redirectBody(status, location) };
}

export function preflightAnswer(p: CorsPreflight): FixedAnswer {
  if (p.status === 204) return { status: 204, fields: p.headers, body: EMPTY };
  return { status: 403, fields: `${p.headers}Content-Type: text/plain; charset=utf-8\r\n`, body: Buffer.from(`403 CORS preflight refused: ${p.reason}\n`, 'utf8') };
}
