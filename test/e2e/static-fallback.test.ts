// A static route's fallback end to end (nginx `try_files $uri $uri/ /index.php?$args` beside `location ~ \.php$`):
// the real `portico start` in front of a real php-fpm, a front controller that prints what FPM was given, files
// and folders served from disk, refusals kept, the one re-route bound, and nginx running the same try_files config
// against the same FPM and folder as the oracle of the params a PHP application reads.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from '../helpers/clients.js';
import { hasNginx, startNginx } from '../helpers/nginx.js';
import { needPeer } from '../helpers/peers.js';
import { hasPhpFpm, startPhpFpm } from '../helpers/php-fpm.js';
import { plainListener, startPortico, type LogLine } from '../helpers/portico.js';
import { exchangeUntilClose } from '../helpers/wire.js';
import type { ConfigInput } from '../../src/config/schema.js';

/** What the front controller prints: the params a PHP router reads (absent ones as null). */
interface Front {
  REQUEST_URI: string | null;
  SCRIPT_NAME: string | null;
  QUERY_STRING: string | null;
  PATH_INFO: string | null;
  DOCUMENT_URI: string | null;
  SCRIPT_FILENAME: string | null;
  method: string;
  body: string;
}

const FRONT_CONTROLLER = `<?php
header('Content-Type: application/json');
$s = $_SERVER;
echo json_encode([
  'REQUEST_URI' => $s['REQUEST_URI'] ?? null, 'SCRIPT_NAME' => $s['SCRIPT_NAME'] ?? null,
  'QUERY_STRING' => $s['QUERY_STRING'] ?? null, 'PATH_INFO' => $s['PATH_INFO'] ?? null,
  'DOCUMENT_URI' => $s['DOCUMENT_URI'] ?? null, 'SCRIPT_FILENAME' => $s['SCRIPT_FILENAME'] ?? null,
  'method' => $s['REQUEST_METHOD'], 'body' => file_get_contents('php://input'),
]);
`;

/** A PHP application's folder: the front controller, a stylesheet, a folder with its index, one without, a dotfile, a link out. */
async function docroot(t: TestContext): Promise<string> {
  const base = await mkdtemp(path.join(tmpdir(), 'portico-fallback-'));
  t.after(() => rm(base, { recursive: true, force: true }));
  await chmod(base, 0o755); // FPM's workers run as another user
  const root = path.join(base, 'app');
  await mkdir(path.join(root, 'folder'), { recursive: true });
  await mkdir(path.join(root, 'bare'));
  await writeFile(path.join(root, 'index.php'), FRONT_CONTROLLER);
  await writeFile(path.join(root, 'index.html'), 'root index\n');
  await writeFile(path.join(root, 'existing.css'), 'body { color: teal }\n');
  await writeFile(path.join(root, 'folder', 'index.html'), 'folder index\n');
  await writeFile(path.join(root, '.env'), 'SECRET=1\n');
  await writeFile(path.join(base, 'outside.txt'), 'outside the root\n');
  await symlink(path.join(base, 'outside.txt'), path.join(root, 'link.txt'));
  return root;
}

function front(r: { status: number; body: Buffer }): Front {
  assert.equal(r.status, 200, r.body.toString());
  return JSON.parse(r.body.toString()) as Front;
}

