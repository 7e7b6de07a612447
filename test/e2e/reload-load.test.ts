// Reload under load with the real `portico start` and `portico reload`, 2 workers: GET loops (kept-alive and
// new connections) and 200 WebSockets (100 plain, spliced where the addon is built; 100 over TLS, JS relay)
// through 10 reloads that alternate two configs which really differ (a response header rule, an added route, a
// second WebSocket target). Each reload is checked to be in effect; no GET fails, no WebSocket is closed, and
// every WebSocket echoes after every reload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { WebSocket } from 'ws';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend, startWsEchoBackend } from '../helpers/backends.js';
import { echo, openWebSocket } from '../helpers/clients.js';
import { get, getLoop, progress } from '../helpers/loops.js';
import { plainListener, reloadPortico, startPortico, tlsListener } from '../helpers/portico.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';

const SOCKETS = 200;
const RELOADS = 10;

test(`${RELOADS} reloads with GET loops and ${SOCKETS} open WebSockets: 0 failed requests, 0 tunnels closed, every WebSocket echoes after each reload`, { timeout: 180_000 }, async (t) => {
  const a = await startHttpBackend(t, { name: 'a' });
  const b = await startHttpBackend(t, { name: 'b' });
  const ws1 = await startWsEchoBackend(t);
  const ws2 = await startWsEchoBackend(t);
  /** Odd generations serve `one`, even ones `two`: a header rule, a route and a WebSocket target differ. */
  const config = (variant: 'one' | 'two'): ConfigInput => ({
    workers: 2,
    listeners: [plainListener(), tlsListener()],
    upstreams: {
      a: { targets: [`127.0.0.1:${a.port}`] },
      b: { targets: [`127.0.0.1:${b.port}`] },
      ws: { targets: variant === 'one' ? [`127.0.0.1:${ws1.port}`] : [`127.0.0.1:${ws1.port}`, `127.0.0.1:${ws2.port}`] },
    },
    routes: [
      ...(variant === 'two' ? [{ match: { path: '/extra' }, proxy: 'b' }] : []),
      { match: { path: '/ws' }, proxy: 'ws' },
      { match: { path: '/keep' }, proxy: 'a', response_headers: { set: { 'X-Variant': variant } } },
      { match: { path: '/check' }, proxy: 'a', response_headers: { set: { 'X-Variant': variant } } },
    ],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  const portico = await startPortico(t, config('one'));
  const port = portico.httpPort;

  const sockets: WebSocket[] = [];
  const closes: string[] = [];
  for (let batch = 0; batch < SOCKETS / 20; batch++) {
    const url = batch % 2 === 0 ? `ws://127.0.0.1:${port}/ws/${batch}` : `wss://localhost:${portico.tlsPort}/ws/${batch}`;
    const opened = await Promise.all(Array.from({ length: 20 }, () => openWebSocket(t, url)));
    for (const ws of opened) ws.on('close', (code: number) => closes.push(`${sockets.indexOf(ws)}: ${code}`));
    sockets.push(...opened);
  }
  assert.equal(ws1.open, SOCKETS);
  const echoAll = async (round: number): Promise<void> => {
    const replies = await Promise.all(sockets.map((ws, i) => echo(ws, `r${round} ${i}`)));
    replies.forEach((m, i) => assert.equal(m, `r${round} ${i}`, `WebSocket ${i} after reload ${round}`));
  };
  await echoAll(0);

  // Every 200 is accepted whatever the variant: the loops check only that nothing fails.
  const loops = [getLoop(port, '/keep', true), getLoop(port, '/keep', true), getLoop(port, '/keep', false), getLoop(port, '/keep', false)];
  t.after(() => Promise.all(loops.map((l) => l.stop())));
  await progress(loops, 5);

  for (let i = 1; i <= RELOADS; i++) {
    const variant = i % 2 === 1 ? 'two' : 'one';
    const r = await reloadPortico(portico, config(variant));
    assert.equal(r.code, 0, `reload ${i}: ${r.stderr}`);
    const s = await until(`reload ${i} applied in both workers`, () => adminStatus(portico), (x) => x.workers.every((w) => w.generation === i + 1), 10_000);
    assert.equal(s.config.generation, i + 1);
    // in effect: the header rule and the added route, on fresh connections (either worker)
    for (let k = 0; k < 4; k++) {
      const res = await get('127.0.0.1', port, `/check/${i}/${k}`);
      assert.equal(res.headers['x-variant'], variant, `reload ${i}: header rule of variant ${variant}`);
      assert.equal((await get('127.0.0.1', port, '/extra')).status, variant === 'two' ? 200 : 404, `reload ${i}: /extra`);
    }
    await progress(loops, 3);
    await echoAll(i);
    assert.deepEqual(closes, [], `no WebSocket closed by reload ${i}`);
  }

  const results = await Promise.all(loops.map((l) => l.stop()));
  assert.deepEqual(results.flatMap((x) => x.failures), [], 'no GET failed');
  assert.ok(results.every((x) => x.ok > 3 * RELOADS), `every loop kept going: ${results.map((x) => x.ok).join(', ')}`);
  assert.equal(ws1.open, SOCKETS, 'every backend-side WebSocket is still open');
  assert.equal((await adminStatus(portico)).tunnels, SOCKETS);
});
