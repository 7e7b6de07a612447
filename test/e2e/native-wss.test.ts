// WSS tunnels on the addon's TLS relay thread (src/native/tls-relay.cc) through a real `portico start`: a `ws`
// client and Python `websockets` echo through it (its access line says the bytes went through the addon), a
// TLS client's half-close reaches the backend which still answers, a burst of records ended by close_notify
// arrives whole, 1,500 pipelined echoes of mixed sizes all come back, a backend that does not read holds the
// client back, and the end of the shutdown grace sends Close 1001 both ways from the relay thread.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { ConfigInput } from '../../src/config/schema.js';
import { answerUpgrade, startWsEchoBackend } from '../helpers/backends.js';
import { PYTHON, PYTHON_WSS_CLIENT, closed, echo, hasPythonWebsockets, openWebSocket, run } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { TEST_CERT, startPortico, tlsListener, type LogLine, type Portico } from '../helpers/portico.js';
import { until } from '../helpers/until.js';
import { testCaCert, upgradeByHand } from '../helpers/wire.js';
import { needNativeTls } from '../helpers/native-tls.js';


/** Workers start slower under scripts/asan.sh (an instrumented addon preloaded with libasan). */
const START = { startTimeoutMs: process.env.PORTICO_NATIVE_ADDON !== undefined ? 120_000 : 20_000 };

function config(backendPort: number, extra: Partial<ConfigInput> = {}): ConfigInput {
  return {
    workers: 1,
    listeners: [tlsListener()],
    upstreams: { ws: { targets: [`127.0.0.1:${backendPort}`] } },
    routes: [{ match: { path: '/' }, proxy: 'ws' }],
    log: { level: 'info', access: true },
    ...extra,
  };
}

const tunnelLine = (path: string) => (l: LogLine) => l.msg === 'tunnel' && l.path === path;

/**
 * A backend that answers any upgrade with a valid 101 and then speaks raw bytes: it records what arrives and
 * whether the FIN came; `hold` makes it stop reading after the 101 until released.
 */
async function startRawUpgradeBackend(t: TestContext, hold = false): Promise<{ port: number; got: () => Buffer; ended: Promise<void>; socket: Promise<net.Socket> }> {
  const chunks: Buffer[] = [];
  let resolveEnded!: () => void;
  const ended = new Promise<void>((r) => (resolveEnded = r));
  let resolveSocket!: (s: net.Socket) => void;
  const socket = new Promise<net.Socket>((r) => (resolveSocket = r));
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    answerUpgrade(s, (rest) => {
      if (rest.length > 0) chunks.push(rest);
      if (hold) s.pause();
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('end', resolveEnded);
      resolveSocket(s);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as AddressInfo).port, got: () => Buffer.concat(chunks), ended, socket };
}

/** A TLS client that sends a WebSocket upgrade by hand and returns once the 101 head arrived (raw bytes after). */
async function rawWss(t: TestContext, portico: Portico, path: string): Promise<{ socket: tls.TLSSocket; data: () => Buffer; ended: Promise<unknown> }> {
  const socket = tls.connect({ host: '127.0.0.1', port: portico.tlsPort, servername: 'localhost', ca: testCaCert(), ALPNProtocols: ['http/1.1'], allowHalfOpen: true } as tls.ConnectionOptions);
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  await once(socket, 'secureConnect');
  const buf = await upgradeByHand(socket, path);
  const chunks: Buffer[] = [buf];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return { socket, data: () => Buffer.concat(chunks), ended: once(socket, 'end') };
}

test('WSS echo from ws and Python websockets runs on the TLS relay thread', async (t) => {
  if (!needNativeTls(t) || !needPeer(t, 'python3 websockets', hasPythonWebsockets())) return;
  const backend = await startWsEchoBackend(t);
  const portico = await startPortico(t, config(backend.port), START);
  const ws = await openWebSocket(t, `wss://localhost:${portico.tlsPort}/node`, { ca: testCaCert() });
  for (const m of ['hello', 'x'.repeat(70_000), randomBytes(1 << 20)]) assert.deepEqual(await echo(ws, m), m);
  ws.close(1000);
  assert.equal(await closed(ws), 1000);
  const py = await run(PYTHON, [PYTHON_WSS_CLIENT, `wss://localhost:${portico.tlsPort}/python`, TEST_CERT], 60_000);
  assert.equal(py.code, 0, py.stderr + py.stdout);
  assert.equal((JSON.parse(py.stdout.trim()) as { ok: boolean }).ok, true);
  for (const path of ['/node', '/python']) {
    const line = await portico.waitForLog(tunnelLine(path));
    assert.equal(line.spliced, true, `${path}: relayed on the addon's thread`);
    assert.ok(Number(line.bytesIn) > 0 && Number(line.bytesOut) > 0);
  }
});

