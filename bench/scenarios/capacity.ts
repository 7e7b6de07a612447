// `portico bench`: the capacity report. Runs the standard loads (lib/catalogue.ts) through Portico (1 worker) and,
// when installed, nginx (1 worker) and HAProxy (1 thread), plus direct-to-backend, in interleaved rounds; holds idle
// WebSockets at several counts to measure memory and descriptors; writes report.html, report.md and report.json
// (lib/report-files.ts) into --out. With -c it measures the user's config on synthetic backends, with --plan it
// sizes a deployment from the figures (lib/plan.ts). It never asserts a speed; see bench/README.md.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureSelfSigned } from '../../src/accept/tls.js';
import { nativeStatus } from '../../src/native/addon.js';
import { readArgs } from '../lib/args.js';
import { BULK_MESSAGE, FANOUT_INFLIGHT, IDLE_COUNTS, LOADS, generatorOf, type LoadSpec } from '../lib/catalogue.js';
import { checkFanout, checkHttp, checkWs, footprint, holdIdle, runWrk, runWsLoad, type IdleHold, type LoadResult, type Watch, type WsFlavour } from '../lib/loads.js';
import { nativeWsLoad, type NativeWsLoad } from '../lib/native-tools.js';
import { ROOT } from '../lib/paths.js';
import { figuresFrom, plan, PlanError, type PlanResult } from '../lib/plan.js';
import { readPlan } from '../lib/plan-file.js';
import { benchmarkMain, choosePinning, freePort, hasProc, peerVersions, processTree, type BenchmarkScope, type Pinning } from '../lib/procs.js';
import { collectGarbageIn } from '../../test/helpers/inspector-gc.js';
import type { Conditions, IdleSeries, Recorded } from '../lib/recorded.js';
import { UNIT, type Scenario } from '../lib/report.js';
import { renderReport } from '../lib/report-files.js';
import { runPlan } from '../lib/rounds.js';
import { summarizeRecorded } from '../lib/summary.js';
import { FANOUT_PATH, FANOUT_TOPIC, type TargetId } from '../lib/shape.js';
import {
  alive, directTarget, porticoRevision, startBackends, startHaproxy, startNginxProxy, startPortico, truncateLog, type Backends, type Target, type TlsListener,
} from '../peers/targets.js';
import { startUserPortico, type UserTarget } from '../peers/user-config.js';

const TARGET_IDS = ['direct', 'nginx', 'haproxy', 'portico', 'portico-terminate'] as const;
type CapacityTargetId = (typeof TARGET_IDS)[number];

interface Options {
  quick: boolean;
  out: string;
  config?: string;
  plan?: string;
  from?: string;
  rounds: number;
  durationS: number;
  warmupS: number;
  loads: LoadSpec[];
  targets: CapacityTargetId[] | undefined;
  idleCounts: number[];
  pin: boolean;
  noisyRetries: number;
  keepTmp: boolean;
}

const USAGE = `usage: portico bench [options]        (from the repository: npm run bench:capacity -- [options])
  --quick              under 2 minutes: 1 round x 1 s, no warm-up, no connection sweep, no direct row, idle memory at 200
                       connections through Portico only
  --out DIR            where report.html, report.md and report.json go (default bench-report/)
  -c, --config FILE    measure this Portico config (listeners, certificates, routes, header rules) on synthetic backends
  --plan FILE          a traffic mix (YAML, bench/README.md): the cores, memory and descriptors it needs
  --from FILE          with --plan: take the figures from this report.json instead of running the loads
  --rounds N           rounds (default 3; --quick 1)
  --duration S         seconds per timed run (default 5; --quick 1)
  --warmup S           untimed warm-up per load and target before round 1 (default 1; --quick 0)
  --only LIST          comma list of loads: ${LOADS.map((l) => l.id).join(',')}
  --targets LIST       comma list of ${TARGET_IDS.join(',')} (default: all available)
  --idle-counts LIST   idle WebSockets held at each step (default ${IDLE_COUNTS.full.join(',')}; --quick ${IDLE_COUNTS.quick.join(',')}); 0 = none
  --no-pin             do not pin processes to CPUs
  --noisy-retries N    rerun a round up to N times while other processes disturb it (default 1; --quick 0)
  --keep-tmp           keep the temp folder with generated configs and logs`;

