// Static routes through a real `portico start`, every header rule checked with curl: content types, validators
// and 304s, single ranges (206/416; several ranges -> the whole file), If-Range, HEAD, 405 with Allow, folder
// redirects and index files, precompressed .br/.gz siblings by Accept-Encoding with Vary; traversal, encoded
// slashes, dotfiles and symlinks out of the root refused; a 1 GiB sparse file by range and whole (sha256
// compared); the per-worker cap on open files and the send timeout of a client that reads nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import type { TestContext } from 'node:test';
import type { ConfigInput } from '../../src/config/schema.js';
import { curl, hasCurl, parseCurlOutput, run } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico, tlsListener } from '../helpers/portico.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';
import { existsSync, readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { SHARED_CONTRACT } from '../helpers/paths.js';

const GIB = 1024 ** 3;

function site(t: TestContext): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-static-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const root = path.join(dir, 'html');
  mkdirSync(path.join(root, 'docs', 'empty'), { recursive: true });
  mkdirSync(path.join(root, '.git'));
  mkdirSync(path.join(root, '.well-known'));
  writeFileSync(path.join(root, 'index.html'), '<h1>home</h1>\n');
  writeFileSync(path.join(root, 'docs', 'index.html'), '<h1>docs</h1>\n');
  writeFileSync(path.join(root, 'style.css'), 'body { color: red }\n');
  writeFileSync(path.join(root, 'data.json'), '{"a":1}');
  writeFileSync(path.join(root, 'digits.txt'), '0123456789');
  writeFileSync(path.join(root, 'a b.txt'), 'space');
  const text = 'compress me '.repeat(500);
  writeFileSync(path.join(root, 'app.js'), text);
  writeFileSync(path.join(root, 'app.js.gz'), gzipSync(text));
  writeFileSync(path.join(root, 'app.js.br'), brotliCompressSync(text));
  writeFileSync(path.join(root, '.git', 'config'), 'secret');
  writeFileSync(path.join(root, '.env'), 'SECRET=1');
  writeFileSync(path.join(root, '.well-known', 'security.txt'), 'Contact: x');
  writeFileSync(path.join(dir, 'outside.txt'), 'outside');
  symlinkSync(path.join(dir, 'outside.txt'), path.join(root, 'escape.txt'));
  symlinkSync(dir, path.join(root, 'up'));
  symlinkSync(path.join(root, 'digits.txt'), path.join(root, 'inside-link.txt'));
  utimesSync(path.join(root, 'digits.txt'), new Date('2026-01-02T03:04:05Z'), new Date('2026-01-02T03:04:05Z'));
  // a 1 GiB sparse file: no disk blocks, reads as zeros
  const big = path.join(root, 'big.bin');
  writeFileSync(big, '');
  return root;
}

