// Rate and connection limits through a running Portico (`portico start`, one worker) with real clients: a burst
// admitted then 429 with Retry-After that never reaches the backend, refill after the interval, keys by header,
// WebSocket handshakes limited apart from requests (real `ws` clients), connections per IP closed at accept
// (plain, TLS before the handshake, tunnels counted), the /metrics counters and one log line per client per
// interval, not per refusal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type net from 'node:net';
import { startHttpBackend, startWsEchoBackend } from '../helpers/backends.js';
import { UnexpectedResponse, echo, openWebSocket, request, type SimpleResponse } from '../helpers/clients.js';
import { plainListener, reloadPortico, startPortico, tlsListener, type LogLine, type Portico } from '../helpers/portico.js';
import { adminUrl } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { tcpEchoServer } from '../helpers/tcp-server.js';
import { closedWithoutReply, connectPlain, connectTls } from '../helpers/wire.js';
import type { ConfigInput } from '../../src/config/schema.js';

const SETTLE_MS = 10_000;

async function metrics(portico: Portico): Promise<string> {
  const res = await request(`${adminUrl(portico)}/metrics`);
  assert.equal(res.status, 200);
  return res.body.toString();
}

/** The value of one sample in /metrics (0 when absent). */
function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Polls `done` until it holds, bounded by SETTLE_MS; fails with `what`. */
async function settled(what: string, done: () => boolean | Promise<boolean>): Promise<void> {
  await until(what, done, (ok) => ok, SETTLE_MS, 25);
}

const isLimitLine = (limit: string) => (l: LogLine) => l.limit === limit && typeof l.msg === 'string';

async function start(t: TestContext, port: number, route: Record<string, unknown>, extra: Partial<ConfigInput> = {}): Promise<Portico> {
  return startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${port}`] } },
    routes: [{ name: 'api', match: { path: '/' }, proxy: 'app', ...route }],
    admin: { address: '127.0.0.1:0' },
    ...extra,
  } as ConfigInput);
}

test('rate limit: the burst passes, then 429 with Retry-After that never reaches the backend; a token comes back after the interval', { timeout: 60_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await start(t, backend.port, { rate_limit: { requests: { rate: '4/s', burst: 3 } } }, { log: { limit_interval: '1s' } });
  const url = `http://127.0.0.1:${portico.httpPort}/x`;
  const burst = [await request(url), await request(url), await request(url)];
  assert.deepEqual(burst.map((r) => r.status), [200, 200, 200]);
  const refusedAt = Date.now();
  const refused: SimpleResponse[] = [];
  for (let i = 0; i < 20; i++) refused.push(await request(url));
  const elapsedMs = Date.now() - refusedAt;
  // 20 requests take far less than the 250 ms a token needs here on any sane machine; a token that came back
  // meanwhile is admitted, and that is right too: count what was refused
  const limited = refused.filter((r) => r.status === 429);
  assert.ok(limited.length >= 1, 'requests above the burst are refused');
  for (const r of limited) {
    assert.equal(r.headers['retry-after'], '1');
    assert.equal(r.headers.connection, 'close');
    assert.equal(r.body.toString(), '429 Too Many Requests\n');
  }
  assert.equal(backend.requests.length, 3 + (refused.length - limited.length), 'no refused request reached the backend');

  // refill: a request is admitted again once a token is back (bounded)
  let admitted: SimpleResponse | undefined;
  let extra429 = 0;
  await settled('a request admitted after the refill', async () => {
    const r = await request(url);
    if (r.status === 429) extra429++;
    else admitted = r;
    return r.status !== 429;
  });
  assert.equal(admitted?.status, 200);

  // counted in /metrics, with the route and the limit as labels
  const total = limited.length + extra429;
  await settled('portico_rate_limited_total counts every 429', async () => sample(await metrics(portico), 'portico_rate_limited_total', '{route="api",limit="requests"}') === total);

  // logged once for the first refusal, then summaries at most once per interval, never per request
  await settled('the summary line of the refusals after the first', () => {
    const lines = portico.logs.filter(isLimitLine('rate_limit.requests'));
    const summed = lines.reduce((n, l) => n + (typeof l.refused === 'number' ? l.refused : 0), 0);
    return summed === total - 1;
  });
  const lines = portico.logs.filter(isLimitLine('rate_limit.requests'));
  const firsts = lines.filter((l) => l.refused === undefined);
  assert.equal(firsts.length, 1, 'one line for the first refusal');
  assert.equal(firsts[0].level, 'warn');
  assert.equal(firsts[0].route, 'api');
  assert.equal(firsts[0].remoteAddr, '127.0.0.1');
  const spanS = (Date.now() - refusedAt) / 1000;
  assert.ok(lines.length <= 2 + Math.ceil(spanS), `${lines.length} lines for ${total} refusals over ${spanS.toFixed(1)} s (${elapsedMs} ms of requests)`);
  assert.equal(portico.logs.filter((l) => l.msg === 'request' && l.status === 429).length, 0, 'refusals are not access-logged one by one');
});

