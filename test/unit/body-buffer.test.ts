// handlers/body-buffer.ts on a real file system (a temp folder of the test's own), and its config: `body_buffer`
// defaults, and `portico check` refusing bad values with their YAML path and line.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { close, closeSync, constants as fsConstants, fstatSync, mkdtempSync, open, openSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configSchema } from '../../src/config/schema.js';
import { BodyBuffer, bodyBufferStats, type BodyBufferOwner, type BodyBufferSettings } from '../../src/handlers/body-buffer.js';
import { statusOf, type ProxyError } from '../../src/core/errors.js';
import { CLI } from '../helpers/paths.js';
import { until } from '../helpers/until.js';

function folder(t: TestContext): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-body-buffer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `data` as a chunked body, cut into chunks of `size` (a chunk extension on every other one) and a trailer. */
function chunked(data: Buffer, size: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0, n = 0; i < data.length; i += size, n++) {
    const part = data.subarray(i, i + size);
    out.push(Buffer.from(`${part.length.toString(16)}${n % 2 === 1 ? ';x=y' : ''}\r\n`), part, Buffer.from('\r\n'));
  }
  out.push(Buffer.from('0\r\nX-Sum: 1\r\n\r\n'));
  return Buffer.concat(out);
}

/** An owner that records what the buffer told it. */
class Recorder implements BodyBufferOwner {
  ready = false;
  failed: ProxyError | null = null;
  #failed: (err: ProxyError) => void = () => {};
  /** Resolves with the failure the buffer reports. */
  readonly failure = new Promise<ProxyError>((resolve) => (this.#failed = resolve));
  pauses = 0;
  bufferPaused(paused: boolean): void {
    if (paused) this.pauses++;
  }
  bufferReady(): void {
    this.ready = true;
  }
  bufferFailed(err: ProxyError): void {
    this.failed = err;
    this.#failed(err);
  }
}

/** Everything a replay gives, with the sink saying "full" every other time and resuming on a later turn. */
function replayAll(b: BodyBuffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    let n = 0;
    const r = b.replay({
      replayData(data) {
        got.push(Buffer.from(data));
        if (++n % 2 === 0) {
          setImmediate(() => r.resume());
          return false;
        }
        return true;
      },
      replayEnd: () => resolve(Buffer.concat(got)),
      replayFailed: reject,
    });
  });
}

/** Descriptors of this process open into `dir`, as [fd, path]. */
function openInto(dir: string): Array<[number, string]> {
  const out: Array<[number, string]> = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const p = readlinkSync(`/proc/self/fd/${fd}`);
      if (p.startsWith(`${dir}/`)) out.push([Number(fd), p]);
    } catch {
      // the descriptor readdir itself used, closed since
    }
  }
  return out;
}

/** Descriptors of this process open into `dir`. */
function fdsInto(dir: string): string[] {
  return openInto(dir).map(([, p]) => p);
}

const settings = (dir: string, over: Partial<BodyBufferSettings> = {}): BodyBufferSettings => ({ memory: 16 * 1024, dir, diskMax: 1024 ** 3, maxBody: Infinity, diskTimeout: 30_000, ...over });

/**
 * Stalls every thread of libuv's pool, which each fs call of body-buffer.ts goes through, the way a stuck disk
 * does: each thread takes an open() of a FIFO for reading, which blocks until a writer comes, and fs calls made
 * after wait behind them. Returns the release (also run after the test, pass or fail). Why this and not a disk:
 * O_TMPFILE needs a real folder on a file system that has it (no FIFO, no /proc trick), and a disk that stalls on
 * cue needs root and kernel parts (dm-delay, FUSE) tests do not have; this stalls the real path of every write
 * and replaces nothing of body-buffer.ts. (libuv sends fs calls to io_uring only with UV_USE_IO_URING=1, off in
 * Node 20 by default: with it set, this test reports that the write was not stalled.)
 */
