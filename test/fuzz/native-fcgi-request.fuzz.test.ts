// The addon's FastCGI request records (src/native/fcgi-request.h, exported for tests as fcgiRequestRecords; not on
// the request path yet) held to the JS ones: src/wire/http-head.ts parseRequestHead, then what src/handlers/fastcgi.ts
// sends FPM for a bodyless request, encodeRequestStart(1, keepConn, fixedParams(f), requestParams(...), true). Whenever
// the C++ side writes records, JS parses the head the same way and writes the same bytes, under route plans (root,
// standard names and HTTP_* names overridden, fixed extra params, a param past 64 KiB), scripts (PATH_INFO, non-ASCII
// names), clients (IPv4, IPv6, IPv4-mapped, trusted or not, both schemes) and limits. The heads of real clients (curl,
// Node's http, fetch, captured here over loopback) must be taken; a route with per-request params and a trusted
// peer's X-Forwarded-For must not. Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseRequestHead, type HeadLimits } from '../../src/wire/http-head.js';
import { normalizePath } from '../../src/wire/path.js';
import { encodeRequestStart } from '../../src/wire/fastcgi.js';
import { fixedParams, nativeParamsPlan, requestParams, scriptParams } from '../../src/handlers/fastcgi-params.js';
import type { Script } from '../../src/handlers/fastcgi-script.js';
import { parseParamTemplate } from '../../src/config/fastcgi-params.js';
import type { CompiledFastcgi, RequestVars } from '../../src/route/router.js';
import type { ForwardingPolicy } from '../../src/route/forwarding.js';
import { native } from '../../src/native/addon.js';
import { unmapIPv4 } from '../../src/core/util.js';
import { addressBytes, nodeAddressText } from '../helpers/addresses.js';
import { assertFor, mutate, mutationArb as mutationArbOf } from '../helpers/fuzz.js';
import { needAddonExport, needPeer } from '../helpers/peers.js';
import { hasCurl } from '../helpers/clients.js';
import { startHeadCapture, type CapturedHead } from '../helpers/head-capture.js';

type FcgiRequestRecords = (
  bytes: Uint8Array,
  limits: [number, number, number],
  fixed: Uint8Array,
  overridden: readonly string[],
  perRequest: boolean,
  script: Uint8Array,
  remote: Uint8Array,
  remotePort: number,
  local: Uint8Array,
  serverPort: number,
  https: boolean,
  trusted: boolean,
  requestId: number,
  keepConn: boolean,
) => Buffer | null;
const recordsNative = (native() as unknown as { fcgiRequestRecords?: FcgiRequestRecords } | undefined)?.fcgiRequestRecords;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, recordsNative !== undefined, 'the native addon (with fcgiRequestRecords)');
}

const DEFAULT_LIMITS: HeadLimits = { headerSize: 32 * 1024, uriSize: 8 * 1024, headers: 100 };
const SMALL_LIMITS: HeadLimits = { headerSize: 160, uriSize: 24, headers: 4 };
/** Heads past 64 KiB of pairs: the PARAMS stream cut into records. */
const LARGE_LIMITS: HeadLimits = { headerSize: 200 * 1024, uriSize: 8 * 1024, headers: 256 };

/** A compiled fastcgi route (router.ts compileFastcgi's shape) with these extra params. */
function route(root: string, params: Record<string, string>): CompiledFastcgi {
  return Object.freeze({
    root,
    index: 'index.php',
    split: null,
    params: Object.entries(params).map(([name, value]) => {
      const parts = parseParamTemplate(value);
      if (typeof parts === 'string') throw new Error(parts);
      return { name, parts };
    }),
  });
}