/** One raw request on its own connection (curl and Node clean `..` and `%2F` themselves). */
async function raw(t: TestContext, port: number, target: string): Promise<number> {
  const socket = await connectPlain(t, port);
  const reader = new ResponseReader(socket);
  socket.write(`GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
  const res = await reader.next();
  socket.destroy();
  return res.status;
}

test('static files: headers, validators, ranges, precompressed siblings, refusals', { timeout: 180_000 }, async (t) => {
  if (!needPeer(t, 'curl', hasCurl())) return;
  const root = site(t);
  const truncate = await run('truncate', ['-s', String(GIB), path.join(root, 'big.bin')]);
  assert.equal(truncate.code, 0, truncate.stderr);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener(), tlsListener()],
    routes: [{ match: { path: '/' }, static: { root, cache_control: 'public, max-age=60' } }],
  });
  const base = `http://127.0.0.1:${portico.httpPort}`;
  const get = async (p: string, extra: string[] = []) => parseCurlOutput((await curl(`${base}${p}`, extra)).stdout);

  await t.test('a file: type, length, ETag, Last-Modified, Cache-Control, Accept-Ranges, Date', async () => {
    const r = await get('/digits.txt');
    assert.equal(r.status, 200);
    assert.equal(r.body, '0123456789');
    assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(r.headers['content-length'], '10');
    assert.equal(r.headers['last-modified'], 'Fri, 02 Jan 2026 03:04:05 GMT');
    assert.match(r.headers.etag, /^"[0-9a-f]+-a"$/);
    assert.equal(r.headers['cache-control'], 'public, max-age=60');
    assert.equal(r.headers['accept-ranges'], 'bytes');
    assert.ok(r.headers.date !== undefined);
    assert.equal((await get('/style.css')).headers['content-type'], 'text/css; charset=utf-8');
    assert.equal((await get('/data.json')).headers['content-type'], 'application/json');
    assert.equal((await get('/a%20b.txt')).body, 'space');
    assert.equal((await get('/inside-link.txt')).body, '0123456789');
    assert.equal((await get('/.well-known/security.txt')).body, 'Contact: x');
    // over TLS as well
    const tlsRes = parseCurlOutput((await curl(`https://localhost:${portico.tlsPort}/digits.txt`)).stdout);
    assert.equal(tlsRes.body, '0123456789');
  });

  await t.test('304: If-None-Match (list, weak, *) and If-Modified-Since; If-None-Match wins over If-Modified-Since', async () => {
    const etag = (await get('/digits.txt')).headers.etag;
    const inm = await get('/digits.txt', ['-H', `If-None-Match: "x", W/${etag}`]);
    assert.equal(inm.status, 304);
    assert.equal(inm.body, '');
    assert.equal(inm.headers.etag, etag);
    assert.equal(inm.headers['cache-control'], 'public, max-age=60');
    assert.equal(inm.headers['content-length'], undefined);
    assert.equal((await get('/digits.txt', ['-H', 'If-None-Match: *'])).status, 304);
    assert.equal((await get('/digits.txt', ['-H', 'If-Modified-Since: Fri, 02 Jan 2026 03:04:05 GMT'])).status, 304);
    assert.equal((await get('/digits.txt', ['-H', 'If-Modified-Since: Fri, 02 Jan 2026 03:04:04 GMT'])).status, 200);
    assert.equal((await get('/digits.txt', ['-H', 'If-None-Match: "other"', '-H', 'If-Modified-Since: Fri, 02 Jan 2026 03:04:05 GMT'])).status, 200);
  });

  await t.test('ranges: 206 with Content-Range, suffix and open ranges, 416, several ranges -> 200 whole, If-Range', async () => {
    const r = await get('/digits.txt', ['-r', '2-4']);
    assert.equal(r.status, 206);
    assert.equal(r.body, '234');
    assert.equal(r.headers['content-range'], 'bytes 2-4/10');
    assert.equal(r.headers['content-length'], '3');
    assert.equal((await get('/digits.txt', ['-r', '-3'])).body, '789');
    assert.equal((await get('/digits.txt', ['-r', '7-'])).body, '789');
    assert.equal((await get('/digits.txt', ['-r', '8-100'])).headers['content-range'], 'bytes 8-9/10');
    const bad = await get('/digits.txt', ['-r', '10-20']);
    assert.equal(bad.status, 416);
    assert.equal(bad.headers['content-range'], 'bytes */10');
    const multi = await get('/digits.txt', ['-r', '0-1,5-6']);
    assert.equal(multi.status, 200);
    assert.equal(multi.body, '0123456789');
    const etag = (await get('/digits.txt')).headers.etag;
    assert.equal((await get('/digits.txt', ['-r', '0-0', '-H', `If-Range: ${etag}`])).status, 206);
    assert.equal((await get('/digits.txt', ['-r', '0-0', '-H', 'If-Range: "stale"'])).status, 200);
    assert.equal((await get('/digits.txt', ['-r', 'lines=0-1'])).status, 200);
  });

  await t.test('HEAD: the headers of a GET without a body; other methods 405 with Allow', async () => {
    const h = await get('/digits.txt', ['-I']);
    assert.equal(h.status, 200);
    assert.equal(h.headers['content-length'], '10');
    assert.equal(h.body, '');
    const post = await get('/digits.txt', ['-X', 'POST', '-d', 'x']);
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
    assert.equal((await get('/digits.txt', ['-X', 'DELETE'])).status, 405);
  });

  await t.test('folders: index.html at / and /docs/, /docs -> 301 /docs/ (query kept), a folder without index -> 403', async () => {
    assert.equal((await get('/')).body, '<h1>home</h1>\n');
    assert.equal((await get('/docs/')).body, '<h1>docs</h1>\n');
    const redirect = await get('/docs?x=1');
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.location, '/docs/?x=1');
    assert.equal((await get('/docs/empty/')).status, 403);
    assert.equal((await get('/missing.txt')).status, 404);
    assert.equal((await get('/digits.txt/')).status, 404);
  });

  await t.test('precompressed siblings by Accept-Encoding q-values, with Vary; ranges use the file itself', async () => {
    const text = 'compress me '.repeat(500);
    const br = await run('curl', ['-sS', '--max-time', '10', '-D', '-', '-o', '/dev/stderr', '-H', 'Accept-Encoding: gzip, br', `${base}/app.js`]);
    assert.match(br.stdout, /Content-Encoding: br/i);
    assert.match(br.stdout, /Vary: Accept-Encoding/i);
    assert.match(br.stdout, /Content-Type: text\/javascript/i);
    const body = async (ae: string): Promise<{ enc: string | undefined; text: string }> => {
      const r = await fetchRaw(`${base}/app.js`, { 'accept-encoding': ae });
      const enc = r.headers['content-encoding'] as string | undefined;
      const plain = enc === 'br' ? brotliDecompressSync(r.body) : enc === 'gzip' ? gunzipSync(r.body) : r.body;
      return { enc, text: plain.toString() };
    };
    assert.deepEqual(await body('gzip, br'), { enc: 'br', text });
    assert.deepEqual(await body('br;q=0, gzip'), { enc: 'gzip', text });
    assert.deepEqual(await body('gzip;q=0.5, br;q=0.4'), { enc: 'gzip', text });
    assert.deepEqual(await body('*;q=0'), { enc: undefined, text });
    assert.deepEqual(await body('identity'), { enc: undefined, text });
    const ranged = await get('/app.js', ['-r', '0-7', '-H', 'Accept-Encoding: br']);
    assert.equal(ranged.status, 206);
    assert.equal(ranged.body, 'compress');
    assert.equal(ranged.headers['content-encoding'], undefined);
  });

  await t.test('refused: dotfiles 403, symlinks out of the root 403, traversal and encoded slashes 400, nothing outside served', async () => {
    assert.equal((await get('/.env')).status, 403);
    assert.equal((await get('/.git/config')).status, 403);
    assert.equal((await get('/escape.txt')).status, 403);
    assert.equal((await get('/up/outside.txt')).status, 403);
    for (const target of ['/../outside.txt', '/docs/../../outside.txt', '/%2e%2e/outside.txt', '/..%2Foutside.txt', '/docs%2F..%2F..%2Foutside.txt', '/..\\outside.txt', '/%00', '/..;/outside.txt']) {
      assert.equal(await raw(t, portico.httpPort, target), 400, target);
    }
    assert.equal(await raw(t, portico.httpPort, '/docs/../digits.txt'), 200);
    assert.equal(await raw(t, portico.httpPort, '/%2egit/config'), 403);
    assert.equal(await raw(t, portico.httpPort, '/%ff'), 400);
  });

  await t.test('1 GiB sparse file: a range near its end, and the whole file streamed (sha256 compared)', async () => {
    const r = await get('/big.bin', ['-r', `${GIB - 4}-`]);
    assert.equal(r.status, 206);
    assert.equal(r.headers['content-range'], `bytes ${GIB - 4}-${GIB - 1}/${GIB}`);
    assert.equal(r.body, '\0\0\0\0');
    const zeros = createHash('sha256');
    const block = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 1024; i++) zeros.update(block);
    const expected = zeros.digest('hex');
    const got = await new Promise<{ sha: string; bytes: number }>((resolve, reject) => {
      const child = spawn('curl', ['-sS', '--max-time', '150', `${base}/big.bin`], { stdio: ['ignore', 'pipe', 'inherit'] });
      const h = createHash('sha256');
      let bytes = 0;
      child.stdout.on('data', (c: Buffer) => {
        bytes += c.length;
        h.update(c);
      });
      child.once('error', reject);
      child.once('close', (code) => (code === 0 ? resolve({ sha: h.digest('hex'), bytes }) : reject(new Error(`curl exited ${code}`))));
    });
    assert.equal(got.bytes, GIB);
    assert.equal(got.sha, expected);
  });
});

