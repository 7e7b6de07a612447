// The native WebSocket load generator (bench/native/ws-load.cc) against real servers on loopback: the `ws` library
// (which refuses unmasked client frames, so every echo proves the masking), over ws:// and wss://, a server that
// fragments its messages, the close handshake, fan-out with its closed-loop publisher, handshake loops, and
// servers that answer garbage (a clean error and exit 3, never a crash). No speed is asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import { nativeWsLoad, type NativeWsLoad } from '../../bench/lib/native-tools.js';
import { FIXTURES } from '../helpers/paths.js';
import { needPeer } from '../helpers/peers.js';
import { until } from '../helpers/until.js';

interface Result {
  event: 'result';
  native: boolean;
  connected: number;
  connectErrors: string[];
  messages: number;
  verified: number;
  mismatches: number;
  lost: number;
  closedClean: number;
  published: number;
  publishStalls: number;
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number };
  cpuUserUs: number;
  cpuSystemUs: number;
  error?: string;
}

let tool: NativeWsLoad | undefined;
let why = '';
function native(t: import('node:test').TestContext): NativeWsLoad | undefined {
  if (tool === undefined && why === '') {
    const s = nativeWsLoad();
    if (s.ok) tool = s.tool;
    else why = s.reason;
  }
  if (!needPeer(t, `g++ (native ws-load: ${why})`, tool !== undefined)) return undefined;
  return tool;
}

/** Runs the tool to its exit (killed after 20 s): exit code, signal, its result line and stderr. */
async function run(bin: string, args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; result: Result; err: string }> {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  const line = out.split('\n').find((l) => l.startsWith('{"event":"result"'));
  assert.ok(line !== undefined, `no result line (exit ${code} ${signal}): ${out.slice(-500)} ${err.slice(-500)}`);
  return { code, signal, result: JSON.parse(line) as Result, err };
}

async function listen(server: net.Server | http.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** A `ws` echo server; `fragment` echoes each message as two frames (FIN clear, then a continuation). */
async function echoServer(t: import('node:test').TestContext, opts: { fragment?: boolean; tls?: boolean } = {}): Promise<{ port: number; closeCodes: number[]; received: number[] }> {
  const server = opts.tls === true
    ? https.createServer({ cert: readFileSync(path.join(FIXTURES, 'tls', 'localhost.crt')), key: readFileSync(path.join(FIXTURES, 'tls', 'localhost.key')) })
    : http.createServer();
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  const closeCodes: number[] = [];
  const received: number[] = [];
  wss.on('connection', (ws: WebSocket) => {
    ws.on('message', (data: Buffer, isBinary) => {
      received.push(data.length);
      if (opts.fragment === true && data.length >= 2) {
        const cut = data.length >> 1;
        ws.send(data.subarray(0, cut), { binary: isBinary, fin: false });
        ws.send(data.subarray(cut), { binary: isBinary, fin: true });
      } else ws.send(data, { binary: isBinary });
    });
    ws.on('close', (code) => closeCodes.push(code));
  });
  const port = await listen(server);
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    server.close();
  });
  return { port, closeCodes, received };
}

for (const size of [32, 4096]) {
  test(`echo of ${size}-byte messages through a ws server: every echo checked, latency percentiles, own CPU, Close 1000 on each`, { timeout: 30_000 }, async (t) => {
    const bin = native(t);
    if (bin === undefined) return;
    const srv = await echoServer(t);
    const r = await run(bin.binary, ['--port', String(srv.port), '--path', '/x', '--connections', '4', '--size', String(size), '--count', '400', '--duration', '10']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.result.error, undefined);
    assert.equal(r.result.connected, 4);
    assert.ok(r.result.messages >= 400, `${r.result.messages} round trips`);
    assert.equal(r.result.mismatches, 0);
    assert.ok(r.result.verified >= r.result.messages);
    assert.ok(r.result.latencyUs.p50 > 0 && r.result.latencyUs.p50 <= r.result.latencyUs.p99 && r.result.latencyUs.p99 <= r.result.latencyUs.max);
    assert.ok(r.result.cpuUserUs + r.result.cpuSystemUs > 0, 'its own CPU time');
    // Every message the server got was a whole, masked (ws refuses unmasked client frames) frame of `size` bytes.
    assert.ok(srv.received.length >= 400 && srv.received.every((n) => n === size));
    await until('four Close frames at the server', () => srv.closeCodes.length, (n) => n === 4);
    assert.deepEqual(srv.closeCodes, [1000, 1000, 1000, 1000]);
    assert.equal(r.result.closedClean, 4, 'the server answered each Close');
  });
}

test('wss://: echo through a TLS ws server', { timeout: 30_000 }, async (t) => {
  const bin = native(t);
  if (bin === undefined) return;
  if (!needPeer(t, 'libssl-dev (native ws-load built without TLS)', bin.tls)) return;
  const srv = await echoServer(t, { tls: true });
  const r = await run(bin.binary, ['--tls', '--authority', 'localhost', '--port', String(srv.port), '--connections', '3', '--size', '4096', '--count', '150']);
  assert.equal(r.code, 0, r.err);
  assert.ok(r.result.messages >= 150 && r.result.mismatches === 0);
  assert.equal(r.result.closedClean, 3);
});

