// `npm run bench`: HTTP keep-alive GETs and WebSocket echo through Portico (1 worker), against direct-to-backend,
// nginx (1 worker) and HAProxy (1 thread) when installed; interleaved rounds, medians, ratios, proxy CPU per
// request/message; conditions printed above the tables; JSON to bench/results/latest.json. A failed target
// prints its reason in its row and the run goes on. It never asserts a speed; see bench/README.md.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { checkHttp, checkWs, runWrk, runWsHandshakes, runWsLoad, type Watch } from '../lib/loads.js';
import { ROOT } from '../lib/paths.js';
import { benchmarkMain, choosePinning, freePort, hasProc, peerVersions, versionOf, type BenchmarkScope, type Pinning } from '../lib/procs.js';
import { ensureSelfSigned } from '../../src/accept/tls.js';
import { formatProcesses, formatTable, type Scenario } from '../lib/report.js';
import { caveats, runPlan } from '../lib/rounds.js';
import { HTTP_BODY, type TargetId } from '../lib/shape.js';
import {
  alive, directTarget, porticoRevision, startBackends, startHaproxy, startNginxProxy, startPortico, truncateLog, type Backends, type Target, type TlsListener,
} from '../peers/targets.js';

/** The loads of this benchmark (scenarios/connrate.ts has the L4 ones). */
type Load = Extract<Scenario, 'http' | 'ws' | 'newconn' | 'wshs' | 'wsshs'>;
/** The default loads; wsshs (sequential WSS handshakes: the proxies get a TLS listener) only when asked by --only. */
const LOADS: readonly Load[] = ['http', 'ws', 'newconn', 'wshs'];
const ALL_LOADS: readonly Load[] = [...LOADS, 'wsshs'];

interface Options {
  durationS: number;
  rounds: number;
  warmupS: number;
  scenarios: Load[];
  httpConnections: number;
  newconnConnections: number;
  wsConnections: number;
  size: number;
  pin: boolean;
  accessLogRow: boolean;
  targets: TargetId[] | undefined;
  out: string;
  keepTmp: boolean;
  /** Use the node:http backend even when nginx is installed. */
  nodeBackend: boolean;
  /** Times a run is repeated when other processes used more than NOISY_SHARE of a core during it. */
  noisyRetries: number;
}

const USAGE = `usage: npm run bench -- [options]
  --duration S       seconds per timed run (default 10)
  --rounds N         rounds; each runs every target once per load, order rotated (default 5)
  --warmup S         untimed warm-up per target and load before round 1 (default 2)
  --only LIST        comma list of http,ws,newconn,wshs,wsshs (default: the first four; wsshs = WSS handshakes)
  --newconn-connections N  concurrent connections of the new-connection-per-request load (default 16)
  --quick            smoke run: defaults --duration 2 --rounds 1 --warmup 1 (flags given win)
  --targets LIST     comma list of direct,nginx,haproxy,portico,portico-access,portico-terminate,
                     portico-terminate-adopt (default: all but the two portico-terminate*, which serve /ws in
                     websocket.mode terminate, the second with handoff: adopt)
  --no-access-log    skip the Portico row with access logs on
  --connections N    HTTP connections (default 64)
  --ws-connections N WebSocket connections (default 100)
  --size B           WebSocket message size in bytes (default 32)
  --no-pin           do not pin processes to CPUs
  --out FILE         JSON result file (default bench/results/latest.json)
  --keep-tmp         keep the temp folder with generated configs and logs
  --node-backend     HTTP backend = node:http even when nginx is installed
  --noisy-retries N  rerun a run up to N times when other processes used >15% of a core in it (default 2)`;

const TARGET_IDS: readonly TargetId[] = ['direct', 'nginx', 'haproxy', 'portico', 'portico-access', 'portico-terminate', 'portico-terminate-adopt'];

