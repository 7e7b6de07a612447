// The addon's request-head reader and rewriter (src/native/request-head.h, exported for tests as requestHeadRewrite;
// not on the request path yet) held to the JS one: src/wire/http-head.ts parseRequestHead, src/route/decide.ts's path
// normalization, then src/handlers/rewrite.ts buildRequestHead. Whenever the C++ side takes a head, JS parses it too,
// leaves its path as it is, reads the same method, target, host, version, framing and reuse, and builds the same bytes
// for the upstream, under several routes (plain, fixed lines, owned forwarding names, a stripped prefix), clients
// (IPv4, IPv6, IPv4-mapped, both schemes, a request id) and limits. The C++ side must take the heads real clients send
// (captured here from curl, Node's http and fetch over loopback) and refuse what is not its own. Run under ASan by
// scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { WebSocket } from 'ws';
import { parseRequestHead, type HeadLimits } from '../../src/wire/http-head.js';
import { normalizePath } from '../../src/wire/path.js';
import { buildRequestHead, responseSkipNames, routeResponseLines } from '../../src/handlers/rewrite.js';
import type { CompiledHeaderOps, CompiledRoute, RequestVars } from '../../src/route/router.js';
import type { ForwardingPolicy } from '../../src/route/forwarding.js';
import { native } from '../../src/native/addon.js';
import { unmapIPv4 } from '../../src/core/util.js';
import { addressBytes, ipv6Words, nodeAddressText } from '../helpers/addresses.js';
import { assertFor, mutate, mutationArb as mutationArbOf } from '../helpers/fuzz.js';
import { needAddonExport, needPeer } from '../helpers/peers.js';
import { hasCurl } from '../helpers/clients.js';
import { startHeadCapture, type CapturedHead } from '../helpers/head-capture.js';

type NativeRequest = { used: number; keepAlive: boolean; minor: number; method: string; lengthZero: boolean; path: string; query: string; hostRaw: string; host: string; head: string } | null;
type RequestHeadRewrite = (
  bytes: Uint8Array,
  limits: [number, number, number],
  skip: string[],
  own: string[],
  forwarded: boolean,
  strip: string,
  extra: string,
  address: Uint8Array,
  https: boolean,
  serverPort: number,
  requestId?: string,
) => NativeRequest;
const rewriteNative = (native() as unknown as { requestHeadRewrite?: RequestHeadRewrite } | undefined)?.requestHeadRewrite;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, rewriteNative !== undefined, 'the native addon (with requestHeadRewrite)');
}

/** The config's defaults (schema.ts limits) and small ones, so that heads near each bound are common. */
const DEFAULT_LIMITS: HeadLimits = { headerSize: 32 * 1024, uriSize: 8 * 1024, headers: 100 };
const SMALL_LIMITS: HeadLimits = { headerSize: 160, uriSize: 24, headers: 4 };

function ops(remove: string[], set: Array<[string, string]>): CompiledHeaderOps {
  return { remove: new Set(remove), set: set.map(([name, value]) => ({ name, lower: name.toLowerCase(), render: () => value })) };
}
function policy(forwarded: boolean): ForwardingPolicy {
  return { trusts: () => false, xForwardedFor: 'replace', forwarded };
}
/** Request sides of routes: plain; fixed lines with owned forwarding names; a stripped prefix with Forwarded on; more. */
const ROUTES: CompiledRoute[] = [
  { stripPrefix: '', requestHeaders: ops([], []), forwarding: policy(false) },
  { stripPrefix: '', requestHeaders: ops(['cookie', 'x-forwarded-proto', 'x-real-ip'], [['X-Frame', 'DENY'], ['X-Forwarded-Host', 'fixed.example']]), forwarding: policy(true) },
  { stripPrefix: '/api', requestHeaders: ops(['forwarded', 'x-request-id'], [['Via', '1.1 portico']]), forwarding: policy(true) },
  { stripPrefix: '/a', requestHeaders: ops(['x-forwarded-for', 'x-forwarded-port', 'user-agent'], [['X-Forwarded-For', 'hidden'], ['Close', 'set']]), forwarding: policy(false) },
].map((r) => r as unknown as CompiledRoute);

