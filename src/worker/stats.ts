// What a worker reports of itself to the primary on a 'stats-request' (the admin status and metrics): counters,
// open connections and tunnels, per-target load and limits, pipes and file descriptors. Reads only: it changes
// no state and sends nothing (the Worker in main.ts answers the request).
import { readdirSync } from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { ConnectionRegistry } from '../core/registry.js';
import type { LogDropped, Metrics, ProcessHealth } from '../core/metrics.js';
import { staticCacheStats } from '../handlers/static.js';
import { bodyBufferStats } from '../handlers/body-buffer.js';
import { native } from '../native/addon.js';
import { nativeAcceptStats, nativeAnswered, nativeHelloStats, nativeUpgraded } from '../native/io.js';
import { nativeExchangeStats, nativeExchangesStarted } from '../native/exchange.js';
import type { UpstreamPool } from '../upstream/pool.js';
import type { UpstreamLimitStatus, UpstreamTargetStatus, WorkerStats } from './ipc.js';
import type { Runtime } from './runtime.js';

/** What the stats are read from. */
export interface StatsSource {
  readonly runtime: Runtime | null;
  /** Pools a reload replaced or removed, still used by requests in flight or tunnels. */
  readonly retired: readonly UpstreamPool[];
  readonly registry: ConnectionRegistry;
  readonly metrics: Metrics;
  /** The soft RLIMIT_NOFILE (-1: unlimited). */
  readonly fdLimit: number;
  /** Who accepts the listeners' connections (undefined: no listener open). */
  readonly accept: 'native' | 'node' | undefined;
  /** Listener keys whose socket has TCP_DEFER_ACCEPT in force. */
  readonly deferAccept?: string[];
  /** Log lines dropped so far by stdout's writer and the access-log files' (line-writer.ts). */
  readonly logDropped?: LogDropped;
}

/** Open requests + tunnels to `target` in the retired pools of `upstream` (they still load the backend). */
export function retiredActive(retired: readonly UpstreamPool[], upstream: string, target: string): number {
  let n = 0;
  for (const pool of retired) {
    if (pool.name !== upstream) continue;
    for (const t of pool.targets) if (t.id === target) n += t.active;
  }
  return n;
}

export function workerStats(s: StatsSource): WorkerStats {
  const upstreamTargets: UpstreamTargetStatus[] = [];
  const upstreamLimits: UpstreamLimitStatus[] = [];
  for (const [name, pool] of s.runtime?.pools ?? []) {
    for (const t of pool.report()) {
      const retired = s.retired.length === 0 ? 0 : retiredActive(s.retired, name, t.target);
      upstreamTargets.push({
        upstream: name,
        ...t,
        // tunnels still held by retired pools load the same backend (and are in `remote` for balancing)
        active: t.active + retired,
        remote: Math.max(0, t.remote - retired),
      });
    }
    upstreamLimits.push({ upstream: name, ...pool.limits() });
  }
  const registry = s.registry;
  const pipes = native()?.pipeStats();
  const metrics = s.metrics.snapshot();
  if (pipes !== undefined) metrics.pipes = { open: pipes.open, inUse: pipes.inUse, cap: pipes.cap, copies: pipes.copies };
  if (s.logDropped !== undefined) metrics.logDropped = s.logDropped;
  metrics.staticCache = staticCacheStats();
  metrics.bodyBuffer = bodyBufferStats();
  let fdsOpen = 0;
  try {
    fdsOpen = readdirSync('/proc/self/fd').length;
  } catch {
    // not Linux: no count
  }
  const out: WorkerStats = { metrics, connections: registry.size, tunnels: registry.tunnels, upstreamTargets, upstreamLimits, fds: { open: fdsOpen, limit: s.fdLimit }, process: processHealth() };
  if (s.accept !== undefined) out.accept = s.accept;
  const batches = s.accept === 'native' ? nativeAcceptStats() : undefined;
  if (batches !== undefined) out.acceptBatches = batches;
  const hello = s.accept === 'native' ? nativeHelloStats() : undefined;
  if (hello !== undefined) out.helloAtAccept = hello;
  if (s.accept === 'native' && s.deferAccept !== undefined) out.deferAccept = s.deferAccept;
  const answered = nativeAnswered();
  if (answered !== undefined) out.nativeAnswers = answered;
  const upgraded = nativeUpgraded();
  if (upgraded !== undefined) out.nativeUpgrades = upgraded;
  const started = nativeExchangesStarted();
  if (started !== undefined) out.nativeExchanges = started;
  const declined = nativeExchangeStats()?.declined;
  if (declined !== undefined) out.nativeExchangesDeclined = declined;
  return out;
}

/** Samples the loop every 20 ms (a timer on libuv's side: nothing runs per request); started on first report. */
let loopDelay: IntervalHistogram | null = null;

/** The loop's delay since the previous report (then reset), and memory; ns -> s. */
export function processHealth(): ProcessHealth {
  if (loopDelay === null) {
    loopDelay = monitorEventLoopDelay({ resolution: 20 });
    loopDelay.enable();
  }
  const h = loopDelay;
  const seconds = (ns: number) => (Number.isFinite(ns) && h.count > 0 ? ns / 1e9 : 0);
  const mem = process.memoryUsage();
  const out: ProcessHealth = {
    loopDelayP50: seconds(h.percentile(50)),
    loopDelayP99: seconds(h.percentile(99)),
    loopDelayMax: seconds(h.max),
    heapUsed: mem.heapUsed,
    heapTotal: mem.heapTotal,
    rss: mem.rss,
  };
  h.reset();
  return out;
}
