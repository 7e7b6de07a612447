// The admin listener against browser pages and other hosts: a drain needs the X-Portico-Admin header (or the
// token), every request needs a Host that names the listener (DNS rebinding) and no foreign Origin (CSRF).
// Real HTTP requests, and a headless Chromium page on another origin that tries to drain a target.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend } from '../helpers/backends.js';
import { hasChromium, launchChromium } from '../helpers/chromium.js';
import { request } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { adminPort } from '../helpers/admin.js';

function config(target: string, admin: ConfigInput['admin'] = { address: '127.0.0.1:0' }): ConfigInput {
  return { workers: 1, listeners: [plainListener()], upstreams: { app: { targets: [target] } }, routes: [{ match: { path: '/' }, proxy: 'app' }], admin };
}

async function draining(port: number): Promise<boolean> {
  const res = await request(`http://127.0.0.1:${port}/status`);
  assert.equal(res.status, 200);
  return (JSON.parse(res.body.toString()) as { health: { app: Array<{ draining: boolean }> } }).health.app[0].draining;
}

test('without a token, a drain needs a loopback peer and X-Portico-Admin; a plain POST (what a form can send) is refused', async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(`127.0.0.1:${backend.port}`));
  const admin = await adminPort(portico);
  const url = `http://127.0.0.1:${admin}/upstreams/app/targets/127.0.0.1:${backend.port}/drain`;

  for (const headers of [{}, { 'content-type': 'application/x-www-form-urlencoded' }, { 'content-type': 'text/plain' }]) {
    const res = await request(url, { method: 'POST', headers, body: 'a=1' });
    assert.equal(res.status, 403, JSON.stringify(headers));
    assert.match(res.body.toString(), /X-Portico-Admin: 1/);
  }
  assert.equal(await draining(admin), false);
  await portico.waitForLog((l) => l.msg === 'admin request refused: forbidden: control requests need the header "X-Portico-Admin: 1" (or admin.token)');

  const ok = await request(url, { method: 'POST', headers: { 'x-portico-admin': '1' } });
  assert.equal(ok.status, 200);
  assert.equal(await draining(admin), true);
});

test('a Host that is not an IP, localhost or an admin.hosts name is refused on every request (DNS rebinding)', async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(`127.0.0.1:${backend.port}`, { address: '127.0.0.1:0', hosts: ['portico-admin.internal'] }));
  const admin = await adminPort(portico);
  const target = `127.0.0.1:${backend.port}`;
  // What a rebinding page sends: its own name in Host, and (same-origin to the browser) the custom header.
  for (const host of [`attacker.example:${admin}`, 'attacker.example', `localhost.attacker.example:${admin}`, `127.0.0.1.nip.io:${admin}`]) {
    assert.equal((await request(`http://127.0.0.1:${admin}/status`, { headers: { host } })).status, 403, `GET /status with Host ${host}`);
    assert.equal((await request(`http://127.0.0.1:${admin}/metrics`, { headers: { host } })).status, 403, `GET /metrics with Host ${host}`);
    const post = await request(`http://127.0.0.1:${admin}/upstreams/app/targets/${target}/drain`, { method: 'POST', headers: { host, 'x-portico-admin': '1', origin: `http://${host}` } });
    assert.equal(post.status, 403, `POST with Host ${host}`);
  }
  assert.equal((await request(`http://127.0.0.1:${admin}/status`, { headers: { host: 'bad host' } })).status, 400);
  assert.equal(await draining(admin), false);
  for (const host of [`127.0.0.1:${admin}`, `localhost:${admin}`, 'LOCALHOST', `[::1]:${admin}`, `portico-admin.internal:${admin}`, '10.1.2.3']) {
    assert.equal((await request(`http://127.0.0.1:${admin}/status`, { headers: { host } })).status, 200, `GET /status with Host ${host}`);
  }
});

test('a request with a foreign Origin or a cross-site Sec-Fetch-Site is refused, even with the header; the own origin passes', async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(`127.0.0.1:${backend.port}`));
  const admin = await adminPort(portico);
  const url = `http://127.0.0.1:${admin}/upstreams/app/targets/127.0.0.1:${backend.port}/drain`;
  for (const origin of ['http://127.0.0.1:1', 'http://localhost:' + admin, 'null', 'https://127.0.0.1:' + admin]) {
    assert.equal((await request(url, { method: 'POST', headers: { origin, 'x-portico-admin': '1' } })).status, 403, `Origin ${origin}`);
    assert.equal((await request(`http://127.0.0.1:${admin}/status`, { headers: { origin } })).status, 403, `GET with Origin ${origin}`);
  }
  // A CORS preflight is never granted.
  const preflight = await request(url, { method: 'OPTIONS', headers: { origin: 'http://127.0.0.1:1', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-portico-admin' } });
  assert.equal(preflight.status, 403);
  assert.equal(preflight.headers['access-control-allow-origin'], undefined);
  assert.equal((await request(url, { method: 'POST', headers: { 'sec-fetch-site': 'cross-site', 'x-portico-admin': '1' } })).status, 403);
  assert.equal(await draining(admin), false);
  const own = await request(url, { method: 'POST', headers: { origin: `http://127.0.0.1:${admin}`, 'sec-fetch-site': 'same-origin', 'x-portico-admin': '1' } });
  assert.equal(own.status, 200);
});

test('a Chromium page on another origin cannot drain a target: neither a no-cors POST nor a fetch with the header', { timeout: 90_000 }, async (t) => {
  if (!needPeer(t, 'chromium', hasChromium())) return;
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(`127.0.0.1:${backend.port}`));
  const admin = await adminPort(portico);
  // The attacker's page: another port on loopback is another origin.
  const page = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>elsewhere</title><p>a page on another origin</p>');
  });
  // Chromium's kept-alive connection ended too: close() alone waits for it (the browser is stopped by a later hook)
  t.after(
    () =>
      new Promise<void>((resolve) => {
        page.close(() => resolve());
        page.closeAllConnections();
      }),
  );
  await new Promise<void>((resolve) => page.listen(0, '127.0.0.1', resolve));
  const pagePort = (page.address() as AddressInfo).port;

  const browser = await launchChromium(t);
  const tab = await browser.open(`http://127.0.0.1:${pagePort}/`);
  const url = `http://127.0.0.1:${admin}/upstreams/app/targets/127.0.0.1:${backend.port}/drain`;
  const outcome = await tab.evaluate<{ noCors: string; withHeader: string; form: string }>(`(async () => {
    const url = ${JSON.stringify(url)};
    const noCors = await fetch(url, { method: 'POST', mode: 'no-cors', body: 'x' }).then((r) => 'sent:' + r.type, (e) => 'failed:' + e.message);
    const withHeader = await fetch(url, { method: 'POST', headers: { 'X-Portico-Admin': '1' } }).then((r) => 'status:' + r.status, (e) => 'failed:' + e.message);
    const form = await fetch(url, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' }).then((r) => 'sent:' + r.type, (e) => 'failed:' + e.message);
    return { noCors, withHeader, form };
  })()`);
  assert.equal(outcome.noCors, 'sent:opaque', 'the simple POST reached the listener (the browser does not block it)');
  assert.match(outcome.withHeader, /^failed:/, 'the preflight for X-Portico-Admin is not granted');
  assert.equal(await draining(admin), false, 'the target is not drained');
  const refused = await portico.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin request refused') && l.origin === `http://127.0.0.1:${pagePort}` && l.method === 'POST');
  assert.equal(refused.status, 403);
  assert.ok(!portico.logs.some((l) => l.msg === 'upstream target drained'));
});

