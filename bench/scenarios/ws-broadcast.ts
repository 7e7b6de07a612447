// Edge fan-out throughput: deliveries per second from POST /topics/NAME/publish to N terminated WebSockets
// subscribed to the topic (the backend names it in its 101). One Portico worker; the subscribers are raw TCP
// sockets in this process that do the handshake by hand and then only count bytes (every delivery is one
// fixed-size unmasked frame), so the client costs little next to what it measures. Publishes go through the
// admin listener, --inflight at a time (each is an HTTP request, an IPC message and a uWS publish, so one at a
// time measures their latency, not delivery); the clock runs from the first publish to the last byte received.
// It asserts nothing; a check run (one publish, every subscriber gets exactly one frame) comes first. Besides the
// rate by the clock (which the harness's own sockets on the same cores hold down), it prints the CPU Portico spent
// per delivery (utime + stime of the worker, and of the whole tree with the primary's admin and IPC work): 1e6
// over it is what one fully busy core would deliver, the "per core".
// Usage: npm run bench:broadcast -- [--n 2000] [--messages 100] [--size 16] [--inflight 16]
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { WebSocketServer } from 'ws';
import { readArgs } from '../lib/args.js';
import { ROOT } from '../lib/paths.js';
import { benchmarkMain, cpuDelta, snapshotTree, spawnProcess, stopTree, type BenchmarkScope } from '../lib/procs.js';

const USAGE = `usage: npm run bench:broadcast -- [options]
  --n N             subscribers (default 2000; each costs the worker 4 descriptors)
  --messages M      publishes (default 100)
  --size B          message size in bytes, at most 125 (default 16)
  --inflight K      publishes in flight at once (default 16)`;

const args = readArgs(process.argv.slice(2), { n: 'string', messages: 'string', size: 'string', inflight: 'string' }, USAGE);
const N = args.int('n', 2000, 1, 100_000);
const M = args.int('messages', 100, 1, 100_000);
const SIZE = args.int('size', 16, 1, 125);
const INFLIGHT = args.int('inflight', 16, 1, 1000);
/** A server frame of SIZE <= 125 bytes: 2 header bytes, no mask. */
const FRAME = SIZE + 2;

