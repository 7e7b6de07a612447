// The addon's check and rewrite of a WebSocket upgrade's 101 (src/native/response-head.h RewriteUpgrade, which io.cc
// runs on an armed upstream's first read) held to the JS path it stands in for (src/wire/http-head.ts
// parseResponseHead, then forward.ts #onUpgrade's checks and src/handlers/rewrite.ts buildResponseHead with
// 'upgrade'): on every 101 head in the repository's tests, on hand-made variants around each rule, on byte mutations
// of them (fast-check, under a time budget), on their prefixes and on heads built from random fields, whenever the C++
// side takes a 101 the JS side parses it too, with the same length, Upgrade websocket and the expected accept value,
// and rewrites it to the same bytes. The C++ side must also take the common 101s (ws, Python websockets, uWS, nginx
// as a backend) and leave the rest to JS. Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseResponseHead, type HeadLimits } from '../../src/wire/http-head.js';
import { buildResponseHead, headerValue, responseSkipNames, routeResponseLines } from '../../src/handlers/rewrite.js';
import type { CompiledHeaderOps, RequestVars } from '../../src/route/router.js';
import { native } from '../../src/native/addon.js';
import { mutate, mutationArb as mutationArbOf, responseHeadLiterals } from '../helpers/fuzz.js';
import { needAddonExport } from '../helpers/peers.js';

type NativeHead = { status: number; used: number; head: string } | null;
const addon = native() as unknown as { responseHeadRewrite?: (b: Uint8Array, skip: string[], extra: string, accept: string) => NativeHead; ioAnswerUpgrade?: unknown } | undefined;
/** responseHeadRewrite with an accept value in place of the Connection line: the 101 path (addons that have it). */
const rewrite = addon?.ioAnswerUpgrade !== undefined ? addon.responseHeadRewrite : undefined;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, rewrite !== undefined, 'the native addon (with its upgrade path)');
}

/** forward.ts RESPONSE_HEAD_LIMITS */
const LIMITS: HeadLimits = { headerSize: 64 * 1024, uriSize: 8192, headers: 200 };
const VARS = {} as RequestVars;

/** Response sides of routes: none, one that removes and sets fields, and one with a stickiness cookie. */
const PLANS: Array<{ ops: CompiledHeaderOps; cookie?: string }> = [
  { ops: { remove: new Set(), set: [] } },
  { ops: { remove: new Set(['server', 'sec-websocket-extensions']), set: [{ name: 'X-Frame-Options', lower: 'x-frame-options', render: () => 'DENY' }] } },
  { ops: { remove: new Set(['date']), set: [] }, cookie: 'portico_sticky=abc; Path=/; HttpOnly' },
];

/** RFC 6455 §1.3's example: the key dGhlIHNhbXBsZSBub25jZQ== asks for this accept value. */
const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';
const OTHER = 'HSmrc0sMlYUkAGmm5OPpG2HaGWk=';

let taken = 0;

/**
 * Whenever the C++ side takes `buf` as the 101 for `accept`, the JS side (#onResponseHead -> #onUpgrade) would have
 * taken it too and written the same bytes; the tunnel starts at the same offset.
 */
function agree(buf: Buffer, accept: string): void {
  for (const plan of PLANS) {
    const skip = responseSkipNames(plan.ops);
    const extra = routeResponseLines(plan.ops, VARS, plan.cookie);
    const cc = rewrite!(buf, skip, extra, accept);
    if (cc === null) continue;
    taken++;
    const what = `${JSON.stringify(buf.toString('latin1'))} for ${accept}`;
    const js = parseResponseHead(buf, LIMITS, 'GET');
    assert.equal(js.kind, 'done', `JS refuses what C++ took: ${what}${js.kind === 'error' ? ` (${js.reason})` : ''}`);
    if (js.kind !== 'done') return;
    assert.equal(js.head.status, 101, what);
    assert.equal(cc.status, 101, what);
    assert.equal(cc.used, js.used, what);
    assert.equal(js.head.upgrade, 'websocket', `JS would answer 502 (101 without Upgrade: websocket): ${what}`);
    assert.equal(headerValue(js.head.headers, 'sec-websocket-accept'), accept, `JS would answer 502 (wrong accept): ${what}`);
    assert.equal(cc.head, buildResponseHead(js.head, plan.ops, VARS, 'upgrade', plan.cookie), what);
  }
}