test('static: the per-worker cap on open files answers 503; a client that reads nothing is cut after send_timeout', { timeout: 60_000 }, async (t) => {
  const root = site(t);
  writeFileSync(path.join(root, 'big.bin'), Buffer.alloc(64 * 1024 * 1024, 1));
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    limits: { static_open_files: 1 },
    routes: [{ match: { path: '/' }, static: { root, send_timeout: '1s' } }],
  });
  // a client that asks for 64 MiB and reads nothing: its download holds the one file slot
  const stalled = await connectPlain(t, portico.httpPort);
  stalled.pause();
  stalled.write('GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n');
  let received = 0;
  const closed = new Promise<void>((resolve) => stalled.once('close', () => resolve()));
  // wait until the download is under way (the head reached the client's kernel buffer)
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (stalled.readableLength > 0) resolve();
      else setTimeout(check, 20);
    };
    stalled.once('readable', () => resolve());
    check();
  });
  assert.equal(await raw(t, portico.httpPort, '/digits.txt'), 503);
  // send_timeout: the stalled download is cut, its slot freed; the client then reads what was in flight and sees the end
  const cut = await portico.waitForLog((l) => (l.err as { code?: string } | undefined)?.code === 'CLIENT_SEND_TIMEOUT');
  assert.equal(cut.path, '/big.bin');
  stalled.on('data', (c: Buffer) => (received += c.length));
  stalled.resume();
  await closed;
  assert.ok(received < 64 * 1024 * 1024, `received ${received}`);
  assert.equal(await raw(t, portico.httpPort, '/digits.txt'), 200);
});

