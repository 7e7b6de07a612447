// The native FastCGI exchange (src/native/exchange.h, handlers/fastcgi-native.ts, PORTICO_NATIVE_EXCHANGE=1) against
// the real `portico start` (one worker) and a real php-fpm: a kept-alive client's requests after the first two are
// started by the addon (nativeExchanges in /status counts them) with the same answers, params and access-log fields as
// the JavaScript path gives (a second Portico with the flag off answers the same requests); pipelined requests and a
// head split over two reads stay JavaScript's; a deleted script is a 404 within the script cache's time and its entry
// goes; FPM closing its kept connections (pm.max_requests) costs no request; a client that leaves mid-exchange and a
// reload while exchanges run end as on the JavaScript path; a target drained out of rotation gets no request from the
// addon. The route matches a path prefix (`/`); the seed's `path_regex: '\.php$'` is matched by the addon's table too
// (test/fuzz/native-route-table.fuzz.test.ts).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { chmodSync, cpSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { plainListener, reloadPortico, startPortico, writeConfig, type LogLine, type Portico } from '../helpers/portico.js';
import { adminStatus, adminUrl, nativeExchanges } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { connectPlain, ResponseReader, type WireResponse } from '../helpers/wire.js';
import { needNativeIo } from '../helpers/native-io.js';
import { needPeer } from '../helpers/peers.js';
import { FIXTURES } from '../helpers/paths.js';
import { hasPhpFpm, startPhpFpm, type PhpFpm, type PhpFpmOptions } from '../helpers/php-fpm.js';
import type { ConfigInput } from '../../src/config/schema.js';

const ON = { env: { PORTICO_NATIVE_EXCHANGE: '1' } };
const OFF = { env: { PORTICO_NATIVE_EXCHANGE: '0' } };

function config(target: string, root = path.join(FIXTURES, 'php'), access = false, extraRoutes: unknown[] = []): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener()],
    upstreams: { php: { targets: [target], max_connections: 4, keepalive: { max_idle: 4 } } },
    routes: [...extraRoutes, { match: { path: '/' }, fastcgi: { upstream: 'php', root } }],
    log: { level: 'warn', access },
  } as ConfigInput;
}


async function fpmOrSkip(t: TestContext, opts: PhpFpmOptions = {}): Promise<PhpFpm | undefined> {
  if (!needNativeIo(t) || !needPeer(t, 'php-fpm', hasPhpFpm())) return undefined;
  return startPhpFpm(t, { children: 4, ...opts });
}

/** One keep-alive connection: requests one after the other, each answer read whole before the next is sent. */
class Client {
  readonly socket: net.Socket;
  readonly reader: ResponseReader;
  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    this.reader = new ResponseReader(socket);
  }
  static async open(t: TestContext, p: Portico): Promise<Client> {
    return new Client(await connectPlain(t, p.httpPort));
  }
  async get(target: string, extra = ''): Promise<WireResponse> {
    this.socket.write(`GET ${target} HTTP/1.1\r\nHost: a.test\r\n${extra}\r\n`);
    return this.reader.next();
  }
}

/** A client that made its first requests (JS's: the connection is marked ready after one, the script handed after two). */
async function warmClient(t: TestContext, p: Portico, target = '/index.php'): Promise<Client> {
  const c = await Client.open(t, p);
  for (let i = 0; i < 3; i++) assert.equal((await c.get(target)).status, 200);
  return c;
}

/**
 * Requests `target` on `c` until the addon starts one: a script's entry in the addon ends a little before JS's, and
 * the request JS then gets renews it (a native start in flight is what the caller tests next).
 */
async function nativeNow(p: Portico, c: Client, target: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const before = await nativeExchanges(p);
    assert.equal((await c.get(target)).status, 200);
    if ((await nativeExchanges(p)) > before) return;
  }
  assert.fail(`${target}: never started by the addon`);
}

/**
 * Sends `target` on `c` until the addon starts one and returns that one's answer, still in flight (a slow script):
 * whether the addon takes a given request depends on timing (the connection is marked ready again only once the
 * batch holding its last answer ended, and a lent FPM connection must be back), so a request JS took is answered and
 * read, and the next one is sent.
 */
