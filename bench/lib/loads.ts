// The two loads and their pre-flight checks: wrk for keep-alive GETs, ws-load.js for WebSocket ping-pong, and a
// single curl / `ws` exchange through a target before any timing ("check the result before timing it").
// Each run reports its count, its window and the CPU of the processes it was asked to watch.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { cpuDelta, pinned, snapshotTree, spawnProcess, stopTree, ticksToUs, readMachineCpu, type CpuSnapshot, type MachineCpu, type ProcessCpu, type Spawned } from './procs.js';
import { HTTP_BODY, HTTP_PATH, WS_PATH } from './shape.js';
import { BENCH_DIST, FIXTURES } from './paths.js';

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

/** One GET through the target with curl: status 200 and exactly the backend's body. */
export function checkHttp(port: number, https = false): void {
  const url = `${https ? 'https' : 'http'}://127.0.0.1:${port}${HTTP_PATH}`;
  const r = spawnSync('curl', ['-sS', '-k', '--max-time', '5', '-o', '-', '-w', '\n%{http_code}', url], { encoding: 'utf8', timeout: 10_000 });
  if (r.error !== undefined) throw new Error(`curl: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`curl ${url}: ${r.stderr.trim() || `exit ${r.status}`}`);
  const cut = r.stdout.lastIndexOf('\n');
  const body = r.stdout.slice(0, cut);
  const status = r.stdout.slice(cut + 1);
  if (status !== '200') throw new Error(`GET ${HTTP_PATH} answered ${status}: ${JSON.stringify(body.slice(0, 120))}`);
  if (body !== HTTP_BODY) throw new Error(`GET ${HTTP_PATH} body ${JSON.stringify(body.slice(0, 120))}, expected ${JSON.stringify(HTTP_BODY)}`);
}

/** One WebSocket through the target with the `ws` client: a 32-byte binary message comes back unchanged. */
export function checkWs(port: number, size: number): Promise<void> {
  const payload = randomBytes(size);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${WS_PATH}`, { perMessageDeflate: false, handshakeTimeout: 5000 });
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

/**
 * `wrk -t1 -cN -dS` with the report script; CPU of proxy and backends from just before spawn to just after exit.
 * `https`: over TLS; `extra`: more wrk arguments (`-H 'Connection: close'`: a new connection per request).
 */
export async function runWrk(port: number, connections: number, durationS: number, watch: Watch, cpus: string | undefined, opts: { https?: boolean; extra?: string[] } = {}): Promise<LoadResult> {
  const script = path.join(FIXTURES, 'wrk-report.lua');
  const url = `${opts.https === true ? 'https' : 'http'}://127.0.0.1:${port}${HTTP_PATH}`;
  const [cmd, args] = pinned(cpus, 'wrk', ['-t1', `-c${connections}`, `-d${durationS}s`, '--timeout', '5s', ...(opts.extra ?? []), '-s', script, url]);
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
}

/**
 * ws-load.js in its own process, in lock-step over stdin/stdout: CPU counters are read after all connections
 * are open ("ready" -> snapshot -> "go") and when the window ends ("stop" -> snapshot -> "done"), so the
 * upgrades and the teardown stay out of the figures.
 */
export async function runWsLoad(port: number, connections: number, size: number, durationS: number, watch: Watch, cpus: string | undefined): Promise<LoadResult> {
  const script = path.join(BENCH_DIST, 'peers', 'ws-load.js');
  const [cmd, args] = pinned(cpus, process.execPath, [
    script, '--sync', '--port', String(port), '--path', WS_PATH, '--connections', String(connections), '--size', String(size), '--duration', String(durationS),
  ]);
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
  if (code !== 0 || result === undefined) throw new Error(`ws-load failed (${signal ?? `code ${code}`}): ${proc.tail()}`);
  const connected = result.connected ?? 0;
  if (connected < connections) {
    throw new Error(`${connected}/${connections} WebSockets opened: ${(result.connectErrors ?? []).join('; ') || 'no reason given'}`);
  }
  if ((result.mismatches ?? 0) > 0) throw new Error(`${result.mismatches} echoed payloads differed from what was sent`);
  if ((result.messages ?? 0) === 0) throw new Error('no message echoed');
  if (before === undefined || after === undefined) throw new Error('ws-load gave no ready/stop events');
  const notes: string[] = [];
  if ((result.lost ?? 0) > 0) notes.push(`${result.lost} connections lost during the run`);
  if ((result.protocolErrors ?? 0) > 0) notes.push(`${result.protocolErrors} protocol errors`);
  return {
    count: result.messages ?? 0,
    rate: (result.messages ?? 0) / ((result.elapsedMs ?? durationS * 1000) / 1000),
    cpu: cpuBetween(before, after, wallMs, cpuDelta(clientBefore, clientAfter)),
    latencyUs: undefined,
    notes,
    info: [`verified ${result.verified} echoes`, `mean RTT ${result.meanRttUs} µs`],
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
