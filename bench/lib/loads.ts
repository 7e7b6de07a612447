// The loads and their pre-flight checks: wrk for GETs (keep-alive, or one connection per request; http or https),
// ws-load for WebSocket ping-pong, handshakes and fan-out (native, bench/native/ws-load.cc, when built; else the
// JS client for what it can do) and idle connections (ws or wss), the connrate client, and a
// single curl / `ws` exchange through a target before any timing ("check the result before timing it").
// Each run reports its count, its window and the CPU of the processes it was asked to watch.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import {
  cpuDelta, fdCount, pinned, processTree, rssKiB, snapshotTree, spawnProcess, stopTree, ticksToUs, readMachineCpu, type CpuSnapshot, type MachineCpu, type ProcessCpu, type Spawned,
} from './procs.js';
import { HTTP_BODY, HTTP_PATH, WS_PATH } from './shape.js';
import { BENCH_DIST, FIXTURES } from './paths.js';
import type { NativeWsLoad } from './native-tools.js';

/** Process trees whose CPU a run records, by role. */
export interface Watch {
  proxy?: number;
  backend: number[];
}

export interface CpuReport {
  wallMs: number;
  /** All CPU time the machine spent in the window (every process, kernel included). */
  machineBusyUs: number;
  stealUs: number;
  proxy: ProcessCpu[];
  backend: ProcessCpu[];
  client: ProcessCpu[];
}

export interface LoadResult {
  /** Requests or messages completed in the window. */
  count: number;
  /** Per second, over the load generator's own window. */
  rate: number;
  cpu: CpuReport;
  latencyUs?: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** Problems a reader should know of: errors counted by the load generator. */
  notes: string[];
  /** Facts about the run (echoes verified, mean round trip). */
  info: string[];
}

function snapshots(w: Watch): { proxy: CpuSnapshot; backend: CpuSnapshot[]; machine: MachineCpu } {
  return { proxy: w.proxy === undefined ? new Map() : snapshotTree(w.proxy), backend: w.backend.map((pid) => snapshotTree(pid)), machine: readMachineCpu() };
}

function cpuBetween(before: ReturnType<typeof snapshots>, after: ReturnType<typeof snapshots>, wallMs: number, client: ProcessCpu[]): CpuReport {
  return {
    wallMs,
    machineBusyUs: after.machine.busyUs - before.machine.busyUs,
    stealUs: after.machine.stealUs - before.machine.stealUs,
    proxy: cpuDelta(before.proxy, after.proxy),
    backend: after.backend.flatMap((snap, i) => cpuDelta(before.backend[i] ?? new Map(), snap)),
    client,
  };
}

/** How a GET load reaches the target: over TLS or not, and keep-alive or a new connection per request. */
export interface HttpFlavour {
  tls?: boolean;
  /** `Connection: close` on every request: each request is a whole new TCP (and TLS) connection. */
  close?: boolean;
  /** Request path (default HTTP_PATH) and Host header (default the address): a user's routes (`portico bench -c`). */
  path?: string;
  host?: string;
}

