// A forwarded WebSocket handshake the upstream accepted (a valid 101) becomes a tunnel here: the relay is chosen
// (splice when both legs are kernel sockets, the addon's TLS relay for a natively terminated client, else the JS relay), counted (registry, metrics, a sticky hash key)
// and, at its end, uncounted and logged. The relay owns both sockets from start(); the client connection keeps
// its own state and is told when the tunnel ended. Nothing here runs per byte.
import type { ByteSocket } from '../core/socket.js';
import type { ConnectionRegistry } from '../core/registry.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { Exchange } from '../handlers/forward.js';
import { Tunnel } from '../tunnel/relay.js';
import { SPLICE_RELAY, SpliceTunnel, canSplice } from '../tunnel/splice.js';
import { TLS_RELAY, canTlsRelay } from '../tunnel/tls-relay.js';
import type { OpenKeys } from '../upstream/sticky.js';
import { logTunnel } from './access-log.js';

/** What a tunnel reads of the connection's context (the one of the request that opened it). */
export interface TunnelContext {
  readonly config: Config;
  readonly metrics: Metrics;
  readonly sticky?: OpenKeys;
}

/** The client connection a tunnel belongs to. */
export interface TunnelOwner {
  /** The connection's logger (built on first use: read only when access logging is on). */
  readonly log: Logger;
  /** The tunnel ended: the connection leaves the registry and the limits it counted against. */
  tunnelEnded(): void;
}

/** One open tunnel of a client connection and its bookkeeping. */
export class UpgradedTunnel {
  readonly relay: Tunnel | SpliceTunnel;
  readonly #owner: TunnelOwner;
  readonly #registry: ConnectionRegistry;
  readonly #ctx: TunnelContext;
  readonly #ex: Exchange;
  /** The tunnel's hash key as counted in ctx.sticky (sticky tunnels), to uncount at close. */
  #stickyKey: { keys: OpenKeys; upstream: string; key: string; target: string } | null = null;

  /** Builds the relay over both sockets and counts the tunnel; bytes move from start(). */
  constructor(owner: TunnelOwner, registry: ConnectionRegistry, ctx: TunnelContext, ex: Exchange, socket: ByteSocket, upstream: ByteSocket) {
    this.#owner = owner;
    this.#registry = registry;
    this.#ctx = ctx;
    this.#ex = ex;
    const t = ex.route.tunnel;
    const timeouts = { idle: t.idle_timeout, lifetime: t.max_lifetime };
    // both legs plain kernel sockets: bytes move kernel to kernel on the addon's thread (splice); else the JS relay
    // (either relay decides the client's flow from here: the JS one resumes it, the splice one stops libuv reads)
    // a client whose TLS the addon terminates and a plain backend: the addon's TLS relay thread, never JS
    const native = canSplice(socket, upstream) ? SPLICE_RELAY : canTlsRelay(socket, upstream) ? TLS_RELAY : undefined;
    this.relay = native !== undefined ? new SpliceTunnel(socket, upstream, timeouts, this.#onTunnelClosed, native) : new Tunnel(socket, upstream, timeouts, this.#onTunnelClosed, true);
    this.#registry.tunnelOpened();
    this.#ctx.metrics.tunnelOpened();
    this.#countStickyKey(ex);
  }

  /** `clientRest`/`upstreamRest`: bytes each side sent behind its head, relayed first. */
  start(clientRest: Buffer | null, upstreamRest: Buffer | null): void {
    this.relay.start(clientRest, upstreamRest);
  }

  /** A tunnel of a hash upstream holds its key on its target while open (upstream/sticky.ts). */
  #countStickyKey(ex: Exchange): void {
    const keys = this.#ctx.sticky;
    const balance = ex.pool.config.balance;
    if (keys === undefined || ex.key === undefined || ex.target === null || typeof balance === 'string' || balance.policy !== 'hash') return;
    const entry = { keys, upstream: ex.pool.name, key: ex.key, target: ex.target.id };
    if (keys.opened(entry.upstream, entry.key, entry.target)) this.#stickyKey = entry;
  }

  #onTunnelClosed = (t: Tunnel | SpliceTunnel): void => {
    this.#registry.tunnelClosed();
    this.#owner.tunnelEnded();
    const sticky = this.#stickyKey;
    if (sticky !== null) {
      this.#stickyKey = null;
      sticky.keys.closed(sticky.upstream, sticky.key, sticky.target);
    }
    const ex = this.#ex;
    if (ex.target !== null) ex.target.active--;
    this.#ctx.metrics.tunnelClosed(t.bytesUp, t.bytesDown);
    if (this.#ctx.config.log.access) logTunnel(this.#owner.log, ex, t);
  };
}
