// L4 routes and PROXY protocol through the real `portico start`: a tcp listener relays raw bytes (half-close,
// 8 MiB checked by sha256, splice and PORTICO_NATIVE=0), one TLS port passes one SNI name through untouched to
// a TLS backend while terminating another, plaintext on a TLS port is closed, PROXY v1/v2 from trusted senders
// feed X-Forwarded-For / X-Real-IP, untrusted senders are refused, and send_proxy_protocol reaches the backend.
// A reload turns kept listening sockets into other kinds (terminating TLS <-> passthrough only, http <-> tcp). A
// half-closed connection whose other side goes silent is closed after tunnel.half_closed_timeout, on every L4 path.
import assert from 'node:assert/strict';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import tls from 'node:tls';
import { buildProxyV1, buildProxyV2, parseProxyHeader, type ProxyHeader } from '../../src/wire/proxy-protocol.js';
import { nativeStatus } from '../../src/tunnel/splice.js';
import { native } from '../../src/native/addon.js';
import { adminStatus, statusUntil } from '../helpers/admin.js';
import { fdCount } from '../helpers/proc-stats.js';
import { until } from '../helpers/until.js';
import { startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { TEST_CERT, TEST_KEY, reloadPortico, startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { ResponseReader, closedWithoutReply, testCaCert, writesRefused } from '../helpers/wire.js';
import { passThrough, startPassthroughBackend } from '../helpers/passthrough-backend.js';

const MiB = 1024 * 1024;

async function listen(t: TestContext, server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

/** Echoes every byte and ends its side only after the client's FIN: a half-close that is lost hangs the test. */
async function startEcho(t: TestContext): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  return listen(t, server);
}

/** Sends `payload`, half-closes, and resolves with the sha256 of everything echoed until the server's FIN. */
function echoThrough(port: number, payload: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const hash = createHash('sha256');
    let bytes = 0;
    c.on('error', reject);
    c.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    c.on('end', () => {
      c.end();
      if (bytes !== payload.length) reject(new Error(`echoed ${bytes} of ${payload.length} bytes`));
      else resolve(hash.digest('hex'));
    });
    c.end(payload);
  });
}


function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

for (const nativeOff of [false, true]) {
  const label = nativeOff ? 'PORTICO_NATIVE=0 (JS relay)' : 'default relay';
  test(`tcp listener relays 8 MiB both ways with half-close, one log line at close: ${label}`, { timeout: 60_000 }, async (t) => {
    const echoPort = await startEcho(t);
    const portico = await startPortico(
      t,
      { workers: 1, listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }], upstreams: { echo: { targets: [`127.0.0.1:${echoPort}`] } } },
      nativeOff ? { env: { PORTICO_NATIVE: '0' } } : {},
    );
    const payload = randomBytes(8 * MiB);
    assert.equal(await echoThrough(portico.ports[0], payload), sha256(payload));
    const line = await portico.waitForLog((l) => l.msg === 'tcp');
    assert.equal(line.mode, 'tcp');
    assert.equal(line.bytesIn, payload.length);
    assert.equal(line.bytesOut, payload.length);
    assert.ok(line.closedBy === 'client' || line.closedBy === 'upstream', `closedBy ${String(line.closedBy)}`);
    assert.equal(line.target, `127.0.0.1:${echoPort}`);
    if (nativeOff) assert.equal(line.relay, 'js');
    else assert.equal(line.relay, nativeStatus().native ? 'splice' : 'js', 'splice exactly when the addon is in use');
  });

  test(`tcp listener: the backend half-closes first (its answer, then FIN) and still gets what the client sends after: ${label}`, { timeout: 30_000 }, async (t) => {
    // an upstream connection ends its own side at its peer's FIN unless the relay keeps it open (allowHalfOpen):
    // the client's bytes after the backend's FIN were lost on the JS relay before
    let heard!: (b: string) => void;
    const received = new Promise<string>((r) => (heard = r));
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => s.destroy());
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.on('end', () => {
        heard(Buffer.concat(got).toString());
        s.destroy();
      });
      s.end('greeting, then my FIN');
    });
    const backendPort = await listen(t, server);
    const portico = await startPortico(
      t,
      { workers: 1, listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'first' }], upstreams: { first: { targets: [`127.0.0.1:${backendPort}`] } } },
      nativeOff ? { env: { PORTICO_NATIVE: '0' } } : {},
    );
    const c = net.connect({ host: '127.0.0.1', port: portico.ports[0], allowHalfOpen: true });
    t.after(() => c.destroy());
    const reply: Buffer[] = [];
    c.on('data', (d: Buffer) => reply.push(d));
    await once(c, 'end');
    assert.equal(Buffer.concat(reply).toString(), 'greeting, then my FIN');
    c.end('the answer after your FIN');
    assert.equal(await received, 'the answer after your FIN');
    const line = await portico.waitForLog((l) => l.msg === 'tcp');
    assert.equal(line.bytesIn, 'the answer after your FIN'.length);
    if (nativeOff) assert.equal(line.relay, 'js');
  });
}

