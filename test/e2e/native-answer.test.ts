// The relayed answer (src/native/response-head.h, io.cc ioAnswer, forward.ts #armAnswer) against the real
// `portico start` (one worker) and a scripted raw backend: the common answer is relayed by the addon (the worker's
// nativeAnswers in /status counts it) with the same bytes as the JavaScript path gives (a second Portico with
// PORTICO_NATIVE_ANSWER=0 answers the same requests, plain and TLS listeners); a head and body split over many
// reads; a body far larger than the socket buffers to a client that stops reading (the backend is held back:
// bounded memory), then reads it whole; a backend that closes mid-body and one that lies about its length and
// idles (the exchange's idle deadline ends both as on the JS path); a client that leaves mid-body; pipelined requests;
// `Connection: close` with the end of the answer still queued for a client that reads late (the close waits for it).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { plainListener, startPortico, tlsListener, type Portico } from '../helpers/portico.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { connectPlain, connectTls, ResponseReader } from '../helpers/wire.js';
import { needNativeIo } from '../helpers/native-io.js';
import { startScriptedHttpPeer } from '../helpers/tcp-server.js';
import type { ConfigInput } from '../../src/config/schema.js';

const MiB = 1024 * 1024;
const BIG = 64 * MiB;
const BIG_BODY = Buffer.alloc(BIG, 0);
for (let i = 0; i < BIG; i += 4096) BIG_BODY.writeUInt32LE(i, i);
const ASAN = (process.env.LD_PRELOAD ?? '').includes('libasan');
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Backend {
  readonly port: number;
  /** The backend's side of the last `/big` answer (Portico closes it when its client leaves). */
  big: net.Socket | undefined;
  /** Bytes of the last `/big` body the backend wrote so far, and when its last write found the socket full. */
  readonly sent: number;
  readonly blockedAt: number;
  /** The backend's sockets that last answered `/smuggle` and `/small`. */
  readonly smuggledOn: net.Socket | undefined;
  readonly smallOn: net.Socket | undefined;
}

/**
 * Answers by path, keep-alive: `/small` a head with fields the rewrite drops; `/split` the head in one write and
 * the body in 12, each after the previous one left (`/split-head`: the head in pieces too); `/big` 64 MiB (more
 * than the kernel buffers on the way hold); `/cut` a head announcing 1 MiB, 64 KiB of it, then a FIN; `/lie` a
 * head announcing 100 bytes, 10 of them, then nothing; `/chunked` a chunked answer (JavaScript's).
 */
async function startBackend(t: TestContext): Promise<Backend> {
  const state: { big: net.Socket | undefined; sent: number; blockedAt: number; smuggledOn?: net.Socket; smallOn?: net.Socket } = { big: undefined, sent: 0, blockedAt: 0 };
  function answer(socket: net.Socket, path: string): void {
    if (path === '/small' || path.startsWith('/small?')) {
      state.smallOn = socket;
      socket.write('HTTP/1.1 200 OK\r\nServer: scripted\r\nConnection: X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nX-Keep:  yes \r\nContent-Type: text/plain\r\ncontent-length: 5\r\n\r\nhello');
    } else if (path === '/split' || path === '/split-head') {
      // /split: the head in one write, the body in 12; /split-head: the head in pieces too (JavaScript's answer:
      // the relay takes a head only whole in one read)
      const head = 'HTTP/1.1 201 Created\r\nX-Part: 1\r\nContent-Length: 40\r\n\r\n';
      const body = Buffer.from('0123456789'.repeat(4), 'latin1');
      const bytes = Buffer.concat([Buffer.from(head, 'latin1'), body]);
      const step = Math.ceil(body.length / 12);
      const send = (at: number): void => {
        if (at >= bytes.length || socket.destroyed) return;
        const n = path === '/split' && at === 0 ? head.length : step;
        socket.write(bytes.subarray(at, at + n), () => setTimeout(send, 2, at + n));
      };
      send(0);
    } else if (path === '/big') {
      // 1 MiB at a time, the next once the kernel took the last: `sent` is what Portico let through so far
      state.big = socket;
      state.sent = 0;
      state.blockedAt = 0;
      socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${BIG}\r\n\r\n`);
      const more = (): void => {
        while (state.sent < BIG && !socket.destroyed) {
          const ok = socket.write(BIG_BODY.subarray(state.sent, state.sent + MiB));
          state.sent += MiB;
          if (!ok) {
            state.blockedAt = Date.now();
            socket.once('drain', more);
            return;
          }
        }
      };
      more();
    } else if (path === '/cut') {
      socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${1024 * 1024}\r\n\r\n`), Buffer.alloc(64 * 1024, 120)]));
    } else if (path === '/smuggle') {
      // a lying backend: a second answer right behind the first, in the same write (response splitting)
      state.smuggledOn = socket;
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged');
    } else if (path === '/lie') {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789');
    } else if (path === '/chunked') {
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    } else {
      socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found');
    }
  }
  const port = await startScriptedHttpPeer(t, (head, socket) => {
    socket.setNoDelay(true);
    answer(socket, /^[A-Z]+ (\S+) /.exec(head)?.[1] ?? '');
  });
  return {
    port,
    get big() {
      return state.big;
    },
    set big(s) {
      state.big = s;
    },
    get sent() {
      return state.sent;
    },
    get blockedAt() {
      return state.blockedAt;
    },
    get smuggledOn() {
      return state.smuggledOn;
    },
    get smallOn() {
      return state.smallOn;
    },
  };
}

