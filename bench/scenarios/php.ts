// PHP "hello" through Portico's fastcgi route vs nginx `fastcgi_pass` to the same php-fpm setup: req/s and the
// proxy's CPU per request, interleaved rounds, medians. Both proxies keep FastCGI connections alive (nginx
// `fastcgi_keep_conn on` + upstream `keepalive`; Portico FCGI_KEEP_CONN, max_connections = the FPM children).
// Each proxy has its own php-fpm master, same binary and config: an FPM child serves one connection for as long
// as it stays open, so with one shared FPM the idle connections kept by the proxy measured before could hold the
// children the other one needs (seen: Portico's requests waiting in FPM's listen queue behind nginx's 4 idle ones).
// Same work on both sides: each proxy may have every wrk connection's request at FPM at once (php-fpm children =
// wrk connections by default). nginx opens an FPM connection per request in flight whatever `keepalive` says, and
// an FPM child serves one kept connection until it closes, so with fewer children nginx's extra connections wait
// in php-fpm's accept queue (28 of 32 with 4 children) while Portico queues its requests at max_connections: two
// different loads. Each round prints the FPM connections the proxy had open and those in FPM's accept queue.
// Not a test: it prints figures. Run: `npm run bench:php -- [--rounds 3] [--duration 5] [--quick]`. Needs wrk,
// curl, nginx and php-fpm.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { runWrk, type LoadResult } from '../lib/loads.js';
import { ROOT } from '../lib/paths.js';
import { benchmarkMain, choosePinning, freePort, pinned, stopTree, versionOf, type BenchmarkScope } from '../lib/procs.js';
import { median } from '../lib/stats.js';
import { startFpm } from '../peers/php-fpm.js';
import { launchPortico, startNginx } from '../peers/targets.js';

const USAGE = `usage: npm run bench:php -- [options]
  --rounds N      rounds; each runs nginx and Portico once, the order alternating (default 3)
  --duration S    seconds per timed run (default 5)
  --warmup S      seconds of load on each proxy before the rounds (default 3): JIT, FPM workers, pooled
                  connections (Portico's worker spends 2-3x its steady CPU per request on its first few thousand)
  --connections N wrk connections (default 32)
  --children N    php-fpm workers (pm static) = FastCGI connections each proxy keeps (default: --connections;
                  fewer, and nginx's extra connections wait in FPM's accept queue while Portico queues)
  --route-path P  Portico's route matches \`path: P\` (exact) instead of \`path_regex: '\\.php$'\` (the addon's route
                  table leaves regex classes to JS: PORTICO_NATIVE_EXCHANGE=1 needs this until it learns literal ones)
  --quick         smoke run: defaults --rounds 1 --duration 2 (flags given win)
  --no-pin        do not pin processes to CPUs
  --keep-tmp      keep the temp folder with generated configs and logs`;

const a = readArgs(process.argv.slice(2), { rounds: 'string', duration: 'string', warmup: 'string', connections: 'string', children: 'string', 'route-path': 'string', quick: 'boolean', 'no-pin': 'boolean', 'keep-tmp': 'boolean' }, USAGE);
const quick = a.has('quick');
const rounds = a.int('rounds', quick ? 1 : 3, 1, 100);
const durationS = a.num('duration', quick ? 2 : 5, 1, 3600);
const warmupS = a.num('warmup', quick ? 1 : 3, 1, 600);
const connections = a.int('connections', 32, 1, 10_000);
const children = a.int('children', connections, 1, 256);
const routePath = a.str('route-path', '') || undefined;
const pinning = choosePinning(!a.has('no-pin'), os.availableParallelism());
const PROXY_CPU = pinning.enabled ? pinning.proxyCpu : undefined;
const CLIENT_CPU = pinning.enabled ? pinning.clientCpu : undefined;
const DOCROOT = path.join(ROOT, 'test', 'fixtures', 'php');
const SCRIPT = '/index.php';
const BODY = 'hello from php\n';

function nginxConf(port: number, fpmPort: number): string {
  return [
    'worker_processes 1; pid nginx.pid; events { worker_connections 4096; }',
    'http {',
    '  access_log off; client_body_temp_path tmp_body; fastcgi_temp_path tmp_fastcgi; proxy_temp_path tmp_proxy; uwsgi_temp_path tmp_uwsgi; scgi_temp_path tmp_scgi;',
    `  upstream php { server 127.0.0.1:${fpmPort}; keepalive ${children}; }`,
    `  server { listen 127.0.0.1:${port}; root ${DOCROOT};`,
    '    location ~ \\.php$ { fastcgi_pass php; fastcgi_keep_conn on; fastcgi_index index.php; include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; }',
    '  }',
    '}',
    '',
  ].join('\n');
}

