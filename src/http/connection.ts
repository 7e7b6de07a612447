// The path of one client socket, from accept (or TLS handshake) to teardown: read and parse request heads,
// route (route/decide.ts), apply the route's policies, run the Decision's handler (forward, or a tunnel from a
// valid 101: upgrade.ts), keep-alive and pipelining, canned errors, one access-log line per request
// (access-log.ts). It owns the client socket; upstream sockets are borrowed from pools.
// Timeouts are deadlines checked by one sweep per worker, so the hot path creates no timer per request.
// Buffer and performance from their modules: on Node 20 the globals are getters, called at each use
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import type { ProxyEndpoint } from '../wire/proxy-protocol.js';
import type { ByteSocket } from '../core/socket.js';
import type { ConnectionRegistry, Tracked } from '../core/registry.js';
import type { Config } from '../config/schema.js';
import { ProxyError, cannedResponse, rateLimitedResponse, statusOf, withFields, type ErrorCode } from '../core/errors.js';
import { Exchange, type ClientSide } from '../handlers/forward.js';
import { FastcgiExchange } from '../handlers/fastcgi.js';
import type { ClientExchange } from '../handlers/client-exchange.js';
import { parseRequestHead, type HeadLimits, type RequestHead } from '../wire/http-head.js';
import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import { decide, unhandledDecision } from '../route/decide.js';
import { checkPolicies, type PolicyClient } from '../route/policy/index.js';
import { clientKey } from '../route/policy/client-address.js';
import type { Refusal, RouteLimits } from '../route/policy/route-limits.js';
import type { LimitStore } from '../route/policy/store.js';
import { listenerHost, type CompiledRoute, type FastcgiDecision, type ForwardDecision, type RequestVars, type Router, type StaticDecision, type TerminateDecision, type TunnelDecision } from '../route/router.js';
import { httpsRedirectAnswer, preflightAnswer, redirectAnswer, returnAnswer, type FixedAnswer } from '../handlers/fixed.js';
import { replyHead, type ReplyJob, type ReplyOwner } from '../handlers/reply.js';
import { StaticReply } from '../handlers/static.js';
import { staticFallback } from '../handlers/static-fallback.js';
import type { UpstreamClient, UpstreamPool } from '../upstream/pool.js';
import type { OpenKeys } from '../upstream/sticky.js';
import type { AccessLog, AnswerMode } from './access-log.js';
import type { Target } from '../upstream/balancer.js';
import { requestIdOf } from './request-id.js';
import { UpgradedTunnel, countStickyKey, releaseStickyKey, type StickyEntry, type TunnelOwner } from './upgrade.js';
import { endpointOf, unmapIPv4 } from '../core/util.js';
import { batchNow } from '../core/clock.js';
import type { ResponseHead } from '../wire/http-head.js';
import { TerminatedConnection, checkBackendAnswer, takeExtensionOffer, type TerminateOwner, type TerminateServices } from '../terminate/handoff.js';
import type { SessionEnd } from '../terminate/session.js';
import { NativeSocket, type NativeStart, type SocketOwner } from '../native/io.js';
import { markReady, startedFor } from '../handlers/fastcgi-native.js';
import { nativeExchangeOn } from '../native/exchange.js';

/** The addon may start FastCGI exchanges on ready connections (PORTICO_NATIVE_EXCHANGE=1; handlers/fastcgi-native.ts). */
const NATIVE_EXCHANGE = nativeExchangeOn();

export interface ListenerInfo {
  scheme: 'http' | 'https';
  /** Local port, for $server_port and X-Forwarded-Port. */
  port: number;
  /** A plain listener with https_redirect: every request is sent to https on this port. */
  httpsRedirectPort?: number;
}

/** What a worker's runtime gives each connection. Built by runtime.ts; never mutated while live. */
export interface ConnectionContext {
  readonly config: Config;
  readonly router: Router;
  readonly pools: ReadonlyMap<string, UpstreamPool>;
  readonly log: Logger;
  readonly worker: number;
  readonly metrics: Metrics;
  /** The worker's open tunnels per hash key (sticky tunnels); shared by every runtime of the worker. */
  readonly sticky?: OpenKeys;
  /** The worker's connection counts per client and refusal logs; shared by every runtime of the worker. */
  readonly limits?: LimitStore;
  /** Rate limits by route index; no entry = the route has none (and pays nothing). */
  readonly routeLimits?: ReadonlyArray<RouteLimits | undefined>;
  /** ACME HTTP-01 tokens of pending orders -> key authorization (primary/acme.ts); shared by every runtime of the worker. */
  readonly acmeTokens?: ReadonlyMap<string, string>;
  /** The worker's uWebSockets.js app and paced drainer (absent: no terminated WebSocket route in this worker). */
  readonly terminate?: TerminateServices;
  /** Where access lines go (log.access, log.access_file); absent = no line is built. */
  readonly accessLog?: AccessLog;
}

/** Where an ACME CA fetches an HTTP-01 key authorization (RFC 8555 §8.3). */
export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

/**
 * Where a connection takes the context of its next request: a reload swaps what `current` returns, so a
 * kept-alive connection routes its next request with the new config while the request in flight finishes on
 * the context it started with.
 */
export interface ContextSource {
  readonly current: ConnectionContext;
}

/** After Portico closes its side, how long a client gets to close its own before the socket is destroyed. */
const LINGER_MS = 5000;
/** Bytes of pipelined requests held while the current one is answered (the socket is paused past it). */
const MAX_PIPELINE_BUFFER = 256 * 1024;

