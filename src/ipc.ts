// The messages the primary and its workers exchange over the fork() IPC channel, as discriminated unions, and
// the guards each side runs on what it receives (a message is data from another process: checked, not trusted).
// Only types and pure checks: sending and handling live in primary.ts and worker.ts.
import { STATUS_CLASSES, type MetricsSnapshot } from './metrics.js';
import type { PoolLimitStats, TargetSpec } from './upstream/pool.js';

/** Environment the primary sets for each worker it forks. */
export const WORKER_ENV = { id: 'PORTICO_WORKER_ID', config: 'PORTICO_CONFIG' } as const;

/** How a worker gets listener `index` of its config. */
export type ListenMessage =
  /** The primary's bound socket comes with this message as its IPC handle. */
  | { type: 'listen'; index: number; via: 'handle'; ticketKeys: string }
  /** The worker binds host:port itself with SO_REUSEPORT (port 0: the first worker picks the port). */
  | { type: 'listen'; index: number; via: 'reuse-port'; host: string; port: number; ticketKeys: string };

/**
 * What the primary decides about one target for every worker: its active health check state (true when the
 * upstream has no active checks) and whether it is drained from the admin API. `target` is its address as
 * written in config.
 */
export interface TargetControl {
  upstream: string;
  target: string;
  healthy: boolean;
  draining: boolean;
}

/**
 * Per upstream (only those whose policy reads load, see `readsLoad`), open requests + tunnels per target, in
 * the order of the upstream's targets in config. From a worker: its own counts; from the primary: the sum over
 * the other workers (`Target.remote`). Positions, not addresses: a repeated address is two targets.
 */
export type TargetLoad = Record<string, number[]>;

export type ToWorker =
  | ListenMessage
  /** Stop accepting, drain within the grace, exit 0. */
  | { type: 'shutdown' }
  | { type: 'stats-request'; id: number }
  /** The whole state, sent before the listeners: every target not listed is healthy and not draining. */
  | { type: 'upstream-state'; targets: TargetControl[] }
  /** One target changed (a health flip, a drain or undrain). */
  | ({ type: 'target-state' } & TargetControl)
  /** The other workers' load, sent when it changed; upstreams left out have none (all zero). */
  | { type: 'remote-load'; load: TargetLoad }
  /**
   * What discovery (the primary) resolved for one upstream, all its resolve/srv entries together: replaces
   * the previous set. Sent at boot before `upstream-state`, then on every change.
   */
  | { type: 'discovered-targets'; upstream: string; targets: TargetSpec[] };

/** Bound of one discovered set on the wire (discovery keeps far fewer per name; see discovery.ts). */
export const MAX_DISCOVERED_TARGETS = 10_000;

export interface UpstreamTargetStatus {
  upstream: string;
  target: string;
  available: boolean;
  active: number;
  /** The active state this worker applies, as the primary sent it. */
  healthy: boolean;
  draining: boolean;
  /** Out of this worker's rotation by passive health. */
  passiveDown: boolean;
  /** Passive failures in the current window. */
  failures: number;
  /** The other workers' open requests + tunnels as this worker last heard them from the primary. */
  remote: number;
  /** Removed by discovery, its open connections and tunnels still finishing. */
  leaving: boolean;
}

/** One upstream's queue and retry counters in one worker (UpstreamPool.limits()). */
export type UpstreamLimitStatus = { upstream: string } & PoolLimitStats;

export interface WorkerStats {
  metrics: MetricsSnapshot;
  /** Open client connections, tunnels included. */
  connections: number;
  tunnels: number;
  upstreamTargets: UpstreamTargetStatus[];
  upstreamLimits: UpstreamLimitStatus[];
}

export type ToPrimary =
  /** Config loaded and runtime built: ready for its listeners. */
  | { type: 'booted' }
  /** Every listener is accepting; `ports[i]` is the port listener i is bound to. */
  | { type: 'ready'; ports: number[] }
  | ({ type: 'stats'; id: number } & WorkerStats)
  /** This worker's load, sent at most every LOAD_REPORT_MS and only when it changed. */
  | { type: 'load'; load: TargetLoad };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

