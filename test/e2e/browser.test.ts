// Headless Chromium opens the demo page (src/demo.ts backends) through Portico and exchanges WebSocket messages
// over the same port: the page's own script opens wss://host/wss (ws:// on plain HTTP); the test drives it over
// the DevTools protocol and reads the result from the page's DOM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDemoBackends } from '../../src/cli/demo.js';
import { demoPageExchange, hasChromium, launchChromium, type DemoPageResult } from '../helpers/chromium.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico, tlsListener } from '../helpers/portico.js';

test('Chromium opens the demo page through Portico and exchanges WebSocket messages', { timeout: 120_000 }, async (t) => {
  if (!needPeer(t, 'chromium', hasChromium())) return;
  const demo = await startDemoBackends({ appPort: 0, echoPort: 0 });
  t.after(() => demo.close());
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener(), plainListener()],
    upstreams: {
      demo_app: { targets: [`127.0.0.1:${demo.appPort}`] },
      demo_echo: { targets: [`127.0.0.1:${demo.echoPort}`] },
    },
    routes: [
      { match: { path: '/wss' }, proxy: 'demo_echo' },
      { match: { path: '/' }, proxy: 'demo_app' },
    ],
  });
  const browser = await launchChromium(t);
  const messages = ['hello through Portico', 'second message', 'ünïcødé ✓'];

  await t.test('over HTTPS: the page opens wss://localhost:PORT/wss and shows every echo', async () => {
    const page = await browser.open(`https://localhost:${portico.tlsPort}/`);
    const r = await page.evaluate<DemoPageResult>(demoPageExchange(messages));
    assert.equal(r.url, `wss://localhost:${portico.tlsPort}/wss`);
    assert.equal(r.state, 'open');
    assert.deepEqual(r.echoes, messages);
    assert.equal(r.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(r.headers['x-real-ip'], '127.0.0.1');
    assert.equal(r.headers['x-forwarded-proto'], 'https');
  });

  await t.test('over plain HTTP: the page uses ws:// on the same port', async () => {
    const page = await browser.open(`http://localhost:${portico.httpPort}/`);
    const r = await page.evaluate<DemoPageResult>(demoPageExchange(['plain']));
    assert.equal(r.url, `ws://localhost:${portico.httpPort}/wss`);
    assert.deepEqual(r.echoes, ['plain']);
    assert.equal(r.headers['x-forwarded-proto'], 'http');
  });
});
