// The figures of a `portico bench` report from its recorded rounds, honest by construction: a round that other
// processes disturbed is kept out of the medians (and the row says so when only disturbed rounds remain), a failed
// round is counted and its reason kept, and a row whose load generator's core was full is marked client-bound.
// Pure over a Recorded (lib/recorded.ts): no processes, no files, no clock.
import type { IdleSeries, Recorded, RecordedLoad } from './recorded.js';
import { pct, type Run } from './report.js';
import { NOISY_SHARE, otherShare } from './rounds.js';
import type { TargetId } from './shape.js';
import { median } from './stats.js';

/** Hypervisor steal over this share of one core disturbs a round as much as another process does. */
export const STEAL_SHARE = 0.05;
/** A load generator (single-threaded: wrk -t1, ws-load) at or over this share of its core caps the rate itself. */
export const SATURATED_SHARE = 0.9;

/**
 * failed: no round ran; partial: some rounds failed; disturbed: every round that ran was disturbed, so the figures
 * come from disturbed rounds; client-bound: the load generator's core was full, the rate is a floor for the proxy.
 */
export type Mark = 'failed' | 'partial' | 'disturbed' | 'client-bound';

export interface Row {
  load: RecordedLoad['id'];
  target: TargetId;
  label: string;
  unit: string;
  rounds: number;
  /** Rounds the medians come from, and the rounds left out as disturbed, and failed. */
  used: number;
  disturbed: number;
  failed: number;
  marks: Mark[];
  /** One sentence per mark, and the first failure's reason. */
  why: string[];
  rate?: number;
  rateMin?: number;
  rateMax?: number;
  /** (max - min) / median of the rates used, percent. */
  spreadPct?: number;
  proxyCpuUsPerUnit?: number;
  proxyUserUsPerUnit?: number;
  proxySysUsPerUnit?: number;
  /** Units one fully busy core of the proxy would carry: 1e6 / proxy CPU-µs per unit. */
  perCore?: number;
  proxyCpuPct?: number;
  /** The busiest load-generator process, % of one core. */
  clientCpuPct?: number;
  backendCpuPct?: number;
  otherCpuPct?: number;
  latencyUs?: { p50: number; p90: number; p99: number };
  vsNginx?: number;
  cpuVsNginx?: number;
}

export function isDisturbed(r: Run): boolean {
  return otherShare(r) > NOISY_SHARE || (r.wallMs > 0 && r.stealUs / (r.wallMs * 1000) > STEAL_SHARE);
}

/** The busiest client process of a round, as a share of one core (0..1). */
export function clientCoreShare(r: Run): number {
  const shares = r.processes.filter((p) => p.role === 'client').map((p) => p.cpuUs / Math.max(1, r.wallMs * 1000));
  return shares.length === 0 ? 0 : Math.max(...shares);
}