/** The client and the address it connected to, as a trusted PROXY header named them (else the socket's ends). */
export interface ProxiedEnds {
  readonly source: ProxyEndpoint | undefined;
  readonly destination: ProxyEndpoint | undefined;
}

/**
 * Takes ownership of an accepted (and, for https, handshaken) client socket. `proxied`: set when the socket's
 * peer is not the client (a trusted PROXY header named it).
 */
export function handleConnection(socket: ByteSocket, listener: ListenerInfo, source: ContextSource, registry: ConnectionRegistry, proxied?: ProxiedEnds): void {
  new ClientConnection(socket, listener, source, registry, proxied);
}

type State = 'head' | 'busy' | 'tunnel' | 'closed';

/** The head limits of the last config asked for: built once per config, not per connection. */
let limitsOf: { config: Config; limits: HeadLimits } | null = null;

function headLimits(config: Config): HeadLimits {
  if (limitsOf !== null && limitsOf.config === config) return limitsOf.limits;
  const l = config.limits;
  const limits: HeadLimits = Object.freeze({ headerSize: l.header_size, uriSize: l.uri_size, headers: l.headers });
  limitsOf = { config, limits };
  return limits;
}

/**
 * A connection's socket handlers as listeners of a Node socket (PORTICO_NATIVE_IO=0, Node's TLS); a NativeSocket
 * calls them directly (setOwner), with no listener or closure per connection.
 */
interface NodeListeners {
  /** The connection leaves HTTP: all but 'close' are removed. */
  leaveHttp(socket: ByteSocket): void;
}

function nodeListeners(socket: ByteSocket, c: SocketOwner): NodeListeners {
  const onError = (err: Error): void => c.socketError(err);
  const onEnd = (): void => c.socketEnd();
  const onData = (chunk: Buffer): void => c.socketData(chunk);
  const onDrain = (): void => c.socketDrain();
  socket.on('error', onError);
  socket.on('close', () => c.socketClose());
  socket.on('end', onEnd);
  socket.on('data', onData);
  socket.on('drain', onDrain);
  return {
    leaveHttp(s: ByteSocket): void {
      s.removeListener('data', onData);
      s.removeListener('end', onEnd);
      s.removeListener('drain', onDrain);
      s.removeListener('error', onError);
    },
  };
}

class ClientConnection implements ClientSide, Tracked, PolicyClient, TunnelOwner, ReplyOwner, TerminateOwner, SocketOwner {
  readonly socket: ByteSocket;
  /** The context of the current (or next) request; taken from #source again before each new request head. */
  ctx: ConnectionContext;
  readonly id: number;
  registrySlot = -1;
  readonly #source: ContextSource;
  vars: RequestVars;
  #registry: ConnectionRegistry;
  #listener: ListenerInfo;
  #limits: HeadLimits;
  #state: State = 'head';
  /** Unparsed bytes: a head in progress, or pipelined requests waiting for the current response. */
  #buf: Buffer | null = null;
  #ex: ClientExchange | null = null;
  /** An answer Portico writes itself over time (a static file), instead of an exchange. */
  #job: ReplyJob | null = null;
  /** The request body of a local answer is not read: its bytes are dropped and the connection closes after. */
  #discard = false;
  /** The current route's CORS header lines for this request ('' without a CORS policy): on every answer, errors included. */
  corsHeaders = '';
  #tunnel: UpgradedTunnel | null = null;
  /** A terminate decision whose backend handshake is in progress, then its terminated WebSocket. */
  #terminate: { d: TerminateDecision; extensionOffer: string | undefined; head: RequestHead; adopt: boolean } | null = null;
  #terminated: TerminatedConnection | null = null;
  /** What the terminated WebSocket's end needs of its exchange (the target it counts on, the log's fields): not the exchange and its heads. */
  #terminatedAt: { readonly route: string; readonly path: string; readonly target: Target | null } | null = null;
  /** The hash key a terminated WebSocket holds on its target while open (sticky tunnels), to release at its end. */
  #terminatedKey: StickyEntry | null = null;
  readonly remoteAddr: string;
  #proxied: ProxiedEnds | undefined;
  #upstreamClient: UpstreamClient | null = null;
  /** Pools that send PROXY headers this connection used: its idle sockets there are dropped when it ends. */
  #proxiedPools: Set<UpstreamPool> | null = null;
  /** Deadline (ms) for the head phase; 0 = none. `#keepalive`: waiting for the first byte of a next request. */
  #deadline = 0;
  #keepalive = false;
  #bodyPaused = false;
  #paused = false;
  #closeAfter = false;
  /**
   * The request in progress said `Connection: close` (or was HTTP/1.0 without keep-alive) and was read whole: the
   * client expects the close and sends nothing more, so after the answer the socket closes at once (nginx's
   * lingering_close heuristic) instead of a FIN and a wait for the client's (#closeAtOnce).
   */
  #askedClose = false;
  #requests = 0;
  #activityMark = -1;
  #log: Logger | null = null;
  /** The client key (policy/client-address.ts), built on first use by a limit. */
  #clientKey: string | null = null;
  /** Set while this connection counts against limits.connections_per_ip: the store and key to release. */
  #counted: { store: LimitStore; key: string } | null = null;

