// fastcgi routes end to end: the real `portico start` in front of a real php-fpm (started by the test on
// loopback TCP or a unix socket, test/helpers/php-fpm.ts), driven by Node's client and raw sockets. A scripted
// FastCGI peer stands in for FPM where the test needs an application that misbehaves or must never be asked.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { request } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { FIXTURES, SHARED_CONTRACT } from '../helpers/paths.js';
import { hasPhpFpm, startPhpFpm, type PhpFpm } from '../helpers/php-fpm.js';
import { plainListener, reloadPortico, startPortico, tlsListener } from '../helpers/portico.js';
import { adminUrl } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { probe } from '../../src/upstream/health.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { exchangeUntilClose } from '../helpers/wire.js';

const DOCROOT = path.join(FIXTURES, 'php');

function phpConfig(target: string, upstream: Record<string, unknown> = {}, tls = false): ConfigInput {
  return {
    workers: 1,
    listeners: [tls ? tlsListener() : plainListener()],
    upstreams: { php: { targets: [target], ...upstream } },
    routes: [
      { match: { path_regex: '\\.php(/|$)' }, fastcgi: { upstream: 'php', root: DOCROOT, split_path_info: '^(.+\\.php)(/.*)$', params: { APP_ENV: 'test-$fastcgi_script_name' } } },
    ],
  } as ConfigInput;
}



function multipart(boundary: string, field: string, filename: string, data: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    data,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
}

async function fpmOrSkip(t: TestContext, opts: Parameters<typeof startPhpFpm>[1] = {}): Promise<PhpFpm | undefined> {
  if (!needPeer(t, 'php-fpm', hasPhpFpm())) return undefined;
  return startPhpFpm(t, opts);
}

test("the seed's PHP route (seed-php.yaml) serves its page through HTTPS", { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const seed = parse(readFileSync(path.join(SHARED_CONTRACT, 'seed-php.yaml'), 'utf8')) as { routes: Array<Record<string, unknown>> };
  // the seed's fastcgi route as written (match, fastcgi); its root made absolute (the seed's folder) and its
  // upstream moved to this test's FPM. Its other routes and `cors` belong to other parts of the seed.
  const route = seed.routes.find((r) => r.fastcgi !== undefined) as { match: unknown; fastcgi: { upstream: string; root: string; index: string } };
  const fastcgi = { ...route.fastcgi, root: path.resolve(SHARED_CONTRACT, route.fastcgi.root) };
  const portico = await startPortico(t, { workers: 1, listeners: [tlsListener()], upstreams: { php: { targets: [fpm.target] } }, routes: [{ match: route.match, fastcgi }] } as ConfigInput);
  const r = await request(`https://localhost:${portico.tlsPort}/index.php?x=1&y=2`, { method: 'POST', body: 'seed body', headers: { 'content-type': 'text/plain' } });
  assert.equal(r.status, 200, r.body.toString());
  assert.match(String(r.headers['content-type']), /application\/json/);
  const j = JSON.parse(r.body.toString()) as Record<string, string>;
  assert.equal(j.script, path.join(SHARED_CONTRACT, 'html', 'index.php'));
  assert.equal(j.method, 'POST');
  assert.equal(j.query, 'x=1&y=2');
  assert.equal(j.body, 'seed body');
  assert.equal(j.remote, '127.0.0.1');
});

