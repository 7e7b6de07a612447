// What robustness tests read of a running Portico from outside: a worker's open fds and RSS (/proc/PID, also
// sampled over time), which worker holds a client connection and which connects are pending (/proc/net/tcp),
// and the worker counts of the admin /status (admin.ts). Linux only; asserts nothing about Portico.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { adminStatus } from './admin.js';
import type { Portico } from './portico.js';

/** Open file descriptors of process `pid` (entries of /proc/PID/fd). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident set size of process `pid` in bytes (VmRSS of /proc/PID/status). */
export function rssBytes(pid: number): number {
  return statusKiB(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmRSS', pid) * 1024;
}

/**
 * The resident set of `pid` split in bytes: `anon` is the process's own memory (V8 heap, malloc, buffers: where a
 * leak shows), `file` the pages of mapped files (node's binary and libraries, shared with every node process; it
 * moves with the page cache and with which code paths have run, not with what the process holds).
 */
export function rssParts(pid: number): { anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { anon: statusKiB(status, 'RssAnon', pid) * 1024, file: statusKiB(status, 'RssFile', pid) * 1024 };
}

function statusKiB(status: string, field: string, pid: number): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  assert.ok(m !== null, `no ${field} for pid ${pid}`);
  return Number(m[1]);
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

/** Pids of the running workers, in worker id order (fails while one has none). */
export async function workerPids(portico: Portico): Promise<number[]> {
  const s = await adminStatus(portico);
  return s.workers.map((w) => {
    assert.ok(w.pid !== null, `worker ${w.id} has no process`);
    return w.pid;
  });
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
  for (const target of fdTargets(pid)) {
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m !== null) inodes.add(m[1]);
  }
  return inodes;
}

/** One row of /proc/net/tcp or tcp6: ports, state (hex, "01" established, "02" SYN_SENT) and socket inode. */
interface TcpRow {
  localPort: number;
  remotePort: number;
  /** The remote address as the kernel prints it (hex, e.g. "0100007F" for 127.0.0.1). */
  remoteHex: string;
  state: string;
  /** The socket's timer (`tr`: 0 none, 1 retransmit, 2 keep-alive, ...). */
  timer: number;
  inode: string;
}

/** The machine's TCP sockets (IPv4 and IPv6) as the kernel lists them. */
function tcpTable(): TcpRow[] {
  const rows: TcpRow[] = [];
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
      const [remoteHex, remotePort] = f[2].split(':');
      rows.push({ localPort: Number.parseInt(f[1].split(':')[1], 16), remotePort: Number.parseInt(remotePort, 16), remoteHex, state: f[3], timer: Number.parseInt(f[5].split(':')[0], 16), inode: f[9] });
    }
  }
  return rows;
}

/** The kernel's timer on the TCP socket from `localPort` to `remotePort` (2 = keep-alive armed), or -1: no such socket. */
export function tcpTimer(localPort: number, remotePort: number): number {
  return tcpTable().find((r) => r.localPort === localPort && r.remotePort === remotePort)?.timer ?? -1;
}

/** The timers of this machine's TCP sockets connected to port `remotePort` (a proxy's upstream sockets to a backend). */
export function tcpTimersTo(remotePort: number): number[] {
  return tcpTable().filter((r) => r.remotePort === remotePort && r.state === '01').map((r) => r.timer);
}

/** Sockets of this machine in SYN_SENT towards 127.0.0.1:port: connects still pending. */
export function synSentTo(port: number): number {
  return tcpTable().filter((r) => r.remoteHex === '0100007F' && r.remotePort === port && r.state === '02').length;
}

/** Client-side loopback TCP sockets to 127.0.0.1:`port` whose connection is established (state ESTABLISHED). */
export function establishedTo(port: number): number {
  return tcpTable().filter((r) => r.remoteHex === '0100007F' && r.remotePort === port && r.state === '01').length;
}

/** Listening TCP sockets on `port` that process `pid` holds (a worker's listeners; none for a standby). */
export function listeningSockets(pid: number, port: number): number {
  const mine = new Set(socketInodes(pid));
  return tcpTable().filter((r) => r.localPort === port && r.state === '0A' && mine.has(r.inode)).length;
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
  for (const row of tcpTable()) {
    const pid = owner.get(row.inode);
    if (row.localPort === serverPort && pid !== undefined && row.state === '01') byClientPort.set(row.remotePort, pid);
  }
  return byClientPort;
}

/** One reading of a process: open fds and RSS (bytes; its anonymous part too), `at` ms after the sampler started. */
export interface ProcSample {
  at: number;
  pid: number;
  fds: number;
  rss: number;
  /** RssAnon: the resident memory that is the process's own (rssParts). */
  anon: number;
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
        const { anon, file } = rssParts(pid);
        samples.push({ at: Date.now() - started, pid, fds: fdCount(pid), rss: anon + file, anon });
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
