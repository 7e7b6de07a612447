// One acquire from the call to its answer: the callback and cancel types callers hold, whom a PROXY-sending
// pool's connection speaks for, and the request object that makes a cancelled acquire hand its socket back.
// It owns no socket and no queue; the pool decides what a reclaimed socket becomes.
import type { ProxyError } from '../core/errors.js';
import type { ByteSocket } from '../core/socket.js';
import type { ProxyEndpoint } from '../wire/proxy-protocol.js';

/**
 * Called after acquire() returned, never synchronously: on a later tick, or (an idle socket, while the native
 * I/O batch that asked is dispatched) once that batch's events are handled. The caller must attach its own 'error' and
 * 'data' listeners (or pause the socket) inside the callback, before returning: a reused socket is already
 * flowing, so bytes that arrive after the callback returned with no 'data' listener would be dropped.
 * With UPSTREAM_TARGET_GONE (the target left rotation while the acquire waited in its queue, or before it
 * started), `waitUntil` is the end of the wait already begun (pool clock, ms; 0 = none): the caller picks
 * another target and passes it to acquire() again, so moving never extends a request's queue time.
 * `firstSent`: the caller's first bytes (acquire's `first`) are written on this socket already.
 */
export type AcquireCallback = (err: ProxyError | null, socket: ByteSocket | null, reused: boolean, waitUntil?: number, firstSent?: boolean) => void;

/**
 * Whom a connection to an upstream with send_proxy_protocol speaks for. Its PROXY header, written once at the
 * start, names one client, so the pool reuses it for the same `key` only: the same client, source port and
 * address it connected to (HAProxy reuses a server connection only for a request with the same "proxy protocol
 * block"). Pools that send no header ignore it.
 */
export interface UpstreamClient {
  /** Equal keys = equal PROXY headers; the caller makes it unique per client connection. */
  readonly key: string;
  /** The client; undefined when unknown (the header then says UNKNOWN / UNSPEC). */
  readonly source: ProxyEndpoint | undefined;
  /** The address the client connected to. */
  readonly destination: ProxyEndpoint | undefined;
}

/** For a PROXY-sending pool asked without a client: one "unknown client" key, header UNKNOWN / UNSPEC. */
export const UNKNOWN_CLIENT: UpstreamClient = Object.freeze({ key: '', source: undefined, destination: undefined });

/**
 * Withdraws an acquire whatever its phase (queued, connecting, or a socket on its way): the callback is then
 * never called, and a socket made or picked for it stays the pool's (kept idle, handed to a waiter, or closed).
 * Does nothing once the callback ran: the socket is the caller's then.
 */
export type CancelAcquire = () => void;
export const NOT_QUEUED: CancelAcquire = () => {};

/**
 * One acquire from the call to its answer. Every path of the pool answers through `answer`, so a caller that
 * went away (cancel) never receives a socket it could not own: the pool takes it back (`reclaim`). Without this
 * a socket connected for an aborted request had no owner, no 'error' listener, and counted as open forever.
 */
export class AcquireRequest {
  readonly #cb: AcquireCallback;
  readonly #reclaim: (socket: ByteSocket) => void;
  #state: 'pending' | 'answered' | 'cancelled' = 'pending';
  /** Leaves the wait queue while the request is queued there (set by #enqueue). */
  withdraw: CancelAcquire = NOT_QUEUED;

  constructor(cb: AcquireCallback, reclaim: (socket: ByteSocket) => void) {
    this.#cb = cb;
    this.#reclaim = reclaim;
  }

  readonly answer: AcquireCallback = (err, socket, reused, waitUntil, firstSent) => {
    if (this.#state === 'cancelled') {
      if (socket !== null) this.#reclaim(socket);
      return;
    }
    if (this.#state !== 'pending') return;
    this.#state = 'answered';
    this.#cb(err, socket, reused, waitUntil, firstSent);
  };

  readonly cancel: CancelAcquire = () => {
    if (this.#state !== 'pending') return;
    this.#state = 'cancelled';
    this.withdraw();
  };
}
