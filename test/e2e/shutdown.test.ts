// SIGTERM as clients see it: keep-alive clients sending back to back lose no request that reached Portico
// (responses say `Connection: close`, idle connections close only after a short grace).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend } from '../helpers/backends.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';

function config(target: string, extra: Partial<ConfigInput> = {}): ConfigInput {
  return { workers: 1, listeners: [plainListener()], upstreams: { app: { targets: [target] } }, routes: [{ match: { path: '/' }, proxy: 'app' }], ...extra };
}

interface ClientResult {
  sent: number;
  answered: number;
  /** Requests written on the connection that got no response (it closed first). */
  lost: string[];
  /** The last response said `Connection: close`. */
  toldToClose: boolean;
}

test('SIGTERM: keep-alive clients sending back to back get an answer to every request they sent (Connection: close), 0 lost', { timeout: 90_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(`127.0.0.1:${backend.port}`, { timeouts: { shutdown_grace: '10s' } }));
  const CLIENTS = 6;
  let terminated = false;
  const counts = new Array<number>(CLIENTS).fill(0);
  const run = async (id: number): Promise<ClientResult> => {
    const socket = await connectPlain(t, portico.httpPort);
    const reader = new ResponseReader(socket);
    const result: ClientResult = { sent: 0, answered: 0, lost: [], toldToClose: false };
    const deadline = Date.now() + 40_000;
    for (let i = 0; i < 20_000 && Date.now() < deadline; i++) {
      // a FIN already received: the client knows, and does not send (a real client opens a new connection)
      if (reader.ended) break;
      socket.write(`GET /c${id}/${i} HTTP/1.1\r\nHost: app\r\n\r\n`);
      result.sent++;
      try {
        const res = await reader.next({ timeoutMs: 15_000 });
        assert.equal(res.status, 200);
        result.answered++;
        counts[id]++;
        if (res.headers.connection === 'close') {
          result.toldToClose = true;
          break;
        }
      } catch (err) {
        result.lost.push(`client ${id} request ${i} (${terminated ? 'after' : 'before'} SIGTERM): ${(err as Error).message.slice(0, 120)}`);
        break;
      }
    }
    socket.destroy();
    return result;
  };
  const clients = Array.from({ length: CLIENTS }, (_, i) => run(i));
  // every client is in its stride before the signal
  const stride = Date.now() + 20_000;
  while (counts.some((c) => c < 20)) {
    assert.ok(Date.now() < stride, `clients made no progress: ${counts.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  terminated = true;
  portico.kill('SIGTERM');
  const results = await Promise.all(clients);
  assert.deepEqual(results.flatMap((r) => r.lost), [], 'no request sent on an open connection was lost');
  for (const r of results) assert.ok(r.toldToClose, `each client was told to close (answered ${r.answered} of ${r.sent})`);
  assert.equal(await portico.exited, 0);
});
