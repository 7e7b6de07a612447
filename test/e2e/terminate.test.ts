// Terminated WebSocket (websocket.mode: terminate) end to end through a running Portico: the client's WebSocket
// ends in uWebSockets.js and messages are relayed over Portico's own WebSocket to a `ws` backend. Echo (text,
// binary, fragmented), the backend's subprotocol choice, request headers and the client IP reaching the backend,
// close codes both ways, 1009 over max_message_size, 502 when the backend is down, keepalive pings.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import WebSocket from 'ws';
import { closedPort } from '../helpers/backends.js';
import { closeOf, startChatBackend, type ChatBackend } from '../helpers/chat-backend.js';
import { echo, openWebSocket, request, UnexpectedResponse } from '../helpers/clients.js';
import { adminStatus, adminUrl, statusUntil } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { testCaCert } from '../helpers/wire.js';
import { nativeTlsStatus } from '../../src/native/tls.js';
import { plainListener, reloadPortico, startPortico, tlsListener, type LogLine, type Portico } from '../helpers/portico.js';

/** Writes `head` on a fresh connection and resolves with everything read until the server closes. */
function rawRequest(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(head));
    const parts: Buffer[] = [];
    const timer = setTimeout(() => s.destroy(new Error('no close in 10 s')), 10_000);
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts).toString('latin1'));
    });
  });
}

const isTerminateLine = (l: LogLine) => l.msg === 'websocket' && l.mode === 'terminate';

/** Workers start slower under scripts/asan.sh (an instrumented addon preloaded with libasan). */
const START = { startTimeoutMs: process.env.PORTICO_NATIVE_ADDON !== undefined ? 120_000 : 20_000 };

/**
 * A backend that stops reading (its socket paused) while the client sends 96 MiB: the client's sends must stall
 * with the worker (RSS of `worker`, when given) holding a bounded amount and the connection open (no 1013); once
 * the backend reads again every message arrives in order and the connection goes on.
 */
