// Deferred accept (TCP_DEFER_ACCEPT, `listeners[].defer_accept`) as clients see it through a running Portico with
// native accept: listeners whose clients speak first (plain HTTP, TLS, a tcp listener with a PROXY header) have it
// in force and a tcp listener whose server may speak first has not (read back from the sockets, /status
// `deferAccept`), as the config key and a reload that changes a kept listener's kind say; a silent client is accepted
// only once it talks (or ~1 s later) while a hold listener accepts at the handshake; a client that connected before
// a SIGTERM drain began and writes its request after it began is answered (the end clears the option and goes on
// accepting for a grace); a silent client and a one-byte one are closed by the head timeout with every descriptor
// back. The hand-over (`portico upgrade`) case is in upgrade.test.ts. Skipped (loudly) without native accept.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { nativeIoAvailable } from '../../src/native/io.js';
import { adminStatus, statusUntil, type StatusReport } from '../helpers/admin.js';
import { startHttpBackend } from '../helpers/backends.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { plainListener, reloadPortico, startPortico, tlsListener, type LogLine, type Portico } from '../helpers/portico.js';
import { connectPlain, connectTls, ResponseReader, statusLineOnClose, statusLineUntilClose } from '../helpers/wire.js';

/** The tcp listeners stay on native accept (io.cc), not on the addon's L4 thread, so their sockets are io.cc's to read. */
const ENV = { PORTICO_NATIVE_L4: '0' };

function nativeOnly(t: TestContext): boolean {
  if (nativeIoAvailable()) return true;
  t.skip('deferred accept is native accept only: this run accepts with Node (PORTICO_NATIVE_IO=0 or no addon)');
  return false;
}

function worker(s: StatusReport): StatusReport['workers'][number] {
  assert.equal(s.workers.length, 1);
  return s.workers[0];
}

async function deferring(portico: Portico): Promise<string[]> {
  const d = worker(await adminStatus(portico)).deferAccept;
  assert.ok(d !== undefined, '/status lists the deferring listeners');
  return [...d].sort();
}

async function accepted(portico: Portico): Promise<number> {
  const b = worker(await adminStatus(portico)).acceptBatches;
  assert.ok(b !== undefined, '/status has the accept counts');
  return b.accepted;
}

test('TCP_DEFER_ACCEPT is in force on plain, TLS and PROXY listeners, not on a tcp listener; defer_accept: false and a reload that changes a kept listener\'s kind set or clear it', { timeout: 60_000 }, async (t) => {
  if (!nativeOnly(t)) return;
  const backend = await startHttpBackend(t);
  const upstreams = { db: { targets: [`127.0.0.1:${backend.port}`] } };
  const proxy = { trusted: ['127.0.0.1'] };
  const config = (listeners: ConfigInput['listeners']) => ({ workers: 1, listeners, upstreams, routes: [], admin: { address: '127.0.0.1:0' }, log: { access: false } });
  // keys by position: 127.0.0.1:0, 127.0.0.1:0#2, ... (every listener on port 0)
  const portico = await startPortico(t, config([plainListener(), tlsListener(), { address: '127.0.0.1:0', mode: 'tcp', upstream: 'db', proxy_protocol: proxy }, { address: '127.0.0.1:0', mode: 'tcp', upstream: 'db' }]), { env: ENV });
  assert.deepEqual(await deferring(portico), ['127.0.0.1:0', '127.0.0.1:0#2', '127.0.0.1:0#3'], 'plain, TLS and PROXY defer; a plain tcp listener does not');

  // the same sockets (kept on reload): the plain one opts out, the PROXY one loses its header (a plain tcp listener
  // now), the tcp one becomes an HTTP listener
  const r = await reloadPortico(portico, config([{ ...plainListener(), defer_accept: false }, tlsListener(), { address: '127.0.0.1:0', mode: 'tcp', upstream: 'db' }, { address: '127.0.0.1:0' }]));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(await deferring(portico), ['127.0.0.1:0#2', '127.0.0.1:0#4']);
  assert.equal((await adminStatus(portico)).listeners.length, 4);

  // and back
  const back = await reloadPortico(portico, config([plainListener(), { ...tlsListener(), defer_accept: false }, { address: '127.0.0.1:0', mode: 'tcp', upstream: 'db', proxy_protocol: proxy }, { address: '127.0.0.1:0', mode: 'tcp', upstream: 'db' }]));
  assert.equal(back.code, 0, back.stdout + back.stderr);
  assert.deepEqual(await deferring(portico), ['127.0.0.1:0', '127.0.0.1:0#3']);
  const ports = portico.ports;
  assert.deepEqual((await adminStatus(portico)).listeners.map((l) => l.port), ports, 'the sockets were kept, not reopened');
});