  constructor(socket: ByteSocket, listener: ListenerInfo, source: ContextSource, registry: ConnectionRegistry, proxied?: ProxiedEnds) {
    this.socket = socket;
    this.#source = source;
    const ctx = source.current;
    this.ctx = ctx;
    this.#registry = registry;
    this.#listener = listener;
    this.#limits = headLimits(ctx.config);
    this.#proxied = proxied;
    const ra = proxied?.source?.address ?? socket.remoteAddress ?? '';
    this.remoteAddr = unmapIPv4(ra);
    this.vars = { remoteAddr: this.remoteAddr, host: '', scheme: listener.scheme, requestUri: '', serverPort: listener.port, trustedPeer: false };
    if (ctx.limits !== undefined && ctx.config.limits.connections_per_ip !== 'off' && !this.#countConnection(ctx.limits, ctx.config.limits.connections_per_ip)) {
      this.#state = 'closed';
      this.id = 0;
      socket.destroy();
      return;
    }
    // a native socket calls this connection's socket* methods; Node's gets them as listeners (nodeListeners)
    if (socket instanceof NativeSocket) socket.setOwner(this);
    else this.#listeners = nodeListeners(socket, this);
    socket.setNoDelay(true);
    this.id = registry.add(this);
    const headTimeout = ctx.config.timeouts.head;
    this.#deadline = headTimeout > 0 ? Date.now() + headTimeout : 0;
    if (registry.draining) this.#closeAfter = true;
  }

  get bodyTimeout(): number {
    return this.ctx.config.timeouts.body;
  }

  /** Where a chunked body to a FastCGI route waits for its length (handlers/body-buffer.ts). */
  get bodyBuffer(): Config['body_buffer'] {
    return this.ctx.config.body_buffer;
  }

  get maxBodySize(): number {
    const max = this.ctx.config.limits.body_size;
    return max === 'off' ? Infinity : max;
  }

  /** The client key of limits (policy/client-address.ts). */
  get clientKey(): string {
    return (this.#clientKey ??= clientKey(this.remoteAddr, this.ctx.config.limits.ipv6_prefix));
  }

  /** limits.connections_per_ip: counts this connection (released at its end), or refuses it (false). */
  #countConnection(store: LimitStore, max: number): boolean {
    const key = this.clientKey;
    if (store.connections.acquire(key, max)) {
      this.#counted = { store, key };
      return true;
    }
    this.ctx.metrics.connectionRefused('connections_per_ip');
    store.connectionLog.refused(key, this.remoteAddr, Date.now());
    return false;
  }

