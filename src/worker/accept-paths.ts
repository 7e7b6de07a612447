// The accept path of each listener, compiled once per apply: fd budget check and connections_per_ip at accept,
// then the preface (PROXY header, ClientHello), TLS termination, and the hand-over to connection.ts or an L4
// relay (tunnel/l4.ts); refusals before routing are counted and logged here. It opens no listening socket and
// keeps no runtime of its own: apply.ts binds the sockets and swaps, the Worker (main.ts) gives the runtime.
import { endpointOf, unmapIPv4 } from '../core/util.js';
import type { Socket } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { PassthroughTable, forwardL4, logUnknownName, refuseClientHello } from '../tunnel/l4.js';
import type { AcceptedSocket, Listening, ListenOptions, OnConnection } from '../accept/listener.js';
import { NativeL4 } from '../tunnel/l4-native.js';
import { prefaceBeforeTls, readPreface, type PrefaceResult } from '../accept/preface.js';
import { createCidrMatcher, type ProxyEndpoint, type ProxyHeader } from '../wire/proxy-protocol.js';
import { createNativeTlsServer, createTlsServer } from '../accept/tls.js';
import { answersTlsAlpn } from '../config/acme-alpn-config.js';
import { adoptNativeTls, nativeTlsStatus, startNativeTls, useTicketSecret, type NativeTlsServer } from '../native/tls.js';
import type { Config } from '../config/schema.js';
import type { ConnectionRegistry } from '../core/registry.js';
import { handleConnection, type ContextSource, type ListenerInfo, type ProxiedEnds } from '../http/connection.js';
import { ProxyError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { FdBudget, FD_RESERVE } from './fd-limit.js';
import type { ByteSocket } from '../core/socket.js';
import { NativeSocket, adoptNative, nativePeekAvailable, type AcceptMode } from '../native/io.js';
import { adoptRoutePaths } from '../terminate/uws.js';
import type { Metrics, RefusedReason } from '../core/metrics.js';
import { clientKey } from '../route/policy/client-address.js';
import type { LimitStore } from '../route/policy/store.js';
import type { Runtime } from './runtime.js';

/** Connections refused for lack of file descriptors are logged at most once per this period (with the count). */
const FD_LOG_INTERVAL_MS = 10_000;

const LISTEN_OPTIONS: ListenOptions = { allowHalfOpen: true };

/**
 * Every listening socket accepts paused (pauseOnConnect): nothing is read until the accept path starts reading.
 * A tcp listener without PROXY needs it (the client's first bytes stay in the kernel for the splice hand-over),
 * and a socket kept across a reload may serve any kind of listener next, so all accept the same way.
 */
export const ACCEPT_OPTIONS: ListenOptions = { ...LISTEN_OPTIONS, pauseOnConnect: true };

/** What a listener that reads no preface hands on: no header, no hello, nothing read ahead. */
const NO_PREFACE: PrefaceResult & { kind: 'done' } = Object.freeze({ kind: 'done', proxy: undefined, hello: undefined, rest: null, used: 0 });

/**
 * What a natively accepted connection of listener `index` does first: 'hold' (nothing read, the bytes stay in the
 * kernel) for a tcp listener without PROXY (splice; the server may speak first) and for a TLS listener that reads
 * no preface (the addon's TLS, or Node's, reads the ClientHello itself); 'read' for every listener that reads the first bytes in
 * JavaScript (plain HTTP, a PROXY header, a ClientHello for passthrough); 'peek' (read without consuming) for a
 * terminating TLS listener that reads a preface where the addon terminates TLS, and for plain HTTP with adopt routes.
 */
export function acceptModeOf(config: Config, index: number): AcceptMode {
  const cfg = config.listeners[index];
  if (cfg === undefined) return 'read';
  const passthrough = cfg.tls?.passthrough !== undefined && cfg.tls.passthrough.length > 0;
  // a TLS listener that reads a ClientHello (passthrough) or a PROXY header first: peeked where the addon terminates
  // TLS, so that the addon's handshake can read the ClientHello again from the kernel (NativeSocket.rewind)
  if (cfg.tls !== undefined && cfg.tls.certificates.length > 0 && prefaceBeforeTls(cfg) !== undefined) return nativeTlsStatus().available && nativePeekAvailable() ? 'peek' : 'read';
  if (cfg.proxy_protocol !== undefined) return 'read';
  if (cfg.mode === 'tcp') return 'hold';
  if (cfg.tls !== undefined) return passthrough ? 'read' : 'hold';
  // plain HTTP: peeked (nothing consumed until routed) where `handoff: adopt` routes may take the socket whole
  return adoptRoutePaths(config).length > 0 && nativePeekAvailable() ? 'peek' : 'read';
}

/**
 * The names a peeked TLS listener (certificates and `tls.passthrough`, no PROXY header) passes through, for the
 * addon to decide at accept: a connection whose whole ClientHello names none of them is terminated at once
 * (NativeSocket.terminateAtAccept), without the peek and the preface in JavaScript. Undefined for every other
 * listener (a PROXY header is read first in JavaScript; the rest have no passthrough or are not peeked).
 */
export function passthroughAtAcceptOf(config: Config, index: number): readonly string[] | undefined {
  const cfg = config.listeners[index];
  if (cfg?.tls?.passthrough === undefined || cfg.tls.passthrough.length === 0 || cfg.proxy_protocol !== undefined) return undefined;
  if (acceptModeOf(config, index) !== 'peek') return undefined;
  return cfg.tls.passthrough.map((p) => p.sni);
}

/**
 * Whether listener `index` accepts a connection only once its first bytes came (TCP_DEFER_ACCEPT): `defer_accept`,
 * by default on where the client speaks first (everything but a tcp listener without a PROXY header, whose server
 * may speak first: its clients could wait forever for a greeting the kernel holds back).
 */
export function deferAcceptOf(config: Config, index: number): boolean {
  const cfg = config.listeners[index];
  if (cfg === undefined || (cfg.mode === 'tcp' && cfg.proxy_protocol === undefined)) return false;
  return cfg.defer_accept !== false;
}

/** Node's own handshake bound when tls.handshake_timeout is "off" (tls.Server's default): native TLS keeps it. */
const NODE_HANDSHAKE_BOUND_MS = 120_000;

/** Bound of a preface (PROXY header, ClientHello) when its phase timeout is "off": never unbounded. */
const PREFACE_FALLBACK_MS = 60_000;

/** The client's address from a PROXY header: its source for a proxied TCP connection, else none (use the socket's). */
function proxiedSource(header: ProxyHeader | undefined): ProxyEndpoint | undefined {
  if (header === undefined || header.command !== 'proxy' || (header.family !== 'tcp4' && header.family !== 'tcp6')) return undefined;
  return header.source;
}

function proxiedDestination(header: ProxyHeader | undefined): ProxyEndpoint | undefined {
  if (header === undefined || header.command !== 'proxy' || (header.family !== 'tcp4' && header.family !== 'tcp6')) return undefined;
  return header.destination;
}

/** The client and the address it reached, from a PROXY header for a proxied TCP connection; else none. */
function proxiedEnds(header: ProxyHeader | undefined): ProxiedEnds | undefined {
  const source = proxiedSource(header);
  return source === undefined ? undefined : { source, destination: proxiedDestination(header) };
}


/** The TLS server wraps the accepted socket as `_parent` (Node's own name); the client's ends ride on it. */
const proxiedOf = new WeakMap<Socket, ProxiedEnds>();
/** performance.now() when a socket was handed to the TLS server: the handshake histogram's start. */
const handshakeFrom = new WeakMap<Socket, number>();

function parentOf(socket: TLSSocket): Socket | undefined {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return typeof parent === 'object' && parent !== null ? (parent as Socket) : undefined;
}

/** What the accept paths read from their worker; everything in it outlives a runtime. */
export interface AcceptDeps {
  readonly metrics: Metrics;
  readonly registry: ConnectionRegistry;
  readonly limits: LimitStore;
  /** What connections read their context from (follows the runtime). */
  readonly source: ContextSource;
  /** The soft RLIMIT_NOFILE after the raise at start (-1: unlimited). */
  readonly fdLimit: number;
  /** The runtime serving now; listeners exist only after the first apply built one. */
  current(): Runtime;
  /** The logger of the config serving now (replaced by an apply that changes log.level). */
  readonly log: Logger;
}

export class AcceptPaths {
  readonly #deps: AcceptDeps;
  readonly #metrics: Metrics;
  readonly #registry: ConnectionRegistry;
  readonly #limits: LimitStore;
  readonly #source: ContextSource;
  readonly #fdLimit: number;
  /** The per-accept check against the fd limit (apply.ts runs it on every accepted socket). */
  readonly fds: FdBudget;
  /** fd_limit refusals already logged, and when the last line went out. */
  #fdRefusalsLogged = 0;
  #fdLoggedAt = 0;

  constructor(deps: AcceptDeps) {
    this.#deps = deps;
    this.#metrics = deps.metrics;
    this.#registry = deps.registry;
    this.#limits = deps.limits;
    this.#source = deps.source;
    this.#fdLimit = deps.fdLimit;
    this.fds = new FdBudget(deps.fdLimit);
  }

  get #log(): Logger {
    return this.#deps.log;
  }

  #current(): Runtime {
    return this.#deps.current();
  }

  /** The addon's L4 listeners (created on the first tcp listener), or why there are none. */
  #nativeL4: NativeL4 | string | undefined;

  /**
   * After the swap: tcp listener `index` (socket `key`) is served wholly by the addon when it can be (accept,
   * connect, splice: tunnel/l4-native.ts), else by the JS path, the reason logged once. Never throws.
   */
  serveL4(key: string, server: Listening, config: Config, index: number, runtime: Runtime): void {
    const cfg = config.listeners[index];
    const l4 = cfg.mode === 'tcp' || (cfg.tls?.passthrough !== undefined && cfg.tls.passthrough.length > 0);
    if (!l4 || !server.native) {
      server.serveL4(undefined);
      if (this.#nativeL4 instanceof NativeL4) this.#nativeL4.serving(key, undefined, this.#log);
      return;
    }
    this.#nativeL4 ??= NativeL4.create(this.#registry, this.#metrics, this.#limits);
    const native = this.#nativeL4;
    if (typeof native === 'string') {
      this.#log.info({ listener: key, reason: native }, 'L4 listener served by JavaScript, not the addon');
      return;
    }
    try {
      const plan = native.plan(config, index, runtime.pools, runtime.l4ctx, (id) => server.serveL4(id));
      if ('reason' in plan) {
        server.serveL4(undefined);
        native.serving(key, undefined, this.#log, plan.reason);
      } else if (server.serveL4(plan.config)) {
        native.serving(key, plan.config, this.#log);
      } else {
        native.discard(plan.config);
        native.serving(key, undefined, this.#log, 'the listening socket cannot move to the addon');
      }
    } catch (err) {
      server.serveL4(undefined);
      native.serving(key, undefined, this.#log, `the addon refused the compile: ${(err as Error).message}`);
    }
  }

  /** One line per FD_LOG_INTERVAL_MS at most, with the count since the last, never one per connection. */
  logFdRefusals(): void {
    const refused = this.#metrics.refusedCount('fd_limit');
    if (refused === this.#fdRefusalsLogged) return;
    const now = Date.now();
    if (now - this.#fdLoggedAt < FD_LOG_INTERVAL_MS) return;
    this.#log.warn(
      { refused: refused - this.#fdRefusalsLogged, fdLimit: this.#fdLimit, reserve: FD_RESERVE },
      'connections refused: out of file descriptors (raise the hard limit: LimitNOFILE= in systemd, ulimit -Hn)',
    );
    this.#fdRefusalsLogged = refused;
    this.#fdLoggedAt = now;
  }

  /** The accept path of listener `index` of `config` (bound to `port`), with its own TLS server. */
  handlerFor(config: Config, index: number, port: number, ticketKeys: string, ports: readonly number[] = []): OnConnection {
    const cfg = config.listeners[index];
    const info: ListenerInfo = { scheme: cfg.tls === undefined ? 'http' : 'https', port, httpsRedirectPort: httpsRedirectPort(config, index, ports) };
    const accept = (socket: ByteSocket, proxied?: ProxiedEnds) => {
      this.#metrics.connectionAccepted();
      handleConnection(socket, info, this.#source, this.#registry, proxied);
    };
    let tlsServer: TlsServer | undefined;
    // a TLS listener without certificates only passes names through: nothing to terminate, no server
    if (cfg.tls !== undefined && cfg.tls.certificates.length > 0) {
      try {
        tlsServer = createTlsServer(cfg.tls, { ...LISTEN_OPTIONS, ticketKeys: Buffer.from(ticketKeys, 'base64'), acmeAlpn: answersTlsAlpn(config.listeners) }, (socket: TLSSocket) => {
          const parent = parentOf(socket);
          const from = parent === undefined ? undefined : handshakeFrom.get(parent);
          if (from !== undefined) this.#metrics.tlsHandshake(performance.now() - from);
          accept(socket, parent === undefined ? undefined : proxiedOf.get(parent));
        });
      } catch (err) {
        // apply.ts reports the message as the apply's error (an ApplyError without config errors)
        throw new Error(`listeners[${index}]: ${(err as Error).message}`);
      }
      tlsServer.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => this.#handshakeFailed(err, socket));
    }
    const nativeTls = tlsServer !== undefined && nativeTlsStatus().available ? this.#nativeTls(config, index, ticketKeys) : undefined;
    return this.#connectionLimit(config, index, this.#acceptPath(config, index, accept, tlsServer, nativeTls));
  }

  /** The addon's contexts for listener `index` (native TLS termination); Node's tls.Server stays for the rest. */
  #nativeTls(config: Config, index: number, ticketKeys: string): NativeTlsServer {
    useTicketSecret(Buffer.from(ticketKeys, 'base64'));
    try {
      return createNativeTlsServer(config.listeners[index].tls!, answersTlsAlpn(config.listeners));
    } catch (err) {
      throw new Error(`listeners[${index}]: ${(err as Error).message}`);
    }
  }

  /**
   * limits.connections_per_ip before anything is read: a client already at its limit is closed at accept, so it
   * costs no TLS handshake. The connection counts itself once let in (connection.ts, #countRelay for L4); a
   * listener with a PROXY header learns the client only from it, so there those alone decide.
   */
  #connectionLimit(config: Config, index: number, path: OnConnection): OnConnection {
    const max = config.limits.connections_per_ip;
    const cfg = config.listeners[index];
    if (max === 'off' || cfg.proxy_protocol !== undefined) return path;
    const limits = this.#limits;
    const prefix = config.limits.ipv6_prefix;
    return (socket) => {
      const address = socket.remoteAddress ?? '';
      const key = clientKey(address, prefix);
      if (limits.connections.count(key) < max) return path(socket);
      this.#metrics.connectionRefused('connections_per_ip');
      limits.connectionLog.refused(key, unmapIPv4(address), Date.now());
      socket.destroy();
    };
  }

  /**
   * What a listener does with each accepted socket, compiled once: straight to HTTP or TLS when there is no
   * preface to read (the common case costs nothing more); else PROXY header and/or ClientHello first, then
   * HTTP, TLS termination, or an L4 relay (tcp listener, passthrough name).
   */
  #acceptPath(config: Config, index: number, accept: (socket: ByteSocket, proxied?: ProxiedEnds) => void, tlsServer: TlsServer | undefined, nativeTls: NativeTlsServer | undefined): OnConnection {
    const cfg = config.listeners[index];
    let trusted: ((address: string) => boolean) | undefined;
    if (cfg.proxy_protocol !== undefined) {
      const m = createCidrMatcher(cfg.proxy_protocol.trusted);
      // the schema checked every CIDR: failing here means the two disagree, which must not go unnoticed
      if (!m.ok) throw new Error(`listener ${index}: invalid proxy_protocol.trusted: ${m.errors.map((e) => e.reason).join('; ')}`);
      trusted = m.match;
    }
    const passthrough = cfg.tls?.passthrough !== undefined && cfg.tls.passthrough.length > 0 ? new PassthroughTable(cfg.tls.passthrough) : undefined;
    const tcpUpstream = cfg.mode === 'tcp' ? cfg.upstream : undefined;
    // as Node's tls.Server: "off" still gets a bound, never an unbounded handshake
    const handshake = { ...LISTEN_OPTIONS, timeoutMs: cfg.tls !== undefined && cfg.tls.handshake_timeout > 0 ? cfg.tls.handshake_timeout : NODE_HANDSHAKE_BOUND_MS };
    const onNativeSecure = (from: number, proxied: ProxiedEnds | undefined) => (s: NativeSocket): void => {
      this.#metrics.nativeTlsHandshake();
      this.#metrics.tlsHandshake(performance.now() - from);
      accept(s, proxied);
      s.resume(); // a held connection was accepted paused (its handshake ran regardless); a no-op for the others
    };
    const onNativeFailure = (err: Error, s: NativeSocket): void => this.#handshakeFailed(err, s);
    // `rewound`: a peeked connection whose preface left the kernel's queue and nothing else (NativeSocket.rewind)
    const terminate = (socket: AcceptedSocket, proxied?: ProxiedEnds, rewound = false): void => {
      if (tlsServer === undefined) {
        if (socket instanceof NativeSocket) {
          // natively accepted: already on native I/O, whatever its ends
          accept(socket, proxied);
          socket.resume(); // held sockets (and those after a preface) are paused; a no-op for the others
          return;
        }
        // plain HTTP with nothing read yet, its ends the socket's own (no PROXY header named others): onto native
        // I/O when the addon has it (the net.Socket is closed)
        const moved = proxied === undefined ? adoptNative(socket, LISTEN_OPTIONS) : undefined;
        if (moved !== undefined) {
          accept(moved);
          return;
        }
        accept(socket, proxied);
        socket.resume(); // the preface reader left it paused; a 'data' listener alone does not restart it
        return;
      }
      // The addon terminates TLS when nothing was read ahead: a natively accepted connection starts its handshake
      // where it is (no net.Socket), a net.Socket from Node's accept moves onto native I/O for it, a peeked one
      // once rewound to its ClientHello. A preface's leftovers (a PROXY header or ClientHello read from a socket
      // that could not be peeked) need Node's TLS, which replays them.
      if (nativeTls !== undefined && (proxied === undefined || rewound)) {
        const from = performance.now();
        if (socket instanceof NativeSocket) {
          if (startNativeTls(socket, nativeTls, handshake, onNativeSecure(from, proxied), onNativeFailure)) return;
        } else if (adoptNativeTls(socket, nativeTls, handshake, onNativeSecure(from, proxied), onNativeFailure) !== undefined) return;
      }
      // Node's TLS takes a net.Socket, so a natively accepted connection is handed to Node here with what was
      // read ahead (see NativeSocket.toNetSocket)
      const tcp = socket instanceof NativeSocket ? socket.toNetSocket() : socket;
      if (tcp === undefined) return;
      if (proxied !== undefined) proxiedOf.set(tcp, proxied);
      handshakeFrom.set(tcp, performance.now());
      tlsServer.emit('connection', tcp);
    };
    if (trusted === undefined && passthrough === undefined && tcpUpstream === undefined) return (socket) => terminate(socket);

    const timeout = cfg.tls !== undefined ? cfg.tls.handshake_timeout : config.timeouts.head;
    const opts = { proxy: trusted !== undefined, clientHello: passthrough !== undefined, timeoutMs: timeout > 0 ? timeout : PREFACE_FALLBACK_MS };
    const l4 = (socket: AcceptedSocket, mode: 'tcp' | 'passthrough', upstream: string, r: PrefaceResult & { kind: 'done' }): void => {
      // a peeked connection gives up what was read: `rest` carries it to the target
      if (socket instanceof NativeSocket) socket.commit();
      // the runtime current at accept time: a reload in between gives the connection the new pool
      const { ctx, l4ctx } = this.#current();
      const pool = ctx.pools.get(upstream);
      if (pool === undefined) {
        // the schema checks references; a runtime without the pool is a bug, not the client's fault
        this.#log.error({ listener: index, upstream }, 'L4 upstream missing from the runtime');
        socket.destroy();
        return;
      }
      const source = proxiedSource(r.proxy) ?? endpointOf(socket.remoteAddress, socket.remotePort);
      const destination = proxiedDestination(r.proxy) ?? endpointOf(socket.localAddress, socket.localPort);
      const onEnd = this.#countRelay(ctx.config, source?.address ?? socket.remoteAddress ?? '');
      if (onEnd === null) {
        socket.destroy();
        return;
      }
      // accepted once let in, as the addon's L4 listeners count (a connections_per_ip refusal is a refusal only)
      this.#metrics.connectionAccepted();
      forwardL4(socket, { mode, pool, rest: r.rest, source, destination, sni: r.hello?.sni, onEnd, halfClose: cfg.half_close !== false }, l4ctx, this.#registry);
    };
    // a tcp listener without PROXY has nothing to read first: the server may be the one to speak (SMTP, MySQL)
    if (tcpUpstream !== undefined && trusted === undefined) return (socket) => l4(socket, 'tcp', tcpUpstream, NO_PREFACE);
    return (socket) => {
      // the addon read the whole ClientHello at accept and it names nothing passed through (passthroughAtAcceptOf):
      // nothing was read, the handshake starts at once
      if (socket instanceof NativeSocket && socket.terminateAtAccept && tlsServer !== undefined) return terminate(socket);
      if (trusted !== undefined && !trusted(socket.remoteAddress ?? '')) {
        this.#refused(socket, index, 'untrusted', 'PROXY header sender not in proxy_protocol.trusted');
        socket.destroy();
        return;
      }
      readPreface(socket, opts, (r) => {
        if (r.kind === 'failed') {
          this.#refused(socket, index, r.reason, r.detail);
          return;
        }
        if (tcpUpstream !== undefined) return l4(socket, 'tcp', tcpUpstream, r);
        const upstream = passthrough?.match(r.hello?.sni);
        if (upstream !== undefined) return l4(socket, 'passthrough', upstream, r);
        if (cfg.tls !== undefined && tlsServer === undefined) return this.#unknownName(socket, index, r.hello?.sni);
        // a peeked connection gives up only its PROXY header: the addon's handshake reads the ClientHello itself
        if (nativeTls !== undefined && socket instanceof NativeSocket && socket.rewind(r.used)) return terminate(socket, proxiedEnds(r.proxy), true);
        // peeking never loses a byte: what was read goes back in front of the socket for its next reader
        if (socket instanceof NativeSocket) socket.commit();
        if (r.rest !== null) socket.unshift(r.rest);
        terminate(socket, proxiedEnds(r.proxy));
      });
    };
  }

  /**
   * limits.connections_per_ip for an L4 relay (tcp listener, TLS passthrough): counted until it ends (the
   * returned release), refused (null: counted and logged here; the caller closes it), or no limit (undefined).
   */
  #countRelay(config: Config, address: string): (() => void) | null | undefined {
    const max = config.limits.connections_per_ip;
    if (max === 'off') return undefined;
    const limits = this.#limits;
    const key = clientKey(address, config.limits.ipv6_prefix);
    if (limits.connections.acquire(key, max)) return () => limits.connections.release(key);
    this.#metrics.connectionRefused('connections_per_ip');
    limits.connectionLog.refused(key, unmapIPv4(address), Date.now());
    return null;
  }

  /** Too few descriptors left for this connection and its upstream: closed at once, counted, logged by the Worker's tick. */
  refuseForFds(socket: AcceptedSocket): void {
    socket.on('error', ignoreHeldError);
    socket.destroy(); // closes the fd now (uv_close), so the reserve holds for what is already accepted
    this.#metrics.connectionRefused('fd_limit');
    // the first refusal after a quiet spell is said at once; the tick then batches the rest
    this.logFdRefusals();
  }

  /** A connection closed before routing (untrusted PROXY sender, bad or missing preface): counted, debug log. */
  #refused(socket: AcceptedSocket, index: number, reason: RefusedReason, detail?: string): void {
    this.#metrics.connectionRefused(reason);
    if (this.#log.isLevelEnabled('debug')) this.#log.debug({ listener: index, reason, detail, remoteAddr: socket.remoteAddress }, 'connection refused before routing');
  }

  /**
   * A passthrough-only TLS listener met a name it does not pass through (or none): a TLS alert and a close,
   * counted, and one line like an L4 connection's (info with access logs, else debug).
   */
  #unknownName(socket: AcceptedSocket, index: number, sni: string | undefined): void {
    const reason = sni === undefined ? 'sni_missing' : 'sni_unknown';
    this.#metrics.connectionRefused(reason);
    logUnknownName(this.#current().l4ctx, index, sni, socket.remoteAddress, reason);
    refuseClientHello(socket, sni);
  }

  /** Handshake failures are the client's business: counted, logged at debug, never fatal. */
  #handshakeFailed(err: NodeJS.ErrnoException, socket: { readonly remoteAddress?: string | undefined }): void {
    this.#metrics.tlsHandshakeError();
    if (this.#log.isLevelEnabled('debug')) {
      const error = new ProxyError('CLIENT_TLS_HANDSHAKE', `TLS handshake failed: ${err.message}`, { cause: err });
      this.#log.debug({ err: error, reason: err.code, remoteAddr: socket.remoteAddress }, 'tls handshake failed');
    }
  }
}

/** A held socket (see MAX_HELD_SOCKETS) that fails while it waits is destroyed by Node; nothing else to do. */
export function ignoreHeldError(): void {}


/**
 * The https port a plain listener with `https_redirect` sends clients to: the number it names, or (true) the
 * bound port of the first TLS listener in the file; undefined when the listener does not redirect.
 */
function httpsRedirectPort(config: Config, index: number, ports: readonly number[]): number | undefined {
  const r = config.listeners[index].https_redirect;
  if (r === undefined || r === false) return undefined;
  if (typeof r === 'number') return r;
  const tls = config.listeners.findIndex((l) => l.tls !== undefined);
  return tls === -1 ? undefined : (ports[tls] ?? config.listeners[tls].address.port);
}
