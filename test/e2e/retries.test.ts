// Retries when an upstream connection dies under a request, end to end (1 worker): a target that accepts and
// resets once the request head is written is skipped for a GET (another target answers) but not for a POST,
// and a lone target is not asked twice; a kept-alive upstream connection that the only target closed while
// it sat idle is replaced by a new one and the GET sent again. Raw TCP backends on loopback decide per request
// whether to answer or reset.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { startHttpBackend } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { plainListener, startPortico } from '../helpers/portico.js';

interface RawBackend {
  readonly port: number;
  /** Request heads received, all connections together. */
  readonly requests: number;
  readonly connections: number;
}

/**
 * A minimal HTTP/1.1 backend: for each request head, `decide(nthOnItsConnection)` says whether it answers
 * `200 ok` (keep-alive) or resets the connection (RST) without a byte of response. Requests carry no body
 * it needs to read: one that resets does so at the head.
 */
async function rawBackend(t: TestContext, decide: (nthOnConnection: number) => 'answer' | 'reset'): Promise<RawBackend> {
  const counts = { requests: 0, connections: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    counts.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    let nth = 0;
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        buf = buf.slice(end + 4);
        counts.requests++;
        if (decide(++nth) === 'reset') {
          socket.resetAndDestroy();
          return;
        }
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: raw\r\n\r\nok');
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    server.close();
    for (const s of sockets) s.destroy();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    get requests() {
      return counts.requests;
    },
    get connections() {
      return counts.connections;
    },
  };
}

test('an upstream connection reset after the request was written: a GET goes to another target, a POST and a lone target get 502', { timeout: 60_000 }, async (t) => {
  const resetting = await rawBackend(t, () => 'reset');
  const ok = await startHttpBackend(t, { name: 'ok' });
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: {
      // passive health off: the resetting target stays in rotation, so requests keep meeting it first
      pair: { targets: [`127.0.0.1:${resetting.port}`, `127.0.0.1:${ok.port}`], health: { passive: { max_fails: 0 } } },
      lone: { targets: [`127.0.0.1:${resetting.port}`], health: { passive: { max_fails: 0 } } },
    },
    routes: [
      { match: { path: '/pair' }, proxy: 'pair' },
      { match: { path: '/lone' }, proxy: 'lone' },
    ],
    log: { access: false },
  });
  const base = `http://127.0.0.1:${portico.httpPort}`;
  for (let i = 0; i < 6; i++) {
    const res = await request(`${base}/pair/${i}`);
    assert.equal(res.status, 200, `GET ${i}: ${res.body.toString()}`);
    assert.equal(res.headers['x-backend'], 'ok');
  }
  assert.ok(resetting.requests >= 3, `round robin sent about every other GET to the resetting target first (${resetting.requests})`);
  assert.equal(ok.requests.length, 6);

  const before = resetting.requests;
  const post = await request(`${base}/lone/form`, { method: 'POST', body: 'a=1' });
  assert.equal(post.status, 502, 'a POST that reached the target is not sent again');
  const get = await request(`${base}/lone/x`);
  assert.equal(get.status, 502, 'no other target to ask');
  assert.equal(resetting.requests, before + 2, 'each was sent once: a fresh connection reset is not retried on its target');
});

test('a kept-alive upstream connection the only target closed while idle: the GET is sent again on a new connection', { timeout: 60_000 }, async (t) => {
  // every connection serves one request; the next one on it meets a reset, as when the target's keep-alive
  // timeout closes it just as Portico reuses it
  const once_ = await rawBackend(t, (nth) => (nth === 1 ? 'answer' : 'reset'));
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { one: { targets: [`127.0.0.1:${once_.port}`] } },
    routes: [{ proxy: 'one' }],
    log: { access: false },
  });
  const base = `http://127.0.0.1:${portico.httpPort}`;
  assert.equal((await request(`${base}/a`)).status, 200);
  assert.equal(once_.connections, 1);
  const second = await request(`${base}/b`);
  assert.equal(second.status, 200, second.body.toString());
  assert.deepEqual([once_.requests, once_.connections], [3, 2], 'the reused connection failed, a new one answered');
});