/** GET with Node's http client, body as bytes (no automatic decoding). */
async function fetchRaw(url: string, headers: Record<string, string>): Promise<{ headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const http = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

test("seed-php's static route and its cors block, as written in ../shared/contract, serve the contract's html/", { timeout: 60_000 }, async (t) => {
  if (!needPeer(t, 'curl', hasCurl())) return;
  const file = path.join(SHARED_CONTRACT, 'seed-php.yaml');
  if (!existsSync(file)) {
    t.skip(`${file} is not present (outside the project checkout)`);
    return;
  }
  const seed = parse(readFileSync(file, 'utf8')) as { routes: Array<Record<string, unknown> & { static?: { root: string }; cors?: unknown }> };
  const staticRoute = seed.routes.find((r) => r.static !== undefined)!;
  const cors = seed.routes.find((r) => r.cors !== undefined)!.cors;
  // the seed's relative root resolves against its folder; the rest of its blocks (fastcgi, websocket) are not ours
  const route = { ...staticRoute, static: { ...staticRoute.static!, root: path.join(SHARED_CONTRACT, staticRoute.static!.root) }, cors } as NonNullable<ConfigInput['routes']>[number];
  const portico = await startPortico(t, { workers: 1, listeners: [plainListener()], routes: [route] });
  const r = parseCurlOutput((await curl(`http://127.0.0.1:${portico.httpPort}/`, ['-H', 'Origin: https://shop.example.test'])).stdout);
  assert.equal(r.status, 200);
  assert.equal(r.body, readFileSync(path.join(SHARED_CONTRACT, 'html', 'index.html'), 'utf8'));
  assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(r.headers['access-control-allow-origin'], 'https://shop.example.test');
  assert.equal(r.headers['access-control-allow-credentials'], 'true');
  const pre = parseCurlOutput((await curl(`http://127.0.0.1:${portico.httpPort}/`, ['-X', 'OPTIONS', '-H', 'Origin: https://app.example.test', '-H', 'Access-Control-Request-Method: GET'])).stdout);
  assert.equal(pre.status, 204);
  assert.equal(pre.headers['access-control-allow-origin'], 'https://app.example.test');
});