/** One GET through the proxy with curl: 200 and the script's body, before anything is timed. */
function check(port: number): void {
  const r = spawnSync('curl', ['-sS', '--max-time', '5', '-o', '-', '-w', '\n%{http_code}', `http://127.0.0.1:${port}${SCRIPT}`], { encoding: 'utf8', timeout: 10_000 });
  const cut = r.stdout.lastIndexOf('\n');
  if (r.status !== 0 || r.stdout.slice(cut + 1) !== '200' || r.stdout.slice(0, cut) !== BODY) throw new Error(`GET ${SCRIPT} on ${port}: ${r.stderr.trim() || JSON.stringify(r.stdout.slice(0, 200))}`);
}

/**
 * CPU 1's side (php-fpm and wrk, pinned there): its CPU per request, and how busy it kept the CPU. Near 100 %
 * the rate is php-fpm's and wrk's to give, whatever the proxy; well below it, the proxy's turnaround (the time a
 * FastCGI connection waits for its next request) sets it.
 */
function backendSide(r: LoadResult): { fpmUs: number; wrkUs: number; busy: number } {
  const fpm = r.cpu.backend.reduce((n, p) => n + p.cpuUs, 0);
  const wrk = r.cpu.client.reduce((n, p) => n + p.cpuUs, 0);
  return { fpmUs: fpm / r.count, wrkUs: wrk / r.count, busy: (fpm + wrk) / (r.cpu.wallMs * 1000) };
}

/**
 * The proxy's FastCGI connections to FPM on `fpmPort` now: open (established, the proxy's side) and waiting in
 * php-fpm's accept queue (the listen socket's Recv-Q). Read with `ss`; undefined when it cannot be run.
 */
function fpmConnections(fpmPort: number): { open: number; queued: number } | undefined {
  const est = spawnSync('ss', ['-Htn', 'state', 'established', 'dst', `127.0.0.1:${fpmPort}`], { encoding: 'utf8', timeout: 5_000 });
  const lis = spawnSync('ss', ['-Hltn', 'src', `127.0.0.1:${fpmPort}`], { encoding: 'utf8', timeout: 5_000 });
  if (est.status !== 0 || lis.status !== 0) return undefined;
  const open = est.stdout.split('\n').filter((l) => l.trim() !== '').length;
  const queued = Number(lis.stdout.trim().split(/\s+/)[1] ?? NaN);
  return Number.isFinite(queued) ? { open, queued } : undefined;
}

/** Runs `load`, reading fpmConnections(fpmPort) half-way through it. */
async function withConnectionSample<T>(fpmPort: number, load: Promise<T>): Promise<{ result: T; conns: ReturnType<typeof fpmConnections> }> {
  let conns: ReturnType<typeof fpmConnections>;
  const timer = setTimeout(() => (conns = fpmConnections(fpmPort)), (durationS * 1000) / 2);
  try {
    return { result: await load, conns };
  } finally {
    clearTimeout(timer);
  }
}

function proxyCpuUs(r: LoadResult): number {
  return r.cpu.proxy.reduce((n, p) => n + p.cpuUs, 0);
}

/** The kernel's part of proxyCpuUs: the sends and reads cost each proxy alike, the gap is in user time. */
function proxySysUs(r: LoadResult): number {
  return r.cpu.proxy.reduce((n, p) => n + p.sysUs, 0);
}

