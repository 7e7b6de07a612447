// Child processes of the benchmark: spawn (optionally pinned with taskset), wait for a port, read CPU time of a
// process tree from /proc, stop a tree, and a benchmark's lifetime (temp folder, signals, every process stopped
// at the end). Only processes this harness spawned are ever signalled, by pid.
// It knows nothing about proxies or load generators; peers/targets.ts and lib/loads.ts build on it.
import { spawn, spawnSync, execFileSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** Clock ticks per second of /proc/PID/stat times (USER_HZ); 100 on every mainstream Linux build. */
const CLK_TCK = readClockTicks();

function readClockTicks(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
}

/** Converts clock ticks (as in /proc/PID/stat) to microseconds. */
export function ticksToUs(ticks: number): number {
  return (ticks * 1e6) / CLK_TCK;
}

export const hasProc = (() => {
  try {
    readFileSync('/proc/self/stat');
    return true;
  } catch {
    return false;
  }
})();

/** Whole-machine CPU time from the first line of /proc/stat, in microseconds summed over all CPUs. */
export interface MachineCpu {
  /** user + nice + system + irq + softirq: everything that ran, whoever it ran for. */
  busyUs: number;
  /** Time the hypervisor gave this VM's CPUs to someone else. */
  stealUs: number;
}

export function readMachineCpu(): MachineCpu {
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0];
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return { busyUs: ticksToUs(user + nice + system + (irq ?? 0) + (softirq ?? 0)), stealUs: ticksToUs(steal ?? 0) };
  } catch {
    return { busyUs: 0, stealUs: 0 };
  }
}

