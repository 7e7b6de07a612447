// One HTTP/1.1 exchange forwarded to an upstream: pick a target, borrow a pooled socket, send the rewritten head,
// stream the request body (framing tracked, bytes untouched), parse the response head and stream the body back.
// It borrows the client socket from its ClientSide (connection.ts) and never closes it; it owns the upstream
// socket between acquire and release. The header rewriting (RFC 9110 §7.6) is rewrite.ts's.
// Buffer and performance from their modules: on Node 20 the globals are getters, called at each use
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import type { ByteSocket } from '../core/socket.js';
import { ProxyError, type ErrorCode } from '../core/errors.js';
import { ChunkedScanner, parseResponseHead, type HeadLimits, type RequestHead, type ResponseHead } from '../wire/http-head.js';
import type { CompiledHeaderOps, CompiledRoute, RequestVars } from '../route/router.js';
import { keyExtractorFor, stickyCookieFor, type KeyExtractor } from '../upstream/hash-key.js';
import type { UpstreamClient, UpstreamPool } from '../upstream/pool.js';
import { UpstreamAttempt, type AttemptRules } from '../upstream/attempt.js';
import { adoptSocket, disownSocket, releaseSocket, type UpstreamSocketOwner } from '../upstream/socket-owner.js';
import { buildRequestHead, buildResponseHead, headerValue, responseSkipNames, routeResponseLines, websocketAccept } from './rewrite.js';
import { ANSWER_CLIENT_GONE, ANSWER_CONN_CLOSE, ANSWER_CONN_KEEP_ALIVE, ANSWER_CONN_NONE, ANSWER_DONE, ANSWER_HEAD, ANSWER_REUSABLE, ANSWER_UPGRADE, NATIVE_ANSWER, NativeSocket, answerPlan } from '../native/io.js';
import { Encoder, compressible, compressionFor } from './compress.js';
import type { ClientExchange } from './client-exchange.js';
import { BodyStallWatch, type BodyWaiter } from './body-stall.js';
import { batchNow } from '../core/clock.js';

const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** Response bytes that arrive with the head and are copied to leave in one write with it. */
const SMALL_BODY = 16 * 1024;
/** Bytes of a response head we buffer from an upstream before calling it broken. */
const RESPONSE_HEAD_LIMITS: HeadLimits = { headerSize: 64 * 1024, uriSize: 8192, headers: 200 };

/** What an exchange needs from the client connection that owns the client socket. */
export interface ClientSide {
  readonly socket: ByteSocket;
  readonly vars: RequestVars;
  /** Whom upstream connections speak for in a PROXY header (read only for pools that send one). */
  readonly upstreamClient: UpstreamClient;
  /** The connection will close after this exchange (draining, or the client asked): say so in the response. */
  readonly closing: boolean;
  /** The route's CORS header lines for this request ('' without a policy): added to the response, the upstream's own dropped. */
  readonly corsHeaders: string;
  /** Longest wait (ms) for the next request body bytes from the client (timeouts.body; 0 = none). */
  readonly bodyTimeout: number;
  /** limits.body_size in bytes (Infinity when off); a Content-Length over it never gets this far. */
  readonly maxBodySize: number;
  /** Pause/resume reading the client on behalf of this exchange (request-body backpressure). */
  setBodyPaused(paused: boolean): void;
  /** The exchange finished: the response was fully written. `clientReusable`: keep-alive may continue. */
  exchangeDone(ex: ClientExchange, clientReusable: boolean): void;
  /** The exchange failed; `responseStarted` tells whether a canned response may still be written. */
  exchangeFailed(ex: ClientExchange, err: ProxyError): void;
  /**
   * The upstream answered 101: the owner turns the connection into a tunnel with these sockets. `res`: the
   * upstream's 101 (with `holdUpgrade` set, it was not written to the client: a terminated WebSocket answers itself);
   * null when the addon checked and wrote it (Exchange.upgradeTo: never with `holdUpgrade`), `sentDown` then being the
   * upstream's bytes that came behind it, written to the client with it (the tunnel's first bytes down).
   */
  exchangeUpgraded(ex: Exchange, upstream: ByteSocket, upstreamRest: Buffer | null, res: ResponseHead | null, sentDown?: Buffer | null): void;
}

type Phase = 'connecting' | 'waiting' | 'body' | 'done';

/** Key extractors of hash and cookie policies, compiled once per pool. */
const keyCache = new WeakMap<UpstreamPool, KeyExtractor | null>();
function keyOf(pool: UpstreamPool): KeyExtractor | null {
  let k = keyCache.get(pool);
  if (k === undefined) {
    k = keyExtractorFor(pool.config.balance) ?? null;
    keyCache.set(pool, k);
  }
  return k;
}

/**
 * The addon relays the common answer (a final status with a Content-Length body, src/native/response-head.h) from
 * the upstream to the client itself, and tells the exchange once per read (upstreamAnswer); a WebSocket upgrade's
 * 101 it checks and writes itself, with no JavaScript between its arrival and its departure. PORTICO_NATIVE_ANSWER=0
 * turns both off (every answer then comes here as data, as without the addon).
 *
 * The addon's plan of each route's response side (answerPlan), made on the route's first armed exchange.
 */