test('a deferring listener accepts a connection once its first bytes came (a silent client waits while a talking one is served), a tcp listener at the handshake', { timeout: 60_000 }, async (t) => {
  if (!nativeOnly(t)) return;
  // the tcp listener's upstream: a silent client reaches it only if the listener accepted it at the handshake
  let reached = (): void => {};
  const upstreamConnected = new Promise<void>((resolve) => (reached = resolve));
  const upstream = net.createServer((s) => {
    s.on('error', () => {});
    reached();
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  t.after(() => upstream.close());
  const upstreamPort = (upstream.address() as net.AddressInfo).port;
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener(), tlsListener(), { address: '127.0.0.1:0', mode: 'tcp', upstream: 'db' }], upstreams: { db: { targets: [`127.0.0.1:${upstreamPort}`] } }, routes: [], admin: { address: '127.0.0.1:0' }, log: { access: false } }, { env: ENV });
  const start = await accepted(portico);
  const t0 = performance.now();
  // connected (the kernel completed the handshake), nothing sent: the connections stay in the kernel
  const silent = await connectPlain(t, portico.httpPort);
  const silentTls = await connectPlain(t, portico.tlsPort);
  // one that sends its request at once is accepted and answered meanwhile (connected after the silent ones, so
  // without deferral they, first in the accept queue, would have been accepted with it or before it)
  assert.equal(await statusLineUntilClose(portico.httpPort, 'GET /burst HTTP/1.1\r\nHost: burst.test\r\nConnection: close\r\n\r\n'), 'HTTP/1.1 404 Not Found');
  const talking = await connectTls(t, portico.tlsPort);
  talking.destroy();
  const n = (await accepted(portico)) - start;
  const elapsed = performance.now() - t0;
  // a silent client is accepted all the same ~1 s after its handshake: only a count taken before that says anything
  if (elapsed < 900) assert.equal(n, 2, 'only the clients that spoke were accepted');
  else t.diagnostic(`inconclusive: the count came ${elapsed.toFixed(0)} ms after the silent connects (a loaded machine)`);
  // once it talks it is accepted and answered like any other
  const reader = new ResponseReader(silent);
  silent.write('GET /late HTTP/1.1\r\nHost: late.test\r\n\r\n');
  assert.equal((await reader.next()).status, 404);
  // a tcp listener (hold: its server may speak first) accepts at the handshake and connects upstream
  const quiet = await connectPlain(t, portico.ports[2]);
  await upstreamConnected;
  quiet.destroy();
  silentTls.destroy();
});

test('SIGTERM drain: clients that connected before the end began and write their request after it began are all answered (none reset)', { timeout: 60_000 }, async (t) => {
  if (!nativeOnly(t)) return;
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    timeouts: { shutdown_grace: '5s' },
    log: { access: false },
  });
  const N = 20;
  const clients = await Promise.all(Array.from({ length: N }, () => connectPlain(t, portico.httpPort)));
  const answers = clients.map(statusLineOnClose);
  // at once: a silent connection stays in the SYN queue until ~1 s after its handshake
  portico.kill('SIGTERM');
  const draining = await portico.waitForLog((l: LogLine) => l.msg === 'worker draining');
  clients.forEach((c, i) => c.write(`GET /late/${i} HTTP/1.1\r\nHost: late.test\r\nConnection: close\r\n\r\n`));
  const got = await Promise.all(answers);
  const wrong = got.filter((g) => g !== 'HTTP/1.1 200 OK');
  assert.deepEqual(wrong, [], `${wrong.length} of ${N} clients got no answer`);
  // the end began while (some of) them were still the kernel's: else this would test nothing
  assert.ok(typeof draining.connections === 'number' && draining.connections < N, `${String(draining.connections)} of ${N} were accepted before the end began`);
  t.diagnostic(`${N - (draining.connections as number)} of ${N} clients were still held by the kernel when the end began`);
  assert.equal(await portico.exited, 0);
});

test('a client that sends nothing is accepted after the defer period and closed by the head timeout, one that sends a byte by the head timeout too; fds back, none counted open', { timeout: 60_000 }, async (t) => {
  if (!nativeOnly(t)) return;
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener()], routes: [], timeouts: { head: '1s' }, admin: { address: '127.0.0.1:0' }, log: { access: false } });
  const base = worker(await statusUntil(portico, 'status settled', (s) => s.workers[0].connections === 0));
  const start = base.acceptBatches?.accepted ?? 0;
  const silent = await connectPlain(t, portico.httpPort);
  const slow = await connectPlain(t, portico.httpPort);
  slow.write('G');
  const closed = [statusLineOnClose(silent), statusLineOnClose(slow)];
  // the server ends both (no reset by the kernel): head timeout, a 408 or a plain close
  const got = await Promise.all(closed);
  for (const g of got) assert.ok(!g.startsWith('error'), `closed by the server, not reset: ${g}`);
  const after = worker(await statusUntil(portico, 'both closed and their descriptors back', (s) => s.workers[0].connections === 0 && (s.workers[0].fds?.open ?? 0) <= (base.fds?.open ?? 0)));
  assert.equal((after.acceptBatches?.accepted ?? 0) - start, 2, 'both were accepted (the silent one after the defer period)');
  t.diagnostic(`outcomes: ${JSON.stringify(got)}`);
});
