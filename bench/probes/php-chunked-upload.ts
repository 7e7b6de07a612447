// A chunked 10 MiB multipart upload to PHP through Portico's fastcgi route (body held in an unnamed temp file,
// then sent with CONTENT_LENGTH: handlers/body-buffer.ts) vs nginx `fastcgi_pass` (client_body_temp_path), each
// with its own php-fpm master (same binary and config), temp files on the same file system. curl sends the body
// chunked; PHP's sha256 of the file is checked before timing. Prints per-upload wall time and the proxy's CPU.
// Not a test. Run: `npm run build && node dist/bench/probes/php-chunked-upload.js [--rounds 2] [--uploads 10]`.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { ROOT } from '../lib/paths.js';
import { benchmarkMain, choosePinning, cpuDelta, freePort, pinned, snapshotTree, stopTree, versionOf, type BenchmarkScope } from '../lib/procs.js';
import { median } from '../lib/stats.js';
import { startFpm } from '../peers/php-fpm.js';
import { launchPortico, startNginx } from '../peers/targets.js';

const USAGE = `usage: node dist/bench/probes/php-chunked-upload.js [options]
  --rounds N    rounds; each runs nginx and Portico once, the order alternating (default 2)
  --uploads N   sequential uploads per proxy per round (default 10)
  --mib N       upload size in MiB (default 10)
  --length      send Content-Length instead (streamed by both: the baseline of the buffering cost)
  --no-pin      do not pin processes to CPUs`;

const a = readArgs(process.argv.slice(2), { rounds: 'string', uploads: 'string', mib: 'string', length: 'boolean', 'no-pin': 'boolean' }, USAGE);
const rounds = a.int('rounds', 2, 1, 100);
const uploads = a.int('uploads', 10, 1, 1000);
const mib = a.int('mib', 10, 1, 60);
const framing = a.has('length') ? [] : ['-H', 'Transfer-Encoding: chunked'];
const pinning = choosePinning(!a.has('no-pin'), os.availableParallelism());
const PROXY_CPU = pinning.enabled ? pinning.proxyCpu : undefined;
const CLIENT_CPU = pinning.enabled ? pinning.clientCpu : undefined;
const DOCROOT = path.join(ROOT, 'test', 'fixtures', 'php');

/** One chunked multipart upload with curl: its wall time (s), after checking PHP's sha256 of the file. */
function upload(port: number, file: string, sha: string): number {
  const [cmd, args] = pinned(CLIENT_CPU, 'curl', ['-sS', '--max-time', '60', ...framing, '-F', `file=@${file}`, '-o', '-', '-w', '\n%{http_code} %{time_total}', `http://127.0.0.1:${port}/upload.php`]);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 70_000 });
  const cut = r.stdout.lastIndexOf('\n');
  const [code, time] = r.stdout.slice(cut + 1).split(' ');
  const body = r.stdout.slice(0, cut);
  if (r.status !== 0 || code !== '200' || !body.includes(sha)) throw new Error(`upload on ${port}: ${code} ${r.stderr.trim() || body.slice(0, 200)}`);
  return Number(time);
}