function config(backend: Backend): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener(), tlsListener()],
    upstreams: { b: { targets: [`127.0.0.1:${backend.port}`] }, short: { targets: [`127.0.0.1:${backend.port}`], timeouts: { idle: '1s' } } },
    routes: [
      { match: { path: '/lie' }, proxy: 'short' },
      { match: { path: '/small', host: 'rules.test' }, proxy: 'b', response_headers: { remove: ['Server'], set: { 'X-Frame-Options': 'DENY' } } },
      { match: { path: '/' }, proxy: 'b' },
    ],
    log: { level: 'warn', access: false },
  };
}

/** VmHWM of a process: its peak resident set since start or the last `clear_refs` 5, in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m !== null);
  return Number(m[1]) * 1024;
}

async function answers(p: Portico): Promise<number> {
  const s = await adminStatus(p);
  return s.workers.reduce((n, w) => n + (w.nativeAnswers ?? 0), 0);
}

/** Every byte a client gets for `requests` (written at once) until `count` answers came, on a fresh connection. */
async function raw(t: TestContext, p: Portico, tlsOn: boolean, requests: string, count: number): Promise<string> {
  const socket = tlsOn ? await connectTls(t, p.tlsPort) : await connectPlain(t, p.httpPort);
  const reader = new ResponseReader(socket);
  socket.write(requests);
  const heads: string[] = [];
  for (let i = 0; i < count; i++) {
    const r = await reader.next();
    heads.push(r.raw.toString("latin1"));
  }
  socket.destroy();
  return heads.join('|');
}

