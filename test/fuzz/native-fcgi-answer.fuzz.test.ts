// The addon's FastCGI answer reader (src/native/fcgi-answer.h, FastCGI's relayed answer of io.cc) held to the JS
// codec (src/wire/fastcgi.ts RecordReader) and the client bytes src/handlers/fastcgi.ts writes for a remembered
// head (the head, one chunk per STDOUT piece, the last chunk at END_REQUEST): on answers built from valid and
// broken records (fast-check, under a time budget), split into reads anywhere, whatever the C++ side takes the JS
// reader takes the same way (no error, no STDERR, the same pieces, END_REQUEST complete where C++ ended, bytes
// after it said alike), the client bytes are the same, and a rest handed over starts at a record's first byte (a
// fresh JS reader from there reads what the running one reads). Common answers must be taken. Run under ASan by
// scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RecordReader, type RecordSink } from '../../src/wire/fastcgi.js';
import { native } from '../../src/native/addon.js';
import { assertFor, mutate, mutationArb, split } from '../helpers/fuzz.js';
import { needAddonExport } from '../helpers/peers.js';

type Step = { result: 'more' | 'done' | 'handover' | 'not-mine'; used: number; extra: boolean; out: Buffer };
const feedNative = (native() as unknown as { fcgiAnswerFeed?: (reads: Uint8Array[], cgi: Uint8Array, head: Uint8Array, id: number) => Step[] } | undefined)?.fcgiAnswerFeed;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, feedNative !== undefined, 'the native addon (with its FastCGI answer)');
}

const BUDGET_MS = 1500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

const ID = 1;
const CGI = Buffer.from('X-Powered-By: PHP/8.2.7\r\nContent-type: text/html; charset=UTF-8\r\n\r\n', 'latin1');
const HEAD = Buffer.from('HTTP/1.1 200 OK\r\nX-Powered-By: PHP/8.2.7\r\nContent-type: text/html; charset=UTF-8\r\nTransfer-Encoding: chunked\r\n\r\n', 'latin1');
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');

function record(type: number, id: number, content: Buffer, padding = 0, version = 1): Buffer {
  const h = Buffer.from([version, type, id >> 8, id & 255, content.length >> 8, content.length & 255, padding, 0]);
  return Buffer.concat([h, content, Buffer.alloc(padding, 0x5a)]);
}
const end = (protocolStatus = 0, app = 0, padding = 0): Buffer => record(3, ID, Buffer.from([app >>> 24, (app >>> 16) & 255, (app >>> 8) & 255, app & 255, protocolStatus, 0, 0, 0]), padding);
const stdout = (s: string | Buffer, padding = 0): Buffer => record(6, ID, typeof s === 'string' ? Buffer.from(s, 'latin1') : s, padding);

