// PROXY protocol towards HTTP upstreams through the real `portico start`: nginx (`listen ... proxy_protocol`)
// names in response headers the client address it read (v1 and v2), and its connection serial shows that a
// kept-alive upstream connection serves one client only, even with clients interleaved. A small backend that
// reads the header with Portico's own parser shows WebSocket tunnels and active health checks sending theirs.
// Refused PROXY senders are counted in /metrics, summed over both workers. A reload that turns sending on
// gives health checks the header too.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { buildProxyV1, buildProxyV2, parseProxyHeader, type ProxyHeader } from '../../src/wire/proxy-protocol.js';
import { request } from '../helpers/clients.js';
import { hasNginx, startNginx } from '../helpers/nginx.js';
import { needPeer } from '../helpers/peers.js';
import { reloadPortico, startPortico, type Portico } from '../helpers/portico.js';
import { adminPort } from '../helpers/admin.js';
import { ResponseReader, closedWithoutReply, connectPlain } from '../helpers/wire.js';

/** What nginx answered one request with: the PROXY source it read and its own connection serial number. */
interface Seen {
  addr: string;
  port: string;
  conn: string;
  connRequests: number;
}

/** `n` keep-alive GETs of `path` on one connection `c`, in order; what nginx saw for each. */
async function requests(c: net.Socket, reader: ResponseReader, path: string, n: number): Promise<Seen[]> {
  const out: Seen[] = [];
  for (let i = 0; i < n; i++) {
    c.write(`GET ${path} HTTP/1.1\r\nHost: pp.test\r\n\r\n`);
    const r = await reader.next();
    assert.equal(r.status, 200, `${path}: ${r.body.toString()}`);
    out.push({ addr: r.headers['x-pp-addr'], port: r.headers['x-pp-port'], conn: r.headers['x-conn'], connRequests: Number(r.headers['x-conn-requests']) });
  }
  return out;
}

test('send_proxy_protocol v1 and v2 on HTTP routes: nginx reads each client\'s address; a kept-alive upstream connection serves one client only', { timeout: 90_000 }, async (t) => {
  if (!needPeer(t, 'nginx', hasNginx())) return;
  const nginx = await startNginx(
    t,
    `keepalive_requests 10000; keepalive_timeout 60s;
     server {
       listen 127.0.0.1:{{PORT}} proxy_protocol;
       location / {
         add_header X-PP-Addr $proxy_protocol_addr always;
         add_header X-PP-Port $proxy_protocol_port always;
         add_header X-Conn $connection always;
         add_header X-Conn-Requests $connection_requests always;
         return 200 "ok\\n";
       }
     }`,
  );
  const target = `127.0.0.1:${nginx.port}`;
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0' }, { address: '127.0.0.1:0', proxy_protocol: { trusted: ['127.0.0.1/32'] } }],
    upstreams: { pp1: { targets: [target], send_proxy_protocol: 'v1' }, pp2: { targets: [target], send_proxy_protocol: 'v2' } },
    routes: [
      { match: { path: '/v1' }, proxy: 'pp1' },
      { match: { path: '/v2' }, proxy: 'pp2' },
    ],
  });
  const [plainPort, proxiedPort] = portico.ports;

  for (const path of ['/v1', '/v2']) {
    // ten clients at once, four requests each, interleaved by the event loop: every answer must name the client
    // that asked, and no nginx connection may ever carry two clients
    const clients = await Promise.all(Array.from({ length: 10 }, () => connectPlain(t, plainPort)));
    const seen = await Promise.all(clients.map((c) => requests(c, new ResponseReader(c), path, 4)));
    const owner = new Map<string, number>();
    seen.forEach((answers, i) => {
      const port = String(clients[i].localPort);
      for (const s of answers) {
        assert.equal(s.addr, '127.0.0.1', `${path}: client ${i}`);
        assert.equal(s.port, port, `${path}: client ${i} was named as another client`);
        const prev = owner.get(s.conn);
        assert.ok(prev === undefined || prev === i, `${path}: nginx connection ${s.conn} served clients ${prev} and ${i}`);
        owner.set(s.conn, i);
      }
      // kept alive for its own client: one upstream connection, its request count going up
      assert.equal(new Set(answers.map((s) => s.conn)).size, 1, `${path}: client ${i} used ${answers.map((s) => s.conn).join(',')}`);
      assert.deepEqual(answers.map((s) => s.connRequests), [1, 2, 3, 4]);
    });
    for (const c of clients) c.destroy();

    // a client behind a trusted load balancer: its PROXY source, not the balancer's, is passed on
    const lb = await connectPlain(t, proxiedPort);
    lb.write(buildProxyV2({ address: '203.0.113.9', port: 5555 }, { address: '198.51.100.1', port: 80 }));
    const [behind] = await requests(lb, new ResponseReader(lb), path, 1);
    assert.equal(behind.addr, '203.0.113.9');
    assert.equal(behind.port, '5555');
    lb.destroy();
  }
  assert.doesNotMatch(await nginx.errorLog(), /broken header/, 'nginx read every PROXY header');
});