/** A tcp listener to `backendPort` with tunnel.half_closed_timeout 1s, on the path `env` picks. */
function startHalfClosedL4(t: TestContext, backendPort: number, env: Record<string, string>, extra: Pick<ConfigInput, 'admin' | 'log'> = {}): Promise<Portico> {
  return startPortico(
    t,
    {
      workers: 1,
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'silent' }],
      upstreams: { silent: { targets: [`127.0.0.1:${backendPort}`] } },
      tunnel: { half_closed_timeout: '1s' },
      ...extra,
    },
    { env },
  );
}

// The client sends its request, stays silent for 1.3 s, then half-closes (a bare FIN: it counts as activity, so no
// close at once); the backend answers with a tick every 300 ms for 1.5 s (longer than the 1 s bound: bytes flowing
// the open way keep the connection), then goes silent without ever ending its side.
for (const [label, env] of [
  ['the addon', {}],
  ['the JS path with splice (PORTICO_NATIVE_L4=0)', { PORTICO_NATIVE_L4: '0' }],
  ['the JS relay (PORTICO_NATIVE=0)', { PORTICO_NATIVE: '0' }],
] as const) {
  test(`tcp listener: a half-closed connection silent for tunnel.half_closed_timeout is closed, not before: ${label}`, { timeout: 30_000 }, async (t) => {
    const TICKS = 5;
    let accepted!: (s: net.Socket) => void;
    const backendSocket = new Promise<net.Socket>((r) => (accepted = r));
    let heard = '';
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      accepted(s);
      s.on('error', () => {});
      s.on('data', (d: Buffer) => (heard += d.toString()));
      s.on('end', () => {
        let n = 0;
        const timer = setInterval(() => {
          if (s.destroyed || ++n > TICKS) clearInterval(timer);
          else s.write(`tick${n};`);
        }, 300);
      });
    });
    const portico = await startHalfClosedL4(t, await listen(t, server), env);
    const c = net.connect({ host: '127.0.0.1', port: portico.ports[0], allowHalfOpen: true });
    t.after(() => c.destroy());
    c.on('error', () => {});
    let got = '';
    let lastTickAt = 0;
    c.on('data', (d: Buffer) => {
      got += d.toString();
      lastTickAt = Date.now();
    });
    await once(c, 'connect');
    c.write('request');
    await new Promise((r) => setTimeout(r, 1300));
    c.end();
    await once(c, 'close');
    assert.equal(got, Array.from({ length: TICKS }, (_, i) => `tick${i + 1};`).join(''), 'every tick after the FIN arrived');
    const silence = Date.now() - lastTickAt;
    assert.ok(silence >= 900, `closed ${silence} ms after the last tick: not before the silence bound`);
    assert.equal(heard, 'request');
    assert.equal(await writesRefused(await backendSocket, 'too late'), true, "Portico's side toward the backend is closed: its writes are refused");
    const line = await portico.waitForLog((l) => l.msg === 'tcp');
    assert.equal(line.closedBy, 'half_closed_timeout');
    assert.equal(line.bytesOut, got.length);
  });
}

