// The native FastCGI exchange (PORTICO_NATIVE_EXCHANGE=1) under a flood far past what the upstream takes: a real
// php-fpm with 8 children, the upstream at max_connections 8 with a small queue (16, 300 ms), and 400 keep-alive
// clients at once, each sending 6 requests one after the other, some leaving mid-request (one in ten once its answer
// began, FPM still on it: partial.php sleeps between its parts; one in twenty halfway through a head). Every request of a client that stays gets a 200 or the queue's 503 with Retry-After
// within a bound, none a reset; the worker keeps its pid; once the clients
// are gone the worker holds no client connection, nothing busy in the pool, and its fds are back to the baseline
// beside its idle pooled connections, and a calm client after it is served by the addon again (nativeExchanges rises:
// how many the flood itself started depends on how busy the machine kept the pool, so that count is only reported).
// The same flood with the flag off is the oracle of the shape (its own counts of
// 200 and 503, under the same invariants).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { ResponseReader } from '../helpers/wire.js';
import { needNativeIo } from '../helpers/native-io.js';
import { needPeer } from '../helpers/peers.js';
import { singleWorkerResources, type WorkerResources } from '../helpers/proc-stats.js';
import { FIXTURES } from '../helpers/paths.js';
import { hasPhpFpm, startPhpFpm } from '../helpers/php-fpm.js';
import type { ConfigInput } from '../../src/config/schema.js';

const CLIENTS = 400;
const REQUESTS = 6;
/** Requests of the calm client after the flood (one keep-alive connection), at least; with the flag on, it goes on
 * until the addon started CALM_STARTED of them, at most CALM_BOUND. */
const CALM_REQUESTS = 4;
const CALM_STARTED = 3;
const CALM_BOUND = 40;
/** No answer within this is a hang. */
const ANSWER_MS = 20_000;

function config(target: string): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener()],
    upstreams: { php: { targets: [target], max_connections: 8, keepalive: { max_idle: 8 }, queue: { size: 16, timeout: '300ms' } } },
    routes: [{ match: { path: '/' }, fastcgi: { upstream: 'php', root: path.join(FIXTURES, 'php') } }],
    log: { level: 'warn', access: false },
  } as ConfigInput;
}

async function started(p: Portico): Promise<number | undefined> {
  return (await adminStatus(p)).workers[0].nativeExchanges;
}

/** No client connection, nothing busy, and (given a baseline) the fds back to it beside the idle pooled ones. */
async function quiet(p: Portico, what: string, baseline?: WorkerResources): Promise<WorkerResources> {
  return until(
    `${what}: no connection, nothing busy${baseline === undefined ? '' : `, fds back to ${baseline.fdsBeyondIdle} beside the idle pooled ones`}`,
    () => singleWorkerResources(p),
    (x) => x.connections === 0 && Object.values(x.busy).every((b) => b.active === 0 && b.inUse === 0) && (baseline === undefined || x.fdsBeyondIdle === baseline.fdsBeyondIdle),
    15_000,
  );
}

interface Tally {
  ok: number;
  busy: number;
  left: number;
  reconnects: number;
  /** Clients that left once their answer began. */
  midAnswer: number;
  /** 503s a leaving client got before its answer began. */
  retried: number;
  failures: string[];
}