interface PpBackend {
  port: number;
  /** The header each accepted connection opened with, in order. */
  headers: ProxyHeader[];
  /** Resolves once `n` connections have been accepted. */
  accepted(n: number): Promise<void>;
}

/**
 * An HTTP + WebSocket backend behind a PROXY header read with Portico's own parser: `/healthz` answers 200,
 * anything else JSON naming the header's source; a WebSocket gets that JSON as its first message. A connection
 * without a valid header is closed.
 */
async function startPpBackend(t: TestContext): Promise<PpBackend> {
  const headers: ProxyHeader[] = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const sourceOf = new WeakMap<net.Socket, ProxyHeader>();
  const describe = (s: net.Socket): string => JSON.stringify(sourceOf.get(s)?.source ?? null);
  const web = http.createServer((req, res) => res.end(req.url === '/healthz' ? 'healthy' : describe(req.socket)));
  const wss = new WebSocketServer({ server: web });
  wss.on('connection', (ws, req) => ws.send(describe(req.socket)));
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const r = parseProxyHeader(buf);
      if (r.kind === 'more') return;
      s.off('data', onData);
      if (r.kind !== 'done') return void s.destroy();
      s.pause();
      sourceOf.set(s, r.header);
      headers.push(r.header);
      for (const w of waiters.filter((x) => headers.length >= x.n)) w.resolve();
      if (buf.length > r.used) s.unshift(buf.subarray(r.used));
      web.emit('connection', s);
      s.resume();
    };
    s.on('data', onData);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    wss.close();
    server.close();
  });
  const accepted = (n: number): Promise<void> => (headers.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve })));
  return { port: (server.address() as net.AddressInfo).port, headers, accepted };
}

test('a WebSocket tunnel to a PROXY-sending pool carries the header naming its client; active checks send UNKNOWN (v1) and LOCAL (v2) and pass', { timeout: 60_000 }, async (t) => {
  const backend = await startPpBackend(t);
  const target = `127.0.0.1:${backend.port}`;
  const active = { type: 'http' as const, path: '/healthz', interval: '150ms', timeout: '2s', fails: 1, passes: 1 };
  const portico = await startPortico(t, {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: {
      ws1: { targets: [target], send_proxy_protocol: 'v1', health: { active } },
      ws2: { targets: [target], send_proxy_protocol: 'v2', health: { active: { ...active, type: 'websocket' as const } } },
    },
    routes: [
      { match: { path: '/ws1' }, proxy: 'ws1' },
      { match: { path: '/ws2' }, proxy: 'ws2' },
    ],
  });
  const admin = await adminPort(portico);

  for (const path of ['/ws1', '/ws2']) {
    // the backend speaks first: its message may come in the same read as the 101, so it is listened for from the
    // start (a listener added once the handshake resolved could miss it)
    const ws = new WebSocket(`ws://127.0.0.1:${portico.httpPort}${path}`, { handshakeTimeout: 10_000 });
    t.after(() => ws.terminate());
    const [first] = (await once(ws, 'message')) as [Buffer];
    const source = JSON.parse(first.toString()) as { address: string; port: number };
    assert.equal(source.address, '127.0.0.1');
    // the client's own port: the header was written for this tunnel's client
    const local = (ws as unknown as { _socket: net.Socket })._socket.localPort;
    assert.equal(source.port, local);
    ws.close();
  }

  // two probes per upstream at least, so the first ones' results are recorded
  const probes = (): ProxyHeader[] => backend.headers.filter((h) => h.source === undefined);
  for (let n = 4; probes().filter((h) => h.version === 1).length < 2 || probes().filter((h) => h.version === 2).length < 2; n++) await backend.accepted(n);
  assert.ok(probes().some((h) => h.version === 1 && h.family === 'unknown'), 'v1 probes say PROXY UNKNOWN');
  assert.ok(probes().some((h) => h.version === 2 && h.command === 'local'), 'v2 probes are LOCAL');
  const status = JSON.parse((await request(`http://127.0.0.1:${admin}/status`)).body.toString()) as {
    health: Record<string, Array<{ active: { healthy: boolean; lastResult: string | null; lastReason: string | null } | null }>>;
  };
  for (const name of ['ws1', 'ws2']) {
    const a = status.health[name][0].active;
    assert.equal(a?.lastResult, 'ok', `${name}: ${a?.lastReason ?? ''}`);
    assert.equal(a?.healthy, true);
  }
});

