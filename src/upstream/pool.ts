// Keep-alive connection pools, one per upstream, bounded per target. Owns upstream sockets while idle and the
// requests waiting for a socket of a full target; a socket handed out by acquire() belongs to the caller until
// release(). Imports no client-side code. It folds each target's health (active bit, drain, passive failures),
// fullness and backup role into `Target.available`, sets slow start ramps, keeps the retry budget, and swaps in
// the discovered targets the primary sends (setDiscovered); `Target.active` belongs to the caller. A reload
// retires a pool (in-flight work finishes, nothing is kept idle) and may hand its per-target state to its
// successor. It never reads or writes application bytes (the one thing it writes is the PROXY header an upstream
// with send_proxy_protocol gets at the start of each connection), and never resolves names.
// UpstreamPool is the façade: acquire/release/cancel, the wait queue's service and bounds, tunnels, retire and
// passive health live here; per-target state is target-slot.ts, connecting upstream-connect.ts, the target set
// target-set.ts, availability availability.ts, /status rows pool-stats.ts, the queue's expiry order expiry-heap.ts.
import type { ByteSocket } from '../core/socket.js';
import { batchNow } from '../core/clock.js';
import type { UpstreamConfig } from '../config/schema.js';
import { ProxyError, type ErrorCode } from '../core/errors.js';
import { createBalancer, type Balancer, type Target } from './balancer.js';
import { PassiveWindow } from './health.js';
import { RetryBudget } from './retry-budget.js';
import { AcquireRequest, NOT_QUEUED, UNKNOWN_CLIENT, type AcquireCallback, type CancelAcquire, type UpstreamClient } from './acquire-request.js';
import { PooledSocket, closeIdle, healthy, unlendIdle, type TargetSlot } from './target-slot.js';
import { dropLendingPool } from '../native/exchange.js';
import { refreshAvailability } from './availability.js';
import { firstWaiter, shiftWaiter, type Waiter } from './wait-queue.js';
import { ExpiryHeap } from './expiry-heap.js';
import { connectTarget } from './upstream-connect.js';
import { UpstreamTls } from './upstream-tls.js';
import { TargetSet, usableDiscovered, type DiscoveredChange, type TargetSpec } from './target-set.js';
import { targetHealth, targetReport, targetStats, type PoolLimitStats, type TargetHealthStats, type TargetReport, type TargetStats } from './pool-stats.js';
import { afterBatch } from '../native/io.js';

// The pool's public types, where its callers have always imported them from.
export type { AcquireCallback, CancelAcquire, UpstreamClient } from './acquire-request.js';
export type { DiscoveredChange, TargetSpec } from './target-set.js';
export { usableDiscovered } from './target-set.js';
export type { PoolLimitStats, TargetHealthStats, TargetReport, TargetStats } from './pool-stats.js';

/**
 * An idle socket handed to acquire(): at the end of the native I/O batch being dispatched, else on the next tick.
 * Every kept-alive FastCGI request takes this path (HTTP's exchange takes its socket in its own call, takeIdle); a
 * `process.nextTick` entry costs a V8 runtime call and the tick queue's run around it (measured in the PHP bench's
 * profile), the batch's list a push.
 */
function answerReused(cb: AcquireCallback, socket: ByteSocket): void {
  if (!afterBatch(() => cb(null, socket, true))) process.nextTick(cb, null, socket, true);
}

export interface PoolOptions {
  /** Clock for passive health windows, slow start and the retry budget (ms). Default batchNow (core/clock.ts); tests inject one. */
  readonly now?: () => number;
  /** hash only: keys pinned to a target while tunnels for them are open (see BalancerOptions.pins). */
  readonly pins?: ReadonlyMap<string, string>;
  /**
   * The pool this one replaces on reload (same upstream name, changed config): targets with the same address
   * keep their passive health window (when max_fails and fail_timeout are unchanged) and slow start ramp, and
   * the queue and retry counters carry on, so totals never go back.
   */
  readonly previous?: UpstreamPool;
  /**
   * The discovered targets to start with (the primary's current set, on reload): the pool's first set, so
   * they do not slow-start, and they carry `previous`'s state like fixed targets do.
   */
  readonly discovered?: readonly TargetSpec[];
}

/** What the pool tells its owner (the worker logs them); called synchronously, must not throw. */
export interface PoolHooks {
  /** A target went out of (down = true) or came back into this worker's rotation because of passive health. */
  passive?(target: Target, down: boolean, code: ErrorCode | null): void;
  /** No target is usable: all non-drained targets are tried anyway (nginx), or that ended. */
  panic?(on: boolean): void;
}

/** A queued waiter as the pool keeps it: in its target's FIFO and in the pool's expiry heap. */
interface QueuedWaiter extends Waiter {
  readonly slot: TargetSlot;
}

