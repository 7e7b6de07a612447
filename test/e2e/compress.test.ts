// Response compression per route through a real `portico start`: forwarded answers (length, chunked and
// close-delimited bodies) and static files compressed by Accept-Encoding q-values and content type, decoded by
// curl --compressed and by zlib; never for encoded bodies, ranges, 204/304, HEAD, small bodies or other types;
// Vary: Accept-Encoding on every answer of a type the route compresses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import { brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import { curl, hasCurl, parseCurlOutput } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico } from '../helpers/portico.js';

const TEXT = 'the quick brown fox jumps over the lazy dog\n'.repeat(2000); // 88 KB, very compressible
/** Text whose gzip is well above min_size (hex of random bytes), served already encoded. */
const NOISE = randomBytes(8192).toString('hex');

/** A backend whose answers exercise every compression rule (by path). */
async function backend(t: TestContext): Promise<number> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://b');
    const p = url.pathname;
    if (p === '/length') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(TEXT), ETag: '"v1"' });
      res.end(req.method === 'HEAD' ? undefined : TEXT);
    } else if (p === '/chunked') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      for (let i = 0; i < 20; i++) res.write(TEXT.slice(i * 4400, (i + 1) * 4400));
      res.end();
    } else if (p === '/close') {
      res.shouldKeepAlive = false;
      res.writeHead(200, { 'Content-Type': 'text/html', Connection: 'close' });
      res.end(TEXT);
    } else if (p === '/big') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      const n = Number(url.searchParams.get('mib') ?? '8');
      let sent = 0;
      const block = Buffer.from(TEXT.slice(0, 65536));
      const pump = (): void => {
        while (sent < n * 1024 * 1024) {
          sent += block.length;
          if (!res.write(block)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    } else if (p === '/encoded') {
      const gz = gzipSync(NOISE);
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Encoding': 'gzip', 'Content-Length': gz.length });
      res.end(gz);
    } else if (p === '/small') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 5 });
      res.end('small');
    } else if (p === '/png') {
      res.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': Buffer.byteLength(TEXT) });
      res.end(TEXT);
    } else if (p === '/partial') {
      res.writeHead(206, { 'Content-Type': 'text/plain', 'Content-Range': `bytes 0-9/${TEXT.length}`, 'Content-Length': 10 });
      res.end(TEXT.slice(0, 10));
    } else if (p === '/empty') {
      res.writeHead(204, { 'Content-Type': 'text/plain' });
      res.end();
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as AddressInfo).port;
}

interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  raw: Buffer;
}

function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, timeout: 30_000, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: Buffer.concat(chunks) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function decode(g: Got): string {
  const enc = g.headers['content-encoding'];
  return (enc === 'gzip' ? gunzipSync(g.raw) : enc === 'br' ? brotliDecompressSync(g.raw) : g.raw).toString();
}

