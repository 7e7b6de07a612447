// FastCGI's relayed answer (src/native/fcgi-answer.h, io.cc ioFcgiAnswer, fastcgi.ts #armAnswer) against the real
// `portico start` (one worker), a real php-fpm and a scripted FastCGI application that lies: an answer that starts
// with the route's remembered CGI head is relayed by the addon (nativeAnswers in /status counts it) with the same
// bytes as the JavaScript path gives (a second Portico with PORTICO_NATIVE_ANSWER=0 answers the same requests, plain
// and TLS); 64 MiB to a client that reads nothing holds FPM back with the worker's memory bounded, then arrives
// whole; a script's STDERR lines are still logged; FPM killed mid-answer and a client that leaves mid-answer end as
// on the JavaScript path; a lying application (another request id, a bad version, bytes after END_REQUEST, a failed
// END_REQUEST, a record header split across reads, STDERR after the head) gets the same client bytes either way;
// requests with a body (a form in the head's read, 1 MiB streamed, a chunked body held) are relayed too; an
// application that answers before the body ended (wholly, its head, part of its head) is JavaScript's on both, its
// FPM connection dropped when END_REQUEST came first; the lies and the early answers again over a Unix socket.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { plainListener, startPortico, tlsListener, type Portico } from '../helpers/portico.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { connectPlain, connectTls, ResponseReader } from '../helpers/wire.js';
import { needNativeIo } from '../helpers/native-io.js';
import { needPeer } from '../helpers/peers.js';
import { FIXTURES } from '../helpers/paths.js';
import { hasPhpFpm, startPhpFpm, type PhpFpm } from '../helpers/php-fpm.js';
import { fcgiRecords } from '../helpers/fcgi-records.js';
import { startPeer } from '../helpers/tcp-server.js';
import type { ConfigInput } from '../../src/config/schema.js';

const DOCROOT = path.join(FIXTURES, 'php');
const MiB = 1024 * 1024;
const ASAN = (process.env.LD_PRELOAD ?? '').includes('libasan');
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** big.php's body of `kib` KiB. */
const bigBody = (kib: number): Buffer => Buffer.from('0123456789abcdef'.repeat(64 * kib), 'latin1');

function config(target: string, upstream: Record<string, unknown> = {}): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener(), tlsListener()],
    upstreams: { php: { targets: [target], max_connections: 2, ...upstream } },
    routes: [{ match: { path_regex: '\\.php$' }, fastcgi: { upstream: 'php', root: DOCROOT } }],
    log: { level: 'warn', access: false },
  } as ConfigInput;
}

async function answers(p: Portico): Promise<number> {
  const s = await adminStatus(p);
  return s.workers.reduce((n, w) => n + (w.nativeAnswers ?? 0), 0);
}

async function connect(t: TestContext, p: Portico, tlsOn: boolean): Promise<net.Socket> {
  return tlsOn ? connectTls(t, p.tlsPort) : connectPlain(t, p.httpPort);
}

/** The raw answers to `paths`, one after the other on one keep-alive connection. */
async function rawAnswers(t: TestContext, p: Portico, tlsOn: boolean, paths: string[], extra = ''): Promise<string[]> {
  const socket = await connect(t, p, tlsOn);
  const reader = new ResponseReader(socket);
  const out: string[] = [];
  for (const path of paths) {
    socket.write(`GET ${path} HTTP/1.1\r\nHost: a.test\r\n${extra}\r\n`);
    out.push((await reader.next()).raw.toString('latin1'));
  }
  socket.destroy();
  return out;
}

/** Every byte a client gets for `request` until the connection closes (or `count` whole answers came). */
async function untilClose(t: TestContext, p: Portico, tlsOn: boolean, request: string): Promise<string> {
  const socket = await connect(t, p, tlsOn);
  socket.on('error', () => {});
  const reader = new ResponseReader(socket);
  socket.write(request);
  return (await reader.rest(15_000)).toString('latin1');
}

/** /proc/PID/status VmHWM, the peak resident set since start or the last `clear_refs` 5, in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m !== null);
  return Number(m[1]) * 1024;
}

/** Bytes waiting unread on the worker's side of its connections to `port` (/proc/net/tcp rx_queue, local side). */
function unreadFrom(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let n = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length > 4 && cols[2].endsWith(hex)) n += parseInt(cols[4].split(':')[1], 16);
  }
  return n;
}

