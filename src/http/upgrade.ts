// A forwarded WebSocket handshake the upstream accepted (a valid 101) becomes a tunnel here: the relay is chosen
// (splice when both legs are kernel sockets, the addon's TLS relay for a natively terminated client, else the JS relay), counted (registry, metrics, a sticky hash key)
// and, at its end, uncounted and logged. The relay owns both sockets from start(); the client connection keeps
// its own state and is told when the tunnel ended. Nothing here runs per byte.
import type { ByteSocket } from '../core/socket.js';
import type { ConnectionRegistry } from '../core/registry.js';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../core/metrics.js';
import type { Exchange } from '../handlers/forward.js';
import { Tunnel } from '../tunnel/relay.js';
import { SPLICE_RELAY, SpliceTunnel, canSplice } from '../tunnel/splice.js';
import { TLS_RELAY, canTlsRelay } from '../tunnel/tls-relay.js';
import type { Target } from '../upstream/balancer.js';
import type { OpenKeys } from '../upstream/sticky.js';
import type { AccessClient, AccessLog } from './access-log.js';
import type { RequestVars } from '../route/router.js';

/** What a tunnel reads of the connection's context (the one of the request that opened it). */
export interface TunnelContext {
  readonly config: Config;
  readonly metrics: Metrics;
  readonly sticky?: OpenKeys;
  /** The access log, when lines are wanted (log.access, log.access_file). */
  readonly accessLog?: AccessLog;
}

/** The client connection a tunnel belongs to. */
export interface TunnelOwner extends AccessClient {
  /** The request variables of the handshake (its request id). */
  readonly vars: RequestVars;
  /** The tunnel ended: the connection leaves the registry and the limits it counted against. */
  tunnelEnded(): void;
}

/** A hash key counted open on its target (ctx.sticky), to release at close. */
export interface StickyEntry {
  readonly keys: OpenKeys;
  readonly upstream: string;
  readonly key: string;
  readonly target: string;
}

/**
 * A WebSocket of a hash upstream (tunnelled or terminated) holds its key on its target while open
 * (upstream/sticky.ts): counted here, or null when the upstream does not hash.
 */
export function countStickyKey(ctx: TunnelContext, ex: Exchange): StickyEntry | null {
  const keys = ctx.sticky;
  const balance = ex.pool.config.balance;
  if (keys === undefined || ex.key === undefined || ex.target === null || typeof balance === 'string' || balance.policy !== 'hash') return null;
  const entry = { keys, upstream: ex.pool.name, key: ex.key, target: ex.target.id };
  return keys.opened(entry.upstream, entry.key, entry.target) ? entry : null;
}

export function releaseStickyKey(entry: StickyEntry | null): void {
  if (entry !== null) entry.keys.closed(entry.upstream, entry.key, entry.target);
}

/** One open tunnel of a client connection and its bookkeeping. */
export class UpgradedTunnel {
  readonly relay: Tunnel | SpliceTunnel;
  readonly #owner: TunnelOwner;
  readonly #registry: ConnectionRegistry;
  readonly #ctx: TunnelContext;
  /** What the tunnel needs of its exchange at close (not the exchange: an idle tunnel would keep it and its heads). */
  readonly #target: Target | null;
  readonly #pool: string;
  /** The access-log line's opening fields (AccessLog.tunnelFields), when lines are wanted. */
  readonly #logFields: string | undefined;
  /** The tunnel's hash key as counted in ctx.sticky (sticky tunnels), to uncount at close. */
  #stickyKey: StickyEntry | null = null;

  /** Builds the relay over both sockets and counts the tunnel; bytes move from start(). */
  constructor(owner: TunnelOwner, registry: ConnectionRegistry, ctx: TunnelContext, ex: Exchange, socket: ByteSocket, upstream: ByteSocket) {
    this.#owner = owner;
    this.#registry = registry;
    this.#ctx = ctx;
    this.#target = ex.target;
    this.#pool = ex.pool.name;
    this.#logFields = ctx.accessLog?.tunnelFields(owner, ex, owner.vars.requestId);
    const t = ex.route.tunnel;
    const timeouts = { idle: t.idle_timeout, lifetime: t.max_lifetime, halfClosed: t.half_closed_timeout };
    // both legs plain kernel sockets: bytes move kernel to kernel on the addon's thread (splice); else the JS relay
    // (either relay decides the client's flow from here: the JS one resumes it, the splice one stops libuv reads)
    // a client whose TLS the addon terminates and a plain backend: the addon's TLS relay thread, never JS
    const native = canSplice(socket, upstream) ? SPLICE_RELAY : canTlsRelay(socket, upstream) ? TLS_RELAY : undefined;
    this.relay = native !== undefined ? new SpliceTunnel(socket, upstream, timeouts, this.#onTunnelClosed, true, native) : new Tunnel(socket, upstream, timeouts, this.#onTunnelClosed, true);
    this.#registry.tunnelOpened();
    this.#ctx.metrics.tunnelOpened();
    this.#countStickyKey(ex);
  }

  /**
   * `clientRest`/`upstreamRest`: bytes each side sent behind its head, relayed first; `sentDown`: the upstream's bytes
   * behind a 101 the addon wrote, already written to the client with it (counted and followed, not written again).
   */
  start(clientRest: Buffer | null, upstreamRest: Buffer | null, sentDown: Buffer | null = null): void {
    this.relay.start(clientRest, upstreamRest, sentDown);
  }

  /** A tunnel of a hash upstream holds its key on its target while open (upstream/sticky.ts). */
  #countStickyKey(ex: Exchange): void {
    this.#stickyKey = countStickyKey(this.#ctx, ex);
  }

  #onTunnelClosed = (t: Tunnel | SpliceTunnel): void => {
    this.#registry.tunnelClosed();
    this.#owner.tunnelEnded();
    releaseStickyKey(this.#stickyKey);
    this.#stickyKey = null;
    if (this.#target !== null) this.#target.active--;
    this.#ctx.metrics.tunnelClosed(t.bytesUp, t.bytesDown);
    this.#ctx.metrics.tunnelLifetime('websocket', this.#pool, Date.now() - t.startedAt);
    if (this.#logFields !== undefined) this.#ctx.accessLog?.tunnel(this.#owner, this.#logFields, t);
  };
}
