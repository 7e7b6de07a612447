// GET /dashboard in headless Chromium against a real Portico (2 workers) under load: the page loads with no
// console error (its CSP refuses anything inline or foreign, so a mistake there shows here), its figures follow
// the traffic, and its drain button takes a target out through the admin API. A screenshot is kept in
// test-artifacts/ for a human to look at.
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { adminUrl, statusUntil } from '../helpers/admin.js';
import { startHttpBackend } from '../helpers/backends.js';
import { hasChromium, launchChromium } from '../helpers/chromium.js';
import { request } from '../helpers/clients.js';
import { ROOT } from '../helpers/paths.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { until } from '../helpers/until.js';

const ARTIFACTS = path.join(ROOT, 'test-artifacts');

test('the dashboard loads clean, follows the load, and drains a target from its button', async (t) => {
  if (!needPeer(t, 'chromium', hasChromium())) return;
  const a = await startHttpBackend(t, { name: 'a' });
  const b = await startHttpBackend(t, { name: 'b' });
  const portico = await startPortico(t, {
    workers: 2,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { app: { targets: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  });
  const browser = await launchChromium(t);
  const page = await browser.open(`${adminUrl(portico)}/dashboard`);

  // the stream delivers samples and the page renders them
  await until('two samples rendered', () => page.evaluate<number>('window.__porticoSamples || 0'), (n) => n >= 2, 15_000, 100);
  const text = (sel: string): Promise<string> => page.evaluate<string>(`document.querySelector(${JSON.stringify(sel)}).textContent`);
  assert.equal(await text('#live'), 'live');
  assert.match(await text('#workers'), /ready|running/);
  // each worker's event-loop delay and heap come from /metrics (per-worker gauges)
  await until('event-loop delay and heap shown per worker', () => text('#workers'), (v) => /p99 [\d.]+ (µs|ms|s)/.test(v) && /MiB/.test(v), 10_000, 100);
  assert.match(await text('#upstreams'), new RegExp(`127\\.0\\.0\\.1:${a.port}`));

  // load: bounded loop of keep-alive requests for a few seconds; the requests/s figure must go above 0
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.after(() => agent.destroy());
  let stop = false;
  const load = (async () => {
    for (let i = 0; i < 20_000 && !stop; i++) {
      await new Promise<void>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port: portico.httpPort, path: `/x${i}`, agent }, (res) => res.resume().on('end', resolve).on('error', reject)).on('error', reject);
      });
    }
  })();
  try {
    const rps = await until('requests/s above 0 on the page', () => text('#rps'), (v) => Number.parseFloat(v) > 0, 15_000, 100);
    assert.ok(Number.parseFloat(rps) > 0);
    await until('2xx counted in the status table', () => text('#statuses'), (v) => /2xx\s*[1-9]/.test(v), 10_000, 100);
    // percentiles from the request-duration histogram of /metrics
    await until('latency percentiles shown', () => text('#lat'), (v) => /^[\d.]+ (µs|ms|s) \/ [\d.]+ (µs|ms|s) \/ [\d.]+ (µs|ms|s)$/.test(v), 10_000, 100);
  } finally {
    stop = true;
    await load;
  }
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot(path.join(ARTIFACTS, 'dashboard.png'));

  // drain target a from its button: /status shows it draining, requests go to b only
  const clicked = await page.evaluate<boolean>(`(() => {
    const b = [...document.querySelectorAll('button')].find((x) => x.dataset.target === '127.0.0.1:${a.port}' && x.dataset.action === 'drain');
    if (!b) return false;
    b.click();
    return true;
  })()`);
  assert.ok(clicked, 'the drain button of target a is on the page');
  await statusUntil(portico, 'target a draining', (s) => s.health.app.find((h) => h.target === `127.0.0.1:${a.port}`)?.draining === true);
  await until('the page says the drain was done', () => text('#action'), (v) => /drain .* done/.test(v), 10_000, 100);
  const before = a.requests.length;
  for (let i = 0; i < 6; i++) assert.equal((await request(`http://127.0.0.1:${portico.httpPort}/after`)).status, 200);
  assert.equal(a.requests.length, before, 'a drained target gets no new request');
  await until('the button became undrain', () => page.evaluate<boolean>(`[...document.querySelectorAll('button')].some((x) => x.dataset.target === '127.0.0.1:${a.port}' && x.dataset.action === 'undrain')`), (v) => v, 10_000, 100);

  assert.deepEqual(page.errors, [], 'no console error, exception or refused load on the page');
});

test('a page from another origin cannot read the stream, and a drain without the admin header is refused', async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  });
  const url = adminUrl(portico);
  const foreign = await request(`${url}/dashboard/events`, { headers: { origin: 'http://evil.example' }, timeoutMs: 5_000 });
  assert.equal(foreign.status, 403);
  const page = await request(`${url}/dashboard`);
  assert.equal(page.status, 200);
  assert.match(String(page.headers['content-security-policy']), /script-src 'self'/);
  const drain = await request(`${url}/upstreams/app/targets/${encodeURIComponent(`127.0.0.1:${backend.port}`)}/drain`, { method: 'POST' });
  assert.equal(drain.status, 403);
});

/** Opens GET /dashboard/events and resolves once its status is known and, for a 200, the first sample arrived. */
function openEvents(url: string): Promise<{ status: number; retryAfter?: string; req: http.ClientRequest; res: http.IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${url}/dashboard/events`, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], req, res });
        return;
      }
      let text = '';
      res.setEncoding('utf8');
      const onData = (c: string) => {
        text += c;
        if (!text.includes('data: ')) return;
        res.off('data', onData);
        res.resume();
        resolve({ status: 200, req, res });
      };
      res.on('data', onData);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no dashboard sample within 10 s')));
    req.on('error', reject);
  });
}

test('at most 8 live dashboards: a 9th page gets 503 with Retry-After, and one closing makes room', async (t) => {
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener()], admin: { address: '127.0.0.1:0' }, routes: [] });
  const url = adminUrl(portico);
  const open: Array<{ req: http.ClientRequest }> = [];
  t.after(() => open.forEach((o) => o.req.destroy()));
  for (let i = 0; i < 8; i++) {
    const o = await openEvents(url);
    assert.equal(o.status, 200, `page ${i + 1} streams`);
    open.push(o);
  }
  const ninth = await openEvents(url);
  assert.equal(ninth.status, 503);
  assert.equal(ninth.retryAfter, '5');
  // the admin API itself still answers while the dashboards are full
  assert.equal((await request(`${url}/status`)).status, 200);
  open.shift()!.req.destroy();
  // the admin listener sees the close a moment later: a bounded number of tries, each a real request
  let again = await openEvents(url);
  for (let tries = 0; again.status === 503 && tries < 50; tries++) again = await openEvents(url);
  assert.equal(again.status, 200, 'a place freed by the page that left');
  open.push(again);
});
