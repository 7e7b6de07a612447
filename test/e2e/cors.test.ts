// CORS as a route policy, through a real `portico start`: headless Chromium on another origin (a page server of
// the test's own) calls an API route that Portico proxies, with a preflight that Portico answers itself (the
// backend never sees an OPTIONS), credentials, a custom header and an exposed one; an origin not listed is
// refused by the browser; errors Portico makes itself (404, 413, 502) reach the page with their real status.
// curl checks each header rule, the `*.suffix` patterns and the 429 of a rate limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { closedPort, startHttpBackend } from '../helpers/backends.js';
import { hasChromium, launchChromium } from '../helpers/chromium.js';
import { curl, hasCurl, parseCurlOutput } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico } from '../helpers/portico.js';

/** A page server on its own origin (http://localhost:PORT): the page the browser runs the cross-origin calls from. */
async function pageServer(t: import('node:test').TestContext): Promise<number> {
  const server = http.createServer((_req, res) => {
    res.setHeader('Content-Type', 'text/html');
    res.end('<!doctype html><title>page</title>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  // Chromium's kept-alive connection ended too: close() alone waits for it (the browser is stopped by a later hook)
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return (server.address() as AddressInfo).port;
}

interface FetchResult {
  ok: boolean;
  status?: number;
  body?: string;
  exposed?: string | null;
  error?: string;
}

/** Runs in the page: a fetch whose outcome (status and body, or the browser's CORS error) comes back as JSON. */
function fetchScript(url: string, init: Record<string, unknown>): string {
  return `(async () => {
    try {
      const r = await fetch(${JSON.stringify(url)}, ${JSON.stringify(init)});
      return { ok: true, status: r.status, body: await r.text(), exposed: r.headers.get('x-backend') };
    } catch (e) {
      return { ok: false, error: String(e) };
    }
  })()`;
}

test('CORS: preflight answered by Portico, credentials and headers; a foreign origin refused; errors keep their status in the browser', { timeout: 150_000 }, async (t) => {
  if (!needPeer(t, 'chromium', hasChromium())) return;
  if (!needPeer(t, 'curl', hasCurl())) return;
  const api = await startHttpBackend(t, { name: 'api' });
  const pagePort = await pageServer(t);
  const dead = await closedPort();
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-cors-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'files'));
  writeFileSync(path.join(dir, 'files', 'file.txt'), 'static');
  const allowed = `http://localhost:${pagePort}`;
  const cors = { origins: [allowed, 'https://*.example.test'], credentials: true, headers: ['X-Custom', 'Content-Type'], expose: ['X-Backend'], max_age: '5m' };
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { api: { targets: [`127.0.0.1:${api.port}`] }, dead: { targets: [`127.0.0.1:${dead}`], retries: { max: 0 } } },
    limits: { body_size: '1KiB' },
    routes: [
      { match: { path: '/api' }, proxy: 'api', cors },
      { match: { path: '/dead' }, proxy: 'dead', cors },
      { match: { path: '/files' }, static: { root: dir }, cors },
      { match: { path: '/limited' }, proxy: 'api', cors, rate_limit: { requests: { rate: '1/m', burst: 1 } } },
    ],
  });
  const apiBase = `http://127.0.0.1:${portico.httpPort}`;
  const browser = await launchChromium(t);

  await t.test('Chromium on an allowed origin: preflighted PUT with credentials and a custom header reaches the backend; OPTIONS does not', async () => {
    const page = await browser.open(`${allowed}/`);
    const before = api.requests.length;
    const r = await page.evaluate<FetchResult>(fetchScript(`${apiBase}/api/items`, { method: 'PUT', credentials: 'include', headers: { 'X-Custom': '1', 'Content-Type': 'application/json' }, body: '{"a":1}' }));
    assert.equal(r.ok, true, `${r.error} ${JSON.stringify(portico.logs.filter((l) => l.msg === 'request').slice(-3))}`);
    assert.equal(r.status, 200);
    assert.equal(r.exposed, 'api');
    const seen = api.requests.slice(before);
    assert.deepEqual(seen.map((q) => q.method), ['PUT']);
    assert.equal(seen[0].headers['x-custom'], '1');
    assert.equal(seen[0].headers.origin, allowed);
  });

  await t.test('Chromium on an origin not listed: the browser refuses the answer', async () => {
    const page = await browser.open(`http://127.0.0.1:${pagePort}/`);
    const simple = await page.evaluate<FetchResult>(fetchScript(`${apiBase}/api/items`, { credentials: 'include' }));
    assert.equal(simple.ok, false);
    assert.match(simple.error ?? '', /TypeError/);
    const before = api.requests.length;
    const preflighted = await page.evaluate<FetchResult>(fetchScript(`${apiBase}/api/items`, { method: 'DELETE' }));
    assert.equal(preflighted.ok, false);
    assert.equal(api.requests.length, before, 'a refused preflight sends nothing to the backend');
  });

  await t.test('errors Portico makes itself carry the CORS headers: the page sees 502, 404 and 413', async () => {
    const page = await browser.open(`${allowed}/`);
    const bad = await page.evaluate<FetchResult>(fetchScript(`${apiBase}/dead/x`, { credentials: 'include' }));
    assert.deepEqual([bad.ok, bad.status], [true, 502], bad.error);
    const missing = await page.evaluate<FetchResult>(fetchScript(`${apiBase}/files/missing.txt`, { credentials: 'include' }));
    assert.deepEqual([missing.ok, missing.status], [true, 404], missing.error);
    const file = await page.evaluate<FetchResult>(fetchScript(`${apiBase}/files/file.txt`, { credentials: 'include' }));
    assert.deepEqual([file.status, file.body], [200, 'static']);
    const big = await page.evaluate<FetchResult>(fetchScript(`${apiBase}/api/upload`, { method: 'POST', credentials: 'include', body: 'x'.repeat(4096) }));
    assert.deepEqual([big.ok, big.status], [true, 413], big.error);
  });

  await t.test('curl: preflight grant, refusals, suffix patterns, Vary, the backend’s own CORS headers replaced, 429 with CORS', async () => {
    const pre = parseCurlOutput((await curl(`${apiBase}/api/x`, ['-X', 'OPTIONS', '-H', `Origin: ${allowed}`, '-H', 'Access-Control-Request-Method: PUT', '-H', 'Access-Control-Request-Headers: x-custom'])).stdout);
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], allowed);
    assert.equal(pre.headers['access-control-allow-credentials'], 'true');
    assert.equal(pre.headers['access-control-allow-methods'], 'GET, HEAD, POST, PUT, PATCH, DELETE');
    assert.equal(pre.headers['access-control-allow-headers'], 'X-Custom, Content-Type');
    assert.equal(pre.headers['access-control-max-age'], '300');
    assert.match(pre.headers.vary, /Origin/);
    const sub = parseCurlOutput((await curl(`${apiBase}/api/x`, ['-X', 'OPTIONS', '-H', 'Origin: https://a.b.example.test', '-H', 'Access-Control-Request-Method: GET'])).stdout);
    assert.equal(sub.headers['access-control-allow-origin'], 'https://a.b.example.test');
    for (const origin of ['https://example.test', 'http://a.example.test', 'https://evilexample.test', 'https://a.example.test:8443', 'null']) {
      const r = parseCurlOutput((await curl(`${apiBase}/api/x`, ['-X', 'OPTIONS', '-H', `Origin: ${origin}`, '-H', 'Access-Control-Request-Method: GET'])).stdout);
      assert.equal(r.status, 403, origin);
      assert.equal(r.headers['access-control-allow-origin'], undefined, origin);
    }
    const header = parseCurlOutput((await curl(`${apiBase}/api/x`, ['-X', 'OPTIONS', '-H', `Origin: ${allowed}`, '-H', 'Access-Control-Request-Method: GET', '-H', 'Access-Control-Request-Headers: x-other'])).stdout);
    assert.equal(header.status, 403);
    const actual = parseCurlOutput((await curl(`${apiBase}/api/x`, ['-H', `Origin: ${allowed}`])).stdout);
    assert.equal(actual.headers['access-control-allow-origin'], allowed);
    assert.equal(actual.headers['access-control-expose-headers'], 'X-Backend');
    assert.match(actual.headers.vary, /Origin/);
    const none = parseCurlOutput((await curl(`${apiBase}/api/x`)).stdout);
    assert.equal(none.headers['access-control-allow-origin'], undefined);
    assert.match(none.headers.vary, /Origin/);
    // a plain OPTIONS (no Access-Control-Request-Method) is not a preflight: it goes to the backend
    const before = api.requests.length;
    assert.equal(parseCurlOutput((await curl(`${apiBase}/api/x`, ['-X', 'OPTIONS', '-H', `Origin: ${allowed}`])).stdout).status, 200);
    assert.equal(api.requests.length, before + 1);
    await curl(`${apiBase}/limited`, ['-H', `Origin: ${allowed}`]);
    const limited = parseCurlOutput((await curl(`${apiBase}/limited`, ['-H', `Origin: ${allowed}`])).stdout);
    assert.equal(limited.status, 429);
    assert.equal(limited.headers['access-control-allow-origin'], allowed);
  });
});