/** Codes that count as a passive failure of a target when reported (connect failures are counted by the pool). */
const PASSIVE_FAILURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'UPSTREAM_CONNECT_REFUSED',
  'UPSTREAM_CONNECT_TIMEOUT',
  'UPSTREAM_CONNECT_ERROR',
  'UPSTREAM_TLS',
  'UPSTREAM_HEADERS_TIMEOUT',
  'UPSTREAM_BAD_RESPONSE',
  'UPSTREAM_RESET',
  'UPSTREAM_HANDSHAKE_INVALID',
]);

export class UpstreamPool {
  readonly name: string;
  readonly config: UpstreamConfig;
  #balancer: Balancer;
  /** The targets, fixed then discovered, and those leaving (see TargetSet). */
  readonly #set: TargetSet;
  /** `#set.slots`, held here too: acquire looks a target up without a hop. */
  readonly #slots: Map<Target, TargetSlot>;
  /** hash only: keys held on a target by their open tunnels (PoolOptions.pins); every balancer built reads it. */
  readonly #pins: ReadonlyMap<string, string> | undefined;
  readonly #sockets = new WeakMap<ByteSocket, PooledSocket>();
  readonly #hooks: PoolHooks;
  readonly #now: () => number;
  readonly #retryBudget: RetryBudget;
  /** send_proxy_protocol: a header opens every connection, and idle sockets are kept per client. */
  readonly #proxyHeader: 'off' | 'v1' | 'v2';
  /** `tls`: the client context and session cache of this pool's TLS to its targets. */
  readonly #tls: UpstreamTls | undefined;
  #closed = false;
  /** Out of service after a reload: see retire(). */
  #retired = false;
  #panic = false;
  /** Waiters in every slot's queue (bounded by queue.size). */
  #queued = 0;
  #queueRejected = 0;
  #queueTimeouts = 0;
  /** Due at the earliest expiry of a queued waiter (see #armQueueTimer); null when none is armed. */
  #queueTimer: NodeJS.Timeout | null = null;
  #queueTimerAt = 0;
  /** Every waiter of every slot (those leaving included) in expiry order: a fire takes only those due. */
  readonly #expiries = new ExpiryHeap<QueuedWaiter>();
  /** Guards #serveQueue against re-entry through the counts it changes. */
  #serving = false;
  /** Lends idle native sockets to the addon's native FastCGI exchange under this id (lendAs); -1 = not. */
  #lendId = -1;
  #lendIndexes = 0;
  /** Passive health counts the connect failures of connectTarget (bound once). */
  readonly #onConnectFailure = (target: Target, code: ErrorCode): void => this.reportFailure(target, code);
  /** Told after setDiscovered changed the targets (onTargets): the addon's L4 compiles of this pool follow them. */
  readonly #onTargets = new Set<() => void>();
  /** Tells a slot's waiters to pick another target (bound once, for the target set and availability). */
  readonly #moveOut = (slot: TargetSlot, why: string): void => this.#moveWaiters(slot, why);

