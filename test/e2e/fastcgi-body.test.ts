// Chunked request bodies on fastcgi routes (handlers/body-buffer.ts), end to end: the real `portico start` in
// front of a real php-fpm, reached through a counting TCP relay so that a test can say FPM was never asked.
// Bodies are held whole (memory, then an unnamed temp file in the test's own folder) and sent with CONTENT_LENGTH.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { FIXTURES } from '../helpers/paths.js';
import { hasPhpFpm, startPhpFpm } from '../helpers/php-fpm.js';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { adminStatus, adminUrl } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { exchangeUntilClose } from '../helpers/wire.js';

const DOCROOT = path.join(FIXTURES, 'php');

/** A TCP relay in front of FPM: how many connections and bytes reached it (FPM sees exactly these). */
interface Relay {
  readonly port: number;
  accepted(): number;
  bytesToFpm(): number;
}

async function countingRelay(t: TestContext, fpmPort: number): Promise<Relay> {
  let accepted = 0;
  let bytes = 0;
  const sockets: net.Socket[] = [];
  const server = net.createServer((c) => {
    accepted++;
    const up = net.connect(fpmPort, '127.0.0.1');
    sockets.push(c, up);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
    c.on('data', (b: Buffer) => (bytes += b.length));
    c.pipe(up);
    up.pipe(c);
    c.on('close', () => up.destroy());
    up.on('close', () => c.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, accepted: () => accepted, bytesToFpm: () => bytes };
}

interface Setup {
  portico: Portico;
  relay: Relay;
  /** The body_buffer.temp_dir of this test (its own, empty at start). */
  tempDir: string;
  base: string;
}

async function setup(t: TestContext, extra: { limits?: unknown; timeouts?: unknown; body_buffer?: Record<string, unknown>; upstream?: Record<string, unknown> } = {}): Promise<Setup | undefined> {
  if (!needPeer(t, 'php-fpm', hasPhpFpm())) return undefined;
  const fpm = await startPhpFpm(t, { children: 2 });
  const relay = await countingRelay(t, fpm.port);
  const tempDir = await mkdtemp(path.join(tmpdir(), 'portico-body-'));
  t.after(() => rm(tempDir, { recursive: true, force: true }));
  const config = {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { php: { targets: [`127.0.0.1:${relay.port}`], ...extra.upstream } },
    routes: [{ match: { path_regex: '\\.php$' }, fastcgi: { upstream: 'php', root: DOCROOT } }],
    body_buffer: { temp_dir: tempDir, ...extra.body_buffer },
    ...(extra.limits === undefined ? {} : { limits: extra.limits }),
    ...(extra.timeouts === undefined ? {} : { timeouts: extra.timeouts }),
  } as ConfigInput;
  const portico = await startPortico(t, config);
  return { portico, relay, tempDir, base: `http://127.0.0.1:${portico.httpPort}` };
}

/** A POST whose body Node's client sends chunked, one chunk per part; `trailers` after the last chunk. */
function chunkedPost(url: string, parts: Buffer[], headers: http.OutgoingHttpHeaders = {}, trailers?: Record<string, string>): Promise<{ status: number; body: Buffer }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: u.port, path: u.pathname + u.search, method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked', ...(trailers === undefined ? {} : { trailer: Object.keys(trailers).join(', ') }), ...headers } }, (res) => {
      const got: Buffer[] = [];
      res.on('data', (b: Buffer) => got.push(b));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(got) }));
      res.on('error', reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error('no response within 60 s')));
    req.on('error', reject);
    for (const p of parts) req.write(p);
    if (trailers !== undefined) req.addTrailers(trailers);
    req.end();
  });
}


/** portico_body_buffered_total{to} and portico_body_buffer_disk_bytes from /metrics. */
async function bufferMetrics(portico: Portico): Promise<{ memory: number; file: number; diskBytes: number }> {
  const text = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  const read = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
  return {
    memory: read(/^portico_body_buffered_total\{to="memory"\} (\d+)$/m),
    file: read(/^portico_body_buffered_total\{to="file"\} (\d+)$/m),
    diskBytes: read(/^portico_body_buffer_disk_bytes (\d+)$/m),
  };
}

/** Descriptors of the worker that point into `dir` (an O_TMPFILE shows as "DIR/#INODE (deleted)"). */
async function workerFdsInto(portico: Portico, dir: string): Promise<string[]> {
  const status = await adminStatus(portico);
  const out: string[] = [];
  for (const w of status.workers) {
    if (w.pid === null) continue;
    const fds = await readdir(`/proc/${w.pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${w.pid}/fd/${fd}`).catch(() => '');
      if (target.startsWith(`${dir}/`)) out.push(target);
    }
  }
  return out;
}

