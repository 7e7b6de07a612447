// Micro-benchmark of one access-log line (not a test, asserts no speed): the way lines were written before
// (pino, a child logger per connection, one synchronous write per line) against http/access-log.ts (a line built
// by hand, encoded into a LineWriter's chunk, written once per chunk or event-loop turn), and the line alone. Both write to /dev/null; the figure is the
// process's CPU time (main thread and libuv's threads: process.cpuUsage) per line over batches of 256 lines with a
// turn of the loop between batches, as a busy worker would. The lines are checked to parse before timing.
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

/** The line alone: built and handed to a writer that only counts it (the JS cost, no encoding, no write). */
function lineOnly(): Writer {
  let bytes = 0;
  const sink = { write: (l: string) => (bytes += l.length) } as unknown as LineWriter;
  const log = new AccessLog({ stdout: sink, file: undefined, worker: 1, trusts: () => false });
  return () => log.request(client, ex, 'f3a9c1d2e4b5-1a', 200, undefined);
}

function newWay(): Writer {
  const log = new AccessLog({ stdout: new LineWriter('/dev/null'), file: undefined, worker: 1, trusts: () => false });
  return () => log.request(client, ex, 'f3a9c1d2e4b5-1a', 200, undefined);
}

async function measure(write: Writer, batch = BATCH): Promise<number> {
  const before = process.cpuUsage();
  for (let i = 0; i < LINES; i += batch) {
    for (let j = 0; j < batch; j++) write();
    await new Promise((resolve) => setImmediate(resolve));
  }
  // let the last writes leave
  await new Promise((resolve) => setTimeout(resolve, 50));
  const used = process.cpuUsage(before);
  return (used.user + used.system) / LINES;
}

// check first: the new line is JSON with the fields the old one had, and more
const lines: string[] = [];
new AccessLog({ stdout: { write: (l: string) => lines.push(l) } as unknown as LineWriter, file: undefined, worker: 1, trusts: () => false }).request(client, ex, 'id-1', 200, undefined);
const parsed = JSON.parse(lines[0]) as Record<string, unknown>;
for (const k of ['level', 'time', 'pid', 'worker', 'conn', 'mode', 'route', 'upstream', 'method', 'path', 'status', 'bytesIn', 'bytesOut', 'durationMs', 'msg']) assert.ok(k in parsed, k);
assert.equal(parsed.ua, head.headers[3]);

console.log(`# access-log line cost: ${os.cpus()[0]?.model ?? 'cpu'} x${os.availableParallelism()}, node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log(`# ${ROUNDS} rounds of ${LINES} lines each way, alternating; CPU µs per line (main thread + libuv threads)`);
const results = { old: [] as number[], new: [] as number[], few: [] as number[], line: [] as number[] };
for (let r = 0; r < ROUNDS; r++) {
  results.old.push(await measure(oldWay()));
  results.new.push(await measure(newWay()));
  // a proxy's turn of the loop carries a few requests, not hundreds: the writes must still be shared
  results.few.push(await measure(newWay(), FEW));
  results.line.push(await measure(lineOnly()));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`pino child + sync write (before): ${median(results.old).toFixed(2)} µs/line  (rounds ${results.old.map((x) => x.toFixed(2)).join(', ')})`);
console.log(`hand-built + LineWriter (now):    ${median(results.new).toFixed(2)} µs/line  (rounds ${results.new.map((x) => x.toFixed(2)).join(', ')})`);
console.log(`  the same, ${FEW} lines a turn:       ${median(results.few).toFixed(2)} µs/line  (rounds ${results.few.map((x) => x.toFixed(2)).join(', ')})`);
console.log(`  of which the line alone:        ${median(results.line).toFixed(2)} µs/line  (rounds ${results.line.map((x) => x.toFixed(2)).join(', ')})`);
