// The addon's client key of limits.connections_per_ip (src/native/client-key.h, what l4.cc counts a connection by)
// held to src/route/policy/client-address.ts clientKey with fast-check under a time budget, over random IPv4, IPv6,
// IPv4-mapped and IPv4-compatible, zero-run and link-local addresses and every prefix 0..128: a socket's peer (the
// addon writes its sockaddr back as text itself; JavaScript gets Node's text of the same address, a link-local one
// with its zone), and a PROXY header's source (JavaScript's is what parseProxyHeader gives of a built v2 header).
// Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { nativeClients } from '../../src/native/clients.js';
import { clientKey } from '../../src/route/policy/client-address.js';
import { ipv4, ipv6, linkLocal, nodeText, proxiedSource } from '../helpers/address-arbitraries.js';
import { needAddonExport } from '../helpers/peers.js';

const addon = nativeClients();
const BUDGET_MS = 1_500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, addon !== undefined, 'the native addon (with its client tables)');
}

const prefix = fc.integer({ min: 0, max: 128 });

test('client key of a socket peer: the addon\'s equals clientKey of Node\'s text, IPv4 and IPv6, every prefix', { timeout: 30_000 }, (t) => {
  if (!needAddon(t)) return;
  fc.assert(
    fc.property(fc.oneof(ipv4, ipv6), prefix, (address, p) => {
      const text = nodeText(address);
      assert.equal(addon!.l4ClientKey(address, p), clientKey(text, p), `${address} (${text}) /${p}`);
    }),
    opts,
  );
});

test('client key of a link-local peer with its zone: the zone is kept where clientKey keeps the text (/128)', { timeout: 30_000 }, (t) => {
  if (!needAddon(t)) return;
  fc.assert(
    fc.property(linkLocal, prefix, (address, p) => {
      // "lo" exists everywhere: the addon turns it into the interface index and back, as accept sees a zone
      const text = `${nodeText(address)}%lo`;
      assert.equal(addon!.l4ClientKey(`${address}%lo`, p), clientKey(text, p), `${text} /${p}`);
    }),
    opts,
  );
});

test('client key of a PROXY header\'s source: the addon\'s equals clientKey of what parseProxyHeader gives', { timeout: 30_000 }, (t) => {
  if (!needAddon(t)) return;
  fc.assert(
    fc.property(fc.oneof(ipv4, ipv6), prefix, (address, p) => {
      const source = proxiedSource(address);
      assert.equal(addon!.l4ClientKey(address, p, true), clientKey(source, p), `${address} (${source}) /${p}`);
    }),
    opts,
  );
});

test('client keys: fixed cases as the limits document them', (t) => {
  if (!needAddon(t)) return;
  const cases: Array<[string, number, boolean, string]> = [
    ['203.0.113.9', 64, false, '203.0.113.9'],
    ['::ffff:203.0.113.9', 64, false, '203.0.113.9'],
    ['::ffff:203.0.113.9', 128, false, '203.0.113.9'],
    ['2001:db8:1:2:ffff::9', 64, false, '2001:db8:1:2::/64'],
    ['2001:db8:1:2:ffff::9', 56, false, '2001:db8:1:0::/56'],
    ['2001:db8:1:2:ffff::9', 128, false, '2001:db8:1:2:ffff::9'],
    ['::1', 64, false, '0:0:0:0::/64'],
    ['::1', 0, false, '::/0'],
    ['2001:db8:1:2:ffff::9', 127, false, '2001:db8:1:2:ffff:0:0:8/127'],
    ['fe80::1%lo', 64, false, 'fe80:0:0:0::/64'],
    ['fe80::1%lo', 128, false, 'fe80::1%lo'],
    ['::ffff:203.0.113.9', 128, true, '203.0.113.9'],
    ['2001:db8:1:2:ffff::9', 48, true, '2001:db8:1::/48'],
    ['not an address', 64, false, '\u0000'],
  ];
  for (const [address, p, proxied, key] of cases) {
    const got = addon!.l4ClientKey(address, p, proxied);
    if (key === '\u0000') assert.equal(got, null, address);
    else {
      assert.equal(got, key, `${address} /${p}${proxied ? ' (proxied)' : ''}`);
      if (!proxied) assert.equal(clientKey(nodeText(address.split('%')[0]) + (address.includes('%') ? '%lo' : ''), p), key, `clientKey agrees: ${address} /${p}`);
    }
  }
});