test('messages the server fragments are reassembled before they are checked', { timeout: 30_000 }, async (t) => {
  const bin = native(t);
  if (bin === undefined) return;
  const srv = await echoServer(t, { fragment: true });
  for (const size of [32, 4096]) {
    const r = await run(bin.binary, ['--port', String(srv.port), '--connections', '2', '--size', String(size), '--count', '100']);
    assert.equal(r.code, 0, r.err);
    assert.ok(r.result.messages >= 100 && r.result.mismatches === 0, JSON.stringify(r.result));
  }
});

test('upgrade mode: handshakes back to back, each 101 checked, each closed with a Close handshake', { timeout: 30_000 }, async (t) => {
  const bin = native(t);
  if (bin === undefined) return;
  const srv = await echoServer(t);
  const r = await run(bin.binary, ['--port', String(srv.port), '--mode', 'upgrade', '--connections', '4', '--count', '60']);
  assert.equal(r.code, 0, r.err);
  assert.ok(r.result.messages >= 60 && r.result.verified === r.result.messages);
  assert.ok(r.result.latencyUs.p50 > 0);
  // Each counted handshake ended with a Close 1000 the server answered; handshakes still in flight when the count
  // was reached are cut (1006 at the server) and not counted.
  assert.ok(r.result.closedClean >= r.result.messages, `${r.result.closedClean} close handshakes for ${r.result.messages} upgrades`);
  await until('a Close 1000 per counted handshake at the server', () => srv.closeCodes.filter((c) => c === 1000).length, (n) => n >= r.result.messages);
});

test('recv mode with a publisher: each POST is delivered to every client and counted, closed loop', { timeout: 30_000 }, async (t) => {
  const bin = native(t);
  if (bin === undefined) return;
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      for (const c of wss.clients) c.send(body, { binary: true });
      res.writeHead(202, { 'content-length': 2 }).end('ok');
    });
  });
  const wss = new WebSocketServer({ server });
  const port = await listen(server);
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    server.close();
  });
  const r = await run(bin.binary, ['--port', String(port), '--mode', 'recv', '--connections', '20', '--size', '16', '--count', '2000', '--publish-port', String(port), '--inflight', '4']);
  assert.equal(r.code, 0, r.err);
  assert.ok(r.result.messages >= 2000, `${r.result.messages} deliveries`);
  // closed loop: at most --inflight publishes undelivered beyond what the deliveries counted (the last read may
  // carry a few past --count), plus one per 200 ms stall (a loaded machine) that the tool counts and reports
  const stalls = r.result.publishStalls;
  const delivered = Math.floor(r.result.messages / 20);
  assert.ok(r.result.published >= 100 && r.result.published <= delivered + 4 + stalls, `${r.result.published} publishes (${stalls} after a stall) for ${r.result.messages} deliveries to 20 clients`);
});

/** A raw server: a valid 101 for the client's key, then `after` bytes (or a bad 101 when `accept` is given). */
async function rawServer(t: import('node:test').TestContext, after: Buffer, accept?: string): Promise<number> {
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    let head = '';
    s.on('data', (d: Buffer) => {
      if (head.includes('\r\n\r\n')) return;
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1] ?? '';
      const good = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept ?? good}\r\n\r\n`);
      s.write(after);
    });
  });
  const port = await listen(server);
  t.after(() => {
    for (const s of socks) s.destroy();
    server.close();
  });
  return port;
}

const GARBAGE: Array<[string, Buffer, RegExp]> = [
  ['RSV bits and nonsense', Buffer.from([0xff, 0xff, 0xde, 0xad, 0xbe, 0xef]), /protocol error: RSV bits set/],
  ['a masked frame', Buffer.from([0x82, 0x82, 1, 2, 3, 4, 5, 6]), /protocol error: masked frame from the server/],
  ['a reserved opcode', Buffer.from([0x83, 0x00]), /protocol error: reserved opcode 3/],
  ['a fragmented Ping', Buffer.from([0x09, 0x00]), /fragmented or oversized control frame/],
  ['a continuation with no message', Buffer.from([0x80, 0x01, 0x41]), /continuation frame with no message started/],
  ['a 64-bit length in a short form', Buffer.from([0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 5]), /length not in its shortest form/],
  ['a message over 1 MiB', Buffer.from([0x82, 0x7f, 0, 0, 0, 0, 0x7f, 0, 0, 0]), /message larger than 1048576 bytes/],
];

for (const [what, bytes, message] of GARBAGE) {
  test(`a server that sends ${what} fails the run with a clear error (exit 3), no crash`, { timeout: 30_000 }, async (t) => {
    const bin = native(t);
    if (bin === undefined) return;
    const port = await rawServer(t, bytes);
    const r = await run(bin.binary, ['--port', String(port), '--connections', '1', '--size', '32', '--duration', '5']);
    assert.equal(r.signal, null);
    assert.equal(r.code, 3, r.err);
    assert.match(r.result.error ?? '', message);
    assert.match(r.err, /^ws-load: connection 0: /m);
  });
}

test('a 101 with the wrong Sec-WebSocket-Accept is not a WebSocket: the connection counts as failed, with the reason', { timeout: 30_000 }, async (t) => {
  const bin = native(t);
  if (bin === undefined) return;
  const port = await rawServer(t, Buffer.alloc(0), 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=');
  const r = await run(bin.binary, ['--port', String(port), '--connections', '2', '--duration', '1']);
  assert.equal(r.signal, null);
  assert.equal(r.result.connected, 0);
  assert.deepEqual(r.result.connectErrors, ['bad Sec-WebSocket-Accept']);
});
