// limits.connections_per_ip on L4 listeners through the real `portico start`, on the addon (src/native/l4.cc counting
// in client-table.cc's table) and on the JS path (PORTICO_NATIVE_L4=0: accept-paths.ts), with the same assertions:
// a tcp listener holds max connections of a client, the next one is closed before it reaches the target, counted in
// /metrics and logged, and a slot frees when one closes; an HTTP listener's connections and an L4 listener's count
// together in one worker; a passthrough-only TLS listener refuses before its ClientHello is read; behind a PROXY
// header the header's client counts (two clients behind one balancer apart, IPv6 by its /64; a passthrough listener
// too, once routed); an IPv6 listener on ::1; a reload that raises the max applies to new connections, and a
// connection from before it releases its slot.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import type { ConfigInput } from '../../src/config/schema.js';
import { adminUrl } from '../helpers/admin.js';
import { startHttpBackend } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { needNativeL4 } from '../helpers/native-io.js';
import { TEST_CERT, TEST_KEY, plainListener, reloadPortico, startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import { until } from '../helpers/until.js';
import { singleWorkerResources } from '../helpers/proc-stats.js';
import { closedWithoutReply, roundTrip } from '../helpers/wire.js';

const SERVED_BY_ADDON = 'L4 listener served by the addon (accept, connect, splice)';
const REFUSED = 'portico_connections_refused_total{reason="connections_per_ip"}';

/** A backend on 127.0.0.1 that echoes (a TLS one with the test certificate when `secure`) and counts its connections. */
async function countingEcho(t: TestContext, secure = false): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const open = new Set<net.Socket>();
  const onSocket = (s: net.Socket): void => {
    connections++;
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => s.destroy());
    s.on('data', (d: Buffer) => s.write(d));
  };
  const server = secure ? tls.createServer({ cert: await readFile(TEST_CERT), key: await readFile(TEST_KEY) }, onSocket) : net.createServer(onSocket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of open) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections };
}

async function connect(t: TestContext, port: number, host = '127.0.0.1'): Promise<net.Socket> {
  const c = net.connect({ host, port });
  t.after(() => c.destroy());
  c.on('error', () => {}); // a refused connection may end in a reset: that is a close here
  await once(c, 'connect');
  return c;
}

/** A connection relayed to the echo target and held open (`preface`: a PROXY header sent before the echo). */
async function relayed(t: TestContext, port: number, preface = '', host = '127.0.0.1'): Promise<net.Socket> {
  const c = await connect(t, port, host);
  if (preface !== '') c.write(preface);
  assert.equal(await roundTrip(c, 'ping', 4), 'ping');
  return c;
}

/** A connection closed by Portico without a byte, its `preface` and a ping sent. */
async function refused(t: TestContext, port: number, preface = '', host = '127.0.0.1'): Promise<void> {
  const c = await connect(t, port, host);
  const closed = closedWithoutReply(c);
  c.write(`${preface}ping`);
  await closed;
}

