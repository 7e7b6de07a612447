// Property tests of the backend leg's FrameReader (src/wire/ws-codec.ts) with fast-check, under a time budget:
// never throws on any bytes, split delivery equals whole delivery, the message limit holds (no message event
// over it, buffered bytes bounded by limit + one frame header + the tail of one chunk), nothing after an end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FrameReader, type WsEvent } from '../../src/wire/ws-codec.js';

const BUDGET_MS = 700;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

/** A frame with an arbitrary first byte and a length that matches (or not) what follows. */
const frameArb = fc.record({ b0: fc.integer({ min: 0, max: 255 }), masked: fc.boolean(), payload: fc.uint8Array({ maxLength: 300 }), lie: fc.integer({ min: -3, max: 3 }) }).map(({ b0, masked, payload, lie }) => {
  const len = Math.max(0, payload.length + lie);
  const hdr = len < 126 ? [b0, (masked ? 0x80 : 0) | len] : [b0, (masked ? 0x80 : 0) | 126, len >> 8, len & 255];
  return Buffer.concat([Buffer.from(hdr), Buffer.from(payload)]);
});
const streamArb = fc.oneof(fc.array(frameArb, { maxLength: 6 }).map((fs) => Buffer.concat(fs)), fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)));

function run(bytes: Buffer, max: number, cuts: number[]): WsEvent[] {
  const r = new FrameReader(max);
  const out: WsEvent[] = [];
  let at = 0;
  for (const c of [...cuts.filter((x) => x > 0 && x < bytes.length).sort((a, b) => a - b), bytes.length]) {
    out.push(...r.push(bytes.subarray(at, c)));
    at = c;
    assert.ok(r.buffered <= max + bytes.length, 'buffered bytes stay bounded');
  }
  return out;
}

test('FrameReader: never throws; split delivery equals whole delivery; limit and end hold', () => {
  fc.assert(
    fc.property(streamArb, fc.integer({ min: 1, max: 400 }), fc.array(fc.integer({ min: 0, max: 600 }), { maxLength: 8 }), (bytes, max, cuts) => {
      const whole = run(bytes, max, []);
      assert.deepEqual(run(bytes, max, cuts), whole);
      const ends = whole.findIndex((e) => e.kind === 'error' || e.kind === 'close');
      assert.ok(ends === -1 || ends === whole.length - 1, 'nothing after an error or a close');
      for (const e of whole) if (e.kind === 'message') assert.ok(e.data.length <= max);
    }),
    opts,
  );
});