async function inFlightNative(p: Portico, c: Client, target: string): Promise<{ answer: Promise<WireResponse> }> {
  for (let i = 0; i < 20; i++) {
    const before = await nativeExchanges(p);
    let answered = false;
    const answer = c.get(target);
    answer.then(
      () => (answered = true),
      () => (answered = true),
    );
    await until('started or answered', async () => (answered ? -1 : await nativeExchanges(p)), (n) => n === -1 || n > before);
    if ((await nativeExchanges(p)) > before) return { answer }; // (an object: an async function's promise would wait for it)
    assert.equal((await answer).status, 200);
  }
  assert.fail(`${target}: never started by the addon`);
}

/** env.php's params, without those of the connection itself (ports, which differ between the two instances). */
function params(r: WireResponse): Record<string, unknown> {
  const server = (JSON.parse(r.body.toString('utf8')) as { server: Record<string, unknown> }).server;
  delete server.REMOTE_PORT;
  delete server.SERVER_PORT;
  return server;
}

/** An access-log line without what differs per instance, connection and run. */
function logFields(l: LogLine): Record<string, unknown> {
  const { time, pid, conn, durationMs, reqId, ...rest } = l;
  void time, pid, conn, durationMs, reqId;
  delete rest.host;
  return rest;
}

const requestLines = (p: Portico): LogLine[] => p.logs.filter((l) => l.msg === 'request');

test('native exchange: started by the addon after a connection\'s first requests, with the answers, params and access-log fields of the JavaScript path', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const on = await startPortico(t, config(fpm.target, undefined, true), ON);
  const off = await startPortico(t, config(fpm.target, undefined, true), OFF);
  const requests: Array<[string, string]> = [
    ['/index.php', ''],
    ['/env.php?a=1&b=%20x', 'Cookie: a=1\r\nCookie: b=2\r\nX-Custom: v\r\nUser-Agent: t/1\r\n'],
    ['/index.php', 'Connection: keep-alive\r\n'],
    ['/env.php', 'X-Forwarded-For: 192.0.2.1\r\nAccept: */*\r\n'],
    ['/status.php?code=404', ''],
    ['/index.php', ''],
  ];
  const run = async (p: Portico): Promise<WireResponse[]> => {
    const c = await warmClient(t, p, '/env.php');
    // each script's first request is JavaScript's: its pairs reach the addon then
    assert.equal((await c.get('/index.php')).status, 200);
    assert.equal((await c.get('/status.php?code=404')).status, 404);
    const before = await nativeExchanges(p);
    const out: WireResponse[] = [];
    for (const [target, extra] of requests) out.push(await c.get(target, extra));
    const after = await nativeExchanges(p);
    c.socket.destroy();
    return [...out, { status: after - before } as WireResponse];
  };
  const a = await run(on);
  const b = await run(off);
  // all of them as a rule; one or two JS's when they fall where a script's entry in the addon has ended and JS's not yet
  // (its last REFRESH_AHEAD_MS: the request JS gets there renews it), which a slow run (ASan) reaches
  const nativeStarts = a.pop()!.status;
  assert.ok(nativeStarts >= requests.length - 2, `started by the addon: ${nativeStarts} of ${requests.length}`);
  assert.equal(b.pop()!.status, 0, 'none with the flag off');
  for (let i = 0; i < requests.length; i++) {
    const [target] = requests[i];
    assert.equal(a[i].status, b[i].status, target);
    assert.deepEqual(a[i].headers, b[i].headers, target);
    if (target.startsWith('/env.php')) assert.deepEqual(params(a[i]), params(b[i]), target);
    else assert.equal(a[i].raw.toString('latin1'), b[i].raw.toString('latin1'), target);
  }
  // the same access-log lines (bytesIn: the records' length, as the JavaScript path counts it)
  await until('access lines', () => requestLines(on).length + requestLines(off).length, (n) => n === 2 * (requests.length + 5));
  const la = requestLines(on).slice(5).map(logFields);
  const lb = requestLines(off).slice(5).map(logFields);
  assert.deepEqual(la, lb);
  assert.ok(la.every((l) => typeof l.bytesIn === 'number' && l.bytesIn > 0));
});

