// acquire()'s first bytes: on a new connection established inside connect(2) (loopback, native I/O) the pool
// writes them before its callback, which says so; a socket that carries them is never pooled for another acquire
// when its own was cancelled, and is clean again once released by its exchange. Without native I/O (or through a
// queue, a kept-alive socket) the caller writes them itself. Real sockets on loopback.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import { once } from 'node:events';
import { counts, makePool } from '../helpers/pool.js';
import { until } from '../helpers/until.js';
import { nativeIoAvailable } from '../../src/native/io.js';
import type { UpstreamPool } from '../../src/upstream/pool.js';
import type { Target } from '../../src/upstream/balancer.js';

const FIRST = 'GET /first HTTP/1.1\r\nHost: t\r\n\r\n';

/** A TCP server that records what each connection sent and whether it ended; no answers. */
async function recordingServer(t: TestContext): Promise<{ port: number; conns: Array<{ bytes: string; ended: boolean }> }> {
  const conns: Array<{ bytes: string; ended: boolean }> = [];
  const sockets = new Set<Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    const c = { bytes: '', ended: false };
    conns.push(c);
    s.on('data', (d) => (c.bytes += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => (c.ended = true));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(
    () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, conns };
}

interface Got {
  socket: Socket;
  reused: boolean;
  firstSent: boolean;
}

function acquireFirst(t: TestContext, pool: UpstreamPool, target: Target, first: string | undefined): Promise<Got> {
  return new Promise((resolve, reject) => {
    pool.acquire(
      target,
      (err, socket, reused, _waitUntil, firstSent) => {
        if (err !== null || socket === null) return reject(err ?? new Error('no socket'));
        socket.on('error', () => {});
        t.after(() => socket.destroy());
        resolve({ socket: socket as Socket, reused, firstSent: firstSent === true });
      },
      0,
      undefined,
      first,
    );
  });
}

test('a new loopback connection carries the first bytes before the callback, which says so', async (t) => {
  const srv = await recordingServer(t);
  const { pool, target } = makePool(t, srv.port);
  const got = await acquireFirst(t, pool, target, FIRST);
  assert.equal(got.reused, false);
  if (!nativeIoAvailable()) {
    // net.connect's sockets are never established inside the call: the caller writes its bytes itself
    assert.equal(got.firstSent, false);
    return;
  }
  assert.equal(got.firstSent, true, 'written by the pool at connect');
  await until('the backend has the bytes', () => srv.conns[0]?.bytes, (b) => b === FIRST, 5_000, 10);
  // nothing more comes from the pool: the caller does not write them again (its own write would follow here)
  got.socket.write('X');
  await until('the caller bytes', () => srv.conns[0].bytes, (b) => b === `${FIRST}X`, 5_000, 10);
});

test('without first bytes nothing is written by the pool', async (t) => {
  const srv = await recordingServer(t);
  const { pool, target } = makePool(t, srv.port);
  const got = await acquireFirst(t, pool, target, undefined);
  assert.equal(got.firstSent, false);
  got.socket.write('Y');
  await until('the caller bytes', () => srv.conns[0]?.bytes, (b) => b === 'Y', 5_000, 10);
});

test('cancelled before its callback: a connection that carries the first bytes is closed, not pooled', async (t) => {
  if (!nativeIoAvailable()) {
    t.skip('needs native I/O (a connection established inside connect(2))');
    return;
  }
  const srv = await recordingServer(t);
  const { pool, target } = makePool(t, srv.port);
  let late = false;
  const cancel = pool.acquire(target, () => (late = true), 0, undefined, FIRST);
  cancel();
  await until('the backend saw the bytes and the close', () => srv.conns[0], (c) => c !== undefined && c.bytes === FIRST && c.ended, 5_000, 10);
  await until('nothing open or idle', () => counts(pool), (c) => c.open === 0 && c.idle === 0, 5_000, 10);
  assert.equal(late, false, 'no callback after cancel');
});

test('released by its exchange, a socket that carried first bytes is an ordinary idle socket again', async (t) => {
  const srv = await recordingServer(t);
  const { pool, target } = makePool(t, srv.port);
  const got = await acquireFirst(t, pool, target, FIRST);
  const expected = got.firstSent ? FIRST : '';
  if (got.firstSent) await until('the backend has the bytes', () => srv.conns[0]?.bytes, (b) => b === FIRST, 5_000, 10);
  pool.release(target, got.socket, true);
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });
  // an idle socket on its way to an acquire that is cancelled stays idle (it carries no one's bytes)
  let late = false;
  const cancel = pool.acquire(target, () => (late = true), 0, undefined, FIRST);
  cancel();
  await new Promise((r) => setImmediate(r));
  assert.equal(late, false);
  assert.deepEqual(counts(pool), { open: 1, idle: 1 }, 'kept idle, not closed');
  const again = await acquireFirst(t, pool, target, FIRST);
  assert.equal(again.reused, true);
  assert.equal(again.firstSent, false, 'a kept-alive socket: the caller writes');
  assert.equal(again.socket, got.socket);
  assert.equal(srv.conns.length, 1);
  // the pool wrote nothing more on it (a write of ours after it arrives behind exactly what was there)
  again.socket.write('Z');
  await until('the caller bytes', () => srv.conns[0]?.bytes, (b) => b === `${expected}Z`, 5_000, 10);
});
