// max_connections with a wait queue through a running Portico (`portico start`, one worker): a backend that
// holds each request until the test lets it go shows the second request waiting for the first one's socket
// and a third, beyond the queue, answered 503 with Retry-After at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { request, type SimpleResponse } from '../helpers/clients.js';
import { plainListener, startPortico } from '../helpers/portico.js';

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
