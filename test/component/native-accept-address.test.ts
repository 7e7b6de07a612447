// The address text of a natively accepted connection (io.cc's ACCEPT record, and ioAddress for the local end),
// written for IPv4 without inet_ntop's printf (src/native/ip-text.h): it must be the text Node gives for the same
// ends. Loopback's whole 127.0.0.0/8 is local, so clients bound to addresses with one-, two- and three-digit
// bytes (and zeros) reach a listener on 0.0.0.0 from those addresses and at them. Skipped (loudly) without native
// I/O; CI makes that a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { listenNative, type NativeSocket } from '../../src/native/io.js';
import { native } from '../../src/native/addon.js';
import { needNativeIo } from '../helpers/native-io.js';

const ADDRESSES = ['127.0.0.1', '127.0.0.10', '127.0.0.100', '127.0.0.255', '127.9.99.199', '127.200.50.5', '127.10.0.0', '127.255.255.254'];

test('a natively accepted IPv4 connection names both ends as Node does, whatever the digits of each byte', { timeout: 30_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const accepted: NativeSocket[] = [];
  let onAccept: ((s: NativeSocket) => void) | undefined;
  const listener = listenNative(native()!.reusePortListen('0.0.0.0', 0, 64), 'read', (s) => {
    accepted.push(s);
    onAccept?.(s);
  })!;
  const clients: net.Socket[] = [];
  t.after(() => {
    for (const c of clients) c.destroy();
    for (const s of accepted) s.destroy();
    listener.close();
  });
  const port = listener.address().port;
  for (const [i, address] of ADDRESSES.entries()) {
    // the one at the listener's end is `to`: each client connects to another local address than it binds
    const to = ADDRESSES[(i + 3) % ADDRESSES.length]!;
    const gotIt = new Promise<NativeSocket>((resolve) => (onAccept = resolve));
    const client = net.connect({ host: to, port, localAddress: address });
    clients.push(client);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
    });
    client.write('x'); // a listener that defers accepts a connection with its first byte
    const s = await gotIt;
    assert.equal(s.remoteAddress, client.localAddress, 'the peer address');
    assert.equal(s.remoteAddress, address);
    assert.equal(s.remotePort, client.localPort);
    assert.equal(s.localAddress, to, 'the local address (ioAddress)');
    assert.equal(s.localPort, port);
  }
  assert.equal(accepted.length, ADDRESSES.length);
});
