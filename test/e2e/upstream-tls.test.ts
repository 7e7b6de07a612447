// HTTPS to upstreams (`upstreams.NAME.tls`): requests, WebSocket tunnels and health probes over TLS to real
// Node https servers; verification on by default (CA, name), SNI, client certificates, session resumption
// across pooled connections, and the PROXY header ahead of the ClientHello.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import type { TLSSocket } from 'node:tls';
import WebSocket, { WebSocketServer } from 'ws';
import { statusUntil } from '../helpers/admin.js';
import { request } from '../helpers/clients.js';
import { TEST_CERT, TEST_KEY, plainListener, startPortico } from '../helpers/portico.js';
import { readFileSync } from 'node:fs';
import { selfSigned } from '../helpers/certs.js';

interface Seen {
  sni: string | false | undefined;
  reused: boolean;
  peerCert: string | undefined;
  url: string;
  proxyLine: string | undefined;
}

interface TlsBackend {
  port: number;
  seen: Seen[];
  server: https.Server;
}

/** An https backend with the test certificate (localhost, 127.0.0.1); answers "ok <url>" and records each request's TLS facts. */
async function startTlsBackend(t: TestContext, opts: https.ServerOptions = {}, proxyProtocol = false): Promise<TlsBackend> {
  const seen: Seen[] = [];
  const proxyLines = new WeakMap<net.Socket, string>();
  const server = https.createServer({ cert: readFileSync(TEST_CERT), key: readFileSync(TEST_KEY), ...opts }, (req, res) => {
    const s = req.socket as TLSSocket;
    const peer = s.getPeerCertificate();
    const cn = peer?.subject?.CN;
    seen.push({ sni: s.servername ?? undefined, reused: s.isSessionReused(), peerCert: Array.isArray(cn) ? cn.join(',') : cn, url: req.url ?? '', proxyLine: proxyLines.get(s) });
    res.end(`ok ${req.url}`);
  });
  let front: net.Server | https.Server = server;
  if (proxyProtocol) {
    // a PROXY v1 line first, then TLS: read the line, hand the rest of the connection to the https server
    front = net.createServer((sock) => {
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer): void => {
        buf = Buffer.concat([buf, d]);
        const end = buf.indexOf('\r\n');
        if (end < 0) return;
        sock.off('data', onData);
        sock.pause();
        sock.unshift(buf.subarray(end + 2));
        server.once('secureConnection', (tlsSock: TLSSocket) => proxyLines.set(tlsSock, buf.subarray(0, end).toString('latin1')));
        server.emit('connection', sock);
      };
      sock.on('data', onData);
    }) as unknown as https.Server;
  }
  front.listen(0, '127.0.0.1');
  await once(front, 'listening');
  t.after(() => {
    server.closeAllConnections();
    front.close();
  });
  return { port: (front.address() as AddressInfo).port, seen, server };
}

function config(port: number, tls: Record<string, unknown> | boolean, extra: Record<string, unknown> = {}) {
  return {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { secure: { targets: [`127.0.0.1:${port}`], tls, ...extra } },
    routes: [{ match: { path: '/' }, proxy: 'secure' }],
  };
}

test('requests go over TLS, verified against `ca`, with the SNI name; the backend sees TLS', async (t) => {
  const backend = await startTlsBackend(t);
  const portico = await startPortico(t, config(backend.port, { ca: TEST_CERT, sni: 'localhost' }));
  const res = await request(`http://127.0.0.1:${portico.httpPort}/a?b=1`);
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), 'ok /a?b=1');
  assert.equal(backend.seen.length, 1);
  assert.equal(backend.seen[0].sni, 'localhost');
});

test('an IP target without sni: no SNI sent, and the certificate is checked against the IP address', async (t) => {
  const backend = await startTlsBackend(t);
  const portico = await startPortico(t, config(backend.port, { ca: TEST_CERT }));
  const res = await request(`http://127.0.0.1:${portico.httpPort}/ip`);
  assert.equal(res.status, 200);
  assert.equal(backend.seen[0].sni, false);
});

test('verification is on by default: an untrusted certificate or a wrong name -> 502 UPSTREAM_TLS, nothing reaches the backend', async (t) => {
  const backend = await startTlsBackend(t);
  const untrusted = await startPortico(t, config(backend.port, true));
  const a = await request(`http://127.0.0.1:${untrusted.httpPort}/x`);
  assert.equal(a.status, 502);
  const errOf = (l: Record<string, unknown>): { code?: string; message?: string } => (typeof l.err === 'object' && l.err !== null ? (l.err as { code?: string; message?: string }) : {});
  const line = await untrusted.waitForLog((l) => l.msg === 'request' && errOf(l).code === 'UPSTREAM_TLS');
  assert.match(String(errOf(line).message), /self-signed certificate/);

  const wrongName = await startPortico(t, config(backend.port, { ca: TEST_CERT, sni: 'other.example' }));
  const b = await request(`http://127.0.0.1:${wrongName.httpPort}/x`);
  assert.equal(b.status, 502);
  const nameLine = await wrongName.waitForLog((l) => l.msg === 'request' && errOf(l).code === 'UPSTREAM_TLS');
  assert.match(String(errOf(nameLine).message), /other\.example/);
  assert.equal(backend.seen.length, 0, 'no request was sent over an unverified connection');
});

