// Real clients through a terminated WebSocket route (websocket.mode: terminate) over WSS: Python `websockets`
// and headless Chromium (the demo page's own script, with permessage-deflate toward the browser on).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDemoBackends } from '../../src/cli/demo.js';
import { startChatBackend } from '../helpers/chat-backend.js';
import { demoPageExchange, hasChromium, launchChromium, type DemoPageResult } from '../helpers/chromium.js';
import { hasPythonWebsockets, PYTHON, PYTHON_WSS_CLIENT, run } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { startPortico, tlsListener, TEST_CERT } from '../helpers/portico.js';

test('terminated WSS with real clients: Python websockets and headless Chromium', { timeout: 120_000 }, async (t) => {
  const demo = await startDemoBackends({ appPort: 0, echoPort: 0 });
  t.after(() => demo.close());
  const chat = await startChatBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener()],
    upstreams: { demo_app: { targets: [`127.0.0.1:${demo.appPort}`] }, demo_echo: { targets: [`127.0.0.1:${demo.echoPort}`] }, chat: { targets: [`127.0.0.1:${chat.port}`] } },
    routes: [
      { match: { path: '/chat' }, proxy: 'chat', websocket: { mode: 'terminate' } },
      { match: { path: '/wss' }, proxy: 'demo_echo', websocket: { mode: 'terminate', compression: true } },
      { match: { path: '/' }, proxy: 'demo_app' },
    ],
  });

  await t.test('Python websockets over WSS: text, a 70 kB text and binary messages echo', async (t) => {
    if (!needPeer(t, 'python3-websockets', hasPythonWebsockets())) return;
    const r = await run(PYTHON, [PYTHON_WSS_CLIENT, `wss://localhost:${portico.tlsPort}/chat`, TEST_CERT], 40_000);
    assert.equal(r.code, 0, `python client failed: ${r.stdout} ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout.trim()), { ok: true, echoes: 3, matched: [true, true, true] });
    const line = await portico.waitForLog((l) => l.msg === 'websocket' && l.mode === 'terminate' && l.path === '/chat');
    assert.equal(line.messagesIn, 3);
    assert.equal(line.messagesOut, 3);
  });

  await t.test('Chromium: the demo page opens wss://localhost:PORT/wss (compression on) and shows every echo', async (t) => {
    if (!needPeer(t, 'chromium', hasChromium())) return;
    const browser = await launchChromium(t);
    const page = await browser.open(`https://localhost:${portico.tlsPort}/`);
    const messages = ['hello through uWebSockets.js', 'ünïcødé ✓', 'x'.repeat(5000)];
    const r = await page.evaluate<DemoPageResult>(demoPageExchange(messages));
    assert.equal(r.state, 'open');
    assert.deepEqual(r.echoes, messages);
    assert.equal(r.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(r.headers['x-forwarded-proto'], 'https');
    assert.equal(r.headers['sec-websocket-extensions'] ?? '', '', 'the backend leg is uncompressed');
  });
});