test('compress: forwarded and static answers by Accept-Encoding and type, decoded whole; the rules that keep a body as it is', { timeout: 120_000 }, async (t) => {
  if (!needPeer(t, 'curl', hasCurl())) return;
  const port = await backend(t);
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-compress-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'page.html'), TEXT);
  writeFileSync(path.join(dir, 'photo.png'), TEXT);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${port}`] } },
    routes: [
      { match: { path: '/static' }, static: { root: dir }, compress: true },
      { match: { path: '/' }, proxy: { upstream: 'app' }, compress: { level: 6 } },
    ],
  });
  // the static route serves root + path: /static/page.html -> DIR/static/page.html
  const { mkdirSync, renameSync } = await import('node:fs');
  mkdirSync(path.join(dir, 'static'));
  renameSync(path.join(dir, 'page.html'), path.join(dir, 'static', 'page.html'));
  renameSync(path.join(dir, 'photo.png'), path.join(dir, 'static', 'photo.png'));
  const base = `http://127.0.0.1:${portico.httpPort}`;

  await t.test('curl --compressed decodes what Portico compressed (length, chunked and close-delimited upstream bodies)', async () => {
    for (const p of ['/length', '/chunked', '/close', '/static/page.html']) {
      const r = parseCurlOutput((await curl(`${base}${p}`, ['--compressed'])).stdout);
      assert.match(r.headers['content-encoding'] ?? '', /^(gzip|br)$/, p);
      // a static file is compressed whole once and kept (static_cache): it goes with its length
      if (p.startsWith('/static')) assert.match(r.headers['content-length'] ?? '', /^\d+$/, p);
      else assert.equal(r.headers['transfer-encoding'], 'chunked', p);
      assert.match(r.headers.vary ?? '', /Accept-Encoding/i, p);
      assert.equal(r.body, TEXT, p);
    }
  });

  await t.test('q-values choose the coding; zlib decodes it; no acceptable coding -> identity with Vary', async () => {
    const cases: Array<[string | undefined, string | undefined]> = [
      ['gzip', 'gzip'],
      ['br', 'br'],
      ['gzip, br', 'br'],
      ['br;q=0.5, gzip', 'gzip'],
      ['br;q=0, gzip;q=0', undefined],
      ['*', 'br'],
      ['identity', undefined],
      [undefined, undefined],
    ];
    for (const [ae, want] of cases) {
      for (const p of ['/length', '/chunked', '/static/page.html']) {
        const g = await get(`${base}${p}`, ae === undefined ? {} : { 'accept-encoding': ae });
        assert.equal(g.status, 200);
        assert.equal(g.headers['content-encoding'], want, `${p} ${ae}`);
        assert.match(String(g.headers.vary), /Accept-Encoding/i, `${p} ${ae}`);
        assert.equal(decode(g), TEXT, `${p} ${ae}`);
        if (want !== undefined) assert.ok(g.raw.length < TEXT.length / 10, `${p} ${ae}: ${g.raw.length} bytes`);
      }
    }
    const weak = await get(`${base}/length`, { 'accept-encoding': 'gzip' });
    assert.equal(weak.headers.etag, 'W/"v1"');
    assert.equal(weak.headers['content-length'], undefined);
  });

  await t.test('never compressed: an encoded body, a 206, a 204, HEAD, a small body, a type not listed, a static range', async () => {
    const ae = { 'accept-encoding': 'gzip, br' };
    const encoded = await get(`${base}/encoded`, ae);
    assert.equal(encoded.headers['content-encoding'], 'gzip');
    assert.ok(encoded.raw.length > 2048);
    assert.equal(gunzipSync(encoded.raw).toString(), NOISE);
    const partial = await get(`${base}/partial`, ae);
    assert.deepEqual([partial.status, partial.headers['content-encoding'], partial.raw.toString()], [206, undefined, TEXT.slice(0, 10)]);
    const empty = await get(`${base}/empty`, ae);
    assert.deepEqual([empty.status, empty.headers['content-encoding']], [204, undefined]);
    const head = await get(`${base}/length`, ae, 'HEAD');
    assert.deepEqual([head.headers['content-encoding'], head.headers['content-length']], [undefined, String(TEXT.length)]);
    const small = await get(`${base}/small`, ae);
    assert.deepEqual([small.headers['content-encoding'], small.raw.toString(), small.headers.vary], [undefined, 'small', undefined]);
    const png = await get(`${base}/png`, ae);
    assert.deepEqual([png.headers['content-encoding'], png.raw.length, png.headers.vary], [undefined, TEXT.length, undefined]);
    const spng = await get(`${base}/static/photo.png`, ae);
    assert.equal(spng.headers['content-encoding'], undefined);
    const range = await get(`${base}/static/page.html`, { ...ae, range: 'bytes=0-9' });
    assert.deepEqual([range.status, range.headers['content-encoding'], range.raw.toString()], [206, undefined, TEXT.slice(0, 10)]);
  });

  await t.test('a 64 MiB streamed answer compressed whole, the connection kept alive after it', async () => {
    const g = await get(`${base}/big?mib=64`, { 'accept-encoding': 'gzip' });
    assert.equal(g.headers['content-encoding'], 'gzip');
    const plain = gunzipSync(g.raw);
    assert.equal(plain.length, 64 * 1024 * 1024);
    const block = Buffer.from(TEXT.slice(0, 65536));
    const want = createHash('sha256');
    for (let i = 0; i < 1024; i++) want.update(block);
    assert.equal(createHash('sha256').update(plain).digest('hex'), want.digest('hex'));
  });
});
