// A WebSocket stays open through more than 60 s of silence (the classic nginx proxy_read_timeout trap), even
// with every HTTP timeout of Portico set far shorter: no HTTP timeout applies to a tunnel. Takes ~65 s by
// design; it lives alone in this file so the runner overlaps it with the other files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startWsEchoBackend } from '../helpers/backends.js';
import { echo, openWebSocket } from '../helpers/clients.js';
import { startPortico, tlsListener } from '../helpers/portico.js';

const SILENCE_MS = 65_000;

test('a WebSocket idle for longer than 60 s stays open and still echoes', { timeout: 120_000 }, async (t) => {
  const backend = await startWsEchoBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener()],
    upstreams: {
      chat: {
        targets: [`127.0.0.1:${backend.port}`],
        keepalive: { idle_timeout: '2s' },
        timeouts: { connect: '2s', response_headers: '2s', idle: '2s' },
      },
    },
    timeouts: { head: '2s', keepalive: '2s' },
    routes: [{ match: { path: '/wss' }, proxy: 'chat' }],
  });

  const ws = await openWebSocket(t, `wss://localhost:${portico.tlsPort}/wss`);
  assert.equal(await echo(ws, 'before the silence'), 'before the silence');

  // The silence itself is what is under test: wait it out, failing at once if the tunnel closes meanwhile.
  await new Promise<void>((resolve, reject) => {
    const onClose = (code: number): void => {
      clearTimeout(timer);
      reject(new Error(`the tunnel closed (code ${code}) during the silence`));
    };
    const timer = setTimeout(() => {
      ws.off('close', onClose);
      resolve();
    }, SILENCE_MS);
    ws.once('close', onClose);
  });

  assert.equal(ws.readyState, ws.OPEN);
  assert.equal(await echo(ws, 'after the silence'), 'after the silence');
  assert.equal(backend.open, 1, 'the backend side is still the same connection');
  const closedEarly = portico.logs.filter((l) => typeof l.closedBy === 'string');
  assert.deepEqual(closedEarly, [], 'no tunnel was closed');
  ws.close(1000);
});