/** The first bytes that come on `socket` ('' when it closes first, bounded by ANSWER_MS: a hang fails). */
function firstBytes(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => done('(nothing within the bound)'), ANSWER_MS);
    const onData = (d: Buffer) => done(d.toString('latin1'));
    const onClose = () => done('');
    function done(v: string): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(v);
    }
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Client `i`: REQUESTS requests one after the other (a new connection when an answer closed it); some leave. */
async function client(t: TestContext, port: number, i: number, tally: Tally): Promise<void> {
  let socket = await connect(port);
  t.after(() => socket.destroy());
  let reader = new ResponseReader(socket);
  const watch = (s: net.Socket) => s.on('error', (err: NodeJS.ErrnoException) => tally.failures.push(`client ${i}: ${err.code ?? err.message}`));
  watch(socket);
  for (let k = 0; k < REQUESTS; k++) {
    const target = k % 2 === 0 ? `/index.php?c=${i}&k=${k}` : `/slow.php?ms=2&c=${i}&k=${k}`;
    // one client in ten leaves at its third request once its answer began (FPM still on it: partial.php sleeps
    // between its two parts); a 503 instead, and it asks again on a new connection (at most 50 times)
    if (i % 10 === 3 && k === 2) {
      for (let attempt = 0; attempt < 50; attempt++) {
        socket.write(`GET /partial.php?ms=200&c=${i} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
        const first = await firstBytes(socket);
        socket.destroy();
        if (first.startsWith('HTTP/1.1 200 ')) {
          tally.left++;
          tally.midAnswer++;
          return;
        }
        if (!first.startsWith('HTTP/1.1 503 ')) {
          tally.failures.push(`client ${i} leaving: ${JSON.stringify(first.slice(0, 80))}`);
          return;
        }
        tally.retried++;
        socket = await connect(port);
        watch(socket);
      }
      tally.left++;
      return;
    }
    // one in twenty leaves halfway through a head
    if (i % 20 === 7 && k === 1) {
      socket.write(`GET ${target} HTTP/1.1\r\nHo`, () => socket.destroy());
      tally.left++;
      return;
    }
    socket.write(`GET ${target} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    let r;
    try {
      r = await reader.next({ timeoutMs: ANSWER_MS });
    } catch (err) {
      tally.failures.push(`client ${i} request ${k}: ${(err as Error).message}`);
      socket.destroy();
      return;
    }
    if (r.status === 200) {
      const want = k % 2 === 0 ? 'hello from php\n' : 'slow done\n';
      if (r.body.toString() !== want) tally.failures.push(`client ${i} request ${k}: 200 with ${JSON.stringify(r.body.toString().slice(0, 80))}`);
      tally.ok++;
    } else if (r.status === 503 && r.headers['retry-after'] !== undefined) tally.busy++;
    else tally.failures.push(`client ${i} request ${k}: ${r.status} ${JSON.stringify(r.headers)}`);
    if (r.headers.connection?.toLowerCase() === 'close' || reader.ended) {
      await reader.closed;
      socket.destroy();
      if (k === REQUESTS - 1) return;
      tally.reconnects++;
      socket = await connect(port);
      reader = new ResponseReader(socket);
      watch(socket);
    }
  }
  socket.end();
  await reader.closed;
}

for (const on of [true, false]) {
  const label = on ? 'native exchange on' : 'native exchange off (the oracle)';
  test(`${label}: ${CLIENTS} keep-alive clients × ${REQUESTS} requests on 8 FPM children (max_connections 8, queue 16/300 ms), some leaving mid-request: each a 200 or a 503 with Retry-After, none hangs or is reset; same worker; fds back after`, { timeout: 180_000 }, async (t) => {
    if (!needNativeIo(t) || !needPeer(t, 'php-fpm', hasPhpFpm())) return;
    const fpm = await startPhpFpm(t, { children: 8 });
    const p = await startPortico(t, config(fpm.target), { env: { PORTICO_NATIVE_EXCHANGE: on ? '1' : '0' } });
    // the baseline after a warm client came and went (scripts known, the pool's first connection open)
    const warm = new Tally0();
    await client(t, p.httpPort, 0, warm);
    assert.deepEqual(warm.failures, []);
    const baseline = await quiet(p, 'after the warm-up');
    const before = await started(p);

    const tally = new Tally0();
    await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(t, p.httpPort, i, tally)));
    assert.deepEqual(tally.failures.slice(0, 20), [], `${tally.failures.length} failures`);
    const leavers = Array.from({ length: CLIENTS }, (_, i) => i).filter((i) => i % 10 === 3 || i % 20 === 7).length;
    assert.equal(tally.left, leavers);
    const answered = (CLIENTS - leavers) * REQUESTS + Array.from({ length: CLIENTS }, (_, i) => i).filter((i) => i % 10 === 3).length * 2 + Array.from({ length: CLIENTS }, (_, i) => i).filter((i) => i % 20 === 7).length;
    assert.equal(tally.ok + tally.busy, answered, 'every request of a client that stayed answered');
    assert.ok(tally.ok > 0, 'some requests reached FPM');
    assert.ok(tally.midAnswer > 0, 'some clients left with their answer begun');
    t.diagnostic(`${label}: ${tally.ok} × 200, ${tally.busy} × 503, ${tally.reconnects} reconnects after a close, ${tally.left} clients left mid-request (${tally.midAnswer} with their answer begun, after ${tally.retried} × 503)`);

    const after = await quiet(p, 'after the flood', baseline);
    assert.equal(after.pid, baseline.pid, 'the worker was replaced');
    assert.equal((await adminStatus(p)).workers[0].restarts, 0);
    const flooded = await started(p);
    t.diagnostic(`${label}: nativeExchanges ${before} -> ${flooded} during the flood`);
    // a calm keep-alive client after the flood: the pool lends again and the addon starts its requests. Which of a
    // connection's requests the addon takes depends on timing (a lent FPM connection back, the connection marked
    // ready after its answer's batch), so the client sends until the addon started CALM_STARTED, within a bound
    const calm = await connect(p.httpPort);
    t.after(() => calm.destroy());
    const reader = new ResponseReader(calm);
    let sent = 0;
    let now = flooded;
    while (sent < CALM_REQUESTS || (on && sent < CALM_BOUND && (now ?? 0) - (flooded ?? 0) < CALM_STARTED)) {
      calm.write(`GET /index.php?calm=${sent} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
      const r = await reader.next({ timeoutMs: ANSWER_MS });
      assert.equal(r.status, 200, `calm request ${sent}`);
      assert.equal(r.body.toString(), 'hello from php\n');
      sent++;
      now = await started(p);
    }
    calm.end();
    await reader.closed;
    t.diagnostic(`${label}: nativeExchanges ${flooded} -> ${now} for ${sent} calm requests`);
    if (on) assert.ok(now !== undefined && flooded !== undefined && now - flooded >= CALM_STARTED, `the addon started ${CALM_STARTED} of the calm client's requests within ${CALM_BOUND} (${flooded} -> ${now})`);
    else assert.ok(now === undefined || now === 0, 'the flag off starts none');
  });
}

class Tally0 implements Tally {
  ok = 0;
  busy = 0;
  left = 0;
  reconnects = 0;
  midAnswer = 0;
  retried = 0;
  failures: string[] = [];
}
