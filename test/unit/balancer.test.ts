// Balancers: one shared suite runs for every policy (STYLE.md 10), then what is specific to each policy.
// least_conn runs the shared suite with equal `active` counts, where it must behave like weighted round robin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createBalancer, type BalancePolicy, type Target } from '../../src/upstream/balancer.js';

const POLICIES: readonly BalancePolicy[] = ['round_robin', 'least_conn'];

function makeTargets(...weights: number[]): Target[] {
  return weights.map((weight, i) => ({ id: `t${i}`, host: '127.0.0.1', port: 9000 + i, weight, available: true, active: 0 }));
}

/** `n` picks as ids ('-' for undefined). */
function picks(policy: BalancePolicy, targets: Target[], n: number, exclude?: ReadonlySet<Target>): string[] {
  const b = createBalancer(policy, targets);
  return Array.from({ length: n }, () => b.pick(exclude)?.id ?? '-');
}

function counts(ids: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const id of ids) out[id] = (out[id] ?? 0) + 1;
  return out;
}

for (const policy of POLICIES) {
  test(`${policy}: picks follow the weights exactly over whole cycles`, () => {
    const ids = picks(policy, makeTargets(5, 3, 2), 1000);
    assert.deepEqual(counts(ids), { t0: 500, t1: 300, t2: 200 });
    // and within every cycle of total weight, not just on average
    for (let i = 0; i < ids.length; i += 10) assert.deepEqual(counts(ids.slice(i, i + 10)), { t0: 5, t1: 3, t2: 2 });
  });

  test(`${policy}: equal weights rotate through every target, not always the first`, () => {
    const ids = picks(policy, makeTargets(1, 1, 1), 9);
    for (let i = 0; i < ids.length; i += 3) assert.deepEqual(ids.slice(i, i + 3).sort(), ['t0', 't1', 't2']);
  });

  test(`${policy}: unavailable targets are skipped, and picked again once available`, () => {
    const targets = makeTargets(1, 1, 1);
    const b = createBalancer(policy, targets);
    targets[1].available = false;
    const during = Array.from({ length: 20 }, () => b.pick()?.id);
    assert.deepEqual(counts(during as string[]), { t0: 10, t2: 10 });
    targets[1].available = true;
    const after = Array.from({ length: 30 }, () => b.pick()?.id);
    assert.ok(after.includes('t1'));
    assert.ok(counts(after as string[]).t1 >= 9, `t1 gets its share back: ${JSON.stringify(counts(after as string[]))}`);
  });

  test(`${policy}: weight 0 targets are never picked, even when marked available`, () => {
    const ids = picks(policy, makeTargets(0, 2, 0, 1), 30);
    assert.deepEqual(counts(ids), { t1: 20, t3: 10 });
    assert.deepEqual(picks(policy, makeTargets(0, 0), 3), ['-', '-', '-']);
  });

  test(`${policy}: excluded (already tried) targets are skipped`, () => {
    const targets = makeTargets(1, 3, 1);
    assert.deepEqual(counts(picks(policy, targets, 20, new Set([targets[1]]))), { t0: 10, t2: 10 });
    assert.deepEqual(picks(policy, targets, 5, new Set([targets[0], targets[2]])), ['t1', 't1', 't1', 't1', 't1']);
    assert.deepEqual(picks(policy, targets, 2, new Set(targets)), ['-', '-']);
  });

  test(`${policy}: undefined when nothing is available or there are no targets`, () => {
    const targets = makeTargets(1, 2);
    for (const t of targets) t.available = false;
    assert.equal(createBalancer(policy, targets).pick(), undefined);
    assert.equal(createBalancer(policy, []).pick(), undefined);
  });

  test(`${policy}: one available target is picked every time`, () => {
    const targets = makeTargets(1, 7, 1);
    targets[0].available = false;
    targets[1].available = false;
    assert.deepEqual(picks(policy, targets, 4), ['t2', 't2', 't2', 't2']);
  });
}

test('round_robin: smooth order for weights 5,1,1 is a a b a c a a (nginx)', () => {
  const ids = picks('round_robin', makeTargets(5, 1, 1), 14).map((id) => ({ t0: 'a', t1: 'b', t2: 'c' })[id]);
  assert.deepEqual(ids.join(' '), 'a a b a c a a a a b a c a a');
});

test('least_conn: picks the lowest active/weight, compared without floats', () => {
  const targets = makeTargets(3, 1, 1);
  targets[0].active = 5; // 5/3 ≈ 1.67
  targets[1].active = 1; // 1/1
  targets[2].active = 2; // 2/1
  const b = createBalancer('least_conn', targets);
  assert.equal(b.pick()?.id, 't1');
  targets[1].active = 2; // now t0 (1.67) is lowest
  assert.equal(b.pick()?.id, 't0');
  targets[0].active = 0;
  targets[2].active = 0;
  targets[1].active = 0; // all idle: a tie, shared by weight
  assert.deepEqual(counts(Array.from({ length: 5 }, () => b.pick()?.id as string)), { t0: 3, t1: 1, t2: 1 });
});

test('least_conn: ties are shared by weight among the tied targets only', () => {
  const targets = makeTargets(3, 1, 1);
  targets[0].active = 3; // 3/3 = 1
  targets[1].active = 1; // 1/1 = 1 (tied with t0)
  targets[2].active = 4; // 4/1: never picked while the others tie lower
  const b = createBalancer('least_conn', targets);
  assert.deepEqual(counts(Array.from({ length: 8 }, () => b.pick()?.id as string)), { t0: 6, t1: 2 });
});

test('least_conn: under held-open load, active counts settle in proportion to the weights', () => {
  const targets = makeTargets(3, 1);
  const b = createBalancer('least_conn', targets);
  for (let i = 0; i < 40; i++) {
    const t = b.pick();
    assert.ok(t);
    t.active++; // requests that stay open
  }
  assert.deepEqual(targets.map((t) => t.active), [30, 10]);
  targets[0].active -= 6; // six finish on t0: the next six go there
  for (let i = 0; i < 6; i++) {
    const t = b.pick();
    assert.equal(t?.id, 't0', `pick ${i}`);
    if (t) t.active++;
  }
  assert.deepEqual(targets.map((t) => t.active), [30, 10]);
});