test('rate limit by header: each key has its own bucket; a request without the header is keyed by its address', { timeout: 60_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await start(t, backend.port, { rate_limit: { requests: { rate: '1/m', burst: 2, key: 'header:X-Api-Key' } } });
  const url = `http://127.0.0.1:${portico.httpPort}/x`;
  const as = (key?: string) => request(url, { headers: key === undefined ? {} : { 'x-api-key': key } }).then((r) => r.status);
  assert.deepEqual([await as('A'), await as('A'), await as('A')], [200, 200, 429]);
  assert.deepEqual([await as('B'), await as('B'), await as('B')], [200, 200, 429]);
  assert.deepEqual([await as(), await as(), await as()], [200, 200, 429]);
  assert.equal(await as('A'), 429, 'A is still refused: its bucket was not reset by the others');
  const refusedA = await request(url, { headers: { 'x-api-key': 'A' } });
  assert.ok(Number(refusedA.headers['retry-after']) > 1, `Retry-After ${refusedA.headers['retry-after']}: most of a minute`);
  assert.equal(backend.requests.length, 6);
  // a header key is never logged as sent
  await settled('the first-refusal lines', () => portico.logs.filter(isLimitLine('rate_limit.requests')).length >= 3);
  const lines = portico.logs.filter(isLimitLine('rate_limit.requests'));
  assert.equal(lines.filter((l) => typeof l.keyHash === 'string').length, 2);
  assert.equal(lines.filter((l) => l.clientKey === '127.0.0.1').length, 1);
  assert.ok(!JSON.stringify(portico.logs).includes('"A"'));
});

test('WebSocket handshakes: limited apart from requests; the refused handshake gets 429 and no tunnel', { timeout: 60_000 }, async (t) => {
  const backend = await startWsEchoBackend(t);
  const portico = await start(t, backend.port, { rate_limit: { handshakes: { rate: '1/m', burst: 2 } } });
  const wsUrl = `ws://127.0.0.1:${portico.httpPort}/ws`;
  const a = await openWebSocket(t, wsUrl);
  const b = await openWebSocket(t, wsUrl);
  assert.equal(await echo(a, 'a'), 'a');
  assert.equal(await echo(b, 'b'), 'b');
  await assert.rejects(openWebSocket(t, wsUrl), (err: unknown) => err instanceof UnexpectedResponse && err.status === 429);
  assert.equal(backend.upgrades.length, 2, 'the refused handshake never reached the backend');
  // plain requests on the route are not handshakes: not limited (the echo backend answers them 426)
  for (let i = 0; i < 4; i++) assert.equal((await request(`http://127.0.0.1:${portico.httpPort}/ws`)).status, 426);
  assert.equal(await echo(a, 'still open'), 'still open');
  await settled('portico_rate_limited_total{limit="handshakes"}', async () => sample(await metrics(portico), 'portico_rate_limited_total', '{route="api",limit="handshakes"}') === 1);
});

