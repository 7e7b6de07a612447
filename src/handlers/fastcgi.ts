// One request run by a FastCGI application (PHP-FPM): resolve the script under root (404 without asking FPM
// when there is none), borrow a pooled connection of the route's upstream, send BEGIN_REQUEST + PARAMS, stream
// the request body as STDIN records, read STDOUT (CGI head, then the body streamed back: Content-Length as the
// script gave it, else chunked to HTTP/1.1 clients or close-delimited), STDERR lines to the log, and
// END_REQUEST. FCGI_KEEP_CONN keeps the connection for the pool. It borrows the client socket from its ClientSide
// and never closes it; it owns the upstream socket between acquire and release.
import { tmpdir } from 'node:os';
import type { ByteSocket } from '../core/socket.js';
import type { Logger } from '../core/log.js';
import { ProxyError, type ErrorCode } from '../core/errors.js';
import { removeUnordered, unmapIPv4 } from '../core/util.js';
import { FCGI_REQUEST_COMPLETE, RecordReader, encodeRequestStart, encodeStdin, protocolStatusName, putBytes, putLatin1, type RecordSink } from '../wire/fastcgi.js';
import { parseCgiHead, type CgiHead } from '../wire/cgi-head.js';
import type { RequestHead, ResponseHead } from '../wire/http-head.js';
import type { CompiledFastcgi, CompiledRoute, FastcgiDecision } from '../route/router.js';
import type { UpstreamClient, UpstreamPool } from '../upstream/pool.js';
import type { Target } from '../upstream/balancer.js';
import { UpstreamAttempt, type AttemptRules } from '../upstream/attempt.js';
import { adoptSocket, releaseSocket, type UpstreamSocketOwner } from '../upstream/socket-owner.js';
import { buildResponseHead } from './rewrite.js';
import type { ClientExchange } from './client-exchange.js';
import type { ClientSide } from './forward.js';
import { fixedParams, requestParams } from './fastcgi-params.js';
import { knownScript, resolveScript, type Script } from './fastcgi-script.js';
import { BodyStallWatch, type BodyWaiter } from './body-stall.js';
import { BodyBuffer, type BodyBufferOwner, type Replay, type ReplaySink } from './body-buffer.js';
import type { BodyBufferConfig } from '../config/fastcgi.js';
import { ANSWER_CLIENT_GONE, ANSWER_DONE, ANSWER_EXTRA, ANSWER_HANDOVER, ANSWER_HEAD, NATIVE_ANSWER, NativeSocket, afterBatch, type NativeStart } from '../native/io.js';
import { nativeExchangeOn } from '../native/exchange.js';
import { handMemo, handScript, type NativeMemo } from './fastcgi-native.js';

/** The client connection as a FastCGI request needs it: ClientSide plus its logger (for STDERR lines). */
export interface FastcgiClient extends ClientSide {
  readonly log: Logger;
  /** Where a chunked body waits for its length (body_buffer). */
  readonly bodyBuffer: BodyBufferConfig;
}

/** One request per connection at a time, so every request has id 1 (FCGI_MPXS_CONNS is not used). */
const REQUEST_ID = 1;
/** The CGI head an application writes before its body: bounded like an upstream's HTTP response head. */
const CGI_HEAD_LIMITS = Object.freeze({ headerSize: 64 * 1024, headers: 200 });
/** STDERR: a line is cut at this length, and at most this many lines are logged per request (the rest counted). */
const STDERR_LINE_MAX = 2048;
const STDERR_LINES_MAX = 32;
/** Retries as HTTP forwards have them (attempt.ts): within retries.max and the upstream's budget. */
const FASTCGI_RETRIES: AttemptRules = Object.freeze({ retry: 'budget', noneLeft: 'last-error' });
const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
const CRLF = Buffer.from('\r\n', 'latin1');
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');

/**
 * Per target (this worker): requests sent on a connection the pool opened for them that have no response byte
 * yet. php-fpm gives each connection a worker process for as long as it stays open, idle kept-alive ones too, so
 * a new connection beyond its pm.max_children waits in its listen queue until some connection closes. While
 * such a request may be waiting there, a finished connection is closed instead of kept, which frees its worker
 * for the queued one (without it, idle pooled connections could hold every worker until their idle timeout).
 * Unordered lists whose entries know their index (#freshSlot), not Sets: a Set with one add and one delete per
 * fresh connection is rehashed every few dozen, and V8's chain of obsolete tables keeps what they held alive
 * through scavenges (see core/registry.ts, where this was measured).
 */
const freshWaiting = new WeakMap<Target, FastcgiExchange[]>();
/**
 * A fresh connection's request without an answer after this long may be in FPM's listen queue (a worker answers
 * within a few ms otherwise): only then are finished connections closed instead of kept. A shorter wait does not
 * count, or under saturation every release would close its connection and reuse would never come back.
 */
const QUEUED_SUSPECT_MS = 100;

/** Whole answers held until this wake-up's events are handled, in the order they ended (see end()). */
let answersDue: FastcgiExchange[] = [];

/**
 * A route's last CGI head and the client head it gave: an application tends to start every answer with the same
 * bytes (PHP: X-Powered-By and Content-type), and the same bytes give the same head, so a repeat is compared, not
 * parsed and built again. One per route (a reload compiles new routes), heads of at most HEAD_MEMO_MAX bytes, only
 * for routes whose response_headers set nothing (a value may use the request's variables) and with no cors policy
 * (the grant names the request's Origin).
 */
interface HeadMemo {
  /** The CGI head's bytes, its empty line included (a copy). */
  readonly cgi: Buffer;
  readonly head: CgiHead;
  /** What besides the CGI head shaped `bytes`: HEAD, HTTP/1.0, Connection: close (see #onResponseHead). */
  shape: number;
  /** The client's head, as sent. */
  bytes: Buffer;
}
const headMemos = new WeakMap<CompiledRoute, HeadMemo>();
const HEAD_MEMO_MAX = 1024;