async function backendStall(t: TestContext, portico: Portico, backend: ChatBackend, url: string, worker: number | undefined): Promise<void> {
  const rssKiB = (): number => (worker === undefined ? 0 : Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${worker}/status`, 'utf8'))?.[1] ?? NaN));
  const ws = await openWebSocket(t, url, { localAddress: '127.0.0.2' });
  const closed = closeOf(ws, 60_000);
  assert.equal(await echo(ws, 'before'), 'before');
  const server = [...backend.sockets].at(-1)!;
  server.pause(); // the backend reads nothing from here on
  const N = 1536;
  const SIZE = 64 * 1024; // 96 MiB in all: far over max_buffer (256 KiB) + max_message_size + the hop's slack
  let next = 0;
  const arrived = new Promise<void>((resolve, reject) => {
    server.on('message', (d: Buffer, binary: boolean) => {
      if (!binary) return;
      if (d.length !== SIZE || d.readUInt32BE(0) !== next) reject(new Error(`message ${next}: got index ${d.readUInt32BE(0)}, ${d.length} bytes`));
      if (++next === N) resolve();
    });
  });
  let echoed = 0; // the backend echoes each one back once it reads again
  ws.on('message', (_d: Buffer, binary: boolean) => void (binary && echoed++));
  const rssBefore = rssKiB();
  for (let i = 0; i < N; i++) {
    const m = Buffer.alloc(SIZE, i & 0xff);
    m.writeUInt32BE(i, 0);
    ws.send(m, { binary: true });
  }
  // the client's sends stop draining: what left it sits in kernel buffers and, bounded, in the worker
  let last = -1;
  let still = 0;
  await until('the client\'s sends stop draining', () => {
    const b = ws.bufferedAmount;
    still = b === last ? still + 1 : 0;
    last = b;
    return still;
  }, (n) => n >= 6, 30_000, 100);
  const grown = rssKiB() - rssBefore;
  t.diagnostic(`stalled: the client holds ${ws.bufferedAmount} of ${N * SIZE} bytes; the worker grew by ${grown} KiB`);
  assert.ok(ws.bufferedAmount > 32 * 1024 * 1024, `the client still holds only ${ws.bufferedAmount} of ${N * SIZE} bytes: it was not paused`);
  assert.ok(grown < 32 * 1024, `the worker grew by ${grown} KiB while the backend read nothing`);
  assert.equal(ws.readyState, WebSocket.OPEN);
  server.resume();
  await arrived;
  await until('the client\'s sends drained and their echoes came back', () => [ws.bufferedAmount, echoed], ([b, e]) => b === 0 && e === N, 30_000);
  assert.equal(await echo(ws, 'after'), 'after');
  ws.close(1000);
  assert.equal((await closed).code, 1000);
  await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'client' && l.messagesIn === N + 2);
}

/**
 * A client that stops reading while the backend floods it with 32 MiB: Portico stops reading the backend leg (most
 * of the flood stays queued in the backend's own WebSocket); once the client reads again every message arrives in
 * order. Returns the number of messages.
 */
async function clientStall(t: TestContext, portico: Portico, backend: ChatBackend, url: string, beforeClose?: () => Promise<void>): Promise<number> {
  const ws = await openWebSocket(t, url);
  const N = 512;
  const SIZE = 64 * 1024; // 32 MiB in all, far over max_buffer and the kernel's socket buffers
  ws.pause(); // the client reads nothing from here on
  ws.send(`flood:${N}:${SIZE}`);
  const server = await until('the backend accepted the connection', () => [...backend.sockets].at(-1), (s) => s !== undefined);
  const queued = await until('the backend sees its sends stop draining', () => server!.bufferedAmount, (b) => b > (N * SIZE) / 2, 20_000);
  assert.ok(queued > (N * SIZE) / 2, `backend still holds ${queued} bytes`);
  let next = 0;
  const done = new Promise<void>((resolve, reject) => {
    ws.on('message', (d: Buffer) => {
      if (d.length !== SIZE || d.readUInt32BE(0) !== next) reject(new Error(`message ${next}: got index ${d.readUInt32BE(0)}, ${d.length} bytes`));
      if (++next === N) resolve();
    });
  });
  ws.resume();
  await done;
  await beforeClose?.();
  ws.close(1000);
  await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'client' && l.messagesOut === N);
  return N;
}

test('terminated WebSocket over a plain listener: messages relayed by uWebSockets.js', { timeout: 120_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const down = await closedPort();
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`] }, down: { targets: [`127.0.0.1:${down}`] } },
    routes: [
      { match: { path: '/down' }, proxy: 'down', websocket: { mode: 'terminate' } },
      { match: { path: '/deflate' }, proxy: 'chat', websocket: { mode: 'terminate', compression: true } },
      { match: { path: '/idle' }, proxy: 'chat', websocket: { mode: 'terminate', idle_timeout: '1s' } },
      { match: { path: '/rate' }, proxy: 'chat', websocket: { mode: 'terminate', message_rate: '5/s' } },
      { match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate', max_message_size: '64KiB', ping_interval: '20s' } },
    ],
  });
  const base = `ws://127.0.0.1:${portico.httpPort}`;
  await portico.waitForLog((l) => l.msg === 'uWebSockets.js loaded for terminated WebSocket' && typeof l.uws === 'string');

  await t.test('echo: text stays text, binary stays binary, a fragmented message arrives whole', async (t) => {
    const ws = await openWebSocket(t, `${base}/wss`);
    assert.equal(await echo(ws, 'hello'), 'hello');
    const bin = Buffer.from([0, 1, 2, 254, 255]);
    assert.deepEqual(await echo(ws, bin), bin);
    const got = new Promise<Buffer>((resolve) => ws.once('message', (d: Buffer) => resolve(d)));
    ws.send('frag-', { fin: false });
    ws.send('ment-', { fin: false });
    ws.send('ed', { fin: true });
    assert.equal((await got).toString(), 'frag-ment-ed');
    ws.close(1000, 'bye');
    await backend.closesReach(1);
    assert.deepEqual(backend.closes.at(-1), { code: 1000, reason: 'bye' }, 'the client\'s close code and reason reach the backend');
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'client');
    assert.equal(line.code, 1000);
    assert.equal(line.remoteAddr, '127.0.0.1');
    assert.equal(line.messagesIn, 4 - 1, 'three messages in (the fragments are one)');
  });

  await t.test('the backend chooses the subprotocol; request headers and the client IP reach it', async (t) => {
    const before = backend.upgrades.length;
    const ws2 = await new Promise<WebSocket>((resolve, reject) => {
      // from a second loopback address: the client IP is told apart from Portico's own
      const w = new WebSocket(`${base}/wss`, ['chat.v1', 'chat.v2'], { headers: { Cookie: 'sid=abc', Authorization: 'Bearer t' }, localAddress: '127.0.0.2' });
      t.after(() => w.terminate());
      w.once('open', () => resolve(w));
      w.once('error', reject);
    });
    assert.equal(ws2.protocol, 'chat.v2', 'the backend picked the last offer; the client got that one');
    const h = backend.upgrades[before];
    assert.equal(h.cookie, 'sid=abc');
    assert.equal(h.authorization, 'Bearer t');
    assert.equal(h['x-real-ip'], '127.0.0.2');
    assert.equal(h['x-forwarded-for'], '127.0.0.2');
    assert.equal(h['sec-websocket-extensions'], undefined, 'the backend leg offers no extension');
    assert.equal(await echo(ws2, 'x'), 'x');
    ws2.close(1000);
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.remoteAddr === '127.0.0.2');
    assert.equal(line.code, 1000, 'the access log names the real client on the plain (splice) hand-off');
  });

  await t.test('compression: permessage-deflate is negotiated with the client only on a route that asks for it', async (t) => {
    const on = await openWebSocket(t, `${base}/deflate`);
    assert.match(on.extensions, /permessage-deflate/);
    const text = 'compressible '.repeat(2000);
    assert.equal(await echo(on, text), text);
    const off = await openWebSocket(t, `${base}/wss`);
    assert.equal(off.extensions, '', 'ws offers deflate by default; the route without compression declines');
    for (const h of backend.upgrades) assert.equal(h['sec-websocket-extensions'], undefined, 'the backend leg stays uncompressed');
  });

  await t.test('backend closes with 4001 "reason": the client sees 4001 "reason"', async (t) => {
    const ws = await openWebSocket(t, `${base}/wss`);
    const c = closeOf(ws);
    ws.send('close:4001:reason');
    assert.deepEqual(await c, { code: 4001, reason: 'reason' });
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'upstream' && l.code === 4001);
    assert.equal(line.reason, 'reason');
  });

  await t.test('a message over max_message_size: the client gets 1009', async (t) => {
    const ws = await openWebSocket(t, `${base}/wss`);
    const c = closeOf(ws);
    ws.send(Buffer.alloc(64 * 1024 + 1, 7));
    assert.equal((await c).code, 1009);
    await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'message_too_big' && l.code === 1009);
  });

  await t.test('idle_timeout: no message either way for that long -> Close 1001 to both sides', async (t) => {
    const ws = await openWebSocket(t, `${base}/idle`);
    const c = closeOf(ws);
    assert.equal(await echo(ws, 'one'), 'one');
    assert.deepEqual(await c, { code: 1001, reason: 'idle timeout' });
    await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'idle_timeout' && l.path === '/idle');
  });

  await t.test('message_rate: a client over its rate (burst of one second) is closed with 1008', async (t) => {
    const ws = await openWebSocket(t, `${base}/rate`);
    const c = closeOf(ws);
    for (let i = 0; i < 20; i++) ws.send(`m${i}`);
    assert.equal((await c).code, 1008);
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'message_rate');
    assert.ok(Number(line.messagesIn) <= 6, `at most the burst went to the backend (${String(line.messagesIn)})`);
  });

  await t.test('a frame sent in the same write as the handshake reaches the backend first, then the next ones, in order; the hop is still spliced', async () => {
    // uWS's 101 waits for the early frame to go in, so Node has read it into the unix socket before the hop starts:
    // the hop writes it on and splices from there, instead of relaying the whole connection in JavaScript
    const got = await earlyFrameEcho(portico.httpPort, false);
    assert.match(got, /^HTTP\/1\.1 101 /);
    assert.ok(got.endsWith('\x81\x05early\x81\x04late'), `echoes in order after the 101: ${JSON.stringify(got.slice(-16))}`);
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.messagesIn === 2 && l.messagesOut === 2);
    assert.equal(line.hop, 'splice');
  });

  await t.test('HTTP/1.0 never reaches uWebSockets.js: an Upgrade over HTTP/1.0 is forwarded as a plain request', async () => {
    const res = await rawRequest(portico.httpPort, 'GET /wss HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    assert.match(res, /^HTTP\/1\.1 426 /, 'the backend\'s answer to a plain GET, never a 101 or uWS\'s 505');
  });

  await t.test('backend down: the handshake gets 502 and never a 101', async (t) => {
    const err = await openWebSocket(t, `${base}/down`).then(
      () => assert.fail('no 101 without a backend'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof UnexpectedResponse, String(err));
    assert.equal(err.status, 502);
  });
});

