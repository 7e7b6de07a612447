// The static-file cache through a real `portico start` (static_cache with a short `valid`): a hit serves the same
// bytes and ETag; a file changed, created or deleted on disk is seen after at most `valid` (and a change is not
// seen while the window holds); a symlink or a folder swapped to lead out of the root is never served; files the
// route compresses come back whole through gzip and brotli, from memory with a length or streamed when large.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import type { TestContext } from 'node:test';
import { request, type SimpleResponse } from '../helpers/clients.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { until } from '../helpers/until.js';
import { adminUrl } from '../helpers/admin.js';

const VALID_MS = 3000;
/** Longest wait for a change to show: the window plus room for a loaded machine. */
const SHOW_WITHIN_MS = VALID_MS + 12_000;

function folder(t: TestContext): { dir: string; root: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-static-cache-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const root = path.join(dir, 'html');
  mkdirSync(root);
  return { dir, root };
}

/** Replaces `link` by a symlink to `target` in one rename (no moment without the name). */
function swapLink(link: string, target: string): void {
  const tmp = `${link}.swap`;
  symlinkSync(target, tmp);
  renameSync(tmp, link);
}

async function start(t: TestContext, root: string, compress = false): Promise<(p: string, headers?: Record<string, string>) => Promise<SimpleResponse>> {
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    static_cache: { valid: `${VALID_MS}ms`, file_size: '16KiB' },
    routes: [{ match: { path: '/' }, static: { root }, ...(compress ? { compress: { types: ['text/plain'] } } : {}) }],
  });
  // keep-alive, as browsers: a connection about to close gets no ready-made answer, so this is the path that counts
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  t.after(() => agent.destroy());
  return (p, headers = {}) => request(`http://127.0.0.1:${portico.httpPort}${p}`, { headers, agent });
}

test('static cache: same bytes and ETag from a hit; a change on disk shows after at most `valid`, not before', { timeout: 90_000 }, async (t) => {
  const { root } = folder(t);
  const small = path.join(root, 'small.txt');
  const large = path.join(root, 'large.bin');
  writeFileSync(small, 'first version\n');
  writeFileSync(large, Buffer.alloc(64 * 1024, 1)); // above file_size: reopened per request
  const get = await start(t, root);

  const filledBefore = Date.now();
  const a = await get('/small.txt');
  const b = await get('/small.txt');
  assert.equal(a.status, 200);
  assert.equal(b.body.toString(), 'first version\n');
  assert.equal(b.headers.etag, a.headers.etag);
  assert.equal(b.headers['last-modified'], a.headers['last-modified']);

  writeFileSync(small, 'second version, longer\n');
  const during = await get('/small.txt');
  // the entry was made after filledBefore, so it holds at least until filledBefore + VALID_MS
  if (Date.now() < filledBefore + VALID_MS) assert.equal(during.body.toString(), 'first version\n', 'within the window the remembered file is served');
  const after = await until('the new small.txt', () => get('/small.txt'), (r) => r.body.toString() === 'second version, longer\n', SHOW_WITHIN_MS);
  assert.notEqual(after.headers.etag, a.headers.etag);
  assert.equal(after.headers['content-length'], String('second version, longer\n'.length));

  const l1 = await get('/large.bin');
  assert.equal(l1.body.length, 64 * 1024);
  writeFileSync(large, Buffer.alloc(32 * 1024, 2));
  const l2 = await until('the new large.bin', () => get('/large.bin'), (r) => r.body.length === 32 * 1024, SHOW_WITHIN_MS);
  assert.ok(l2.body.every((x) => x === 2));
  assert.notEqual(l2.headers.etag, l1.headers.etag);
});

test('static cache: a deleted file answers 404 after the window; a file created where a 404 was remembered is served', { timeout: 90_000 }, async (t) => {
  const { root } = folder(t);
  writeFileSync(path.join(root, 'gone.txt'), 'soon gone\n');
  writeFileSync(path.join(root, 'gone-large.bin'), Buffer.alloc(40 * 1024, 5));
  const get = await start(t, root);
  assert.equal((await get('/gone.txt')).status, 200);
  assert.equal((await get('/gone-large.bin')).status, 200);
  assert.equal((await get('/later.txt')).status, 404);
  unlinkSync(path.join(root, 'gone.txt'));
  unlinkSync(path.join(root, 'gone-large.bin'));
  writeFileSync(path.join(root, 'later.txt'), 'here now\n');
  await until('404 for gone.txt', () => get('/gone.txt'), (r) => r.status === 404, SHOW_WITHIN_MS);
  await until('404 for gone-large.bin', () => get('/gone-large.bin'), (r) => r.status === 404, SHOW_WITHIN_MS);
  const later = await until('later.txt served', () => get('/later.txt'), (r) => r.status === 200, SHOW_WITHIN_MS);
  assert.equal(later.body.toString(), 'here now\n');
});