function post(port: number, pathName: string, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathName, method: 'POST', headers: { 'X-Portico-Admin': '1', 'Content-Type': 'application/octet-stream', 'Content-Length': body.length }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** One subscriber: the handshake written by hand; after the 101 head, bytes are only counted. */
class Subscriber {
  received = 0;
  #head = true;
  #buf = '';
  readonly socket: net.Socket;
  readonly opened: Promise<void>;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.on('data', (d: Buffer) => {
        if (!this.#head) {
          this.received += d.length;
          return;
        }
        this.#buf += d.toString('latin1');
        const end = this.#buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        if (!this.#buf.startsWith('HTTP/1.1 101')) return reject(new Error(`no 101: ${this.#buf.slice(0, 40)}`));
        this.#head = false;
        this.received += this.#buf.length - end - 4;
        resolve();
      });
    });
    this.socket.write(`GET /b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  }
}

async function main({ tmp: dir, started }: BenchmarkScope): Promise<void> {
  const backend = http.createServer();
  const wss = new WebSocketServer({ server: backend });
  wss.on('headers', (headers) => headers.push('X-Portico-Topics: b'));
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  writeFileSync(
    path.join(dir, 'p.yaml'),
    `workers: 1\nlisteners: [{ address: 127.0.0.1:0 }]\nupstreams: { b: { targets: [127.0.0.1:${(backend.address() as AddressInfo).port}] } }\n` +
      `routes: [{ match: { path: /b }, proxy: b, websocket: { mode: terminate, ping_interval: off } }]\nadmin: { address: 127.0.0.1:0 }\nlog: { access: false, level: warn }\n`,
  );
  const proc = spawnProcess(process.execPath, [path.join(ROOT, 'bin', 'portico.js'), 'start', '-c', path.join(dir, 'p.yaml')], { stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(proc);
  let buf = '';
  const listening = await new Promise<{ listeners: Array<{ port: number }>; admin: { port: number } }>((resolve, reject) => {
    proc.child.stdout?.on('data', (c: Buffer) => {
      buf += c.toString();
      for (const line of buf.split('\n')) if (line.includes('"msg":"listening"')) resolve(JSON.parse(line));
    });
    proc.child.once('exit', () => reject(new Error('portico exited')));
  });
  const port = listening.listeners[0].port;
  const admin = listening.admin.port;
  const subs: Subscriber[] = [];
  for (let i = 0; i < N; i += 200) {
    const batch = Array.from({ length: Math.min(200, N - i) }, () => new Subscriber(port));
    await Promise.all(batch.map((s) => s.opened));
    subs.push(...batch);
  }
  const total = (): number => subs.reduce((n, s) => n + s.received, 0);
  const waitFor = async (bytes: number, ms: number): Promise<boolean> => {
    const end = Date.now() + ms;
    while (total() < bytes && Date.now() < end) await new Promise((r) => setTimeout(r, 2));
    return total() >= bytes;
  };
  // check: one publish, exactly one frame to every subscriber
  const msg = Buffer.alloc(SIZE, 0x61);
  if ((await post(admin, '/topics/b/publish', msg)) !== 202) throw new Error('publish refused');
  if (!(await waitFor(N * FRAME, 30_000)) || subs.some((s) => s.received !== FRAME)) throw new Error(`check failed: ${total()} of ${N * FRAME} bytes`);
  const base = total();
  const cpuBefore = snapshotTree(proc.child.pid ?? -1);
  const t0 = process.hrtime.bigint();
  let sent = 0;
  const lane = async (): Promise<void> => {
    while (sent < M) {
      sent++;
      if ((await post(admin, '/topics/b/publish', msg)) !== 202) throw new Error('publish refused');
    }
  };
  await Promise.all(Array.from({ length: Math.min(INFLIGHT, M) }, lane));
  const all = await waitFor(base + N * M * FRAME, 120_000);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuDelta(cpuBefore, snapshotTree(proc.child.pid ?? -1));
  const delivered = (total() - base) / FRAME;
  const treeUs = cpu.reduce((n, p) => n + p.cpuUs, 0);
  // the worker is the busiest process of the tree (the primary only forwards each publish over IPC)
  const worker = cpu.reduce((w, p) => (p.cpuUs > w.cpuUs ? p : w), { cpuUs: 0, sysUs: 0 });
  const workerUs = worker.cpuUs;
  const perCore = (us: number): string => (us > 0 ? `${Math.round((delivered / us) * 1e6)}` : 'n/a');
  console.log(
    `broadcast: ${N} subscribers x ${M} publishes of ${SIZE} B, one worker: ${Math.round(delivered / s)} deliveries/s ` +
      `(${delivered} delivered${all ? '' : ' (INCOMPLETE)'} in ${s.toFixed(2)} s; ${INFLIGHT} publishes in flight; ` +
      `${os.availableParallelism()} CPUs, load average ${os.loadavg()[0].toFixed(2)})`,
  );
  console.log(
    `  CPU: worker ${(workerUs / 1000).toFixed(0)} ms = ${((workerUs || NaN) / delivered).toFixed(3)} µs per delivery ` +
      `(${perCore(workerUs)} deliveries per busy core; ${Math.round((100 * worker.sysUs) / (workerUs || 1))}% in the kernel); whole tree ${(treeUs / 1000).toFixed(0)} ms = ` +
      `${((treeUs || NaN) / delivered).toFixed(3)} µs per delivery (${perCore(treeUs)} per core)`,
  );
  for (const sub of subs) sub.socket.destroy();
  await stopTree(proc);
  wss.close();
  backend.close();
}

benchmarkMain('ws-broadcast', false, main);
