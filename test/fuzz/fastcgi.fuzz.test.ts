// Property tests of the FastCGI record reader (wire/fastcgi.ts) and the CGI head parser (wire/cgi-head.ts) with
// fast-check under a time budget: never throw on any bytes, split delivery equals whole delivery, nothing is
// delivered past an error or after END_REQUEST, STDOUT bytes out are the STDOUT bytes in, limits hold.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RecordReader, encodeParams, decodePairs, type RecordSink } from '../../src/wire/fastcgi.js';
import { parseCgiHead } from '../../src/wire/cgi-head.js';
import { mutate, mutationArb, split } from '../helpers/fuzz.js';

const BUDGET_MS = 500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

function record(type: number, id: number, content: Buffer, padding: number): Buffer {
  const h = Buffer.from([1, type, id >> 8, id & 255, content.length >> 8, content.length & 255, padding, 0]);
  return Buffer.concat([h, content, Buffer.alloc(padding)]);
}

interface Run {
  calls: string[];
  stdout: Buffer;
  error: string | null;
}

function run(chunks: Buffer[]): Run {
  const calls: string[] = [];
  const out: Buffer[] = [];
  const sink: RecordSink = {
    stdout: (b) => {
      assert.ok(b.length > 0, 'never an empty stdout call');
      out.push(Buffer.from(b));
    },
    stderr: (b) => calls.push(`e:${b.toString('latin1')}`),
    end: (a, p) => calls.push(`end:${a}:${p}`),
  };
  const r = new RecordReader(1, sink);
  let error: string | null = null;
  for (const c of chunks) {
    error = r.push(c);
    if (error !== null) break;
  }
  // stderr may be split differently: compare it joined
  const joined = calls.filter((c) => c.startsWith('e:')).map((c) => c.slice(2)).join('');
  return { calls: [joined, ...calls.filter((c) => !c.startsWith('e:'))], stdout: Buffer.concat(out), error };
}

const recordArb = fc.record({
  type: fc.constantFrom(6, 6, 6, 7, 3, 1, 99),
  id: fc.constantFrom(1, 1, 1, 2),
  content: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  padding: fc.integer({ min: 0, max: 12 }),
});
const streamArb = fc.array(recordArb, { maxLength: 8 }).map((rs) => Buffer.concat(rs.map((r) => record(r.type, r.id, r.type === 3 && r.content.length > 0 ? r.content.subarray(0, 8) : r.content, r.padding))));
const cutsArb = fc.array(fc.nat(), { maxLength: 6 });

test('record reader: any bytes, split anywhere, give the same result as whole delivery and never throw', () => {
  fc.assert(
    fc.property(fc.oneof(streamArb, fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a))), cutsArb, fc.array(mutationArb([0, 1, 3, 6, 7, 8, 0xff]), { maxLength: 3 }), (base, cuts, muts) => {
      const buf = mutate(base, muts);
      const whole = run([buf]);
      const parts = run(split(buf, cuts));
      assert.deepEqual(parts.calls, whole.calls);
      assert.deepEqual(parts.stdout, whole.stdout);
      assert.equal(parts.error, whole.error);
      assert.ok(whole.stdout.length <= buf.length, 'never more stdout than input');
      const ends = whole.calls.filter((c) => c.startsWith('end:')).length;
      assert.ok(ends <= 1, 'at most one END_REQUEST');
    }),
    opts,
  );
});

test('record reader: STDOUT content of valid records comes out exactly, in order', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 2000 }), { maxLength: 6 }), fc.integer({ min: 0, max: 255 }), cutsArb, (contents, padding, cuts) => {
      const stream = Buffer.concat([...contents.map((c) => record(6, 1, Buffer.from(c), padding)), record(3, 1, Buffer.alloc(8), 0)]);
      const r = run(split(stream, cuts));
      assert.equal(r.error, null);
      assert.deepEqual(r.stdout, Buffer.concat(contents.map((c) => Buffer.from(c))));
      assert.deepEqual(r.calls.slice(1), ['end:0:0']);
    }),
    opts,
  );
});

test('name-value pairs: encode -> decode is the identity', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 200 }), fc.string({ maxLength: 300 })), { maxLength: 20 }), (pairs) => {
      const map = new Map<string, string>();
      for (const [k, v] of pairs) map.set(Buffer.from(k, 'utf8').toString('latin1'), Buffer.from(v, 'utf8').toString('latin1'));
      const flat: string[] = [];
      for (const [k, v] of pairs) flat.push(k, v);
      const buf = encodeParams(1, flat);
      const len = buf.readUInt16BE(4);
      if (buf.length - 16 === len || flat.length === 0) assert.deepEqual(decodePairs(buf.subarray(8, 8 + len)), flat.length === 0 ? new Map() : map);
    }),
    opts,
  );
});

test('CGI head: any bytes never throw, stay within limits, and an accepted head is well formed', () => {
  const seeds = [Buffer.from('Status: 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 3\r\n\r\nabc'), Buffer.from('Location: /x\n\nbody'), Buffer.from('X-A: 1\r\nX-B:\t2 \r\n\r\n')];
  fc.assert(
    fc.property(fc.constantFrom(...seeds), fc.array(mutationArb([0x0d, 0x0a, 0x3a, 0x20, 0x09, 0x00, 0x7f, 0x31]), { maxLength: 6 }), (seed, muts) => {
      const buf = mutate(seed, muts);
      const r = parseCgiHead(buf, { headerSize: 256, headers: 8 });
      if (r.kind === 'done') {
        assert.ok(r.used <= buf.length && r.used <= 256);
        assert.ok(r.head.status >= 200 && r.head.status <= 599);
        assert.ok(r.head.headers.length <= 16);
        for (const h of r.head.headers) assert.doesNotMatch(h, /[\r\n\0]/);
      } else if (r.kind === 'error') {
        assert.ok(r.reason.length > 0);
      }
    }),
    opts,
  );
});
