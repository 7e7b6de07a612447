// NativeSocket (src/native/io.ts over io.cc) against real net.Socket peers on loopback, where the HTTP path, the
// pool and the relays rely on it behaving like net.Socket: bytes intact both ways, addresses, adoption of an
// accepted socket, backpressure and write callbacks, pause/resume with held chunks, half-close, errors, cork,
// fd hygiene, no stale event for a socket closed in the middle of a batch, and connects to Unix stream sockets
// (unix: targets) with their failures. Skipped (loudly) where native I/O is not built; PORTICO_REQUIRE_PEERS=1 (CI)
// turns that into a failure.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once, type EventEmitter } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { adoptNative, afterBatch, answerPlan, connectNative, nativeIoLive, type NativeSocket, type SocketOwner } from '../../src/native/io.js';
import { needNativeIo } from '../helpers/native-io.js';
import { closedPort } from '../helpers/backends.js';
import { until } from '../helpers/until.js';
import { native } from '../../src/native/addon.js';

const MiB = 1024 * 1024;
/** Bounds every single wait of a test phase (the test's own timeout bounds the whole). */
const PHASE_MS = 10_000;

function nativeTest(name: string, fn: (t: TestContext) => Promise<void>, timeout = 30_000): void {
  test(name, { timeout }, async (t) => {
    if (!needNativeIo(t)) return;
    await fn(t);
  });
}