test('native exchange: pipelined requests and a head split over two reads are JavaScript\'s', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const p = await startPortico(t, config(fpm.target), ON);
  const c = await warmClient(t, p);
  assert.equal((await c.get('/index.php')).status, 200);
  const base = await nativeExchanges(p);
  assert.ok(base > 0, 'the warm client is served by the addon');
  // two requests in one write: one read holds both heads
  c.socket.write('GET /index.php?p=1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /index.php?p=2 HTTP/1.1\r\nHost: a.test\r\n\r\n');
  assert.equal((await c.reader.next()).status, 200);
  assert.equal((await c.reader.next()).status, 200);
  assert.equal(await nativeExchanges(p), base, 'pipelined: not started by the addon');
  // a head in two writes, the second once the first was surely read (the worker's round trip to FPM for a status
  // request in between is not needed: the first write's bytes are read by the next wake-up, 100 ms is plenty)
  c.socket.write('GET /index.php?split=1 HTTP/1.1\r\nHo');
  await new Promise((r) => setTimeout(r, 150));
  c.socket.write('st: a.test\r\n\r\n');
  assert.equal((await c.reader.next()).status, 200);
  assert.equal(await nativeExchanges(p), base, 'split head: not started by the addon');
  // and the connection is ready again afterwards
  assert.equal((await c.get('/index.php')).status, 200);
  assert.equal((await c.get('/index.php')).status, 200);
  assert.ok((await nativeExchanges(p)) > base, 'ready again after the JavaScript exchanges');
});

test('native exchange: a deleted script is a 404 within the script cache\'s time, and its entry goes', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const root = mkdtempSync(path.join(tmpdir(), 'portico-nx-'));
  chmodSync(root, 0o755); // FPM's workers run as nobody when the tests run as root
  t.after(() => rmSync(root, { recursive: true, force: true }));
  cpSync(path.join(FIXTURES, 'php', 'index.php'), path.join(root, 'gone.php'));
  cpSync(path.join(FIXTURES, 'php', 'index.php'), path.join(root, 'index.php'));
  const p = await startPortico(t, config(fpm.target, root), ON);
  const c = await warmClient(t, p, '/gone.php');
  assert.equal((await c.get('/gone.php')).status, 200);
  assert.ok((await nativeExchanges(p)) > 0);
  unlinkSync(path.join(root, 'gone.php'));
  // served from the caches (FPM's own 404, the connection kept) until they expire (1 s, as JS's known scripts), then
  // Portico's 404 without asking FPM (Connection: close)
  const canned = (r: WireResponse): boolean => r.status === 404 && r.headers.server === 'portico';
  const r = await until('Portico\'s 404 for the deleted script', () => c.get('/gone.php'), (x) => canned(x) || x.status !== 404, 5_000, 20);
  assert.ok(canned(r), `status ${r.status}`);
  // a ready connection's request for it is not the addon's any more: the native entry went with the script
  const c2 = await warmClient(t, p);
  const n = await nativeExchanges(p);
  assert.ok(canned(await c2.get('/gone.php')));
  assert.equal(await nativeExchanges(p), n, 'not started by the addon');
});

test('native exchange: FPM closing its kept connections (pm.max_requests) costs no request', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { children: 2, maxRequests: 3 });
  if (fpm === undefined) return;
  const p = await startPortico(t, config(fpm.target), ON);
  const clients = [await warmClient(t, p), await warmClient(t, p)];
  for (let i = 0; i < 30; i++) {
    const rs = await Promise.all(clients.map((c) => c.get('/index.php')));
    for (const r of rs) assert.equal(r.status, 200, `round ${i}`);
  }
  assert.ok((await nativeExchanges(p)) > 10, 'started by the addon');
});

test('native exchange: a client leaving mid-exchange and a reload while exchanges run end as on the JavaScript path', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const p = await startPortico(t, config(fpm.target, undefined, true), ON);
  // a client that leaves while FPM works on its request
  const gone = await warmClient(t, p, '/slow.php?ms=1');
  await nativeNow(p, gone, '/slow.php?ms=1');
  (await inFlightNative(p, gone, '/slow.php?ms=300')).answer.catch(() => {});
  gone.socket.destroy();
  await p.waitForLog((l) => l.msg === 'request' && l.path === '/slow.php?ms=300', 5_000);
  // requests in flight across a reload finish; the next ones are served (by the addon again, under the new routes)
  const cs = [await warmClient(t, p, '/slow.php?ms=1'), await warmClient(t, p, '/slow.php?ms=1')];
  await nativeNow(p, cs[0], '/slow.php?ms=1');
  // one started by the addon, one beside it (the addon's or JavaScript's, as the lent connections fall)
  const inFlight = [(await inFlightNative(p, cs[0], '/slow.php?ms=600')).answer, cs[1].get('/slow.php?ms=600')];
  await writeConfig(p, config(fpm.target, undefined, true, [{ match: { path: '/other' }, return: { status: 204 } }]));
  const reload = await reloadPortico(p);
  assert.equal(reload.code, 0, reload.stderr);
  for (const r of await Promise.all(inFlight)) {
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'slow done\n');
  }
  for (const c of cs) for (let i = 0; i < 3; i++) assert.equal((await c.get('/index.php')).status, 200);
  const after = await nativeExchanges(p);
  const c2 = await warmClient(t, p);
  assert.equal((await c2.get('/index.php')).status, 200);
  assert.ok((await nativeExchanges(p)) > after, 'started by the addon under the new config');
  assert.equal((await c2.get('/other')).status, 204);
  const s = await adminStatus(p);
  assert.equal(s.workers[0].restarts, 0);
});

