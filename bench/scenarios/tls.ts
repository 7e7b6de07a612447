// `npm run bench:tls`: HTTPS through nginx (1 worker), HAProxy (1 thread) and Portico (1 worker) with TLS
// terminated by the native addon and, for comparison, by Node's TLS (PORTICO_NATIVE_TLS=0): keep-alive GETs
// over 64 connections, and a new connection (a TLS handshake: wrk offers the last ticket it got, so a proxy that
// issues a fresh ticket on each resumption is resumed every time, others every other time) per request. Same
// certificate (the test ECDSA P-256 one), same backend, interleaved rounds, medians, proxy CPU per request.
// `--loads http,https` adds plain HTTP keep-alive through the same proxies (a plain listener beside the TLS one, the
// same routes) as a baseline: the difference per request is what TLS costs each proxy, measured in one run.
// It never asserts a speed; see bench/README.md.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { checkHttp, runWrk, type Watch } from '../lib/loads.js';
import { BENCH_DIST, ROOT } from '../lib/paths.js';
import { benchmarkMain, choosePinning, freePort, hasProc, pinned, spawnProcess, versionOf, waitForPort, type BenchmarkScope, type Pinning } from '../lib/procs.js';
import { formatTable, type Scenario } from '../lib/report.js';
import { caveats, runPlan } from '../lib/rounds.js';
import type { TargetId } from '../lib/shape.js';
import { launchHaproxy, launchPortico, porticoRevision, startBackends, startNginx, type Target } from '../peers/targets.js';

const CERT = path.join(ROOT, 'test', 'fixtures', 'tls', 'localhost.crt');
const KEY = path.join(ROOT, 'test', 'fixtures', 'tls', 'localhost.key');

const USAGE = `usage: npm run bench:tls -- [--duration S] [--rounds N] [--warmup S] [--connections N] [--no-pin] [--targets LIST] [--loads LIST] [--passthrough]
  loads: https (keep-alive), tls (a new TLS connection per request), http (plain keep-alive through the same
  proxies, the baseline of https); default https,tls
  targets: nginx,haproxy,portico,portico-js,uws-sslapp (portico-js = PORTICO_NATIVE_TLS=0: Node's TLS;
  uws-sslapp = the uWebSockets.js SSLApp + adoptSocket prototype, bench/probes/uws-tls-front.ts)
  --passthrough: Portico's TLS listener also passes a name through (one the load never sends), so that it reads
  every ClientHello before terminating: one port for HTTPS and TLS passthrough`;

/** 'https' = HTTPS keep-alive; 'tls' = a new TLS connection per request; 'http' = plain keep-alive (baseline). */
type Load = Extract<Scenario, 'http' | 'https' | 'tls'>;
const LOADS: readonly Load[] = ['http', 'https', 'tls'];
const TITLE: Record<Load, string> = { http: 'HTTP keep-alive (plain, same proxies: the baseline)', https: 'HTTPS keep-alive', tls: 'new TLS connection per request' };

function main(): void {
  const a = readArgs(process.argv.slice(2), { duration: 'string', rounds: 'string', warmup: 'string', connections: 'string', 'no-pin': 'boolean', targets: 'string', loads: 'string', passthrough: 'boolean' }, USAGE);
  const o = {
    durationS: a.num('duration', 5, 1, 3600),
    rounds: Math.round(a.num('rounds', 2, 1, 100)),
    warmupS: a.num('warmup', 1, 0, 600),
    connections: Math.round(a.num('connections', 64, 1, 10_000)),
    pin: !a.has('no-pin'),
    targets: a.list<TargetId>('targets', ['nginx', 'haproxy', 'portico', 'portico-js', 'uws-sslapp']),
    loads: a.list<Load>('loads', LOADS) ?? ['https', 'tls'],
    passthrough: a.has('passthrough'),
  };
  // in the table's order, whatever the order given
  o.loads = LOADS.filter((l) => o.loads.includes(l));
  if (!hasProc) throw new Error('this benchmark reads CPU time from /proc: run it on Linux');
  const pinning = choosePinning(o.pin, os.availableParallelism());
  const nginx = /nginx\/(\S+)/.exec(versionOf('nginx', ['-v']) ?? '')?.[1];
  const haproxy = /version (\d+\.\d+\.\d+)/.exec(versionOf('haproxy', ['-v']) ?? '')?.[1];
  console.log(
    [
      'Portico TLS benchmark',
      `date:     ${new Date().toISOString()}  (npm run bench:tls -- ${process.argv.slice(2).join(' ')})`,
      `peers:    nginx ${nginx ?? 'not installed'}, HAProxy ${haproxy ?? 'not installed'}; portico ${porticoRevision()}, node ${process.version} (OpenSSL ${process.versions.openssl})`,
      'tls:      test ECDSA P-256 certificate for every proxy; TLS 1.3 negotiated by wrk; tickets on (wrk resumes with the ticket of its last connection: SSL_clear keeps the session)',
      `loads:    ${o.loads.map((l) => (l === 'tls' ? `new TLS connection per request: wrk -t1 -c${o.connections} -H "Connection: close"` : `${l === 'https' ? 'HTTPS' : 'plain HTTP'} keep-alive: wrk -t1 -c${o.connections}`)).join('; ')}; ${o.durationS} s each, ${o.rounds} rounds, medians`,
      ...(o.passthrough ? ["listener: Portico's TLS listener also passes a name through (passthrough.invalid, never sent): it reads each ClientHello first"] : []),
      `pinning:  ${pinning.enabled ? `proxy on CPU ${pinning.proxyCpu}; wrk and backend on CPU ${pinning.clientCpu}` : `off (${pinning.reason})`}`,
      '',
    ].join('\n'),
  );
  benchmarkMain('bench-tls', false, (scope) => bench(o, pinning, nginx, haproxy, scope));
}