/** A client: its address bytes, scheme, listener port, request id (log.request_id), trust (no client copies here: no effect). */
interface Client {
  address: Uint8Array;
  https: boolean;
  port: number;
  requestId: string | undefined;
  trusted: boolean;
}

const v6 = (text: string): Uint8Array => addressBytes(text);
const CLIENTS: Client[] = [
  { address: Uint8Array.from([127, 0, 0, 1]), https: false, port: 80, requestId: undefined, trusted: false },
  { address: v6('::1'), https: true, port: 443, requestId: '4f1c2a9e0b7d-1z', trusted: false },
  { address: v6('::ffff:192.0.2.7'), https: true, port: 8443, requestId: undefined, trusted: true },
  { address: v6('2001:db8:0:0:1:0:0:1'), https: false, port: 8080, requestId: 'client-chosen-id', trusted: false },
  { address: Uint8Array.from([10, 255, 0, 200]), https: true, port: 65535, requestId: undefined, trusted: false },
];

let taken = 0;
let runs = 0;

const BUDGET_MS = 1_500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };
const EDGE = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x23, 0x25, 0x2c, 0x2e, 0x2f, 0x30, 0x3a, 0x3f, 0x41, 0x5c, 0x61, 0x7f, 0x80, 0xff];
const mutationArb = mutationArbOf(EDGE);

/** Whenever the C++ side takes `buf` (under any route, client and limits tried), the JS side agrees on all of it. */
function agree(buf: Buffer, clients: readonly Client[] = CLIENTS, limitsList: readonly HeadLimits[] = [DEFAULT_LIMITS, SMALL_LIMITS]): void {
  for (const limits of limitsList) {
    for (const route of ROUTES) {
      for (const client of clients) {
        const o = route.requestHeaders;
        const cc = rewriteNative!(
          buf,
          [limits.headerSize, limits.uriSize, limits.headers],
          responseSkipNames(o),
          [...o.remove, ...o.set.map((s) => s.lower)],
          route.forwarding.forwarded,
          route.stripPrefix,
          routeResponseLines(o, {} as RequestVars),
          client.address,
          client.https,
          client.port,
          client.requestId,
        );
        if (cc === null) continue;
        taken++;
        const what = JSON.stringify(buf.toString('latin1'));
        const js = parseRequestHead(buf, limits);
        assert.equal(js.kind, 'done', `JS refuses what C++ took: ${what}${js.kind === 'error' ? ` (${js.reason})` : ''}`);
        if (js.kind !== 'done') return;
        const h = js.head;
        // decide.ts: the route and the upstream get the normalized path; the C++ side takes only paths left as they are
        assert.equal(normalizePath(h.path), h.path, `decide.ts would rewrite the path: ${what}`);
        assert.equal(cc.used, js.used, what);
        assert.equal(cc.method, h.method, what);
        assert.equal(cc.minor, h.versionMinor, what);
        assert.equal(cc.path, h.path, what);
        assert.equal(cc.query, h.query, what);
        assert.equal(cc.hostRaw, h.hostRaw, what);
        assert.equal(cc.host.toLowerCase(), h.host, what);
        assert.equal(cc.keepAlive, h.keepAlive, what);
        assert.equal(h.upgrade, undefined, what);
        assert.equal(h.expectContinue, false, what);
        assert.equal(h.bodyKind, cc.lengthZero ? 'length' : 'none', what);
        if (cc.lengthZero) assert.equal(h.contentLength, 0, what);
        // the router matched the route's prefix on a segment boundary (router.ts PathTable.match)
        const sp = route.stripPrefix;
        if (sp !== '') assert.ok(h.path.startsWith(sp) && (h.path.length === sp.length || h.path[sp.length] === '/'), `prefix ${sp} not at a boundary: ${what}`);
        const vars: RequestVars = {
          remoteAddr: nodeAddressText(client.address),
          host: h.host ?? '',
          scheme: client.https ? 'https' : 'http',
          requestUri: h.target,
          serverPort: client.port,
          trustedPeer: client.trusted,
          requestId: client.requestId,
        };
        assert.equal(cc.head, buildRequestHead(h, route, vars, false), what);
      }
    }
  }
}

