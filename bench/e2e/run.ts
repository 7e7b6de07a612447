// `npm run bench`: HTTP keep-alive GETs and WebSocket echo through Portico (1 worker), against direct-to-backend,
// nginx (1 worker) and HAProxy (1 thread) when installed; interleaved rounds, medians, ratios, proxy CPU per
// request/message; conditions printed above the tables; JSON to bench/results/latest.json. A failed target
// prints its reason in its row and the run goes on. It never asserts a speed; see bench/README.md.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { checkHttp, checkWs, runWrk, runWsLoad, type LoadResult, type Watch } from './loads.js';
import { hasProc, stopTree, versionOf, type Pinning, type Spawned } from './procs.js';
import { formatProcesses, formatTable, summarize, type Run, type Scenario, type Summary } from './report.js';
import { HTTP_BODY } from './shape.js';
import {
  ROOT, alive, directTarget, startBackends, startHaproxy, startNginxProxy, startPortico, truncateLog, type Backends, type Target, type TargetId,
} from './targets.js';

interface Options {
  durationS: number;
  rounds: number;
  warmupS: number;
  scenarios: Scenario[];
  httpConnections: number;
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

/** Share of one core that other processes may use during a run before it counts as disturbed. */
const NOISY_SHARE = 0.15;

const USAGE = `usage: npm run bench -- [options]
  --duration S       seconds per timed run (default 10)
  --rounds N         rounds; each runs every target once per load, order rotated (default 5)
  --warmup S         untimed warm-up per target and load before round 1 (default 2)
  --only http|ws     one load only
  --quick            smoke run: --duration 2 --rounds 1 --warmup 1
  --targets LIST     comma list of direct,nginx,haproxy,portico,portico-access (default: all available)
  --no-access-log    skip the Portico row with access logs on
  --connections N    HTTP connections (default 64)
  --ws-connections N WebSocket connections (default 100)
  --size B           WebSocket message size in bytes (default 32)
  --no-pin           do not pin processes to CPUs
  --out FILE         JSON result file (default bench/results/latest.json)
  --keep-tmp         keep the temp folder with generated configs and logs
  --node-backend     HTTP backend = node:http even when nginx is installed
  --noisy-retries N  rerun a run up to N times when other processes used >15% of a core in it (default 2)`;

const TARGET_IDS: readonly TargetId[] = ['direct', 'nginx', 'haproxy', 'portico', 'portico-access'];

function parseOptions(argv: string[]): Options {
  const o: Options = {
    durationS: 10, rounds: 5, warmupS: 2, scenarios: ['http', 'ws'], httpConnections: 64, wsConnections: 100, size: 32,
    pin: true, accessLogRow: true, targets: undefined, out: path.join(ROOT, 'bench', 'results', 'latest.json'), keepTmp: false, noisyRetries: 2, nodeBackend: false,
  };
  const num = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min || n > max) throw new Error(`${flag} needs a number in [${min}, ${max}]`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--duration': o.durationS = num(a, argv[++i], 1, 3600); break;
      case '--rounds': o.rounds = Math.round(num(a, argv[++i], 1, 100)); break;
      case '--warmup': o.warmupS = num(a, argv[++i], 0, 600); break;
      case '--quick': o.durationS = 2; o.rounds = 1; o.warmupS = 1; break;
      case '--only': {
        const v = argv[++i];
        if (v !== 'http' && v !== 'ws') throw new Error('--only takes http or ws');
        o.scenarios = [v];
        break;
      }
      case '--targets': {
        const list = (argv[++i] ?? '').split(',').filter((s) => s !== '');
        const bad = list.filter((s) => !(TARGET_IDS as readonly string[]).includes(s));
        if (list.length === 0 || bad.length > 0) throw new Error(`--targets: unknown ${bad.join(', ') || '(empty)'}; use ${TARGET_IDS.join(',')}`);
        o.targets = list as TargetId[];
        break;
      }
      case '--no-access-log': o.accessLogRow = false; break;
      case '--connections': o.httpConnections = Math.round(num(a, argv[++i], 1, 10_000)); break;
      case '--ws-connections': o.wsConnections = Math.round(num(a, argv[++i], 1, 10_000)); break;
      case '--size': o.size = Math.round(num(a, argv[++i], 1, 65_535)); break;
      case '--no-pin': o.pin = false; break;
      case '--out': o.out = path.resolve(argv[++i] ?? o.out); break;
      case '--keep-tmp': o.keepTmp = true; break;
      case '--node-backend': o.nodeBackend = true; break;
      case '--noisy-retries': o.noisyRetries = Math.round(num(a, argv[++i], 0, 10)); break;
      case '--help': case '-h': console.log(USAGE); process.exit(0); break;
      default: throw new Error(`unknown option ${a}\n${USAGE}`);
    }
  }
  return o;
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