test("a fastcgi route's cors policy (the seed's PHP route has one): FPM's answers carry the grant for each request's own origin", { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const seed = parse(readFileSync(path.join(SHARED_CONTRACT, 'seed-php.yaml'), 'utf8')) as { routes: Array<Record<string, unknown>> };
  const route = seed.routes.find((r) => r.fastcgi !== undefined) as { match: unknown; fastcgi: { upstream: string; root: string; index: string }; cors: { origins: string[]; credentials?: boolean } };
  assert.ok(route.cors !== undefined, "the seed's PHP route has a cors block");
  const routes = [
    { match: { path_exact: '/cors.php' }, fastcgi: { upstream: 'php', root: DOCROOT }, cors: route.cors }, // exact: before the seed's regex
    // the seed's route as written, cors included (root made absolute, upstream moved to this test's FPM)
    { match: route.match, fastcgi: { ...route.fastcgi, root: path.resolve(SHARED_CONTRACT, route.fastcgi.root) }, cors: route.cors },
  ];
  const portico = await startPortico(t, { workers: 1, listeners: [tlsListener(), plainListener()], upstreams: { php: { targets: [fpm.target] } }, routes } as ConfigInput);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const get = (url: string, origin: string | undefined): ReturnType<typeof request> => request(url, { headers: origin === undefined ? {} : { origin }, agent: url.startsWith('http:') ? agent : undefined });
  const seedPage = `https://localhost:${portico.tlsPort}/index.php`;
  const own = `http://127.0.0.1:${portico.httpPort}/cors.php`;

  const exact = await get(seedPage, 'https://app.example.test');
  assert.equal(exact.status, 200, exact.body.toString());
  assert.equal(exact.headers['access-control-allow-origin'], 'https://app.example.test');
  assert.equal(exact.headers['access-control-allow-credentials'], 'true');
  assert.match(String(exact.headers.vary), /Origin/);
  const suffix = await get(seedPage, 'https://shop.example.test');
  assert.equal(suffix.headers['access-control-allow-origin'], 'https://shop.example.test', 'an https://*.example.test origin');
  const foreign = await get(seedPage, 'https://evil.test');
  assert.equal(foreign.status, 200);
  assert.equal(foreign.headers['access-control-allow-origin'], undefined, 'no grant for an origin not listed');
  assert.match(String(foreign.headers.vary), /Origin/);

  // the same script answering with the same bytes, one request after another on one connection: each answer's
  // grant is its own request's (the script's own "*" replaced, never a previous request's origin)
  for (const origin of ['https://a.example.test', 'https://b.example.test', undefined, 'https://evil.test', 'https://app.example.test']) {
    const r = await get(own, origin);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.body.toString(), 'cors from php\n');
    assert.equal(r.headers['access-control-allow-origin'], origin === undefined || origin === 'https://evil.test' ? undefined : origin, `origin ${origin ?? '(none)'}`);
    assert.equal(r.headers['access-control-allow-credentials'], origin === undefined || origin === 'https://evil.test' ? undefined : 'true');
  }
});

