// Plain TCP peers on 127.0.0.1 port 0 for pool tests: one echoes what it reads, one accepts and never answers.
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