test('relayed answers: the same bytes as the JavaScript path, counted as native, plain and TLS, pipelined too', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const backend = await startBackend(t);
  const p = await startPortico(t, config(backend));
  const js = await startPortico(t, config(backend), { env: { PORTICO_NATIVE_ANSWER: '0' } });
  const get = (path: string, host = 'a.test', extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
  const cases: Array<[string, number]> = [
    [get('/small'), 1],
    [get('/small', 'rules.test'), 1],
    [get('/small', 'a.test', 'Connection: close\r\n'), 1],
    [get('/small').replace('HTTP/1.1', 'HTTP/1.0'), 1],
    [get('/small').replace('HTTP/1.1', 'HTTP/1.0').replace('\r\n\r\n', '\r\nConnection: keep-alive\r\n\r\n'), 1],
    [get('/split'), 1],
    [get('/split-head'), 1],
    [get('/nothing'), 1],
    [get('/chunked'), 1],
    [get('/small') + get('/split') + get('/small', 'rules.test') + get('/chunked') + get('/small'), 5],
  ];
  for (const tlsOn of [false, true]) {
    for (const [req, n] of cases) {
      const before = await answers(p);
      const native = await raw(t, p, tlsOn, req, n);
      const plain = await raw(t, js, tlsOn, req, n);
      assert.equal(native, plain, `${tlsOn ? 'TLS' : 'plain'} ${JSON.stringify(req)}`);
      const mine = !/\/chunked|\/split-head|\/nothing/.test(req) || n > 1;
      if (mine) assert.ok((await answers(p)) > before, `relayed natively: ${JSON.stringify(req)}`);
    }
  }
  assert.equal(await answers(js), 0, 'PORTICO_NATIVE_ANSWER=0 relays nothing natively');
  // what the rewrite did (beyond agreeing with JavaScript): hop-by-hop and Connection-listed fields gone, rules applied
  const small = await raw(t, p, false, get('/small', 'rules.test'), 1);
  assert.match(small, /^HTTP\/1\.1 200 OK\r\nX-Keep: yes\r\nContent-Type: text\/plain\r\nContent-Length: 5\r\nX-Frame-Options: DENY\r\n\r\nhello$/);
});

