// Plain TCP peers on 127.0.0.1 port 0 for pool tests: one echoes what it reads, one accepts and never answers.
// Every accepted socket is destroyed after the test with the server. Nothing else: tests that need to see the
// peer keep their own.
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import type { TestContext } from 'node:test';

async function tcpPeer(t: TestContext, onSocket: (s: Socket) => void): Promise<number> {
  const accepted: Socket[] = [];
  const server = createServer((s) => {
    accepted.push(s);
    s.on('error', () => {});
    onSocket(s);
  });
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  t.after(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });
  return (server.address() as { port: number }).port;
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
