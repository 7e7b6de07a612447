// Static files and gzip through Portico next to nginx serving the same folder: a 4 KiB file (requests per
// second, 64 keep-alive connections) and a 100 MiB file (throughput, 4 connections), then what gzip costs per
// request (a 64 KiB text file with and without Accept-Encoding: gzip, Portico and nginx `gzip on` at the same
// level, nginx's default 1). Portico runs three ways: its defaults (static_cache on, files up to 64 KiB in memory),
// static_cache.file_size 16KiB (the 64 KiB file with sendfile instead of from memory), and static_cache.entries 0
// (no cache: every request resolves and opens its file). Interleaved rounds, medians, CPU of each server from /proc.
// Not a test: it prints figures.
// Run: `npm run bench:static -- [--rounds 2] [--duration 5]` (under `flock /work/bench.lock` on a shared machine).
import { spawnSync } from 'node:child_process';
import { chmodSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { FIXTURES } from '../lib/paths.js';
import { benchmarkMain, choosePinning, cpuDelta, freePort, pinned, snapshotTree, versionOf, type BenchmarkScope } from '../lib/procs.js';
import { median } from '../lib/stats.js';
import { launchPortico, startNginx } from '../peers/targets.js';

const USAGE = `usage: npm run bench:static -- [options]
  --rounds N      rounds; each runs every load through nginx and Portico once, the order alternating (default 3)
  --duration S    seconds per timed run (default 10)
  --quick         smoke run: defaults --rounds 1 --duration 2 (flags given win)
  --no-pin        do not pin processes to CPUs
  --keep-tmp      keep the temp folder with generated configs and files`;

const a = readArgs(process.argv.slice(2), { rounds: 'string', duration: 'string', quick: 'boolean', 'no-pin': 'boolean', 'keep-tmp': 'boolean' }, USAGE);
const quick = a.has('quick');
const rounds = a.int('rounds', quick ? 1 : 3, 1, 100);
const durationS = a.num('duration', quick ? 2 : 10, 1, 3600);
const pinning = choosePinning(!a.has('no-pin'), os.availableParallelism());
const SERVER_CPU = pinning.enabled ? pinning.proxyCpu : undefined;
const CLIENT_CPU = pinning.enabled ? pinning.clientCpu : undefined;

interface Load {
  readonly id: string;
  readonly path: string;
  readonly connections: number;
  readonly headers: readonly string[];
  readonly bytes: number;
}

const TEXT_LINE = 'static files through Portico: the same bytes nginx sends, measured side by side.\n';

interface Sample {
  rate: number;
  mibPerS: number;
  cpuUsPerReq: number;
}

/** wrk on one URL; the server's CPU (its process tree) over the run. */
function wrk(port: number, load: Load, serverPid: number): Sample {
  const before = snapshotTree(serverPid);
  const args = ['-t1', `-c${load.connections}`, `-d${durationS}s`, '--timeout', '20s', '-s', path.join(FIXTURES, 'wrk-report.lua')];
  for (const h of load.headers) args.push('-H', h);
  args.push(`http://127.0.0.1:${port}${load.path}`);
  const [cmd, argv] = pinned(CLIENT_CPU, 'wrk', args);
  const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout: (durationS + 30) * 1000 });
  const after = snapshotTree(serverPid);
  const line = /^WRK_JSON (\{.*\})$/m.exec(r.stdout ?? '')?.[1];
  if (r.status !== 0 || line === undefined) throw new Error(`wrk failed on ${load.id}: ${(r.stderr ?? '').slice(-300)}`);
  const j = JSON.parse(line) as { requests: number; durationUs: number; bytes: number; errors: { status: number; connect: number; read: number; timeout: number } };
  if (j.errors.status > 0 || j.requests === 0) throw new Error(`${load.id}: ${j.errors.status} error responses, ${j.requests} requests`);
  const cpuUs = cpuDelta(before, after).reduce((n, p) => n + p.cpuUs, 0);
  const secs = j.durationUs / 1e6;
  return { rate: j.requests / secs, mibPerS: j.bytes / secs / 1024 / 1024, cpuUsPerReq: cpuUs / j.requests };
}

