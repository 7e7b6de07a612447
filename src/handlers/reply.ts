// The head of a response Portico makes itself (a redirect, a fixed answer, a CORS preflight, a static file):
// status line, the caller's fields, Date (RFC 9110 §6.6.1: an origin with a clock sends one), Server, framing
// and Connection. Pure string building; the caller writes it.
import { STATUS_CODES } from 'node:http';
import type { ProxyError } from '../core/errors.js';
import type { ByteSocket } from '../core/socket.js';
import type { CompiledRoute } from '../route/router.js';
import type { RequestHead } from '../wire/http-head.js';

let dateSecond = -1;
let dateValue = '';

/** The IMF-fixdate of now, rebuilt at most once a second. */
export function httpDate(now = Date.now()): string {
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateValue = new Date(s * 1000).toUTCString();
  }
  return dateValue;
}

/** How the body of a local answer is framed. */
export type Framing = { readonly length: number } | 'chunked' | 'close' | 'none';

/**
 * `fields`: header lines ("Name: value\r\n"...) of the answer; `framing`: a Content-Length (also for HEAD, the
 * length a GET would get), chunked, close-delimited (HTTP/1.0 without length), or none (204, 304).
 */
export function replyHead(status: number, fields: string, framing: Framing, connection: 'close' | 'keep-alive' | ''): string {
  let out = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\nDate: ${httpDate()}\r\nServer: portico\r\n${fields}`;
  if (typeof framing === 'object') out += `Content-Length: ${framing.length}\r\n`;
  else if (framing === 'chunked') out += 'Transfer-Encoding: chunked\r\n';
  if (connection !== '') out += `Connection: ${connection}\r\n`;
  return out + '\r\n';
}

/**
 * A handler that writes an answer of its own over time (a static file): what the connection holds while it runs,
 * as it holds an Exchange for a forwarded request. It reports its end once through its ReplyOwner.
 */
export interface ReplyJob {
  readonly route: CompiledRoute;
  readonly head: RequestHead;
  readonly status: number;
  /** Bytes written to the client, head included. */
  readonly bytesOut: number;
  readonly startedAt: number;
  /** Some of the answer reached the client: a canned error is no longer possible. */
  readonly responseStarted: boolean;
  /** The client socket drained: write more. */
  clientDrained(): void;
  /** The client is gone or the connection is torn down: release what the job holds (files), report nothing. */
  abort(): void;
  /** Timeouts, from the connection's sweep. */
  checkDeadline(now: number): void;
}

/** What a ReplyJob needs from the connection that owns the client socket. */
export interface ReplyOwner {
  readonly socket: ByteSocket;
  /** The connection closes after this answer (draining, the client asked, or its body was not read). */
  readonly closing: boolean;
  /** The answer was written whole. */
  replyDone(job: ReplyJob): void;
  /** The answer failed; a canned response is written when nothing reached the client yet. */
  replyFailed(job: ReplyJob, err: ProxyError): void;
}
