// UpstreamPool with send_proxy_protocol against a real loopback server that parses the PROXY header: every new
// connection opens with a header naming its client, an idle socket serves its own client only, a gone client's
// idle sockets close, and other clients' idle sockets make room at max_connections; the same on discovered
// targets, and a retired pool keeps no client's socket. Native sockets when the addon has them (the header is
// queued like any write), net.Socket with PORTICO_NATIVE_IO=0. Waits on events only.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { parseProxyHeader, type ProxyHeader } from '../../src/wire/proxy-protocol.js';
import { NativeSocket, nativeIoAvailable } from '../../src/native/io.js';
import { targetId } from '../../src/upstream/discovery.js';
import type { Target } from '../../src/upstream/balancer.js';
import type { UpstreamClient, UpstreamPool } from '../../src/upstream/pool.js';
import { acquire, counts, makePool, type Acquired } from '../helpers/pool.js';


interface Accepted {
  /** The header this connection opened with. */
  header: ProxyHeader;
  socket: Socket;
}

interface ProxyServer {
  port: number;
  accepted: Accepted[];
  /** Resolves with the first connection (accepted already or later) whose header names `source` (none: UNKNOWN). */
  from(source: UpstreamClient['source']): Promise<Accepted>;
}

/** Reads a PROXY header off every connection (a connection without one is an error), then echoes the rest. */
async function proxyServer(t: TestContext): Promise<ProxyServer> {
  const accepted: Accepted[] = [];
  const waiting = new Set<(a: Accepted) => boolean>();
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    sockets.push(s);
    s.on('error', () => {});
    let buf: Buffer | null = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      if (buf === null) return void s.write(d);
      buf = Buffer.concat([buf, d]);
      const r = parseProxyHeader(buf);
      if (r.kind === 'more') return;
      if (r.kind !== 'done') return void s.destroy(new Error(`no PROXY header: ${r.kind}`));
      const rest = buf.subarray(r.used);
      buf = null;
      const a = { header: r.header, socket: s };
      accepted.push(a);
      for (const w of waiting) if (w(a)) waiting.delete(w);
      if (rest.length > 0) s.write(rest);
    });
  });
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const from = (source: UpstreamClient['source']): Promise<Accepted> => {
    const match = (a: Accepted): boolean => a.header.source?.address === source?.address && a.header.source?.port === source?.port;
    const found = accepted.find(match);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve) => waiting.add((a) => (match(a) ? (resolve(a), true) : false)));
  };
  return { port: (server.address() as { port: number }).port, accepted, from };
}




function client(n: number): UpstreamClient {
  const source = { address: `203.0.113.${n}`, port: 40000 + n };
  const destination = { address: '198.51.100.1', port: 443 };
  return { key: `${source.address} ${source.port}`, source, destination };
}

async function echo(socket: Socket, text: string): Promise<string> {
  socket.write(text);
  const [data] = (await once(socket, 'data')) as [Buffer];
  return data.toString();
}


for (const version of ['v1', 'v2'] as const) {
  test(`send_proxy_protocol ${version}: a new connection opens with a header naming its client, before the caller's bytes`, async (t) => {
    const server = await proxyServer(t);
    const { pool, target } = makePool(t, server.port, { send_proxy_protocol: version });
    const accepted = server.from(client(7).source);
    const a = await acquire(t, pool, target, client(7));
    assert.equal(a.err, null);
    assert.equal(a.reused, false);
    assert.equal((a.socket as unknown) instanceof NativeSocket, nativeIoAvailable(), 'native I/O exactly when available');
    assert.equal(await echo(a.socket, 'ping'), 'ping'); // the header was taken off first, whole
    const { header } = await accepted;
    assert.equal(header.version, version === 'v1' ? 1 : 2);
    assert.equal(header.command, 'proxy');
    assert.deepEqual(header.source, { address: '203.0.113.7', port: 40007 });
    assert.deepEqual(header.destination, { address: '198.51.100.1', port: 443 });
  });
}

test('an idle socket serves its own client only: another client gets a new connection with its own header', async (t) => {
  const server = await proxyServer(t);
  const { pool, target } = makePool(t, server.port, { send_proxy_protocol: 'v2' });
  const a1 = await acquire(t, pool, target, client(1));
  pool.release(target, a1.socket, true);
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });

  const acceptedB = server.from(client(2).source);
  const b = await acquire(t, pool, target, client(2));
  assert.equal(b.reused, false);
  assert.notEqual(b.socket, a1.socket);
  assert.equal((await acceptedB).header.command, 'proxy');

  const a2 = await acquire(t, pool, target, client(1));
  assert.equal(a2.reused, true);
  assert.equal(a2.socket, a1.socket);
  assert.equal(server.accepted.length, 2, 'two clients, two upstream connections');
  assert.equal(await echo(a2.socket, 'again'), 'again');
});

/** One idle socket each for clients 1 and 2 (a v1 pool, one target). */
async function idleForTwo(t: TestContext, pool: UpstreamPool, target: Target): Promise<[Acquired, Acquired]> {
  const [a, b] = await Promise.all([acquire(t, pool, target, client(1)), acquire(t, pool, target, client(2))]);
  pool.release(target, a.socket, true);
  pool.release(target, b.socket, true);
  assert.deepEqual(counts(pool), { open: 2, idle: 2 });
  return [a, b];
}

