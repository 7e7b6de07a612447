// What /metrics and /status say about the whole instance: every worker's numbers (collected on request) summed
// and merged per target, the counters of workers that exited kept in the totals, the health report per target,
// and the primary's own state. It reads the other parts and changes nothing but its totals of exited workers.
import type { StatusReport, TargetHealthReport } from '../admin/server.js';
import { formatErrors } from '../config/load.js';
import { renderReloadMetrics } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import { emptySnapshot, renderPrometheus, sumSnapshots, type MetricsSnapshot, type UpstreamLimitTotals } from '../core/metrics.js';
import { nativeStatus } from '../native/addon.js';
import { readsLoad } from '../upstream/balancer.js';
import { renderHealthMetrics } from '../upstream/health.js';
import type { UpstreamLimitStatus, UpstreamTargetStatus, WorkerStats } from '../worker/ipc.js';
import { listenerReport } from './listeners.js';
import type { LoadShare } from './load-share.js';
import type { Reload } from './reload.js';
import type { PrimaryState, WorkerSlot } from './state.js';
import type { Supervisor } from './supervisor.js';
import type { Targets } from './targets.js';

/** The parts a report reads. */
export interface ReportParts {
  readonly supervisor: Supervisor;
  readonly targets: Targets;
  readonly loadShare: LoadShare;
  readonly reload: Reload;
}

export class Report {
  readonly #state: PrimaryState;
  readonly #parts: ReportParts;
  readonly #startedAt = Date.now();
  /** Counters of workers that exited, as last collected, so totals do not fall back when a worker restarts. */
  #exitedTotals: MetricsSnapshot = emptySnapshot();
  /** Same for the upstreams' queue and retry counters. */
  readonly #exitedLimits = new Map<string, UpstreamLimitTotals>();

  constructor(state: PrimaryState, parts: ReportParts) {
    this.#state = state;
    this.#parts = parts;
  }

