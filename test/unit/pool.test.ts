// UpstreamPool against real loopback servers: reuse, LIFO, bounds, idle timeout, peers closing idle sockets,
// connect errors and timeouts, exact open counts, detach and close. Waits on socket events, never on sleeps.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { configSchema } from '../../src/config/schema.js';
import { ProxyError } from '../../src/core/errors.js';
import { UpstreamPool } from '../../src/upstream/pool.js';
import { acquire, counts, makePool } from '../helpers/pool.js';

interface EchoServer {
  server: Server;
  port: number;
  accepted: Socket[];
  /** The server side of a client socket, once the server has accepted it. */
  peerOf(client: Socket): Promise<Socket>;
}

/** An echo server on 127.0.0.1:0, closed with every accepted socket after the test. */
async function echoServer(t: TestContext): Promise<EchoServer> {
  const accepted: Socket[] = [];
  const server = createServer((s) => {
    accepted.push(s);
    s.on('error', () => {});
    s.on('data', (d) => s.write(d));
  });
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  t.after(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  const peerOf = async (client: Socket): Promise<Socket> => {
    for (let i = 0; i < 100; i++) {
      const found = accepted.find((s) => s.remotePort === client.localPort);
      if (found) return found;
      await once(server, 'connection');
    }
    throw new Error('server never accepted the connection');
  };
  return { server, port, accepted, peerOf };
}




async function echo(socket: Socket, text: string): Promise<string> {
  socket.write(text);
  const [data] = (await once(socket, 'data')) as [Buffer];
  return data.toString();
}


test('a released socket is reused by the next acquire (reused = true), and callbacks are never synchronous', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port);
  const first = await acquire(t, pool, target);
  assert.equal(first.err, null);
  assert.equal(first.reused, false);
  assert.equal(first.sync, false);
  assert.equal(await echo(first.socket, 'one'), 'one');
  pool.release(target, first.socket, true);
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });

  const second = await acquire(t, pool, target);
  assert.equal(second.socket, first.socket);
  assert.equal(second.reused, true);
  assert.equal(second.sync, false);
  assert.deepEqual(counts(pool), { open: 1, idle: 0 });
  assert.equal(await echo(second.socket, 'two'), 'two');
  assert.deepEqual(pool.stats(), [{ target: `127.0.0.1:${port}`, open: 1, tunnels: 0, idle: 0, active: 0, queued: 0, available: true, backup: false, rampingUp: false }]);
});

test("release with handOff 'now' answers a queued waiter inside the call, the default on a later tick; neither pools the socket", async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port, { max_connections: 1, queue: { size: 10, timeout: '10s' } });
  const first = await acquire(t, pool, target);
  assert.equal(first.err, null);
  let held = first.socket;
  for (const handOff of ['now', 'tick'] as const) {
    const got: { socket: Socket | null; reused: boolean } = { socket: null, reused: false };
    pool.acquire(target, (err, socket, reused) => {
      assert.equal(err, null);
      got.socket = socket as Socket;
      got.reused = reused;
    }, 0);
    assert.equal(pool.limits().queued, 1, 'max_connections 1 is held: the acquire waits in the queue');
    pool.release(target, held, true, handOff);
    if (handOff === 'tick') {
      assert.equal(got.socket, null, "'tick': not answered inside release()");
      await new Promise((r) => process.nextTick(r));
    }
    assert.equal(got.socket, held, `'${handOff}': the waiter has the released socket`);
    assert.equal(got.reused, true);
    assert.deepEqual(counts(pool), { open: 1, idle: 0 }, 'handed over busy, never through the idle stack');
    assert.equal(pool.limits().queued, 0);
    assert.equal(await echo(held, handOff), handOff, 'the waiter can use it at once');
  }
  held.destroy();
});

test('idle sockets are reused last-in first-out (the warmest first)', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port);
  const [a, b] = await Promise.all([acquire(t, pool, target), acquire(t, pool, target)]);
  assert.notEqual(a.socket, b.socket);
  pool.release(target, a.socket, true);
  pool.release(target, b.socket, true);
  assert.equal((await acquire(t, pool, target)).socket, b.socket);
  assert.equal((await acquire(t, pool, target)).socket, a.socket);
});

