// L4 listeners with proxy_protocol (behind a balancer that sends a PROXY header) through the real `portico start`, on
// the addon (src/native/l4.cc, proxy-header.h) and on the JS path (PORTICO_NATIVE_L4=0: preface.ts, l4.ts), with the
// same assertions: v1 and v2 headers (TCP4, TCP6, LOCAL, UNKNOWN) from a trusted sender reach a send_proxy_protocol
// target as the original client, with the bytes after the header behind it, and the access line names that client;
// a header in pieces; refusals counted with their reasons (an untrusted sender, no header, malformed ones, one past
// its bound, one cut by the client's FIN, a silent sender's timeout); TLS passthrough behind a PROXY header; a reload
// that adds proxy_protocol to a listener and one that removes it.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { buildProxyV1, buildProxyV2, buildProxyV2Local, parseProxyHeader, type ProxyHeader } from '../../src/wire/proxy-protocol.js';
import { adminStatus, adminUrl } from '../helpers/admin.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { request } from '../helpers/clients.js';
import { needNativeL4 } from '../helpers/native-io.js';
import { nativeIoAvailable } from '../../src/native/io.js';
import { reloadPortico, startPortico, type LogLine, type Portico } from '../helpers/portico.js';

const SERVED_BY_ADDON = 'L4 listener served by the addon (accept, connect, splice)';

async function listen(t: TestContext, server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

/** What a PROXY-reading target got on one connection: the header, then `bytes` of what followed it. */
interface Arrival {
  header: ProxyHeader;
  after: Buffer;
}

/**
 * A target behind send_proxy_protocol: reads the header, waits for `bytes` more, reports them and answers "ok".
 * `arrivals` yields one per connection, in order; `connections` counts every connection it ever got.
 */
async function startProxyTarget(t: TestContext, bytes: number): Promise<{ port: number; next: () => Promise<Arrival>; connections: () => number }> {
  const queue: Arrival[] = [];
  const waiting: Array<(a: Arrival) => void> = [];
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    let buf = Buffer.alloc(0);
    let done = false;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const r = parseProxyHeader(buf);
      if (done || r.kind !== 'done' || buf.length < r.used + bytes) return;
      done = true;
      const a = { header: r.header, after: buf.subarray(r.used) };
      const w = waiting.shift();
      if (w !== undefined) w(a);
      else queue.push(a);
      s.end('ok');
    });
  });
  t.after(() => {
    for (const s of sockets) s.destroy();
  });
  const port = await listen(t, server);
  const next = (): Promise<Arrival> => {
    const a = queue.shift();
    return a !== undefined ? Promise.resolve(a) : new Promise((resolve) => waiting.push(resolve));
  };
  return { port, next, connections: () => connections };
}

async function connect(t: TestContext, port: number, localAddress?: string): Promise<net.Socket> {
  const c = net.connect({ host: '127.0.0.1', port, localAddress });
  t.after(() => c.destroy());
  c.on('error', () => {});
  await once(c, 'connect');
  return c;
}

/** Writes `buf` in the pieces `cuts` makes of it, each handed to the kernel before the next. */
async function writeInPieces(c: net.Socket, buf: Buffer, cuts: readonly number[]): Promise<void> {
  c.setNoDelay(true);
  let from = 0;
  for (const cut of [...cuts, buf.length]) {
    await new Promise<void>((resolve, reject) => c.write(buf.subarray(from, cut), (err) => (err ? reject(err) : resolve())));
    from = cut;
  }
}

/** Resolves with what Portico sent before it closed the connection (within 15 s). */
function closedBy(c: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error('not closed within 15 s')), 15_000);
    c.on('data', (d: Buffer) => got.push(d));
    c.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(got));
    });
  });
}

/** The listener is on the path the test asks for: the addon (said in the log), or not (nothing said of it). */
async function servedBy(portico: Portico, onAddon: boolean): Promise<void> {
  if (onAddon) await portico.waitForLog((l) => l.msg === SERVED_BY_ADDON);
  else assert.equal(portico.logs.find((l) => l.msg === SERVED_BY_ADDON), undefined);
}

