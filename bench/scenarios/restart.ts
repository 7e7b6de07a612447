// How long a SIGKILLed worker is gone: `portico start` (from --root, any checkout with dist/ built) with 2 workers,
// then each worker in turn is killed with SIGKILL and the times are read from the primary's log lines: kill ->
// exit seen, -> replacement forked ("worker started"), -> replacement accepting ("worker ready": its listeners
// accept and it answered the primary's apply). Optional load while it happens: --busy N busy CPU loops (normal
// priority) and --traffic N kept-alive wrk connections through Portico. A fresh instance per round, so every kill is
// a first restart (the shortest restart backoff). Not a test: it prints figures and their conditions, and asserts nothing.
// Usage: npm run bench:restart -- [--root DIR] [--rounds 3] [--busy 2] [--traffic 4] [--settle 3] [--standby on|off]
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { benchmarkMain, readStat, rssKiB, spawnProcess, stopTree, type BenchmarkScope, type Spawned } from '../lib/procs.js';
import { median } from '../lib/stats.js';

const USAGE = `usage: npm run bench:restart -- [options]
  --root DIR       checkout whose dist/ and bin/portico.js are measured (default: the current folder)
  --rounds N       Portico instances, each killed twice (worker 1, then worker 2) (default 3)
  --busy N         busy CPU loops (node, normal priority) running from before the first kill (default 0)
  --traffic N      kept-alive wrk connections (GET /) through Portico during the kills, 0 for none (default 4)
  --settle S       seconds between a worker being back and the next kill (default 1)
  --standby on|off writes standby_worker into the config (default: not written, the checkout's default)`;

const args = readArgs(process.argv.slice(2), { root: 'string', rounds: 'string', busy: 'string', traffic: 'string', settle: 'string', standby: 'string' }, USAGE);
const root = path.resolve(args.str('root', process.cwd()));
const rounds = args.int('rounds', 3, 1, 50);
const busy = args.int('busy', 0, 0, 16);
const traffic = args.int('traffic', 4, 0, 256);
const settleMs = args.num('settle', 1, 0, 60) * 1000;
const standbyOption = args.oneOf('standby', ['on', 'off'] as const, undefined);
/** Any one wait of the harness (a log line, a process start) gives up after this. */
const WAIT_MS = 30_000;

interface LogLine {
  readonly msg?: string;
  /** ISO 8601 with milliseconds (log.ts). */
  readonly time?: string;
  readonly worker?: number;
  readonly workerPid?: number;
  readonly [key: string]: unknown;
}

/** The JSON lines of one Portico's stdout, and waits for the first (from now on, or already seen) matching one. */
class LogWatch {
  readonly #lines: LogLine[] = [];
  readonly #waiters: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  #buf = '';

  constructor(proc: Spawned) {
    proc.child.stdout?.on('data', (c: Buffer) => {
      this.#buf += c.toString('utf8');
      const parts = this.#buf.split('\n');
      this.#buf = parts.pop() ?? '';
      for (const text of parts) {
        if (!text.startsWith('{')) continue;
        let line: LogLine;
        try {
          line = JSON.parse(text) as LogLine;
        } catch {
          continue;
        }
        this.#lines.push(line);
        for (const w of this.#waiters.splice(0)) {
          if (w.pred(line)) w.resolve(line);
          else this.#waiters.push(w);
        }
      }
    });
  }

  /** The first line since index `from` matching `pred`, within WAIT_MS. */
  wait(what: string, pred: (l: LogLine) => boolean, from = 0): Promise<LogLine> {
    const seen = this.#lines.slice(from).find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${what}" log line within ${WAIT_MS} ms`)), WAIT_MS);
      this.#waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }

  /** The last line seen so far matching `pred`. */
  last(pred: (l: LogLine) => boolean): LogLine | undefined {
    return this.#lines.findLast(pred);
  }

  get count(): number {
    return this.#lines.length;
  }
}

interface Kill {
  round: number;
  worker: number;
  exitSeenMs: number;
  forkedMs: number;
  readyMs: number;
  /**
   * CPU time (user + system) the replacement's process had used when it was accepting: a fresh fork's whole start,
   * whatever the load; a standby's includes loading its modules, done before the kill.
   */
  cpuMs: number;
  rssKiB: number;
  /** A standby worker took the slot (standby_worker), rather than a fresh fork. */
  standby: boolean;
  /** RSS and private memory of the standby waiting at this kill (KiB), 0 when none was ready by then. */
  standbyKiB: number;
  standbyPrivateKiB: number;
  /** CPU the standby had used when the kill came (its module load), NaN when none was ready: cpuMs minus this is its apply. */
  standbyCpuMs: number;
}

/** Memory only this process holds (Private_Clean + Private_Dirty of smaps_rollup, KiB): what another process costs, the node binary and shared libraries left out. 0 when gone. */
function privateKiB(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return ['Private_Clean', 'Private_Dirty'].reduce((sum, k) => sum + Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(text)?.[1] ?? 0), 0);
  } catch {
    return 0;
  }
}

/** When a log line was written (ms since the epoch, this machine's clock). */
const at = (l: LogLine): number => Date.parse(l.time ?? '');

const load = (): string => os.loadavg().map((n) => n.toFixed(2)).join(' ');

