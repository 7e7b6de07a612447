// A plain TCP echo server on 127.0.0.1 port 0 for pool tests: every accepted socket echoes what it reads and
// is destroyed after the test with the server. Nothing else: tests that need to see the peer keep their own.
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import type { TestContext } from 'node:test';

/** Starts the server and resolves with its port. */
export async function tcpEchoServer(t: TestContext): Promise<number> {
  const accepted: Socket[] = [];
  const server = createServer((s) => {
    accepted.push(s);
    s.on('error', () => {});
    s.on('data', (d) => s.write(d));
  });
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  t.after(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });
  return (server.address() as { port: number }).port;
}