test('verify: false accepts any certificate', async (t) => {
  const backend = await startTlsBackend(t);
  const portico = await startPortico(t, config(backend.port, { verify: false }));
  assert.equal((await request(`http://127.0.0.1:${portico.httpPort}/v`)).status, 200);
});

test('client certificate: sent when configured, and a backend that requires one refuses Portico without it', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-mtls-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const client = await selfSigned('portico-client', 'client');
  await writeFile(path.join(dir, 'client.crt'), client.cert);
  await writeFile(path.join(dir, 'client.key'), client.key);
  const backend = await startTlsBackend(t, { requestCert: true, rejectUnauthorized: true, ca: client.cert });

  const without = await startPortico(t, config(backend.port, { ca: TEST_CERT }));
  assert.equal((await request(`http://127.0.0.1:${without.httpPort}/m`)).status, 502);

  const withCert = await startPortico(t, config(backend.port, { ca: TEST_CERT, cert: path.join(dir, 'client.crt'), key: path.join(dir, 'client.key') }));
  const res = await request(`http://127.0.0.1:${withCert.httpPort}/m`);
  assert.equal(res.status, 200);
  assert.equal(backend.seen.at(-1)?.peerCert, 'portico-client');
});

test('new connections to a target resume the TLS session (no full handshake each time)', async (t) => {
  const backend = await startTlsBackend(t);
  // max_idle 0: every request opens a new connection
  const portico = await startPortico(t, config(backend.port, { ca: TEST_CERT }, { keepalive: { max_idle: 0 } }));
  for (let i = 0; i < 4; i++) assert.equal((await request(`http://127.0.0.1:${portico.httpPort}/s${i}`)).status, 200);
  assert.equal(backend.seen.length, 4);
  assert.equal(backend.seen[0].reused, false);
  assert.ok(backend.seen.slice(1).some((s) => s.reused), `a later connection resumed: ${JSON.stringify(backend.seen.map((s) => s.reused))}`);

  const noReuse = await startPortico(t, config(backend.port, { ca: TEST_CERT, session_reuse: false }, { keepalive: { max_idle: 0 } }));
  const before = backend.seen.length;
  for (let i = 0; i < 3; i++) assert.equal((await request(`http://127.0.0.1:${noReuse.httpPort}/n${i}`)).status, 200);
  assert.deepEqual(backend.seen.slice(before).map((s) => s.reused), [false, false, false]);
});

test('a PROXY header goes before the ClientHello', async (t) => {
  const backend = await startTlsBackend(t, {}, true);
  const portico = await startPortico(t, config(backend.port, { ca: TEST_CERT, sni: 'localhost' }, { send_proxy_protocol: 'v1' }));
  const res = await request(`http://127.0.0.1:${portico.httpPort}/p`);
  assert.equal(res.status, 200);
  assert.match(backend.seen[0].proxyLine ?? '', /^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+$/);
});

test('a WebSocket tunnel to a TLS upstream (wss backend) relays both ways', async (t) => {
  const server = https.createServer({ cert: readFileSync(TEST_CERT), key: readFileSync(TEST_KEY) });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    server.close();
  });
  const portico = await startPortico(t, config((server.address() as AddressInfo).port, { ca: TEST_CERT, sni: 'localhost' }));
  const ws = new WebSocket(`ws://127.0.0.1:${portico.httpPort}/chat`);
  t.after(() => ws.terminate());
  await once(ws, 'open');
  const big = Buffer.alloc(256 * 1024, 7);
  ws.send('hello');
  ws.send(big);
  const [first] = (await once(ws, 'message')) as [Buffer];
  assert.equal(first.toString(), 'hello');
  const [second] = (await once(ws, 'message')) as [Buffer];
  assert.ok(big.equals(second));
  ws.close(1000);
  await once(ws, 'close');
});

test('active health probes speak TLS: a target that does not is marked down, requests go to the one that does', async (t) => {
  const good = await startTlsBackend(t);
  const plain = http.createServer((_req, res) => res.end('plain'));
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  t.after(() => plain.close());
  const plainPort = (plain.address() as AddressInfo).port;
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: {
      secure: {
        targets: [`127.0.0.1:${good.port}`, `127.0.0.1:${plainPort}`],
        tls: { ca: TEST_CERT, sni: 'localhost' },
        health: { active: { type: 'http', path: '/health', interval: '200ms', timeout: '1s', fails: 1, passes: 1 } },
      },
    },
    routes: [{ match: { path: '/' }, proxy: 'secure' }],
  });
  const s = await statusUntil(portico, 'the plain target is down and the TLS one up', (st) => {
    const by = (port: number) => st.health.secure?.find((x) => x.target === `127.0.0.1:${port}`)?.active;
    return by(plainPort)?.healthy === false && by(good.port)?.healthy === true;
  });
  assert.match(String(s.health.secure.find((x) => x.target === `127.0.0.1:${plainPort}`)?.active?.lastReason), /SSL|TLS|wrong version|packet/i);
  for (let i = 0; i < 4; i++) assert.equal((await request(`http://127.0.0.1:${portico.httpPort}/r${i}`)).body.toString(), `ok /r${i}`);
});