/** Resident memory of one process (VmRSS), KiB; 0 when it is gone. */
export function rssKiB(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Open file descriptors of one process; 0 when it is gone or not readable. */
export function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

export interface ProcStat {
  pid: number;
  ppid: number;
  /** Short command name as the kernel keeps it (`comm`). */
  comm: string;
  /** utime + stime in microseconds, all threads of the process. */
  cpuUs: number;
  /** stime alone: time in the kernel on the process's behalf (syscalls, and loopback TCP delivery they drive). */
  sysUs: number;
  /** Start time in clock ticks since boot: with the pid, it names one process (pids get reused). */
  start: number;
}

/** Parses /proc/PID/stat; `comm` may hold spaces and parentheses, so fields are read after the last ')'. */
export function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  // After ") ": state(3) ppid(4) ... utime(14) stime(15); index 0 here is field 3.
  const rest = text.slice(close + 2).split(' ');
  const ppid = Number(rest[1]);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  const start = Number(rest[19]);
  if (!Number.isFinite(ppid) || !Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return { pid, ppid, comm: text.slice(open + 1, close), cpuUs: ticksToUs(utime + stime), sysUs: ticksToUs(stime), start };
}

/** `root` and every live descendant (nginx master + workers, Portico primary + workers). */
export function processTree(root: number): ProcStat[] {
  const all: ProcStat[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return all;
  }
  for (const name of entries) {
    if (name.charCodeAt(0) < 48 || name.charCodeAt(0) > 57) continue;
    const st = readStat(Number(name));
    if (st !== undefined) all.push(st);
  }
  const byParent = new Map<number, ProcStat[]>();
  for (const st of all) {
    const list = byParent.get(st.ppid);
    if (list === undefined) byParent.set(st.ppid, [st]);
    else list.push(st);
  }
  const rootStat = all.find((s) => s.pid === root);
  if (rootStat === undefined) return [];
  const out: ProcStat[] = [];
  const queue = [rootStat];
  // Bounded: each pid is visited once and /proc lists finitely many.
  while (queue.length > 0 && out.length < 10_000) {
    const st = queue.shift() as ProcStat;
    out.push(st);
    for (const child of byParent.get(st.pid) ?? []) queue.push(child);
  }
  return out;
}

/**
 * A readable label for a process: a retitled process keeps its title's head ("nginx: worker process"),
 * otherwise its command line with program and script paths shortened to their base names.
 */
export function labelOf(pid: number, fallback: string): string {
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s !== '');
  } catch {
    return fallback;
  }
  const title = /^(\S+: [\w ]*?process)\b/.exec(argv[0] ?? '');
  if (title) return title[1];
  const text = argv.map((a) => (/^\/.+\//.test(a) ? path.basename(a) : a)).join(' ');
  return text.length > 60 ? `${text.slice(0, 57)}...` : text || fallback;
}

/** CPU time per pid of a process tree at one instant. */
export type CpuSnapshot = Map<number, { cpuUs: number; sysUs: number; label: string }>;

export function snapshotTree(root: number): CpuSnapshot {
  const snap: CpuSnapshot = new Map();
  for (const st of processTree(root)) snap.set(st.pid, { cpuUs: st.cpuUs, sysUs: st.sysUs, label: labelOf(st.pid, st.comm) });
  return snap;
}

export interface ProcessCpu {
  pid: number;
  label: string;
  /** user + sys */
  cpuUs: number;
  sysUs: number;
}

/** CPU used between two snapshots, per process; a process born in between counts from zero. */
export function cpuDelta(before: CpuSnapshot, after: CpuSnapshot): ProcessCpu[] {
  const out: ProcessCpu[] = [];
  for (const [pid, a] of after) {
    const b = before.get(pid);
    out.push({ pid, label: a.label, cpuUs: Math.max(0, a.cpuUs - (b?.cpuUs ?? 0)), sysUs: Math.max(0, a.sysUs - (b?.sysUs ?? 0)) });
  }
  return out;
}

export interface Pinning {
  enabled: boolean;
  /** Why pinning is off, when it is. */
  reason: string;
  proxyCpu: string;
  clientCpu: string;
  backendCpu: string;
}

/**
 * The pinning a benchmark uses: proxy alone on CPU 0, load generator and backends on CPU 1, when asked for and
 * possible (taskset present, at least 2 CPUs); otherwise off, with the reason for the conditions block.
 */
export function choosePinning(wanted: boolean, cpus: number): Pinning {
  const off = (reason: string): Pinning => ({ enabled: false, reason, proxyCpu: 'any', clientCpu: 'any', backendCpu: 'any' });
  if (!wanted) return off('--no-pin');
  if (versionOf('taskset', ['--version']) === undefined) return off('taskset not found (util-linux)');
  if (cpus < 2) return off('fewer than 2 CPUs');
  return { enabled: true, reason: '', proxyCpu: '0', clientCpu: '1', backendCpu: '1' };
}

/** Pins this process (the harness itself, when it is also client and backend) to `cpus`; false when it could not. */
export function pinSelf(cpus: string): boolean {
  return spawnSync('taskset', ['-cp', cpus, String(process.pid)], { stdio: 'ignore' }).status === 0;
}

/** Wraps a command in `taskset -c CPUS` when pinning is on; taskset execs, so the pid stays the command's. */
export function pinned(cpus: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return cpus === undefined ? [cmd, args] : ['taskset', ['-c', cpus, cmd, ...args]];
}

export interface Spawned {
  child: ChildProcess;
  pid: number;
  /** Last lines of stderr (and stdout when it is not consumed), for error messages. */
  tail(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnProcess(cmd: string, args: string[], opts: { cwd?: string; stdio?: StdioOptions; env?: NodeJS.ProcessEnv } = {}): Spawned {
  const child = spawn(cmd, args, { cwd: opts.cwd, stdio: opts.stdio ?? ['ignore', 'ignore', 'pipe'], env: opts.env ?? process.env });
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-2000);
  };
  child.stderr?.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => {
      keep(Buffer.from(`${err.message}\n`));
      resolve({ code: -1, signal: null });
    });
  });
  return { child, pid: child.pid ?? -1, tail: () => tail.trim().split('\n').slice(-6).join(' | '), exited };
}

