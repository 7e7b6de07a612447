// Keep-alive connection pools, one per upstream, bounded per target. Owns upstream sockets while idle; a
// socket handed out by acquire() belongs to the caller until release(). Imports no client-side code.
import type { Socket } from 'node:net';
import type { UpstreamConfig } from '../config/schema.js';
import type { ProxyError } from '../errors.js';
import type { Balancer, Target } from './balancer.js';

export type AcquireCallback = (err: ProxyError | null, socket: Socket | null, reused: boolean) => void;

export declare class UpstreamPool {
  constructor(name: string, config: UpstreamConfig);
  readonly name: string;
  readonly config: UpstreamConfig;
  readonly targets: readonly Target[];
  readonly balancer: Balancer;
  /**
   * A connected socket to `target`: an idle kept-alive one when there is one (reused = true), else a new
   * connection within connect timeout and max_connections. Errors: UPSTREAM_CONNECT_REFUSED / _TIMEOUT /
   * _ERROR (retryable), UPSTREAM_UNAVAILABLE when max_connections is reached. Callback is never synchronous.
   */
  acquire(target: Target, cb: AcquireCallback): void;
  /** Gives a socket back: kept idle when reusable and under max_idle, else destroyed. */
  release(target: Target, socket: Socket, reusable: boolean): void;
  /** Takes a socket out of the pool for good (it became a tunnel); it no longer counts toward max_idle. */
  detach(target: Target, socket: Socket): void;
  /** Closes idle sockets and refuses new acquires. */
  close(): void;
}
