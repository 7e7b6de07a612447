// core/histogram.ts: values land in the first bucket whose bound holds them (Prometheus `le`), the text is
// cumulative with +Inf, workers' snapshots sum series by series, and label sets past MAX_SERIES fold into one
// `other` series instead of growing the scrape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Histogram, MAX_SERIES, isHistogramSnapshot, renderHistogram, sumHistograms } from '../../src/core/histogram.js';
import { labels } from '../../src/core/metrics.js';

test('observe: a value on a bound counts in that bucket (le); above the last bound in +Inf; sum and count', () => {
  const h = new Histogram([0.1, 1], ['route', 'class']);
  for (const v of [0.05, 0.1, 0.5, 1, 3]) h.observe('app', '2xx', v);
  const s = h.snapshot()['app\u00002xx'];
  assert.deepEqual(s.labels, { route: 'app', class: '2xx' });
  assert.deepEqual(s.buckets, [2, 2, 1]);
  assert.equal(s.count, 5);
  assert.ok(Math.abs(s.sum - 4.65) < 1e-9);
  assert.ok(isHistogramSnapshot(h.snapshot()));
  const text = renderHistogram('x_seconds', 'help', [0.1, 1], h.snapshot(), labels);
  assert.deepEqual(text, [
    '# HELP x_seconds help',
    '# TYPE x_seconds histogram',
    'x_seconds_bucket{route="app",class="2xx",le="0.1"} 2',
    'x_seconds_bucket{route="app",class="2xx",le="1"} 4',
    'x_seconds_bucket{route="app",class="2xx",le="+Inf"} 5',
    `x_seconds_sum{route="app",class="2xx"} ${s.sum}`,
    'x_seconds_count{route="app",class="2xx"} 5',
  ]);
});

test('snapshots of two workers sum per series; a series only one has is kept', () => {
  const a = new Histogram([1], ['upstream', 'target']);
  const b = new Histogram([1], ['upstream', 'target']);
  a.observe('app', 't1', 0.5);
  b.observe('app', 't1', 2);
  b.observe('app', 't2', 0.5);
  const sum = sumHistograms(a.snapshot(), b.snapshot());
  assert.deepEqual(sum['app\u0000t1'].buckets, [1, 1]);
  assert.equal(sum['app\u0000t1'].count, 2);
  assert.deepEqual(sum['app\u0000t2'].buckets, [1, 0]);
});

test('label sets past MAX_SERIES fold into one "other" series: a scrape stays bounded', () => {
  const h = new Histogram([1], ['upstream', 'target']);
  for (let i = 0; i < MAX_SERIES + 100; i++) h.observe('app', `10.0.${i >> 8}.${i & 255}:80`, 0.5);
  const snap = h.snapshot();
  assert.equal(Object.keys(snap).length, MAX_SERIES + 1);
  assert.equal(snap['other\u0000other'].count, 100);
});