test('max_idle bounds the idle stack: extra released sockets are closed; 0 disables reuse', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port, { keepalive: { max_idle: 1 } });
  const [a, b] = await Promise.all([acquire(t, pool, target), acquire(t, pool, target)]);
  pool.release(target, a.socket, true);
  const bClosed = once(b.socket, 'close');
  pool.release(target, b.socket, true);
  await bClosed;
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });

  const none = makePool(t, port, { keepalive: { max_idle: 0 } });
  const c = await acquire(t, none.pool, none.target);
  const cClosed = once(c.socket, 'close');
  none.pool.release(none.target, c.socket, true);
  await cClosed;
  assert.deepEqual(counts(none.pool), { open: 0, idle: 0 });
});

test('a socket released as not reusable is closed', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port);
  const a = await acquire(t, pool, target);
  const closed = once(a.socket, 'close');
  pool.release(target, a.socket, false);
  await closed;
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
});

test('idle timeout closes an idle socket; a reused socket is not closed by its old idle timer', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port, { keepalive: { idle_timeout: '40ms' } });
  const [a, b] = await Promise.all([acquire(t, pool, target), acquire(t, pool, target)]);
  pool.release(target, a.socket, true); // a's idle timer is armed first...
  const again = await acquire(t, pool, target); // ...and a goes busy before it fires
  assert.equal(again.socket, a.socket);
  pool.release(target, b.socket, true); // b's timer is due after a's stale one
  await once(b.socket, 'close');
  assert.equal(a.socket.destroyed, false);
  assert.equal(await echo(a.socket, 'still here'), 'still here');
  assert.deepEqual(counts(pool), { open: 1, idle: 0 });

  pool.release(target, a.socket, true); // idle again: the refreshed timer closes it
  await once(a.socket, 'close');
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
  const fresh = await acquire(t, pool, target);
  assert.equal(fresh.reused, false);
});

test('takeIdle hands over the warmest healthy idle socket in its own call; a dead one is dropped; none: null', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port);
  assert.equal(pool.takeIdle(target), null); // nothing idle: the caller acquires as usual
  const a = await acquire(t, pool, target);
  const b = await acquire(t, pool, target);
  const c = await acquire(t, pool, target);
  pool.release(target, a.socket, true);
  pool.release(target, b.socket, true);
  pool.release(target, c.socket, true);
  assert.deepEqual(counts(pool), { open: 3, idle: 3 });
  c.socket.destroy(); // the warmest is dead (its 'close' not seen yet): dropped, the next one is handed out
  const taken = pool.takeIdle(target);
  assert.equal(taken, b.socket);
  assert.equal(await echo(b.socket, 'now'), 'now');
  assert.deepEqual(counts(pool), { open: 2, idle: 1 });
  pool.release(target, b.socket, true);
  assert.deepEqual(counts(pool), { open: 2, idle: 2 }); // busy again after takeIdle: released and pooled as usual
  pool.close();
  assert.equal(pool.takeIdle(target), null);
});

test('takeIdle never hands out a socket of a PROXY-sending pool (acquire picks the client\'s own there)', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port, { send_proxy_protocol: 'v1' });
  const a = await acquire(t, pool, target);
  pool.release(target, a.socket, true);
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });
  assert.equal(pool.takeIdle(target), null);
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });
});

test('an upstream closing an idle socket removes it from the pool', async (t) => {
  const srv = await echoServer(t);
  const { pool, target } = makePool(t, srv.port);
  const a = await acquire(t, pool, target);
  const peer = await srv.peerOf(a.socket);
  pool.release(target, a.socket, true);
  const closed = once(a.socket, 'close');
  peer.end(); // FIN only: the pool must notice the half-close and drop the socket
  await closed;
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
  const next = await acquire(t, pool, target);
  assert.equal(next.reused, false);
  assert.notEqual(next.socket, a.socket);
});

test('bytes arriving on an idle socket (protocol violation) close it', async (t) => {
  const srv = await echoServer(t);
  const { pool, target } = makePool(t, srv.port);
  const a = await acquire(t, pool, target);
  const peer = await srv.peerOf(a.socket);
  pool.release(target, a.socket, true);
  const closed = once(a.socket, 'close');
  peer.write('HTTP/1.1 200 OK\r\n\r\n');
  await closed;
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
});

