// Tunnel bulk throughput and proxy CPU per GiB: direct (baseline), the JS relay, the splice relay, nginx
// `stream` and HAProxy (`mode tcp`, `option splice-auto`), in one run, 1 and 8 connections, bytes both ways at
// once. This process is the client and the backend (pinned to CPU 0); each proxy runs alone on CPU 1. Every
// target first passes a checked transfer (sha256 both ways). It never asserts a speed; see native-notes/splice.md.
// Usage: npm run bench:tunnel -- [--quick] [--mib N] [--rounds R] [--targets a,b] [--no-pin]
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { readArgs } from '../lib/args.js';
import { BENCH_DIST } from '../lib/paths.js';
import { benchmarkMain, choosePinning, freePort, pinSelf, pinned, readStat, spawnProcess, stopTree, versionOf, waitForPort, type BenchmarkScope, type Spawned } from '../lib/procs.js';
import { median } from '../lib/stats.js';
import { launchHaproxy, startNginx } from '../peers/targets.js';
import { haproxyTcpConfig, nginxStreamConfig } from '../peers/stream-configs.js';

type TargetId = 'direct' | 'js' | 'splice' | 'nginx' | 'haproxy';
const ALL: TargetId[] = ['direct', 'js', 'splice', 'nginx', 'haproxy'];
const MiB = 1024 * 1024;

interface Options {
  /** Bytes each way per run, split over the connections. */
  bytes: number;
  rounds: number;
  targets: TargetId[];
  conns: number[];
  pin: boolean;
}

const USAGE = `usage: npm run bench:tunnel -- [options]
  --mib N          MiB each way per run, split over the connections (default 1024)
  --rounds R       timed runs per target and connection count; the median is shown (default 3)
  --quick          smoke run: defaults --mib 128 --rounds 1 (flags given win)
  --targets LIST   comma list of ${ALL.join(',')} (default: all)
  --no-pin         do not pin this process and the proxies to CPUs`;

function parseOptions(argv: string[]): Options {
  const a = readArgs(argv, { quick: 'boolean', mib: 'string', rounds: 'string', targets: 'string', 'no-pin': 'boolean' }, USAGE);
  const quick = a.has('quick');
  return {
    bytes: a.int('mib', quick ? 128 : 1024, 1, 1024 * 1024) * MiB,
    rounds: a.int('rounds', quick ? 1 : 3, 1, 100),
    targets: a.list('targets', ALL) ?? ALL,
    conns: [1, 8],
    pin: !a.has('no-pin'),
  };
}

// ---- the backend (in this process): sends `perConn` bytes down while counting (and maybe hashing) what comes up

const PATTERN = randomBytes(MiB);

interface Transfer {
  perConn: number;
  check: boolean;
}

let current: Transfer = { perConn: 0, check: false };
const backendUpHashes: string[] = [];

function pump(socket: net.Socket, total: number, onDone: () => void): void {
  let left = total;
  const write = (): void => {
    while (left > 0) {
      const n = Math.min(left, PATTERN.length);
      left -= n;
      const ok = socket.write(n === PATTERN.length ? PATTERN : PATTERN.subarray(0, n));
      if (!ok) {
        socket.once('drain', write);
        return;
      }
    }
    socket.end();
    onDone();
  };
  write();
}

function patternHash(total: number): string {
  const h = createHash('sha256');
  for (let left = total; left > 0; left -= PATTERN.length) h.update(left >= PATTERN.length ? PATTERN : PATTERN.subarray(0, left));
  return h.digest('hex');
}

