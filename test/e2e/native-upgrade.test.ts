// The WebSocket 101 written by the addon (src/native/response-head.h RewriteUpgrade, io.cc ioAnswerUpgrade,
// forward.ts #armUpgrade) against the real `portico start` (one worker) and scripted raw backends: the backend's 101
// reaches the client with the same bytes as on the JavaScript path (a second Portico with PORTICO_NATIVE_ANSWER=0
// answers the same upgrades, plain and TLS listeners, a route that removes and sets fields), and the worker's
// nativeUpgrades in /status counts it; the first frames both ways right after the handshake (the backend's in the
// same read as its 101, the client's pipelined behind its request); a 101 with a wrong accept key or two Upgrade
// fields (502 from JavaScript, never a 101) and one split across reads (JavaScript writes it); a backend that closes
// right after its 101, a client that leaves before it; real clients (ws, Python websockets, curl); 1,000 handshakes
// one after another with the worker's descriptors back where they were; a flood of upgrades the backend never answers
// (max_connections reach it, the queue's overflow and its waiters get 503, the rest 504 at the response timeout, another
// route served meanwhile, the worker back at rest), with the addon's 101 on and off.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { ConfigInput } from '../../src/config/schema.js';
import { startWsEchoBackend } from '../helpers/backends.js';
import { PYTHON, PYTHON_WSS_CLIENT, closed, curl, echo, hasCurl, hasPythonWebsockets, openWebSocket, run } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico, tlsListener, type Portico } from '../helpers/portico.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { testCaCert } from '../helpers/wire.js';
import { needNativeIo } from '../helpers/native-io.js';
import { fdCount, workerPids } from '../helpers/proc-stats.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const acceptOf = (key: string): string => createHash('sha1').update(key + GUID).digest('base64');
/** A server's first frame (text "hello", unmasked) and a client's (text "hi", masked with key 1 2 3 4). */
const SERVER_FRAME = Buffer.from([0x81, 0x05, ...Buffer.from('hello')]);
const CLIENT_FRAME = Buffer.from([0x81, 0x82, 1, 2, 3, 4, 'h'.charCodeAt(0) ^ 1, 'i'.charCodeAt(0) ^ 2]);
const START = { startTimeoutMs: process.env.PORTICO_NATIVE_ADDON !== undefined ? 120_000 : 20_000 };

interface Backend {
  readonly port: number;
  /** Bytes each upgrade's connection sent after its head, by path (the client's frames). */
  readonly after: Map<string, Buffer>;
  /** The backend's side of the last `/silent` upgrade (never answered). */
  silent: net.Socket | undefined;
}

/**
 * Answers upgrades by path, then echoes what comes (raw bytes): `/ws` a 101 with fields the route rewrites; `/first`
 * the 101 and a first frame in one write; `/split` the 101 in three writes, each after the previous one left;
 * `/wrongkey` an accept value for another key; `/two` two Upgrade fields; `/close` the 101 and a FIN; `/silent` nothing.
 */
