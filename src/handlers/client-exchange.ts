// What the client connection (http/connection.ts) drives, whatever handler answers the request: an HTTP forward
// (forward.ts) or a FastCGI request (fastcgi.ts). The connection feeds it body bytes, relays drain, checks its
// deadlines and logs it; the handler reports back through ClientSide. Types only.
import type { ProxyError } from '../core/errors.js';
import type { CompiledRoute } from '../route/router.js';
import type { Target } from '../upstream/balancer.js';
import type { UpstreamPool } from '../upstream/pool.js';
import type { RequestHead } from '../wire/http-head.js';

export interface ClientExchange {
  /** The access log's `mode` of the request. */
  readonly mode: 'http' | 'fastcgi';
  readonly head: RequestHead;
  readonly route: CompiledRoute;
  readonly startedAt: number;
  /** performance.now() at the start: the latency histograms (core/metrics.ts exchange()) read the timings below. */
  readonly startedHr: number;
  /** Ms from the start to a socket to the target (a kept-alive one: about 0), and to its first answer byte; -1 = not (yet). */
  readonly connectMs: number;
  readonly firstByteMs: number;
  /** The socket in use came from the keep-alive pool. */
  readonly reusedSocket: boolean;
  /** The upstream the request is sent to (HTTP targets, or FastCGI applications). */
  readonly pool: UpstreamPool;
  /** The response status (0 until a head was sent). */
  readonly status: number;
  /** Bytes sent upstream (request head or params included). */
  readonly bytesIn: number;
  /** Bytes written to the client (head included). */
  readonly bytesOut: number;
  /** Something of the response reached the client: a canned error is no longer possible. */
  readonly responseStarted: boolean;
  /** The target of the attempt in progress (for the log); null between attempts. */
  readonly target: Target | null;
  /** The target tried last, also after it failed (the log names it on 502/504 lines). */
  readonly lastTarget: Target | null;
  /**
   * The connection will close after this exchange, decided while it runs (draining began, the client half-closed):
   * an answer head not written yet must say so.
   */
  clientClosing?(): void;
  /** The request body was read whole. */
  readonly requestComplete: boolean;
  /** Why the last clientData() returned -1. */
  readonly bodyError: ProxyError;
  /** Starts the work (pick a target, connect...). */
  start(): void;
  /** Body bytes of chunk[start..]: how many belong to this request, or -1 when refused (see bodyError). */
  clientData(chunk: Buffer, start: number): number;
  /** The client socket drained: resume reading the upstream. */
  clientDrained(): void;
  /** Progress was seen at `now` (the sweep calls it when bytes moved). */
  touch(now: number): void;
  /** Timeouts, checked by the connection's sweep. */
  checkDeadline(now: number): void;
  /** The client went away or the connection is torn down: drop the upstream side. */
  abort(err: ProxyError): void;
}