test('PHP-FPM over TCP: query, form, 10 MiB upload, PATH_INFO, HEAD, chunked and HTTP/1.0 bodies, stderr, fatal errors, 200 concurrent, keep-alive', { timeout: 180_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { children: 4 });
  if (fpm === undefined) return;
  // one FPM child per pooled connection (an idle kept-alive connection holds its child): max_connections x workers <= pm.max_children
  const portico = await startPortico(t, phpConfig(fpm.target, { max_connections: 4, queue: { size: 1000, timeout: '30s' } }));
  const base = `http://127.0.0.1:${portico.httpPort}`;

  await t.test('GET with a query: params as nginx fastcgi_params sets them', async () => {
    const r = await request(`${base}/env.php?a=1&b=x%20y`, { headers: { 'x-custom': 'c', proxy: 'http://evil.test:1' } });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['x-script'], 'env');
    const j = JSON.parse(r.body.toString()) as { server: Record<string, string>; get: Record<string, string> };
    assert.deepEqual(j.get, { a: '1', b: 'x y' });
    assert.equal(j.server.SCRIPT_FILENAME, path.join(DOCROOT, 'env.php'));
    assert.equal(j.server.SCRIPT_NAME, '/env.php');
    assert.equal(j.server.DOCUMENT_ROOT, DOCROOT);
    assert.equal(j.server.REQUEST_URI, '/env.php?a=1&b=x%20y');
    assert.equal(j.server.REMOTE_ADDR, '127.0.0.1');
    assert.equal(j.server.HTTP_X_CUSTOM, 'c');
    assert.equal(j.server.HTTP_PROXY, undefined, 'httpoxy: the Proxy header never becomes HTTP_PROXY');
    assert.equal(j.server.APP_ENV, 'test-/env.php', 'an extra param with a variable');
  });

  await t.test('POST form fields reach $_POST', async () => {
    const r = await request(`${base}/env.php`, { method: 'POST', body: 'name=portico&n=42', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(r.status, 200);
    const j = JSON.parse(r.body.toString()) as { post: Record<string, string> };
    assert.deepEqual(j.post, { name: 'portico', n: '42' });
  });

  await t.test('a 10 MiB multipart upload arrives whole (sha256 compared)', async () => {
    const data = randomBytes(10 * 1024 * 1024);
    const boundary = 'portico' + randomBytes(8).toString('hex');
    const r = await request(`${base}/upload.php`, { method: 'POST', body: multipart(boundary, 'file', 'big.bin', data), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, timeoutMs: 60_000 });
    assert.equal(r.status, 200, r.body.toString());
    const j = JSON.parse(r.body.toString()) as { size: number; sha256: string };
    assert.equal(j.size, data.length);
    assert.equal(j.sha256, createHash('sha256').update(data).digest('hex'));
  });

  await t.test('Expect: 100-continue: Portico answers 100 once the script is found, then the body goes to FPM', async () => {
    const c = net.connect(portico.httpPort, '127.0.0.1');
    c.on('error', () => {});
    t.after(() => c.destroy());
    let got = '';
    c.on('data', (b: Buffer) => (got += b.toString('latin1')));
    c.write('POST /env.php HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
    await until('the interim 100 Continue', () => got, (g) => g.startsWith('HTTP/1.1 100 Continue\r\n\r\n'));
    c.write('hello');
    await once(c, 'close');
    assert.match(got, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    assert.match(got, /"bodyLength":5/);
  });

  await t.test('PATH_INFO from split_path_info', async () => {
    const r = await request(`${base}/env.php/extra/info?q=1`);
    const j = JSON.parse(r.body.toString()) as { server: Record<string, string> };
    assert.equal(j.server.SCRIPT_NAME, '/env.php');
    assert.equal(j.server.PATH_INFO, '/extra/info');
  });

  await t.test('HEAD: the head only; a body without length is chunked to HTTP/1.1 and close-delimited to HTTP/1.0', async () => {
    const head = await request(`${base}/status.php?kib=4`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    const r = await request(`${base}/status.php?kib=64&code=201`);
    assert.equal(r.status, 201);
    assert.equal(r.headers['transfer-encoding'], 'chunked');
    assert.equal(r.body.length, 64 * 1024);
    const old = await exchangeUntilClose(portico.httpPort, 'GET /status.php?kib=2 HTTP/1.0\r\n\r\n');
    const [h, body] = [old.slice(0, old.indexOf('\r\n\r\n')), old.slice(old.indexOf('\r\n\r\n') + 4)];
    assert.match(h, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(h, /transfer-encoding/i);
    assert.match(h, /connection: close/i);
    assert.equal(body.length, 2048);
    const redirect = await request(`${base}/status.php?location=/elsewhere`);
    assert.equal(redirect.status, 302, 'Location without Status is a 302 (RFC 3875 §6.2.3)');
    assert.equal(redirect.headers.location, '/elsewhere');
  });

  await t.test('stderr lines go to the log; a PHP fatal error is a 500 with its stderr line logged', async () => {
    const ok = await request(`${base}/stderr.php`);
    assert.equal(ok.status, 200);
    await portico.waitForLog((l) => l.msg === 'FastCGI stderr' && String(l.stderr).includes('portico-stderr-line-two'));
    const r = await request(`${base}/fatal.php`);
    assert.equal(r.status, 500);
    const line = await portico.waitForLog((l) => l.msg === 'FastCGI stderr' && String(l.stderr).includes('Call to undefined function undefined_function_portico_test'));
    assert.equal(line.path, '/fatal.php');
    const access = await portico.waitForLog((l) => l.msg === 'request' && l.path === '/fatal.php');
    assert.equal(access.mode, 'fastcgi');
    assert.equal(access.status, 500);
  });

  await t.test('a missing script is a 404 from Portico; paths out of root are refused', async () => {
    for (const p of ['/nope.php', '/uploads/x.jpg/.php', '/uploads/x.jpg/x.php']) {
      const r = await request(`${base}${p}`);
      assert.equal(r.status, 404, p);
      assert.equal(r.headers.server, 'portico', `${p}: answered by Portico, not FPM`);
    }
    for (const p of ['/../env.php', '/sub/..%2Fenv.php', '/%2e%2e/env.php']) {
      const r = await exchangeUntilClose(portico.httpPort, `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`);
      assert.match(r, /^HTTP\/1\.1 400 /, p);
    }
  });

  await t.test('200 concurrent requests all answered (4 FPM connections at most, the rest queued in Portico)', async () => {
    const all = await Promise.all(Array.from({ length: 200 }, (_, i) => request(`${base}/env.php?i=${i}`, { timeoutMs: 60_000 })));
    all.forEach((r, i) => {
      assert.equal(r.status, 200);
      assert.equal((JSON.parse(r.body.toString()) as { get: { i: string } }).get.i, String(i));
    });
  });

  await t.test('keep-alive: sequential requests reuse pooled FPM connections (FCGI_KEEP_CONN)', async () => {
    const seen = new Set<number>();
    for (let i = 0; i < 30; i++) {
      assert.equal((await request(`${base}/index.php`)).status, 200);
      const peers = await fpm.connectionPeers();
      assert.ok(peers.length >= 1, `after request ${i}: FPM keeps the connection open (FCGI_KEEP_CONN)`);
      for (const p of peers) seen.add(p);
    }
    // the pool holds up to 4 connections from the concurrent test; 30 sequential requests open no new one
    assert.ok(seen.size <= 4, `30 sequential requests used ${seen.size} FPM connections`);
  });

  await t.test('pipelined requests on one connection: each chunked page whole, in order, then the close', async () => {
    const n = 5;
    const text = Array.from({ length: n }, (_, i) => `GET /env.php?p=${i} HTTP/1.1\r\nHost: php.test\r\n${i === n - 1 ? 'Connection: close\r\n' : ''}\r\n`).join('');
    const out = await exchangeUntilClose(portico.httpPort, text);
    const pages = out.split(/(?=HTTP\/1\.1 )/);
    assert.equal(pages.length, n, out.slice(0, 400));
    pages.forEach((page, i) => {
      assert.match(page, /^HTTP\/1\.1 200 /);
      assert.match(page, /\r\ntransfer-encoding: chunked\r\n/i);
      const body = page.slice(page.indexOf('\r\n\r\n') + 4);
      assert.ok(body.endsWith('0\r\n\r\n'), `page ${i} ends with its last chunk`);
      const json = body.replace(/^[0-9a-f]+\r\n/, '').replace(/\r\n0\r\n\r\n$/, '');
      assert.equal((JSON.parse(json) as { get: { p: string } }).get.p, String(i));
    });
  });
});

test('a reload that changes root and params reaches FPM (the params each route encodes once are encoded anew)', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  // the second root: a copy of env.php that FPM's user can read (it may run as nobody)
  const root2 = await mkdtemp(path.join(tmpdir(), 'portico-fcgi-reload-'));
  t.after(() => rm(root2, { recursive: true, force: true }));
  await chmod(root2, 0o755);
  await copyFile(path.join(DOCROOT, 'env.php'), path.join(root2, 'env.php'));
  await chmod(path.join(root2, 'env.php'), 0o644);
  const config = (root: string, params: Record<string, string>): ConfigInput =>
    ({ workers: 1, listeners: [plainListener()], upstreams: { php: { targets: [fpm.target] } }, routes: [{ match: { path_regex: '\\.php$' }, fastcgi: { upstream: 'php', root, params } }] }) as ConfigInput;
  const portico = await startPortico(t, config(DOCROOT, { APP_ENV: 'one', APP_SCRIPT: '$document_root' }));
  const server = async (): Promise<Record<string, string>> => {
    const r = await request(`http://127.0.0.1:${portico.httpPort}/env.php`);
    assert.equal(r.status, 200, r.body.toString());
    return (JSON.parse(r.body.toString()) as { server: Record<string, string> }).server;
  };
  const before = await server();
  assert.equal(before.DOCUMENT_ROOT, DOCROOT);
  assert.equal(before.APP_ENV, 'one');
  assert.equal(before.APP_SCRIPT, DOCROOT);
  const r = await reloadPortico(portico, config(root2, { APP_ENV: 'two-$uri', APP_SCRIPT: 'fixed' }));
  assert.equal(r.code, 0, r.stderr);
  const after = await server();
  assert.equal(after.DOCUMENT_ROOT, root2);
  assert.equal(after.SCRIPT_FILENAME, path.join(root2, 'env.php'));
  assert.equal(after.APP_ENV, 'two-/env.php');
  assert.equal(after.APP_SCRIPT, 'fixed');
});

test('PHP-FPM stopped -> 502; slow -> 504 (response_headers)', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { children: 2 });
  if (fpm === undefined) return;
  const portico = await startPortico(t, phpConfig(fpm.target, { timeouts: { response_headers: '1s' } }));
  const base = `http://127.0.0.1:${portico.httpPort}`;
  assert.equal((await request(`${base}/slow.php?ms=10`)).status, 200);
  const slow = await request(`${base}/slow.php?ms=4000`);
  assert.equal(slow.status, 504);
  await fpm.stop('SIGKILL');
  const down = await request(`${base}/index.php`);
  assert.equal(down.status, 502);
});

test('more concurrent requests than FPM workers (default max_connections): idle kept-alive connections never starve them', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { children: 2 });
  if (fpm === undefined) return;
  // default max_connections (512): 8 requests open 8 connections, 6 of them wait in FPM's listen queue
  const portico = await startPortico(t, phpConfig(fpm.target, { timeouts: { response_headers: '10s' } }));
  const all = await Promise.all(Array.from({ length: 8 }, () => request(`http://127.0.0.1:${portico.httpPort}/slow.php?ms=200`, { timeoutMs: 30_000 })));
  assert.deepEqual(all.map((r) => r.status), Array(8).fill(200), 'a connection kept idle would hold an FPM worker while queued ones wait (504)');
  const again = await request(`http://127.0.0.1:${portico.httpPort}/index.php`);
  assert.equal(again.status, 200);
});