function stallThreadPool(t: TestContext): () => Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-stall-'));
  // as many blocked opens as threads, or more: whatever is queued after them waits either way
  const threads = Math.max(4, Number(process.env.UV_THREADPOOL_SIZE) || 4);
  const fifos: string[] = [];
  const opened: Array<Promise<void>> = [];
  for (let i = 0; i < threads; i++) {
    const fifo = path.join(dir, `stall-${i}`);
    execFileSync('mkfifo', [fifo]);
    fifos.push(fifo);
    opened.push(new Promise((resolve) => open(fifo, 'r', (err, fd) => (err === null ? close(fd, () => resolve()) : resolve()))));
  }
  let released: Promise<void> | null = null;
  const release = (): Promise<void> => {
    // O_RDWR on a FIFO never blocks and counts as its writer: each blocked open returns, a queued one will not block
    released ??= (async () => {
      const writers = fifos.map((f) => openSync(f, fsConstants.O_RDWR));
      await Promise.all(opened);
      for (const fd of writers) closeSync(fd);
    })();
    return released;
  };
  t.after(async () => {
    await release(); // before the FIFOs go: a thread left blocked would hang every later fs call
    rmSync(dir, { recursive: true, force: true });
  });
  return release;
}

test('a body within `memory` stays in memory, whatever way its bytes are split; the replay gives it back whole', async (t) => {
  const dir = folder(t);
  const data = randomBytes(10_000);
  const wire = chunked(data, 777);
  for (const step of [1, 7, 4096, wire.length]) {
    const owner = new Recorder();
    const b = new BodyBuffer(settings(dir), owner);
    let used = 0;
    for (let i = 0; i < wire.length; i += step) used += b.push(wire.subarray(i, i + step), 0);
    assert.equal(used, wire.length, `step ${step}`);
    assert.ok(owner.ready && b.ready && b.clientDone);
    assert.equal(b.onDisk, false);
    assert.equal(b.length, data.length);
    assert.ok((await replayAll(b)).equals(data), `step ${step}`);
    b.dispose();
  }
  assert.deepEqual(readdirSync(dir), []);
});

test('past `memory` the body goes to an unnamed temp file: replayed equal with backpressure, closed and released on dispose', async (t) => {
  const dir = folder(t);
  const before = bodyBufferStats();
  const data = randomBytes(3 * 1024 * 1024 + 123);
  const wire = chunked(data, 100_000);
  const owner = new Recorder();
  const b = new BodyBuffer(settings(dir), owner);
  // pipelined bytes after the body are not its own
  const used = b.push(Buffer.concat([wire, Buffer.from('GET / HTTP/1.1\r\n')]), 0);
  assert.equal(used, wire.length);
  assert.ok(b.clientDone && b.onDisk);
  assert.ok(owner.pauses > 0, 'the client is paused while writes wait');
  await until('the body written', () => owner.ready, (r) => r);
  assert.deepEqual(readdirSync(dir), [], 'the file has no name');
  assert.equal(fdsInto(dir).length, 1);
  assert.equal(bodyBufferStats().diskBytes - before.diskBytes, data.length);
  const back = await replayAll(b);
  assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
  b.dispose();
  await until('the file closed', () => fdsInto(dir).length, (n) => n === 0);
  assert.equal(bodyBufferStats().diskBytes, before.diskBytes);
  assert.equal(bodyBufferStats().file - before.file, 1);
});

test('limits.body_size: refused (413) from the size line that passes it; disk_max: refused (503); bad framing: 400', (t) => {
  const dir = folder(t);
  const over = new BodyBuffer(settings(dir, { maxBody: 100 }), new Recorder());
  assert.equal(over.push(Buffer.from('50\r\n'), 0), 4, '80 bytes: within');
  assert.equal(over.push(Buffer.from(`${'x'.repeat(80)}\r\n15\r\n`), 0), -1, '80 + 21 announced');
  assert.equal(over.error.code, 'CLIENT_BODY_TOO_LARGE');
  over.dispose();
  const full = new BodyBuffer(settings(dir, { memory: 1024, diskMax: 4096 }), new Recorder());
  assert.equal(full.push(chunked(randomBytes(8192), 1000), 0), -1);
  assert.equal(full.error.code, 'BODY_BUFFER_FULL');
  full.dispose();
  for (const bad of ['zz\r\n', '-1\r\n', '5\nhello', '5\r\nhelloXX', '0\r\nTransfer-Encoding: x\r\n\r\n']) {
    const b = new BodyBuffer(settings(dir), new Recorder());
    assert.equal(b.push(Buffer.from(bad), 0), -1, JSON.stringify(bad));
    assert.equal(b.error.code, 'CLIENT_BAD_REQUEST');
    b.dispose();
  }
});

