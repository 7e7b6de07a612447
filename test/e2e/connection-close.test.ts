// How a client connection ends after a request that said `Connection: close` (src/http/connection.ts
// #closeAtOnce): read whole with nothing behind it, the socket closes right after the answer, without waiting
// for the client's FIN (nginx's lingering_close heuristic); with bytes behind the request, or an answer still
// queued, Portico half-closes and lingers so that an unread byte cannot turn the close into a reset that
// destroys the answer. Over native TLS the close at once comes right after a close_notify sent whole (as nginx
// closes). Every case checks the answer arrives whole.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type net from 'node:net';
import { adminStatus, statusUntil } from '../helpers/admin.js';
import { startHttpBackend, type EchoReply, type HttpBackend } from '../helpers/backends.js';
import { plainListener, startPortico, tlsListener, type Portico } from '../helpers/portico.js';
import { connectPlain, connectTls, ResponseReader } from '../helpers/wire.js';
import { nativeTlsStatus } from '../../src/native/tls.js';
import { nativeIoAvailable } from '../../src/native/io.js';

/** Shorter than the linger (LINGER_MS, 5 s): a connection still open after this is lingering, not closed at once. */
const AT_ONCE_MS = 2_500;

async function portico(t: TestContext): Promise<Portico & { app: HttpBackend }> {
  const app = await startHttpBackend(t, { name: 'app' });
  const p = await startPortico(t, {
    workers: 1,
    listeners: [plainListener(), tlsListener()],
    upstreams: { app: { targets: [`127.0.0.1:${app.port}`] } },
    routes: [{ match: { path: '/app' }, proxy: { upstream: 'app', strip_prefix: true } }],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  return Object.assign(p, { app });
}

/** A client that keeps its own side open after the server's FIN (as a slow client may); `tls`: over TLS. */
async function halfOpenClient(t: TestContext, port: number, tls = false): Promise<{ socket: net.Socket; reader: ResponseReader }> {
  const socket = tls ? await connectTls(t, port) : await connectPlain(t, port);
  socket.allowHalfOpen = true;
  return { socket, reader: new ResponseReader(socket) };
}

/**
 * Asks for `bytes` with Connection: close while not reading, then reads: the answer fills the socket buffers
 * first (what is left queued when the exchange ends must not be dropped by a close), and every byte the backend
 * sent must arrive before the end of the stream (FIN, or close_notify over TLS).
 */
async function slowReaderGetsAll(p: Portico & { app: HttpBackend }, socket: net.Socket, bytes: number): Promise<void> {
  socket.pause();
  socket.write(`GET /app/stream?bytes=${bytes}&chunked=0 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
  const hash = createHash('sha256');
  let head: Buffer | null = Buffer.alloc(0);
  let body = 0;
  socket.on('data', (chunk: Buffer) => {
    if (head !== null) {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      chunk = head.subarray(end + 4);
      head = null;
    }
    body += chunk.length;
    hash.update(chunk);
  });
  const closed = new Promise<void>((resolve, reject) => {
    socket.once('end', resolve);
    socket.once('error', (err) => reject(new Error(`${err.message} after ${body} bytes of the body`)));
  });
  socket.resume();
  await closed;
  assert.equal(body, bytes, 'the whole body arrived before the end of the stream');
  assert.equal(hash.digest('hex'), p.app.streams.at(-1)?.sha256, 'the bytes the backend sent');
}

const connections = async (p: Portico): Promise<number | undefined> => (await adminStatus(p)).workers[0]?.connections;

test('Connection: close, read whole: closed right after the answer, not after the client', { timeout: 60_000, skip: nativeIoAvailable() ? false : 'the close at once is native I/O only (PORTICO_NATIVE_IO=0 lingers as before)' }, async (t) => {
  const p = await portico(t);

  await t.test('proxied answer: the connection is gone while the client still holds its end open', async () => {
    const { socket, reader } = await halfOpenClient(t, p.httpPort);
    socket.write(`GET /app/hello HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
    const res = await reader.next();
    assert.equal(res.status, 200);
    assert.equal(res.headers.connection, 'close');
    await reader.rest();
    assert.equal(socket.writable, true, 'the client has not closed its side');
    await statusUntil(p, 'the connection closed at once', (s) => s.workers[0].connections === 0, AT_ONCE_MS, 20);
  });

  await t.test("Portico's own answer (404, no route): the same", async () => {
    const { socket, reader } = await halfOpenClient(t, p.httpPort);
    socket.write(`GET /nowhere HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
    assert.equal((await reader.next()).status, 404);
    await reader.rest();
    await statusUntil(p, 'the connection closed at once', (s) => s.workers[0].connections === 0, AT_ONCE_MS, 20);
  });

  await t.test('an HTTP/1.0 request without keep-alive: the same', async () => {
    const { socket, reader } = await halfOpenClient(t, p.httpPort);
    socket.write(`GET /app/old HTTP/1.0\r\nHost: a.test\r\n\r\n`);
    assert.equal((await reader.next()).status, 200);
    await reader.rest();
    await statusUntil(p, 'the connection closed at once', (s) => s.workers[0].connections === 0, AT_ONCE_MS, 20);
  });
});

test('Connection: close over native TLS: close_notify, then closed at once; a 4 MiB answer to a slow reader arrives whole', { timeout: 60_000, skip: nativeTlsStatus().available ? false : 'native TLS only' }, async (t) => {
  const p = await portico(t);

  await t.test('the connection is gone after the close_notify while the client still holds its end open', async () => {
    const { socket, reader } = await halfOpenClient(t, p.tlsPort, true);
    socket.write(`GET /app/hello HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
    const res = await reader.next();
    assert.equal(res.status, 200);
    assert.equal(res.headers.connection, 'close');
    await reader.rest(); // the close_notify and the FIN ended the stream
    assert.equal(socket.writable, true, 'the client has not closed its side');
    await statusUntil(p, 'the connection closed at once', (s) => s.workers[0].connections === 0, AT_ONCE_MS, 20);
  });

  await t.test('a 4 MiB answer to a client that reads slowly: every byte arrives before the close_notify', async () => {
    const { socket } = await halfOpenClient(t, p.tlsPort, true);
    await slowReaderGetsAll(p, socket, 4 * 1024 * 1024);
    socket.end();
    await statusUntil(p, 'the connection closed', (s) => s.workers[0].connections === 0);
  });
});

test('Connection: close with bytes behind the request, or an answer still queued: Portico lingers, the answer arrives whole', { timeout: 60_000 }, async (t) => {
  const p = await portico(t);

  await t.test('bytes sent after the request: the connection stays until the client closes', async () => {
    const { socket, reader } = await halfOpenClient(t, p.httpPort);
    // one write: the request and more bytes behind it (a client that ignores its own Connection: close)
    socket.write(`GET /app/first HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\nGET /app/second HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    const res = await reader.next();
    assert.equal(res.status, 200);
    assert.equal((JSON.parse(res.body.toString()) as EchoReply).url, '/first');
    await reader.rest();
    // the FIN came, yet Portico still reads what the client sends (no reset): its connection is still there
    socket.write('more bytes the server must read and drop\r\n');
    assert.equal(await connections(p), 1, 'lingering: the client has not closed');
    socket.end();
    await statusUntil(p, 'the connection closed after the client', (s) => s.workers[0].connections === 0);
  });

  await t.test('a 16 MiB answer to a client that reads slowly: every byte arrives', async () => {
    const { socket } = await halfOpenClient(t, p.httpPort);
    await slowReaderGetsAll(p, socket, 16 * 1024 * 1024);
    socket.end();
    await statusUntil(p, 'the connection closed', (s) => s.workers[0].connections === 0);
  });
});