/** A plain HTTP connection with one request answered (so Portico counts it), kept open. */
async function servedHttp(t: TestContext, port: number): Promise<net.Socket> {
  const c = await connect(t, port);
  const answered = new Promise<string>((resolve) => c.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
  c.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
  assert.match(await answered, /^HTTP\/1\.1 200 /);
  return c;
}

/**
 * The connections_per_ip refusals /metrics reports, once they reach `n` (the addon reports them in batches): exactly
 * `n`, or at least `n` after an admittedAgain (its polls before the slot freed were refused too).
 */
async function refusedReach(portico: Portico, n: number, exact = true): Promise<void> {
  const read = async (): Promise<number> => {
    const text = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
    const line = text.split('\n').find((l) => l.startsWith(`${REFUSED} `));
    return line === undefined ? 0 : Number(line.slice(REFUSED.length + 1));
  };
  const got = await until(REFUSED, read, (v) => v >= n);
  if (exact) assert.equal(got, n);
}

/** A counter without labels from /metrics (0 when absent). */
async function metric(portico: Portico, name: string): Promise<number> {
  const text = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

/** The first refusal line of client key `key` (said at once, then summaries per interval). */
function limitLine(portico: Portico, key: string): Promise<LogLine> {
  return portico.waitForLog((l) => l.limit === 'connections_per_ip' && l.clientKey === key && l.level === 'warn');
}

/** Polls until one more connection is relayed (Portico saw the close that freed a slot; bounded). */
async function admittedAgain(t: TestContext, port: number, preface = ''): Promise<net.Socket> {
  let got: net.Socket | undefined;
  await until('a connection admitted again', async () => {
    const c = await connect(t, port);
    c.write(`${preface}ping`);
    const reply = await new Promise<string>((resolve) => {
      c.once('data', (d: Buffer) => resolve(d.toString()));
      c.once('close', () => resolve('closed'));
    });
    if (reply === 'ping') got = c;
    return reply;
  }, (r) => r === 'ping');
  return got!;
}

for (const onAddon of [true, false]) {
  const label = onAddon ? 'connections_per_ip on the addon' : 'connections_per_ip on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };

  async function start(t: TestContext, config: ConfigInput): Promise<Portico> {
    const portico = await startPortico(t, { workers: 1, admin: { address: '127.0.0.1:0' }, log: { limit_interval: '1s' }, ...config } as ConfigInput, env);
    if (onAddon) await portico.waitForLog((l) => l.msg === SERVED_BY_ADDON);
    else assert.equal(portico.logs.find((l) => l.msg === SERVED_BY_ADDON), undefined);
    return portico;
  }

  test(`${label}: a tcp listener holds 2 connections of a client; the third is closed before it reaches the target, counted and logged; a slot frees when one closes`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const target = await countingEcho(t);
    const portico = await start(t, {
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
      upstreams: { echo: { targets: [`127.0.0.1:${target.port}`] } },
      limits: { connections_per_ip: 2 },
    });
    const port = portico.ports[0];
    const a = await relayed(t, port);
    const b = await relayed(t, port);
    await refused(t, port);
    await refused(t, port);
    assert.equal(target.connections(), 2, 'the refused connections never reached the target');
    await refusedReach(portico, 2);
    const line = await limitLine(portico, '127.0.0.1');
    assert.equal(line.remoteAddr, '127.0.0.1');
    assert.equal(await roundTrip(b, 'held', 4), 'held', 'the counted relays are untouched');
    a.destroy();
    await admittedAgain(t, port);
    await refused(t, port);
    assert.equal(target.connections(), 3);
  });

  test(`${label}: a flood of 300 connections at once from one client past a limit of 5: 5 relayed, every other one refused and counted, the count back to 0 and the worker's fds back after they close`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const target = await countingEcho(t);
    const portico = await start(t, {
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
      upstreams: { echo: { targets: [`127.0.0.1:${target.port}`] } },
      limits: { connections_per_ip: 5 },
    });
    const port = portico.ports[0];
    // the baseline after one relay came and went (the relay keeps a spliced pipe for the next one)
    (await relayed(t, port)).destroy();
    const baseline = await until('the warm-up relay gone', () => singleWorkerResources(portico), (x) => x.tunnels === 0);
    const N = 300;
    const flood = await Promise.all(Array.from({ length: N }, () => connect(t, port)));
    const outcomes = await Promise.all(
      flood.map(
        (c) =>
          new Promise<'relayed' | 'refused'>((resolve) => {
            c.once('data', () => resolve('relayed'));
            c.once('close', () => resolve('refused'));
            c.write('ping');
          }),
      ),
    );
    assert.equal(outcomes.filter((o) => o === 'relayed').length, 5, 'the limit held under the flood');
    assert.equal(target.connections(), 6, 'the warm-up relay and five of the flood');
    await refusedReach(portico, N - 5);
    for (const c of flood) c.destroy();
    // every count released: a new client gets its 5 again, and nothing is left open in the worker
    (await admittedAgain(t, port)).destroy();
    await until(`no relay left and the fds back to ${baseline.fdsBeyondIdle}`, () => singleWorkerResources(portico), (x) => x.tunnels === 0 && x.fdsBeyondIdle === baseline.fdsBeyondIdle, 15_000);
  });

  test(`${label}: an HTTP listener's connections and a tcp listener's count together in one worker`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const target = await countingEcho(t);
    const backend = await startHttpBackend(t);
    const portico = await start(t, {
      listeners: [plainListener(), { address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
      upstreams: { echo: { targets: [`127.0.0.1:${target.port}`] }, app: { targets: [`127.0.0.1:${backend.port}`] } },
      routes: [{ match: { path: '/' }, proxy: 'app' }],
      limits: { connections_per_ip: 2 },
    });
    const [http, l4] = portico.ports;
    const h = await servedHttp(t, http);
    await relayed(t, l4);
    await refused(t, l4);
    assert.equal(target.connections(), 1, 'the L4 connection past the limit never reached the target');
    const extra = await connect(t, http);
    const closed = closedWithoutReply(extra);
    extra.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
    await closed;
    await refusedReach(portico, 2);
    // the HTTP connection closes: its slot goes to an L4 one, and then HTTP is the one refused
    h.destroy();
    await admittedAgain(t, l4);
    const again = await connect(t, http);
    const closedAgain = closedWithoutReply(again);
    again.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
    await closedAgain;
    await refusedReach(portico, 3, false);
  });

  test(`${label}: a passthrough-only TLS listener closes a client past its limit before reading its ClientHello`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const target = await countingEcho(t, true);
    const portico = await start(t, {
      listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: 'localhost', upstream: 'tls' }] } }],
      upstreams: { tls: { targets: [`127.0.0.1:${target.port}`] } },
      limits: { connections_per_ip: 1 },
    });
    const port = portico.ports[0];
    const hello = async (): Promise<tls.TLSSocket> => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
      t.after(() => s.destroy());
      await once(s, 'secureConnect');
      assert.equal(await roundTrip(s as unknown as net.Socket, 'ping', 4), 'ping');
      return s;
    };
    const first = await hello();
    const second = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
    t.after(() => second.destroy());
    const failed = await new Promise<string>((resolve) => {
      second.once('secureConnect', () => resolve('handshake completed'));
      second.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      second.once('close', () => resolve('closed'));
    });
    assert.notEqual(failed, 'handshake completed');
    assert.equal(target.connections(), 1);
    await refusedReach(portico, 1);
    await limitLine(portico, '127.0.0.1');
    first.destroy();
    await until('a passthrough admitted again', () => hello().then(() => true, () => false), (ok) => ok);
    assert.equal(target.connections(), 2);
  });

  test(`${label}: behind a PROXY header the header's client counts: two clients of one balancer apart, IPv6 by /64`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const target = await countingEcho(t);
    const portico = await start(t, {
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo', proxy_protocol: { trusted: ['127.0.0.1/32'] } }],
      upstreams: { echo: { targets: [`127.0.0.1:${target.port}`] } },
      limits: { connections_per_ip: 1 },
    });
    const port = portico.ports[0];
    const v4 = (client: string): string => `PROXY TCP4 ${client} 192.0.2.1 40000 80\r\n`;
    const v6 = (client: string): string => `PROXY TCP6 ${client} 2001:db8::1 40000 80\r\n`;
    const a = await relayed(t, port, v4('203.0.113.1'));
    await relayed(t, port, v4('203.0.113.2'));
    await refused(t, port, v4('203.0.113.1'));
    assert.equal(target.connections(), 2);
    const line = await limitLine(portico, '203.0.113.1');
    assert.equal(line.remoteAddr, '203.0.113.1', 'the header\'s client, not the balancer');
    await relayed(t, port, v6('2001:db8:1:2::1'));
    await refused(t, port, v6('2001:db8:1:2:ffff::9'));
    await relayed(t, port, v6('2001:db8:1:3::1'));
    const six = await limitLine(portico, '2001:db8:1:2::/64');
    assert.equal(six.remoteAddr, '2001:db8:1:2:ffff::9');
    assert.equal(target.connections(), 4);
    await refusedReach(portico, 2);
    // a refusal is not an accepted connection: the four relayed ones only, on either path
    assert.equal(await until('portico_connections_total', () => metric(portico, 'portico_connections_total'), (v) => v >= 4), 4);
    a.destroy();
    await admittedAgain(t, port, v4('203.0.113.1'));
  });

  test(`${label}: a passthrough listener behind a PROXY header counts the header's client once its ClientHello routed it`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const target = await countingEcho(t, true);
    const portico = await start(t, {
      listeners: [{ address: '127.0.0.1:0', proxy_protocol: { trusted: ['127.0.0.1/32'] }, tls: { passthrough: [{ sni: 'localhost', upstream: 'tls' }] } }],
      upstreams: { tls: { targets: [`127.0.0.1:${target.port}`] } },
      limits: { connections_per_ip: 1 },
    });
    const port = portico.ports[0];
    /** A TLS connection from `client` behind the balancer: 'ping' when it reached the target, else how it ended. */
    const through = async (client: string): Promise<string> => {
      const c = await connect(t, port);
      c.write(`PROXY TCP4 ${client} 192.0.2.1 40000 443\r\n`);
      const s = tls.connect({ socket: c, servername: 'localhost', rejectUnauthorized: false });
      t.after(() => s.destroy());
      const how = await new Promise<string>((resolve) => {
        s.once('secureConnect', () => resolve('secure'));
        s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
        s.once('close', () => resolve('closed'));
      });
      return how === 'secure' ? roundTrip(s as unknown as net.Socket, 'ping', 4) : how;
    };
    assert.equal(await through('203.0.113.1'), 'ping');
    assert.equal(await through('203.0.113.2'), 'ping', 'another client behind the same balancer');
    assert.notEqual(await through('203.0.113.1'), 'ping', 'the first client\'s second connection');
    assert.equal(target.connections(), 2);
    const line = await limitLine(portico, '203.0.113.1');
    assert.equal(line.remoteAddr, '203.0.113.1');
    await refusedReach(portico, 1);
  });

  test(`${label}: an IPv6 listener on ::1 keys its client by its /64`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const probe = net.createServer();
    const v6 = await new Promise<boolean>((resolve) => {
      probe.once('error', () => resolve(false));
      probe.listen(0, '::1', () => probe.close(() => resolve(true)));
    });
    if (!v6) return t.skip('no IPv6 loopback (::1) here');
    const target = await countingEcho(t);
    const portico = await start(t, {
      listeners: [{ address: '[::1]:0', mode: 'tcp', upstream: 'echo' }],
      upstreams: { echo: { targets: [`127.0.0.1:${target.port}`] } },
      limits: { connections_per_ip: 1, ipv6_prefix: 64 },
    });
    const port = portico.ports[0];
    await relayed(t, port, '', '::1');
    await refused(t, port, '', '::1');
    const line = await limitLine(portico, '0:0:0:0::/64');
    assert.equal(line.remoteAddr, '::1');
    assert.equal(target.connections(), 1);
  });

  test(`${label}: a reload that raises the max applies to new connections; a connection from before it still counts, and releases its slot`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const target = await countingEcho(t);
    const config = (max: number): ConfigInput => ({
      workers: 1,
      admin: { address: '127.0.0.1:0' },
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
      upstreams: { echo: { targets: [`127.0.0.1:${target.port}`] } },
      limits: { connections_per_ip: max },
    });
    const portico = await start(t, config(1));
    const port = portico.ports[0];
    const before = await relayed(t, port);
    await refused(t, port);
    const reloaded = await reloadPortico(portico, config(2));
    assert.equal(reloaded.code, 0, reloaded.stderr);
    await relayed(t, port);
    await refused(t, port);
    assert.equal(target.connections(), 2);
    before.destroy();
    await admittedAgain(t, port);
    await refused(t, port);
    await refusedReach(portico, 3, false);
  });
}
