// The messages the primary and its workers exchange over the fork() IPC channel, as discriminated unions, and
// the guards each side runs on what it receives (a message is data from another process: checked, not trusted).
// Only types and pure checks: sending and handling live in primary/ and worker/main.ts (send.ts).
import type { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { STATUS_CLASSES, type MetricsSnapshot, type ProcessHealth } from '../core/metrics.js';
import { isHistogramSnapshot } from '../core/histogram.js';
import type { PoolLimitStats, TargetSpec } from '../upstream/pool.js';
import type { PinUpdate, StickyChange } from '../upstream/sticky.js';

/** Environment the primary sets for each worker it forks. */
/** `standby` = '1': a standby worker (no id yet), which waits for a 'take-slot' message (primary/supervisor.ts). */
export const WORKER_ENV = { id: 'PORTICO_WORKER_ID', config: 'PORTICO_CONFIG', standby: 'PORTICO_WORKER_STANDBY' } as const;

/** How a worker gets listener `index` of the config it applies; `key` is its identity (config/reload.ts). */
export type ListenerAssignment =
  /** Keep the socket it already has open under `key` (the address is in the running config too). */
  | { index: number; key: string; via: 'keep' }
  /** The primary's bound socket follows in a 'listen-handle' message, as its IPC handle. */
  | { index: number; key: string; via: 'handle' }
  /** The worker binds host:port itself with SO_REUSEPORT (port 0: the first worker picks the port). */
  | { index: number; key: string; via: 'reuse-port'; host: string; port: number };

/**
 * Serve this config from now on (at boot, on reload, and back to the running config when a reload is rolled
 * back). `config` is the Config the primary validated (from `file`), as JSON carries it (config/transfer.ts):
 * the worker serves it as it is, without parsing or validating it again. Sockets it has under keys the
 * assignments do not name are closed. `seq` ties 'listen-handle' messages to this apply.
 */
export interface ApplyMessage {
  type: 'apply';
  seq: number;
  generation: number;
  file: string;
  config: Config;
  listeners: ListenerAssignment[];
  /** Session ticket keys shared by every worker (base64, 48 bytes). */
  ticketKeys: string;
  /** The key of sticky cookie values where `balance.secret` is not set (base64, 32 bytes; hash-key.ts). */
  stickySecret: string;
  /**
   * The discovered targets of every upstream of this config that follows DNS names (as `discovered-targets`
   * would carry them): the new runtime's pools start with them, so a reload leaves no gap.
   */
  discovered: Readonly<Record<string, readonly TargetSpec[]>>;
}

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
  | ApplyMessage
  /** To a standby worker: be worker `id` from now on (it then says 'booted' and gets the served config). */
  | { type: 'take-slot'; id: number }
  /** A listening socket for assignment `index` of apply `seq` comes with this message as its IPC handle. */
  | { type: 'listen-handle'; seq: number; index: number }
  /** Stop accepting, drain within the grace, exit 0. */
  | { type: 'shutdown' }
  /** Answered with 'stats', after this worker's pending 'sticky' changes (so it also flushes them). */
  | { type: 'stats-request'; id: number }
  /** The whole state, sent before an apply: every target not listed is healthy and not draining. */
  | { type: 'upstream-state'; targets: TargetControl[] }
  /** One target changed (a health flip, a drain or undrain). */
  | ({ type: 'target-state' } & TargetControl)
  /** The other workers' load on config `generation`, sent when it changed; upstreams left out have none. */
  | { type: 'remote-load'; generation: number; load: TargetLoad }
  /** Sticky tunnel pins (upstream/sticky.ts), by upstream name and target address. */
  | { type: 'pins'; updates: PinUpdate[] }
  /**
   * What discovery (the primary) resolved for one upstream, all its resolve/srv entries together: replaces
   * the previous set. Sent on every change; an apply carries every set of its config (ApplyMessage.discovered).
   */
  | { type: 'discovered-targets'; upstream: string; targets: TargetSpec[] }
  /** An ACME HTTP-01 token to answer with its key authorization (null: the order is over, forget it). */
  | { type: 'acme-challenge'; token: string; keyAuthorization: string | null }
  /** An ACME TLS-ALPN-01 challenge certificate and key (PEM) to serve for `name` (null: the order is over). */
  | { type: 'acme-alpn-challenge'; name: string; cert: string | null; key: string | null }
  /**
   * Edge fan-out: messages to every terminated WebSocket subscribed to their topic, in order (data base64-encoded;
   * the publishes of one turn of the primary together, see primary/publish.ts).
   */
  | { type: 'publish'; messages: PublishEntry[] };

/** Bound of one discovered set on the wire (discovery keeps far fewer per name; see discovery.ts). */
export const MAX_DISCOVERED_TARGETS = 10_000;

export interface UpstreamTargetStatus {
  upstream: string;
  target: string;
  available: boolean;
  active: number;
  /** This worker's pooled sockets open to the target (TargetStats.open), and of those idle. */
  open: number;
  idle: number;
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
  /** This worker's descriptors: open now (/proc/self/fd) and the soft RLIMIT_NOFILE (-1: unlimited). */
  fds?: { open: number; limit: number };
  /** Its event-loop delay since the previous stats request, and its memory. */
  process?: ProcessHealth;
  /** Who accepts this worker's connections: the addon (native accept) or Node's net.Server; absent before a listener. */
  accept?: 'native' | 'node';
  /** Native accept: connections accepted and the batches they came in (accepted / batches = the mean batch). */
  acceptBatches?: { accepted: number; batches: number };
  /**
   * Native accept, listeners with passthrough names beside certificates: connections the addon decided to terminate
   * at accept (their ClientHello read there), and those peeked for JavaScript's preface reader (everything else).
   */
  helloAtAccept?: { terminated: number; peeked: number };
  /** Native accept: the keys of the listeners whose socket has TCP_DEFER_ACCEPT in force (getsockopt). */
  deferAccept?: string[];
  /** Answers the addon relayed to clients itself (forward.ts arms them; absent without native I/O). */
  nativeAnswers?: number;
  /** WebSocket 101s the addon checked and wrote to clients itself (forward.ts arms them; absent without native I/O). */
  nativeUpgrades?: number;
  /** FastCGI exchanges the addon started itself (PORTICO_NATIVE_EXCHANGE=1; absent otherwise). */
  nativeExchanges?: number;
  /** Reads of ready clients the addon left to JavaScript (PORTICO_NATIVE_EXCHANGE=1; absent otherwise). */
  nativeExchangesDeclined?: number;
}

export type ToPrimary =
  /** The process is up and listens for messages: ready for its first apply. */
  | { type: 'booted' }
  /** A standby worker has loaded its modules and waits for a 'take-slot'. */
  | { type: 'standby' }
  /** Apply `generation` done: every listener accepting, `ports[i]` the port of listener i. */
  | { type: 'applied'; seq: number; generation: number; ok: true; ports: number[] }
  /** Apply refused: the worker keeps what it ran before (at boot it exits). */
  | { type: 'applied'; seq: number; generation: number; ok: false; error: string; errors: ConfigError[] }
  | ({ type: 'stats'; id: number } & WorkerStats)
  /** This worker's load on config `generation`, sent at most every LOAD_REPORT_MS and only when it changed. */
  | { type: 'load'; generation: number; load: TargetLoad }
  /** Open sticky tunnels that changed since the last report. */
  | { type: 'sticky'; changes: StickyChange[] };

/** One edge fan-out publish as it travels: data base64-encoded (IPC carries JSON). */
export interface PublishEntry {
  readonly topic: string;
  readonly data: string;
  readonly binary: boolean;
}

/** Most publishes one IPC message carries (the primary sends a full batch at once). */
export const MAX_PUBLISH_BATCH = 1024;

function isPublishEntry(e: unknown): e is PublishEntry {
  return isRecord(e) && typeof e.topic === 'string' && typeof e.data === 'string' && typeof e.binary === 'boolean';
}

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
    Object.values(v.refused).every(isCount) &&
    isRecord(v.rateLimited) &&
    Object.values(v.rateLimited).every(isCount) &&
    (v.pipes === undefined || (isRecord(v.pipes) && [v.pipes.open, v.pipes.inUse, v.pipes.cap, v.pipes.copies].every(isCount))) &&
    isRecord(v.histograms) && Object.values(v.histograms).every(isHistogramSnapshot) &&
    isRecord(v.targetResponses) &&
    Object.values(v.targetResponses).every((r) => isRecord(r) && typeof r.upstream === 'string' && typeof r.target === 'string' && Array.isArray(r.classes) && r.classes.every(isCount))
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
    isRecord(v) && typeof v.upstream === 'string' && typeof v.target === 'string' && typeof v.available === 'boolean' && isCount(v.active) && isCount(v.open) && isCount(v.idle) &&
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

function isTargetSpecs(v: unknown): v is TargetSpec[] {
  return Array.isArray(v) && v.length <= MAX_DISCOVERED_TARGETS && v.every(isTargetSpec);
}

function isDiscoveredSets(v: unknown): v is Record<string, TargetSpec[]> {
  return isRecord(v) && Object.values(v).every(isTargetSpecs);
}

/** The outline of a Config (the primary validated the rest: a worker does not validate it again). */
function isConfigShape(v: unknown): boolean {
  return isRecord(v) && Array.isArray(v.listeners) && Array.isArray(v.routes) && isRecord(v.upstreams);
}

function isAssignment(v: unknown): v is ListenerAssignment {
  if (!isRecord(v) || !isCount(v.index) || typeof v.key !== 'string') return false;
  return v.via === 'keep' || v.via === 'handle' || (v.via === 'reuse-port' && typeof v.host === 'string' && isCount(v.port) && v.port <= 65535);
}

function isPinUpdate(v: unknown): v is PinUpdate {
  return (
    isRecord(v) && typeof v.upstream === 'string' && typeof v.full === 'boolean' &&
    Array.isArray(v.set) && v.set.every((p) => Array.isArray(p) && p.length === 2 && typeof p[0] === 'string' && typeof p[1] === 'string') &&
    Array.isArray(v.unset) && v.unset.every((k) => typeof k === 'string')
  );
}

function isStickyChange(v: unknown): v is StickyChange {
  return Array.isArray(v) && v.length === 4 && typeof v[0] === 'string' && typeof v[1] === 'string' && typeof v[2] === 'string' && Number.isInteger(v[3]);
}

function isConfigError(v: unknown): v is ConfigError {
  return isRecord(v) && typeof v.path === 'string' && typeof v.message === 'string' && (v.line === undefined || isCount(v.line)) && (v.column === undefined || isCount(v.column));
}

export function isToWorker(m: unknown): m is ToWorker {
  if (!isRecord(m)) return false;
  switch (m.type) {
    case 'apply':
      return (
        isCount(m.seq) && isCount(m.generation) && typeof m.file === 'string' && isConfigShape(m.config) && typeof m.ticketKeys === 'string' && typeof m.stickySecret === 'string' &&
        Array.isArray(m.listeners) && m.listeners.every(isAssignment) && isDiscoveredSets(m.discovered)
      );
    case 'listen-handle':
      return isCount(m.seq) && isCount(m.index);
    case 'take-slot':
      return isCount(m.id) && m.id >= 1;
    case 'pins':
      return Array.isArray(m.updates) && m.updates.every(isPinUpdate);
    case 'shutdown':
      return true;
    case 'stats-request':
      return isCount(m.id);
    case 'upstream-state':
      return Array.isArray(m.targets) && m.targets.every(isTargetControl);
    case 'target-state':
      return isTargetControl(m);
    case 'remote-load':
      return isCount(m.generation) && isTargetLoad(m.load);
    case 'discovered-targets':
      return typeof m.upstream === 'string' && isTargetSpecs(m.targets);
    case 'acme-challenge':
      // RFC 8555 §8.3: tokens are base64url; the key authorization is token "." thumbprint (both base64url)
      return typeof m.token === 'string' && /^[A-Za-z0-9_-]{1,256}$/.test(m.token) && (m.keyAuthorization === null || (typeof m.keyAuthorization === 'string' && /^[A-Za-z0-9_.-]{1,512}$/.test(m.keyAuthorization)));
    case 'acme-alpn-challenge':
      // a DNS name (config/acme.ts checked it) and a small PEM pair, or both null
      return typeof m.name === 'string' && /^[a-z0-9.-]{1,253}$/.test(m.name) && ((m.cert === null && m.key === null) || (isPem(m.cert) && isPem(m.key)));
    case 'publish':
      return Array.isArray(m.messages) && m.messages.length <= MAX_PUBLISH_BATCH && m.messages.every(isPublishEntry);
    default:
      return false;
  }
}

export function isToPrimary(m: unknown): m is ToPrimary {
  if (!isRecord(m)) return false;
  switch (m.type) {
    case 'booted':
    case 'standby':
      return true;
    case 'applied':
      if (!isCount(m.seq) || !isCount(m.generation)) return false;
      if (m.ok === true) return Array.isArray(m.ports) && m.ports.every(isCount);
      return m.ok === false && typeof m.error === 'string' && Array.isArray(m.errors) && m.errors.every(isConfigError);
    case 'sticky':
      return Array.isArray(m.changes) && m.changes.every(isStickyChange);
    case 'stats':
      return (
        isCount(m.id) && isMetricsSnapshot(m.metrics) && isCount(m.connections) && isCount(m.tunnels) &&
        Array.isArray(m.upstreamTargets) && m.upstreamTargets.every(isTargetStatus) &&
        Array.isArray(m.upstreamLimits) && m.upstreamLimits.every(isLimitStatus) &&
        (m.fds === undefined || (isRecord(m.fds) && isCount(m.fds.open) && typeof m.fds.limit === 'number')) &&
        (m.process === undefined || (isRecord(m.process) && Object.values(m.process).every((n) => typeof n === 'number' && n >= 0))) &&
        (m.accept === undefined || m.accept === 'native' || m.accept === 'node') &&
        (m.acceptBatches === undefined || (isRecord(m.acceptBatches) && isCount(m.acceptBatches.accepted) && isCount(m.acceptBatches.batches))) &&
        (m.helloAtAccept === undefined || (isRecord(m.helloAtAccept) && isCount(m.helloAtAccept.terminated) && isCount(m.helloAtAccept.peeked))) &&
        (m.deferAccept === undefined || (Array.isArray(m.deferAccept) && m.deferAccept.every((k) => typeof k === 'string'))) &&
        (m.nativeAnswers === undefined || isCount(m.nativeAnswers)) &&
        (m.nativeUpgrades === undefined || isCount(m.nativeUpgrades)) &&
        (m.nativeExchanges === undefined || isCount(m.nativeExchanges)) &&
        (m.nativeExchangesDeclined === undefined || isCount(m.nativeExchangesDeclined))
      );
    case 'load':
      return isCount(m.generation) && isTargetLoad(m.load);
    default:
      return false;
  }
}

/** A PEM text of at most 16 KiB (a challenge certificate or key is under 2 KiB). */
function isPem(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 16 * 1024 && v.startsWith('-----BEGIN ');
}