/** One GET with curl before any timing: the status and the body length a load expects. */
function check(port: number, load: Load): void {
  const args = ['-sS', '--max-time', '30', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{content_type}'];
  for (const h of load.headers) args.push('-H', h);
  const r = spawnSync('curl', [...args, `http://127.0.0.1:${port}${load.path}`], { encoding: 'utf8', timeout: 60_000 });
  const [code, size] = (r.stdout ?? '').split(' ');
  const compressed = load.headers.some((h) => /gzip/.test(h));
  if (code !== '200' || (compressed ? Number(size) >= load.bytes : Number(size) !== load.bytes)) throw new Error(`check of ${load.id} on port ${port} failed: ${r.stdout} ${r.stderr}`);
}

async function bench(scope: BenchmarkScope): Promise<void> {
  const nginxVersion = versionOf('nginx', ['-v'], true);
  if (nginxVersion === undefined) throw new Error('nginx is not installed: this benchmark compares against it');
  if (versionOf('wrk', ['-v'], true) === undefined) throw new Error('wrk is not installed');
  const root = path.join(scope.tmp, 'html');
  mkdirSync(root, { recursive: true });
  // nginx's workers run as an unprivileged user when it is started as root: they must be able to read the folder
  chmodSync(scope.tmp, 0o755);
  chmodSync(root, 0o755);
  writeFileSync(path.join(root, 'small.bin'), Buffer.alloc(4096, 7));
  const big = Buffer.alloc(1024 * 1024, 3);
  const bigPath = path.join(root, 'big.bin');
  writeFileSync(bigPath, '');
  for (let i = 0; i < 100; i++) writeFileSync(bigPath, big, { flag: 'a' });
  writeFileSync(path.join(root, 'page.txt'), TEXT_LINE.repeat(Math.ceil(65536 / TEXT_LINE.length)).slice(0, 65536));

  const nginxPort = await freePort();
  const nginxDir = path.join(scope.tmp, 'nginx');
  const conf = `worker_processes 1;
pid ${nginxDir}/nginx.pid;
error_log ${nginxDir}/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    types { text/plain txt; application/octet-stream bin; }
    gzip on; gzip_comp_level 1; gzip_min_length 1024; gzip_types text/plain; gzip_vary on;
    client_body_temp_path ${nginxDir}/client_body;
    proxy_temp_path ${nginxDir}/proxy;
    fastcgi_temp_path ${nginxDir}/fastcgi;
    uwsgi_temp_path ${nginxDir}/uwsgi;
    scgi_temp_path ${nginxDir}/scgi;
    server { listen 127.0.0.1:${nginxPort}; root ${root}; etag on; }
}
`;
  const nginx = await startNginx(nginxDir, conf, nginxPort, SERVER_CPU);
  scope.started.push(nginx);
  const portico = async (id: string, cache: string): Promise<{ id: string; port: number; pid: number }> => {
    const port = await freePort();
    const yaml = `workers: 1
listeners:
  - address: 127.0.0.1:${port}
routes:
  - match: { path: / }
    static: { root: ${root} }
    compress: { level: 1, types: [text/plain] }
static_cache: ${cache}
log: { level: warn, access: false }
`;
    const started = await launchPortico(path.join(scope.tmp, id), yaml, [port], SERVER_CPU);
    if (started.proc !== undefined) scope.started.push(started.proc);
    if (started.error !== undefined || started.proc === undefined) throw new Error(`Portico (${id}): ${started.error ?? 'not started'}`);
    return { id, port, pid: started.proc.pid };
  };

  const loads: Load[] = [
    { id: '4 KiB file', path: '/small.bin', connections: 64, headers: [], bytes: 4096 },
    { id: '100 MiB file', path: '/big.bin', connections: 4, headers: [], bytes: 100 * 1024 * 1024 },
    { id: '64 KiB text, identity', path: '/page.txt', connections: 64, headers: [], bytes: 65536 },
    { id: '64 KiB text, gzip', path: '/page.txt', connections: 64, headers: ['Accept-Encoding: gzip'], bytes: 65536 },
  ];
  const servers = [
    { id: 'nginx', port: nginxPort, pid: nginx.pid },
    await portico('portico', '{}'),
    await portico('p-sendfile', '{ file_size: 16KiB }'),
    await portico('p-nocache', '{ entries: 0 }'),
  ];
  /** The 100 MiB file never comes from memory: only nginx and Portico's defaults run it. */
  const runs = (s: { id: string }, l: Load): boolean => l.bytes < 1024 * 1024 || s.id === 'nginx' || s.id === 'portico';
  for (const s of servers) for (const l of loads) if (runs(s, l)) check(s.port, l);

  console.log(`static files: wrk -t1, ${durationS}s per run, ${rounds} round(s); node ${process.version}; ${nginxVersion.trim()} (1 worker, sendfile on, gzip level 1); Portico workers: 1, plain listener, compress level 1; p-sendfile: static_cache.file_size 16KiB; p-nocache: static_cache.entries 0`);
  console.log(`pinning: ${pinning.enabled ? 'servers on CPU 0, wrk on CPU 1' : `none (${pinning.reason})`}; load average at start: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
  const samples = new Map<string, Sample[]>();
  for (let r = 0; r < rounds && !scope.stopped(); r++) {
    for (const l of loads) {
      const order = r % 2 === 0 ? servers : [...servers].reverse();
      for (const s of order) {
        if (!runs(s, l)) continue;
        const x = wrk(s.port, l, s.pid);
        const key = `${l.id}|${s.id}`;
        samples.set(key, [...(samples.get(key) ?? []), x]);
        console.log(`round ${r + 1} ${l.id.padEnd(22)} ${s.id.padEnd(8)} ${Math.round(x.rate).toLocaleString('en-US').padStart(8)} req/s ${x.mibPerS.toFixed(0).padStart(6)} MiB/s ${x.cpuUsPerReq.toFixed(1).padStart(9)} server CPU-µs/req`);
      }
    }
  }
  console.log('\nmedians (each Portico run / nginx):');
  for (const l of loads) {
    const n = samples.get(`${l.id}|nginx`) ?? [];
    if (n.length === 0) continue;
    const nr = median(n.map((x) => x.rate));
    const nc = median(n.map((x) => x.cpuUsPerReq));
    console.log(`  ${l.id.padEnd(22)} nginx      ${Math.round(nr).toLocaleString('en-US').padStart(8)} req/s (${median(n.map((x) => x.mibPerS)).toFixed(0).padStart(5)} MiB/s, ${nc.toFixed(1).padStart(8)} CPU-µs/req)`);
    for (const s of servers.slice(1)) {
      const p = samples.get(`${l.id}|${s.id}`) ?? [];
      if (p.length === 0) continue;
      const pr = median(p.map((x) => x.rate));
      const pc = median(p.map((x) => x.cpuUsPerReq));
      console.log(`  ${''.padEnd(22)} ${s.id.padEnd(10)} ${Math.round(pr).toLocaleString('en-US').padStart(8)} req/s (${median(p.map((x) => x.mibPerS)).toFixed(0).padStart(5)} MiB/s, ${pc.toFixed(1).padStart(8)} CPU-µs/req); ${(pr / nr).toFixed(2)}x nginx's rate, ${(pc / nc).toFixed(2)}x its CPU per request`);
    }
  }
  const cost = (server: string): number => median((samples.get(`64 KiB text, gzip|${server}`) ?? []).map((x) => x.cpuUsPerReq)) - median((samples.get(`64 KiB text, identity|${server}`) ?? []).map((x) => x.cpuUsPerReq));
  console.log(`\ngzip CPU cost per 64 KiB answer (gzip minus identity, server CPU-µs/req): ${servers.map((s) => `${s.id} ${cost(s.id).toFixed(1)}`).join(', ')}`);
  console.log(`load average at end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}

benchmarkMain('static-bench', a.has('keep-tmp'), bench);
