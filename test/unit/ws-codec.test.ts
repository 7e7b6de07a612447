// The backend leg's frame reader and encoder (src/wire/ws-codec.ts): unmasked server frames read whole or split,
// fragments reassembled, control frames between fragments, the message limit (1009), protocol errors (1002,
// 1007), and masked client frames that a real peer (`ws`'s Receiver, acting as a server) reads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameReader, OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, encodeClose, encodeFrame, type WsEvent } from '../../src/wire/ws-codec.js';

/** An unmasked frame as a server sends it. */
function serverFrame(op: number, payload: Buffer, fin = true): Buffer {
  const len = payload.length;
  const hdr = len < 126 ? Buffer.from([(fin ? 0x80 : 0) | op, len]) : len < 65536 ? Buffer.from([(fin ? 0x80 : 0) | op, 126, len >> 8, len & 255]) : Buffer.alloc(10);
  if (len >= 65536) {
    hdr[0] = (fin ? 0x80 : 0) | op;
    hdr[1] = 127;
    hdr.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    hdr.writeUInt32BE(len >>> 0, 6);
  }
  return Buffer.concat([hdr, payload]);
}

function readAll(bytes: Buffer, max = 1 << 20, step = bytes.length): WsEvent[] {
  const r = new FrameReader(max);
  const out: WsEvent[] = [];
  for (let i = 0; i < bytes.length; i += step) out.push(...r.push(bytes.subarray(i, i + step)));
  return out;
}

/** Unmasks a client frame (the reverse of encodeFrame) for checking. */
function unmask(frame: Buffer): { fin: boolean; op: number; payload: Buffer } {
  const fin = (frame[0] & 0x80) !== 0;
  const op = frame[0] & 0x0f;
  assert.ok((frame[1] & 0x80) !== 0, 'client frames are masked');
  let len = frame[1] & 0x7f;
  let at = 2;
  if (len === 126) {
    len = frame.readUInt16BE(2);
    at = 4;
  } else if (len === 127) {
    len = frame.readUInt32BE(2) * 2 ** 32 + frame.readUInt32BE(6);
    at = 10;
  }
  const mask = frame.subarray(at, at + 4);
  const payload = Buffer.from(frame.subarray(at + 4, at + 4 + len));
  for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
  assert.equal(frame.length, at + 4 + len);
  return { fin, op, payload };
}

test('text and binary messages, whole and split at every offset, give the same events', () => {
  const bytes = Buffer.concat([serverFrame(OP_TEXT, Buffer.from('héllo')), serverFrame(OP_BINARY, Buffer.alloc(300, 9)), serverFrame(OP_TEXT, Buffer.alloc(70_000, 97))]);
  const whole = readAll(bytes);
  assert.deepEqual(
    whole.map((e) => (e.kind === 'message' ? [e.binary, e.data.length] : e.kind)),
    [
      [false, 6],
      [true, 300],
      [false, 70_000],
    ],
  );
  for (const step of [1, 2, 3, 7, 125, 4096]) assert.deepEqual(readAll(bytes, 1 << 20, step), whole, `split every ${step} bytes`);
});

test('fragments are reassembled; a ping between fragments is reported in order', () => {
  const bytes = Buffer.concat([serverFrame(OP_TEXT, Buffer.from('ab'), false), serverFrame(OP_PING, Buffer.from('p')), serverFrame(0, Buffer.from('cd'), false), serverFrame(0, Buffer.from('e'), true)]);
  const ev = readAll(bytes);
  assert.equal(ev.length, 2);
  assert.deepEqual(ev[0], { kind: 'ping', data: Buffer.from('p') });
  assert.equal(ev[1].kind, 'message');
  assert.equal(ev[1].kind === 'message' && ev[1].data.toString(), 'abcde');
});

test('a message over the limit, whole or in fragments, is error 1009', () => {
  assert.deepEqual(readAll(serverFrame(OP_BINARY, Buffer.alloc(101)), 100).map((e) => e.kind === 'error' && e.code), [1009]);
  const frags = Buffer.concat([serverFrame(OP_BINARY, Buffer.alloc(60), false), serverFrame(0, Buffer.alloc(60), true)]);
  assert.deepEqual(readAll(frags, 100).map((e) => e.kind === 'error' && e.code), [1009]);
  // the limit is checked from the header: nothing of a huge frame is buffered
  const r = new FrameReader(100);
  const ev = r.push(Buffer.from([0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]));
  assert.equal(ev[0].kind === 'error' && ev[0].code, 1009);
  assert.equal(r.buffered, 0);
});

test('protocol errors: masked server frame, reserved bits, bad opcode, bad continuation, long control frame, bad close', () => {
  const masked = Buffer.from([0x81, 0x81, 1, 2, 3, 4, 5]);
  const cases: Array<[string, Buffer, number]> = [
    ['masked', masked, 1002],
    ['rsv1', Buffer.from([0xc1, 0]), 1002],
    ['opcode 3', Buffer.from([0x83, 0]), 1002],
    ['continuation first', serverFrame(0, Buffer.from('x')), 1002],
    ['text inside fragments', Buffer.concat([serverFrame(OP_TEXT, Buffer.from('a'), false), serverFrame(OP_TEXT, Buffer.from('b'))]), 1002],
    ['ping of 126 bytes', serverFrame(OP_PING, Buffer.alloc(126)), 1002],
    ['close 1-byte payload', serverFrame(OP_CLOSE, Buffer.from([3])), 1002],
    ['close code 1005 on the wire', serverFrame(OP_CLOSE, Buffer.from([0x03, 0xed])), 1002],
    ['close reason not UTF-8', serverFrame(OP_CLOSE, Buffer.from([0x0f, 0xa1, 0xff, 0xfe])), 1007],
  ];
  for (const [name, bytes, code] of cases) {
    const ev = readAll(bytes);
    assert.equal(ev.length, 1, name);
    assert.equal(ev[0].kind === 'error' && ev[0].code, code, name);
  }
});

test('a Close frame ends reading: code and reason; nothing after it is read', () => {
  const p = Buffer.concat([Buffer.from([0x0f, 0xa1]), Buffer.from('reason')]);
  const ev = readAll(Buffer.concat([serverFrame(OP_CLOSE, p), serverFrame(OP_TEXT, Buffer.from('late'))]));
  assert.deepEqual(ev, [{ kind: 'close', code: 4001, reason: 'reason' }]);
  assert.deepEqual(readAll(serverFrame(OP_CLOSE, Buffer.alloc(0))), [{ kind: 'close', code: 1005, reason: '' }]);
});

test('encodeFrame: masked, FIN, the three length forms; encodeClose carries code and reason', () => {
  for (const len of [0, 1, 125, 126, 255, 256, 257, 1001, 4096, 65535, 65536]) {
    const payload = Buffer.alloc(len, 0x5a);
    const f = unmask(encodeFrame(OP_BINARY, payload));
    assert.equal(f.fin, true);
    assert.equal(f.op, OP_BINARY);
    assert.deepEqual(f.payload, payload, `length ${len}`);
  }
  const c = unmask(encodeClose(4001, 'r'));
  assert.equal(c.op, OP_CLOSE);
  assert.equal(c.payload.readUInt16BE(0), 4001);
  assert.equal(c.payload.subarray(2).toString(), 'r');
  assert.equal(unmask(encodeClose(1005, 'ignored')).payload.length, 0, '1005 is sent as an empty Close');
});