async function get(port: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/`);
  await res.arrayBuffer();
  return res.status;
}

async function round(dir: string, started: Spawned[], backendPort: number, n: number, kills: Kill[]): Promise<void> {
  const file = path.join(dir, `r${n}.yaml`);
  writeFileSync(
    file,
    [
      '# Written by bench/scenarios/restart.ts',
      'workers: 2',
      ...(standbyOption === undefined ? [] : [`standby_worker: ${standbyOption === 'on'}`]),
      'listeners: [{ address: 127.0.0.1:0 }]',
      `upstreams: { app: { targets: [127.0.0.1:${backendPort}] } }`,
      'routes: [{ match: { path: / }, proxy: app }]',
      'log: { level: info, access: false }',
      'timeouts: { shutdown_grace: 1s }',
      '',
    ].join('\n'),
  );
  const proc = spawnProcess(process.execPath, [path.join(root, 'bin', 'portico.js'), 'start', '-c', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(proc);
  const log = new LogWatch(proc);
  try {
    const listening = await log.wait('listening', (l) => l.msg === 'listening');
    const port = (listening.listeners as Array<{ port: number }>)[0].port;
    const pids = new Map<number, number>();
    for (const id of [1, 2]) pids.set(id, (await log.wait(`worker ${id} ready`, (l) => l.msg === 'worker ready' && l.worker === id)).workerPid ?? 0);
    // the result before the timing: Portico answers through the backend
    const status = await get(port);
    if (status !== 200) throw new Error(`GET / through Portico answered ${status}, not 200`);
    let wrk: Spawned | undefined;
    if (traffic > 0) {
      wrk = spawnProcess('wrk', ['-t1', `-c${traffic}`, '-d600s', '--timeout', '2s', `http://127.0.0.1:${port}/`]);
      started.push(wrk);
    }
    for (const id of [1, 2]) {
      await new Promise((r) => setTimeout(r, settleMs));
      const victim = pids.get(id) ?? 0;
      // the standby waiting now (if one is ready): its memory is what the option costs
      const waiting = log.last((l) => l.msg === 'standby worker ready');
      const standbyKiB = waiting === undefined ? 0 : rssKiB(waiting.workerPid ?? 0);
      const standbyPrivateKiB = waiting === undefined ? 0 : privateKiB(waiting.workerPid ?? 0);
      const standbyCpuMs = waiting === undefined ? NaN : Math.round((readStat(waiting.workerPid ?? 0)?.cpuUs ?? NaN) / 1000);
      const from = log.count;
      const killedAt = Date.now();
      process.kill(victim, 'SIGKILL');
      const exited = await log.wait('worker exited', (l) => l.msg === 'worker exited unexpectedly: restarting it' && l.workerPid === victim, from);
      const forked = await log.wait('worker started', (l) => l.msg === 'worker started' && l.worker === id && l.workerPid !== victim, from);
      const ready = await log.wait('worker ready', (l) => l.msg === 'worker ready' && l.worker === id && l.workerPid === forked.workerPid, from);
      pids.set(id, ready.workerPid ?? 0);
      kills.push({ round: n, worker: id, exitSeenMs: at(exited) - killedAt, forkedMs: at(forked) - killedAt, readyMs: at(ready) - killedAt, cpuMs: Math.round((readStat(ready.workerPid ?? 0)?.cpuUs ?? NaN) / 1000), rssKiB: rssKiB(ready.workerPid ?? 0), standby: forked.standby === true, standbyKiB, standbyPrivateKiB, standbyCpuMs });
    }
    if (wrk !== undefined) await stopTree(wrk, 2000, 'SIGINT');
    if ((await get(port)) !== 200) throw new Error('Portico did not answer 200 after the kills');
  } finally {
    await stopTree(proc, 5000);
  }
}

async function main({ tmp, started, stopped }: BenchmarkScope): Promise<void> {
  const backend = http.createServer((_, res) => res.end('ok\n'));
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  const loadBefore = load();
  for (let i = 0; i < busy; i++) started.push(spawnProcess(process.execPath, ['-e', 'for (;;) {}']));
  const kills: Kill[] = [];
  try {
    for (let n = 1; n <= rounds && !stopped(); n++) await round(tmp, started, (backend.address() as AddressInfo).port, n, kills);
  } finally {
    backend.close();
  }
  const pad = (v: string | number, w: number): string => String(v).padStart(w);
  console.log(`restart after SIGKILL, 2 workers: node ${process.version}, ${os.cpus().length} CPUs, busy loops ${busy}, wrk connections ${traffic}, standby_worker ${standbyOption ?? '(default)'}, settle ${settleMs / 1000} s, root ${root}`);
  console.log(`load average before ${loadBefore}, after ${load()}; times from the primary's log lines (ms after the kill)`);
  console.log(`${pad('round', 5)} ${pad('worker', 6)} ${pad('exit seen', 9)} ${pad('forked', 7)} ${pad('accepting', 9)} ${pad('proc CPU ms', 12)} ${pad('new RSS KiB', 11)} ${pad('standby', 7)} ${pad('standby RSS KiB', 15)} ${pad('(private)', 9)} ${pad('apply CPU ms', 12)}`);
  for (const k of kills) console.log(`${pad(k.round, 5)} ${pad(k.worker, 6)} ${pad(k.exitSeenMs, 9)} ${pad(k.forkedMs, 7)} ${pad(k.readyMs, 9)} ${pad(k.cpuMs, 12)} ${pad(k.rssKiB, 11)} ${pad(k.standby ? 'took' : '-', 7)} ${pad(k.standbyKiB, 15)} ${pad(k.standbyPrivateKiB, 9)} ${pad(k.standby && Number.isFinite(k.standbyCpuMs) ? k.cpuMs - k.standbyCpuMs : '-', 12)}`);
  const ready = kills.map((k) => k.readyMs);
  console.log(`kill -> accepting: median ${median(ready)} ms, max ${Math.max(...ready)} ms over ${ready.length} kills; kill -> forked: median ${median(kills.map((k) => k.forkedMs))} ms; the replacement process's CPU when accepting: median ${median(kills.map((k) => k.cpuMs))} ms`);
}

benchmarkMain('restart', false, main);
