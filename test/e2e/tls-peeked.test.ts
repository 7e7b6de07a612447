// A TLS listener that reads something before the handshake — the ClientHello's name, to pass some names through
// (one port for HTTPS, WSS and TLS passthrough), or a PROXY header from a balancer in front — terminates the other
// connections on the addon's TLS all the same: the connection is peeked (nothing consumed), and once routed it
// gives up only its PROXY header and the addon's handshake reads the ClientHello from the kernel again
// (NativeSocket.rewind). Each case runs on the default path and with PORTICO_NATIVE_TLS=0 (Node's TLS, which
// replays what JavaScript read: the oracle of the answers); portico_tls_native_handshakes_total tells them apart.
// Clients write their bytes whole or dribbled in 7-byte pieces (the PROXY header and the ClientHello in many reads);
// hostile ones (not TLS after the header, a FIN or silence inside the hello) are closed and never cost the worker.
// A terminated WebSocket on such a listener hops into uWebSockets.js on the addon's TLS relay thread.
// On the mixed port (names passed through, no PROXY header) the addon decides most connections at accept: a whole
// ClientHello already queued that names nothing passed through (or no name, or an IP literal) is terminated at once,
// with no peek and no preface in JavaScript; /status workers[].helloAtAccept counts those (`terminated`) and the rest
// (`peeked`: a name passed through, a dribbled hello, a malformed one), which go the peek path above. Those cases run
// on the addon, with PORTICO_NATIVE_TLS=0 and with PORTICO_NATIVE_IO=0 (Node's sockets: nothing decided at accept).
import { spawn } from 'node:child_process';
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
import { adminMetric, adminStatus, adminUrl } from '../helpers/admin.js';
import { startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { curl, echo, hasCurl, openWebSocket, parseCurlOutput, request } from '../helpers/clients.js';
import { needNativeTls } from '../helpers/native-tls.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { TEST_CERT, TEST_KEY, reloadPortico, startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import { startChatBackend } from '../helpers/chat-backend.js';
import { until } from '../helpers/until.js';
import { ResponseReader, closedWithoutReply, testCaCert } from '../helpers/wire.js';
import { passThrough, startPassthroughBackend, type PassthroughBackend } from '../helpers/passthrough-backend.js';

/** The listeners, in order: names passed through; a PROXY header first; both. */
const MIXED = 0;
const PROXIED = 1;
const PROXIED_MIXED = 2;

const SOURCE = { address: '203.0.113.7', port: 4000 };
const SOURCE6 = { address: '2001:db8::7', port: 5000 };

const nativeHandshakes = (p: Portico): Promise<number> => adminMetric(p, 'portico_tls_native_handshakes_total');
const handshakeErrors = (p: Portico): Promise<number> => adminMetric(p, 'portico_tls_handshake_errors_total');

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
  // the answer is in: the close_notify that end() writes may be cancelled by the server's close (write ECANCELED
  // from the stream under the TLS socket), which is not the test's business either
  s.on('error', () => {});
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

/** The mixed port alone (names passed through beside the certificates, no PROXY header), with a WebSocket route. */
function mixedConfig(webPort: number, passPort: number, chatPort: number, names: readonly string[]): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [{ address: '127.0.0.1:0', tls: { certificates: [{ cert: TEST_CERT, key: TEST_KEY }], passthrough: names.map((sni) => ({ sni, upstream: 'tls-backend' })), handshake_timeout: '2s' } }],
    upstreams: { web: { targets: [`127.0.0.1:${webPort}`] }, 'tls-backend': { targets: [`127.0.0.1:${passPort}`] }, chat: { targets: [`127.0.0.1:${chatPort}`] } },
    routes: [{ match: { path: '/ws' }, proxy: 'chat' }, { proxy: 'web' }],
  };
}

/** /status's count of the addon's decisions at accept on the mixed port (zeros where it decides nothing). */
async function atAccept(portico: Portico): Promise<{ terminated: number; peeked: number }> {
  return (await adminStatus(portico)).workers[0].helloAtAccept ?? { terminated: 0, peeked: 0 };
}