async function startBackend(t: TestContext): Promise<Backend> {
  const state: Backend = { port: 0, after: new Map(), silent: undefined };
  const sockets: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.push(s);
    s.on('error', () => {});
    s.setNoDelay(true);
    let head = Buffer.alloc(0);
    const onHead = (c: Buffer): void => {
      head = Buffer.concat([head, c]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.removeListener('data', onHead);
      const text = head.subarray(0, end).toString('latin1');
      const path = /^GET (\S+) /.exec(text)?.[1] ?? '';
      const key = /\r\nsec-websocket-key:[ \t]*(\S+)/i.exec(text)?.[1] ?? '';
      let after = head.subarray(end + 4);
      state.after.set(path, after);
      s.on('data', (d: Buffer) => {
        after = Buffer.concat([after, d]);
        state.after.set(path, after);
        s.write(d);
      });
      const ok = `HTTP/1.1 101 Switching Protocols\r\nServer: scripted\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: 1\r\nSec-WebSocket-Accept: ${acceptOf(key)}\r\n\r\n`;
      if (path === '/silent') state.silent = s;
      else if (path === '/first') s.write(Buffer.concat([Buffer.from(ok, 'latin1'), SERVER_FRAME]));
      else if (path === '/wrongkey') s.write(ok.replace(acceptOf(key), acceptOf('AAAAAAAAAAAAAAAAAAAAAA==')));
      else if (path === '/two') s.write(ok.replace('Upgrade: websocket\r\n', 'Upgrade: websocket\r\nUpgrade: websocket\r\n'));
      else if (path === '/close') s.end(ok);
      else if (path === '/split') {
        const cuts = [0, 20, 60, ok.length];
        const send = (i: number): void => {
          if (i + 1 < cuts.length && !s.destroyed) s.write(ok.slice(cuts[i], cuts[i + 1]), () => setTimeout(send, 5, i + 1));
        };
        send(0);
      } else s.write(ok);
      if (after.length > 0) s.write(after);
    };
    s.on('data', onHead);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return Object.assign(state, { port: (server.address() as AddressInfo).port });
}

function config(backendPort: number): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener(), tlsListener()],
    upstreams: { b: { targets: [`127.0.0.1:${backendPort}`] } },
    routes: [{ match: { path: '/' }, proxy: 'b', response_headers: { remove: ['Server'], set: { 'X-Frame-Options': 'DENY' } } }],
    log: { level: 'warn', access: false },
  };
}

async function upgrades(p: Portico): Promise<number> {
  const s = await adminStatus(p);
  return s.workers.reduce((n, w) => n + (w.nativeUpgrades ?? 0), 0);
}

interface Upgraded {
  /** The answer's head (through its empty line) and every byte after it so far. */
  head: string;
  rest: () => Buffer;
  socket: net.Socket;
  ended: Promise<unknown>;
}

/** A raw client: the upgrade request (and `behind` in the same write), resolved once a whole head came back. */
async function upgrade(t: TestContext, p: Portico, secure: boolean, path: string, key = 'dGhlIHNhbXBsZSBub25jZQ==', behind = Buffer.alloc(0)): Promise<Upgraded> {
  const socket = secure
    ? tls.connect({ host: '127.0.0.1', port: p.tlsPort, servername: 'localhost', ca: testCaCert(), ALPNProtocols: ['http/1.1'] })
    : net.connect({ host: '127.0.0.1', port: p.httpPort });
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  await once(socket, secure ? 'secureConnect' : 'connect');
  let got = Buffer.alloc(0);
  const ended = once(socket, 'close');
  // the whole head, awaited on the socket's events (a poll would cost the 1,000-handshake test 50 ms a handshake)
  const headEnd = new Promise<number>((resolve, reject) => {
    const fail = (why: string): void => reject(new Error(`the answer to ${path}: ${why}; got ${JSON.stringify(got.toString('latin1'))}`));
    const timer = setTimeout(fail, 10_000, 'no whole head within 10000 ms');
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const at = got.indexOf('\r\n\r\n');
      if (at >= 0) {
        clearTimeout(timer);
        resolve(at);
      }
    });
    socket.once('close', () => {
      clearTimeout(timer);
      fail('closed before a whole head');
    });
  });
  const req = `GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
  socket.write(Buffer.concat([Buffer.from(req, 'latin1'), behind]));
  const end = await headEnd;
  return { head: got.subarray(0, end + 4).toString('latin1'), rest: () => got.subarray(end + 4), socket, ended };
}

async function pair(t: TestContext): Promise<{ backend: Backend; on: Portico; off: Portico }> {
  const backend = await startBackend(t);
  const on = await startPortico(t, config(backend.port), START);
  const off = await startPortico(t, config(backend.port), { ...START, env: { PORTICO_NATIVE_ANSWER: '0' } });
  return { backend, on, off };
}

test('upgrades: the addon writes the same 101 as the JavaScript path, plain and TLS, with the first frames both ways right after it', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const { backend, on, off } = await pair(t);
  for (const secure of [false, true]) {
    const heads: string[] = [];
    for (const p of [on, off]) {
      const before = await upgrades(p);
      const u = await upgrade(t, p, secure, '/ws');
      heads.push(u.head);
      assert.match(u.head, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
      assert.match(u.head, new RegExp(`\r\nSec-WebSocket-Accept: ${acceptOf('dGhlIHNhbXBsZSBub25jZQ==').replace(/[+/=]/g, '\\$&')}\r\n`));
      assert.match(u.head, /\r\nX-Frame-Options: DENY\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n$/);
      assert.doesNotMatch(u.head, /Server: scripted/);
      assert.equal(await upgrades(p), p === on ? before + 1 : before, `${secure ? 'TLS' : 'plain'}: counted as the addon's on ${p === on ? 'the default' : 'PORTICO_NATIVE_ANSWER=0'}`);
      // the client's first frame after the 101 reaches the backend, which echoes it
      u.socket.write(CLIENT_FRAME);
      await until('the echo', () => u.rest(), (r) => r.equals(CLIENT_FRAME));
      // the backend's first frame in the same read as its 101: right behind it, once
      const f = await upgrade(t, p, secure, '/first');
      assert.equal(f.head, u.head);
      await until('the first frame', () => f.rest(), (r) => r.length >= SERVER_FRAME.length);
      assert.deepEqual(f.rest(), SERVER_FRAME);
      f.socket.write(CLIENT_FRAME);
      await until('the echo behind it', () => f.rest(), (r) => r.equals(Buffer.concat([SERVER_FRAME, CLIENT_FRAME])));
    }
    assert.equal(heads[0], heads[1], `${secure ? 'TLS' : 'plain'}: the same 101 either way`);
  }
});

