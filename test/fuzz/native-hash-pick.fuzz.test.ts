// The addon's `hash` policy of L4 compiles (src/native/hash-pick.h, what l4.cc picks a hash upstream's target by) held
// to JavaScript's with fast-check under a time budget: the key and its hash of random IPv4, IPv6, IPv4-mapped and
// link-local clients, as a socket's peer (Node's text of the address) and as a PROXY header's source
// (parseProxyHeader of a built v2 header), equal hash-key.ts connectionKey and balancer.ts hashKey; and the pick over
// random Maglev tables (random weights, repeated addresses), eligibility and pins equals Maglev.pickFor's.
// Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { nativeL4 } from '../../src/native/l4.js';
import { native } from '../../src/native/addon.js';
import type { L4Addon } from '../../src/native/l4.js';
import { buildMaglevTable, createBalancer, hashKey, type Target } from '../../src/upstream/balancer.js';
import { connectionKey } from '../../src/upstream/hash-key.js';
import { ipv4, ipv6, linkLocal, nodeText, proxiedSource } from '../helpers/address-arbitraries.js';
import { needAddonExport } from '../helpers/peers.js';

// the test entries need the addon, not its L4 thread: PORTICO_NATIVE_L4=0 switches only the latter off
const addon = (nativeL4().addon ?? native()) as (Partial<L4Addon> & object) | undefined;
const BUDGET_MS = 1_500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };
const HASH = { policy: 'hash', key: '$remote_addr' } as const;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, addon?.l4HashKey !== undefined, 'the native addon (with its L4 hash policy)');
}

test('hash key of a socket peer: the addon\'s key and hash equal connectionKey of Node\'s text and hashKey', { timeout: 30_000 }, (t) => {
  if (!needAddon(t)) return;
  fc.assert(
    fc.property(fc.oneof(ipv4, ipv6), (address) => {
      const key = connectionKey(HASH, nodeText(address))!;
      assert.deepEqual(addon!.l4HashKey!(address), { key, hash: hashKey(key) }, address);
    }),
    opts,
  );
});

test('hash key of a link-local peer: its zone is part of the key, as in Node\'s text', { timeout: 30_000 }, (t) => {
  if (!needAddon(t)) return;
  fc.assert(
    fc.property(linkLocal, (address) => {
      const key = connectionKey(HASH, `${nodeText(address)}%lo`)!;
      assert.deepEqual(addon!.l4HashKey!(`${address}%lo`), { key, hash: hashKey(key) }, address);
    }),
    opts,
  );
});

test('hash key of a PROXY header\'s source: the addon\'s equals connectionKey of what parseProxyHeader gives', { timeout: 30_000 }, (t) => {
  if (!needAddon(t)) return;
  fc.assert(
    fc.property(fc.oneof(ipv4, ipv6), (address) => {
      const source = proxiedSource(address);
      const key = connectionKey(HASH, source)!;
      assert.deepEqual(addon!.l4HashKey!(address, true), { key, hash: hashKey(key) }, `${address} (${source})`);
    }),
    opts,
  );
});

test('hash keys: fixed cases ($remote_addr as the HTTP path forms it: IPv4-mapped unmapped, no port)', (t) => {
  if (!needAddon(t)) return;
  const cases: Array<[string, boolean, string]> = [
    ['203.0.113.9', false, '203.0.113.9'],
    ['::ffff:203.0.113.9', false, '203.0.113.9'],
    ['::ffff:203.0.113.9', true, '203.0.113.9'],
    ['2001:db8:0:0:1:0:0:9', false, '2001:db8::1:0:0:9'],
    ['fe80::1%lo', false, 'fe80::1%lo'],
  ];
  for (const [address, proxied, key] of cases) assert.deepEqual(addon!.l4HashKey!(address, proxied), { key, hash: hashKey(key) }, address);
  assert.equal(addon!.l4HashKey!('not an address'), null);
  // a value written down, so that both cannot drift together
  assert.equal(addon!.l4HashKey!('203.0.113.9')!.hash, 521688807);
});

/** Targets with weights (0 included), availability and sometimes a repeated address; a key and maybe a pin. */
const pickCase = fc
  .integer({ min: 1, max: 24 })
  .chain((n) =>
    fc.record({
      targets: fc.array(
        fc.record({ addr: fc.integer({ min: 0, max: n + 2 }), weight: fc.oneof(fc.constant(1), fc.constant(0), fc.integer({ min: 1, max: 5 })), available: fc.oneof(fc.boolean(), fc.constant(false)) }),
        { minLength: n, maxLength: n },
      ),
      key: fc.oneof(fc.array(fc.integer({ min: 0x21, max: 0x7e }), { minLength: 1, maxLength: 40 }).map((c) => String.fromCharCode(...c)), ipv4, ipv6),
      pin: fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: n - 1 })),
    }),
  );

test('hash pick: the addon\'s equals Maglev.pickFor over random tables, eligibility and pins', { timeout: 60_000 }, (t) => {
  if (!needAddon(t)) return;
  fc.assert(
    fc.property(pickCase, ({ targets: spec, key, pin }) => {
      const targets: Target[] = spec.map((s) => ({ id: `10.0.0.${s.addr}:80`, host: `10.0.0.${s.addr}`, port: 80, weight: s.weight, available: s.available, active: 0 }));
      fc.pre(targets.some((x) => x.weight > 0));
      const pins = new Map<string, string>();
      // a pin names an address: the first target with it (Maglev's byId), as l4-native.ts sends its index
      const pinned = pin < 0 ? -1 : targets.findIndex((x) => x.id === targets[pin].id);
      if (pinned >= 0) pins.set(key, targets[pinned].id);
      const want = createBalancer(HASH, targets, { pins }).pickFor(key);
      const table = Uint32Array.from(buildMaglevTable(targets));
      const got = addon!.l4HashPick!(table, targets.map((x) => x.available && x.weight > 0), key, pinned);
      assert.equal(got, want === undefined ? -1 : targets.indexOf(want), `${key} over ${JSON.stringify(spec)} pin ${pin}`);
    }),
    { ...opts, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS * 2)] },
  );
});

test('hash pick: past MAX_WALK slots of ineligible targets, the scan from hash % n finds the one left (fixed cases)', (t) => {
  if (!needAddon(t)) return;
  // 300 targets, two eligible: each owns a slot in 300, so many keys meet 256 ineligible ones first, and then the
  // scan's answer (the first eligible from hash % n in target order) differs from a longer walk's
  const targets: Target[] = Array.from({ length: 300 }, (_, i) => ({ id: `10.0.${i >> 8}.${i & 255}:80`, host: `10.0.${i >> 8}.${i & 255}`, port: 80, weight: 1, available: i === 7 || i === 299, active: 0 }));
  const table = Uint32Array.from(buildMaglevTable(targets));
  const balancer = createBalancer(HASH, targets);
  for (let k = 0; k < 200; k++) {
    const key = `198.51.100.${k}`;
    assert.equal(addon!.l4HashPick!(table, targets.map((x) => x.available), key, -1), targets.indexOf(balancer.pickFor(key)!), key);
  }
  assert.equal(addon!.l4HashPick!(table, targets.map(() => false), 'x', -1), -1, 'none eligible');
});
