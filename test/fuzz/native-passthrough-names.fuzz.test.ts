// The passthrough names the addon matches at accept on a TLS listener that also terminates (src/native/
// passthrough-names.h, io.cc's decision before the handshake) held to the JS table (src/tunnel/l4.ts
// PassthroughTable, which decides on the peek path): for random tables (exact names, `*.suffix` wildcards nested and
// overlapping, duplicates, upper case) and random names (those of the table, their labels under and beside each
// wildcard, bare suffixes, trailing dots, IP literals, upper case, any string), both pass the same name to the same
// entry or terminate it (fast-check, under a time budget). Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PassthroughTable } from '../../src/tunnel/l4.js';
import { native } from '../../src/native/addon.js';
import { needAddonExport } from '../helpers/peers.js';

const match = (native() as unknown as { passthroughMatch?: (names: string[], sni: string) => number } | undefined)?.passthroughMatch;
const BUDGET_MS = 1_500;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, match !== undefined, 'the native addon (with passthroughMatch)');
}

/** Both tables pass `sni` to the same entry (its upstream is its index) or terminate it. */
function agree(names: string[], sni: string): void {
  const js = new PassthroughTable(names.map((sni, i) => ({ sni, upstream: String(i) }))).match(sni);
  const cc = match!(names, sni);
  assert.equal(cc === -1 ? undefined : String(cc), js, `${JSON.stringify(sni)} against ${JSON.stringify(names)}`);
}

test('passthrough names: the examples of the rules (exact first, longest wildcard, never the bare suffix, first entry wins)', (t) => {
  if (!needAddon(t)) return;
  const names = ['pass.test', '*.test', '*.b.test', 'Upper.TEST', '*.b.test', 'pass.test', '*.'];
  const cases: Array<[string, number]> = [
    ['pass.test', 0],
    ['a.test', 1],
    ['a.b.test', 2],
    ['x.a.b.test', 2],
    ['b.test', 1],
    ['upper.test', 3],
    ['test', -1],
    ['.test', -1],
    ['PASS.TEST', -1], // the reader gives names lower-cased: an upper-case one is no name of the table
    ['', -1],
    ['127.0.0.1', -1],
  ];
  for (const [sni, want] of cases) {
    assert.equal(match!(names, sni), want, sni);
    agree(names, sni);
  }
  assert.equal(match!([], 'pass.test'), -1);
});

const label = fc.stringMatching(/^[a-zA-Z0-9_-]{1,6}$/);
const dnsName = fc.array(fc.constantFrom('a', 'b', 'Ab', 'x-y', '_s', '0', '12'), { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));
const entry = fc.oneof(dnsName, dnsName.map((n) => `*.${n}`), fc.array(label, { minLength: 1, maxLength: 3 }).map((l) => l.join('.')));

test('passthrough names: the addon matches as PassthroughTable on random tables and names (fast-check)', (t) => {
  if (!needAddon(t)) return;
  const table = fc.array(entry, { minLength: 0, maxLength: 8 });
  const nameFrom = (names: string[]): fc.Arbitrary<string> => {
    const own = names.length === 0 ? [dnsName] : [fc.constantFrom(...names)];
    const base = fc.oneof(...own, dnsName);
    return fc.oneof(
      base,
      fc.tuple(dnsName, base).map(([a, b]) => `${a}.${b.replace(/^\*\./, '')}`), // under a wildcard, or beside it
      base.map((b) => b.replace(/^\*/, '')), // a bare suffix ".example"
      base.map((b) => b.toLowerCase()),
      base.map((b) => `${b}.`), // a trailing dot
      fc.constantFrom('127.0.0.1', '::1', '2001:db8::7', '1.2.3.4.test'),
      fc.string({ maxLength: 20 }),
    );
  };
  fc.assert(
    fc.property(table.chain((names) => fc.tuple(fc.constant(names), fc.array(nameFrom(names), { minLength: 1, maxLength: 8 }))), ([names, snis]) => {
      for (const sni of snis) agree(names, sni);
    }),
    { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] },
  );
});