test('upgrades: a client frame pipelined behind its request reaches the backend once, after the 101', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const { backend, on, off } = await pair(t);
  for (const p of [on, off]) {
    for (const secure of [false, true]) {
      const path = `/ws?pipelined=${p === on ? 'on' : 'off'}-${secure}`;
      const u = await upgrade(t, p, secure, path, 'x3JJHMbDL1EzLkh9GBhXDw==', CLIENT_FRAME);
      assert.match(u.head, /^HTTP\/1\.1 101 /);
      await until('the frame at the backend', () => backend.after.get(path), (b) => b !== undefined && b.equals(CLIENT_FRAME));
      await until('its echo', () => u.rest(), (r) => r.equals(CLIENT_FRAME));
    }
  }
});

test('upgrades: a wrong accept key or two Upgrade fields get 502 and never a 101; a 101 in pieces is written by JavaScript, the same bytes', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const { on, off } = await pair(t);
  const before = await upgrades(on);
  for (const p of [on, off]) {
    for (const path of ['/wrongkey', '/two']) {
      const u = await upgrade(t, p, false, path);
      assert.match(u.head, /^HTTP\/1\.1 502 /, path);
      await u.ended;
    }
  }
  const split = await Promise.all([on, off].map((p) => upgrade(t, p, false, '/split')));
  assert.match(split[0].head, /^HTTP\/1\.1 101 /);
  assert.equal(split[0].head, split[1].head);
  assert.equal(await upgrades(on), before, 'none of these was the addon\'s');
});

