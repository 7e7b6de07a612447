// Micro-benchmark of Balancer.pick() for each policy over 3, 30 and 300 targets (not a test, asserts no speed).
// Each sample runs a batch of picks so the timer's own cost does not swamp a pick of a few nanoseconds;
// results are checked before timing (STYLE.md 14). Run: npx tsc -p . && node dist/bench/micro/balancer.bench.js
import assert from 'node:assert/strict';
import os from 'node:os';
import { Bench } from 'tinybench';
import { createBalancer, type Balancer, type BalancePolicy, type Target } from '../../src/upstream/balancer.js';

const SIZES = [3, 30, 300] as const;
const BATCH = 1000;

/** Weights 1..5 in turn; `activeOf` sets the load least_conn sees. */
function makeTargets(n: number, activeOf: (i: number) => number): Target[] {
  return Array.from({ length: n }, (_, i) => ({ id: `10.0.${i >> 8}.${i & 255}:80`, host: `10.0.${i >> 8}.${i & 255}`, port: 80, weight: 1 + (i % 5), available: true, active: activeOf(i) }));
}

interface Scenario {
  name: string;
  policy: BalancePolicy;
  /** Load per target: all idle makes least_conn break a tie among every target (its slowest path). */
  activeOf: (i: number) => number;
}

const SCENARIOS: readonly Scenario[] = [
  { name: 'round_robin', policy: 'round_robin', activeOf: () => 0 },
  { name: 'least_conn (all idle: tie)', policy: 'least_conn', activeOf: () => 0 },
  { name: 'least_conn (mixed load)', policy: 'least_conn', activeOf: (i) => (i * 7919) % 13 },
];

/** Checks one full weight cycle before anything is timed: every pick is a known, available target. */
function check(policy: BalancePolicy, balancer: Balancer, targets: readonly Target[]): void {
  const ids = new Set(targets.map((t) => t.id));
  for (let i = 0; i < 100; i++) {
    const t = balancer.pick();
    assert.ok(t !== undefined && ids.has(t.id), `${policy}: pick ${i} returned ${t?.id}`);
  }
  if (policy === 'round_robin' || targets.every((t) => t.active === 0)) {
    const total = targets.reduce((s, t) => s + t.weight, 0);
    const seen = new Map<string, number>();
    const fresh = createBalancer(policy, targets);
    for (let i = 0; i < total; i++) {
      const id = fresh.pick()?.id as string;
      seen.set(id, (seen.get(id) ?? 0) + 1);
    }
    for (const t of targets) assert.equal(seen.get(t.id), t.weight, `${policy}: ${t.id} gets its weight per cycle`);
  }
}

const bench = new Bench({ name: 'balancer pick()', time: 300, warmupTime: 100 });
let sink = 0; // consumed after the run so the picks cannot be optimised away
for (const scenario of SCENARIOS) {
  for (const n of SIZES) {
    const targets = makeTargets(n, scenario.activeOf);
    const balancer = createBalancer(scenario.policy, targets);
    check(scenario.policy, balancer, targets);
    bench.add(`${scenario.name}, ${n} targets`, () => {
      for (let i = 0; i < BATCH; i++) sink += (balancer.pick() as Target).port;
    });
  }
}

console.log(`# ${bench.name}: node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown cpu'} x${os.cpus().length}, ${BATCH} picks per sample`);
await bench.run();
const rows = bench.tasks.map((task) => {
  const r = task.result;
  if (r.state !== 'completed') return { task: task.name, 'ns/pick (mean)': r.state, 'ns/pick (p50)': '', 'picks/s (M)': '' };
  return {
    task: task.name,
    'ns/pick (mean)': ((r.latency.mean * 1e6) / BATCH).toFixed(1),
    'ns/pick (p50)': ((r.latency.p50 * 1e6) / BATCH).toFixed(1),
    'picks/s (M)': ((BATCH * 1000) / r.latency.mean / 1e6).toFixed(1),
  };
});
console.table(rows);
if (sink === 0) console.log('(no picks)');