test('relayed answers: a 64 MiB body to a client that stops reading holds the backend back, then arrives whole', { timeout: 90_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const backend = await startBackend(t);
  const p = await startPortico(t, config(backend));
  const worker = (await adminStatus(p)).workers[0].pid!;
  for (const tlsOn of [false, true]) {
    backend.big = undefined;
    const socket = tlsOn ? await connectTls(t, p.tlsPort) : await connectPlain(t, p.httpPort);
    const got: Buffer[] = [];
    let n = 0;
    socket.on('data', (c: Buffer) => {
      got.push(c);
      n += c.length;
    });
    socket.pause();
    const before = await answers(p);
    socket.write('GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n');
    // the client reads nothing: Portico stops reading the backend (its queue to the client is bounded), so the
    // backend's writes stop short of the body and the worker's memory does not grow with it. The peak RSS is
    // reset first (clear_refs 5); the client stays paused until the backend's socket has been full for 0.5 s.
    writeFileSync(`/proc/${worker}/clear_refs`, '5');
    const hwm0 = peakRss(worker);
    await until('the backend answering /big', () => backend.big, (s) => s !== undefined);
    await until('the backend held back for 0.5 s', () => backend.blockedAt, (at) => at > 0 && Date.now() - at > 500 && backend.sent < BIG, 20_000);
    assert.ok(backend.sent < BIG, `the backend wrote ${backend.sent} bytes to a client that read nothing`);
    assert.ok((await answers(p)) > before, 'relayed natively');
    socket.resume();
    await until('the whole answer', () => n, (x) => x >= BIG + 60, 60_000);
    const all = Buffer.concat(got);
    const at = all.indexOf('\r\n\r\n') + 4;
    assert.match(all.subarray(0, at).toString('latin1'), /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(all.length - at, BIG);
    assert.equal(sha(all.subarray(at)), sha(BIG_BODY));
    const grew = peakRss(worker) - hwm0;
    // (under AddressSanitizer, scripts/asan.sh, freed memory stays in its quarantine: no RSS bound holds there)
    if (!ASAN) assert.ok(grew < 16 * MiB, `the worker's peak RSS grew by ${(grew / MiB).toFixed(1)} MiB relaying ${BIG / MiB} MiB`);
    // the connection is still good for the next answer
    const reader = new ResponseReader(socket);
    socket.write('GET /small HTTP/1.1\r\nHost: a.test\r\n\r\n');
    assert.equal((await reader.next()).body.toString(), 'hello');
    socket.destroy();
  }
});

test('relayed answers: a backend that closes mid-body or lies about its length, a client that leaves mid-body', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const backend = await startBackend(t);
  const p = await startPortico(t, config(backend));
  for (const tlsOn of [false, true]) {
    for (const path of ['/cut', '/lie']) {
      const socket = tlsOn ? await connectTls(t, p.tlsPort) : await connectPlain(t, p.httpPort);
      const reader = new ResponseReader(socket);
      const before = await answers(p);
      socket.write(`GET ${path} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
      // the head went out: the client's connection is cut when the body cannot be whole (the backend's FIN, or
      // the idle deadline of /lie's upstream, 1 s), as on the JavaScript path
      const rest = await reader.rest(15_000);
      const head = rest.subarray(0, rest.indexOf('\r\n\r\n') + 4).toString('latin1');
      assert.match(head, /^HTTP\/1\.1 200 OK\r\nContent-Length: (1048576|100)\r\n\r\n$/, `${path} head`);
      assert.equal(rest.length - head.length, path === '/cut' ? 64 * 1024 : 10, `${path} body bytes`);
      assert.ok((await answers(p)) > before, `${path} relayed natively`);
    }
    // a client that leaves after the head: the backend's connection is closed by Portico, the worker is at rest
    const socket = tlsOn ? await connectTls(t, p.tlsPort) : await connectPlain(t, p.httpPort);
    socket.on('error', () => {});
    socket.pause();
    socket.write('GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n');
    const big = await until('the backend answering /big', () => backend.big, (s) => s !== undefined && !s.destroyed);
    await until('the backend held back', () => backend.blockedAt, (at) => at > 0);
    socket.destroy();
    // (Portico closes it with the body unread: a reset, so 'error' may come before 'close')
    await new Promise((resolve) => big!.once('close', resolve));
    backend.big = undefined;
  }
  const s = await until('connections at rest', () => adminStatus(p), (st) => st.workers.every((w) => (w.connections ?? 0) === 0));
  assert.ok(s.workers.length === 1);
  // the worker serves on as before
  assert.equal((await raw(t, p, false, 'GET /small HTTP/1.1\r\nHost: a.test\r\n\r\n', 1)).endsWith('hello'), true);
});

test('relayed answers: Connection: close with the end of the answer still queued for the client: it arrives whole', { timeout: 90_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const backend = await startBackend(t);
  const p = await startPortico(t, config(backend));
  for (const tlsOn of [false, true]) {
    backend.big = undefined;
    const socket = tlsOn ? await connectTls(t, p.tlsPort) : await connectPlain(t, p.httpPort);
    socket.on('error', () => {});
    socket.pause();
    const before = await answers(p);
    socket.write('GET /big HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
    // the client reads only once the backend is held back; the close that follows the exchange must not cut what
    // is still queued for it (the addon reports its queue with each record, so writableLength sees it)
    await until('the answer relayed natively', () => answers(p), (n) => n > before);
    await until('the backend held back', () => backend.blockedAt, (at) => at > 0);
    const got: Buffer[] = [];
    socket.on('data', (c: Buffer) => got.push(c));
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.resume();
    await closed;
    const all = Buffer.concat(got);
    const at = all.indexOf('\r\n\r\n') + 4;
    assert.match(all.subarray(0, at).toString('latin1'), /\r\nConnection: close\r\n/);
    assert.equal(all.length - at, BIG, 'the whole body before the close');
    assert.equal(sha(all.subarray(at)), sha(BIG_BODY));
  }
});

test('relayed answers: a backend that sends a second answer behind the first: the extra bytes are dropped and its connection is not reused', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const backend = await startBackend(t);
  const p = await startPortico(t, config(backend));
  for (const tlsOn of [false, true]) {
    const before = await answers(p);
    const out = await raw(t, p, tlsOn, 'GET /smuggle HTTP/1.1\r\nHost: a.test\r\n\r\nGET /small HTTP/1.1\r\nHost: a.test\r\n\r\n', 2);
    assert.ok((await answers(p)) >= before + 2, 'both relayed natively');
    assert.doesNotMatch(out, /forged/, 'the smuggled answer never reaches the client');
    assert.equal(out.match(/hello/g)?.length, 2, 'each request got its own answer');
    assert.notEqual(backend.smallOn, backend.smuggledOn, 'the next request went on another backend connection');
  }
});