  constructor(name: string, config: UpstreamConfig, hooks: PoolHooks = {}, options: PoolOptions = {}) {
    this.name = name;
    this.config = config;
    this.#now = options.now ?? batchNow;
    this.#hooks = hooks;
    this.#retryBudget = new RetryBudget(config.retries.budget, config.retries.min_per_second);
    this.#proxyHeader = config.send_proxy_protocol;
    // files are read again at each reload (a renewed client certificate at the same path is picked up); the
    // sessions of the pool this one replaces carry over when the settings are the same
    this.#tls = config.tls === undefined ? undefined : new UpstreamTls(config.tls, options.previous === undefined ? undefined : options.previous.#tls);
    this.#pins = options.pins;
    this.#set = new TargetSet(config.targets.length, (spec, startUp, old) => this.#newSlot(spec, startUp, old), this.#moveOut);
    this.#slots = this.#set.slots;
    const previous = options.previous;
    // the slots of the pool this one replaces, by address: what they carry over is decided in #newSlot
    const before = new Map<string, TargetSlot>();
    if (previous !== undefined) {
      for (const slot of previous.#slots.values()) if (!before.has(slot.target.id)) before.set(slot.target.id, slot);
      this.#queueRejected = previous.#queueRejected;
      this.#queueTimeouts = previous.#queueTimeouts;
      this.#retryBudget.carryTotals(previous.#retryBudget.stats(this.#now()));
    }
    // targets usable at start do not slow-start
    const fixed = config.targets.map((t) => this.#set.add({ id: t.address, host: t.host, port: t.port, weight: t.weight, backup: t.backup }, true, before.get(t.address)).target);
    this.#set.targets = Object.freeze(fixed);
    if (options.discovered !== undefined) this.#set.place(usableDiscovered(config, options.discovered), before);
    this.#balancer = this.#newBalancer();
    const now = this.#now();
    for (const slot of this.#slots.values()) if (slot.passive.isDown(now)) this.#armPassiveTimer(slot, now);
    this.#refresh(); // backups start out of rotation
  }

  /** The targets balancers pick from; a new array (and balancer) when discovery changes the set. */
  get targets(): readonly Target[] {
    return this.#set.targets;
  }

  get balancer(): Balancer {
    return this.#balancer;
  }

  #newBalancer(): Balancer {
    return createBalancer(this.config.balance, this.#set.targets, { slowStart: this.config.slow_start, now: this.#now, pins: this.#pins });
  }

  /**
   * A new slot for `spec` (the set registers it). `old`: the same address in the pool this one replaces, whose
   * slow start ramp carries on, and whose passive health window too while max_fails and fail_timeout are unchanged.
   */
  #newSlot(spec: TargetSpec, startUp: boolean, old?: TargetSlot): TargetSlot {
    const target: Target = { id: spec.id, host: spec.host, port: spec.port, weight: spec.weight, available: spec.weight > 0, active: 0, remote: 0, backup: spec.backup, rampUntil: old?.target.rampUntil ?? 0 };
    const { max_fails, fail_timeout } = this.config.health.passive;
    const keepPassive = old !== undefined && old.passive.failTimeoutMs === fail_timeout && old.passive.maxFails === (fail_timeout > 0 ? max_fails : 0);
    const slot: TargetSlot = {
      target,
      idle: [],
      byClient: this.#proxyHeader === 'off' ? null : new Map(),
      open: 0,
      tunnels: 0,
      full: false,
      up: startUp && target.weight > 0,
      waiters: [],
      waitHead: 0,
      changed: () => this.#slotChanged(slot),
      healthy: true,
      draining: false,
      // shared with the retired pool, which no longer counts failures (see retire())
      passive: keepPassive ? old.passive : new PassiveWindow(max_fails, fail_timeout),
      passiveTimer: null,
      removed: false,
      lend: this.#lendId,
      lendIndex: this.#lendIndexes++,
    };
    return slot;
  }

  /**
   * Replaces the discovered targets (the primary resolved them; the fixed targets from config stay first).
   * A target that stays keeps its object, sockets, counters and health; its weight and backup role follow the
   * spec. One that leaves gets no new work: its queued acquires move to other targets, its idle sockets close,
   * busy ones close when released, tunnels stay. One that joins starts healthy and, except in the first set a
   * pool receives (the instance had it already), ramps up with slow start. A spec repeating a fixed target's
   * address is skipped (the fixed one serves). The balancer is rebuilt: hash keeps most keys where they were.
   */
  setDiscovered(specs: readonly TargetSpec[]): DiscoveredChange {
    this.#set.prune();
    const usable = usableDiscovered(this.config, specs);
    if (this.#set.same(usable)) {
      this.#set.discoveredOnce = true;
      return { added: [], removed: [] }; // a set sent again (reload, resend): the balancer keeps its state
    }
    const change = this.#set.place(usable);
    this.#balancer = this.#newBalancer();
    this.#refresh();
    for (const listener of this.#onTargets) listener();
    return change;
  }

  /**
   * Calls `listener` after each setDiscovered that changed the targets (a new `targets` array), never for a set
   * sent again unchanged; once per listener however often it is added. It must not throw.
   */
  onTargets(listener: () => void): void {
    this.#onTargets.add(listener);
  }

  /**
   * Every waiter of `slot` is told to pick another target (UPSTREAM_TARGET_GONE, retryable, with its deadline)
   * instead of waiting out its queue timeout on a target that will not serve it.
   */
  #moveWaiters(slot: TargetSlot, why: string): void {
    for (let waiter = this.#takeWaiter(slot); waiter !== undefined; waiter = this.#takeWaiter(slot)) {
      const err = new ProxyError('UPSTREAM_TARGET_GONE', `upstream ${this.name} target ${slot.target.id} ${why} while a request waited for it`, { retryable: true });
      process.nextTick(waiter.cb, err, null, false, waiter.deadline);
    }
  }

  /**
   * A connected socket to `target`: an idle kept-alive one when there is one (reused = true), else a new
   * connection within connect timeout and max_connections. At max_connections the acquire waits in a FIFO
   * queue (bounded by queue.size for the whole upstream) for a socket of that target to be released or to
   * close. Errors: UPSTREAM_CONNECT_REFUSED / _TIMEOUT / _ERROR (retryable); UPSTREAM_UNAVAILABLE when the
   * queue is full (or, retryable, when queueing is off); UPSTREAM_QUEUE_TIMEOUT after queue.timeout;
   * UPSTREAM_TARGET_GONE (retryable, see AcquireCallback) when the target left rotation while the acquire
   * waited, or was removed by discovery before it. `waitUntil` (from an earlier UPSTREAM_TARGET_GONE) bounds
   * a wait already begun. `client`: whom the connection speaks for when this upstream sends PROXY headers (see
   * UpstreamClient). `first`: the caller's first bytes, written on a new connection as soon as it is
   * established inside connect(2) (a loopback or Unix target; not in a PROXY-sending or TLS pool), before the
   * callback, which then says so (`firstSent`). The callback is never synchronous. Returns a cancel for the caller
   * that went away, valid in every phase (see CancelAcquire).
   */
  acquire(target: Target, callback: AcquireCallback, waitUntil = 0, client?: UpstreamClient, first?: string): CancelAcquire {
    const req = new AcquireRequest(callback, (socket) => this.#reclaim(target, socket));
    req.withdraw = this.#acquire(target, req.answer, waitUntil, client, first);
    return req.cancel;
  }

  /**
   * A healthy idle socket of `target`, handed over now (reused, busy from here), or null: then acquire() as
   * usual. For a caller ready to take a socket inside its own call (the HTTP exchange): a kept-alive request
   * costs no tick, acquire object or closure. Never in a PROXY-sending pool (acquire() picks the client's own
   * socket there) nor a closed one.
   */
  takeIdle(target: Target): ByteSocket | null {
    const slot = this.#slots.get(target);
    if (slot === undefined || slot.byClient !== null || this.#closed) return null;
    return this.#popIdle(slot);
  }

  /** The warmest healthy idle socket of `slot`, marked busy; dead ones met on the way are destroyed. */
  #popIdle(slot: TargetSlot): ByteSocket | null {
    const idle = slot.idle;
    while (idle.length > 0) {
      const pooled = idle.pop() as PooledSocket;
      if (!pooled.reclaim()) {
        pooled.leaveIdle('busy'); // the addon took it in this batch: its STARTED event adopts it (takeLent)
        if (idle.length === 0) this.#slotChanged(slot);
        continue;
      }
      if (healthy(pooled.socket)) {
        pooled.leaveIdle('busy');
        if (idle.length === 0) this.#slotChanged(slot); // may have become full
        return pooled.socket;
      }
      // Dead but not yet 'close'd (e.g. FIN seen this tick): its idle listeners stay to absorb a late 'error'.
      pooled.socket.destroy();
    }
    return null;
  }

  /**
   * A socket whose acquire was cancelled before it was handed over: nothing was written on it by the caller
   * (a PROXY header may have been), so it is released as reusable, except in a PROXY-sending pool where it
   * speaks for a client that is gone, and one that carries the caller's first bytes (its answer is no one's).
   */
  #reclaim(target: Target, socket: ByteSocket): void {
    const pooled = this.#sockets.get(socket);
    if (pooled !== undefined && (pooled.slot.byClient !== null || pooled.spoke)) {
      pooled.forget();
      socket.destroy();
      return;
    }
    this.release(target, socket, true);
  }

  #acquire(target: Target, cb: AcquireCallback, waitUntil: number, client: UpstreamClient | undefined, first: string | undefined): CancelAcquire {
    const slot = this.#slots.get(target);
    if (slot === undefined) {
      const err = this.#set.gone.has(target)
        ? new ProxyError('UPSTREAM_TARGET_GONE', `upstream ${this.name} target ${target.id} was removed by discovery`, { retryable: true })
        : new ProxyError('INTERNAL', `target ${target.id} does not belong to upstream ${this.name}`);
      process.nextTick(cb, err, null, false, waitUntil);
      return NOT_QUEUED;
    }
    if (this.#closed) {
      process.nextTick(cb, new ProxyError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} is closed`), null, false);
      return NOT_QUEUED;
    }
    if (slot.byClient !== null) return this.#acquireFor(slot, cb, waitUntil, client ?? UNKNOWN_CLIENT);
    const socket = this.#popIdle(slot);
    if (socket !== null) {
      answerReused(cb, socket);
      return NOT_QUEUED;
    }
    // Earlier waiters go first (FIFO) even when a socket just closed and left room.
    if (slot.open < this.config.max_connections && firstWaiter(slot) === undefined) {
      this.#connect(slot, cb, undefined, first);
      return NOT_QUEUED;
    }
    return this.#enqueue(slot, cb, waitUntil, undefined);
  }

  /**
   * acquire() in a PROXY-sending pool: only an idle socket of the same client is reused. At max_connections,
   * other clients' idle sockets are closed, oldest first, to make room: they hold a slot no one else may use.
   */
  #acquireFor(slot: TargetSlot, cb: AcquireCallback, waitUntil: number, client: UpstreamClient): CancelAcquire {
    const mine = slot.byClient?.get(client.key);
    while (mine !== undefined && mine.length > 0) {
      const pooled = mine[mine.length - 1];
      pooled.unlistIdle();
      if (healthy(pooled.socket)) {
        pooled.leaveIdle('busy');
        if (slot.idle.length === 0) this.#slotChanged(slot); // may have become full
        answerReused(cb, pooled.socket);
        return NOT_QUEUED;
      }
      pooled.socket.destroy(); // its idle listeners stay to absorb a late 'error'
    }
    this.#evictIdle(slot);
    if (slot.open < this.config.max_connections && firstWaiter(slot) === undefined) {
      this.#connect(slot, cb, client);
      return NOT_QUEUED;
    }
    return this.#enqueue(slot, cb, waitUntil, client);
  }

  /** Closes idle sockets, oldest first, while `slot` is at max_connections (their `open` goes down at once). */
  #evictIdle(slot: TargetSlot): void {
    const max = this.config.max_connections;
    while (slot.open >= max && slot.idle.length > 0) {
      const oldest = slot.idle[0];
      if (!oldest.reclaim()) {
        oldest.unlistIdle();
        oldest.leaveIdle('busy'); // the addon's now (takeLent)
        continue;
      }
      oldest.forget(); // unlists it and lowers `open` now; 'close' comes a loop turn later
      oldest.socket.destroy();
    }
  }

  /**
   * A client of a PROXY-sending pool is gone: its idle sockets go too, since no other client may use them (a
   * socket still busy for it is destroyed by its aborted exchange, never released).
   */
  dropClient(key: string): void {
    for (const slot of this.#slots.values()) {
      const mine = slot.byClient?.get(key);
      if (mine === undefined) continue;
      for (const pooled of mine.slice()) pooled.socket.destroy();
    }
  }

  /** True when every new connection to this upstream starts with a PROXY header (send_proxy_protocol). */
  get sendsProxyHeader(): boolean {
    return this.#proxyHeader !== 'off';
  }

  #enqueue(slot: TargetSlot, cb: AcquireCallback, waitUntil: number, client: UpstreamClient | undefined): CancelAcquire {
    const { size, timeout } = this.config.queue;
    const max = this.config.max_connections;
    if (this.#queued >= size) {
      this.#queueRejected++;
      // Without a queue another target may still have room: the caller may retry there. A full queue means
      // the whole upstream is saturated: 503 at once rather than a retry storm.
      const err =
        size === 0
          ? new ProxyError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} target ${slot.target.id}: max_connections (${max}) reached`, { retryable: true })
          : new ProxyError('UPSTREAM_UNAVAILABLE', `upstream ${this.name}: wait queue full (${size}) with target ${slot.target.id} at max_connections (${max})`);
      process.nextTick(cb, err, null, false);
      return NOT_QUEUED;
    }
    const now = this.#now();
    // A waiter moved from a target that left keeps the rest of its wait (at least a tick: it gets its answer
    // from the timer, like any waiter).
    const wait = waitUntil > 0 ? Math.max(1, Math.min(timeout, waitUntil - now)) : timeout;
    const waiter: QueuedWaiter = { cb, client, deadline: waitUntil > 0 ? waitUntil : now + timeout, expires: now + wait, done: false, slot };
    slot.waiters.push(waiter);
    this.#expiries.push(waiter);
    this.#queued++;
    if (this.#queueTimer === null || waiter.expires < this.#queueTimerAt) this.#armQueueTimer(waiter.expires, now);
    return () => {
      if (waiter.done) return;
      waiter.done = true;
      this.#queued--;
      this.#expiries.dropped();
    };
  }

  /**
   * One timer for every waiter's queue.timeout, due at the earliest expiry (not a timer per queued request: under
   * a saturated upstream every request queues, and a timer set and cleared each time is a cost of its own).
   */
  #armQueueTimer(at: number, now: number): void {
    if (this.#queueTimer !== null) clearTimeout(this.#queueTimer);
    this.#queueTimerAt = at;
    this.#queueTimer = setTimeout(() => this.#expireWaiters(), Math.max(1, at - now));
    this.#queueTimer.unref();
  }

  /**
   * The queue timer fired: waiters past their expiry get UPSTREAM_QUEUE_TIMEOUT, earliest first, and the timer
   * re-arms for the next. Only the entries due are touched (a walk of every queue here was O(queued) a fire, and
   * fires come each ms when expiries are spread). The answers go after: one may queue or release again.
   */
  #expireWaiters(): void {
    this.#queueTimer = null;
    const now = this.#now();
    const expired = this.#expiries.take(now);
    for (const waiter of expired) {
      waiter.done = true;
      this.#queued--;
      this.#queueTimeouts++;
      firstWaiter(waiter.slot); // drops the answered entries at its head
    }
    const next = this.#expiries.next();
    if (next !== Infinity) this.#armQueueTimer(next, now);
    const { timeout } = this.config.queue;
    const max = this.config.max_connections;
    for (const { cb, slot } of expired) {
      cb(new ProxyError('UPSTREAM_QUEUE_TIMEOUT', `upstream ${this.name} target ${slot.target.id}: no connection free within ${timeout}ms (max_connections ${max})`), null, false);
    }
  }