test('connections per IP: tunnels and keep-alive connections count; one more is closed at accept, unanswered; a slot frees when one closes', { timeout: 60_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const ws = await startWsEchoBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] }, ws: { targets: [`127.0.0.1:${ws.port}`] } },
    routes: [
      { match: { path: '/ws' }, proxy: 'ws' },
      { match: { path: '/' }, proxy: 'app' },
    ],
    limits: { connections_per_ip: 3 },
    log: { limit_interval: '1s' },
    admin: { address: '127.0.0.1:0' },
  });
  const port = portico.httpPort;
  const t1 = await openWebSocket(t, `ws://127.0.0.1:${port}/ws`);
  const t2 = await openWebSocket(t, `ws://127.0.0.1:${port}/ws`);
  const plain = await connectPlain(t, port);
  // the keep-alive connection is served (so Portico has counted it) and stays open
  const answered = new Promise<string>((resolve) => plain.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
  plain.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
  assert.match(await answered, /^HTTP\/1\.1 200 /);

  for (let i = 0; i < 3; i++) {
    const extra = await connectPlain(t, port);
    extra.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
    await closedWithoutReply(extra);
  }
  assert.equal(await echo(t1, 'open'), 'open', 'the counted tunnels are untouched');
  const refusedLines = portico.logs.filter(isLimitLine('connections_per_ip'));
  assert.ok(refusedLines.length <= 2, `${refusedLines.length} lines for 3 refusals`);

  // a tunnel closes: its slot is free again (bounded wait for Portico to see the close)
  t2.close();
  await settled('a new connection admitted after a tunnel closed', async () => {
    const r = await request(`http://127.0.0.1:${port}/x`).catch(() => null);
    return r?.status === 200;
  });
  await settled('portico_connections_refused_total{reason="connections_per_ip"}', async () => sample(await metrics(portico), 'portico_connections_refused_total', '{reason="connections_per_ip"}') >= 3);
  const first = portico.logs.filter(isLimitLine('connections_per_ip'))[0];
  assert.equal(first.level, 'warn');
  assert.equal(first.remoteAddr, '127.0.0.1');
});

test('connections per IP on TLS: one more is closed before the handshake', { timeout: 60_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    limits: { connections_per_ip: 2 },
  });
  const a = await connectTls(t, portico.tlsPort);
  const b = await connectTls(t, portico.tlsPort);
  // both are counted once Portico serves them
  for (const s of [a, b]) {
    const answered = new Promise<string>((resolve) => s.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
    s.write('GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n');
    assert.match(await answered, /^HTTP\/1\.1 200 /);
  }
  await assert.rejects(connectTls(t, portico.tlsPort), 'the third handshake never completes');
  b.destroy();
  await settled('a TLS connection admitted after one closed', async () => {
    const r = await request(`https://localhost:${portico.tlsPort}/x`).catch(() => null);
    return r?.status === 200;
  });
});

test('connections per IP behind a PROXY-protocol listener: keyed by the header\'s client, IPv6 by /64, not by the balancer\'s address', { timeout: 60_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0', proxy_protocol: { trusted: ['127.0.0.1/32'] } }],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    limits: { connections_per_ip: 1 },
  });
  const port = portico.ports[0];
  /** A connection from the balancer naming `source`, with one request answered (so it is counted) and kept open. */
  const served = async (source: string): Promise<string> => {
    const s = await connectPlain(t, port);
    const family = source.includes(':') ? 'TCP6' : 'TCP4';
    const dest = source.includes(':') ? '2001:db8:ffff::1' : '192.0.2.1';
    s.on('error', () => {}); // a refused connection may end in a reset: that is a close here
    const reply = new Promise<string>((resolve) => {
      s.once('data', (d: Buffer) => resolve(d.toString('latin1')));
      s.once('close', () => resolve('closed'));
    });
    s.write(`PROXY ${family} ${source} ${dest} 40000 80\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n`);
    return (await reply).slice(0, 15);
  };
  assert.equal(await served('203.0.113.1'), 'HTTP/1.1 200 OK');
  assert.equal(await served('203.0.113.2'), 'HTTP/1.1 200 OK', 'another client through the same balancer');
  assert.equal(await served('203.0.113.1'), 'closed', 'the first client\'s second connection');
  assert.equal(await served('2001:db8:1:2::1'), 'HTTP/1.1 200 OK');
  assert.equal(await served('2001:db8:1:2:ffff::9'), 'closed', 'same /64');
  assert.equal(await served('2001:db8:1:3::1'), 'HTTP/1.1 200 OK', 'another /64');
});