  #releaseConnection(): void {
    const c = this.#counted;
    if (c === null) return;
    this.#counted = null;
    c.store.connections.release(c.key);
  }

  get closing(): boolean {
    return this.#closeAfter || this.#registry.draining;
  }

  /**
   * This connection towards upstreams that send PROXY headers: its source and the address it reached, keyed by
   * both, so a pooled upstream socket whose header named it serves it alone (HAProxy keys reuse the same way).
   * Built on first use, while the socket still knows its addresses.
   */
  get upstreamClient(): UpstreamClient {
    if (this.#upstreamClient === null) {
      const s = this.socket;
      const source = this.#proxied?.source ?? endpointOf(s.remoteAddress, s.remotePort);
      const destination = this.#proxied?.destination ?? endpointOf(s.localAddress, s.localPort);
      // an end that is not known would give every such client one key: this connection's id keeps it its own
      const key = source === undefined || destination === undefined ? `#${this.id}` : `${source.address} ${source.port} ${destination.address} ${destination.port}`;
      this.#upstreamClient = { key, source, destination };
    }
    return this.#upstreamClient;
  }

  /** Its idle sockets in PROXY-sending pools can serve no one else: closed once it will send no more requests. */
  #dropUpstreamClient(): void {
    const pools = this.#proxiedPools;
    if (pools === null || this.#upstreamClient === null) return;
    this.#proxiedPools = null;
    for (const pool of pools) pool.dropClient(this.#upstreamClient.key);
  }

  get log(): Logger {
    return (this.#log ??= this.ctx.log.child({ conn: this.id }));
  }

  /** Node's sockets only (NativeSocket.setOwner takes the connection itself). */
  #listeners: NodeListeners | null = null;

  /** A STARTED event's exchange, while its head is parsed and routed (#fastcgi adopts it). */
  #started: NativeStart | null = null;

  /**
   * The addon started a FastCGI exchange with this read (the connection was marked ready): the head is parsed and
   * routed as any, and #fastcgi adopts the exchange when the route is the one the addon matched. Should it not be
   * (never, unless the two matchers disagree), the request the addon sent is dropped with its connection and the
   * head is served as JS would have served it.
   */
  socketStarted(start: NativeStart, head: Buffer): void {
    this.#started = start;
    this.socketData(head);
    if (this.#started !== null) {
      this.#started = null;
      start.upstream.destroy();
    }
  }

  /**
   * Between exchanges, idle with nothing buffered: the addon may start the next FastCGI request itself
   * (handlers/fastcgi-native.ts). Not while the batch still holds an event of this connection read before now.
   */
  #markReady(): void {
    const s = this.socket;
    if (!(s instanceof NativeSocket) || this.#paused || this.closing || s.inBatch) return;
    const l = this.#listener;
    markReady(s, this.#source.current, l.scheme === 'http' && l.httpsRedirectPort === undefined && this.#proxied === undefined, this.remoteAddr, l.port);
  }

  socketData(chunk: Buffer): void {
    if (this.#state === 'head') {
      if (this.#buf === null) {
        this.#buf = chunk;
      } else {
        this.#buf = Buffer.concat([this.#buf, chunk]);
        // a slow client's head is re-parsed only when a line ended (or the limit is reached), not per byte
        if (chunk.indexOf(10) === -1 && this.#buf.length <= this.#limits.headerSize) return;
      }
      this.#parse();
      return;
    }
    if (this.#state !== 'busy') return;
    if (this.#ex === null) {
      // a local answer in progress: an unread body is dropped; pipelined requests wait (bounded, paused past it)
      if (this.#discard) return;
      this.#buf = this.#buf === null ? chunk : Buffer.concat([this.#buf, chunk]);
      if (this.#buf.length > MAX_PIPELINE_BUFFER) this.#updateFlow();
      return;
    }
    if (this.#buf !== null) {
      // pipelined bytes behind the current request: hold them (bounded) until its response is done
      this.#buf = Buffer.concat([this.#buf, chunk]);
      if (this.#buf.length > MAX_PIPELINE_BUFFER) this.#updateFlow();
      return;
    }
    this.#feedExchange(chunk);
  }

  /** Client bytes while a request is in progress: body bytes go to the exchange, the rest waits. */
  #feedExchange(chunk: Buffer): void {
    const ex = this.#ex!;
    const used = ex.clientData(chunk, 0);
    if (used < 0) {
      // bad framing or over limits.body_size: the upstream request is cut (its socket destroyed, never pooled)
      const err = ex.bodyError;
      ex.abort(err);
      this.#requestFailed(ex, err);
      return;
    }
    if (used < chunk.length) {
      this.#buf = chunk.subarray(used);
      this.#updateFlow();
    }
  }

  #parse(): void {
    const buf = this.#buf!;
    const firstBytes = this.#keepalive;
    if (firstBytes) {
      // the first bytes of a next request: from now on the head timeout applies, with the latest config
      this.#keepalive = false;
      this.#refreshContext();
    }
    const r = parseRequestHead(buf, this.#limits);
    if (r.kind === 'more') {
      if (firstBytes) {
        // (a head that came whole is dispatched at once, and needs no deadline)
        const t = this.ctx.config.timeouts.head;
        this.#deadline = t > 0 ? batchNow() + t : 0;
      }
      return;
    }
    if (r.kind === 'error') {
      this.#reject(r.code, r.reason);
      return;
    }
    this.#buf = r.used < buf.length ? buf.subarray(r.used) : null;
    this.#dispatch(r.head);
  }

  #dispatch(head: RequestHead): void {
    this.#refreshContext();
    this.#requests++;
    this.#deadline = 0;
    // ACME HTTP-01: the CA fetches the key authorization of a pending order; only a known token is answered here,
    // every other request (this prefix included) is routed as usual
    const acme = this.ctx.acmeTokens;
    if (acme !== undefined && acme.size > 0 && head.path.startsWith(ACME_CHALLENGE_PREFIX)) {
      const answer = acme.get(head.path.slice(ACME_CHALLENGE_PREFIX.length));
      if (answer !== undefined) return this.#answerAcme(answer);
    }
    this.corsHeaders = '';
    const redirectPort = this.#listener.httpsRedirectPort;
    if (redirectPort !== undefined) {
      this.#setVars(head);
      this.#answer(httpsRedirectAnswer(head, this.vars.host, redirectPort), head, 'redirect', undefined);
      return;
    }
    // routes match, and the upstream gets, the normalized path (wire/path.ts); the log keeps the raw target
    let d = decide(this.ctx.router, head);
    // a peek-mode connection (handoff: adopt) keeps its bytes in the kernel only for a first HTTP/1.1 request to
    // such a route with nothing read past its head; anything else is read for good from here (terminate/handoff.ts)
    const adopt = this.#requests === 1 && this.#buf === null && d.kind === 'terminate' && d.websocket.handoff === 'adopt' && head.versionMinor === 1;
    if (!adopt && this.socket instanceof NativeSocket) this.socket.commit();
    if (d.kind === 'static' && d.fallback !== undefined) {
      // a path that names nothing on a static route with a fallback is routed again as the fallback's URI, once;
      // the route it lands on answers, with its own policies (handlers/static-fallback.ts)
      d = staticFallback(this.ctx.router, d, head, this.log) ?? d;
    }
    if (d.kind === 'reject') {
      this.#reject(d.code, d.reason, head);
      return;
    }
    const cors = d.route.cors;
    if (cors !== undefined) this.corsHeaders = cors.responseHeaders(head);
    const maxBody = this.ctx.config.limits.body_size;
    if (maxBody !== 'off' && head.contentLength > maxBody) {
      this.#reject('CLIENT_BODY_TOO_LARGE', `Content-Length ${head.contentLength} over ${maxBody}`, head);
      return;
    }
    // the route's policies (CORS preflight, rate limits), before any handler runs
    const verdict = checkPolicies(this.ctx.routeLimits, d, head, this);
    if (verdict !== null) {
      if ('kind' in verdict) {
        this.corsHeaders = ''; // the preflight answer carries its own grant
        this.#answer(preflightAnswer(verdict), head, 'preflight', d.route);
      }
      else this.#rateLimited(verdict);
      return;
    }
    switch (d.kind) {
      case 'forward':
      case 'tunnel':
        this.#forward(d, head);
        return;
      case 'static':
        this.#serveStatic(d, head);
        return;
      case 'redirect':
        this.#setVars(head);
        this.#answer(redirectAnswer(d, head, this.vars), head, 'redirect', d.route);
        return;
      case 'return':
        this.#answer(returnAnswer(d), head, 'return', d.route);
        return;
      case 'terminate':
        // the backend's handshake first (as a tunnel's), then the client's WebSocket goes to uWebSockets.js
        if (this.ctx.terminate === undefined) {
          this.#reject('INTERNAL', 'uWebSockets.js is not running in this worker', head);
          return;
        }
        this.#terminate = { d, extensionOffer: takeExtensionOffer(head), head, adopt };
        this.#forward(d, head);
        return;
      case 'fastcgi':
        this.#fastcgi(d, head);
        return;
      default:
        // a Decision kind without a case here does not compile (router.ts Decision says how to add one)
        unhandledDecision(d);
    }
  }

  /** Forward, tunnel and terminate decisions: an Exchange to the route's pool (a WebSocket waits for a valid 101 in it). */
  #forward(d: ForwardDecision | TunnelDecision | TerminateDecision, head: RequestHead): void {
    const route = d.route;
    const pool = this.ctx.pools.get(d.upstream);
    if (pool === undefined) {
      this.#reject('INTERNAL', `route ${route.name} names a missing upstream`, head);
      return;
    }
    if (pool.sendsProxyHeader) (this.#proxiedPools ??= new Set()).add(pool);
    this.#setVars(head);
    const ex = new Exchange(this, head, route, pool, d.kind !== 'forward');
    if (d.kind === 'terminate') ex.holdUpgrade = true;
    this.#run(ex);
  }

  /** FastCGI decisions: the script run by the route's FastCGI pool (handlers/fastcgi.ts). */
  #fastcgi(d: FastcgiDecision, head: RequestHead): void {
    const pool = this.ctx.pools.get(d.upstream);
    if (pool === undefined) {
      this.#reject('INTERNAL', `route ${d.route.name} names a missing upstream`, head);
      return;
    }
    if (pool.sendsProxyHeader) (this.#proxiedPools ??= new Set()).add(pool);
    this.#setVars(head);
    const ex = new FastcgiExchange(this, head, d, pool);
    const started = this.#started;
    if (started !== null) {
      // the addon started this request (socketStarted): adopted when it is this route's, on a socket of this pool
      const target = startedFor(started, this.ctx.router, d.route) && this.#buf === null ? pool.takeLent(started.upstream) : null;
      if (target !== null) {
        this.#started = null;
        this.#run(ex, started, target);
        return;
      }
    }
    this.#run(ex);
  }

  /**
   * Runs an exchange: the connection is busy until it reports back; body bytes read with the head go to it first.
   * `started`: a FastCGI exchange the addon started on a socket of `target`, adopted instead of started.
   */
  #run(ex: ClientExchange, started?: NativeStart, target?: Target): void {
    if (!ex.head.keepAlive) this.#closeAfter = true;
    this.#askedClose = !ex.head.keepAlive;
    this.#ex = ex;
    this.#state = 'busy';
    this.#activityMark = -1;
    const rest = this.#buf;
    this.#buf = null;
    if (rest !== null) {
      this.#feedExchange(rest);
      if (this.#ex !== ex) return; // the body was invalid and the request already failed
    }
    if (started !== undefined) (ex as FastcgiExchange).adoptStarted(started.upstream, target!, started);
    else ex.start();
  }

  /** The request's template variables ($host, $scheme, $request_uri...). */
  #setVars(head: RequestHead): void {
    const host = head.host !== undefined && head.host !== '' ? head.host : listenerHost(this.#proxied?.destination?.address ?? this.socket.localAddress);
    const trustedPeer = this.ctx.router.forwarding.trusts(this.remoteAddr);
    const requestId = this.ctx.config.log.request_id ? requestIdOf(head) : undefined;
    this.vars = { remoteAddr: this.remoteAddr, host, scheme: this.#listener.scheme, requestUri: head.target, serverPort: this.#listener.port, trustedPeer, requestId };
  }

  /** Whether a request's body is left unread by a local answer (then the connection closes after it). */
  static #hasBody(head: RequestHead): boolean {
    return head.bodyKind === 'chunked' || (head.bodyKind === 'length' && head.contentLength > 0);
  }

  /** Before a local answer: a body is not read (dropped, close after), a non-keep-alive request closes after. */
  #beginLocal(head: RequestHead): void {
    if (!head.keepAlive) this.#closeAfter = true;
    this.#askedClose = !head.keepAlive && !ClientConnection.#hasBody(head);
    if (ClientConnection.#hasBody(head)) {
      this.#closeAfter = true;
      this.#discard = true;
      this.#buf = null;
    }
  }

  /** The route's `response_headers.set` lines for an answer Portico makes itself. */
  #routeFields(route: CompiledRoute | undefined): string {
    if (route === undefined || route.responseHeaders.set.length === 0) return '';
    let out = '';
    for (const h of route.responseHeaders.set) out += `${h.name}: ${h.render(this.vars)}\r\n`;
    return out;
  }

  /** A fixed answer (redirect, return, preflight): written in one write, then the next request. */
  #answer(a: FixedAnswer, head: RequestHead, mode: AnswerMode, route: CompiledRoute | undefined): void {
    const startedAt = Date.now();
    this.#beginLocal(head);
    if (route !== undefined) this.#setVars(head);
    const close = this.closing;
    const noBody = a.status === 204 || a.status === 304;
    const out = replyHead(a.status, a.fields + this.#routeFields(route) + this.corsHeaders, noBody ? 'none' : { length: a.body.length }, close ? 'close' : head.versionMinor === 0 ? 'keep-alive' : '');
    const bytes = out.length + (noBody || head.method === 'HEAD' ? 0 : a.body.length);
    if (noBody || head.method === 'HEAD' || a.body.length === 0) this.socket.write(out, 'latin1');
    else this.socket.write(Buffer.concat([Buffer.from(out, 'latin1'), a.body]));
    this.ctx.metrics.request(a.status, 0, bytes);
    this.ctx.accessLog?.answer(this, mode, route?.name, head, this.vars.requestId, a.status, bytes, startedAt);
    this.#state = 'busy';
    this.#requestEnded(!close, true);
  }

  /** A static route: the file job runs over events and reports through replyDone/replyFailed. */
  #serveStatic(d: StaticDecision, head: RequestHead): void {
    this.#beginLocal(head);
    this.#setVars(head);
    this.#state = 'busy';
    this.#activityMark = -1;
    const job = new StaticReply(this, d, head, this.#routeFields(d.route) + this.corsHeaders);
    this.#job = job;
    job.start();
  }

  replyDone(job: ReplyJob): void {
    if (this.#job !== job) return;
    this.#job = null;
    this.ctx.metrics.request(job.status, 0, job.bytesOut);
    this.ctx.accessLog?.answer(this, 'static', job.route.name, job.head, this.vars.requestId, job.status, job.bytesOut, job.startedAt);
    this.#requestEnded(!this.closing);
  }

  replyFailed(job: ReplyJob, err: ProxyError): void {
    if (this.#job !== job) return;
    this.#job = null;
    const status = job.responseStarted ? job.status : statusOf(err.code);
    this.ctx.metrics.request(status, 0, job.bytesOut);
    this.ctx.accessLog?.answer(this, 'static', job.route.name, job.head, this.vars.requestId, status, job.bytesOut, job.startedAt, err);
    this.#state = 'closed';
    if (!job.responseStarted) this.#writeCanned(err.code);
    else this.socket.destroy();
  }

  setBodyPaused(paused: boolean): void {
    this.#bodyPaused = paused;
    this.#updateFlow();
  }

  /** Reads from the client only when an exchange can take the bytes and the pipeline buffer has room. */
  #updateFlow(): void {
    const pause = this.#state === 'busy' && (this.#bodyPaused || (this.#buf !== null && (this.#ex === null || this.#ex.requestComplete || this.#buf.length > MAX_PIPELINE_BUFFER)));
    if (pause === this.#paused) return;
    this.#paused = pause;
    if (pause) this.socket.pause();
    else this.socket.resume();
  }

  exchangeDone(ex: ClientExchange, clientReusable: boolean): void {
    if (this.#ex !== ex) return;
    this.#ex = null;
    this.#bodyPaused = false;
    if (!ex.requestComplete) this.#askedClose = false; // body bytes may still be on their way
    this.#accessLog(ex, ex.status, undefined);
    this.ctx.metrics.request(ex.status, ex.bytesIn, ex.bytesOut);
    this.#observe(ex, ex.status);
    this.#requestEnded(clientReusable);
  }

  /** A response went out whole: close, or wait for the next request (a pipelined one is parsed at once). */
  #requestEnded(clientReusable: boolean, inDispatch = false): void {
    this.#discard = false;
    this.corsHeaders = '';
    if (!clientReusable || this.closing) {
      this.#state = 'closed';
      this.#end();
      return;
    }
    this.#state = 'head';
    const ka = this.ctx.config.timeouts.keepalive;
    this.#keepalive = true;
    this.#deadline = ka > 0 ? batchNow() + ka : 0;
    this.#updateFlow();
    if (this.#buf === null) {
      if (NATIVE_EXCHANGE) this.#markReady();
      return;
    }
    if (!inDispatch) {
      this.#parse();
      return;
    }
    // a local answer ends inside its own dispatch: the next pipelined request is parsed on a later turn (no
    // recursion per request), and only once the client took what was written (bounded output)
    if (this.socket.writableLength > MAX_PIPELINE_BUFFER) this.#parseOnDrain = true;
    else setImmediate(() => this.#parseNext());
  }

  #parseOnDrain = false;
  #parseNext(): void {
    if (this.#state === 'head' && this.#buf !== null) this.#parse();
  }

  /** Between requests: a reload may have swapped the context; the next request uses the new one. */
  #refreshContext(): void {
    const ctx = this.#source.current;
    if (ctx === this.ctx) return;
    this.ctx = ctx;
    this.#limits = headLimits(ctx.config);
    this.#log = null;
  }

  exchangeFailed(ex: ClientExchange, err: ProxyError): void {
    if (this.#ex !== ex) return;
    this.#requestFailed(ex, err);
  }

  #requestFailed(ex: ClientExchange, err: ProxyError): void {
    this.#ex = null;
    if (!ex.requestComplete) this.#askedClose = false;
    const status = statusOf(err.code);
    this.#accessLog(ex, status, err);
    this.ctx.metrics.request(status, ex.bytesIn, ex.bytesOut);
    this.#observe(ex, status);
    if (err.side === 'upstream') this.ctx.metrics.upstreamError(err.code);
    else if (err.code === 'FD_LIMIT') this.ctx.metrics.connectionRefused('fd_limit');
    this.#state = 'closed';
    if (!ex.responseStarted) this.#writeCanned(err.code);
    else this.socket.destroy();
  }

  exchangeUpgraded(ex: Exchange, upstream: ByteSocket, upstreamRest: Buffer | null, res: ResponseHead | null, sentDown: Buffer | null = null): void {
    // (a 101 the addon wrote, res null, is never a terminated WebSocket's: the exchange holds those back)
    if (this.#terminate !== null && res !== null) return this.#startTerminated(ex, upstream, upstreamRest, res);
    // from here the tunnel owns both sockets; the registry entry goes when the tunnel reports its end
    const clientRest = this.#leaveHttp();
    this.#tunnel = new UpgradedTunnel(this, this.#registry, this.ctx, ex, this.socket, upstream);
    this.#tunnel.start(clientRest, upstreamRest, sentDown);
  }

  /**
   * The connection leaves HTTP for good (a tunnel or a terminated WebSocket owns its socket from here): no
   * exchange, no deadline, none of this connection's socket listeners. Returns the client's bytes read past the head.
   */
  #leaveHttp(): Buffer | null {
    this.#ex = null;
    this.#state = 'tunnel';
    this.#dropUpstreamClient();
    this.#deadline = 0;
    const socket = this.socket;
    // 'close' stays with Node's socket (socketClose ignores it from here); a native one has no owner any more
    if (socket instanceof NativeSocket) socket.setOwner(null);
    else if (this.#listeners !== null) this.#listeners.leaveHttp(socket);
    const rest = this.#buf;
    this.#buf = null;
    return rest;
  }

  /** The backend accepted the handshake: the client's WebSocket is handed to uWebSockets.js (terminate/handoff.ts). */
  #startTerminated(ex: Exchange, upstream: ByteSocket, upstreamRest: Buffer | null, res: ResponseHead): void {
    const t = this.#terminate!;
    const bad = checkBackendAnswer(t.head, res);
    if (bad !== undefined) {
      upstream.destroy();
      if (ex.target !== null) ex.target.active--;
      this.#requestFailed(ex, new ProxyError('UPSTREAM_HANDSHAKE_INVALID', bad));
      return;
    }
    const clientRest = this.#leaveHttp();
    const socket = this.socket;
    // from here the connection keeps only what the end needs (an idle WebSocket would keep the heads otherwise)
    this.#terminate = null;
    this.#terminatedAt = { route: ex.route.name, path: ex.head.target, target: ex.target };
    const ends = this.upstreamClient;
    this.#terminated = new TerminatedConnection(this, this.ctx.terminate!, this.ctx.metrics, {
      client: socket,
      clientRest,
      clientHead: t.head,
      extensionOffer: t.extensionOffer,
      source: ends.source,
      destination: ends.destination,
      backend: upstream,
      backendRest: upstreamRest,
      backendAnswer: res,
      websocket: t.d.websocket,
      route: t.d.route.name,
      upstream: t.d.upstream,
      target: ex.target?.id ?? '',
      adopt: t.adopt,
    });
    this.#terminatedKey = countStickyKey(this.ctx, ex);
    if (this.#registry.draining) this.#terminated.drain();
  }

  /** The terminated WebSocket is over (terminate/handoff.ts): logged, and the connection is gone. */
  terminatedEnded(end: SessionEnd | undefined): void {
    const at = this.#terminatedAt;
    this.#terminatedAt = null;
    if (at !== null && at.target !== null) at.target.active--;
    releaseStickyKey(this.#terminatedKey);
    this.#terminatedKey = null;
    if (at !== null && end !== undefined) this.ctx.accessLog?.terminated(this, { route: { name: at.route }, target: at.target, head: { target: at.path } }, end);
    this.#registry.delete(this);
    this.#releaseConnection();
  }

  /** The tunnel reported its end (upgrade.ts): the connection is gone. */
  tunnelEnded(): void {
    this.#registry.delete(this);
    this.#releaseConnection();
  }

  socketDrain(): void {
    this.#ex?.clientDrained();
    this.#job?.clientDrained();
    if (this.#parseOnDrain) {
      this.#parseOnDrain = false;
      this.#parseNext();
    }
  }

  /** The client half-closed: finish the request in progress if it was read whole, else give up. */
  socketEnd(): void {
    if (this.#state === 'busy' && this.#ex !== null && this.#ex.requestComplete) {
      this.#closeAfter = true;
      this.#ex.clientClosing?.();
      return;
    }
    if (this.#state === 'head' && this.#buf !== null) {
      // a partial head followed by FIN: nothing sensible to answer
      this.socket.destroy();
      return;
    }
    this.#teardown();
  }

  socketError(): void {
    this.#teardown();
  }

  socketClose(): void {
    // a tunnel owns the socket (a spliced one closes the JS socket at hand-over): it reports its own end
    if (this.#state === 'tunnel') return;
    this.#teardown();
    this.#dropUpstreamClient();
    this.#state = 'closed';
    this.#registry.delete(this);
    this.#releaseConnection();
  }

  /** The client is gone: drop the exchange (logged as 499) and the socket. */
  #teardown(): void {
    const ex = this.#ex;
    if (ex !== null) {
      this.#ex = null;
      const err = new ProxyError('CLIENT_CLOSED', 'client closed the connection before the response was complete');
      ex.abort(err);
      this.#accessLog(ex, 499, err);
      this.ctx.metrics.request(499, ex.bytesIn, ex.bytesOut);
      this.#observe(ex, 499);
    }
    const job = this.#job;
    if (job !== null) {
      this.#job = null;
      job.abort();
      this.ctx.metrics.request(499, 0, job.bytesOut);
      this.ctx.accessLog?.answer(this, 'static', job.route.name, job.head, this.vars.requestId, 499, job.bytesOut, job.startedAt, new ProxyError('CLIENT_CLOSED', 'client closed the connection before the answer was complete'));
    }
    if (this.#state !== 'tunnel') this.#state = 'closed';
    if (!this.socket.destroyed) this.socket.destroy();
  }

  /** Canned response for an error found before any exchange (bad head, no route...), then close. */
  #reject(code: ErrorCode, reason: string, head?: RequestHead): void {
    this.#state = 'closed';
    this.#askedClose = head !== undefined && !head.keepAlive && !ClientConnection.#hasBody(head) && this.#buf === null;
    this.#buf = null;
    const status = statusOf(code);
    this.ctx.metrics.request(status, 0, 0);
    this.ctx.accessLog?.rejected(this, head, head === undefined || !this.ctx.config.log.request_id ? undefined : requestIdOf(head), status, code, reason);
    this.#writeCanned(code);
  }

  /** A route's rate limit refused the request: 429 with Retry-After, counted; logged by the limit (once per key per interval), not per request. */
  #rateLimited(refusal: Refusal): void {
    this.#state = 'closed';
    this.#buf = null;
    this.ctx.metrics.request(429, 0, 0);
    this.ctx.metrics.rateLimited(refusal.limit.metricId);
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) {
      socket.destroy();
      return;
    }
    socket.end(withFields(rateLimitedResponse(refusal.retryAfterMs / 1000), this.corsHeaders));
    this.#linger();
  }

  #answerAcme(keyAuthorization: string): void {
    this.#state = 'closed';
    this.#buf = null;
    this.ctx.metrics.request(200, 0, 0);
    this.ctx.log.info({ remoteAddr: this.remoteAddr }, 'acme: answered an http-01 challenge');
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) return void socket.destroy();
    socket.end(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(keyAuthorization)}\r\nConnection: close\r\n\r\n${keyAuthorization}`);
    this.#linger();
  }

  #writeCanned(code: ErrorCode): void {
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) {
      socket.destroy();
      return;
    }
    socket.write(withFields(cannedResponse(code), this.corsHeaders));
    this.#end();
  }

  /**
   * After an answer the client asked to be the last: close now when nothing can be lost by it. A close with
   * nothing unread sends a FIN after the answer, like shutdown(); it saves the shutdown, the wait for the client's
   * FIN and its read. Only on a native socket whose answer is all in the kernel (destroy() drops what is queued),
   * on TLS once its close_notify went out whole right now (as nginx closes: the client's own close_notify, if it
   * sends one, then meets a closed socket, after it read the answer), and with no byte read past the request
   * (unread bytes at close(2) would make the kernel send RST, which can destroy the answer in flight: such a
   * client lingers).
   */
  #closeAtOnce(): boolean {
    const s = this.socket;
    if (!this.#askedClose || this.#buf !== null || this.#paused || !(s instanceof NativeSocket) || s.writableLength !== 0 || s.destroyed) return false;
    return !s.encrypted || s.closeNotify();
  }

  /** Orderly close after a complete response: at once when nothing can be lost by it, else FIN and linger. */
  #end(): void {
    if (this.#closeAtOnce()) {
      this.#state = 'closed';
      this.socket.destroy();
      return;
    }
    this.socket.end();
    this.#linger();
  }

  /**
   * Our side is closed: keep reading (and dropping) what the client still sends until it closes too, so the
   * kernel does not answer unread bytes with a reset that could destroy the response in flight. Bounded.
   */
  #linger(): void {
    this.#state = 'closed';
    this.#buf = null;
    this.#deadline = Date.now() + LINGER_MS;
    if (this.#paused) {
      this.#paused = false;
      this.socket.resume();
    }
  }

  /** The exchange's latencies and its target's response, for the histograms (core/metrics.ts exchange()). */
  #observe(ex: ClientExchange, status: number): void {
    const target = ex.target ?? ex.lastTarget;
    this.ctx.metrics.exchange(ex.route.name, ex.pool.name, target?.id, status, performance.now() - ex.startedHr, ex.connectMs, ex.reusedSocket, ex.firstByteMs);
  }

  #accessLog(ex: ClientExchange, status: number, err: ProxyError | undefined): void {
    if (ex instanceof Exchange) this.ctx.accessLog?.request(this, ex, this.vars.requestId, status, err);
    else this.ctx.accessLog?.exchange(this, ex, this.vars.requestId, status, err);
  }

  /** Deadline checks, once per sweep. */
  sweep(now: number): void {
    switch (this.#state) {
      case 'head':
        if (this.#deadline !== 0 && now >= this.#deadline) {
          if (this.#keepalive || this.#buf === null) {
            // idle keep-alive (or a connection that never sent a byte): close quietly, like nginx
            this.#state = 'closed';
            this.socket.destroy();
          } else {
            this.#reject('CLIENT_HEAD_TIMEOUT', 'request head not complete in time');
          }
        }
        return;
      case 'busy': {
        const ex = this.#ex;
        if (ex === null) {
          this.#job?.checkDeadline(now);
          return;
        }
        const mark = ex.bytesIn + ex.bytesOut;
        if (mark !== this.#activityMark) {
          this.#activityMark = mark;
          ex.touch(now);
        }
        ex.checkDeadline(now);
        return;
      }
      case 'tunnel':
        this.#tunnel?.relay.checkIdle(now);
        this.#terminated?.sweep(now);
        return;
      case 'closed':
        if (this.#deadline !== 0 && now >= this.#deadline) this.socket.destroy();
        return;
    }
  }

  /** Shutdown began a moment ago: an idle connection closes now; a busy one after its response (closing is true). */
  drain(): void {
    if (this.#terminated !== null) {
      this.#terminated.drain();
      return;
    }
    if (this.#state === 'head' && this.#buf === null) {
      this.#state = 'closed';
      this.#end();
    }
  }

  /** Shutdown begins: an answer the addon was to relay with a keep-alive head comes back to say `Connection: close`. */
  draining(): void {
    this.#ex?.clientClosing?.();
  }

  /** End of the shutdown grace: whatever is left is closed now (a WebSocket tunnel with Close frames, 1001). */
  forceClose(): void {
    if (this.#terminated !== null) this.#terminated.forceClose();
    else if (this.#tunnel !== null) this.#tunnel.relay.shutdown();
    else this.#teardown();
  }
}
