// Keep-alive connection pools, one per upstream, bounded per target. Owns upstream sockets while idle and the
// requests waiting for a socket of a full target; a socket handed out by acquire() belongs to the caller until
// release(). Imports no client-side code. It folds each target's health (active bit, drain, passive failures),
// fullness and backup role into `Target.available`, sets slow start ramps, keeps the retry budget, and swaps in
// the discovered targets the primary sends (setDiscovered); `Target.active` belongs to the caller. A reload
// retires a pool (in-flight work finishes, nothing is kept idle) and may hand its per-target state to its
// successor. It never reads or writes application bytes (the one thing it writes is the PROXY header an upstream
// with send_proxy_protocol gets at the start of each connection), and never resolves names.
import { connect } from 'node:net';
import { buildProxyV1, buildProxyV2, type ProxyEndpoint } from '../wire/proxy-protocol.js';
import type { ByteSocket } from '../core/socket.js';
import { connectNative } from '../native/io.js';
import type { UpstreamConfig } from '../config/schema.js';
import { ProxyError, connectError, type ErrorCode } from '../core/errors.js';
import { createBalancer, type Balancer, type Target } from './balancer.js';
import { PassiveWindow } from './health.js';
import { RetryBudget, type RetryBudgetStats } from './retry-budget.js';

/**
 * Called on a later tick than acquire(), never synchronously. The caller must attach its own 'error' and
 * 'data' listeners (or pause the socket) inside the callback, before returning: a reused socket is already
 * flowing, so bytes that arrive after the callback returned with no 'data' listener would be dropped.
 * With UPSTREAM_TARGET_GONE (the target left rotation while the acquire waited in its queue, or before it
 * started), `waitUntil` is the end of the wait already begun (pool clock, ms; 0 = none): the caller picks
 * another target and passes it to acquire() again, so moving never extends a request's queue time.
 */
export type AcquireCallback = (err: ProxyError | null, socket: ByteSocket | null, reused: boolean, waitUntil?: number) => void;

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
const UNKNOWN_CLIENT: UpstreamClient = Object.freeze({ key: '', source: undefined, destination: undefined });

/**
 * Withdraws an acquire whatever its phase (queued, connecting, or a socket on its way): the callback is then
 * never called, and a socket made or picked for it stays the pool's (kept idle, handed to a waiter, or closed).
 * Does nothing once the callback ran: the socket is the caller's then.
 */
export type CancelAcquire = () => void;
const NOT_QUEUED: CancelAcquire = () => {};

/**
 * One acquire from the call to its answer. Every path of the pool answers through `answer`, so a caller that
 * went away (cancel) never receives a socket it could not own: the pool takes it back (`reclaim`). Without this
 * a socket connected for an aborted request had no owner, no 'error' listener, and counted as open forever.
 */
class AcquireRequest {
  readonly #cb: AcquireCallback;
  readonly #reclaim: (socket: ByteSocket) => void;
  #state: 'pending' | 'answered' | 'cancelled' = 'pending';
  /** Leaves the wait queue while the request is queued there (set by #enqueue). */
  withdraw: CancelAcquire = NOT_QUEUED;

  constructor(cb: AcquireCallback, reclaim: (socket: ByteSocket) => void) {
    this.#cb = cb;
    this.#reclaim = reclaim;
  }

