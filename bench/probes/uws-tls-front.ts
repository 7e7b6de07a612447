// Prototype of the alternative TLS front (issue 10): Node accepts paused, the fd is dup'ed and handed to a
// uWebSockets.js SSLApp with adoptSocket (native-notes/handoff.md way 1), which terminates TLS and parses HTTP
// in C++; each request is forwarded in JS to the backend over a keep-alive pool of raw sockets (one request in
// flight per socket, Content-Length responses only: the benchmark backend's). It exists to be measured against
// Portico's native TLS on the same loads (bench/scenarios/tls.ts, target uws-sslapp), not to serve traffic: no
// strict parser, no routing, no chunked bodies, no raw WSS tunnels.
// Usage: node dist/bench/probes/uws-tls-front.js --port P --backend B   (prints {"port":P} when listening)
import net from 'node:net';
import path from 'node:path';
import uWS from 'uWebSockets.js';
import { native } from '../../src/native/addon.js';
import { readArgs } from '../lib/args.js';
import { ROOT } from '../lib/paths.js';

type Adopting = uWS.TemplatedApp & { adoptSocket?: (fd: number) => uWS.TemplatedApp };

const a = readArgs(process.argv.slice(2), { port: 'string', backend: 'string' }, 'usage: uws-tls-front.js --port P --backend B');
const port = Math.round(a.num('port', 0, 1, 65535));
const backendPort = Math.round(a.num('backend', 0, 1, 65535));
const addon = native();
if (addon === undefined) throw new Error('the native addon is needed for dup()');

const app = uWS.SSLApp({
  cert_file_name: path.join(ROOT, 'test', 'fixtures', 'tls', 'localhost.crt'),
  key_file_name: path.join(ROOT, 'test', 'fixtures', 'tls', 'localhost.key'),
}) as Adopting;
if (typeof app.adoptSocket !== 'function') throw new Error('this uWebSockets.js build has no adoptSocket');

/** One backend connection with at most one request in flight; the answer is framed by its Content-Length. */
class Upstream {
  readonly socket: net.Socket;
  #buf: Buffer = Buffer.alloc(0);
  #done: ((status: string, body: Buffer) => void) | null = null;
  constructor() {
    this.socket = net.connect(backendPort, '127.0.0.1');
    this.socket.setNoDelay(true);
    this.socket.on('data', (c: Buffer) => this.#onData(c));
    this.socket.on('error', () => {});
  }
  request(head: string, done: (status: string, body: Buffer) => void): void {
    this.#done = done;
    this.socket.write(head, 'latin1');
  }
  #onData(c: Buffer): void {
    this.#buf = this.#buf.length === 0 ? c : Buffer.concat([this.#buf, c]);
    const end = this.#buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.#buf.subarray(0, end).toString('latin1');
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.#buf.length < end + 4 + length) return;
    const body = this.#buf.subarray(end + 4, end + 4 + length);
    this.#buf = this.#buf.subarray(end + 4 + length);
    const done = this.#done;
    this.#done = null;
    done?.(head.slice(9, 12), body);
  }
}

const idle: Upstream[] = [];

app.any('/*', (res, req) => {
  const url = req.getUrl();
  const host = req.getHeader('host');
  const remote = Buffer.from(res.getRemoteAddressAsText()).toString();
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  const up = idle.pop() ?? new Upstream();
  const head = `${req.getMethod().toUpperCase()} ${url} HTTP/1.1\r\nHost: ${host}\r\nX-Forwarded-For: ${remote}\r\nX-Real-IP: ${remote}\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ${host}\r\n\r\n`;
  up.request(head, (status, body) => {
    idle.push(up);
    if (aborted) return;
    res.cork(() => res.writeStatus(status).end(body));
  });
});

const server = net.createServer({ pauseOnConnect: true }, (socket) => {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number') return socket.destroy();
  const copy = addon.dup(fd);
  socket.on('error', () => {});
  socket.destroy();
  app.adoptSocket!(copy);
});
server.listen(port, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port })}\n`));