function parseOptions(argv: string[]): Options {
  // `-c FILE` is the CLI's spelling everywhere else; the shared parser knows long flags only.
  const args = argv.map((a) => (a === '-c' ? '--config' : a));
  const a = readArgs(
    args,
    {
      quick: 'boolean', out: 'string', config: 'string', plan: 'string', from: 'string', rounds: 'string', duration: 'string', warmup: 'string', only: 'string',
      targets: 'string', 'idle-counts': 'string', 'no-pin': 'boolean', 'noisy-retries': 'string', 'keep-tmp': 'boolean',
    },
    USAGE,
  );
  const quick = a.has('quick');
  const only = a.list('only', LOADS.map((l) => l.id));
  const counts = a.str('idle-counts', (quick ? IDLE_COUNTS.quick : IDLE_COUNTS.full).join(','));
  const idleCounts = counts.split(',').map((s) => Number(s));
  if (idleCounts.some((n) => !Number.isInteger(n) || n < 0 || n > 9000)) throw new Error(`--idle-counts takes integers in [0, 9000], got "${counts}"\n${USAGE}`);
  const o: Options = {
    quick,
    out: path.resolve(a.str('out', 'bench-report')),
    config: a.str('config', '') || undefined,
    plan: a.str('plan', '') || undefined,
    from: a.str('from', '') || undefined,
    rounds: a.int('rounds', quick ? 1 : 3, 1, 100),
    durationS: a.num('duration', quick ? 1 : 5, 0.5, 3600),
    warmupS: a.num('warmup', quick ? 0 : 1, 0, 600),
    loads: LOADS.filter((l) => (only === undefined ? !(quick && l.fullOnly === true) : only.includes(l.id))),
    targets: a.list('targets', TARGET_IDS),
    idleCounts: [...new Set(idleCounts.filter((n) => n > 0))].sort((x, y) => x - y),
    pin: !a.has('no-pin'),
    noisyRetries: a.int('noisy-retries', quick ? 0 : 1, 0, 10),
    keepTmp: a.has('keep-tmp'),
  };
  if (o.from !== undefined && o.plan === undefined) throw new Error(`--from needs --plan\n${USAGE}`);
  return o;
}

/** Seconds a timed run costs beyond its window: spawning the generator, connecting, the pause between runs. */
const RUN_OVERHEAD_S = 1.3;

function loadavg(): number[] {
  return os.loadavg().map((v) => Math.round(v * 100) / 100);
}

/** Reads and checks the plan file first, so a bad plan fails before minutes of loads. */
function readPlanFile(file: string): ReturnType<typeof readPlan> & { ok: true } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`--plan ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const r = readPlan(text);
  if (!r.ok) throw new Error(`--plan ${file}:\n  ${r.errors.join('\n  ')}`);
  return r;
}

function planFrom(rec: Recorded, file: string): PlanResult {
  const { input } = readPlanFile(file);
  try {
    return plan(input, figuresFrom(summarizeRecorded(rec), rec.idle, input.tls));
  } catch (err) {
    if (err instanceof PlanError) throw new Error(`--plan ${file}: ${err.message}`);
    throw err;
  }
}

function writeReport(o: Options, rec: Recorded, planResult: PlanResult | undefined): void {
  const files = renderReport(rec, planResult);
  mkdirSync(o.out, { recursive: true });
  writeFileSync(path.join(o.out, 'report.json'), files.json);
  writeFileSync(path.join(o.out, 'report.md'), files.md);
  writeFileSync(path.join(o.out, 'report.html'), files.html);
  const shown = path.relative(process.cwd(), o.out) || '.';
  console.log(`\nwrote ${shown}/report.html, ${shown}/report.md, ${shown}/report.json`);
}

/**
 * Whether this build's `portico check` accepts `websocket: { mode: terminate }` (the terminated WebSocket exists),
 * and if not, what check said. Tried twice: a check killed by its timeout on a busy machine is not an answer.
 */
function terminateAvailable(tmp: string): { ok: boolean; why: string } {
  const file = path.join(tmp, 'terminate-probe.yaml');
  writeFileSync(file, 'listeners: [{ address: 127.0.0.1:1 }]\nupstreams: { a: { targets: [127.0.0.1:2] } }\nroutes: [{ match: { path: / }, proxy: a, websocket: { mode: terminate } }]\n');
  let why = '';
  for (let i = 0; i < 2; i++) {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'portico.js'), 'check', '-c', file], { encoding: 'utf8', timeout: 30_000 });
    if (r.status === 0) return { ok: true, why: '' };
    why = `${r.error?.message ?? r.signal ?? `exit ${r.status}`}: ${`${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-2).join(' ').slice(0, 300)}`;
  }
  return { ok: false, why };
}

