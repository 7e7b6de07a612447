// The addon's L4 part (l4.cc) and the end of a replaced compile: JavaScript drops a forgotten compile when
// l4Active answers null, and names each closed-connection record by its compile, so null must not come while a
// record of that compile still waits for its batch (the batch runs on this thread, l4Active too: a record made by
// l4Active's own drain would otherwise reach JavaScript after its compile was dropped, and its log line be lost).
// Driven here without a Portico: a listener on the addon, a connection on the first compile, a reload (l4Use, then
// l4Forget), the connection closed, then l4Active called while this thread holds the batch back. Skipped (loudly)
// without the addon's L4 part; CI makes that a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { native } from '../../src/native/addon.js';
import { listenNative } from '../../src/native/io.js';
import { nativeL4, type L4Batch, type L4Compiled } from '../../src/native/l4.js';
import { needNativeL4 } from '../helpers/native-io.js';
import { until } from '../helpers/until.js';

/** Spins (this thread never yields) until `done` or `ms` passed; the last answer. */
function spin<T>(ms: number, call: () => T, done: (v: T) => boolean): T {
  const end = performance.now() + ms;
  let v = call();
  while (!done(v) && performance.now() < end) v = call();
  return v;
}

/**
 * A child process holding both ends, so that they run while this thread spins: an echo server (its port printed),
 * then, given the L4 port on stdin, a client that sends `x`, reads it back, prints `ready`, and ends at SIGUSR2.
 */
const CHILD = `
const net = require('node:net');
const echo = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1', () => console.log(echo.address().port));
process.stdin.once('data', (d) => {
  const c = net.connect(Number(d.toString()), '127.0.0.1', () => c.write('x'));
  c.once('data', () => console.log('ready'));
  c.on('close', () => process.exit(0));
  process.on('SIGUSR2', () => c.end());
});`;

test('l4Active answers null for a forgotten compile only once the record of its last connection went out in a batch', { timeout: 30_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const addon = nativeL4().addon!;
  const batches: L4Batch[] = [];
  addon.l4Init((b) => batches.push(b));

  const child = spawn(process.execPath, ['-e', CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => child.kill());
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const echoPort = Number((await lines.next()).value);
  const compile = (): number => {
    const spec: L4Compiled = { targets: [{ ip: '127.0.0.1', port: echoPort, weight: 1 }], balance: 'round_robin', connectMs: 5_000, idleMs: 30_000, proxy: 0 };
    const id = addon.l4Compile(spec);
    addon.l4Targets(id, [true], [0]);
    return id;
  };

  // a listening fd (its port learnt through native accept, then released) served by the L4 thread
  const fd = native()!.reusePortListen('127.0.0.1', 0, 128);
  const probe = listenNative(fd, 'read', () => assert.fail('nothing connects to the probe'))!;
  const port = probe.address().port;
  assert.equal(probe.release(), fd);
  const first = compile();
  const listener = addon.l4Listen(fd, first);
  t.after(() => addon.l4CloseAll());
  t.after(() => addon.l4Close(listener));

  child.stdin.write(String(port));
  assert.equal((await lines.next()).value, 'ready');
  await until('the connection counted', () => addon.l4Active(first), (v) => v?.[0] === 1, 5_000, 5);

  // a reload: the listener's next connections take a new compile, the first is forgotten (its connection keeps it)
  addon.l4Use(listener, compile());
  addon.l4Forget(first);
  // from here this thread does not yield (no batch can run) while the child ends the connection
  child.kill('SIGUSR2');
  const after = spin(5_000, () => addon.l4Active(first), (v) => v === null || v.every((n) => n === 0));
  assert.deepEqual(after, [0], 'the count drops to 0 before the compile goes (null here: its record is still unsent)');
  const later = spin(100, () => addon.l4Active(first), (v) => v === null);
  assert.deepEqual(later, [0], 'no null while the record waits for its batch');
  assert.equal(batches.flatMap((b) => b.closed).length, 0, 'no batch ran while this thread spun');

  // this thread yields: the batch with the record comes, then the compile goes
  const closed = await until('the record of the first compile', () => batches.flatMap((b) => b.closed), (records) => records.some((r) => r.config === first), 5_000, 5);
  const record = closed.find((r) => r.config === first)!;
  assert.deepEqual([record.bytesUp, record.bytesDown, record.target], [1, 1, 0]);
  assert.equal(addon.l4Active(first), null);
});
