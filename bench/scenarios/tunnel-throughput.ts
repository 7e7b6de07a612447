// Tunnel bulk throughput and proxy CPU per GiB: direct (baseline), the JS relay, the splice relay, nginx
// `stream` and HAProxy (`mode tcp`, `option splice-auto`), in one run, 1 and 8 connections, bytes both ways at
// once. This process is the client and the backend (pinned to CPU 0); each proxy runs alone on CPU 1. Every
// target first passes a checked transfer (sha256 both ways). It never asserts a speed; see native-notes/splice.md.
// Usage: npm run build && node dist/bench/e2e/tunnel-throughput.js [--quick] [--mib N] [--rounds R] [--targets a,b]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

type TargetId = 'direct' | 'js' | 'splice' | 'nginx' | 'haproxy';
const ALL: TargetId[] = ['direct', 'js', 'splice', 'nginx', 'haproxy'];
const HERE = path.dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;

interface Options {
  /** Bytes each way per run, split over the connections. */
  bytes: number;
  rounds: number;
  targets: TargetId[];
  conns: number[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { bytes: 1024 * MiB, rounds: 3, targets: ALL, conns: [1, 8] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') {
      o.bytes = 128 * MiB;
      o.rounds = 1;
    } else if (a === '--mib') o.bytes = Number(argv[++i]) * MiB;
    else if (a === '--rounds') o.rounds = Number(argv[++i]);
    else if (a === '--targets') o.targets = argv[++i].split(',') as TargetId[];
    else {
      process.stderr.write(`unknown option ${a}\n`);
      process.exit(2);
    }
  }
  if (!(o.bytes >= MiB) || !(o.rounds >= 1) || o.targets.some((t) => !ALL.includes(t))) {
    process.stderr.write('bad options\n');
    process.exit(2);
  }
  return o;
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

function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  // /proc/PID/stat: fields after "(comm)"; utime and stime are the 12th and 13th of those (all threads)
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitPort(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`port ${port} never opened`);
}

const hasTaskset = spawnSync('taskset', ['--version']).status === 0 && os.cpus().length >= 2;

function spawnPinned(cmd: string, args: string[]): ChildProcess {
  const [c, a] = hasTaskset ? ['taskset', ['-c', '1', cmd, ...args]] : [cmd, args];
  // taskset execs the command: the pid is the proxy's own
  const child = spawn(c, a, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()).length > 4000 && (err = err.slice(-4000)));
  child.on('exit', () => err !== '' && process.stderr.write(`[${cmd}] ${err}`));
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

async function startTarget(id: TargetId, backendPort: number, dir: string): Promise<Running> {
  if (id === 'direct') return { port: backendPort, pid: undefined, stop: async () => {} };
  const port = await freePort();
  let child: ChildProcess;
  if (id === 'js' || id === 'splice') {
    child = spawnPinned(process.execPath, [path.join(HERE, 'tunnel-proxy.js'), id, String(port), String(backendPort)]);
  } else if (id === 'nginx') {
    const conf = path.join(dir, 'nginx-stream.conf');
    writeFileSync(
      conf,
      `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off; master_process off; worker_processes 1;
pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
stream { server { listen 127.0.0.1:${port}; proxy_pass 127.0.0.1:${backendPort}; proxy_buffer_size 64k; proxy_half_close on; } }
`,
    );
    child = spawnPinned('nginx', ['-p', dir, '-c', conf, '-e', `${dir}/nginx-error.log`]);
  } else {
    const conf = path.join(dir, 'haproxy-tcp.cfg');
    writeFileSync(
      conf,
      `global
    nbthread 1
    maxconn 1024
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    option splice-auto
frontend f
    bind 127.0.0.1:${port}
    default_backend b
backend b
    server s1 127.0.0.1:${backendPort}
`,
    );
    child = spawnPinned('haproxy', ['-db', '-f', conf]);
  }
  await waitPort(port, child);
  return { port, pid: child.pid, stop: () => stopChild(child) };
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

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function measure(target: TargetId, backendPort: number, dir: string, conns: number, opts: Options): Promise<Row> {
  let running: Running | undefined;
  try {
    running = await startTarget(target, backendPort, dir);
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
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0].trim() || 'not installed';
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (hasTaskset) spawnSync('taskset', ['-cp', '0', String(process.pid)], { stdio: 'ignore' });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portico-tunnel-bench-'));
  const backend = await startBackend();
  const backendPort = (backend.address() as net.AddressInfo).port;
  console.log('# tunnel throughput: bytes both ways at once, client+backend = this process');
  console.log(`node ${process.version}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}; kernel ${os.release()}`);
  console.log(`pinning: ${hasTaskset ? 'client+backend on CPU 0, proxy on CPU 1' : 'none (taskset missing or 1 CPU)'}`);
  console.log(`${version('nginx', ['-v'])}; ${version('haproxy', ['-v'])}`);
  console.log(`per run: ${opts.bytes / MiB} MiB each way split over the connections; ${opts.rounds} round(s), median shown`);
  console.log('MiB/s = both directions summed; CPU = the proxy process (all threads), user+sys\n');
  const rows: Row[] = [];
  for (const conns of opts.conns) {
    for (const target of opts.targets) {
      const row = await measure(target, backendPort, dir, conns, opts);
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
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

void main();
