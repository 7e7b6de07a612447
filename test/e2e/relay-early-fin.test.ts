// A client that sends its last bytes and half-closes before the tunnel exists (while the backend's 101 is
// awaited, the HTTP side read both): its FIN must still reach the upstream once the tunnel runs, after those
// bytes. Run over every relay (JS and splice, net and native legs, STYLE.md 13) and end to end through Portico
// on the JS relay (PORTICO_NATIVE=0) and on the splice path.
import { test as nodeTest, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { Tunnel } from '../../src/tunnel/relay.js';
import { SpliceTunnel, canSplice, nativeStatus } from '../../src/tunnel/splice.js';
import type { ByteSocket } from '../../src/core/socket.js';
import { adoptNative, connectNative, nativeIoAvailable } from '../../src/native/io.js';
import { request } from '../helpers/clients.js';
import { websocketAccept } from '../../src/handlers/rewrite.js';
import { plainListener, startPortico } from '../helpers/portico.js';

type Make = (client: ByteSocket, upstream: ByteSocket, onClose: () => void) => { start(c: Buffer | null, u: Buffer | null): void };

const NATIVE_IO_SKIP = nativeIoAvailable() ? undefined : 'native I/O not in use';
const SPLICE_SKIP = nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`;
const RELAYS: Array<{ name: string; skip: string | undefined; native: boolean; make: Make }> = [];
for (const native of [false, true]) {
  RELAYS.push({ name: `js relay${native ? ' on native sockets' : ''}`, skip: native ? NATIVE_IO_SKIP : undefined, native, make: (c, u, done) => new Tunnel(c, u, { idle: 0, lifetime: 0 }, done) });
  RELAYS.push({
    name: `splice relay${native ? ' on native sockets' : ''}`,
    skip: SPLICE_SKIP ?? (native ? NATIVE_IO_SKIP : undefined),
    native,
    make: (c, u, done) => {
      assert.ok(canSplice(c, u));
      return new SpliceTunnel(c, u, { idle: 0, lifetime: 0 }, done);
    },
  });
}

async function acceptOne(t: TestContext): Promise<{ port: number; accepted: Promise<net.Socket> }> {
  const server = net.createServer({ allowHalfOpen: true });
  const accepted = once(server, 'connection').then(([s]) => s as net.Socket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, accepted };
}

for (const relay of RELAYS) {
  nodeTest(`${relay.name}: a client FIN read before the tunnel started is forwarded after the bytes before it`, { skip: relay.skip, timeout: 20_000 }, async (t) => {
    const front = await acceptOne(t);
    const back = await acceptOne(t);
    const clientPeer = net.connect({ port: front.port, host: '127.0.0.1', allowHalfOpen: true });
    const acceptedClient = await front.accepted;
    const client: ByteSocket | undefined = relay.native ? adoptNative(acceptedClient, { allowHalfOpen: true }) : acceptedClient;
    assert.ok(client !== undefined);
    // the HTTP side's part: it reads the client's last bytes and its FIN before any tunnel exists
    const early: Buffer[] = [];
    client.on('data', (c: Buffer) => early.push(c));
    const ended = once(client, 'end');
    clientPeer.end('last words');
    await ended;
    client.removeAllListeners('data');
    client.pause();

    const upstream: ByteSocket | undefined = relay.native ? connectNative('127.0.0.1', back.port, { allowHalfOpen: true }) : net.connect({ port: back.port, host: '127.0.0.1', allowHalfOpen: true });
    assert.ok(upstream !== undefined);
    const connected = once(upstream, 'connect').catch(() => undefined);
    const upstreamPeer = await back.accepted;
    await connected;
    t.after(() => {
      for (const s of [clientPeer, upstreamPeer, client, upstream]) s.destroy();
    });
    const got: Buffer[] = [];
    upstreamPeer.on('data', (c: Buffer) => got.push(c));
    const upstreamSawFin = once(upstreamPeer, 'end');
    let closed!: () => void;
    const tunnelClosed = new Promise<void>((r) => (closed = r));
    relay.make(client, upstream, closed).start(Buffer.concat(early), null);

    await upstreamSawFin;
    assert.equal(Buffer.concat(got).toString(), 'last words');
    // the other direction still works until the upstream closes too
    const back2 = once(clientPeer, 'data');
    upstreamPeer.end('reply');
    assert.equal(((await back2)[0] as Buffer).toString(), 'reply');
    await tunnelClosed;
  });
}

/**
 * A WebSocket backend that answers the handshake only when told to, then echoes what it read after the head
 * and closes its side once it saw the client's FIN.
 */
async function heldWsBackend(t: TestContext): Promise<{ port: number; gotHandshake: Promise<void>; answer(): void; sawFin: Promise<string> }> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  let answer!: () => void;
  const answered = new Promise<void>((r) => (answer = r));
  let gotHandshake!: () => void;
  const handshake = new Promise<void>((r) => (gotHandshake = r));
  const sawFin = once(server, 'connection').then(async (args) => {
    const s = args[0] as net.Socket;
    t.after(() => s.destroy());
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.includes('\r\n\r\n')) gotHandshake();
    });
    await handshake;
    await answered;
    const head = buf.toString('latin1');
    const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1] ?? '';
    s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${websocketAccept(key)}\r\n\r\n`);
    if (!s.readableEnded) await once(s, 'end');
    const after = buf.subarray(buf.indexOf('\r\n\r\n') + 4).toString('latin1');
    s.end();
    return after;
  });
  return { port: (server.address() as net.AddressInfo).port, gotHandshake: handshake, answer, sawFin };
}

for (const native of ['0', '1'] as const) {
  nodeTest(`through Portico (${native === '0' ? 'JS relay, PORTICO_NATIVE=0' : 'splice when available'}): a client that half-closes before the 101 has its FIN forwarded`, { timeout: 60_000 }, async (t) => {
    const backend = await heldWsBackend(t);
    const portico = await startPortico(
      t,
      {
        workers: 1,
        listeners: [plainListener()],
        admin: { address: '127.0.0.1:0' },
        upstreams: { ws: { targets: [`127.0.0.1:${backend.port}`] } },
        routes: [{ match: { path: '/' }, proxy: 'ws' }],
      },
      { env: { PORTICO_NATIVE: native } },
    );
    const client = net.connect({ port: portico.httpPort, host: '127.0.0.1', allowHalfOpen: true });
    t.after(() => client.destroy());
    await once(client, 'connect');
    const received: Buffer[] = [];
    client.on('data', (c: Buffer) => received.push(c));
    const clientEnded = once(client, 'end');
    client.end('GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nlast frame');
    await once(client, 'finish');
    await backend.gotHandshake;
    // one admin round trip through the worker: the FIN, in its kernel buffer before, has been read by then
    const line = await portico.waitForLog((l) => l.msg === 'listening');
    await request(`http://127.0.0.1:${(line.admin as { port: number }).port}/status`);
    backend.answer();
    assert.equal(await backend.sawFin, 'last frame', 'the backend got the bytes, then the FIN');
    await clientEnded;
    assert.match(Buffer.concat(received).toString('latin1'), /^HTTP\/1\.1 101 /);
  });
}
