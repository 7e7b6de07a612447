// The attempt/failover loop shared by the HTTP forward Exchange and L4 connections: pick a target not tried yet,
// acquire a socket from the pool, and on a retryable failure before anything was sent try again within the
// caller's retry rules, moving on (not a retry) when the target leaves rotation mid-wait. It counts
// `Target.active` per attempt; it never writes a byte to a socket and never decides what a socket is used for.
import type { ByteSocket } from '../core/socket.js';
import { ProxyError } from '../core/errors.js';
import type { Target } from './balancer.js';
import type { AcquireCallback, CancelAcquire, UpstreamClient } from './acquire-request.js';
import type { UpstreamPool } from './pool.js';

/** Where the two callers' loops differ; one frozen object per caller, never built per request. */
export interface AttemptRules {
  /**
   * 'budget' (HTTP): a retry needs `retries.max` not reached and the pool's retry budget, and each request's
   * first attempt counts toward that budget. 'untried' (L4): retry while a target of the upstream is untried,
   * outside `retries.max` and the budget.
   */
  readonly retry: 'budget' | 'untried';
  /**
   * No target left to pick after a failure: 'last-error' (HTTP) ends with that failure, 'unavailable' (L4) with
   * UPSTREAM_UNAVAILABLE. Before any attempt both end with UPSTREAM_UNAVAILABLE.
   */
  readonly noneLeft: 'last-error' | 'unavailable';
  /**
   * An idle kept-alive socket is taken in start() itself (pool.takeIdle), so connected() may run inside start():
   * for a caller whose state is complete before it calls start(). Otherwise every socket comes on a later tick.
   */
  readonly reuseNow?: boolean;
}

/**
 * A unit of work that needs an upstream socket (a request, an L4 connection). Subclasses say when the work is
 * over, whom a PROXY-sending pool's socket speaks for, what to do with the socket, and how to end in failure.
 * A base class rather than a helper object: the loop's state lives on the caller's own object (no allocation).
 */
export abstract class UpstreamAttempt {
  readonly pool: UpstreamPool;
  /** Balancing key of hash and cookie policies (undefined for the others, or when the work has none). */
  readonly key: string | undefined;
  /** The target of the attempt in progress, or of the socket in use; null between attempts. */
  target: Target | null = null;
  /** The target of the latest attempt, kept after it failed: the access log names it on 502 and 504 lines. */
  lastTarget: Target | null = null;
  readonly #rules: AttemptRules;
  /** Retries so far (connect failures and stale sockets alike), under rules 'budget'. */
  #retries = 0;
  #tried: Set<Target> | null = null;
  /** End of a queue wait begun on a target that left rotation (pool clock); 0 = none. */
  #waitUntil = 0;
  #attempts = 0;
  #lastError: ProxyError | null = null;
  /** Withdraws a pending acquire from the pool when the work ends first. */
  #cancelAcquire: CancelAcquire | null = null;

  constructor(pool: UpstreamPool, key: string | undefined, rules: AttemptRules) {
    this.pool = pool;
    this.key = key;
    this.#rules = rules;
  }

  /** The work ended (aborted, failed): a late answer from the pool is dropped. */
  protected abstract get attemptOver(): boolean;
  /** Whom the connection speaks for when the pool sends PROXY headers (see UpstreamClient); else undefined. */
  protected abstract upstreamClient(): UpstreamClient | undefined;
  /**
   * A socket to `this.target`, the caller's from now on (see AcquireCallback for the listeners it must add).
   * `firstSent`: what firstBytes() returned is written on it already (a connection established inside connect(2)).
   */
  protected abstract connected(socket: ByteSocket, reused: boolean, firstSent: boolean): void;
  /** No (further) attempt: the work ends with `err`; `this.target` is null. */
  protected abstract giveUp(err: ProxyError): void;

  /**
   * The bytes the work writes first on any socket, when it is ready to have them written as soon as a new
   * connection is established (the pool may then write them before connected(), which says so); undefined = none.
   */
  protected firstBytes(): string | undefined {
    return undefined;
  }