async function metricsText(portico: Portico): Promise<string> {
  return (await request(`${adminUrl(portico)}/metrics`)).body.toString();
}

function refusedLine(reason: string, detail?: string): (l: LogLine) => boolean {
  return (l) => l.msg === 'connection refused before routing' && l.reason === reason && (detail === undefined || l.detail === detail);
}

const CLIENT4 = { address: '192.0.2.7', port: 56324 };
const DEST4 = { address: '198.51.100.1', port: 443 };
const CLIENT6 = { address: '2001:db8::7', port: 1000 };
const DEST6 = { address: '2001:db8::1', port: 8443 };

for (const onAddon of [true, false]) {
  const label = onAddon ? 'tcp listener with proxy_protocol on the addon' : 'tcp listener with proxy_protocol on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };

  /** One tcp listener trusting 127.0.0.1 only, to a send_proxy_protocol v2 target that waits for 4 bytes. */
  async function proxiedTcp(t: TestContext, extra: Record<string, unknown> = {}) {
    const target = await startProxyTarget(t, 4);
    const portico = await startPortico(t, {
      workers: 1,
      admin: { address: '127.0.0.1:0' },
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'pp', proxy_protocol: { trusted: ['127.0.0.1/32'] } }],
      upstreams: { pp: { targets: [`127.0.0.1:${target.port}`], send_proxy_protocol: 'v2' } },
      log: { level: 'debug' },
      ...extra,
    }, env);
    await servedBy(portico, onAddon);
    return { target, portico, port: portico.ports[0] };
  }

  test(`${label}: v1 TCP4, v2 TCP6, v2 LOCAL and v1 UNKNOWN from a trusted sender: the target's header names the header's client (LOCAL, UNKNOWN: the socket's), the bytes after it follow; the access line names the same client`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { target, portico, port } = await proxiedTcp(t);
    const cases = [
      { name: 'v1 TCP4', header: buildProxyV1(CLIENT4, DEST4), source: CLIENT4, destination: DEST4, family: 'tcp4' },
      { name: 'v2 TCP6', header: buildProxyV2(CLIENT6, DEST6, [{ type: 2, value: Buffer.from('lb.example') }], { crc32c: true }), source: CLIENT6, destination: DEST6, family: 'tcp6' },
      { name: 'v2 LOCAL', header: buildProxyV2Local(), source: undefined, destination: undefined, family: 'tcp4' },
      { name: 'v1 UNKNOWN', header: Buffer.from('PROXY UNKNOWN\r\n'), source: undefined, destination: undefined, family: 'tcp4' },
    ];
    for (const k of cases) {
      const c = await connect(t, port);
      const answer = closedBy(c);
      c.write(Buffer.concat([k.header, Buffer.from('ping')])); // the header and the client's first bytes in one segment
      const { header, after } = await target.next();
      assert.equal(header.version, 2, k.name);
      assert.equal(header.family, k.family, k.name);
      // LOCAL and UNKNOWN: the balancer's own connection, named by its socket
      assert.deepEqual(header.source, k.source ?? { address: '127.0.0.1', port: c.localPort }, k.name);
      assert.deepEqual(header.destination, k.destination ?? { address: '127.0.0.1', port }, k.name);
      assert.equal(after.toString(), 'ping', `${k.name}: the bytes after the header reach the target, after its own header`);
      assert.equal((await answer).toString(), 'ok', k.name);
      const client = k.source?.address ?? '127.0.0.1';
      const line = await portico.waitForLog((l) => l.msg === 'tcp' && l.remoteAddr === client);
      assert.equal(line.bytesIn, 4, `${k.name}: the header is not the client's data`);
      assert.equal(line.bytesOut, 2);
      assert.equal(line.target, `127.0.0.1:${target.port}`);
    }
    const metrics = await metricsText(portico);
    assert.match(metrics, /^portico_connections_total 4$/m);
    assert.match(metrics, /^portico_proxy_protocol_refused_total\{reason="untrusted"\} 0$/m);
  });

  test(`${label}: a header in pieces (v1 and v2, cut inside the signature, the addresses and the TLVs) is read whole, the bytes after it intact`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { target, portico, port } = await proxiedTcp(t);
    const v2 = Buffer.concat([buildProxyV2(CLIENT4, DEST4, [{ type: 5, value: Buffer.from('unique-id') }]), Buffer.from('data')]);
    const v1 = Buffer.concat([buildProxyV1(CLIENT6, DEST6), Buffer.from('more')]);
    for (const [buf, cuts, want] of [
      [v2, [1, 7, 13, 15, 20, 30, v2.length - 6], CLIENT4],
      [v1, [3, 6, 12, 30, v1.length - 5, v1.length - 4], CLIENT6],
    ] as const) {
      const c = await connect(t, port);
      const answer = closedBy(c);
      await writeInPieces(c, buf, cuts);
      const { header, after } = await target.next();
      assert.deepEqual(header.source, want);
      assert.equal(after.toString(), buf.subarray(buf.length - 4).toString());
      assert.equal((await answer).toString(), 'ok');
      await portico.waitForLog((l) => l.msg === 'tcp' && l.remoteAddr === want.address);
    }
  });

  test(`${label}: refused before any target, each counted by its reason: an untrusted sender, no header, malformed v1 and v2, a v2 past its 16 KiB bound, a v1 line without CRLF in 107 bytes, a header cut by the client's FIN, a header that never completes`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { target, portico, port } = await proxiedTcp(t, { timeouts: { head: '1s' } });
    const refuse = async (bytes: Buffer, how: { from?: string; end?: boolean } = {}): Promise<void> => {
      const c = await connect(t, port, how.from);
      const closed = closedBy(c);
      if (how.end === true) c.end(bytes);
      else c.write(bytes);
      assert.equal((await closed).length, 0, `nothing sent back for ${bytes.toString('latin1').slice(0, 40)}`);
    };
    // from 127.0.0.2: a valid header from a sender outside proxy_protocol.trusted
    await refuse(buildProxyV1(CLIENT4, DEST4), { from: '127.0.0.2' });
    await portico.waitForLog(refusedLine('untrusted', 'PROXY header sender not in proxy_protocol.trusted'));
    await refuse(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await portico.waitForLog(refusedLine('proxy_missing'));
    await refuse(Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 056324 443\r\n'));
    await portico.waitForLog(refusedLine('proxy_invalid', 'PROXY v1: port is not a decimal in 0..65535 without leading zeros (§2.1)'));
    const badCrc = buildProxyV2(CLIENT4, DEST4, [], { crc32c: true });
    badCrc[badCrc.length - 1] ^= 0xff;
    await refuse(badCrc);
    await portico.waitForLog(refusedLine('proxy_invalid', 'PROXY v2: CRC32C checksum mismatch (§2.2.3)'));
    const huge = buildProxyV2(CLIENT4, DEST4);
    huge.writeUInt16BE(0xffff, 14);
    await refuse(huge);
    await portico.waitForLog(refusedLine('proxy_invalid', 'PROXY v2: header of 65551 bytes is larger than 16384'));
    await refuse(Buffer.from(`PROXY TCP4 ${'1'.repeat(120)}`));
    await portico.waitForLog(refusedLine('proxy_invalid', 'PROXY v1: no CRLF in the first 107 bytes (§2.1)'));
    await refuse(buildProxyV2(CLIENT4, DEST4).subarray(0, 20), { end: true });
    await portico.waitForLog(refusedLine('proxy_invalid', 'connection ended inside the preface'));
    // a header begun and never finished: timeouts.head (1 s) closes it
    await refuse(Buffer.from('PROXY TCP4 192.0.2.7'));
    await portico.waitForLog(refusedLine('proxy_timeout'));
    const metrics = await metricsText(portico);
    assert.match(metrics, /^portico_proxy_protocol_refused_total\{reason="untrusted"\} 1$/m);
    assert.match(metrics, /^portico_proxy_protocol_refused_total\{reason="missing"\} 1$/m);
    assert.match(metrics, /^portico_proxy_protocol_refused_total\{reason="invalid"\} 5$/m);
    assert.match(metrics, /^portico_proxy_protocol_refused_total\{reason="timeout"\} 1$/m);
    assert.match(metrics, /^portico_connections_total 0$/m);
    assert.equal(target.connections(), 0, 'no refused connection reached the target');
    assert.equal(portico.logs.filter((l) => l.msg === 'tcp').length, 0, 'no access line for a refusal');
  });

  test(`${label}: a sender that connects and says nothing is closed at timeouts.head, counted as a PROXY timeout`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { target, portico, port } = await proxiedTcp(t, { timeouts: { head: '1s' } });
    const c = await connect(t, port);
    assert.equal((await closedBy(c)).length, 0);
    await portico.waitForLog(refusedLine('proxy_timeout'));
    assert.match(await metricsText(portico), /^portico_proxy_protocol_refused_total\{reason="timeout"\} 1$/m);
    assert.equal(target.connections(), 0);
  });
}