  readonly answer: AcquireCallback = (err, socket, reused, waitUntil) => {
    if (this.#state === 'cancelled') {
      if (socket !== null) this.#reclaim(socket);
      return;
    }
    if (this.#state !== 'pending') return;
    this.#state = 'answered';
    this.#cb(err, socket, reused, waitUntil);
  };

  readonly cancel: CancelAcquire = () => {
    if (this.#state !== 'pending') return;
    this.#state = 'cancelled';
    this.withdraw();
  };
}

/** A target as discovery hands it to the pool: `id` is "ip:port" ("[v6]:port"), the key it is known by. */
export interface TargetSpec {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
}

/** What setDiscovered() changed, by target id. */
export interface DiscoveredChange {
  readonly added: string[];
  readonly removed: string[];
}

/** One target as a worker reports it (for /status): current ones, then those that left and still have sockets. */
export interface TargetReport {
  readonly target: string;
  readonly available: boolean;
  readonly active: number;
  readonly remote: number;
  /** Sockets open to the target (as in TargetStats) and, of those, idle in the pool. */
  readonly open: number;
  readonly idle: number;
  readonly healthy: boolean;
  readonly draining: boolean;
  readonly passiveDown: boolean;
  readonly failures: number;
  /** Removed by discovery: no new work; its open connections and tunnels finish (listed until they have). */
  readonly leaving: boolean;
}

/** One target's counts, for the admin status page. */
export interface TargetStats {
  readonly target: string;
  /** Sockets open to the target (connecting, busy and idle), until their 'close'; tunnels are not among them. */
  readonly open: number;
  /** Sockets detached as tunnels (WebSocket, L4), until their 'close': not counted against max_connections. */
  readonly tunnels: number;
  /** Of those, kept-alive sockets waiting in the pool. */
  readonly idle: number;
  /** Requests + tunnels in progress (the caller's counter). */
  readonly active: number;
  /** Requests waiting for a socket of this target (it is at max_connections). */
  readonly queued: number;
  readonly available: boolean;
  /** A backup target: used only while no primary target is available. */
  readonly backup: boolean;
  /** Slow start in progress: the target's weight still ramps up. */
  readonly rampingUp: boolean;
}

/** The upstream's limits in this worker, for the admin status page. */
export interface PoolLimitStats {
  /** Requests waiting for a socket now, all targets together (bounded by queue.size). */
  readonly queued: number;
  /** Acquires refused because the queue was full (or off) since the pool started. */
  readonly queueRejected: number;
  /** Acquires that waited queue.timeout without a socket since the pool started. */
  readonly queueTimeouts: number;
  readonly retries: RetryBudgetStats;
}

export interface PoolOptions {
  /** Clock for passive health windows, slow start and the retry budget (ms). Default Date.now; tests inject one. */
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

/** One target's health inputs in this worker, for the admin status page. */
export interface TargetHealthStats {
  readonly target: string;
  /** Active health check state as the primary last reported it (true when there are no active checks). */
  readonly healthy: boolean;
  /** Drained from the admin API: no new requests or tunnels; open ones stay. */
  readonly draining: boolean;
  /** Out of this worker after max_fails failures within fail_timeout. */
  readonly passiveDown: boolean;
  /** Failures counted in the current window (0 while down). */
  readonly failures: number;
}

/** What the pool tells its owner (the worker logs them); called synchronously, must not throw. */
export interface PoolHooks {
  /** A target went out of (down = true) or came back into this worker's rotation because of passive health. */
  passive?(target: Target, down: boolean, code: ErrorCode | null): void;
  /** No target is usable: all non-drained targets are tried anyway (nginx), or that ended. */
  panic?(on: boolean): void;
}

/** Codes that count as a passive failure of a target when reported (connect failures are counted by the pool). */
const PASSIVE_FAILURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'UPSTREAM_CONNECT_REFUSED',
  'UPSTREAM_CONNECT_TIMEOUT',
  'UPSTREAM_CONNECT_ERROR',
  'UPSTREAM_HEADERS_TIMEOUT',
  'UPSTREAM_BAD_RESPONSE',
  'UPSTREAM_RESET',
  'UPSTREAM_HANDSHAKE_INVALID',
]);

/** TCP keep-alive probes on pooled sockets start after this much silence, to notice dead peers and NATs. */
const TCP_KEEPALIVE_DELAY_MS = 60_000;

/** An acquire waiting for a socket of a full target. */
interface Waiter {
  readonly cb: AcquireCallback;
  /** End of the wait (pool clock); kept when the waiter moves to another target. */
  readonly deadline: number;
  /** Whom the connection made for this waiter will speak for (PROXY-sending pools). */
  readonly client: UpstreamClient | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Served, timed out or cancelled: skipped when met in the queue. */
  done: boolean;
}

interface Slot {
  readonly target: Target;
  /**
   * LIFO: the most recently used (warmest) socket is at the end and is reused first. In a PROXY-sending pool it
   * holds every client's idle sockets in the order they became idle (the oldest first, evicted first).
   */
  readonly idle: PooledSocket[];
  /** PROXY-sending pools only: idle sockets by client key (each also in `idle`); null otherwise. */
  readonly byClient: Map<string, PooledSocket[]> | null;
  open: number;
  /** Detached sockets (tunnels): out of `open`, so long-lived tunnels never use up max_connections. */
  tunnels: number;
  /** At max_connections with no idle socket: new picks go elsewhere while another target has room. */
  full: boolean;
  /** Usable by health at the last refresh; a false -> true edge starts slow start. */
  up: boolean;
  /** FIFO of waiters from `waitHead` on (entries before it are served; compacted now and then). */
  waiters: Waiter[];
  waitHead: number;
  /** Tells the pool that `open` or the idle stack changed (queue service, fullness). */
  readonly changed: () => void;
  /** Active check state from the primary. */
  healthy: boolean;
  draining: boolean;
  readonly passive: PassiveWindow;
  /** Brings the target back when its passive down period ends. */
  passiveTimer: NodeJS.Timeout | null;
  /** Removed by discovery: nothing new is sent; busy sockets are closed on release, tunnels stay. */
  removed: boolean;
}

type SocketState = 'connecting' | 'busy' | 'idle' | 'detached' | 'closed';

/** A socket is worth keeping or reusing only while both directions are open and nothing is buffered. */
function healthy(socket: ByteSocket): boolean {
  return !socket.destroyed && socket.readable && socket.writable && !socket.readableEnded && !socket.writableEnded && socket.readableLength === 0;
}

/** The pool's bookkeeping for one upstream socket, made once when it connects; its listeners are bound once. */
class PooledSocket {
  readonly socket: ByteSocket;
  readonly slot: Slot;
  /** The client its PROXY header named (PROXY-sending pools); undefined otherwise. */
  readonly clientKey: string | undefined;
  state: SocketState = 'connecting';
  #idleTimer: NodeJS.Timeout | undefined;
  #idleSince = 0;
  #idleTimeoutMs = 0;
  #bound = false;