const answerPlans = new WeakMap<CompiledHeaderOps, number>();
function answerPlanOf(ops: CompiledHeaderOps): number {
  let plan = answerPlans.get(ops);
  if (plan === undefined) {
    plan = answerPlan(responseSkipNames(ops));
    answerPlans.set(ops, plan);
  }
  return plan;
}

/**
 * HTTP retries (attempt.ts): within `retries.max` and the upstream's retry budget; with no target left, the last
 * failure answers. A kept-alive socket is taken at once: the exchange is whole when connection.ts starts it.
 */
const HTTP_RETRIES: AttemptRules = Object.freeze({ retry: 'budget', noneLeft: 'last-error', reuseNow: true });

/**
 * One request/response over one upstream socket. Created by connection.ts after routing; drives itself from
 * socket events; reports back exactly once through ClientSide (done, failed or upgraded). Picking, acquiring
 * and retrying before the request reached a target is UpstreamAttempt's loop (start()).
 */
export class Exchange extends UpstreamAttempt implements ClientExchange, UpstreamSocketOwner {
  readonly mode = 'http';
  readonly head: RequestHead;
  readonly route: CompiledRoute;
  readonly tunnel: boolean;
  readonly startedAt: number;
  /** performance.now() at the start: the timings below, the access log and the latency histograms read it. */
  readonly startedHr: number;
  /** Ms from the start to a socket to the target (a kept-alive one: about 0), and to the response's first byte; -1 = not (yet). */
  connectMs = -1;
  firstByteMs = -1;
  /** The socket in use came from the keep-alive pool. */
  reusedSocket = false;
  status = 0;
  /** Bytes of the response written to the client (head included). */
  bytesOut = 0;
  /** Bytes of the request sent upstream (head included). */
  bytesIn = 0;
  /** A 101 is not relayed to the client (terminated WebSocket: uWebSockets.js writes the client's 101). */
  holdUpgrade = false;
  /** Nothing of a response reached the client yet: a canned error is still possible. */
  responseStarted = false;
  /** Why the exchange ended badly, for the log. */
  errorCode: ErrorCode | undefined;
  /** Ms deadline for the current upstream phase (0 = none) and activity mark for the body idle timeout. */
  deadline = 0;
  deadlineCode: ErrorCode = 'UPSTREAM_HEADERS_TIMEOUT';

  #client: ClientSide;
  #upstream: ByteSocket | null = null;
  #reused = false;
  #phase: Phase = 'connecting';
  #finished = false;
  // request body framing
  #reqRemaining: number; // bytes of a Content-Length body still to send, -1 when chunked
  #reqChunked: ChunkedScanner | null;
  #requestComplete: boolean;
  #earlyBody: Buffer | null = null;
  #upstreamPausedClient = false;
  readonly #maxBody: number;
  /** Why clientData() refused the body (-1): the body limit, else its framing. */
  #bodyError: ProxyError | null = null;
  // response
  #resBuf: Buffer | null = null;
  #res: ResponseHead | null = null;
  #resRemaining = 0;
  #resChunked: ChunkedScanner | null = null;
  #closeClient = false;
  #clientPausedUpstream = false;
  /** The route compresses this response (compress.ts): body bytes go through it; null = relayed as they are. */
  #encoder: Encoder | null = null;
  /** Bytes of the response head, when the body is compressed (bytesOut = head + the encoder's output). */
  #encodedHead = 0;
  /** The compressor is flushing the end of the body: upstream events no longer matter. */
  #flushing = false;
  readonly #timeouts: { response_headers: number; idle: number };
  // Request body clock, read by the sweep (no timer per request): bytesIn when it last moved, since when, and
  // whom the body waited on then (the client, an upstream that stopped taking it, or no one while connecting).
  readonly #bodyStall = new BodyStallWatch();
  /** A body byte came from the client (an `Expect: 100-continue` client may wait for the 100 before that). */
  #bodyStarted = false;
  /** A 100 Continue was relayed to a client that asked for it. */
  #continued = false;
  /** The upstream socket is armed (#armAnswer): its answer may come relayed by the addon (upstreamAnswer). */
  #armed = false;
  /** The upstream request head, once built (#requestHead). */
  #headStr: string | undefined;

  constructor(client: ClientSide, head: RequestHead, route: CompiledRoute, pool: UpstreamPool, tunnel: boolean) {
    const key = keyOf(pool);
    super(pool, key === null ? undefined : key(head, client.vars.remoteAddr), HTTP_RETRIES);
    this.#client = client;
    this.head = head;
    this.route = route;
    this.tunnel = tunnel;
    this.startedAt = batchNow();
    this.startedHr = performance.now();
    this.#timeouts = pool.config.timeouts;
    this.#reqRemaining = head.bodyKind === 'length' ? head.contentLength : head.bodyKind === 'chunked' ? -1 : 0;
    this.#reqChunked = head.bodyKind === 'chunked' ? new ChunkedScanner() : null;
    this.#requestComplete = head.bodyKind === 'none' || (head.bodyKind === 'length' && head.contentLength === 0);
    this.#maxBody = client.maxBodySize;
  }