function isMetricsSnapshot(v: unknown): v is MetricsSnapshot {
  if (!isRecord(v) || !isRecord(v.requests) || !isRecord(v.upstreamErrors)) return false;
  const { requests, upstreamErrors } = v;
  return (
    STATUS_CLASSES.every((c) => isCount(requests[c])) &&
    Object.values(upstreamErrors).every(isCount) &&
    [v.connections, v.tunnelsOpen, v.tunnelsTotal, v.bytesIn, v.bytesOut, v.tlsHandshakeErrors].every(isCount) &&
    isRecord(v.refused) &&
    Object.values(v.refused).every(isCount)
  );
}

function isTargetLoad(v: unknown): v is TargetLoad {
  return isRecord(v) && Object.values(v).every((counts) => Array.isArray(counts) && counts.every(isCount));
}

function isLimitStatus(v: unknown): v is UpstreamLimitStatus {
  if (!isRecord(v) || typeof v.upstream !== 'string' || !isCount(v.queued) || !isCount(v.queueRejected) || !isCount(v.queueTimeouts)) return false;
  const r = v.retries;
  return isRecord(r) && isCount(r.requests) && isCount(r.retries) && isCount(r.retriesTotal) && isCount(r.deniedTotal);
}

function isTargetStatus(v: unknown): v is UpstreamTargetStatus {
  return (
    isRecord(v) && typeof v.upstream === 'string' && typeof v.target === 'string' && typeof v.available === 'boolean' && isCount(v.active) &&
    typeof v.healthy === 'boolean' && typeof v.draining === 'boolean' && typeof v.passiveDown === 'boolean' && isCount(v.failures) &&
    isCount(v.remote) && typeof v.leaving === 'boolean'
  );
}

function isTargetSpec(v: unknown): v is TargetSpec {
  return (
    isRecord(v) && typeof v.id === 'string' && v.id.length > 0 && v.id.length <= 300 && typeof v.host === 'string' && v.host.length > 0 &&
    isCount(v.port) && v.port >= 1 && v.port <= 65535 && isCount(v.weight) && v.weight <= 1000 && typeof v.backup === 'boolean'
  );
}

function isTargetControl(v: unknown): v is TargetControl {
  return isRecord(v) && typeof v.upstream === 'string' && typeof v.target === 'string' && typeof v.healthy === 'boolean' && typeof v.draining === 'boolean';
}

export function isToWorker(m: unknown): m is ToWorker {
  if (!isRecord(m)) return false;
  switch (m.type) {
    case 'listen':
      if (!isCount(m.index) || typeof m.ticketKeys !== 'string') return false;
      return m.via === 'handle' || (m.via === 'reuse-port' && typeof m.host === 'string' && isCount(m.port) && m.port <= 65535);
    case 'shutdown':
      return true;
    case 'stats-request':
      return isCount(m.id);
    case 'upstream-state':
      return Array.isArray(m.targets) && m.targets.every(isTargetControl);
    case 'target-state':
      return isTargetControl(m);
    case 'remote-load':
      return isTargetLoad(m.load);
    case 'discovered-targets':
      return typeof m.upstream === 'string' && Array.isArray(m.targets) && m.targets.length <= MAX_DISCOVERED_TARGETS && m.targets.every(isTargetSpec);
    default:
      return false;
  }
}

export function isToPrimary(m: unknown): m is ToPrimary {
  if (!isRecord(m)) return false;
  switch (m.type) {
    case 'booted':
      return true;
    case 'ready':
      return Array.isArray(m.ports) && m.ports.every(isCount);
    case 'stats':
      return (
        isCount(m.id) && isMetricsSnapshot(m.metrics) && isCount(m.connections) && isCount(m.tunnels) &&
        Array.isArray(m.upstreamTargets) && m.upstreamTargets.every(isTargetStatus) &&
        Array.isArray(m.upstreamLimits) && m.upstreamLimits.every(isLimitStatus)
      );
    case 'load':
      return isTargetLoad(m.load);
    default:
      return false;
  }
}