function parseOptions(argv: string[]): Options {
  const a = readArgs(
    argv,
    {
      duration: 'string', rounds: 'string', warmup: 'string', only: 'string', quick: 'boolean', targets: 'string', 'no-access-log': 'boolean',
      connections: 'string', 'ws-connections': 'string', size: 'string', 'no-pin': 'boolean', out: 'string', 'keep-tmp': 'boolean',
      'node-backend': 'boolean', 'noisy-retries': 'string', 'newconn-connections': 'string',
    },
    USAGE,
  );
  // --quick changes the defaults; a flag given with it still wins (`--quick --rounds 3`).
  const quick = a.has('quick');
  const only = a.list<Load>('only', ALL_LOADS);
  return {
    durationS: a.num('duration', quick ? 2 : 10, 1, 3600),
    rounds: Math.round(a.num('rounds', quick ? 1 : 5, 1, 100)),
    warmupS: a.num('warmup', quick ? 1 : 2, 0, 600),
    scenarios: only === undefined ? [...LOADS] : only,
    newconnConnections: Math.round(a.num('newconn-connections', 16, 1, 10_000)),
    httpConnections: Math.round(a.num('connections', 64, 1, 10_000)),
    wsConnections: Math.round(a.num('ws-connections', 100, 1, 10_000)),
    size: Math.round(a.num('size', 32, 1, 65_535)),
    pin: !a.has('no-pin'),
    accessLogRow: !a.has('no-access-log'),
    targets: a.list('targets', TARGET_IDS),
    out: path.resolve(a.str('out', path.join(ROOT, 'bench', 'results', 'latest.json'))),
    keepTmp: a.has('keep-tmp'),
    nodeBackend: a.has('node-backend'),
    noisyRetries: Math.round(a.num('noisy-retries', 2, 0, 10)),
  };
}

interface Conditions {
  date: string;
  command: string;
  cpus: number;
  cpuModel: string;
  kernel: string;
  node: string;
  nginx?: string;
  haproxy?: string;
  wrk?: string;
  curl: boolean;
  portico: string;
  pinning: Pinning;
  httpBackend: string;
  wsBackend: string;
}



function detect(o: Options): Conditions {
  const cpus = os.availableParallelism();
  const pinning = choosePinning(o.pin, cpus);
  const { nginx, haproxy, wrk } = peerVersions();
  return {
    date: new Date().toISOString(),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    cpus,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    nginx,
    haproxy,
    wrk,
    curl: versionOf('curl', ['--version']) !== undefined,
    portico: porticoRevision(),
    pinning,
    httpBackend:
      nginx !== undefined && !o.nodeBackend
        ? `nginx ${nginx}, 1 worker, \`return 200\` (${Buffer.byteLength(HTTP_BODY)}-byte body)`
        : `node:http (${Buffer.byteLength(HTTP_BODY)}-byte body; ${o.nodeBackend ? '--node-backend' : 'nginx not installed'})`,
    wsBackend: 'uWebSockets.js App echo (C++ framing, one node process)',
  };
}

function formatConditions(c: Conditions, o: Options): string {
  const pin = c.pinning.enabled
    ? `taskset: proxy on CPU ${c.pinning.proxyCpu} alone; load generator and both backends on CPU ${c.pinning.clientCpu}`
    : `off (${c.pinning.reason}): every process floats over all CPUs`;
  const lines = [
    `date:       ${c.date}  (${c.command})`,
    `machine:    ${c.cpus} CPUs (${c.cpuModel}), ${c.kernel}, node ${c.node}`,
    `peers:      nginx ${c.nginx ?? 'not installed'}, HAProxy ${c.haproxy ?? 'not installed'}, wrk ${c.wrk ?? 'not installed'}`,
    `portico:    ${c.portico}; 1 worker (workers: 1); access log off at level warn${o.accessLogRow ? ', plus a row with access log on (info, to a file)' : ''}`,
    `backends:   HTTP = ${c.httpBackend}; WebSocket = ${c.wsBackend}`,
    'proxies:    same routes (/ws -> echo, / -> HTTP), upstream keep-alive, X-Forwarded-For/Proto/Host + X-Real-IP added by each (bench/fixtures)',
    `pinning:    ${pin}`,
  ];
  if (o.scenarios.includes('http')) lines.push(`http load:  wrk -t1 -c${o.httpConnections} -d${o.durationS}s, keep-alive GET /, body checked with curl first`);
  if (o.scenarios.includes('newconn')) lines.push(`newconn:    wrk -t1 -c${o.newconnConnections} -d${o.durationS}s -H 'Connection: close': a new TCP connection per request`);
  if (o.scenarios.includes('wshs')) lines.push(`wshs:       ws-handshake, one at a time: connect, upgrade, 101 (accept key checked), close; ${o.durationS} s`);
  if (o.scenarios.includes('wsshs')) lines.push(`wsshs:      ws-handshake --tls, one at a time: connect, full TLS 1.3 handshake (no session offered), upgrade, 101, close; ${o.durationS} s`);
  if (o.scenarios.includes('ws')) {
    lines.push(`ws load:    ws-load, ${o.wsConnections} connections, ${o.size}-byte binary messages, one in flight per connection, ${o.durationS} s; echoes verified`);
  }
  lines.push(`rounds:     ${o.rounds} (each target once per load per round, order rotated); ${o.warmupS} s untimed warm-up each; medians shown`);
  lines.push('CPU:        utime+stime from /proc/PID/stat of each process tree (Portico: primary + worker; nginx: master + worker)');
  return lines.join('\n');
}