const ROUTES: CompiledFastcgi[] = [
  route('/srv/www', {}),
  // standard pairs and HTTP_* names replaced, fixed values and $document_root
  route('/', { SERVER_NAME: 'fixed.example', HTTPS: '', QUERY_STRING: 'q=1', HTTP_COOKIE: 'none', HTTP_X_UNDER: 'u', APP_ENV: 'production', DOC: '$document_root/x', SCRIPT_NAME: '/s.php' }),
  route('/var/www/café', { REMOTE_ADDR: '192.0.2.1', CONTENT_TYPE: 'text/x', REMOTE_PORT: '1', SERVER_ADDR: '', SERVER_PORT: '', REQUEST_URI: '/u', GATEWAY_INTERFACE: 'x', HTTP_USER_AGENT: 'ua', HTTP_X_FORWARDED_FOR: 'f' }),
  route('/srv', { REQUEST_METHOD: 'POST', CONTENT_LENGTH: '9', SERVER_PROTOCOL: 'HTTP/9', REQUEST_SCHEME: 's', HTTP_HOST: 'h', HTTP_ACCEPT: 'a', DOCUMENT_ROOT: '/d' }),
];
/** A fixed param past 64 KiB: the PARAMS stream is cut into records even for a small head. */
const BIG_ROUTE = route('/srv/big', { BIG: 'b'.repeat(70_000), AFTER: 'x' });
/** Params rendered per request: not the C++ path's. */
const PER_REQUEST_ROUTES = [route('/srv', { APP_HOST: '$host' }), route('/srv', { P: '$fastcgi_path_info' }), route('/srv', { A: 'x', R: '$remote_addr:$remote_port' })];

const SCRIPTS: Script[] = [
  { scriptName: '/index.php', pathInfo: '', uri: '/index.php', filename: '/srv/www/index.php' },
  { scriptName: '/app.php', pathInfo: '/users/7', uri: '/app.php/users/7', filename: '/srv/www/app.php' },
  { scriptName: '/café/ü.php', pathInfo: '/ß/€', uri: '/café/ü.php/ß/€', filename: '/var/www/café/café/ü.php' },
];

/** A client: its address and port, the address it reached, the listener's port, the scheme, and whether its peer is trusted. */
interface Client {
  remote: Uint8Array;
  remotePort: number;
  local: Uint8Array;
  serverPort: number;
  https: boolean;
  trusted: boolean;
}

const CLIENTS: Client[] = [
  { remote: addressBytes('127.0.0.1'), remotePort: 40312, local: addressBytes('127.0.0.1'), serverPort: 80, https: false, trusted: false },
  { remote: addressBytes('::1'), remotePort: 1, local: addressBytes('::1'), serverPort: 443, https: true, trusted: false },
  { remote: addressBytes('::ffff:192.0.2.7'), remotePort: 65535, local: addressBytes('::ffff:10.0.0.1'), serverPort: 8443, https: true, trusted: true },
  { remote: addressBytes('2001:db8:0:0:1:0:0:1'), remotePort: 5000, local: addressBytes('2001:db8::2'), serverPort: 8080, https: false, trusted: true },
  { remote: addressBytes('10.255.0.200'), remotePort: 61000, local: addressBytes('0.0.0.0'), serverPort: 65535, https: false, trusted: false },
];

/** The policy realClient reads for a trusted peer (the C++ side leaves a trusted peer's X-Forwarded-For to JS). */
const FORWARDING: ForwardingPolicy = { trusts: (a) => a.startsWith('10.') || a === '192.0.2.7', xForwardedFor: 'append', forwarded: false };

let taken = 0;
let runs = 0;
const BUDGET_MS = 1_500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };
const EDGE = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x2c, 0x2d, 0x2f, 0x3a, 0x3b, 0x3f, 0x41, 0x5f, 0x61, 0x7f, 0x80, 0xc3, 0xff];
const mutationArb = mutationArbOf(EDGE);