test('PHP-FPM on a unix socket (unix: target)', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { listen: 'unix', children: 2 });
  if (fpm === undefined) return;
  assert.ok(fpm.target.startsWith('unix:/'));
  const portico = await startPortico(t, phpConfig(fpm.target));
  for (let i = 0; i < 5; i++) {
    const r = await request(`http://127.0.0.1:${portico.httpPort}/index.php`);
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'hello from php\n');
  }
});

test('a client that aborts mid-upload leaves no FPM connection behind', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { children: 2 });
  if (fpm === undefined) return;
  const portico = await startPortico(t, phpConfig(fpm.target, { keepalive: { max_idle: 0 } }));
  assert.equal(await fpm.connections(), 0);
  const c = net.connect(portico.httpPort, '127.0.0.1');
  c.on('error', () => {});
  t.after(() => c.destroy());
  await once(c, 'connect');
  c.write(`POST /env.php HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: ${10 * 1024 * 1024}\r\n\r\n`);
  c.write(randomBytes(1024 * 1024));
  await until('FPM has the upload connection', () => fpm.connections(), (n) => n === 1);
  c.resetAndDestroy();
  await until('FPM connection closed after the client left', () => fpm.connections(), (n) => n === 0);
  const r = await request(`http://127.0.0.1:${portico.httpPort}/index.php`);
  assert.equal(r.status, 200, 'FPM serves the next request');
});