/** A chunked answer's head and body, its chunks undone (bounded: a framing error throws). */
function unchunk(all: Buffer): { head: boolean; sha: string; length: number } {
  const at = all.indexOf('\r\n\r\n') + 4;
  const head = /^HTTP\/1\.1 200 OK\r\n[^]*Transfer-Encoding: chunked\r\n/.test(all.subarray(0, at).toString('latin1'));
  const parts: Buffer[] = [];
  let pos = at;
  for (;;) {
    const line = all.indexOf('\r\n', pos);
    assert.ok(line > pos, `a chunk size at ${pos}`);
    const size = parseInt(all.subarray(pos, line).toString('latin1'), 16);
    assert.ok(Number.isInteger(size) && line + 2 + size + 2 <= all.length, `a whole chunk at ${pos}`);
    pos = line + 2;
    if (size === 0) break;
    parts.push(all.subarray(pos, pos + size));
    pos += size + 2;
  }
  const whole = Buffer.concat(parts);
  return { head, sha: sha(whole), length: whole.length };
}

async function fpmOrSkip(t: TestContext, children = 4): Promise<PhpFpm | undefined> {
  if (!needNativeIo(t) || !needPeer(t, 'php-fpm', hasPhpFpm())) return undefined;
  return startPhpFpm(t, { children });
}

test('FastCGI relayed answers: the same bytes as the JavaScript path from a real php-fpm, counted as native, plain and TLS; STDERR still logged', { timeout: 90_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const p = await startPortico(t, config(fpm.target));
  const js = await startPortico(t, config(fpm.target), { env: { PORTICO_NATIVE_ANSWER: '0' } });
  // one keep-alive connection each, or (Connection: close) one connection per request. The first answer of a
  // route's head is JavaScript's (the route remembers it), the repeats the addon's; answers small enough to come
  // in one read of FPM's (how a larger one is cut into reads decides its chunks, on either path)
  const cases: Array<[string[], string]> = [
    [['/index.php', '/index.php', '/index.php?x=1', '/index.php'], ''],
    [['/big.php?kib=1', '/big.php?kib=1', '/big.php?kib=1'], ''],
    [['/index.php', '/index.php', '/index.php'], 'Connection: close\r\n'],
    [['/stderr.php', '/stderr.php', '/stderr.php'], ''],
  ];
  const run = async (instance: Portico, tlsOn: boolean, paths: string[], extra: string): Promise<string[]> => {
    if (extra === '') return rawAnswers(t, instance, tlsOn, paths);
    const out: string[] = [];
    for (const path of paths) out.push(...(await rawAnswers(t, instance, tlsOn, [path], extra)));
    return out;
  };
  for (const tlsOn of [false, true]) {
    for (const [paths, extra] of cases) {
      const before = await answers(p);
      const native = await run(p, tlsOn, paths, extra);
      const plain = await run(js, tlsOn, paths, extra);
      assert.deepEqual(native, plain, `${tlsOn ? 'TLS' : 'plain'} ${paths.join(' ')} ${extra}`);
      assert.match(native[0], /^HTTP\/1\.1 200 OK\r\n[^]*Transfer-Encoding: chunked\r\n/);
      // stderr.php's STDERR comes before its answer: JavaScript's whole
      if (paths[0] !== '/stderr.php') assert.ok((await answers(p)) >= before + paths.length - 1, `relayed natively: ${paths.join(' ')} ${extra}`);
    }
  }
  assert.equal(await answers(js), 0, 'PORTICO_NATIVE_ANSWER=0 relays nothing natively');
  // a script's STDERR lines reach the log (JavaScript's answer: the addon never takes STDERR)
  const lines = p.logs.filter((l) => l.msg === 'FastCGI stderr' && String(l.stderr).includes('portico-stderr-line-two')).length;
  assert.equal(lines, 6, 'every stderr.php request logged its second line');
});

