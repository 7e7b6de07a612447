// The messages the primary and its workers exchange over the fork() IPC channel, as discriminated unions, and
// the guards each side runs on what it receives (a message is data from another process: checked, not trusted).
// Only types and pure checks: sending and handling live in primary.ts and worker.ts.
import { STATUS_CLASSES, type MetricsSnapshot } from './metrics.js';

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

export type ToWorker =
  | ListenMessage
  /** Stop accepting, drain within the grace, exit 0. */
  | { type: 'shutdown' }
  | { type: 'stats-request'; id: number }
  /** The whole state, sent before the listeners: every target not listed is healthy and not draining. */
  | { type: 'upstream-state'; targets: TargetControl[] }
  /** One target changed (a health flip, a drain or undrain). */
  | ({ type: 'target-state' } & TargetControl);

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
}

export interface WorkerStats {
  metrics: MetricsSnapshot;
  /** Open client connections, tunnels included. */
  connections: number;
  tunnels: number;
  upstreamTargets: UpstreamTargetStatus[];
}

export type ToPrimary =
  /** Config loaded and runtime built: ready for its listeners. */
  | { type: 'booted' }
  /** Every listener is accepting; `ports[i]` is the port listener i is bound to. */
  | { type: 'ready'; ports: number[] }
  | ({ type: 'stats'; id: number } & WorkerStats);

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
    [v.connections, v.tunnelsOpen, v.tunnelsTotal, v.bytesIn, v.bytesOut, v.tlsHandshakeErrors].every(isCount)
  );
}

function isTargetStatus(v: unknown): v is UpstreamTargetStatus {
  return (
    isRecord(v) && typeof v.upstream === 'string' && typeof v.target === 'string' && typeof v.available === 'boolean' && isCount(v.active) &&
    typeof v.healthy === 'boolean' && typeof v.draining === 'boolean' && typeof v.passiveDown === 'boolean' && isCount(v.failures)
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
        Array.isArray(m.upstreamTargets) && m.upstreamTargets.every(isTargetStatus)
      );
    default:
      return false;
  }
}