test('a client that stalls mid-body gets 408 (timeouts.body) and the FPM connection is closed', { timeout: 60_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { children: 2 });
  if (fpm === undefined) return;
  const config = phpConfig(fpm.target, { keepalive: { max_idle: 0 } }) as ConfigInput & { timeouts?: unknown };
  config.timeouts = { body: '1s' };
  const portico = await startPortico(t, config);
  const c = net.connect(portico.httpPort, '127.0.0.1');
  c.on('error', () => {});
  t.after(() => c.destroy());
  let got = '';
  c.on('data', (b: Buffer) => (got += b.toString('latin1')));
  await once(c, 'connect');
  c.write('POST /env.php HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part of it');
  await until('FPM has the request', () => fpm.connections(), (n) => n === 1);
  await once(c, 'close');
  assert.match(got, /^HTTP\/1\.1 408 /);
  await until('FPM connection closed', () => fpm.connections(), (n) => n === 0);
});

test('the fastcgi health probe (FCGI_GET_VALUES) passes against php-fpm and fails against an HTTP server', { timeout: 30_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, { children: 1 });
  if (fpm === undefined) return;
  const cfg = { type: 'fastcgi' as const, path: '/', method: 'GET', expect_status: [[200, 399]] as Array<[number, number]>, interval: 1000, timeout: 2000, passes: 1, fails: 1 };
  assert.deepEqual(await probe({ id: fpm.target, host: '127.0.0.1', port: fpm.port }, cfg), { ok: true });
  const http = net.createServer((s) => s.on('data', () => s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')));
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  t.after(() => http.close());
  const r = await probe({ id: 'x', host: '127.0.0.1', port: (http.address() as net.AddressInfo).port }, cfg);
  assert.equal(r.ok, false);
});

/** A FastCGI peer that answers each connection's first bytes with `reply` (or nothing), counting connections. */
async function scriptedApp(t: TestContext, reply: Buffer | null): Promise<{ port: number; accepted: () => number }> {
  let accepted = 0;
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    accepted++;
    sockets.push(s);
    s.on('error', () => {});
    s.once('data', () => {
      if (reply === null) s.destroy();
      else s.end(reply);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, accepted: () => accepted };
}

function rec(type: number, content: Buffer, version = 1, id = 1): Buffer {
  const h = Buffer.from([version, type, id >> 8, id & 255, content.length >> 8, content.length & 255, 0, 0]);
  return Buffer.concat([h, content]);
}
const END = rec(3, Buffer.alloc(8));

/** A temp document root holding `names` (empty scripts) and whatever `extra` makes. */
async function tempRoot(t: TestContext, names: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-fcgi-root-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await Promise.all(names.map((n) => writeFile(path.join(dir, n), '<?php')));
  return dir;
}

test('malformed FastCGI from the application -> 502, and the worker keeps serving', { timeout: 60_000 }, async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['wrong version', rec(6, Buffer.from('Status: 200\r\n\r\nx'), 9)],
    ['another request id', rec(6, Buffer.from('Status: 200\r\n\r\nx'), 1, 7)],
    ['an unknown record type', rec(42, Buffer.from('x'))],
    ['a broken CGI head', Buffer.concat([rec(6, Buffer.from('no colon here\r\n\r\n')), END])],
    ['END_REQUEST without a response', END],
    ['END_REQUEST of 3 bytes', rec(3, Buffer.alloc(3))],
    ['a connection closed mid-record', rec(6, Buffer.from('Status: 200\r\n\r\nabc')).subarray(0, 12)],
    ['a connection closed before any record', Buffer.alloc(0)],
  ];
  const apps = await Promise.all(cases.map(([, reply]) => scriptedApp(t, reply)));
  const good = await scriptedApp(t, Buffer.concat([rec(6, Buffer.from('Content-Type: text/plain\r\n\r\nfine')), END]));
  const root = await tempRoot(t, ['good.php', ...cases.map((_, i) => `bad${i}.php`)]);
  const upstreams: Record<string, unknown> = { good: { targets: [`127.0.0.1:${good.port}`] } };
  const routes: unknown[] = [{ match: { path_exact: '/good.php' }, fastcgi: { upstream: 'good', root } }];
  apps.forEach((a, i) => {
    upstreams[`bad${i}`] = { targets: [`127.0.0.1:${a.port}`], retries: { max: 0 } };
    routes.push({ match: { path_exact: `/bad${i}.php` }, fastcgi: { upstream: `bad${i}`, root } });
  });
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener()], upstreams, routes } as ConfigInput);
  for (let i = 0; i < cases.length; i++) {
    const r = await request(`http://127.0.0.1:${portico.httpPort}/bad${i}.php`);
    assert.equal(r.status, 502, cases[i][0]);
    assert.equal(apps[i].accepted(), 1, `${cases[i][0]}: the application was asked once`);
  }
  const ok = await request(`http://127.0.0.1:${portico.httpPort}/good.php`);
  assert.equal(ok.status, 200);
  assert.equal(ok.body.toString(), 'fine');
  assert.equal(ok.headers['transfer-encoding'], 'chunked');
  assert.equal(portico.logs.filter((l) => l.msg === 'worker exited').length, 0, 'no worker crashed');
});

