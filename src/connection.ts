// The path of one client socket, from accept (or TLS handshake) to teardown: read and parse request heads,
// route, forward or tunnel, keep-alive and pipelining, canned errors, one access-log line per request/tunnel.
// It owns the client socket; upstream sockets are borrowed from pools. Imports nothing above it (worker.ts).
import type { Socket } from 'node:net';
import type { Config } from './config/schema.js';
import type { Logger } from './log.js';
import type { Router } from './router.js';
import type { UpstreamPool } from './upstream/pool.js';

export interface ListenerInfo {
  scheme: 'http' | 'https';
  /** Local port, for $server_port and X-Forwarded-Port. */
  port: number;
}

/** What a worker's runtime gives each connection. Built by worker.ts; never mutated while live. */
export interface ConnectionContext {
  readonly config: Config;
  readonly router: Router;
  readonly pools: ReadonlyMap<string, UpstreamPool>;
  readonly log: Logger;
  readonly worker: number;
}

/** Live client connections and tunnels of one worker, so shutdown can find them (Caddy registerConnection). */
export declare class ConnectionRegistry {
  constructor();
  /** Open client connections (tunnels included). */
  readonly size: number;
  readonly tunnels: number;
  /**
   * Graceful stop: idle keep-alive connections are closed now, busy ones after their current response,
   * tunnels at the end of the grace; resolves when every connection is gone (or was destroyed at the end).
   */
  drain(graceMs: number): Promise<void>;
}

/** Takes ownership of an accepted (and, for https, handshaken) client socket. */
export declare function handleConnection(socket: Socket, listener: ListenerInfo, ctx: ConnectionContext, registry: ConnectionRegistry): void;
