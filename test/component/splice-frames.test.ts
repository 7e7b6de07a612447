// The splice relay's WebSocket frame tracking (src/native/frames.h, PumpFramed in relay.cc), driven through the
// addon with real sockets and hand-made frames: at shutdown each direction ends its frame in progress and gets a
// Close 1001 at the boundary (masked to the upstream), headers split anywhere (leftovers of the handshake
// included) are followed, framing it cannot follow is relayed untouched and then cut, and the payload of a big
// frame is spliced through a pipe while small frames never take one. End to end through Portico:
// test/e2e/shutdown.test.ts.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { test, type TestContext } from 'node:test';
import { native } from '../../src/native/addon.js';
import type { ClosedBy } from '../../src/core/socket.js';
import { SpliceTunnel, canSplice, nativeStatus } from '../../src/tunnel/splice.js';
import { acceptors, relayEnds } from '../helpers/acceptor.js';
import { spliceStartFails } from '../helpers/splice-faults.js';
import { wsFrame } from '../helpers/ws-frame.js';

const NO_NATIVE = nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`;

const MASK = Buffer.from([0x11, 0x22, 0x33, 0x44]);

const frame = wsFrame;

interface Frame {
  opcode: number;
  masked: boolean;
  /** Unmasked. */
  payload: Buffer;
}

/** The whole frames of `buf` and how many bytes trail them (an incomplete frame). */
function parseFrames(buf: Buffer): { frames: Frame[]; trailing: number } {
  const frames: Frame[] = [];
  let at = 0;
  for (;;) {
    if (buf.length - at < 2) break;
    const len7 = buf[at + 1] & 0x7f;
    const masked = (buf[at + 1] & 0x80) !== 0;
    let head = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0);
    if (buf.length - at < head) break;
    const len = len7 === 126 ? buf.readUInt16BE(at + 2) : len7 === 127 ? Number(buf.readBigUInt64BE(at + 2)) : len7;
    const mask = masked ? buf.subarray(at + head, at + head + 4) : undefined;
    head += masked ? 4 : 0;
    if (buf.length - at < head + len) break;
    const raw = buf.subarray(at + head, at + head + len);
    frames.push({ opcode: buf[at] & 0x0f, masked, payload: mask === undefined ? Buffer.from(raw) : Buffer.from(raw.map((b, i) => b ^ mask[i % 4])) });
    at += head + len;
  }
  return { frames, trailing: buf.length - at };
}

/** Everything a socket receives, and its FIN. */
function collect(s: net.Socket): { bytes: () => Buffer; length: () => number; ended: Promise<unknown> } {
  const chunks: Buffer[] = [];
  let n = 0;
  s.on('data', (c: Buffer) => {
    chunks.push(c);
    n += c.length;
  });
  return { bytes: () => Buffer.concat(chunks), length: () => n, ended: once(s, 'end') };
}

/** Resolves once `got()` reaches `n` (checked on each of the socket's 'data' events), bounded in time. */
async function received(s: net.Socket, got: () => number, n: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (got() < n) {
    assert.ok(Date.now() < deadline, `received ${got()} of ${n} bytes`);
    await Promise.race([once(s, 'data'), new Promise((r) => setTimeout(r, 100))]);
  }
}

/** A WebSocket splice tunnel between two loopback pairs; the peers are driven by the test. */
async function wsTunnel(
  t: TestContext,
  rest: { client?: Buffer; upstream?: Buffer } = {},
): Promise<{ clientPeer: net.Socket; upstreamPeer: net.Socket; tunnel: SpliceTunnel; closed: Promise<ClosedBy> }> {
  const { front, back } = await acceptors(t);
  const { clientPeer, tunnelClient, tunnelUpstream, upstreamPeer } = await relayEnds(t, front, back);
  assert.ok(canSplice(tunnelClient, tunnelUpstream));
  let tunnel!: SpliceTunnel;
  const closed = new Promise<ClosedBy>((resolve) => {
    tunnel = new SpliceTunnel(tunnelClient, tunnelUpstream, { idle: 0, lifetime: 0 }, (x) => resolve(x.closedBy!), true);
    tunnel.start(rest.client ?? null, rest.upstream ?? null);
  });
  // the hand-over is done once the addon knows the relay
  const deadline = Date.now() + 5_000;
  while (!tunnel.spliced) {
    assert.ok(Date.now() < deadline, 'the tunnel went to the splice relay');
    await new Promise((r) => setImmediate(r));
  }
  return { clientPeer, upstreamPeer, tunnel, closed };
}

/** The Close frame with 1001 the relay must write: unmasked to the client, masked to the upstream. */
function assertGoingAway(f: Frame | undefined, masked: boolean, where: string): void {
  assert.ok(f !== undefined, `${where}: a frame`);
  assert.equal(f.opcode, 8, `${where}: a Close frame`);
  assert.equal(f.masked, masked, `${where}: masked ${masked}`);
  assert.equal(f.payload.readUInt16BE(0), 1001, `${where}: status 1001`);
}

test('going away: each direction ends its frame in progress (header or payload split anywhere), then a Close 1001, masked to the upstream, then FIN', { skip: NO_NATIVE, timeout: 30_000 }, async (t) => {
  const { clientPeer, upstreamPeer, tunnel, closed } = await wsTunnel(t);
  const atClient = collect(clientPeer);
  const atUpstream = collect(upstreamPeer);
  const small = frame(2, Buffer.from('small'));
  const big = frame(2, Buffer.alloc(300 * 1024, 0x5a));
  const after = frame(1, Buffer.from('past the boundary'));
  // down: a small frame, then a 300 KiB frame cut in its payload (bigger than the splice threshold)
  upstreamPeer.write(Buffer.concat([small, big.subarray(0, 100 * 1024)]));
  // up: a frame cut inside its header (2 bytes of 8: the mask key is missing)
  const up = frame(1, Buffer.alloc(200, 0x41), { mask: MASK });
  clientPeer.write(up.subarray(0, 3));
  await received(clientPeer, atClient.length, small.length + 100 * 1024);
  await received(upstreamPeer, atUpstream.length, 3);
  tunnel.shutdown();
  upstreamPeer.write(Buffer.concat([big.subarray(100 * 1024), after]));
  clientPeer.write(Buffer.concat([up.subarray(3), frame(1, Buffer.from('past'), { mask: MASK })]));
  await Promise.all([atClient.ended, atUpstream.ended]);

  const down = parseFrames(atClient.bytes());
  assert.equal(down.trailing, 0, 'the client got whole frames only');
  const last = down.frames.pop();
  assertGoingAway(last, false, 'to the client');
  const relayed = down.frames.map((f) => f.payload.length);
  // what the relay read before the going-away began may include the frame after the big one, never part of it
  assert.ok(relayed.length >= 2 && relayed.length <= 3, `frames relayed: ${relayed.join(', ')}`);
  assert.deepEqual(relayed.slice(0, 2), [5, 300 * 1024]);
  assert.ok(down.frames[1].payload.equals(Buffer.alloc(300 * 1024, 0x5a)), 'the big frame whole');

  const upward = parseFrames(atUpstream.bytes());
  assert.equal(upward.trailing, 0, 'the upstream got whole frames only');
  assertGoingAway(upward.frames.pop(), true, 'to the upstream');
  assert.ok(upward.frames.length >= 1 && upward.frames[0].payload.equals(Buffer.alloc(200, 0x41)), 'the frame begun before the going-away, whole');

  clientPeer.end();
  upstreamPeer.end();
  assert.equal(await closed, 'shutdown');
});

test('going away: a frame unfinished after 0.5 s gets no Close (its peer sees the FIN mid-frame); the other direction still gets its Close 1001', { skip: NO_NATIVE, timeout: 30_000 }, async (t) => {
  const { clientPeer, upstreamPeer, tunnel, closed } = await wsTunnel(t);
  const atClient = collect(clientPeer);
  const atUpstream = collect(upstreamPeer);
  const stuck = frame(2, Buffer.alloc(1000, 1)).subarray(0, 14);
  upstreamPeer.write(stuck);
  await received(clientPeer, atClient.length, stuck.length);
  const started = Date.now();
  tunnel.shutdown();
  await Promise.all([atClient.ended, atUpstream.ended]);
  assert.ok(Date.now() - started >= 450, 'the frame was given its time to end');
  assert.ok(atClient.bytes().equals(stuck), 'the client got the unfinished frame and a FIN, no Close after it');
  const upward = parseFrames(atUpstream.bytes());
  assert.equal(upward.frames.length, 1);
  assertGoingAway(upward.frames[0], true, 'to the upstream');
  clientPeer.end();
  upstreamPeer.end();
  assert.equal(await closed, 'shutdown');
});

test('the leftovers of the handshake (a frame begun there, a header split there) are followed: the Close still lands between two frames', { skip: NO_NATIVE, timeout: 30_000 }, async (t) => {
  // the client's first frame starts in the leftovers and its payload would read as an (unmasked) header
  const upFrame = frame(2, Buffer.from([0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 9]), { mask: Buffer.alloc(4) });
  const downFrame = frame(1, Buffer.alloc(70_000, 0x42));
  const { clientPeer, upstreamPeer, tunnel, closed } = await wsTunnel(t, { client: upFrame.subarray(0, 8), upstream: downFrame.subarray(0, 1) });
  const atClient = collect(clientPeer);
  const atUpstream = collect(upstreamPeer);
  clientPeer.write(upFrame.subarray(8));
  upstreamPeer.write(downFrame.subarray(1));
  await received(upstreamPeer, atUpstream.length, upFrame.length);
  await received(clientPeer, atClient.length, downFrame.length);
  tunnel.shutdown();
  await Promise.all([atClient.ended, atUpstream.ended]);
  const down = parseFrames(atClient.bytes());
  assert.equal(down.frames.length, 2);
  assert.ok(down.frames[0].payload.equals(Buffer.alloc(70_000, 0x42)));
  assertGoingAway(down.frames[1], false, 'to the client');
  const upward = parseFrames(atUpstream.bytes());
  assert.equal(upward.frames.length, 2);
  assertGoingAway(upward.frames[1], true, 'to the upstream');
  clientPeer.end();
  upstreamPeer.end();
  assert.equal(await closed, 'shutdown');
});

for (const [what, bad, from] of [
  ['a reserved opcode', frame(3, Buffer.from('x')), 'upstream'],
  ['a fragmented control frame', frame(9, Buffer.from('x'), { fin: false }), 'upstream'],
  ['an unmasked frame from the client', frame(2, Buffer.from('x')), 'client'],
  ['a masked frame from the server', frame(2, Buffer.from('x'), { mask: MASK }), 'upstream'],
] as const) {
  test(`framing the relay cannot follow (${what}) is relayed untouched, and shutdown then closes without a Close frame`, { skip: NO_NATIVE, timeout: 30_000 }, async (t) => {
    const { clientPeer, upstreamPeer, tunnel, closed } = await wsTunnel(t);
    const [src, dst] = from === 'client' ? [clientPeer, upstreamPeer] : [upstreamPeer, clientPeer];
    const atDst = collect(dst);
    const atSrc = collect(src);
    const bytes = Buffer.concat([bad, Buffer.from('and then anything at all')]);
    src.write(bytes);
    await received(dst, atDst.length, bytes.length);
    tunnel.shutdown();
    assert.equal(await closed, 'shutdown');
    await Promise.all([atDst.ended, atSrc.ended]);
    assert.ok(atDst.bytes().equals(bytes), 'relayed as it came, nothing added');
    assert.equal(atSrc.length(), 0, 'no Close frame the other way either: the tunnel was cut');
  });
}

test('a big frame\'s payload is spliced through a pipe; small frames never take one (they pass through the relay\'s buffer)', { skip: NO_NATIVE, timeout: 60_000 }, async (t) => {
  const addon = native()!;
  const inUseBefore = addon.pipeStats().inUse;
  for (const [what, frames, piped] of [
    ['100-byte frames', Buffer.concat(Array.from({ length: 8192 }, () => frame(2, Buffer.alloc(100, 3)))), false],
    ['one 8 MiB frame', frame(2, Buffer.alloc(8 << 20, 4)), true],
  ] as const) {
    const { clientPeer, upstreamPeer, tunnel } = await wsTunnel(t);
    clientPeer.pause();
    // a stalled reader: the relay holds what the destination does not take, in a pipe or in its buffer
    const times = piped ? 1 : 8;
    const total = frames.length * times;
    for (let i = 0; i < times; i++) upstreamPeer.write(frames);
    const deadline = Date.now() + 10_000;
    while (!tunnel.blocked.down) {
      assert.ok(Date.now() < deadline, `${what}: the relay blocked on the stalled reader`);
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(addon.pipeStats().inUse - inUseBefore, piped ? 1 : 0, `${what}: ${piped ? 'one pipe holds the payload' : 'no pipe'}`);
    const atClient = collect(clientPeer);
    clientPeer.resume();
    await received(clientPeer, atClient.length, total, 30_000);
    const got = parseFrames(atClient.bytes());
    assert.equal(got.trailing, 0);
    assert.equal(got.frames.length, piped ? 1 : 8192 * times, `${what}: every frame whole`);
    tunnel.close('shutdown');
  }
});

test('a WebSocket tunnel that falls back to the JS relay (the relay could not start) still closes with Close 1001, its trackers fed the leftovers', { skip: NO_NATIVE, timeout: 30_000 }, async (t) => {
  spliceStartFails(t);
  const upFrame = frame(2, Buffer.from([0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 9]), { mask: Buffer.alloc(4) });
  const downFrame = frame(1, Buffer.alloc(70_000, 0x42));
  const { front, back } = await acceptors(t);
  const { clientPeer, tunnelClient, tunnelUpstream, upstreamPeer } = await relayEnds(t, front, back);
  let tunnel!: SpliceTunnel;
  const closed = new Promise<ClosedBy>((resolve) => {
    tunnel = new SpliceTunnel(tunnelClient, tunnelUpstream, { idle: 0, lifetime: 0 }, (x) => resolve(x.closedBy!), true);
    tunnel.start(upFrame.subarray(0, 8), downFrame.subarray(0, 1));
  });
  const atClient = collect(clientPeer);
  const atUpstream = collect(upstreamPeer);
  clientPeer.write(upFrame.subarray(8));
  upstreamPeer.write(downFrame.subarray(1));
  await received(upstreamPeer, atUpstream.length, upFrame.length);
  await received(clientPeer, atClient.length, downFrame.length);
  assert.equal(tunnel.spliced, false, 'on the JS relay');
  tunnel.shutdown();
  await Promise.all([atClient.ended, atUpstream.ended]);
  const down = parseFrames(atClient.bytes());
  assert.equal(down.frames.length, 2);
  assertGoingAway(down.frames[1], false, 'to the client');
  const upward = parseFrames(atUpstream.bytes());
  assert.equal(upward.frames.length, 2);
  assertGoingAway(upward.frames[1], true, 'to the upstream');
  clientPeer.end();
  upstreamPeer.end();
  assert.equal(await closed, 'shutdown');
});