/** The addon may start this worker's FastCGI requests (PORTICO_NATIVE_EXCHANGE=1): scripts and memos are handed to it. */
const NATIVE_EXCHANGE = nativeExchangeOn();

/** `memo` as the addon arms an answer with it (#armAnswer's conditions on the CGI head), or null. */
function nativeMemoOf(memo: HeadMemo | undefined): NativeMemo | null {
  if (memo === undefined || !NATIVE_ANSWER || memo.head.contentLength >= 0 || memo.head.status === 204 || memo.head.status === 304) return null;
  return { cgi: memo.cgi, head: memo.bytes, shape: memo.shape, status: memo.head.status };
}

/** Whether `data` starts with the bytes of `cgi` (Buffer's own compare, no copy). */
function startsWith(data: Buffer, cgi: Buffer): boolean {
  const n = cgi.length;
  return data.length >= n && cgi.compare(data, 0, n) === 0;
}

/** 'buffering': the script exists, its chunked body is not whole yet (no target asked before it is). */
type Phase = 'script' | 'buffering' | 'connecting' | 'waiting' | 'body' | 'done';
/** How the response body goes to the client. */
type Framing = 'none' | 'length' | 'chunked' | 'close';

export class FastcgiExchange extends UpstreamAttempt implements ClientExchange, RecordSink, UpstreamSocketOwner, BodyBufferOwner, ReplaySink {
  readonly mode = 'fastcgi';
  readonly head: RequestHead;
  readonly route: CompiledRoute;
  readonly startedAt: number;
  readonly startedHr: number;
  connectMs = -1;
  firstByteMs = -1;
  reusedSocket = false;
  status = 0;
  bytesIn = 0;
  bytesOut = 0;
  responseStarted = false;
  deadline = 0;
  deadlineCode: ErrorCode = 'UPSTREAM_HEADERS_TIMEOUT';

  readonly #client: FastcgiClient;
  readonly #fcgi: CompiledFastcgi;
  readonly #timeouts: { response_headers: number; idle: number };
  readonly #keepConn: boolean;
  #phase: Phase = 'script';
  #finished = false;
  #script: Script | null = null;
  #upstream: ByteSocket | null = null;
  #reader: RecordReader | null = null;
  // request body: Content-Length framed (streamed as it comes), or chunked (held whole in #buffer, then replayed:
  // FastCGI sends CONTENT_LENGTH before the body)
  #reqRemaining: number;
  readonly #buffer: BodyBuffer | null = null;
  #replay: Replay | null = null;
  /** The whole body (and the empty STDIN record) went to the application. */
  #stdinDone = false;
  #earlyBody: Buffer[] | null = null;
  #upstreamPausedClient = false;
  readonly #bodyStall = new BodyStallWatch();
  // response
  #resBuf: Buffer | null = null;
  #framing: Framing = 'none';
  #resRemaining = 0;
  #closeClient = false;
  #clientPausedUpstream = false;
  /**
   * While one read of the application's stream is taken apart (upstreamData): the small client writes it made,
   * sent together when it is done or the response ends, so a page, its last chunk and the next record of the
   * same read leave in one send (each send to a client on loopback costs as much as the rest of the request).
   */
  #holding = false;
  /** Bytes, or latin1 text (a head, a chunk size): made into one buffer when sent (#flushHeld). */
  #held: Array<Buffer | string> = [];
  #heldBytes = 0;
  /** The answer is whole and held, sent once this wake-up's events are handled (see end()). */
  #answerDue = false;
  /** STDOUT bytes seen (head included): a reused socket that died before any is a stale keep-alive. */
  #stdoutBytes = 0;
  /** This request counts in freshWaiting (see there) for this target, since #sentAt, at index #freshSlot. */
  #fresh: Target | null = null;
  #freshSlot = -1;
  #sentAt = 0;
  // stderr
  #errLine: Buffer | null = null;
  #errLines = 0;
  #errDropped = 0;
  /**
   * The upstream socket is armed (#armAnswer): an answer that starts with this route head's CGI bytes may come
   * relayed by the addon (upstreamAnswer), the client head being `#armedMemo.bytes` as it was at the arming.
   */
  #armed = false;
  /** The armed memo's CGI head length and status (the memo itself may change before the answer comes). */
  #armedCgi = 0;
  #armedStatus = 0;
  /** The armed head's shape closes the client connection (the memo's shape may change before the answer comes). */
  #armedClose = false;

  constructor(client: FastcgiClient, head: RequestHead, d: FastcgiDecision, pool: UpstreamPool) {
    super(pool, undefined, FASTCGI_RETRIES);
    this.#client = client;
    this.head = head;
    this.route = d.route;
    this.#fcgi = d.fastcgi;
    this.startedAt = Date.now();
    this.startedHr = performance.now();
    this.#timeouts = pool.config.timeouts;
    this.#keepConn = pool.config.keepalive.max_idle > 0;
    this.#reqRemaining = head.bodyKind === 'length' ? head.contentLength : 0;
    if (head.bodyKind === 'chunked') {
      const b = client.bodyBuffer;
      this.#buffer = new BodyBuffer({ memory: b.memory, dir: b.temp_dir ?? tmpdir(), diskMax: b.disk_max, maxBody: client.maxBodySize, diskTimeout: b.disk_timeout }, this);
    }
  }

  get requestComplete(): boolean {
    return this.#buffer === null ? this.#reqRemaining === 0 : this.#buffer.clientDone;
  }

  get bodyError(): ProxyError {
    return this.#buffer?.error ?? new ProxyError('CLIENT_BAD_REQUEST', 'invalid request body');
  }

  protected get attemptOver(): boolean {
    return this.#finished;
  }

  protected upstreamClient(): UpstreamClient | undefined {
    return this.pool.sendsProxyHeader ? this.#client.upstreamClient : undefined;
  }

  protected giveUp(err: ProxyError): void {
    this.#fail(err);
  }

