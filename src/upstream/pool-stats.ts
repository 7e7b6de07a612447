// What a pool shows of its targets on /status: the row types and how one target slot becomes a row. Read only,
// off the hot path; it changes no count and no health state.
import type { RetryBudgetStats } from './retry-budget.js';
import type { TargetSlot } from './target-slot.js';

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

/** `slot` as a worker reports it (see UpstreamPool.report). */
export function targetReport(slot: TargetSlot, now: number): TargetReport {
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
}

/** `slot`'s counts (see UpstreamPool.stats); `slowStart`: the upstream's slow_start (ms). */
export function targetStats(slot: TargetSlot, slowStart: number, now: number): TargetStats {
  const t = slot.target;
  let queued = 0;
  for (let i = slot.waitHead; i < slot.waiters.length; i++) if (!slot.waiters[i].done) queued++;
  const rampingUp = slowStart > 0 && (t.rampUntil ?? 0) > now;
  return { target: t.id, open: slot.open, tunnels: slot.tunnels, idle: slot.idle.length, active: t.active, queued, available: t.available, backup: t.backup === true, rampingUp };
}

/** `slot`'s health inputs (see UpstreamPool.health). */
export function targetHealth(slot: TargetSlot, now: number): TargetHealthStats {
  return { target: slot.target.id, healthy: slot.healthy, draining: slot.draining, passiveDown: slot.passive.isDown(now), failures: slot.passive.failures(now) };
}
