// Plain TCP peers on 127.0.0.1 port 0 for pool and L4 tests: one echoes what it reads (one with a tag), one accepts and never answers.
// Every accepted socket is destroyed after the test with the server; `startPeer` gives any other peer (a lying
// FastCGI application, on TCP or a Unix socket) the same life.
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';

/**
 * A peer on 127.0.0.1 port 0, or on the Unix socket `unixPath`, calling `onSocket` for each connection (errors
 * ignored). After the test its connections are destroyed first, then it is closed and awaited (close() waits for
 * them: a connection pooled by Portico would hold it until its idle timeout).
 */
async function listenPeer(t: TestContext, onSocket: (s: Socket) => void, unixPath?: string): Promise<Server> {
  const open = new Set<Socket>();
  const server = createServer((s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  if (unixPath === undefined) server.listen({ host: '127.0.0.1', port: 0 });
  else server.listen(unixPath);
  await once(server, 'listening');
  t.after(
    () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  );
  return server;
}

async function tcpPeer(t: TestContext, onSocket: (s: Socket) => void): Promise<number> {
  return ((await listenPeer(t, onSocket)).address() as AddressInfo).port;
}

/** A peer as listenPeer makes it, given as an upstream target: "127.0.0.1:PORT" or "unix:PATH". */
export async function startPeer(t: TestContext, onSocket: (s: Socket) => void, unixPath?: string): Promise<string> {
  const server = await listenPeer(t, onSocket, unixPath);
  return unixPath === undefined ? `127.0.0.1:${(server.address() as AddressInfo).port}` : `unix:${unixPath}`;
}

/** Starts an echo server and resolves with its port. */
export function tcpEchoServer(t: TestContext): Promise<number> {
  return tcpPeer(t, (s) => s.on('data', (d) => s.write(d)));
}

/** Starts a server that accepts and never answers, and resolves with its port. */
export function startSilentPeer(t: TestContext): Promise<number> {
  return tcpPeer(t, () => {});
}

/**
 * A scripted HTTP/1.1 peer: `answer(head, socket)` is called once per request head it reads (bodies are not
 * expected) and writes whatever raw response the test needs, malformed ones included.
 */
export function startScriptedHttpPeer(t: TestContext, answer: (head: string, socket: Socket) => void): Promise<number> {
  return tcpPeer(t, (s) => {
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end + 4);
        buf = buf.slice(end + 4);
        answer(head, s);
      }
    });
  });
}

/**
 * Echoes with `tag` in front of each chunk, on `host:port` (default 127.0.0.1, any port; a taken port rejects);
 * ends its side only after the client's FIN (half-close kept). Its connections are destroyed after the test.
 */
export async function startTagEcho(t: TestContext, tag = '', at: { host?: string; port?: number } = {}): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.on('data', (d: Buffer) => s.write(tag + d.toString('latin1')));
    s.on('end', () => s.end());
  });
  server.listen(at.port ?? 0, at.host ?? '127.0.0.1');
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err as Error))]);
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as AddressInfo).port;
}
