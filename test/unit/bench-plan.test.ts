// The capacity planner of `portico bench --plan` (bench/lib/plan.ts, bench/lib/plan-file.ts): worked examples of
// its arithmetic (the same as README's "Capacity planning"), and the plan file's strict reading.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { messageCostUs, plan, PlanError, type Figures } from '../../bench/lib/plan.js';
import { readPlan } from '../../bench/lib/plan-file.js';
import { ROOT } from '../helpers/paths.js';

const fig = (value: number, unit: string) => ({ value, unit, from: 'worked example' });
const FIGURES: Figures = {
  messageSmallUs: fig(14, 'CPU-µs/msg'), message4kUs: fig(30, 'CPU-µs/msg'), requestUs: fig(40, 'CPU-µs/req'), newConnectionUs: fig(900, 'CPU-µs/conn'),
  bulkUsPerMiB: fig(2000, 'CPU-µs/MiB'), idleKiB: fig(45, 'KiB/conn'), idleFds: fig(2, 'fds/conn'), baseKiB: fig(61_440, 'KiB'), baseFds: fig(40, 'fds'),
};

test('worked example: 200,000 WSS clients every 5 s, 3,000 new TLS conn/s, 20,000 HTTPS req/s, 30% headroom', () => {
  const r = readPlan(readFileSync(path.join(ROOT, 'bench', 'fixtures', 'plan-example.yaml'), 'utf8'));
  assert.ok(r.ok, JSON.stringify(r));
  const p = plan(r.input, FIGURES);
  // 40,000 msg/s x 14 µs = 0.56; 20,000 req/s x 40 µs = 0.8; 3,000 conn/s x 900 µs = 2.7 -> 4.06 busy cores.
  assert.deepEqual(p.lines.map((l) => [l.rate, Number(l.cores.toFixed(6))]), [[40_000, 0.56], [20_000, 0.8], [3_000, 2.7]]);
  assert.equal(Number(p.busyCores.toFixed(6)), 4.06);
  assert.equal(p.cores, 6, '4.06 / 0.7 = 5.8 -> 6 cores');
  // 6 workers x 60 MiB + 200,000 x 45 KiB = 9,368,640 KiB = 9,149.06 MiB; / 0.7 = 13,070.09 MiB.
  assert.equal(Number(p.memoryMiB.toFixed(2)), 9149.06);
  assert.equal(Number(p.memoryMiBWithHeadroom.toFixed(2)), 13070.09);
  // 6 x 40 + 200,000 x 2 = 400,240 descriptors; / 0.7 -> 571,772.
  assert.equal(p.fds, 400_240);
  assert.equal(p.fdsWithHeadroom, 571_772);
  assert.equal(p.openConnections, 200_000);
  assert.match(p.assumptions.join('\n'), /headroom 30%/);
  assert.equal(p.lines[0].figure.from, 'worked example; worked example; linear in message size');
});

test('message cost is linear in size through the 32 B and 4 KiB figures, never below the small one', () => {
  assert.equal(messageCostUs(32, 14, 30), 14);
  assert.equal(messageCostUs(4096, 14, 30), 30);
  assert.equal(messageCostUs(2064, 14, 30), 22);
  assert.equal(messageCostUs(8, 14, 30), 14);
  assert.equal(messageCostUs(8160, 14, 30), 46);
  // A large message measured as cheap as a small one (noise) costs the small figure, not less.
  assert.equal(messageCostUs(4096, 14, 12), 14);
});

test('a load that fills exactly the usable share of whole cores needs no extra core; a small one still gets one', () => {
  const full = plan({ headroom: 0.5, tls: true, httpRequestsPerSecond: 25_000 }, FIGURES);
  assert.equal(full.busyCores, 1);
  assert.equal(full.cores, 2);
  const small = plan({ headroom: 0, tls: true, httpRequestsPerSecond: 100 }, FIGURES);
  assert.equal(small.cores, 1);
  assert.equal(small.memoryMiB, 60);
  assert.equal(small.fds, 40);
});

test('a figure the run did not measure is a clear error, never a guess', () => {
  const { newConnectionUs: _, ...without } = FIGURES;
  assert.throws(() => plan({ headroom: 0.3, tls: true, newConnectionsPerSecond: 10 }, without), (err: unknown) => {
    assert.ok(err instanceof PlanError);
    assert.equal(err.code, 'PLAN_FIGURE_MISSING');
    assert.match(err.message, /new TLS connection figure/);
    return true;
  });
});

test('the plan file is read strictly: unknown keys, bare numbers for durations and impossible shares are refused with their path', () => {
  const bad = readPlan('websocket: { clients: 10 }\nheadroom: 130%\n');
  assert.equal(bad.ok, false);
  assert.match(JSON.stringify(bad), /websocket/);
  const unit = readPlan('websockets: { clients: 10, message_every: "5" }\n');
  assert.ok(!unit.ok);
  assert.match(unit.errors.join('\n'), /websockets\.message_every: a duration above 0/);
  const empty = readPlan('headroom: 10%\n');
  assert.ok(!empty.ok);
  assert.match(empty.errors.join('\n'), /names no traffic/);
  const share = readPlan('headroom: 0.2\nhttp_requests_per_second: 5\ntls: false\n');
  assert.ok(share.ok);
  assert.equal(share.input.headroom, 0.2);
  assert.equal(share.input.tls, false);
  const neg = readPlan('http_requests_per_second: -5\n');
  assert.ok(!neg.ok);
  assert.match(neg.errors.join('\n'), /http_requests_per_second/);
});