/** What `rewriteNative` says for `s` on the plain route and the first client (null: not mine). */
function takes(s: string | Buffer, limits: HeadLimits = DEFAULT_LIMITS, address = CLIENTS[0].address): boolean {
  const buf = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return rewriteNative!(buf, [limits.headerSize, limits.uriSize, limits.headers], responseSkipNames(ROUTES[0].requestHeaders), [], false, '', '', address, false, 80) !== null;
}

const CHROMIUM =
  'GET /app/index.html?lang=en&q=a%20b HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\nsec-ch-ua: "Chromium";v="120", "Not?A_Brand";v="8"\r\n' +
  'sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: "Linux"\r\nUpgrade-Insecure-Requests: 1\r\n' +
  'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n' +
  'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n' +
  'Sec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n' +
  'Cookie: session=4a7f9c; theme=dark; _ga=GA1.2.3.4\r\nIf-None-Match: "abc"\r\n\r\n';

/** Heads real clients send, written out: each must be taken (the corpus is the subset's reason to exist). */
const MUST_TAKE: string[] = [
  CHROMIUM,
  // wrk's default request (its wrk.lua format: the method, the path, Host)
  'GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n',
  'GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n',
  'HEAD /health HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n',
  'GET /v1/items?id=7 HTTP/1.1\r\nHost: [::1]:8443\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n',
  'GET /api/users HTTP/1.1\r\nHost: [2001:db8::1]\r\nAccept: application/json\r\nAuthorization: Bearer abc.def\r\nX-Request-Id: trace-1\r\n\r\n',
  'GET /api HTTP/1.1\r\nHost: EXAMPLE.com\r\nConnection: close\r\n\r\n',
  'GET /a?x HTTP/1.1\r\nhost: a.b\r\ncontent-length: 0\r\nkeep-alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\r\n',
  // ApacheBench: HTTP/1.0 with keep-alive asked for
  'GET /ab HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n',
  'GET /;jsessionid=1/x.php HTTP/1.1\r\nHost: h\r\nX-Obs: caf\xe9\r\nX-Empty:\r\nClose: dropped with the token\r\nConnection: close\r\n\r\n',
];

/** Variants refused, one for each rule of the subset (native-notes/request.md says why). */
const REFUSED: string[] = [
  '\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n',
  'CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n',
  'get / HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET  / HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a%2Fb HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a%41 HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a/../b HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a/./b HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET //a HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a//b HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a/..;/b HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a#f HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a?b#c HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /\x80 HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET / HTTP/1.2\r\nHost: h\r\n\r\n',
  'GET / HTTP/2.0\r\nHost: h\r\n\r\n',
  'GET / http/1.1\r\nHost: h\r\n\r\n',
  'GET / HTTP/1.1\nHost: h\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\n\n',
  'GET / HTTP/1.1\r\nHost: h\r\n\r',
  'GET / HTTP/1.1\r\nHost: h\r\n',
  'GET / HTTP/1.1\r\n\r\n',
  'GET / HTTP/1.0\r\n\r\n',
  'GET / HTTP/1.1\r\nHost:\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nhost: other\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h:65536\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h:080800\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h h\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: user@h\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: [::1\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: [1:2]\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: [v1.x]\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx',
  'GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0, 0\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nTrailer: X\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Drop\r\nX-Drop: 1\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-proto: https\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Server: p\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-Real-IP: 1.2.3.4\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=1.2.3.4\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX(A): 1\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n',
];

/** Variants taken: at the edges of the rules. */
const TAKEN: string[] = [
  'GET /a?b=%2F..//\\ HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h:\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h:65535\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 000\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nConnection: , ,\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: \r\n\r\n',
  'GET / HTTP/1.1\r\nHost: h\r\nX-A:  padded \t \r\n\r\n',
  'GET /api HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /api/ HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /api/x?y HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /api?y HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /apix HTTP/1.1\r\nHost: h\r\n\r\n',
  'GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n',
  'HEAD /a HTTP/1.0\r\nHost: h\r\n\r\n',
  'HEAD /a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n',
];

