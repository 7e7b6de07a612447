// Real backends for e2e tests, each on 127.0.0.1 port 0: an HTTP backend (echo, stream, upload, delay, status),
// a `ws` echo, and misbehaving ones (refuses the upgrade, answers 101 with a wrong accept key, dies mid-tunnel).
// They record what they saw so tests can assert on the backend's side; they never assert anything themselves.
import http from 'node:http';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';

export interface Backend {
  readonly port: number;
  close(): Promise<void>;
}

/** What the HTTP backend's echo routes answer (JSON). */
export interface EchoReply {
  backend: string;
  method: string;
  url: string;
  httpVersion: string;
  headers: http.IncomingHttpHeaders;
  remoteAddress: string;
  remotePort: number;
  /** Index of the backend-side TCP connection (0 = first accepted), to tell reuse from a new connection. */
  connection: number;
  bodyBytes: number;
  bodySha256: string;
}

export interface StreamRecord {
  bytes: number;
  sha256: string;
  chunked: boolean;
}

export interface HttpBackend extends Backend {
  readonly name: string;
  /** Requests received, in arrival order. */
  readonly requests: EchoReply[];
  /** Bodies sent by /stream, in completion order. */
  readonly streams: StreamRecord[];
  /** TCP connections accepted so far. */
  readonly connections: number;
}

const STREAM_CHUNK = 64 * 1024;

/**
 * Routes (query parameters in brackets):
 * - `/stream?bytes=N[&chunked=0]`: N random bytes, chunked unless chunked=0 (then with Content-Length); the sha256
 *   of what was sent is recorded in `streams` when the last byte is handed to the socket.
 * - `/upload`: reads the body; answers `{bytes, sha256}`.
 * - `/delay?ms=N[&bytes=N]`: answers the echo after N ms.
 * - `/status/CODE`: answers CODE with no body (204, 304) or a short one; HEAD gets the headers GET would.
 * - anything else: the echo (EchoReply JSON) after reading the whole body.
 * Every response carries `X-Backend: NAME`.
 */
export async function startHttpBackend(t: TestContext, opts: { name?: string } & BindOptions = {}): Promise<HttpBackend> {
  const name = opts.name ?? 'http';
  const requests: EchoReply[] = [];
  const streams: StreamRecord[] = [];
  const connectionIds = new WeakMap<net.Socket, number>();
  let connections = 0;
  // maxHeaderSize above Portico's default limit, so that limit (not Node's 16 KiB) is what tests meet.
  const server = http.createServer({ keepAliveTimeout: 30_000, requestTimeout: 0, maxHeaderSize: 256 * 1024 }, (req, res) => {
    res.setHeader('X-Backend', name);
    const url = new URL(req.url ?? '/', 'http://backend');
    const hash = createHash('sha256');
    let bodyBytes = 0;
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bodyBytes += chunk.length;
    });
    req.on('error', () => res.destroy());
    req.on('end', () => {
      const reply: EchoReply = {
        backend: name,
        method: req.method ?? '',
        url: req.url ?? '',
        httpVersion: req.httpVersion,
        headers: req.headers,
        remoteAddress: req.socket.remoteAddress ?? '',
        remotePort: req.socket.remotePort ?? 0,
        connection: connectionIds.get(req.socket) ?? -1,
        bodyBytes,
        bodySha256: hash.digest('hex'),
      };
      requests.push(reply);
      route(url, reply, res, streams);
    });
  });
  server.on('connection', (socket: net.Socket) => {
    connectionIds.set(socket, connections++);
  });
  await listen(server, opts);
  const backend: HttpBackend = {
    name,
    port: portOf(server),
    requests,
    streams,
    get connections() {
      return connections;
    },
    close: () => closeServer(server),
  };
  t.after(() => backend.close());
  return backend;
}

