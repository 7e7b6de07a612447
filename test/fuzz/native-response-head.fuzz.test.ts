// The addon's response-head path (src/native/response-head.h, the relayed answer of io.cc) held to the JS one
// (src/wire/http-head.ts parseResponseHead, then src/handlers/rewrite.ts buildResponseHead as forward.ts calls it):
// on every response head in the repository's tests, on hand-made variants around each rule, on byte mutations of
// them (fast-check, under a time budget) and on their prefixes, whenever the C++ side takes a head the JS side
// parses it too, with the same status, length, framing and reuse, and rewrites it to the same bytes. The C++ side
// must also take the common heads (else the relay would never run). Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseResponseHead, type HeadLimits } from '../../src/wire/http-head.js';
import { buildResponseHead, responseSkipNames, routeResponseLines } from '../../src/handlers/rewrite.js';
import type { CompiledHeaderOps, RequestVars } from '../../src/route/router.js';
import { native } from '../../src/native/addon.js';
import { mutate, mutationArb as mutationArbOf, responseHeadLiterals } from '../helpers/fuzz.js';
import { needAddonExport } from '../helpers/peers.js';

type NativeHead = { status: number; used: number; contentLength: number; keepAlive: boolean; head: string } | null;
const rewriteNative = (native() as unknown as { responseHeadRewrite?: (b: Uint8Array, skip: string[], extra: string, conn: number) => NativeHead } | undefined)?.responseHeadRewrite;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, rewriteNative !== undefined, 'the native addon (with its relayed answer)');
}

/** forward.ts RESPONSE_HEAD_LIMITS */
const LIMITS: HeadLimits = { headerSize: 64 * 1024, uriSize: 8192, headers: 200 };
const VARS = {} as RequestVars;
const CONN = ['', 'close', 'keep-alive'] as const;

/** Response sides of routes: none, one that removes and sets fields, and one with a stickiness cookie. */
const PLANS: Array<{ ops: CompiledHeaderOps; cookie?: string }> = [
  { ops: { remove: new Set(), set: [] } },
  { ops: { remove: new Set(['server', 'x-powered-by']), set: [{ name: 'X-Frame-Options', lower: 'x-frame-options', render: () => 'DENY' }] } },
  { ops: { remove: new Set(['etag']), set: [] }, cookie: 'portico_sticky=abc; Path=/; HttpOnly' },
];

let accepted = 0;

/** Whenever the C++ side takes `buf`, the JS side agrees on everything the relay depends on. */
function agree(buf: Buffer): void {
  for (const plan of PLANS) {
    const skip = responseSkipNames(plan.ops);
    const extra = routeResponseLines(plan.ops, VARS, plan.cookie);
    for (let conn = 0; conn < 3; conn++) {
      const cc = rewriteNative!(buf, skip, extra, conn);
      if (cc === null) continue;
      accepted++;
      const what = JSON.stringify(buf.toString('latin1'));
      const js = parseResponseHead(buf, LIMITS, 'GET');
      assert.equal(js.kind, 'done', `JS refuses what C++ took: ${what}${js.kind === 'error' ? ` (${js.reason})` : ''}`);
      if (js.kind !== 'done') return;
      assert.equal(cc.status, js.head.status, what);
      assert.equal(cc.used, js.used, what);
      assert.equal(js.head.bodyKind, 'length', what);
      assert.equal(cc.contentLength, js.head.contentLength, what);
      assert.equal(cc.keepAlive, js.head.keepAlive, what);
      assert.equal(cc.head, buildResponseHead(js.head, plan.ops, VARS, CONN[conn], plan.cookie), what);
    }
  }
}

