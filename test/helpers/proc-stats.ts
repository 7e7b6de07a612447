// What robustness tests read of a running Portico from outside: a worker's open file descriptors and RSS
// (/proc/PID), the admin /status (workers, connections, tunnels, per-target upstream sockets), and a bounded
// poll until a condition holds. Linux only (/proc); it asserts nothing about Portico itself.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { request } from './clients.js';
import type { Portico } from './portico.js';

/** Open file descriptors of process `pid` (entries of /proc/PID/fd). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident set size of process `pid` in bytes (VmRSS of /proc/PID/status). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m !== null, `no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** The part of GET /status these tests read. */
export interface AdminStatus {
  config: { generation: number };
  workers: Array<{ id: number; pid: number | null; restarts: number; state: string; generation: number; connections?: number; tunnels?: number }>;
  upstreams: Record<string, Array<{ target: string; available: boolean; active: number; open: number; idle: number }>>;
  connections: number;
  tunnels: number;
  unanswered: number[];
}

/** Port of the admin listener, from the "listening" log line (the config must have `admin`). */
export function adminPort(portico: Portico): number {
  const line = portico.logs.find((l) => l.msg === 'listening');
  const port = (line?.admin as { port?: number } | null | undefined)?.port;
  assert.ok(port !== undefined, 'the test config has an admin listener');
  return port;
}

export async function adminStatus(portico: Portico): Promise<AdminStatus> {
  const res = await request(`http://127.0.0.1:${adminPort(portico)}/status`);
  assert.equal(res.status, 200);
  return JSON.parse(res.body.toString()) as AdminStatus;
}

/** Pids of the running workers, in worker id order (fails while one has none). */
export async function workerPids(portico: Portico): Promise<number[]> {
  const s = await adminStatus(portico);
  return s.workers.map((w) => {
    assert.ok(w.pid !== null, `worker ${w.id} has no process`);
    return w.pid;
  });
}

/**
 * Calls `read` every `pollMs` until `done(value)` holds and returns that value; after `withinMs` fails with the
 * last value read (so a leak shows what stayed open).
 */
export async function until<T>(what: string, read: () => T | Promise<T>, done: (v: T) => boolean, withinMs = 10_000, pollMs = 50): Promise<T> {
  const deadline = Date.now() + withinMs;
  let last = await read();
  while (!done(last)) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${withinMs} ms; last: ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
    last = await read();
  }
  return last;
}

/**
 * One worker's resources as a fault test compares them: fds minus the idle keep-alive sockets the pools may
 * legitimately hold (a fault may close or add one), and the /status counts that must all be back at zero.
 */
export interface WorkerResources {
  /** null while the worker is being restarted (then every count below is -1 or empty). */
  pid: number | null;
  /** Open fds less the idle pooled upstream sockets (all targets). */
  fdsBeyondIdle: number;
  connections: number;
  tunnels: number;
  /** Per target (`upstream/target`): requests + tunnels in progress and sockets in use (open - idle). */
  busy: Record<string, { active: number; inUse: number }>;
}

/** The resources of a single-worker Portico (fault tests run one worker so every count is that worker's). */
export async function singleWorkerResources(portico: Portico): Promise<WorkerResources> {
  const s = await adminStatus(portico);
  assert.equal(s.workers.length, 1, 'a single-worker config');
  const pid = s.workers[0].pid;
  if (pid === null) return { pid, fdsBeyondIdle: -1, connections: -1, tunnels: -1, busy: {} };
  let idle = 0;
  const busy: WorkerResources['busy'] = {};
  for (const [name, targets] of Object.entries(s.upstreams)) {
    for (const t of targets) {
      idle += t.idle;
      busy[`${name}/${t.target}`] = { active: t.active, inUse: t.open - t.idle };
    }
  }
  return { pid, fdsBeyondIdle: fdCount(pid) - idle, connections: s.connections, tunnels: s.tunnels, busy };
}

/** Inodes of the sockets process `pid` holds (its fds that are sockets). */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m !== null) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/**
 * Which of `pids` holds the server side of each loopback TCP connection to `serverPort`: a map from the
 * client's port to the pid (from /proc/net/tcp and tcp6 and each process's fds). A test learns this way which
 * worker accepted which of its connections.
 */
export function acceptedBy(pids: readonly number[], serverPort: number): Map<number, number> {
  const owner = new Map<string, number>();
  for (const pid of pids) for (const inode of socketInodes(pid)) owner.set(inode, pid);
  const byClientPort = new Map<number, number>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const local = Number.parseInt(f[1].split(':')[1], 16);
      const remote = Number.parseInt(f[2].split(':')[1], 16);
      const pid = owner.get(f[9]);
      if (local === serverPort && pid !== undefined && f[3] === '01') byClientPort.set(remote, pid);
    }
  }
  return byClientPort;
}

/** One reading of a process: open fds and RSS (bytes), `at` ms after the sampler started. */
export interface ProcSample {
  at: number;
  pid: number;
  fds: number;
  rss: number;
}

export interface Sampler {
  readonly samples: readonly ProcSample[];
  /** Stops sampling (idempotent) and returns every sample taken. */
  stop(): readonly ProcSample[];
}

/**
 * Reads fds and RSS of each of `pids` every `everyMs` (at most `maxSamples` rounds). A process that is gone is
 * skipped in that round (a test that needs its workers alive checks their pids separately).
 */
export function startSampler(pids: readonly number[], everyMs: number, maxSamples = 10_000): Sampler {
  const samples: ProcSample[] = [];
  const started = Date.now();
  let rounds = 0;
  const take = (): void => {
    for (const pid of pids) {
      try {
        samples.push({ at: Date.now() - started, pid, fds: fdCount(pid), rss: rssBytes(pid) });
      } catch {
        // gone
      }
    }
    if (++rounds >= maxSamples) clearInterval(timer);
  };
  const timer = setInterval(take, everyMs);
  timer.unref();
  take();
  return {
    samples,
    stop() {
      clearInterval(timer);
      return samples;
    },
  };
}

/** What each open fd of `pid` points to ("socket:[123]", "pipe:[45]", "anon_inode:[eventpoll]", a path). */
export function fdTargets(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** Kinds of fds (socket, pipe, anon_inode:[eventfd], ...) counted: to say what a leak is made of. */
export function fdKinds(pid: number): Record<string, number> {
  const kinds: Record<string, number> = {};
  for (const target of fdTargets(pid)) {
    const kind = target.replace(/:\[\d+\]$/, '');
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}