test('no path outside root and no missing script ever reaches the application', { timeout: 60_000 }, async (t) => {
  const app = await scriptedApp(t, null);
  const root = await tempRoot(t, ['real.php']);
  const outside = await tempRoot(t, ['secret.php']);
  await symlink(path.join(outside, 'secret.php'), path.join(root, 'link.php'));
  await symlink(outside, path.join(root, 'dir'));
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { php: { targets: [`127.0.0.1:${app.port}`], retries: { max: 0 } } },
    routes: [{ match: { path: '/' }, fastcgi: { upstream: 'php', root, split_path_info: '^(.+?\\.php)(/.*)$' } }],
  } as ConfigInput);
  const refused: Array<[string, number]> = [
    ['/missing.php', 404],
    ['/link.php', 404],
    ['/dir/secret.php', 404],
    ['/real.php.bak', 404],
    ['/uploads/x.jpg/.php', 404],
    ['/../secret.php', 400],
    ['/dir/..%2F..%2Fsecret.php', 400],
    ['/%2e%2e/secret.php', 400],
    ['/real.php%00.jpg', 400],
  ];
  for (const [p, status] of refused) {
    const r = await exchangeUntilClose(portico.httpPort, `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`);
    assert.match(r, new RegExp(`^HTTP/1\\.1 ${status} `), p);
  }
  assert.equal(app.accepted(), 0, 'the application was never asked');
  const r = await request(`http://127.0.0.1:${portico.httpPort}/real.php/more`);
  assert.equal(r.status, 502, 'an existing script is sent (this peer then closes)');
  assert.equal(app.accepted(), 1);
});

