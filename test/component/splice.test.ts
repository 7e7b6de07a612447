// The splice relay's resources, driven directly: 1000 splice tunnels leave no fd behind, idle tunnels hold no
// pipe, the pipe cap falls back to copying, queued bytes go first, a relay that cannot start falls back to
// the JS relay, and two native sockets go over by id (spliceTakeIo) without losing a byte of the batch. Relay behaviour itself is covered by relay.test.ts over both relays; the listening side of the
// addon (SO_REUSEPORT workers, PORTICO_NATIVE=0) end to end is test/e2e/reuse-port.test.ts.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { readdirSync, readlinkSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import { native } from '../../src/native/addon.js';
import type { ClosedBy } from '../../src/core/socket.js';
import { SpliceTunnel, canSplice, nativeStatus } from '../../src/tunnel/splice.js';
import { adoptNative, nativeIoAvailable, nativeIoLive, type NativeSocket } from '../../src/native/io.js';
import { Acceptor, acceptors, relayEnds } from '../helpers/acceptor.js';
import { spliceStartFails } from '../helpers/splice-faults.js';

const NO_NATIVE = nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`;

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Open fds not counting the relay's free pipes (kept for reuse, two fds each). */
function fdsBesidesFreePipes(): number {
  const p = native()?.pipeStats();
  return openFds() - 2 * ((p?.open ?? 0) - (p?.inUse ?? 0));
}

/** One tunnel: the client says hello and ends, the upstream echoes it and ends; resolves once all is closed. */
async function oneTunnel(front: Acceptor, back: Acceptor): Promise<ClosedBy> {
  const [clientPeer, tunnelClient] = await front.pair();
  const [tunnelUpstream, upstreamPeer] = await back.pair();
  assert.ok(canSplice(tunnelClient, tunnelUpstream));
  const closed = new Promise<ClosedBy>((resolve) => {
    new SpliceTunnel(tunnelClient, tunnelUpstream, { idle: 0, lifetime: 0 }, (tunnel) => resolve(tunnel.closedBy!)).start(null, null);
  });
  upstreamPeer.on('data', (c: Buffer) => upstreamPeer.write(c));
  upstreamPeer.on('end', () => upstreamPeer.end());
  const echoed: Buffer[] = [];
  clientPeer.on('data', (c: Buffer) => echoed.push(c));
  const peersClosed = Promise.all([once(clientPeer, 'close'), once(upstreamPeer, 'close')]);
  clientPeer.on('end', () => clientPeer.end());
  clientPeer.write('hello');
  clientPeer.end();
  const by = await closed;
  await peersClosed;
  assert.equal(Buffer.concat(echoed).toString(), 'hello');
  return by;
}

test('1000 splice tunnels opened and closed leave the number of open fds unchanged', { skip: NO_NATIVE, timeout: 120_000 }, async (t) => {
  const { front, back } = await acceptors(t);
  // the first tunnel starts the relay thread (its epoll and wake-up fds live as long as the process)
  await oneTunnel(front, back);
  const before = fdsBesidesFreePipes();
  const reasons = new Map<ClosedBy, number>();
  for (let batch = 0; batch < 20; batch++) {
    const ends = await Promise.all(Array.from({ length: 50 }, () => oneTunnel(front, back)));
    for (const by of ends) reasons.set(by, (reasons.get(by) ?? 0) + 1);
  }
  assert.equal(fdsBesidesFreePipes(), before, 'every socket and pipe fd of 1000 tunnels is closed (or back in the pool)');
  assert.equal(native()?.status().active, 0);
  assert.equal(native()?.pipeStats().inUse, 0, 'every pipe is back in the pool, empty');
  assert.equal((reasons.get('client') ?? 0) + (reasons.get('upstream') ?? 0), 1000, `orderly closes: ${JSON.stringify([...reasons])}`);
});

/** Opens a tunnel whose peers echo nothing; the caller drives the bytes. */
async function rawTunnel(front: Acceptor, back: Acceptor): Promise<{ clientPeer: net.Socket; upstreamPeer: net.Socket; closed: Promise<ClosedBy>; tunnel: SpliceTunnel }> {
  const [clientPeer, tunnelClient] = await front.pair();
  const [tunnelUpstream, upstreamPeer] = await back.pair();
  assert.ok(canSplice(tunnelClient, tunnelUpstream));
  let tunnel!: SpliceTunnel;
  const closed = new Promise<ClosedBy>((resolve) => {
    tunnel = new SpliceTunnel(tunnelClient, tunnelUpstream, { idle: 0, lifetime: 0 }, (x) => resolve(x.closedBy!));
    tunnel.start(null, null);
  });
  return { clientPeer, upstreamPeer, closed, tunnel };
}

test('idle splice tunnels hold their two sockets only: pipes come from the pool while bytes move and go back empty', { skip: NO_NATIVE, timeout: 60_000 }, async (t) => {
  const addon = native()!;
  const { front, back } = await acceptors(t);
  await oneTunnel(front, back); // starts the relay thread
  const N = 200;
  const before = fdsBesidesFreePipes();
  const tunnels = [];
  for (let i = 0; i < N; i++) tunnels.push(await rawTunnel(front, back));
  // every tunnel carries a message each way, then sits idle
  await Promise.all(
    tunnels.map(async ({ clientPeer, upstreamPeer }, i) => {
      const up = once(upstreamPeer, 'data');
      clientPeer.write(`up ${i}`);
      assert.equal(String((await up)[0]), `up ${i}`);
      const down = once(clientPeer, 'data');
      upstreamPeer.write(`down ${i}`);
      assert.equal(String((await down)[0]), `down ${i}`);
    }),
  );
  assert.equal(addon.status().active, N);
  assert.equal(addon.pipeStats().inUse, 0, 'no idle tunnel holds a pipe');
  // per tunnel in this process: the relay's 2 socket fds + the test's 2 peer sockets = 4, and no pipe
  assert.equal(fdsBesidesFreePipes() - before, 4 * N, 'an idle tunnel costs its two sockets (plus the two test peers)');
  assert.ok(addon.pipeStats().open <= addon.pipeStats().cap);
  // a destination that does not read keeps its pipe (bytes in it) until it is drained
  const slow = tunnels[0];
  slow.clientPeer.pause();
  const blob = Buffer.alloc(8 << 20, 7);
  slow.upstreamPeer.write(blob);
  while (!slow.tunnel.blocked.down) await new Promise((r) => setImmediate(r));
  assert.ok(addon.pipeStats().inUse >= 1, 'the blocked direction holds a pipe');
  let got = 0;
  const drained = new Promise<void>((resolve) => slow.clientPeer.on('data', (c: Buffer) => (got += c.length) >= blob.length && resolve()));
  slow.clientPeer.resume();
  await drained;
  for (const { clientPeer, upstreamPeer } of tunnels) {
    clientPeer.end();
    upstreamPeer.end();
    clientPeer.on('end', () => clientPeer.end());
  }
  await Promise.all(tunnels.map((x) => x.closed));
  await Promise.all(tunnels.flatMap((x) => [x.clientPeer, x.upstreamPeer].map((s) => (s.destroyed ? null : once(s, 'close')))));
  assert.equal(addon.pipeStats().inUse, 0);
  assert.equal(fdsBesidesFreePipes(), before, 'fds back to the baseline');
});

test('at the pipe cap a tunnel copies through a small buffer: nothing refused, every byte arrives', { skip: NO_NATIVE, timeout: 60_000 }, async (t) => {
  const addon = native()!;
  const cap = addon.pipeStats().cap;
  addon.setPipeCap(0);
  t.after(() => addon.setPipeCap(cap));
  const { front, back } = await acceptors(t);
  const copiesBefore = addon.pipeStats().copies;
  const x = await rawTunnel(front, back);
  const blob = Buffer.alloc(4 << 20);
  for (let i = 0; i < blob.length; i++) blob[i] = i * 31;
  const chunks: Buffer[] = [];
  x.upstreamPeer.on('data', (c: Buffer) => chunks.push(c));
  const upEnd = once(x.upstreamPeer, 'end');
  x.clientPeer.end(blob);
  await upEnd;
  assert.ok(Buffer.concat(chunks).equals(blob), '4 MiB through the copy path, intact');
  assert.ok(addon.pipeStats().copies > copiesBefore, 'the copy path was used');
  assert.equal(addon.pipeStats().open, 0, 'no pipe exists at cap 0');
  x.upstreamPeer.end();
  assert.equal(await x.closed, 'upstream');
});

test('bytes the owner queued before start() (and the leftovers) reach the peer before any spliced byte', { skip: NO_NATIVE, timeout: 30_000 }, async (t) => {
  const { front, back } = await acceptors(t);
  const { clientPeer, tunnelClient, tunnelUpstream, upstreamPeer } = await relayEnds(t, front, back);
  // 8 MiB the owner wrote (a replayed head, say) is still queued in Node when the tunnel starts
  const queued = Buffer.alloc(8 * 1024 * 1024, 0x61);
  tunnelUpstream.write(queued);
  assert.ok(tunnelUpstream.writableLength > 0, 'the write is still queued in Node');
  const closed = new Promise<SpliceTunnel>((resolve) => {
    new SpliceTunnel(tunnelClient, tunnelUpstream, { idle: 0, lifetime: 0 }, resolve).start(Buffer.from('rest|'), null);
  });
  const chunks: Buffer[] = [];
  upstreamPeer.on('data', (c: Buffer) => chunks.push(c));
  const upEnded = once(upstreamPeer, 'end');
  clientPeer.end('spliced');
  await upEnded;
  const got = Buffer.concat(chunks);
  assert.equal(got.length, queued.length + 'rest|spliced'.length);
  assert.ok(got.subarray(0, queued.length).equals(queued));
  assert.equal(got.subarray(queued.length).toString(), 'rest|spliced');
  upstreamPeer.end();
  const tunnel = await closed;
  assert.equal(tunnel.closedBy, 'upstream');
  assert.equal(tunnel.bytesUp, 'rest|spliced'.length, 'the owner\'s own writes are not the tunnel\'s bytes');
  assert.equal(tunnel.spliced, true, 'the bytes went through the addon, and the tunnel still says so after it closed');
});

test('a relay that cannot start (EMFILE, say) falls back to the JS relay on the untouched sockets', { skip: NO_NATIVE, timeout: 30_000 }, async (t) => {
  spliceStartFails(t);
  const { front, back } = await acceptors(t);
  const before = openFds();
  const [clientPeer, tunnelClient] = await front.pair();
  const [tunnelUpstream, upstreamPeer] = await back.pair();
  let onClose!: () => void;
  const closed = new Promise<void>((resolve) => (onClose = resolve));
  const tunnel = new SpliceTunnel(tunnelClient, tunnelUpstream, { idle: 0, lifetime: 0 }, () => onClose());
  tunnel.start(null, null);
  upstreamPeer.on('data', (c: Buffer) => upstreamPeer.write(c));
  upstreamPeer.on('end', () => upstreamPeer.end());
  const echoed: Buffer[] = [];
  clientPeer.on('data', (c: Buffer) => echoed.push(c));
  const ended = once(clientPeer, 'end');
  clientPeer.end('still relayed');
  await ended;
  assert.equal(Buffer.concat(echoed).toString(), 'still relayed');
  assert.equal(tunnel.spliced, false);
  assert.equal(tunnel.bytesUp, 'still relayed'.length);
  await closed;
  for (const s of [clientPeer, upstreamPeer]) s.destroy();
  await Promise.all([clientPeer, upstreamPeer, tunnelClient, tunnelUpstream].map((s) => (s.closed ? undefined : once(s, 'close'))));
  assert.equal(openFds(), before, 'the dups were closed, the sockets too');
});

// --- two native sockets: the hand-over by id (spliceTakeIo) ---

const NO_NATIVE_IO = NO_NATIVE ?? (nativeIoAvailable() && native()?.spliceTakeIo !== undefined ? undefined : 'native I/O (or spliceTakeIo) not in this build');

/** A NativeSocket (the accepted side, adopted) and the net.Socket peer it is connected to; both destroyed at the end. */
async function nativeEnd(t: TestContext, on: Acceptor): Promise<{ peer: net.Socket; s: NativeSocket }> {
  const [peer, accepted] = await on.pair();
  const s = adoptNative(accepted, { allowHalfOpen: true });
  assert.ok(s !== undefined, 'adopted');
  t.after(() => {
    peer.destroy();
    s.destroy();
  });
  return { peer, s };
}

test('two native sockets with nothing waiting go to the splice relay within start(), by id: bytes and FINs both ways, no fd left', { skip: NO_NATIVE_IO, timeout: 30_000 }, async (t) => {
  const { front, back } = await acceptors(t);
  await oneTunnel(front, back); // starts the relay thread
  const before = fdsBesidesFreePipes();
  const client = await nativeEnd(t, front);
  const upstream = await nativeEnd(t, back);
  const live = nativeIoLive();
  const sockets = [client.s, upstream.s].map((s) => ({ fd: s.fd, inode: readlinkSync(`/proc/self/fd/${s.fd}`) }));
  let tunnel!: SpliceTunnel;
  const closed = new Promise<ClosedBy>((resolve) => {
    tunnel = new SpliceTunnel(client.s, upstream.s, { idle: 0, lifetime: 0 }, (x) => resolve(x.closedBy!));
    tunnel.start(null, null);
  });
  // no write to wait for, no tick: the relay has both connections when start() returns
  assert.equal(tunnel.spliced, true, 'on the relay thread within start()');
  assert.equal(client.s.destroyed && upstream.s.destroyed, true, 'the JS sockets are done');
  assert.equal(nativeIoLive(), live - 2, 'both connections left the native I/O');
  for (const { fd, inode } of sockets) {
    // a dup would have a new number, and the native I/O would have closed this one
    assert.equal(readlinkSync(`/proc/self/fd/${fd}`), inode, `fd ${fd} is still open, the same socket: the relay holds it, no dup`);
  }
  upstream.peer.on('data', (c: Buffer) => upstream.peer.write(c));
  const atClient = collectAll(client.peer);
  const upEnded = once(upstream.peer, 'end');
  client.peer.end('hello through the relay');
  await upEnded;
  upstream.peer.end('and back');
  assert.equal((await atClient).toString(), 'hello through the relayand back');
  assert.equal(await closed, 'upstream');
  assert.equal(tunnel.bytesUp, 'hello through the relay'.length);
  await Promise.all([client.peer, upstream.peer].map((s) => (s.closed ? undefined : once(s, 'close'))));
  assert.equal(fdsBesidesFreePipes(), before, 'the relay closed the fds it was given: no dup, no leak');
});

test("a client chunk the addon read in the same batch as the upstream's answer still reaches the upstream (the hand-over waits for it)", { skip: NO_NATIVE_IO, timeout: 30_000 }, async (t) => {
  const { front, back } = await acceptors(t);
  await oneTunnel(front, back);
  const ends = { x: await nativeEnd(t, front), y: await nativeEnd(t, back) };
  // Both peers send at once: the addon reads both chunks in one batch. Whichever is dispatched first plays the
  // upstream's 101 (its handler starts the tunnel at once, as Portico does); the other one, still later in the
  // same batch, is the client's first bytes behind its handshake.
  const started = new Promise<{ clientPeer: net.Socket; upstreamPeer: net.Socket; tunnel: SpliceTunnel; closed: Promise<ClosedBy>; late: string }>((resolve) => {
    let done = false;
    for (const [name, otherName] of [['x', 'y'], ['y', 'x']] as const) {
      ends[name].s.on('data', () => {
        if (done) return;
        done = true;
        const me = ends[name];
        const other = ends[otherName];
        me.s.removeAllListeners('data');
        other.s.removeAllListeners('data');
        let tunnel!: SpliceTunnel;
        const closed = new Promise<ClosedBy>((r) => {
          tunnel = new SpliceTunnel(other.s, me.s, { idle: 0, lifetime: 0 }, (x) => r(x.closedBy!));
          tunnel.start(null, null);
        });
        resolve({ clientPeer: other.peer, upstreamPeer: me.peer, tunnel, closed, late: `${otherName}-first-bytes` });
      });
    }
  });
  ends.x.peer.write('x-first-bytes');
  ends.y.peer.write('y-first-bytes');
  const { clientPeer, upstreamPeer, tunnel, closed, late } = await started;
  const atUpstream = collectAll(upstreamPeer);
  clientPeer.end();
  upstreamPeer.on('end', () => upstreamPeer.end());
  assert.equal((await atUpstream).toString(), late, 'the chunk read in the same batch went to the upstream, before the FIN');
  assert.equal(await closed, 'upstream');
  assert.equal(tunnel.spliced, true);
  assert.equal(tunnel.bytesUp, late.length);
});

test('spliceTakeIo takes nothing when one connection still has bytes queued: both stay with the native I/O as they were', { skip: NO_NATIVE_IO, timeout: 30_000 }, async (t) => {
  const addon = native()!;
  const { front, back } = await acceptors(t);
  const a = await nativeEnd(t, front);
  const b = await nativeEnd(t, back);
  // b's peer does not read: what b writes stays queued in the addon
  b.peer.pause();
  let written = 0;
  for (let i = 0; i < 256 && b.s.writableLength === 0; i++) {
    b.s.write(Buffer.alloc(1 << 20, 1));
    written += 1 << 20;
  }
  assert.ok(b.s.writableLength > 0, 'bytes queued natively');
  const noRelay = (): void => assert.fail('no relay was started');
  assert.equal(addon.spliceTakeIo!(a.s.ioId, b.s.ioId, 0, 60, noRelay), 0, 'refused: b has bytes queued');
  assert.equal(addon.spliceTakeIo!(b.s.ioId, a.s.ioId, 0, 60, noRelay), 0, 'refused the other way round');
  assert.equal(addon.spliceTakeIo!(a.s.ioId, a.s.ioId, 0, 60, noRelay), 0, 'one connection twice');
  // a was out of the epoll set while b was asked: it is back, reading
  const got = once(a.s, 'data');
  a.peer.write('still read');
  assert.equal(String((await got)[0]), 'still read');
  // b's queue still drains, every byte
  let drained = 0;
  const all = new Promise<void>((resolve) => b.peer.on('data', (c: Buffer) => (drained += c.length) >= written && resolve()));
  b.peer.resume();
  await all;
  assert.equal(drained, written);
});

/** Every byte `s` delivers until its 'end'. */
function collectAll(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return once(s, 'end').then(() => Buffer.concat(chunks));
}