async function refused(portico: Portico, reason: string): Promise<number> {
  const res = await request(`${adminUrl(portico)}/metrics`);
  const m = new RegExp(`^portico_connections_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(res.body.toString());
  return m === null ? 0 : Number(m[1]);
}

/** TLS for `servername` through Portico to the passthrough backend (its own certificate, whatever the name). */
async function passedThroughAs(t: TestContext, port: number, backend: PassthroughBackend, servername: string): Promise<void> {
  const s = tls.connect({ host: '127.0.0.1', port, servername, ca: backend.cert, checkServerIdentity: () => undefined });
  t.after(() => s.destroy());
  await once(s, 'secureConnect');
  assert.equal(s.getPeerX509Certificate()?.fingerprint256, new X509Certificate(backend.cert).fingerprint256, servername);
  const reply: Buffer[] = [];
  s.on('data', (d: Buffer) => reply.push(d));
  s.write('hello');
  await once(s, 'end');
  assert.equal(Buffer.concat(reply).toString(), 'backend:hello');
}

/** `openssl s_client` without a server name (no SNI at all) for `version`: the answer's status line and body. */
function openSslNoSni(port: number, version: '-tls1_2' | '-tls1_3', path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-noservername', version, '-CAfile', TEST_CERT, '-quiet', '-ign_eof'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', () => undefined);
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('error', reject);
    p.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(out).toString('latin1'));
    });
    p.stdin.end(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
  });
}

const AT_ACCEPT_RUNS = [
  { which: 'the addon', env: {} as Record<string, string>, decides: true },
  { which: "Node's TLS (PORTICO_NATIVE_TLS=0)", env: { PORTICO_NATIVE_TLS: '0' }, decides: false },
  { which: "Node's sockets (PORTICO_NATIVE_IO=0)", env: { PORTICO_NATIVE_IO: '0' }, decides: false },
];

for (const { which, env, decides } of AT_ACCEPT_RUNS) {
  test(`${which}: on the mixed port a whole ClientHello naming nothing passed through is ${decides ? 'terminated on the decision at accept' : 'terminated'} (TLS 1.3 and 1.2, curl, no SNI, an IP literal, WSS); pass.test, a dribbled hello and a malformed one go the peek path`, { timeout: 90_000 }, async (t) => {
    if (!needPeek(t, !decides) || !needPeer(t, 'curl', hasCurl()) || !needPeer(t, 'openssl', hasOpenSsl())) return;
    const web = await startHttpBackend(t, { name: 'web' });
    const pass = await startPassthroughBackend(t);
    const chat = await startChatBackend(t);
    const portico = await startPortico(t, mixedConfig(web.port, pass.port, chat.port, ['pass.test']), { env });
    const port = portico.ports[0];
    let terminatedAtAccept = 0;

    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      assert.equal((await terminated(t, await wire(t, port, false), `/whole?v=${version}`, version)).headers['x-forwarded-for'], '127.0.0.1');
      terminatedAtAccept++;
    }
    for (const [flags, v] of [[['--tlsv1.3'], '1.3'], [['--tlsv1.2', '--tls-max', '1.2'], '1.2']] as const) {
      const res = parseCurlOutput((await curl(`https://localhost:${port}/curl?v=${v}`, [...flags])).stdout);
      assert.equal(res.status, 200, `curl TLS ${v}`);
      assert.equal((JSON.parse(res.body) as EchoReply).url, `/curl?v=${v}`);
      terminatedAtAccept++;
    }
    for (const version of ['-tls1_3', '-tls1_2'] as const) {
      const answer = await openSslNoSni(port, version, `/no-sni${version}`);
      assert.match(answer, /^HTTP\/1\.1 200 /, `openssl ${version} -noservername`);
      assert.ok(answer.includes(`"/no-sni${version}"`), answer);
      terminatedAtAccept++;
    }
    assert.equal((await terminated(t, await wire(t, port, false), '/ip-literal', 'TLSv1.3', '127.0.0.1')).url, '/ip-literal');
    terminatedAtAccept++;
    const ws = await openWebSocket(t, `wss://localhost:${port}/ws`);
    assert.equal(await echo(ws, 'through the mixed port'), 'through the mixed port');
    ws.close();
    terminatedAtAccept++;
    const after = await atAccept(portico);
    assert.deepEqual(after, decides ? { terminated: terminatedAtAccept, peeked: 0 } : { terminated: 0, peeked: 0 }, 'decided at accept, nothing peeked');

    // the peek path, as before: a name passed through, a hello in 7-byte segments, a malformed hello (refused)
    await passThrough(t, await wire(t, port, false), pass);
    assert.equal((await terminated(t, await wire(t, port, true), '/dribbled')).url, '/dribbled');
    const hello = await captureNodeHello({ servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    hello[9] = 0x02; // legacy_version major 2: whole, but not a ClientHello (RFC 8446 §4.1.2)
    const refusedBefore = await refused(portico, 'client_hello_invalid');
    const bad = await wire(t, port, false);
    bad.write(hello);
    await closedWithoutReply(bad as net.Socket);
    await until('the malformed hello refused', () => refused(portico, 'client_hello_invalid'), (n) => n === refusedBefore + 1);
    assert.deepEqual(await atAccept(portico), decides ? { terminated: terminatedAtAccept, peeked: 3 } : { terminated: 0, peeked: 0 });

    assert.equal(web.requests.length, terminatedAtAccept);
    assert.equal(chat.upgrades.length, 1);
    assert.equal(await nativeHandshakes(portico), which === 'the addon' ? terminatedAtAccept + 1 : 0, 'terminated on the addon, the dribbled one too');
    assert.equal(await handshakeErrors(portico), 0);
  });

  test(`${which}: a reload that moves a name between passthrough and termination applies to the next connections on the mixed port`, { timeout: 90_000 }, async (t) => {
    if (!needPeek(t, !decides)) return;
    const web = await startHttpBackend(t, { name: 'web' });
    const pass = await startPassthroughBackend(t);
    const chat = await startChatBackend(t);
    const portico = await startPortico(t, mixedConfig(web.port, pass.port, chat.port, ['pass.test']), { env });
    const port = portico.ports[0];

    await passedThroughAs(t, port, pass, 'pass.test');
    assert.equal((await terminated(t, await wire(t, port, false), '/other-before', 'TLSv1.3', 'other.test')).url, '/other-before');
    assert.deepEqual(await atAccept(portico), decides ? { terminated: 1, peeked: 1 } : { terminated: 0, peeked: 0 });

    const r = await reloadPortico(portico, mixedConfig(web.port, pass.port, chat.port, ['*.other.test', 'other.test']));
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await terminated(t, await wire(t, port, false), '/pass-after', 'TLSv1.3', 'pass.test')).url, '/pass-after');
    await passedThroughAs(t, port, pass, 'other.test');
    await passedThroughAs(t, port, pass, 'deep.sub.other.test');
    assert.deepEqual(await atAccept(portico), decides ? { terminated: 2, peeked: 3 } : { terminated: 0, peeked: 0 });
    assert.equal(web.requests.length, 2);
  });
}

function hasOpenSsl(): boolean {
  return hasCommand('openssl', ['version']);
}