  /**
   * Picks a target and acquires a socket; the first step and every retry. `fallback`: the target to ask again
   * when no other one can be picked (a stale kept-alive socket is not the target's fault).
   */
  start(fallback?: Target): void {
    const target = this.pool.balancer.pickFor(this.key, this.#tried ?? undefined) ?? fallback;
    if (target === undefined) {
      this.giveUp(
        this.#attempts === 0 || this.#rules.noneLeft === 'unavailable'
          ? new ProxyError('UPSTREAM_UNAVAILABLE', `no available target in upstream "${this.pool.name}"`)
          : this.#lastError ?? new ProxyError('UPSTREAM_UNAVAILABLE', 'all targets failed'),
      );
      return;
    }
    if (this.#attempts === 0 && this.#rules.retry === 'budget') this.pool.countRequest();
    this.#attempts++;
    this.target = target;
    this.lastTarget = target;
    target.active++;
    if (this.#rules.reuseNow === true) {
      const socket = this.pool.takeIdle(target);
      if (socket !== null) {
        this.#waitUntil = 0;
        this.connected(socket, true, false);
        return;
      }
    }
    this.#cancelAcquire = this.pool.acquire(target, this.#onAcquired, this.#waitUntil, this.upstreamClient(), this.firstBytes());
  }

  /**
   * The first attempt was made outside this loop, on a socket of `target` the caller already holds (the addon's
   * native exchange took a lent connection): counted as start() counts an attempt, without a pick or an acquire.
   */
  protected startedElsewhere(target: Target): void {
    if (this.#attempts === 0 && this.#rules.retry === 'budget') this.pool.countRequest();
    this.#attempts++;
    this.target = target;
    this.lastTarget = target;
    target.active++;
  }

  /** An acquire is pending (the pool has not answered it). */
  protected get acquiring(): boolean {
    return this.#cancelAcquire !== null;
  }

  /** Leaves the pool's wait queue or connect, if an acquire is pending (the pool keeps a socket made for it). */
  protected withdrawAcquire(): void {
    if (this.#cancelAcquire !== null) {
      this.#cancelAcquire();
      this.#cancelAcquire = null;
    }
  }

  /**
   * The work ends early (failed, or the client left) and gives back no socket: a pending acquire leaves the
   * pool, and the target no longer counts it. `failure` given: the target stays named (the access log reports
   * it on the 502/504 line) and is charged when the fault is the upstream's (passive health; connect failures the
   * pool saw itself, when the target is already cleared). null (aborted): the target is cleared too. The
   * caller destroys the socket it holds, if any.
   */
  protected endAttempt(failure: ProxyError | null): void {
    this.withdrawAcquire();
    const t = this.target;
    if (t === null) return;
    t.active--;
    if (failure === null) this.target = null;
    else if (failure.side === 'upstream') this.pool.reportFailure(t, failure.code);
  }

  /**
   * The socket died before any answer and the caller may send the work again (mayRetry said yes, its own state
   * is reset): a fresh connection's reset is the target's passive failure; a reused one may only have been closed
   * by the target while idle (a keep-alive race), so it is not held against it, and with no other target to pick
   * that target is asked again.
   */
  protected retryAfterReset(err: ProxyError, reused: boolean): void {
    const target = this.target!;
    if (!reused) this.pool.reportFailure(target, err.code);
    this.leaveTarget(err);
    this.start(reused ? target : undefined);
  }

  /** One more retry allowed by the rules (counted when allowed; the budget is asked only when the bound allows). */
  protected mayRetry(): boolean {
    if (this.#rules.retry === 'untried') return (this.#tried?.size ?? 0) < this.pool.targets.length;
    if (this.#retries >= this.pool.config.retries.max || !this.pool.allowRetry()) return false;
    this.#retries++;
    return true;
  }

  /** Nothing of this work reached the target (`err` says why): it is tried no more and no longer counted on it. */
  protected leaveTarget(err: ProxyError): void {
    this.#lastError = err;
    const t = this.target;
    if (t !== null) {
      t.active--;
      (this.#tried ??= new Set()).add(t);
    }
    this.target = null;
  }

  readonly #onAcquired: AcquireCallback = (err, socket, reused, waitUntil, firstSent) => {
    this.#cancelAcquire = null;
    if (this.attemptOver) {
      // unreachable while the work withdraws its acquire when it ends (the pool then keeps the socket); never
      // leave a socket without an owner
      socket?.destroy();
      return;
    }
    if (err?.code === 'UPSTREAM_TARGET_GONE') {
      this.#moveOn(err, waitUntil ?? 0);
      return;
    }
    this.#waitUntil = 0; // the wait is over (a socket, or a failure whose retry waits afresh)
    if (err !== null || socket === null) {
      this.#retryOrFail(err ?? new ProxyError('UPSTREAM_CONNECT_ERROR', 'no socket'));
      return;
    }
    this.connected(socket, reused, firstSent === true);
  };

  /**
   * The target left rotation before this work got a socket (nothing was sent): pick another one, keeping the
   * queue wait already begun. Not a retry (no budget spent) and not the target's failure; bounded, since the
   * target joins the tried set. None left: the work ends (503).
   */
  #moveOn(err: ProxyError, waitUntil: number): void {
    this.#waitUntil = waitUntil;
    this.leaveTarget(err);
    this.start();
  }

  #retryOrFail(err: ProxyError): void {
    this.leaveTarget(err);
    if (err.retryable && !this.attemptOver && this.mayRetry()) {
      this.start();
      return;
    }
    this.giveUp(err);
  }
}