test('terminated WebSocket: a client that stops answering pings is closed after two intervals', { timeout: 60_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate', ping_interval: '500ms' } }],
  });
  const url = `ws://127.0.0.1:${portico.httpPort}/wss`;
  // a client that answers pings stays open past several intervals
  const alive = await openWebSocket(t, url);
  const pinged = new Promise<void>((resolve) => alive.once('ping', () => resolve()));
  // a client that does not (ws's autoPong off): closed by Portico, the backend told with 1001
  const silent = await openWebSocket(t, url, { autoPong: false });
  const c = closeOf(silent);
  await pinged;
  assert.equal((await c).code, 1006, 'a vanished client gets no Close frame: the connection is dropped');
  await backend.closesReach(1);
  assert.equal(backend.closes[0].code, 1001);
  const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'ping_timeout');
  assert.ok(Number(line.pingsMissed) >= 1);
  assert.equal(await echo(alive, 'still here'), 'still here', 'the client that answers pings is still open');
});

/** A masked client text frame (RFC 6455 §5.3), payload under 126 bytes. */
function maskedText(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = [0x11, 0x22, 0x33, 0x44];
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length, ...mask]), Buffer.from(payload.map((b, i) => b ^ mask[i % 4]))]);
}

/**
 * Over TLS (or plain TCP), writes an upgrade head and a text frame "early" in one write (the frame reaches Portico
 * with the head), then, once both echoes could be there, "late"; resolves with what came back (latin1) when the
 * second echo is in.
 */