test('a disposed buffer mid-write closes its file once the write in flight is done (never a reused descriptor)', async (t) => {
  const dir = folder(t);
  const b = new BodyBuffer(settings(dir), new Recorder());
  const part = randomBytes(512 * 1024);
  b.push(Buffer.from(`${part.length.toString(16)}\r\n`), 0);
  b.push(part, 0);
  b.dispose();
  await until('the file closed', () => fdsInto(dir).length, (n) => n === 0);
  assert.deepEqual(readdirSync(dir), []);
});

test('a temp file write stuck on the disk fails the request (500 BODY_BUFFER_TIMEOUT) after disk_timeout; its file closes once the write returns', async (t) => {
  const dir = folder(t);
  const before = bodyBufferStats();
  const owner = new Recorder();
  const b = new BodyBuffer(settings(dir, { memory: 1024, diskTimeout: 200 }), owner);
  const wire = chunked(randomBytes(1000 + 100 + 70_000), 1000);
  // chunk 0 (1000 bytes) is held in memory; chunk 1 passes `memory`: the temp file opens, chunk 0 is its first write
  const cut = wire.indexOf('\r\n', wire.indexOf('\r\n', 1000) + 2) + 2 + 500;
  b.push(wire.subarray(0, cut), 0);
  const [[fd]] = await until('the first bytes on disk', () => openInto(dir), (o) => o.length === 1 && fstatSync(o[0][0]).size === 1000);
  const release = stallThreadPool(t);
  // the next 64 KiB fill a stage: this write waits behind the stalled threads, as on a stuck disk
  b.push(wire.subarray(cut, cut + 70_000), 0);
  const err = await Promise.race([owner.failure, until('the write timed out', () => owner.failed, (f) => f !== null, 10_000)]);
  assert.equal(err?.code, 'BODY_BUFFER_TIMEOUT');
  assert.equal(statusOf('BODY_BUFFER_TIMEOUT'), 500);
  assert.equal(err?.side, 'internal');
  assert.match(err?.message ?? '', /write .* took over 200ms \(body_buffer\.disk_timeout\)/);
  assert.equal(owner.ready, false);
  b.dispose(); // the handler ends the request: memory and the disk reservation go at once
  assert.equal(bodyBufferStats().diskBytes, before.diskBytes);
  // the write is still in flight on the descriptor: closing it now could let the write land in a reused one
  assert.deepEqual(openInto(dir).map(([n]) => n), [fd], 'kept open while the write is in flight');
  await release();
  await until('the file closed once the write returned', () => fdsInto(dir).length, (n) => n === 0);
  assert.deepEqual(readdirSync(dir), [], 'nothing named left');
});

test('a replay read stuck on the disk fails the replay (500 BODY_BUFFER_TIMEOUT)', async (t) => {
  const dir = folder(t);
  // the body written whole, then the replay's read stalls
  const owner = new Recorder();
  const b = new BodyBuffer(settings(dir, { memory: 1024, diskTimeout: 200 }), owner);
  const data = randomBytes(64 * 1024);
  b.push(chunked(data, 10_000), 0);
  await until('the body written', () => owner.ready, (r) => r);
  const release = stallThreadPool(t);
  let replayed: ProxyError | 'ended' | null = null;
  replayAll(b).then(
    () => (replayed = 'ended'),
    (e: ProxyError) => (replayed = e),
  );
  const err = await until('the read timed out', () => replayed, (r) => r !== null, 10_000);
  assert.notEqual(err, 'ended', 'the read was not stalled');
  if (err === null || err === 'ended') return;
  assert.equal(err?.code, 'BODY_BUFFER_TIMEOUT');
  assert.match(err?.message ?? '', /read .* took over 200ms/);
  b.dispose();
  await release();
  await until('the file closed once the read returned', () => fdsInto(dir).length, (n) => n === 0);
});

