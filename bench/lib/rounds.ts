// How a benchmark's runs are made and recorded: checks and warm-ups first, then rounds with the target order
// rotated, a run repeated while other processes disturbed it, a failed run kept with its reason, CPU figures
// taken from each load's result. Shared by the scenarios (bench/scenarios/); the loads start their own processes.
import type { LoadResult } from './loads.js';
import type { Pinning } from './procs.js';
import { UNIT, summarize, type Run, type Scenario, type Summary } from './report.js';
import type { TargetId } from './shape.js';

/** Share of one core that other processes may use during a run before it counts as disturbed. */
export const NOISY_SHARE = 0.15;

export function rotate<T>(list: T[], by: number): T[] {
  const k = list.length === 0 ? 0 : by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

export function toRun(scenario: Scenario, target: TargetId, round: number, r: LoadResult): Run {
  const sum = (list: { cpuUs: number }[]): number => list.reduce((s, p) => s + p.cpuUs, 0);
  const proxyCpuUs = sum(r.cpu.proxy);
  const clientCpuUs = sum(r.cpu.client);
  const backendCpuUs = sum(r.cpu.backend);
  return {
    scenario, target, round, ok: true, count: r.count, rate: r.rate, wallMs: r.cpu.wallMs, proxyCpuUs, clientCpuUs, backendCpuUs,
    proxySysUs: r.cpu.proxy.reduce((n, p) => n + p.sysUs, 0),
    // Clock-tick rounding can make the difference slightly negative on an idle box.
    otherCpuUs: Math.max(0, r.cpu.machineBusyUs - proxyCpuUs - clientCpuUs - backendCpuUs),
    stealUs: r.cpu.stealUs,
    processes: [
      ...r.cpu.proxy.map((p) => ({ role: 'proxy' as const, ...p })),
      ...r.cpu.client.map((p) => ({ role: 'client' as const, ...p })),
      ...r.cpu.backend.map((p) => ({ role: 'backend' as const, ...p })),
    ],
    latencyUs: r.latencyUs,
    notes: r.notes,
    info: r.info,
  };
}

export function failedRun(scenario: Scenario, target: TargetId, round: number, error: string): Run {
  return { scenario, target, round, ok: false, error, count: 0, rate: 0, wallMs: 0, proxyCpuUs: 0, proxySysUs: 0, clientCpuUs: 0, backendCpuUs: 0, otherCpuUs: 0, stealUs: 0, processes: [], notes: [], info: [] };
}

/** Share of one core the rest of the machine used during `run`. */
export function otherShare(run: Run): number {
  return run.wallMs > 0 ? run.otherCpuUs / (run.wallMs * 1000) : 0;
}

/**
 * Runs `attempt` and repeats it, at most `retries` times, while other processes used more than NOISY_SHARE of a
 * core during it (the proxy and the client would have shared their cores with them). Keeps the least disturbed
 * run, its `retries` set to the repeats. `onNoisy` hears of each repeat; `stop` ends early (interrupted).
 */
export async function leastDisturbed(
  attempt: () => Promise<{ run: Run; result: LoadResult }>,
  retries: number,
  onNoisy: (share: number) => void,
  stop: () => boolean,
): Promise<{ run: Run; result: LoadResult } | undefined> {
  let best: { run: Run; result: LoadResult; other: number } | undefined;
  let attempts = 0;
  for (let i = 0; i <= retries && !stop(); i++) {
    attempts++;
    const got = await attempt();
    const other = otherShare(got.run);
    if (best === undefined || other < best.other) best = { ...got, other };
    if (other <= NOISY_SHARE || i === retries) break;
    onNoisy(other);
    await new Promise((res) => setTimeout(res, 1000));
  }
  if (best === undefined) return undefined;
  best.run.retries = attempts - 1;
  return { run: best.run, result: best.result };
}

/** A target of a benchmark plan: its id and row label, and why it cannot run, when it cannot. */
export interface PlanTarget {
  readonly id: TargetId;
  readonly label: string;
  readonly error?: string;
}

/** What a benchmark times: each load through each target, in rounds. */
export interface Plan<T extends PlanTarget, L extends Scenario> {
  readonly targets: readonly T[];
  readonly loads: readonly L[];
  readonly rounds: number;
  readonly warmupS: number;
  readonly durationS: number;
  readonly noisyRetries: number;
  /** A disturbed run is run again (one more run than planned: for a progress line). */
  onRerun?(): void;
  /** Before any timing ("check the result before timing it"): throws when the target gets the work wrong. */
  check(t: T, l: L): Promise<void>;
  /** One timed (or warm-up) run of `durationS` seconds. */
  load(t: T, l: L, durationS: number): Promise<LoadResult>;
  /** A fact to add to each run's progress line (e.g. TIME_WAIT sockets after it). */
  note?(): string;
  /** False for a load a target does not take (e.g. a TLS load and the direct target): it is never run or listed. */
  applies?(t: T, l: L): boolean;
  /** True once the benchmark was interrupted: no further run starts. */
  stopped(): boolean;
}

export interface PlanResult<L extends Scenario> {
  runs: Run[];
  summaries: Array<{ scenario: L; rows: Summary[] }>;
}

/**
 * Checks every target with every load, warms each up, then runs the rounds: every load through every target,
 * the target order rotated by one each round so slow drift of the machine spreads over all of them. A target
 * that fails its check or warm-up keeps its reason in every row; a failed run is recorded, and the rest goes on.
 */
export async function runPlan<T extends PlanTarget, L extends Scenario>(plan: Plan<T, L>): Promise<PlanResult<L>> {
  const blocked = new Map<string, string>();
  const key = (t: T, l: L): string => `${t.id}:${l}`;
  const applies = (t: T, l: L): boolean => plan.applies?.(t, l) ?? true;
  for (const t of plan.targets) {
    for (const l of plan.loads) {
      if (!applies(t, l)) continue;
      if (t.error !== undefined) {
        blocked.set(key(t, l), t.error);
        continue;
      }
      try {
        await plan.check(t, l);
      } catch (err) {
        blocked.set(key(t, l), `check failed: ${(err as Error).message}`);
      }
    }
    console.log(`check ${t.label}: ${plan.loads.filter((l) => applies(t, l)).map((l) => `${l} ${blocked.has(key(t, l)) ? `FAILED (${blocked.get(key(t, l))})` : 'ok'}`).join(', ')}`);
  }
  if (plan.warmupS > 0) {
    for (const l of plan.loads) {
      for (const t of plan.targets) {
        if (!applies(t, l) || blocked.has(key(t, l)) || plan.stopped()) continue;
        try {
          await plan.load(t, l, plan.warmupS);
        } catch (err) {
          blocked.set(key(t, l), `warm-up failed: ${(err as Error).message}`);
          console.log(`warm-up ${l} ${t.label}: FAILED ${(err as Error).message}`);
        }
      }
    }
  }
  const runs: Run[] = [];
  for (let round = 0; round < plan.rounds && !plan.stopped(); round++) {
    for (const l of plan.loads) {
      for (const t of rotate([...plan.targets], round)) {
        if (plan.stopped()) break;
        if (!applies(t, l)) continue;
        const head = `round ${round + 1}/${plan.rounds} ${l.padEnd(4)} ${t.label}:`;
        const reason = blocked.get(key(t, l));
        if (reason !== undefined) {
          runs.push(failedRun(l, t.id, round + 1, reason));
          continue;
        }
        try {
          const best = await leastDisturbed(
            async () => {
              const result = await plan.load(t, l, plan.durationS);
              return { run: toRun(l, t.id, round + 1, result), result };
            },
            plan.noisyRetries,
            (other) => {
              console.log(`${head} other processes used ${(other * 100).toFixed(0)}% of a core, run again`);
              plan.onRerun?.();
            },
            () => plan.stopped(),
          );
          if (best === undefined) continue;
          const { run, result } = best;
          runs.push(run);
          const unit = UNIT[l];
          const cpu = t.id === 'direct' ? '' : `, proxy ${(run.proxyCpuUs / run.count).toFixed(1)} CPU-µs/${unit}`;
          const facts = [...result.notes, ...result.info, `other CPU ${(otherShare(run) * 100).toFixed(0)}%`, ...(plan.note === undefined ? [] : [plan.note()])];
          console.log(`${head} ${Math.round(run.rate).toLocaleString('en-US')} ${unit}/s${cpu} (${facts.join(', ')})`);
        } catch (err) {
          runs.push(failedRun(l, t.id, round + 1, (err as Error).message));
          console.log(`${head} FAILED ${(err as Error).message}`);
        }
        // Let sockets of the finished run close before the next one starts.
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }
  const summaries = plan.loads.map((l) => ({
    scenario: l,
    rows: summarize(l, plan.targets.filter((t) => applies(t, l)).map((t) => ({ id: t.id, label: t.label, error: blocked.get(key(t, l)) })), runs, plan.rounds),
  }));
  return { runs, summaries };
}

/** The warnings under a report: disturbed runs kept, runs repeated, hypervisor steal, a shared client core. */
export function caveats(runs: readonly Run[], pinning: Pinning): string[] {
  const out: string[] = [];
  const noisy = runs.filter((r) => r.ok && otherShare(r) > NOISY_SHARE);
  if (noisy.length > 0) out.push(`WARNING: ${noisy.length} run(s) kept over ${NOISY_SHARE * 100}% of a core of other CPU use after retries: rerun on a quiet machine.`);
  const retried = runs.reduce((n, r) => n + (r.retries ?? 0), 0);
  if (retried > 0) out.push(`${retried} run(s) were repeated because other processes were busy during them.`);
  const stolen = runs.filter((r) => r.ok && r.stealUs / (r.wallMs * 1000) > 0.05);
  if (stolen.length > 0) out.push(`WARNING: ${stolen.length} run(s) lost over 5% of a core to hypervisor steal.`);
  if (pinning.enabled) out.push(`Client and backends share CPU ${pinning.clientCpu}: when client + backend CPU nears 100% there, that core, not the proxy, caps the rate.`);
  return out;
}