function applies(t: Target | UserTarget, l: LoadSpec): boolean {
  // Fan-out needs the benchmark's own backend routes (a user's config has no publish endpoint to drive).
  if (l.fanout === true && t.id === 'portico-user') return false;
  if (l.tls && t.tlsPort === undefined) return false;
  if (!l.tls && t.id !== 'direct' && 'plainPort' in t && t.plainPort === undefined) return false;
  if (t.id === 'portico-terminate') return l.websocket && l.bulk !== true;
  return true;
}

function main(): void {
  const o = parseOptions(process.argv.slice(2));
  if (o.from !== undefined && o.plan !== undefined) {
    const rec = JSON.parse(readFileSync(o.from, 'utf8')) as Recorded;
    const p = planFrom(rec, o.plan);
    printPlan(p);
    writeReport(o, rec, p);
    return;
  }
  if (o.plan !== undefined) readPlanFile(o.plan);
  if (!hasProc) throw new Error('portico bench reads CPU time and memory from /proc: run it on Linux');
  benchmarkMain('capacity', o.keepTmp, (scope) => bench(o, scope));
}

function printPlan(p: PlanResult): void {
  console.log(`\nplan: ${p.cores} core(s) (busy ${p.busyCores.toFixed(2)} before ${(p.input.headroom * 100).toFixed(0)}% headroom), `
    + `${(p.memoryMiBWithHeadroom / 1024).toFixed(1)} GiB memory, ${p.fdsWithHeadroom.toLocaleString('en-US')} file descriptors`);
  for (const l of p.lines) console.log(`  ${l.what}: ${Math.round(l.rate).toLocaleString('en-US')} ${l.unit}/s x ${l.figure.value.toFixed(1)} ${l.figure.unit} = ${l.cores.toFixed(2)} cores (${l.figure.from})`);
}

