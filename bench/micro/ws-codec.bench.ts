// Micro-benchmark of the terminated WebSocket's backend leg (src/wire/ws-codec.ts): reading server frames (32 B
// and 4 KiB messages, 64 per chunk; a message in 4 fragments) and encoding masked client frames. Not a test,
// asserts no speed; the results are checked before timing (STYLE.md 14). Run: npm run bench:micro:ws-codec
import assert from 'node:assert/strict';
import os from 'node:os';
import { Bench } from 'tinybench';
import { FrameReader, OP_BINARY, encodeFrame } from '../../src/wire/ws-codec.js';

function serverFrame(payload: Buffer, op = OP_BINARY, fin = true): Buffer {
  const len = payload.length;
  const hdr = len < 126 ? Buffer.from([(fin ? 0x80 : 0) | op, len]) : Buffer.from([(fin ? 0x80 : 0) | op, 126, len >> 8, len & 255]);
  return Buffer.concat([hdr, payload]);
}

const PER_CHUNK = 64;
const chunks = {
  '32 B messages': Buffer.concat(Array.from({ length: PER_CHUNK }, () => serverFrame(Buffer.alloc(32, 1)))),
  '4 KiB messages': Buffer.concat(Array.from({ length: PER_CHUNK }, () => serverFrame(Buffer.alloc(4096, 1)))),
  '4 KiB in 4 fragments': Buffer.concat(
    Array.from({ length: PER_CHUNK }, () => Buffer.concat([serverFrame(Buffer.alloc(1024, 1), OP_BINARY, false), serverFrame(Buffer.alloc(1024, 1), 0, false), serverFrame(Buffer.alloc(1024, 1), 0, false), serverFrame(Buffer.alloc(1024, 1), 0, true)])),
  ),
};
for (const [name, chunk] of Object.entries(chunks)) {
  const ev = new FrameReader(1 << 20).push(chunk);
  assert.equal(ev.length, PER_CHUNK, name);
  assert.ok(ev.every((e) => e.kind === 'message'), name);
}
const small = Buffer.alloc(32, 7);
const big = Buffer.alloc(4096, 7);
assert.equal(encodeFrame(OP_BINARY, small).length, 2 + 4 + 32);
assert.equal(encodeFrame(OP_BINARY, big).length, 4 + 4 + 4096);

const bench = new Bench({ name: 'ws-codec', time: 1000 });
let sink = 0;
for (const [name, chunk] of Object.entries(chunks)) {
  bench.add(`read ${PER_CHUNK} x ${name}`, () => {
    sink += new FrameReader(1 << 20).push(chunk).length;
  });
}
bench.add('encode 32 B masked', () => {
  sink += encodeFrame(OP_BINARY, small).length;
});
bench.add('encode 4 KiB masked', () => {
  sink += encodeFrame(OP_BINARY, big).length;
});
console.log(`# ${bench.name}: node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown cpu'} x${os.cpus().length}`);
await bench.run();
console.table(
  bench.tasks.map((task) => {
    const r = task.result;
    if (r.state !== 'completed') return { task: task.name, 'µs/op (mean)': r.state, 'ops/s': '' };
    return { task: task.name, 'µs/op (mean)': (r.latency.mean * 1000).toFixed(2), 'ops/s': Math.round(1000 / r.latency.mean) };
  }),
);
if (sink === 0) console.log('(nothing)');