function rowFor(load: RecordedLoad, target: { id: TargetId; label: string; error?: string }, runs: readonly Run[], rounds: number): Row {
  const mine = runs.filter((r) => r.scenario === load.id && r.target === target.id);
  const ok = mine.filter((r) => r.ok);
  const clean = ok.filter((r) => !isDisturbed(r));
  const used = clean.length > 0 ? clean : ok;
  const failed = mine.filter((r) => !r.ok);
  const row: Row = {
    load: load.id, target: target.id, label: target.label, unit: load.unit, rounds,
    used: used.length, disturbed: ok.length - clean.length, failed: failed.length, marks: [], why: [],
  };
  if (used.length === 0) {
    row.marks.push('failed');
    row.why.push(target.error ?? failed[0]?.error ?? 'no round ran');
    return row;
  }
  if (failed.length > 0) {
    row.marks.push('partial');
    row.why.push(`${failed.length} of ${mine.length} rounds failed: ${failed[0].error ?? ''}`);
  }
  if (clean.length === 0) {
    row.marks.push('disturbed');
    const worst = Math.max(...ok.map((r) => otherShare(r)));
    row.why.push(`every round was disturbed (other processes used up to ${(worst * 100).toFixed(0)}% of a core): figures from disturbed rounds, rerun on a quiet machine`);
  } else if (row.disturbed > 0) {
    row.why.push(`${row.disturbed} disturbed round(s) left out of the medians`);
  }
  const rates = used.map((r) => r.rate);
  row.rate = median(rates);
  row.rateMin = Math.min(...rates);
  row.rateMax = Math.max(...rates);
  row.spreadPct = row.rate > 0 ? ((row.rateMax - row.rateMin) / row.rate) * 100 : 0;
  if (target.id !== 'direct') {
    row.proxyCpuUsPerUnit = median(used.map((r) => r.proxyCpuUs / r.count));
    row.proxyUserUsPerUnit = median(used.map((r) => (r.proxyCpuUs - r.proxySysUs) / r.count));
    row.proxySysUsPerUnit = median(used.map((r) => r.proxySysUs / r.count));
    row.perCore = row.proxyCpuUsPerUnit > 0 ? 1e6 / row.proxyCpuUsPerUnit : undefined;
    row.proxyCpuPct = median(used.map((r) => pct(r.proxyCpuUs, r.wallMs)));
  }
  const client = median(used.map(clientCoreShare));
  row.clientCpuPct = client * 100;
  row.backendCpuPct = median(used.map((r) => pct(r.backendCpuUs, r.wallMs)));
  row.otherCpuPct = median(used.map((r) => pct(r.otherCpuUs, r.wallMs)));
  if (client >= SATURATED_SHARE) {
    row.marks.push('client-bound');
    row.why.push(`the load generator used ${(client * 100).toFixed(0)}% of its core: the rate is a floor for this target; CPU per ${load.unit} still holds`);
  }
  const lat = used.filter((r) => r.latencyUs !== undefined);
  if (lat.length > 0) {
    row.latencyUs = {
      p50: median(lat.map((r) => r.latencyUs?.p50 ?? 0)),
      p90: median(lat.map((r) => r.latencyUs?.p90 ?? 0)),
      p99: median(lat.map((r) => r.latencyUs?.p99 ?? 0)),
    };
  }
  return row;
}

export interface LoadSummary {
  load: RecordedLoad;
  rows: Row[];
}

/** Every load's rows, in the recorded order of loads and targets; targets that never took a load are left out. */
export function summarizeRecorded(rec: Recorded): LoadSummary[] {
  return rec.loads.map((load) => {
    const rows = rec.targets
      .filter((t) => rec.runs.some((r) => r.scenario === load.id && r.target === t.id))
      .map((t) => rowFor(load, t, rec.runs, rec.conditions.rounds));
    const nginx = rows.find((r) => r.target === 'nginx');
    for (const r of rows) {
      if (nginx?.rate !== undefined && r.rate !== undefined && nginx.rate > 0) r.vsNginx = r.rate / nginx.rate;
      if (nginx?.proxyCpuUsPerUnit !== undefined && r.proxyCpuUsPerUnit !== undefined && r.proxyCpuUsPerUnit > 0) {
        r.cpuVsNginx = nginx.proxyCpuUsPerUnit / r.proxyCpuUsPerUnit;
      }
    }
    return { load, rows };
  });
}

/** KiB of RSS and descriptors per idle connection: the slope from the baseline to the largest count held. */
export function idleCost(s: IdleSeries): { kibPerConn: number; fdsPerConn: number; connections: number } | undefined {
  const last = s.points[s.points.length - 1];
  if (last === undefined || last.connections <= 0) return undefined;
  return {
    kibPerConn: (last.rssKiB - s.baseline.rssKiB) / last.connections,
    fdsPerConn: (last.fds - s.baseline.fds) / last.connections,
    connections: last.connections,
  };
}

/** Counts of each mark over every row: the headline of the report's honesty section. */
export function markCounts(loads: readonly LoadSummary[]): Record<Mark, number> {
  const out: Record<Mark, number> = { failed: 0, partial: 0, disturbed: 0, 'client-bound': 0 };
  for (const l of loads) for (const r of l.rows) for (const m of r.marks) out[m]++;
  return out;
}

/** Rounds left out of the medians as disturbed, over the whole run. */
export function disturbedRounds(rec: Recorded): number {
  return rec.runs.filter((r) => r.ok && isDisturbed(r)).length;
}