/** One GET through the target with curl: status 200 and exactly the backend's body. */
export function checkHttp(port: number, flavour: HttpFlavour = {}): void {
  const url = `${flavour.tls === true ? 'https' : 'http'}://127.0.0.1:${port}${flavour.path ?? HTTP_PATH}`;
  const extra = [
    ...(flavour.tls === true ? ['-k'] : []), ...(flavour.close === true ? ['-H', 'Connection: close'] : []), ...(flavour.host === undefined ? [] : ['-H', `Host: ${flavour.host}`]),
  ];
  const r = spawnSync('curl', ['-sS', ...extra, '--max-time', '5', '-o', '-', '-w', '\n%{http_code}', url], { encoding: 'utf8', timeout: 10_000 });
  if (r.error !== undefined) throw new Error(`curl: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`curl ${url}: ${r.stderr.trim() || `exit ${r.status}`}`);
  const cut = r.stdout.lastIndexOf('\n');
  const body = r.stdout.slice(0, cut);
  const status = r.stdout.slice(cut + 1);
  if (status !== '200') throw new Error(`GET ${flavour.path ?? HTTP_PATH} answered ${status}: ${JSON.stringify(body.slice(0, 120))}`);
  if (body !== HTTP_BODY) throw new Error(`GET ${flavour.path ?? HTTP_PATH} body ${JSON.stringify(body.slice(0, 120))}, expected ${JSON.stringify(HTTP_BODY)}`);
}

/** One WebSocket through the target with the `ws` client: a `size`-byte binary message comes back unchanged. */
export function checkWs(port: number, size: number, tls = false, at: { path?: string; host?: string } = {}): Promise<void> {
  const payload = randomBytes(size);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${tls ? 'wss' : 'ws'}://127.0.0.1:${port}${at.path ?? WS_PATH}`, {
      perMessageDeflate: false, handshakeTimeout: 5000, rejectUnauthorized: false, ...(at.host === undefined ? {} : { headers: { host: at.host }, servername: at.host }),
    });
    const timer = setTimeout(() => done(new Error('no echo within 5 s')), 5000);
    let settled = false;
    function done(err?: Error): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.terminate();
      if (err) reject(err);
      else resolve();
    }
    ws.on('unexpected-response', (_req, res) => done(new Error(`upgrade answered ${res.statusCode}`)));
    ws.on('error', (err) => done(err));
    ws.on('open', () => ws.send(payload, { binary: true }));
    ws.on('message', (data, isBinary) => {
      const got = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
      if (!isBinary || !got.equals(payload)) done(new Error('echo differs from the message sent'));
      else done();
    });
  });
}

/**
 * The fan-out load's check: 4 WebSockets on `flavour.path`, publishes until each got one message of `size` bytes
 * (the native client's own checks: the 101, every frame, every size), within 10 s.
 */
export function checkFanout(port: number, size: number, flavour: WsFlavour & { native: NativeWsLoad; publish: NonNullable<WsFlavour['publish']> }): void {
  const [cmd, args] = wsLoadCommand(port, 4, size, 10, { ...flavour, publish: { ...flavour.publish, inflight: 1 } });
  const r = spawnSync(cmd, [...args.filter((a) => a !== '--sync'), '--count', '4'], { encoding: 'utf8', timeout: 30_000 });
  const line = /^(\{"event":"result".*\})$/m.exec(r.stdout ?? '')?.[1];
  const res = line === undefined ? undefined : (JSON.parse(line) as WsLoadLine);
  if (res?.error !== undefined) throw new Error(`fan-out check: ${res.error}`);
  if (r.status !== 0 || res === undefined) throw new Error(`fan-out check: ws-load ${r.error?.message ?? `exit ${r.status}`}: ${(r.stderr ?? '').trim().slice(-300)}`);
  if ((res.connected ?? 0) < 4) throw new Error(`fan-out check: ${res.connected ?? 0}/4 WebSockets opened: ${(res.connectErrors ?? []).join('; ')}`);
  if ((res.messages ?? 0) < 4) throw new Error(`fan-out check: ${res.messages ?? 0} of 4 deliveries in 10 s (${res.published ?? 0} publishes)`);
}

interface Exited {
  /** The last 16 KiB of its stdout. */
  out: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  proc: Spawned;
  wallMs: number;
  before: ReturnType<typeof snapshots>;
  after: ReturnType<typeof snapshots>;
}