function multipart(boundary: string, data: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    data,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
}

/** `data` cut into parts of `size` bytes (the chunks a client sends). */
function cut(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}

test('a chunked 10 MiB upload reaches PHP whole (sha256 compared) through a temp file that leaves nothing behind', { timeout: 120_000 }, async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const data = randomBytes(10 * 1024 * 1024);
  const boundary = 'portico' + randomBytes(8).toString('hex');
  const r = await chunkedPost(`${s.base}/upload.php`, cut(multipart(boundary, data), 100_000), { 'content-type': `multipart/form-data; boundary=${boundary}` });
  assert.equal(r.status, 200, r.body.toString());
  const j = JSON.parse(r.body.toString()) as { size: number; sha256: string };
  assert.equal(j.size, data.length);
  assert.equal(j.sha256, createHash('sha256').update(data).digest('hex'));
  const m = await bufferMetrics(s.portico);
  assert.equal(m.file, 1, 'the body went to a temp file');
  assert.equal(m.memory, 0);
  assert.equal(m.diskBytes, 0, 'its disk use released');
  assert.deepEqual(await readdir(s.tempDir), [], 'no file left in temp_dir');
  assert.deepEqual(await workerFdsInto(s.portico, s.tempDir), [], 'no descriptor left open');
});

test('a small chunked body stays in memory; FPM gets CONTENT_LENGTH = the decoded length; trailers and chunk extensions are read and dropped', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const form = 'name=portico&n=42&pad=' + 'x'.repeat(3000);
  const r = await chunkedPost(`${s.base}/env.php`, cut(Buffer.from(form), 700), { 'content-type': 'application/x-www-form-urlencoded' }, { 'x-checksum': 'abc' });
  assert.equal(r.status, 200, r.body.toString());
  const j = JSON.parse(r.body.toString()) as { server: Record<string, string>; post: Record<string, string>; bodyLength: number };
  assert.equal(j.server.CONTENT_LENGTH, String(form.length));
  assert.equal(j.post.name, 'portico');
  assert.equal(j.post.n, '42');
  assert.equal(j.bodyLength, form.length);
  // chunk extensions and a trailer section, by hand (Node's client writes no extensions)
  const body = 'a=1&b=2';
  const res = await exchangeUntilClose(s.portico.httpPort, `POST /env.php HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4;ext=1\r\na=1&\r\n3; name="q v"\r\nb=2\r\n0\r\nX-Trailer: t\r\nOther: u\r\n\r\n`);
  assert.match(res, /^HTTP\/1\.1 200 /);
  const jj = JSON.parse(res.slice(res.indexOf('{'), res.lastIndexOf('}') + 1)) as { server: Record<string, string>; post: Record<string, string> };
  assert.equal(jj.server.CONTENT_LENGTH, String(body.length));
  assert.deepEqual(jj.post, { a: '1', b: '2' });
  // an empty chunked body: CONTENT_LENGTH 0
  const empty = await exchangeUntilClose(s.portico.httpPort, 'POST /env.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n');
  assert.match(empty, /^HTTP\/1\.1 200 /);
  assert.match(empty, /"CONTENT_LENGTH":"0"/);
  const m = await bufferMetrics(s.portico);
  assert.equal(m.memory, 3, 'three bodies held in memory');
  assert.equal(m.file, 0, 'no temp file was made');
});

