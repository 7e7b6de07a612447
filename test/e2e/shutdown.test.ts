// SIGTERM as clients see it: keep-alive clients sending back to back lose no request that reached Portico
// (responses say `Connection: close`, idle connections close only after a short grace), and WebSocket tunnels
// still open at the end of the grace get a Close frame 1001 (going away) each way, never a cut frame.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test, type TestContext } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend } from '../helpers/backends.js';
import { closed, echo, openWebSocket } from '../helpers/clients.js';
import { plainListener, startPortico, tlsListener } from '../helpers/portico.js';
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

/** A `ws` backend that echoes, can stream, and records the close code each connection received. */
async function startRecordingWsBackend(t: TestContext): Promise<{ port: number; closeCodes: number[]; closed: (n: number) => Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const closeCodes: number[] = [];
  let wake: (() => void) | undefined;
  wss.on('connection', (ws: WebSocket) => {
    let stream: NodeJS.Timeout | undefined;
    ws.on('error', () => ws.terminate());
    ws.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === 'stream') {
        // 64 KiB messages back to back, so frames are in flight at any moment
        const chunk = Buffer.alloc(64 * 1024, 7);
        stream = setInterval(() => {
          if (ws.readyState === ws.OPEN && ws.bufferedAmount < 1024 * 1024) ws.send(chunk, { binary: true, compress: false });
        }, 1);
        return;
      }
      ws.send(data, { binary: isBinary });
    });
    ws.on('close', (code) => {
      clearInterval(stream);
      closeCodes.push(code);
      wake?.();
    });
  });
  t.after(async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  });
  const port = (wss.address() as AddressInfo).port;
  return {
    port,
    closeCodes,
    async closed(n) {
      const deadline = Date.now() + 15_000;
      while (closeCodes.length < n) {
        assert.ok(Date.now() < deadline, `backend saw ${closeCodes.length} of ${n} closes`);
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 100).unref();
        });
      }
    },
  };
}

test('at the end of the shutdown grace, WebSocket tunnels get a Close 1001 (going away) both ways, streaming ones at a frame boundary', { timeout: 90_000 }, async (t) => {
  const backend = await startRecordingWsBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener()],
    upstreams: { ws: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'ws' }],
    timeouts: { shutdown_grace: '1500ms' },
  });
  const url = `wss://localhost:${portico.tlsPort}/ws`;
  // idle ones (one with permessage-deflate negotiated) and one receiving 64 KiB frames back to back
  const idle = await Promise.all([openWebSocket(t, url), openWebSocket(t, url, { perMessageDeflate: false }), openWebSocket(t, url)]);
  assert.ok(idle[0].extensions.includes('permessage-deflate'));
  for (const ws of idle) assert.equal(await echo(ws, 'before'), 'before');
  const streaming = await openWebSocket(t, url, { perMessageDeflate: false });
  let received = 0;
  const errors: string[] = [];
  streaming.on('message', (m: Buffer) => {
    assert.equal(m.length, 64 * 1024, 'every message arrives whole');
    received++;
  });
  for (const ws of [...idle, streaming]) ws.on('error', (err) => errors.push(err.message));
  streaming.send('stream');
  const stride = Date.now() + 10_000;
  while (received < 20) {
    assert.ok(Date.now() < stride, `streaming: ${received} messages`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }

  const codes = [...idle, streaming].map((ws) => closed(ws, 20_000));
  const sentAt = Date.now();
  portico.kill('SIGTERM');
  // during the grace the tunnels go on
  assert.equal(await echo(idle[1], 'during the grace'), 'during the grace');
  const got = await Promise.all(codes);
  assert.deepEqual(errors, [], 'no client saw a protocol error (no frame was cut)');
  assert.deepEqual(got, [1001, 1001, 1001, 1001]);
  assert.ok(Date.now() - sentAt >= 1400, 'closed at the end of the grace, not at SIGTERM');
  await backend.closed(4);
  assert.deepEqual(backend.closeCodes, [1001, 1001, 1001, 1001], 'the backend got a (masked) Close 1001 on each tunnel');
  assert.equal(await portico.exited, 0);
  const lines = portico.logs.filter((l) => l.msg === 'tunnel');
  assert.equal(lines.length, 4);
  for (const l of lines) assert.equal(l.closedBy, 'shutdown');
});