  /** First call: find the script (no FPM for a missing one), then pick a target; later calls (retries) pick again. */
  override start(fallback?: Target): void {
    if (this.#script !== null) {
      super.start(fallback);
      return;
    }
    const known = knownScript(this.head.path, this.#fcgi);
    if (known !== null) {
      this.#scriptFound(known);
      return;
    }
    resolveScript(this.head.path, this.#fcgi).then(
      (r) => {
        if (this.#finished) return;
        if (r.ok) this.#scriptFound(r.script);
        else this.#fail(new ProxyError('ROUTE_NOT_FOUND', `${r.reason}: not sent to FastCGI`));
      },
      (err: unknown) => this.#fail(new ProxyError('INTERNAL', `script lookup failed: ${String(err)}`)),
    );
  }

  #scriptFound(script: Script): void {
    this.#script = script;
    if (NATIVE_EXCHANGE && this.head.bodyKind === 'none') handScript(this.route, this.#fcgi, this.head.path, script, this.pool, nativeMemoOf(headMemos.get(this.route)));
    this.#phase = 'connecting';
    // RFC 9110 §10.1.1: the script exists, so the body is wanted; a client waiting for this sends it now
    // (FPM never sends interim responses; nginx answers 100 itself too)
    if (this.head.expectContinue && this.head.versionMinor === 1 && !this.requestComplete) {
      this.bytesOut += CONTINUE.length;
      this.#client.socket.write(CONTINUE);
    }
    // a chunked body is held whole first: no target is picked (nor FPM asked) before it is
    if (this.#buffer !== null && !this.#buffer.ready) {
      this.#phase = 'buffering';
      return;
    }
    super.start();
  }

  // ---- BodyBufferOwner: the chunked body being held ----

  bufferPaused(paused: boolean): void {
    this.#client.setBodyPaused(paused);
  }

  bufferReady(): void {
    if (this.#phase !== 'buffering' || this.#finished) return;
    this.#phase = 'connecting';
    super.start();
  }

  bufferFailed(err: ProxyError): void {
    this.#client.log.error({ route: this.route.name, path: this.head.target, err: { code: err.code, message: err.message } }, 'request body not buffered: temp file error');
    this.#fail(err);
  }

  // ---- ReplaySink: the held body, as STDIN records ----

  replayData(data: Buffer): boolean {
    const up = this.#upstream;
    if (up === null || this.#finished) return false;
    up.cork();
    const ok = this.#writeStdin(up, data);
    up.uncork();
    if (!ok) this.#upstreamPausedClient = true;
    return ok;
  }

  replayEnd(): void {
    const up = this.#upstream;
    if (up === null || this.#finished) return;
    this.#replay = null;
    this.#writeStdin(up, Buffer.alloc(0));
    this.#stdinEnded(up);
  }

  replayFailed(err: ProxyError): void {
    this.#replay = null;
    this.bufferFailed(err);
  }

  /** The upstream socket is this exchange's from now on, and FPM's answer is awaited on it. */
  #takeUpstream(socket: ByteSocket, reused: boolean): void {
    this.#upstream = socket;
    this.reusedSocket = reused;
    this.connectMs = performance.now() - this.startedHr;
    adoptSocket(socket, this);
    this.#phase = 'waiting';
    this.#stdoutBytes = 0;
    this.#reader = new RecordReader(REQUEST_ID, this);
  }

  protected connected(socket: ByteSocket, reused: boolean): void {
    this.#takeUpstream(socket, reused);
    if (!reused) {
      const t = this.target!;
      this.#fresh = t;
      this.#sentAt = Date.now();
      let list = freshWaiting.get(t);
      if (list === undefined) freshWaiting.set(t, (list = []));
      this.#freshSlot = list.length;
      list.push(this);
    }
    const s = this.#client.upstreamClient;
    // a held chunked body reaches FPM as what it now is: a body of known length (nginx sets CONTENT_LENGTH so too)
    const held = this.#buffer;
    const asSent: RequestHead = held === null ? this.head : { ...this.head, bodyKind: 'length', contentLength: held.length, chunked: false, transferEncoding: undefined };
    const pairs = requestParams(asSent, this.#script!, this.#fcgi, {
      vars: this.#client.vars,
      remotePort: s.source === undefined ? '' : String(s.source.port),
      serverAddr: s.destination === undefined ? '' : unmapIPv4(s.destination.address),
      forwarding: this.route.forwarding,
    });
    const early = this.#earlyBody;
    this.#earlyBody = null;
    // BEGIN_REQUEST, PARAMS and (no body) the end of STDIN: one buffer, one send
    const bodyless = held === null ? early === null && this.requestComplete : held.length === 0;
    const opening = encodeRequestStart(REQUEST_ID, this.#keepConn, fixedParams(this.#fcgi), pairs, bodyless);
    this.bytesIn = opening.length;
    this.#stdinDone = bodyless;
    let ok: boolean;
    if (held !== null) {
      // a held body: STDIN from memory or the temp file, each part once FPM took the previous (replayData)
      socket.write(opening);
      this.#upstreamPausedClient = false;
      this.#replay?.stop();
      this.#replay = bodyless ? null : held.replay(this);
      this.#armHeadersDeadline();
      return;
    }
    if (early === null) {
      ok = socket.write(opening);
      if (bodyless && NATIVE_ANSWER) this.#armAnswer(socket);
    } else {
      socket.cork();
      socket.write(opening);
      ok = true;
      for (const b of early) ok = this.#writeStdin(socket, b);
      const ended = this.requestComplete;
      if (ended) ok = this.#writeStdin(socket, Buffer.alloc(0));
      socket.uncork();
      if (ended) this.#stdinEnded(socket);
    }
    this.#armHeadersDeadline();
    if (!this.requestComplete) {
      this.#upstreamPausedClient = !ok;
      this.#client.setBodyPaused(!ok);
    }
  }

  /**
   * The addon started this request itself (a STARTED event: connection.ts): its records went whole to `socket`, an
   * idle kept-alive connection of `target` the pool lent it and has moved to busy (UpstreamPool.takeLent), and the
   * answer is armed when `start.armed`. From here on the exchange is the one connected() would have made for a
   * reused connection: the same deadlines, retries (a reused connection closed before any answer, for GET and HEAD),
   * passive health, access log and metrics.
   */
  adoptStarted(socket: NativeSocket, target: Target, start: NativeStart): void {
    // the script is known (the addon had its pairs); a retry that finds it forgotten looks it up again
    this.#script = knownScript(this.head.path, this.#fcgi);
    this.startedElsewhere(target);
    this.#takeUpstream(socket, true);
    this.bytesIn = start.records;
    this.#stdinDone = true;
    if (start.armed) {
      this.#armed = true;
      this.#armedCgi = start.cgiLength;
      this.#armedStatus = start.status;
      this.#armedClose = !this.head.keepAlive;
    }
    this.#armHeadersDeadline();
  }

  /**
   * STDIN's end went out behind a request body: the response head is awaited from now, and the answer may still be
   * the addon's (#armAnswer) when nothing of it reached JavaScript yet (FPM reads the whole body before the script
   * runs, so its answer comes after this as a rule).
   */
  #stdinEnded(socket: ByteSocket): void {
    this.#stdinDone = true;
    this.#armHeadersDeadline();
    if (NATIVE_ANSWER && !this.#armed && !this.#finished && this.#phase === 'waiting' && this.firstByteMs < 0) this.#armAnswer(socket);
  }

  /**
   * The request went whole: when the route remembers a CGI head and the client head it gave for this request's
   * shape, and nothing of the answer needs JavaScript (HTTP/1.1, not HEAD, a chunked answer: the remembered head
   * has no Content-Length and a status with a body), the addon may relay an answer that starts with the same bytes
   * (NativeSocket.fcgiAnswerTo: the same client head, chunks and last chunk as #onResponseHead, #relayBody and
   * end() would write). Any other answer, and whatever the addon hands over, comes as data, as always.
   */
  #armAnswer(socket: ByteSocket): void {
    const memo = headMemos.get(this.route);
    const client = this.#client.socket;
    if (memo === undefined || this.head.method === 'HEAD' || this.head.versionMinor === 0) return;
    const cgi = memo.head;
    if (cgi.contentLength >= 0 || cgi.status === 204 || cgi.status === 304) return;
    // #onResponseHead's shape for a chunked answer to a request read whole: only Connection: close can differ
    const close = !this.head.keepAlive || this.#client.closing;
    if (memo.shape !== (close ? 4 : 0)) return;
    if (!(socket instanceof NativeSocket) || !(client instanceof NativeSocket)) return;
    this.#armed = socket.fcgiAnswerTo(client, memo.cgi, memo.bytes, REQUEST_ID);
    if (!this.#armed) return;
    this.#armedCgi = memo.cgi.length;
    this.#armedStatus = cgi.status;
    this.#armedClose = close;
  }

  /**
   * The connection closes after this exchange now: an armed answer whose head the addon has not taken yet comes
   * back to JavaScript (#onResponseHead writes `Connection: close`); one whose head went out goes on.
   */
  clientClosing(): void {
    if (!this.#armed || !(this.#upstream instanceof NativeSocket)) return;
    if (this.#upstream.answerOff(true) !== 2) this.#armed = false;
  }

  /**
   * One read of the armed upstream, relayed by the addon: the remembered head went out (ANSWER_HEAD: what
   * #onResponseHead does for it), then `bodyBytes` of chunks; with ANSWER_DONE the answer is whole (end()'s part
   * after END_REQUEST); with ANSWER_HANDOVER the rest of the read follows as data, from a record's first byte.
   */
  upstreamAnswer(_status: number, flags: number, headBytes: number, bodyBytes: number, clientQueued: number): void {
    if (this.#finished) return;
    // the client's queue as the addon left it: connection.ts's close and pipelining decisions read writableLength
    if (clientQueued > 0) (this.#client.socket as NativeSocket).answerQueued(clientQueued);
    if ((flags & ANSWER_HEAD) !== 0) {
      if (this.firstByteMs < 0) this.firstByteMs = performance.now() - this.startedHr;
      this.#stdoutBytes += this.#armedCgi;
      this.#answered();
      this.status = this.#armedStatus;
      this.deadline = 0;
      this.pool.reportStatus(this.target!, this.#armedStatus); // passive health: 5xx counts when on_5xx is set
      this.#framing = 'chunked';
      this.#resRemaining = 0;
      // as armed, or closing since: the connection closes after this answer all the same
      this.#closeClient = this.#armedClose || this.#client.closing;
      this.responseStarted = true;
      this.#phase = 'body';
      this.deadlineCode = 'UPSTREAM_IDLE_TIMEOUT';
    }
    this.bytesOut += headBytes + bodyBytes;
    if ((flags & ANSWER_DONE) !== 0) {
      this.#armed = false;
      this.#complete((flags & ANSWER_EXTRA) !== 0, false);
    } else if ((flags & ANSWER_CLIENT_GONE) !== 0) {
      // the client's own error came first and ended the exchange; should it not have, end it here
      this.#armed = false;
      this.#fail(new ProxyError('CLIENT_CLOSED', 'client closed the connection before the answer was complete'));
    } else if ((flags & ANSWER_HANDOVER) !== 0) this.#armed = false;
  }

  /** STDIN records for `data` (the empty one ends the stream); counts the bytes; false when the socket is full. */
  #writeStdin(socket: ByteSocket, data: Buffer): boolean {
    let ok = true;
    for (const b of encodeStdin(REQUEST_ID, data)) {
      this.bytesIn += b.length;
      ok = socket.write(b);
    }
    return ok;
  }

  /** The response head is awaited once the whole body was sent: a slow upload is the client's time, not FPM's. */
  #armHeadersDeadline(): void {
    this.deadlineCode = 'UPSTREAM_HEADERS_TIMEOUT';
    this.deadline = this.#stdinDone && this.#phase === 'waiting' && this.#timeouts.response_headers > 0 ? Date.now() + this.#timeouts.response_headers : 0;
  }

  clientData(chunk: Buffer, start: number): number {
    if (this.#buffer !== null) return this.#buffer.push(chunk, start);
    if (this.#reqRemaining === 0) return 0;
    const used = Math.min(this.#reqRemaining, chunk.length - start);
    if (used <= 0) return 0;
    this.#reqRemaining -= used;
    // copied when kept: the caller may reuse its buffer; written at once otherwise
    const part = start === 0 && used === chunk.length ? chunk : chunk.subarray(start, start + used);
    const up = this.#upstream;
    if (up === null || (this.#phase !== 'waiting' && this.#phase !== 'body')) {
      (this.#earlyBody ??= []).push(Buffer.from(part));
      if (this.#reqRemaining > 0) this.#client.setBodyPaused(true);
      return used;
    }
    up.cork();
    let ok = this.#writeStdin(up, part);
    if (this.#reqRemaining === 0) ok = this.#writeStdin(up, Buffer.alloc(0));
    up.uncork();
    if (this.#reqRemaining === 0) this.#stdinEnded(up);
    else if (!ok && !this.#upstreamPausedClient) {
      this.#upstreamPausedClient = true;
      this.#client.setBodyPaused(true);
    }
    return used;
  }

  upstreamDrain(): void {
    if (this.#upstreamPausedClient) {
      this.#upstreamPausedClient = false;
      if (this.#replay !== null) this.#replay.resume();
      else this.#client.setBodyPaused(false);
    }
  }

  clientDrained(): void {
    if (this.#clientPausedUpstream) {
      this.#clientPausedUpstream = false;
      this.#upstream?.resume();
    }
  }

  upstreamData(chunk: Buffer): void {
    const reader = this.#reader;
    if (reader === null || this.#finished) return;
    if (this.#armed) {
      // the addon did not take this answer, or handed its rest over: it is JavaScript's from here, as always
      this.#armed = false;
      if (this.#upstream instanceof NativeSocket) this.#upstream.answerOff();
    }
    if (this.firstByteMs < 0) this.firstByteMs = performance.now() - this.startedHr;
    this.#holding = true;
    const problem = reader.push(chunk);
    this.#holding = false;
    if (!this.#answerDue) this.#flushHeld();
    if (problem !== null && !this.#finished) this.#fail(new ProxyError('UPSTREAM_BAD_RESPONSE', `FastCGI: ${problem}`));
  }

  /** Sends what upstreamData held back, in one write: the pieces are copied once, into one buffer. */
  #flushHeld(): void {
    const held = this.#held;
    if (held.length === 0) return;
    const socket = this.#client.socket;
    let ok: boolean;
    if (held.length === 1) {
      const only = held[0];
      ok = typeof only === 'string' ? socket.write(only, 'latin1') : socket.write(only);
    } else {
      const out = Buffer.allocUnsafe(this.#heldBytes);
      let at = 0;
      for (const piece of held) at += typeof piece === 'string' ? putLatin1(out, piece, at) : putBytes(out, piece, at);
      ok = socket.write(out);
    }
    // emptied by pops: a store to `length` is a runtime call (about 90 ns more per answer, measured)
    while (held.length > 0) held.pop();
    this.#heldBytes = 0;
    this.#clientWrote(ok);
  }

  /** The client's socket said full: FPM's connection is not read until it drains. */
  #clientWrote(ok: boolean): void {
    if (!ok && !this.#clientPausedUpstream) {
      this.#clientPausedUpstream = true;
      this.#upstream?.pause();
    }
  }

  // ---- RecordSink: what the reader found in the application's stream ----

  stdout(data: Buffer): void {
    if (this.#finished) return;
    this.#stdoutBytes += data.length;
    this.#answered();
    if (this.#phase === 'body') {
      this.#relayBody(data, undefined);
      return;
    }
    if (this.#resBuf === null) {
      const memo = headMemos.get(this.route);
      if (memo !== undefined && startsWith(data, memo.cgi)) {
        this.#onResponseHead(memo.head, data.subarray(memo.cgi.length), memo, null);
        return;
      }
    }
    const buf = this.#resBuf === null ? data : Buffer.concat([this.#resBuf, data]);
    const r = parseCgiHead(buf, CGI_HEAD_LIMITS);
    if (r.kind === 'more') {
      this.#resBuf = buf;
      return;
    }
    this.#resBuf = null;
    if (r.kind === 'error') {
      this.#fail(new ProxyError('UPSTREAM_BAD_RESPONSE', `FastCGI response head: ${r.reason}`));
      return;
    }
    this.#onResponseHead(r.head, buf.subarray(r.used), null, r.used <= HEAD_MEMO_MAX ? buf.subarray(0, r.used) : null);
  }

  stderr(data: Buffer): void {
    this.#answered(); // a worker runs the request
    let from = 0;
    for (;;) {
      const lf = data.indexOf(0x0a, from);
      const end = lf < 0 ? data.length : lf;
      if (end > from || lf >= 0) this.#errPart(data.subarray(from, end), lf >= 0);
      if (lf < 0) return;
      from = lf + 1;
      if (from >= data.length) return;
    }
  }

  /** Collects one line of STDERR (bounded) and logs it when complete. */
  #errPart(part: Buffer, complete: boolean): void {
    const have = this.#errLine?.length ?? 0;
    if (have < STDERR_LINE_MAX && part.length > 0) {
      const take = part.subarray(0, STDERR_LINE_MAX - have);
      this.#errLine = this.#errLine === null ? Buffer.from(take) : Buffer.concat([this.#errLine, take]);
    }
    if (complete) this.#flushErr();
  }

  #flushErr(): void {
    const line = this.#errLine;
    this.#errLine = null;
    if (line === null || line.length === 0) return;
    if (this.#errLines >= STDERR_LINES_MAX) {
      this.#errDropped++;
      return;
    }
    this.#errLines++;
    this.#client.log.warn({ route: this.route.name, upstream: this.target?.id, path: this.head.target, stderr: line.toString('utf8').replace(/\r$/, '') }, 'FastCGI stderr');
  }

  end(appStatus: number, protocolStatus: number, trailing: boolean): void {
    this.#flushErr();
    if (this.#errDropped > 0) this.#client.log.warn({ route: this.route.name, upstream: this.target?.id, dropped: this.#errDropped }, 'FastCGI stderr lines not logged');
    if (this.#finished) return;
    if (protocolStatus !== FCGI_REQUEST_COMPLETE) {
      const code: ErrorCode = protocolStatus === 2 /* OVERLOADED */ ? 'UPSTREAM_UNAVAILABLE' : 'UPSTREAM_BAD_RESPONSE';
      this.#fail(new ProxyError(code, `FastCGI request not completed: ${protocolStatusName(protocolStatus)} (app status ${appStatus})`));
      return;
    }
    if (this.#phase !== 'body') {
      this.#fail(new ProxyError('UPSTREAM_BAD_RESPONSE', this.#stdoutBytes === 0 ? 'FastCGI application ended the request without a response' : 'FastCGI response head incomplete at FCGI_END_REQUEST'));
      return;
    }
    if (this.#framing === 'length' && this.#resRemaining > 0) {
      this.#fail(new ProxyError('UPSTREAM_BAD_RESPONSE', `FastCGI body ended ${this.#resRemaining} bytes short of its Content-Length`));
      return;
    }
    this.#complete(trailing, true);
  }

  /**
   * The answer is whole: FPM's connection goes back (not kept with `trailing` bytes after its END_REQUEST), the last
   * chunk is written (`lastChunk`: not by the addon already), and the client connection moves on.
   */
  #complete(trailing: boolean, lastChunk: boolean): void {
    this.#phase = 'done';
    this.#finished = true;
    this.deadline = 0;
    // FPM's connection goes back first: a request queued for it is sent inside release(), so the application
    // works on it while this answer goes to its client (its worker would otherwise wait for that send, and for
    // the rest of this wake-up's events, at every request of a saturated upstream)
    this.#releaseUpstream(trailing);
    if (this.#framing === 'chunked' && lastChunk) {
      this.bytesOut += LAST_CHUNK.length;
      if (this.#holding) this.#hold(LAST_CHUNK, LAST_CHUNK.length);
      else this.#client.socket.write(LAST_CHUNK);
    }
    this.#answerDue = true;
    if (this.requestComplete) {
      // the answer leaves after this wake-up's other events: an FPM answer later in the same batch hands its
      // connection to a queued request before this send, not after it (a request whose body is still coming
      // ends at once: the connection must take over those bytes). One call sends every answer of the batch: at
      // the end of the native I/O batch being dispatched, else (Node's streams) on the next tick.
      if (answersDue.push(this) === 1 && !afterBatch(FastcgiExchange.#sendDue)) process.nextTick(FastcgiExchange.#sendDue);
      return;
    }
    this.#sendAnswer();
  }

  /**
   * end()'s deferred half for the whole batch: one call, not one per answer. An answer that ends while these are
   * sent (a pipelined request answered at once) is in the next list, with a tick of its own (the batch is over);
   * should a send throw, the answers after it are sent by that next tick before the error goes on.
   */
  static readonly #sendDue = (): void => {
    const due = answersDue;
    answersDue = [];
    let i = 0;
    try {
      for (; i < due.length; i++) due[i].#sendAnswer();
    } finally {
      if (i < due.length - 1) {
        if (answersDue.length === 0) process.nextTick(FastcgiExchange.#sendDue);
        for (let j = i + 1; j < due.length; j++) answersDue.push(due[j]);
      }
    }
  };

  /** end()'s second half: the held answer goes to the client, then the connection moves on. */
  #sendAnswer(): void {
    if (!this.#answerDue) return; // the client left meanwhile (abort)
    this.#answerDue = false;
    // the answer leaves before the connection moves on (a next pipelined request, or its close)
    this.#flushHeld();
    if (this.#framing === 'close') this.#closeClient = true;
    this.#client.exchangeDone(this, !this.#closeClient);
  }

  /**
   * The CGI head is whole: the client's head is made (or taken from `memo`, the route's head of the same bytes)
   * and sent with the body bytes that came with it. `raw`: the CGI head's bytes, when they may be remembered.
   */
  #onResponseHead(cgi: CgiHead, rest: Buffer, memo: HeadMemo | null, raw: Buffer | null): void {
    this.status = cgi.status;
    this.deadline = 0;
    this.pool.reportStatus(this.target!, cgi.status); // passive health: 5xx counts when on_5xx is set
    const noBody = this.head.method === 'HEAD' || cgi.status === 204 || cgi.status === 304;
    const http10 = this.head.versionMinor === 0;
    this.#framing = noBody ? 'none' : cgi.contentLength >= 0 ? 'length' : http10 ? 'close' : 'chunked';
    this.#resRemaining = this.#framing === 'length' ? cgi.contentLength : 0;
    // keep the client connection only when the response is delimited and the request was read whole
    this.#closeClient = !this.head.keepAlive || this.#framing === 'close' || !this.requestComplete || this.#client.closing;
    // the rest of what the head depends on, given the CGI head's bytes (its status and Content-Length)
    const shape = (this.head.method === 'HEAD' ? 1 : 0) | (http10 ? 2 : 0) | (this.#closeClient ? 4 : 0);
    let head: Buffer | string;
    if (memo !== null && memo.shape === shape) head = memo.bytes;
    else {
      head = this.#clientHead(cgi, http10);
      // not on a route whose head depends on the request: response_headers set values (they may use its
      // variables), a cors policy (its grant names the request's Origin)
      if (this.route.responseHeaders.set.length === 0 && this.route.cors === undefined) {
        // encoded once: the remembered bytes are the ones sent
        const bytes = Buffer.from(head, 'latin1');
        head = bytes;
        if (memo !== null) {
          memo.shape = shape;
          memo.bytes = bytes;
          if (NATIVE_EXCHANGE) handMemo(this.route, nativeMemoOf(memo));
        } else if (raw !== null) {
          const made: HeadMemo = { cgi: Buffer.from(raw), head: cgi, shape, bytes };
          headMemos.set(this.route, made);
          if (NATIVE_EXCHANGE) handMemo(this.route, nativeMemoOf(made));
        }
      }
    }
    this.responseStarted = true;
    this.#phase = 'body';
    this.deadlineCode = 'UPSTREAM_IDLE_TIMEOUT';
    if (rest.length > 0 && this.#framing !== 'none') {
      this.#relayBody(rest, head);
      return;
    }
    this.bytesOut += head.length;
    if (this.#holding) this.#hold(head, head.length);
    else if (typeof head === 'string') this.#client.socket.write(head, 'latin1');
    else this.#client.socket.write(head);
  }

  /** The client's response head for `cgi`, framed as #onResponseHead decided. */
  #clientHead(cgi: CgiHead, http10: boolean): string {
    const res: ResponseHead = {
      status: cgi.status,
      reason: cgi.reason,
      versionMinor: 1,
      headers: cgi.headers,
      // a HEAD or 304 answer keeps the length the script gave; 204 has none (RFC 9110 §8.6)
      contentLength: cgi.status === 204 ? -1 : cgi.contentLength,
      chunked: this.#framing === 'chunked',
      bodyKind: this.#framing === 'length' ? 'length' : this.#framing === 'chunked' ? 'chunked' : this.#framing === 'close' ? 'close' : 'none',
      keepAlive: true,
      connection: [],
      transferEncoding: this.#framing === 'chunked' ? 'chunked' : undefined,
      upgrade: undefined,
    };
    const conn = this.#closeClient ? 'close' : http10 ? 'keep-alive' : '';
    return buildResponseHead(res, this.route.responseHeaders, this.#client.vars, conn, undefined, this.route.cors === undefined ? undefined : this.#client.corsHeaders);
  }

  /** Response body bytes, framed for the client; `head`, when given, leaves in the same write. */
  #relayBody(data: Buffer, head: Buffer | string | undefined): void {
    if (this.#framing === 'none') return; // HEAD, 204, 304: a body the script printed anyway is dropped
    let body = data;
    if (this.#framing === 'length') {
      if (this.#resRemaining === 0) {
        this.#closeClient = true; // more than its Content-Length: the rest is dropped, the client connection not reused
        return;
      }
      if (body.length > this.#resRemaining) {
        body = body.subarray(0, this.#resRemaining);
        this.#closeClient = true;
      }
      this.#resRemaining -= body.length;
    }
    const client = this.#client.socket;
    const chunked = this.#framing === 'chunked';
    const size = chunked ? `${body.length.toString(16)}\r\n` : '';
    const headLen = head === undefined ? 0 : head.length;
    const prefixLen = headLen + size.length;
    this.bytesOut += prefixLen + body.length + (chunked ? 2 : 0);
    let ok: boolean;
    if (this.#holding && prefixLen + body.length <= 16 * 1024) {
      // kept as pieces: the body is this read's own bytes, copied once when what is held goes (#flushHeld)
      if (head !== undefined) this.#hold(head, headLen);
      if (chunked) this.#hold(size, size.length);
      this.#hold(body, body.length);
      if (chunked) this.#hold(CRLF, CRLF.length);
      return;
    }
    if (prefixLen + body.length <= 16 * 1024) {
      const out = Buffer.allocUnsafe(prefixLen + body.length + (chunked ? 2 : 0));
      let at = head === undefined ? 0 : typeof head === 'string' ? putLatin1(out, head, 0) : putBytes(out, head, 0);
      if (chunked) at += putLatin1(out, size, at);
      at += putBytes(out, body, at);
      if (chunked) putBytes(out, CRLF, at);
      ok = client.write(out);
    } else {
      this.#flushHeld();
      client.cork();
      if (typeof head === 'string') client.write(head, 'latin1');
      else if (head !== undefined) client.write(head);
      if (chunked) client.write(size, 'latin1');
      ok = client.write(body);
      if (chunked) ok = client.write(CRLF);
      client.uncork();
    }
    this.#clientWrote(ok);
  }

  /** Held for #flushHeld (`bytes`: its length on the wire); past 64 KiB held, what is held goes at once. */
  #hold(piece: Buffer | string, bytes: number): void {
    this.#held.push(piece);
    this.#heldBytes += bytes;
    if (this.#heldBytes >= 64 * 1024) this.#flushHeld();
  }

  /** This request no longer waits for a first response byte on a fresh connection (see freshWaiting). */
  #answered(): void {
    const t = this.#fresh;
    if (t === null) return;
    this.#fresh = null;
    const list = freshWaiting.get(t);
    if (list !== undefined) removeUnordered(list, this.#freshSlot, this, FastcgiExchange.#movedTo);
    this.#freshSlot = -1;
  }

  /** removeUnordered's record of a fresh request that moved into a hole of freshWaiting. */
  static readonly #movedTo = (ex: FastcgiExchange, at: number): void => {
    ex.#freshSlot = at;
  };

  /** Some request on a fresh connection to `t` has waited long enough to be in FPM's listen queue. */
  static #queuedSuspect(t: Target): boolean {
    const list = freshWaiting.get(t);
    if (list === undefined || list.length === 0) return false;
    const now = Date.now(); // read only when some request waits (at steady state none does)
    for (const ex of list) if (now - ex.#sentAt >= QUEUED_SUSPECT_MS) return true;
    return false;
  }

  /** The response is whole (END_REQUEST): FPM's connection goes back to the pool, kept when it can be. */
  #releaseUpstream(trailing: boolean): void {
    this.#answered();
    const up = this.#detachUpstream();
    // FCGI_KEEP_CONN: FPM keeps the connection after END_REQUEST; reusable when it also took the whole body, sent
    // nothing behind END_REQUEST (a lying application's bytes would meet the next request), and no request may be
    // waiting in FPM's listen queue for the worker this connection holds (freshWaiting)
    this.#dropBody();
    const reusable = !trailing && this.#keepConn && this.requestComplete && this.#stdinDone && !FastcgiExchange.#queuedSuspect(this.target!) && !up.destroyed && up.readable && up.writable;
    const target = this.target!;
    target.active--;
    this.pool.release(target, up, reusable, 'now');
  }

  upstreamEnd(): void {
    this.#upstreamGone(new ProxyError('UPSTREAM_RESET', 'FastCGI connection closed mid-request'));
  }

  upstreamClose(): void {
    this.#upstreamGone(new ProxyError('UPSTREAM_RESET', 'FastCGI connection closed mid-request'));
  }

  upstreamError(err: Error): void {
    this.#upstreamGone(new ProxyError('UPSTREAM_RESET', `FastCGI socket error: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }));
  }

  #detachUpstream(): ByteSocket {
    const up = this.#upstream!;
    releaseSocket(up);
    if (this.#clientPausedUpstream) {
      this.#clientPausedUpstream = false;
      up.resume();
    }
    this.#upstream = null;
    return up;
  }

  /**
   * The FastCGI connection died. A reused one that died before any STDOUT byte was most likely closed by FPM
   * while idle (a keep-alive race): an idempotent request without a body is sent again (attempt.ts rules).
   */
  #upstreamGone(err: ProxyError): void {
    if (this.#finished) return;
    this.#answered();
    this.#detachUpstream().destroy();
    if (this.#phase === 'waiting' && this.#stdoutBytes === 0 && IDEMPOTENT.has(this.head.method) && this.head.bodyKind === 'none' && this.mayRetry()) {
      this.#reader = null;
      this.#resBuf = null;
      this.deadline = 0;
      this.#phase = 'connecting';
      this.retryAfterReset(err, this.reusedSocket);
      return;
    }
    this.#fail(err);
  }

  checkDeadline(now: number): void {
    if (this.#finished) return;
    if (this.#buffer !== null) {
      if (this.#heldBodyStalled(now)) return;
    } else if (this.#reqRemaining > 0 && this.#phase !== 'script' && this.#bodyStalled(now)) return;
    if (this.deadline !== 0 && now >= this.deadline) {
      this.#fail(new ProxyError(this.deadlineCode, this.deadlineCode === 'UPSTREAM_HEADERS_TIMEOUT' ? 'no response head from FastCGI in time' : 'FastCGI response stalled'));
    }
  }

  /** The request body: the client gets timeouts.body between reads, an FPM that stopped reading it timeouts.idle. */
  #bodyStalled(now: number): boolean {
    const waitsOn: BodyWaiter = this.#upstreamPausedClient ? 'upstream' : this.#upstream === null ? null : 'client';
    const err = this.#bodyStall.check(this.bytesIn, waitsOn, now, this.#client.bodyTimeout, this.#timeouts.idle, 'FastCGI');
    if (err === null) return false;
    this.#fail(err);
    return true;
  }

  /**
   * A chunked body: while the client sends it, timeouts.body between its bytes (never the target's failure: none
   * is picked yet; a wait for the disk is nobody's stall); while it is replayed, timeouts.idle for an FPM that
   * stopped taking it.
   */
  #heldBodyStalled(now: number): boolean {
    const b = this.#buffer!;
    let err: ProxyError | null;
    if (!b.clientDone) err = this.#bodyStall.check(b.received, b.waitingOnDisk ? null : 'client', now, this.#client.bodyTimeout, 0, 'FastCGI');
    else if (this.#upstream !== null && !this.#stdinDone) err = this.#bodyStall.check(this.bytesIn, this.#upstreamPausedClient ? 'upstream' : null, now, 0, this.#timeouts.idle, 'FastCGI');
    else return false;
    if (err === null) return false;
    this.#fail(err);
    return true;
  }

  /** The held body is no longer needed: its replay stops, its memory and temp file go. */
  #dropBody(): void {
    this.#replay?.stop();
    this.#replay = null;
    this.#buffer?.dispose();
  }

  touch(now: number): void {
    if (this.#phase === 'body' && this.#timeouts.idle > 0) this.deadline = now + this.#timeouts.idle;
  }

  /** The client left: the FastCGI connection is closed (FPM ends the request; nothing half-read is pooled). */
  abort(_err: ProxyError): void {
    if (this.#answerDue) {
      // the client left before its answer was sent: nothing goes (the connection logs the request as aborted)
      this.#answerDue = false;
      this.#held = [];
      this.#heldBytes = 0;
      return;
    }
    if (this.#finished) return;
    this.#finished = true;
    this.#dropBody();
    this.#held = [];
    this.#heldBytes = 0;
    this.#answered();
    if (this.#upstream !== null) this.#detachUpstream().destroy();
    this.endAttempt(null);
  }

  #fail(err: ProxyError): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#dropBody();
    // a broken answer: the client connection is cut. What this read gave before the failure (a failed or short
    // END_REQUEST behind a page) still leaves first, as it would have had the failure come in a later read, and as
    // the addon's relayed answer has sent it: where FPM's writes were cut into reads decides nothing
    if (this.#holding) this.#flushHeld();
    this.#held = [];
    this.#heldBytes = 0;
    this.#phase = 'done';
    this.#answered();
    if (this.#upstream !== null) this.#detachUpstream().destroy();
    this.endAttempt(err);
    this.#client.exchangeFailed(this, err);
  }
}