/** Heads around the small limits (SMALL_LIMITS: 160 bytes, a 24-byte target, 4 fields): at each bound and one past it. */
function limitHeads(): string[] {
  const out: string[] = [];
  for (const n of [23, 24, 25]) out.push(`GET /${'t'.repeat(n - 1)} HTTP/1.1\r\nHost: h\r\n\r\n`);
  for (const n of [3, 4, 5]) out.push(`GET / HTTP/1.1\r\nHost: h\r\n${'X-F: 1\r\n'.repeat(n - 1)}\r\n`);
  const base = 'GET / HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n'.length;
  for (const n of [159, 160, 161]) out.push(`GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ${'p'.repeat(n - base)}\r\n\r\n`);
  // and the defaults: 8 KiB of target, 100 fields, 32 KiB of head
  for (const n of [8191, 8192, 8193]) out.push(`GET /${'u'.repeat(n - 1)} HTTP/1.1\r\nHost: h\r\n\r\n`);
  for (const n of [99, 100, 101]) out.push(`GET / HTTP/1.1\r\nHost: h\r\n${'X-F: 1\r\n'.repeat(n - 1)}\r\n`);
  for (const n of [32 * 1024 - 1, 32 * 1024, 32 * 1024 + 1]) out.push(`GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ${'p'.repeat(n - base)}\r\n\r\n`);
  return out;
}

/** Heads sent by real clients to a loopback server, with the address each came from. */
async function captureClients(t: TestContext): Promise<CapturedHead[]> {
  const cap = await startHeadCapture(t);
  const port = cap.port;
  const out: CapturedHead[] = [];
  await cap.nodeRequest('127.0.0.1', '/node/path?x=1', { cookie: 'a=1; b=2' });
  out.push(cap.take('node http (IPv4-mapped on a dual-stack listener)'));
  await cap.nodeRequest('::1', '/node/path?x=1', { 'user-agent': 'node' }, 'HEAD');
  out.push(cap.take('node http HEAD from ::1'));
  await (await fetch(`http://127.0.0.1:${port}/fetch?y=2`, { headers: { 'x-request-id': 'from-fetch' } })).text();
  out.push(cap.take('fetch (undici)'));
  if (hasCurl()) {
    const curls: Array<[string[], string]> = [
      [[`http://127.0.0.1:${port}/curl/index.html`], 'curl'],
      [['-I', `http://127.0.0.1:${port}/curl/head`], 'curl HEAD'],
      [['-g', `http://[::1]:${port}/curl/v6?q=a`], 'curl over IPv6'],
      [['-b', 'session=4a7f9c; theme=dark', '-A', 'Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0', '-H', 'Accept-Language: en', `http://localhost:${port}/curl/c`], 'curl with cookies'],
      [['-0', `http://127.0.0.1:${port}/curl/ten`], 'curl HTTP/1.0'],
    ];
    for (const [args, who] of curls) out.push(await cap.curl(args, who));
  } else if (!needPeer(t, 'curl', false)) {
    return out;
  }
  // a WebSocket handshake (ws): captured to show it is refused (Upgrade is the tunnel's, JS's)
  const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`);
  await new Promise<void>((resolve) => {
    ws.on('error', () => {}); // "Unexpected server response: 200": the handshake was all this wanted
    ws.on('close', () => resolve());
  });
  out.push(cap.take('ws handshake'));
  return out;
}

test('native request head = the JS parser, path normalization and head builder on heads real clients send', async (t) => {
  if (!needAddon(t)) return;
  const heads = await captureClients(t);
  for (const { head, from, who } of heads) {
    const client: Client = { address: addressBytes(unmapIPv4(from)), https: false, port: 8080, requestId: undefined, trusted: false };
    assert.equal(nodeAddressText(client.address), unmapIPv4(from), `${who}: address text`);
    // the address as the peer really had it (IPv4-mapped included), and the usual clients
    const mapped: Client = { ...client, address: addressBytes(from) };
    agree(head, [client, mapped, ...CLIENTS], [DEFAULT_LIMITS]);
    // a WebSocket handshake is the tunnel's (JS's); every other head is taken on a plain route
    const mine = who !== 'ws handshake';
    assert.equal(takes(head, DEFAULT_LIMITS, mapped.address), mine, `${who}: ${head.toString('latin1')}`);
    assert.equal(takes(head, DEFAULT_LIMITS, client.address), mine, `${who}: ${head.toString('latin1')}`);
  }
  assert.ok(heads.length >= 4, `heads captured: ${heads.length}`);
});

test('native request head = the JS one on the corpus, variants of each rule, limits and prefixes', (t) => {
  if (!needAddon(t)) return;
  for (const s of MUST_TAKE) assert.ok(takes(s), `a real client's head is taken: ${JSON.stringify(s)}`);
  taken = 0;
  const seeds = [...MUST_TAKE, ...TAKEN, ...REFUSED, ...limitHeads()].map((s) => Buffer.from(s, 'latin1'));
  for (const seed of seeds) {
    agree(seed);
    for (let p = 0; p < seed.length && p < 300; p++) agree(seed.subarray(0, p), CLIENTS.slice(0, 2), [DEFAULT_LIMITS]);
  }
  assert.ok(taken > 500, `heads taken by the C++ path: ${taken}`);
  t.diagnostic(`${seeds.length} seeds and their prefixes: ${taken} (head, route, client, limits) cases taken and agreed`);
  for (const s of REFUSED) assert.ok(!takes(s), `not mine: ${JSON.stringify(s)}`);
  for (const s of TAKEN) assert.ok(takes(s), `mine: ${JSON.stringify(s)}`);
  const limits = limitHeads();
  assert.deepEqual(limits.slice(0, 9).map((s) => takes(s, SMALL_LIMITS)), [true, true, false, true, true, false, true, true, false], 'small limits: at each bound taken, one past it refused');
  assert.deepEqual(limits.slice(9).map((s) => takes(s)), [true, true, false, true, true, false, true, true, false], 'default limits: at each bound taken, one past it refused');
});

