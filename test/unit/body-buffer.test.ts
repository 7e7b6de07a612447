// handlers/body-buffer.ts on a real file system (a temp folder of the test's own), and its config: `body_buffer`
// defaults, and `portico check` refusing bad values with their YAML path and line.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configSchema } from '../../src/config/schema.js';
import { BodyBuffer, bodyBufferStats, type BodyBufferOwner, type BodyBufferSettings } from '../../src/handlers/body-buffer.js';
import type { ProxyError } from '../../src/core/errors.js';
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
  pauses = 0;
  bufferPaused(paused: boolean): void {
    if (paused) this.pauses++;
  }
  bufferReady(): void {
    this.ready = true;
  }
  bufferFailed(err: ProxyError): void {
    this.failed = err;
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

/** Descriptors of this process open into `dir`. */
function fdsInto(dir: string): string[] {
  return readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return '';
      }
    })
    .filter((p) => p.startsWith(`${dir}/`));
}

const settings = (dir: string, over: Partial<BodyBufferSettings> = {}): BodyBufferSettings => ({ memory: 16 * 1024, dir, diskMax: 1024 ** 3, maxBody: Infinity, ...over });

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

test('body_buffer: 16KiB in memory, the OS temp folder, 1GiB of disk per worker by default', () => {
  const base = { listeners: [{ address: '127.0.0.1:0' }] };
  const c = configSchema.parse(base).body_buffer;
  assert.deepEqual(c, { memory: 16 * 1024, disk_max: 1024 ** 3 });
  assert.deepEqual(configSchema.parse({ ...base, body_buffer: { memory: '64KiB', temp_dir: 'tmp', disk_max: '10GiB' } }).body_buffer, { memory: 65536, temp_dir: 'tmp', disk_max: 10 * 1024 ** 3 });
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
    ['body_buffer:\n  spill: 1MiB\n', /bad\.yaml:4:\d+ body_buffer\.spill: unknown key "spill"/],
  ];
  for (const [yaml, message] of cases) {
    const r = await check(yaml);
    assert.equal(r.code, 1, yaml);
    assert.match(r.stderr, message, yaml);
  }
  assert.equal((await check('body_buffer:\n  temp_dir: .\n')).code, 0, 'a writable folder, relative to the config file');
});
