// What active health checks cost: HTTP keep-alive through 3 targets with checks off vs on (1 s interval, the
// aggressive end of real settings), two Portico instances side by side, interleaved rounds, medians, CPU per
// request. Not a test: it prints figures. Run: `npm run build && node dist/bench/e2e/health-overhead.js
// [--rounds 5] [--duration 10]`. Needs wrk; the backends are one nginx (3 ports) when installed, else node:http.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { checkHttp, runWrk, type LoadResult } from './loads.js';
import { freePort, pinned, spawnProcess, stopTree, versionOf, waitForPort, type Spawned } from './procs.js';
import { HTTP_BODY } from './shape.js';
import { ROOT } from './targets.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, duration: { type: 'string', default: '10' }, aa: { type: 'boolean', default: false } } });
const rounds = Number(values.rounds);
const durationS = Number(values.duration);
const pin = cpus().length >= 2;
const PROXY_CPU = pin ? '0' : undefined;
const CLIENT_CPU = pin ? '1' : undefined;

const dir = mkdtempSync(path.join(tmpdir(), 'portico-health-bench-'));
const started: Spawned[] = [];
const servers: http.Server[] = [];

async function backends(): Promise<{ ports: number[]; pids: number[]; label: string }> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const nginx = versionOf('nginx', ['-v'], true);
  if (nginx !== undefined) {
    const conf = path.join(dir, 'nginx.conf');
    const servers = ports.map((p) => `server { listen 127.0.0.1:${p}; location / { return 200 ${JSON.stringify(HTTP_BODY)}; } }`).join('\n  ');
    writeFileSync(
      conf,
      `worker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n  client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;\n  ${servers}\n}\n`,
    );
    const [cmd, args] = pinned(CLIENT_CPU, 'nginx', ['-p', dir, '-c', conf, '-g', 'daemon off;']);
    const p = spawnProcess(cmd, args);
    started.push(p);
    for (const port of ports) await waitForPort('127.0.0.1', port, 10_000, p);
    return { ports, pids: [p.pid], label: `${nginx.trim()}, 1 worker, 3 ports` };
  }
  for (const port of ports) {
    const s = http.createServer((_req, res) => res.end(HTTP_BODY));
    servers.push(s);
    await new Promise<void>((resolve) => s.listen(port, '127.0.0.1', resolve));
  }
  return { ports, pids: [process.pid], label: 'node:http in the harness process (nginx not installed)' };
}

async function portico(name: string, ports: number[], health: boolean): Promise<{ port: number; proc: Spawned }> {
  const port = await freePort();
  const file = path.join(dir, `${name}.yaml`);
  const healthYaml = health ? `\n    health:\n      active: { type: http, path: /healthz, interval: 1s, timeout: 1s, passes: 2, fails: 3 }` : '';
  writeFileSync(
    file,
    `workers: 1\nlisteners:\n  - address: 127.0.0.1:${port}\nupstreams:\n  app:\n    targets: [${ports.map((p) => `127.0.0.1:${p}`).join(', ')}]${healthYaml}\nroutes:\n  - proxy: app\nlog: { level: warn, access: false }\n`,
  );
  const [cmd, args] = pinned(PROXY_CPU, process.execPath, [path.join(ROOT, 'bin', 'portico.js'), 'start', '-c', file]);
  const proc = spawnProcess(cmd, args);
  started.push(proc);
  await waitForPort('127.0.0.1', port, 15_000, proc);
  return { port, proc };
}

function proxyCpuUs(r: LoadResult): number {
  return r.cpu.proxy.reduce((n, p) => n + p.cpuUs, 0);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

try {
  const be = await backends();
  const off = await portico('checks-off', be.ports, false);
  // --aa: both instances without checks, to see how much two identical instances differ on this machine
  const on = await portico('checks-on', be.ports, !values.aa);
  for (const t of [off, on]) checkHttp(t.port);
  console.log(`health-check overhead: HTTP keep-alive GET through 3 targets, Portico 1 worker, wrk -t1 -c64 -d${durationS}s, ${rounds} rounds`);
  console.log(`node ${process.version}; backends: ${be.label}; pinning: ${pin ? 'proxies on CPU 0, wrk and backends on CPU 1' : 'none'}`);
  console.log('checks on: active http probes of /healthz every 1s per target (passes 2, fails 3), run by the primary\n');
  const rows = { off: [] as Array<{ rate: number; us: number }>, on: [] as Array<{ rate: number; us: number }> };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
    for (const which of order) {
      const t = which === 'off' ? off : on;
      const res = await runWrk(t.port, 64, durationS, { proxy: t.proc.pid, backend: be.pids }, CLIENT_CPU);
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
  for (const p of started.reverse()) await stopTree(p);
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
}
