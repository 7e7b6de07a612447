// What an idle WebSocket keeps in JavaScript once its bytes moved to a relay thread of the addon: a tunnel (ws and
// wss) no socket object of its upstream leg, a terminated WebSocket no exchange, request head or unix hop socket.
// Read from a heap snapshot of the worker (by constructor), with every connection open and quiet; each still
// passes a message both ways afterwards. After a burst of natively terminated TLS handshakes the worker gives the
// memory they freed back to the system (malloc_trim), and the idle connections relay on. The KiB these cost are
// measured by `npm run bench:idle` and `portico bench`, not here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type WebSocket from 'ws';
import { startWsEchoBackend } from '../helpers/backends.js';
import { echo, openWebSocket } from '../helpers/clients.js';
import { adminStatus, statusUntil } from '../helpers/admin.js';
import { INSPECT_ENV, objectCounts } from '../helpers/inspector-gc.js';
import { plainListener, startPortico, tlsListener } from '../helpers/portico.js';
import { nativeStatus } from '../../src/native/addon.js';
import { nativeTlsStatus } from '../../src/native/tls.js';
import { needNativeTls } from '../helpers/native-tls.js';


/** Connections of each kind. */
const N = 30;
/** Objects of these kinds the worker has whatever its connections (pools, the admin's own connection, timing). */
const SLACK = 8;

test(`idle tunnels and terminated WebSockets (${N} of each kind) keep no exchange, head or handed-over socket in JS; each still echoes`, { timeout: 120_000 }, async (t) => {
  const backend = await startWsEchoBackend(t);
  const portico = await startPortico(
    t,
    {
      workers: 1,
      listeners: [plainListener(), tlsListener()],
      upstreams: { echo: { targets: [`127.0.0.1:${backend.port}`] } },
      routes: [
        { match: { path: '/term' }, proxy: 'echo', websocket: { mode: 'terminate' } },
        { match: { path: '/' }, proxy: 'echo' },
      ],
      admin: { address: '127.0.0.1:0' },
      log: { access: false },
    },
    { env: INSPECT_ENV },
  );
  const pid = (await adminStatus(portico)).workers[0].pid!;
  const urls = {
    wsTunnel: `ws://127.0.0.1:${portico.httpPort}/ws`,
    wssTunnel: `wss://localhost:${portico.tlsPort}/ws`,
    wsTerminated: `ws://127.0.0.1:${portico.httpPort}/term`,
    wssTerminated: `wss://localhost:${portico.tlsPort}/term`,
  };
  const open: Array<{ kind: string; ws: WebSocket }> = [];
  for (const [kind, url] of Object.entries(urls)) {
    for (let i = 0; i < N; i++) {
      const ws = await openWebSocket(t, url);
      // an echo back means the bytes moved on the relay: the hand-over is done
      assert.equal(await echo(ws, `${kind} ${i}`), `${kind} ${i}`);
      open.push({ kind, ws });
    }
  }
  await statusUntil(portico, 'all open', (s) => s.workers[0].tunnels === 2 * N, 20_000);

  // Where the addon relays the bytes (splice for plain legs, its TLS relay for its own TLS), the JS sockets it
  // took over are let go; elsewhere the JS relay holds both. A connection's own client socket stays with it (two
  // objects where Node terminates TLS: the TLSSocket and the TCP socket under it).
  const spliced = nativeStatus().native;
  const tlsRelayed = nativeTlsStatus().available;
  const legs = (native: boolean): number => (native ? 0 : 1);
  const tlsClient = tlsRelayed ? 1 : 2;
  const socketsMax = N * (1 + legs(spliced)) + N * (tlsClient + legs(tlsRelayed)) + N * (2 + legs(spliced)) + N * (tlsClient + 1 + legs(tlsRelayed)) + SLACK;
  const pooledMax = N * (legs(spliced) + legs(tlsRelayed) + 2) + SLACK;
  const counts = await objectCounts(portico, pid, ['Exchange', 'PooledSocket', 'NativeSocket', 'Socket', 'TLSSocket']);
  const sockets = (counts.get('NativeSocket') ?? 0) + (counts.get('Socket') ?? 0) + (counts.get('TLSSocket') ?? 0);
  t.diagnostic(`worker holds ${JSON.stringify(Object.fromEntries(counts))} for ${4 * N} idle connections (splice ${spliced}, TLS relay ${tlsRelayed})`);
  assert.ok((counts.get('Exchange') ?? 0) <= SLACK, `no exchange (and its heads) kept per terminated WebSocket: ${counts.get('Exchange')}`);
  assert.ok(sockets <= socketsMax, `socket objects ${sockets} <= ${socketsMax}: none kept for a leg a relay thread took over`);
  assert.ok((counts.get('PooledSocket') ?? 0) <= pooledMax, `pooled upstream sockets ${counts.get('PooledSocket')} <= ${pooledMax}`);

  // every one still relays both ways (the backend echoes what the client sent)
  for (const { kind, ws } of open) assert.equal(await echo(ws, `${kind} again`), `${kind} again`);
  for (const { ws } of open) ws.close();
  await statusUntil(portico, 'all closed', (s) => s.workers[0].tunnels === 0 && s.workers[0].connections === 0, 20_000);
});

test('after a burst of TLS handshakes the worker returns the freed memory to the system; every idle WSS tunnel still relays both ways', { timeout: 120_000 }, async (t) => {
  if (!needNativeTls(t)) return;
  const backend = await startWsEchoBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener()],
    upstreams: { echo: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'echo' }],
    log: { level: 'debug', access: false },
  });
  const isTrim = (l: { msg?: unknown }) => l.msg === 'memory freed by TLS handshakes returned to the system';
  // a burst: more handshakes than the addon's threshold (64) at once
  const open = await Promise.all(Array.from({ length: 100 }, () => openWebSocket(t, `wss://localhost:${portico.tlsPort}/ws`)));
  for (const [i, ws] of open.entries()) assert.equal(await echo(ws, `first ${i}`), `first ${i}`);
  // the burst is over: after a second of quiet the worker trims and says how many handshakes that covered
  const line = await portico.waitForLog(isTrim, 20_000);
  assert.ok(typeof line.handshakes === 'number' && line.handshakes >= 64, `the trim came after a burst (>= 64 handshakes): ${JSON.stringify(line)}`);
  assert.equal(typeof line.freedKiB, 'number');
  assert.equal(typeof line.ms, 'number');
  t.diagnostic(`trim: ${JSON.stringify(line)}`);
  // the relay thread's buffers were freed while idle and the heap trimmed under them: bytes still pass both ways
  for (const [i, ws] of open.entries()) assert.equal(await echo(ws, `after ${i}`), `after ${i}`);
  const covered = portico.logs.filter(isTrim).reduce((n, l) => n + Number(l.handshakes), 0);
  assert.ok(covered <= 100, `trims cover only the handshakes there were: ${covered}`);
  for (const ws of open) ws.close();
});
