// The access-log lines: one per request (forwarded, answered by Portico itself, run by FastCGI, failed or refused)
// and one per tunnel at its end (HTTP upgrade, terminated WebSocket, L4), to stdout (`log.access`) and/or a file
// (`log.access_file`, reopened on SIGUSR1). A request's line is written by hand straight into bytes (core/json-line.ts;
// pino's field names and level/time/pid/worker bindings, so both read alike), a tunnel's as one string, and handed to
// a LineWriter that writes it later, off the request's path: no object, no serializer, no syscall per request. A
// forwarded request's values are only noted when it ends; its line is written with the others noted since, when
// the writer's chunk is about to leave (LineWriter.defer), straight into that chunk: one tight loop over a few
// hundred lines instead of the line builder woken cold between two requests. It only shapes lines; the caller owns
// the counting, and builds an AccessLog only when a line is wanted.
import type { ClosedBy } from '../core/socket.js';
import type { ErrorCode, ProxyError } from '../core/errors.js';
import type { LineWriter } from '../core/line-writer.js';
import { JsonLine, ascii } from '../core/json-line.js';
import type { Exchange } from '../handlers/forward.js';
import type { ClientExchange } from '../handlers/client-exchange.js';
import type { RequestHead } from '../wire/http-head.js';
import { realClient } from '../route/forwarding.js';
import { SpliceTunnel } from '../tunnel/splice.js';
import type { Tunnel } from '../tunnel/relay.js';
import type { AccessLines, AccessValue } from '../core/log.js';
import type { SessionEnd } from '../terminate/session.js';

/**
 * What a terminated WebSocket's line names of the exchange that opened it (an Exchange has it): a connection keeps
 * only this while the WebSocket lives, not the exchange and its heads.
 */
export interface TerminatedAt {
  readonly route: { readonly name: string };
  readonly target: { readonly id: string } | null;
  readonly head: { readonly target: string };
}

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

/** A header name equal to `lower` whatever its case: the usual spellings first, without making a string. */
function named(n: string, lower: string, usual: string): boolean {
  return n === usual || n === lower || n.toLowerCase() === lower;
}

/** The requests Portico answers itself, by `mode`: a static file, a redirect, a fixed `return`, a CORS preflight. */
export type AnswerMode = 'static' | 'redirect' | 'return' | 'preflight';

type Key = string | undefined;

/** Forwarded requests noted and not yet written at most: then they are written at once (bounded memory). */
const HELD = 256;

/**
 * What a forwarded request's line says, noted when it ended (its times taken then); the line is written later.
 * Reused from line to line; it holds the request head (not the exchange) until then.
 */
class Noted {
  conn = 0;
  remoteAddr = '';
  timeMs = 0;
  durationMs = 0;
  route = '';
  pool = '';
  upstream: string | undefined = undefined;
  connectMs = -1;
  reused = false;
  firstByteMs = -1;
  head: RequestHead | null = null;
  requestId: string | undefined = undefined;
  status = 0;
  bytesIn = 0;
  bytesOut = 0;
  errCode: ErrorCode | undefined = undefined;
  errMessage = '';

  /** The exchange's upstream side: route, pool, target (the last one tried, also on 502/504), timings. */
  noteUpstream(ex: Exchange): void {
    const target = ex.target ?? ex.lastTarget;
    this.route = ex.route.name;
    this.pool = ex.pool.name;
    this.upstream = target === null ? undefined : target.id;
    this.connectMs = ex.connectMs;
    this.reused = ex.reusedSocket;
    this.firstByteMs = ex.firstByteMs;
  }
}

/**
 * A run of fields as bytes and the values it was made from (up to five strings): the route, pool and target of a
 * request, or its method, or its Host, client, User-Agent and Referer repeat from request to request, and comparing
 * a few strings costs less than writing them again (and scanning them for characters to escape). A run ends with
 * the key of the value that follows it (`,"path":`...) when that is known: fewer pieces to copy. What else shapes
 * the run (HTTP version, timings present) picks one of several Segments, so that keys compare as strings only.
 */
class Segment {
  #a: Key = undefined;
  #b: Key = undefined;
  #c: Key = undefined;
  #d: Key = undefined;
  #e: Key = undefined;
  #bytes: Buffer | null = null;