for (const onAddon of [true, false]) {
  const label = onAddon ? 'TLS passthrough with proxy_protocol on the addon' : 'TLS passthrough with proxy_protocol on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };
  test(`${label}: PROXY header then ClientHello (together or in pieces) pass through to a send_proxy_protocol target as the header's client; an unknown name, plaintext, a FIN or silence after the header are refused and counted`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const hello = await captureNodeHello({ servername: 'a.pass.test' });
    const tail = Buffer.from('tail');
    const target = await startProxyTarget(t, hello.length + tail.length);
    const portico = await startPortico(t, {
      workers: 1,
      admin: { address: '127.0.0.1:0' },
      listeners: [{ address: '127.0.0.1:0', proxy_protocol: { trusted: ['127.0.0.0/8'] }, tls: { passthrough: [{ sni: '*.pass.test', upstream: 'raw' }], handshake_timeout: '1s' } }],
      upstreams: { raw: { targets: [`127.0.0.1:${target.port}`], send_proxy_protocol: 'v1' } },
      log: { level: 'debug' },
    }, env);
    await servedBy(portico, onAddon);
    const port = portico.ports[0];
    const whole = Buffer.concat([buildProxyV2(CLIENT6, DEST6), hello, tail]);
    const header = buildProxyV2(CLIENT6, DEST6).length;
    for (const cuts of [[], [10, header, header + 5, header + 100]]) {
      const c = await connect(t, port);
      const answer = closedBy(c);
      await writeInPieces(c, whole, cuts);
      const got = await target.next();
      assert.equal(got.header.version, 1);
      assert.deepEqual(got.header.source, CLIENT6);
      assert.deepEqual(got.header.destination, DEST6);
      assert.ok(got.after.equals(Buffer.concat([hello, tail])), 'the ClientHello and the bytes behind it, as sent');
      assert.equal((await answer).toString(), 'ok');
      const line = await portico.waitForLog((l) => l.msg === 'passthrough' && l.remoteAddr === CLIENT6.address && l.sni === 'a.pass.test');
      assert.equal(line.bytesIn, hello.length + tail.length);
    }
    // refusals after a good header: an unknown name (an alert), plaintext, the client's FIN, silence
    const refused = async (bytes: Buffer, end = false): Promise<Buffer> => {
      const c = await connect(t, port);
      const closed = closedBy(c);
      if (end) c.end(bytes);
      else c.write(bytes);
      return closed;
    };
    const other = await captureNodeHello({ servername: 'other.test' });
    const alert = await refused(Buffer.concat([buildProxyV1(CLIENT4, DEST4), other]));
    assert.equal(alert.toString('hex'), '15030300020270', 'unrecognized_name');
    await portico.waitForLog((l) => l.msg === 'no passthrough for this TLS name: alert sent, closed' && l.sni === 'other.test');
    await refused(Buffer.concat([buildProxyV1(CLIENT4, DEST4), Buffer.from('GET / HTTP/1.1\r\n\r\n')]));
    await portico.waitForLog(refusedLine('not_tls'));
    await refused(buildProxyV1(CLIENT4, DEST4), true);
    await portico.waitForLog(refusedLine('client_hello_invalid', 'connection ended inside the preface'));
    await refused(Buffer.concat([buildProxyV1(CLIENT4, DEST4), hello.subarray(0, 30)]));
    await portico.waitForLog(refusedLine('timeout'));
    const metrics = await metricsText(portico);
    assert.match(metrics, /^portico_connections_refused_total\{reason="sni_unknown"\} 1$/m);
    assert.match(metrics, /^portico_connections_refused_total\{reason="not_tls"\} 1$/m);
    assert.match(metrics, /^portico_connections_refused_total\{reason="client_hello_invalid"\} 1$/m);
    assert.match(metrics, /^portico_connections_refused_total\{reason="timeout"\} 1$/m);
    assert.match(metrics, /^portico_connections_total 2$/m);
    assert.equal(target.connections(), 2);
  });
}