  /** Set-Cookie value for cookie stickiness when the client's cookie does not name the chosen target. */
  #stickyCookie(): string | undefined {
    return typeof this.pool.config.balance === 'string' ? undefined : stickyCookieFor(this.pool.config.balance, this.target!, this.key, this.#client.vars.scheme === 'https');
  }

  get requestComplete(): boolean {
    return this.#requestComplete;
  }

  protected get attemptOver(): boolean {
    return this.#finished;
  }

  protected giveUp(err: ProxyError): void {
    this.#fail(err);
  }

  /**
   * A bodiless request (an upgrade, a GET) is whole from the start: its head may leave the moment a new connection
   * is established, from inside the pool's connect (upstream-connect.ts), instead of a tick later in connected().
   */
  protected override firstBytes(): string | undefined {
    return this.#requestComplete && this.#earlyBody === null ? this.#requestHead() : undefined;
  }

  /** The upstream request head: the same for every attempt, built once. */
  #requestHead(): string {
    return (this.#headStr ??= buildRequestHead(this.head, this.route, this.#client.vars, this.tunnel));
  }

  /** The client for a PROXY-sending pool (a pooled socket then serves this client connection only); else none. */
  protected upstreamClient(): UpstreamClient | undefined {
    return this.pool.sendsProxyHeader ? this.#client.upstreamClient : undefined;
  }

  /**
   * A socket to the target: send the head (and any body that came early; `headSent`: the pool wrote the head at
   * connect, firstBytes()), then wait for the response head.
   */
  protected connected(socket: ByteSocket, reused: boolean, headSent: boolean): void {
    this.#upstream = socket;
    this.#reused = reused;
    this.reusedSocket = reused;
    this.connectMs = performance.now() - this.startedHr;
    adoptSocket(socket, this);
    this.#phase = 'waiting';
    // the response head is awaited from the end of the request: a slow upload is the client's, not the target's
    this.#armHeadersDeadline();
    const headStr = this.#requestHead();
    this.bytesIn = headStr.length;
    let ok = true;
    if (this.#earlyBody === null) {
      // the pool wrote it already when firstBytes() offered it (a whole request: never with early body bytes)
      if (!headSent) socket.write(headStr, 'latin1');
    } else {
      // body bytes that arrived before the connection was ready, framed already; kept for a connect retry
      socket.cork();
      socket.write(headStr, 'latin1');
      this.bytesIn += this.#earlyBody.length;
      ok = socket.write(this.#earlyBody);
      socket.uncork();
    }
    if (!this.#requestComplete) {
      this.#upstreamPausedClient = !ok;
      this.#client.setBodyPaused(!ok);
    } else if (NATIVE_ANSWER) {
      if (this.tunnel) this.#armUpgrade(socket);
      else this.#armAnswer(socket);
    }
  }

  /**
   * A WebSocket upgrade went whole: the addon may check the 101 and write it to the client itself (NativeSocket.upgradeTo),
   * with the accept value #onUpgrade would require and the lines buildResponseHead would add; a 101 it does not take
   * (or any other answer) comes as data, as always. Not for a terminated WebSocket (uWebSockets.js answers the client).
   */
  #armUpgrade(socket: ByteSocket): void {
    const client = this.#client.socket;
    if (this.holdUpgrade || !(socket instanceof NativeSocket) || !(client instanceof NativeSocket)) return;
    const key = headerValue(this.head.headers, 'sec-websocket-key');
    if (key === undefined) return;
    const plan = answerPlanOf(this.route.responseHeaders);
    if (plan < 0) return;
    this.#armed = socket.upgradeTo(client, plan, routeResponseLines(this.route.responseHeaders, this.#client.vars, this.#stickyCookie()), key, websocketAccept);
  }