/** Resolves once a TCP connect to host:port succeeds; rejects on timeout or when `exited` settles first. */
export async function waitForPort(host: string, port: number, timeoutMs: number, proc?: Spawned): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone: string | undefined;
  proc?.exited.then(({ code, signal }) => {
    gone = `exited (${signal ?? `code ${code}`}) before listening${proc.tail() ? `: ${proc.tail()}` : ''}`;
  });
  for (let attempt = 0; attempt < 10_000; attempt++) {
    if (gone !== undefined) throw new Error(gone);
    if (Date.now() > deadline) throw new Error(`no listener on ${host}:${port} after ${timeoutMs} ms${proc?.tail() ? `: ${proc.tail()}` : ''}`);
    if (await tryConnect(host, port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no listener on ${host}:${port}`);
}

function tryConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** A loopback port that was free a moment ago (the OS picks it; the caller binds it soon after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

/**
 * Stops a spawned process and its descendants: `signal` to the root, then SIGKILL to whatever of the tree is
 * left after `graceMs`. Descendants are collected first, since they reparent once the root exits.
 */
export async function stopTree(proc: Spawned, graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc.pid <= 0) return;
  const tree = hasProc ? processTree(proc.pid) : [];
  if (proc.child.exitCode === null && proc.child.signalCode === null) {
    try {
      process.kill(proc.pid, signal);
    } catch {
      // already gone
    }
  }
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
  await Promise.race([proc.exited, timer]);
  for (const st of tree) {
    if (readStat(st.pid)?.start !== st.start) continue; // gone, or the pid now names another process
    try {
      process.kill(st.pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
}

/**
 * First line of a command's output (nginx -v writes to stderr), or undefined when it cannot run. `anyStatus`
 * accepts a non-zero exit (wrk -v prints its version, then its usage, and exits 1).
 */
export function versionOf(cmd: string, args: string[], anyStatus = false): string | undefined {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
  if (r.error !== undefined || (r.status !== 0 && !anyStatus)) return undefined;
  const out = `${r.stdout}\n${r.stderr}`.trim();
  return out.split('\n')[0] || undefined;
}

/** The version number in a tool's version line (by `re`'s first group), the whole line when it does not match. */
function versionNumber(line: string | undefined, re: RegExp): string | undefined {
  return line === undefined ? undefined : (re.exec(line)?.[1] ?? line);
}

/** Versions of the peers the end-to-end benchmarks use; undefined for one that is not installed. */
export function peerVersions(): { nginx?: string; haproxy?: string; wrk?: string } {
  return {
    nginx: versionNumber(versionOf('nginx', ['-v']), /nginx\/(\S+)/),
    haproxy: versionNumber(versionOf('haproxy', ['-v']), /version (\d+\.\d+\.\d+)/),
    wrk: versionNumber(versionOf('wrk', ['-v'], true), /^wrk \S*?(\d+\.\d+\.\d+)/),
  };
}

/** What a benchmark's body gets: its temp folder, the list to register every process it starts, and a stop flag. */
export interface BenchmarkScope {
  readonly tmp: string;
  /** Register each started process here at once: it is stopped on interrupt, error and exit. */
  readonly started: Spawned[];
  /** True once SIGINT/SIGTERM arrived: start nothing more. */
  stopped(): boolean;
}

/**
 * Runs a benchmark's `body` in a fresh temp folder (prefix `name`) and ends the process: exit 0 after it, 1 on an
 * error (printed with `name`), 130 on SIGINT/SIGTERM. Every registered process is stopped (tree, SIGTERM then
 * SIGKILL) and the folder removed unless `keepTmp`, whichever way it ends.
 */
export function benchmarkMain(name: string, keepTmp: boolean, body: (scope: BenchmarkScope) => Promise<void>): void {
  const tmp = mkdtempSync(path.join(os.tmpdir(), `portico-${name}-`));
  const started: Spawned[] = [];
  let interrupted = false;
  const cleanup = async (): Promise<void> => {
    await Promise.all(started.splice(0).map((p) => stopTree(p, 5000)));
    if (keepTmp) console.log(`temp folder kept: ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    console.log(`\n${sig}: stopping the processes this benchmark started`);
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  body({ tmp, started, stopped: () => interrupted }).then(
    async () => {
      await cleanup();
      process.exit(0);
    },
    async (err: Error) => {
      console.error(`${name}: ${err.message}`);
      await cleanup();
      process.exit(1);
    },
  );
}
