// Request bodies through the real `portico start`: limits.body_size on both framings (Content-Length refused
// before connecting; chunked cut the moment the announced bytes pass the limit, the upstream request aborted,
// not completed), and the client body timeout (timeouts.body): a stalled upload gets 408 and is never counted
// against the target. The backend records how each request ended (complete, or aborted mid-body).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from '../helpers/clients.js';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';
import { startSilentPeer } from '../helpers/tcp-server.js';

interface Seen {
  url: string;
  bytes: number;
  outcome: 'complete' | 'aborted';
}

/** A backend that answers 200 after reading a whole body, and emits 'seen' when a request ends either way. */
async function recordingBackend(t: TestContext): Promise<{ port: number; seen: Seen[]; server: http.Server; connections: () => number }> {
  const seen: Seen[] = [];
  let connections = 0;
  const server = http.createServer({ requestTimeout: 0 }, (req, res) => {
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      server.emit('body', req.url, bytes);
    });
    req.on('end', () => {
      seen.push({ url: req.url ?? '', bytes, outcome: 'complete' });
      server.emit('seen');
      res.end(`got ${bytes}`);
    });
    req.on('close', () => {
      if (req.complete) return;
      seen.push({ url: req.url ?? '', bytes, outcome: 'aborted' });
      server.emit('seen');
    });
  });
  server.on('connection', () => connections++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, seen, server, connections: () => connections };
}

async function adminStatus(portico: Portico): Promise<{ health: Record<string, Array<{ passive: { downInWorkers: number[]; failures: number } }>> }> {
  const line = await portico.waitForLog((l) => l.msg === 'listening');
  const port = (line.admin as { port: number }).port;
  return JSON.parse((await request(`http://127.0.0.1:${port}/status`)).body.toString()) as { health: Record<string, Array<{ passive: { downInWorkers: number[]; failures: number } }>> };
}