  /** Copies the bytes made from these values into `out`; false (nothing written) when they were made from others. */
  copy(out: JsonLine, a: Key, b: Key, c: Key, d: Key, e: Key): boolean {
    const bytes = this.#bytes;
    if (bytes === null || a !== this.#a || b !== this.#b || c !== this.#c || d !== this.#d || e !== this.#e) return false;
    out.raw(bytes);
    return true;
  }

  /** Keeps what `out` holds from `start` as the bytes of these values. */
  keep(out: JsonLine, start: number, a: Key, b: Key, c: Key, d: Key, e: Key): void {
    this.#a = a;
    this.#b = b;
    this.#c = c;
    this.#d = d;
    this.#e = e;
    this.#bytes = out.copyFrom(start);
  }
}

/** Segments by a few cases: what a run holds besides its string values. */
function segments(n: number): Segment[] {
  return Array.from({ length: n }, () => new Segment());
}

/** The constant pieces of a line, as bytes. */
const K = {
  conn: ascii(',"conn":'),
  modeHttp: ascii(',"mode":"http"'),
  mode: ascii(',"mode":'),
  route: ascii(',"route":'),
  pool: ascii(',"pool":'),
  upstream: ascii(',"upstream":'),
  connectMs: ascii(',"connectMs":'),
  reused: ascii(',"reused":true'),
  reusedFirstByteMs: ascii(',"reused":true,"firstByteMs":'),
  firstByteMs: ascii(',"firstByteMs":'),
  method: ascii(',"method":'),
  path: ascii(',"path":'),
  proto: ascii(',"proto":"HTTP/1.'),
  host: ascii(',"host":'),
  client: ascii(',"client":'),
  peer: ascii(',"peer":'),
  ua: ascii(',"ua":'),
  referer: ascii(',"referer":'),
  reqId: ascii(',"reqId":'),
  status: ascii(',"status":'),
  bytesIn: ascii(',"bytesIn":'),
  bytesOut: ascii(',"bytesOut":'),
  durationMs: ascii(',"durationMs":'),
  errCode: ascii(',"err":{"code":'),
  message: ascii(',"message":'),
  request: ascii(',"msg":"request"}\n'),
};

export class AccessLog implements AccessLines {
  readonly #stdout: LineWriter | undefined;
  readonly #file: LineWriter | undefined;
  readonly #trusts: (address: string) => boolean;
  /** `,"pid":N,"worker":W`: the bindings every line carries, as createLogger's lines do. */
  readonly #bindings: string;
  #lastMs = 0;
  /** The line's start up to `"conn":`, for #lastMs, as text and as bytes. */
  #prefix = '';
  #prefixBytes: Buffer = Buffer.alloc(0);
  /** `,"status":N,"bytesIn":` (and `,"status":N,"bytesOut":` for lines without bytesIn) by status, made once each. */
  readonly #statusIn: (Buffer | undefined)[] = [];
  readonly #statusOut: (Buffer | undefined)[] = [];
  /** The line being written; a request's line is built here and copied to each writer. */
  readonly #out = new JsonLine();
  /** By (timings: connectMs present) * 2 + (mode field first). */
  readonly #forwarded = segments(4);
  readonly #exchanged = new Segment();
  readonly #answered = new Segment();
  readonly #method = new Segment();
  /** By (HTTP/1.1) * 2 + (request id present); HTTP/1.x for x other than 0 and 1 is not kept. */
  readonly #request = segments(4);
  /** Forwarded requests noted, #held of them not yet written (request()). */
  readonly #noted: Noted[] = [];
  /** A tunnel's upstream side, noted for #upstreamFields (its line is written at once). */
  readonly #tunnelNoted = new Noted();
  #held = 0;
  /** The writer whose chunk a line is written into (the file's when both), and the other one. */
  readonly #first: LineWriter | undefined;
  readonly #second: LineWriter | undefined;

  constructor(opts: { stdout: LineWriter | undefined; file: LineWriter | undefined; worker: number; trusts: (address: string) => boolean }) {
    this.#stdout = opts.stdout;
    this.#file = opts.file;
    this.#trusts = opts.trusts;
    this.#bindings = `,"pid":${process.pid},"worker":${opts.worker}`;
    this.#first = opts.file ?? opts.stdout;
    this.#second = opts.file === undefined ? undefined : opts.stdout;
  }

