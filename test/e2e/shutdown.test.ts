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

/**
 * Message `seq` of the big-frame streams: its size cycles through frames above and below the splice relay's
 * threshold (64 KiB) and tiny ones; the first 4 bytes say `seq`, the rest is one byte value, so a message cut,
 * shifted or mixed with another is seen.
 */
const BIG_SIZES = [300 * 1024, 17, 70 * 1024, 5, 200 * 1024, 1000];
function bigMessage(seq: number): Buffer {
  const m = Buffer.alloc(BIG_SIZES[seq % BIG_SIZES.length], seq % 251);
  m.writeUInt32BE(seq, 0);
  return m;
}
/** Null when `m` is message `expect` whole, else what is wrong. */
function checkBigMessage(m: Buffer, expect: number): string | null {
  if (m.length < 4 || m.readUInt32BE(0) !== expect) return `message ${expect}: got seq ${m.length < 4 ? '?' : m.readUInt32BE(0)}`;
  return m.equals(bigMessage(expect)) ? null : `message ${expect}: ${m.length} bytes, not intact`;
}
/**
 * Sends bigMessage(0), (1), ... on `ws` back to back (`bufferedAmount` kept under 2 MiB): each big one in three
 * fragments with a ping between two (control frames interleaved with a fragmented message), so frames of every
 * kind are in flight at any moment. Stops when the socket closes.
 */
function streamBigMessages(ws: WebSocket): void {
  let seq = 0;
  const timer = setInterval(() => {
    if (ws.readyState !== ws.OPEN) return clearInterval(timer);
    if (ws.bufferedAmount > 2 * 1024 * 1024) return;
    const m = bigMessage(seq++);
    if (m.length < 64 * 1024) return ws.send(m, { binary: true, compress: false });
    const third = Math.floor(m.length / 3);
    ws.send(m.subarray(0, third), { binary: true, compress: false, fin: false });
    ws.ping('between fragments');
    ws.send(m.subarray(third, 2 * third), { binary: true, compress: false, fin: false });
    ws.send(m.subarray(2 * third), { binary: true, compress: false, fin: true });
  }, 1);
}

/**
 * A `ws` backend that echoes, can stream, and records the close code each connection received. 'stream' sends
 * 64 KiB messages back to back; 'stream big' sends streamBigMessages. Binary messages from a client that sent
 * 'upload' are checked as bigMessage(0), (1), ... and not echoed (`uploads`, `badUploads`).
 */
async function startRecordingWsBackend(
  t: TestContext,
): Promise<{ port: number; closeCodes: number[]; uploads: () => number; badUploads: string[]; closed: (n: number) => Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const closeCodes: number[] = [];
  const badUploads: string[] = [];
  let uploads = 0;
  let wake: (() => void) | undefined;
  wss.on('connection', (ws: WebSocket) => {
    let stream: NodeJS.Timeout | undefined;
    let uploading = false;
    ws.on('error', (err) => {
      badUploads.push(`backend socket error: ${err.message}`);
      ws.terminate();
    });
    ws.on('message', (data, isBinary) => {
      if (uploading && isBinary) {
        const problem = checkBigMessage(data as Buffer, uploads++);
        if (problem !== null) badUploads.push(problem);
        return;
      }
      if (!isBinary && data.toString() === 'upload') {
        uploading = true;
        return;
      }
      if (!isBinary && data.toString() === 'stream big') return streamBigMessages(ws);
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
    uploads: () => uploads,
    badUploads,
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

test('spliced ws:// tunnels (native relay) get the Close 1001 both ways too, at frame boundaries of big fragmented frames streamed either way', { timeout: 90_000 }, async (t) => {
  const backend = await startRecordingWsBackend(t);
  const portico = await startPortico(t, config(`127.0.0.1:${backend.port}`, { timeouts: { shutdown_grace: '1500ms' } }));
  const url = `ws://127.0.0.1:${portico.httpPort}/ws`;
  // idle ones (one with permessage-deflate), one the backend streams big frames to, one streaming them up
  const idle = await Promise.all([openWebSocket(t, url), openWebSocket(t, url, { perMessageDeflate: false })]);
  for (const ws of idle) assert.equal(await echo(ws, 'before'), 'before');
  const down = await openWebSocket(t, url, { perMessageDeflate: false });
  const up = await openWebSocket(t, url, { perMessageDeflate: false });
  const errors: string[] = [];
  for (const ws of [...idle, down, up]) ws.on('error', (err) => errors.push(err.message));
  let received = 0;
  down.on('message', (m: Buffer) => {
    const problem = checkBigMessage(m, received++);
    if (problem !== null) errors.push(problem);
  });
  down.send('stream big');
  up.send('upload');
  streamBigMessages(up);
  const stride = Date.now() + 20_000;
  while (received < 20 || backend.uploads() < 20) {
    assert.ok(Date.now() < stride, `streaming: ${received} messages down, ${backend.uploads()} up`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }

  const codes = [...idle, down, up].map((ws) => closed(ws, 20_000));
  const sentAt = Date.now();
  portico.kill('SIGTERM');
  assert.equal(await echo(idle[1], 'during the grace'), 'during the grace');
  const got = await Promise.all(codes);
  assert.deepEqual(errors, [], 'every message arrived whole, no client saw a protocol error (no frame was cut)');
  assert.deepEqual(got, [1001, 1001, 1001, 1001], 'each client got a Close 1001');
  assert.ok(Date.now() - sentAt >= 1400, 'closed at the end of the grace, not at SIGTERM');
  await backend.closed(4);
  assert.deepEqual(backend.badUploads, [], 'every uploaded message reached the backend whole');
  assert.deepEqual(backend.closeCodes, [1001, 1001, 1001, 1001], 'the backend got a masked Close 1001 on each tunnel (ws refuses an unmasked one)');
  assert.equal(await portico.exited, 0);
  const lines = portico.logs.filter((l) => l.msg === 'tunnel');
  assert.equal(lines.length, 4);
  for (const l of lines) {
    assert.equal(l.closedBy, 'shutdown');
    assert.equal(l.spliced, true, 'the tunnels went through the splice relay');
  }
});