async function bench(scope: BenchmarkScope): Promise<void> {
  // nginx's and FPM's workers run as nobody when started by root: they must reach their folders in here
  chmodSync(scope.tmp, 0o755);
  const data = randomBytes(mib * 1024 * 1024);
  const file = path.join(scope.tmp, 'upload.bin');
  writeFileSync(file, data);
  const sha = createHash('sha256').update(data).digest('hex');
  const fpmOptions = { children: 2, cpus: CLIENT_CPU, ini: { post_max_size: '64M', upload_max_filesize: '64M' } };
  const fpmN = await startFpm(scope, 'fpm-nginx', fpmOptions);
  const fpmP = await startFpm(scope, 'fpm-portico', fpmOptions);
  const nginxDir = path.join(scope.tmp, 'nginx');
  const nginxPort = await freePort();
  const conf = [
    'worker_processes 1; pid nginx.pid; events { worker_connections 1024; }',
    'http {',
    `  access_log off; client_max_body_size 64m; client_body_temp_path ${nginxDir}/body; fastcgi_temp_path tmp_fastcgi; proxy_temp_path tmp_proxy; uwsgi_temp_path tmp_uwsgi; scgi_temp_path tmp_scgi;`,
    `  upstream php { server 127.0.0.1:${fpmN.port}; keepalive 2; }`,
    `  server { listen 127.0.0.1:${nginxPort}; root ${DOCROOT};`,
    '    location ~ \\.php$ { fastcgi_pass php; fastcgi_keep_conn on; include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; }',
    '  }',
    '}',
    '',
  ].join('\n');
  const nginx = await startNginx(nginxDir, conf, nginxPort, PROXY_CPU);
  scope.started.push(nginx);
  const porticoDir = path.join(scope.tmp, 'portico');
  mkdirSync(path.join(porticoDir, 'body'), { recursive: true });
  const porticoPort = await freePort();
  const yaml = [
    'workers: 1',
    `listeners: [{ address: 127.0.0.1:${porticoPort} }]`,
    `upstreams: { php: { targets: [127.0.0.1:${fpmP.port}], max_connections: 2 } }`,
    'routes:',
    `  - { match: { path_regex: '\\.php$' }, fastcgi: { upstream: php, root: ${DOCROOT} } }`,
    `body_buffer: { temp_dir: ${path.join(porticoDir, 'body')} }`,
    'log: { level: warn, access: false }',
    '',
  ].join('\n');
  const portico = await launchPortico(porticoDir, yaml, [porticoPort], PROXY_CPU);
  if (portico.proc !== undefined) scope.started.push(portico.proc);
  if (portico.error !== undefined || portico.proc === undefined) throw new Error(`Portico: ${portico.error ?? 'not started'}`);
  const targets = { nginx: { port: nginxPort, pid: nginx.pid }, portico: { port: porticoPort, pid: portico.proc.pid } };
  try {
    for (const t of Object.values(targets)) upload(t.port, file, sha); // warm-up and check
  } catch (err) {
    const log = spawnSync('tail', ['-5', path.join(nginxDir, 'error.log'), path.join(fpmN.dir, 'fpm.log')], { encoding: 'utf8' }).stdout;
    throw new Error(`${(err as Error).message}\n${log}`);
  }
  console.log(`${a.has('length') ? 'Content-Length' : 'chunked'} ${mib} MiB multipart upload (curl ${framing.join(' ')} -F), ${uploads} sequential uploads per proxy per round, ${rounds} rounds`);
  console.log(`node ${process.version}; ${versionOf('nginx', ['-v'], true)?.trim() ?? 'nginx'} 1 worker; Portico 1 worker; php-fpm pm static 2, one master per proxy; temp files under ${os.tmpdir()}`);
  console.log(`pinning: ${pinning.enabled ? 'proxies on CPU 0, curl and php-fpm on CPU 1' : `none (${pinning.reason})`}; load average at start: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
  const rows = { nginx: [] as Array<{ ms: number; cpuMs: number }>, portico: [] as Array<{ ms: number; cpuMs: number }> };
  for (let r = 0; r < rounds && !scope.stopped(); r++) {
    const order = r % 2 === 0 ? (['nginx', 'portico'] as const) : (['portico', 'nginx'] as const);
    for (const which of order) {
      const t = targets[which];
      const before = snapshotTree(t.pid);
      const times: number[] = [];
      for (let i = 0; i < uploads; i++) times.push(upload(t.port, file, sha));
      const cpuUs = cpuDelta(before, snapshotTree(t.pid)).reduce((n, p) => n + p.cpuUs, 0);
      const row = { ms: median(times) * 1000, cpuMs: cpuUs / 1000 / uploads };
      rows[which].push(row);
      console.log(`round ${r + 1}/${rounds} ${which.padEnd(7)}: median ${row.ms.toFixed(1)} ms per upload, ${row.cpuMs.toFixed(1)} proxy CPU-ms per upload`);
    }
  }
  const m = (w: 'nginx' | 'portico', k: 'ms' | 'cpuMs'): number => median(rows[w].map((x) => x[k]));
  console.log(`\nmedian per upload: nginx ${m('nginx', 'ms').toFixed(1)} ms, ${m('nginx', 'cpuMs').toFixed(1)} CPU-ms; Portico ${m('portico', 'ms').toFixed(1)} ms, ${m('portico', 'cpuMs').toFixed(1)} CPU-ms (Portico/nginx: time ${(m('portico', 'ms') / m('nginx', 'ms')).toFixed(2)}x, CPU ${(m('portico', 'cpuMs') / m('nginx', 'cpuMs')).toFixed(2)}x)`);
  console.log(`load average at end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  await stopTree(fpmN.proc);
  await stopTree(fpmP.proc);
}

benchmarkMain('php-chunked-upload', false, bench);