test('connect refused -> UPSTREAM_CONNECT_REFUSED, retryable, upstream side; nothing stays open', async (t) => {
  const probe = createServer();
  probe.listen({ host: '127.0.0.1', port: 0 });
  await once(probe, 'listening');
  const port = (probe.address() as { port: number }).port;
  probe.close();
  await once(probe, 'close');
  const { pool, target } = makePool(t, port);
  const r = await acquire(t, pool, target);
  assert.ok(r.err instanceof ProxyError);
  assert.equal(r.err.code, 'UPSTREAM_CONNECT_REFUSED');
  assert.equal(r.err.retryable, true);
  assert.equal(r.err.side, 'upstream');
  assert.equal(r.socket, null);
  assert.equal(r.sync, false);
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
});

test('connect timeout -> UPSTREAM_CONNECT_TIMEOUT, retryable, against a loopback listener whose backlog is full', async (t) => {
  // A child process listens with backlog 1 and then blocks its event loop (Atomics.wait: no CPU), so it never
  // accepts: the kernel completes two handshakes into the accept queue and drops later SYNs, so the next
  // connect hangs until our timer fires. Loopback only, no routing tricks.
  const script =
    "const net=require('node:net');const s=net.createServer();" +
    "s.listen({host:'127.0.0.1',port:0,backlog:1},()=>{process.stdout.write(s.address().port+'\\n'," +
    '()=>Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0));});';
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  assert.ok(port > 0);

  const { pool, target } = makePool(t, port, { timeouts: { connect: '150ms' } });
  let timeout: ProxyError | undefined;
  let connected = 0;
  for (let i = 0; i < 8 && timeout === undefined; i++) {
    const r = await acquire(t, pool, target);
    if (r.err === null) connected++;
    else timeout = r.err;
  }
  assert.ok(timeout, `a connect timed out after ${connected} filled the backlog`);
  assert.equal(timeout.code, 'UPSTREAM_CONNECT_TIMEOUT');
  assert.equal(timeout.retryable, true);
  assert.match(timeout.message, /timed out after 150ms/);
  // The timed-out socket no longer counts: only the connected ones are open.
  assert.deepEqual(counts(pool), { open: connected, idle: 0 });
});

test('max_connections reached without a queue -> UPSTREAM_UNAVAILABLE (retryable on another target); idle sockets still serve', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port, { max_connections: 1, queue: { size: 0 } });
  const a = await acquire(t, pool, target);
  const full = await acquire(t, pool, target);
  assert.ok(full.err instanceof ProxyError);
  assert.equal(full.err.code, 'UPSTREAM_UNAVAILABLE');
  assert.equal(full.err.retryable, true);
  assert.equal(full.sync, false);
  pool.release(target, a.socket, true);
  const again = await acquire(t, pool, target);
  assert.equal(again.socket, a.socket);
  assert.equal(again.reused, true);
});

test('open counts stay exact when a socket is destroyed twice and then released', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port);
  const [a, b] = await Promise.all([acquire(t, pool, target), acquire(t, pool, target)]);
  assert.deepEqual(counts(pool), { open: 2, idle: 0 });
  const closed = once(a.socket, 'close');
  a.socket.destroy();
  a.socket.destroy();
  pool.release(target, a.socket, true); // dead: must not be pooled or counted again
  await closed;
  assert.deepEqual(counts(pool), { open: 1, idle: 0 });
  pool.release(target, b.socket, true);
  pool.release(target, b.socket, true); // a double release pools it once
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });
  const bClosed = once(b.socket, 'close');
  b.socket.destroy();
  b.socket.destroy();
  await bClosed;
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
});

test('a detached socket (tunnel) leaves the open count for the tunnel count until it closes, is never pooled, and survives close()', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port);
  const a = await acquire(t, pool, target);
  pool.detach(target, a.socket);
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
  assert.equal(pool.stats()[0].tunnels, 1);
  pool.close();
  assert.equal(a.socket.destroyed, false);
  assert.equal(await echo(a.socket, 'tunnel'), 'tunnel');
  const closed = once(a.socket, 'close');
  a.socket.destroy();
  await closed;
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
  assert.equal(pool.stats()[0].tunnels, 0);
});