/** Runs a load generator to its exit (SIGKILL after `limitS`); CPU of the watched trees from just before spawn to just after. */
async function runToExit(cmd: string, args: string[], limitS: number, watch: Watch): Promise<Exited> {
  const before = snapshots(watch);
  const t0 = performance.now();
  const proc = spawnProcess(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.child.stdout?.on('data', (chunk: Buffer) => {
    out = (out + chunk.toString('utf8')).slice(-16_384);
  });
  const killer = setTimeout(() => void stopTree(proc, 1000, 'SIGKILL'), limitS * 1000);
  const { code, signal } = await proc.exited;
  clearTimeout(killer);
  const wallMs = performance.now() - t0;
  return { out, code, signal, proc, wallMs, before, after: snapshots(watch) };
}

/** `wrk -t1 -cN -dS` with the report script; CPU of proxy and backends from just before spawn to just after exit. */
export async function runWrk(port: number, connections: number, durationS: number, watch: Watch, cpus: string | undefined, flavour: HttpFlavour = {}): Promise<LoadResult> {
  const script = path.join(FIXTURES, 'wrk-report.lua');
  const url = `${flavour.tls === true ? 'https' : 'http'}://127.0.0.1:${port}${flavour.path ?? HTTP_PATH}`;
  const close = [...(flavour.close === true ? ['-H', 'Connection: close'] : []), ...(flavour.host === undefined ? [] : ['-H', `Host: ${flavour.host}`])];
  const [cmd, args] = pinned(cpus, 'wrk', ['-t1', `-c${connections}`, `-d${durationS}s`, '--timeout', '5s', ...close, '-s', script, url]);
  const { out, code, signal, proc, wallMs, before, after } = await runToExit(cmd, args, durationS + 20, watch);
  const line = /^WRK_JSON (\{.*\})$/m.exec(out)?.[1];
  if (code !== 0 || line === undefined) throw new Error(`wrk failed (${signal ?? `code ${code}`}): ${proc.tail() || out.trim().slice(-300)}`);
  const r = JSON.parse(line) as {
    requests: number;
    durationUs: number;
    errors: { connect: number; read: number; write: number; status: number; timeout: number };
    latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number };
    utimeTicks: number;
    stimeTicks: number;
  };
  const notes: string[] = [];
  const e = r.errors;
  if (e.status > 0) notes.push(`${e.status} non-2xx/3xx responses`);
  if (e.connect + e.read + e.write + e.timeout > 0) notes.push(`socket errors: connect ${e.connect}, read ${e.read}, write ${e.write}, timeout ${e.timeout}`);
  if (r.requests === 0) throw new Error(`wrk completed no request${notes.length > 0 ? `: ${notes.join('; ')}` : ''}`);
  // Any error response means the proxy did not do the benchmarked work: the run does not count.
  if (e.status > 0) throw new Error(notes.join('; '));
  const client: ProcessCpu[] = r.utimeTicks >= 0 ? [{ pid: proc.pid, label: 'wrk', cpuUs: ticksToUs(r.utimeTicks + r.stimeTicks), sysUs: ticksToUs(r.stimeTicks) }] : [];
  return {
    count: r.requests,
    rate: r.requests / (r.durationUs / 1e6),
    cpu: cpuBetween(before, after, wallMs, client),
    latencyUs: r.latencyUs,
    notes,
    info: [`p50 ${r.latencyUs.p50} µs`, `p99 ${r.latencyUs.p99} µs`],
  };
}

interface WsLoadLine {
  event: 'ready' | 'start' | 'stop' | 'result';
  connections?: number;
  connected?: number;
  connectErrors?: string[];
  messages?: number;
  elapsedMs?: number;
  msgPerSec?: number;
  meanRttUs?: number;
  verified?: number;
  mismatches?: number;
  lost?: number;
  protocolErrors?: number;
  /** The native client only: */
  native?: boolean;
  latencyUs?: { p50: number; p90: number; p99: number; max: number; mean: number };
  published?: number;
  publishStalls?: number;
  error?: string;
}

/** How a WebSocket load runs: wss or not, what it does, where, and with which client. */
export interface WsFlavour {
  tls?: boolean;
  /** recv: count pushed messages (fan-out); native client only. */
  mode?: 'echo' | 'upgrade' | 'recv';
  path?: string;
  host?: string;
  /** The native client; without it the JS client (bench/peers/ws-load.ts) runs, which has no recv mode. */
  native?: NativeWsLoad;
  /** recv: where the client POSTs each publish, closed loop with `inflight` undelivered at most. */
  publish?: { port: number; path: string; header?: string; inflight: number };
}

/** The command line of one ws-load run, native or JS. */
function wsLoadCommand(port: number, connections: number, size: number, durationS: number, flavour: WsFlavour): [string, string[]] {
  const common = [
    '--sync', '--port', String(port), '--path', flavour.path ?? WS_PATH, '--connections', String(connections), '--size', String(size), '--duration', String(durationS),
    '--mode', flavour.mode ?? 'echo', ...(flavour.tls === true ? ['--tls'] : []), ...(flavour.host === undefined ? [] : ['--authority', flavour.host]),
  ];
  if (flavour.native !== undefined) {
    const p = flavour.publish;
    const pub = p === undefined ? [] : ['--publish-port', String(p.port), '--publish-path', p.path, '--inflight', String(p.inflight), ...(p.header === undefined ? [] : ['--publish-header', p.header])];
    return [flavour.native.binary, [...common, ...pub]];
  }
  if (flavour.mode === 'recv') throw new Error('the fan-out load needs the native ws-load (npm run build:bench-tools)');
  return [process.execPath, [path.join(BENCH_DIST, 'peers', 'ws-load.js'), ...common]];
}