/** Both the right accept value and a wrong one, and the value the head itself carries (a corpus head's own key). */
function agreeAll(buf: Buffer): void {
  agree(buf, ACCEPT);
  agree(buf, OTHER);
  const own = /sec-websocket-accept:[ \t]*([^\r\n]*?)[ \t]*\r\n/i.exec(buf.toString('latin1'))?.[1];
  if (own !== undefined && own !== ACCEPT && own !== OTHER) agree(buf, own);
}

const H = 'HTTP/1.1 101 Switching Protocols\r\n';
const A = `Sec-WebSocket-Accept: ${ACCEPT}\r\n`;
/** What backends send: the C++ side takes each of these (and the same with frames behind). */
const COMMON: string[] = [
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}\r\n`,
  // ws (Node)
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}Sec-WebSocket-Protocol: chat\r\n\r\n`,
  // Python websockets
  `${H}Date: Sun, 06 Dec 2026 11:00:00 GMT\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${A}Server: Python/3.11 websockets/10.4\r\n\r\n`,
  // uWebSockets
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}Sec-WebSocket-Version: 13\r\nuWebSockets: 20\r\n\r\n`,
  // nginx in front of a backend, and a backend that negotiated permessage-deflate
  `${H}Server: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 11:00:00 GMT\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\n${A}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n`,
  `HTTP/1.1 101 \r\nupgrade: WEBSOCKET\r\nconnection: keep-alive, Upgrade\r\nsec-websocket-accept:   ${ACCEPT}  \r\n\r\n`,
];
/** Variants around each rule: taken or left to JS, never different from JS. */
const VARIANTS: string[] = [
  ...COMMON,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}\r\n\x81\x05hello\x82\x00`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nTE: x\r\nProxy-Connection: x\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade, Sec-WebSocket-Accept\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade, host, content-length, transfer-encoding\r\nHost: h\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nX-Obs: \x80\xff\r\n${A}\r\n`,
  // left to JS: these are refused there, or not the common case
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${OTHER}\r\n\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}Sec-WebSocket-Accept: ${OTHER}\r\n\r\n`,
  `${H}Upgrade: websocket\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: websocket, h2c\r\nConnection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: websockets\r\nConnection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: h2c\r\nConnection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: close\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: upgraded\r\n${A}\r\n`,
  `${H}Connection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\nTransfer-Encoding: chunked\r\n${A}\r\n`,
  `HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${A}\r\n`,
  `HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${A}\r\n`,
  `HTTP/1.1 100 Continue\r\n\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}\r\n`,
  `HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${A}Content-Length: 0\r\n\r\n`,
  `HTTP/1.1 102 Processing\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n folded\r\n${A}\r\n`,
  `${H}Upgrade : websocket\r\nConnection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: web\0socket\r\nConnection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: websocket\nConnection: Upgrade\r\n${A}\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Acc`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}` + 'X-Many: 1\r\n'.repeat(197) + '\r\n',
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}` + 'X-Many: 1\r\n'.repeat(198) + '\r\n',
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}X-Big: ${'v'.repeat(64 * 1024 - 200)}\r\n\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade\r\n${A}X-Big: ${'v'.repeat(64 * 1024)}\r\n\r\n`,
  `${H}Upgrade: websocket\r\nConnection: Upgrade, ${'a,'.repeat(100)}\r\n${A}\r\n`,
];

const BUDGET_MS = 1_500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };
const EDGE = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x2b, 0x2c, 0x2f, 0x30, 0x31, 0x3a, 0x3d, 0x41, 0x61, 0x7f, 0x80, 0xff];
const mutationArb = mutationArbOf(EDGE);

test('native 101 = the JS parser, upgrade check and head builder on the test corpus and variants of each rule', (t) => {
  if (!needAddon(t)) return;
  const found = responseHeadLiterals('1\\d\\d');
  assert.ok(found.length >= 4, `1xx heads found in the tests: ${found.length}`);
  const seeds = [...found, ...VARIANTS.map((s) => Buffer.from(s, 'latin1'))];
  taken = 0;
  for (const seed of seeds) {
    agreeAll(seed);
    for (let p = 0; p < seed.length && p < 400; p++) agreeAll(seed.subarray(0, p));
  }
  // the common 101s are taken under every plan, with frames behind them too; the tunnel starts after the head
  for (const s of COMMON) {
    for (const tail of ['', '\x81\x02hi']) {
      const buf = Buffer.from(s + tail, 'latin1');
      for (const plan of PLANS) {
        const cc = rewrite!(buf, responseSkipNames(plan.ops), routeResponseLines(plan.ops, VARS, plan.cookie), ACCEPT);
        assert.notEqual(cc, null, JSON.stringify(s));
        assert.equal(cc!.used, s.length);
      }
    }
  }
  // and what is not its own goes to JS: a wrong or doubled key, a doubled or other Upgrade, no upgrade token, a
  // framed 101, HTTP/1.0, an interim answer first, another status
  for (let i = COMMON.length + 5; i < COMMON.length + 24; i++) assert.equal(rewrite!(Buffer.from(VARIANTS[i], 'latin1'), [], '', ACCEPT), null, JSON.stringify(VARIANTS[i]));
  assert.equal(rewrite!(Buffer.from(COMMON[0], 'latin1'), [], '', OTHER), null, 'a 101 for another key');
  assert.ok(taken > 40, `101s taken by the C++ path: ${taken}`);
});

test('native 101 = the JS one on mutated heads and their prefixes', (t) => {
  if (!needAddon(t)) return;
  const seeds = [...responseHeadLiterals('1\\d\\d'), ...VARIANTS.slice(0, COMMON.length + 5).map((s) => Buffer.from(s, 'latin1'))];
  fc.assert(
    fc.property(fc.constantFrom(...seeds), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 3 }), (seed, mutations, cuts) => {
      const buf = mutate(seed, mutations);
      agreeAll(buf);
      for (const c of cuts) agreeAll(buf.subarray(0, buf.length === 0 ? 0 : c % buf.length));
    }),
    opts,
  );
});

test('native 101 = the JS one on heads built from random fields', (t) => {
  if (!needAddon(t)) return;
  const name = fc.oneof(
    fc.constantFrom('Upgrade', 'upgrade', 'Connection', 'Sec-WebSocket-Accept', 'sec-websocket-accept', 'Content-Length', 'Transfer-Encoding', 'Keep-Alive', 'Server', 'Date', 'X-Drop', 'Host', 'TE'),
    fc.string({ unit: fc.constantFrom(...'abcXYZ-_!#~09:;('.split('')), minLength: 0, maxLength: 8 }),
  );
  const value = fc.oneof(
    fc.constantFrom('websocket', 'WebSocket', 'websocket, h2c', 'Upgrade', 'upgrade, close', 'keep-alive', 'X-Drop, Upgrade', ACCEPT, ` ${ACCEPT} `, OTHER, '0', 'chunked', ''),
    fc.string({ unit: fc.constantFrom(...'a ,\t\x80\xff\x7f\x00\r1='.split('')), maxLength: 12 }),
  );
  fc.assert(
    fc.property(fc.constantFrom('101 Switching Protocols', '101 ', '101 x\ty', '100 Continue', '200 OK'), fc.array(fc.tuple(name, value), { maxLength: 8 }), (line, fields) => {
      const head = `HTTP/1.1 ${line}\r\n${fields.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n\x81\x00`;
      agree(Buffer.from(head, 'latin1'), ACCEPT);
    }),
    opts,
  );
});