test('WSS pipelined echo of 1,500 messages of 1 B to 60 KiB through the TLS relay: every one comes back, in order (no read left waiting for an edge that never comes)', async (t) => {
  if (!needNativeTls(t)) return;
  const backend = await startWsEchoBackend(t);
  const portico = await startPortico(t, config(backend.port), START);
  const ws = await openWebSocket(t, `wss://localhost:${portico.tlsPort}/pipelined`, { ca: testCaCert() });
  // sizes that end TLS records and socket reads anywhere: tiny frames between ones larger than OpenSSL's buffer
  const sizes = Array.from({ length: 1500 }, (_, i) => (i % 7 === 0 ? 1 + ((i * 7919) % 61_440) : 1 + ((i * 104_729) % 3000)));
  const sent = sizes.map((n, i) => Buffer.alloc(n, i % 251));
  const got: Buffer[] = [];
  const all = new Promise<void>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(`${got.length} of ${sent.length} echoes within 60 s`)), 60_000);
    ws.on('message', (m: Buffer) => {
      got.push(m);
      if (got.length < sent.length) {
        const next = got.length + 31; // 32 messages in flight
        if (next < sent.length) ws.send(sent[next]);
        return;
      }
      clearTimeout(guard);
      resolve();
    });
  });
  for (let i = 0; i < 32; i++) ws.send(sent[i]);
  await all;
  for (let i = 0; i < sent.length; i++) assert.ok(got[i].equals(sent[i]), `echo ${i} (${sent[i].length} bytes)`);
  ws.close(1000);
  assert.equal(await closed(ws), 1000);
  const line = await portico.waitForLog(tunnelLine('/pipelined'));
  assert.equal(line.spliced, true);
});

test('WSS half-close through the TLS relay: the client FIN reaches the backend, which still answers before closing', async (t) => {
  if (!needNativeTls(t)) return;
  const backend = await startRawUpgradeBackend(t);
  const portico = await startPortico(t, config(backend.port), START);
  const client = await rawWss(t, portico, '/half');
  client.socket.end('last words'); // close_notify + FIN
  await backend.ended;
  assert.equal(backend.got().toString(), 'last words');
  const up = await backend.socket;
  up.end('answer after your FIN');
  await client.ended;
  assert.equal(client.data().toString(), 'answer after your FIN');
  const line = await portico.waitForLog(tunnelLine('/half'));
  assert.equal(line.spliced, true);
  assert.equal(line.closedBy, 'upstream');
});

test('WSS burst then close_notify through the TLS relay: records read ahead together all reach the backend, in order, before its FIN', async (t) => {
  if (!needNativeTls(t)) return;
  const backend = await startRawUpgradeBackend(t);
  const portico = await startPortico(t, config(backend.port), START);
  const client = await rawWss(t, portico, '/burst');
  // 96 records of 3,001 bytes and the close_notify leave in one turn: the relay reads several records with one
  // recv() (read-ahead) and takes them together, with the end of the stream right behind them
  const parts = Array.from({ length: 96 }, (_, i) => Buffer.alloc(3001, 65 + (i % 26)));
  for (const p of parts) client.socket.write(p);
  client.socket.end();
  await backend.ended;
  assert.equal(createHash('sha256').update(backend.got()).digest('hex'), createHash('sha256').update(Buffer.concat(parts)).digest('hex'));
  (await backend.socket).end();
  await client.ended;
  const line = await portico.waitForLog(tunnelLine('/burst'));
  assert.equal(line.spliced, true);
  assert.equal(line.bytesIn, 96 * 3001);
});

test('WSS backpressure through the TLS relay: a backend that does not read holds the client back; all 16 MiB arrive intact', async (t) => {
  if (!needNativeTls(t)) return;
  const backend = await startRawUpgradeBackend(t, true);
  const portico = await startPortico(t, config(backend.port), START);
  const client = await rawWss(t, portico, '/slow');
  const payload = randomBytes(16 * 1024 * 1024);
  client.socket.write(payload);
  // the client's own buffer stops draining: the relay reads no more than the backend takes (kernel buffers aside)
  const stuck = await until('client writes held back', () => client.socket.writableLength, (n) => n > 4 * 1024 * 1024, 15_000, 100);
  assert.ok(stuck > 4 * 1024 * 1024, `${stuck} bytes wait in the client`);
  assert.ok(backend.got().length === 0, 'the backend has read nothing yet');
  const up = await backend.socket;
  up.resume();
  await until('all bytes at the backend', () => backend.got().length, (n) => n >= payload.length, 30_000, 50);
  assert.equal(createHash('sha256').update(backend.got()).digest('hex'), createHash('sha256').update(payload).digest('hex'));
  client.socket.end();
  up.end();
  const line = await portico.waitForLog(tunnelLine('/slow'));
  assert.equal(line.spliced, true);
  assert.equal(line.bytesIn, payload.length);
});

test('end of the shutdown grace: the TLS relay sends Close 1001 both ways', async (t) => {
  if (!needNativeTls(t)) return;
  const backend = await startRawUpgradeBackend(t);
  const portico = await startPortico(t, config(backend.port, { timeouts: { shutdown_grace: '500ms' } }), START);
  const client = await rawWss(t, portico, '/bye');
  // one whole masked frame from the client, so the relay knows where frames end
  client.socket.write(Buffer.from([0x81, 0x82, 1, 2, 3, 4, 'h'.charCodeAt(0) ^ 1, 'i'.charCodeAt(0) ^ 2]));
  await until('the frame at the backend', () => backend.got().length, (n) => n >= 8);
  portico.kill('SIGTERM');
  await client.ended;
  assert.deepEqual([...client.data()], [0x88, 0x02, 0x03, 0xe9], 'an unmasked Close 1001 to the client');
  await backend.ended;
  const atBackend = backend.got().subarray(8);
  assert.equal(atBackend.length, 8, 'one masked Close frame after the client frame');
  assert.deepEqual([atBackend[0], atBackend[1]], [0x88, 0x82]);
  const mask = atBackend.subarray(2, 6);
  assert.deepEqual([atBackend[6] ^ mask[0], atBackend[7] ^ mask[1]], [0x03, 0xe9], 'status 1001');
  assert.equal(await portico.exited, 0);
  const line = portico.logs.find(tunnelLine('/bye'));
  assert.equal(line?.spliced, true);
  assert.equal(line?.closedBy, 'shutdown');
});