function call(buf: Buffer, limits: HeadLimits, f: CompiledFastcgi, script: Script, client: Client, keepConn: boolean): Buffer | null {
  const plan = nativeParamsPlan(f);
  return recordsNative!(
    buf,
    [limits.headerSize, limits.uriSize, limits.headers],
    plan.fixed,
    plan.overridden,
    plan.perRequest,
    Buffer.from(scriptParams(f, script), 'latin1'),
    client.remote,
    client.remotePort,
    client.local,
    client.serverPort,
    client.https,
    client.trusted,
    1,
    keepConn,
  );
}

/** Whenever the C++ side writes records for `buf` (any route, script, client and limits tried), JS writes the same bytes. */
function agree(buf: Buffer, clients: readonly Client[] = CLIENTS, limitsList: readonly HeadLimits[] = [DEFAULT_LIMITS, SMALL_LIMITS], routes: readonly CompiledFastcgi[] = ROUTES): void {
  for (const limits of limitsList) {
    for (const [ri, f] of routes.entries()) {
      for (const [si, script] of SCRIPTS.entries()) {
        for (const [ci, client] of clients.entries()) {
          const keepConn = (ri + si + ci) % 3 !== 0;
          const cc = call(buf, limits, f, script, client, keepConn);
          if (cc === null) continue;
          taken++;
          const what = JSON.stringify(buf.toString('latin1').slice(0, 400));
          const js = parseRequestHead(buf, limits);
          assert.equal(js.kind, 'done', `JS refuses what C++ took: ${what}${js.kind === 'error' ? ` (${js.reason})` : ''}`);
          if (js.kind !== 'done') return;
          const h = js.head;
          // what fastcgi.ts needs to send the opening with the end of STDIN: no body, nothing to normalize
          assert.equal(normalizePath(h.path), h.path, `decide.ts would rewrite the path: ${what}`);
          assert.ok(h.method === 'GET' || h.method === 'HEAD', what);
          assert.equal(h.upgrade, undefined, what);
          assert.equal(h.expectContinue, false, what);
          assert.ok(h.bodyKind === 'none' || (h.bodyKind === 'length' && h.contentLength === 0), `a body: ${what}`);
          assert.ok(h.host !== undefined && h.host !== '', what);
          const remoteAddr = nodeAddressText(client.remote);
          const vars: RequestVars = { remoteAddr, host: h.host!, scheme: client.https ? 'https' : 'http', requestUri: h.target, serverPort: client.serverPort, trustedPeer: client.trusted };
          const pairs = requestParams(h, script, f, { vars, remotePort: String(client.remotePort), serverAddr: nodeAddressText(client.local), forwarding: FORWARDING });
          const expected = encodeRequestStart(1, keepConn, fixedParams(f), pairs, true);
          if (!cc.equals(expected)) assert.equal(cc.toString('latin1'), expected.toString('latin1'), `different records: ${what}`);
        }
      }
    }
  }
}

/** What the C++ side says for `s` on the plain route, the first script and `client` (null: not mine). */
function takes(s: string | Buffer, client: Client = CLIENTS[0], f: CompiledFastcgi = ROUTES[0], limits: HeadLimits = DEFAULT_LIMITS): boolean {
  const buf = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return call(buf, limits, f, SCRIPTS[0], client, true) !== null;
}

const CHROMIUM =
  'GET /index.php?lang=en&q=a%20b HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\nsec-ch-ua: "Chromium";v="120", "Not?A_Brand";v="8"\r\n' +
  'sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: "Linux"\r\nUpgrade-Insecure-Requests: 1\r\n' +
  'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n' +
  'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n' +
  'Sec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n' +
  'Cookie: session=4a7f9c; theme=dark; _ga=GA1.2.3.4\r\nIf-None-Match: "abc"\r\n\r\n';
const FIREFOX =
  'GET /wp-admin/ HTTP/1.1\r\nHost: blog.example.org\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0\r\n' +
  'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n' +
  'Referer: https://blog.example.org/\r\nConnection: keep-alive\r\nCookie: wordpress_logged_in=abc\r\nCookie: wp-settings-1=x\r\nUpgrade-Insecure-Requests: 1\r\n' +
  'Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Site: same-origin\r\nDNT: 1\r\nTE: trailers\r\n\r\n';