function earlyFrameEcho(port: number, secure = true): Promise<string> {
  return new Promise((resolve, reject) => {
    const head = `GET /wss HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    const first = (): boolean => s.write(Buffer.concat([Buffer.from(head), maskedText('early')]));
    const s = secure ? tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: testCaCert() }, first) : net.connect({ port, host: '127.0.0.1' }, first);
    let got = '';
    let sentLate = false;
    const timer = setTimeout(() => s.destroy(new Error(`no echoes in 10 s: ${JSON.stringify(got)}`)), 10_000);
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (!sentLate && got.endsWith('\x81\x05early')) {
        sentLate = true;
        s.write(maskedText('late'));
      }
      if (got.endsWith('\x81\x04late')) {
        clearTimeout(timer);
        s.end(Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]));
        resolve(got);
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * What relays the hop into uWS for a TLS client: the addon's TLS relay thread where the addon terminates TLS, else
 * (PORTICO_NATIVE_TLS=0, no addon: Node's TLS) the JS relay, which the worker says at start.
 */
const TLS_HOP = nativeTlsStatus().available ? 'tls-relay' : 'js';

test(`terminated WSS: the hop into uWebSockets.js runs on the ${TLS_HOP === 'js' ? 'JS relay (Node\'s TLS here)' : 'addon\'s TLS relay thread, no byte through JavaScript'}`, { timeout: 180_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const portico = await startPortico(
    t,
    {
      workers: 1,
      listeners: [tlsListener()],
      admin: { address: '127.0.0.1:0' },
      upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`] } },
      routes: [{ match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate', max_buffer: '256KiB' } }],
    },
    START,
  );
  const url = `wss://localhost:${portico.tlsPort}/wss`;
  const fallback = (l: LogLine) => l.msg === 'terminated WebSocket: the hop into uWebSockets.js stays in JavaScript on this listener';
  if (TLS_HOP === 'js') await portico.waitForLog(fallback);

  await t.test(`echo (text, binary, fragmented, 200 KiB), the client's close code, the client IP; the access line says hop ${TLS_HOP}`, async (t) => {
    const ws = await openWebSocket(t, url, { localAddress: '127.0.0.2' });
    assert.equal(await echo(ws, 'over tls'), 'over tls');
    const bin = Buffer.from([0, 1, 2, 254, 255]);
    assert.deepEqual(await echo(ws, bin), bin);
    const big = Buffer.alloc(200 * 1024, 3);
    assert.deepEqual(await echo(ws, big), big);
    const got = new Promise<Buffer>((resolve) => ws.once('message', (d: Buffer) => resolve(d)));
    ws.send('frag-', { fin: false });
    ws.send('ment-', { fin: false });
    ws.send('ed', { fin: true });
    assert.equal((await got).toString(), 'frag-ment-ed');
    assert.equal(backend.upgrades[0]['x-forwarded-proto'], 'https');
    assert.equal(backend.upgrades[0]['x-real-ip'], '127.0.0.2');
    assert.equal(backend.upgrades[0]['x-forwarded-for'], '127.0.0.2');
    ws.close(4002, 'client bye');
    await backend.closesReach(1);
    assert.deepEqual(backend.closes.at(-1), { code: 4002, reason: 'client bye' }, "the client's close code and reason reach the backend");
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'client');
    assert.equal(line.remoteAddr, '127.0.0.2', 'the access log names the real client');
    assert.equal(line.code, 4002);
    assert.equal(line.messagesIn, 4, 'four messages in (the fragments are one)');
    assert.equal(line.bytesIn, 'over tls'.length + bin.length + big.length + 'frag-ment-ed'.length);
    assert.equal(line.handoff, 'relay');
    assert.equal(line.hop, TLS_HOP, TLS_HOP === 'tls-relay' ? "the client's plaintext went to uWS on the addon's TLS relay thread" : 'the JS relay');
    if (TLS_HOP === 'tls-relay') assert.equal(portico.logs.find(fallback), undefined, 'no fallback said');
  });

  await t.test('the backend closes with 4001 "reason": the client sees 4001 "reason"', async (t) => {
    const ws = await openWebSocket(t, url);
    const c = closeOf(ws);
    ws.send('close:4001:reason');
    assert.deepEqual(await c, { code: 4001, reason: 'reason' });
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'upstream' && l.code === 4001);
    assert.equal(line.reason, 'reason');
    assert.equal(line.hop, TLS_HOP);
  });

  await t.test('a frame sent in the same write as the handshake reaches the backend first, then the next ones, in order', async () => {
    const got = await earlyFrameEcho(portico.tlsPort);
    assert.match(got, /^HTTP\/1\.1 101 /);
    assert.ok(got.endsWith('\x81\x05early\x81\x04late'), `echoes in order after the 101: ${JSON.stringify(got.slice(-16))}`);
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.messagesIn === 2 && l.messagesOut === 2);
    assert.equal(line.hop, TLS_HOP);
  });

  await t.test('a client that stops reading pauses the backend leg; then every message arrives in order', async (t) => {
    const N = await clientStall(t, portico, backend, url);
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.messagesOut === N);
    assert.equal(line.hop, TLS_HOP);
  });

  await t.test("a backend that stops reading: the client's sends pause with the worker's memory bounded (no 1013); then every message arrives in order", async (t) => {
    // the relay stops reading the client at the session's word (holdUp): uWS cannot pause a WebSocket itself
    await backendStall(t, portico, backend, url, (await adminStatus(portico)).workers[0]!.pid ?? undefined);
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'client' && Number(l.messagesIn) > 1000);
    assert.equal(line.hop, TLS_HOP);
  });

  await t.test('clients that vanish (right after the 101, mid-message, mid-handshake) leave nothing open', async (t) => {
    const gone: Array<Promise<void>> = [];
    for (let i = 0; i < 30; i++) {
      gone.push(
        new Promise<void>((resolve) => {
          const ws = new WebSocket(url, { ca: testCaCert() });
          ws.on('error', () => {});
          ws.on('close', () => resolve());
          if (i % 3 === 0) ws.on('upgrade', () => ws.terminate());
          else if (i % 3 === 1) ws.on('open', () => ws.terminate());
          else ws.on('open', () => ws.send(Buffer.alloc(300 * 1024, 1), () => ws.terminate()));
        }),
      );
    }
    await Promise.all(gone);
    await statusUntil(portico, 'no connection left', (s) => s.workers.every((w) => w.connections === 0), 15_000);
    await until('the backend legs are closed', () => backend.sockets.size, (n) => n === 0, 15_000);
    const ws = await openWebSocket(t, url);
    assert.equal(await echo(ws, 'still serving'), 'still serving');
  });
});