test('static cache: a symlink or a folder swapped to lead out of the root is refused, never served, cached or not', { timeout: 120_000 }, async (t) => {
  const { dir, root } = folder(t);
  const SECRET = 'SECRET outside the root';
  writeFileSync(path.join(dir, 'secret.txt'), SECRET);
  writeFileSync(path.join(dir, 'secret.bin'), Buffer.concat([Buffer.from(SECRET), Buffer.alloc(40 * 1024, 9)]));
  mkdirSync(path.join(dir, 'outside'));
  writeFileSync(path.join(dir, 'outside', 'f.txt'), SECRET);
  writeFileSync(path.join(root, 'real.txt'), 'inside\n');
  writeFileSync(path.join(root, 'real.bin'), Buffer.alloc(40 * 1024, 3));
  symlinkSync(path.join(root, 'real.txt'), path.join(root, 'link.txt'));
  symlinkSync(path.join(root, 'real.bin'), path.join(root, 'link.bin'));
  mkdirSync(path.join(root, 'sub'));
  writeFileSync(path.join(root, 'sub', 'f.txt'), 'inside sub\n');
  const get = await start(t, root);
  for (const p of ['/link.txt', '/link.bin', '/sub/f.txt']) assert.equal((await get(p)).status, 200, p);

  swapLink(path.join(root, 'link.txt'), path.join(dir, 'secret.txt'));
  swapLink(path.join(root, 'link.bin'), path.join(dir, 'secret.bin'));
  renameSync(path.join(root, 'sub'), path.join(dir, 'old-sub'));
  symlinkSync(path.join(dir, 'outside'), path.join(root, 'sub'));
  for (const p of ['/link.txt', '/link.bin', '/sub/f.txt']) {
    await until(
      `403 for ${p}`,
      async () => {
        const r = await get(p);
        assert.ok(!r.body.includes(SECRET), `${p}: the file outside the root was served (status ${r.status})`);
        assert.ok(r.status === 200 || r.status === 403, `${p}: status ${r.status}`);
        return r.status;
      },
      (s) => s === 403,
      SHOW_WITHIN_MS,
    );
  }
});

test('static cache and compression: gzip and br bodies decode to the file, from memory with a length, streamed when large', { timeout: 90_000 }, async (t) => {
  const { root } = folder(t);
  const line = 'static text through the cache, compressed once and kept.\n';
  const mid = Buffer.from(line.repeat(Math.ceil(65536 / line.length)).slice(0, 65536));
  const huge = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `${i} ${line}`).join(''));
  assert.ok(huge.length > 256 * 1024);
  writeFileSync(path.join(root, 'mid.txt'), mid);
  writeFileSync(path.join(root, 'huge.txt'), huge);
  const get = await start(t, root, true);
  for (let i = 0; i < 2; i++) {
    const gz = await get('/mid.txt', { 'accept-encoding': 'gzip' });
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.equal(gz.headers['content-length'], String(gz.body.length), 'a length, not chunked');
    assert.match(String(gz.headers.etag), /^W\//);
    assert.equal(gz.headers.vary, 'Accept-Encoding');
    assert.deepEqual(gunzipSync(gz.body), mid, `gzip round ${i}`);
    const br = await get('/mid.txt', { 'accept-encoding': 'br' });
    assert.equal(br.headers['content-encoding'], 'br');
    assert.deepEqual(brotliDecompressSync(br.body), mid, `br round ${i}`);
    const plain = await get('/mid.txt');
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.deepEqual(plain.body, mid);
  }
  const big = await get('/huge.txt', { 'accept-encoding': 'gzip' });
  assert.equal(big.headers['transfer-encoding'], 'chunked');
  assert.deepEqual(gunzipSync(big.body), huge);
  // changed on disk: the compressed form follows the file
  const changed = Buffer.from(line.toUpperCase().repeat(200));
  writeFileSync(path.join(root, 'mid.txt'), changed);
  const after = await until('the new mid.txt, compressed', () => get('/mid.txt', { 'accept-encoding': 'gzip' }), (r) => gunzipSync(r.body).equals(changed), SHOW_WITHIN_MS);
  assert.equal(after.headers['content-encoding'], 'gzip');
});

test('static cache: a .gz sibling asked for by its own name keeps its own type and no Content-Encoding, and the reverse', { timeout: 60_000 }, async (t) => {
  const { root } = folder(t);
  const js = 'console.log("precompressed sibling");\n'.repeat(50);
  writeFileSync(path.join(root, 'app.js'), js);
  writeFileSync(path.join(root, 'app.js.gz'), gzipSync(js));
  const get = await start(t, root);
  for (let i = 0; i < 2; i++) {
    // each order twice: a ready answer kept for one must never be sent for the other
    const sib = await get('/app.js', { 'accept-encoding': 'gzip' });
    assert.equal(sib.headers['content-encoding'], 'gzip', `round ${i}`);
    assert.match(String(sib.headers['content-type']), /^text\/javascript/);
    assert.equal(gunzipSync(sib.body).toString(), js);
    const direct = await get('/app.js.gz', { 'accept-encoding': 'gzip' });
    assert.equal(direct.headers['content-encoding'], undefined, `round ${i}: the .gz file itself is not encoded`);
    assert.equal(direct.headers['content-type'], 'application/gzip');
    assert.equal(gunzipSync(direct.body).toString(), js);
  }
});

test('static cache in /metrics: entries and bytes held, lookups by hit and miss, summed over workers', { timeout: 60_000 }, async (t) => {
  const { root } = folder(t);
  writeFileSync(path.join(root, 'small.txt'), 'cached body\n');
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    static_cache: { valid: '60s' },
    routes: [{ match: { path: '/' }, static: { root } }],
  });
  const base = `http://127.0.0.1:${portico.httpPort}`;
  for (let i = 0; i < 3; i++) assert.equal((await request(`${base}/small.txt`)).status, 200);
  assert.equal((await request(`${base}/missing.txt`)).status, 404);
  const text = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  const value = (name: string): number => {
    const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm').exec(text);
    assert.ok(m !== null, `${name} in /metrics`);
    return Number(m[1]);
  };
  assert.match(text, /# TYPE portico_static_cache_entries gauge\n/);
  assert.ok(value('portico_static_cache_entries') >= 1);
  assert.ok(value('portico_static_cache_bytes') >= 'cached body\n'.length);
  // the first lookup of each path misses, the repeats hit
  assert.ok(value('portico_static_cache_lookups_total{result="hit"}') >= 2);
  assert.ok(value('portico_static_cache_lookups_total{result="miss"}') >= 2);
});