test('static fallback: files and folders from disk, anything else to the front controller with nginx\'s params; refusals kept; one re-route', { timeout: 90_000 }, async (t) => {
  if (!needPeer(t, 'php-fpm', hasPhpFpm())) return;
  const fpm = await startPhpFpm(t, { children: 2 });
  const root = await docroot(t);
  const config = {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { php: { targets: [fpm.target] } },
    routes: [
      { name: 'php', match: { path_regex: '\\.php$' }, fastcgi: { upstream: 'php', root } },
      { name: 'loop', match: { path: '/loop' }, static: { root, fallback: '/loop/missing' } },
      { name: 'legacy', match: { path: '/legacy' }, static: { root, fallback: '/index.php?q=$uri&$args' } },
      { name: 'gone', match: { path: '/gone' }, static: { root, fallback: '/missing.php?$args' } },
      { name: 'site', match: { path: '/' }, static: { root, fallback: '/index.php?$args' } },
    ],
  } as ConfigInput;
  const portico = await startPortico(t, config);
  const base = `http://127.0.0.1:${portico.httpPort}`;

  await t.test('an existing file and folders with an index are served from disk, not by PHP', async () => {
    const css = await request(`${base}/existing.css?v=3`);
    assert.equal(css.status, 200);
    assert.equal(css.body.toString(), 'body { color: teal }\n');
    assert.match(String(css.headers['content-type']), /^text\/css/);
    assert.equal((await request(`${base}/`)).body.toString(), 'root index\n');
    assert.equal((await request(`${base}/folder/`)).body.toString(), 'folder index\n');
    const bare = await request(`${base}/folder`);
    assert.equal(bare.status, 301, 'a folder without its final slash is redirected as before');
  });

  await t.test('a pretty URL reaches index.php: REQUEST_URI the client\'s, SCRIPT_NAME and QUERY_STRING the fallback\'s, no PATH_INFO', async () => {
    const j = front(await request(`${base}/blog/2026/hello?x=1`));
    assert.equal(j.REQUEST_URI, '/blog/2026/hello?x=1');
    assert.equal(j.SCRIPT_NAME, '/index.php');
    assert.equal(j.DOCUMENT_URI, '/index.php');
    assert.equal(j.SCRIPT_FILENAME, path.join(root, 'index.php'));
    assert.equal(j.QUERY_STRING, 'x=1');
    assert.equal(j.PATH_INFO ?? '', '');
    const none = front(await request(`${base}/api/users/7`));
    assert.equal(none.REQUEST_URI, '/api/users/7');
    assert.equal(none.QUERY_STRING, '');
    // the fallback's own query, with the client's decoded path escaped into it and the client's query after
    const legacy = front(await request(`${base}/legacy/caf%C3%A9%20bar?page=2`));
    assert.equal(legacy.REQUEST_URI, '/legacy/caf%C3%A9%20bar?page=2');
    assert.equal(legacy.QUERY_STRING, 'q=/legacy/caf%C3%A9%20bar&page=2');
    assert.equal(legacy.SCRIPT_NAME, '/index.php');
    // a folder without an index is the front controller's too (no listing, no 403)
    assert.equal(front(await request(`${base}/bare/`)).REQUEST_URI, '/bare/');
  });

  await t.test('POST with a body to a pretty URL reaches PHP with its body; HEAD gets PHP\'s head without a body', async () => {
    const j = front(await request(`${base}/api/users/7?draft=1`, { method: 'POST', body: 'name=ada&lang=php', headers: { 'content-type': 'application/x-www-form-urlencoded' } }));
    assert.equal(j.method, 'POST');
    assert.equal(j.body, 'name=ada&lang=php');
    assert.equal(j.QUERY_STRING, 'draft=1');
    const head = await request(`${base}/blog/x`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.match(String(head.headers['content-type']), /application\/json/);
    assert.equal(head.body.length, 0);
  });

  await t.test('refusals stay refusals: a dotfile and a link out of the root 403, traversal and %2F 400, never PHP', async () => {
    const env = await request(`${base}/.env`);
    assert.equal(env.status, 403);
    assert.doesNotMatch(env.body.toString(), /REQUEST_URI|SECRET/);
    assert.equal((await request(`${base}/folder/.git/config`)).status, 403);
    assert.equal((await request(`${base}/link.txt`)).status, 403);
    for (const target of ['/../etc/passwd', '/a/..%2F..%2Fetc', '/%2e%2e/index.php', '/x%00.php']) {
      const raw = await exchangeUntilClose(portico.httpPort, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.match(raw, /^HTTP\/1\.1 400 /, target);
    }
  });

  await t.test('a fallback script that does not exist is a 404 without FPM; a second miss is a 500, logged once', async () => {
    const gone = await request(`${base}/gone/page?x=1`);
    assert.equal(gone.status, 404);
    assert.doesNotMatch(gone.body.toString(), /REQUEST_URI|File not found/, 'Portico\'s own 404, not FPM\'s');
    assert.equal((await request(`${base}/loop/a`)).status, 500);
    assert.equal((await request(`${base}/loop/b`)).status, 500);
    const isCycle = (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.startsWith('static fallback:');
    await portico.waitForLog(isCycle);
    // the second 500's access line is written after the first's warning: once it is there, the count is final
    await portico.waitForLog((l) => l.msg === 'request' && l.path === '/loop/b');
    assert.equal(portico.logs.filter(isCycle).length, 1, 'the cycle is logged once per route');
  });

  await t.test('the access line shows the client\'s target and the route that answered', async () => {
    await request(`${base}/shop/cart?item=9`);
    const line = await portico.waitForLog((l) => l.msg === 'request' && l.path === '/shop/cart?item=9');
    assert.equal(line.route, 'php');
    assert.equal(line.status, 200);
  });
});

test('static fallback: a fallback that matches no route answers as "no route"; a single-page app falls back to its index.html', { timeout: 60_000 }, async (t) => {
  const root = await docroot(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    routes: [{ match: { path: '/app' }, static: { root, fallback: '/nowhere?from=$uri' } }],
  } as ConfigInput);
  const base = `http://127.0.0.1:${portico.httpPort}`;
  const none = await request(`${base}/app/x`);
  assert.equal(none.status, 404);
  const line = await portico.waitForLog((l) => l.path === '/app/x' && l.status === 404);
  assert.equal((line.err as { code?: string } | undefined)?.code, 'ROUTE_NOT_FOUND', JSON.stringify(line));
  // a single-page app: a deep link names no file, the app's index.html answers it (the fallback's route is the same)
  const spa = await startPortico(t, { workers: 1, listeners: [plainListener()], routes: [{ match: { path: '/' }, static: { root, fallback: '/index.html' } }] } as ConfigInput);
  const page = await request(`http://127.0.0.1:${spa.httpPort}/deep/link?tab=2`);
  assert.equal(page.status, 200);
  assert.equal(page.body.toString(), 'root index\n');
});

test('static fallback: the params PHP sees equal those nginx gives with the same try_files, FPM and folder (oracle)', { timeout: 90_000 }, async (t) => {
  if (!needPeer(t, 'php-fpm', hasPhpFpm()) || !needPeer(t, 'nginx', hasNginx())) return;
  const fpm = await startPhpFpm(t, { children: 2 });
  const root = await docroot(t);
  const nginx = await startNginx(
    t,
    `server { listen 127.0.0.1:{{PORT}}; root ${root}; index index.html;
       location / { try_files $uri $uri/ /index.php?$args; }
       location ~ \\.php$ { include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; fastcgi_pass ${fpm.target}; } }`,
  );
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { php: { targets: [fpm.target] } },
    routes: [
      { match: { path_regex: '\\.php$' }, fastcgi: { upstream: 'php', root } },
      { match: { path: '/' }, static: { root, fallback: '/index.php?$args' } },
    ],
  } as ConfigInput);
  const targets = ['/blog/2026/hello?x=1', '/api/users/7', '/a/b?x=1&y=%20z&x=2', '/caf%C3%A9/page?q=%C3%A9', '/index.php?direct=1', '/search?q=a+b&empty=', '/x/?'];
  for (const target of targets) {
    const mine = front(await request(`http://127.0.0.1:${portico.httpPort}${target}`, { method: 'POST', body: 'b=1' }));
    const theirs = front(await request(`http://127.0.0.1:${nginx.port}${target}`, { method: 'POST', body: 'b=1' }));
    for (const k of ['REQUEST_URI', 'SCRIPT_NAME', 'QUERY_STRING', 'DOCUMENT_URI', 'SCRIPT_FILENAME', 'method', 'body'] as const) assert.equal(mine[k], theirs[k], `${k} of ${target}`);
    // nginx's fastcgi_params sets no PATH_INFO; Portico sends it empty: PHP reads both as ''
    assert.equal(mine.PATH_INFO ?? '', theirs.PATH_INFO ?? '', `PATH_INFO of ${target}`);
  }
});