test('terminated WSS with PORTICO_NATIVE_TLS=0: Node terminates TLS, the hop stays in JavaScript and the worker says so', { timeout: 60_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const portico = await startPortico(
    t,
    {
      workers: 1,
      listeners: [tlsListener()],
      upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`] } },
      routes: [{ match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate' } }],
    },
    { ...START, env: { PORTICO_NATIVE_TLS: '0' } },
  );
  const said = await portico.waitForLog((l) => l.msg === 'terminated WebSocket: the hop into uWebSockets.js stays in JavaScript on this listener');
  assert.equal(said.listener, 0);
  assert.match(String(said.reason), /PORTICO_NATIVE_TLS=0/);
  const ws = await openWebSocket(t, `wss://localhost:${portico.tlsPort}/wss`);
  assert.equal(await echo(ws, 'node tls'), 'node tls');
  ws.close(1000);
  const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'client');
  assert.equal(line.hop, 'js');
});

for (const kind of ['plain', 'tls'] as const) {
test(`terminated WebSocket drain (${kind === 'plain' ? 'ws, splice hop' : `wss, ${TLS_HOP} hop`}): SIGTERM closes every client with 1001, paced at drain_rate, within the grace`, { timeout: 60_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const N = 20;
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [kind === 'plain' ? plainListener() : tlsListener()],
    upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate', drain_rate: '20/s' } }],
    timeouts: { shutdown_grace: '15s' },
  }, START);
  const url = kind === 'plain' ? `ws://127.0.0.1:${portico.httpPort}/wss` : `wss://localhost:${portico.tlsPort}/wss`;
  const clients = await Promise.all(Array.from({ length: N }, () => openWebSocket(t, url)));
  for (const ws of clients) assert.equal(await echo(ws, 'up'), 'up');
  const closes = clients.map((ws) => closeOf(ws, 20_000).then((c) => ({ ...c, at: Date.now() })));
  const sentAt = Date.now();
  portico.kill('SIGTERM');
  const got = await Promise.all(closes);
  assert.deepEqual(new Set(got.map((c) => c.code)), new Set([1001]), 'every client got Close 1001 (going away)');
  const times = got.map((c) => c.at).sort((a, b) => a - b);
  // paced: consecutive closes are at least half an interval (50 ms at 20/s) apart, jitter included
  assert.ok(times[N - 1] - times[0] >= (N - 1) * 25, `closes spread over ${times[N - 1] - times[0]} ms`);
  assert.ok(times[N - 1] - sentAt < 15_000, 'all within the shutdown grace');
  await backend.closesReach(N);
  assert.ok(backend.closes.every((c) => c.code === 1001), 'the backend legs got 1001 too');
  assert.equal(await portico.exited, 0);
  assert.equal(portico.logs.filter((l) => isTerminateLine(l) && l.closedBy === 'shutdown' && l.code === 1001 && (kind === 'plain' || l.hop === TLS_HOP)).length, N);
  const loaded = portico.logs.find((l) => l.msg === 'uWebSockets.js loaded for terminated WebSocket');
  assert.ok(typeof loaded?.socket === 'string' && !existsSync(path.dirname(loaded.socket)), 'the worker removed its private unix socket folder');
});
}