function route(url: URL, reply: EchoReply, res: http.ServerResponse, streams: StreamRecord[]): void {
  const path = url.pathname;
  if (path === '/stream') {
    const bytes = boundedInt(url.searchParams.get('bytes'), 0, 1 << 30) ?? 0;
    const chunked = url.searchParams.get('chunked') !== '0';
    sendStream(res, bytes, chunked, reply.method === 'HEAD', streams);
    return;
  }
  if (path === '/upload') {
    sendJson(res, 200, { bytes: reply.bodyBytes, sha256: reply.bodySha256 });
    return;
  }
  if (path === '/delay') {
    const ms = boundedInt(url.searchParams.get('ms'), 0, 60_000) ?? 0;
    const timer = setTimeout(() => sendJson(res, 200, reply), ms);
    res.on('close', () => clearTimeout(timer));
    return;
  }
  const status = /^\/status\/(\d{3})$/.exec(path);
  if (status !== null) {
    const code = Number(status[1]);
    if (code === 204 || code === 304) {
      if (code === 304) res.setHeader('ETag', '"demo"');
      res.writeHead(code);
      res.end();
    } else {
      const body = `status ${code}\n`;
      res.writeHead(code, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    }
    return;
  }
  sendJson(res, 200, reply);
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  const body = Buffer.from(`${JSON.stringify(value)}\n`);
  // HEAD: the same headers as GET, Content-Length included, and no body (RFC 9110 §9.3.2).
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function sendStream(res: http.ServerResponse, total: number, chunked: boolean, head: boolean, streams: StreamRecord[]): void {
  res.writeHead(200, chunked ? { 'Content-Type': 'application/octet-stream' } : { 'Content-Type': 'application/octet-stream', 'Content-Length': total });
  if (head) {
    res.end();
    return;
  }
  const hash = createHash('sha256');
  let sent = 0;
  const pump = (): void => {
    while (sent < total) {
      const chunk = randomBytes(Math.min(STREAM_CHUNK, total - sent));
      hash.update(chunk);
      sent += chunk.length;
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
    streams.push({ bytes: sent, sha256: hash.digest('hex'), chunked });
    res.end();
  };
  res.on('close', () => res.off('drain', pump));
  pump();
}

function boundedInt(s: string | null, min: number, max: number): number | undefined {
  if (s === null || !/^\d+$/.test(s)) return undefined;
  const n = Number(s);
  return n >= min && n <= max ? n : undefined;
}

export interface WsEchoBackend extends Backend {
  /** Headers of every upgrade request the backend accepted, in order. */
  readonly upgrades: http.IncomingHttpHeaders[];
  /** Open server-side WebSockets. */
  readonly open: number;
}

/**
 * A `ws` server echoing every message (text stays text, binary stays binary). A text message `kill` makes it
 * destroy that connection's TCP socket at once, without a Close frame (a backend dying mid-tunnel); `reset`
 * makes it reset the connection (RST, SO_LINGER 0).
 */
export async function startWsEchoBackend(t: TestContext, bind: BindOptions = {}): Promise<WsEchoBackend> {
  const upgrades: http.IncomingHttpHeaders[] = [];
  const server = http.createServer((_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain', Upgrade: 'websocket' });
    res.end('websocket only\n');
  });
  const wss = new WebSocketServer({ server, maxPayload: 64 * 1024 * 1024 });
  wss.on('connection', (ws: WebSocket, req: http.IncomingMessage) => {
    upgrades.push(req.headers);
    ws.on('error', () => ws.terminate());
    ws.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === 'kill') {
        req.socket.destroy();
        return;
      }
      if (!isBinary && data.toString() === 'reset') {
        req.socket.resetAndDestroy();
        return;
      }
      ws.send(data, { binary: isBinary });
    });
  });
  await listen(server, bind);
  const backend: WsEchoBackend = {
    port: portOf(server),
    upgrades,
    get open() {
      return wss.clients.size;
    },
    async close() {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await closeServer(server);
    },
  };
  t.after(() => backend.close());
  return backend;
}

export interface RefusingBackend extends Backend {
  readonly body: string;
  /** Upgrade requests refused so far. */
  readonly refused: number;
}

