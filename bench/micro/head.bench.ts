// Micro-benchmark of the head parser and chunked scanner (the per-request hot path), with tinybench.
// Checks every result before timing it (STYLE.md 14); not a test, it asserts no speed.
// Run: npm run bench:micro:head
import { Bench } from 'tinybench';
import { printBatchTable } from './batch-table.js';
import { ChunkedScanner, parseRequestHead, parseResponseHead } from '../../src/wire/http-head.js';
import type { HeadLimits } from '../../src/wire/http-head.js';
import { browserGet } from './heads.js';

const LIMITS: HeadLimits = { headerSize: 32 * 1024, uriSize: 8 * 1024, headers: 100 };
/** Calls per timed iteration: one parse is far below the timer's resolution and overhead. */
const BATCH = 100;

const smallGet = Buffer.from('GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n', 'latin1');
const response = Buffer.from(
  [
    'HTTP/1.1 200 OK',
    'Date: Mon, 01 Jul 2024 12:00:00 GMT',
    'Server: Apache-Coyote/1.1',
    'Content-Type: text/html;charset=UTF-8',
    'Content-Length: 1234',
    'Cache-Control: no-cache',
    'Connection: keep-alive',
    '',
    '',
  ].join('\r\n'),
  'latin1',
);
const chunkedBody = Buffer.from('1000\r\n' + 'x'.repeat(0x1000) + '\r\n20;ext=1\r\n' + 'y'.repeat(0x20) + '\r\n0\r\n\r\n', 'latin1');

function check(ok: boolean, what: string): void {
  if (!ok) {
    console.error(`bench precheck failed: ${what}`);
    process.exit(1);
  }
}

const g = parseRequestHead(browserGet, LIMITS);
check(g.kind === 'done' && g.used === browserGet.length && g.head.host === 'www.example.com' && g.head.path === '/Tomcat/app/index.html' && g.head.headers.length === 16, 'browser GET');
const sg = parseRequestHead(smallGet, LIMITS);
check(sg.kind === 'done' && sg.head.host === '127.0.0.1' && sg.used === smallGet.length, 'small GET');
const rs = parseResponseHead(response, LIMITS, 'GET');
check(rs.kind === 'done' && rs.head.status === 200 && rs.head.bodyKind === 'length' && rs.head.contentLength === 1234, 'response');
const cs = new ChunkedScanner();
check(cs.push(chunkedBody, 0) === chunkedBody.length && cs.done, 'chunked body');
const partial = browserGet.subarray(0, 200);
check(parseRequestHead(partial, LIMITS).kind === 'more', 'partial head');

let sink = 0;
const bench = new Bench({ name: 'head parser', time: 1000, warmupTime: 200 });
bench
  .add(`request head, browser GET (${browserGet.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseRequestHead(browserGet, LIMITS);
      if (r.kind === 'done') sink += r.used;
    }
  })
  .add(`request head, small GET (${smallGet.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseRequestHead(smallGet, LIMITS);
      if (r.kind === 'done') sink += r.used;
    }
  })
  .add(`request head, incomplete (200 B -> more)`, () => {
    for (let i = 0; i < BATCH; i++) if (parseRequestHead(partial, LIMITS).kind === 'more') sink++;
  })
  .add(`response head (${response.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseResponseHead(response, LIMITS, 'GET');
      if (r.kind === 'done') sink += r.used;
    }
  })
  .add(`chunked scan, 2 chunks + last (${chunkedBody.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) sink += new ChunkedScanner().push(chunkedBody, 0);
  });

await bench.run();

printBatchTable('head parser micro-benchmark', bench, BATCH);
if (sink === -1) console.log(sink); // keeps the results observable