  /** The first live waiter of `slot`, taken off its queue; undefined when none. */
  #takeWaiter(slot: TargetSlot): Waiter | undefined {
    const waiter = shiftWaiter(slot);
    if (waiter === undefined) return undefined;
    waiter.done = true;
    this.#queued--;
    this.#expiries.dropped();
    return waiter;
  }

  /**
   * `open` or the idle stack of `slot` changed: waiters get new connections while there is room, then the
   * slot's fullness is updated (a flip recomputes every target's `available`, O(targets)).
   */
  #slotChanged(slot: TargetSlot): void {
    if (!this.#serving && !this.#closed) {
      this.#serving = true;
      try {
        while (slot.open < this.config.max_connections) {
          const waiter = this.#takeWaiter(slot);
          if (waiter === undefined) break;
          this.#connect(slot, waiter.cb, waiter.client); // its PooledSocket raises `open` before the loop checks again
        }
      } finally {
        this.#serving = false;
      }
    }
    if (slot.removed) {
      if (slot.open === 0 && slot.tunnels === 0 && slot.target.active <= 0) this.#set.leaving.delete(slot.target); // nothing of it left
      return;
    }
    const full = slot.open >= this.config.max_connections && slot.idle.length === 0;
    if (full !== slot.full) {
      slot.full = full;
      this.#refresh();
    }
  }

  #connect(slot: TargetSlot, cb: AcquireCallback, client: UpstreamClient | undefined, first?: string): void {
    const who = slot.byClient === null ? undefined : (client ?? UNKNOWN_CLIENT);
    const pooled = connectTarget(slot, cb, who, this.config.timeouts.connect, this.#proxyHeader, this.#onConnectFailure, this.#tls, first);
    this.#sockets.set(pooled.socket, pooled);
  }

  /**
   * Gives a socket back: kept idle when reusable and under max_idle, else destroyed. A waiter that takes it is
   * answered on a later tick, or with `handOff` 'now' inside this call: the caller is done with the socket and
   * with its own state, and the waiter's request leaves before the caller goes on (FastCGI: the application's
   * next request is on its way while this one's answer is written to its client).
   */
  release(target: Target, socket: ByteSocket, reusable: boolean, handOff: 'tick' | 'now' = 'tick'): void {
    const pooled = this.#sockets.get(socket);
    if (pooled === undefined || pooled.slot.target !== target) {
      socket.destroy(); // not one of ours: never pool a stranger
      return;
    }
    if (pooled.state === 'idle') return; // released twice: it is already pooled once
    pooled.spoke = false; // what its acquirer wrote first had its exchange (a reusable socket is clean again)
    if (pooled.slot.removed) reusable = false; // its target left: this exchange was its last
    if (pooled.slot.byClient !== null) return this.#releaseFor(pooled, reusable);
    if (reusable && pooled.state === 'busy' && !this.#closed && healthy(socket)) {
      // A waiter takes the socket as it is (still busy): FIFO, and no trip through the idle stack.
      const waiter = this.#takeWaiter(pooled.slot);
      if (waiter !== undefined) {
        if (handOff === 'now') waiter.cb(null, socket, true);
        else process.nextTick(waiter.cb, null, socket, true);
        return;
      }
    }
    if (
      reusable &&
      pooled.state === 'busy' &&
      !this.#closed &&
      !this.#retired &&
      pooled.slot.idle.length < this.config.keepalive.max_idle &&
      healthy(socket)
    ) {
      pooled.enterIdle(this.config.keepalive.idle_timeout);
    } else {
      socket.destroy();
    }
  }

  /**
   * release() in a PROXY-sending pool: the socket can serve its own client only, so a waiter (another client)
   * gets its slot rather than the socket; a full idle list loses its oldest socket rather than this warm one.
   */
  #releaseFor(pooled: PooledSocket, reusable: boolean): void {
    const slot = pooled.slot;
    const keep = reusable && pooled.state === 'busy' && !this.#closed && !this.#retired && this.config.keepalive.max_idle > 0 && healthy(pooled.socket);
    if (!keep || firstWaiter(slot) !== undefined) {
      pooled.forget(); // `open` goes down now, so a waiter is connected in this call
      pooled.socket.destroy();
      return;
    }
    if (slot.idle.length >= this.config.keepalive.max_idle) {
      const oldest = slot.idle[0];
      oldest.forget();
      oldest.socket.destroy();
    }
    pooled.enterIdle(this.config.keepalive.idle_timeout);
  }

  /**
   * Lends this pool's idle native sockets to the addon's native FastCGI exchange from now on, when it can: round
   * robin (the addon takes connections target after target, skipping those with none lent), no PROXY header, no TLS,
   * kept-alive connections, in service. The id the addon knows the pool by, or -1.
   */
  lendAs(id: () => number): number {
    if (this.#lendId >= 0) return this.#lendId;
    if (this.#closed || this.#retired || this.config.balance !== 'round_robin' || this.#proxyHeader !== 'off' || this.#tls !== undefined || this.config.keepalive.max_idle <= 0) return -1;
    this.#lendId = id();
    for (const slot of this.#slots.values()) {
      slot.lend = this.#lendId;
      for (const pooled of slot.idle) pooled.lend(); // those idle now, at once
    }
    return this.#lendId;
  }

  /** Lends no more: the lent sockets are reclaimed (one the addon took in this batch is adopted as usual). */
  #stopLending(): void {
    if (this.#lendId < 0) return;
    dropLendingPool(this.#lendId);
    this.#lendId = -1;
    for (const slot of [...this.#slots.values(), ...this.#set.leaving.values()]) {
      slot.lend = -1;
      unlendIdle(slot);
    }
  }

  /**
   * The addon started an exchange on `socket`, an idle socket this pool lent it (a STARTED event): busy from now
   * on, the caller's until release(). Its target, or null when it is not such a socket any more (closed).
   */
  takeLent(socket: ByteSocket): Target | null {
    const pooled = this.#sockets.get(socket);
    if (pooled === undefined || (pooled.state !== 'idle' && pooled.state !== 'busy') || socket.destroyed) return null;
    pooled.lent = false;
    if (pooled.state === 'idle') {
      pooled.unlistIdle();
      pooled.leaveIdle('busy');
      if (pooled.slot.idle.length === 0) this.#slotChanged(pooled.slot);
    }
    return pooled.slot.target;
  }

  /**
   * Takes a socket out of the pool for good (it became a tunnel): it no longer counts toward max_idle nor
   * max_connections (a waiter may get its slot at once); `tunnels` counts it until it closes. The balancer's
   * load (`Target.active`) still counts the tunnel: that is the caller's counter.
   */
  detach(target: Target, socket: ByteSocket): void {
    const pooled = this.#sockets.get(socket);
    if (pooled === undefined || pooled.slot.target !== target) return;
    pooled.detach();
  }

  /**
   * Closes idle sockets and refuses new acquires. Busy sockets are destroyed when released; tunnels
   * (detached) are left alone: a reload must not cut long-lived connections.
   */
  close(): void {
    this.#stopLending();
    this.#closed = true;
    if (this.#queueTimer !== null) clearTimeout(this.#queueTimer);
    this.#queueTimer = null;
    this.#expiries.clear();
    for (const slot of [...this.#slots.values(), ...this.#set.leaving.values()]) {
      if (slot.passiveTimer !== null) clearTimeout(slot.passiveTimer);
      slot.passiveTimer = null;
      closeIdle(slot);
      for (let waiter = this.#takeWaiter(slot); waiter !== undefined; waiter = this.#takeWaiter(slot)) {
        process.nextTick(waiter.cb, new ProxyError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} is closed`), null, false);
      }
    }
  }

  /**
   * Takes the pool out of service (a reload replaced or removed its upstream): no new request comes to it, and
   * those in flight finish here, their retries and queued waits included. Idle sockets close now, released ones
   * are not kept, passive health stops counting; tunnels are left alone. close() it once `busy` is false.
   */
  retire(): void {
    if (this.#retired || this.#closed) return;
    this.#stopLending();
    this.#retired = true;
    for (const slot of this.#slots.values()) {
      if (slot.passiveTimer !== null) clearTimeout(slot.passiveTimer);
      slot.passiveTimer = null;
      closeIdle(slot);
    }
  }

  /** Requests or tunnels still use it (targets discovery removed included), or requests wait in its queue (for retire()). */
  get busy(): boolean {
    if (this.#queued > 0) return true;
    for (const t of this.#set.targets) if (t.active > 0) return true;
    for (const t of this.#set.leaving.keys()) if (t.active > 0) return true;
    return false;
  }

  /** Counts a request (its first attempt) toward the retry budget. */
  countRequest(): void {
    this.#retryBudget.request(this.#now());
  }

  /**
   * Asks the retry budget for one retry: true (counted) when retries stay within `retries.budget` of the
   * requests over the last ~10s (or `retries.min_per_second`), false (counted as denied) otherwise. The
   * per-request bound (`retries.max`) is the caller's.
   */
  allowRetry(): boolean {
    return this.#retryBudget.tryRetry(this.#now());
  }

  /**
   * Sets each target's `remote` (the other workers' open requests + tunnels) from `counts`, in the order of
   * `targets`; false (nothing set) when the lengths differ (the sender's config has other targets).
   */
  setRemoteLoad(counts: readonly number[]): boolean {
    const targets = this.targets;
    if (counts.length !== targets.length) return false;
    for (let i = 0; i < targets.length; i++) targets[i].remote = counts[i];
    return true;
  }

  /** Queue entries the queue timer has taken off its heap so far (tests bound the timer's work with it). */
  get queueTimerVisits(): number {
    return this.#expiries.visited;
  }

  /** Queue and retry counters (for /status); not for the hot path. */
  limits(): PoolLimitStats {
    return { queued: this.#queued, queueRejected: this.#queueRejected, queueTimeouts: this.#queueTimeouts, retries: this.#retryBudget.stats(this.#now()) };
  }

  /**
   * Sets what the primary knows about target `id` (active health, drain) in this pool; false when the pool has
   * no such target. Every target with that address (a duplicate in config is the same backend) is set.
   */
  setTargetState(id: string, state: { readonly healthy: boolean; readonly draining: boolean }): boolean {
    let found = false;
    for (const slot of this.#slots.values()) {
      if (slot.target.id !== id) continue;
      found = true;
      slot.healthy = state.healthy;
      slot.draining = state.draining;
    }
    if (found) this.#refresh();
    return found;
  }

  /**
   * Passive health: the data path reports a failed exchange with `target`. Counted (nginx max_fails within
   * fail_timeout) when `code` is a failure of the target: connect refused/timeout/error (the pool reports those
   * itself from acquire), no response head in time, a malformed response, a reset before the response head, an
   * invalid 101. Other codes (client side, limits) are ignored.
   */
  reportFailure(target: Target, code: ErrorCode): void {
    if (!PASSIVE_FAILURES.has(code)) return;
    this.#passiveFailure(target, code);
  }

  /** Passive health for responses: a 5xx counts as a failure when the upstream's `health.passive.on_5xx` is on. */
  reportStatus(target: Target, status: number): void {
    if (status >= 500 && status <= 599 && this.config.health.passive.on_5xx) this.#passiveFailure(target, null);
  }

  #passiveFailure(target: Target, code: ErrorCode | null): void {
    const slot = this.#slots.get(target);
    if (slot === undefined || this.#closed || this.#retired) return;
    const now = this.#now();
    if (!slot.passive.failure(now)) return;
    this.#armPassiveTimer(slot, now);
    this.#refresh();
    this.#hooks.passive?.(target, true, code);
  }

  /** The wall clock and timers can disagree by a millisecond: a timer that fires early re-arms for the rest. */
  #armPassiveTimer(slot: TargetSlot, now: number): void {
    if (slot.passiveTimer !== null) clearTimeout(slot.passiveTimer);
    slot.passiveTimer = setTimeout(() => {
      slot.passiveTimer = null;
      const later = this.#now();
      if (slot.passive.isDown(later)) return this.#armPassiveTimer(slot, later);
      this.#refresh();
      this.#hooks.passive?.(slot.target, false, null);
    }, Math.max(1, slot.passive.downUntil - now));
    slot.passiveTimer.unref();
  }

  /** Recomputes every target's `available` and the panic state (see refreshAvailability). */
  #refresh(): void {
    const panic = refreshAvailability(this.#slots, this.#now(), this.config.slow_start, this.#moveOut);
    // a target out of rotation (health, drain, passive failures) gets no request from the addon either
    if (this.#lendId >= 0) for (const slot of this.#slots.values()) if (!slot.target.available) unlendIdle(slot);
    if (panic !== this.#panic) {
      this.#panic = panic;
      if (!this.#retired) this.#hooks.panic?.(panic);
    }
  }

  /** True while no target is usable and all non-drained ones are tried anyway. */
  get panic(): boolean {
    return this.#panic;
  }

  /** Each target's health inputs (for /status); not for the hot path. */
  health(): TargetHealthStats[] {
    const now = this.#now();
    return this.targets.map((t) => targetHealth(this.#slots.get(t) as TargetSlot, now));
  }

  /** Every target of this pool, and those leaving, as a worker reports them (for /status); not for the hot path. */
  report(): TargetReport[] {
    this.#set.prune();
    const now = this.#now();
    const row = (slot: TargetSlot): TargetReport => targetReport(slot, now);
    return [...this.#set.targets.map((t) => row(this.#slots.get(t) as TargetSlot)), ...[...this.#set.leaving.values()].map(row)];
  }

  /** A snapshot of each target's counts (for /status); not for the hot path. */
  stats(): TargetStats[] {
    const now = this.#now();
    return this.targets.map((t) => targetStats(this.#slots.get(t) as TargetSlot, this.config.slow_start, now));
  }
}