test('upgrades: a backend that closes right after its 101 and a client that leaves before it leave the worker at rest', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const { backend, on } = await pair(t);
  const [pid] = await workerPids(on);
  // warm: the first tunnel of each kind starts its relay thread (its epoll set and eventfd) before fds are counted
  for (const secure of [false, true]) await (await upgrade(t, on, secure, '/close')).ended;
  await until('the worker at rest', async () => (await adminStatus(on)).tunnels, (n) => n === 0);
  const fds = fdCount(pid);
  const before = await upgrades(on);
  for (const secure of [false, true]) {
    const u = await upgrade(t, on, secure, '/close');
    assert.match(u.head, /^HTTP\/1\.1 101 /);
    await u.ended;
  }
  assert.equal(await upgrades(on), before + 2);
  // a client that leaves before the 101: by a reset (the backend's connection is closed at once), and by a FIN with
  // its socket closed (the exchange waits for the 101, which then meets the closed client)
  for (const how of ['reset', 'fin'] as const) {
    backend.silent = undefined;
    const c = net.connect({ host: '127.0.0.1', port: on.httpPort });
    c.on('error', () => {});
    await once(c, 'connect');
    c.write('GET /silent HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    const silent = (await until('the upgrade at the backend', () => backend.silent, (s) => s !== undefined))!;
    // (the backend keeps its side open after a FIN: allowHalfOpen)
    const gone = Promise.race([once(silent, 'end'), once(silent, 'close')]);
    if (how === 'reset') {
      c.resetAndDestroy();
    } else {
      c.destroy();
      await once(c, 'close');
      silent.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf('dGhlIHNhbXBsZSBub25jZQ==')}\r\n\r\n`);
    }
    await gone;
  }
  await until('the worker at rest', async () => {
    const s = await adminStatus(on);
    return [s.tunnels, s.connections, fdCount(pid)];
  }, ([tn, cn, f]) => tn === 0 && cn === 0 && f === fds, 10_000).catch((e: Error) => { throw new Error(`${e.message} (base ${fds})`); });
});

test('upgrades: ws, Python websockets and curl through the addon\'s 101', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const ws = await startWsEchoBackend(t);
  const p = await startPortico(t, config(ws.port), START);
  const before = await upgrades(p);
  for (const url of [`ws://127.0.0.1:${p.httpPort}/node`, `wss://localhost:${p.tlsPort}/node`]) {
    const c = await openWebSocket(t, url);
    assert.equal(await echo(c, 'first'), 'first');
    assert.deepEqual(await echo(c, Buffer.alloc(70_000, 7)), Buffer.alloc(70_000, 7));
    c.close(1000);
    assert.equal(await closed(c), 1000);
  }
  let count = 2;
  if (needPeer(t, 'Python websockets (python3-websockets)', hasPythonWebsockets())) {
    const r = await run(PYTHON, [PYTHON_WSS_CLIENT, `ws://127.0.0.1:${p.httpPort}/python`]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(JSON.parse(r.stdout).ok, true);
    count++;
  }
  if (needPeer(t, 'curl', hasCurl())) {
    // curl asks for the upgrade and prints the 101 it got; the backend then closes the idle tunnel at our end
    const r = await curl(`http://127.0.0.1:${p.httpPort}/curl`, ['-i', '-sS', '-N', '--max-time', '3', '-H', 'Upgrade: websocket', '-H', 'Connection: Upgrade', '-H', 'Sec-WebSocket-Version: 13', '-H', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']);
    assert.match(r.stdout, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(r.stdout, /\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i);
    count++;
  }
  assert.equal(await upgrades(p), before + count);
  assert.equal(ws.upgrades.length, count);
});

test('upgrades: 1,000 handshakes one after another, every 101 the addon\'s, the worker\'s descriptors back where they were', { timeout: 120_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const backend = await startBackend(t);
  const p = await startPortico(t, config(backend.port), START);
  const [pid] = await workerPids(p);
  await (await upgrade(t, p, false, '/close')).ended;
  await until('the worker at rest', async () => (await adminStatus(p)).tunnels, (n) => n === 0);
  const fds = fdCount(pid);
  const before = await upgrades(p);
  const n = 1_000;
  for (let i = 0; i < n; i++) {
    const u = await upgrade(t, p, false, '/close', randomBytes(16).toString('base64'));
    assert.match(u.head, /^HTTP\/1\.1 101 /);
    u.socket.destroy();
  }
  assert.equal(await upgrades(p), before + n);
  await until('the worker at rest', async () => [(await adminStatus(p)).tunnels, fdCount(pid)], ([tn, f]) => tn === 0 && f === fds);
});

/** One raw upgrade on its own connection: the answer's status line (or 'closed' when none came) and when it came. */
async function rawUpgrade(port: number, path: string): Promise<{ status: string; ms: number; head: string }> {
  const t0 = performance.now();
  const c = net.connect({ host: '127.0.0.1', port });
  c.on('error', () => {});
  let got = '';
  // the head's end or the connection's, whichever comes first (the test's timeout bounds the wait)
  const answered = new Promise<number>((resolve) => {
    c.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) resolve(performance.now());
    });
    c.once('close', () => resolve(performance.now()));
  });
  c.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`);
  const ms = (await answered) - t0;
  c.destroy();
  return { status: /^HTTP\/1\.1 (\d{3}) /.exec(got)?.[1] ?? 'closed', ms, head: got.slice(0, Math.max(0, got.indexOf('\r\n\r\n'))) };
}

test('upgrades: a flood the backend never answers is bounded by max_connections, the queue and the response timeout, and other routes are served meanwhile', { timeout: 60_000 }, async (t) => {
  // the backend accepts and reads every upgrade and never answers; it counts the connections it saw and still holds
  const held = new Set<net.Socket>();
  let seen = 0;
  const silent = net.createServer((s) => {
    seen++;
    held.add(s);
    s.on('error', () => {});
    s.on('close', () => held.delete(s));
    s.resume();
  });
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.after(() => {
    for (const s of held) s.destroy();
    silent.close();
  });
  const echoBackend = await startWsEchoBackend(t);
  const max = 6;
  const queued = 4;
  const flood = 30;
  for (const env of [{}, { PORTICO_NATIVE_ANSWER: '0' }] as Record<string, string>[]) {
    seen = 0;
    const p = await startPortico(t, {
      workers: 1,
      admin: { address: '127.0.0.1:0' },
      listeners: [plainListener()],
      upstreams: {
        silent: { targets: [`127.0.0.1:${(silent.address() as AddressInfo).port}`], max_connections: max, queue: { size: queued, timeout: '1s' }, timeouts: { response_headers: '2s' } },
        echo: { targets: [`127.0.0.1:${echoBackend.port}`] },
      },
      routes: [
        { match: { path: '/silent' }, proxy: 'silent' },
        { match: { path: '/' }, proxy: 'echo' },
      ],
      log: { level: 'warn', access: false },
    }, { ...START, env });
    const [pid] = await workerPids(p);
    // warm: the first tunnel starts the relay thread (its epoll set and eventfd) before fds are counted
    assert.equal((await rawUpgrade(p.httpPort, '/ws')).status, '101');
    await until('the warm-up tunnel closed', async () => (await adminStatus(p)).tunnels, (n) => n === 0);
    const fds = fdCount(pid);
    const answers = Promise.all(Array.from({ length: flood }, () => rawUpgrade(p.httpPort, '/silent')));
    await until('the backend at max_connections', () => seen, (n) => n >= max);
    // while the flood waits: another route's upgrade is answered at once (its own pool, the worker not blocked)
    const other = await rawUpgrade(p.httpPort, '/ws');
    assert.equal(other.status, '101', other.head);
    const got = await answers;
    const by = (s: string): number[] => got.filter((a) => a.status === s).map((a) => a.ms);
    assert.equal(seen, max, 'exactly max_connections reached the backend');
    // the queue full: 503 at once; the queued ones: 503 at the queue's timeout; the ones at the backend: 504 at the response timeout
    assert.equal(by('503').length, flood - max, JSON.stringify(got.map((a) => a.status)));
    assert.equal(by('504').length, max, JSON.stringify(got.map((a) => a.status)));
    assert.equal(by('503').filter((ms) => ms >= 900).length, queued, `queued 503s at ~1 s: ${by('503').map(Math.round).join(',')}`);
    for (const ms of by('504')) assert.ok(ms >= 1_900, `504 after the 2 s response timeout, not ${Math.round(ms)} ms`);
    assert.match(got.find((a) => a.status === '503')!.head, /\r\nretry-after: \d+/i);
    await until('the backend\'s connections closed', () => held.size, (n) => n === 0);
    await until('the worker at rest', async () => {
      const s = await adminStatus(p);
      return [s.tunnels, s.connections, fdCount(pid)];
    }, ([tn, cn, f]) => tn === 0 && cn === 0 && f === fds, 10_000).catch((e: Error) => { throw new Error(`${e.message} (base ${fds})`); });
    await p.stop();
  }
});
