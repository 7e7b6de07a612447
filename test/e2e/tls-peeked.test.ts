// A TLS listener that reads something before the handshake — the ClientHello's name, to pass some names through
// (one port for HTTPS, WSS and TLS passthrough), or a PROXY header from a balancer in front — terminates the other
// connections on the addon's TLS all the same: the connection is peeked (nothing consumed), and once routed it
// gives up only its PROXY header and the addon's handshake reads the ClientHello from the kernel again
// (NativeSocket.rewind). Each case runs on the default path and with PORTICO_NATIVE_TLS=0 (Node's TLS, which
// replays what JavaScript read: the oracle of the answers); portico_tls_native_handshakes_total tells them apart.
// Clients write their bytes whole or dribbled in 7-byte pieces (the PROXY header and the ClientHello in many reads);
// hostile ones (not TLS after the header, a FIN or silence inside the hello) are closed and never cost the worker.
// A terminated WebSocket on such a listener hops into uWebSockets.js on the addon's TLS relay thread.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { Duplex } from 'node:stream';
import { test, type TestContext } from 'node:test';
import tls from 'node:tls';
import type { ConfigInput } from '../../src/config/schema.js';
import { nativePeekAvailable } from '../../src/native/io.js';
import { buildProxyV1, buildProxyV2 } from '../../src/wire/proxy-protocol.js';
import { adminStatus, adminUrl } from '../helpers/admin.js';
import { startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { echo, openWebSocket, request } from '../helpers/clients.js';
import { needNativeTls } from '../helpers/native-tls.js';
import { needPeer } from '../helpers/peers.js';
import { TEST_CERT, TEST_KEY, startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import { startChatBackend } from '../helpers/chat-backend.js';
import { until } from '../helpers/until.js';
import { ResponseReader, closedWithoutReply, testCaCert } from '../helpers/wire.js';
import { passThrough, startPassthroughBackend } from '../helpers/passthrough-backend.js';

/** The listeners, in order: names passed through; a PROXY header first; both. */
const MIXED = 0;
const PROXIED = 1;
const PROXIED_MIXED = 2;

const SOURCE = { address: '203.0.113.7', port: 4000 };
const SOURCE6 = { address: '2001:db8::7', port: 5000 };

async function metric(portico: Portico, name: string): Promise<number> {
  const res = await request(`${adminUrl(portico)}/metrics`);
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(res.body.toString());
  assert.ok(m !== null, `${name} is in /metrics`);
  return Number(m[1]);
}
const nativeHandshakes = (p: Portico): Promise<number> => metric(p, 'portico_tls_native_handshakes_total');
const handshakeErrors = (p: Portico): Promise<number> => metric(p, 'portico_tls_handshake_errors_total');

function config(webPort: number, passPort: number, chatPort?: number): ConfigInput {
  const certificates = [{ cert: TEST_CERT, key: TEST_KEY }];
  const passthrough = [{ sni: 'pass.test', upstream: 'tls-backend' }];
  const proxy_protocol = { trusted: ['127.0.0.1/32'] };
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [
      { address: '127.0.0.1:0', tls: { certificates, passthrough, handshake_timeout: '2s' } },
      { address: '127.0.0.1:0', proxy_protocol, tls: { certificates, handshake_timeout: '2s' } },
      { address: '127.0.0.1:0', proxy_protocol, tls: { certificates, passthrough, handshake_timeout: '2s' } },
    ],
    upstreams: {
      web: { targets: [`127.0.0.1:${webPort}`] },
      'tls-backend': { targets: [`127.0.0.1:${passPort}`] },
      ...(chatPort === undefined ? {} : { chat: { targets: [`127.0.0.1:${chatPort}`] } }),
    },
    routes: [...(chatPort === undefined ? [] : [{ match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate' as const } }]), { proxy: 'web' }],
  };
}

/**
 * A byte stream to `port` that writes whatever goes through it in 7-byte pieces, each its own segment after the
 * last was flushed (`dribble`), or as it comes: a TLS client on top sends its ClientHello in many reads.
 */
async function wire(t: TestContext, port: number, dribble: boolean): Promise<Duplex> {
  const raw = net.connect({ host: '127.0.0.1', port });
  raw.setNoDelay(true);
  t.after(() => raw.destroy());
  await once(raw, 'connect');
  if (!dribble) return raw;
  const d = new Duplex({
    async write(chunk: Buffer, _enc, cb) {
      for (let i = 0; i < chunk.length; i += 7) {
        if (raw.destroyed) break;
        if (!raw.write(chunk.subarray(i, i + 7))) await once(raw, 'drain');
        await new Promise((r) => setTimeout(r, 1));
      }
      cb();
    },
    final(cb) {
      raw.end();
      cb();
    },
    read() {
      raw.resume();
    },
    destroy(err, cb) {
      raw.destroy();
      cb(err);
    },
  });
  raw.on('data', (b: Buffer) => {
    if (!d.push(b)) raw.pause();
  });
  raw.on('end', () => d.push(null));
  // a reset or a cancelled write after the exchange is not the test's business: the reader above sees the close
  raw.on('error', () => d.destroy());
  raw.on('close', () => d.destroy());
  return d;
}

/** GET `url` over TLS for `servername` on `socket` (Portico's test certificate, the one served): the backend's echo. */
async function terminated(t: TestContext, socket: Duplex, url: string, version: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.3', servername = 'localhost'): Promise<EchoReply> {
  const s = tls.connect({ socket, servername, checkServerIdentity: () => undefined, ca: testCaCert(), ALPNProtocols: ['http/1.1'], minVersion: version, maxVersion: version });
  t.after(() => s.destroy());
  await once(s, 'secureConnect');
  assert.equal(s.getProtocol(), version);
  assert.equal(s.getPeerX509Certificate()?.fingerprint256, new X509Certificate(testCaCert()).fingerprint256);
  const reader = new ResponseReader(s);
  s.write(`GET ${url} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  const res = await reader.next({ timeoutMs: 10_000 });
  assert.equal(res.status, 200, url);
  const echo = JSON.parse(res.body.toString()) as EchoReply;
  assert.equal(echo.url, url);
  s.end();
  return echo;
}

function needPeek(t: TestContext, nodeTls: boolean): boolean {
  if (nodeTls) return true;
  if (!needNativeTls(t)) return false;
  if (nativePeekAvailable()) return true;
  return needPeer(t, 'a TCP peek offset (SO_PEEK_OFF, Linux >= 6.10)', false);
}

for (const nodeTls of [false, true]) {
  const which = nodeTls ? "Node's TLS (PORTICO_NATIVE_TLS=0)" : 'the addon';
  const env: Record<string, string> = nodeTls ? { PORTICO_NATIVE_TLS: '0' } : {};

  test(`${which}: one TLS port passes pass.test through and terminates the rest; a PROXY header (v1, v2) before either; whole or dribbled, TLS 1.3 and 1.2`, { timeout: 90_000 }, async (t) => {
    if (!needPeek(t, nodeTls)) return;
    const web = await startHttpBackend(t, { name: 'web' });
    const pass = await startPassthroughBackend(t);
    const portico = await startPortico(t, config(web.port, pass.port), { env });
    const ports = portico.ports;
    let expected = 0;

    // names passed through, the rest terminated, on one port
    for (const dribble of [false, true]) {
      for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
        const echo = await terminated(t, await wire(t, ports[MIXED], dribble), `/mixed?dribble=${dribble}&v=${version}`, version);
        assert.equal(echo.headers['x-forwarded-for'], '127.0.0.1');
        expected++;
      }
      await passThrough(t, await wire(t, ports[MIXED], dribble), pass);
    }
    // an IP literal as the name (RFC 6066 forbids it; wrk sends one) names no host: terminated, as on a port
    // without passthrough, where OpenSSL takes it the same way
    assert.equal((await terminated(t, await wire(t, ports[MIXED], false), '/ip-literal', 'TLSv1.3', '127.0.0.1')).url, '/ip-literal');
    expected++;

    // a PROXY header before the ClientHello: the header's source is the client
    for (const dribble of [false, true]) {
      const v1 = await wire(t, ports[PROXIED], dribble);
      v1.write(buildProxyV1(SOURCE, { address: '198.51.100.1', port: 443 }));
      assert.equal((await terminated(t, v1, `/v1?dribble=${dribble}`)).headers['x-forwarded-for'], SOURCE.address);
      const v2 = await wire(t, ports[PROXIED], dribble);
      v2.write(buildProxyV2(SOURCE6, { address: '2001:db8::1', port: 443 }));
      assert.equal((await terminated(t, v2, `/v2?dribble=${dribble}`, 'TLSv1.2')).headers['x-forwarded-for'], SOURCE6.address);
      expected += 2;
    }

    // both: a PROXY header, then a name passed through or terminated
    for (const dribble of [false, true]) {
      const term = await wire(t, ports[PROXIED_MIXED], dribble);
      term.write(buildProxyV2(SOURCE, { address: '198.51.100.1', port: 443 }));
      assert.equal((await terminated(t, term, `/both?dribble=${dribble}`)).headers['x-forwarded-for'], SOURCE.address);
      expected++;
      const passing = await wire(t, ports[PROXIED_MIXED], dribble);
      passing.write(buildProxyV1(SOURCE, { address: '198.51.100.1', port: 443 }));
      await passThrough(t, passing, pass);
    }

    assert.equal(web.requests.length, expected);
    assert.equal(await nativeHandshakes(portico), nodeTls ? 0 : expected, 'every terminated connection on the addon');
    assert.equal(await handshakeErrors(portico), 0);
  });

  test(`${which}: after a PROXY header or on the mixed port, bytes that are not TLS, a FIN inside the ClientHello and a silent client are closed, counted, and cost the worker nothing`, { timeout: 60_000 }, async (t) => {
    if (!needPeek(t, nodeTls)) return;
    const web = await startHttpBackend(t, { name: 'web' });
    const pass = await startPassthroughBackend(t);
    const portico = await startPortico(t, config(web.port, pass.port), { env });
    const ports = portico.ports;
    const pid = (await adminStatus(portico)).workers[0].pid;
    const hello = await captureNodeHello({ servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    const header = buildProxyV2(SOURCE, { address: '198.51.100.1', port: 443 });
    const before = await handshakeErrors(portico);

    // plaintext HTTP after a good header: the handshake fails, nothing reaches the backend
    const plain = await wire(t, ports[PROXIED], false);
    plain.write(Buffer.concat([header, Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')]));
    await closedWithoutReply(plain as net.Socket);
    await until('the plaintext counted as a failed handshake', () => handshakeErrors(portico), (n) => n > before);

    // half a ClientHello, then FIN (after a header; and on the mixed port): closed at once, not at the timeout
    for (const [port, bytes] of [[ports[PROXIED], Buffer.concat([header, hello.subarray(0, 40)])], [ports[MIXED], hello.subarray(0, 40)]] as const) {
      const s = await wire(t, port, false);
      const started = Date.now();
      s.on('data', () => undefined);
      s.on('error', () => undefined);
      s.end(bytes);
      await once(s, 'close');
      assert.ok(Date.now() - started < 1500, `closed ${Date.now() - started} ms after a FIN inside the ClientHello`);
    }

    // half a ClientHello, then silence: cut within the listener's bounds (handshake_timeout 2 s, for the hello and
    // for the handshake after it)
    for (const port of [ports[PROXIED], ports[MIXED]]) {
      const s = await wire(t, port, false);
      s.on('error', () => undefined);
      s.on('data', () => undefined);
      const started = Date.now();
      s.write(port === ports[PROXIED] ? Buffer.concat([header, hello.subarray(0, 40)]) : hello.subarray(0, 40));
      await once(s, 'close');
      const took = Date.now() - started;
      assert.ok(took >= 1500 && took < 8_000, `a silent client cut after ${took} ms`);
    }

    // the worker serves on
    const echo = await terminated(t, await wire(t, ports[MIXED], false), '/after');
    assert.equal(echo.url, '/after');
    assert.equal(web.requests.length, 1);
    const status = await adminStatus(portico);
    assert.equal(status.workers[0].pid, pid);
    assert.equal(status.workers[0].restarts, 0);
  });

  test(`${which}: a terminated WebSocket after a PROXY header or on the mixed port: its hop into uWebSockets.js on ${nodeTls ? 'the JS relay' : "the addon's TLS relay thread"}, the header's client in the access line`, { timeout: 60_000 }, async (t) => {
    if (!needPeek(t, nodeTls)) return;
    const web = await startHttpBackend(t, { name: 'web' });
    const pass = await startPassthroughBackend(t);
    const chat = await startChatBackend(t);
    const portico = await startPortico(t, config(web.port, pass.port, chat.port), { env });
    const fallback = (l: LogLine): boolean => l.msg === 'terminated WebSocket: the hop into uWebSockets.js stays in JavaScript on this listener';
    for (const [listener, header, client] of [[PROXIED, buildProxyV1(SOURCE, { address: '198.51.100.1', port: 443 }), SOURCE.address], [MIXED, undefined, '127.0.0.1']] as const) {
      // the header written on the TCP connection before ws's TLS starts on it
      const createConnection = (): tls.TLSSocket => {
        const raw = net.connect({ host: '127.0.0.1', port: portico.ports[listener] });
        if (header !== undefined) raw.write(header);
        return tls.connect({ socket: raw, servername: 'localhost', ca: testCaCert() });
      };
      const ws = await openWebSocket(t, `wss://localhost:${portico.ports[listener]}/wss`, { createConnection });
      assert.equal(await echo(ws, `listener ${listener}`), `listener ${listener}`);
      assert.equal(chat.upgrades.at(-1)?.['x-real-ip'], client);
      ws.close(4002, 'bye');
      const line = await portico.waitForLog((l) => l.msg === 'websocket' && l.mode === 'terminate' && l.closedBy === 'client' && l.remoteAddr === client);
      assert.equal(line.hop, nodeTls ? 'js' : 'tls-relay', `listener ${listener}`);
    }
    assert.equal(await nativeHandshakes(portico), nodeTls ? 0 : 2);
    if (!nodeTls) assert.equal(portico.logs.find(fallback), undefined, 'no fallback said');
  });
}