test('terminated WebSocket: a reload that removes the route closes its clients with 1012; other routes stay', { timeout: 60_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const route = (path: string, name: string) => ({ name, match: { path }, proxy: 'chat', websocket: { mode: 'terminate' as const } });
  const config = { workers: 1, listeners: [plainListener()], upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`] } } };
  const portico = await startPortico(t, { ...config, routes: [route('/a', 'a'), route('/b', 'b')] });
  const base = `ws://127.0.0.1:${portico.httpPort}`;
  const a = await openWebSocket(t, `${base}/a`);
  const b = await openWebSocket(t, `${base}/b`);
  const closedA = closeOf(a, 20_000);
  const r = await reloadPortico(portico, { ...config, listeners: [{ address: `127.0.0.1:${portico.httpPort}` }], routes: [route('/b', 'b')] });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await closedA).code, 1012, 'service restart');
  assert.equal(await echo(b, 'kept'), 'kept', 'the route that stayed keeps its connection');
  await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'reload' && l.code === 1012);
});

test('edge fan-out: the backend names a topic in its 101; one admin publish reaches every subscriber in both workers', { timeout: 90_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const portico = await startPortico(t, {
    workers: 2,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [
      { match: { path: '/news' }, proxy: 'chat', websocket: { mode: 'terminate' }, request_headers: { set: { 'X-Want-Topic': 'news' } } },
      { match: { path: '/other' }, proxy: 'chat', websocket: { mode: 'terminate' } },
    ],
  });
  const base = `ws://127.0.0.1:${portico.httpPort}`;
  // both workers must have loaded uWS before the clients spread over them
  await until('both workers load uWS', async () => portico.logs.filter((l) => l.msg === 'uWebSockets.js loaded for terminated WebSocket').length, (n) => n === 2, 20_000);
  const N = 24;
  const seenHeaders: string[] = [];
  const subscribers = await Promise.all(
    Array.from({ length: N }, async () => {
      const ws = new WebSocket(`${base}/news`);
      t.after(() => ws.terminate());
      ws.once('upgrade', (res) => seenHeaders.push(Object.keys(res.headers).join(',')));
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
      return ws;
    }),
  );
  const outsider = await openWebSocket(t, `${base}/other`);
  // the connections are spread over the two workers (SO_REUSEPORT hashing; 24 all in one worker: 2^-23)
  const status = await statusUntil(portico, 'both workers hold connections', (s) => s.workers.length === 2 && s.workers.every((w) => (w.connections ?? 0) > 0));
  assert.equal(status.workers.reduce((n, w) => n + (w.connections ?? 0), 0), N + 1);
  assert.ok(seenHeaders.every((h) => !h.includes('x-portico-topics')), 'the topics header never reaches the client');
  const got = subscribers.map((ws) => new Promise<string>((resolve) => ws.once('message', (d: Buffer) => resolve(d.toString()))));
  const outsiderGot: string[] = [];
  outsider.on('message', (d: Buffer) => outsiderGot.push(d.toString()));
  const res = await request(`${adminUrl(portico)}/topics/news/publish`, { method: 'POST', headers: { 'X-Portico-Admin': '1', 'Content-Type': 'text/plain' }, body: 'breaking' });
  assert.equal(res.status, 202, res.body.toString());
  assert.deepEqual(JSON.parse(res.body.toString()), { topic: 'news', bytes: 8, binary: false, workers: 2 });
  assert.deepEqual(await Promise.all(got), Array.from({ length: N }, () => 'breaking'));
  assert.equal(await echo(outsider, 'ping-after'), 'ping-after');
  assert.deepEqual(outsiderGot, ['ping-after'], 'a client without the topic got nothing but its echo');
  const refused = await request(`${adminUrl(portico)}/topics/news/publish`, { method: 'POST', body: 'x' });
  assert.equal(refused.status, 403, 'publishing needs the admin token or X-Portico-Admin');
  // a burst of concurrent publishes (the primary batches a turn's publishes into one IPC message per worker): each
  // subscriber gets every message once, nothing lost, nothing doubled, and a publish sent after the burst comes last
  const B = 40;
  const bursts = subscribers.map(
    (ws) =>
      new Promise<string[]>((resolve) => {
        const seen: string[] = [];
        const onMessage = (d: Buffer): void => {
          seen.push(d.toString());
          if (seen.at(-1) !== 'last') return;
          ws.off('message', onMessage);
          resolve(seen);
        };
        ws.on('message', onMessage);
      }),
  );
  const publish = (body: string): Promise<number> =>
    request(`${adminUrl(portico)}/topics/news/publish`, { method: 'POST', headers: { 'X-Portico-Admin': '1' }, body }).then((r) => r.status);
  assert.deepEqual(await Promise.all(Array.from({ length: B }, (_, i) => publish(`m${i}`))), Array.from({ length: B }, () => 202));
  assert.equal(await publish('last'), 202);
  const expected = [...Array.from({ length: B }, (_, i) => `m${i}`).sort(), 'last'];
  for (const seen of await Promise.all(bursts)) assert.deepEqual([...seen.slice(0, -1).sort(), seen.at(-1)], expected);
});

