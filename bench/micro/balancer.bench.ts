// Micro-benchmark of a balancer pick for each policy over 3, 30 and 300 targets (not a test, asserts no speed),
// hash with sticky tunnel pins held (none of the picked keys, or all of them), then the share of keys the hash policy moves when one of N targets leaves, joins, or goes down (100k keys).
// Each sample runs a batch of picks so the timer's own cost does not swamp a pick of a few nanoseconds;
// results are checked before timing (STYLE.md 14). Run: npm run bench:micro:balancer
import assert from 'node:assert/strict';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Bench } from 'tinybench';
import { createBalancer, type Balancer, type BalanceSpec, type Target } from '../../src/upstream/balancer.js';

const SIZES = [3, 30, 300] as const;
const BATCH = 1000;
/** Distinct request keys the hash scenarios cycle through (client addresses, as `$remote_addr` gives them). */
const KEYS = Array.from({ length: 1024 }, (_, i) => `198.51.${(i * 37) & 255}.${(i * 101) & 255}`);
const REMAP_KEYS = 100_000;

/** Weights 1..5 in turn; `activeOf` sets the load least_conn and random_two see. */
function makeTargets(n: number, activeOf: (i: number) => number): Target[] {
  return Array.from({ length: n }, (_, i) => ({ id: `10.0.${i >> 8}.${i & 255}:80`, host: `10.0.${i >> 8}.${i & 255}`, port: 80, weight: 1 + (i % 5), available: true, active: activeOf(i) }));
}

interface Scenario {
  name: string;
  spec: BalanceSpec;
  /** Load per target: all idle makes least_conn break a tie among every target (its slowest path). */
  activeOf: (i: number) => number;
  keyed: boolean;
  /** Sticky tunnel pins the hash balancer holds (key -> target address), built for the scenario's targets. */
  pins?: (targets: readonly Target[]) => Map<string, string>;
}

/** 10,000 pins for keys no request carries: the common case of a pin map that is not empty. */
const otherPins = (targets: readonly Target[]): Map<string, string> => new Map(Array.from({ length: 10_000 }, (_, i) => [`other-${i}`, targets[i % targets.length].id]));
/** Every request key pinned, to the last target (a pinned key is found, checked eligible and returned). */
const allPinned = (targets: readonly Target[]): Map<string, string> => new Map(KEYS.map((k) => [k, targets[targets.length - 1].id]));

const SCENARIOS: readonly Scenario[] = [
  { name: 'round_robin', spec: 'round_robin', activeOf: () => 0, keyed: false },
  { name: 'least_conn (all idle: tie)', spec: 'least_conn', activeOf: () => 0, keyed: false },
  { name: 'least_conn (mixed load)', spec: 'least_conn', activeOf: (i) => (i * 7919) % 13, keyed: false },
  { name: 'random_two (mixed load)', spec: 'random_two', activeOf: (i) => (i * 7919) % 13, keyed: false },
  { name: 'hash $remote_addr (Maglev)', spec: { policy: 'hash', key: '$remote_addr' }, activeOf: () => 0, keyed: true },
  { name: 'hash, 10k pins of other keys', spec: { policy: 'hash', key: '$remote_addr' }, activeOf: () => 0, keyed: true, pins: otherPins },
  { name: 'hash, every key pinned', spec: { policy: 'hash', key: '$remote_addr' }, activeOf: () => 0, keyed: true, pins: allPinned },
];