test('dropClient closes the idle sockets of that client only', async (t) => {
  const server = await proxyServer(t);
  const { pool, target } = makePool(t, server.port, { send_proxy_protocol: 'v1' });
  const [a, b] = await idleForTwo(t, pool, target);
  const closed = once(a.socket, 'close');
  pool.dropClient(client(1).key);
  await closed;
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });
  assert.equal((await acquire(t, pool, target, client(2))).socket, b.socket);
});

test('at max_connections another client\'s idle socket is closed to make room, rather than waiting for its idle timeout', async (t) => {
  const server = await proxyServer(t);
  const { pool, target } = makePool(t, server.port, { send_proxy_protocol: 'v2', max_connections: 1 });
  const a = await acquire(t, pool, target, client(1));
  pool.release(target, a.socket, true);
  const closed = once(a.socket, 'close');
  const acceptedB = server.from(client(2).source);
  const b = await acquire(t, pool, target, client(2));
  assert.equal(b.err, null);
  assert.equal(b.reused, false);
  await closed;
  assert.equal((await acceptedB).header.command, 'proxy');
  assert.deepEqual(counts(pool), { open: 1, idle: 0 });
});

test('a socket released while another client waits is closed, and the waiter gets a fresh connection naming itself', async (t) => {
  const server = await proxyServer(t);
  const { pool, target } = makePool(t, server.port, { send_proxy_protocol: 'v2', max_connections: 1 });
  const a = await acquire(t, pool, target, client(1));
  const waiting = acquire(t, pool, target, client(2));
  assert.equal(pool.stats()[0].queued, 1);
  const closed = once(a.socket, 'close');
  const acceptedB = server.from(client(2).source);
  pool.release(target, a.socket, true);
  const b = await waiting;
  assert.equal(b.err, null);
  assert.equal(b.reused, false);
  assert.notEqual(b.socket, a.socket);
  await closed;
  assert.equal((await acceptedB).header.command, 'proxy');
});

test('a full idle list loses its oldest socket to the one just released; without a client the header says UNKNOWN', async (t) => {
  const server = await proxyServer(t);
  const { pool, target } = makePool(t, server.port, { send_proxy_protocol: 'v1', keepalive: { max_idle: 1 } });
  const acceptedAnon = server.from(undefined);
  const [a, b] = await Promise.all([acquire(t, pool, target, client(1)), acquire(t, pool, target)]);
  pool.release(target, a.socket, true);
  const closed = once(a.socket, 'close');
  pool.release(target, b.socket, true);
  await closed;
  assert.deepEqual(counts(pool), { open: 1, idle: 1 });
  assert.equal((await acceptedAnon).header.family, 'unknown');
  assert.equal((await acquire(t, pool, target)).socket, b.socket);
});

test('a discovered target is keyed per client like a fixed one; removed by discovery, its idle sockets close and a socket released later is not kept', async (t) => {
  const server = await proxyServer(t);
  const { pool } = makePool(t, server.port, { targets: [{ address: 'pp.test:80', resolve: true }], send_proxy_protocol: 'v2' });
  pool.setDiscovered([{ id: targetId('127.0.0.1', server.port), host: '127.0.0.1', port: server.port, weight: 1, backup: false }]);
  const target = pool.targets[0];
  const a = await acquire(t, pool, target, client(1));
  pool.release(target, a.socket, true);
  const b = await acquire(t, pool, target, client(2));
  assert.equal(b.reused, false, 'client 1\'s idle socket is not client 2\'s');
  pool.release(target, b.socket, true);
  const again = await acquire(t, pool, target, client(1));
  assert.equal(again.socket, a.socket);
  assert.equal(again.reused, true);
  assert.deepEqual(counts(pool), { open: 2, idle: 1 });

  const idleClosed = once(b.socket, 'close');
  pool.setDiscovered([]);
  await idleClosed;
  const busyClosed = once(a.socket, 'close');
  pool.release(target, a.socket, true);
  await busyClosed;
  assert.deepEqual(pool.report(), [], 'nothing of the target left');
  assert.equal((await acquire(t, pool, target, client(1))).err?.code, 'UPSTREAM_TARGET_GONE');
});

test('retire: every client\'s idle sockets close, a retry still connects with its own header, and nothing released is kept', async (t) => {
  const server = await proxyServer(t);
  const { pool, target } = makePool(t, server.port, { send_proxy_protocol: 'v1' });
  const [a, b] = await idleForTwo(t, pool, target);
  const closed = Promise.all([once(a.socket, 'close'), once(b.socket, 'close')]);
  pool.retire();
  assert.equal(counts(pool).idle, 0);
  await closed;

  const retry = await acquire(t, pool, target, client(1));
  assert.equal(retry.reused, false);
  assert.equal(await echo(retry.socket, 'retry'), 'retry'); // the server has read its header by now
  const ofClient1 = server.accepted.filter((x) => x.header.source?.port === client(1).source?.port);
  assert.equal(ofClient1.length, 2, 'the retry\'s new connection named client 1 too');
  const retryClosed = once(retry.socket, 'close');
  pool.release(target, retry.socket, true);
  await retryClosed;
  assert.deepEqual(counts(pool), { open: 0, idle: 0 });
});