  constructor(socket: ByteSocket, slot: Slot, clientKey: string | undefined) {
    this.socket = socket;
    this.slot = slot;
    this.clientKey = clientKey;
    slot.open++;
    slot.changed();
    // The open count goes down in #onClose only, guarded by `state`: exactly once however often the socket is
    // destroyed or released, whether 'close' or forget() comes first.
    socket.once('close', this.#onClose);
  }

  /**
   * Parks the socket in its slot's idle stack. The idle listeners are bound once and act only while the socket
   * is idle, and the idle timer is not touched per request: it re-arms itself for what is left when it fires
   * early (a kept-alive socket costs no listener or timer churn per request).
   */
  enterIdle(idleTimeoutMs: number): void {
    const s = this.socket;
    if (!this.#bound) {
      this.#bound = true;
      s.setKeepAlive(true, TCP_KEEPALIVE_DELAY_MS);
      // first in line: the exchange's listener may park the socket while an event is being delivered, and
      // the same event must not then count as arriving on an idle socket
      s.prependListener('error', this.#onIdleError);
      s.prependListener('data', this.#onIdleData);
      s.prependListener('end', this.#onIdleEnd);
    }
    s.resume(); // the caller may have paused it; an idle socket must keep reading to see 'end' or stray bytes
    this.#idleTimeoutMs = idleTimeoutMs;
    if (idleTimeoutMs > 0) {
      this.#idleSince = Date.now();
      if (this.#idleTimer === undefined) this.#idleTimer = setTimeout(this.#onIdleTimeout, idleTimeoutMs).unref();
    }
    this.state = 'idle';
    this.slot.idle.push(this);
    if (this.slot.byClient !== null && this.clientKey !== undefined) {
      const mine = this.slot.byClient.get(this.clientKey);
      if (mine === undefined) this.slot.byClient.set(this.clientKey, [this]);
      else mine.push(this);
    }
    this.slot.changed();
  }

  /** Takes an idle socket out of its slot's idle lists (not of `open`). */
  unlistIdle(): void {
    const idle = this.slot.idle;
    const i = idle.lastIndexOf(this);
    if (i !== -1) idle.splice(i, 1);
    const byClient = this.slot.byClient;
    if (byClient === null || this.clientKey === undefined) return;
    const mine = byClient.get(this.clientKey);
    if (mine === undefined) return;
    const j = mine.lastIndexOf(this);
    if (j !== -1) mine.splice(j, 1);
    if (mine.length === 0) byClient.delete(this.clientKey);
  }

  /** Hands the socket over (to an exchange, or for good to an L4 relay); the idle listeners go quiet. */
  leaveIdle(next: 'busy' | 'detached'): void {
    this.state = next;
  }

  readonly #onIdleError = (): void => {
    if (this.state === 'idle') this.socket.destroy();
  };

  // An upstream may not speak first on an idle HTTP/1.1 connection: whatever arrives is a protocol violation.
  readonly #onIdleData = (): void => {
    if (this.state === 'idle') this.socket.destroy();
  };

  readonly #onIdleEnd = (): void => {
    if (this.state === 'idle') this.socket.destroy();
  };

  readonly #onIdleTimeout = (): void => {
    this.#idleTimer = undefined;
    if (this.state !== 'idle') return; // busy: the next enterIdle arms a new timer
    const left = this.#idleSince + this.#idleTimeoutMs - Date.now();
    if (left > 0) this.#idleTimer = setTimeout(this.#onIdleTimeout, left).unref();
    else this.socket.destroy();
  };

  /**
   * Drops the socket from every count, once: on its 'close', or earlier when a connect failed (its handle
   * closes a loop turn later, and a retry must not find the target "full" because of it).
   */
  forget(): void {
    this.#onClose();
  }

  /** A tunnel from now on: it leaves `open` (max_connections is the keep-alive pool's bound, not a tunnel cap). */
  detach(): void {
    if (this.state === 'closed' || this.state === 'detached') return;
    if (this.state === 'idle') this.unlistIdle();
    this.state = 'detached';
    this.slot.open--;
    this.slot.tunnels++;
    this.slot.changed();
  }

  readonly #onClose = (): void => {
    if (this.state === 'closed') return;
    if (this.state === 'idle') this.unlistIdle();
    const wasTunnel = this.state === 'detached';
    this.state = 'closed';
    if (wasTunnel) this.slot.tunnels--;
    else this.slot.open--;
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.slot.changed();
  };
}

function slotUsable(slot: Slot, now: number): boolean {
  return slot.target.weight > 0 && !slot.draining && slot.healthy && !slot.passive.isDown(now);
}

/** Closes every idle socket of `slot`, emptied now so stats() shows none at once; each 'close' lowers `open` later. */
function closeIdle(slot: Slot): void {
  slot.byClient?.clear();
  for (const pooled of slot.idle.splice(0)) pooled.socket.destroy();
}

/** Waiters still queued in a slot. */
function firstWaiter(slot: Slot): Waiter | undefined {
  const w = slot.waiters;
  while (slot.waitHead < w.length) {
    const waiter = w[slot.waitHead];
    if (!waiter.done) return waiter;
    slot.waitHead++;
  }
  if (slot.waitHead > 0) {
    w.length = 0;
    slot.waitHead = 0;
  }
  return undefined;
}

/** Takes the first live waiter off the queue, keeping the array from growing without bound. */
function shiftWaiter(slot: Slot): Waiter | undefined {
  const waiter = firstWaiter(slot);
  if (waiter === undefined) return undefined;
  slot.waitHead++;
  if (slot.waitHead >= 64 && slot.waitHead * 2 >= slot.waiters.length) {
    slot.waiters.splice(0, slot.waitHead);
    slot.waitHead = 0;
  }
  return waiter;
}

/**
 * The discovered targets a pool of `config` uses, in the order given: one per address, none repeating a fixed
 * target's address (the fixed one serves). Balancers see the fixed targets, then these (sticky.ts hashHomes
 * builds the same list).
 */
export function usableDiscovered(config: UpstreamConfig, specs: readonly TargetSpec[]): TargetSpec[] {
  const taken = new Set(config.targets.map((t) => t.address));
  const out: TargetSpec[] = [];
  for (const spec of specs) {
    if (taken.has(spec.id)) continue;
    taken.add(spec.id);
    out.push(spec);
  }
  return out;
}

export class UpstreamPool {
  readonly name: string;
  readonly config: UpstreamConfig;
  /** Fixed targets (config order), then discovered ones (in the primary's order); replaced, never mutated. */
  #targets: readonly Target[];
  #balancer: Balancer;
  readonly #slots = new Map<Target, Slot>();
  /**
   * Targets removed by discovery that still have open sockets or work (a spliced tunnel's sockets are closed
   * in JS but its target stays `active`), for /status; pruned when a report or a new set finds them idle.
   */
  readonly #leaving = new Map<Target, Slot>();
  /** Every target ever removed: a late acquire for one is told to pick again. */
  readonly #gone = new WeakSet<Target>();
  #discoveredOnce = false;
  /** hash only: keys held on a target by their open tunnels (PoolOptions.pins); every balancer built reads it. */
  readonly #pins: ReadonlyMap<string, string> | undefined;
  readonly #sockets = new WeakMap<ByteSocket, PooledSocket>();
  readonly #hooks: PoolHooks;
  readonly #now: () => number;
  readonly #retryBudget: RetryBudget;
  /** send_proxy_protocol: a header opens every connection, and idle sockets are kept per client. */
  readonly #proxyHeader: 'off' | 'v1' | 'v2';
  #closed = false;
  /** Out of service after a reload: see retire(). */
  #retired = false;
  #panic = false;
  /** Waiters in every slot's queue (bounded by queue.size). */
  #queued = 0;
  #queueRejected = 0;
  #queueTimeouts = 0;
  /** Guards #serveQueue against re-entry through the counts it changes. */
  #serving = false;