function versionNumber(line: string | undefined, re: RegExp): string | undefined {
  return line === undefined ? undefined : (re.exec(line)?.[1] ?? line);
}

function gitDescribe(): string {
  const rev = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  if (rev.status !== 0) return 'unknown revision';
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' });
  return `commit ${rev.stdout.trim()}${dirty.stdout.trim() !== '' ? ' + uncommitted changes' : ''}`;
}

function detect(o: Options): Conditions {
  const cpus = os.availableParallelism();
  const taskset = versionOf('taskset', ['--version']) !== undefined;
  let pinning: Pinning;
  if (!o.pin) pinning = { enabled: false, reason: '--no-pin', proxyCpu: 'any', clientCpu: 'any', backendCpu: 'any' };
  else if (!taskset) pinning = { enabled: false, reason: 'taskset not found (util-linux)', proxyCpu: 'any', clientCpu: 'any', backendCpu: 'any' };
  else if (cpus < 2) pinning = { enabled: false, reason: 'fewer than 2 CPUs', proxyCpu: 'any', clientCpu: 'any', backendCpu: 'any' };
  else pinning = { enabled: true, reason: '', proxyCpu: '0', clientCpu: '1', backendCpu: '1' };
  const nginx = versionNumber(versionOf('nginx', ['-v']), /nginx\/(\S+)/);
  return {
    date: new Date().toISOString(),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    cpus,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    nginx,
    haproxy: versionNumber(versionOf('haproxy', ['-v']), /version (\d+\.\d+\.\d+)/),
    wrk: versionNumber(versionOf('wrk', ['-v'], true), /^wrk \S*?(\d+\.\d+\.\d+)/),
    curl: versionOf('curl', ['--version']) !== undefined,
    portico: gitDescribe(),
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
  if (o.scenarios.includes('ws')) {
    lines.push(`ws load:    ws-load, ${o.wsConnections} connections, ${o.size}-byte binary messages, one in flight per connection, ${o.durationS} s; echoes verified`);
  }
  lines.push(`rounds:     ${o.rounds} (each target once per load per round, order rotated); ${o.warmupS} s untimed warm-up each; medians shown`);
  lines.push('CPU:        utime+stime from /proc/PID/stat of each process tree (Portico: primary + worker; nginx: master + worker)');
  return lines.join('\n');
}

function rotate<T>(list: T[], by: number): T[] {
  const k = list.length === 0 ? 0 : by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

/** Every process this harness started, stopped on exit whatever happens. */
const started: Spawned[] = [];

async function stopAll(): Promise<void> {
  await Promise.all(started.splice(0).map((p) => stopTree(p, 5000)));
}

function toRun(scenario: Scenario, target: TargetId, round: number, r: LoadResult): Run {
  const sum = (list: { cpuUs: number }[]): number => list.reduce((s, p) => s + p.cpuUs, 0);
  const proxyCpuUs = sum(r.cpu.proxy);
  const clientCpuUs = sum(r.cpu.client);
  const backendCpuUs = sum(r.cpu.backend);
  return {
    scenario, target, round, ok: true, count: r.count, rate: r.rate, wallMs: r.cpu.wallMs, proxyCpuUs, clientCpuUs, backendCpuUs,
    proxySysUs: r.cpu.proxy.reduce((n, p) => n + p.sysUs, 0),
    // Clock-tick rounding can make the difference slightly negative on an idle box.
    otherCpuUs: Math.max(0, r.cpu.machineBusyUs - proxyCpuUs - clientCpuUs - backendCpuUs),
    stealUs: r.cpu.stealUs,
    processes: [
      ...r.cpu.proxy.map((p) => ({ role: 'proxy' as const, ...p })),
      ...r.cpu.client.map((p) => ({ role: 'client' as const, ...p })),
      ...r.cpu.backend.map((p) => ({ role: 'backend' as const, ...p })),
    ],
    latencyUs: r.latencyUs,
    notes: r.notes,
    info: r.info,
  };
}

function failedRun(scenario: Scenario, target: TargetId, round: number, error: string): Run {
  return { scenario, target, round, ok: false, error, count: 0, rate: 0, wallMs: 0, proxyCpuUs: 0, proxySysUs: 0, clientCpuUs: 0, backendCpuUs: 0, otherCpuUs: 0, stealUs: 0, processes: [], notes: [], info: [] };
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (!hasProc) throw new Error('this benchmark reads CPU time from /proc: run it on Linux');
  const c = detect(o);
  if (o.scenarios.includes('http') && c.wrk === undefined) {
    console.log('wrk is not installed (apt-get install wrk): the HTTP load is skipped');
    o.scenarios = o.scenarios.filter((s) => s !== 'http');
  }
  if (o.scenarios.length === 0) throw new Error('nothing to run');
  console.log(`Portico end-to-end benchmark\n${formatConditions(c, o)}\n`);

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'portico-bench-'));
  const pin = c.pinning.enabled ? c.pinning : undefined;
  const wanted = (id: TargetId): boolean => (o.targets === undefined || o.targets.includes(id)) && (id !== 'portico-access' || o.accessLogRow);
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    console.log(`\n${sig}: stopping the processes this benchmark started`);
    void stopAll().finally(() => {
      if (!o.keepTmp) rmSync(tmp, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const backends: Backends = await startBackends(tmp, c.nginx !== undefined && !o.nodeBackend, pin?.backendCpu);
    started.push(backends.http, backends.ws);
    console.log(`backends: HTTP (${backends.httpKind}) on 127.0.0.1:${backends.httpPort}, WebSocket echo on 127.0.0.1:${backends.wsPort}`);

    const targets: Target[] = [];
    // Registered as soon as started, so an error while starting the next one still stops this one.
    const add = (t: Target): void => {
      targets.push(t);
      if (t.proc !== undefined) started.push(t.proc);
    };
    if (wanted('direct')) add(directTarget(backends));
    if (wanted('nginx')) {
      if (c.nginx !== undefined) add(await startNginxProxy(tmp, backends, c.nginx, pin?.proxyCpu));
      else console.log('nginx is not installed: no nginx row, no ratio vs nginx');
    }
    if (wanted('haproxy')) {
      if (c.haproxy !== undefined) add(await startHaproxy(tmp, backends, c.haproxy, pin?.proxyCpu));
      else console.log('HAProxy is not installed: no HAProxy row');
    }
    if (wanted('portico')) add(await startPortico(tmp, backends, false, pin?.proxyCpu));
    if (wanted('portico-access')) add(await startPortico(tmp, backends, true, pin?.proxyCpu));

    // Per target and load: undefined = ready, else why it cannot run.
    const blocked = new Map<string, string>();
    const key = (t: Target, s: Scenario): string => `${t.id}:${s}`;
    for (const t of targets) {
      for (const s of o.scenarios) {
        if (t.error !== undefined) {
          blocked.set(key(t, s), t.error);
          continue;
        }
        try {
          if (s === 'http') checkHttp(t.httpPort);
          else await checkWs(t.wsPort, o.size);
        } catch (err) {
          blocked.set(key(t, s), `check failed: ${(err as Error).message}`);
        }
      }
      const states = o.scenarios.map((s) => `${s} ${blocked.has(key(t, s)) ? `FAILED (${blocked.get(key(t, s))})` : 'ok'}`);
      console.log(`check ${t.label}: ${states.join(', ')}`);
    }

    const watchOf = (t: Target): Watch => ({ proxy: t.proc?.pid, backend: [backends.http.pid, backends.ws.pid] });
    const once = async (t: Target, s: Scenario, durationS: number): Promise<LoadResult> => {
      if (!alive(t)) throw new Error(`${t.label} exited: ${t.proc?.tail() ?? ''}`);
      truncateLog(t);
      try {
        return s === 'http'
          ? await runWrk(t.httpPort, o.httpConnections, durationS, watchOf(t), pin?.clientCpu)
          : await runWsLoad(t.wsPort, o.wsConnections, o.size, durationS, watchOf(t), pin?.clientCpu);
      } finally {
        truncateLog(t);
      }
    };

    if (o.warmupS > 0) {
      for (const s of o.scenarios) {
        for (const t of targets) {
          if (blocked.has(key(t, s)) || interrupted) continue;
          try {
            await once(t, s, o.warmupS);
          } catch (err) {
            blocked.set(key(t, s), `warm-up failed: ${(err as Error).message}`);
            console.log(`warm-up ${s} ${t.label}: FAILED ${(err as Error).message}`);
          }
        }
      }
    }

    const runs: Run[] = [];
    const unit = (s: Scenario): string => (s === 'http' ? 'req' : 'msg');
    for (let round = 0; round < o.rounds && !interrupted; round++) {
      for (const s of o.scenarios) {
        for (const t of rotate(targets, round)) {
          if (interrupted) break;
          const reason = blocked.get(key(t, s));
          if (reason !== undefined) {
            runs.push(failedRun(s, t.id, round + 1, reason));
            continue;
          }
          try {
            // A run during which something else used the machine is repeated (bounded), since the proxy and
            // the client would have shared their cores with it; the retries are counted in the JSON.
            // When every attempt was disturbed, the least disturbed one is kept.
            let best: { run: Run; r: LoadResult; other: number } | undefined;
            let attempts = 0;
            for (let attempt = 0; attempt <= o.noisyRetries && !interrupted; attempt++) {
              attempts++;
              const r = await once(t, s, o.durationS);
              const run = toRun(s, t.id, round + 1, r);
              const other = run.otherCpuUs / (run.wallMs * 1000);
              if (best === undefined || other < best.other) best = { run, r, other };
              if (other <= NOISY_SHARE || attempt === o.noisyRetries) break;
              console.log(`round ${round + 1}/${o.rounds} ${s.padEnd(4)} ${t.label}: other processes used ${(other * 100).toFixed(0)}% of a core, run again`);
              await new Promise((res) => setTimeout(res, 1000));
            }
            if (best === undefined) continue;
            const { run, r } = best;
            run.retries = attempts - 1;
            runs.push(run);
            const cpu = t.id === 'direct' ? '' : `, proxy ${(run.proxyCpuUs / run.count).toFixed(1)} CPU-µs/${unit(s)}`;
            const other = `other CPU ${((run.otherCpuUs / (run.wallMs * 1000)) * 100).toFixed(0)}%`;
            console.log(`round ${round + 1}/${o.rounds} ${s.padEnd(4)} ${t.label}: ${Math.round(run.rate).toLocaleString('en-US')} ${unit(s)}/s${cpu} (${[...r.notes, ...r.info, other].join(', ')})`);
          } catch (err) {
            runs.push(failedRun(s, t.id, round + 1, (err as Error).message));
            console.log(`round ${round + 1}/${o.rounds} ${s.padEnd(4)} ${t.label}: FAILED ${(err as Error).message}`);
          }
          // Let sockets of the finished run close before the next one starts.
          await new Promise((r) => setTimeout(r, 300));
        }
      }
    }

    const rowsOf = (s: Scenario): Summary[] =>
      summarize(s, targets.map((t) => ({ id: t.id, label: t.label, error: blocked.get(key(t, s)) })), runs, o.rounds);
    const summaries = o.scenarios.map((s) => ({ scenario: s, rows: rowsOf(s) }));
    const titles: Record<Scenario, string> = {
      http: `HTTP keep-alive GET / (${o.httpConnections} connections, wrk -t1, ${o.durationS} s x ${o.rounds} rounds)`,
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
    ];
    report.push(
      '',
      'vs nginx / vs direct: ratio of median rates. proxy CPU-µs: CPU of the proxy\'s process tree / requests (messages) completed;',
      'user + sys: its user-space and kernel parts (medians of each).',
      'CPU eff. vs nginx: nginx\'s CPU-µs per unit / this row\'s (1.00x = as cheap as nginx). CPU columns: % of one core;',
      'other CPU: the rest of the machine\'s busy time in the window (harness, kernel threads, anything else running).',
    );
    const noisy = runs.filter((r) => r.ok && r.otherCpuUs / (r.wallMs * 1000) > NOISY_SHARE);
    if (noisy.length > 0) report.push(`WARNING: ${noisy.length} run(s) kept over ${NOISY_SHARE * 100}% of a core of other CPU use after retries: rerun on a quiet machine.`);
    const retried = runs.reduce((n, r) => n + (r.retries ?? 0), 0);
    if (retried > 0) report.push(`${retried} run(s) were repeated because other processes were busy during them.`);
    const stolen = runs.filter((r) => r.ok && r.stealUs / (r.wallMs * 1000) > 0.05);
    if (stolen.length > 0) report.push(`WARNING: ${stolen.length} run(s) lost over 5% of a core to hypervisor steal.`);
    if (c.pinning.enabled) {
      report.push(`Client and backends share CPU ${c.pinning.clientCpu}: when client + backend CPU nears 100% there, that core, not the proxy, caps the rate.`);
    }
    console.log(report.join('\n'));

    mkdirSync(path.dirname(o.out), { recursive: true });
    writeFileSync(o.out, `${JSON.stringify({ conditions: c, options: o, summary: summaries, runs }, null, 2)}\n`);
    console.log(`\nwrote ${path.relative(process.cwd(), o.out) || o.out}`);
  } finally {
    await stopAll();
    if (o.keepTmp) console.log(`temp folder kept: ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  async (err: Error) => {
    console.error(`bench: ${err.message}`);
    await stopAll();
    process.exit(1);
  },
);