test('tunnels do not count against max_connections: a waiter gets a connection as soon as a socket becomes a tunnel', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port, { max_connections: 2, queue: { size: 0 } });
  const tunnels = [];
  for (let i = 0; i < 5; i++) {
    const x = await acquire(t, pool, target);
    assert.ok(x.err === null, `connection ${i} granted (${x.err?.message ?? ""})`);
    pool.detach(target, x.socket);
    tunnels.push(x.socket);
  }
  assert.deepEqual({ ...counts(pool), tunnels: pool.stats()[0].tunnels }, { open: 0, idle: 0, tunnels: 5 });
  // the keep-alive bound still holds for requests
  const [a, b] = await Promise.all([acquire(t, pool, target), acquire(t, pool, target)]);
  const full = await acquire(t, pool, target);
  assert.equal(full.err?.code, 'UPSTREAM_UNAVAILABLE');
  for (const s of [a.socket, b.socket, ...tunnels]) s?.destroy();
});

test('close() destroys idle sockets, refuses later acquires, and closes busy sockets when released', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port);
  const [a, b] = await Promise.all([acquire(t, pool, target), acquire(t, pool, target)]);
  pool.release(target, a.socket, true);
  const aClosed = once(a.socket, 'close');
  pool.close();
  assert.equal(counts(pool).idle, 0);
  await aClosed;
  const refused = await acquire(t, pool, target);
  assert.ok(refused.err instanceof ProxyError);
  assert.equal(refused.err.code, 'UPSTREAM_UNAVAILABLE');
  assert.equal(refused.err.retryable, false);
  assert.equal(b.socket.destroyed, false); // in-flight work finishes
  const bClosed = once(b.socket, 'close');
  pool.release(target, b.socket, true);
  await bClosed;
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
});

test('foreign sockets and targets are refused without touching the pool', async (t) => {
  const { port } = await echoServer(t);
  const { pool, target } = makePool(t, port);
  const other = makePool(t, port);
  const foreign = await acquire(t, other.pool, other.target);
  const closed = once(foreign.socket, 'close');
  pool.release(target, foreign.socket, true);
  await closed;
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
  const wrong = await acquire(t, pool, other.target);
  assert.equal(wrong.err?.code, 'INTERNAL');
});

test('targets come from config: id is the address, weight 0 starts unavailable, balancer follows balance', () => {
  const config = configSchema.parse({
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { u: { balance: 'least_conn', targets: ['127.0.0.1:1', { address: '[::1]:2', weight: 0 }, { address: 'localhost:3', weight: 4 }] } },
  });
  const pool = new UpstreamPool('u', config.upstreams.u);
  assert.equal(pool.name, 'u');
  assert.deepEqual(
    pool.targets.map((t) => ({ ...t })),
    [
      { id: '127.0.0.1:1', host: '127.0.0.1', port: 1, weight: 1, available: true, active: 0, remote: 0, backup: false, rampUntil: 0 },
      { id: '[::1]:2', host: '::1', port: 2, weight: 0, available: false, active: 0, remote: 0, backup: false, rampUntil: 0 },
      { id: 'localhost:3', host: 'localhost', port: 3, weight: 4, available: true, active: 0, remote: 0, backup: false, rampUntil: 0 },
    ],
  );
  const picked = new Set(Array.from({ length: 10 }, () => pool.balancer.pick()?.id));
  assert.deepEqual([...picked].sort(), ['127.0.0.1:1', 'localhost:3']);
  pool.close();
});

test('setRemoteLoad sets each target\'s remote count by position and refuses a list of another length', (t) => {
  const { pool } = makePool(t, 9, { targets: ['127.0.0.1:9', '127.0.0.1:10'], balance: 'least_conn' });
  assert.deepEqual(pool.targets.map((x) => x.remote), [0, 0]);
  assert.equal(pool.setRemoteLoad([4, 1]), true);
  assert.deepEqual(pool.targets.map((x) => x.remote), [4, 1]);
  assert.equal(pool.balancer.pick()?.id, '127.0.0.1:10');
  assert.equal(pool.setRemoteLoad([7]), false);
  assert.deepEqual(pool.targets.map((x) => x.remote), [4, 1]);
});