test('a route remembers its last CGI head: a repeat gives the same head, framed for each request; other bytes, or a route that sets headers, are made anew', { timeout: 60_000 }, async (t) => {
  // each connection is answered with the reply set before its request (FCGI_KEEP_CONN off: one connection a request)
  let reply: Buffer = Buffer.alloc(0);
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.end(reply));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const root = await tempRoot(t, ['a.php', 'b.php']);
  const app = { targets: [`127.0.0.1:${port}`], keepalive: { max_idle: 0 }, retries: { max: 0 } };
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { plain: app, templated: app },
    routes: [
      { match: { path_exact: '/a.php' }, fastcgi: { upstream: 'plain', root } },
      { match: { path_exact: '/b.php' }, fastcgi: { upstream: 'templated', root }, response_headers: { set: { 'X-Host': 'h-$host' } } },
    ],
  } as ConfigInput);
  const answer = (head: string, body: string): Buffer => Buffer.concat([rec(6, Buffer.from(head + body)), END]);
  const send = async (req: string): Promise<string> => exchangeUntilClose(portico.httpPort, req);
  const HEAD_A = 'X-A: 1\r\nContent-Type: text/plain\r\n\r\n';

  reply = answer(HEAD_A, 'one');
  const first = await send('GET /a.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(first, /^HTTP\/1\.1 200 OK\r\nX-A: 1\r\nContent-Type: text\/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\none\r\n0\r\n\r\n$/);
  reply = answer(HEAD_A, 'two!');
  assert.equal(await send('GET /a.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), first.replace('3\r\none', '4\r\ntwo!'), 'the same head again');
  // the same CGI bytes, other framing: no chunked head for HEAD nor for an HTTP/1.0 client, keep-alive said to 1.0
  reply = answer(HEAD_A, 'dropped');
  assert.equal(await send('HEAD /a.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 'HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n');
  reply = answer(HEAD_A, 'old');
  assert.equal(await send('GET /a.php HTTP/1.0\r\nHost: x\r\n\r\n'), 'HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nold');
  // bytes that start like the remembered head but are another head (its empty line is where this one goes on)
  reply = answer('X-A: 1\r\nContent-Type: text/plain\r\nX-B: 2\r\n\r\n', 'b');
  assert.match(await send('GET /a.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 OK\r\nX-A: 1\r\nContent-Type: text\/plain\r\nX-B: 2\r\n/);
  reply = answer('Status: 404 Not Found\r\nContent-Length: 2\r\n\r\n', 'no');
  assert.equal(await send('GET /a.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 'HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno');
  reply = answer(HEAD_A, 'again');
  assert.match(await send('GET /a.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 OK\r\nX-A: 1\r\nContent-Type: text\/plain\r\nTransfer-Encoding: chunked\r\n.*\r\n\r\n5\r\nagain\r\n0\r\n\r\n$/s);
  // a route whose response_headers use the request's variables: its head is the request's own every time
  for (const host of ['one.test', 'two.test']) {
    reply = answer(HEAD_A, 'x');
    assert.match(await send(`GET /b.php HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`), new RegExp(`\\r\\nX-Host: h-${host}\\r\\n`), host);
  }
});

test('an idle kept-alive FastCGI connection that sends bytes is closed, not reused: the next request gets a new connection', { timeout: 60_000 }, async (t) => {
  // FCGI_KEEP_CONN kept: each connection answers every request it gets (one read = one request here)
  const answer = Buffer.concat([rec(6, Buffer.from('Content-Type: text/plain\r\n\r\nok')), END]);
  const conns: Array<{ s: net.Socket; closed: boolean }> = [];
  const server = net.createServer((s) => {
    const c = { s, closed: false };
    conns.push(c);
    s.on('error', () => {});
    s.on('close', () => (c.closed = true));
    s.on('data', () => s.write(answer));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const c of conns) c.s.destroy();
    server.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  const root = await tempRoot(t, ['a.php']);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${port}`], retries: { max: 0 } } },
    routes: [{ match: { path_exact: '/a.php' }, fastcgi: { upstream: 'app', root } }],
  } as ConfigInput);
  const url = `http://127.0.0.1:${portico.httpPort}/a.php`;
  const first = await request(url);
  assert.equal(first.body.toString(), 'ok');
  assert.equal(conns.length, 1);
  // kept: a second request goes on the same connection
  assert.equal((await request(url)).body.toString(), 'ok');
  assert.equal(conns.length, 1, 'the idle connection was reused');
  // the application speaks while idle (not asked anything): Portico closes that connection
  conns[0].s.write(rec(6, Buffer.from('unasked')));
  await until('the idle connection closed by Portico', () => conns[0].closed, (closed) => closed);
  const next = await request(url);
  assert.equal(next.status, 200);
  assert.equal(next.body.toString(), 'ok');
  assert.equal(conns.length, 2, 'the next request went on a new connection');
  assert.equal(portico.logs.filter((l) => l.msg === 'worker exited').length, 0, 'no worker crashed');
});

test('FastCGI requests are in the latency histograms and the per-target response counts (/metrics), as forwarded ones are', { timeout: 60_000 }, async (t) => {
  // FCGI_KEEP_CONN kept: one connection answers every request; `/bad.php` gets a record of an unknown version (502)
  const good = Buffer.concat([rec(6, Buffer.from('Content-Type: text/plain\r\n\r\nok')), END]);
  const conns: net.Socket[] = [];
  const server = net.createServer((s) => {
    conns.push(s);
    s.on('error', () => {});
    s.on('data', (d) => s.write(d.includes('/bad.php') ? rec(6, Buffer.from('x'), 9) : good));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of conns) s.destroy();
    server.close();
  });
  const target = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const root = await tempRoot(t, ['a.php', 'bad.php']);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [target], retries: { max: 0 } } },
    routes: [{ name: 'php', match: { path_regex: '\\.php$' }, fastcgi: { upstream: 'app', root } }],
    admin: { address: '127.0.0.1:0' },
  } as ConfigInput);
  const base = `http://127.0.0.1:${portico.httpPort}`;
  for (let i = 0; i < 3; i++) assert.equal((await request(`${base}/a.php`)).status, 200);
  assert.equal((await request(`${base}/bad.php`)).status, 502);

  const text = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  const m = new Map<string, number>();
  for (const line of text.split('\n')) if (line !== '' && !line.startsWith('#')) m.set(line.slice(0, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1)));
  assert.equal(m.get('portico_request_duration_seconds_count{route="php",class="2xx"}'), 3);
  assert.equal(m.get('portico_request_duration_seconds_count{route="php",class="5xx"}'), 1);
  assert.ok((m.get('portico_request_duration_seconds_sum{route="php",class="2xx"}') ?? 0) > 0, 'durations observed');
  assert.equal(m.get(`portico_upstream_responses_total{upstream="app",target="${target}",class="2xx"}`), 3);
  assert.equal(m.get(`portico_upstream_responses_total{upstream="app",target="${target}",class="5xx"}`), 1, 'the bad answer counts against its target');
  // every request had a first byte from the application; connections: a fresh one is observed, a kept-alive one not
  assert.equal(m.get('portico_upstream_first_byte_seconds_count{upstream="app",target="' + target + '"}'), 4);
  assert.equal(m.get('portico_upstream_connect_seconds_count{upstream="app",target="' + target + '"}'), conns.length);
});