  /** `{"level":"info","time":"…","pid":…,"worker":…,"conn":`, made once per millisecond (`now`: Date.now()). */
  #now(now = Date.now()): void {
    if (now !== this.#lastMs) {
      this.#lastMs = now;
      this.#prefix = `{"level":"info","time":"${new Date(now).toISOString()}"${this.#bindings},"conn":`;
      this.#prefixBytes = ascii(this.#prefix);
    }
  }

  /** The opening of a line of text (tunnels, named fields): `{"level":"info",…,"conn":N`. */
  #open(conn: number): string {
    this.#now();
    return this.#prefix + conn;
  }

  /**
   * A new line in #out, opened as #open's (at `now`, a Date.now()), written straight into the first writer's
   * chunk when it has room; the lines noted before it are written first (their order kept).
   */
  #begin(conn: number, now?: number): JsonLine {
    if (this.#held > 0) this.#writeNoted();
    this.#now(now);
    const out = this.#out;
    const chunk = this.#first?.claim() ?? null;
    if (chunk === null) out.reset();
    else out.into(chunk, (this.#first as LineWriter).claimedAt);
    out.raw(this.#prefixBytes);
    out.int(conn);
    return out;
  }

  #emit(line: string): void {
    if (this.#held > 0) this.#writeNoted(); // the writers would pull them too; the lines noted first go first
    this.#stdout?.write(line);
    this.#file?.write(line);
  }

  /** #out's line, ended, to each writer: taken where it was written, or copied. */
  #emitOut(out: JsonLine): void {
    const first = this.#first as LineWriter;
    const second = this.#second;
    if (out.inPlace) {
      // taken first: giving it to the other writer may make that one pull someone's lines into this chunk
      const line = second === undefined ? undefined : out.line();
      first.commit(out.length);
      if (line !== undefined) second?.writeBytes(line);
    } else {
      const line = out.line();
      first.writeBytes(line);
      second?.writeBytes(line);
    }
  }

  /** Writes the forwarded requests' lines noted and not yet written (the writers call it: defer()). */
  readonly #writeNoted = (): void => {
    const n = this.#held;
    if (n === 0) return;
    this.#held = 0;
    this.#first?.undefer(this.#writeNoted);
    this.#second?.undefer(this.#writeNoted);
    const noted = this.#noted;
    for (let i = 0; i < n; i++) {
      const r = noted[i];
      this.#requestLine(r);
      r.head = null;
      r.requestId = undefined;
      r.errCode = undefined;
      r.errMessage = '';
    }
  };

  /** Writes the lines noted so far now (a test that reads them at once; the writers pull them by themselves). */
  flush(): void {
    this.#writeNoted();
  }

  /** `,"key":"value"` for a string that may need escaping, cut to MAX_FIELD; nothing when absent. */
  static #field(out: JsonLine, key: Buffer, v: string | undefined): void {
    if (v === undefined) return;
    out.raw(key);
    out.string(v, MAX_FIELD);
  }

  /**
   * The request's own fields: method, target, HTTP version, Host, the client (the real one behind trusted
   * proxies; `peer` when that differs), User-Agent and Referer, and the request id. One pass over the headers.
   */
  #requestFields(out: JsonLine, remoteAddr: string, head: RequestHead, requestId: string | undefined): void {
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
    const client = realClient(remoteAddr, xff, this.#trusts);
    const peer = client === remoteAddr ? undefined : remoteAddr;
    const method = head.method;
    if (!this.#method.copy(out, method, undefined, undefined, undefined, undefined)) {
      const start = out.length;
      AccessLog.#field(out, K.method, method);
      out.raw(K.path);
      this.#method.keep(out, start, method, undefined, undefined, undefined, undefined);
    }
    out.string(head.target, MAX_FIELD);
    const v = head.versionMinor;
    const host = head.hostRaw;
    const withId = requestId !== undefined;
    const seg = v === 0 || v === 1 ? this.#request[v * 2 + (withId ? 1 : 0)] : undefined;
    if (seg === undefined || !seg.copy(out, host, client, peer, ua, referer)) {
      const start = out.length;
      out.raw(K.proto);
      out.int(v);
      out.byte(34);
      AccessLog.#field(out, K.host, host);
      AccessLog.#field(out, K.client, client);
      AccessLog.#field(out, K.peer, peer);
      AccessLog.#field(out, K.ua, ua);
      AccessLog.#field(out, K.referer, referer);
      if (withId) out.raw(K.reqId);
      seg?.keep(out, start, host, client, peer, ua, referer);
    }
    if (withId) out.string(requestId, MAX_FIELD);
  }

  /**
   * The upstream side of an exchange: route, pool, target (the last one tried, also on 502/504), timings;
   * `,"mode":"http"` first when `mode`.
   */
  #upstreamFields(out: JsonLine, r: Noted, mode: boolean): void {
    const { route, pool, upstream: id, connectMs, firstByteMs } = r;
    const connected = connectMs >= 0;
    const seg = this.#forwarded[(connected ? 2 : 0) + (mode ? 1 : 0)];
    if (!seg.copy(out, route, pool, id, undefined, undefined)) {
      const start = out.length;
      if (mode) out.raw(K.modeHttp);
      AccessLog.#field(out, K.route, route);
      AccessLog.#field(out, K.pool, pool);
      AccessLog.#field(out, K.upstream, id);
      if (connected) out.raw(K.connectMs);
      seg.keep(out, start, route, pool, id, undefined, undefined);
    }
    const firstByte = firstByteMs >= 0;
    if (connected) {
      out.ms(connectMs);
      if (r.reused) out.raw(firstByte ? K.reusedFirstByteMs : K.reused);
      else if (firstByte) out.raw(K.firstByteMs);
    } else if (firstByte) {
      out.raw(K.firstByteMs);
    }
    if (firstByte) out.ms(firstByteMs);
  }

  /** `,"status":N,"bytesIn":N,"bytesOut":N,"durationMs":` (the duration is the caller's); bytesIn only when counted. */
  #counts(out: JsonLine, status: number, bytesIn: number | undefined, bytesOut: number): void {
    const made = bytesIn === undefined ? this.#statusOut : this.#statusIn;
    // the usual statuses: one piece made once; anything else (not a status code) written as it comes
    const usual = status >= 100 && status <= 999 && Math.floor(status) === status;
    let piece = usual ? made[status] : undefined;
    if (piece === undefined) {
      const start = out.length;
      out.raw(K.status);
      out.int(status);
      out.raw(bytesIn === undefined ? K.bytesOut : K.bytesIn);
      if (usual) made[status] = out.copyFrom(start);
    } else {
      out.raw(piece);
    }
    if (bytesIn !== undefined) {
      out.int(bytesIn);
      out.raw(K.bytesOut);
    }
    out.int(bytesOut);
    out.raw(K.durationMs);
  }

  /** `,"err":{"code":"…","message":"…"}` of a failed request. Codes are literals, messages may carry input. */
  static #errOut(out: JsonLine, code: ErrorCode, message: string): void {
    out.raw(K.errCode);
    out.string(code, MAX_FIELD);
    AccessLog.#field(out, K.message, message);
    out.byte(125);
  }

  /**
   * A forwarded request that ended: answered (`err` undefined), failed, or dropped by the client (499). Its values
   * and times are noted now, its line written with the next ones (#writeNoted) when a writer pulls them.
   */
  request(c: AccessClient, ex: Exchange, requestId: string | undefined, status: number, err: ProxyError | undefined): void {
    if (this.#held === HELD) this.#writeNoted();
    const noted = this.#noted;
    let r = noted[this.#held];
    if (r === undefined) {
      r = new Noted();
      noted.push(r);
    }
    r.durationMs = performance.now() - ex.startedHr;
    r.timeMs = Date.now();
    r.conn = c.id;
    r.remoteAddr = c.remoteAddr;
    r.noteUpstream(ex);
    r.head = ex.head;
    r.requestId = requestId;
    r.status = status;
    r.bytesIn = ex.bytesIn;
    r.bytesOut = ex.bytesOut;
    if (err !== undefined) {
      r.errCode = err.code;
      r.errMessage = err.message;
    }
    if (this.#held++ === 0) {
      this.#first?.defer(this.#writeNoted);
      this.#second?.defer(this.#writeNoted);
    }
  }

  /** A noted request's line, written. */
  #requestLine(r: Noted): void {
    const out = this.#begin(r.conn, r.timeMs);
    this.#upstreamFields(out, r, true);
    this.#requestFields(out, r.remoteAddr, r.head as RequestHead, r.requestId);
    this.#counts(out, r.status, r.bytesIn, r.bytesOut);
    out.ms(r.durationMs);
    if (r.errCode !== undefined) AccessLog.#errOut(out, r.errCode, r.errMessage);
    out.raw(K.request);
    this.#emitOut(out);
  }

  /** A request answered with a canned response before any exchange (bad head, no route...). */
  rejected(c: AccessClient, head: RequestHead | undefined, requestId: string | undefined, status: number, code: ErrorCode, reason: string): void {
    const out = this.#begin(c.id);
    out.raw(K.modeHttp);
    if (head === undefined) {
      AccessLog.#field(out, K.client, c.remoteAddr);
      AccessLog.#field(out, K.reqId, requestId);
    } else {
      this.#requestFields(out, c.remoteAddr, head, requestId);
    }
    out.raw(K.status);
    out.int(status);
    AccessLog.#errOut(out, code, reason);
    out.raw(K.request);
    this.#emitOut(out);
  }

  /**
   * What a tunnel's line will say of its opening (route, upstream, request, request id), made when it opens: the
   * tunnel keeps this string instead of its exchange and request head, which an idle tunnel would hold for hours.
   */
  tunnelFields(c: AccessClient, ex: Exchange, requestId: string | undefined): string {
    const out = this.#out;
    out.reset();
    const r = this.#tunnelNoted;
    r.noteUpstream(ex);
    this.#upstreamFields(out, r, false);
    this.#requestFields(out, c.remoteAddr, ex.head, requestId);
    return out.text();
  }

  /** A tunnel that ended; `fields` is what tunnelFields said when it opened. */
  tunnel(c: AccessClient, fields: string, t: Tunnel | SpliceTunnel): void {
    let line = `${this.#open(c.id)},"mode":"tunnel"${fields}`;
    line += `,"status":101,"bytesIn":${t.bytesUp},"bytesOut":${t.bytesDown},"durationMs":${Date.now() - t.startedAt}`;
    line += `,"closedBy":"${t.closedBy ?? ('unknown' satisfies ClosedBy | 'unknown')}","spliced":${t instanceof SpliceTunnel && t.spliced}`;
    this.#emit(`${line},"msg":"tunnel"}\n`);
  }

  /** A request Portico answered itself (`mode` says how): once its answer was written whole, failed, or the client left. */
  answer(c: AccessClient, mode: AnswerMode, route: string | undefined, head: RequestHead, requestId: string | undefined, status: number, bytesOut: number, startedAt: number, err?: ProxyError): void {
    const out = this.#begin(c.id);
    if (!this.#answered.copy(out, mode, route, undefined, undefined, undefined)) {
      const start = out.length;
      out.raw(K.mode);
      out.string(mode, MAX_FIELD);
      AccessLog.#field(out, K.route, route);
      this.#answered.keep(out, start, mode, route, undefined, undefined, undefined);
    }
    this.#requestFields(out, c.remoteAddr, head, requestId);
    this.#counts(out, status, undefined, bytesOut);
    out.int(Date.now() - startedAt);
    if (err !== undefined) AccessLog.#errOut(out, err.code, err.message);
    out.raw(K.request);
    this.#emitOut(out);
  }

  /** A request run by another handler than forward (FastCGI): the fields of a forwarded request's line it has (the target tried last, also on 502/504). */
  exchange(c: AccessClient, ex: ClientExchange, requestId: string | undefined, status: number, err: ProxyError | undefined): void {
    const target = ex.target ?? ex.lastTarget;
    const id = target === null ? undefined : target.id;
    const route = ex.route.name;
    const out = this.#begin(c.id);
    if (!this.#exchanged.copy(out, ex.mode, route, id, undefined, undefined)) {
      const start = out.length;
      out.raw(K.mode);
      out.string(ex.mode, MAX_FIELD);
      AccessLog.#field(out, K.route, route);
      AccessLog.#field(out, K.upstream, id);
      this.#exchanged.keep(out, start, ex.mode, route, id, undefined, undefined);
    }
    this.#requestFields(out, c.remoteAddr, ex.head, requestId);
    this.#counts(out, status, ex.bytesIn, ex.bytesOut);
    out.int(Date.now() - ex.startedAt);
    if (err !== undefined) AccessLog.#errOut(out, err.code, err.message);
    out.raw(K.request);
    this.#emitOut(out);
  }

  /** A terminated WebSocket (terminate/) that ended: who closed it, with which code and reason, what it relayed. */
  terminated(c: AccessClient, ex: TerminatedAt, end: SessionEnd): void {
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
