// The report generator of `portico bench` (bench/lib/summary.ts, bench/lib/report-files.ts) over recorded rounds
// (bench/fixtures/recorded-rounds.json, written by hand): disturbed rounds stay out of the medians, a row with only
// disturbed rounds is marked so, failed and client-bound rows say why, and the three files carry it all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Recorded } from '../../bench/lib/recorded.js';
import { renderReport } from '../../bench/lib/report-files.js';
import { idleCost, summarizeRecorded, type Row } from '../../bench/lib/summary.js';
import { ROOT } from '../helpers/paths.js';

const rec = JSON.parse(readFileSync(path.join(ROOT, 'bench', 'fixtures', 'recorded-rounds.json'), 'utf8')) as Recorded;

function row(load: string, target: string): Row {
  const r = summarizeRecorded(rec).find((l) => l.load.id === load)?.rows.find((x) => x.target === target);
  assert.ok(r, `row ${load} ${target}`);
  return r;
}

test('a disturbed round is left out of the medians, and counted', () => {
  const r = row('https', 'portico');
  // Clean rounds: 8000 req/s at 80 µs, 9000 at 70 µs; the disturbed 4000 at 160 µs is out.
  assert.equal(r.rate, 8500);
  assert.equal(r.proxyCpuUsPerUnit, 75);
  assert.equal(r.used, 2);
  assert.equal(r.disturbed, 1);
  assert.deepEqual(r.marks, []);
  assert.match(r.why.join(' '), /1 disturbed round\(s\) left out/);
  assert.equal(r.perCore, 1e6 / 75);
  assert.deepEqual(r.latencyUs, { p50: 1400, p90: 2400, p99: 4750 });
});

test('ratios against nginx use the medians of both rows', () => {
  const r = row('https', 'portico');
  assert.equal(row('https', 'nginx').rate, 11000);
  assert.equal(r.vsNginx, 8500 / 11000);
  assert.equal(r.cpuVsNginx, 50 / 75);
});

test('a row whose every round was disturbed keeps its figures but is marked disturbed', () => {
  const r = row('wss', 'nginx');
  assert.deepEqual(r.marks, ['disturbed']);
  assert.equal(r.rate, 21000);
  assert.equal(r.used, 3);
  assert.match(r.why[0], /every round was disturbed .* 60% of a core/);
});

test('a saturated load generator marks the row client-bound; a failed round marks it partial', () => {
  const r = row('wss', 'portico');
  assert.deepEqual(r.marks, ['partial', 'client-bound']);
  assert.equal(r.failed, 1);
  assert.equal(r.rate, 25500);
  assert.match(r.why.join(' '), /ECONNREFUSED/);
  assert.match(r.why.join(' '), /load generator used 96% of its core/);
});

test('a load that never ran is marked failed with its reason, without figures', () => {
  const r = row('ws-upgrade', 'portico');
  assert.deepEqual(r.marks, ['failed']);
  assert.equal(r.rate, undefined);
  assert.match(r.why[0], /upgrade answered 502/);
});

test('idle cost is the slope from rest to the largest count held', () => {
  assert.deepEqual(idleCost(rec.idle[0]), { kibPerConn: 45, fdsPerConn: 2, connections: 1000 });
  assert.equal(idleCost(rec.idle[1]), undefined);
});

test('report.md has the conditions, the marks, units and every load table', () => {
  const { md } = renderReport(rec);
  for (const s of ['load average (1 5 15 min): 1.50 1.20 1.00 before, 2.50 1.80 1.20 after', 'Fixture CPU', 'nginx 1.22.1', '1 of 15 rounds were left out']) {
    assert.ok(md.includes(s), s);
  }
  assert.match(md, /\| req\/s \(median\) \|/);
  assert.match(md, /\| msg\/s \(median\) \|/);
  assert.match(md, /proxy CPU-µs\/upgrade/);
  assert.match(md, /\| Portico \(1 worker\) \| 8,500 \| 8,000\.\.9,000 \|/);
  assert.match(md, /partial, client-bound/);
  assert.match(md, /\| 1\.4 \/ 2\.4 \/ 4\.75 ms|1\.40 \/ 2\.40 \/ 4\.75 ms/);
  assert.match(md, /45\.0 \| 2\.00 \| 23,302 \|/, 'idle table: KiB and fds per connection, connections per GiB');
});

test('report.html is self-contained: inline SVG charts, no scripts, no outside resources', () => {
  const { html } = renderReport(rec);
  assert.ok(html.startsWith('<!doctype html>'));
  assert.ok((html.match(/<svg /g) ?? []).length >= 3, 'throughput, CPU per unit, latency, memory charts');
  assert.match(html, /Memory vs idle WebSocket connections/);
  assert.match(html, /CPU per unit of work, each proxy/);
  assert.match(html, /Latency percentiles/);
  assert.doesNotMatch(html, /<script|<link|src=|@import|url\(/i);
  // Text from the recorded data is escaped.
  assert.match(html, /ws-load failed \(code 2\)/);
});

test('report.json holds every raw round, the summary and the conditions', () => {
  const back = JSON.parse(renderReport(rec).json) as Recorded & { summary: Array<{ rows: Row[] }> };
  assert.equal(back.runs.length, rec.runs.length);
  assert.deepEqual(back.conditions, rec.conditions);
  assert.equal(back.summary.length, 3);
  assert.equal(back.summary[0].rows[1].rate, 8500);
});