test('terminated WebSocket: a slow client pauses the backend leg (bounded, nothing lost); metrics; a drained target gets 1012', { timeout: 90_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const target = `127.0.0.1:${backend.port}`;
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { chat: { targets: [target] } },
    routes: [{ match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate', max_buffer: '256KiB', drain_rate: '50/s' } }],
  });
  const url = `ws://127.0.0.1:${portico.httpPort}/wss`;
  const metric = async (name: string): Promise<number> => {
    const text = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
    const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm').exec(text);
    return m === null ? -1 : Number(m[1]);
  };

  await t.test('a client that stops reading: the backend finds Portico stopped reading too; then every message arrives in order', async (t) => {
    const N = await clientStall(t, portico, backend, url, async () => assert.equal(await metric('portico_ws_terminated_open'), 1));
    assert.equal(await metric('portico_ws_closes_total{code="1000"}'), 1);
    assert.equal(await metric('portico_ws_messages_total{direction="out"}'), N);
    assert.equal(await metric('portico_ws_drops_total'), 0);
  });

  await t.test('a backend that stops reading: the client\'s sends pause with the worker\'s memory bounded (no 1013); then every message arrives in order', async (t) => {
    await backendStall(t, portico, backend, url, (await adminStatus(portico)).workers[0]!.pid ?? undefined);
  });

  await t.test('clients that vanish at any point (mid-handshake, right after the 101, mid-message) leave nothing open', async (t) => {
    const head = `GET /wss HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    const gone: Array<Promise<void>> = [];
    for (let i = 0; i < 30; i++) {
      gone.push(
        new Promise<void>((resolve) => {
          const s = net.connect(portico.httpPort, '127.0.0.1', () => {
            if (i % 3 === 0) s.write(head, () => s.destroy()); // during the backend handshake or the hand-off
            else s.write(head);
          });
          s.on('data', (d: Buffer) => {
            // after the 101: vanish at once, or in the middle of a masked frame
            if (i % 3 === 2) s.write(Buffer.from([0x82, 0x85, 1, 2, 3, 4, 9]));
            if (d.includes('101')) s.destroy();
          });
          s.on('error', () => {});
          s.on('close', () => resolve());
        }),
      );
    }
    await Promise.all(gone);
    await statusUntil(portico, 'no connection left', (s) => s.workers.every((w) => w.connections === 0), 15_000);
    await until('the backend legs are closed', () => backend.sockets.size, (n) => n === 0, 15_000);
    const ws = await openWebSocket(t, url);
    assert.equal(await echo(ws, 'still serving'), 'still serving');
  });

  await t.test('draining the target: its terminated clients get Close 1012', async (t) => {
    const clients = await Promise.all([openWebSocket(t, url), openWebSocket(t, url), openWebSocket(t, url)]);
    const closes = clients.map((ws) => closeOf(ws));
    const res = await request(`${adminUrl(portico)}/upstreams/chat/targets/${encodeURIComponent(target)}/drain`, { method: 'POST', headers: { 'X-Portico-Admin': '1' } });
    assert.equal(res.status, 200, res.body.toString());
    for (const c of await Promise.all(closes)) assert.equal(c.code, 1012);
    await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'target_drained' && l.code === 1012);
  });
});

test('terminated WebSocket on a hash upstream: its key stays counted on its target while open (sticky tunnels)', { timeout: 60_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`], balance: { policy: 'hash', key: '$remote_addr' } } },
    routes: [{ match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate' } }],
  });
  const ws = await openWebSocket(t, `ws://127.0.0.1:${portico.httpPort}/wss`);
  assert.equal(await echo(ws, 'k'), 'k');
  await statusUntil(portico, 'the key counted open', (s) => s.sticky.keys === 1);
  ws.close(1000);
  await statusUntil(portico, 'the key released', (s) => s.sticky.keys === 0);
});