/** One worker, `limits.body_size: 1KiB`, every path to the backend on `port`. */
function withBodyLimit(t: TestContext, port: number): ReturnType<typeof startPortico> {
  return startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    limits: { body_size: '1KiB' },
    upstreams: { app: { targets: [`127.0.0.1:${port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  });
}

function chunk(size: number): string {
  return `${size.toString(16)}\r\n${'x'.repeat(size)}\r\n`;
}

test('limits.body_size: a chunked body is cut with 413 the moment it passes the limit, and the upstream request is aborted', { timeout: 60_000 }, async (t) => {
  const backend = await recordingBackend(t);
  const portico = await withBodyLimit(t, backend.port);

  // under the limit: passes whole
  const small = await connectPlain(t, portico.httpPort);
  const smallReader = new ResponseReader(small);
  small.write(`POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(600)}${chunk(424)}0\r\n\r\n`);
  const ok = await smallReader.next();
  assert.equal(ok.status, 200);
  assert.equal(ok.body.toString(), 'got 1024');

  // over it: the first 600 bytes reach the backend, then the next chunk size passes the limit (the client is
  // not done sending)
  const big = await connectPlain(t, portico.httpPort);
  const bigReader = new ResponseReader(big);
  const seen = once(backend.server, 'seen');
  const reached = new Promise<void>((resolve) => {
    const onBody = (url: string, bytes: number): void => {
      if (url !== '/big' || bytes < 600) return;
      backend.server.off('body', onBody);
      resolve();
    };
    backend.server.on('body', onBody);
  });
  big.write(`POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(600)}`);
  await reached;
  big.write(chunk(600));
  const res = await bigReader.next();
  assert.equal(res.status, 413);
  await seen;
  const bigSeen = backend.seen.find((s) => s.url === '/big');
  assert.deepEqual(bigSeen && { outcome: bigSeen.outcome, upToLimit: bigSeen.bytes <= 1024 }, { outcome: 'aborted', upToLimit: true }, 'the backend saw the request cut, not completed');
  await bigReader.closed;
  const line = await portico.waitForLog((l) => l.path === '/big');
  assert.equal(line.status, 413);
  assert.equal((line.err as { code: string }).code, 'CLIENT_BODY_TOO_LARGE');
});

test('limits.body_size: a Content-Length over the limit is refused with 413 before any upstream connection', { timeout: 60_000 }, async (t) => {
  const backend = await recordingBackend(t);
  const portico = await withBodyLimit(t, backend.port);
  const socket = await connectPlain(t, portico.httpPort);
  const reader = new ResponseReader(socket);
  socket.write('POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n');
  assert.equal((await reader.next()).status, 413);
  assert.equal(backend.connections(), 0);
});

for (const framing of ['content-length', 'chunked'] as const) {
  test(`timeouts.body: a stalled ${framing} upload gets 408, closed, and is never counted against the target`, { timeout: 60_000 }, async (t) => {
    const backend = await recordingBackend(t);
    const portico = await startPortico(t, {
      workers: 1,
      listeners: [plainListener()],
      admin: { address: '127.0.0.1:0' },
      timeouts: { body: '1500ms' },
      // shorter than the body timeout: it must not run while the client still owes body bytes
      upstreams: { app: { targets: [`127.0.0.1:${backend.port}`], timeouts: { response_headers: '500ms' }, health: { passive: { max_fails: 1 } } } },
      routes: [{ match: { path: '/' }, proxy: 'app' }],
    });
    const socket = await connectPlain(t, portico.httpPort);
    const reader = new ResponseReader(socket);
    const framingHeader = framing === 'chunked' ? 'Transfer-Encoding: chunked' : 'Content-Length: 100';
    socket.write(`POST /stall HTTP/1.1\r\nHost: a\r\n${framingHeader}\r\n\r\n${framing === 'chunked' ? chunk(10) : 'x'.repeat(10)}`);
    const res = await reader.next({ timeoutMs: 20_000 });
    assert.equal(res.status, 408);
    await reader.closed;
    const line = await portico.waitForLog((l) => l.path === '/stall');
    assert.equal((line.err as { code: string }).code, 'CLIENT_BODY_TIMEOUT');
    const health = (await adminStatus(portico)).health.app[0].passive;
    assert.deepEqual({ down: health.downInWorkers, failures: health.failures }, { down: [], failures: 0 }, 'the target is not blamed');
    const after = await request(`http://127.0.0.1:${portico.httpPort}/next`, { method: 'POST', body: 'hello' });
    assert.equal(after.status, 200, 'the target still serves');
  });
}

test('timeouts.body with Expect: 100-continue: the client clock starts at the 100; a backend that never answers gets its own 504', { timeout: 60_000 }, async (t) => {
  const backend = await recordingBackend(t); // Node answers 100 Continue by itself
  const silent = await startSilentPeer(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    timeouts: { body: '1s' },
    upstreams: {
      app: { targets: [`127.0.0.1:${backend.port}`] },
      mute: { targets: [`127.0.0.1:${silent}`], timeouts: { response_headers: '1s' } },
    },
    routes: [
      { match: { path: '/mute' }, proxy: 'mute' },
      { match: { path: '/' }, proxy: 'app' },
    ],
  });
  const ask = async (path: string): Promise<{ status: number; interim: boolean }> => {
    const socket = await connectPlain(t, portico.httpPort);
    const reader = new ResponseReader(socket);
    socket.write(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n`);
    let res = await reader.next({ timeoutMs: 20_000 });
    const interim = res.status === 100;
    if (interim) res = await reader.next({ timeoutMs: 20_000 }); // the body is never sent
    return { status: res.status, interim };
  };
  assert.deepEqual(await ask('/stall'), { status: 408, interim: true }, 'told to continue, then silent: the client is late');
  assert.deepEqual(await ask('/mute'), { status: 504, interim: false }, 'never told to continue: the upstream is late');
  const line = await portico.waitForLog((l) => l.path === '/mute');
  assert.equal((line.err as { code: string }).code, 'UPSTREAM_HEADERS_TIMEOUT');
});