async function startBackend(): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    const hash: Hash | null = current.check ? createHash('sha256') : null;
    s.on('data', (c: Buffer) => hash?.update(c));
    let got = 0;
    s.on('data', (c: Buffer) => (got += c.length));
    s.on('end', () => {
      // readiness probes reach the backend through the proxy too: only real transfers count
      if (hash !== null && got > 0) backendUpHashes.push(hash.digest('hex'));
    });
    s.on('error', () => {});
    pump(s, current.perConn, () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

// ---- the client

async function runTransfer(port: number, conns: number, perConn: number, check: boolean): Promise<{ seconds: number; downHashes: string[] }> {
  current = { perConn, check };
  backendUpHashes.length = 0;
  const t0 = process.hrtime.bigint();
  const downHashes: string[] = [];
  await Promise.all(
    Array.from({ length: conns }, async () => {
      const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true });
      await once(s, 'connect');
      const hash = check ? createHash('sha256') : null;
      let got = 0;
      s.on('data', (c: Buffer) => {
        got += c.length;
        hash?.update(c);
      });
      const ended = once(s, 'end');
      const finished = once(s, 'finish');
      pump(s, perConn, () => {});
      await Promise.all([ended, finished]);
      if (got !== perConn) throw new Error(`received ${got} of ${perConn} bytes down`);
      if (hash !== null) downHashes.push(hash.digest('hex'));
      s.destroy();
    }),
  );
  // the backend's 'end' (all bytes up) can come a little after the client's: wait for it, bounded
  for (let i = 0; i < 1000 && check && backendUpHashes.length < conns; i++) await new Promise((r) => setTimeout(r, 5));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  current = { perConn: 0, check: false };
  return { seconds, downHashes };
}

// ---- targets

interface Running {
  port: number;
  /** The process whose CPU is the proxy's (single process: nginx master_process off, HAProxy one thread). */
  pid: number | undefined;
  stop(): Promise<void>;
}

/** utime + stime of one process (all its threads), in seconds. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  const st = readStat(pid);
  if (st === undefined) throw new Error(`process ${pid} is gone`);
  return st.cpuUs / 1e6;
}

/** Starts target `id` in front of the backend, pinned to `proxyCpu` (undefined: pinning off). */
async function startTarget(id: TargetId, backendPort: number, scope: BenchmarkScope, proxyCpu: string | undefined): Promise<Running> {
  if (id === 'direct') return { port: backendPort, pid: undefined, stop: async () => {} };
  const port = await freePort();
  let proc: Spawned | undefined;
  if (id === 'js' || id === 'splice') {
    const [cmd, args] = pinned(proxyCpu, process.execPath, [path.join(BENCH_DIST, 'peers', 'tunnel-proxy.js'), id, String(port), String(backendPort)]);
    proc = spawnProcess(cmd, args);
    scope.started.push(proc);
    await waitForPort('127.0.0.1', port, 15_000, proc);
  } else if (id === 'nginx') {
    const dir = path.join(scope.tmp, 'nginx-stream');
    proc = await startNginx(dir, nginxStreamConfig(dir, port, backendPort), port, proxyCpu);
    scope.started.push(proc);
  } else {
    const started = await launchHaproxy(path.join(scope.tmp, 'haproxy-tcp'), haproxyTcpConfig(port, backendPort), [port], proxyCpu);
    if (started.proc !== undefined) scope.started.push(started.proc);
    if (started.error !== undefined || started.proc === undefined) throw new Error(started.error ?? 'haproxy not started');
    proc = started.proc;
  }
  const running = proc;
  return {
    port,
    pid: running.pid,
    stop: async () => {
      await stopTree(running, 3000);
      scope.started.splice(scope.started.indexOf(running), 1);
    },
  };
}

// ---- the run

interface Row {
  target: TargetId;
  conns: number;
  mibPerS: number;
  cpuS: number;
  cpuPerGiB: number;
  error?: string;
}