test('a reload that turns send_proxy_protocol on gives the active checks their header: a PROXY-only backend comes up', { timeout: 60_000 }, async (t) => {
  const backend = await startPpBackend(t);
  const target = `127.0.0.1:${backend.port}`;
  const active = { type: 'http' as const, path: '/healthz', interval: '150ms', timeout: '2s', fails: 1, passes: 1 };
  const config = (send: 'off' | 'v2') => ({
    workers: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { web: { targets: [target], send_proxy_protocol: send, health: { active } } },
    routes: [{ proxy: 'web' }],
  });
  const portico = await startPortico(t, config('off'));
  // without a header the backend closes every probe
  await portico.waitForLog((l) => l.msg === 'upstream target is down: active health check failed' && l.target === target, 15_000);
  const r = await reloadPortico(portico, config('v2'));
  assert.equal(r.code, 0, r.stderr);
  await portico.waitForLog((l) => l.msg === 'upstream target is up: active health check passed' && l.target === target, 15_000);
  assert.ok(backend.headers.some((h) => h.version === 2 && h.command === 'local'), 'probes open with a v2 LOCAL header');
});

async function sendAndWaitClose(port: number, bytes: Buffer, localAddress = '127.0.0.1'): Promise<void> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  await once(s, 'connect');
  const closed = closedWithoutReply(s);
  if (bytes.length > 0) s.write(bytes);
  await closed;
}

test('refused PROXY senders are counted by reason in /metrics, summed over both workers', { timeout: 60_000 }, async (t) => {
  const portico = await startPortico(t, {
    workers: 2,
    admin: { address: '127.0.0.1:0' },
    timeouts: { head: '300ms' }, // bounds the PROXY header's arrival on a plain listener
    listeners: [{ address: '127.0.0.1:0', proxy_protocol: { trusted: ['127.0.0.1/32'] } }],
    upstreams: { web: { targets: ['127.0.0.1:9'] } },
    routes: [{ proxy: 'web' }],
  });
  const admin = await adminPort(portico);
  const port = portico.ports[0];
  const header = buildProxyV1({ address: '203.0.113.1', port: 1 }, { address: '198.51.100.1', port: 80 });
  // fresh connections: the kernel spreads them over both workers
  for (let i = 0; i < 6; i++) await sendAndWaitClose(port, header, '127.0.0.2'); // outside the trusted /32
  for (let i = 0; i < 4; i++) await sendAndWaitClose(port, Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n'));
  for (let i = 0; i < 3; i++) await sendAndWaitClose(port, Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n'));
  for (let i = 0; i < 2; i++) await sendAndWaitClose(port, Buffer.from('PROXY TCP4 1.2')); // never completed
  const metrics = (await request(`http://127.0.0.1:${admin}/metrics`)).body.toString();
  const rows = metrics.split('\n').filter((l) => l.startsWith('portico_proxy_protocol_refused_total{'));
  assert.deepEqual(rows, [
    'portico_proxy_protocol_refused_total{reason="untrusted"} 6',
    'portico_proxy_protocol_refused_total{reason="missing"} 4',
    'portico_proxy_protocol_refused_total{reason="invalid"} 3',
    'portico_proxy_protocol_refused_total{reason="timeout"} 2',
  ]);
});
