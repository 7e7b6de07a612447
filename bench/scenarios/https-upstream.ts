// `npm run bench:https-upstream`: HTTPS to upstreams. Keep-alive HTTP GETs through nginx (1 worker), HAProxy
// (1 thread) and Portico (1 worker) to one nginx backend, once over plain HTTP (`/`, the baseline) and once over
// TLS (`/tls/`): nginx `proxy_pass https://` with proxy_ssl_verify and proxy_ssl_session_reuse, HAProxy `ssl
// verify required`, Portico `upstreams.NAME.tls` (verification on by default); every proxy keeps its upstream
// connections alive. Same backend, certificate and CA for all, interleaved rounds, medians, proxy CPU per
// request. It never asserts a speed; see bench/README.md.
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { checkHttp, runWrk, type Watch } from '../lib/loads.js';
import { ROOT } from '../lib/paths.js';
import { benchmarkMain, choosePinning, freePort, hasProc, versionOf, type BenchmarkScope, type Pinning } from '../lib/procs.js';
import { formatTable, type Scenario } from '../lib/report.js';
import { caveats, runPlan } from '../lib/rounds.js';
import type { TargetId } from '../lib/shape.js';
import { launchHaproxy, launchPortico, porticoRevision, startNginx, startNginxBackends, type Target } from '../peers/targets.js';

/** The test certificate: its own CA, names localhost and 127.0.0.1 (test/fixtures/tls/make-cert.sh). */
const CERT = path.join(ROOT, 'test', 'fixtures', 'tls', 'localhost.crt');
const KEY = path.join(ROOT, 'test', 'fixtures', 'tls', 'localhost.key');
/** Requests under this prefix go to the TLS upstream; the rest to the plain one. */
const TLS_PATH = '/tls/';

const USAGE = `usage: npm run bench:https-upstream -- [--duration S] [--rounds N] [--warmup S] [--connections N] [--no-pin] [--targets LIST]
  targets: nginx,haproxy,portico (default: all installed)`;

/** 'http': plain upstream (the baseline); 'http-tls-upstream': the same request to the same backend over TLS. */
type Load = Extract<Scenario, 'http' | 'http-tls-upstream'>;

interface Options {
  durationS: number;
  rounds: number;
  warmupS: number;
  connections: number;
  targets: TargetId[] | undefined;
}