test('Expect: 100-continue with a chunked body: 100 once the script is found, then the body is held and sent', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const c = net.connect(s.portico.httpPort, '127.0.0.1');
  c.on('error', () => {});
  t.after(() => c.destroy());
  let got = '';
  c.on('data', (b: Buffer) => (got += b.toString('latin1')));
  c.write('POST /env.php HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
  await until('the interim 100 Continue', () => got, (g) => g.startsWith('HTTP/1.1 100 Continue\r\n\r\n'));
  assert.equal(s.relay.accepted(), 0, 'FPM not asked before the body is whole');
  c.write('5\r\nhello\r\n0\r\n\r\n');
  await once(c, 'close');
  assert.match(got, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
  assert.match(got, /"bodyLength":5/);
});

test('a chunked body over limits.body_size -> 413 as soon as a chunk size passes it; FPM never asked, no file left', { timeout: 60_000 }, async (t) => {
  const s = await setup(t, { limits: { body_size: '1MiB' } });
  if (s === undefined) return;
  const c = net.connect(s.portico.httpPort, '127.0.0.1');
  c.on('error', () => {});
  t.after(() => c.destroy());
  let got = '';
  c.on('data', (b: Buffer) => (got += b.toString('latin1')));
  await once(c, 'connect');
  c.write('POST /env.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n');
  // 768 KiB under the limit first: past body_buffer.memory, so a temp file holds it
  const piece = randomBytes(64 * 1024);
  for (let i = 0; i < 12; i++) c.write(`${piece.length.toString(16)}\r\n`), c.write(piece), c.write('\r\n');
  await until('the body is in a temp file', () => workerFdsInto(s.portico, s.tempDir), (fds) => fds.length === 1);
  // then a chunk that announces more than the rest of the limit: refused before its data
  c.write(`${(512 * 1024).toString(16)}\r\n`);
  await once(c, 'close');
  assert.match(got, /^HTTP\/1\.1 413 /);
  assert.equal(s.relay.accepted(), 0, 'FPM was never asked');
  await until('the temp file closed', () => workerFdsInto(s.portico, s.tempDir), (fds) => fds.length === 0);
  assert.deepEqual(await readdir(s.tempDir), []);
  assert.equal((await bufferMetrics(s.portico)).diskBytes, 0);
  // a single chunk over the limit: refused from its size line alone
  const one = await exchangeUntilClose(s.portico.httpPort, `POST /env.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${(2 * 1024 * 1024).toString(16)}\r\n`);
  assert.match(one, /^HTTP\/1\.1 413 /);
  assert.equal(s.relay.accepted(), 0);
});

test('a stalled chunked body -> 408 (timeouts.body); the target is not charged and serves the next request', { timeout: 60_000 }, async (t) => {
  // one passive failure would take the target out: a 408 must not count as one
  const s = await setup(t, { timeouts: { body: '1s' }, upstream: { health: { passive: { max_fails: 1, fail_timeout: '60s' } } } });
  if (s === undefined) return;
  const c = net.connect(s.portico.httpPort, '127.0.0.1');
  c.on('error', () => {});
  t.after(() => c.destroy());
  let got = '';
  c.on('data', (b: Buffer) => (got += b.toString('latin1')));
  await once(c, 'connect');
  c.write('POST /env.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel');
  await once(c, 'close');
  assert.match(got, /^HTTP\/1\.1 408 /);
  assert.equal(s.relay.accepted(), 0, 'FPM was never asked');
  const status = await adminStatus(s.portico);
  const target = status.upstreams.php?.[0];
  assert.equal(target?.available, true, 'the FastCGI target is still available');
  const r = await request(`${s.base}/index.php`);
  assert.equal(r.status, 200);
});

test('a client that aborts mid-body: the temp file is closed, nothing reaches FPM, nothing is left in temp_dir', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const c = net.connect(s.portico.httpPort, '127.0.0.1');
  c.on('error', () => {});
  t.after(() => c.destroy());
  await once(c, 'connect');
  c.write('POST /upload.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n');
  const piece = randomBytes(256 * 1024);
  for (let i = 0; i < 4; i++) c.write(`${piece.length.toString(16)}\r\n`), c.write(piece), c.write('\r\n');
  const open = await until('the body is in a temp file', () => workerFdsInto(s.portico, s.tempDir), (fds) => fds.length === 1);
  assert.match(open[0], /\(deleted\)$/, 'the temp file has no name on disk');
  assert.deepEqual(await readdir(s.tempDir), [], 'not even while it is written');
  c.resetAndDestroy();
  await until('the temp file closed', () => workerFdsInto(s.portico, s.tempDir), (fds) => fds.length === 0);
  assert.equal((await bufferMetrics(s.portico)).diskBytes, 0, 'its disk use released');
  assert.deepEqual(await readdir(s.tempDir), []);
  assert.equal(s.relay.accepted(), 0, 'FPM saw nothing');
});

test('malformed chunk sizes -> 400; FPM never asked', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const bodies = ['zz\r\nhello\r\n0\r\n\r\n', '-5\r\nhello\r\n0\r\n\r\n', '0x5\r\nhello\r\n0\r\n\r\n', '5\r\nhelloXX0\r\n\r\n', `${'1'.repeat(17)}\r\n`, '5\nhello\r\n0\r\n\r\n', '5 ;\r\nhello\r\n0\r\n\r\n', '0\r\nContent-Length: 5\r\n\r\n'];
  for (const b of bodies) {
    const r = await exchangeUntilClose(s.portico.httpPort, `POST /env.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${b}`);
    assert.match(r, /^HTTP\/1\.1 400 /, JSON.stringify(b));
  }
  assert.equal(s.relay.accepted(), 0, 'FPM was never asked');
});