/** Heads the C++ side must take on the plain route from an untrusted IPv4 client. */
const MUST_TAKE: string[] = [
  CHROMIUM,
  FIREFOX.replace('TE: trailers\r\n', ''),
  'GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n',
  'GET /index.php HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n',
  'HEAD /health.php HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n',
  'GET /v1/items.php?id=7 HTTP/1.1\r\nHost: [::1]:8443\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n',
  'GET /api.php HTTP/1.1\r\nHost: [2001:DB8::1]\r\nAccept: application/json\r\nAuthorization: Bearer abc.def\r\nX-Request-Id: trace-1\r\n\r\n',
  'GET /ab HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n',
  // the fields the params treat specially: Content-Type (the first non-empty), httpoxy, `_`, lists, forwarding, hop-by-hop
  'GET /x.php?a=b HTTP/1.1\r\nHost: EXAMPLE.com\r\nContent-Type:\r\nContent-Type: text/plain\r\ncontent-type: text/html\r\nContent-Length: 0\r\n\r\n',
  'GET /x.php HTTP/1.1\r\nHost: h\r\nProxy: http://evil:8080\r\nX_Under: 1\r\nX-Under: 2\r\nx-under: 3\r\nAccept: a\r\nACCEPT: b\r\n\r\n',
  'GET /x.php HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-Host: a\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Server: p\r\n\r\n',
  'GET /x.php HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n\r\n',
  'GET /x.php HTTP/1.1\r\nHost: h\r\nConnection: close\r\nClose: kept as HTTP_CLOSE\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nHTTP2-Settings: AAA\r\n\r\n',
  'GET /x.php HTTP/1.1\r\nHost: h\r\nX-Obs: caf\xe9\r\nX-Empty:\r\nX-Pad:  padded \t \r\nX-Long: ' + 'l'.repeat(300) + '\r\n\r\n',
];

/** Heads the C++ side must refuse (besides all Scan refuses: native-request-head.fuzz.test.ts). */
const REFUSED: Array<[string, Client, CompiledFastcgi]> = [
  ['GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n', CLIENTS[2], ROUTES[0]],
  ['GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-for: 1.2.3.4\r\n\r\n', CLIENTS[3], ROUTES[1]],
  ['GET / HTTP/1.1\r\nHost: h\r\n\r\n', CLIENTS[0], PER_REQUEST_ROUTES[0]],
  ['GET / HTTP/1.1\r\nHost: h\r\n\r\n', CLIENTS[1], PER_REQUEST_ROUTES[1]],
  ['GET / HTTP/1.1\r\nHost: h\r\n\r\n', CLIENTS[2], PER_REQUEST_ROUTES[2]],
  ['POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n', CLIENTS[0], ROUTES[0]],
  ['GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc', CLIENTS[0], ROUTES[0]],
  ['GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', CLIENTS[0], ROUTES[0]],
  ['GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n', CLIENTS[0], ROUTES[0]],
  ['GET /a%20b.php HTTP/1.1\r\nHost: h\r\n\r\n', CLIENTS[0], ROUTES[0]],
  ['GET / HTTP/1.1\r\nHost:\r\n\r\n', CLIENTS[0], ROUTES[0]],
];

