// The addon's ClientHello reader (src/native/client-hello.h, used by native TLS passthrough) held to the JS one
// (src/wire/client-hello.ts) with fast-check under a time budget: on mutated real hellos, arbitrary bytes and every
// prefix, both give the same kind, on 'error' the same reason, and on 'done' the same server name and recordBytes. Run under ASan by
// scripts/asan.sh, where a read past the input is a crash.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseClientHello } from '../../src/wire/client-hello.js';
import { native } from '../../src/native/addon.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { mutate, mutationArb as mutationArbOf } from '../helpers/fuzz.js';
import { needAddonExport } from '../helpers/peers.js';

type NativeHello = { kind: 'more' | 'done' | 'not_tls' | 'error'; sni?: string; recordBytes?: number; reason?: string };
const parseNative = (native() as unknown as { l4ParseHello?: (b: Buffer) => NativeHello } | undefined)?.l4ParseHello;
/** The addon here, or a loud skip: a missing build fails under PORTICO_REQUIRE_PEERS=1, PORTICO_NATIVE=0 does not. */
function needAddon(t: TestContext): boolean {
  return needAddonExport(t, parseNative !== undefined, 'the native addon (with its L4 part)');
}

const BUDGET_MS = 1_000;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };
const EDGE = [0x00, 0x01, 0x02, 0x03, 0x04, 0x10, 0x16, 0x29, 0x2b, 0x2d, 0x2e, 0x40, 0x41, 0x5f, 0x7f, 0x80, 0xff];
const mutationArb = mutationArbOf(EDGE);

/** Both readers decide `buf` alike. */
function agree(buf: Buffer): void {
  const js = parseClientHello(buf);
  const cc = parseNative!(buf);
  assert.equal(cc.kind, js.kind, `kind of ${buf.toString('hex')}`);
  if (js.kind === 'error') assert.equal(cc.reason, js.reason, `reason for ${buf.toString('hex')}`);
  if (js.kind === 'done') {
    assert.equal(cc.sni, js.hello.sni, `server name of ${buf.toString('hex')}`);
    assert.equal(cc.recordBytes, js.hello.recordBytes);
  }
}

test('native ClientHello reader = the JS one on mutated real hellos and all their prefixes', async (t) => {
  if (!needAddon(t)) return;
  const seeds = [
    await captureNodeHello({ servername: 'Fuzz.Example', ALPNProtocols: ['h2', 'http/1.1'] }),
    await captureNodeHello({ servername: 'twelve.example', maxVersion: 'TLSv1.2' }),
    await captureNodeHello({}),
  ];
  for (const seed of seeds) for (let p = 0; p <= seed.length; p++) agree(seed.subarray(0, p));
  fc.assert(
    fc.property(fc.constantFrom(...seeds), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 4 }), (seed, mutations, cuts) => {
      const buf = mutate(seed, mutations);
      agree(buf);
      for (const c of cuts) agree(buf.subarray(0, buf.length === 0 ? 0 : c % buf.length));
    }),
    opts,
  );
});

test('native ClientHello reader = the JS one on server names made of digits, hex, ":" and "." (IP literals and near misses)', async (t) => {
  if (!needAddon(t)) return;
  const seed = await captureNodeHello({ servername: 'fuzz.example' });
  const at = seed.indexOf('fuzz.example', 0, 'latin1');
  assert.ok(at > 0, 'the seed carries its name');
  const chars = '0123456789abcdefABCDEFx:.-';
  for (const name of ['192.168.0.10', '::ffff:1.2.3', '2001:db8::ab', '1.2.3.4.5.67', '1.2.3.4.5.6x']) {
    const buf = Buffer.from(seed);
    buf.write(name, at, 'latin1');
    agree(buf);
  }
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...chars), { minLength: 12, maxLength: 12 }), (name) => {
      const buf = Buffer.from(seed);
      buf.write(name.join(''), at, 'latin1');
      agree(buf);
    }),
    opts,
  );
});

test('native ClientHello reader = the JS one on arbitrary bytes behind a handshake record header', (t) => {
  if (!needAddon(t)) return;
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, framed) => {
      agree(framed ? Buffer.concat([Buffer.of(0x16, 0x03, 0x01, bytes.length >> 8, bytes.length & 0xff, 0x01), Buffer.from(bytes)]) : Buffer.from(bytes));
    }),
    opts,
  );
});

test('native ClientHello reader = the JS one on hellos split over records and too large', async (t) => {
  if (!needAddon(t)) return;
  const seed = await captureNodeHello({ servername: 'split.example' });
  const hs = seed.subarray(5, 5 + ((seed[3] << 8) | seed[4]));
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 8 }), (sizes) => {
      const parts: Buffer[] = [];
      let at = 0;
      for (let i = 0; at < hs.length; i++) {
        const n = Math.min(sizes[i % sizes.length], hs.length - at);
        parts.push(Buffer.of(0x16, 0x03, 0x01, n >> 8, n & 0xff), hs.subarray(at, at + n));
        at += n;
      }
      agree(Buffer.concat(parts));
    }),
    opts,
  );
  // a hello larger than the 16 KiB bound: both refuse it as soon as its length shows
  const big = Buffer.concat([Buffer.of(0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x50, 0x00), Buffer.alloc(100)]);
  agree(big);
});