const OK = 'HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\nok portico bench\n';
/** Variants around each rule of the C++ subset, taken or refused. */
const VARIANTS: string[] = [
  OK,
  'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\nX-A:  spaced value \t\r\n\r\nabc',
  'HTTP/1.1 500 \r\nContent-Length: 1\r\n\r\nx',
  'HTTP/1.1 599 odd\treason \xe9\r\nContent-Length: 007\r\n\r\n',
  'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.1 200 OK\r\nConnection: X-Drop, , keep-alive ,Close\r\nX-Drop: 1\r\nx-drop: 2\r\nX-Keep: 3\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.1 200 OK\r\nConnection: content-length, host, transfer-encoding\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nTE: x\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nHTTP2-Settings: x\r\nServer: s\r\nETag: "1"\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Obs: \x80\xff\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi and more',
  'HTTP/1.1 200 OK\r\nContent-Length: 9007199254740991\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 9007199254740992\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\nh',
  'HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nh',
  'HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.1 200 OK\r\n\r\nread until close',
  'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n',
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
  'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n',
  'HTTP/1.1 199 x\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 600 x\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 099 x\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi',
  'HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n',
  'http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 0\n\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n',
  'HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\n: 1\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX(A): 1\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n',
  'HTTP/1.1 200 OK\r\nContent-Len',
  'HTTP/1.1 200 O',
  'HTTP/1.1 200 OK\r\n' + 'X-Many: 1\r\n'.repeat(199) + 'Content-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\n' + 'X-Many: 1\r\n'.repeat(200) + 'Content-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX-Big: ' + 'v'.repeat(64 * 1024 - 60) + '\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX-Big: ' + 'v'.repeat(64 * 1024) + '\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nConnection: ' + 'a,'.repeat(100) + '\r\nContent-Length: 0\r\n\r\n',
];

const BUDGET_MS = 1_500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };
const EDGE = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x2c, 0x30, 0x31, 0x32, 0x39, 0x3a, 0x41, 0x61, 0x7f, 0x80, 0xff];
const mutationArb = mutationArbOf(EDGE);

test('native response head = the JS parser and head builder on the test corpus and variants of each rule', (t) => {
  if (!needAddon(t)) return;
  const seeds = [...responseHeadLiterals('\\d{3}'), ...VARIANTS.map((s) => Buffer.from(s, 'latin1'))];
  assert.ok(seeds.length > VARIANTS.length + 20, `response heads found in the tests: ${seeds.length - VARIANTS.length}`);
  accepted = 0;
  for (const seed of seeds) {
    agree(seed);
    for (let p = 0; p < seed.length && p < 400; p++) agree(seed.subarray(0, p));
  }
  // the relay runs on the common answers: each of these is taken under every plan and Connection line
  for (const s of [OK, VARIANTS[2], VARIANTS[6], VARIANTS[9], VARIANTS[11]]) {
    for (let conn = 0; conn < 3; conn++) assert.notEqual(rewriteNative!(Buffer.from(s, 'latin1'), [], '', conn), null, JSON.stringify(s));
  }
  assert.ok(accepted > 100, `heads taken by the C++ path: ${accepted}`);
  // and refuses what is not its own: chunked, no length, no body, interim, HTTP/1.0, a doubled length
  for (const i of [13, 14, 15, 18, 20, 21, 22, 23, 24, 29]) assert.equal(rewriteNative!(Buffer.from(VARIANTS[i], 'latin1'), [], '', 0), null, JSON.stringify(VARIANTS[i]));
});

test('native response head = the JS one on mutated heads and their prefixes', (t) => {
  if (!needAddon(t)) return;
  const seeds = [...responseHeadLiterals('\\d{3}'), ...VARIANTS.slice(0, 12).map((s) => Buffer.from(s, 'latin1'))];
  fc.assert(
    fc.property(fc.constantFrom(...seeds), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 3 }), (seed, mutations, cuts) => {
      const buf = mutate(seed, mutations);
      agree(buf);
      for (const c of cuts) agree(buf.subarray(0, buf.length === 0 ? 0 : c % buf.length));
    }),
    opts,
  );
});

test('native response head = the JS one on heads built from random fields', (t) => {
  if (!needAddon(t)) return;
  const name = fc.oneof(
    fc.constantFrom('Content-Length', 'content-length', 'Connection', 'Transfer-Encoding', 'Keep-Alive', 'Server', 'ETag', 'X-Drop', 'Host', 'Upgrade', 'TE', 'Set-Cookie'),
    fc.string({ unit: fc.constantFrom(...'abcXYZ-_!#~09:;('.split('')), minLength: 0, maxLength: 8 }),
  );
  const value = fc.oneof(
    fc.constantFrom('0', '17', '007', '1, 1', 'close', 'keep-alive', 'X-Drop, close', 'chunked', ' padded ', ''),
    fc.string({ unit: fc.constantFrom(...'a ,\t\x80\xff\x7f\x00\r1'.split('')), maxLength: 12 }),
  );
  fc.assert(
    fc.property(fc.constantFrom('200 OK', '201 Created', '302 Found', '404 ', '503 Busy', '204 No', '101 Up'), fc.array(fc.tuple(name, value), { maxLength: 8 }), (line, fields) => {
      const head = `HTTP/1.1 ${line}\r\n${fields.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\nbody`;
      agree(Buffer.from(head, 'latin1'));
    }),
    opts,
  );
});
