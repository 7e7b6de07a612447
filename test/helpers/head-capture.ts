// Request heads as real clients send them: a dual-stack loopback server that keeps each connection's head (with the
// addresses its socket had) and answers a small 200, and the clients the differential fuzz tests of the addon's
// request readers drive against it (Node http, curl). Each test takes the heads one by one, naming who sent them.
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { createServer, type Socket } from 'node:net';
import { run } from './clients.js';

export interface CapturedHead {
  readonly head: Buffer;
  /** The client's address and port as the server's socket had them (IPv4-mapped on the dual-stack listener). */
  readonly from: string;
  readonly fromPort: number;
  /** The address the client reached. */
  readonly to: string;
  readonly who: string;
}

export interface HeadCapture {
  readonly port: number;
  /** The one head that came since the last take, labelled `who` (asserts exactly one came). */
  take(who: string): CapturedHead;
  /** A request by node:http on a connection of its own, the answer read whole. */
  nodeRequest(host: string, path: string, headers: http.OutgoingHttpHeaders, method?: string): Promise<void>;
  /** curl with `args` (the URL among them), which must succeed; its head taken as `who`. */
  curl(args: string[], who: string): Promise<CapturedHead>;
}

export async function startHeadCapture(t: TestContext): Promise<HeadCapture> {
  const seen: Array<Omit<CapturedHead, 'who'>> = [];
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    sockets.push(s);
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0 || buf.length > 65536) return;
      const head = buf.subarray(0, end + 4);
      seen.push({ head, from: s.remoteAddress ?? '', fromPort: s.remotePort ?? 0, to: s.localAddress ?? '' });
      s.end(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n${head.toString('latin1').startsWith('HEAD ') ? '' : 'ok'}`);
      s.removeAllListeners('data');
    });
  });
  server.listen({ host: '::', port: 0, ipv6Only: false });
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  const take = (who: string): CapturedHead => {
    assert.equal(seen.length, 1, `${who}: one head seen`);
    return { ...seen.pop()!, who };
  };
  return {
    port,
    take,
    nodeRequest: (host, path, headers, method = 'GET') =>
      new Promise((resolve, reject) => {
        const req = http.request({ host, port, path, method, headers, agent: false }, (res) => {
          res.resume();
          res.on('end', resolve);
        });
        req.on('error', reject);
        req.end();
      }),
    curl: async (args, who) => {
      const r = await run('curl', ['-sS', '--max-time', '10', ...args], 15_000);
      assert.equal(r.code, 0, `${who}: ${r.stderr}`);
      return take(who);
    },
  };
}