test('native exchange: a target out of rotation (drained) gets no request from the addon: its lent connections are taken back', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t) || !needPeer(t, 'php-fpm', hasPhpFpm())) return;
  const a = await startPhpFpm(t, { children: 4, ini: { user_agent: 'fpm-a' } });
  const b = await startPhpFpm(t, { children: 4, ini: { user_agent: 'fpm-b' } });
  const cfg = config(a.target);
  (cfg.upstreams as Record<string, Record<string, unknown>>).php = { targets: [a.target, b.target], max_connections: 4, keepalive: { max_idle: 4 } };
  const p = await startPortico(t, cfg, ON);
  // ready clients whose requests the addon sent to both targets: each target has an idle connection lent to it
  const cs = [await warmClient(t, p, '/which.php'), await warmClient(t, p, '/which.php')];
  await nativeNow(p, cs[0], '/which.php');
  const seen = new Set<string>();
  const before = await nativeExchanges(p);
  // (rounds until 8 were the addon's: under load a request now and then finds its connection not ready yet, JS's)
  for (let i = 0; i < 20 && (seen.size < 2 || (await nativeExchanges(p)) < before + 8); i++) for (const c of cs) seen.add((await c.get('/which.php')).body.toString().trim());
  assert.ok((await nativeExchanges(p)) >= before + 8, 'started by the addon');
  assert.deepEqual([...seen].sort(), ['fpm-a', 'fpm-b']);
  // fpm-a leaves rotation while its connection is idle and lent: the pool takes it back from the addon
  const admin = adminUrl(p);
  const drained = await fetch(`${admin}/upstreams/php/targets/${a.target}/drain`, { method: 'POST', headers: { 'x-portico-admin': '1' } });
  assert.equal(drained.status, 200);
  await until('drained in the worker', async () => (await adminStatus(p)).upstreams.php, (ts) => ts.some((x) => x.target === a.target && !x.available));
  const mid = await nativeExchanges(p);
  const after = new Set<string>();
  for (let i = 0; i < 20 && (i < 4 || (await nativeExchanges(p)) < mid + 6); i++) for (const c of cs) after.add((await c.get('/which.php')).body.toString().trim());
  assert.deepEqual([...after], ['fpm-b']);
  assert.ok((await nativeExchanges(p)) >= mid + 6, 'still started by the addon, on the target in rotation');
});

test('native exchange: a pool at max_connections: JavaScript\'s queued acquires get connections while the addon takes lent ones; none waits out its queue timeout', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { children: 2 });
  if (fpm === undefined) return;
  const cfg = config(fpm.target);
  // two connections for six clients: most requests wait in the queue (2 s), the addon starts those that find one lent
  (cfg.upstreams as Record<string, Record<string, unknown>>).php = { targets: [fpm.target], max_connections: 2, keepalive: { max_idle: 2 }, queue: { size: 64, timeout: '2s' } };
  const p = await startPortico(t, cfg, ON);
  const cs: Client[] = [];
  for (let i = 0; i < 6; i++) cs.push(await warmClient(t, p, '/slow.php?ms=1'));
  const before = await nativeExchanges(p);
  for (let round = 0; round < 15; round++) {
    const rs = await Promise.all(cs.map((c) => c.get('/slow.php?ms=5')));
    for (const r of rs) assert.equal(r.status, 200, `round ${round}: ${r.status} ${r.body.toString()}`);
  }
  assert.ok((await nativeExchanges(p)) > before, 'some started by the addon');
  const s = await adminStatus(p);
  assert.equal(s.workers[0].restarts, 0);
});
