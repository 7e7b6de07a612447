// A client that sends its last bytes and half-closes before the tunnel exists (while the backend's 101 is
// awaited, the HTTP side read both): its FIN must still reach the upstream once the tunnel runs, after those
// bytes — end to end through Portico, on the JS relay (PORTICO_NATIVE=0) and on the splice path. The same case
// over every relay driven directly is test/component/relay-early-fin.test.ts.
import { test as nodeTest, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { request } from '../helpers/clients.js';
import { websocketAccept } from '../../src/handlers/rewrite.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { adminUrl } from '../helpers/admin.js';

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
    await request(`${adminUrl(portico)}/status`);
    backend.answer();
    assert.equal(await backend.sawFin, 'last frame', 'the backend got the bytes, then the FIN');
    await clientEnded;
    assert.match(Buffer.concat(received).toString('latin1'), /^HTTP\/1\.1 101 /);
  });
}
