// core/line-writer.ts on real files and a real pipe (a FIFO): lines come out whole, in order and byte for byte
// across chunk edges (multi-byte characters, lines longer than a chunk); a reader that stops reading makes the
// writer drop and count lines at its bound instead of holding more; drain() waits for the writes in flight, and
// close() writes everything it holds before it closes the file; lines of many turns share writes (pacing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, constants, createReadStream, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FLUSH_MS, LineWriter } from '../../src/core/line-writer.js';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-line-writer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('file: lines of every size and script come out whole and in order, across chunks and turns', async (t) => {
  const file = path.join(tempDir(t), 'a.log');
  const w = new LineWriter(file);
  const sent: string[] = [];
  for (let turn = 0; turn < 3; turn++) {
    for (let i = 0; i < 4000; i++) {
      // lengths drift so that 2-, 3- and 4-byte characters land on every chunk edge sooner or later
      const body = `${turn}:${i}:${'x'.repeat(i % 97)}${['é', '€', '😀', '\u0000', ''][i % 5].repeat(i % 13)}`;
      sent.push(`${JSON.stringify({ body })}\n`);
      w.write(sent[sent.length - 1]);
    }
    // one line longer than a chunk (64 KiB): a write of its own
    sent.push(`${'y'.repeat(70_000)}\n`);
    w.write(sent[sent.length - 1]);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await w.drain();
  assert.equal(readFileSync(file, 'utf8'), sent.join(''));
  assert.equal(w.dropped, 0);
  // close() after more lines: they are written first, in order
  for (let i = 0; i < 1000; i++) {
    sent.push(`late ${i}\n`);
    w.write(sent[sent.length - 1]);
  }
  w.close();
  w.write('after close\n');
  await w.drain();
  assert.equal(readFileSync(file, 'utf8'), sent.join(''));
});

test('pipe whose reader stops: lines past the bound are dropped and counted, memory stays bounded, the rest arrive whole and in order', async (t) => {
  const dir = tempDir(t);
  const fifo = path.join(dir, 'fifo');
  const made = spawnSync('mkfifo', [fifo]);
  assert.equal(made.status, 0, String(made.stderr));
  // read-write and non-blocking: a full pipe answers EAGAIN (as a non-blocking stdout does), nobody reads yet
  const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
  let fdOpen = true;
  t.after(() => {
    if (fdOpen) closeSync(fd);
  });
  const bound = 32 * 1024;
  const w = new LineWriter(fd, bound);
  const sent: string[] = [];
  let maxBuffered = 0;
  for (let turn = 0; turn < 20; turn++) {
    for (let i = 0; i < 500; i++) {
      const line = `{"turn":${turn},"i":${i},"pad":"${'p'.repeat(80)}"}\n`;
      sent.push(line);
      w.write(line);
      maxBuffered = Math.max(maxBuffered, w.buffered);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  // 20 x 500 lines of ~110 bytes = ~1.1 MB against a 64 KiB pipe and a 32 KiB bound
  assert.ok(w.dropped > 0, 'lines were dropped');
  assert.ok(maxBuffered <= bound, `held ${maxBuffered} bytes, bound ${bound}`);

  // now a reader: what was kept arrives, whole lines, in the order written
  const reader = createReadStream(fifo);
  const parts: Buffer[] = [];
  reader.on('data', (c) => parts.push(c as Buffer));
  const ended = new Promise<void>((resolve) => reader.on('close', () => resolve()));
  await w.drain();
  closeSync(fd); // the last writer: the reader gets EOF
  fdOpen = false;
  await ended;
  const got = Buffer.concat(parts).toString('utf8').split('\n');
  assert.equal(got.pop(), '');
  assert.equal(got.length + w.dropped, sent.length, 'every line either arrived or was counted as dropped');
  let at = 0;
  for (const line of got) {
    const found = sent.indexOf(`${line}\n`, at);
    assert.ok(found >= at, `line out of order or cut: ${line.slice(0, 60)}`);
    at = found + 1;
  }
});

test('file: a line in each of 300 turns: at most one write per FLUSH_MS (plus the first and the drain), every line whole and in order', async (t) => {
  const file = path.join(tempDir(t), 'paced.log');
  const w = new LineWriter(file);
  const sent: string[] = [];
  const started = Date.now();
  for (let turn = 0; turn < 300; turn++) {
    sent.push(`{"turn":${turn}}\n`);
    w.write(sent[sent.length - 1]);
    await new Promise((resolve) => setImmediate(resolve));
  }
  const elapsed = Date.now() - started;
  await w.drain();
  w.close();
  assert.equal(readFileSync(file, 'utf8'), sent.join(''));
  assert.equal(w.dropped, 0);
  // a write per turn (or per write completion) would be tens to hundreds here, however fast the machine
  assert.ok(w.writes <= Math.ceil(elapsed / FLUSH_MS) + 2, `${w.writes} writes for 300 turns in ${elapsed} ms`);
});
