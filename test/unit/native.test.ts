// The native addon's small surface on loopback: SO_REUSEPORT listeners (IPv4, IPv6, errors with codes), dup and
// close, recv(MSG_PEEK) that consumes nothing, argument checks that throw instead of crashing, and the loader's
// PORTICO_NATIVE=0 switch. Skipped (loudly) where the addon is not built; the relay itself is in e2e tests.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { test, type TestContext } from 'node:test';
import { native, nativeStatus, type NativeAddon } from '../../src/native/addon.js';

const SKIP = nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`;

function addon(): NativeAddon {
  const a = native();
  assert.ok(a !== undefined);
  return a;
}

async function serveFd(t: TestContext, fd: number): Promise<net.Server> {
  const server = net.createServer((s) => s.end());
  server.listen({ fd });
  await once(server, 'listening');
  t.after(() => server.close());
  return server;
}

test('reusePortListen: two sockets bind the same IPv4 port and both accept', { skip: SKIP }, async (t) => {
  const a = addon();
  const first = await serveFd(t, a.reusePortListen('127.0.0.1', 0, 511));
  const port = (first.address() as net.AddressInfo).port;
  const second = await serveFd(t, a.reusePortListen('127.0.0.1', port, 511));
  assert.equal((second.address() as net.AddressInfo).port, port);
  const c = net.connect(port, '127.0.0.1');
  await once(c, 'connect');
  c.destroy();
});

test('reusePortListen: IPv6 loopback works too', { skip: SKIP }, async (t) => {
  const a = addon();
  let fd: number;
  try {
    fd = a.reusePortListen('::1', 0, 128);
  } catch (err) {
    t.skip(`no IPv6 loopback here: ${(err as Error).message}`);
    return;
  }
  const server = await serveFd(t, fd);
  const { address, family } = server.address() as net.AddressInfo;
  assert.deepEqual({ address, family }, { address: '::1', family: 'IPv6' });
});

test('reusePortListen: a port held without SO_REUSEPORT fails with EADDRINUSE; names are refused', { skip: SKIP }, async (t) => {
  const a = addon();
  const plain = net.createServer();
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  t.after(() => plain.close());
  const port = (plain.address() as net.AddressInfo).port;
  assert.throws(() => a.reusePortListen('127.0.0.1', port, 511), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE' && err.syscall === 'bind');
  assert.throws(() => a.reusePortListen('localhost', 0, 511), TypeError);
  assert.throws(() => a.reusePortListen('127.0.0.1', 70000, 511), RangeError);
});

test('recvPeek shows waiting bytes without consuming them; dup gives an independent fd', { skip: SKIP }, async (t) => {
  const a = addon();
  const server = net.createServer({ pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const accepted = once(server, 'connection');
  const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.after(() => c.destroy());
  const [s] = (await accepted) as [net.Socket];
  t.after(() => s.destroy());
  const fd = (s as unknown as { _handle: { fd: number } })._handle.fd;
  assert.equal(a.recvPeek(fd, 16), null, 'nothing sent yet');
  c.write('ClientHello');
  // bounded wait for the bytes to reach the socket (loopback: immediate in practice)
  let peeked: Buffer | null = null;
  for (let i = 0; i < 1000 && peeked === null; i++) {
    peeked = a.recvPeek(fd, 5);
    if (peeked === null) await new Promise((r) => setImmediate(r));
  }
  assert.equal(peeked?.toString(), 'Clien');
  const copy = a.dup(fd);
  assert.notEqual(copy, fd);
  assert.equal(a.recvPeek(copy, 64)?.toString(), 'ClientHello', 'the peek consumed nothing, the dup sees the same socket');
  a.close(copy);
  // the original still reads everything
  const data = once(s, 'data');
  s.resume();
  assert.equal(String((await data)[0]), 'ClientHello');
});

test('bad arguments throw TypeErrors instead of crashing the process', { skip: SKIP }, () => {
  const a = addon();
  assert.throws(() => a.dup(-1), TypeError);
  assert.throws(() => a.dup(Number.NaN), TypeError);
  assert.throws(() => a.recvPeek(0, 0), RangeError);
  assert.throws(() => a.spliceClose(1, 'bogus' as 'client'), TypeError);
  assert.equal(a.spliceClose(999_999, 'shutdown'), false, 'no such relay');
  assert.equal(a.spliceStats(999_999), null);
  assert.throws(() => a.dup(1_000_000), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
});

test('PORTICO_NATIVE=0 turns the addon off and says so', () => {
  const loader = fileURLToPath(new URL('../../src/native/addon.js', import.meta.url));
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(loader)}).then((m) => console.log(JSON.stringify([m.nativeStatus(), m.native() === undefined])))`], {
    env: { ...process.env, PORTICO_NATIVE: '0' },
    encoding: 'utf8',
  });
  assert.deepEqual(JSON.parse(out), [{ native: false, reason: 'disabled by PORTICO_NATIVE=0' }, true]);
});
