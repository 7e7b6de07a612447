// `portico bench --quick` end to end, as a user runs it (bin/portico.js): the three report files, every standard
// load measured through Portico with its unit, the load generator's own CPU recorded, the bottleneck marks
// consistent with it, the idle-memory series and the plan; and `-c FILE` on the seed config. Figures are never
// asserted (a benchmark is not a test); presence, units and the honesty checks are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LOADS } from '../../bench/lib/catalogue.js';
import type { Recorded } from '../../bench/lib/recorded.js';
import { nativeWsLoad } from '../../bench/lib/native-tools.js';
import { SATURATED_SHARE, type Row } from '../../bench/lib/summary.js';
import { CLI, FIXTURES, ROOT } from '../helpers/paths.js';
import { hasCommand, needPeer } from '../helpers/peers.js';

interface Report extends Recorded {
  summary: Array<{ load: { id: string; unit: string }; rows: Row[] }>;
  plan?: { cores: number; memoryMiBWithHeadroom: number; fdsWithHeadroom: number };
}

/** Runs `portico bench ARGS` to its exit (bounded), keeping stdout and stderr. */
function bench(args: string[], limitMs: number): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'bench', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    // SIGTERM makes the harness stop everything it started; the test then fails on the exit code.
    const timer = setTimeout(() => child.kill('SIGTERM'), limitMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

function peersPresent(t: import('node:test').TestContext): boolean {
  return needPeer(t, 'wrk', hasCommand('wrk', ['-v']) || hasCommand('sh', ['-c', 'command -v wrk']))
    && needPeer(t, 'nginx', hasCommand('nginx', ['-v']))
    && needPeer(t, 'haproxy', hasCommand('haproxy', ['-v']))
    && needPeer(t, 'curl', hasCommand('curl'));
}

test('portico bench --quick writes report.html/.md/.json with every standard load through Portico, nginx and HAProxy, and the plan', { timeout: 300_000 }, async (t) => {
  if (!peersPresent(t)) return;
  const out = mkdtempSync(path.join(os.tmpdir(), 'portico-bench-quick-'));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  const r = await bench(['--quick', '--out', out, '--plan', path.join(ROOT, 'bench', 'fixtures', 'plan-example.yaml')], 280_000);
  assert.equal(r.code, 0, `exit ${r.code}\n${r.out.slice(-3000)}\n${r.err.slice(-2000)}`);
  assert.match(r.out, /expected duration about \d+ min/);
  assert.match(r.err, /^\[1\/\d+\] \S+ .*elapsed, about \d+ s left$/m, 'a progress line per run');
  for (const f of ['report.html', 'report.md', 'report.json']) assert.ok(existsSync(path.join(out, f)), f);

  const rep = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')) as Report;
  assert.ok(rep.conditions.loadAvgBefore.length === 3 && rep.conditions.loadAvgAfter.length === 3, 'load average recorded');
  assert.ok(rep.conditions.cpuModel !== '' && rep.conditions.kernel !== '' && rep.conditions.versions.nginx !== undefined);
  const quickLoads = LOADS.filter((l) => l.fullOnly !== true);
  assert.deepEqual(rep.summary.map((s) => s.load.id), quickLoads.map((l) => l.id));
  for (const s of rep.summary) {
    const portico = s.rows.find((x) => x.target === 'portico');
    assert.ok(portico, `${s.load.id}: a Portico row`);
    assert.ok(!portico.marks.includes('failed'), `${s.load.id}: ${portico.why.join('; ')}`);
    assert.ok((portico.rate ?? 0) > 0 && (portico.proxyCpuUsPerUnit ?? 0) > 0 && (portico.perCore ?? 0) > 0, `${s.load.id}: rate, CPU per unit, per core`);
    const targets = s.rows.map((x) => x.target).sort();
    assert.deepEqual(targets.filter((x) => x !== 'portico-terminate'), ['haproxy', 'nginx', 'portico'], `${s.load.id}: the same load through the peers`);
    // terminated WebSocket exists in this build: a terminating Portico takes the WebSocket message loads only
    const spec = LOADS.find((l) => l.id === s.load.id);
    if (targets.includes('portico-terminate')) assert.ok(spec?.websocket === true && spec.bulk !== true, `${s.load.id}: a terminate row on a WebSocket message load only`);
    for (const row of s.rows) {
      // The bottleneck check: the generator's own CPU is in every row, and a full generator core is marked.
      assert.ok(row.clientCpuPct === undefined || row.clientCpuPct > 0, `${s.load.id} ${row.label}: client CPU recorded`);
      if (row.clientCpuPct !== undefined) assert.equal(row.marks.includes('client-bound'), row.clientCpuPct >= SATURATED_SHARE * 100, `${s.load.id} ${row.label}`);
      if (row.marks.includes('disturbed')) assert.match(row.why.join(' '), /disturbed/);
    }
  }
  // The WebSocket loads run on the native client (g++ and libssl-dev are in CI): named in the conditions, with
  // its latency percentiles in the rows; fan-out goes through every target, the terminating Portico included.
  if (needPeer(t, 'g++ and libssl-dev (native ws-load)', nativeWsLoad().ok)) {
    for (const l of rep.loads.filter((x) => LOADS.find((y) => y.id === x.id)?.generator === 'ws-load')) {
      assert.match(l.generator, /^ws-load \(native C\+\+/, `${l.id}: ${l.generator}`);
    }
    const ws = rep.summary.find((s) => s.load.id === 'wss')?.rows.find((x) => x.target === 'portico');
    assert.ok(ws?.latencyUs !== undefined && ws.latencyUs.p50 > 0, 'wss: latency percentiles from the native client');
    const fan = rep.summary.find((s) => s.load.id === 'fanout');
    assert.equal(fan?.load.unit, 'msg');
    assert.deepEqual(fan?.rows.map((x) => x.target).sort(), ['haproxy', 'nginx', 'portico', 'portico-terminate']);
    for (const row of fan?.rows ?? []) assert.ok(!row.marks.includes('failed') && (row.rate ?? 0) > 0, `fanout ${row.label}: ${row.why.join('; ')}`);
  }
  for (const run of rep.runs.filter((x) => x.ok)) {
    assert.ok(run.processes.some((p) => p.role === 'client' && p.cpuUs > 0), `${run.scenario} ${run.target}: the load generator's CPU`);
    assert.ok(run.processes.some((p) => p.role === 'proxy'), `${run.scenario} ${run.target}: the proxy's CPU`);
  }
  const idle = rep.idle.filter((s) => s.target === 'portico');
  assert.deepEqual(idle.map((s) => s.tls), [false, true]);
  for (const s of idle) {
    assert.equal(s.error, undefined, s.error);
    assert.ok(s.points.length > 0 && s.points[0].fds - s.baseline.fds >= s.points[0].connections, 'at least one descriptor per idle connection');
  }
  assert.ok(rep.plan !== undefined && rep.plan.cores >= 1 && rep.plan.memoryMiBWithHeadroom > 0 && rep.plan.fdsWithHeadroom > 200_000);

  const md = readFileSync(path.join(out, 'report.md'), 'utf8');
  for (const unit of ['req/s', 'conn/s', 'msg/s', 'upgrade/s', 'MiB/s', 'CPU-µs/req', 'KiB per connection']) assert.ok(md.includes(unit), unit);
  assert.match(md, /## Plan\n\n- \*\*\d+ core\(s\)\*\*/);
  const html = readFileSync(path.join(out, 'report.html'), 'utf8');
  assert.ok((html.match(/<svg /g) ?? []).length >= 3);
  assert.doesNotMatch(html, /<script|src=/i);
});

test('portico bench -c FILE measures that config on synthetic backends and says so', { timeout: 120_000 }, async (t) => {
  if (!peersPresent(t)) return;
  const out = mkdtempSync(path.join(os.tmpdir(), 'portico-bench-config-'));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  const seed = path.join(FIXTURES, 'seed', 'seed.yaml');
  const r = await bench(['--quick', '--out', out, '-c', seed, '--only', 'http,wss', '--idle-counts', '0'], 110_000);
  assert.equal(r.code, 0, `exit ${r.code}\n${r.out.slice(-3000)}\n${r.err.slice(-2000)}`);
  const rep = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')) as Report;
  assert.deepEqual(rep.targets.map((x) => x.id), ['portico-user']);
  assert.match(rep.conditions.notes.join('\n'), /rewritten for the run/);
  assert.match(rep.conditions.notes.join('\n'), /upstream tomcat: targets -> the synthetic backend/);
  // seed.yaml's first non-WebSocket route is /Tomcat; its header rule and TLS certificate are the user's own.
  assert.match(rep.conditions.notes.join('\n'), /loads sent to GET \/Tomcat and WebSocket \/wss/);
  for (const s of rep.summary) {
    const row = s.rows[0];
    assert.equal(row.target, 'portico-user');
    assert.ok(!row.marks.includes('failed'), `${s.load.id}: ${row.why.join('; ')}`);
  }
  assert.match(readFileSync(path.join(out, 'report.md'), 'utf8'), /Portico, your config \(seed\.yaml\)/);
});

test('portico bench refuses a bad plan file before running any load', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portico-bench-plan-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'plan.yaml');
  (await import('node:fs')).writeFileSync(file, 'websockets: { clients: 10, message_every: 5 }\n');
  const r = await bench(['--quick', '--out', dir, '--plan', file], 25_000);
  assert.equal(r.code, 1);
  assert.match(r.err, /--plan .*plan\.yaml:\n {2}websockets\.message_every/);
  assert.ok(!existsSync(path.join(dir, 'report.json')));
});