/** Checks picks before anything is timed: known, available targets; weights per cycle; stable hash keys. */
function check(s: Scenario, balancer: Balancer, targets: readonly Target[]): void {
  const ids = new Set(targets.map((t) => t.id));
  for (let i = 0; i < 100; i++) {
    const t = s.keyed ? balancer.pickFor(KEYS[i]) : balancer.pick();
    assert.ok(t !== undefined && ids.has(t.id), `${s.name}: pick ${i} returned ${t?.id}`);
    if (s.keyed) assert.equal(balancer.pickFor(KEYS[i]), t, `${s.name}: a key keeps its target`);
    if (s.pins === allPinned) assert.equal(t, targets[targets.length - 1], `${s.name}: a pinned key goes to its pin`);
  }
  if (s.spec === 'round_robin' || (s.spec === 'least_conn' && targets.every((t) => t.active === 0))) {
    const total = targets.reduce((sum, t) => sum + t.weight, 0);
    const seen = new Map<string, number>();
    const fresh = createBalancer(s.spec, targets);
    for (let i = 0; i < total; i++) {
      const id = fresh.pick()?.id as string;
      seen.set(id, (seen.get(id) ?? 0) + 1);
    }
    for (const t of targets) assert.equal(seen.get(t.id), t.weight, `${s.name}: ${t.id} gets its weight per cycle`);
  }
}

const bench = new Bench({ name: 'balancer pick()', time: 300, warmupTime: 100 });
let sink = 0; // consumed after the run so the picks cannot be optimised away
const buildMs: string[] = [];
for (const scenario of SCENARIOS) {
  for (const n of SIZES) {
    const targets = makeTargets(n, scenario.activeOf);
    const started = performance.now();
    const balancer = createBalancer(scenario.spec, targets, { pins: scenario.pins?.(targets) });
    if (scenario.keyed && scenario.pins === undefined) buildMs.push(`${n} targets ${(performance.now() - started).toFixed(1)} ms`);
    check(scenario, balancer, targets);
    if (scenario.keyed) {
      bench.add(`${scenario.name}, ${n} targets`, () => {
        for (let i = 0; i < BATCH; i++) sink += (balancer.pickFor(KEYS[i & 1023]) as Target).port;
      });
    } else {
      bench.add(`${scenario.name}, ${n} targets`, () => {
        for (let i = 0; i < BATCH; i++) sink += (balancer.pick() as Target).port;
      });
    }
  }
}

console.log(`# ${bench.name}: node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown cpu'} x${os.cpus().length}, ${BATCH} picks per sample`);
console.log(`# hash keys: ${KEYS.length} IPv4 strings, hashed on every pick; Maglev table build: ${buildMs.join(', ')}`);
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

// ---- remapping: share of keys whose target changes (ideal: 1/N on leave, 1/(N+1) on join) ----

function equalTargets(n: number): Target[] {
  return Array.from({ length: n }, (_, i) => ({ id: `10.1.${i >> 8}.${i & 255}:8080`, host: `10.1.${i >> 8}.${i & 255}`, port: 8080, weight: 1, available: true, active: 0 }));
}

function moved(keys: readonly string[], before: readonly (Target | undefined)[], b: Balancer): number {
  let count = 0;
  for (let i = 0; i < keys.length; i++) if (b.pickFor(keys[i])?.id !== before[i]?.id) count++;
  return count / keys.length;
}

const HASH: BalanceSpec = { policy: 'hash', key: '$remote_addr' };
const remapKeys = Array.from({ length: REMAP_KEYS }, (_, i) => `client-${i}-${((i * 2654435761) >>> 0).toString(36)}`);
const remap = [3, 10, 30].map((n) => {
  const all = equalTargets(n + 1);
  const current = all.slice(0, n);
  const b = createBalancer(HASH, current);
  const before = remapKeys.map((k) => b.pickFor(k));
  const leave = moved(remapKeys, before, createBalancer(HASH, current.filter((_, i) => i !== 1)));
  const join = moved(remapKeys, before, createBalancer(HASH, all));
  current[1].available = false; // health check flip: the table stays, keys walk past the target
  const down = moved(remapKeys, before, b);
  const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
  return {
    N: n,
    'leaves (config)': pct(leave),
    'ideal 1/N': pct(1 / n),
    'joins (config)': pct(join),
    'ideal 1/(N+1)': pct(1 / (n + 1)),
    'goes down (health)': pct(down),
  };
});
console.log(`# hash (Maglev, 65537 slots): share of ${REMAP_KEYS} keys that move when one target changes`);
console.table(remap);