/** Heads sent by real clients to a loopback server, with the address each came from. */
async function captureClients(t: TestContext): Promise<CapturedHead[]> {
  const cap = await startHeadCapture(t);
  const port = cap.port;
  const out: CapturedHead[] = [];
  await cap.nodeRequest('127.0.0.1', '/index.php?x=1', { cookie: ['a=1', 'b=2'], 'content-type': 'application/json', proxy: 'http://evil' });
  out.push(cap.take('node http (IPv4-mapped on a dual-stack listener)'));
  await cap.nodeRequest('::1', '/index.php?x=1', { 'user-agent': 'node', 'x-forwarded-for': '203.0.113.9' }, 'HEAD');
  out.push(cap.take('node http HEAD from ::1'));
  await (await fetch(`http://127.0.0.1:${port}/fetch.php?y=2`, { headers: { 'x-request-id': 'from-fetch', accept: 'text/html' } })).text();
  out.push(cap.take('fetch (undici)'));
  if (hasCurl()) {
    const curls: Array<[string[], string]> = [
      [[`http://127.0.0.1:${port}/curl/index.php`], 'curl'],
      [['-I', `http://127.0.0.1:${port}/curl/head.php`], 'curl HEAD'],
      [['-g', `http://[::1]:${port}/curl/v6.php?q=a`], 'curl over IPv6'],
      [['-b', 'session=4a7f9c; theme=dark', '-H', 'Cookie: second=1', '-A', 'Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0', '-H', 'Accept-Language: en', `http://localhost:${port}/curl/c.php`], 'curl with cookies'],
      [['-0', '-H', 'Content-Type: text/plain', `http://127.0.0.1:${port}/curl/ten.php`], 'curl HTTP/1.0'],
    ];
    for (const [args, who] of curls) out.push(await cap.curl(args, who));
  } else if (!needPeer(t, 'curl', false)) {
    return out;
  }
  return out;
}

test('native FastCGI records = the JS ones on heads real clients send', async (t) => {
  if (!needAddon(t)) return;
  const heads = await captureClients(t);
  taken = 0;
  for (const { head, from, fromPort, to, who } of heads) {
    const client: Client = { remote: addressBytes(from), remotePort: fromPort, local: addressBytes(to), serverPort: 8080, https: false, trusted: false };
    assert.equal(nodeAddressText(client.remote), unmapIPv4(from), `${who}: address text`);
    agree(head, [client, { ...client, trusted: true, https: true }, ...CLIENTS], [DEFAULT_LIMITS]);
    assert.ok(takes(head, client), `${who}: ${head.toString('latin1')}`);
  }
  assert.ok(heads.length >= 3, `heads captured: ${heads.length}`);
  t.diagnostic(`${heads.length} real heads: ${taken} (head, route, script, client) cases taken and agreed`);
});

test('native FastCGI records = the JS ones on the corpus, its prefixes and large heads; refusals', (t) => {
  if (!needAddon(t)) return;
  for (const s of MUST_TAKE) assert.ok(takes(s), `taken: ${JSON.stringify(s)}`);
  for (const [s, client, f] of REFUSED) assert.ok(!takes(s, client, f), `not mine: ${JSON.stringify(s)}`);
  // every client of the first test's list takes the plain head on a route without per-request params
  for (const c of CLIENTS) assert.ok(takes('GET / HTTP/1.1\r\nHost: h\r\n\r\n', c), `client ${nodeAddressText(c.remote)}`);
  // a trusted peer's X-Forwarded-For is JS's (realClient); an untrusted one's is dropped, so the head is taken
  assert.ok(takes(MUST_TAKE[11], CLIENTS[0]) && !takes(MUST_TAKE[11], CLIENTS[2]));
  taken = 0;
  const seeds = [...MUST_TAKE, ...REFUSED.map(([s]) => s)].map((s) => Buffer.from(s, 'latin1'));
  for (const seed of seeds) {
    agree(seed);
    agree(seed, CLIENTS, [DEFAULT_LIMITS], [BIG_ROUTE, ...PER_REQUEST_ROUTES]);
    for (let p = 0; p < seed.length && p < 300; p++) agree(seed.subarray(0, p), CLIENTS.slice(0, 2), [DEFAULT_LIMITS], ROUTES.slice(0, 2));
  }
  // pairs past 64 KiB from the head itself: two 40 KB fields, and a 70 KB Cookie joined from two
  const large = [
    `GET /big.php HTTP/1.1\r\nHost: h\r\nX-A: ${'a'.repeat(40_000)}\r\nX-B: ${'b'.repeat(40_000)}\r\n\r\n`,
    `GET /big.php HTTP/1.1\r\nHost: h\r\nCookie: ${'c'.repeat(35_000)}\r\nUser-Agent: u\r\nCookie: ${'d'.repeat(35_000)}\r\n\r\n`,
    `GET /edge.php HTTP/1.1\r\nHost: h\r\nX-E: ${'e'.repeat(65_000)}\r\n\r\n`,
  ];
  for (const s of large) {
    assert.ok(takes(s, CLIENTS[0], ROUTES[0], LARGE_LIMITS), 'a large head is taken');
    agree(Buffer.from(s, 'latin1'), CLIENTS, [LARGE_LIMITS, DEFAULT_LIMITS]);
  }
  // the PARAMS content around 64 KiB: one record, exactly full, two records
  for (let n = 65_535 - 600; n < 65_535 + 40; n += 7) {
    agree(Buffer.from(`GET /e.php HTTP/1.1\r\nHost: h\r\nX-E: ${'e'.repeat(n - 200)}\r\n\r\n`, 'latin1'), CLIENTS.slice(0, 1), [LARGE_LIMITS], ROUTES.slice(0, 1));
  }
  assert.ok(taken > 1000, `cases taken by the C++ path: ${taken}`);
  t.diagnostic(`${seeds.length} seeds, their prefixes and ${large.length} large heads: ${taken} (head, route, script, client, limits) cases taken and agreed`);
});

