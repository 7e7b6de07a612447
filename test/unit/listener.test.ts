// The listening-socket strategies on real loopback sockets, in one process: a socket bound by bindShared()
// refuses connections until something listens on it (the primary never accepts), a worker-side
// listenOnHandle() then accepts on it, and bind failures name the address and the reason. Sharing across
// processes (and closing each copy) is covered by test/e2e/processes.test.ts.
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { execFileSync, spawn } from 'node:child_process';
import { bindShared, boundAddress, listenOnHandle, listenStrategy, openOnHandle, type SharedHandle } from '../../src/accept/listener.js';

function connectOutcome(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    socket.setTimeout(5_000, () => {
      socket.destroy();
      resolve('timeout');
    });
    socket.once('data', (d: Buffer) => {
      socket.destroy();
      resolve(`served:${d.toString()}`);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** The raw handle inside a SharedHandle, as a worker receives it over IPC. */
function rawOf(handle: SharedHandle): unknown {
  let raw: unknown;
  const fake = { send: (_msg: unknown, h: unknown, cb: (err: Error | null) => void) => ((raw = h), cb(null)), connected: true };
  void handle.sendTo(fake as never, {});
  return raw;
}

/** Node's listener on a fresh shared handle, closing each connection it accepts (after `costMs` of busy work). */
async function countingListener(costMs = 0): Promise<{ port: number; listening: Awaited<ReturnType<typeof openOnHandle>>; accepted: () => number }> {
  const handle = await bindShared('127.0.0.1', 0);
  let accepted = 0;
  const listening = await openOnHandle(rawOf(handle), (socket) => {
    accepted++;
    socket.destroy();
    const until = performance.now() + costMs;
    while (performance.now() < until);
  }, { allowHalfOpen: false }, (err) => assert.fail(err));
  return { port: handle.bound.port, listening, accepted: () => accepted };
}

test('the strategy follows the Node version: reusePort from 22.12 on, a shared handle before', () => {
  assert.equal(listenStrategy('20.20.2'), 'shared-handle');
  assert.equal(listenStrategy('22.11.0'), 'shared-handle');
  assert.equal(listenStrategy('22.12.0'), 'reuse-port');
  assert.equal(listenStrategy('23.0.0'), 'reuse-port');
  assert.equal(listenStrategy('24.4.1'), 'reuse-port');
});

test('a shared handle is bound but refuses connections until a worker listens; then the worker accepts', async (t) => {
  const handle = await bindShared('127.0.0.1', 0);
  // In one process the "worker" server adopts the primary's handle object itself (IPC would pass a copy),
  // so closing that server closes the handle too; the e2e tests cover closing each copy separately.
  assert.equal(handle.bound.address, '127.0.0.1');
  assert.ok(handle.bound.port > 0);
  assert.equal(await connectOutcome(handle.bound.port), 'ECONNREFUSED', 'the primary must not be listening');

  const server = await listenOnHandle(rawOf(handle), (socket) => socket.end('hello'), { allowHalfOpen: false });
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  assert.equal(boundAddress(server).port, handle.bound.port);
  assert.equal(await connectOutcome(handle.bound.port), 'served:hello');
});

test("Node's listener ends after accepting the clients queued while the event loop was busy (none reset)", async () => {
  const { port, listening, accepted } = await countingListener();
  // 20 clients connect while this event loop is blocked (the kernel completes their handshakes into the accept
  // queue; libuv has not seen them), then the end is called in the same run, as a stop message would call it
  const clients = `let n = 0; for (let i = 0; i < 20; i++) require('node:net').connect(${port}, '127.0.0.1', () => { if (++n === 20) process.exit(0); }).on('error', (e) => { console.error(e.message); process.exit(1); });`;
  execFileSync(process.execPath, ['-e', clients], { timeout: 10_000 });
  await listening.end();
  assert.equal(accepted(), 20, 'every queued client accepted before the close');
});

test("Node's listener end is bounded while clients keep arriving faster than it accepts", async () => {
  // each accept costs 2 ms: the flood below outpaces it, the queue never empties
  const { port, listening, accepted } = await countingListener(2);
  // a child keeps 64 connections in flight for up to 15 s (at most 200,000): resets at the close are expected
  const flood = `const net = require('node:net'); const end = Date.now() + 15000; let made = 0;
    const one = () => { if (Date.now() > end || made++ > 200000) return; const s = net.connect(${port}, '127.0.0.1'); s.on('connect', () => { s.destroy(); one(); }); s.on('error', () => setTimeout(one, 1)); };
    for (let i = 0; i < 64; i++) one(); process.stdout.write('go');`;
  const child = spawn(process.execPath, ['-e', flood], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const started = await Promise.race([new Promise<string>((resolve) => child.stdout.once('data', () => resolve('go'))), exited.then(() => 'exited')]);
    assert.equal(started, 'go', 'the flood must start');
    while (accepted() < 20 && child.exitCode === null) await new Promise((resolve) => setImmediate(resolve)); // the flood reaches the listener
    const ended = await Promise.race([listening.end().then(() => 'ended'), exited.then(() => 'flood over')]);
    assert.equal(ended, 'ended', 'the end must not wait for the clients to stop coming');
  } finally {
    child.kill();
    await exited;
  }
});

test('an IPv6 loopback address binds as IPv6', async (t) => {
  const handle = await bindShared('::1', 0).catch(() => undefined);
  if (handle === undefined) {
    t.skip('no IPv6 loopback on this machine');
    return;
  }
  t.after(() => handle.close());
  assert.deepEqual([handle.bound.address, handle.bound.family], ['::1', 'IPv6']);
});

test('binding an address in use fails with the address and EADDRINUSE', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const port = (blocker.address() as AddressInfo).port;
  await assert.rejects(bindShared('127.0.0.1', port), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE' && err.message === `cannot listen on 127.0.0.1:${port}: EADDRINUSE (address already in use)`);
});