test('connections per IP on a tcp listener: relays count while open, one more is closed unanswered, the slot frees at close', { timeout: 60_000 }, async (t) => {
  const echoPort = await tcpEchoServer(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
    upstreams: { echo: { targets: [`127.0.0.1:${echoPort}`] } },
    limits: { connections_per_ip: 1 },
  });
  const port = portico.ports[0];
  const relayed = async (): Promise<net.Socket | null> => {
    const s = await connectPlain(t, port);
    // a refused connection may end in a reset (our bytes were unread): that is a close here
    s.on('error', () => {});
    const reply = new Promise<string>((resolve) => {
      s.once('data', (d: Buffer) => resolve(d.toString()));
      s.once('close', () => resolve('closed'));
    });
    s.write('ping');
    return (await reply) === 'ping' ? s : null;
  };
  const first = await relayed();
  assert.ok(first !== null, 'the first connection is relayed');
  assert.equal(await relayed(), null, 'a second one from the same address is closed');
  first.destroy();
  let again: net.Socket | null = null;
  await settled('a relay admitted after the first closed', async () => (again = await relayed()) !== null);
  assert.ok(again !== null);
});

/** Sends one request on a raw connection and resolves with the status line, or "closed" when none came. */
async function statusLine(t: TestContext, port: number): Promise<{ socket: net.Socket; line: string }> {
  const socket = await connectPlain(t, port);
  socket.on('error', () => {}); // a refused connection may end in a reset: that is a close here
  const reply = new Promise<string>((resolve) => {
    socket.once('data', (d: Buffer) => resolve(d.toString('latin1').split('\r\n')[0]));
    socket.once('close', () => resolve('closed'));
  });
  socket.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
  return { socket, line: await reply };
}

test('reload: an unchanged rate limit keeps its buckets; a changed one starts fresh', { timeout: 90_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const config = (rate: string, header: string): ConfigInput => ({
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ name: 'api', match: { path: '/' }, proxy: 'app', request_headers: { set: { 'X-Gen': header } }, rate_limit: { requests: { rate, burst: 1 } } }],
  });
  const portico = await startPortico(t, config('1/m', 'one'));
  const url = `http://127.0.0.1:${portico.httpPort}/x`;
  assert.equal((await request(url)).status, 200);
  assert.equal((await request(url)).status, 429);
  const reloaded = await reloadPortico(portico, config('1/m', 'two'));
  assert.equal(reloaded.code, 0, reloaded.stderr);
  assert.equal((await request(url)).status, 429, 'the bucket survived the reload');
  const changed = await reloadPortico(portico, config('2/m', 'three'));
  assert.equal(changed.code, 0, changed.stderr);
  assert.equal((await request(url)).status, 200, 'a changed limit starts with full buckets');
  assert.equal(backend.requests.at(-1)?.headers['x-gen'], 'three');
});

test('reload: open connections stay counted against connections_per_ip', { timeout: 90_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const config = (header: string): ConfigInput => ({
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app', request_headers: { set: { 'X-Gen': header } } }],
    limits: { connections_per_ip: 2 },
  });
  const portico = await startPortico(t, config('one'));
  const port = portico.httpPort;
  const a = await statusLine(t, port);
  const b = await statusLine(t, port);
  assert.deepEqual([a.line, b.line], ['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
  const reloaded = await reloadPortico(portico, config('two'));
  assert.equal(reloaded.code, 0, reloaded.stderr);
  assert.equal((await statusLine(t, port)).line, 'closed', 'the two kept-alive connections still count');
  a.socket.destroy();
  await settled('a connection admitted after one of the two closed', async () => (await statusLine(t, port)).line === 'HTTP/1.1 200 OK');
  assert.equal(backend.requests.at(-1)?.headers['x-gen'], 'two');
});