  constructor(name: string, config: UpstreamConfig, hooks: PoolHooks = {}, options: PoolOptions = {}) {
    this.name = name;
    this.config = config;
    this.#now = options.now ?? Date.now;
    this.#hooks = hooks;
    this.#retryBudget = new RetryBudget(config.retries.budget, config.retries.min_per_second);
    this.#proxyHeader = config.send_proxy_protocol;
    this.#pins = options.pins;
    const previous = options.previous;
    // the slots of the pool this one replaces, by address: what they carry over is decided in #addSlot
    const before = new Map<string, Slot>();
    if (previous !== undefined) {
      for (const slot of previous.#slots.values()) if (!before.has(slot.target.id)) before.set(slot.target.id, slot);
      this.#queueRejected = previous.#queueRejected;
      this.#queueTimeouts = previous.#queueTimeouts;
      this.#retryBudget.carryTotals(previous.#retryBudget.stats(this.#now()));
    }
    // targets usable at start do not slow-start
    const fixed = config.targets.map((t) => this.#addSlot({ id: t.address, host: t.host, port: t.port, weight: t.weight, backup: t.backup }, true, before.get(t.address)).target);
    this.#targets = Object.freeze(fixed);
    if (options.discovered !== undefined) this.#placeDiscovered(usableDiscovered(config, options.discovered), before);
    this.#balancer = this.#newBalancer();
    const now = this.#now();
    for (const slot of this.#slots.values()) if (slot.passive.isDown(now)) this.#armPassiveTimer(slot, now);
    this.#refresh(); // backups start out of rotation
  }

  /** The targets balancers pick from; a new array (and balancer) when discovery changes the set. */
  get targets(): readonly Target[] {
    return this.#targets;
  }

  get balancer(): Balancer {
    return this.#balancer;
  }

  #newBalancer(): Balancer {
    return createBalancer(this.config.balance, this.#targets, { slowStart: this.config.slow_start, now: this.#now, pins: this.#pins });
  }

  /**
   * A new slot for `spec`. `old`: the same address in the pool this one replaces, whose slow start ramp carries
   * on, and whose passive health window too while max_fails and fail_timeout are unchanged.
   */
  #addSlot(spec: TargetSpec, startUp: boolean, old?: Slot): Slot {
    const target: Target = { id: spec.id, host: spec.host, port: spec.port, weight: spec.weight, available: spec.weight > 0, active: 0, remote: 0, backup: spec.backup, rampUntil: old?.target.rampUntil ?? 0 };
    const { max_fails, fail_timeout } = this.config.health.passive;
    const keepPassive = old !== undefined && old.passive.failTimeoutMs === fail_timeout && old.passive.maxFails === (fail_timeout > 0 ? max_fails : 0);
    const slot: Slot = {
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
    };
    this.#slots.set(target, slot);
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
    this.#pruneLeaving();
    const usable = usableDiscovered(this.config, specs);
    if (this.#sameDiscovered(usable)) {
      this.#discoveredOnce = true;
      return { added: [], removed: [] }; // a set sent again (reload, resend): the balancer keeps its state
    }
    const change = this.#placeDiscovered(usable);
    this.#balancer = this.#newBalancer();
    this.#refresh();
    return change;
  }

  /** Whether the discovered targets in use are `usable` already, weights and roles included. */
  #sameDiscovered(usable: readonly TargetSpec[]): boolean {
    const fixed = this.config.targets.length;
    if (this.#targets.length - fixed !== usable.length) return false;
    return usable.every((spec, i) => {
      const t = this.#targets[fixed + i];
      return t.id === spec.id && t.weight === spec.weight && (t.backup ?? false) === spec.backup;
    });
  }

  /**
   * Puts `usable` (see usableDiscovered) after the fixed targets; the balancer is the caller's to rebuild.
   * `before`: the replaced pool's slots, for a pool being built.
   */
  #placeDiscovered(usable: readonly TargetSpec[], before?: ReadonlyMap<string, Slot>): DiscoveredChange {
    const fixed = this.config.targets.length;
    const current = new Map<string, Slot>();
    for (let i = fixed; i < this.#targets.length; i++) {
      const t = this.#targets[i];
      current.set(t.id, this.#slots.get(t) as Slot);
    }
    const leavingById = new Map<string, Slot>();
    for (const slot of this.#leaving.values()) leavingById.set(slot.target.id, slot);
    const next: Target[] = this.#targets.slice(0, fixed);
    const kept = new Set<Slot>();
    const added: string[] = [];
    for (const spec of usable) {
      let slot = current.get(spec.id);
      if (slot === undefined) {
        const back = leavingById.get(spec.id);
        if (back !== undefined) {
          // Came back before its last socket closed: the same target again, its sockets reusable.
          this.#leaving.delete(back.target);
          this.#gone.delete(back.target);
          back.removed = false;
          this.#slots.set(back.target, back);
          slot = back;
        } else {
          slot = this.#addSlot(spec, !this.#discoveredOnce, before?.get(spec.id));
        }
        added.push(spec.id);
      }
      slot.target.weight = spec.weight;
      slot.target.backup = spec.backup;
      kept.add(slot);
      next.push(slot.target);
    }
    const removed: string[] = [];
    for (const slot of current.values()) {
      if (kept.has(slot)) continue;
      removed.push(slot.target.id);
      this.#removeSlot(slot);
    }
    this.#discoveredOnce = true;
    this.#targets = Object.freeze(next);
    return { added, removed };
  }

  /** Takes a slot out for good: waiters move, idle sockets close, the rest finish (see setDiscovered). */
  #removeSlot(slot: Slot): void {
    this.#slots.delete(slot.target);
    this.#gone.add(slot.target);
    slot.removed = true;
    slot.up = false;
    slot.target.available = false;
    if (slot.passiveTimer !== null) clearTimeout(slot.passiveTimer);
    slot.passiveTimer = null;
    this.#moveWaiters(slot, 'was removed by discovery');
    closeIdle(slot);
    if (slot.open > 0 || slot.tunnels > 0 || slot.target.active > 0) this.#leaving.set(slot.target, slot);
  }

  /** Forgets leaving targets with neither sockets nor requests and tunnels left. */
  #pruneLeaving(): void {
    for (const [target, slot] of this.#leaving) if (slot.open === 0 && slot.tunnels === 0 && target.active <= 0) this.#leaving.delete(target);
  }

  /**
   * Every waiter of `slot` is told to pick another target (UPSTREAM_TARGET_GONE, retryable, with its deadline)
   * instead of waiting out its queue timeout on a target that will not serve it.
   */
  #moveWaiters(slot: Slot, why: string): void {
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
   * UpstreamClient). The callback is never synchronous. Returns a cancel for the caller that went away, valid
   * in every phase (see CancelAcquire).
   */
  acquire(target: Target, callback: AcquireCallback, waitUntil = 0, client?: UpstreamClient): CancelAcquire {
    const req = new AcquireRequest(callback, (socket) => this.#reclaim(target, socket));
    req.withdraw = this.#acquire(target, req.answer, waitUntil, client);
    return req.cancel;
  }

  /**
   * A socket whose acquire was cancelled before it was handed over: nothing was written on it by the caller
   * (a PROXY header may have been), so it is released as reusable, except in a PROXY-sending pool where it
   * speaks for a client that is gone.
   */
  #reclaim(target: Target, socket: ByteSocket): void {
    const pooled = this.#sockets.get(socket);
    if (pooled !== undefined && pooled.slot.byClient !== null) {
      pooled.forget();
      socket.destroy();
      return;
    }
    this.release(target, socket, true);
  }

  #acquire(target: Target, cb: AcquireCallback, waitUntil: number, client: UpstreamClient | undefined): CancelAcquire {
    const slot = this.#slots.get(target);
    if (slot === undefined) {
      const err = this.#gone.has(target)
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
    const idle = slot.idle;
    while (idle.length > 0) {
      const pooled = idle.pop() as PooledSocket;
      if (healthy(pooled.socket)) {
        pooled.leaveIdle('busy');
        if (idle.length === 0) this.#slotChanged(slot); // may have become full
        process.nextTick(cb, null, pooled.socket, true);
        return NOT_QUEUED;
      }
      // Dead but not yet 'close'd (e.g. FIN seen this tick): its idle listeners stay to absorb a late 'error'.
      pooled.socket.destroy();
    }
    // Earlier waiters go first (FIFO) even when a socket just closed and left room.
    if (slot.open < this.config.max_connections && firstWaiter(slot) === undefined) {
      this.#connect(slot, cb, undefined);
      return NOT_QUEUED;
    }
    return this.#enqueue(slot, cb, waitUntil, undefined);
  }

  /**
   * acquire() in a PROXY-sending pool: only an idle socket of the same client is reused. At max_connections,
   * other clients' idle sockets are closed, oldest first, to make room: they hold a slot no one else may use.
   */
  #acquireFor(slot: Slot, cb: AcquireCallback, waitUntil: number, client: UpstreamClient): CancelAcquire {
    const mine = slot.byClient?.get(client.key);
    while (mine !== undefined && mine.length > 0) {
      const pooled = mine[mine.length - 1];
      pooled.unlistIdle();
      if (healthy(pooled.socket)) {
        pooled.leaveIdle('busy');
        if (slot.idle.length === 0) this.#slotChanged(slot); // may have become full
        process.nextTick(cb, null, pooled.socket, true);
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
  #evictIdle(slot: Slot): void {
    const max = this.config.max_connections;
    while (slot.open >= max && slot.idle.length > 0) {
      const oldest = slot.idle[0];
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

  #enqueue(slot: Slot, cb: AcquireCallback, waitUntil: number, client: UpstreamClient | undefined): CancelAcquire {
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
    const waiter: Waiter = { cb, client, deadline: waitUntil > 0 ? waitUntil : now + timeout, timer: undefined, done: false };
    waiter.timer = setTimeout(() => {
      if (waiter.done) return;
      waiter.done = true;
      this.#queued--;
      this.#queueTimeouts++;
      cb(new ProxyError('UPSTREAM_QUEUE_TIMEOUT', `upstream ${this.name} target ${slot.target.id}: no connection free within ${timeout}ms (max_connections ${max})`), null, false);
    }, wait).unref();
    slot.waiters.push(waiter);
    this.#queued++;
    return () => {
      if (waiter.done) return;
      waiter.done = true;
      this.#queued--;
      clearTimeout(waiter.timer);
    };
  }

  /** The first live waiter of `slot`, taken off its queue, its timer cleared; undefined when none. */
  #takeWaiter(slot: Slot): Waiter | undefined {
    const waiter = shiftWaiter(slot);
    if (waiter === undefined) return undefined;
    waiter.done = true;
    this.#queued--;
    clearTimeout(waiter.timer);
    return waiter;
  }

  /**
   * `open` or the idle stack of `slot` changed: waiters get new connections while there is room, then the
   * slot's fullness is updated (a flip recomputes every target's `available`, O(targets)).
   */
  #slotChanged(slot: Slot): void {
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
      if (slot.open === 0 && slot.tunnels === 0 && slot.target.active <= 0) this.#leaving.delete(slot.target); // nothing of it left
      return;
    }
    const full = slot.open >= this.config.max_connections && slot.idle.length === 0;
    if (full !== slot.full) {
      slot.full = full;
      this.#refresh();
    }
  }

