// FdBudget: the per-accept check that keeps FD_RESERVE descriptors free, with a fake count and clock; and the
// raise of RLIMIT_NOFILE as this process sees it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FD_RESERVE, FdBudget, raiseFdLimit } from '../../src/worker/fd-limit.js';

test('FdBudget refuses once an exact count leaves fewer than FD_RESERVE free, and admits again after a recount', () => {
  let open = 100;
  let now = 0;
  let counts = 0;
  const budget = new FdBudget(1000, () => (counts++, open), () => now);
  assert.equal(budget.admit(10), true);
  assert.equal(counts, 1, 'the first accept counts');
  open = 1000 - FD_RESERVE; // filled up by others (pipes, upstreams) while the estimate stayed low
  for (let i = 0; i < 1000 && budget.admit(11); i++) now += 1;
  assert.ok(counts >= 2, 'an estimate near the limit is replaced by a count');
  assert.equal(budget.admit(11), false, 'the count sees the table near full');
  open = 200;
  now += 5;
  assert.equal(budget.admit(12), false, 'near the limit, recounts are at most every 10 ms');
  now += 10;
  assert.equal(budget.admit(13), true, 'descriptors freed: admitted again');
});

test('FdBudget: a refusal by the estimate (two per accept since the last count) is checked by a count, one that the count makes is not', () => {
  // a batch accepted natively before the first is admitted: every socket of it is open (counted), none has its
  // upstream yet; admitted until the count itself leaves only the reserve, never refused for fds nobody uses
  let open = 150;
  let counts = 0;
  const budget = new FdBudget(300, () => (counts++, open), () => 0);
  let admitted = 0;
  for (let i = 0; i < 200; i++) {
    if (!budget.admit(5)) continue;
    admitted++;
    open++;
  }
  assert.equal(admitted, 300 - FD_RESERVE - 150 - 1, `admitted ${admitted}`);
  const before = counts;
  for (let i = 0; i < 100; i++) assert.equal(budget.admit(5), false);
  assert.equal(counts, before, 'refusals at the limit take no count');
});

test('FdBudget without a counter: a descriptor at soft - FD_RESERVE or above is refused; unlimited admits all', () => {
  const budget = new FdBudget(1000, undefined);
  assert.equal(budget.admit(1000 - FD_RESERVE - 1), true);
  assert.equal(budget.admit(1000 - FD_RESERVE), false);
  assert.equal(new FdBudget(-1, () => 1e9).admit(1e6), true);
  assert.equal(new FdBudget(1 << 30, () => assert.fail('no poll() over 2^30 slots')).admit(100), true);
});

test('raiseFdLimit leaves the soft limit at the hard one', () => {
  const r = raiseFdLimit();
  if (r.notRaised === undefined) assert.equal(r.soft, r.hard);
  assert.ok(r.soft === -1 || r.soft > 0);
});
