// What Portico tells a backend and a client about a message, whoever tries to say otherwise: forwarding headers
// (X-Forwarded-*, X-Real-IP, Forwarded) believed only from trusted proxies, a backend's Connection list that
// cannot strip its framing, $host without Host, no interim responses to HTTP/1.0 clients, and a clean 502 for
// a broken chunked body that arrives with its head. Real Portico processes, real sockets on loopback.
import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { startScriptedHttpPeer } from '../helpers/tcp-server.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';

const SPOOF = 'X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Port: 1\r\nForwarded: for=6.6.6.6\r\n';

async function echoThrough(t: import('node:test').TestContext, forwarding: Record<string, unknown>, raw: string, routeExtra: Record<string, unknown> = {}): Promise<EchoReply> {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ proxy: 'app', ...routeExtra }],
    ...(Object.keys(forwarding).length > 0 ? { forwarding } : {}),
  });
  const socket = await connectPlain(t, portico.httpPort);
  const reader = new ResponseReader(socket);
  socket.write(raw);
  const r = await reader.next();
  assert.equal(r.status, 200, r.body.toString());
  return JSON.parse(r.body.toString()) as EchoReply;
}

test('untrusted client: X-Forwarded-*, X-Real-IP and Forwarded are Portico\'s own, its copies dropped', async (t) => {
  const e = await echoThrough(t, { trusted_proxies: ['10.0.0.0/8'] }, `GET /a HTTP/1.1\r\nHost: h.test:81\r\n${SPOOF}\r\n`);
  assert.equal(e.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(e.headers['x-real-ip'], '127.0.0.1');
  assert.equal(e.headers['x-forwarded-proto'], 'http');
  assert.equal(e.headers['x-forwarded-host'], 'h.test:81');
  assert.match(String(e.headers['x-forwarded-port']), /^\d+$/);
  assert.notEqual(e.headers['x-forwarded-port'], '1');
  assert.equal(e.headers.forwarded, undefined);
});

test('untrusted client with x_forwarded_for: append and forwarded: true: its list is kept, Forwarded is replaced', async (t) => {
  const e = await echoThrough(t, { x_forwarded_for: 'append', forwarded: true }, `GET /a HTTP/1.1\r\nHost: h.test\r\n${SPOOF}\r\n`);
  assert.equal(e.headers['x-forwarded-for'], '6.6.6.6, 127.0.0.1');
  assert.equal(e.headers['x-real-ip'], '127.0.0.1');
  assert.equal(e.headers.forwarded, 'for=127.0.0.1;host=h.test;proto=http');
});

test('trusted proxy: its forwarding headers are kept, X-Forwarded-For and Forwarded appended to', async (t) => {
  const e = await echoThrough(t, { trusted_proxies: ['127.0.0.0/8'], forwarded: true }, `GET /a HTTP/1.1\r\nHost: h.test\r\n${SPOOF}\r\n`);
  assert.equal(e.headers['x-forwarded-for'], '6.6.6.6, 127.0.0.1');
  assert.equal(e.headers['x-real-ip'], '6.6.6.6');
  assert.equal(e.headers['x-forwarded-proto'], 'gopher');
  assert.equal(e.headers['x-forwarded-host'], 'evil.test');
  assert.equal(e.headers['x-forwarded-port'], '1');
  assert.equal(e.headers.forwarded, 'for=6.6.6.6, for=127.0.0.1;host=h.test;proto=http');
});

test('$host of an HTTP/1.0 request without Host is the address the client reached, not empty', async (t) => {
  const route = { request_headers: { set: { 'X-Host': '$host', 'X-Url': '$scheme://$host$request_uri' } } };
  const e = await echoThrough(t, {}, 'GET /a?b=1 HTTP/1.0\r\n\r\n', route);
  assert.equal(e.headers['x-host'], '127.0.0.1');
  assert.equal(e.headers['x-url'], 'http://127.0.0.1/a?b=1');
  const named = await echoThrough(t, {}, 'GET /a HTTP/1.0\r\nHost: Named.Test:81\r\n\r\n', route);
  assert.equal(named.headers['x-host'], 'named.test');
});

test('a backend answering Connection: content-length cannot strip its framing: the client reads one response per request', async (t) => {
  const fake = 'HTTP/1.1 200 OK\r\nX-Fake: 1\r\nContent-Length: 0\r\n\r\n';
  const port = await startScriptedHttpPeer(t, (_head, s) => {
    s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${fake.length}\r\nConnection: content-length, keep-alive\r\n\r\n${fake}`);
  });
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener()], upstreams: { app: { targets: [`127.0.0.1:${port}`] } }, routes: [{ proxy: 'app' }] });
  const socket = await connectPlain(t, portico.httpPort);
  const reader = new ResponseReader(socket);
  socket.write('GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n');
  for (let i = 0; i < 2; i++) {
    const r = await reader.next({ timeoutMs: 5_000 });
    assert.equal(r.headers['content-length'], String(fake.length));
    assert.equal(r.headers['x-fake'], undefined);
    assert.equal(r.body.toString('latin1'), fake);
  }
});

test('interim responses reach HTTP/1.1 clients and never HTTP/1.0 ones (RFC 9110 §15.2)', async (t) => {
  const port = await startScriptedHttpPeer(t, (_head, s) => {
    s.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener()], upstreams: { app: { targets: [`127.0.0.1:${port}`] } }, routes: [{ proxy: 'app' }] });
  const s11 = await connectPlain(t, portico.httpPort);
  const r11 = new ResponseReader(s11);
  s11.write('GET / HTTP/1.1\r\nHost: h\r\n\r\n');
  assert.equal((await r11.next()).status, 103);
  assert.equal((await r11.next()).status, 200);
  const s10 = await connectPlain(t, portico.httpPort);
  const r10 = new ResponseReader(s10);
  s10.write('GET / HTTP/1.0\r\n\r\n');
  const first = await r10.next();
  assert.equal(first.status, 200);
  assert.equal(first.body.toString(), 'ok');
  const rest = await r10.rest();
  assert.equal(rest.length, 0, `nothing after the response: ${rest.toString('latin1')}`);
});

test('an invalid chunked body in the same read as its head gives a 502; after the head went out, a cut logged once', async (t) => {
  let sendBad: (() => void) | undefined;
  const port = await startScriptedHttpPeer(t, (head, s) => {
    if (head.startsWith('GET /same-read')) {
      s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
    } else if (head.startsWith('GET /big-same-read')) {
      // more than the 16 KiB that are copied to leave with the head: the head must still wait for the check
      s.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${'x'.repeat(20_000)}`);
    } else {
      s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
      sendBad = () => s.write('3\r\nabc\r\nzz\r\n');
    }
  });
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener()], upstreams: { app: { targets: [`127.0.0.1:${port}`] } }, routes: [{ proxy: 'app' }] });
  const s1 = await connectPlain(t, portico.httpPort);
  const r1 = new ResponseReader(s1);
  s1.write('GET /same-read HTTP/1.1\r\nHost: h\r\n\r\n');
  const res = await r1.next();
  assert.equal(res.status, 502);
  await r1.rest();

  const s3 = await connectPlain(t, portico.httpPort);
  const r3 = new ResponseReader(s3);
  s3.write('GET /big-same-read HTTP/1.1\r\nHost: h\r\n\r\n');
  assert.equal((await r3.next()).status, 502);
  await r3.rest();

  const s2 = await connectPlain(t, portico.httpPort);
  const r2 = new ResponseReader(s2);
  s2.write('GET /later HTTP/1.1\r\nHost: h\r\n\r\n');
  // the head reaches the client first; then the broken chunk cuts the connection
  for (let i = 0; i < 100 && !r2.pending.includes('\r\n\r\n') && !r2.ended; i++) await Promise.race([once(s2, 'data'), r2.closed]);
  assert.ok(r2.pending.toString('latin1').startsWith('HTTP/1.1 200 OK\r\n'));
  assert.ok(sendBad !== undefined);
  sendBad();
  const rest = await r2.rest();
  assert.ok(!rest.toString('latin1').includes('0\r\n\r\n'), 'the body never looks complete');
  const line = await portico.waitForLog((l) => l.msg === 'request' && l.path === '/later', 10_000);
  assert.equal((line.err as { code?: string } | undefined)?.code, 'UPSTREAM_BAD_RESPONSE');
  const first = await portico.waitForLog((l) => l.msg === 'request' && l.path === '/same-read', 10_000);
  assert.deepEqual([first.status, (first.err as { code?: string } | undefined)?.code], [502, 'UPSTREAM_BAD_RESPONSE']);
});
