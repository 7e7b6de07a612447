// What active health checks cost: HTTP keep-alive through 3 targets with checks off vs on (1 s interval, the
// aggressive end of real settings), two Portico instances side by side, interleaved rounds, medians, CPU per
// request. Not a test: it prints figures. Run: `npm run bench:health -- [--rounds 5] [--duration 10] [--aa]`.
// Needs wrk; the backends are one nginx (3 ports) when installed, else node:http.
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { checkHttp, runWrk, type LoadResult } from '../lib/loads.js';
import { benchmarkMain, choosePinning, freePort, versionOf, type BenchmarkScope } from '../lib/procs.js';
import { HTTP_BODY } from '../lib/shape.js';
import { median } from '../lib/stats.js';
import { launchPortico, startNginxBackends } from '../peers/targets.js';

const USAGE = `usage: npm run bench:health -- [options]
  --rounds N      rounds; each runs checks off and on once, the order alternating (default 5)
  --duration S    seconds per timed run (default 10)
  --quick         smoke run: defaults --rounds 1 --duration 2 (flags given win)
  --aa            both instances without checks: how much two identical instances differ on this machine
  --no-pin        do not pin processes to CPUs
  --keep-tmp      keep the temp folder with generated configs and logs`;

const a = readArgs(process.argv.slice(2), { rounds: 'string', duration: 'string', quick: 'boolean', aa: 'boolean', 'no-pin': 'boolean', 'keep-tmp': 'boolean' }, USAGE);
const quick = a.has('quick');
const rounds = a.int('rounds', quick ? 1 : 5, 1, 100);
const durationS = a.num('duration', quick ? 2 : 10, 1, 3600);
const pinning = choosePinning(!a.has('no-pin'), os.availableParallelism());
const PROXY_CPU = pinning.enabled ? pinning.proxyCpu : undefined;
const CLIENT_CPU = pinning.enabled ? pinning.clientCpu : undefined;

async function backends(scope: BenchmarkScope, servers: http.Server[]): Promise<{ ports: number[]; pids: number[]; label: string }> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const nginx = versionOf('nginx', ['-v'], true);
  if (nginx !== undefined) {
    const p = await startNginxBackends(path.join(scope.tmp, 'nginx'), ports, CLIENT_CPU);
    scope.started.push(p);
    return { ports, pids: [p.pid], label: `${nginx.trim()}, 1 worker, 3 ports` };
  }
  for (const port of ports) {
    const s = http.createServer((_req, res) => res.end(HTTP_BODY));
    servers.push(s);
    await new Promise<void>((resolve) => s.listen(port, '127.0.0.1', resolve));
  }
  return { ports, pids: [process.pid], label: 'node:http in the harness process (nginx not installed)' };
}

async function portico(scope: BenchmarkScope, name: string, ports: number[], health: boolean): Promise<{ port: number; pid: number }> {
  const port = await freePort();
  const healthYaml = health ? `\n    health:\n      active: { type: http, path: /healthz, interval: 1s, timeout: 1s, passes: 2, fails: 3 }` : '';
  const yaml = `workers: 1\nlisteners:\n  - address: 127.0.0.1:${port}\nupstreams:\n  app:\n    targets: [${ports.map((p) => `127.0.0.1:${p}`).join(', ')}]${healthYaml}\nroutes:\n  - proxy: app\nlog: { level: warn, access: false }\n`;
  const started = await launchPortico(path.join(scope.tmp, name), yaml, [port], PROXY_CPU);
  if (started.proc !== undefined) scope.started.push(started.proc);
  if (started.error !== undefined || started.proc === undefined) throw new Error(`Portico (${name}): ${started.error ?? 'not started'}`);
  return { port, pid: started.proc.pid };
}

function proxyCpuUs(r: LoadResult): number {
  return r.cpu.proxy.reduce((n, p) => n + p.cpuUs, 0);
}

async function bench(scope: BenchmarkScope): Promise<void> {
  const servers: http.Server[] = [];
  try {
    const be = await backends(scope, servers);
    const off = await portico(scope, 'checks-off', be.ports, false);
    // --aa: both instances without checks, to see how much two identical instances differ on this machine
    const on = await portico(scope, 'checks-on', be.ports, !a.has('aa'));
    for (const t of [off, on]) checkHttp(t.port);
    console.log(`health-check overhead: HTTP keep-alive GET through 3 targets, Portico 1 worker, wrk -t1 -c64 -d${durationS}s, ${rounds} rounds`);
    console.log(`node ${process.version}; backends: ${be.label}; pinning: ${pinning.enabled ? 'proxies on CPU 0, wrk and backends on CPU 1' : `none (${pinning.reason})`}`);
    console.log('checks on: active http probes of /healthz every 1s per target (passes 2, fails 3), run by the primary\n');
    const rows = { off: [] as Array<{ rate: number; us: number }>, on: [] as Array<{ rate: number; us: number }> };
    for (let r = 0; r < rounds && !scope.stopped(); r++) {
      const order = r % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
      for (const which of order) {
        const t = which === 'off' ? off : on;
        const res = await runWrk(t.port, 64, durationS, { proxy: t.pid, backend: be.pids }, CLIENT_CPU);
        const us = proxyCpuUs(res) / res.count;
        rows[which].push({ rate: res.rate, us });
        console.log(`round ${r + 1}/${rounds} checks ${which.padEnd(3)}: ${Math.round(res.rate).toLocaleString('en-US')} req/s, ${us.toFixed(1)} proxy CPU-µs/req${res.notes.length > 0 ? ` (${res.notes.join('; ')})` : ''}`);
      }
    }
    const offRate = median(rows.off.map((x) => x.rate));
    const onRate = median(rows.on.map((x) => x.rate));
    console.log(`\nmedian req/s: checks off ${Math.round(offRate).toLocaleString('en-US')}, checks on ${Math.round(onRate).toLocaleString('en-US')} (on/off ${(onRate / offRate).toFixed(3)})`);
    console.log(`median proxy CPU-µs/req: off ${median(rows.off.map((x) => x.us)).toFixed(1)}, on ${median(rows.on.map((x) => x.us)).toFixed(1)}`);
    // The machine's speed drifts between rounds more than the settings differ: the paired ratio (the two runs of one
    // round are back to back) is the figure to read.
    const paired = rows.on.map((x, i) => x.rate / rows.off[i].rate);
    console.log(`median of per-round on/off ratios (paired, back-to-back runs): ${median(paired).toFixed(3)} (min ${Math.min(...paired).toFixed(3)}, max ${Math.max(...paired).toFixed(3)})`);
    console.log(`spread of one setting across rounds (max/min req/s): off ${(Math.max(...rows.off.map((x) => x.rate)) / Math.min(...rows.off.map((x) => x.rate))).toFixed(3)}, on ${(Math.max(...rows.on.map((x) => x.rate)) / Math.min(...rows.on.map((x) => x.rate))).toFixed(3)}`);
  } finally {
    for (const s of servers) s.close();
  }
}

benchmarkMain('health-bench', a.has('keep-tmp'), bench);