async function bench(o: Options, scope: BenchmarkScope): Promise<void> {
  const { tmp, started, stopped } = scope;
  const cpus = os.availableParallelism();
  const pinning: Pinning = choosePinning(o.pin, cpus);
  const pin = pinning.enabled ? pinning : undefined;
  const peers = peerVersions();
  const notes: string[] = [];
  let loads = o.loads;
  if (peers.wrk === undefined) {
    notes.push('wrk is not installed: the HTTP loads were skipped (apt-get install wrk)');
    loads = loads.filter((l) => l.generator !== 'wrk');
  }
  // --quick leaves out direct-to-backend (the ceiling of client + backends), which no ratio needs, to stay under 2 minutes.
  const wanted = (id: CapacityTargetId): boolean =>
    o.config === undefined && (o.targets === undefined ? !(o.quick && id === 'direct') : o.targets.includes(id));
  const probe = wanted('portico-terminate') ? terminateAvailable(tmp) : { ok: false, why: '' };
  const term = probe.ok;
  if (wanted('portico-terminate') && !term) {
    notes.push(`terminated WebSocket (websocket.mode terminate): portico check refused it (${probe.why}), so no row`);
    console.log(`portico-terminate: no row: portico check refused websocket.mode terminate (${probe.why})`);
  }
  // The native WebSocket client (bench/native/ws-load.cc) drives the WebSocket loads; the JS one is the fallback.
  const nativeWs = nativeWsLoad();
  const native: NativeWsLoad | undefined = nativeWs.ok ? nativeWs.tool : undefined;
  if (!nativeWs.ok) {
    notes.push(`native ws-load not available (${nativeWs.reason}): the WebSocket loads ran on the JS client, which may be the bottleneck (see client CPU); no fan-out load`);
    loads = loads.filter((l) => l.fanout !== true);
  } else if (!nativeWs.tool.tls) notes.push('native ws-load built without OpenSSL: the wss loads ran on the JS client (apt-get install libssl-dev; npm run build:bench-tools)');
  const nativeFor = (l: LoadSpec): NativeWsLoad | undefined => (native !== undefined && (!l.tls || native.tls) ? native : undefined);
  const addon = nativeStatus();
  const conditions: Conditions = {
    date: new Date().toISOString(), finishedAt: '', command: `portico bench ${process.argv.slice(2).join(' ')}`.trim(),
    cpus, cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown', kernel: `${os.type()} ${os.release()}`, node: process.version, memTotalKiB: Math.round(os.totalmem() / 1024),
    versions: { portico: porticoRevision(), ...peers, openssl: process.versions.openssl ?? 'unknown' },
    pinning: { enabled: pinning.enabled, reason: pinning.reason, proxyCpu: pinning.proxyCpu, clientCpu: pinning.clientCpu },
    loadAvgBefore: loadavg(), loadAvgAfter: [],
    backends: { http: '', ws: 'uWebSockets.js App echo (C++ framing), one node process' },
    addon: addon.native ? 'native addon loaded: splice and native socket I/O' : `no native addon (${addon.reason ?? 'unknown'}): JS paths`,
    rounds: o.rounds, durationS: o.durationS, warmupS: o.warmupS, quick: o.quick, notes,
  };

  const backends: Backends = await startBackends(tmp, peers.nginx !== undefined, pin?.backendCpu);
  started.push(backends.http, backends.ws);
  conditions.backends.http = backends.httpKind === 'nginx' ? `nginx ${peers.nginx}, 1 worker, \`return 200\` (17-byte body)` : 'node:http (17-byte body; nginx not installed)';
  const certDir = path.join(tmp, 'tls');
  const cert = path.join(certDir, 'bench.crt');
  const key = path.join(certDir, 'bench.key');
  await ensureSelfSigned(cert, key, ['localhost', '127.0.0.1']);
  const pem = path.join(certDir, 'bench.pem');
  writeFileSync(pem, `${readFileSync(cert, 'utf8')}\n${readFileSync(key, 'utf8')}`);
  const tlsFor = async (): Promise<TlsListener> => ({ port: await freePort(), cert, key, pem });

  const targets: Array<Target | UserTarget> = [];
  const add = (t: Target | UserTarget): void => {
    targets.push(t);
    if (t.proc !== undefined) started.push(t.proc);
    if (t.error !== undefined) console.log(`${t.label}: ${t.error}`);
  };
  if (o.config !== undefined) {
    const user = await startUserPortico(tmp, o.config, backends, pin?.proxyCpu);
    add(user);
    notes.push(...user.notes);
  } else {
    if (wanted('direct')) add(directTarget(backends));
    if (wanted('nginx') && peers.nginx !== undefined) add(await startNginxProxy(tmp, backends, peers.nginx, pin?.proxyCpu, await tlsFor()));
    if (wanted('haproxy') && peers.haproxy !== undefined) add(await startHaproxy(tmp, backends, peers.haproxy, pin?.proxyCpu, await tlsFor()));
    // the inspector (idle only): Portico's idle memory is read after a full GC in its processes (measureIdle)
    const inspect = o.idleCounts.length > 0;
    if (wanted('portico')) add(await startPortico(tmp, backends, false, pin?.proxyCpu, { tls: await tlsFor(), inspect }));
    if (term) add(await startPortico(tmp, backends, false, pin?.proxyCpu, { tls: await tlsFor(), terminate: true, admin: true, inspect }));
    if (inspect && (wanted('portico') || term)) {
      notes.push("Portico's idle memory is read after a full garbage collection in its processes (through the inspector): V8 frees the handshakes' garbage by itself only some 10-30 s into idleness; nginx and HAProxy have none");
    }
    if (peers.nginx === undefined) notes.push('nginx is not installed: no nginx row, no ratio vs nginx');
    if (peers.haproxy === undefined) notes.push('HAProxy is not installed: no HAProxy row');
  }

  const runsPerRound = loads.reduce((n, l) => n + targets.filter((t) => applies(t, l)).length, 0);
  const idleSteps = targets.filter((t) => t.id !== 'direct' && (!o.quick || t.id.startsWith('portico'))).length * 2 * o.idleCounts.length;
  const idleS = idleSteps * 3 + (o.idleCounts.at(-1) ?? 0) / 250;
  const totalRuns = runsPerRound * (o.rounds + (o.warmupS > 0 ? 1 : 0));
  const expectS = runsPerRound * o.rounds * (o.durationS + RUN_OVERHEAD_S) + (o.warmupS > 0 ? runsPerRound * (o.warmupS + RUN_OVERHEAD_S) : 0) + idleS;
  console.log(`portico bench: ${loads.length} loads x ${targets.length} targets (${runsPerRound} runs per round) x ${o.rounds} round(s) of ${o.durationS} s, `
    + `idle memory at ${o.idleCounts.join(', ') || 'no'} connections: expected duration about ${Math.ceil(expectS / 60)} min (load average now ${conditions.loadAvgBefore.join(' ')})`);

  // --quick measures idle memory through Portico only (the peers' curves are the full run's).
  const idleTargets = o.quick ? targets.filter((t) => t.id.startsWith('portico')) : targets;
  const idle = o.idleCounts.length === 0 ? [] : await measureIdle(idleTargets, o.idleCounts, pin?.clientCpu, stopped);

  let done = 0;
  let reruns = 0; // disturbed runs run again: each is one more run than planned
  let overheadS = 0;
  const t0 = Date.now();
  const warmups = o.warmupS > 0 ? runsPerRound : 0;
  // What is left: each remaining run's window plus the overhead measured so far (spawn, connect, pause).
  const progress = (what: string, windowS: number, startedAt: number): void => {
    done++;
    overheadS += (Date.now() - startedAt) / 1000 - windowS;
    const ov = overheadS / done;
    const total = totalRuns + reruns;
    const left = Math.max(0, warmups - done) * (o.warmupS + ov) + Math.min(total - warmups, total - done) * (o.durationS + ov);
    const again = reruns > 0 ? ` (${reruns} disturbed run${reruns === 1 ? '' : 's'} run again)` : '';
    process.stderr.write(`[${done}/${total}] ${what}; ${Math.round((Date.now() - t0) / 1000)} s elapsed, about ${Math.ceil(Math.max(0, left))} s left${again}\n`);
  };
  const byId = new Map(loads.map((l) => [l.id, l]));
  const watchOf = (t: Target | UserTarget): Watch => ({ proxy: t.proc?.pid, backend: [backends.http.pid, backends.ws.pid] });
  const portOf = (t: Target | UserTarget, l: LoadSpec): number => {
    if (l.tls) return t.tlsPort as number;
    if ('plainPort' in t) return t.plainPort as number;
    return l.websocket ? t.wsPort : t.httpPort;
  };
  const pathsOf = (t: Target | UserTarget): { httpPath?: string; wsPath?: string; host?: string } => ('paths' in t ? t.paths : {});
  // Fan-out: terminating Portico publishes to its clients itself (admin API); through every other target the
  // backend publishes to the tunnelled WebSockets.
  const fanoutOf = (t: Target | UserTarget): WsFlavour & { native: NativeWsLoad; publish: NonNullable<WsFlavour['publish']> } => ({
    mode: 'recv', path: FANOUT_PATH, native: native as NativeWsLoad,
    publish: t.id === 'portico-terminate' && 'adminPort' in t && t.adminPort !== undefined
      ? { port: t.adminPort, path: `/topics/${FANOUT_TOPIC}/publish`, header: 'X-Portico-Admin: 1', inflight: FANOUT_INFLIGHT }
      : { port: backends.wsPort, path: '/publish', inflight: FANOUT_INFLIGHT },
  });
  const { runs } = await runPlan<Target | UserTarget, Scenario>({
    targets,
    loads: loads.map((l) => l.id),
    rounds: o.rounds,
    warmupS: o.warmupS,
    durationS: o.durationS,
    noisyRetries: o.noisyRetries,
    onRerun: () => reruns++,
    applies: (t, id) => applies(t, byId.get(id) as LoadSpec),
    check: async (t, id) => {
      const l = byId.get(id) as LoadSpec;
      const p = pathsOf(t);
      if (l.generator === 'wrk') checkHttp(portOf(t, l), { tls: l.tls, close: l.close, path: p.httpPath, host: p.host });
      else if (l.fanout === true) checkFanout(portOf(t, l), l.size ?? 16, fanoutOf(t));
      else await checkWs(portOf(t, l), Math.min(l.size ?? 32, 4096), l.tls, { path: p.wsPath, host: p.host });
    },
    load: async (t, id, durationS) => {
      const l = byId.get(id) as LoadSpec;
      const startedAt = Date.now();
      if (!alive(t)) throw new Error(`${t.label} exited: ${t.proc?.tail() ?? ''}`);
      truncateLog(t);
      const p = pathsOf(t);
      try {
        const r: LoadResult = l.generator === 'wrk'
          ? await runWrk(portOf(t, l), l.connections, durationS, watchOf(t), pin?.clientCpu, { tls: l.tls, close: l.close, path: p.httpPath, host: p.host })
          : l.fanout === true
            ? await runWsLoad(portOf(t, l), l.connections, l.size ?? 16, durationS, watchOf(t), pin?.clientCpu, fanoutOf(t))
            : await runWsLoad(portOf(t, l), l.connections, l.size ?? 32, durationS, watchOf(t), pin?.clientCpu, { tls: l.tls, mode: l.mode, path: p.wsPath, host: p.host, native: nativeFor(l) });
        // Bulk loads count MiB each way: every echoed message carried BULK_MESSAGE bytes up and as many down.
        if (l.bulk === true) {
          const mib = (r.count * BULK_MESSAGE) / (1024 * 1024);
          r.rate = (r.rate * BULK_MESSAGE) / (1024 * 1024);
          r.count = mib;
        }
        return r;
      } finally {
        truncateLog(t);
        progress(`${id} ${t.label}`, durationS, startedAt);
      }
    },
    stopped,
  });

  conditions.finishedAt = new Date().toISOString();
  conditions.loadAvgAfter = loadavg();
  const rec: Recorded = {
    version: 1,
    conditions,
    targets: targets.map((t) => ({ id: t.id, label: t.label, ...(t.error === undefined ? {} : { error: t.error }) })),
    loads: loads.map((l) => ({ id: l.id, title: l.title, unit: UNIT[l.id], tls: l.tls, generator: generatorOf(l, nativeWs.ok ? { ok: true, tls: nativeWs.tool.tls } : nativeWs) })),
    runs,
    idle,
  };
  const p = o.plan === undefined ? undefined : planFrom(rec, o.plan);
  writeReport(o, rec, p);
  const summary = summarizeRecorded(rec);
  const failed = summary.flatMap((s) => s.rows.filter((r) => r.marks.includes('failed')).map((r) => `${s.load.id} ${r.label}: ${r.why[0] ?? ''}`));
  for (const s of summary) {
    const r = s.rows.find((x) => x.target === 'portico' || x.target === 'portico-user');
    if (r?.perCore !== undefined) console.log(`  ${s.load.title}: Portico ${Math.round(r.perCore).toLocaleString('en-US')} ${s.load.unit}/s per core${r.marks.length > 0 ? ` [${r.marks.join(', ')}]` : ''}`);
  }
  if (p !== undefined) printPlan(p);
  if (failed.length > 0) console.log(`\nloads that did not run:\n  ${failed.join('\n  ')}`);
  // Exit 0 when every load ran through Portico; a peer that failed is reported in its rows.
  if (failed.some((f) => / Portico/.test(f))) throw new Error('some loads did not run through Portico (above)');
}