async function measure(target: TargetId, backendPort: number, scope: BenchmarkScope, proxyCpu: string | undefined, conns: number, opts: Options): Promise<Row> {
  let running: Running | undefined;
  try {
    running = await startTarget(target, backendPort, scope, proxyCpu);
    // check first: 4 MiB each way, hashed at both ends
    const check = await runTransfer(running.port, 1, 4 * MiB, true);
    const want = patternHash(4 * MiB);
    if (check.downHashes[0] !== want) throw new Error('check transfer corrupted downstream');
    if (backendUpHashes[0] !== want) throw new Error(`check transfer corrupted upstream (${backendUpHashes.length} hashes)`);
    const perConn = Math.floor(opts.bytes / conns);
    const speeds: number[] = [];
    const cpus: number[] = [];
    for (let r = 0; r < opts.rounds; r++) {
      const cpu0 = cpuSeconds(running.pid);
      const { seconds } = await runTransfer(running.port, conns, perConn, false);
      const cpu = cpuSeconds(running.pid) - cpu0;
      speeds.push((2 * perConn * conns) / MiB / seconds);
      cpus.push(cpu);
    }
    const cpuS = median(cpus);
    return { target, conns, mibPerS: median(speeds), cpuS, cpuPerGiB: cpuS / ((2 * perConn * conns) / (1024 * MiB)) };
  } catch (err) {
    return { target, conns, mibPerS: 0, cpuS: 0, cpuPerGiB: 0, error: err instanceof Error ? err.message : String(err) };
  } finally {
    await running?.stop();
  }
}

function version(cmd: string, args: string[]): string {
  return versionOf(cmd, args, true) ?? 'not installed';
}

async function bench(opts: Options, scope: BenchmarkScope): Promise<void> {
  const pinning = choosePinning(opts.pin, os.availableParallelism());
  // This process is client and backend: it takes CPU 0 and leaves CPU 1 to the proxy under test.
  const pin = pinning.enabled && pinSelf('0');
  const proxyCpu = pin ? '1' : undefined;
  const backend = await startBackend();
  const backendPort = (backend.address() as net.AddressInfo).port;
  console.log('# tunnel throughput: bytes both ways at once, client+backend = this process');
  console.log(`node ${process.version}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}; kernel ${os.release()}`);
  console.log(`pinning: ${pin ? 'client+backend on CPU 0, proxy on CPU 1' : `none (${pinning.reason || 'taskset -p failed'})`}`);
  console.log(`${version('nginx', ['-v'])}; ${version('haproxy', ['-v'])}`);
  console.log(`per run: ${opts.bytes / MiB} MiB each way split over the connections; ${opts.rounds} round(s), median shown`);
  console.log('MiB/s = both directions summed; CPU = the proxy process (all threads), user+sys\n');
  const rows: Row[] = [];
  for (const conns of opts.conns) {
    for (const target of opts.targets) {
      if (scope.stopped()) break;
      const row = await measure(target, backendPort, scope, proxyCpu, conns, opts);
      rows.push(row);
      const line = row.error !== undefined ? `error: ${row.error}` : `${row.mibPerS.toFixed(0).padStart(7)} MiB/s  cpu ${row.cpuS.toFixed(2)} s  ${row.cpuPerGiB.toFixed(3)} cpu-s/GiB`;
      console.log(`${target.padEnd(8)} conns=${conns}  ${line}`);
    }
  }
  console.log('\n| conns | target | MiB/s | proxy cpu-s/GiB | throughput vs haproxy | MiB per cpu-s vs js |');
  console.log('|---|---|---|---|---|---|');
  for (const conns of opts.conns) {
    const of = (t: TargetId) => rows.find((r) => r.target === t && r.conns === conns && r.error === undefined);
    const hap = of('haproxy');
    const js = of('js');
    for (const r of rows.filter((x) => x.conns === conns)) {
      if (r.error !== undefined) {
        console.log(`| ${conns} | ${r.target} | error: ${r.error} | | | |`);
        continue;
      }
      const vsHap = hap !== undefined ? (r.mibPerS / hap.mibPerS).toFixed(2) : '-';
      // MiB moved per proxy CPU-second = 1024 / cpu-s per GiB
      const eff = (x: Row) => (x.cpuPerGiB > 0 ? 1024 / x.cpuPerGiB : NaN);
      const vsJs = js !== undefined && r.target !== 'direct' ? (eff(r) / eff(js)).toFixed(2) : '-';
      console.log(`| ${conns} | ${r.target} | ${r.mibPerS.toFixed(0)} | ${r.target === 'direct' ? '-' : r.cpuPerGiB.toFixed(3)} | ${vsHap} | ${vsJs} |`);
    }
  }
  backend.close();
}

const options = parseOptions(process.argv.slice(2));
benchmarkMain('tunnel-bench', false, (scope) => bench(options, scope));
