// max_connections with a wait queue through a running Portico (`portico start`, one worker): a backend that
// holds each request until the test lets it go shows the second request waiting for the first one's socket
// and a third, beyond the queue, answered 503 with Retry-After at once; a request queued on a target that is
// drained moves to another target, or gets 503 at once when there is none.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { request, type SimpleResponse } from '../helpers/clients.js';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { adminPort } from '../helpers/admin.js';

test('max_connections 1 + queue 1: two slow requests succeed one after the other, a third gets 503 with Retry-After', { timeout: 60_000 }, async (t) => {
  const held: http.ServerResponse[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const backend = http.createServer((req, res) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.on('finish', () => inFlight--);
    req.resume();
    held.push(res);
    backend.emit('held', res);
  });
  backend.keepAliveTimeout = 30_000;
  backend.listen({ host: '127.0.0.1', port: 0 });
  await once(backend, 'listening');
  t.after(() => {
    backend.closeAllConnections();
    backend.close();
  });
  const port = (backend.address() as { port: number }).port;
  const release = (res: http.ServerResponse, body: string): void => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) });
    res.end(body);
  };

  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${port}`], max_connections: 1, queue: { size: 1, timeout: '20s' } } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  });
  const url = `http://127.0.0.1:${portico.httpPort}/slow`;

  const firstArrived = once(backend, 'held');
  const first = request(url);
  await firstArrived;
  // Which of the next two reaches Portico first is up to the network: one waits in the queue, the other
  // finds the queue full.
  const others = [request(url), request(url)];
  const rejected = await Promise.race(others.map((p, i) => p.then((r) => ({ r, i }))));
  assert.equal(rejected.r.status, 503);
  assert.equal(rejected.r.headers['retry-after'], '1');
  assert.equal(held.length, 1, 'the queued request has not reached the backend');

  const secondArrived = once(backend, 'held');
  release(held[0], 'first');
  const firstRes: SimpleResponse = await first;
  assert.equal(firstRes.status, 200);
  assert.equal(firstRes.body.toString(), 'first');
  await secondArrived;
  release(held[1], 'second');
  const secondRes = await others[1 - rejected.i];
  assert.equal(secondRes.status, 200);
  assert.equal(secondRes.body.toString(), 'second');
  assert.equal(maxInFlight, 1, 'the backend never saw two requests at once');
});

/** An HTTP backend that holds every request until the test releases it; 'held' is emitted per request. */
async function heldBackend(t: TestContext, name: string): Promise<{ server: http.Server; port: number; held: http.ServerResponse[]; release(res: http.ServerResponse): void }> {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    held.push(res);
    server.emit('held', res);
  });
  server.keepAliveTimeout = 30_000;
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const release = (res: http.ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(name.length) });
    res.end(name);
  };
  return { server, port: (server.address() as { port: number }).port, held, release };
}

async function drain(portico: Portico, upstream: string, target: string): Promise<void> {
  const res = await request(`http://127.0.0.1:${await adminPort(portico)}/upstreams/${upstream}/targets/${target}/drain`, { method: 'POST', headers: { 'x-portico-admin': '1' } });
  assert.equal(res.status, 200, res.body.toString());
}

/** Asks /status until `n` requests wait in the upstream's queue (bounded: 200 asks). */
async function queuedReaches(portico: Portico, upstream: string, n: number): Promise<void> {
  const port = await adminPort(portico);
  for (let i = 0; i < 200; i++) {
    const s = JSON.parse((await request(`http://127.0.0.1:${port}/status`)).body.toString()) as { limits: Record<string, { queued: number }> };
    if (s.limits[upstream]?.queued === n) return;
  }
  throw new Error(`${upstream}: never ${n} queued`);
}

test('a request queued on a target that is drained moves to another target instead of waiting out its queue timeout', { timeout: 60_000 }, async (t) => {
  const x = await heldBackend(t, 'x');
  const y = await heldBackend(t, 'y');
  // y is a backup: it takes a request only while x is full, so the third request queues on x, deterministically.
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { app: { targets: [`127.0.0.1:${x.port}`, { address: `127.0.0.1:${y.port}`, backup: true }], max_connections: 1, queue: { size: 4, timeout: '30s' } } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  });
  const url = `http://127.0.0.1:${portico.httpPort}/`;
  const onX = once(x.server, 'held');
  const first = request(url, { timeoutMs: 50_000 });
  await onX;
  const onY = once(y.server, 'held');
  const second = request(url, { timeoutMs: 50_000 });
  await onY;
  const third = request(url, { timeoutMs: 50_000 });
  await queuedReaches(portico, 'app', 1);

  await drain(portico, 'app', `127.0.0.1:${x.port}`);
  // The third left x's queue for y's; the request y holds finishing hands its socket over.
  const thirdOnY = once(y.server, 'held');
  y.release(y.held[0]);
  assert.equal((await second).body.toString(), 'y');
  await thirdOnY;
  y.release(y.held[1]);
  const res = await third;
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), 'y', 'served by y while x still holds the first request');
  assert.equal(x.held.length, 1, 'x never saw the moved request');
  x.release(x.held[0]);
  assert.equal((await first).status, 200);
});

test('a request queued on the only target gets 503 at once when that target is drained', { timeout: 60_000 }, async (t) => {
  const z = await heldBackend(t, 'z');
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { app: { targets: [`127.0.0.1:${z.port}`], max_connections: 1, queue: { size: 4, timeout: '30s' } } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  });
  const url = `http://127.0.0.1:${portico.httpPort}/`;
  const onZ = once(z.server, 'held');
  const first = request(url, { timeoutMs: 50_000 });
  await onZ;
  const queued = request(url, { timeoutMs: 50_000 });
  await queuedReaches(portico, 'app', 1);
  const drainedAt = Date.now();
  await drain(portico, 'app', `127.0.0.1:${z.port}`);
  const res = await queued;
  assert.equal(res.status, 503);
  assert.equal(res.headers['retry-after'], '1');
  assert.ok(Date.now() - drainedAt < 20_000, 'answered on the drain, not on the 30 s queue timeout');
  assert.equal(z.held.length, 1);
  z.release(z.held[0]);
  assert.equal((await first).status, 200, 'the request in flight on a drained target finishes');
});