// A flood of half-closed connections against a backend that never ends its side (a server that ignores EOF, at 10x the
// usual count): every one is closed at the bound, none before it, and the worker holds no fd of them afterwards.
for (const [label, env] of [
  ['the addon', {}],
  ['the JS relay (PORTICO_NATIVE=0)', { PORTICO_NATIVE: '0' }],
] as const) {
  test(`tcp listener: 1,000 connections half-closed at once against a silent backend all close after tunnel.half_closed_timeout; worker fds back to the baseline: ${label}`, { timeout: 120_000 }, async (t) => {
    native()?.raiseFdLimit();
    const N = 1000;
    const held: net.Socket[] = [];
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      held.push(s);
      s.on('error', () => {});
      s.resume();
    });
    t.after(() => {
      for (const s of held) s.destroy();
    });
    const portico = await startHalfClosedL4(t, await listen(t, server), env, { admin: { address: '127.0.0.1:0' }, log: { access: false } });
    const pid = (await adminStatus(portico)).workers[0].pid!;
    const open = (): Promise<net.Socket> =>
      new Promise((resolve, reject) => {
        const c = net.connect({ host: '127.0.0.1', port: portico.ports[0], allowHalfOpen: true }, () => resolve(c));
        c.once('error', reject);
      });
    // one connection first (threads, epoll sets and pipes exist from here on), ended the same way: the baseline after it
    const warm = await open();
    warm.end('warm');
    await once(warm, 'close');
    await statusUntil(portico, 'the warm-up connection gone', (s) => s.workers[0].tunnels === 0, 10_000);
    const baseFds = fdCount(pid);
    const clients: net.Socket[] = [];
    t.after(() => {
      for (const c of clients) c.destroy();
    });
    for (let i = 0; i < N; i += 200) clients.push(...(await Promise.all(Array.from({ length: Math.min(200, N - i) }, open))));
    await statusUntil(portico, `${N} connections relayed`, (s) => s.workers[0].tunnels === N, 30_000, 100);
    for (const c of clients) {
      c.on('error', () => {});
      c.resume();
    }
    const finAt = Date.now();
    for (const c of clients) c.end('x');
    await until(`${N} half-closed connections closed`, () => clients.filter((c) => c.destroyed).length, (n) => n === N, 15_000, 100);
    const waited = Date.now() - finAt;
    assert.ok(waited >= 900, `all closed ${waited} ms after the FINs: not before the bound`);
    t.diagnostic(`${N} half-closed connections closed within ${waited} ms of their FINs`);
    assert.equal(held.length, N + 1, 'each reached the backend once');
    await statusUntil(portico, 'no connection left in the worker', (s) => s.workers[0].tunnels === 0 && s.workers[0].connections === 0, 10_000, 100);
    await until('worker fds back to the baseline', () => fdCount(pid), (fds) => fds <= baseFds + 4, 10_000, 100);
  });
}

test('tcp listener: a protocol where the server speaks first (a greeting before any client byte) is relayed at once', { timeout: 30_000 }, async (t) => {
  // MySQL, SMTP, SSH, FTP... greet first: a relay that waited for the client's first byte would hang until a timeout
  const server = net.createServer((s) => {
    s.on('error', () => s.destroy());
    s.write('220 greeting\r\n');
    s.once('data', (d: Buffer) => s.end(`echo:${d.toString()}`));
  });
  const backendPort = await listen(t, server);
  const portico = await startPortico(t, { workers: 1, listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'greeter' }], upstreams: { greeter: { targets: [`127.0.0.1:${backendPort}`] } } });
  const c = net.connect({ host: '127.0.0.1', port: portico.ports[0] });
  t.after(() => c.destroy());
  const [greeting] = (await once(c, 'data')) as [Buffer];
  assert.equal(greeting.toString(), '220 greeting\r\n');
  const reply: Buffer[] = [];
  c.on('data', (d: Buffer) => reply.push(d));
  c.write('HELO');
  await once(c, 'end');
  assert.equal(Buffer.concat(reply).toString(), 'echo:HELO');
});