function main(): void {
  const a = readArgs(process.argv.slice(2), { duration: 'string', rounds: 'string', warmup: 'string', connections: 'string', 'no-pin': 'boolean', targets: 'string' }, USAGE);
  const o: Options = {
    durationS: a.num('duration', 5, 1, 3600),
    rounds: Math.round(a.num('rounds', 2, 1, 100)),
    warmupS: a.num('warmup', 1, 0, 600),
    connections: Math.round(a.num('connections', 64, 1, 10_000)),
    targets: a.list<TargetId>('targets', ['nginx', 'haproxy', 'portico']),
  };
  const pin = !a.has('no-pin');
  if (!hasProc) throw new Error('this benchmark reads CPU time from /proc: run it on Linux');
  const nginx = /nginx\/(\S+)/.exec(versionOf('nginx', ['-v']) ?? '')?.[1];
  if (nginx === undefined) throw new Error('nginx is needed (it is the backend)');
  const haproxy = /version (\d+\.\d+\.\d+)/.exec(versionOf('haproxy', ['-v']) ?? '')?.[1];
  const pinning = choosePinning(pin, os.availableParallelism());
  console.log(
    [
      'Portico HTTPS-upstream benchmark',
      `date:     ${new Date().toISOString()}  (npm run bench:https-upstream -- ${process.argv.slice(2).join(' ')}); load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
      `peers:    nginx ${nginx}, HAProxy ${haproxy ?? 'not installed'}; portico ${porticoRevision()}, node ${process.version} (OpenSSL ${process.versions.openssl})`,
      `backend:  one nginx worker answering every GET on a plain and a TLS port (test ECDSA P-256 certificate, TLS 1.3)`,
      'upstream: kept alive by every proxy; TLS verified against the certificate as CA, sessions reused (nginx proxy_ssl_session_reuse, HAProxy default, Portico session_reuse)',
      `load:     keep-alive HTTP GETs, wrk -t1 -c${o.connections}, ${o.durationS} s, ${o.rounds} rounds, medians; 'http' = plain upstream, 'http-tls-upstream' = TLS upstream`,
      `pinning:  ${pinning.enabled ? `proxy on CPU ${pinning.proxyCpu}; wrk and backend on CPU ${pinning.clientCpu}` : `off (${pinning.reason})`}`,
      '',
    ].join('\n'),
  );
  benchmarkMain('bench-https-upstream', false, (scope) => bench(o, pinning, nginx, haproxy, scope));
}

async function bench(o: Options, pinning: Pinning, nginx: string, haproxy: string | undefined, { tmp, started, stopped }: BenchmarkScope): Promise<void> {
  const pin = pinning.enabled ? pinning : undefined;
  const wanted = (id: TargetId): boolean => o.targets === undefined || o.targets.includes(id);
  const plainPort = await freePort();
  const tlsPort = await freePort();
  const backend = await startNginxBackends(path.join(tmp, 'backend'), [plainPort], pin?.backendCpu, { ports: [tlsPort], cert: CERT, key: KEY });
  started.push(backend);
  const targets: Target[] = [];
  const add = (t: Target): void => {
    targets.push(t);
    if (t.proc !== undefined) started.push(t.proc);
  };
  if (wanted('nginx')) {
    const port = await freePort();
    const dir = path.join(tmp, 'nginx');
    const conf = [
      `worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log warn; events { worker_connections 4096; }`,
      'http {',
      '  access_log off; keepalive_requests 1000000; keepalive_timeout 300s;',
      `  client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;`,
      `  upstream plain { server 127.0.0.1:${plainPort}; keepalive 64; keepalive_requests 1000000; }`,
      `  upstream secure { server 127.0.0.1:${tlsPort}; keepalive 64; keepalive_requests 1000000; }`,
      `  server { listen 127.0.0.1:${port};`,
      '    proxy_http_version 1.1; proxy_set_header Connection "";',
      '    location / { proxy_pass http://plain; }',
      `    location ${TLS_PATH} { proxy_pass https://secure; proxy_ssl_verify on; proxy_ssl_trusted_certificate ${CERT}; proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_ssl_session_reuse on; }`,
      '  }',
      '}',
      '',
    ].join('\n');
    const t: Target = { id: 'nginx', label: `nginx ${nginx} (1 worker)`, httpPort: port, wsPort: port };
    try {
      t.proc = await startNginx(dir, conf, port, pin?.proxyCpu);
    } catch (err) {
      t.error = (err as Error).message;
    }
    add(t);
  }
  if (wanted('haproxy') && haproxy !== undefined) {
    const port = await freePort();
    const dir = path.join(tmp, 'haproxy');
    mkdirSync(dir, { recursive: true });
    const cfg = [
      'global', '  nbthread 1', '  maxconn 4096',
      'defaults', '  mode http', '  timeout connect 5s', '  timeout client 300s', '  timeout server 300s', '  timeout http-keep-alive 300s', '  http-reuse always',
      'frontend bench', `  bind 127.0.0.1:${port}`, `  use_backend secure if { path_beg ${TLS_PATH} }`, '  default_backend plain',
      'backend plain', `  server s1 127.0.0.1:${plainPort}`,
      'backend secure', `  server s1 127.0.0.1:${tlsPort} ssl verify required ca-file ${CERT} verifyhost localhost sni str(localhost) alpn http/1.1`,
      '',
    ].join('\n');
    const l = await launchHaproxy(dir, cfg, [port], pin?.proxyCpu);
    add({ id: 'haproxy', label: `HAProxy ${haproxy} (1 thread)`, httpPort: port, wsPort: port, proc: l.proc, error: l.error });
  }
  if (wanted('portico')) {
    const port = await freePort();
    const yaml = [
      'workers: 1',
      `listeners: [{ address: 127.0.0.1:${port} }]`,
      'upstreams:',
      `  plain: { targets: [127.0.0.1:${plainPort}], keepalive: { max_idle: 64 } }`,
      `  secure: { targets: [127.0.0.1:${tlsPort}], keepalive: { max_idle: 64 }, tls: { ca: ${JSON.stringify(CERT)}, sni: localhost } }`,
      'routes:',
      `  - match: { path: ${TLS_PATH} }`,
      '    proxy: secure',
      '  - match: { path: / }',
      '    proxy: plain',
      'log: { level: warn, access: false }',
      'timeouts: { shutdown_grace: 2s }',
      '',
    ].join('\n');
    const l = await launchPortico(path.join(tmp, 'portico'), yaml, [port], pin?.proxyCpu);
    add({ id: 'portico', label: 'Portico (1 worker)', httpPort: port, wsPort: port, proc: l.proc, error: l.error, logFile: l.logFile });
  }
  const watchOf = (t: Target): Watch => ({ proxy: t.proc?.pid, backend: [backend.pid] });
  const pathOf = (l: Load): string => (l === 'http' ? '/' : `${TLS_PATH}x`);
  const { runs, summaries } = await runPlan<Target, Load>({
    targets,
    loads: ['http', 'http-tls-upstream'],
    rounds: o.rounds,
    warmupS: o.warmupS,
    durationS: o.durationS,
    noisyRetries: 1,
    check: async (t, l) => checkHttp(t.httpPort, { path: pathOf(l) }),
    load: (t, l, d) => runWrk(t.httpPort, o.connections, d, watchOf(t), pin?.clientCpu, { path: pathOf(l) }),
    stopped,
  });
  for (const s of summaries) {
    console.log(`\n${s.scenario === 'http' ? 'plain upstream (baseline)' : 'TLS upstream'}`);
    console.log(formatTable(s.scenario, s.rows));
  }
  for (const c of caveats(runs, pinning)) console.log(`note: ${c}`);
  console.log(`load average at end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}

main();
