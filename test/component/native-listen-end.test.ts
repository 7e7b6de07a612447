// A native listener's end() (io.cc ioListenEnd), the drain's way to stop accepting: the clients already in the
// kernel's accept queue are accepted and served, then the socket closes; close() would reset them. Here the queue
// is filled while nobody polls the socket (its fd released from native accept), then a new listener on that fd is
// ended in the same turn: every queued client must get its answer, none a reset, more than one accept batch
// included (the addon takes at most 512 per batch). A deferring listener (TCP_DEFER_ACCEPT) also waits for the
// clients the kernel still holds in its SYN queue, and closes at once on a quiet port. Skipped (loudly) without native
// I/O; CI makes that a failure.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import { listenNative, nativeIoLive, type NativeSocket } from '../../src/native/io.js';
import { native } from '../../src/native/addon.js';
import { needNativeIo } from '../helpers/native-io.js';
import { until } from '../helpers/until.js';

const PHASE_MS = 20_000;

function nativeTest(name: string, fn: (t: TestContext) => Promise<void>): void {
  test(name, { timeout: 60_000 }, async (t) => {
    if (!needNativeIo(t)) return;
    await fn(t);
  });
}

/** A listening fd with `n` clients in its accept queue, each having sent `ping <i>`; nobody accepted them yet. */
async function queued(t: TestContext, n: number): Promise<{ fd: number; port: number; clients: net.Socket[] }> {
  const fd = native()!.reusePortListen('127.0.0.1', 0, 4096);
  // its port, then out of native accept again: the fd keeps listening, unpolled
  const probe = listenNative(fd, 'read', () => assert.fail('nothing connects yet'))!;
  const port = probe.address().port;
  assert.equal(probe.release(), fd);
  const clients: net.Socket[] = [];
  t.after(() => {
    for (const c of clients) c.destroy();
  });
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      new Promise<void>((resolve, reject) => {
        const c = net.connect({ port, host: '127.0.0.1' }, () => {
          c.write(`ping ${i}`);
          resolve();
        });
        c.once('error', reject);
        clients.push(c);
      }),
    ),
  );
  return { fd, port, clients };
}

/** What each client got back, or the error that ended it. */
function outcomes(clients: net.Socket[]): Array<Promise<string>> {
  return clients.map(
    (c) =>
      new Promise<string>((resolve) => {
        let got = '';
        c.setEncoding('latin1');
        c.on('data', (s: string) => (got += s));
        c.once('end', () => resolve(got));
        c.once('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code ?? err.message}`));
      }),
  );
}

/** Answers each accepted connection's `ping <i>` with `pong <i>` and a FIN. */
function pong(open: Set<NativeSocket>): (s: NativeSocket) => void {
  return (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    let head = '';
    s.on('data', (b: Buffer) => {
      head += b.toString('latin1');
      if (/^ping \d+$/.test(head)) s.end(`pong ${head.slice(5)}`);
    });
  };
}

function refused(port: number): Promise<string> {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1' }, () => {
      c.destroy();
      resolve('connected');
    });
    c.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