test('one TLS port: a passthrough name reaches the TLS backend (its certificate), another is terminated and routed as HTTP; plaintext is closed', { timeout: 60_000 }, async (t) => {
  const backend = await startPassthroughBackend(t);
  const web = await startHttpBackend(t, { name: 'web' });
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0', tls: { certificates: [{ cert: TEST_CERT, key: TEST_KEY }], passthrough: [{ sni: 'pass.test', upstream: 'tls-backend' }] } }],
    upstreams: { 'tls-backend': { targets: [`127.0.0.1:${backend.port}`] }, web: { targets: [`127.0.0.1:${web.port}`] } },
    routes: [{ proxy: 'web' }],
  });
  const port = portico.tlsPort;

  await passThrough(t, port, backend);
  const line = await portico.waitForLog((l) => l.msg === 'passthrough');
  assert.equal(line.sni, 'pass.test');
  assert.equal(line.upstream, 'tls-backend');

  // terminated on the same port: Portico's own certificate, routed as HTTP to the web backend
  const term = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: testCaCert(), ALPNProtocols: ['http/1.1'] });
  t.after(() => term.destroy());
  await once(term, 'secureConnect');
  assert.equal(term.getPeerX509Certificate()?.fingerprint256, new X509Certificate(testCaCert()).fingerprint256);
  const reader = new ResponseReader(term);
  term.write('GET /terminated HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const res = await reader.next();
  assert.equal(res.status, 200);
  assert.equal((JSON.parse(res.body.toString()) as EchoReply).url, '/terminated');
  assert.equal(web.requests.length, 1);

  // plaintext HTTP on the TLS port: closed without a byte
  const plain = net.connect({ host: '127.0.0.1', port });
  t.after(() => plain.destroy());
  await once(plain, 'connect');
  const closed = closedWithoutReply(plain);
  plain.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
  await closed;
  assert.equal(web.requests.length, 1);
});

/** Connects from `localAddress`, sends `preface` first; resolves with the raw socket once connected. */
async function connectWith(port: number, preface: Buffer, localAddress = '127.0.0.1'): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  await once(s, 'connect');
  s.write(preface);
  return s;
}