  /**
   * The request went whole: when nothing of the answer needs JavaScript (a plain response side: no compression,
   * no CORS policy; no HEAD, upgrade or Expect exchange), the addon may relay it (NativeSocket.answerTo). The head
   * is rewritten there as #onResponseHead would (same Connection decision, the route's lines computed here); an
   * answer it does not take comes as data, as always.
   */
  #armAnswer(socket: ByteSocket): void {
    const client = this.#client.socket;
    const route = this.route;
    if (this.tunnel || this.head.method === 'HEAD' || this.head.expectContinue || route.compress !== undefined || route.cors !== undefined) return;
    if (!(socket instanceof NativeSocket) || !(client instanceof NativeSocket)) return;
    const plan = answerPlanOf(route.responseHeaders);
    if (plan < 0) return;
    this.#closeClient = !this.head.keepAlive || this.#client.closing;
    const conn = this.#closeClient ? ANSWER_CONN_CLOSE : this.head.versionMinor === 0 ? ANSWER_CONN_KEEP_ALIVE : ANSWER_CONN_NONE;
    this.#armed = socket.answerTo(client, plan, routeResponseLines(route.responseHeaders, this.#client.vars, this.#stickyCookie()), conn);
  }

  /**
   * The connection closes after this exchange now: an armed answer whose head the addon has not taken yet comes
   * back to JavaScript (#onResponseHead writes `Connection: close`); one whose head went out goes on, as here.
   */
  clientClosing(): void {
    if (!this.#armed || !(this.#upstream instanceof NativeSocket)) return;
    if (this.#upstream.answerOff(true) !== 2) this.#armed = false;
  }

  /**
   * One read of the armed upstream, relayed by the addon: the head went out (ANSWER_HEAD: what #onResponseHead
   * does for it), `bodyBytes` of the body followed; with ANSWER_DONE the body is whole (#finishResponse).
   */
  upstreamAnswer(status: number, flags: number, headBytes: number, bodyBytes: number, clientQueued: number, sentDown: Buffer | null = null): void {
    if (this.#finished) return;
    if ((flags & ANSWER_UPGRADE) !== 0) {
      this.#upgradedNatively(flags, headBytes, clientQueued, sentDown);
      return;
    }
    // the client's queue as the addon left it: connection.ts's close and pipelining decisions read writableLength
    if (clientQueued > 0) (this.#client.socket as NativeSocket).answerQueued(clientQueued);
    if ((flags & ANSWER_HEAD) !== 0) {
      if (this.firstByteMs < 0) this.firstByteMs = performance.now() - this.startedHr;
      this.status = status;
      this.deadline = 0;
      this.pool.reportStatus(this.target!, status); // passive health: 5xx counts when on_5xx is set
      this.responseStarted = true;
      this.bytesOut += headBytes;
      this.#phase = 'body';
      this.deadlineCode = 'UPSTREAM_IDLE_TIMEOUT';
      // draining began since the arming: the connection closes after this answer all the same
      if (this.#client.closing) this.#closeClient = true;
    }
    this.bytesOut += bodyBytes;
    if ((flags & ANSWER_DONE) !== 0) {
      this.#armed = false;
      this.#finishResponse(false, (flags & ANSWER_REUSABLE) !== 0);
    } else if ((flags & ANSWER_CLIENT_GONE) !== 0) {
      // the client's own error came first and ended the exchange; should it not have, end it here
      this.#armed = false;
      this.#fail(new ProxyError('CLIENT_CLOSED', 'client closed the connection before the answer was complete'));
    }
  }

  /**
   * The response head deadline, from now: armed once the request was sent whole, or while an `Expect:
   * 100-continue` client waits for the upstream's word before sending its body (then it is the upstream's turn).
   */
  #armHeadersDeadline(): void {
    this.deadlineCode = 'UPSTREAM_HEADERS_TIMEOUT';
    const upstreamsTurn = this.#requestComplete || this.#awaitingContinue;
    this.deadline = upstreamsTurn && this.#timeouts.response_headers > 0 ? batchNow() + this.#timeouts.response_headers : 0;
  }

  get #awaitingContinue(): boolean {
    return this.head.expectContinue && !this.#bodyStarted && !this.#continued;
  }

  /**
   * Client bytes while this exchange runs: request body, framed. Returns how many bytes of chunk[start..]
   * belonged to this request (the rest is the next pipelined request), or -1 when the body framing is invalid.
   */
  clientData(chunk: Buffer, start: number): number {
    if (this.#requestComplete) return 0;
    if (this.#upstream === null || this.#phase === 'connecting') {
      // not connected yet: keep bytes until the head is written (the client is paused meanwhile)
      const used = this.#bodyLength(chunk, start);
      if (used < 0) return -1;
      if (used > 0) {
        this.#bodyStarted = true;
        const part = chunk.subarray(start, start + used);
        this.#earlyBody = this.#earlyBody === null ? Buffer.from(part) : Buffer.concat([this.#earlyBody, part]);
      }
      if (!this.#requestComplete) this.#client.setBodyPaused(true);
      return used;
    }
    const used = this.#bodyLength(chunk, start);
    if (used <= 0) return used;
    this.bytesIn += used;
    this.#bodyStarted = true;
    const ok = this.#upstream.write(start === 0 && used === chunk.length ? chunk : chunk.subarray(start, start + used));
    // the response head is awaited from the end of the request; the body clock runs meanwhile
    if (this.#phase === 'waiting') this.#armHeadersDeadline();
    if (!this.#requestComplete && !ok && !this.#upstreamPausedClient) {
      this.#upstreamPausedClient = true;
      this.#client.setBodyPaused(true);
    }
    return used;
  }

  /** Why the last clientData() returned -1: CLIENT_BODY_TOO_LARGE (413) or CLIENT_BAD_REQUEST (framing). */
  get bodyError(): ProxyError {
    return this.#bodyError ?? new ProxyError('CLIENT_BAD_REQUEST', `invalid chunked request body: ${this.#reqChunked?.error ?? ''}`);
  }

  /**
   * How many bytes of chunk[start..] belong to the body, advancing framing state; -1 when the framing is
   * invalid or a chunked body announced more than limits.body_size (checked as each chunk size is read, so
   * nothing past the limit is sent upstream).
   */
  #bodyLength(chunk: Buffer, start: number): number {
    if (this.#reqChunked !== null) {
      const n = this.#reqChunked.push(chunk, start);
      if (this.#reqChunked.dataBytes > this.#maxBody) {
        this.#bodyError = new ProxyError('CLIENT_BODY_TOO_LARGE', `chunked request body over ${this.#maxBody} bytes`);
        return -1;
      }
      if (n >= 0 && this.#reqChunked.done) this.#requestComplete = true;
      return n;
    }
    const n = Math.min(this.#reqRemaining, chunk.length - start);
    this.#reqRemaining -= n;
    if (this.#reqRemaining === 0) this.#requestComplete = true;
    return n;
  }

  upstreamDrain(): void {
    if (this.#upstreamPausedClient) {
      this.#upstreamPausedClient = false;
      this.#client.setBodyPaused(false);
    }
  }

  /** Client socket drained: resume reading the upstream. */
  clientDrained(): void {
    if (this.#encoder !== null) {
      // the compressor's output waits for the client; the upstream waits for the compressor (#onEncoderDrain)
      this.#encoder.clientDrained();
      return;
    }
    if (this.#clientPausedUpstream) {
      this.#clientPausedUpstream = false;
      this.#upstream?.resume();
    }
  }

  upstreamData(chunk: Buffer): void {
    if (this.#armed) {
      // the addon did not take this answer (or bytes came before the arming): it is JavaScript's, as always
      this.#armed = false;
      if (this.#upstream instanceof NativeSocket) this.#upstream.answerOff();
    }
    if (this.#phase === 'body') {
      if (this.#encoder !== null) this.#relayEncoded(chunk, 0);
      else this.#relayBody(chunk, 0, undefined);
      return;
    }
    if (this.#phase !== 'waiting') return;
    if (this.firstByteMs < 0) this.firstByteMs = performance.now() - this.startedHr;
    let buf = this.#resBuf === null ? chunk : Buffer.concat([this.#resBuf, chunk]);
    for (;;) {
      const r = parseResponseHead(buf, RESPONSE_HEAD_LIMITS, this.head.method);
      if (r.kind === 'more') {
        this.#resBuf = buf;
        return;
      }
      if (r.kind === 'error') {
        this.#resBuf = null;
        this.#fail(new ProxyError('UPSTREAM_BAD_RESPONSE', `invalid response head: ${r.reason}`));
        return;
      }
      const res = r.head;
      if (res.status >= 100 && res.status < 200 && res.status !== 101) {
        // RFC 9110 §15.2: interim responses are relayed (100 Continue only to clients that asked for it), never
        // to an HTTP/1.0 client, which cannot tell them from the final response
        if (this.head.versionMinor === 1 && (res.status !== 100 || this.head.expectContinue)) {
          const interim = buildResponseHead(res, this.route.responseHeaders, this.#client.vars, '');
          this.#client.socket.write(interim, 'latin1');
          if (res.status === 100 && this.#awaitingContinue) {
            // told to go on: the body is the client's turn now (its body clock runs, no head deadline)
            this.#continued = true;
            this.deadline = 0;
          }
          this.bytesOut += interim.length;
        }
        buf = buf.subarray(r.used);
        if (buf.length === 0) {
          this.#resBuf = null;
          return;
        }
        continue;
      }
      this.#resBuf = null;
      this.#onResponseHead(res, buf, r.used);
      return;
    }
  }

  #onResponseHead(res: ResponseHead, buf: Buffer, used: number): void {
    this.#res = res;
    this.status = res.status;
    this.deadline = 0;
    this.pool.reportStatus(this.target!, res.status); // passive health: 5xx counts when on_5xx is set
    if (this.tunnel && res.status === 101) {
      this.#onUpgrade(res, buf, used);
      return;
    }
    if (res.status === 101) {
      this.#fail(new ProxyError('UPSTREAM_BAD_RESPONSE', 'unsolicited 101 Switching Protocols'));
      return;
    }
    // Keep the client connection only when both messages are delimited and the request was read whole.
    this.#closeClient = !this.head.keepAlive || res.bodyKind === 'close' || !this.#requestComplete || this.#client.closing;
    const conn = this.#closeClient ? 'close' : this.head.versionMinor === 0 ? 'keep-alive' : '';
    const compress = this.route.compress;
    const shown = compress === undefined ? res : this.#compressedHead(res, compress);
    const headStr = buildResponseHead(shown, this.route.responseHeaders, this.#client.vars, conn, this.#stickyCookie(), this.route.cors === undefined ? undefined : this.#client.corsHeaders);
    if (this.#encoder !== null) {
      // compressed: the head leaves now, the body through the encoder as chunks
      this.responseStarted = true;
      this.bytesOut = this.#encodedHead = headStr.length;
      this.#phase = 'body';
      this.#resRemaining = res.bodyKind === 'length' ? res.contentLength : 0;
      this.#resChunked = res.bodyKind === 'chunked' ? new ChunkedScanner() : null;
      this.deadlineCode = 'UPSTREAM_IDLE_TIMEOUT';
      this.#client.socket.write(headStr, 'latin1');
      if (buf.length > used) this.#relayEncoded(buf, used);
      return;
    }
    this.responseStarted = true;
    this.bytesOut += headStr.length;
    const client = this.#client.socket;
    this.#phase = 'body';
    if (res.bodyKind === 'none') {
      client.write(headStr, 'latin1');
      this.#finishResponse(buf.length > used);
      return;
    }
    this.#resRemaining = res.bodyKind === 'length' ? res.contentLength : 0;
    this.#resChunked = res.bodyKind === 'chunked' ? new ChunkedScanner() : null;
    if (res.bodyKind === 'length' && res.contentLength === 0) {
      client.write(headStr, 'latin1');
      this.#finishResponse(buf.length > used);
      return;
    }
    this.deadlineCode = 'UPSTREAM_IDLE_TIMEOUT';
    if (buf.length === used) client.write(headStr, 'latin1');
    // the head leaves with the first body bytes, once they were found well framed: a broken chunked body in the
    // head's read is then a clean 502, not a head counted as sent and never written
    else this.#relayBody(buf, used, headStr);
  }

  /**
   * The response head as the client gets it when the route compresses: unchanged, or (the client accepts a
   * coding and the answer qualifies) chunked with Content-Encoding and a weak ETag, the encoder made. Either
   * way an answer of a type the route compresses varies by Accept-Encoding.
   */
  #compressedHead(res: ResponseHead, c: NonNullable<CompiledRoute['compress']>): ResponseHead {
    const type = headerValue(res.headers, 'content-type');
    const length = res.bodyKind === 'length' ? res.contentLength : res.bodyKind === 'none' ? 0 : -1;
    if (length === 0 || !compressible(c, type, length)) return res;
    const coding = compressionFor(c, {
      method: this.head.method,
      status: res.status,
      contentType: type,
      contentEncoding: headerValue(res.headers, 'content-encoding'),
      length,
      ranged: headerValue(res.headers, 'content-range') !== undefined,
      acceptEncoding: headerValue(this.head.headers, 'accept-encoding'),
      versionMinor: this.head.versionMinor,
    });
    const headers = res.headers.slice();
    headers.push('Vary', 'Accept-Encoding');
    if (coding === null) return { ...res, headers };
    for (let i = 0; i < headers.length; i += 2) {
      if (headers[i].toLowerCase() === 'etag' && !headers[i + 1].startsWith('W/')) headers[i + 1] = `W/${headers[i + 1]}`;
    }
    headers.push('Content-Encoding', coding);
    this.#encoder = new Encoder(this.#client.socket, c, coding, length, this.#onEncoderDrain, (err) =>
      this.#upstreamGone(new ProxyError('INTERNAL', `compression failed: ${err.message}`, { side: 'internal', cause: err })),
    );
    return { ...res, headers, contentLength: -1, transferEncoding: 'chunked' };
  }

  /** The compressor took what it held: read the upstream again. */
  #onEncoderDrain = (): void => {
    if (this.#clientPausedUpstream) {
      this.#clientPausedUpstream = false;
      this.#upstream?.resume();
    }
  };

  /** Response body bytes of chunk[start..] into the compressor (chunked framing read off first). */
  #relayEncoded(chunk: Buffer, start: number): void {
    const res = this.#res!;
    const enc = this.#encoder!;
    let ok = true;
    let used: number;
    let done = false;
    if (res.bodyKind === 'length') {
      used = Math.min(this.#resRemaining, chunk.length - start);
      this.#resRemaining -= used;
      done = this.#resRemaining === 0;
      if (used > 0) ok = enc.write(chunk.subarray(start, start + used));
    } else if (this.#resChunked !== null) {
      used = this.#resChunked.push(chunk, start, (b, from, to) => {
        if (!enc.write(b.subarray(from, to))) ok = false;
      });
      if (used < 0) {
        this.#upstreamGone(new ProxyError('UPSTREAM_BAD_RESPONSE', `invalid chunked response body: ${this.#resChunked.error ?? ''}`));
        return;
      }
      done = this.#resChunked.done;
    } else {
      used = chunk.length - start;
      if (used > 0) ok = enc.write(start === 0 ? chunk : chunk.subarray(start));
    }
    this.bytesOut = this.#encodedHead + enc.bytesOut;
    if (!ok && !done && !this.#clientPausedUpstream) {
      this.#clientPausedUpstream = true;
      this.#upstream?.pause();
    }
    if (done) this.#finishResponse(start + used < chunk.length);
  }

  /** Relays response body bytes of chunk[start..] (framed); `head`, when given, is sent first in the same write. */
  #relayBody(chunk: Buffer, start: number, head: string | undefined): void {
    const res = this.#res!;
    let used: number;
    let done = false;
    if (res.bodyKind === 'length') {
      used = Math.min(this.#resRemaining, chunk.length - start);
      this.#resRemaining -= used;
      done = this.#resRemaining === 0;
    } else if (this.#resChunked !== null) {
      used = this.#resChunked.push(chunk, start);
      if (used < 0) {
        if (head !== undefined) {
          // the head was to leave with these bytes and has not been written: the client still gets a clean 502
          this.responseStarted = false;
          this.bytesOut -= head.length;
        }
        this.#fail(new ProxyError('UPSTREAM_BAD_RESPONSE', `invalid chunked response body: ${this.#resChunked.error ?? ''}`));
        return;
      }
      done = this.#resChunked.done;
    } else {
      used = chunk.length - start; // read until close
    }
    if (head !== undefined && used <= 0) this.#client.socket.write(head, 'latin1');
    if (used > 0) {
      this.bytesOut += used;
      const client = this.#client.socket;
      const body = start === 0 && used === chunk.length ? chunk : chunk.subarray(start, start + used);
      let ok: boolean;
      if (head === undefined) {
        ok = client.write(body);
      } else if (used <= SMALL_BODY) {
        // head and first body bytes leave in one write
        const out = Buffer.allocUnsafe(head.length + used);
        out.write(head, 0, 'latin1');
        chunk.copy(out, head.length, start, start + used);
        ok = client.write(out);
      } else {
        client.cork();
        client.write(head, 'latin1');
        ok = client.write(body);
        client.uncork();
      }
      if (!ok && !done && !this.#clientPausedUpstream) {
        this.#clientPausedUpstream = true;
        this.#upstream?.pause();
      }
    }
    if (done) this.#finishResponse(start + used < chunk.length);
  }

  #onUpgrade(res: ResponseHead, buf: Buffer, used: number): void {
    const key = headerValue(this.head.headers, 'sec-websocket-key');
    const accept = headerValue(res.headers, 'sec-websocket-accept');
    if (res.upgrade !== 'websocket' || key === undefined || accept !== websocketAccept(key)) {
      this.#fail(new ProxyError('UPSTREAM_HANDSHAKE_INVALID', res.upgrade !== 'websocket' ? '101 without Upgrade: websocket' : 'wrong Sec-WebSocket-Accept in 101'));
      return;
    }
    const headStr = buildResponseHead(res, this.route.responseHeaders, this.#client.vars, 'upgrade', this.#stickyCookie());
    if (!this.holdUpgrade) {
      this.responseStarted = true;
      this.bytesOut += headStr.length;
      this.#client.socket.write(headStr, 'latin1');
    }
    this.#upgraded(buf.length > used ? buf.subarray(used) : null, res, null);
  }

  /**
   * The addon checked the upstream's 101 and wrote it, with `sentDown` (what came behind it), to the client
   * (#armUpgrade): what #onResponseHead and #onUpgrade do for a 101, but the check and the write.
   */
  #upgradedNatively(flags: number, headBytes: number, clientQueued: number, sentDown: Buffer | null): void {
    this.#armed = false;
    // the client's queue as the addon left it (a tunnel hands the socket over once it is out)
    if (clientQueued > 0) (this.#client.socket as NativeSocket).answerQueued(clientQueued);
    if (this.firstByteMs < 0) this.firstByteMs = performance.now() - this.startedHr;
    this.status = 101;
    this.deadline = 0;
    this.pool.reportStatus(this.target!, 101);
    this.responseStarted = true;
    // as #onUpgrade counts: the head here, the bytes behind it in the tunnel's bytesDown
    this.bytesOut += headBytes;
    if ((flags & ANSWER_CLIENT_GONE) !== 0) {
      // the client's own error came first and ended the exchange; should it not have, end it here
      this.#fail(new ProxyError('CLIENT_CLOSED', 'client closed the connection before the 101 was written'));
      return;
    }
    this.#upgraded(null, null, sentDown);
  }

  /** A valid 101: the upstream leaves the pool and the exchange ends; the owner makes the tunnel. */
  #upgraded(upstreamRest: Buffer | null, res: ResponseHead | null, sentDown: Buffer | null): void {
    const up = this.#detachUpstream();
    disownSocket(up);
    this.#finished = true;
    this.#phase = 'done';
    this.pool.detach(this.target!, up);
    this.#client.exchangeUpgraded(this, up, upstreamRest, res, sentDown);
  }

  #finishResponse(extraBytes: boolean, keepAlive?: boolean): void {
    const enc = this.#encoder;
    if (enc !== null) {
      // the compressor flushes the end of the body first; then the exchange ends as usual
      this.#encoder = null;
      this.#phase = 'done';
      this.#flushing = true;
      enc.end(() => {
        this.#flushing = false;
        this.bytesOut = this.#encodedHead + enc.bytesOut;
        if (!this.#finished) this.#finishResponse(extraBytes);
      });
      return;
    }
    this.#phase = 'done';
    this.#finished = true;
    this.deadline = 0;
    const up = this.#detachUpstream();
    const reusable = !extraBytes && this.#requestComplete && (keepAlive ?? this.#res!.keepAlive) && !up.destroyed && up.readable && up.writable;
    this.pool.release(this.target!, up, reusable);
    this.target!.active--;
    this.#client.exchangeDone(this, !this.#closeClient);
  }

  #detachUpstream(): ByteSocket {
    const up = this.#upstream!;
    releaseSocket(up);
    // still armed: the socket is destroyed next (a failure, a retry), which disarms it in the addon
    this.#armed = false;
    if (this.#clientPausedUpstream) {
      this.#clientPausedUpstream = false;
      up.resume();
    }
    this.#upstream = null;
    return up;
  }

  upstreamEnd(): void {
    if (this.#phase === 'body' && this.#res !== null && this.#res.bodyKind === 'close') {
      this.#finishResponse(false);
      return;
    }
    this.#upstreamGone(new ProxyError('UPSTREAM_RESET', 'upstream closed the connection mid-exchange'));
  }

  upstreamError(err: Error): void {
    this.#upstreamGone(new ProxyError('UPSTREAM_RESET', `upstream socket error: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }));
  }

  upstreamClose(): void {
    this.#upstreamGone(new ProxyError('UPSTREAM_RESET', 'upstream connection closed mid-exchange'));
  }

  /**
   * The upstream socket died. An idempotent request without a body whose response had not begun to reach the
   * client (no head relayed, no interim response) is retried within `retries.max` and the budget, fresh
   * connection or reused alike (RFC 9110 §9.2.2; nginx `proxy_next_upstream error`): a target reset under the
   * request may be dying, so another target is asked. A fresh connection reset this way is the target's passive
   * failure; a reused one may only have been closed by the target while idle (a keep-alive race), so it is not
   * held against it, and with no other target that target is asked again.
   */
  #upstreamGone(err: ProxyError): void {
    if (this.#finished || this.#flushing) return;
    const up = this.#detachUpstream();
    up.destroy();
    const nothingToClient = this.#phase === 'waiting' && !this.responseStarted && this.bytesOut === 0;
    if (nothingToClient && IDEMPOTENT.has(this.head.method) && this.head.bodyKind === 'none' && this.mayRetry()) {
      this.#resBuf = null; // a partial response head from the socket that died
      this.deadline = 0;
      this.#phase = 'connecting';
      this.retryAfterReset(err, this.#reused);
      return;
    }
    this.#fail(err);
  }

  /** Timeouts: called by the connection's sweep with the current time. */
  checkDeadline(now: number): void {
    if (this.#finished) return;
    if (!this.#requestComplete && this.#bodyStalled(now)) return;
    if (this.deadline !== 0 && now >= this.deadline) {
      this.#fail(new ProxyError(this.deadlineCode, this.deadlineCode === 'UPSTREAM_HEADERS_TIMEOUT' ? 'no response head from upstream in time' : 'upstream body stalled'));
    }
  }

  /**
   * A request body in progress: the client gets `timeouts.body` between reads (CLIENT_BODY_TIMEOUT, 408, never
   * the target's failure); an upstream that stopped taking the body (backpressure) gets `timeouts.idle`. No one
   * is timed while the body waits for a connection (connect and queue timeouts bound that), nor while an
   * `Expect: 100-continue` client has sent nothing yet (the response head deadline runs). True once failed.
   */
  #bodyStalled(now: number): boolean {
    const waitsOn: BodyWaiter = this.#upstreamPausedClient ? 'upstream' : (this.#upstream === null && this.#earlyBody !== null) || this.#awaitingContinue ? null : 'client';
    const err = this.#bodyStall.check(this.bytesIn, waitsOn, now, this.#client.bodyTimeout, this.#timeouts.idle, 'upstream');
    if (err === null) return false;
    this.#fail(err);
    return true;
  }

  /** Arms the body idle deadline (refreshed by the connection's sweep on progress). */
  touch(now: number): void {
    if (this.#phase === 'body' && this.#timeouts.idle > 0) this.deadline = now + this.#timeouts.idle;
  }

  /** The client went away or the connection is being torn down: drop the upstream side. */
  abort(err: ProxyError): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#encoder?.destroy();
    this.#encoder = null;
    this.errorCode = err.code;
    if (this.#upstream !== null) this.#detachUpstream().destroy();
    this.endAttempt(null);
  }

  #fail(err: ProxyError): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#encoder?.destroy();
    this.#encoder = null;
    this.#phase = 'done';
    this.errorCode = err.code;
    if (this.#upstream !== null) this.#detachUpstream().destroy();
    this.endAttempt(err);
    this.#client.exchangeFailed(this, err);
  }
}