for (const n of [20, 700]) {
  nativeTest(`end() accepts the ${n} clients already queued and answers them (none reset), then closes the socket`, async (t) => {
    const fdsBefore = readdirSync('/proc/self/fd').length;
    const liveBefore = nativeIoLive();
    const { fd, port, clients } = await queued(t, n);
    const results = outcomes(clients);
    const open = new Set<NativeSocket>();
    t.after(() => {
      for (const s of open) s.destroy();
    });
    const l = listenNative(fd, 'read', pong(open))!;
    // in the same turn as the listen: nothing was accepted yet, the whole queue is the kernel's
    const ended = l.end();
    assert.equal(l.closed, true);
    const got = await Promise.all(results);
    const wrong = got.map((g, i) => [i, g] as const).filter(([i, g]) => g !== `pong ${i}`);
    assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} of ${n} queued clients got no answer (first ones shown)`);
    await ended;
    assert.equal(await refused(port), 'ECONNREFUSED', 'the socket is closed once end() resolves');
    for (const c of clients) c.destroy();
    await until('fds and native sockets back', () => [readdirSync('/proc/self/fd').length, nativeIoLive()], ([f, live]) => f <= fdsBefore && live === liveBefore, PHASE_MS);
  });
}

nativeTest('end() with an empty queue closes at once; end() twice is the same promise; close() after it is harmless', async (t) => {
  const liveBefore = nativeIoLive();
  const fd = native()!.reusePortListen('127.0.0.1', 0, 64);
  const l = listenNative(fd, 'read', () => assert.fail('nobody connects'))!;
  const port = l.address().port;
  const first = l.end();
  assert.equal(l.end(), first);
  l.close();
  await first;
  assert.equal(await refused(port), 'ECONNREFUSED');
  assert.equal(nativeIoLive(), liveBefore);
  t.diagnostic('closed at once');
});

nativeTest('a deferring listener: end() on a quiet port closes at once; a client the kernel holds (connected, nothing sent) is waited for and answered once it writes', async (t) => {
  const open = new Set<NativeSocket>();
  t.after(() => {
    for (const s of open) s.destroy();
  });
  // a client that still reaches it was accepted after the end began: closed here, and the refusal check below fails
  const quiet = listenNative(native()!.reusePortListen('127.0.0.1', 0, 64), 'read', (s) => s.destroy(), true)!;
  assert.equal(quiet.deferAcceptSeconds(), 1, 'TCP_DEFER_ACCEPT in force');
  const quietPort = quiet.address().port;
  const quietEnded = quiet.end();
  // nothing in a SYN queue of its port: closed in end() itself, as a listener that never deferred
  assert.equal(await refused(quietPort), 'ECONNREFUSED');
  await quietEnded;

  const l = listenNative(native()!.reusePortListen('127.0.0.1', 0, 64), 'read', pong(open), true)!;
  const port = l.address().port;
  const client = await new Promise<net.Socket>((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1' }, () => resolve(c));
    c.once('error', reject);
  });
  t.after(() => client.destroy());
  const [answer] = outcomes([client]);
  // the handshake is done and nothing was sent: the connection is in the SYN queue, not the accept queue
  const ended = l.end();
  assert.equal(l.closed, true);
  client.write('ping 0');
  assert.equal(await answer, 'pong 0', 'the held client is accepted once its bytes come, not reset');
  await ended;
  assert.equal(await refused(port), 'ECONNREFUSED');
});

/** A client that completes its handshake and sends nothing (held in the SYN queue of a deferring listener). */
function silent(t: TestContext, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1' }, () => resolve(c));
    c.once('error', reject);
    t.after(() => c.destroy());
  });
}

nativeTest('ioSynQueued: a deferring listener sees the clients held on its own port only (the kernel filters by port), and none once they are accepted', async (t) => {
  const addon = native()!;
  const open = new Set<NativeSocket>();
  t.after(() => {
    for (const s of open) s.destroy();
  });
  // a backlog above the clients: past it the kernel answers with syncookies, which are never held back
  const mine = listenNative(addon.reusePortListen('127.0.0.1', 0, 4096), 'read', pong(open), true)!;
  const other = listenNative(addon.reusePortListen('127.0.0.1', 0, 4096), 'read', pong(open), true)!;
  t.after(() => {
    mine.close();
    other.close();
  });
  const probe = (l: typeof mine): number => l.synQueued();
  assert.equal(probe(mine), 0, 'a quiet port');
  // 100 silent clients on the other port (held ~1 s): a dump of every SYN_RECV sock would see them, a filtered one must not
  const held = await Promise.all(Array.from({ length: 100 }, () => silent(t, other.address().port)));
  assert.equal(probe(other), 1, 'the other port has held clients');
  assert.equal(probe(mine), 0, 'clients held on another port do not count');
  const client = await silent(t, mine.address().port);
  assert.equal(probe(mine), 1, 'its own held client counts');
  const [answer] = outcomes([client]);
  client.write('ping 7');
  assert.equal(await answer, 'pong 7');
  assert.equal(probe(mine), 0, 'accepted once its bytes came: no longer in the SYN queue');
  for (const c of held) c.destroy();
});

nativeTest('a deferring listener ends within its bound while 300 silent clients keep its SYN queue full (they never write)', async (t) => {
  const open = new Set<NativeSocket>();
  t.after(() => {
    for (const s of open) s.destroy();
  });
  const l = listenNative(native()!.reusePortListen('127.0.0.1', 0, 4096), 'read', pong(open), true)!;
  const port = l.address().port;
  await Promise.all(Array.from({ length: 300 }, () => silent(t, port)));
  const began = performance.now();
  await l.end();
  const took = performance.now() - began;
  t.diagnostic(`ended in ${took.toFixed(0)} ms with 300 silent clients held`);
  assert.equal(await refused(port), 'ECONNREFUSED', 'closed once end() resolved');
  // bounded: the deferral grace (1.25 s) plus the accept queue's bound (LISTEN_END_MAX_MS); never waits for the clients
  assert.ok(took < 10_000, `end() took ${took} ms`);
});
