// The Sec-WebSocket-Accept value the addon computes from a client's key (src/native/ws-accept.h, which io.cc's
// ioAnswerUpgradeKey checks a backend's 101 against) held to the one JavaScript computes (src/handlers/rewrite.ts
// websocketAccept, Node's SHA-1): RFC 6455's example, keys as clients send them (base64 of 16 random bytes), and
// any latin1 string of any length (fast-check, under a time budget), so that both paths take the same 101s. Lengths
// around SHA-1's 64-byte blocks (the key and the GUID fill one, or spill into a second, at 20 and 28 bytes) are
// tried one by one. Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { websocketAccept } from '../../src/handlers/rewrite.js';
import { native } from '../../src/native/addon.js';
import { needAddonExport } from '../helpers/peers.js';

const addon = native() as unknown as { wsAccept?: (key: string) => string | null } | undefined;
const wsAccept = addon?.wsAccept;
const BUDGET_MS = 2_000;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, wsAccept !== undefined, 'the native addon (with wsAccept)');
}

test("the addon's accept value is JavaScript's: RFC 6455's example, clients' keys, every length around a block", (t) => {
  if (!needAddon(t)) return;
  assert.equal(wsAccept!('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  for (let i = 0; i < 2_000; i++) {
    const key = randomBytes(16).toString('base64');
    assert.equal(wsAccept!(key), websocketAccept(key), key);
  }
  for (let n = 0; n <= 200; n++) {
    const key = 'k'.repeat(n);
    assert.equal(wsAccept!(key), websocketAccept(key), `a key of ${n} bytes`);
    const high = '\u00e9'.repeat(n); // two UTF-8 bytes each, as Node hashes it
    assert.equal(wsAccept!(high), websocketAccept(high), `a key of ${n} latin1 characters above 0x7f`);
  }
});

test("the addon's accept value is JavaScript's for any latin1 string (fast-check)", (t) => {
  if (!needAddon(t)) return;
  const latin1 = fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 300 }).map((codes) => String.fromCharCode(...codes));
  fc.assert(
    fc.property(latin1, (key) => {
      assert.equal(wsAccept!(key), websocketAccept(key), JSON.stringify(key));
    }),
    { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] },
  );
});