test('FastCGI relayed answers: requests with a body (a form in the head\'s read, 1 MiB streamed, a chunked body held) get the same bytes, relayed natively', { timeout: 90_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const p = await startPortico(t, config(fpm.target));
  const js = await startPortico(t, config(fpm.target), { env: { PORTICO_NATIVE_ANSWER: '0' } });
  const big = Buffer.from('0123456789abcdef'.repeat(64 * 1024), 'latin1'); // 1 MiB
  const chunked = (body: Buffer): Buffer => {
    const parts: Buffer[] = [];
    for (let at = 0; at < body.length; at += 100_000) {
      const piece = body.subarray(at, at + 100_000);
      parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`, 'latin1'), piece, Buffer.from('\r\n', 'latin1'));
    }
    return Buffer.concat([...parts, Buffer.from('0\r\n\r\n', 'latin1')]);
  };
  const requests: Array<[string, Buffer]> = [
    ['form in the head\'s read', Buffer.from('POST /post.php HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2', 'latin1')],
    ['1 MiB streamed', Buffer.concat([Buffer.from(`POST /post.php HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/octet-stream\r\nContent-Length: ${big.length}\r\n\r\n`, 'latin1'), big])],
    ['chunked, held', Buffer.concat([Buffer.from('POST /post.php HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n', 'latin1'), chunked(big)])],
  ];
  /** `n` answers to `request`, one after the other on one keep-alive connection. */
  const send = async (instance: Portico, tlsOn: boolean, request: Buffer, n: number): Promise<string[]> => {
    const socket = await connect(t, instance, tlsOn);
    const reader = new ResponseReader(socket);
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      socket.write(request);
      out.push((await reader.next()).raw.toString('latin1'));
    }
    socket.destroy();
    return out;
  };
  // the route's head remembered first (a GET), then each kind of body three times on one connection
  await send(p, false, Buffer.from('GET /post.php HTTP/1.1\r\nHost: a.test\r\n\r\n', 'latin1'), 1);
  for (const tlsOn of [false, true]) {
    for (const [what, request] of requests) {
      const before = await answers(p);
      const native = await send(p, tlsOn, request, 3);
      const plain = await send(js, tlsOn, request, 3);
      assert.deepEqual(native, plain, `${tlsOn ? 'TLS' : 'plain'} ${what}`);
      const length = what.startsWith('form') ? 7 : big.length;
      assert.match(native[0], new RegExp(`^HTTP/1\\.1 200 OK\\r\\n[^]*Transfer-Encoding: chunked\\r\\n[^]*\\r\\n${length} [0-9a-f]{64}\\n\\r\\n0\\r\\n\\r\\n$`));
      assert.equal((await answers(p)) - before, 3, `relayed natively: ${tlsOn ? 'TLS' : 'plain'} ${what}`);
    }
  }
  assert.equal(await answers(js), 0);
});

test('FastCGI relayed answers: 64 MiB to a client that reads nothing holds FPM back, then arrives whole', { timeout: 120_000 }, async (t) => {
  const fpm = await fpmOrSkip(t);
  if (fpm === undefined) return;
  const p = await startPortico(t, config(fpm.target));
  const worker = (await adminStatus(p)).workers[0].pid!;
  const kib = 64 * 1024;
  const body = bigBody(kib);
  for (const tlsOn of [false, true]) {
    const socket = await connect(t, p, tlsOn);
    const reader = new ResponseReader(socket);
    socket.write('GET /big.php?kib=8 HTTP/1.1\r\nHost: a.test\r\n\r\n'); // the route remembers big.php's head
    assert.equal((await reader.next()).body.length, 8 * 1024);
    socket.removeAllListeners('data');
    const got: Buffer[] = [];
    let tail = '';
    socket.on('data', (c: Buffer) => {
      got.push(c);
      tail = (tail + c.subarray(-7).toString('latin1')).slice(-7);
    });
    socket.pause();
    const before = await answers(p);
    writeFileSync(`/proc/${worker}/clear_refs`, '5');
    const hwm0 = peakRss(worker);
    socket.write(`GET /big.php?kib=${kib} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    // the client reads nothing: the worker stops reading FPM (its queue to the client is bounded), so FPM's
    // bytes wait unread in the worker's socket
    await until('the answer relayed natively', () => answers(p), (a) => a > before, 20_000);
    await until('FPM held back', () => unreadFrom(fpm.port), (q) => q >= 32 * 1024, 30_000);
    socket.resume();
    await until('the last chunk', () => tail, (x) => x.endsWith('\r\n0\r\n\r\n'), 60_000);
    assert.deepEqual(unchunk(Buffer.concat(got)), { head: true, sha: sha(body), length: body.length });
    const grew = peakRss(worker) - hwm0;
    // (under AddressSanitizer, scripts/asan.sh, freed memory stays in its quarantine: no RSS bound holds there)
    if (!ASAN) assert.ok(grew < 16 * MiB, `the worker's peak RSS grew by ${(grew / MiB).toFixed(1)} MiB relaying ${kib / 1024} MiB`);
    // the connection serves on
    const next = new ResponseReader(socket);
    socket.write('GET /index.php HTTP/1.1\r\nHost: a.test\r\n\r\n');
    assert.equal((await next.next()).body.toString(), 'hello from php\n');
    socket.destroy();
  }
});

test('FastCGI relayed answers: FPM killed mid-answer cuts the client after what came, as on the JavaScript path', { timeout: 90_000 }, async (t) => {
  if (!needNativeIo(t) || !needPeer(t, 'php-fpm', hasPhpFpm())) return;
  const got: string[] = [];
  for (const env of [{}, { PORTICO_NATIVE_ANSWER: '0' }] as Array<Record<string, string>>) {
    const fpm = await startPhpFpm(t, { children: 2 });
    const p = await startPortico(t, config(fpm.target), { env });
    await rawAnswers(t, p, false, ['/partial.php']); // the route remembers partial.php's head
    const before = await answers(p);
    const socket = await connectPlain(t, p.httpPort);
    socket.on('error', () => {});
    const reader = new ResponseReader(socket);
    socket.write('GET /partial.php?ms=20000 HTTP/1.1\r\nHost: a.test\r\n\r\n');
    await until('the first part', () => reader.pending.toString('latin1'), (s) => s.includes('first part\n\r\n'), 15_000);
    await fpm.stop('SIGKILL');
    const bytes = (await reader.rest(15_000)).toString('latin1');
    got.push(bytes);
    assert.match(bytes, /first part\n\r\n$/, 'the first part, then the cut: no last chunk');
    if (Object.keys(env).length === 0) assert.ok((await answers(p)) > before, 'relayed natively');
  }
  assert.equal(got[0], got[1], 'the client got the same bytes with and without the relay');
});

test('FastCGI relayed answers: a client that leaves mid-answer closes its FPM connection; the worker serves on', { timeout: 90_000 }, async (t) => {
  const fpm = await fpmOrSkip(t, 2);
  if (fpm === undefined) return;
  const p = await startPortico(t, config(fpm.target, { keepalive: { max_idle: 0 } }));
  for (const tlsOn of [false, true]) {
    await rawAnswers(t, p, tlsOn, ['/big.php?kib=8']);
    const before = await answers(p);
    const socket = await connect(t, p, tlsOn);
    socket.on('error', () => {});
    socket.pause();
    socket.write(`GET /big.php?kib=${64 * 1024} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    await until('the answer relayed natively', () => answers(p), (a) => a > before, 20_000);
    await until('FPM held back', () => unreadFrom(fpm.port), (q) => q >= 32 * 1024, 30_000);
    socket.destroy();
    await until('FPM connections closed', () => fpm.connections(), (c) => c === 0, 15_000);
  }
  await until('connections at rest', () => adminStatus(p), (st) => st.workers.every((w) => (w.connections ?? 0) === 0));
  assert.equal((await rawAnswers(t, p, false, ['/index.php']))[0].endsWith('hello from php\n\r\n0\r\n\r\n'), true);
});

// ---- a FastCGI application that lies ----

const FAKE_HEAD = 'X-Powered-By: fake\r\nContent-type: text/html; charset=UTF-8\r\n\r\n';

function rec(type: number, content: Buffer | string, id = 1, version = 1, padding = 0): Buffer {
  const c = typeof content === 'string' ? Buffer.from(content, 'latin1') : content;
  return Buffer.concat([Buffer.from([version, type, id >> 8, id & 255, c.length >> 8, c.length & 255, padding, 0]), c, Buffer.alloc(padding)]);
}
const endRec = (protocolStatus = 0): Buffer => rec(3, Buffer.from([0, 0, 0, 0, protocolStatus, 0, 0, 0]));

/** The answer to each case (QUERY_STRING), as the writes the application makes. */
const LIES: Record<string, Buffer[]> = {
  ok: [Buffer.concat([rec(6, `${FAKE_HEAD}hello`), rec(6, ''), endRec()])],
  'wrong-id': [Buffer.concat([rec(6, `${FAKE_HEAD}part`), rec(6, 'forged', 2), endRec()])],
  'bad-version': [Buffer.concat([rec(6, `${FAKE_HEAD}part`), rec(6, 'forged', 1, 2), endRec()])],
  'after-end': [Buffer.concat([rec(6, `${FAKE_HEAD}hello`), endRec(), rec(6, 'forged')])],
  'failed-end': [Buffer.concat([rec(6, `${FAKE_HEAD}part`), endRec(2)])],
  'split-header': [rec(6, `${FAKE_HEAD}a`), rec(6, 'bc').subarray(0, 5), Buffer.concat([rec(6, 'bc').subarray(5), rec(6, 'd', 1, 1, 3), endRec()])],
  'stderr-after': [Buffer.concat([rec(6, `${FAKE_HEAD}a`), rec(7, 'fake-stderr-line\n'), rec(6, 'b'), endRec()])],
  'padded': [Buffer.concat([rec(6, `${FAKE_HEAD}a`, 1, 1, 7), rec(6, 'bcd', 1, 1, 5)]), endRec()],
};

/**
 * Answers that begin before the request's body ended (`POST /index.php?CASE`, the body sent in two halves): the
 * first part is written at the first STDIN record, the second at the empty STDIN record that ends the body, if it
 * comes. `early-whole` ends the request (END_REQUEST) while the client still sends; `early-head` sends the head and
 * some body, then the rest once STDIN ended; `early-partial` sends 12 bytes of the head, the rest after STDIN.
 */
const EARLY: Record<string, { atFirstStdin: Buffer; atStdinEnd: Buffer }> = {
  'early-whole': { atFirstStdin: Buffer.concat([rec(6, `${FAKE_HEAD}early`), rec(6, ''), endRec()]), atStdinEnd: Buffer.alloc(0) },
  'early-head': { atFirstStdin: rec(6, `${FAKE_HEAD}early-`), atStdinEnd: Buffer.concat([rec(6, 'rest'), rec(6, ''), endRec()]) },
  'early-partial': { atFirstStdin: rec(6, FAKE_HEAD.slice(0, 12)), atStdinEnd: Buffer.concat([rec(6, `${FAKE_HEAD.slice(12)}late`), rec(6, ''), endRec()]) },
};

interface Liar {
  /** Where Portico reaches it: `127.0.0.1:PORT` or `unix:PATH`. */
  readonly target: string;
  /** The application-side socket of each answer, by case, in order. */
  readonly served: Array<{ what: string; socket: net.Socket }>;
}

/**
 * A FastCGI application on loopback TCP, or on the Unix socket `unixPath`, answering each request by its
 * QUERY_STRING (LIES once STDIN ended, writes spaced out; EARLY during the body).
 */
async function startLiar(t: TestContext, unixPath?: string): Promise<Liar> {
  const served: Liar['served'] = [];
  const target = await startPeer(
    t,
    (socket) => {
      socket.setNoDelay(true);
    let what = 'ok';
    let early: (typeof EARLY)[string] | undefined;
    let earlyBegun = false;
    socket.on(
      'data',
      fcgiRecords((type, content, pairs) => {
        const len = content.length;
        if (pairs !== undefined) {
          what = pairs?.get('QUERY_STRING') ?? 'ok';
          early = EARLY[what];
          earlyBegun = false;
        }
        if (type === 5 && early !== undefined) {
          if (len > 0 && !earlyBegun) {
            earlyBegun = true;
            served.push({ what, socket });
            socket.write(early.atFirstStdin);
          }
          if (len === 0 && early.atStdinEnd.length > 0) socket.write(early.atStdinEnd);
        } else if (type === 5 && len === 0) {
          served.push({ what, socket });
          const writes = LIES[what] ?? LIES.ok;
          const send = (i: number): void => {
            if (i >= writes.length || socket.destroyed) return;
            socket.write(writes[i], () => setTimeout(send, 5, i + 1));
          };
          send(0);
        }
      }),
    );
    },
    unixPath,
  );
  return { target, served };
}

/** Each LIES case on `p` (the relay on) and `js` (PORTICO_NATIVE_ANSWER=0): the same client bytes, cut where it lied. */
async function checkLies(t: TestContext, liar: Liar, p: Portico, js: Portico, tlsModes: boolean[]): Promise<void> {
  for (const tlsOn of tlsModes) {
    for (const what of Object.keys(LIES)) {
      const got: string[] = [];
      const sockets: net.Socket[] = [];
      for (const instance of [p, js]) {
        await rawAnswers(t, instance, tlsOn, ['/index.php?ok']); // the route remembers the fake head
        const before = await answers(instance);
        // the case, then (on the same connection when it is kept) a plain answer
        const bytes = await untilClose(t, instance, tlsOn, `GET /index.php?${what} HTTP/1.1\r\nHost: a.test\r\n\r\nGET /index.php?ok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
        got.push(bytes);
        sockets.push(liar.served.filter((s) => s.what === what).at(-1)!.socket);
        if (instance === p) assert.ok((await answers(p)) > before, `${what}: the head relayed natively`);
      }
      assert.equal(got[0], got[1], `${tlsOn ? 'TLS' : 'plain'} ${what}: the same bytes`);
      const whole = /\r\n0\r\n\r\n[^]*hello\r\n0\r\n\r\n$/.test(got[0]);
      if (what === 'ok' || what === 'split-header' || what === 'stderr-after' || what === 'padded' || what === 'after-end') assert.ok(whole, `${what}: both answers whole: ${JSON.stringify(got[0])}`);
      else assert.doesNotMatch(got[0], /\r\n0\r\n\r\n/, `${what}: the answer is cut`);
      assert.doesNotMatch(got[0], /forged/, `${what}: nothing after the lie reaches the client`);
      if (what === 'after-end') {
        // bytes behind END_REQUEST: that connection is not used again (by either path)
        for (const s of sockets) await until(`${what}: its connection closed`, () => s.destroyed || s.readableEnded, (x) => x, 5_000);
      }
    }
  }
  await p.waitForLog((l) => l.msg === 'FastCGI stderr' && l.stderr === 'fake-stderr-line', 5_000);
  await js.waitForLog((l) => l.msg === 'FastCGI stderr' && l.stderr === 'fake-stderr-line', 5_000);
}

/** Resolves once the bytes `reader` holds match `pattern` (the socket's own events; the test's timeout bounds it). */
function bytesSeen(socket: net.Socket, reader: ResponseReader, pattern: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (pattern.test(reader.pending.toString('latin1'))) {
        socket.off('data', check);
        socket.off('close', closed);
        resolve();
      }
    };
    const closed = (): void => reject(new Error(`closed before ${pattern}: ${JSON.stringify(reader.pending.toString('latin1'))}`));
    socket.on('data', check);
    socket.once('close', closed);
    check();
  });
}

