// The benchmark's order statistics (bench/lib/stats.ts): every scenario's medians and percentiles come from
// here, so an even-sized set of rounds must give the mean of its two middle values, not one of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { median, percentile } from '../../bench/lib/stats.js';

test('median of an odd-sized set is its middle value, whatever the input order', () => {
  assert.equal(median([7]), 7);
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([10, -5, 4, 100, 0]), 4);
});

test('median of an even-sized set is the mean of the two middle values', () => {
  assert.equal(median([1, 2]), 1.5);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  // Rates of 4 rounds: the upper-middle value alone (60,000) would overstate the median.
  assert.equal(median([40_000, 60_000, 50_000, 70_000]), 55_000);
  assert.equal(median([5, 5, 9, 9]), 7);
});

test('median of an empty set is NaN, and the input is not reordered', () => {
  assert.ok(Number.isNaN(median([])));
  const rounds = [3, 1, 2];
  median(rounds);
  assert.deepEqual(rounds, [3, 1, 2]);
});

test('percentile interpolates between the closest ranks; 0, 50 and 100 are min, median and max', () => {
  const xs = [15, 20, 35, 40, 50];
  assert.equal(percentile(xs, 0), 15);
  assert.equal(percentile(xs, 100), 50);
  assert.equal(percentile(xs, 50), median(xs));
  assert.equal(percentile([1, 2, 3, 4], 50), median([1, 2, 3, 4]));
  assert.equal(percentile(xs, 25), 20);
  assert.equal(percentile(xs, 40), 29);
  // 1..100: p99 sits between 99 and 100.
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.ok(Math.abs(percentile(hundred, 99) - 99.01) < 1e-9);
  assert.equal(percentile([42], 99), 42);
});

test('percentile of an empty set is NaN; a rank outside 0..100 throws', () => {
  assert.ok(Number.isNaN(percentile([], 50)));
  assert.throws(() => percentile([1, 2], 101), RangeError);
  assert.throws(() => percentile([1, 2], -1), RangeError);
  assert.throws(() => percentile([1, 2], NaN), RangeError);
});