test('native request head: client addresses written as Node writes them (IPv4, IPv6, IPv4-mapped)', (t) => {
  if (!needAddon(t)) return;
  const head = Buffer.from('GET / HTTP/1.1\r\nHost: h\r\n\r\n', 'latin1');
  const word = fc.oneof(fc.constant(0), fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff }));
  const address = fc.oneof(
    fc.uint8Array({ minLength: 4, maxLength: 4 }),
    fc.array(word, { minLength: 8, maxLength: 8 }).map((ws) => Uint8Array.from(ws.flatMap((w) => [w >> 8, w & 0xff]))),
  );
  // a reserved address whose text begins as a mapped one's keeps its first part (only ::ffff:a.b.c.d is mapped)
  const reserved = Uint8Array.from([0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff]);
  assert.equal(nodeAddressText(reserved), '::ffff:0:1:0:0:ffff');
  assert.ok(rewriteNative!(head, [32768, 8192, 100], [], [], true, '', '', reserved, false, 80) !== null, 'a reserved ::ffff: address taken');
  agree(head, [{ address: reserved, https: false, port: 80, requestId: undefined, trusted: false }], [DEFAULT_LIMITS]);
  fc.assert(
    fc.property(address, fc.boolean(), fc.integer({ min: 1, max: 65535 }), (addr, https, port) => {
      const cc = rewriteNative!(head, [32768, 8192, 100], [], [], true, '', '', addr, https, port);
      // link-local IPv6 carries a zone in Node's text: JS's
      if (addr.length === 16 && addr[0] === 0xfe && (addr[1] & 0xc0) === 0x80) return cc === null;
      assert.ok(cc !== null);
      agree(head, [{ address: addr, https, port, requestId: undefined, trusted: false }], [DEFAULT_LIMITS]);
      return true;
    }),
    opts,
  );
});

