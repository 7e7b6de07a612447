// core/line-writer.ts on real files and a real pipe (a FIFO): lines come out whole, in order and byte for byte
// across chunk edges (multi-byte characters, lines longer than a chunk); a reader that stops reading makes the
// writer drop and count lines at its bound instead of holding more; drain() waits for the writes in flight, and
// close() writes everything it holds before it closes the file; lines of many turns share writes (pacing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openFifo } from '../helpers/fifo.js';
import { FILE_CHUNK, FLUSH_MS, LineWriter } from '../../src/core/line-writer.js';

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
    // one line longer than a chunk: a write of its own
    sent.push(`${'y'.repeat(FILE_CHUNK + 4000)}\n`);
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
  // read-write and non-blocking: a full pipe answers EAGAIN (as a non-blocking stdout does), nobody reads yet
  const pipe = openFifo(t, dir, 'fifo');
  const fifo = pipe.path;
  const fd = pipe.fd;
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
  pipe.close(); // the last writer: the reader gets EOF
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

test('file: lines given as bytes (writeBytes, the caller reusing its buffer at once) and as text mix whole and in order, across chunks', async (t) => {
  const file = path.join(tempDir(t), 'bytes.log');
  const w = new LineWriter(file);
  const sent: Buffer[] = [];
  const scratch = new Uint8Array(FILE_CHUNK + 8000);
  for (let turn = 0; turn < 3; turn++) {
    for (let i = 0; i < 3000; i++) {
      const text = `${JSON.stringify({ turn, i, pad: 'b'.repeat(i % 101), s: ['é', '😀', ''][i % 3] })}\n`;
      if (i % 3 === 0) {
        w.write(text);
      } else {
        // the line encoded into a buffer the caller overwrites right after: the writer must have copied it
        const n = Buffer.from(scratch.buffer).write(text, 0);
        w.writeBytes(scratch.subarray(0, n));
        scratch.fill(0x2a, 0, n);
      }
      sent.push(Buffer.from(text));
    }
    // a line longer than a chunk, as bytes: a write of its own
    const long = Buffer.from(`${'z'.repeat(FILE_CHUNK + 4000)}\n`);
    scratch.set(long);
    w.writeBytes(scratch.subarray(0, long.length));
    scratch.fill(0x2a, 0, long.length);
    sent.push(long);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await w.drain();
  w.close();
  assert.equal(w.dropped, 0);
  assert.ok(readFileSync(file).equals(Buffer.concat(sent)), 'file bytes = the lines in order');
});

test('pipe: lines given while a write waits on a full pipe leave after it, with no further call (its completion takes them)', async (t) => {
  const dir = tempDir(t);
  const pipe = openFifo(t, dir, 'fifo');
  const fifo = pipe.path;
  const fd = pipe.fd;
  const w = new LineWriter(fd, 4 * 1024 * 1024);
  const sent: string[] = [];
  // more than the pipe holds (64 KiB): the writer's write is left waiting (EAGAIN, retried) with nobody reading
  for (let i = 0; i < 1200; i++) {
    sent.push(`{"fill":${i},"pad":"${'f'.repeat(90)}"}\n`);
    w.write(sent[sent.length - 1]);
    if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise((resolve) => setTimeout(resolve, 2 * FLUSH_MS));
  // a few lines in later turns, while that write still waits; then nothing more is asked of the writer
  for (let i = 0; i < 5; i++) {
    sent.push(`{"late":${i}}\n`);
    w.write(sent[sent.length - 1]);
    await new Promise((resolve) => setImmediate(resolve));
  }
  const want = Buffer.byteLength(sent.join(''));
  const reader = createReadStream(fifo);
  const parts: Buffer[] = [];
  let got = 0;
  const all = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${want} bytes arrived`)), 5000);
    reader.on('data', (c) => {
      parts.push(c as Buffer);
      got += (c as Buffer).length;
      if (got >= want) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  await all;
  reader.destroy();
  pipe.close();
  assert.equal(w.dropped, 0);
  assert.equal(Buffer.concat(parts).toString('utf8'), sent.join(''));
});

test('file: flushSync() writes every line it holds before it returns (process exit: no write left to libuv\'s thread)', (t) => {
  const file = path.join(tempDir(t), 'exit.log');
  const w = new LineWriter(file);
  const sent: string[] = [];
  // a partial chunk (less than a chunk) that no turn has flushed yet
  for (let i = 0; i < 500; i++) {
    sent.push(`${JSON.stringify({ i, pad: 'e'.repeat(60) })}\n`);
    w.write(sent[sent.length - 1]);
  }
  w.flushSync();
  assert.equal(readFileSync(file, 'utf8'), sent.join(''));
  w.close();
});

test('file: lines held by deferring writers (defer, claim/commit) come out whole and in order with write() and writeBytes() lines, across chunks', async (t) => {
  const file = path.join(tempDir(t), 'deferred.log');
  const w = new LineWriter(file);
  const sent: Buffer[] = [];
  const held: Buffer[][] = [[], []];
  // a holder writes its lines straight into the chunk when there is room, else gives them as bytes
  const writeHeld = (mine: Buffer[]) => {
    for (const line of mine.splice(0)) {
      const chunk = w.claim();
      if (chunk !== null && chunk.length - w.claimedAt >= line.length) {
        line.copy(chunk, w.claimedAt);
        w.commit(line.length);
      } else {
        w.writeBytes(line);
      }
    }
  };
  const holders = [() => writeHeld(held[0]), () => writeHeld(held[1])];
  for (let turn = 0; turn < 4; turn++) {
    for (let i = 0; i < 3000; i++) {
      const line = Buffer.from(`${JSON.stringify({ turn, i, pad: 'd'.repeat(i % 89), s: ['é', '😀', ''][i % 3] })}\n`);
      sent.push(line);
      const kind = i % 5;
      if (kind === 0) w.write(line.toString('utf8'));
      else if (kind === 1) w.writeBytes(line);
      else {
        // two holders: deferring one pulls the other's lines first, so the order given is the order written
        const h = kind === 2 ? 0 : 1;
        held[h].push(line);
        w.defer(holders[h]);
      }
    }
    // lines still held at the end of a turn leave with no further call (the writer pulls them)
    await new Promise((resolve) => setImmediate(resolve));
  }
  held[0].push(Buffer.from('{"last":0}\n'));
  sent.push(held[0][0]);
  w.defer(holders[0]);
  await w.drain();
  w.close();
  assert.equal(w.dropped, 0);
  assert.ok(readFileSync(file).equals(Buffer.concat(sent)), 'file bytes = the lines in the order given');
});

test('pipe: lines held by a deferring writer alone leave by themselves (the writer pulls them at the end of the turn)', async (t) => {
  const dir = tempDir(t);
  const pipe = openFifo(t, dir, 'fifo');
  const fifo = pipe.path;
  const fd = pipe.fd;
  const w = new LineWriter(fd);
  const reader = createReadStream(fifo);
  let text = '';
  const line = '{"held":1}\n';
  // nothing else is given to the writer, no write is in flight: only its own flush can pull the line
  w.defer(() => {
    const chunk = w.claim();
    assert.ok(chunk !== null);
    const n = chunk.write(line, w.claimedAt);
    w.commit(n);
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the held line did not leave: ${JSON.stringify(text)}`)), 5000);
    reader.on('data', (c) => {
      text += (c as Buffer).toString('utf8');
      if (text === line) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  reader.destroy();
  pipe.close();
  assert.equal(text, line);
});