test('PROXY v1 (plain) and v2 (TLS) from a trusted sender set X-Forwarded-For and X-Real-IP; untrusted, missing or malformed headers are closed', { timeout: 60_000 }, async (t) => {
  const web = await startHttpBackend(t, { name: 'web' });
  const trusted = { trusted: ['127.0.0.1/32'] };
  const portico = await startPortico(t, {
    workers: 1,
    log: { level: 'debug' },
    listeners: [
      { address: '127.0.0.1:0', proxy_protocol: trusted },
      { address: '127.0.0.1:0', proxy_protocol: trusted, tls: { certificates: [{ cert: TEST_CERT, key: TEST_KEY }] } },
    ],
    upstreams: { web: { targets: [`127.0.0.1:${web.port}`] } },
    routes: [{ proxy: 'web' }],
  });
  const [plainPort, tlsPort] = portico.ports;

  // v1 on a plain listener, header and request in one write
  const v1 = await connectWith(plainPort, Buffer.concat([buildProxyV1({ address: '203.0.113.7', port: 4000 }, { address: '198.51.100.1', port: 80 }), Buffer.from('GET /v1 HTTP/1.1\r\nHost: a\r\n\r\n')]));
  t.after(() => v1.destroy());
  const r1 = await new ResponseReader(v1).next();
  assert.equal(r1.status, 200);
  const e1 = JSON.parse(r1.body.toString()) as EchoReply;
  assert.equal(e1.headers['x-forwarded-for'], '203.0.113.7');
  assert.equal(e1.headers['x-real-ip'], '203.0.113.7');

  // v2 before the ClientHello on a TLS listener
  const raw = await connectWith(tlsPort, buildProxyV2({ address: '2001:db8::7', port: 5000 }, { address: '2001:db8::1', port: 443 }));
  const v2 = tls.connect({ socket: raw, servername: 'localhost', ca: testCaCert(), ALPNProtocols: ['http/1.1'] });
  t.after(() => v2.destroy());
  await once(v2, 'secureConnect');
  const reader2 = new ResponseReader(v2);
  v2.write('GET /v2 HTTP/1.1\r\nHost: a\r\n\r\n');
  const r2 = await reader2.next();
  assert.equal(r2.status, 200);
  const e2 = JSON.parse(r2.body.toString()) as EchoReply;
  assert.equal(e2.headers['x-forwarded-for'], '2001:db8::7');
  assert.equal(e2.headers['x-real-ip'], '2001:db8::7');
  assert.equal(web.requests.length, 2);

  // 127.0.0.2 is a loopback address outside the trusted /32: closed at once, whatever it sends
  const untrusted = await connectWith(plainPort, buildProxyV1({ address: '203.0.113.9', port: 1 }, { address: '198.51.100.1', port: 80 }), '127.0.0.2');
  await closedWithoutReply(untrusted);
  await portico.waitForLog((l: LogLine) => l.msg === 'connection refused before routing' && l.reason === 'untrusted');

  // a trusted sender without a header, or with a malformed one
  const missing = await connectWith(plainPort, Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n'));
  await closedWithoutReply(missing);
  const malformed = await connectWith(plainPort, Buffer.from('PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\nGET / HTTP/1.1\r\n\r\n'));
  await closedWithoutReply(malformed);
  assert.equal(web.requests.length, 2);
});

test('send_proxy_protocol v2: the backend parses a header naming the client and the listener before any relayed byte; an inbound PROXY source is passed on', { timeout: 60_000 }, async (t) => {
  const seen: Array<(h: { header: ProxyHeader; after: string }) => void> = [];
  const next = (): Promise<{ header: ProxyHeader; after: string }> => new Promise((resolve) => seen.push(resolve));
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => s.destroy());
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const r = parseProxyHeader(buf);
      if (r.kind === 'done' && buf.length >= r.used + 4) {
        seen.shift()?.({ header: r.header, after: buf.subarray(r.used).toString() });
        s.end('ok');
      }
    });
  });
  const backendPort = await listen(t, server);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [
      { address: '127.0.0.1:0', mode: 'tcp', upstream: 'pp' },
      { address: '127.0.0.1:0', mode: 'tcp', upstream: 'pp', proxy_protocol: { trusted: ['127.0.0.0/8'] } },
    ],
    upstreams: { pp: { targets: [`127.0.0.1:${backendPort}`], send_proxy_protocol: 'v2' } },
  });

  const direct = next();
  const c = net.connect({ host: '127.0.0.1', port: portico.ports[0] });
  t.after(() => c.destroy());
  await once(c, 'connect');
  c.write('ping');
  const { header, after } = await direct;
  assert.equal(header.version, 2);
  assert.equal(header.command, 'proxy');
  assert.equal(header.family, 'tcp4');
  assert.deepEqual(header.source, { address: '127.0.0.1', port: c.localPort });
  assert.deepEqual(header.destination, { address: '127.0.0.1', port: portico.ports[0] });
  assert.equal(after, 'ping');

  const relayed = next();
  const p = await connectWith(portico.ports[1], Buffer.concat([buildProxyV1({ address: '203.0.113.7', port: 4000 }, { address: '198.51.100.1', port: 5432 }), Buffer.from('pong')]));
  t.after(() => p.destroy());
  const second = await relayed;
  assert.deepEqual(second.header.source, { address: '203.0.113.7', port: 4000 });
  assert.deepEqual(second.header.destination, { address: '198.51.100.1', port: 5432 });
  assert.equal(second.after, 'pong');
});

/** Resolves with the error code a TLS client gets from `port` for `servername` (none: no SNI is sent). */
function tlsRefusal(t: TestContext, port: number, servername: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    // a client given an IP address as host sends no SNI unless told a servername
    const c = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername === undefined ? {} : { servername }) });
    t.after(() => c.destroy());
    c.on('secureConnect', () => reject(new Error(`handshake completed for ${servername ?? '(no SNI)'}`)));
    c.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