for (const onAddon of [true, false]) {
  const label = onAddon ? 'tcp listener on the addon' : 'tcp listener on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };
  test(`${label}: a reload that adds proxy_protocol makes new connections need a header (and defers accept); one that removes it takes them plain again`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const target = await startProxyTarget(t, 4);
    const config = (pp: boolean) => ({
      workers: 1,
      admin: { address: '127.0.0.1:0' },
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp' as const, upstream: 'pp', ...(pp ? { proxy_protocol: { trusted: ['127.0.0.1/32'] } } : {}) }],
      upstreams: { pp: { targets: [`127.0.0.1:${target.port}`], send_proxy_protocol: 'v2' as const } },
      log: { level: 'debug' as const },
    });
    const portico = await startPortico(t, config(false), env);
    await servedBy(portico, onAddon);
    const port = portico.ports[0];
    /** One connection sending `bytes`: the client the target's header names, after Portico's answer came back. */
    const through = async (bytes: Buffer): Promise<ProxyHeader> => {
      const c = await connect(t, port);
      const answer = closedBy(c);
      c.write(bytes);
      const { header } = await target.next();
      assert.equal((await answer).toString(), 'ok');
      return header;
    };
    const plain = await through(Buffer.from('ping'));
    assert.equal(plain.source?.address, '127.0.0.1');
    // deferred accept is native accept's (Node's accept under PORTICO_NATIVE_IO=0 reports none)
    const deferred = async (): Promise<string[] | undefined> => (await adminStatus(portico)).workers[0].deferAccept;
    const deferring = (listeners: string[]): string[] | undefined => (nativeIoAvailable() ? listeners : undefined);
    assert.deepEqual(await deferred(), deferring([]), 'a tcp listener without PROXY does not defer');

    let r = await reloadPortico(portico, config(true));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await through(Buffer.concat([buildProxyV1(CLIENT4, DEST4), Buffer.from('ping')]))).source, CLIENT4);
    const missing = await connect(t, port);
    const refused = closedBy(missing);
    missing.write('ping');
    assert.equal((await refused).length, 0);
    await portico.waitForLog(refusedLine('proxy_missing'));
    assert.deepEqual(await deferred(), deferring(['127.0.0.1:0']), 'with proxy_protocol its clients speak first: deferred');
    // the addon took the new compile: the listener never went to the JS path
    if (onAddon) assert.equal(portico.logs.find((l) => l.msg === 'L4 listener served by JavaScript, not the addon'), undefined);

    r = await reloadPortico(portico, config(false));
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await through(Buffer.from('pong'))).source?.address, '127.0.0.1');
    assert.deepEqual(await deferred(), deferring([]));
    assert.equal(target.connections(), 3);
  });
}
