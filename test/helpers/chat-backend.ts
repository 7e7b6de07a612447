// A `ws` backend for terminated WebSocket tests: echoes (text stays text, binary binary); `close:CODE:REASON`
// makes it close with that code and reason; `flood:N:SIZE` sends N binary messages of SIZE bytes at once; it picks the LAST subprotocol offered (so a test tells the
// backend's choice from the client's first offer); a request header X-Want-Topic makes it name that topic in
// its 101 (X-Portico-Topics). Records upgrade headers and the closes it received. Plus the client's close.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';

/** A `ws` backend: echoes; `close:CODE:REASON` makes it close with that code; it picks the LAST offered subprotocol. */
export interface ChatBackend {
  readonly port: number;
  readonly upgrades: http.IncomingHttpHeaders[];
  /** Close codes and reasons the backend received, in order. */
  readonly closes: Array<{ code: number; reason: string }>;
  readonly sockets: Set<WebSocket>;
  /** Resolves when `n` closes arrived. */
  closesReach(n: number, timeoutMs?: number): Promise<void>;
}

export async function startChatBackend(t: TestContext, onConnection?: (ws: WebSocket, req: http.IncomingMessage) => void): Promise<ChatBackend> {
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  const wss = new WebSocketServer({
    server,
    maxPayload: 64 * 1024 * 1024,
    handleProtocols: (protocols) => [...protocols].at(-1) ?? false,
  });
  // the request header X-Want-Topic (set by a route) makes the backend name that topic in its 101
  wss.on('headers', (headers, req) => {
    const want = req.headers['x-want-topic'];
    if (typeof want === 'string') headers.push(`X-Portico-Topics: ${want}`);
  });
  const upgrades: http.IncomingHttpHeaders[] = [];
  const closes: Array<{ code: number; reason: string }> = [];
  const sockets = new Set<WebSocket>();
  let waiters: Array<() => void> = [];
  wss.on('connection', (ws, req) => {
    upgrades.push(req.headers);
    sockets.add(ws);
    ws.on('error', () => ws.terminate());
    ws.on('close', (code, reason) => {
      sockets.delete(ws);
      closes.push({ code, reason: reason.toString() });
      const w = waiters;
      waiters = [];
      for (const f of w) f();
    });
    if (onConnection !== undefined) return onConnection(ws, req);
    ws.on('message', (data, isBinary) => {
      const s = isBinary ? '' : data.toString();
      if (s.startsWith('flood:')) {
        // flood:N:SIZE -> N binary messages of SIZE bytes, each starting with its index (UInt32BE)
        const [, n, size] = s.split(':');
        for (let i = 0; i < Number(n); i++) {
          const m = Buffer.alloc(Number(size), 1);
          m.writeUInt32BE(i, 0);
          ws.send(m, { binary: true });
        }
        return;
      }
      if (s.startsWith('close:')) {
        const [, code, reason] = s.split(':');
        ws.close(Number(code), reason);
        return;
      }
      ws.send(data, { binary: isBinary });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port: (server.address() as AddressInfo).port,
    upgrades,
    closes,
    sockets,
    closesReach(n, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`backend saw ${closes.length} closes, not ${n}, in ${timeoutMs} ms`)), timeoutMs);
        const check = (): void => {
          if (closes.length >= n) {
            clearTimeout(timer);
            resolve();
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}

/** The close code and reason the client got. */
export function closeOf(ws: WebSocket, timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.CLOSED) return reject(new Error('already closed'));
    const timer = setTimeout(() => reject(new Error(`still open after ${timeoutMs} ms`)), timeoutMs);
    ws.once('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
  });
}

