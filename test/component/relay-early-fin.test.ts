// A client that sends its last bytes and half-closes before the tunnel exists (while the backend's 101 is
// awaited, the HTTP side read both): its FIN must still reach the upstream once the tunnel runs, after those
// bytes. Run over every relay (JS and splice, net and native legs, STYLE.md 13), driven directly; the same case
// through Portico is test/e2e/relay-early-fin.test.ts.
import { test as nodeTest, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { Tunnel } from '../../src/tunnel/relay.js';
import { SpliceTunnel, canSplice, nativeStatus } from '../../src/tunnel/splice.js';
import type { ByteSocket } from '../../src/core/socket.js';
import { adoptNative, connectNative, nativeIoAvailable } from '../../src/native/io.js';

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