async function bench(
  o: { durationS: number; rounds: number; warmupS: number; connections: number; targets: TargetId[] | undefined; loads: Load[]; passthrough: boolean },
  pinning: Pinning,
  nginx: string | undefined,
  haproxy: string | undefined,
  { tmp, started, stopped }: BenchmarkScope,
): Promise<void> {
  const pin = pinning.enabled ? pinning : undefined;
  const wanted = (id: TargetId): boolean => o.targets === undefined || o.targets.includes(id);
  const backends = await startBackends(tmp, nginx !== undefined, pin?.backendCpu);
  started.push(backends.http, backends.ws);
  const targets: Target[] = [];
  // each proxy's plain listener (the http load), beside its TLS one (httpPort here)
  const plainPorts = new Map<TargetId, number>();
  const plain = o.loads.includes('http');
  const add = (t: Target): void => {
    targets.push(t);
    if (t.proc !== undefined) started.push(t.proc);
  };
  if (wanted('nginx') && nginx !== undefined) {
    const port = await freePort();
    const plainPort = plain ? await freePort() : undefined;
    if (plainPort !== undefined) plainPorts.set('nginx', plainPort);
    const dir = path.join(tmp, 'nginx-tls');
    const conf = `worker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n  client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;\n  upstream http_backend { server 127.0.0.1:${backends.httpPort}; keepalive 64; keepalive_requests 1000000; }\n  server {\n${plainPort === undefined ? '' : `    listen 127.0.0.1:${plainPort};\n`}    listen 127.0.0.1:${port} ssl;\n    ssl_certificate ${CERT};\n    ssl_certificate_key ${KEY};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_tickets on;\n    proxy_set_header Host $http_host;\n    proxy_set_header X-Real-IP $remote_addr;\n    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    proxy_set_header X-Forwarded-Proto $scheme;\n    proxy_set_header X-Forwarded-Host $http_host;\n    location / { proxy_pass http://http_backend; proxy_http_version 1.1; proxy_set_header Connection ""; }\n  }\n}\n`;
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
    const plainPort = plain ? await freePort() : undefined;
    if (plainPort !== undefined) plainPorts.set('haproxy', plainPort);
    const dir = path.join(tmp, 'haproxy-tls');
    mkdirSync(dir, { recursive: true });
    const pem = path.join(dir, 'cert.pem');
    writeFileSync(pem, Buffer.concat([readFileSync(CERT), readFileSync(KEY)]));
    const cfg = `global\n  nbthread 1\n  maxconn 4096\n  tune.ssl.default-dh-param 2048\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n  timeout http-keep-alive 300s\n  http-reuse always\n  option forwardfor\nfrontend bench\n  bind 127.0.0.1:${port} ssl crt ${pem} alpn http/1.1\n${plainPort === undefined ? '' : `  bind 127.0.0.1:${plainPort}\n`}  http-request set-header X-Real-IP %[src]\n  http-request set-header X-Forwarded-Proto https\n  http-request set-header X-Forwarded-Host %[req.hdr(host)]\n  default_backend http_backend\nbackend http_backend\n  server s1 127.0.0.1:${backends.httpPort}\n`;
    const l = await launchHaproxy(dir, cfg, plainPort === undefined ? [port] : [port, plainPort], pin?.proxyCpu);
    add({ id: 'haproxy', label: `HAProxy ${haproxy} (1 thread)`, httpPort: port, wsPort: port, proc: l.proc, error: l.error });
  }
  for (const [id, env, label] of [
    ['portico', undefined, 'Portico (1 worker, native TLS)'],
    ['portico-js', { PORTICO_NATIVE_TLS: '0' }, "Portico (1 worker, Node's TLS)"],
  ] as const) {
    if (!wanted(id)) continue;
    const port = await freePort();
    const plainPort = plain ? await freePort() : undefined;
    if (plainPort !== undefined) plainPorts.set(id, plainPort);
    const yaml = [
      'workers: 1',
      'listeners:',
      ...(plainPort === undefined ? [] : [`  - address: 127.0.0.1:${plainPort}`]),
      `  - address: 127.0.0.1:${port}`,
      '    tls:',
      `      certificates: [{ cert: ${CERT}, key: ${KEY} }]`,
      ...(o.passthrough ? ['      passthrough: [{ sni: passthrough.invalid, upstream: passthrough }]'] : []),
      'upstreams:',
      ...(o.passthrough ? [`  passthrough: { targets: [127.0.0.1:${backends.httpPort}] }`] : []),
      '  http:',
      `    targets: [127.0.0.1:${backends.httpPort}]`,
      '    keepalive: { max_idle: 64 }',
      'routes:',
      '  - match: { path: / }',
      '    proxy: http',
      'log: { level: warn, access: false }',
      'timeouts: { shutdown_grace: 2s }',
      '',
    ].join('\n');
    const l = await launchPortico(path.join(tmp, id), yaml, plainPort === undefined ? [port] : [port, plainPort], pin?.proxyCpu, env);
    add({ id, label, httpPort: port, wsPort: port, proc: l.proc, error: l.error, logFile: l.logFile });
  }
  if (wanted('uws-sslapp')) {
    // the prototype front (bench/probes/uws-tls-front.ts): uWS SSLApp + adoptSocket, JS forwarding
    const port = await freePort();
    const [cmd, args] = pinned(pin?.proxyCpu, process.execPath, [path.join(BENCH_DIST, 'probes', 'uws-tls-front.js'), '--port', String(port), '--backend', String(backends.httpPort)]);
    const t: Target = { id: 'uws-sslapp', label: 'uWS SSLApp + adoptSocket (prototype)', httpPort: port, wsPort: port };
    try {
      t.proc = spawnProcess(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      await waitForPort('127.0.0.1', port, 15_000, t.proc);
    } catch (err) {
      t.error = (err as Error).message;
    }
    add(t);
  }
  const watchOf = (t: Target): Watch => ({ proxy: t.proc?.pid, backend: [backends.http.pid] });
  const { runs, summaries } = await runPlan<Target, Load>({
    targets,
    loads: o.loads,
    applies: (t, l) => l !== 'http' || plainPorts.has(t.id),
    rounds: o.rounds,
    warmupS: o.warmupS,
    durationS: o.durationS,
    noisyRetries: 1,
    check: async (t, l) => (l === 'http' ? checkHttp(plainPorts.get(t.id)!) : checkHttp(t.httpPort, { tls: true })),
    load: (t, l, d) =>
      l === 'http'
        ? runWrk(plainPorts.get(t.id)!, o.connections, d, watchOf(t), pin?.clientCpu)
        : runWrk(t.httpPort, o.connections, d, watchOf(t), pin?.clientCpu, { tls: true, close: l === 'tls' }),
    stopped,
  });
  for (const s of summaries) {
    console.log(`\n${TITLE[s.scenario]}`);
    console.log(formatTable(s.scenario, s.rows));
  }
  // what TLS adds per keep-alive request, each proxy against its own plain figure of this run
  const plainRows = summaries.find((s) => s.scenario === 'http')?.rows;
  const tlsRows = summaries.find((s) => s.scenario === 'https')?.rows;
  if (plainRows !== undefined && tlsRows !== undefined) {
    console.log('\nTLS per keep-alive request (HTTPS minus plain HTTP, medians of this run), proxy CPU-µs (user + sys)');
    for (const r of tlsRows) {
      const p = plainRows.find((x) => x.label === r.label);
      if (p?.proxyCpuUsPerUnit === undefined || r.proxyCpuUsPerUnit === undefined) continue;
      const du = (r.proxyUserUsPerUnit ?? 0) - (p.proxyUserUsPerUnit ?? 0);
      const ds = (r.proxySysUsPerUnit ?? 0) - (p.proxySysUsPerUnit ?? 0);
      console.log(`  ${r.label}: ${p.proxyCpuUsPerUnit.toFixed(1)} -> ${r.proxyCpuUsPerUnit.toFixed(1)}: +${(r.proxyCpuUsPerUnit - p.proxyCpuUsPerUnit).toFixed(1)} (${du.toFixed(1)} + ${ds.toFixed(1)})`);
    }
  }
  for (const c of caveats(runs, pinning)) console.log(`note: ${c}`);
}

main();