/** #relayBody's chunk of one STDOUT piece. */
const chunk = (piece: Buffer): Buffer => Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`, 'latin1'), piece, Buffer.from('\r\n', 'latin1')]);

/** What the JS reader does with one push: the client bytes the exchange writes for it, and what else it saw. */
interface Pushed {
  out: Buffer;
  error: string | null;
  stderr: boolean;
  /** END_REQUEST: its protocol status and whether bytes followed it in the push. */
  end: { protocolStatus: number; trailing: boolean } | null;
  /** The first STDOUT piece did not start with the remembered head (the exchange would parse it). */
  otherHead: boolean;
}

/** The JS side of one answer: the RecordReader, and fastcgi.ts's client bytes for a remembered head. */
class JsSide {
  #reader: RecordReader;
  #headDone = false;
  #cur: Pushed = JsSide.#empty();
  #parts: Buffer[] = [];

  constructor() {
    const sink: RecordSink = {
      stdout: (b) => {
        if (!this.#headDone) {
          if (b.length < CGI.length || CGI.compare(b, 0, CGI.length) !== 0) {
            this.#cur.otherHead = true;
            return;
          }
          this.#headDone = true;
          this.#parts.push(HEAD);
          if (b.length > CGI.length) this.#parts.push(chunk(b.subarray(CGI.length)));
          return;
        }
        this.#parts.push(chunk(b));
      },
      stderr: () => {
        this.#cur.stderr = true;
      },
      end: (_a, protocolStatus, trailing) => {
        this.#cur.end = { protocolStatus, trailing };
        if (protocolStatus === 0 && this.#headDone) this.#parts.push(LAST_CHUNK);
      },
    };
    this.#reader = new RecordReader(ID, sink);
  }

  static #empty(): Pushed {
    return { out: Buffer.alloc(0), error: null, stderr: false, end: null, otherHead: false };
  }

  push(b: Buffer): Pushed {
    this.#cur = JsSide.#empty();
    this.#parts = [];
    this.#cur.error = this.#reader.push(b);
    this.#cur.out = Buffer.concat(this.#parts);
    return this.#cur;
  }

  /** What the reader says of the rest of the stream (its calls, its error), for the hand-over check. */
  static rest(reads: Buffer[], reader?: RecordReader): string[] {
    const calls: string[] = [];
    const sink: RecordSink = {
      stdout: (b) => calls.push(`o:${b.toString('latin1')}`),
      stderr: (b) => calls.push(`e:${b.toString('latin1')}`),
      end: (a, p, trailing) => calls.push(`end:${a}:${p}:${trailing}`),
    };
    const r = reader ?? new RecordReader(ID, sink);
    for (const b of reads) {
      const err = r.push(b);
      if (err !== null) {
        calls.push(`error:${err}`);
        break;
      }
    }
    return calls;
  }

  get reader(): RecordReader {
    return this.#reader;
  }
}

let taken = 0;
let handedOver = 0;

/** Whatever the C++ side takes of `reads`, the JS side takes the same way (see the file's header). */
function agree(reads: Buffer[]): Step[] {
  const steps = feedNative!(reads, CGI, HEAD, ID);
  const js = new JsSide();
  const what = (): string => JSON.stringify(reads.map((r) => r.toString('latin1')));
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    const read = reads[i];
    if (s.result === 'not-mine') {
      assert.equal(i, 0, `only the first read is declined whole: ${what()}`);
      assert.equal(s.out.length, 0);
      return steps;
    }
    taken++;
    const part = s.result === 'more' ? read : read.subarray(0, s.used);
    assert.ok(s.used <= read.length);
    const j = js.push(part);
    assert.equal(j.error, null, `JS refuses what C++ took (read ${i}): ${j.error} in ${what()}`);
    assert.equal(j.stderr, false, `C++ took STDERR (read ${i}): ${what()}`);
    assert.equal(j.otherHead, false, `C++ took another head: ${what()}`);
    if (s.result === 'done') {
      assert.deepEqual(j.end, { protocolStatus: 0, trailing: false }, `END_REQUEST where C++ ended (read ${i}): ${what()}`);
      assert.equal(s.extra, s.used < read.length, 'bytes after END_REQUEST');
      // the same read whole: JS sees the same trailing bytes (and fails on them after the end, as io.cc drops them)
      if (s.extra) {
        const again = new JsSide();
        for (let k = 0; k < i; k++) again.push(reads[k]);
        assert.equal(again.push(read).end?.trailing, true);
      }
    } else {
      assert.equal(j.end, null, `JS ended where C++ did not (read ${i}): ${what()}`);
    }
    assert.deepEqual(s.out, j.out, `client bytes (read ${i}): ${what()}`);
    if (s.result === 'handover') {
      handedOver++;
      // a record boundary: a fresh reader from here reads what the running one reads
      const rest = [read.subarray(s.used), ...reads.slice(i + 1)];
      const fresh = JsSide.rest(rest);
      const running = JsSide.rest(rest, js.reader);
      // the running reader's sink is the exchange's (its calls are not collected): compare what each ends with
      assert.equal(fresh.at(-1)?.startsWith('error:') ?? false, running.at(-1)?.startsWith('error:') ?? false, `hand-over at a boundary: ${what()}`);
      if (fresh.at(-1)?.startsWith('error:') === true) assert.equal(fresh.at(-1), running.at(-1), what());
    }
    if (s.result !== 'more') return steps;
  }
  return steps;
}


test('FastCGI answer reader: the common answers are taken whole, with the client bytes fastcgi.ts writes', (t) => {
  if (!needAddon(t)) return;
  const body = Buffer.from('hello from php\n', 'latin1');
  const cases: Array<{ reads: Buffer[]; result: Step['result']; out: Buffer }> = [
    // PHP's hello: head and body in one STDOUT record, the empty STDOUT record, END_REQUEST
    { reads: [Buffer.concat([stdout(Buffer.concat([CGI, body]), 1), stdout(''), end()])], result: 'done', out: Buffer.concat([HEAD, chunk(body), LAST_CHUNK]) },
    // the head alone first, then pieces over three reads, a record split across two of them
    {
      reads: [stdout(CGI), Buffer.concat([stdout('abc'), stdout('defgh').subarray(0, 11)]), Buffer.concat([stdout('defgh').subarray(11), end(0, 0, 3)])],
      result: 'done',
      out: Buffer.concat([HEAD, chunk(Buffer.from('abc')), chunk(Buffer.from('def')), chunk(Buffer.from('gh')), LAST_CHUNK]),
    },
    // padding split from its record
    { reads: [stdout(Buffer.concat([CGI, body]), 7).subarray(0, 8 + CGI.length + body.length + 2), Buffer.concat([Buffer.alloc(5, 0x5a), end()])], result: 'done', out: Buffer.concat([HEAD, chunk(body), LAST_CHUNK]) },
  ];
  for (const c of cases) {
    const steps = agree(c.reads);
    assert.equal(steps.length, c.reads.length);
    assert.equal(steps.at(-1)!.result, c.result);
    assert.deepEqual(Buffer.concat(steps.map((s) => s.out)), c.out);
  }
});

test('FastCGI answer reader: what it does not take goes to JavaScript (before the head: the whole read; after: from a record)', (t) => {
  if (!needAddon(t)) return;
  const body = Buffer.from('x', 'latin1');
  const first = stdout(Buffer.concat([CGI, body]));
  const declined: Array<[string, Buffer[]]> = [
    ['another head', [Buffer.concat([stdout('Status: 404\r\n\r\n'), end()])]],
    ['the head split over two records', [Buffer.concat([stdout(CGI.subarray(0, 10)), stdout(CGI.subarray(10)), end()])]],
    ['the head split over two reads', [first.subarray(0, 20), first.subarray(20)]],
    ['STDERR first', [Buffer.concat([record(7, ID, Buffer.from('warning\n')), first, end()])]],
    ['another request id', [Buffer.concat([record(6, 2, Buffer.concat([CGI, body])), end()])]],
    ['version 2', [Buffer.concat([record(6, ID, Buffer.concat([CGI, body]), 0, 2), end()])]],
    ['END_REQUEST first', [end()]],
  ];
  for (const [name, reads] of declined) {
    const steps = agree(reads);
    assert.equal(steps[0].result, 'not-mine', name);
  }
  const handed: Array<[string, Buffer[], number]> = [
    ['STDERR after the head', [Buffer.concat([first, record(7, ID, Buffer.from('warning\n')), end()])], first.length],
    ['another request id after the head', [Buffer.concat([first, record(6, 2, body), end()])], first.length],
    ['a bad version after the head', [Buffer.concat([first, record(6, ID, body, 0, 0), end()])], first.length],
    ['an unknown type after the head', [Buffer.concat([first, record(11, ID, body), end()])], first.length],
    ['END_REQUEST not completed', [Buffer.concat([first, end(2)])], first.length],
    ['END_REQUEST of 9 bytes', [Buffer.concat([first, record(3, ID, Buffer.alloc(9), 0)])], first.length],
    ['END_REQUEST split over two reads', [Buffer.concat([first, end().subarray(0, 12)]), end().subarray(12)], first.length],
    ['a record header split over two reads', [Buffer.concat([first, stdout('abc').subarray(0, 5)]), Buffer.concat([stdout('abc').subarray(5), end()])], first.length],
  ];
  for (const [name, reads, at] of handed) {
    const steps = agree(reads);
    assert.equal(steps[0].result, 'handover', name);
    assert.equal(steps[0].used, at, name);
  }
  const extra = agree([Buffer.concat([first, end(), Buffer.from('junk')])]);
  assert.equal(extra[0].result, 'done');
  assert.equal(extra[0].extra, true, 'bytes after END_REQUEST');
});

const recordArb = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('stdout' as const), content: fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)), padding: fc.integer({ min: 0, max: 9 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('stderr' as const), content: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)), padding: fc.integer({ min: 0, max: 9 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('end' as const), status: fc.constantFrom(0, 0, 0, 1, 2, 3), padding: fc.integer({ min: 0, max: 9 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('odd' as const), type: fc.constantFrom(1, 2, 3, 6, 7, 11, 99), id: fc.constantFrom(0, 1, 2, 256), version: fc.constantFrom(0, 1, 2), content: fc.uint8Array({ maxLength: 12 }).map((a) => Buffer.from(a)) }) },
);
type Rec = typeof recordArb extends fc.Arbitrary<infer R> ? R : never;

function bytesOf(r: Rec): Buffer {
  switch (r.kind) {
    case 'stdout':
      return stdout(r.content, r.padding);
    case 'stderr':
      return record(7, ID, r.content, r.padding);
    case 'end':
      return end(r.status, 0, r.padding);
    case 'odd':
      return record(r.type, r.id, r.content, 0, r.version);
  }
}

/** An answer: usually the head first (whole or with body bytes behind it), then any records. */
const answerArb = fc
  .record({ headFirst: fc.boolean(), withBody: fc.uint8Array({ maxLength: 100 }), records: fc.array(recordArb, { maxLength: 8 }) })
  .map(({ headFirst, withBody, records }) => Buffer.concat([...(headFirst || records.length === 0 ? [stdout(Buffer.concat([CGI, Buffer.from(withBody)]))] : []), ...records.map(bytesOf)]));

test('FastCGI answer reader: any answer, split into reads anywhere, mutated: C++ takes only what JS takes the same way', (t) => {
  if (!needAddon(t)) return;
  taken = 0;
  handedOver = 0;
  assertFor(
    fc.property(answerArb, fc.array(fc.nat(), { maxLength: 6 }), fc.array(mutationArb([0, 1, 3, 6, 7, 8, 0x0a, 0x0d, 0xff]), { maxLength: 2 }), fc.boolean(), (base, cuts, muts, mutated) => {
      agree(split(mutated ? mutate(base, muts) : base, cuts).filter((b) => b.length > 0)); // (a read is never empty)
    }),
    BUDGET_MS,
    () => taken > 100 && handedOver > 10,
  );
  assert.ok(taken > 100, `reads taken by the C++ side: ${taken}`);
  assert.ok(handedOver > 10, `hand-overs: ${handedOver}`);
});
