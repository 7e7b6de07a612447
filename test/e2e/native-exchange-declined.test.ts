// The native FastCGI exchange (PORTICO_NATIVE_EXCHANGE=1) when the send to the lent FPM connection fails (io.cc
// StartExchange, exchange.cc Unstarted): the addon picked a connection that looked usable, but its peer had already
// reset it. usable() only sees what the addon's loop already read, so the reset must be unread when the client's
// request is: the worker is stopped (SIGSTOP), the request reaches its socket (its Recv-Q, as ss shows), then the
// application resets its one connection (SO_LINGER 0) and the worker's side leaves ESTABLISHED, and the worker goes
// on (SIGCONT). Its next epoll batch lists the client first (the kernel's ready list keeps the order sockets became
// ready), so the addon starts the exchange on the reset connection, the send fails, and the read is JavaScript's: the
// client still gets its answer (on a new FPM connection), `nativeExchangesDeclined` in /status counts it, and
// `nativeExchanges` does not move. The worker keeps its pid and ends with no client connection and nothing busy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type net from 'node:net';
import path from 'node:path';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';
import { needNativeIo } from '../helpers/native-io.js';
import { singleWorkerResources } from '../helpers/proc-stats.js';
import { FIXTURES } from '../helpers/paths.js';
import { fcgiRecords } from '../helpers/fcgi-records.js';
import { startPeer } from '../helpers/tcp-server.js';
import type { ConfigInput } from '../../src/config/schema.js';

const HEAD = 'X-Powered-By: fake\r\nContent-type: text/html; charset=UTF-8\r\n\r\n';

function rec(type: number, content: string): Buffer {
  const c = Buffer.from(content, 'latin1');
  return Buffer.concat([Buffer.from([1, type, 0, 1, c.length >> 8, c.length & 255, 0, 0]), c]);
}
const END = Buffer.from([1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const WHOLE = Buffer.concat([rec(6, `${HEAD}hello`), rec(6, ''), END]);

/** Established TCP sockets matching the ss filter `filter` (one line each, without a header). */
function established(filter: string): string[] {
  const out = execFileSync('ss', ['-tnH', 'state', 'established', filter], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() !== '');
}

async function counts(p: Portico): Promise<{ started: number; declined: number }> {
  const w = (await adminStatus(p)).workers[0];
  return { started: w.nativeExchanges ?? 0, declined: w.nativeExchangesDeclined ?? -1 };
}

test('native exchange: the send to a lent FPM connection the application had reset fails; the client gets its answer through JavaScript and the read counts as declined', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  // the application: every request answered whole on a kept connection; the sockets it holds, oldest first
  const held: net.Socket[] = [];
  const target = await startPeer(t, (socket) => {
    socket.setNoDelay(true);
    held.push(socket);
    socket.on('close', () => held.splice(held.indexOf(socket), 1));
    socket.on(
      'data',
      fcgiRecords((type, content) => {
        if (type === 5 && content.length === 0) socket.write(WHOLE);
      }),
    );
  });
  const fpmPort = Number(target.split(':')[1]);
  const config = {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener()],
    // one FPM connection: the one lent to the addon between requests is the one the test resets
    upstreams: { php: { targets: [target], max_connections: 1, keepalive: { max_idle: 1 } } },
    routes: [{ match: { path: '/' }, fastcgi: { upstream: 'php', root: path.join(FIXTURES, 'php') } }],
    log: { level: 'warn', access: false },
  } as ConfigInput;
  const p = await startPortico(t, config, { env: { PORTICO_NATIVE_EXCHANGE: '1' } });
  const pid = (await singleWorkerResources(p)).pid!;

  // warm: requests on one keep-alive connection until the addon started one (its connection is then lent again and
  // the client marked ready: both happen in the batch that ended the exchange, before /status is answered)
  const client = await connectPlain(t, p.httpPort);
  const reader = new ResponseReader(client);
  let n = 0;
  const get = async (): Promise<string> => {
    client.write(`GET /index.php?n=${n++} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    const r = await reader.next();
    assert.equal(r.status, 200);
    return r.body.toString();
  };
  let before = await counts(p);
  for (let i = 0; i < 20; i++) {
    assert.equal(await get(), 'hello');
    const now = await counts(p);
    const mine = now.started > before.started;
    before = now;
    if (mine) break;
    assert.ok(i < 19, 'the addon never started a request');
  }
  assert.equal(held.length, 1, 'one FPM connection');
  assert.ok(before.declined >= 0, 'nativeExchangesDeclined in /status');

  // the worker stopped: the request waits in its socket, then the application resets its connection
  process.kill(pid, 'SIGSTOP');
  let stopped = true;
  const resume = () => {
    if (stopped) process.kill(pid, 'SIGCONT');
    stopped = false;
  };
  t.after(resume);
  const fpmSide = held[0];
  client.write(`GET /index.php?n=${n++} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
  const waiting = `( sport = :${p.httpPort} and dport = :${client.localPort} )`;
  await until('the request queued on the stopped worker\'s socket', () => established(waiting), (rows) => rows.length === 1 && Number(rows[0].trim().split(/\s+/)[0]) > 0, 5_000, 5);
  fpmSide.resetAndDestroy();
  await until('the worker\'s FPM connection reset', () => established(`( dport = :${fpmPort} )`), (rows) => rows.length === 0, 5_000, 5);
  resume();

  const r = await reader.next();
  assert.equal(r.status, 200, 'the client still gets its answer');
  assert.equal(r.body.toString(), 'hello');
  const after = await counts(p);
  assert.equal(after.started, before.started, 'the addon did not start it');
  assert.equal(after.declined, before.declined + 1, 'the read went to JavaScript, counted as declined');
  assert.equal(held.length, 1, 'JavaScript answered on a new FPM connection');
  assert.notEqual(held[0], fpmSide);

  // the connection goes on, and the worker ends clean
  assert.equal(await get(), 'hello');
  client.destroy();
  const rest = await until('no client connection, nothing busy', () => singleWorkerResources(p), (x) => x.connections === 0 && Object.values(x.busy).every((b) => b.active === 0 && b.inUse === 0), 10_000);
  assert.equal(rest.pid, pid, 'the worker was replaced');
});
