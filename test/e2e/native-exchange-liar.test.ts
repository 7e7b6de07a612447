// The native FastCGI exchange (PORTICO_NATIVE_EXCHANGE=1, src/native/exchange.h) against a FastCGI application that
// lies, on exchanges the addon started (nativeExchanges in /status rose for the request): malformed records (a bad
// version before the head, a bad version or another request id after it), bytes on an idle kept connection before
// any request was written on it, a close after END_REQUEST although the connection was to be kept, a close after a
// partial answer, a close before any answer (the retry rule of a reused connection). Each case gives the client the
// same bytes as the JavaScript path (a second Portico with the flag off), and the worker ends with no client
// connection, nothing busy and no fd beyond its idle pooled connections (it did not crash: the same pid).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { nativeExchanges } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';
import { needNativeIo } from '../helpers/native-io.js';
import { singleWorkerResources, type WorkerResources } from '../helpers/proc-stats.js';
import { FIXTURES } from '../helpers/paths.js';
import { fcgiRecords } from '../helpers/fcgi-records.js';
import { startPeer } from '../helpers/tcp-server.js';
import type { ConfigInput } from '../../src/config/schema.js';

const HEAD = 'X-Powered-By: fake\r\nContent-type: text/html; charset=UTF-8\r\n\r\n';

function rec(type: number, content: string, id = 1, version = 1): Buffer {
  const c = Buffer.from(content, 'latin1');
  return Buffer.concat([Buffer.from([version, type, id >> 8, id & 255, c.length >> 8, c.length & 255, 0, 0]), c]);
}
const END = Buffer.from([1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const WHOLE = Buffer.concat([rec(6, `${HEAD}hello`), rec(6, ''), END]);

/** What the application does with each case's request (the QUERY_STRING up to its first `&`). */
type Lie = 'ok' | 'garbage' | 'bad-version' | 'wrong-id' | 'stray' | 'end-close' | 'partial-close' | 'close-before';
const CASES: Lie[] = ['garbage', 'bad-version', 'wrong-id', 'stray', 'end-close', 'partial-close', 'close-before'];

interface Liar {
  readonly target: string;
  /** The application side of the connection each case's request came on, latest last. */
  readonly served: Array<{ what: string; socket: net.Socket }>;
}

async function startLiar(t: TestContext): Promise<Liar> {
  const served: Liar['served'] = [];
  const seen = new Set<string>();
  const target = await startPeer(t, (socket) => {
    socket.setNoDelay(true);
    let query = '';
    socket.on(
      'data',
      fcgiRecords((type, content, pairs) => {
        if (pairs !== undefined) query = pairs?.get('QUERY_STRING') ?? '';
        if (type !== 5 || content.length !== 0) return;
        const what = query.split('&')[0] as Lie;
        served.push({ what, socket });
        const first = !seen.has(query);
        seen.add(query);
        if (what === 'garbage') socket.write(Buffer.concat([rec(6, `${HEAD}x`, 1, 9), END]));
        else if (what === 'bad-version') socket.write(Buffer.concat([rec(6, `${HEAD}part`), rec(6, 'forged', 1, 2), END]));
        else if (what === 'wrong-id') socket.write(Buffer.concat([rec(6, `${HEAD}part`), rec(6, 'forged', 2), END]));
        // the whole answer, then an answer to no request on the idle connection once the first was taken
        else if (what === 'stray') socket.write(WHOLE, () => setTimeout(() => socket.write(Buffer.concat([rec(6, `${HEAD}forged`), rec(6, ''), END])), 20));
        else if (what === 'end-close') socket.end(WHOLE);
        else if (what === 'partial-close') socket.write(rec(6, `${HEAD}part`), () => socket.destroy());
        else if (what === 'close-before' && first) socket.destroy();
        else socket.write(WHOLE);
      }),
    );
  });
  return { target, served };
}

function config(target: string): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener()],
    upstreams: { php: { targets: [target], max_connections: 4, keepalive: { max_idle: 4 } } },
    routes: [{ match: { path: '/' }, fastcgi: { upstream: 'php', root: path.join(FIXTURES, 'php') } }],
    log: { level: 'warn', access: false },
  } as ConfigInput;
}