async function bench(scope: BenchmarkScope): Promise<void> {
  // php-fpm is the backend: pinned with the client
  const fpm = await startFpm(scope, 'fpm-nginx', { children, cpus: CLIENT_CPU });
  const fpmP = await startFpm(scope, 'fpm-portico', { children, cpus: CLIENT_CPU });
  const nginxPort = await freePort();
  const nginx = await startNginx(path.join(scope.tmp, 'nginx'), nginxConf(nginxPort, fpm.port), nginxPort, PROXY_CPU);
  scope.started.push(nginx);
  const porticoPort = await freePort();
  const yaml = [
    'workers: 1',
    `listeners: [{ address: 127.0.0.1:${porticoPort} }]`,
    'upstreams:',
    `  php: { targets: [127.0.0.1:${fpmP.port}], max_connections: ${children}, keepalive: { max_idle: ${children} }, queue: { size: 4096, timeout: 30s } }`,
    'routes:',
    routePath === undefined ? `  - match: { path_regex: '\\.php$' }` : `  - match: { path: ${routePath} }`,
    `    fastcgi: { upstream: php, root: ${DOCROOT}, index: index.php }`,
    'log: { level: warn, access: false }',
    'timeouts: { shutdown_grace: 2s }',
    '',
  ].join('\n');
  const portico = await launchPortico(path.join(scope.tmp, 'portico'), yaml, [porticoPort], PROXY_CPU);
  if (portico.proc !== undefined) scope.started.push(portico.proc);
  if (portico.error !== undefined || portico.proc === undefined) throw new Error(`Portico: ${portico.error ?? 'not started'}`);
  check(nginxPort);
  check(porticoPort);
  const targets = { nginx: { port: nginxPort, pid: nginx.pid, fpm: fpm.proc.pid, fpmPort: fpm.port }, portico: { port: porticoPort, pid: portico.proc.pid, fpm: fpmP.proc.pid, fpmPort: fpmP.port } };
  console.log(`PHP hello (${SCRIPT}, ${BODY.length}-byte body) through nginx fastcgi_pass vs Portico fastcgi, wrk -t1 -c${connections} -d${durationS}s, ${rounds} rounds after ${warmupS} s of warm-up each`);
  console.log(`node ${process.version}; ${versionOf('nginx', ['-v'], true)?.trim() ?? 'nginx'} 1 worker; php-fpm: ${fpm.label}, one master per proxy; Portico 1 worker`);
  console.log(`pinning: ${pinning.enabled ? 'proxies on CPU 0, wrk and php-fpm on CPU 1' : `none (${pinning.reason})`}; load average at start: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
  const rows = { nginx: [] as Array<{ rate: number; us: number; sys: number }>, portico: [] as Array<{ rate: number; us: number; sys: number }> };
  // warm-up: JIT, FPM workers, pooled connections (a 1 s warm-up left Portico's first round in its JIT warm-up
  // when the machine was loaded and rates were low)
  for (const t of Object.values(targets)) await runWrk(t.port, connections, warmupS, { proxy: t.pid, backend: [t.fpm] }, CLIENT_CPU, { path: SCRIPT });
  for (let r = 0; r < rounds && !scope.stopped(); r++) {
    const order = r % 2 === 0 ? (['nginx', 'portico'] as const) : (['portico', 'nginx'] as const);
    for (const which of order) {
      const t = targets[which];
      const { result: res, conns } = await withConnectionSample(t.fpmPort, runWrk(t.port, connections, durationS, { proxy: t.pid, backend: [t.fpm] }, CLIENT_CPU, { path: SCRIPT }));
      const fpmConns = conns === undefined ? 'FPM connections unknown (ss)' : `${conns.open} FPM connections open, ${conns.queued} in FPM's accept queue`;
      const us = proxyCpuUs(res) / res.count;
      const sys = proxySysUs(res) / res.count;
      rows[which].push({ rate: res.rate, us, sys });
      const b = backendSide(res);
      console.log(`round ${r + 1}/${rounds} ${which.padEnd(7)}: ${Math.round(res.rate).toLocaleString('en-US')} req/s, ${us.toFixed(1)} proxy CPU-µs/req (user ${(us - sys).toFixed(1)}, sys ${sys.toFixed(1)}), php-fpm ${b.fpmUs.toFixed(1)} + wrk ${b.wrkUs.toFixed(1)} CPU-µs/req (${Math.round(b.busy * 100)} % of a CPU), ${fpmConns}, ${res.info.join(', ')}${res.notes.length > 0 ? ` (${res.notes.join('; ')})` : ''}`);
    }
  }
  const n = median(rows.nginx.map((x) => x.rate));
  const p = median(rows.portico.map((x) => x.rate));
  const nUs = median(rows.nginx.map((x) => x.us));
  const pUs = median(rows.portico.map((x) => x.us));
  console.log(`\nmedian req/s: nginx ${Math.round(n).toLocaleString('en-US')}, Portico ${Math.round(p).toLocaleString('en-US')} (Portico/nginx ${(p / n).toFixed(2)}x)`);
  console.log(`median proxy CPU-µs/req: nginx ${nUs.toFixed(1)}, Portico ${pUs.toFixed(1)} (Portico/nginx ${(pUs / nUs).toFixed(2)}x)`);
  const user = (xs: Array<{ us: number; sys: number }>): number => median(xs.map((x) => x.us - x.sys));
  const sys = (xs: Array<{ us: number; sys: number }>): number => median(xs.map((x) => x.sys));
  console.log(`median proxy user / sys CPU-µs/req: nginx ${user(rows.nginx).toFixed(1)} / ${sys(rows.nginx).toFixed(1)}, Portico ${user(rows.portico).toFixed(1)} / ${sys(rows.portico).toFixed(1)}`);
  const paired = rows.portico.map((x, i) => x.rate / rows.nginx[i].rate);
  console.log(`per-round Portico/nginx req/s: ${paired.map((x) => x.toFixed(2)).join(', ')}; load average at end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  await stopTree(fpm.proc);
  await stopTree(fpmP.proc);
}

benchmarkMain('php-bench', a.has('keep-tmp'), bench);
