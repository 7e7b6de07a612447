// The frame boundary tracker behind the Close 1001 at shutdown: it must know where every frame ends whatever
// the read sizes, stop exactly at the end of the frame in progress, and give up (never guess) on a bad length.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRequire } from 'node:module';
import { endsAtOnce, FrameTracker, goingAwayFrame } from '../../src/wire/ws-frames.js';

/** A frame as RFC 6455 §5.2 lays it out (payload of `len` bytes, masked when `mask` is given). */
function frame(opcode: number, len: number, mask?: Buffer): Buffer {
  const ext = len < 126 ? [len] : len < 65536 ? [126, len >> 8, len & 0xff] : [127, 0, 0, 0, Math.floor(len / 2 ** 32), (len >>> 24) & 0xff, (len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff];
  ext[0] |= mask === undefined ? 0 : 0x80;
  return Buffer.concat([Buffer.from([0x80 | opcode, ...ext]), mask ?? Buffer.alloc(0), Buffer.alloc(len, 0x61)]);
}

const MASK = Buffer.from([1, 2, 3, 4]);
// a server's frames (unmasked); the client's direction is the same with every frame masked
const FRAMES = [frame(1, 0), frame(2, 125), frame(2, 126), frame(9, 3), frame(2, 65535), frame(2, 65536), frame(0, 5)];
const STREAM = Buffer.concat(FRAMES);
const ENDS = FRAMES.reduce<number[]>((acc, f) => [...acc, (acc.at(-1) ?? 0) + f.length], []);
const MASKED = Buffer.concat([frame(1, 0, MASK), frame(2, 126, MASK), frame(10, 125, MASK), frame(2, 65536, MASK)]);

test('frame boundaries are found whatever the read sizes: at a boundary exactly after each frame', () => {
  const masked = new FrameTracker(true);
  for (let at = 0; at < MASKED.length; at += 7) masked.feed(MASKED.subarray(at, at + 7));
  assert.equal(masked.atBoundary, true, 'the client direction, masked');
  for (const size of [1, 2, 3, 7, 13, 100, 4096, STREAM.length]) {
    const f = new FrameTracker(false);
    const boundaries: number[] = [];
    for (let at = 0; at < STREAM.length; at++) {
      f.feed(STREAM.subarray(at, at + 1));
      if (f.atBoundary) boundaries.push(at + 1);
      // same state whatever the chunking: re-check with the chunked run below
    }
    assert.deepEqual(boundaries, ENDS, 'byte by byte');
    const g = new FrameTracker(false);
    for (let at = 0; at < STREAM.length; at += size) g.feed(STREAM.subarray(at, at + size));
    assert.equal(g.atBoundary, true, `chunks of ${size}`);
    assert.equal(g.closeSeen, false);
  }
});

test('feedToBoundary stops at the end of the frame in progress, from any split point', () => {
  for (let split = 0; split < STREAM.length; split += 997) {
    const f = new FrameTracker(false);
    f.feed(STREAM.subarray(0, split));
    const n = f.feedToBoundary(STREAM.subarray(split));
    const next = split === 0 || ENDS.includes(split) ? split : ENDS.find((e) => e > split)!;
    assert.equal(split + n, next, `split at ${split}`);
    assert.equal(f.atBoundary, true);
    assert.equal(f.feedToBoundary(STREAM.subarray(split + n)), 0, 'at a boundary: nothing more is taken');
  }
});

test('a Close frame is noticed; a length past 2^53 leaves the tracker broken (no Close is ever injected then)', () => {
  const f = new FrameTracker(false);
  f.feed(Buffer.concat([frame(1, 3), frame(8, 2)]));
  assert.equal(f.closeSeen, true);
  const bad = new FrameTracker(false);
  bad.feed(Buffer.from([0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
  assert.equal(bad.broken, true);
  assert.equal(bad.atBoundary, false);
});

test('a header no endpoint may send leaves the tracker broken, as the addon\'s (frames.h): never guessed as a frame', () => {
  const broken = (masked: boolean, bytes: Buffer): boolean => {
    const f = new FrameTracker(masked);
    f.feed(bytes);
    return f.broken;
  };
  // text that is not frames: "last words" starts with opcode 0xc
  assert.equal(broken(true, Buffer.from('last words')), true);
  assert.equal(broken(false, Buffer.from('hello')), true, 'opcode 8 (Close) without FIN');
  for (const op of [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]) assert.equal(broken(false, Buffer.from([0x80 | op, 0])), true, `opcode ${op}`);
  assert.equal(broken(false, Buffer.from([0x09, 0])), true, 'a fragmented Ping');
  assert.equal(broken(false, Buffer.from([0x88, 126, 0, 126])), true, 'a Close of 126 bytes');
  assert.equal(broken(false, frame(1, 3, MASK)), true, 'a masked frame to a client');
  assert.equal(broken(true, frame(1, 3)), true, 'an unmasked frame to a server');
  // and what endpoints do send stays followed
  assert.equal(broken(false, Buffer.concat([Buffer.from([0x01, 2, 0x61, 0x62, 0x80, 1, 0x63]), frame(9, 125), frame(8, 2)])), false);
  assert.equal(broken(true, MASKED), false);
});

/** ws's own frame parser (not in its type definitions). */
type WsReceiver = new (opts: { isServer: boolean }) => NodeJS.WritableStream & { on(e: 'conclude', f: (code: number) => void): void; on(e: 'error', f: (err: Error) => void): void };
const Receiver = (createRequire(import.meta.url)('ws') as { Receiver: WsReceiver }).Receiver;

test('endsAtOnce: a drop (no Close from the ender) or the closing handshake done ends at once; a Close unanswered or half-way, or no frames, keep half-close', () => {
  const up = (...chunks: Buffer[]) => {
    const f = new FrameTracker(true);
    for (const c of chunks) f.feed(c);
    return f;
  };
  const down = (...chunks: Buffer[]) => {
    const f = new FrameTracker(false);
    for (const c of chunks) f.feed(c);
    return f;
  };
  const close = frame(8, 2);
  // a drop: the ender sent no Close, whatever the other did
  assert.equal(endsAtOnce(up(), down()), true);
  assert.equal(endsAtOnce(up(frame(1, 5, MASK)), down(close)), true);
  // a Close each way, the other's whole: done
  assert.equal(endsAtOnce(up(frame(8, 2, MASK)), down(frame(1, 3), close)), true);
  assert.equal(endsAtOnce(down(close), up(frame(8, 2, MASK))), true);
  // the ender's Close not answered yet, or the answer still half-way: half-close holds
  assert.equal(endsAtOnce(up(frame(8, 2, MASK)), down(frame(1, 3))), false);
  assert.equal(endsAtOnce(up(frame(8, 2, MASK)), down(close.subarray(0, close.length - 1))), false);
  // bytes that are not frames (opcode 0xc): never judged
  assert.equal(endsAtOnce(up(Buffer.from('last words')), down(close)), false);
});

test('the going-away frames are Close 1001 as ws reads them: unmasked to a client, masked to a server', async () => {
  const read = (data: Buffer, isServer: boolean) =>
    new Promise<number>((resolve, reject) => {
      const r = new Receiver({ isServer });
      r.on('conclude', (code: number) => resolve(code));
      r.on('error', reject);
      r.write(data);
    });
  assert.equal(await read(goingAwayFrame(false, Buffer.alloc(0)), false), 1001);
  assert.equal(await read(goingAwayFrame(true, Buffer.from([9, 8, 7, 6])), true), 1001);
});
