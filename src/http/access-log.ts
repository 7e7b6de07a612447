// The access-log lines: one per request (forwarded, answered by Portico itself, run by FastCGI, failed or refused)
// and one per tunnel at its end (HTTP upgrade, terminated WebSocket, L4), to stdout (`log.access`) and/or a file
// (`log.access_file`, reopened on SIGUSR1). A line is built by hand as one JSON string (pino's field names and
// level/time/pid/worker bindings, so both read alike) and handed to a LineWriter that writes it later, off the
// request's path: no object, no serializer, no syscall per request. It only shapes lines; the caller owns the
// counting, and builds an AccessLog only when a line is wanted.
import type { ClosedBy } from '../core/socket.js';
import type { ErrorCode, ProxyError } from '../core/errors.js';
import type { LineWriter } from '../core/line-writer.js';
import type { Exchange } from '../handlers/forward.js';
import type { ClientExchange } from '../handlers/client-exchange.js';
import type { RequestHead } from '../wire/http-head.js';
import { realClient } from '../route/forwarding.js';
import { SpliceTunnel } from '../tunnel/splice.js';
import type { Tunnel } from '../tunnel/relay.js';
import type { AccessLines, AccessValue } from '../core/log.js';
import type { SessionEnd } from '../terminate/session.js';

/** What a line says of the connection: its id, the address Portico sees (PROXY source included), trust. */
export interface AccessClient {
  readonly id: number;
  readonly remoteAddr: string;
}

/** Longest header value copied into a line (User-Agent, Referer): a client must not make lines unbounded. */
const MAX_FIELD = 512;

/** Characters a JSON string cannot hold as they are: '"', '\\', controls, and surrogates (a lone one is escaped). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * A string as a JSON string. Most values (paths, hosts, user agents) need no escape: quoting them by hand is
 * several times cheaper than JSON.stringify; the rest go through it (lone surrogates come out as `\udXXX`).
 */
function q(v: string): string {
  return NEEDS_ESCAPE.test(v) ? JSON.stringify(v) : `"${v}"`;
}

/** `"key":"value"` for a string that may need escaping, cut to MAX_FIELD; '' when absent. */
function str(key: string, v: string | undefined): string {
  if (v === undefined) return '';
  return `,"${key}":${q(v.length > MAX_FIELD ? v.slice(0, MAX_FIELD) : v)}`;
}

/** '.001' ... '.999' without trailing zeros ('' for 0): the decimals String() gives a multiple of 0.001. */
const MILLIS = Array.from({ length: 1000 }, (_, i) => (i === 0 ? '' : `.${String(i).padStart(3, '0')}`.replace(/0+$/, '')));

/**
 * Ms with µs precision, as a JSON number: the same text as String(Math.round(v * 1000) / 1000), made from
 * integers (a double's shortest decimal form is the costliest part of a line otherwise).
 */
function ms(v: number): string {
  const us = Math.round(v * 1000);
  if (!(us >= 0 && us <= Number.MAX_SAFE_INTEGER)) return String(Math.round(v * 1000) / 1000);
  const frac = us % 1000;
  return `${(us - frac) / 1000}${MILLIS[frac]}`;
}

/**
 * One field's last value and its `,"key":"…"` text: hosts, clients, user agents, methods and names repeat from
 * request to request, and comparing two strings costs less than scanning one for characters to escape.
 */
class Field {
  readonly #key: string;
  #raw: string | undefined = undefined;
  #text = '';

  constructor(key: string) {
    this.#key = key;
  }

  of(v: string | undefined): string {
    if (v === undefined) return '';
    if (v !== this.#raw) {
      this.#raw = v;
      this.#text = str(this.#key, v);
    }
    return this.#text;
  }
}

/** A header name equal to `lower` whatever its case: the usual spellings first, without making a string. */
function named(n: string, lower: string, usual: string): boolean {
  return n === usual || n === lower || n.toLowerCase() === lower;
}

/** The requests Portico answers itself, by `mode`: a static file, a redirect, a fixed `return`, a CORS preflight. */
export type AnswerMode = 'static' | 'redirect' | 'return' | 'preflight';

export class AccessLog implements AccessLines {
  readonly #stdout: LineWriter | undefined;
  readonly #file: LineWriter | undefined;
  readonly #trusts: (address: string) => boolean;
  /** `,"pid":N,"worker":W`: the bindings every line carries, as createLogger's lines do. */
  readonly #bindings: string;
  #lastMs = 0;
  /** The line's start up to `"conn":`, for #lastMs. */
  #prefix = '';
  readonly #method = new Field('method');
  readonly #host = new Field('host');
  readonly #client = new Field('client');
  readonly #peer = new Field('peer');
  readonly #ua = new Field('ua');
  readonly #referer = new Field('referer');
  readonly #route = new Field('route');
  readonly #pool = new Field('pool');
  readonly #upstream = new Field('upstream');

