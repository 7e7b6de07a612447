// Native I/O's peek mode (io.cc kModePeek, for `handoff: adopt`): an accepted connection is read without being
// consumed, so it can still be handed whole to a new owner (takeWhole) after JS saw its first bytes; commit()
// turns it into an ordinary connection. Real loopback sockets: successive peeks deliver successive bytes (no
// repeat, no spin on a peeked socket that stays readable), takeWhole's fd reads the stream from its first byte,
// commit drops what was seen (a large stream flows after it), a write commits, EOF while peeking, a close after
// a peek is a FIN (not a reset), and fds come back. Skipped (loudly) where native I/O or the kernel's TCP peek
// offset (Linux >= 6.10) is missing; PORTICO_REQUIRE_PEERS=1 (CI) turns that into a failure.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { listenNative, nativeIoLive, nativePeekAvailable, type NativeListener, type NativeSocket } from '../../src/native/io.js';
import { native } from '../../src/native/addon.js';
import { needPeer } from '../helpers/peers.js';
import { until } from '../helpers/until.js';

const PHASE_MS = 10_000;

/** A peek-mode native listener on 127.0.0.1 port 0; accepted sockets come out of `next()`. */
async function peekListener(t: TestContext): Promise<{ port: number; next(): Promise<NativeSocket> }> {
  const fd = native()!.reusePortListen('127.0.0.1', 0, 64);
  const queue: NativeSocket[] = [];
  const waiters: Array<(s: NativeSocket) => void> = [];
  const open = new Set<NativeSocket>();
  const l: NativeListener | undefined = listenNative(fd, 'peek', (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    const w = waiters.shift();
    if (w !== undefined) w(s);
    else queue.push(s);
  });
  assert.ok(l !== undefined);
  t.after(() => {
    for (const s of open) s.destroy();
    l.close();
  });
  return {
    port: l.address().port,
    next: () => {
      const s = queue.shift();
      if (s !== undefined) return Promise.resolve(s);
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

function peekTest(name: string, fn: (t: TestContext) => Promise<void>): void {
  test(name, { timeout: 30_000 }, async (t) => {
    if (!nativePeekAvailable()) {
      if (process.env.PORTICO_NATIVE === '0' || process.env.PORTICO_NATIVE_IO === '0') return void t.skip('native I/O switched off');
      if (!needPeer(t, 'native I/O with a TCP peek offset (the addon, Linux >= 6.10)', false)) return;
    }
    await fn(t);
  });
}

function client(t: TestContext, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => resolve(c));
    c.once('error', reject);
    t.after(() => c.destroy());
  });
}

function dataOf(s: { on(e: 'data', f: (b: Buffer) => void): unknown }): Buffer[] {
  const chunks: Buffer[] = [];
  s.on('data', (b: Buffer) => chunks.push(b));
  return chunks;
}

const text = (chunks: Buffer[]) => Buffer.concat(chunks).toString();

peekTest('successive peeks deliver successive bytes; a peeked socket does not spin the loop; takeWhole hands over the whole stream', async (t) => {
  const l = await peekListener(t);
  const fdsBefore = readdirSync('/proc/self/fd').length;
  const liveBefore = nativeIoLive();
  const c = await client(t, l.port);
  c.write('hello ');
  const s = await l.next();
  assert.equal(s.peeking, true);
  const seen = dataOf(s);
  await until('the first peek', () => text(seen), (x) => x === 'hello ', PHASE_MS);
  // the bytes are still queued in the kernel (readable): level triggering would wake the loop without end
  const cpu = process.cpuUsage();
  const wall = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const used = process.cpuUsage(cpu);
  const spent = (used.user + used.system) / 1000;
  t.diagnostic(`${spent.toFixed(1)} ms CPU over ${Date.now() - wall} ms with a peeked socket readable`);
  assert.ok(spent < 150, `the process spun (${spent} ms CPU in 300 ms): the peeked socket woke the loop again and again`);
  c.write('world');
  await until('the second peek: only the new bytes', () => text(seen), (x) => x === 'hello world', PHASE_MS);
  const fd = s.takeWhole();
  assert.ok(typeof fd === 'number' && fd >= 0);
  assert.equal(s.destroyed, true);
  // the new owner reads the stream from its first byte
  const owner = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  const got = dataOf(owner);
  c.end('!');
  await new Promise((resolve) => owner.once('end', resolve));
  assert.equal(text(got), 'hello world!');
  c.resume();
  owner.end('bye');
  await new Promise((resolve) => c.once('end', resolve));
  owner.destroy();
  c.destroy();
  await until('fds back', () => [readdirSync('/proc/self/fd').length, nativeIoLive()], ([f, live]) => f <= fdsBefore && live === liveBefore, PHASE_MS);
});

peekTest('commit drops what JS saw and reads on: 8 MiB after it arrive once, intact', async (t) => {
  const l = await peekListener(t);
  const c = await client(t, l.port);
  c.write('GET / HTTP/1.1\r\n\r\n');
  const s = await l.next();
  const seen = dataOf(s);
  await until('the head peeked', () => text(seen), (x) => x.endsWith('\r\n\r\n'), PHASE_MS);
  s.commit();
  assert.equal(s.peeking, false);
  assert.equal(s.takeWhole(), undefined, 'a committed connection cannot be handed over whole');
  const body = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < body.length; i += 4096) body.writeUInt32BE(i, i);
  c.end(body);
  await new Promise((resolve) => s.once('end', resolve));
  const all = Buffer.concat(seen);
  assert.equal(all.length, 18 + body.length, 'the head once, then the body once');
  assert.equal(createHash('sha256').update(all.subarray(18)).digest('hex'), createHash('sha256').update(body).digest('hex'));
});

peekTest('a write commits; EOF while peeking; a close after a peek is a FIN, not a reset', async (t) => {
  const l = await peekListener(t);
  // a write: what was seen is consumed, the next bytes come once
  const c1 = await client(t, l.port);
  c1.write('one');
  const s1 = await l.next();
  const seen1 = dataOf(s1);
  await until('peeked', () => text(seen1), (x) => x === 'one', PHASE_MS);
  const answers = dataOf(c1);
  s1.write('ok');
  assert.equal(s1.peeking, false);
  await until('the answer', () => text(answers), (x) => x === 'ok', PHASE_MS);
  c1.write('two');
  await until('the next bytes, once', () => text(seen1), (x) => x === 'onetwo', PHASE_MS);
  // EOF while peeking: the bytes, then 'end'
  const c2 = await client(t, l.port);
  c2.end('last');
  const s2 = await l.next();
  const seen2 = dataOf(s2);
  await new Promise((resolve) => s2.once('end', resolve));
  assert.equal(text(seen2), 'last');
  // a close after a peek: the client sees a clean end (unread bytes at close would make the kernel send RST)
  const c3 = await client(t, l.port);
  const err: Error[] = [];
  c3.on('error', (e) => err.push(e));
  c3.write('x'.repeat(1000));
  const s3 = await l.next();
  const seen3 = dataOf(s3);
  await until('peeked', () => text(seen3).length, (n) => n === 1000, PHASE_MS);
  s3.destroy();
  await new Promise((resolve) => c3.once('end', resolve));
  assert.deepEqual(err, [], 'no ECONNRESET');
});