  #connect(slot: Slot, cb: AcquireCallback, client: UpstreamClient | undefined): void {
    const { target } = slot;
    // native I/O when the addon has it and the target is an IP literal: no stream machinery per request
    const socket: ByteSocket = connectNative(target.host, target.port, { allowHalfOpen: false }) ?? connect({ host: target.host, port: target.port, noDelay: true });
    const who = slot.byClient === null ? undefined : (client ?? UNKNOWN_CLIENT);
    const pooled = new PooledSocket(socket, slot, who?.key);
    this.#sockets.set(socket, pooled);
    const connectMs = this.config.timeouts.connect;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;

    // Stays attached after a failure so that nothing a dying socket emits can go unhandled.
    const onError = (err: NodeJS.ErrnoException): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.destroy();
      pooled.forget();
      const error = connectError(err);
      this.reportFailure(target, error.code); // before cb: a retry must already see the target out
      cb(error, null, false);
    };
    const onConnect = (): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      socket.off('error', onError); // from here on the caller's 'error' listener owns failures
      pooled.state = 'busy';
      // the header is the connection's first bytes: written before the caller can write anything
      if (who !== undefined) socket.write(this.#proxyHeader === 'v1' ? buildProxyV1(who.source, who.destination) : buildProxyV2(who.source, who.destination));
      cb(null, socket, false);
    };
    socket.once('connect', onConnect);
    socket.on('error', onError);
    if (connectMs > 0) {
      timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        socket.off('connect', onConnect);
        socket.destroy();
        pooled.forget();
        this.reportFailure(target, 'UPSTREAM_CONNECT_TIMEOUT');
        cb(new ProxyError('UPSTREAM_CONNECT_TIMEOUT', `upstream connect to ${target.id} timed out after ${connectMs}ms`, { retryable: true }), null, false);
      }, connectMs).unref();
    }
  }

  /** Gives a socket back: kept idle when reusable and under max_idle, else destroyed. */
  release(target: Target, socket: ByteSocket, reusable: boolean): void {
    const pooled = this.#sockets.get(socket);
    if (pooled === undefined || pooled.slot.target !== target) {
      socket.destroy(); // not one of ours: never pool a stranger
      return;
    }
    if (pooled.state === 'idle') return; // released twice: it is already pooled once
    if (pooled.slot.removed) reusable = false; // its target left: this exchange was its last
    if (pooled.slot.byClient !== null) return this.#releaseFor(pooled, reusable);
    if (reusable && pooled.state === 'busy' && !this.#closed && healthy(socket)) {
      // A waiter takes the socket as it is (still busy): FIFO, and no trip through the idle stack.
      const waiter = this.#takeWaiter(pooled.slot);
      if (waiter !== undefined) {
        process.nextTick(waiter.cb, null, socket, true);
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
    this.#closed = true;
    for (const slot of [...this.#slots.values(), ...this.#leaving.values()]) {
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
    for (const t of this.#targets) if (t.active > 0) return true;
    for (const t of this.#leaving.keys()) if (t.active > 0) return true;
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
  #armPassiveTimer(slot: Slot, now: number): void {
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

  /**
   * Recomputes every target's `available` (Caddy: Available = Healthy && !Full). usable = weight > 0, not
   * draining, healthy, not passively down. Available: the usable primaries that are not full; else (every
   * primary down or full) the usable backups that are not full (nginx `backup`); else, when every usable
   * target is full, the usable ones of the first tier that has any, so the request waits in their queue.
   * When no target is usable, every non-drained target with a weight is made available (panic, like nginx
   * trying its peers again when all are marked failed): a check can be wrong, and trying beats 503 for all.
   * A target that becomes usable again (not at start) gets a slow start ramp.
   */
  #refresh(): void {
    const now = this.#now();
    const slowStart = this.config.slow_start;
    let usablePrimaries = 0;
    let usableBackups = 0;
    let freePrimaries = 0;
    let freeBackups = 0;
    for (const slot of this.#slots.values()) {
      const usable = slotUsable(slot, now);
      if (usable && !slot.up && slowStart > 0) slot.target.rampUntil = now + slowStart;
      slot.up = usable;
      if (!usable) continue;
      if (slot.target.backup === true) {
        usableBackups++;
        if (!slot.full) freeBackups++;
      } else {
        usablePrimaries++;
        if (!slot.full) freePrimaries++;
      }
    }
    // No target at all (discovery has not answered yet) is not a panic: there is nothing to try anyway.
    const panic = this.#slots.size > 0 && usablePrimaries + usableBackups === 0;
    // Which tier serves, and whether only targets with room count.
    const backupTier = freePrimaries === 0 && (freeBackups > 0 || usablePrimaries === 0);
    const needRoom = freePrimaries > 0 || freeBackups > 0;
    for (const slot of this.#slots.values()) {
      const t = slot.target;
      if (panic) t.available = t.weight > 0 && !slot.draining;
      else t.available = (t.backup === true) === backupTier && slot.up && (!needRoom || !slot.full);
      // Out of rotation (down, drained, weight 0), not merely full: its waiters would only time out there.
      if (!t.available && !slot.up && slot.waitHead < slot.waiters.length) this.#moveWaiters(slot, slot.draining ? 'was drained' : 'went down');
    }
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
    return this.targets.map((t) => {
      const slot = this.#slots.get(t) as Slot;
      return { target: t.id, healthy: slot.healthy, draining: slot.draining, passiveDown: slot.passive.isDown(now), failures: slot.passive.failures(now) };
    });
  }

  /** Every target of this pool, and those leaving, as a worker reports them (for /status); not for the hot path. */
  report(): TargetReport[] {
    this.#pruneLeaving();
    const now = this.#now();
    const row = (slot: Slot): TargetReport => {
      const t = slot.target;
      return {
        target: t.id,
        available: !slot.removed && t.available,
        active: t.active,
        remote: t.remote ?? 0,
        open: slot.open,
        idle: slot.idle.length,
        healthy: slot.healthy,
        draining: slot.draining,
        passiveDown: !slot.removed && slot.passive.isDown(now),
        failures: slot.removed ? 0 : slot.passive.failures(now),
        leaving: slot.removed,
      };
    };
    return [...this.#targets.map((t) => row(this.#slots.get(t) as Slot)), ...[...this.#leaving.values()].map(row)];
  }

  /** A snapshot of each target's counts (for /status); not for the hot path. */
  stats(): TargetStats[] {
    const now = this.#now();
    return this.targets.map((t) => {
      const slot = this.#slots.get(t) as Slot;
      let queued = 0;
      for (let i = slot.waitHead; i < slot.waiters.length; i++) if (!slot.waiters[i].done) queued++;
      const rampingUp = this.config.slow_start > 0 && (t.rampUntil ?? 0) > now;
      return { target: t.id, open: slot.open, tunnels: slot.tunnels, idle: slot.idle.length, active: t.active, queued, available: t.available, backup: t.backup === true, rampingUp };
    });
  }
}
