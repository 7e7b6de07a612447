// The addon's client key of limits.connections_per_ip (src/native/client-key.h, what l4.cc counts a connection by)
// held to src/route/policy/client-address.ts clientKey with fast-check under a time budget, over random IPv4, IPv6,
// IPv4-mapped and IPv4-compatible, zero-run and link-local addresses and every prefix 0..128: a socket's peer (the
// addon writes its sockaddr back as text itself; JavaScript gets Node's text of the same address, a link-local one
// with its zone), and a PROXY header's source (JavaScript's is what parseProxyHeader gives of a built v2 header).
// Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { nativeClients } from '../../src/native/clients.js';
import { clientKey } from '../../src/route/policy/client-address.js';
import { buildProxyV2, parseProxyHeader } from '../../src/wire/proxy-protocol.js';
import { needAddonExport } from '../helpers/peers.js';

const addon = nativeClients();
const BUDGET_MS = 1_500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, addon !== undefined, 'the native addon (with its client tables)');
}

const word = fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 1, max: 15 }));
/** Eight words, often with zero runs, an IPv4-mapped or -compatible head, or a link-local one. */
const words = fc.oneof(
  fc.array(word, { minLength: 8, maxLength: 8 }),
  fc.tuple(word, word).map(([a, b]) => [0, 0, 0, 0, 0, 0xffff, a, b]),
  fc.tuple(word, word).map(([a, b]) => [0, 0, 0, 0, 0, 0, a, b]),
  fc.array(word, { minLength: 4, maxLength: 4 }).map((tail) => [0xfe80, 0, 0, 0, ...tail]),
  fc.tuple(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 1, max: 8 }), fc.array(word, { minLength: 8, maxLength: 8 })).map(([at, n, w]) => w.map((v, i) => (i >= at && i < at + n ? 0 : v))),
);
/** An IPv6 address in a non-canonical spelling (every word written out): Node and the addon each write their own. */
const ipv6 = words.map((w) => w.map((v) => v.toString(16)).join(':'));
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join('.'));
const prefix = fc.integer({ min: 0, max: 128 });

/** The address as Node writes a socket's peer. */
function nodeText(address: string): string {
  return new net.SocketAddress({ address, family: net.isIPv4(address) ? 'ipv4' : 'ipv6' }).address;
}

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
  const linkLocal = fc.array(word, { minLength: 4, maxLength: 4 }).map((tail) => ['fe80', '0', '0', '0', ...tail.map((v) => v.toString(16))].join(':'));
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
      const v4 = net.isIPv4(address);
      const header = buildProxyV2({ address, port: 40000 }, { address: v4 ? '192.0.2.1' : '2001:db8::1', port: 443 });
      const parsed = parseProxyHeader(header);
      assert.ok(parsed.kind === 'done' && parsed.header.command === 'proxy' && parsed.header.source !== undefined);
      const source = parsed.header.source.address;
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