test('native FastCGI records = the JS ones on mutated heads', (t) => {
  if (!needAddon(t)) return;
  const seeds = MUST_TAKE.map((s) => Buffer.from(s, 'latin1'));
  taken = 0;
  runs = 0;
  assertFor(
    fc.property(fc.constantFrom(...seeds), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (seed, mutations) => {
      runs++;
      agree(mutate(seed, mutations), CLIENTS.slice(0, 3), [DEFAULT_LIMITS], ROUTES.slice(0, 3));
    }),
    BUDGET_MS,
    () => taken > 100,
  );
  assert.ok(taken > 100, `mutated heads taken by the C++ path: ${taken}`);
  t.diagnostic(`${runs} mutated heads: ${taken} cases taken and agreed`);
});

test('native FastCGI records = the JS ones on random heads, route plans and clients', (t) => {
  if (!needAddon(t)) return;
  const name = fc.oneof(
    fc.constantFrom(
      'Content-Type', 'content-type', 'CONTENT-TYPE', 'Content-Length', 'Cookie', 'cookie', 'COOKIE', 'Proxy', 'proxy', 'X-Forwarded-For', 'x-forwarded-for',
      'X-Forwarded-Proto', 'X-Forwarded-Host', 'X-Forwarded-Port', 'X-Real-IP', 'Forwarded', 'X-Forwarded-Server', 'X_Under', 'X-Under', 'x-under', 'User-Agent',
      'Accept', 'accept', 'Connection', 'Keep-Alive', 'Proxy-Connection', 'HTTP2-Settings', 'Close', 'Host', 'TE', 'Upgrade', 'X-Request-Id', 'A', 'a',
    ),
    fc.string({ unit: fc.constantFrom(...'abcXYZ-_!#~09'.split('')), minLength: 1, maxLength: 8 }),
  );
  const value = fc.oneof(
    fc.constantFrom('', '0', 'close', 'keep-alive', 'text/plain', 'a=1; b=2', 'http://evil:8080', '1.2.3.4', '10.0.0.1, 192.0.2.7', 'garbage, 1.2.3.4', ' padded ', 'caf\xe9'),
    fc.string({ unit: fc.constantFrom(...'a ,;\t\x80\xff=1:'.split('')), maxLength: 12 }),
    fc.nat({ max: 300 }).map((n) => 'v'.repeat(n)),
  );
  const host = fc.constantFrom('h', 'Example.COM', 'a.b:8080', 'h:', '[::1]', '[2001:DB8::1]:443', '10.0.0.1', 'h_~-.x');
  const target = fc.constantFrom('/', '/index.php', '/a/b.php?c=d&e', '/x?%2F', '/app.php/users?x', '/;x', '/a?', '/%41', '/.x');
  const paramName = fc.constantFrom(
    'QUERY_STRING', 'REQUEST_METHOD', 'CONTENT_TYPE', 'CONTENT_LENGTH', 'REQUEST_URI', 'SERVER_PROTOCOL', 'REQUEST_SCHEME', 'REMOTE_ADDR', 'REMOTE_PORT', 'SERVER_ADDR',
    'SERVER_PORT', 'SERVER_NAME', 'HTTPS', 'SCRIPT_FILENAME', 'SCRIPT_NAME', 'PATH_INFO', 'DOCUMENT_URI', 'DOCUMENT_ROOT', 'GATEWAY_INTERFACE', 'REDIRECT_STATUS',
    'HTTP_COOKIE', 'HTTP_ACCEPT', 'HTTP_X_UNDER', 'HTTP_USER_AGENT', 'HTTP_X_FORWARDED_FOR', 'HTTP_HOST', 'http_accept', 'HTTP_', 'APP_ENV', 'X',
  );
  const paramValue = fc.oneof(fc.constantFrom('', 'fixed', '$document_root', '$document_root/app', 'é€', '$$x'), fc.constantFrom('$host', '$remote_addr', '$uri', '$args'));
  const plan = fc.tuple(fc.constantFrom('/', '/srv/www', '/var/www/café'), fc.dictionary(paramName, paramValue, { maxKeys: 5 })).map(([root, params]) => route(root, params));
  const address = fc.oneof(
    fc.uint8Array({ minLength: 4, maxLength: 4 }),
    fc.array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 }).map((ws) => Uint8Array.from(ws.flatMap((w) => [w >> 8, w & 0xff]))),
    fc.uint8Array({ minLength: 4, maxLength: 4 }).map((v4) => Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4])),
  );
  const client = fc.record({ remote: address, remotePort: fc.integer({ min: 0, max: 65535 }), local: address, serverPort: fc.integer({ min: 1, max: 65535 }), https: fc.boolean(), trusted: fc.boolean() });
  const script = fc.constantFrom(...SCRIPTS);
  taken = 0;
  runs = 0;
  let planned = 0;
  assertFor(
    fc.property(fc.constantFrom('GET', 'GET', 'HEAD', 'POST'), target, fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0'), fc.array(fc.tuple(name, value), { maxLength: 8 }), host, fc.nat(), plan, client, script, fc.boolean(), (method, tgt, version, fields, h, at, f, c, s, keepConn) => {
      runs++;
      const lines = fields.map(([n, v]) => `${n}: ${v}\r\n`);
      lines.splice(at % (lines.length + 1), 0, `Host: ${h}\r\n`);
      const buf = Buffer.from(`${method} ${tgt} ${version}\r\n${lines.join('')}\r\n`, 'latin1');
      const linkLocal = (a: Uint8Array): boolean => a.length === 16 && a[0] === 0xfe && (a[1] & 0xc0) === 0x80;
      const cc = call(buf, DEFAULT_LIMITS, f, s, c, keepConn);
      if (nativeParamsPlan(f).perRequest || linkLocal(c.remote) || linkLocal(c.local)) assert.equal(cc, null, 'per-request params or a zone: not mine');
      if (cc !== null) planned++;
      agree(buf, [c], [DEFAULT_LIMITS], [f]);
    }),
    BUDGET_MS,
    () => planned >= 20,
  );
  // a share besides the count (POST, per-request params, bad targets and link-local addresses are refused by design:
  // about 15 % is taken)
  assert.ok(planned >= 20 && planned / runs > 0.08, `random heads taken by the C++ path: ${planned} of ${runs}`);
  t.diagnostic(`${runs} random (head, plan, client, script): ${planned} taken and agreed`);
});
