// A client with a link-local IPv6 address is the same string whichever side accepted it: Node's net module writes
// "fe80::…%<the interface it came in on>", and the addon's accept (HTTP listener) and L4 records (a `tcp` listener)
// now write the same (src/native/ip-text.h AddressText). Without the zone, two hosts with one link-local address on
// two interfaces would be one client to logs, `connections_per_ip` and X-Forwarded-For.
// Link-local traffic needs a link: the test makes a network namespace with a veth pair (test/helpers/netns.ts),
// gives both ends a fixed link-local address (no duplicate-address detection, so they are usable at once), runs
// Portico in the namespace on [::] and connects from this side, bound to this end's address. Each case runs with
// the addon and with PORTICO_NATIVE_IO=0 (Node's sockets: the oracle); skipped loudly without root or `sudo -n`.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { startHttpBackend } from '../helpers/backends.js';
import { makeNetns, type Netns } from '../helpers/netns.js';
import { needNativeIo, needNativeL4 } from '../helpers/native-io.js';
import { startPortico, type Portico } from '../helpers/portico.js';

const HOST_LL = 'fe80::a:1';
const NS_LL = 'fe80::a:2';

async function linkLocalNetns(t: TestContext): Promise<Netns | undefined> {
  const ns = await makeNetns(t);
  if (ns === undefined) return undefined;
  await ns.execHost(['ip', '-6', 'addr', 'add', `${HOST_LL}/64`, 'dev', ns.hostIf, 'nodad']);
  await ns.exec(['ip', '-6', 'addr', 'add', `${NS_LL}/64`, 'dev', ns.nsIf, 'nodad']);
  return ns;
}

/** One request from this side's link-local address over the veth to `port` in the namespace; the answer's text. */
async function fromLinkLocal(ns: Netns, port: number): Promise<string> {
  const c = net.connect({ host: `${NS_LL}%${ns.hostIf}`, port, localAddress: `${HOST_LL}%${ns.hostIf}` });
  await once(c, 'connect');
  assert.equal(c.localAddress, `${HOST_LL}%${ns.hostIf}`, 'the client is bound to its link-local address');
  const chunks: Buffer[] = [];
  c.on('data', (b: Buffer) => chunks.push(b));
  c.write('GET / HTTP/1.1\r\nHost: ll.test\r\nConnection: close\r\n\r\n');
  await once(c, 'end');
  c.destroy();
  return Buffer.concat(chunks).toString('latin1');
}

for (const nativeIo of [true, false]) {
  const label = nativeIo ? 'native accept' : "Node's sockets (PORTICO_NATIVE_IO=0)";
  const env: Record<string, string> = nativeIo ? {} : { PORTICO_NATIVE_IO: '0' };

  test(`${label}: a link-local client's address carries its zone in the HTTP access log`, { timeout: 60_000 }, async (t) => {
    if (nativeIo && !needNativeIo(t)) return;
    const ns = await linkLocalNetns(t);
    if (ns === undefined) return;
    const portico: Portico = await startPortico(
      t,
      { workers: 1, listeners: [{ address: '[::]:0' }], routes: [{ match: { path: '/' }, return: { status: 200, body: 'ok' } }] },
      { wrap: ns.wrap, env },
    );
    const answer = await fromLinkLocal(ns, portico.ports[0]!);
    assert.match(answer, /^HTTP\/1\.1 200 /);
    const line = await portico.waitForLog((l) => l.msg === 'request');
    assert.equal(line.client, `${HOST_LL}%${ns.nsIf}`, 'the zone is the namespace\'s end, where the connection came in');
  });

  test(`${label}: a link-local client's address carries its zone in an L4 listener's record`, { timeout: 60_000 }, async (t) => {
    if (nativeIo && !needNativeL4(t)) return;
    const ns = await linkLocalNetns(t);
    if (ns === undefined) return;
    const app = await startHttpBackend(t, { name: 'app', host: ns.hostAddr });
    const portico = await startPortico(
      t,
      { workers: 1, listeners: [{ address: '[::]:0', mode: 'tcp', upstream: 'app' }], upstreams: { app: { targets: [`${ns.hostAddr}:${app.port}`] } } },
      { wrap: ns.wrap, env },
    );
    const answer = await fromLinkLocal(ns, portico.ports[0]!);
    assert.match(answer, /^HTTP\/1\.1 200 /);
    const onAddon = portico.logs.some((l) => l.msg === 'L4 listener served by the addon (accept, connect, splice)');
    assert.equal(onAddon, nativeIo, nativeIo ? 'the addon serves the listener' : 'JS serves the listener');
    const line = await portico.waitForLog((l) => l.msg === 'tcp');
    assert.equal(line.remoteAddr, `${HOST_LL}%${ns.nsIf}`);
  });
}