/**
 * An EARLY case on one instance: a POST of 2,000 bytes sent as two halves, the second only once the answer is whole
 * (`early-whole`) or has begun (`early-head`). Every byte the client got until the connection closed, and how
 * many answers the instance relayed natively while the early one ran.
 */
async function earlyExchange(t: TestContext, liar: Liar, p: Portico, tlsOn: boolean, what: string): Promise<{ bytes: string; relayed: number }> {
  await rawAnswers(t, p, tlsOn, ['/index.php?ok']); // the route remembers the fake head
  const seen = liar.served.filter((s) => s.what === what).length;
  const before = await answers(p);
  const socket = await connect(t, p, tlsOn);
  socket.on('error', () => {});
  const reader = new ResponseReader(socket);
  const half = 'a'.repeat(1000);
  socket.write(`POST /index.php?${what} HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 2000\r\n\r\n${half}`);
  if (what === 'early-whole') {
    const first = await reader.next(); // the whole answer came while half the body is unsent
    const relayed = (await answers(p)) - before;
    socket.write(half); // the rest of the body, for an exchange that has ended: the connection closes
    return { bytes: first.raw.toString('latin1') + (await reader.rest(15_000)).toString('latin1'), relayed };
  }
  if (what === 'early-head') await bytesSeen(socket, reader, /early-\r\n$/); // the head and a first chunk, the body half sent
  else await until(`${what}: 12 bytes of the head at the application's side`, () => liar.served.filter((s) => s.what === what).length, (n) => n > seen, 5_000);
  socket.write(half);
  const first = await reader.next(); // the rest once the body ended
  const relayed = (await answers(p)) - before;
  // early-head's answer closes the connection; early-partial's head came after the body's end: it is kept
  if (what === 'early-partial') socket.write('GET /index.php?ok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
  return { bytes: first.raw.toString('latin1') + (await reader.rest(15_000)).toString('latin1'), relayed };
}

/** Each EARLY case on `p` and `js`: the same client bytes, nothing relayed natively, FPM's connection not reused after an END_REQUEST that came before the body's end. */
async function checkEarly(t: TestContext, liar: Liar, p: Portico, js: Portico, tlsModes: boolean[]): Promise<void> {
  for (const tlsOn of tlsModes) {
    for (const what of Object.keys(EARLY)) {
      const got: string[] = [];
      for (const instance of [p, js]) {
        const { bytes, relayed } = await earlyExchange(t, liar, instance, tlsOn, what);
        got.push(bytes);
        // its answer began before STDIN ended: JavaScript read it, so the relay is never armed for it
        assert.equal(relayed, 0, `${what}: not relayed natively`);
        if (what === 'early-whole') {
          const fpmSide = liar.served.filter((s) => s.what === what).at(-1)!.socket;
          await until(`${what}: its FPM connection closed, not reused`, () => fpmSide.destroyed || fpmSide.readableEnded, (x) => x, 5_000);
        }
        assert.match((await rawAnswers(t, instance, tlsOn, ['/index.php?ok']))[0], /hello\r\n0\r\n\r\n$/, `${what}: served on after it`);
      }
      assert.equal(got[0], got[1], `${tlsOn ? 'TLS' : 'plain'} ${what}: the same bytes`);
      const label = `${tlsOn ? 'TLS' : 'plain'} ${what}`;
      if (what === 'early-partial') {
        // its head was whole only after the body's end: a kept connection, the next request answered on it
        assert.match(got[0], /^HTTP\/1\.1 200 OK\r\n(?![^]*Connection: close[^]*\r\n\r\n4\r\n)[^]*\r\n\r\n4\r\nlate\r\n0\r\n\r\nHTTP\/1\.1 200 OK\r\n[^]*hello\r\n0\r\n\r\n$/, `${label}: both answers whole on one connection: ${JSON.stringify(got[0])}`);
        continue;
      }
      // an answer begun before the request was read whole closes the connection after it (its head says so)
      const body = what === 'early-whole' ? '5\r\nearly\r\n0\r\n\r\n' : '6\r\nearly-\r\n4\r\nrest\r\n0\r\n\r\n';
      assert.ok(got[0].startsWith('HTTP/1.1 200 OK\r\n') && got[0].endsWith(`\r\nConnection: close\r\n\r\n${body}`), `${label}: the whole answer, then the connection closed: ${JSON.stringify(got[0])}`);
    }
  }
}

test('FastCGI relayed answers: a lying application gets the same client bytes with and without the relay', { timeout: 90_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const liar = await startLiar(t);
  const p = await startPortico(t, config(liar.target, { retries: { max: 0 } }));
  const js = await startPortico(t, config(liar.target, { retries: { max: 0 } }), { env: { PORTICO_NATIVE_ANSWER: '0' } });
  await checkLies(t, liar, p, js, [false, true]);
});

test('FastCGI relayed answers: an application that answers before the request body ended (whole, or its head) gets the same client bytes with and without the relay', { timeout: 90_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const liar = await startLiar(t);
  const p = await startPortico(t, config(liar.target, { retries: { max: 0 } }));
  const js = await startPortico(t, config(liar.target, { retries: { max: 0 } }), { env: { PORTICO_NATIVE_ANSWER: '0' } });
  await checkEarly(t, liar, p, js, [false, true]);
});

test('FastCGI relayed answers: the lying and early applications on a Unix socket give the same client bytes with and without the relay', { timeout: 90_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-liar-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const liar = await startLiar(t, path.join(dir, 'app.sock'));
  const p = await startPortico(t, config(liar.target, { retries: { max: 0 } }));
  const js = await startPortico(t, config(liar.target, { retries: { max: 0 } }), { env: { PORTICO_NATIVE_ANSWER: '0' } });
  await checkLies(t, liar, p, js, [false]);
  await checkEarly(t, liar, p, js, [false]);
});
