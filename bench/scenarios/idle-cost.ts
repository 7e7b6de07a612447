// What an idle WebSocket tunnel costs one worker: RSS (KiB) and file descriptors per tunnel, plain (spliced when the
// addon is loaded) and TLS; with --ws terminate, per terminated WebSocket (uWebSockets.js) instead. Starts `portico start` from --root (any checkout with dist/ built, so the same script
// measures another branch), one worker, one ws echo backend in this process, opens --n WebSockets, sends one
// message each, waits until /status counts them, and reads the worker's /proc/PID/status and /proc/PID/fd.
// Each reading is taken twice: at once, and after a full GC in the worker (through the inspector, which Portico is
// started with): V8 frees the handshakes' garbage only some 10-30 s after they stop, and what an idle connection
// costs for good is what stays after that. nginx and HAProxy have no such garbage: compare them with the second.
// Usage: npm run bench:idle -- [--root DIR] [--n 500] [--mode plain|tls] [--ws tunnel|terminate]
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import { collectGarbageIn, INSPECT_ENV } from '../../test/helpers/inspector-gc.js';
import { readArgs } from '../lib/args.js';
import { benchmarkMain, fdCount as fds, rssKiB, spawnProcess, stopTree, type BenchmarkScope } from '../lib/procs.js';

const USAGE = `usage: npm run bench:idle -- [options]
  --root DIR          checkout whose dist/ and bin/portico.js are measured (default: the current folder)
  --n N               idle tunnels to open (default 500)
  --mode plain|tls    listener kind (default plain)
  --ws tunnel|terminate|terminate-adopt  websocket.mode of the route (default tunnel; terminate-adopt: with handoff: adopt)`;

const args = readArgs(process.argv.slice(2), { root: 'string', n: 'string', mode: 'string', ws: 'string' }, USAGE);
const root = path.resolve(args.str('root', process.cwd()));
const n = args.int('n', 500, 1, 100_000);
const mode = args.oneOf('mode', ['plain', 'tls'] as const, 'plain');
const tls = mode === 'tls';
const wsMode = args.oneOf('ws', ['tunnel', 'terminate', 'terminate-adopt'] as const, 'tunnel');
const terminate = wsMode !== 'tunnel';
const adopt = wsMode === 'terminate-adopt';


async function get(url: string): Promise<string> {
  const res = await fetch(url);
  return res.text();
}

async function main({ tmp: dir, started }: BenchmarkScope): Promise<void> {
  const backend = http.createServer();
  const wss = new WebSocketServer({ server: backend });
  wss.on('connection', (ws) => ws.on('message', (d, binary) => ws.send(d, { binary })));
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  const cert = path.join(root, 'test', 'fixtures', 'tls', 'localhost.crt');
  const key = path.join(root, 'test', 'fixtures', 'tls', 'localhost.key');
  const listener = tls ? `{ address: 127.0.0.1:0, tls: { certificates: [{ cert: ${cert}, key: ${key} }] } }` : '{ address: 127.0.0.1:0 }';
  writeFileSync(
    path.join(dir, 'p.yaml'),
    `workers: 1\nlisteners: [${listener}]\nupstreams: { echo: { targets: [127.0.0.1:${(backend.address() as AddressInfo).port}] } }\nroutes: [{ match: { path: / }, proxy: echo${terminate ? `, websocket: { mode: terminate${adopt ? ', handoff: adopt' : ''} }` : ''} }]\nadmin: { address: 127.0.0.1:0 }\nlog: { access: false }\n`,
  );
  const proc = spawnProcess(process.execPath, [path.join(root, 'bin', 'portico.js'), 'start', '-c', path.join(dir, 'p.yaml')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...INSPECT_ENV } });
  started.push(proc);
  const child = proc.child;
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
    if (!c.toString().includes('Debugger') && !c.toString().includes('inspector')) process.stderr.write(c);
  });
  let buf = '';
  const listening = await new Promise<{ listeners: Array<{ port: number }>; admin: { port: number } }>((resolve, reject) => {
    child.stdout?.on('data', (c: Buffer) => {
      buf += c.toString();
      for (const line of buf.split('\n')) if (line.includes('"msg":"listening"')) resolve(JSON.parse(line));
    });
    child.once('exit', () => reject(new Error('portico exited')));
  });
  const admin = `http://127.0.0.1:${listening.admin.port}`;
  const raw = async () => JSON.parse(await get(`${admin}/status`)) as { workers: Array<{ pid: number; tunnels?: number; connections?: number }> };
  // a terminated WebSocket is a connection, not a tunnel: count those instead
  const status = async () => {
    const s = await raw();
    return { workers: s.workers.map((w) => ({ pid: w.pid, tunnels: terminate ? w.connections : w.tunnels })) };
  };
  const url = `${tls ? 'wss://localhost' : 'ws://127.0.0.1'}:${listening.listeners[0].port}/ws`;
  const open = () =>
    new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(url, { ca: readFileSync(cert) });
      ws.once('open', () => {
        ws.once('message', () => resolve(ws));
        ws.send('hello');
      });
      ws.once('error', reject);
    });
  // warm-up: the first tunnel starts the relay thread and the TLS context
  const warm = await open();
  warm.close();
  const pid = (await status()).workers[0].pid;
  while ((await status()).workers[0].tunnels !== 0) await new Promise((r) => setTimeout(r, 50));
  const rss0 = rssKiB(pid);
  const fd0 = fds(pid);
  const heap0 = await collectGarbageIn(stderr, pid);
  const gc0 = rssKiB(pid);
  const sockets: WebSocket[] = [];
  for (let i = 0; i < n; i += 50) sockets.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, open))));
  while ((await status()).workers[0].tunnels !== n) await new Promise((r) => setTimeout(r, 50));
  const rss1 = rssKiB(pid);
  const fd1 = fds(pid);
  // a second without handshakes: the worker returns their freed memory to the system (src/native/tls.cc TrimIdle)
  await new Promise((r) => setTimeout(r, 1500));
  const heap1 = await collectGarbageIn(stderr, pid);
  const gc1 = rssKiB(pid);
  console.log(
    `${mode}${terminate ? ' terminate' : ''}: ${n} idle ${terminate ? 'terminated WebSockets' : 'tunnels'}, one worker: ${((rss1 - rss0) / n).toFixed(1)} KiB RSS and ${((fd1 - fd0) / n).toFixed(2)} fds per tunnel ` +
      `(worker RSS ${rss0} -> ${rss1} KiB, fds ${fd0} -> ${fd1}); after a full GC: ${((gc1 - gc0) / n).toFixed(1)} KiB RSS per tunnel (${gc0} -> ${gc1} KiB), of which V8's heap ${((heap1.heapUsedKiB - heap0.heapUsedKiB) / n).toFixed(1)} KiB and Buffers ${((heap1.externalKiB - heap0.externalKiB) / n).toFixed(1)} KiB per tunnel; root ${root}`,
  );
  for (const ws of sockets) ws.terminate();
  await stopTree(proc);
  wss.close();
  backend.close();
}

benchmarkMain('idle-cost', false, main);
