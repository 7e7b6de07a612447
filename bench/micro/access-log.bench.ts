// Micro-benchmark of one access-log line (not a test, asserts no speed): the way lines were written before
// (pino, a child logger per connection, one synchronous write per line) against http/access-log.ts (a request's
// values noted, its line built by hand later with the others noted since, straight into a LineWriter's chunk,
// written once per full chunk or per FLUSH_MS), and the line alone (noted, then built 256 at a time). Both
// write to /dev/null; the figure is the process's CPU time (main thread, libuv's and V8's threads: process.cpuUsage)
// per line, the writes amortised, over batches of lines with a turn of the loop between batches (256, as a
// saturated worker; 8, as a proxy's turn; 8 every millisecond, a worker at 8,000 requests/s, where a write carries
// fewer lines), less what the same loop costs with no line (its setImmediate/setTimeout, not the log's, printed
// too). The lines are checked to parse before timing.
// Run: npm run bench:micro:access-log
import assert from 'node:assert/strict';
import os from 'node:os';
import { pino } from 'pino';
import { LineWriter } from '../../src/core/line-writer.js';
import { AccessLog, type AccessClient } from '../../src/http/access-log.js';
import type { Exchange } from '../../src/handlers/forward.js';

const BATCH = 256;
const FEW = 8;
const LINES = 200_000;
/** The paced row: FEW lines every PACE_MS, PACED_LINES in all (5 s). */
const PACE_MS = 1;
const PACED_LINES = 40_000;
const ROUNDS = 3;

const head = {
  method: 'GET',
  target: '/api/items?page=2',
  versionMinor: 1,
  hostRaw: 'api.example.com',
  headers: ['Host', 'api.example.com', 'User-Agent', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36', 'Accept', '*/*', 'Referer', 'https://example.com/list', 'Accept-Encoding', 'gzip, br'],
};
const target = { id: '10.0.0.7:8080' };
const ex = {
  head,
  route: { name: 'api' },
  pool: { name: 'api' },
  target,
  lastTarget: target,
  connectMs: 0.01,
  reusedSocket: true,
  firstByteMs: 0.412,
  bytesIn: 187,
  bytesOut: 1311,
  startedAt: Date.now(),
  startedHr: performance.now(),
} as unknown as Exchange;
const client: AccessClient = { id: 7, remoteAddr: '198.51.100.23' };

type Writer = () => void;

function oldWay(): Writer {
  const root = pino(
    { base: { pid: process.pid, worker: 1 }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    pino.destination({ dest: '/dev/null', sync: true }),
  );
  let n = 0;
  let log = root.child({ conn: 0 });
  return () => {
    // a child per connection, as connection.ts built one; 8 requests per connection
    if ((n++ & 7) === 0) log = root.child({ conn: n });
    log.info(
      { mode: 'http', route: 'api', upstream: target.id, method: head.method, path: head.target, status: 200, bytesIn: 187, bytesOut: 1311, durationMs: Date.now() - ex.startedAt, err: undefined },
      'request',
    );
  };
}

/** The line alone: built (as bytes) and handed to a writer that only counts it (no copy into a chunk, no write). */
function lineOnly(): Writer {
  let bytes = 0;
  // no chunk to write into (claim): each line is built in the line's own buffer; noted lines are written 256 at a time
  const sink = { write: (l: string) => (bytes += l.length), writeBytes: (b: Uint8Array) => (bytes += b.length), claim: () => null, defer: () => {}, undefer: () => {} } as unknown as LineWriter;
  const log = new AccessLog({ stdout: sink, file: undefined, worker: 1, trusts: () => false });
  return () => log.request(client, ex, 'f3a9c1d2e4b5-1a', 200, undefined);
}

function newWay(): Writer {
  const log = new AccessLog({ stdout: new LineWriter('/dev/null'), file: undefined, worker: 1, trusts: () => false });
  return () => log.request(client, ex, 'f3a9c1d2e4b5-1a', 200, undefined);
}

/** The loop alone: what measure() costs with no line. */
const nothing: Writer = () => {};

async function measure(write: Writer, batch = BATCH, paceMs = 0, lines = LINES): Promise<number> {
  const before = process.cpuUsage();
  for (let i = 0; i < lines; i += batch) {
    for (let j = 0; j < batch; j++) write();
    await new Promise((resolve) => (paceMs === 0 ? setImmediate(resolve) : setTimeout(resolve, paceMs)));
  }
  // let the last writes leave
  await new Promise((resolve) => setTimeout(resolve, 50));
  const used = process.cpuUsage(before);
  return (used.user + used.system) / lines;
}

/** measure() less the same loop with no line. */
async function net(make: () => Writer, batch = BATCH, paceMs = 0, lines = LINES): Promise<{ net: number; loop: number }> {
  const loop = await measure(nothing, batch, paceMs, lines);
  return { net: (await measure(make(), batch, paceMs, lines)) - loop, loop };
}

// check first: the new line is JSON with the fields the old one had, and more
const lines: string[] = [];
const checked = new AccessLog({ stdout: { write: (l: string) => lines.push(l), writeBytes: (b: Uint8Array) => lines.push(Buffer.from(b).toString('utf8')), claim: () => null, defer: () => {}, undefer: () => {} } as unknown as LineWriter, file: undefined, worker: 1, trusts: () => false });
checked.request(client, ex, 'id-1', 200, undefined);
checked.flush();
const parsed = JSON.parse(lines[0]) as Record<string, unknown>;
for (const k of ['level', 'time', 'pid', 'worker', 'conn', 'mode', 'route', 'upstream', 'method', 'path', 'status', 'bytesIn', 'bytesOut', 'durationMs', 'msg']) assert.ok(k in parsed, k);
assert.equal(parsed.ua, head.headers[3]);

console.log(`# access-log line cost: ${os.cpus()[0]?.model ?? 'cpu'} x${os.availableParallelism()}, node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log(`# ${ROUNDS} rounds of ${LINES} lines each way (${PACED_LINES} paced), alternating; CPU µs per line (all threads), less the loop's own`);
const results = { old: [] as number[], new: [] as number[], few: [] as number[], paced: [] as number[], line: [] as number[] };
const loops = { many: [] as number[], few: [] as number[], paced: [] as number[] };
for (let r = 0; r < ROUNDS; r++) {
  const old = await net(oldWay);
  results.old.push(old.net);
  loops.many.push(old.loop);
  results.new.push((await net(newWay)).net);
  // a proxy's turn of the loop carries a few requests, not hundreds: the writes must still be shared
  const few = await net(newWay, FEW);
  results.few.push(few.net);
  loops.few.push(few.loop);
  const paced = await net(newWay, FEW, PACE_MS, PACED_LINES);
  results.paced.push(paced.net);
  loops.paced.push(paced.loop);
  results.line.push((await net(lineOnly)).net);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const row = (label: string, xs: number[]) => console.log(`${label.padEnd(40)} ${median(xs).toFixed(2)} µs/line  (rounds ${xs.map((x) => x.toFixed(2)).join(', ')})`);
row('pino child + sync write (before):', results.old);
row(`hand-built + LineWriter, ${BATCH} a turn:`, results.new);
row(`  the same, ${FEW} lines a turn:`, results.few);
row(`  the same, ${FEW} lines every ${PACE_MS} ms:`, results.paced);
row('  of which the line alone:', results.line);
console.log(`# the loop alone (subtracted above): ${median(loops.many).toFixed(2)} / ${median(loops.few).toFixed(2)} / ${median(loops.paced).toFixed(2)} µs per line at ${BATCH} a turn / ${FEW} a turn / ${FEW} every ${PACE_MS} ms`);