/** Answers every upgrade request with 403 and a body (Content-Length), then closes (a backend refusing WebSockets). */
export async function startRefusingUpgradeBackend(t: TestContext): Promise<RefusingBackend> {
  const body = 'websocket refused by backend\n';
  let refused = 0;
  const server = http.createServer((_req, res) => {
    res.writeHead(403, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
  server.on('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => {
    refused += 1;
    socket.on('error', () => socket.destroy());
    socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  await listen(server);
  const backend: RefusingBackend = {
    port: portOf(server),
    body,
    get refused() {
      return refused;
    },
    close: () => closeServer(server),
  };
  t.after(() => backend.close());
  return backend;
}

export interface RawBackend extends Backend {
  /** Request heads received (latin1 text up to and including the blank line). */
  readonly heads: string[];
}

/**
 * A raw TCP backend that answers any request head with `101 Switching Protocols` carrying a Sec-WebSocket-Accept
 * that does not match the client's key, then sends a WebSocket text frame (which must never reach the client).
 */
export async function startBadAcceptBackend(t: TestContext): Promise<RawBackend> {
  const heads: string[] = [];
  const server = net.createServer((socket) => {
    socket.on('error', () => socket.destroy());
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) {
        if (buf.length > 64 * 1024) socket.destroy();
        return;
      }
      socket.off('data', onData);
      heads.push(buf.subarray(0, end + 4).toString('latin1'));
      const wrongAccept = createHash('sha1').update('not-the-client-key').digest('base64');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wrongAccept}\r\n\r\n`);
      socket.write(Buffer.from([0x81, 0x05, ...Buffer.from('leak!')]));
      socket.resume();
    };
    socket.on('data', onData);
  });
  trackConnections(server);
  await listen(server);
  const backend: RawBackend = { port: portOf(server), heads, close: () => closeServer(server) };
  t.after(() => backend.close());
  return backend;
}

/**
 * A port on 127.0.0.1 that refuses connections. Chosen below 1024, outside the ephemeral range that port-0
 * listeners draw from, so a server of a test running in parallel cannot take it over (a released ephemeral port
 * can be handed out again at once); checked to refuse before it is returned.
 */
export async function closedPort(): Promise<number> {
  for (const port of [1, 3, 5, 7, 9, 11, 13, 17, 19, 23, 37, 42, 49]) {
    if ((await connectOutcome(port, '127.0.0.1', 2_000)) === 'ECONNREFUSED') return port;
  }
  throw new Error('no low port on 127.0.0.1 refuses connections');
}

/** How a plain TCP connect to host:port ends: 'connected', 'timeout', or the error code (ECONNREFUSED...). */
export function connectOutcome(port: number, host = '127.0.0.1', timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      resolve('timeout');
    });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** Where a backend listens: 127.0.0.1 port 0 unless a test needs another loopback address or a given port. */
export interface BindOptions {
  /** A loopback address (default 127.0.0.1): DNS tests give backends 127.0.0.2 and the like. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** A Unix socket path to listen on instead (host and port ignored; the backend's `port` is then 0). */
  path?: string;
}

/** The server's TCP port; 0 for one on a Unix socket. */
function portOf(server: net.Server): number {
  const a = server.address();
  return typeof a === 'object' && a !== null ? a.port : 0;
}

function listen(server: net.Server, bind: BindOptions = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const ready = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (bind.path !== undefined) server.listen(bind.path, ready);
    else server.listen(bind.port ?? 0, bind.host ?? '127.0.0.1', ready);
  });
}

/** Stops accepting, destroys every open connection (idle or not), and resolves when the server is closed. */
function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    if (server instanceof http.Server) server.closeAllConnections();
    else trackedSockets(server).forEach((s) => s.destroy());
  });
}

const rawSockets = new WeakMap<net.Server, Set<net.Socket>>();

function trackedSockets(server: net.Server): Set<net.Socket> {
  return rawSockets.get(server) ?? new Set();
}

/** net.Server keeps no list of its sockets; raw backends register theirs so close() can end them. */
function trackConnections(server: net.Server): void {
  const set = new Set<net.Socket>();
  rawSockets.set(server, set);
  server.on('connection', (s: net.Socket) => {
    set.add(s);
    s.on('close', () => set.delete(s));
  });
}

/**
 * For a raw upgrade backend: reads `socket` up to the end of a request head, answers it with a valid `101 Switching
 * Protocols` for its Sec-WebSocket-Key, and calls `then` with the bytes that came after the head. Listeners added
 * by `then` see everything after; nothing is read past the head before it runs.
 */
export function answerUpgrade(socket: net.Socket, then: (rest: Buffer) => void): void {
  let head = Buffer.alloc(0);
  const onHead = (c: Buffer): void => {
    head = Buffer.concat([head, c]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    socket.removeListener('data', onHead);
    const key = /sec-websocket-key:\s*(\S+)/i.exec(head.subarray(0, end).toString('latin1'))?.[1] ?? '';
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    then(head.subarray(end + 4));
  };
  socket.on('data', onHead);
}