test('a temp file open stuck on the disk fails the request (500 BODY_BUFFER_TIMEOUT); a file that opens late is closed', async (t) => {
  const dir = folder(t);
  const opener = new Recorder();
  const late = new BodyBuffer(settings(dir, { memory: 1024, diskTimeout: 200 }), opener);
  const releaseOpen = stallThreadPool(t);
  late.push(chunked(randomBytes(4096), 1000), 0);
  const openErr = await Promise.race([opener.failure, until('the open timed out', () => opener.failed, (f) => f !== null, 10_000)]);
  assert.equal(openErr?.code, 'BODY_BUFFER_TIMEOUT');
  assert.match(openErr?.message ?? '', /open .* took over 200ms/);
  late.dispose();
  await releaseOpen();
  await until('no temp file left open', () => fdsInto(dir).length, (n) => n === 0);
});

test('body_buffer: 16KiB in memory, the OS temp folder, 1GiB of disk per worker, 30s per disk wait by default', () => {
  const base = { listeners: [{ address: '127.0.0.1:0' }] };
  const c = configSchema.parse(base).body_buffer;
  assert.deepEqual(c, { memory: 16 * 1024, disk_max: 1024 ** 3, disk_timeout: 30_000 });
  assert.deepEqual(configSchema.parse({ ...base, body_buffer: { memory: '64KiB', temp_dir: 'tmp', disk_max: '10GiB', disk_timeout: '2s' } }).body_buffer, { memory: 65536, temp_dir: 'tmp', disk_max: 10 * 1024 ** 3, disk_timeout: 2000 });
});

test('portico check refuses bad body_buffer values with their YAML path and line', async (t) => {
  const dir = folder(t);
  writeFileSync(path.join(dir, 'a-file'), '');
  const check = (yaml: string) =>
    new Promise<{ code: number; stderr: string }>((resolve) => {
      const file = path.join(dir, 'bad.yaml');
      writeFileSync(file, `listeners:\n  - address: 127.0.0.1:0\n${yaml}`);
      execFile(process.execPath, [CLI, 'check', '-c', file], (err, _stdout, stderr) => resolve({ code: typeof err?.code === 'number' ? err.code : 0, stderr }));
    });
  const cases: Array<[string, RegExp]> = [
    ['body_buffer:\n  memory: 0B\n', /bad\.yaml:4:\d+ body_buffer\.memory: invalid size "0B"/],
    ['body_buffer:\n  memory: 16384\n', /bad\.yaml:4:\d+ body_buffer\.memory: size 16384 has no unit/],
    ['body_buffer:\n  memory: 1GiB\n', /bad\.yaml:4:\d+ body_buffer\.memory: at most 64MiB/],
    ['body_buffer:\n  disk_max: lots\n', /bad\.yaml:4:\d+ body_buffer\.disk_max: invalid size "lots"/],
    ['body_buffer:\n  temp_dir: a-file\n', /bad\.yaml:4:\d+ body_buffer\.temp_dir: .*a-file is not a folder/],
    ['body_buffer:\n  temp_dir: missing\n', /bad\.yaml:4:\d+ body_buffer\.temp_dir: .*missing does not exist/],
    ['body_buffer:\n  disk_timeout: 0s\n', /bad\.yaml:4:\d+ body_buffer\.disk_timeout: above 0/],
    ['body_buffer:\n  disk_timeout: soon\n', /bad\.yaml:4:\d+ body_buffer\.disk_timeout: invalid duration "soon"/],
    ['body_buffer:\n  spill: 1MiB\n', /bad\.yaml:4:\d+ body_buffer\.spill: unknown key "spill"/],
  ];
  for (const [yaml, message] of cases) {
    const r = await check(yaml);
    assert.equal(r.code, 1, yaml);
    assert.match(r.stderr, message, yaml);
  }
  assert.equal((await check('body_buffer:\n  temp_dir: .\n')).code, 0, 'a writable folder, relative to the config file');
});
