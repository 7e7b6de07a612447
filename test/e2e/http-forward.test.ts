// HTTP forwarding end to end through one TLS listener: large streamed bodies both ways (sha256 compared on each
// side), keep-alive reuse on both legs, pipelining, bodiless responses, 100-continue, and the canned errors a
// client sees for no route, oversized or ambiguous heads, and upstreams that refuse connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { createHash, randomBytes } from 'node:crypto';
import { closedPort, startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { startPortico, tlsListener } from '../helpers/portico.js';
import { connectTls, ResponseReader, testCaCert } from '../helpers/wire.js';

const MiB = 1024 * 1024;

test('HTTP forwarding through one TLS listener', { timeout: 240_000 }, async (t) => {
  const app = await startHttpBackend(t, { name: 'app' });
  const other = await startHttpBackend(t, { name: 'other' });
  const refused = await closedPort();
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener()],
    upstreams: {
      app: { targets: [`127.0.0.1:${app.port}`] },
      dead: { targets: [`127.0.0.1:${refused}`] },
      mixed: { targets: [`127.0.0.1:${refused}`, `127.0.0.1:${other.port}`] },
    },
    routes: [
      { match: { path: '/api' }, proxy: { upstream: 'app', strip_prefix: true } },
      { match: { path: '/dead' }, proxy: 'dead' },
      { match: { path: '/mixed' }, proxy: 'mixed' },
    ],
  });
  const base = `https://localhost:${portico.tlsPort}`;

  await t.test('50 MiB chunked upload: the backend hashes the same bytes the client sent', async () => {
    const clientHash = createHash('sha256');
    const reply = await new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port: portico.tlsPort, servername: 'localhost', ca: testCaCert(), method: 'PUT', path: '/api/upload', agent: false, headers: { host: `localhost:${portico.tlsPort}`, 'content-type': 'application/octet-stream' } },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(Buffer.concat(parts).toString()) as { bytes: number; sha256: string }) : reject(new Error(`status ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.setTimeout(60_000, () => req.destroy(new Error('upload stalled')));
      let sent = 0;
      const pump = (): void => {
        while (sent < 50 * MiB) {
          const chunk = randomBytes(Math.min(256 * 1024 - 7, 50 * MiB - sent)); // odd size: chunk edges move around
          clientHash.update(chunk);
          sent += chunk.length;
          if (!req.write(chunk)) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
    assert.equal(reply.bytes, 50 * MiB);
    assert.equal(reply.sha256, clientHash.digest('hex'));
  });

  for (const chunked of [true, false]) {
    await t.test(`50 MiB download (${chunked ? 'chunked' : 'Content-Length'}): the client hashes the same bytes the backend sent`, async () => {
      const streamsBefore = app.streams.length;
      const got = await new Promise<{ bytes: number; sha256: string; headers: Record<string, unknown> }>((resolve, reject) => {
        const req = https.get(
          { host: '127.0.0.1', port: portico.tlsPort, servername: 'localhost', ca: testCaCert(), path: `/api/stream?bytes=${50 * MiB}&chunked=${chunked ? 1 : 0}`, agent: false, headers: { host: `localhost:${portico.tlsPort}` } },
          (res) => {
            const hash = createHash('sha256');
            let bytes = 0;
            res.on('data', (c: Buffer) => {
              hash.update(c);
              bytes += c.length;
            });
            res.on('end', () => resolve({ bytes, sha256: hash.digest('hex'), headers: res.headers }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.setTimeout(60_000, () => req.destroy(new Error('download stalled')));
      });
      assert.equal(app.streams.length, streamsBefore + 1);
      const sent = app.streams[app.streams.length - 1];
      assert.equal(got.bytes, 50 * MiB);
      assert.equal(sent.bytes, 50 * MiB);
      assert.equal(got.sha256, sent.sha256);
      if (!chunked) assert.equal(got.headers['content-length'], String(50 * MiB), 'Content-Length passes through');
    });
  }

  await t.test('keep-alive: two requests on one client connection reach the backend over one upstream connection', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: testCaCert() });
    t.after(() => agent.destroy());
    const replies: EchoReply[] = [];
    const reused: boolean[] = [];
    for (const n of [1, 2]) {
      const reply = await new Promise<EchoReply>((resolve, reject) => {
        const req = https.get({ host: '127.0.0.1', port: portico.tlsPort, servername: 'localhost', path: `/api/keepalive/${n}`, agent, headers: { host: `localhost:${portico.tlsPort}` } }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => resolve(JSON.parse(Buffer.concat(parts).toString()) as EchoReply));
        });
        req.on('error', reject);
        reused.push(req.reusedSocket);
      });
      replies.push(reply);
    }
    assert.deepEqual(reused, [false, true], 'the client reused its connection');
    assert.equal(replies[0].url, '/keepalive/1');
    assert.equal(replies[1].url, '/keepalive/2');
    assert.equal(replies[1].connection, replies[0].connection, 'same backend-side connection');
    assert.equal(replies[1].remotePort, replies[0].remotePort, 'same upstream source port');
  });

  await t.test('pipelining: 3 requests in one write get 3 responses in order, the first one slowest', async (t) => {
    const socket = await connectTls(t, portico.tlsPort);
    const reader = new ResponseReader(socket);
    const host = `localhost:${portico.tlsPort}`;
    socket.write(
      `GET /api/delay?ms=150&n=1 HTTP/1.1\r\nHost: ${host}\r\n\r\n` +
        `GET /api/pipelined?n=2 HTTP/1.1\r\nHost: ${host}\r\n\r\n` +
        `GET /api/pipelined?n=3 HTTP/1.1\r\nHost: ${host}\r\n\r\n`,
    );
    const urls: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await reader.next();
      assert.equal(res.status, 200);
      urls.push((JSON.parse(res.body.toString()) as EchoReply).url);
    }
    assert.deepEqual(urls, ['/delay?ms=150&n=1', '/pipelined?n=2', '/pipelined?n=3']);
    assert.equal(reader.pending.length, 0, 'nothing after the third response');
    assert.equal(reader.ended, false, 'the connection stays open');
  });

  await t.test('HEAD, 204 and 304 responses have no body and the connection stays usable', async (t) => {
    const socket = await connectTls(t, portico.tlsPort);
    const reader = new ResponseReader(socket);
    const host = `localhost:${portico.tlsPort}`;

    socket.write(`HEAD /api/echo HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const head = await reader.next({ head: true });
    assert.equal(head.status, 200);
    assert.ok(Number(head.headers['content-length']) > 0, 'HEAD keeps the Content-Length GET would have');

    socket.write(`GET /api/status/204 HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const noContent = await reader.next();
    assert.equal(noContent.status, 204);
    assert.equal(noContent.headers['transfer-encoding'], undefined, '204 gets no chunked framing');

    socket.write(`GET /api/status/304 HTTP/1.1\r\nHost: ${host}\r\nIf-None-Match: "demo"\r\n\r\n`);
    const notModified = await reader.next();
    assert.equal(notModified.status, 304);
    assert.equal(notModified.headers['transfer-encoding'], undefined, '304 gets no chunked framing');

    // Any stray body byte from the three above would corrupt this response.
    socket.write(`GET /api/after HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const after = await reader.next();
    assert.equal(after.status, 200);
    assert.equal((JSON.parse(after.body.toString()) as EchoReply).url, '/after');
    assert.equal(reader.pending.length, 0);
  });

  await t.test('Expect: 100-continue: the client gets 100 before sending the body, then the final response', async () => {
    const body = randomBytes(MiB);
    let continued = false;
    const reply = await new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1', port: portico.tlsPort, servername: 'localhost', ca: testCaCert(), method: 'POST', path: '/api/upload', agent: false,
          headers: { host: `localhost:${portico.tlsPort}`, expect: '100-continue', 'content-length': body.length },
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => resolve(JSON.parse(Buffer.concat(parts).toString()) as { bytes: number; sha256: string }));
        },
      );
      req.on('continue', () => {
        continued = true;
        req.end(body);
      });
      req.on('error', reject);
      req.setTimeout(20_000, () => req.destroy(new Error('no 100 Continue or response in time')));
      req.flushHeaders();
    });
    assert.ok(continued, 'the client saw 100 Continue');
    assert.equal(reply.bytes, body.length);
    assert.equal(reply.sha256, createHash('sha256').update(body).digest('hex'));
  });

  await t.test('no route matches -> 404', async () => {
    const res = await request(`${base}/nowhere`);
    assert.equal(res.status, 404);
  });

  await t.test('a header block within the default 32KiB limit passes; one over it -> 431', async () => {
    const ok = await request(`${base}/api/echo`, { headers: { 'x-big': 'a'.repeat(20 * 1024) } });
    assert.equal(ok.status, 200);
    const tooBig = await request(`${base}/api/echo`, { headers: { 'x-big': 'a'.repeat(40 * 1024) } });
    assert.equal(tooBig.status, 431);
    assert.equal(tooBig.headers['x-backend'], undefined, 'Portico answered, not the backend');
  });

  await t.test('Content-Length with Transfer-Encoding (smuggling shape) -> 400, closed, nothing reaches the backend', async (t) => {
    const before = app.requests.length;
    const socket = await connectTls(t, portico.tlsPort);
    const reader = new ResponseReader(socket);
    socket.write(`POST /api/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    const res = await reader.next();
    assert.equal(res.status, 400);
    await reader.rest();
    assert.equal(app.requests.length, before, 'the backend saw no request');
  });

  await t.test('the only upstream target refuses connections -> 502', async () => {
    const res = await request(`${base}/dead/x`);
    assert.equal(res.status, 502);
  });

  await t.test('a target that refuses connections is skipped and the request retried on the other target', async () => {
    for (let i = 0; i < 4; i++) {
      const res = await request(`${base}/mixed/${i}`);
      assert.equal(res.status, 200, `request ${i}`);
      assert.equal(res.headers['x-backend'], 'other');
    }
    assert.equal(other.requests.filter((r) => r.url.startsWith('/mixed/')).length, 4);
  });
});