/** `p`, or a rejection naming the phase that did not happen within `ms`. */
async function within<T>(p: Promise<T>, what: string, ms = PHASE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** 'close' (with hadError); unlike events.once it does not reject when 'error' comes first, as it does on failures. */
function closeOf(s: EventEmitter): Promise<boolean> {
  return new Promise((resolve) => s.once('close', (hadError: boolean) => resolve(hadError)));
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function track(t: TestContext, ...sockets: Array<{ destroy(): unknown } | undefined>): void {
  t.after(() => {
    for (const s of sockets) s?.destroy();
  });
}

/** Everything a socket delivers until 'end' (rejects on 'error'); `chunks` in arrival order. */
function collect(s: EventEmitter): { chunks: Buffer[]; bytes(): number; done: Promise<Buffer> } {
  const chunks: Buffer[] = [];
  let n = 0;
  s.on('data', (c: Buffer) => {
    chunks.push(c);
    n += c.length;
  });
  const done = new Promise<Buffer>((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
  return { chunks, bytes: () => n, done };
}

interface Listener {
  port: number;
  /** The accepted socket whose remote port is `remotePort` (the next one accepted when omitted). */
  accepted(remotePort?: number): Promise<net.Socket>;
}

/**
 * A net.Server on 127.0.0.1 port 0 (allowHalfOpen unless said otherwise); `onConnection` replaces the default
 * handler (which keeps accepted sockets for accepted()). Closed, with every accepted socket, in t.after.
 */
async function listen(t: TestContext, opts: { pauseOnConnect?: boolean; allowHalfOpen?: boolean; onConnection?: (s: net.Socket) => void } = {}): Promise<Listener> {
  const server = net.createServer({ allowHalfOpen: opts.allowHalfOpen ?? true, pauseOnConnect: opts.pauseOnConnect ?? false });
  const open = new Set<net.Socket>();
  const unclaimed: net.Socket[] = [];
  const waiters: Array<{ port: number | undefined; resolve: (s: net.Socket) => void }> = [];
  server.on('connection', (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    if (opts.onConnection !== undefined) {
      opts.onConnection(s);
      return;
    }
    const i = waiters.findIndex((w) => w.port === undefined || w.port === s.remotePort);
    if (i >= 0) waiters.splice(i, 1)[0]!.resolve(s);
    else unclaimed.push(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of open) s.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted(remotePort) {
      const i = unclaimed.findIndex((s) => remotePort === undefined || s.remotePort === remotePort);
      if (i >= 0) return Promise.resolve(unclaimed.splice(i, 1)[0]!);
      return within(new Promise<net.Socket>((resolve) => waiters.push({ port: remotePort, resolve })), `the server to accept port ${remotePort ?? 'any'}`);
    },
  };
}

function mustConnect(port: number, allowHalfOpen: boolean): NativeSocket {
  const s = connectNative('127.0.0.1', port, { allowHalfOpen });
  assert.ok(s !== undefined, 'connectNative gave a socket');
  return s;
}

interface Pair {
  s: NativeSocket;
  peer: net.Socket;
}

/** A connected NativeSocket (connectNative) and the net.Socket the server accepted for it. */
async function pair(t: TestContext, srv: Listener, allowHalfOpen = true): Promise<Pair> {
  const s = mustConnect(srv.port, allowHalfOpen);
  track(t, s);
  await within(once(s, 'connect'), "the native socket's 'connect'");
  const peer = await srv.accepted(s.localPort);
  track(t, peer);
  return { s, peer };
}

/**
 * Lets the native poll run at least once after now: a byte written by a net.Socket is in the kernel at once
 * (loopback), so when it shows up on the native side the same or a later epoll batch has been dispatched.
 */
async function pollCycle(probe: Pair): Promise<void> {
  const got = once(probe.s, 'data');
  probe.peer.write('.');
  await within(got, 'a probe byte through the native poll');
}

// --- connect, adopt, bytes ---

nativeTest('connectNative: connect, addresses and ports right, 1 MiB each way intact, close once both ends are done', async (t) => {
  const srv = await listen(t);
  const s = mustConnect(srv.port, true);
  track(t, s);
  assert.equal(s.connecting, true);
  await within(once(s, 'connect'), "'connect'");
  assert.equal(s.connecting, false);
  const peer = await srv.accepted();
  track(t, peer);
  assert.equal(s.remoteAddress, '127.0.0.1');
  assert.equal(s.remotePort, srv.port);
  assert.equal(s.localAddress, '127.0.0.1');
  assert.equal(s.localPort, peer.remotePort);
  const up = randomBytes(MiB);
  const down = randomBytes(MiB);
  const atPeer = collect(peer);
  const atNative = collect(s);
  const closed = closeOf(s);
  s.end(up);
  peer.end(down);
  assert.equal(sha(await within(atPeer.done, 'the peer to read 1 MiB and FIN')), sha(up));
  assert.equal(sha(await within(atNative.done, 'the native socket to read 1 MiB and FIN')), sha(down));
  const hadError = await within(closed, "'close' after both directions ended");
  assert.equal(hadError, false);
  assert.equal(s.destroyed, true);
});

nativeTest("a loopback connect is established inside connectNative: 'connect' in the same turn of the loop (no wake-up for it), once, also to a listener attached after an await", async (t) => {
  const srv = await listen(t);
  const probe = await pair(t, srv);
  // from an I/O callback (the poll phase): an immediate set now runs before the loop polls again, so only a
  // connection known to be established at once can have said 'connect' by then
  const seen = await within(
    new Promise<{ s: NativeSocket; connectedByImmediate: boolean }>((resolve) => {
      probe.s.once('data', () => {
        const s = mustConnect(srv.port, true);
        track(t, s);
        assert.equal(s.connecting, true, "connecting until 'connect'");
        let connected = false;
        s.once('connect', () => (connected = true));
        setImmediate(() => resolve({ s, connectedByImmediate: connected }));
      });
      probe.peer.write('.');
    }),
    'the probe byte',
  );
  assert.equal(seen.connectedByImmediate, true, "'connect' came before the next poll of the loop");
  const { s } = seen;
  assert.equal(s.connecting, false);
  const peer = await srv.accepted(s.localPort);
  track(t, peer);
  // a listener attached after an await still gets its own 'connect' from a fresh connection
  const late = mustConnect(srv.port, true);
  track(t, late);
  await Promise.resolve();
  let connects = 0;
  late.on('connect', () => connects++);
  await within(once(late, 'connect'), "the late listener's 'connect'");
  const back = once(s, 'data');
  s.write('ping');
  const [got] = (await within(once(peer, 'data'), 'the first bytes at the peer')) as [Buffer];
  assert.equal(got.toString(), 'ping');
  peer.write('pong');
  assert.equal(((await within(back, 'the answer')) as [Buffer])[0].toString(), 'pong');
  await pollCycle(probe);
  assert.equal(connects, 1, "'connect' once");
});

nativeTest('write(): strings in utf8 and latin1 and Uint8Array views arrive as the same bytes net.Socket would send', async (t) => {
  const srv = await listen(t);
  const { s, peer } = await pair(t, srv);
  const atPeer = collect(peer);
  const view = new Uint8Array(Buffer.from('--view--')).subarray(2, 6);
  s.write('héllo ✓|', 'utf8');
  s.write('latin1 \u00e9\u00ff\u0080|', 'latin1');
  s.write(view);
  s.write('|end');
  s.end();
  const want = Buffer.concat([Buffer.from('héllo ✓|', 'utf8'), Buffer.from('latin1 \u00e9\u00ff\u0080|', 'latin1'), Buffer.from('view'), Buffer.from('|end')]);
  assert.deepEqual(await within(atPeer.done, 'the peer to read the strings'), want);
});

for (const pauseOnConnect of [true, false]) {
  nativeTest(`adoptNative (pauseOnConnect: ${pauseOnConnect}): the accepted socket moves to native I/O, the net.Socket is closed, 1 MiB each way intact`, async (t) => {
    let handed!: (v: { n: NativeSocket | undefined; original: net.Socket; originalClosed: Promise<unknown> }) => void;
    const adopted = new Promise<{ n: NativeSocket | undefined; original: net.Socket; originalClosed: Promise<unknown> }>((r) => (handed = r));
    const srv = await listen(t, {
      pauseOnConnect,
      onConnection: (original) => {
        const n = adoptNative(original, { allowHalfOpen: true });
        handed({ n, original, originalClosed: closeOf(original) });
      },
    });
    const client = net.connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true });
    track(t, client);
    await within(once(client, 'connect'), "the client's 'connect'");
    const { n, original, originalClosed } = await within(adopted, 'the server to accept');
    assert.ok(n !== undefined, 'adoptNative took the socket');
    track(t, n);
    assert.equal(original.destroyed, true, 'the net.Socket was destroyed');
    await within(originalClosed, "the net.Socket's 'close'");
    assert.equal(n.remoteAddress, '127.0.0.1');
    assert.equal(n.remotePort, client.localPort);
    assert.equal(n.localPort, srv.port);
    const up = randomBytes(MiB);
    const down = randomBytes(MiB);
    const atNative = collect(n);
    const atClient = collect(client);
    const closed = closeOf(n);
    client.end(up);
    n.end(down);
    assert.equal(sha(await within(atNative.done, 'the adopted socket to read 1 MiB and FIN')), sha(up));
    assert.equal(sha(await within(atClient.done, 'the client to read 1 MiB and FIN')), sha(down));
    await within(closed, "the adopted socket's 'close'");
  });
}

// --- backpressure ---

nativeTest('backpressure: to a peer that does not read, write() says false with writableLength > 0; one drain once it reads; nothing lost or reordered; callbacks after the bytes reached the kernel', async (t) => {
  const srv = await listen(t, { pauseOnConnect: true });
  const { s, peer } = await pair(t, srv);
  const chunkSize = 256 * 1024;
  const sent: Buffer[] = [];
  const callbacks: number[] = [];
  let lastCallbackQueue = -1;
  let drains = 0;
  s.on('drain', () => drains++);
  let ok = true;
  // the kernel takes a few MiB on loopback (send buffer + the peer's receive window); 400 chunks is 100 MiB
  for (let i = 0; i < 400 && ok; i++) {
    const chunk = randomBytes(chunkSize);
    sent.push(chunk);
    ok = s.write(chunk, (err) => {
      assert.ifError(err);
      callbacks.push(i);
      if (i === sent.length - 1) lastCallbackQueue = s.writableLength;
    });
  }
  assert.equal(ok, false, 'write() said false before 100 MiB were accepted');
  assert.ok(s.writableLength > 0, `writableLength ${s.writableLength} > 0 once write() said false`);
  await pollCycle(await pair(t, srv)); // the native poll ran: still no drain while the peer does not read
  assert.equal(drains, 0, "no 'drain' while the peer does not read");
  assert.ok(!callbacks.includes(sent.length - 1), 'the callback of the write that said false waits for its bytes');
  const drained = once(s, 'drain');
  const atPeer = collect(peer);
  peer.resume();
  await within(drained, "'drain' once the peer reads");
  assert.equal(drains, 1);
  assert.equal(s.writableLength, 0);
  assert.equal(lastCallbackQueue, 0, 'the last write callback ran with nothing left in the queue');
  assert.deepEqual(callbacks, sent.map((_, i) => i), 'every write callback ran, in write order');
  const tail = Buffer.from('tail');
  sent.push(tail);
  s.end(tail);
  const got = await within(atPeer.done, 'the peer to read everything', 30_000);
  assert.equal(got.length, sent.length * chunkSize - chunkSize + tail.length);
  assert.equal(sha(got), sha(Buffer.concat(sent)));
  assert.equal(drains, 1, "exactly one 'drain'");
}, 60_000);

nativeTest("writes queued while connecting, then a big write and destroySoon() in the 'connect' handler: every byte arrives", async (t) => {
  // io.cc reports the connect and the drain of the pre-connect queue in one batch; the drain must not be taken
  // for the big write's, or destroySoon() closes with bytes still queued
  const srv = await listen(t);
  const s = mustConnect(srv.port, true);
  track(t, s);
  const first = Buffer.from('queued while connecting|');
  const big = randomBytes(32 * MiB);
  let bigCallbackQueue = -1;
  s.write(first);
  s.once('connect', () => {
    s.write(big, () => (bigCallbackQueue = s.writableLength));
    s.destroySoon();
  });
  const peer = await srv.accepted();
  track(t, peer);
  const got = await within(collect(peer).done, 'the peer to read everything and FIN', 30_000);
  assert.equal(got.length, first.length + big.length, `bytes received: ${got.length} of ${first.length + big.length}`);
  assert.equal(sha(got), sha(Buffer.concat([first, big])));
  assert.equal(bigCallbackQueue, 0);
}, 60_000);

nativeTest('a write callback given while connecting runs once connected, also for an empty write (the splice hand-over waits on one)', async (t) => {
  const srv = await listen(t);
  const s = mustConnect(srv.port, true);
  track(t, s);
  const ran = new Promise<Error | null | undefined>((resolve) => s.write(Buffer.alloc(0), resolve));
  await within(once(s, 'connect'), "'connect'");
  assert.equal(await within(ran, 'the empty write callback', 5000), null);
});

// --- pause / resume ---

nativeTest("pause(): no 'data' while paused; the bytes and the FIN that arrived meanwhile come in order after resume()", async (t) => {
  const srv = await listen(t);
  const { s, peer } = await pair(t, srv, false);
  const probe = await pair(t, srv);
  s.pause();
  assert.equal(s.isPaused(), true);
  const events: string[] = [];
  s.on('data', (c: Buffer) => events.push(`data:${c.toString()}`));
  s.on('end', () => events.push('end'));
  const closed = closeOf(s);
  peer.write('one|');
  peer.write('two|');
  peer.end('three');
  await within(once(peer, 'finish'), "the peer's FIN");
  await pollCycle(probe);
  await pollCycle(probe);
  assert.equal(events.length, 0, `nothing delivered while paused: ${events.join(', ')}`);
  assert.equal(s.readableEnded, false);
  s.resume();
  await within(closed, "'close' after the FIN (allowHalfOpen false)");
  assert.equal(events.at(-1), 'end');
  assert.equal(
    events
      .slice(0, -1)
      .map((e) => e.slice('data:'.length))
      .join(''),
    'one|two|three',
  );
});

/**
 * Two pairs whose peers send at once: both reads land in one native batch, and the first socket's handler
 * pauses the other one before its event is dispatched. Returns the other pair (its event was held).
 */
async function pausedMidBatch(t: TestContext, srv: Listener, send: (peer: net.Socket, name: string) => void): Promise<{ other: Pair; otherName: string; otherEvents: string[] }> {
  const pairs = { x: await pair(t, srv, false), y: await pair(t, srv, false) };
  const events: Record<string, string[]> = { x: [], y: [] };
  let first: 'x' | 'y' | undefined;
  const firstEvent = new Promise<void>((resolve) => {
    for (const name of ['x', 'y'] as const) {
      const me = pairs[name].s;
      const other = pairs[name === 'x' ? 'y' : 'x'].s;
      const seen = (what: string): void => {
        events[name]!.push(what);
        if (first !== undefined) return;
        first = name;
        other.pause();
        resolve();
      };
      me.on('data', (c: Buffer) => seen(`data:${c.toString()}`));
      me.on('end', () => seen('end'));
    }
  });
  send(pairs.x.peer, 'x');
  send(pairs.y.peer, 'y');
  await within(firstEvent, 'the first of the two sockets to get its bytes');
  // the continuation runs after the whole batch was dispatched: the other socket's event was handled too
  const otherName = first === 'x' ? 'y' : 'x';
  return { other: pairs[otherName], otherName, otherEvents: events[otherName]! };
}

nativeTest('paused by another socket in the same batch: the chunk is held (readableLength), read() takes it, nothing is emitted', async (t) => {
  const srv = await listen(t);
  const { other, otherName, otherEvents } = await pausedMidBatch(t, srv, (peer, name) => peer.write(`${name}-chunk`));
  assert.equal(otherEvents.length, 0, `no 'data' after pause(): ${otherEvents.join(', ')}`);
  assert.equal(other.s.readableLength, 'x-chunk'.length, 'the chunk read in the same batch is held');
  assert.equal(other.s.read()?.toString(), `${otherName}-chunk`);
  assert.equal(other.s.readableLength, 0);
  assert.equal(other.s.read(), null);
});

nativeTest('paused by another socket in the same batch: resume() delivers the held chunk first, then what came later, then end', async (t) => {
  const srv = await listen(t);
  const { other, otherName, otherEvents } = await pausedMidBatch(t, srv, (peer, name) => peer.write(`${name}-held|`));
  assert.equal(other.s.readableLength, 'x-held|'.length, 'a chunk is held');
  other.peer.end('later');
  await within(once(other.peer, 'finish'), "the peer's FIN");
  const closed = closeOf(other.s);
  other.s.resume();
  await within(closed, "'close' after the FIN");
  assert.equal(otherEvents[0], `data:${otherName}-held|`);
  assert.equal(otherEvents.at(-1), 'end');
  assert.equal(
    otherEvents
      .slice(0, -1)
      .map((e) => e.slice('data:'.length))
      .join(''),
    `${otherName}-held|later`,
  );
});

nativeTest("paused by another socket in the same batch: a held FIN gives 'end' only after resume()", async (t) => {
  const srv = await listen(t);
  const { other, otherEvents } = await pausedMidBatch(t, srv, (peer) => peer.end());
  assert.equal(otherEvents.length, 0, `no 'end' while paused: ${otherEvents.join(', ')}`);
  assert.equal(other.s.readableEnded, false);
  assert.equal(other.s.read(), null, 'read() gives no bytes for a held FIN');
  const closed = closeOf(other.s);
  other.s.resume();
  await within(closed, "'close' after the held FIN");
  assert.deepEqual(otherEvents, ['end']);
});

// --- half-close ---

nativeTest('end() sends FIN after the queued bytes while reads go on (allowHalfOpen); close once the peer ends too', async (t) => {
  const srv = await listen(t, { pauseOnConnect: true });
  const { s, peer } = await pair(t, srv, true);
  const payload = randomBytes(16 * MiB);
  let finished = false;
  s.on('finish', () => (finished = true));
  s.end(payload);
  assert.equal(s.writableEnded, true);
  assert.ok(s.writableLength > 0, 'bytes are still queued natively (the peer does not read)');
  assert.equal(finished, false, "no 'finish' before the queue is sent");
  // reads go on while our FIN waits behind the queue
  const ping = once(s, 'data');
  peer.write('ping');
  assert.equal(String((await within(ping, 'ping to the half-closed socket'))[0]), 'ping');
  assert.equal(finished, false);
  const atPeer = collect(peer);
  peer.resume();
  assert.equal(sha(await within(atPeer.done, 'the peer to read 16 MiB then FIN', 30_000)), sha(payload));
  if (!finished) await within(once(s, 'finish'), "'finish'");
  assert.equal(s.destroyed, false, 'still open: the peer has not ended');
  const closed = closeOf(s);
  const bye = collect(s);
  peer.end('bye');
  assert.equal((await within(bye.done, "'end' from the peer")).toString(), 'bye');
  await within(closed, "'close' once both directions are done");
}, 60_000);

nativeTest("peer FIN with allowHalfOpen false: 'end', our side ends, then 'close'", async (t) => {
  const srv = await listen(t);
  const { s, peer } = await pair(t, srv, false);
  const events: string[] = [];
  s.on('end', () => events.push('end'));
  s.on('finish', () => events.push('finish'));
  s.on('close', () => events.push('close'));
  const peerGotFin = collect(peer).done;
  peer.end();
  await within(peerGotFin, 'our FIN at the peer');
  if (!events.includes('close')) await within(closeOf(s), "'close'");
  assert.deepEqual(events, ['end', 'finish', 'close']);
});

nativeTest("peer FIN with allowHalfOpen true: 'end', and we can still write until we end", async (t) => {
  const srv = await listen(t);
  const { s, peer } = await pair(t, srv, true);
  const atPeer = collect(peer);
  const ended = once(s, 'end');
  peer.end();
  await within(ended, "'end'");
  await pollCycle(await pair(t, srv));
  assert.equal(s.destroyed, false);
  assert.equal(s.writable, true);
  assert.equal(s.writableEnded, false);
  const closed = closeOf(s);
  s.write('after end|');
  s.end('and FIN');
  assert.equal((await within(atPeer.done, 'the late bytes at the peer')).toString(), 'after end|and FIN');
  await within(closed, "'close'");
});

// --- errors ---

nativeTest("connect to a refused port: 'error' ECONNREFUSED, then 'close'; nothing left open", async (t) => {
  const live = nativeIoLive();
  const port = await closedPort();
  const s = connectNative('127.0.0.1', port, { allowHalfOpen: false });
  // undefined would mean it failed at once and the caller falls back to net.connect (documented)
  assert.ok(s !== undefined, 'a loopback refusal is reported asynchronously');
  track(t, s);
  const events: string[] = [];
  s.on('connect', () => events.push('connect'));
  const errored = new Promise<NodeJS.ErrnoException>((resolve) => s.on('error', (e: NodeJS.ErrnoException) => (events.push('error'), resolve(e))));
  const closed = closeOf(s).then((hadError) => events.push(`close:${String(hadError)}`));
  const err = await within(errored, "'error'");
  assert.equal(err.code, 'ECONNREFUSED');
  assert.equal(err.syscall, 'connect');
  await within(closed, "'close'");
  assert.deepEqual(events, ['error', 'close:true']);
  assert.equal(nativeIoLive(), live);
});

nativeTest("peer resets (resetAndDestroy): 'error' ECONNRESET, then 'close' (as net.Socket)", async (t) => {
  const srv = await listen(t);
  for (const kind of ['native', 'net'] as const) {
    // the same steps on a net.Socket show what the proxy expects
    let s: NativeSocket | net.Socket;
    let peer: net.Socket;
    if (kind === 'native') ({ s, peer } = await pair(t, srv));
    else {
      s = net.connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true });
      track(t, s);
      await within(once(s, 'connect'), 'net connect');
      peer = await srv.accepted(s.localPort);
      track(t, peer);
      s.resume();
    }
    const events: string[] = [];
    const errored = new Promise<NodeJS.ErrnoException>((resolve) => s.on('error', (e: NodeJS.ErrnoException) => (events.push(`error:${e.code}`), resolve(e))));
    s.on('end', () => events.push('end'));
    const closed = closeOf(s).then((hadError) => events.push(`close:${String(hadError)}`));
    peer.resetAndDestroy();
    await within(errored, `${kind}: 'error'`);
    await within(closed, `${kind}: 'close'`);
    assert.deepEqual(events, ['error:ECONNRESET', 'close:true'], kind);
  }
});

nativeTest('peer resets while we write: the error reaches the write callbacks and one error event, then close', async (t) => {
  const srv = await listen(t, { pauseOnConnect: true });
  const { s, peer } = await pair(t, srv);
  const errored = new Promise<NodeJS.ErrnoException>((resolve) => s.once('error', resolve));
  const closed = closeOf(s);
  let ok = true;
  const cbErrors: Array<Error | null | undefined> = [];
  for (let i = 0; i < 400 && ok; i++) ok = s.write(randomBytes(256 * 1024), (err) => cbErrors.push(err));
  assert.equal(ok, false);
  peer.resetAndDestroy();
  const err = await within(errored, "'error'");
  assert.ok(err.code === 'ECONNRESET' || err.code === 'EPIPE', `code ${err.code}`);
  await within(closed, "'close'");
  assert.ok(cbErrors.at(-1) instanceof Error, 'the pending write callback got an error');
});

nativeTest('write after destroy: no throw, false, and the callback gets an error; other calls are harmless', async (t) => {
  const srv = await listen(t);
  const { s } = await pair(t, srv);
  s.destroy();
  let result: boolean | undefined;
  const cbErr = new Promise<Error | null | undefined>((resolve) => {
    result = s.write('late', resolve);
  });
  assert.equal(result, false);
  assert.ok((await within(cbErr, 'the write callback')) instanceof Error);
  assert.doesNotThrow(() => {
    s.end();
    s.pause();
    s.resume();
    s.cork();
    s.uncork();
    s.setKeepAlive(true, 1000);
    s.destroySoon();
    s.destroy();
  });
  assert.equal(s.fd, -1);
});

// --- cork ---

nativeTest('cork()/uncork(): the corked writes go out together, in order, with their callbacks after uncork', async (t) => {
  const srv = await listen(t);
  const { s, peer } = await pair(t, srv);
  const atPeer = collect(peer);
  const order: string[] = [];
  s.cork();
  s.write('a|', () => order.push('a'));
  s.write(Buffer.from('b|'), () => order.push('b'));
  s.write('c', () => order.push('c'));
  await pollCycle(await pair(t, srv));
  assert.deepEqual(order, [], 'nothing completes while corked');
  assert.equal(atPeer.bytes(), 0, 'nothing was sent while corked');
  s.uncork();
  const ended = atPeer.done;
  s.end();
  assert.equal((await within(ended, 'the corked bytes at the peer')).toString(), 'a|b|c');
  assert.deepEqual(order, ['a', 'b', 'c']);
});

nativeTest("a corked write's callback does not run on the drain of earlier bytes, before its own were sent", async (t) => {
  const srv = await listen(t, { pauseOnConnect: true });
  const { s, peer } = await pair(t, srv);
  let ok = true;
  for (let i = 0; i < 400 && ok; i++) ok = s.write(randomBytes(256 * 1024));
  assert.equal(ok, false);
  let uncorked = false;
  let ranBeforeUncork = false;
  const tailDone = new Promise<void>((resolve) => {
    s.cork();
    s.write('corked tail', () => {
      if (!uncorked) ranBeforeUncork = true;
      resolve();
    });
  });
  const drained = once(s, 'drain');
  const atPeer = collect(peer);
  peer.resume();
  await within(drained, "'drain' of the earlier bytes");
  assert.equal(ranBeforeUncork, false, 'the corked write reported done before it was sent');
  uncorked = true;
  s.uncork();
  await within(tailDone, 'the corked write callback');
  s.end();
  const got = await within(atPeer.done, 'everything at the peer', 30_000);
  assert.equal(got.subarray(-'corked tail'.length).toString(), 'corked tail');
}, 60_000);

nativeTest('write() while corked says false once the queue is over the high-water mark (as net.Socket)', async (t) => {
  const srv = await listen(t, { pauseOnConnect: true });
  const { s } = await pair(t, srv);
  let ok = true;
  for (let i = 0; i < 400 && ok; i++) ok = s.write(randomBytes(256 * 1024));
  assert.equal(ok, false);
  s.cork();
  assert.equal(s.write(randomBytes(64 * 1024)), false, 'backpressure is still reported while corked');
  s.uncork();
}, 60_000);

nativeTest("a corked write that said false is followed by 'drain' after uncork, also when the kernel took it all at once", async (t) => {
  // forward.ts corks the head and the early body, and pauses the client on false until the upstream's 'drain'
  for (const kind of ['native', 'net'] as const) {
    const srv = await listen(t);
    let s: NativeSocket | net.Socket;
    let peer: net.Socket;
    if (kind === 'native') ({ s, peer } = await pair(t, srv));
    else {
      s = net.connect({ port: srv.port, host: '127.0.0.1' });
      track(t, s);
      await within(once(s, 'connect'), 'net connect');
      peer = await srv.accepted(s.localPort);
      track(t, peer);
    }
    const atPeer = collect(peer);
    const body = randomBytes(64 * 1024);
    s.cork();
    s.write('head|');
    assert.equal(s.write(body), false, `${kind}: a corked write over the high-water mark says false`);
    const drained = once(s, 'drain');
    s.uncork();
    await within(drained, `${kind}: 'drain' after uncork`, 5000);
    s.end();
    assert.equal((await within(atPeer.done, `${kind}: the bytes at the peer`)).length, 'head|'.length + body.length);
  }
});

nativeTest('a write that fails in send() (the peer reset while we were paused) reports the error to its callback, corked or not', async (t) => {
  const srv = await listen(t);
  for (const corked of [false, true]) {
    const { s, peer } = await pair(t, srv);
    // paused with nothing queued, the socket is out of the epoll set: the reset shows only on the next send
    s.pause();
    const errored = new Promise<NodeJS.ErrnoException>((resolve) => s.once('error', resolve));
    const peerClosed = closeOf(peer);
    peer.resetAndDestroy();
    await within(peerClosed, "the peer's reset");
    const result = new Promise<Error | null | undefined>((resolve) => {
      if (corked) s.cork();
      s.write('into a reset connection', resolve);
      if (corked) s.uncork();
    });
    const err = await within(result, `the write callback (corked: ${corked})`);
    assert.ok(err instanceof Error, `corked: ${corked}: the callback got ${String(err)}, not an error`);
    const event = await within(errored, "'error'");
    assert.ok(event.code === 'ECONNRESET' || event.code === 'EPIPE', `code ${event.code}`);
  }
});

// --- fd hygiene ---

type CloseOrder = 'native end' | 'native destroy' | 'peer end' | 'peer destroy';
const ORDERS: CloseOrder[] = ['native end', 'native destroy', 'peer end', 'peer destroy'];

/** ping/pong over one NativeSocket and its net.Socket peer, then closed in `order`; resolves when both are closed. */
async function exchange(s: NativeSocket, peer: net.Socket, order: CloseOrder): Promise<void> {
  const closed = Promise.all([closeOf(s), closeOf(peer)]);
  s.on('error', () => {});
  peer.on('error', () => {});
  const ping = once(peer, 'data');
  s.write('ping');
  assert.equal(String((await within(ping, 'ping'))[0]), 'ping');
  const pong = once(s, 'data');
  peer.write('pong');
  assert.equal(String((await within(pong, 'pong'))[0]), 'pong');
  if (order === 'native end') s.end();
  else if (order === 'native destroy') s.destroy();
  else if (order === 'peer end') peer.end();
  else peer.destroy();
  await within(closed, `both sockets closed (${order})`);
}

nativeTest('fd hygiene: open fds and nativeIoLive() are the same before and after 1000 connect/exchange/close cycles (every close order)', async (t) => {
  // allowHalfOpen false on both ends: a FIN from either side ends the other, so every order closes both
  const srv = await listen(t, { allowHalfOpen: false });
  const one = async (i: number): Promise<void> => {
    const s = mustConnect(srv.port, false);
    await within(once(s, 'connect'), "'connect'");
    const peer = await srv.accepted(s.localPort);
    await exchange(s, peer, ORDERS[i % ORDERS.length]!);
  };
  for (let i = 0; i < 8; i++) await one(i); // warm-up: the epoll fd and libuv's own fds exist from here
  const fds = openFds();
  const live = nativeIoLive();
  const CONCURRENT = 20;
  for (let i = 0; i < 1000; i += CONCURRENT) {
    await Promise.all(Array.from({ length: CONCURRENT }, (_, k) => one(i + k)));
  }
  assert.equal(nativeIoLive(), live, 'native sockets left open');
  assert.equal(openFds(), fds, 'open fds before and after');
}, 120_000);

nativeTest('fd hygiene: open fds and nativeIoLive() are the same before and after 200 adopted sockets (every close order)', async (t) => {
  const adopted = new Map<number, NativeSocket>();
  const waiters = new Map<number, (s: NativeSocket) => void>();
  const srv = await listen(t, {
    pauseOnConnect: true,
    onConnection: (original) => {
      const n = adoptNative(original, { allowHalfOpen: false });
      assert.ok(n !== undefined, 'adoptNative took the socket');
      const port = n.remotePort!;
      const w = waiters.get(port);
      if (w !== undefined) w(n);
      else adopted.set(port, n);
    },
  });
  const one = async (i: number): Promise<void> => {
    const client = net.connect({ port: srv.port, host: '127.0.0.1' });
    await within(once(client, 'connect'), "the client's 'connect'");
    const port = client.localPort!;
    const n = adopted.get(port) ?? (await within(new Promise<NativeSocket>((r) => waiters.set(port, r)), 'the adopted socket'));
    adopted.delete(port);
    waiters.delete(port);
    await exchange(n, client, ORDERS[i % ORDERS.length]!);
  };
  for (let i = 0; i < 8; i++) await one(i);
  const fds = openFds();
  const live = nativeIoLive();
  for (let i = 0; i < 200; i += 10) await Promise.all(Array.from({ length: 10 }, (_, k) => one(i + k)));
  assert.equal(nativeIoLive(), live, 'native sockets left open');
  assert.equal(openFds(), fds, 'open fds before and after');
}, 120_000);

// --- ids reused after a close ---

nativeTest("destroy() from another socket's 'data' in the same batch: no stale event reaches a socket opened right after", async (t) => {
  const srv = await listen(t);
  const target = await listen(t);
  const pairs = { x: await pair(t, srv), y: await pair(t, srv) };
  const late: string[] = [];
  let fresh: NativeSocket | undefined;
  const freshEvents: string[] = [];
  let first: 'x' | 'y' | undefined;
  const done = new Promise<void>((resolve) => {
    for (const name of ['x', 'y'] as const) {
      pairs[name].s.on('data', (c: Buffer) => {
        if (first !== undefined) {
          late.push(`${name}:${c.toString()}`);
          return;
        }
        first = name;
        const other = pairs[name === 'x' ? 'y' : 'x'].s;
        other.on('error', () => {});
        other.destroy();
        // opened in the middle of the batch, right after the close: it must not see the closed socket's events
        fresh = mustConnect(target.port, true);
        track(t, fresh);
        for (const ev of ['data', 'end', 'error', 'drain'] as const) fresh.on(ev, (arg: unknown) => freshEvents.push(`${ev}:${String(arg)}`));
        resolve();
      });
    }
  });
  pairs.x.peer.write('from-x');
  pairs.y.peer.write('from-y');
  await within(done, 'the first data event');
  assert.ok(fresh !== undefined);
  await within(once(fresh, 'connect'), "the new socket's 'connect'");
  const freshPeer = await target.accepted(fresh.localPort);
  track(t, freshPeer);
  // and one opened after the batch (likely the closed socket's id now)
  const after = await pair(t, target);
  const afterEvents: string[] = [];
  after.s.on('data', (c: Buffer) => afterEvents.push(c.toString()));
  const echo = once(fresh, 'data');
  freshPeer.write('fresh-own');
  await within(echo, 'the new socket to get its own bytes');
  await pollCycle(after);
  assert.deepEqual(late, [], 'the destroyed socket got no data after destroy()');
  assert.deepEqual(freshEvents, ['data:fresh-own']);
  assert.deepEqual(afterEvents, ['.']);
});

nativeTest('afterBatch(): runs after the rest of the batch being dispatched, before its nextTicks; refused outside a batch', async (t) => {
  assert.equal(afterBatch(() => assert.fail('run outside a batch')), false, 'no batch is being dispatched here');
  const srv = await listen(t);
  const pairs = [await pair(t, srv), await pair(t, srv)];
  const order: string[] = [];
  let inside: boolean | undefined;
  const done = new Promise<void>((resolve) => {
    for (const { s } of pairs) {
      s.on('data', () => {
        if (order.length > 0) {
          order.push('second data');
          return;
        }
        order.push('first data');
        process.nextTick(() => {
          order.push('nextTick');
          resolve();
        });
        const deferred = afterBatch(() => {
          order.push('after batch');
          inside = afterBatch(() => assert.fail('run by a batch that was over'));
        });
        if (!deferred) order.push('refused');
      });
    }
  });
  // both bytes are in the kernel before the native poll runs again (this thread runs it): one batch
  pairs[0].peer.write('a');
  pairs[1].peer.write('b');
  await within(done, 'the batch and its tick');
  assert.deepEqual(order, ['first data', 'second data', 'after batch', 'nextTick']);
  assert.equal(inside, false, 'once the batch is over, afterBatch says so');
});

// --- one owner instead of listeners (setOwner: the HTTP client connection) ---

/** An owner that records what it is told, in order; `done` resolves on socketClose. */
function recordingOwner(): SocketOwner & { log: string[]; done: Promise<void>; data: Buffer[] } {
  const log: string[] = [];
  const data: Buffer[] = [];
  let closed!: () => void;
  const done = new Promise<void>((resolve) => (closed = resolve));
  return {
    log,
    data,
    done,
    socketData: (chunk) => (data.push(chunk), log.push('data')),
    socketEnd: () => log.push('end'),
    socketDrain: () => log.push('drain'),
    socketError: (err) => log.push(`error:${(err as NodeJS.ErrnoException).code}`),
    socketClose: () => (log.push('close'), closed()),
  };
}

nativeTest('setOwner: data, held data after resume, end and close reach the owner alone (no listener sees data or end); setOwner(null) gives them back', async (t) => {
  const srv = await listen(t);
  const { s, peer } = await pair(t, srv, false); // no half-open: the peer's FIN ends our side too, then close
  const owner = recordingOwner();
  const seenByListeners: string[] = [];
  s.on('data', () => seenByListeners.push('data'));
  s.on('end', () => seenByListeners.push('end'));
  s.setOwner(owner);
  peer.write('one');
  await within(new Promise<void>((resolve) => {
    const poll = (): void => (owner.data.length > 0 ? resolve() : void setImmediate(poll));
    poll();
  }), 'the owner to get the first bytes');
  s.pause();
  const probe = await pair(t, srv);
  peer.write('two');
  await pollCycle(probe); // 'two' is held while paused
  s.resume();
  const closed = closeOf(s);
  peer.end();
  await within(owner.done, "the owner's socketClose");
  assert.equal(await closed, false, "listeners still get 'close'");
  assert.equal(Buffer.concat(owner.data).toString(), 'onetwo');
  assert.deepEqual(owner.log.filter((e, i, a) => e !== 'data' || a[i - 1] !== 'data'), ['data', 'end', 'close'], 'events in order (our side ends with the peer: close)');
  assert.deepEqual(seenByListeners, [], 'no listener saw data or end while the owner held the socket');

  // without an owner, listeners get everything again
  const second = await pair(t, srv);
  const other = recordingOwner();
  second.s.setOwner(other);
  second.s.setOwner(null);
  const got = once(second.s, 'data');
  second.peer.write('x');
  assert.equal(String((await within(got, "a listener's data"))[0]), 'x');
  assert.deepEqual(other.log, []);
});

nativeTest("setDataReceiver: 'data', bytes held while paused included, goes to the receiver alone; an owner comes first; null gives it back to listeners; 'end' stays the listeners'", async (t) => {
  const srv = await listen(t);
  const { s, peer } = await pair(t, srv);
  /** Resolves once `text` is what `into` holds (checked on each arrival: no polling). */
  const arrivals = (into: string[]): { push: (c: Buffer) => void; reach: (text: string) => Promise<void> } => {
    let want = '';
    let reached: () => void = () => {};
    return {
      push: (c) => {
        into.push(c.toString());
        if (into.join('') === want) reached();
      },
      reach: (text) => new Promise<void>((resolve) => {
        want = text;
        reached = resolve;
        if (into.join('') === text) resolve();
      }),
    };
  };
  const received: string[] = [];
  const heard: string[] = [];
  s.on('data', (c: Buffer) => heard.push(`data:${c.toString()}`));
  s.on('end', () => heard.push('end'));
  const r = arrivals(received);
  s.setDataReceiver({ socketData: r.push });
  peer.write('one');
  await within(r.reach('one'), 'the receiver to get the first bytes');
  // bytes held in JS while paused (what a batch read after pause() leaves), delivered on resume
  s.pause();
  s.unshift(Buffer.from('two'));
  s.resume();
  await within(r.reach('onetwo'), 'the held bytes to reach the receiver');
  // an owner takes data before the receiver
  const owned: string[] = [];
  const o = arrivals(owned);
  const owner = recordingOwner();
  s.setOwner({ ...owner, socketData: o.push });
  peer.write('three');
  await within(o.reach('three'), 'the owner to get its bytes');
  s.setOwner(null);
  s.setDataReceiver(null);
  const got = once(s, 'data');
  peer.write('four');
  await within(got, "a listener's data");
  const ended = once(s, 'end');
  peer.end();
  await within(ended, "a listener's end");
  assert.equal(received.join(''), 'onetwo');
  assert.deepEqual(heard, ['data:four', 'end'], 'listeners saw no data while the receiver or the owner had it');
});

nativeTest("setOwner: a reset reaches the owner as socketError then socketClose, and 'error' listeners too when there are any", async (t) => {
  const srv = await listen(t);
  for (const withListener of [false, true]) {
    const { s, peer } = await pair(t, srv);
    const owner = recordingOwner();
    s.setOwner(owner);
    const errors: string[] = [];
    if (withListener) s.on('error', (e: NodeJS.ErrnoException) => errors.push(String(e.code)));
    peer.resetAndDestroy();
    await within(owner.done, 'socketClose after the reset');
    assert.deepEqual(owner.log, ['error:ECONNRESET', 'close']);
    assert.deepEqual(errors, withListener ? ['ECONNRESET'] : [], 'no listener: no unhandled error either');
  }
});

nativeTest('answerPlan: the same response side gets the same plan, in any order (every reload asks again; plans are never freed)', async (t) => {
  const srv = await listen(t);
  await pair(t, srv); // native I/O started
  const a = answerPlan(['connection', 'keep-alive', 'x-secret']);
  assert.ok(a >= 0, 'the addon makes plans');
  assert.equal(answerPlan(['x-secret', 'connection', 'keep-alive']), a, 'same names, another order');
  for (let i = 0; i < 1000; i++) assert.equal(answerPlan(['connection', 'keep-alive', 'x-secret']), a);
  const b = answerPlan(['connection', 'keep-alive']);
  assert.notEqual(b, a, 'another set of names is another plan');
  assert.equal(answerPlan(['keep-alive', 'connection']), b);
});

// --- Unix stream sockets (unix:/path targets) ---

nativeTest('connectNative to a Unix socket: connected at once, no remote address or port (as a node:net pipe), 1 MiB each way, half-close, close; refused, missing, forbidden, full-backlog and bad paths fail at once', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-io-unix-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const at = path.join(dir, 'peer.sock');
  const accepted: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (c) => accepted.push(c));
  server.listen(at);
  await once(server, 'listening');
  t.after(() => {
    for (const c of accepted) c.destroy();
    server.close();
  });
  // a first connection starts the native I/O (its epoll and event fds stay): the baseline is taken after it
  const first = connectNative(at, 0, { allowHalfOpen: false });
  assert.ok(first !== undefined);
  first.destroy();
  await until('the first accepted', () => accepted.length, (n) => n === 1);
  accepted.shift()!.destroy();
  const fds = openFds();
  const s = connectNative(at, 0, { allowHalfOpen: true });
  assert.ok(s !== undefined, 'connectNative gave a socket');
  track(t, s);
  await within(once(s, 'connect'), "'connect'");
  const piped = net.connect({ path: at });
  await within(once(piped, 'connect'), "node:net's 'connect'");
  assert.deepEqual([s.remoteAddress, s.remotePort, s.localAddress, s.localPort], [piped.remoteAddress, piped.remotePort, undefined, undefined]);
  piped.destroy();
  const peer = (await until('the accepted socket', () => accepted[0], (c) => c !== undefined))!;
  const up = randomBytes(MiB);
  const down = randomBytes(MiB);
  const atPeer = collect(peer);
  const atNative = collect(s);
  const closed = closeOf(s);
  s.end(up); // a half-close: the peer reads the FIN and can still answer
  assert.equal(sha(await within(atPeer.done, 'the peer to read 1 MiB and FIN')), sha(up));
  peer.end(down);
  assert.equal(sha(await within(atNative.done, 'the native socket to read 1 MiB and FIN')), sha(down));
  assert.equal(await within(closed, "'close'"), false);
  for (const c of accepted) c.destroy();
  await until('the descriptors back', () => openFds(), (n) => n === fds);

  // failures come back as -errno at once (connectNative then leaves the connect to node:net)
  const connectUnix = (native() as unknown as { ioConnectUnix(p: string): number }).ioConnectUnix;
  assert.equal(connectUnix(path.join(dir, 'missing.sock')), -2, 'ENOENT');
  const bound = path.join(dir, 'bound.sock');
  const script = "import socket,sys\nb=socket.socket(socket.AF_UNIX)\nb.bind(sys.argv[1])\nf=socket.socket(socket.AF_UNIX)\nf.bind(sys.argv[2])\nf.listen(0)\nprint('ready',flush=True)\nsys.stdin.read()";
  const full = path.join(dir, 'full.sock');
  const py = spawn('/usr/bin/python3', ['-c', script, bound, full], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => py.kill('SIGKILL'));
  await within(once(py.stdout!, 'data'), 'the python peer');
  assert.equal(connectUnix(bound), -111, 'ECONNREFUSED: bound, not listening');
  const filler = connectUnix(full); // backlog 0: one connection fills the queue, established (kConnectedNow)
  assert.ok(filler >= 1 << 30, `the filler connected: ${filler}`);
  assert.equal(connectUnix(full), -11, 'EAGAIN: the backlog is full');
  assert.equal(connectNative(full, 0, { allowHalfOpen: false }), undefined);
  (native() as unknown as { ioClose(id: number): void }).ioClose(filler - (1 << 30));
  // connect(2) needs write permission on the socket file: without it EACCES (root has it always, so a process
  // as nobody asks when the test runs as root; the folder is searchable, the socket the server's 0755)
  const addonFile = process.env.PORTICO_NATIVE_ADDON ?? path.resolve('build/Release/portico_native.node');
  chmodSync(dir, 0o755);
  chmodSync(at, 0o755);
  const asked = process.getuid?.() === 0
    ? await new Promise<string>((resolve) => {
        const child = spawn(process.execPath, ['-e', 'const a = require(process.argv[1]); a.ioInit(() => {}); console.log(a.ioConnectUnix(process.argv[2])); process.exit(0)', addonFile, at], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
        child.on('close', () => resolve(out.trim()));
      })
    : String(connectUnix(at));
  assert.equal(asked, '-13', 'EACCES: no write permission on the socket');
  assert.throws(() => connectUnix('relative.sock'), RangeError);
  assert.throws(() => connectUnix(`/${'x'.repeat(107)}`), RangeError);
  assert.throws(() => connectUnix('/a\0b'), RangeError);
  assert.ok(connectUnix(`/${'x'.repeat(106)}`) < 0, 'a path of 107 bytes is tried (ENOENT)');
  py.kill('SIGKILL');
  await once(py, 'close');
  await until('the descriptors back after the failures', () => openFds(), (n) => n === fds);
});