test('a TLS listener without certificates passes its names through; another name gets unrecognized_name, no SNI gets missing_extension; both counted and logged', { timeout: 60_000 }, async (t) => {
  const backend = await startPassthroughBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: 'pass.test', upstream: 'tls-backend' }] } }],
    upstreams: { 'tls-backend': { targets: [`127.0.0.1:${backend.port}`] } },
  });
  const port = portico.ports[0];

  await passThrough(t, port, backend);

  // RFC 6066 §3 and RFC 8446 §9.2: the client's TLS stack names the reason instead of an unexplained EOF
  assert.equal(await tlsRefusal(t, port, 'other.test'), 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME');
  assert.equal(await tlsRefusal(t, port, undefined), 'ERR_SSL_TLSV13_ALERT_MISSING_EXTENSION');
  // an IP literal as the name (RFC 6066 forbids it; wrk sends one) names no host: as without SNI
  assert.equal(await tlsRefusal(t, port, '127.0.0.1'), 'ERR_SSL_TLSV13_ALERT_MISSING_EXTENSION');
  const refused = (sni: string | undefined) => (l: LogLine) => l.msg === 'no passthrough for this TLS name: alert sent, closed' && l.sni === sni && l.closedBy === 'refused';
  await portico.waitForLog(refused('other.test'));
  await portico.waitForLog(refused(undefined));

  const listening = await portico.waitForLog((l) => l.msg === 'listening');
  const admin = (listening.admin as { port: number }).port;
  const metrics = (await request(`http://127.0.0.1:${admin}/metrics`)).body.toString();
  assert.match(metrics, /^portico_connections_refused_total\{reason="sni_unknown"\} 1$/m);
  assert.match(metrics, /^portico_connections_refused_total\{reason="sni_missing"\} 2$/m);
});

/** A server that speaks first, then answers `echo:<data>` and closes (a tcp listener must relay at accept). */
async function startGreeter(t: TestContext): Promise<number> {
  const server = net.createServer((s) => {
    s.on('error', () => s.destroy());
    s.write('220 greeting\r\n');
    s.once('data', (d: Buffer) => s.end(`echo:${d.toString()}`));
  });
  return listen(t, server);
}

/** The greeting, then the reply to HELO, through `port`. */
async function greetThrough(t: TestContext, port: number): Promise<string> {
  const c = net.connect({ host: '127.0.0.1', port });
  t.after(() => c.destroy());
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => {
    got.push(d);
    if (got.length === 1) c.write('HELO');
  });
  await once(c, 'end');
  return Buffer.concat(got).toString();
}

test('a reload turns kept listening sockets into other kinds: terminating TLS <-> passthrough only, http <-> a server-first tcp listener', { timeout: 90_000 }, async (t) => {
  const backend = await startPassthroughBackend(t);
  const web = await startHttpBackend(t, { name: 'web' });
  const greeter = await startGreeter(t);
  const passthrough = [{ sni: 'pass.test', upstream: 'tls-backend' }];
  const upstreams = { 'tls-backend': { targets: [`127.0.0.1:${backend.port}`] }, web: { targets: [`127.0.0.1:${web.port}`] }, greeter: { targets: [`127.0.0.1:${greeter}`] } };
  const terminating = {
    workers: 2,
    listeners: [{ address: '127.0.0.1:0', tls: { certificates: [{ cert: TEST_CERT, key: TEST_KEY }], passthrough } }, { address: '127.0.0.1:0' }],
    upstreams,
    routes: [{ proxy: 'web' }],
  };
  const passing = {
    workers: 2,
    listeners: [{ address: '127.0.0.1:0', tls: { passthrough } }, { address: '127.0.0.1:0', mode: 'tcp' as const, upstream: 'greeter' }],
    upstreams,
    routes: [{ match: { host: 'never.test' }, proxy: 'web' }],
  };
  const portico = await startPortico(t, terminating);
  const [tlsPort, plainPort] = portico.ports;
  // several connections each time: with 2 workers, either may accept
  const served = async (): Promise<void> => {
    for (let i = 0; i < 4; i++) {
      await passThrough(t, tlsPort, backend);
      assert.equal((await request(`https://127.0.0.1:${tlsPort}/`)).status, 200, 'TLS terminated and routed');
      assert.equal((await request(`http://127.0.0.1:${plainPort}/`)).status, 200, 'plain HTTP routed');
    }
  };
  await served();

  let r = await reloadPortico(portico, passing);
  assert.equal(r.code, 0, r.stderr);
  for (let i = 0; i < 4; i++) {
    await passThrough(t, tlsPort, backend);
    assert.equal(await tlsRefusal(t, tlsPort, 'localhost'), 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME', 'no certificate left to terminate with');
    assert.equal(await greetThrough(t, plainPort), '220 greeting\r\necho:HELO', 'the kept socket relays at accept');
  }

  r = await reloadPortico(portico, terminating);
  assert.equal(r.code, 0, r.stderr);
  await served();
});
