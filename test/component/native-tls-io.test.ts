// The native TLS session's read path (src/native/io.cc TlsReady over src/native/tls.cc) with a real Node TLS
// client on loopback: records the session read ahead of what a batch had room for are delivered without the
// socket saying anything more, also across pause/resume, and bytes arrive whole and in order.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { NativeSocket } from '../../src/native/io.js';
import { NativeTlsServer, adoptNativeTls } from '../../src/native/tls.js';
import { TEST_CERT, TEST_KEY } from '../helpers/portico.js';
import { needNativeTls } from '../helpers/native-tls.js';


let server: NativeTlsServer | undefined;

/** A Node TLS client connected to a native TLS session (adopted from a Node-accepted socket), both handshaken. */
async function pair(t: TestContext): Promise<{ client: tls.TLSSocket; session: NativeSocket }> {
  const listener = net.createServer({ allowHalfOpen: true });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  t.after(() => listener.close());
  const accepted = once(listener, 'connection').then(([s]) => s as net.Socket);
  const client = tls.connect({ port: (listener.address() as net.AddressInfo).port, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(TEST_CERT), minVersion: 'TLSv1.3', ALPNProtocols: ['http/1.1'] });
  t.after(() => client.destroy());
  server ??= new NativeTlsServer([{ cert: readFileSync(TEST_CERT), key: readFileSync(TEST_KEY), names: ['localhost'] }], 'TLSv1.2');
  const socket = await accepted;
  let adopted: NativeSocket | undefined;
  const session = new Promise<NativeSocket>((resolve, reject) => {
    adopted = adoptNativeTls(socket, server!, { allowHalfOpen: true, timeoutMs: 10_000 }, resolve, reject);
  });
  assert.ok(adopted !== undefined, 'adoptNativeTls took the accepted socket');
  t.after(() => adopted?.destroy());
  await Promise.all([session, once(client, 'secureConnect')]);
  return { client, session: await session };
}

/** Resolves once `n` bytes came (their SHA-256), or rejects when they do not within `ms` (a stall, not a slow run). */
function receive(s: NativeSocket, n: number, ms: number, onChunk?: (got: number) => void): Promise<string> {
  const hash = createHash('sha256');
  let got = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stalled at ${got} of ${n} bytes`)), ms);
    s.on('data', (c: Buffer) => {
      hash.update(c);
      got += c.length;
      onChunk?.(got);
      if (got >= n) {
        clearTimeout(timer);
        resolve(hash.digest('hex'));
      }
    });
  });
}

/**
 * `count` records of `size` bytes (one write each, each written before the next: Node's TLS makes a record per
 * write), resolved once the last was handed to the kernel: on loopback they then wait in the session's socket.
 */
async function records(client: tls.TLSSocket, count: number, size: number): Promise<{ bytes: number; digest: string }> {
  const hash = createHash('sha256');
  for (let i = 0; i < count; i++) {
    const chunk = randomBytes(size);
    hash.update(chunk);
    // one at a time: writes queued behind one in flight would be joined into one large record
    await new Promise<void>((resolve, reject) => client.write(chunk, (err) => (err ? reject(err) : resolve())));
  }
  return { bytes: count * size, digest: hash.digest('hex') };
}

// 80 records of 700 B (56 KB) wait in the socket while the session is paused; on resume one wake-up reads as
// much as a batch gives one connection (64 KiB), and OpenSSL, reading ahead, holds whole records past it that
// the now empty socket never signals again.
test('native TLS: records read ahead beyond a batch arrive without another byte from the client', async (t) => {
  if (!needNativeTls(t)) return;
  const { client, session } = await pair(t);
  for (let round = 0; round < 5; round++) {
    session.pause();
    const sent = await records(client, 80, 700);
    const got = receive(session, sent.bytes, 10_000);
    session.resume();
    assert.equal(await got, sent.digest, `round ${round}: the bytes arrived whole and in order`);
    session.removeAllListeners('data');
  }
});

test('native TLS: a session paused with records read ahead delivers them once resumed', async (t) => {
  if (!needNativeTls(t)) return;
  const { client, session } = await pair(t);
  for (let round = 0; round < 5; round++) {
    session.pause();
    const sent = await records(client, 80, 700);
    let paused = false;
    // pause again at the first batch (OpenSSL then holds records read ahead), resume a turn later
    const got = receive(session, sent.bytes, 10_000, () => {
      if (paused) return;
      paused = true;
      session.pause();
      setImmediate(() => session.resume());
    });
    session.resume();
    assert.equal(await got, sent.digest, `round ${round}: the bytes arrived whole and in order`);
    session.removeAllListeners('data');
  }
});