/**
 * ws-load.js in its own process, in lock-step over stdin/stdout: CPU counters are read after all connections
 * are open ("ready" -> snapshot -> "go") and when the window ends ("stop" -> snapshot -> "done"), so the
 * upgrades and the teardown stay out of the figures.
 */
export async function runWsLoad(
  port: number, connections: number, size: number, durationS: number, watch: Watch, cpus: string | undefined, flavour: WsFlavour = {},
): Promise<LoadResult> {
  const [cmd, args] = pinned(cpus, ...wsLoadCommand(port, connections, size, durationS, flavour));
  const proc = spawnProcess(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const killer = setTimeout(() => void stopTree(proc, 1000, 'SIGKILL'), (durationS + 60) * 1000);
  let before: ReturnType<typeof snapshots> | undefined;
  let after: ReturnType<typeof snapshots> | undefined;
  let clientBefore: CpuSnapshot = new Map();
  let clientAfter: CpuSnapshot = new Map();
  let t0 = 0;
  let wallMs = 0;
  let result: WsLoadLine | undefined;
  const tell = (word: string): void => {
    if (proc.child.stdin?.writable) proc.child.stdin.write(`${word}\n`);
  };
  proc.child.stdin?.on('error', () => {}); // the client may exit first; its result says why
  const lines = createInterface({ input: proc.child.stdout as NodeJS.ReadableStream });
  lines.on('line', (text) => {
    let msg: WsLoadLine;
    try {
      msg = JSON.parse(text) as WsLoadLine;
    } catch {
      return;
    }
    if (msg.event === 'ready') {
      clientBefore = snapshotTree(proc.pid);
      before = snapshots(watch);
      t0 = performance.now();
      tell('go');
    } else if (msg.event === 'stop') {
      wallMs = performance.now() - t0;
      after = snapshots(watch);
      clientAfter = snapshotTree(proc.pid);
      tell('done');
    } else if (msg.event === 'result') result = msg;
  });
  const { code, signal } = await proc.exited;
  clearTimeout(killer);
  lines.close();
  if (result?.error !== undefined) throw new Error(`ws-load: ${result.error}`);
  if (code !== 0 || result === undefined) throw new Error(`ws-load failed (${signal ?? `code ${code}`}): ${proc.tail()}`);
  const connected = result.connected ?? 0;
  if (connected < connections) {
    throw new Error(`${connected}/${connections} WebSockets opened: ${(result.connectErrors ?? []).join('; ') || 'no reason given'}`);
  }
  if ((result.mismatches ?? 0) > 0) throw new Error(`${result.mismatches} echoed payloads differed from what was sent`);
  if ((result.messages ?? 0) === 0) throw new Error(flavour.mode === 'recv' ? 'no pushed message received' : 'no message echoed');
  if (before === undefined || after === undefined) throw new Error('ws-load gave no ready/stop events');
  const notes: string[] = [];
  if ((result.lost ?? 0) > 0) notes.push(`${result.lost} ${flavour.mode === 'upgrade' ? 'handshakes failed' : 'connections lost during the run'}${(result.connectErrors ?? []).length > 0 ? ` (${(result.connectErrors ?? []).join('; ')})` : ''}`);
  if ((result.protocolErrors ?? 0) > 0) notes.push(`${result.protocolErrors} protocol errors`);
  const messages = result.messages ?? 0;
  const info = flavour.mode === 'recv'
    ? [`${result.published ?? 0} publishes to ${connected} clients, ${messages} deliveries in the window`, `${result.publishStalls ?? 0} stalls`]
    : [`verified ${result.verified} ${flavour.mode === 'upgrade' ? 'handshakes' : 'echoes'}`, `mean RTT ${result.meanRttUs} µs`];
  // Closed loop: at most `inflight` publishes are undelivered when the window ends, so fewer deliveries than that are drops.
  if (flavour.publish !== undefined) {
    const missing = ((result.published ?? 0) - flavour.publish.inflight) * connected - messages;
    if (missing > 0) notes.push(`${missing} deliveries missing (messages dropped under backpressure)`);
  }
  return {
    count: messages,
    rate: messages / ((result.elapsedMs ?? durationS * 1000) / 1000),
    cpu: cpuBetween(before, after, wallMs, cpuDelta(clientBefore, clientAfter)),
    latencyUs: result.native === true && flavour.mode !== 'recv' ? result.latencyUs : undefined,
    notes,
    info: [...(result.native === true ? ['native ws-load'] : ['JS ws-load']), ...info],
  };
}

/** Memory and descriptors of a process tree at one instant: RSS summed over its processes, open fds. */
export interface TreeFootprint {
  rssKiB: number;
  fds: number;
}

export function footprint(root: number): TreeFootprint {
  let rss = 0;
  let fds = 0;
  for (const st of processTree(root)) {
    rss += rssKiB(st.pid);
    fds += fdCount(st.pid);
  }
  return { rssKiB: rss, fds };
}

/** Idle WebSockets held open by one ws-load process (--mode idle) until `release`. */
export interface IdleHold {
  connected: number;
  release(): Promise<void>;
}

/**
 * Opens `connections` WebSockets through the target, has each echo one message (the tunnel is whole end to end),
 * and resolves once they are open and quiet; they stay open until `release`. Fails when any did not open or echo.
 */
export async function holdIdle(port: number, connections: number, tls: boolean, cpus: string | undefined, timeoutS: number, wsPath = WS_PATH): Promise<IdleHold> {
  const script = path.join(BENCH_DIST, 'peers', 'ws-load.js');
  const [cmd, args] = pinned(cpus, process.execPath, [
    script, '--sync', '--mode', 'idle', '--port', String(port), '--path', wsPath, '--connections', String(connections), '--size', '32',
    '--connect-timeout', String(timeoutS), ...(tls ? ['--tls'] : []),
  ]);
  const proc = spawnProcess(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  proc.child.stdin?.on('error', () => {});
  const lines = createInterface({ input: proc.child.stdout as NodeJS.ReadableStream });
  const release = async (): Promise<void> => {
    if (proc.child.stdin?.writable) proc.child.stdin.write('done\n');
    const killer = setTimeout(() => void stopTree(proc, 1000, 'SIGKILL'), 15_000);
    await proc.exited;
    clearTimeout(killer);
    lines.close();
  };
  const ready = await new Promise<WsLoadLine & { echoed?: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${connections} idle WebSockets not open within ${timeoutS * 2} s`)), timeoutS * 2000);
    lines.on('line', (text) => {
      let msg: WsLoadLine & { echoed?: number };
      try {
        msg = JSON.parse(text) as WsLoadLine & { echoed?: number };
      } catch {
        return;
      }
      if (msg.event === 'ready' || msg.event === 'result') {
        clearTimeout(timer);
        resolve(msg);
      }
    });
    void proc.exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`ws-load exited (code ${code}) before its connections were open: ${proc.tail()}`));
    });
  }).catch(async (err: Error) => {
    await release();
    throw err;
  });
  const connected = ready.connected ?? 0;
  if (ready.event !== 'ready' || connected < connections || (ready.echoed ?? 0) < connected) {
    await release();
    throw new Error(`${connected}/${connections} idle WebSockets opened, ${ready.echoed ?? 0} echoed${(ready.connectErrors ?? []).length > 0 ? `: ${(ready.connectErrors ?? []).join('; ')}` : ''}`);
  }
  return { connected, release };
}

/**
 * Sequential WebSocket handshakes (bench/peers/ws-handshake.ts) for `durationS`: each a new connection, the
 * upgrade, the whole 101 (accept key checked), a close. Rate = handshakes per second; latency = connect to 101.
 * Any failed handshake fails the run.
 */
export async function runWsHandshakes(port: number, durationS: number, watch: Watch, cpus: string | undefined, tls = false): Promise<LoadResult> {
  const [cmd, args] = pinned(cpus, process.execPath, [path.join(BENCH_DIST, 'peers', 'ws-handshake.js'), '--port', String(port), '--path', WS_PATH, '--duration', String(durationS), ...(tls ? ['--tls'] : [])]);
  const { out, code, signal, proc, wallMs, before, after } = await runToExit(cmd, args, durationS + 30, watch);
  const line = /^(\{"completed".*\})$/m.exec(out)?.[1];
  if (code !== 0 || line === undefined) throw new Error(`ws-handshake failed (${signal ?? `code ${code}`}): ${proc.tail() || out.trim().slice(-300)}`);
  const r = JSON.parse(line) as Omit<ConnRateResult, 'cpuUs' | 'sysUs'>;
  const errors = Object.entries(r.errors).map(([why, n]) => `${n} ${why}`);
  if (errors.length > 0) throw new Error(`handshakes failed: ${errors.join(', ')}`);
  if (r.completed === 0) throw new Error('no handshake completed');
  return {
    count: r.completed,
    rate: r.completed / r.elapsedS,
    cpu: cpuBetween(before, after, wallMs, []),
    latencyUs: { p50: r.p50Us, p90: r.p90Us, p99: r.p99Us, max: r.maxUs, mean: r.meanUs },
    notes: [],
    info: [`p50 ${r.p50Us} µs`, `p99 ${r.p99Us} µs`],
  };
}

/** What the connrate client (bench/native/connrate.cc) is told for one run. */
export interface ConnRateLoad {
  /** The built connrate binary. */
  binary: string;
  port: number;
  /** File holding the request bytes each connection sends. */
  requestFile: string;
  replyBytes: number;
  concurrency: number;
  /** Client source addresses 127.0.0.1 .. 127.0.0.N, used in turn. */
  sources: number;
}

interface ConnRateResult {
  completed: number;
  elapsedS: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
  meanUs: number;
  cpuUs: number;
  sysUs: number;
  errors: Record<string, number>;
}

/**
 * One connrate client run: `durationS` seconds of connect, request, reply, close, or exactly `count` connections
 * (a check). CPU of proxy and backends from just before spawn to just after exit; the client reports its own.
 * Any failed connection fails the run: a proxy that drops connections did not do the benchmarked work.
 */
export async function runConnRate(load: ConnRateLoad, end: { durationS: number } | { count: number }, watch: Watch, cpus: string | undefined): Promise<LoadResult> {
  const span = 'durationS' in end ? ['--duration', String(end.durationS)] : ['--count', String(end.count)];
  const [cmd, args] = pinned(cpus, load.binary, [
    'client', '--port', String(load.port), '--request', load.requestFile, '--reply-bytes', String(load.replyBytes),
    '--concurrency', String(load.concurrency), '--sources', String(load.sources), ...span,
  ]);
  const { out, code, signal, proc, wallMs, before, after } = await runToExit(cmd, args, 'durationS' in end ? end.durationS + 30 : 60, watch);
  const line = /^(\{"completed".*\})$/m.exec(out)?.[1];
  if (code !== 0 || line === undefined) throw new Error(`connrate client failed (${signal ?? `code ${code}`}): ${proc.tail() || out.trim().slice(-300)}`);
  const r = JSON.parse(line) as ConnRateResult;
  const errors = Object.entries(r.errors).map(([why, n]) => `${n} ${why}`);
  if (errors.length > 0) throw new Error(`${errors.join(', ')} (of ${r.completed + Object.values(r.errors).reduce((a, b) => a + b, 0)} connections)`);
  if (r.completed === 0) throw new Error('no connection completed');
  const client: ProcessCpu[] = [{ pid: proc.pid, label: 'connrate client', cpuUs: r.cpuUs, sysUs: r.sysUs }];
  return {
    count: r.completed,
    rate: r.completed / r.elapsedS,
    cpu: cpuBetween(before, after, wallMs, client),
    latencyUs: { p50: r.p50Us, p90: r.p90Us, p99: r.p99Us, max: r.maxUs, mean: r.meanUs },
    notes: [],
    info: [`p50 ${r.p50Us} µs`, `p99 ${r.p99Us} µs`],
  };
}