test('native request head = the JS one on mutated heads and their prefixes', (t) => {
  if (!needAddon(t)) return;
  const seeds = [...MUST_TAKE, ...TAKEN].map((s) => Buffer.from(s, 'latin1'));
  taken = 0;
  runs = 0;
  assertFor(
    fc.property(fc.constantFrom(...seeds), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 2 }), (seed, mutations, cuts) => {
      runs++;
      const buf = mutate(seed, mutations);
      agree(buf, CLIENTS.slice(0, 3));
      for (const c of cuts) agree(buf.subarray(0, buf.length === 0 ? 0 : c % buf.length), CLIENTS.slice(0, 1));
    }),
    BUDGET_MS,
    () => taken > 100,
  );
  assert.ok(taken > 100, `mutated heads taken by the C++ path: ${taken}`);
  t.diagnostic(`${runs} mutated heads: ${taken} (head, route, client, limits) cases taken and agreed`);
});

test('native request head = the JS one on heads built from random lines and fields', (t) => {
  if (!needAddon(t)) return;
  const name = fc.oneof(
    fc.constantFrom('Host', 'host', 'HOST', 'Content-Length', 'Connection', 'Transfer-Encoding', 'Upgrade', 'Expect', 'TE', 'Trailer', 'Keep-Alive', 'Close', 'X-Request-Id', 'X-Forwarded-For', 'X-Forwarded-Host', 'X-Real-IP', 'Forwarded', 'Cookie', 'User-Agent', 'Proxy-Connection', 'X-Forwarded', 'x-forwarded-'),
    fc.string({ unit: fc.constantFrom(...'abcXYZ-_!#~09:;( '.split('')), minLength: 0, maxLength: 8 }),
  );
  const value = fc.oneof(
    fc.constantFrom('h', 'H.example:80', '[::1]:8080', '[::1', 'a b', '0', '00', '1', '', 'close', 'keep-alive', 'Keep-Alive, close', 'upgrade', 'x-drop', 'chunked', '100-continue', ' padded ', 'id-1'),
    fc.string({ unit: fc.constantFrom(...'a ,\t\x80\xff\x7f\x00\r\n1:[]'.split('')), maxLength: 12 }),
  );
  const host = fc.option(fc.constantFrom('h', 'Example.COM', 'a.b:8080', 'h:', '[::1]', '[2001:DB8::1]:443', '10.0.0.1', 'h_~-.x', '[::1', 'h:99999', 'a b', ''), { nil: undefined, freq: 8 });
  const target = fc.oneof(
    fc.constantFrom('/', '/x', '/api/v1?a=b'),
    fc.constantFrom('/', '/api', '/api/x', '/apix', '/a', '/a/b?c', '/x?%2F', '/.x', '//x', '/x/..', '/%41', '*', 'http://h/', '/#'),
    fc.string({ unit: fc.constantFrom(...'/a.%?;\\#~:@'.split('')), maxLength: 10 }),
  );
  taken = 0;
  runs = 0;
  assertFor(
    fc.property(fc.constantFrom('GET', 'GET', 'HEAD', 'POST', 'GETS'), target, fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/1.2'), fc.array(fc.tuple(name, value), { maxLength: 6 }), host, fc.nat(), (method, tgt, version, fields, h, at) => {
      runs++;
      // one Host line (most heads have one) among the random ones
      const lines = fields.map(([n, v]) => `${n}: ${v}\r\n`);
      if (h !== undefined) lines.splice(at % (lines.length + 1), 0, `Host: ${h}\r\n`);
      const head = `${method} ${tgt} ${version}\r\n${lines.join('')}\r\n`;
      agree(Buffer.from(head, 'latin1'), CLIENTS.slice(0, 3));
    }),
    BUDGET_MS,
    () => taken > 100,
  );
  assert.ok(taken > 100, `random heads taken by the C++ path: ${taken}`);
  t.diagnostic(`${runs} random heads: ${taken} (head, route, client, limits) cases taken and agreed`);
});