  get #config(): Config {
    return this.#state.served.config;
  }

  /** A worker exited: its last counters stay in the totals; what it counted since the last scrape is lost. */
  retire(slot: WorkerSlot): void {
    if (slot.lastStats !== null) {
      // Its last counters stay in the totals; what it counted since the last scrape is lost.
      this.#exitedTotals = sumSnapshots(this.#exitedTotals, { ...slot.lastStats.metrics, tunnelsOpen: 0 });
      for (const l of slot.lastStats.upstreamLimits) addLimits(this.#exitedLimits, l, false);
      slot.lastStats = null;
    }
  }

  async metricsText(): Promise<string> {
    const { supervisor, targets, reload } = this.#parts;
    const sticky = this.#parts.loadShare.sticky;
    const { answers } = await supervisor.collect();
    let total = this.#exitedTotals;
    let connectionsOpen = 0;
    for (const { stats } of answers) {
      total = sumSnapshots(total, stats.metrics);
      connectionsOpen += stats.connections;
    }
    const merged = mergeTargets(answers.map((a) => a.stats));
    const reloads = renderReloadMetrics({ generation: this.#state.served.generation, ok: reload.ok, failed: reload.failed, loadedAt: reload.loadedAt, stickyKeys: sticky.size, pins: sticky.pinCount });
    const text = reloads + renderPrometheus(total, {
      workers: supervisor.slots.filter((s) => s.child !== null).length,
      workerRestarts: supervisor.restartsTotal,
      connectionsOpen,
      upstreamTargets: merged,
      upstreamLimits: [...this.#limits(answers).values()],
      workerProcesses: answers.flatMap(({ slot, stats }) => (stats.process === undefined ? [] : [{ worker: slot.id, ...stats.process }])),
    });
    return (targets.health.size === 0 ? text : text + renderHealthMetrics(targets.health.values())) + (targets.discovery?.renderMetrics() ?? '');
  }

  /** Per target: drain, the primary's active checks, and passive state gathered from the answering workers. */
  #healthReport(answers: ReadonlyArray<{ slot: WorkerSlot; stats: WorkerStats }>): Record<string, TargetHealthReport[]> {
    const targets = this.#parts.targets;
    const report: Record<string, TargetHealthReport[]> = {};
    for (const [name, upstream] of Object.entries(this.#config.upstreams)) {
      const checker = targets.health.get(name);
      const active = new Map((checker?.status() ?? []).map((s) => [s.target, s]));
      const passive = upstream.health.passive;
      report[name] = targets.targetIds(name).map((target): TargetHealthReport => {
        const a = active.get(target);
        const downInWorkers: number[] = [];
        let failures = 0;
        for (const { slot, stats } of answers) {
          const t = stats.upstreamTargets.find((x) => x.upstream === name && x.target === target);
          if (t === undefined) continue;
          if (t.passiveDown) downInWorkers.push(slot.id);
          failures += t.failures;
        }
        return {
          target,
          draining: targets.isDrained(name, target),
          active:
            checker === undefined || a === undefined
              ? null
              : { type: checker.config.type, healthy: a.healthy, lastCheck: a.lastCheck === null ? null : new Date(a.lastCheck).toISOString(), lastResult: a.lastResult, lastReason: a.lastReason },
          passive: { enabled: passive.max_fails > 0 && passive.fail_timeout > 0, downInWorkers, failures },
        };
      });
    }
    return report;
  }

  /** Queue and retry counters per upstream: the answering workers' plus those of workers that exited. */
  #limits(answers: ReadonlyArray<{ stats: WorkerStats }>): Map<string, UpstreamLimitTotals> {
    const totals = new Map<string, UpstreamLimitTotals>();
    for (const name of Object.keys(this.#config.upstreams)) totals.set(name, { upstream: name, queued: 0, queueRejected: 0, queueTimeouts: 0, retriesTotal: 0, retriesDenied: 0 });
    for (const l of this.#exitedLimits.values()) addTotals(totals, l);
    for (const { stats } of answers) for (const l of stats.upstreamLimits) addLimits(totals, l, true);
    return totals;
  }

  async status(): Promise<StatusReport> {
    const { supervisor, targets, reload } = this.#parts;
    const sticky = this.#parts.loadShare.sticky;
    const { answers, unanswered } = await supervisor.collect();
    const now = Date.now();
    const upstreams: StatusReport['upstreams'] = {};
    for (const t of mergeTargets(answers.map((a) => a.stats))) {
      const balancesOnLoad = readsLoad(this.#config.upstreams[t.upstream]?.balance ?? 'round_robin');
      (upstreams[t.upstream] ??= []).push({ target: t.target, available: t.available, active: t.active, open: t.open, idle: t.idle, ...(balancesOnLoad ? { loadSeen: t.loadSeen } : {}), ...(t.leaving ? { leaving: true } : {}) });
    }
    const health = this.#healthReport(answers);
    const limits: StatusReport['limits'] = {};
    for (const [name, l] of this.#limits(answers)) {
      limits[name] = { queued: l.queued, queueRejected: l.queueRejected, queueTimeouts: l.queueTimeouts, retries: l.retriesTotal, retriesDenied: l.retriesDenied };
    }
    const last = reload.lastReload;
    return {
      pid: process.pid,
      uptime: Math.round((now - this.#startedAt) / 1000),
      config: {
        file: this.#state.configFile,
        generation: this.#state.served.generation,
        loadedAt: new Date(reload.loadedAt).toISOString(),
        reloads: { ok: reload.ok, failed: reload.failed },
        lastReload:
          last === null
            ? null
            : last.ok
              ? { at: new Date(last.finishedAt).toISOString(), ok: true, generation: last.generation, summary: last.summary, warnings: [...last.warnings] }
              : { at: new Date(last.finishedAt).toISOString(), ok: false, generation: last.generation, error: last.error, errors: formatErrors(this.#state.configFile, last.errors).split('\n').filter((l) => l !== '') },
      },
      sticky: { keys: sticky.size, pins: sticky.pinCount },
      listenStrategy: this.#state.strategy,
      native: nativeStatus(),
      workers: supervisor.slots.map((s) => {
        const stats = answers.find((a) => a.slot === s)?.stats;
        return {
          id: s.id,
          pid: s.child?.pid ?? null,
          uptime: s.child === null ? 0 : Math.round((now - s.startedAt) / 1000),
          restarts: s.restarts,
          state: s.state,
          generation: s.generation,
          ...(stats === undefined ? {} : { connections: stats.connections, tunnels: stats.tunnels, fds: stats.fds, pipes: stats.metrics.pipes, accept: stats.accept, acceptBatches: stats.acceptBatches, helloAtAccept: stats.helloAtAccept, deferAccept: stats.deferAccept, nativeAnswers: stats.nativeAnswers, nativeUpgrades: stats.nativeUpgrades, nativeExchanges: stats.nativeExchanges, nativeExchangesDeclined: stats.nativeExchangesDeclined }),
        };
      }),
      standby: supervisor.standby,
      listeners: listenerReport(this.#state.served),
      upstreams,
      limits,
      health,
      discovery: targets.discovery?.status() ?? {},
      connections: answers.reduce((n, a) => n + a.stats.connections, 0),
      tunnels: answers.reduce((n, a) => n + a.stats.tunnels, 0),
      unanswered,
    };
  }
}

/**
 * One target summed over the workers: `available` and `leaving` only if so in every worker that has it; `active`,
 * `open` and `idle` added up; what each worker balances on (its own active + the others' as last aggregated),
 * in answer order.
 */
type MergedTarget = Pick<UpstreamTargetStatus, 'upstream' | 'target' | 'available' | 'active' | 'open' | 'idle' | 'leaving'> & { loadSeen: number[] };

/**
 * One entry per upstream target: available only if available in every worker, active summed. A repeated
 * address is one entry (its counts added), so loadSeen adds up per worker too.
 */
function mergeTargets(all: readonly WorkerStats[]): MergedTarget[] {
  const merged = new Map<string, MergedTarget>();
  all.forEach((stats, w) => {
    for (const t of stats.upstreamTargets) {
      const key = `${t.upstream}\n${t.target}`;
      let m = merged.get(key);
      if (m === undefined) merged.set(key, (m = { upstream: t.upstream, target: t.target, available: t.available, active: 0, open: 0, idle: 0, loadSeen: [], leaving: t.leaving }));
      else {
        m.available &&= t.available;
        m.leaving &&= t.leaving;
      }
      m.active += t.active;
      m.open += t.open;
      m.idle += t.idle;
      m.loadSeen[w] = (m.loadSeen[w] ?? 0) + t.active + t.remote;
    }
  });
  return [...merged.values()].map((m) => ({ ...m, loadSeen: Array.from(m.loadSeen, (n) => n ?? 0) }));
}

/** Adds one worker's limits to `totals` (`withGauge`: its queue length too; an exited worker has none). */
function addLimits(totals: Map<string, UpstreamLimitTotals>, l: UpstreamLimitStatus, withGauge: boolean): void {
  addTotals(totals, { upstream: l.upstream, queued: withGauge ? l.queued : 0, queueRejected: l.queueRejected, queueTimeouts: l.queueTimeouts, retriesTotal: l.retries.retriesTotal, retriesDenied: l.retries.deniedTotal });
}

function addTotals(totals: Map<string, UpstreamLimitTotals>, l: UpstreamLimitTotals): void {
  const t = totals.get(l.upstream);
  if (t === undefined) {
    totals.set(l.upstream, { ...l });
    return;
  }
  t.queued += l.queued;
  t.queueRejected += l.queueRejected;
  t.queueTimeouts += l.queueTimeouts;
  t.retriesTotal += l.retriesTotal;
  t.retriesDenied += l.retriesDenied;
}