let nonce = 0;

/**
 * Case `what` on a warm keep-alive connection (three answers first: the connection is ready and the script's pairs
 * are the addon's), then, when the connection is kept, one more request with Connection: close: every byte the
 * client got, and whether the addon started the case's request. `native`: tries again on a new connection until
 * the addon started it (whether it takes a given request depends on timing: a lent connection must be back).
 */
async function runCase(t: TestContext, liar: Liar, p: Portico, what: Lie, native: boolean): Promise<string> {
  for (let attempt = 0; attempt < 30; attempt++) {
    const socket = await connectPlain(t, p.httpPort);
    socket.on('error', () => {});
    const reader = new ResponseReader(socket);
    for (let i = 0; i < 3; i++) {
      socket.write(`GET /index.php?ok&n=${nonce++} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
      assert.equal((await reader.next()).status, 200);
    }
    const before = await nativeExchanges(p);
    socket.write(`GET /index.php?${what}&n=${nonce++} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    let bytes: string;
    try {
      bytes = (await reader.next()).raw.toString('latin1');
      if (what === 'stray') {
        const fpmSide = liar.served.filter((s) => s.what === what).at(-1)!.socket;
        await until('stray: the connection that spoke unasked is closed', () => fpmSide.destroyed || fpmSide.readableEnded, (x) => x, 5_000);
      }
      socket.write(`GET /index.php?ok&n=${nonce++} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
      bytes += (await reader.rest(15_000)).toString('latin1');
    } catch {
      await reader.closed;
      bytes = reader.pending.toString('latin1');
    }
    socket.destroy();
    const mine = (await nativeExchanges(p)) > before;
    if (!native || mine) return bytes.replace(/\r\nDate: [^\r]*/g, '');
  }
  assert.fail(`${what}: never started by the addon`);
}

async function quiet(p: Portico, baseline: WorkerResources | undefined, what: string): Promise<WorkerResources> {
  const r = await until(
    `${what}: no connection, nothing busy${baseline === undefined ? '' : `, fds back to ${baseline.fdsBeyondIdle}`}`,
    () => singleWorkerResources(p),
    (x) => x.connections === 0 && Object.values(x.busy).every((b) => b.active === 0 && b.inUse === 0) && (baseline === undefined || x.fdsBeyondIdle === baseline.fdsBeyondIdle),
    10_000,
  );
  if (baseline !== undefined) assert.equal(r.pid, baseline.pid, `${what}: the worker was replaced`);
  return r;
}

test('native exchange: a lying FastCGI application on exchanges the addon started gets the client bytes of the JavaScript path; no crash, no leaked fd', { timeout: 120_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const liar = await startLiar(t);
  const on = await startPortico(t, config(liar.target), { env: { PORTICO_NATIVE_EXCHANGE: '1' } });
  const off = await startPortico(t, config(liar.target), { env: { PORTICO_NATIVE_EXCHANGE: '0' } });
  const baseOn = await quiet(on, undefined, 'start');
  const baseOff = await quiet(off, undefined, 'start');
  for (const what of CASES) {
    const a = await runCase(t, liar, on, what, true);
    const b = await runCase(t, liar, off, what, false);
    assert.equal(a, b, `${what}: the same bytes with the flag on and off`);
    assert.doesNotMatch(a, /forged/, `${what}: nothing after the lie reaches the client`);
    if (what === 'garbage') assert.match(a, /^HTTP\/1\.1 502 /, `${what}: 502`);
    else assert.match(a, /^HTTP\/1\.1 200 /, `${what}: its head`);
    const whole = /hello\r\n0\r\n\r\nHTTP\/1\.1 200 [^]*hello\r\n0\r\n\r\n$/.test(a);
    if (what === 'stray' || what === 'end-close' || what === 'close-before') assert.ok(whole, `${what}: both answers whole: ${JSON.stringify(a)}`);
    else if (what !== 'garbage') assert.doesNotMatch(a, /\r\n0\r\n\r\n/, `${what}: the answer is cut: ${JSON.stringify(a)}`);
    await quiet(on, baseOn, `${what} (flag on)`);
    await quiet(off, baseOff, `${what} (flag off)`);
  }
});