function main(): void {
  const o = parseOptions(process.argv.slice(2));
  if (!hasProc) throw new Error('this benchmark reads CPU time from /proc: run it on Linux');
  const c = detect(o);
  if ((o.scenarios.includes('http') || o.scenarios.includes('newconn')) && c.wrk === undefined) {
    console.log('wrk is not installed (apt-get install wrk): the HTTP loads are skipped');
    o.scenarios = o.scenarios.filter((s) => s !== 'http' && s !== 'newconn');
  }
  if (o.scenarios.length === 0) throw new Error('nothing to run');
  console.log(`Portico end-to-end benchmark\n${formatConditions(c, o)}\n`);
  benchmarkMain('bench', o.keepTmp, (scope) => bench(o, c, scope));
}

async function bench(o: Options, c: Conditions, { tmp, started, stopped }: BenchmarkScope): Promise<void> {
  const pin = c.pinning.enabled ? c.pinning : undefined;
  const wanted = (id: TargetId): boolean =>
    (o.targets === undefined ? id !== 'portico-terminate' && id !== 'portico-terminate-adopt' : o.targets.includes(id)) && (id !== 'portico-access' || o.accessLogRow);
  const backends: Backends = await startBackends(tmp, c.nginx !== undefined && !o.nodeBackend, pin?.backendCpu);
  started.push(backends.http, backends.ws);
  console.log(`backends: HTTP (${backends.httpKind}) on 127.0.0.1:${backends.httpPort}, WebSocket echo on 127.0.0.1:${backends.wsPort}`);

  const targets: Target[] = [];
  // Registered as soon as started, so an error while starting the next one still stops this one.
  const add = (t: Target): void => {
    targets.push(t);
    if (t.proc !== undefined) started.push(t.proc);
  };
  // wsshs: every proxy also listens with TLS (a self-signed certificate made for this run)
  let tlsFor: () => Promise<TlsListener | undefined> = async () => undefined;
  if (o.scenarios.includes('wsshs')) {
    const cert = path.join(tmp, 'tls', 'bench.crt');
    const key = path.join(tmp, 'tls', 'bench.key');
    await ensureSelfSigned(cert, key, ['localhost', '127.0.0.1']);
    const pem = path.join(tmp, 'tls', 'bench.pem');
    writeFileSync(pem, `${readFileSync(cert, 'utf8')}\n${readFileSync(key, 'utf8')}`);
    tlsFor = async () => ({ port: await freePort(), cert, key, pem });
  }
  if (wanted('direct')) add(directTarget(backends));
  if (wanted('nginx')) {
    if (c.nginx !== undefined) add(await startNginxProxy(tmp, backends, c.nginx, pin?.proxyCpu, await tlsFor()));
    else console.log('nginx is not installed: no nginx row, no ratio vs nginx');
  }
  if (wanted('haproxy')) {
    if (c.haproxy !== undefined) add(await startHaproxy(tmp, backends, c.haproxy, pin?.proxyCpu, await tlsFor()));
    else console.log('HAProxy is not installed: no HAProxy row');
  }
  if (wanted('portico')) add(await startPortico(tmp, backends, false, pin?.proxyCpu, { tls: await tlsFor() }));
  if (wanted('portico-access')) add(await startPortico(tmp, backends, true, pin?.proxyCpu));
  if (wanted('portico-terminate')) add(await startPortico(tmp, backends, false, pin?.proxyCpu, { terminate: true }));
  if (wanted('portico-terminate-adopt')) add(await startPortico(tmp, backends, false, pin?.proxyCpu, { terminate: true, adopt: true }));

  const watchOf = (t: Target): Watch => ({ proxy: t.proc?.pid, backend: [backends.http.pid, backends.ws.pid] });
  const { runs, summaries } = await runPlan<Target, Load>({
    targets,
    loads: o.scenarios,
    rounds: o.rounds,
    warmupS: o.warmupS,
    durationS: o.durationS,
    noisyRetries: o.noisyRetries,
    check: async (t, s) => (s === 'http' || s === 'newconn' ? checkHttp(t.httpPort) : checkWs(t.wsPort, o.size)),
    load: async (t, s, durationS) => {
      if (!alive(t)) throw new Error(`${t.label} exited: ${t.proc?.tail() ?? ''}`);
      truncateLog(t);
      try {
        if (s === 'http') return await runWrk(t.httpPort, o.httpConnections, durationS, watchOf(t), pin?.clientCpu);
        if (s === 'newconn') return await runWrk(t.httpPort, o.newconnConnections, durationS, watchOf(t), pin?.clientCpu, { close: true });
        if (s === 'wshs') return await runWsHandshakes(t.wsPort, durationS, watchOf(t), pin?.clientCpu);
        if (s === 'wsshs') {
          if (t.tlsPort === undefined) throw new Error('no TLS listener');
          return await runWsHandshakes(t.tlsPort, durationS, watchOf(t), pin?.clientCpu, true);
        }
        return await runWsLoad(t.wsPort, o.wsConnections, o.size, durationS, watchOf(t), pin?.clientCpu);
      } finally {
        truncateLog(t);
      }
    },
    stopped,
  });

  const titles: Record<Load, string> = {
    http: `HTTP keep-alive GET / (${o.httpConnections} connections, wrk -t1, ${o.durationS} s x ${o.rounds} rounds)`,
    newconn: `New TCP connection per request, GET / with Connection: close (${o.newconnConnections} concurrent, wrk -t1, ${o.durationS} s x ${o.rounds} rounds)`,
    wshs: `WebSocket handshake, one at a time (new connection, upgrade, 101, close; ${o.durationS} s x ${o.rounds} rounds; p50 = connect to 101)`,
    wsshs: `WSS handshake, one at a time (new connection, full TLS handshake, upgrade, 101, close; ${o.durationS} s x ${o.rounds} rounds; p50 = connect to 101)`,
    ws: `WebSocket echo (${o.wsConnections} connections, ${o.size}-byte messages, 1 in flight each, ${o.durationS} s x ${o.rounds} rounds)`,
  };
  const report = [
    '',
    '== Results ==',
    formatConditions(c, o),
    ...summaries.flatMap(({ scenario, rows }) => ['', titles[scenario], formatTable(scenario, rows)]),
    '',
    'CPU per process in each row\'s median run (% of one core over the timed window):',
    ...summaries.flatMap(({ scenario, rows }) => [`${scenario}:`, formatProcesses(rows)]),
    '',
    'vs nginx / vs direct: ratio of median rates. proxy CPU-µs: CPU of the proxy\'s process tree / requests (messages) completed;',
    'user + sys: its user-space and kernel parts (medians of each).',
    'CPU eff. vs nginx: nginx\'s CPU-µs per unit / this row\'s (1.00x = as cheap as nginx). CPU columns: % of one core;',
    'other CPU: the rest of the machine\'s busy time in the window (harness, kernel threads, anything else running).',
    ...caveats(runs, c.pinning),
  ];
  console.log(report.join('\n'));

  mkdirSync(path.dirname(o.out), { recursive: true });
  writeFileSync(o.out, `${JSON.stringify({ conditions: c, options: o, summary: summaries, runs }, null, 2)}\n`);
  console.log(`\nwrote ${path.relative(process.cwd(), o.out) || o.out}`);
}

try {
  main();
} catch (err) {
  console.error(`bench: ${(err as Error).message}`);
  process.exit(1);
}