  constructor(opts: { stdout: LineWriter | undefined; file: LineWriter | undefined; worker: number; trusts: (address: string) => boolean }) {
    this.#stdout = opts.stdout;
    this.#file = opts.file;
    this.#trusts = opts.trusts;
    this.#bindings = `,"pid":${process.pid},"worker":${opts.worker}`;
  }

  /** `{"level":"info","time":"…","pid":…,"worker":…,"conn":N`; the part before N is made once per millisecond. */
  #open(conn: number): string {
    const now = Date.now();
    if (now !== this.#lastMs) {
      this.#lastMs = now;
      this.#prefix = `{"level":"info","time":"${new Date(now).toISOString()}"${this.#bindings},"conn":`;
    }
    return this.#prefix + conn;
  }

  #emit(line: string): void {
    this.#stdout?.write(line);
    this.#file?.write(line);
  }

  /**
   * The request's own fields: method, target, HTTP version, Host, the client (the real one behind trusted
   * proxies; `peer` when that differs), User-Agent and Referer. One pass over the headers.
   */
  #requestFields(c: AccessClient, head: RequestHead): string {
    let ua: string | undefined;
    let referer: string | undefined;
    let xff: string | undefined;
    const hs = head.headers;
    for (let i = 0; i < hs.length; i += 2) {
      const n = hs[i];
      // lengths first: most names are rejected without comparing them
      if (n.length === 10) {
        if (named(n, 'user-agent', 'User-Agent')) ua ??= hs[i + 1];
      } else if (n.length === 7) {
        if (named(n, 'referer', 'Referer')) referer ??= hs[i + 1];
      } else if (n.length === 15 && named(n, 'x-forwarded-for', 'X-Forwarded-For')) {
        xff = xff === undefined ? hs[i + 1] : `${xff}, ${hs[i + 1]}`;
      }
    }
    const client = realClient(c.remoteAddr, xff, this.#trusts);
    let out = `${this.#method.of(head.method)}${str('path', head.target)},"proto":"HTTP/1.${head.versionMinor}"${this.#host.of(head.hostRaw)}${this.#client.of(client)}`;
    if (client !== c.remoteAddr) out += this.#peer.of(c.remoteAddr);
    return out + this.#ua.of(ua) + this.#referer.of(referer);
  }

  /** The upstream side of an exchange: pool, target (the last one tried, also on 502/504), timings. */
  #upstreamFields(ex: Exchange): string {
    const target = ex.target ?? ex.lastTarget;
    let out = `${this.#route.of(ex.route.name)}${this.#pool.of(ex.pool.name)}${target === null ? '' : this.#upstream.of(target.id)}`;
    if (ex.connectMs >= 0) out += `,"connectMs":${ms(ex.connectMs)}${ex.reusedSocket ? ',"reused":true' : ''}`;
    if (ex.firstByteMs >= 0) out += `,"firstByteMs":${ms(ex.firstByteMs)}`;
    return out;
  }

  /** A forwarded request that ended: answered (`err` undefined), failed, or dropped by the client (499). */
  request(c: AccessClient, ex: Exchange, requestId: string | undefined, status: number, err: ProxyError | undefined): void {
    let line = `${this.#open(c.id)},"mode":"http"${this.#upstreamFields(ex)}${this.#requestFields(c, ex.head)}${str('reqId', requestId)}`;
    line += `,"status":${status},"bytesIn":${ex.bytesIn},"bytesOut":${ex.bytesOut},"durationMs":${ms(performance.now() - ex.startedHr)}`;
    line += AccessLog.#err(err);
    this.#emit(`${line},"msg":"request"}\n`);
  }

  /** A request answered with a canned response before any exchange (bad head, no route...). */
  rejected(c: AccessClient, head: RequestHead | undefined, requestId: string | undefined, status: number, code: ErrorCode, reason: string): void {
    let line = `${this.#open(c.id)},"mode":"http"`;
    line += head === undefined ? this.#client.of(c.remoteAddr) : this.#requestFields(c, head);
    line += `${str('reqId', requestId)},"status":${status}${AccessLog.#errOf(code, reason)}`;
    this.#emit(`${line},"msg":"request"}\n`);
  }

  /**
   * What a tunnel's line will say of its opening (route, upstream, request, request id), made when it opens: the
   * tunnel keeps this string instead of its exchange and request head, which an idle tunnel would hold for hours.
   */
  tunnelFields(c: AccessClient, ex: Exchange, requestId: string | undefined): string {
    return `${this.#upstreamFields(ex)}${this.#requestFields(c, ex.head)}${str('reqId', requestId)}`;
  }

  /** A tunnel that ended; `fields` is what tunnelFields said when it opened. */
  tunnel(c: AccessClient, fields: string, t: Tunnel | SpliceTunnel): void {
    let line = `${this.#open(c.id)},"mode":"tunnel"${fields}`;
    line += `,"status":101,"bytesIn":${t.bytesUp},"bytesOut":${t.bytesDown},"durationMs":${Date.now() - t.startedAt}`;
    line += `,"closedBy":"${t.closedBy ?? ('unknown' satisfies ClosedBy | 'unknown')}","spliced":${t instanceof SpliceTunnel && t.spliced}`;
    this.#emit(`${line},"msg":"tunnel"}\n`);
  }

  /** `,"err":{…}` of a failed request; '' when it did not fail. Codes are literals, messages may carry input. */
  static #err(err: ProxyError | undefined): string {
    return err === undefined ? '' : AccessLog.#errOf(err.code, err.message);
  }

  static #errOf(code: ErrorCode, message: string): string {
    return `,"err":{"code":"${code}"${str('message', message)}}`;
  }

  /** A request Portico answered itself (`mode` says how): once its answer was written whole, failed, or the client left. */
  answer(c: AccessClient, mode: AnswerMode, route: string | undefined, head: RequestHead, requestId: string | undefined, status: number, bytesOut: number, startedAt: number, err?: ProxyError): void {
    let line = `${this.#open(c.id)},"mode":"${mode}"${this.#route.of(route)}${this.#requestFields(c, head)}${str('reqId', requestId)}`;
    line += `,"status":${status},"bytesOut":${bytesOut},"durationMs":${Date.now() - startedAt}${AccessLog.#err(err)}`;
    this.#emit(`${line},"msg":"request"}\n`);
  }

  /** A request run by another handler than forward (FastCGI): the fields of a forwarded request's line it has (the target tried last, also on 502/504). */
  exchange(c: AccessClient, ex: ClientExchange, requestId: string | undefined, status: number, err: ProxyError | undefined): void {
    const target = ex.target ?? ex.lastTarget;
    let line = `${this.#open(c.id)},"mode":"${ex.mode}"${this.#route.of(ex.route.name)}${target === null ? '' : this.#upstream.of(target.id)}`;
    line += `${this.#requestFields(c, ex.head)}${str('reqId', requestId)}`;
    line += `,"status":${status},"bytesIn":${ex.bytesIn},"bytesOut":${ex.bytesOut},"durationMs":${Date.now() - ex.startedAt}${AccessLog.#err(err)}`;
    this.#emit(`${line},"msg":"request"}\n`);
  }

  /** A terminated WebSocket (terminate/) that ended: who closed it, with which code and reason, what it relayed. */
  terminated(c: AccessClient, ex: Exchange, end: SessionEnd): void {
    this.line(
      c.id,
      'info',
      {
        mode: 'terminate',
        handoff: end.handoff,
        hop: end.hop,
        route: ex.route.name,
        upstream: ex.target?.id,
        path: ex.head.target,
        remoteAddr: c.remoteAddr,
        status: 101,
        closedBy: end.closedBy,
        code: end.code,
        reason: end.reason === '' ? undefined : end.reason,
        messagesIn: end.messagesIn,
        messagesOut: end.messagesOut,
        bytesIn: end.bytesIn,
        bytesOut: end.bytesOut,
        pingsMissed: end.pingsMissed || undefined,
        drops: end.drops || undefined,
        durationMs: end.durationMs,
      },
      'websocket',
    );
  }

  /**
   * A line of named fields (an L4 tunnel, a refused TLS name, a terminated WebSocket): once per tunnel, not per
   * request, so an object is fine here; its strings get the same escaping and cut as a request line's.
   */
  line(conn: number | undefined, level: 'info' | 'warn', fields: Readonly<Record<string, AccessValue>>, msg: string): void {
    let line = level === 'info' && conn !== undefined ? this.#open(conn) : `{"level":"${level}","time":"${new Date().toISOString()}"${this.#bindings}${conn === undefined ? '' : `,"conn":${conn}`}`;
    for (const key in fields) {
      const v = fields[key];
      if (v === undefined) continue;
      if (typeof v === 'string') line += str(key, v);
      else if (typeof v === 'number') line += `,"${key}":${Number.isFinite(v) ? String(v) : 'null'}`;
      else if (typeof v === 'boolean') line += `,"${key}":${v}`;
      else line += `,"${key}":{"code":${q(v.code)}${str('message', v.message)}}`;
    }
    this.#emit(`${line}${str('msg', msg)}}\n`);
  }
}