test('body_buffer.disk_max: a body that would pass it -> 503, FPM never asked; a smaller one still passes', { timeout: 60_000 }, async (t) => {
  const s = await setup(t, { body_buffer: { disk_max: '1MiB' } });
  if (s === undefined) return;
  const big = await chunkedPost(`${s.base}/env.php`, cut(randomBytes(2 * 1024 * 1024), 64 * 1024)).catch((err: Error) => ({ status: -1, body: Buffer.from(err.message) }));
  // the answer may come before the client finished writing (then its socket is cut): 503 or a reset, never FPM
  assert.ok(big.status === 503 || big.status === -1, `status ${big.status}`);
  assert.equal(s.relay.accepted(), 0, 'FPM was never asked');
  const small = await chunkedPost(`${s.base}/env.php`, cut(randomBytes(512 * 1024), 64 * 1024));
  assert.equal(small.status, 200);
  assert.match(small.body.toString(), /"bodyLength":524288/);
  assert.equal((await bufferMetrics(s.portico)).diskBytes, 0);
});

test('a temp folder that went away -> 500 with one clear log line; the worker keeps serving', { timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  await rm(s.tempDir, { recursive: true, force: true });
  const r = await chunkedPost(`${s.base}/env.php`, cut(randomBytes(256 * 1024), 32 * 1024)).catch((err: Error) => ({ status: -1, body: Buffer.from(err.message) }));
  assert.ok(r.status === 500 || r.status === -1, `status ${r.status}`);
  const line = await s.portico.waitForLog((l) => l.msg === 'request body not buffered: temp file error');
  assert.match(JSON.stringify(line.err), /BODY_BUFFER_IO/);
  assert.match(JSON.stringify(line.err), /ENOENT/);
  assert.equal(s.relay.accepted(), 0, 'FPM was never asked');
  assert.equal(s.portico.logs.filter((l) => l.msg === 'worker exited').length, 0, 'no worker crashed');
  const ok = await chunkedPost(`${s.base}/env.php`, [Buffer.from('small')]);
  assert.equal(ok.status, 200, 'a body that fits in memory needs no folder');
});

test('a full disk (ENOSPC on a 1 MiB tmpfs) -> 500 with one clear log line; the worker keeps serving', { timeout: 60_000 }, async (t) => {
  // needs root to mount a tmpfs: run where the tests run as root (this machine, CI's container), skipped loudly elsewhere
  const root = process.getuid?.() === 0;
  const mnt = await mkdtemp(path.join(tmpdir(), 'portico-enospc-'));
  const mounted = root && spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'ignore', timeout: 10_000 }).status === 0;
  t.after(async () => {
    if (mounted) spawnSync('umount', ['-l', mnt], { stdio: 'ignore', timeout: 10_000 });
    await rm(mnt, { recursive: true, force: true });
  });
  if (!mounted) {
    process.stderr.write('\n*** SKIPPED: mounting a tmpfs needs root (ENOSPC case); the ENOENT case above covers the same error path ***\n');
    t.skip('mounting a tmpfs needs root');
    return;
  }
  const s = await setup(t, { body_buffer: { temp_dir: mnt } });
  if (s === undefined) return;
  const r = await chunkedPost(`${s.base}/env.php`, cut(randomBytes(3 * 1024 * 1024), 64 * 1024)).catch((err: Error) => ({ status: -1, body: Buffer.from(err.message) }));
  assert.ok(r.status === 500 || r.status === -1, `status ${r.status}`);
  const line = await s.portico.waitForLog((l) => l.msg === 'request body not buffered: temp file error');
  assert.match(JSON.stringify(line.err), /ENOSPC/);
  assert.equal(s.relay.accepted(), 0, 'FPM was never asked');
  await until('the temp file closed', () => workerFdsInto(s.portico, mnt), (fds) => fds.length === 0);
  assert.equal((await bufferMetrics(s.portico)).diskBytes, 0);
  const ok = await chunkedPost(`${s.base}/env.php`, cut(randomBytes(256 * 1024), 64 * 1024));
  assert.equal(ok.status, 200, 'the space is free again');
});