/**
 * Holds idle WebSockets through each proxy at each count (plain, then TLS), reading the proxy tree's RSS and
 * descriptors at rest and at every step. Runs before the throughput loads, on freshly started proxies.
 */
async function measureIdle(targets: ReadonlyArray<Target | UserTarget>, counts: readonly number[], clientCpu: string | undefined, stopped: () => boolean): Promise<IdleSeries[]> {
  const out: IdleSeries[] = [];
  for (const t of targets) {
    if (t.id === 'direct' || t.proc === undefined || t.error !== undefined) continue;
    for (const tls of [false, true]) {
      const port = tls ? t.tlsPort : 'plainPort' in t ? t.plainPort : t.wsPort;
      if (port === undefined || stopped()) continue;
      const series: IdleSeries = { target: t.id as TargetId, label: t.label, tls, baseline: { rssKiB: 0, fds: 0 }, points: [] };
      out.push(series);
      const holds: IdleHold[] = [];
      const wsPath = 'paths' in t ? t.paths.wsPath : undefined;
      try {
        // A few connections first: the relay thread, TLS context and pools exist before the baseline is read.
        const warm = await holdIdle(port, 10, tls, clientCpu, 30, wsPath);
        await warm.release();
        await settle();
        await collectGarbage(t);
        series.baseline = footprint(t.proc.pid);
        let held = 0;
        for (const n of counts) {
          holds.push(await holdIdle(port, n - held, tls, clientCpu, 60, wsPath));
          held = n;
          await settle();
          await collectGarbage(t);
          series.points.push({ connections: n, ...footprint(t.proc.pid) });
          process.stderr.write(`idle ${tls ? 'wss' : 'ws'} ${t.label}: ${n} connections, RSS ${(series.points.at(-1)?.rssKiB ?? 0) / 1024 | 0} MiB\n`);
        }
      } catch (err) {
        series.error = (err as Error).message;
        console.log(`idle ${tls ? 'wss' : 'ws'} ${t.label}: FAILED ${series.error}`);
      } finally {
        await Promise.all(holds.map((h) => h.release()));
        await settle();
      }
    }
  }
  return out;
}

/** A full GC in every process of a Portico started with its inspector (what its idle connections hold for good). */
async function collectGarbage(t: Target | UserTarget): Promise<void> {
  const said = 'inspector' in t ? t.inspector?.() : undefined;
  if (said === undefined || t.proc === undefined) return;
  // a process without an inspector session (none expected) is read as it is
  for (const p of processTree(t.proc.pid)) await collectGarbageIn(said, p.pid).catch(() => undefined);
}

/**
 * Lets closes, frees and the allocator settle before /proc is read: 1.5 s, so that a Portico worker has seen a
 * second without TLS handshakes and returned their freed memory to the system (src/native/tls.cc TrimIdle).
 */
function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 1500));
}

try {
  main();
} catch (err) {
  console.error(`portico bench: ${(err as Error).message}`);
  process.exit(1);
}
