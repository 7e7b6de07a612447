// http/access-log.ts notes a forwarded request's values when it ends and writes its line later, when a writer pulls
// the noted lines (LineWriter.defer) or before any other line of its own. These check, on real files and a real
// pipe: the lines keep their order with every other line given to the same writers (pino's text lines, the log's
// own tunnel/answer/rejected lines, a second access log after a reload); they leave by themselves, with no further
// call; a clean stop (drain, close, the exit's flushSync) writes them with no turn in between; and no more than a
// bounded number wait unwritten.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openFifo } from '../helpers/fifo.js';
import { AccessLog, type AccessClient } from '../../src/http/access-log.js';
import { LineWriter } from '../../src/core/line-writer.js';
import { ProxyError } from '../../src/core/errors.js';
import type { Exchange } from '../../src/handlers/forward.js';
import type { RequestHead } from '../../src/wire/http-head.js';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-alog-held-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function headOf(target: string): RequestHead {
  return { method: 'GET', target, versionMinor: 1, hostRaw: 'h.example', headers: ['Host', 'h.example', 'User-Agent', 'ua/1'] } as unknown as RequestHead;
}

function exchangeOf(target: string): Exchange {
  const up = { id: '10.0.0.1:80' };
  return {
    head: headOf(target),
    route: { name: 'r' },
    pool: { name: 'p' },
    target: up,
    lastTarget: up,
    connectMs: 0.5,
    reusedSocket: false,
    firstByteMs: 1,
    bytesIn: 10,
    bytesOut: 20,
    startedAt: Date.now(),
    startedHr: performance.now(),
  } as unknown as Exchange;
}

/** What says which line is which: `path` of request lines, `msg` and a field of the others. */
function labelOf(line: string): string {
  const o = JSON.parse(line) as Record<string, unknown>;
  if (o.msg === 'request') return `${o.mode as string} ${o.path as string}`;
  return `${o.msg as string}${o.n === undefined ? '' : ` ${o.n as number}`}`;
}

const client: AccessClient = { id: 1, remoteAddr: '127.0.0.1' };

test('access log: noted request lines keep their order with every other line of both writers, and leave with no further call', async (t) => {
  const dir = tempDir(t);
  // a pipe as stdout (its reader sees what leaves by itself) and a file, as with log.access and log.access_file
  const pipe = openFifo(t, dir, 'stdout');
  const fifo = pipe.path;
  const fd = pipe.fd;
  const stdout = new LineWriter(fd);
  const filePath = path.join(dir, 'access.log');
  const file = new LineWriter(filePath);
  const log = new AccessLog({ stdout, file, worker: 1, trusts: () => false });
  // the runtime after a reload: a second access log on the same writers
  const next = new AccessLog({ stdout, file, worker: 1, trusts: () => false });
  const want: string[] = [];
  const request = (l: AccessLog, target: string) => {
    l.request(client, exchangeOf(target), 'id', 200, undefined);
    want.push(`http ${target}`);
  };
  request(log, '/1');
  request(log, '/2');
  // a line of pino's on the shared stdout writer (not in the file): after the requests noted before it
  stdout.write('{"msg":"pino","n":1}\n');
  want.push('pino 1');
  request(log, '/3');
  log.line(1, 'info', { n: 2 }, 'named');
  want.push('named 2');
  request(next, '/4');
  request(log, '/5');
  request(next, '/6');
  log.answer(client, 'static', 'r', headOf('/answer'), 'id', 200, 5, Date.now());
  want.push('static /answer');
  request(log, '/7');
  log.rejected(client, headOf('/bad'), 'id', 400, 'CLIENT_BAD_REQUEST', 'bad');
  want.push('http /bad');
  request(next, '/8');
  log.request(client, exchangeOf('/9'), 'id', 502, new ProxyError('UPSTREAM_CONNECT_REFUSED', 'refused'));
  want.push('http /9');
  log.tunnel(client, log.tunnelFields(client, exchangeOf('/ws'), 'id'), { bytesUp: 1, bytesDown: 2, startedAt: Date.now(), closedBy: 'client' } as never);
  want.push('tunnel');
  request(next, '/10');
  request(log, '/11');
  // nothing more is asked of either writer: the pipe's reader must get every line
  const reader = createReadStream(fifo);
  let text = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${text.split('\n').length - 1} of ${want.length} lines arrived: ${text}`)), 5000);
    reader.on('data', (c) => {
      text += (c as Buffer).toString('utf8');
      if (text.split('\n').length - 1 >= want.length) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  reader.destroy();
  pipe.close();
  assert.deepEqual(text.slice(0, -1).split('\n').map(labelOf), want);
  await file.drain();
  file.close();
  const inFile = readFileSync(filePath, 'utf8').slice(0, -1).split('\n');
  assert.deepEqual(inFile.map(labelOf), want.filter((w) => w !== 'pino 1'));
  assert.equal(stdout.dropped + file.dropped, 0);
});

test('access log: a clean stop writes the noted lines with no turn in between (drain, close, the exit\'s flushSync)', async (t) => {
  const dir = tempDir(t);
  for (const stop of ['drain', 'close', 'flushSync'] as const) {
    const filePath = path.join(dir, `${stop}.log`);
    const file = new LineWriter(filePath);
    const log = new AccessLog({ stdout: undefined, file, worker: 1, trusts: () => false });
    for (let i = 0; i < 5; i++) log.request(client, exchangeOf(`/${stop}/${i}`), undefined, 200, undefined);
    if (stop === 'drain') await file.drain();
    else if (stop === 'close') file.close();
    else file.flushSync();
    // flushSync wrote them already; after the others, the write that the stop started is waited for
    if (stop !== 'flushSync') await file.drain();
    const lines = readFileSync(filePath, 'utf8').slice(0, -1).split('\n');
    assert.deepEqual(lines.map(labelOf), [0, 1, 2, 3, 4].map((i) => `http /${stop}/${i}`), stop);
    if (stop !== 'close') file.close();
  }
});

test('access log: requests noted in one long turn are handed to the writer as they pile up, not held without bound', async (t) => {
  const filePath = path.join(tempDir(t), 'held.log');
  const file = new LineWriter(filePath);
  const log = new AccessLog({ stdout: undefined, file, worker: 1, trusts: () => false });
  let seen = '0 0';
  for (let i = 0; i < 2000; i++) {
    log.request(client, exchangeOf(`/${i}`), undefined, 200, undefined);
    // no turn of the loop, no pull by the writer: the log itself hands its lines over every few hundred requests,
    // which shows in what the writer holds or in the writes it started
    if (i % 300 === 299) {
      const now = `${file.buffered} ${file.writes}`;
      assert.notEqual(now, seen, `nothing more handed to the writer by request ${i + 1} of one turn`);
      seen = now;
    }
  }
  await file.drain();
  file.close();
  const lines = readFileSync(filePath, 'utf8').slice(0, -1).split('\n');
  assert.equal(lines.length, 2000);
  lines.forEach((l, i) => assert.equal(labelOf(l), `http /${i}`));
});
