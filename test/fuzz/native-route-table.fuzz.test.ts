// The addon's route table (src/native/route-table.h, compiled by src/route/native-routes.ts; not on the request path
// yet) held to src/route/router.ts Router.route: over random configs (exact and wildcard hosts, host-less routes,
// overlapping prefixes, exact paths, regexes, method lists, upper case, trailing dots, IPv6 and IPv4 hosts, actions
// and switches that decide the candidate bit) and random requests, whenever the C++ side names a route (or says there
// is none), JS's router picks the same (or answers 404), and the candidate bit is the route's. The C++ side must not
// refuse what it can be sure of: in a config without path_regex it answers every ASCII request but ACME's, and known
// configs are answered as written here. Heads go through both readers too (request-head.cc, then the table; against
// parseRequestHead and decide), so ports in Host and the host as each side reads it are covered. Malformed table
// bytes are refused without a crash. A path_regex the classifier (src/route/literal-regex.ts) takes as a literal is
// matched by the table: the classifier is held to V8's RegExp over random sources and flags, and a config whose
// regexes are all literal must be answered whole. Run under ASan by scripts/asan.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { setImmediate as tick } from 'node:timers/promises';
import fc from 'fast-check';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import { Router } from '../../src/route/router.js';
import { decide } from '../../src/route/decide.js';
import { parseRequestHead } from '../../src/wire/http-head.js';
import { compileNativeRoutes, handsOverReason, routeTableBytes, routeTableMatch, type NativeRouteTable } from '../../src/route/native-routes.js';
import { native } from '../../src/native/addon.js';
import { literalRegex, type LiteralRegex } from '../../src/route/literal-regex.js';
import { importNginx } from '../../src/config/nginx-import.js';
import { parseNginxText } from '../../src/config/nginx-parse.js';
import { loadConfig } from '../../src/config/load.js';
import { mutate, mutationArb } from '../helpers/fuzz.js';
import { SHARED_CONTRACT } from '../helpers/paths.js';
import { needAddonExport } from '../helpers/peers.js';

type RouteInput = NonNullable<ConfigInput['routes']>[number];
type Scanned = { host: string; path: string; method: string } | null;
type RequestHeadRewrite = (...args: unknown[]) => Scanned;

const addon = native() as unknown as { routeTableCompile?: (b: Uint8Array) => object; routeTableLive?: () => number; requestHeadRewrite?: RequestHeadRewrite } | undefined;

function needAddon(t: TestContext): boolean {
  return needAddonExport(t, addon?.routeTableCompile !== undefined, 'the native addon (with routeTableCompile)');
}

/** Upstreams whose pools make a route JS-only (PROXY header, TLS, hash balancing) and a plain one. */
const UPSTREAMS: ConfigInput['upstreams'] = {
  a: { targets: ['127.0.0.1:9001'] },
  p: { targets: ['127.0.0.1:9002'], send_proxy_protocol: 'v1' },
  t: { targets: ['127.0.0.1:9003'], tls: true },
  h: { targets: ['127.0.0.1:9004'], balance: { policy: 'hash', key: '$remote_addr' } },
};

function configOf(routes: RouteInput[]): Config {
  return configSchema.parse({ listeners: [{ address: '127.0.0.1:0' }], upstreams: UPSTREAMS, routes });
}

/** The router and the addon's table for `routes`, or undefined when the config is not a valid one. */
function build(routes: RouteInput[]): { config: Config; router: Router; table: NativeRouteTable } | undefined {
  let config: Config;
  let router: Router;
  try {
    config = configOf(routes);
    router = new Router(config);
  } catch {
    return undefined;
  }
  return { config, router, table: compileNativeRoutes(router, config)! };
}

let asked = 0;
let answered = 0;

/**
 * One request both ways. `host`: as scanAuthority reads it (case kept; the C++ folds it, JS gets it lower-cased as
 * parseRequestHead gives it); '' for none. Returns whether the C++ side answered.
 */
function agree(b: { config: Config; router: Router; table: NativeRouteTable }, host: string, path: string, method: string): boolean {
  asked++;
  const cc = routeTableMatch(b.table, host, path, method);
  if (cc.kind === 'not-mine') return false;
  answered++;
  const d = b.router.route(host === '' ? undefined : host.toLowerCase(), method, path);
  const what = (): string => `${method} ${JSON.stringify(host)} ${JSON.stringify(path)} in ${JSON.stringify(b.config.routes.map((r) => r.match))}`;
  if (cc.kind === 'none') {
    if (d.kind !== 'reject' || d.code !== 'ROUTE_NOT_FOUND') assert.fail(`C++ found no route, JS routed to ${d.kind === 'reject' ? d.code : d.route.name}: ${what()}`);
    return true;
  }
  if (d.kind === 'reject') assert.fail(`C++ routed to routes[${cc.route}], JS found none: ${what()}`);
  if (cc.route !== d.route.index) assert.fail(`different routes: C++ routes[${cc.route}], JS ${d.route.name}: ${what()}`);
  const candidate = d.kind === 'forward' && handsOverReason(b.config, b.config.routes[d.route.index]) === undefined;
  if (cc.candidate !== candidate) assert.fail(`candidate bit of routes[${cc.route}]: C++ ${cc.candidate}: ${what()}`);
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Known configs

test('known configs: hosts, wildcards, fall-through, prefixes, exact paths, methods and candidates as the router documents them', (t) => {
  if (!needAddon(t)) return;
  const b = build([
    { name: 'api-get', match: { host: ['Example.COM.'], path: '/api', method: ['GET'] }, proxy: 'a' },
    { name: 'api', match: { host: ['example.com'], path: '/api' }, proxy: 'a' },
    { name: 'exact', match: { host: ['example.com'], path_exact: '/status' }, return: { status: 200, body: 'ok' } },
    { name: 'wild', match: { host: ['*.example.com'], path: '/' }, proxy: { upstream: 'a', strip_prefix: true } },
    { name: 'deep', match: { host: ['*.b.example.com'] }, proxy: 'p' },
    { name: 'slash', match: { path: '/static/' }, proxy: 'a', compress: true },
    { name: 'any', match: { method: ['POST'] }, proxy: 'a', request_headers: { set: { 'X-Fixed': 'yes' } } },
    { name: 'var', match: { path: '/v' }, proxy: 'a', request_headers: { set: { 'X-Host': '$host' } } },
  ])!;
  const names = b.config.routes.map((r) => r.name);
  const expect: Array<[string, string, string, string | 'none']> = [
    ['example.com', '/api', 'GET', 'api-get'],
    ['EXAMPLE.com.', '/api/x', 'GET', 'api-get'],
    ['example.com', '/api', 'HEAD', 'api'], // GET does not imply HEAD
    ['example.com', '/apix', 'GET', 'none'], // segment boundary; no host-less route for GET
    ['example.com', '/status', 'GET', 'exact'],
    ['example.com', '/status/', 'GET', 'none'],
    ['example.com', '/static/a', 'GET', 'slash'], // fall-through to the host-less routes
    ['a.example.com', '/x', 'GET', 'wild'],
    ['x.b.example.com', '/x', 'GET', 'deep'], // longest wildcard first
    ['b.example.com', '/x', 'GET', 'wild'],
    ['.example.com', '/x', 'GET', 'none'], // a wildcard needs one more character than its suffix
    ['example.com', '/x', 'POST', 'any'],
    ['', '/static/', 'HEAD', 'slash'],
    ['', '/static', 'GET', 'none'], // a prefix ending in '/' is a plain prefix
    ['', '/v', 'GET', 'var'],
  ];
  for (const [host, path, method, want] of expect) {
    assert.ok(agree(b, host, path, method), `${method} ${host} ${path} not taken`);
    const cc = routeTableMatch(b.table, host, path, method);
    assert.equal(cc.kind === 'route' ? names[cc.route] : cc.kind, want, `${method} ${host} ${path}`);
  }
  // candidates: plain forward routes, not a return, a PROXY-header pool, compress, or a variable template
  const bits = Object.fromEntries(names.map((n, i) => [n, handsOverReason(b.config, b.config.routes[i]) ?? 'candidate']));
  assert.deepEqual(bits, { 'api-get': 'candidate', api: 'candidate', exact: 'not a proxy route', wild: 'candidate', deep: 'send_proxy_protocol', slash: 'compress', any: 'candidate', var: 'request_headers set with variables' });
  const api = routeTableMatch(b.table, 'example.com', '/api', 'GET');
  assert.deepEqual(api, { kind: 'route', route: 0, candidate: true });
  assert.deepEqual(routeTableMatch(b.table, 'x.b.example.com', '/', 'GET'), { kind: 'route', route: 4, candidate: false });
  // ACME's prefix is answered by the connection before routing while an order is pending: JS's
  assert.equal(routeTableMatch(b.table, 'example.com', '/.well-known/acme-challenge/tok', 'GET').kind, 'not-mine');
  // bytes beyond ASCII never come from the head reader: refused rather than compared
  assert.equal(routeTableMatch(b.table, 'exämple.com', '/api', 'GET').kind, 'not-mine');
});

test('known configs: literal path_regex (`\\.php$`, `^/api/`, `^/x$`, a substring, nginx `~*`) matched in file order between exact paths and prefixes', (t) => {
  if (!needAddon(t)) return;
  // nginx's `location ~* \.php$` as portico import-nginx writes it: each letter a class of its two cases
  const imported = importNginx(parseNginxText('server { listen 8080; location ~* \\.php$ { proxy_pass http://127.0.0.1:9000; } }', 'test.conf', '/nonexistent'), 'test.conf');
  const caseless = /path_regex: (.*)$/m.exec(imported.yaml)?.[1].replace(/^'(.*)'$/, '$1');
  assert.equal(caseless, '\\.[pP][hH][pP]$');
  const b = build([
    { name: 'exact', match: { host: ['example.com'], path_exact: '/status.php' }, return: { status: 200, body: 'ok' } },
    { name: 'php', match: { host: ['example.com'], path_regex: '\\.php$' }, proxy: 'a' },
    { name: 'api', match: { host: ['example.com'], path_regex: '^/api/', method: ['POST'] }, proxy: 'a' },
    { name: 'x', match: { host: ['example.com'], path_regex: '^/x$' }, proxy: 'p' },
    { name: 'ci', match: { host: ['example.com'], path_regex: caseless!.replace('[pP]$', '[pP]5$') }, proxy: 'a' },
    { name: 'cgi', match: { host: ['example.com'], path_regex: '/cgi-bin/' }, proxy: 'a' },
    { name: 'group', match: { host: ['example.com'], path_regex: '^/(?:v1)/(app)\\.js$' }, proxy: 'a' },
    { name: 'pre', match: { host: ['example.com'], path: '/' }, proxy: 'a' },
    { name: 'opaque', match: { host: ['rx.test'], path_regex: '^/r[0-9]+$', method: ['GET'] }, proxy: 'a' },
    { name: 'rx-php', match: { host: ['rx.test'], path_regex: '\\.php$' }, proxy: 'a' },
    { name: 'default', proxy: 'a' },
  ])!;
  const names = b.config.routes.map((r) => r.name);
  const expect: Array<[string, string, string, string | 'none' | 'not-mine']> = [
    ['example.com', '/index.php', 'GET', 'php'],
    ['EXAMPLE.com', '/a/b/c.php', 'HEAD', 'php'],
    ['example.com', '/status.php', 'GET', 'exact'], // path_exact before any regex
    ['example.com', '/a.php/x', 'GET', 'pre'], // a suffix, not a substring
    ['example.com', '/a.PHP', 'GET', 'pre'], // case-sensitive without a class
    ['example.com', '/a.phpx', 'GET', 'pre'],
    ['example.com', '/.php', 'GET', 'php'],
    ['example.com', '/api/x', 'POST', 'api'],
    ['example.com', '/api/', 'POST', 'api'],
    ['example.com', '/api/x', 'GET', 'pre'], // the regex matches, its route does not take GET: matching goes on
    ['example.com', '/api', 'POST', 'pre'],
    ['example.com', '/API/x', 'POST', 'pre'],
    ['example.com', '/v/api/', 'POST', 'pre'], // a prefix, not a substring
    ['example.com', '/x', 'GET', 'x'],
    ['example.com', '/x/', 'GET', 'pre'],
    ['example.com', '/xx', 'GET', 'pre'],
    ['example.com', '/x.php', 'GET', 'php'], // file order among regexes
    ['example.com', '/a.php5', 'GET', 'ci'],
    ['example.com', '/a.PHP5', 'GET', 'ci'],
    ['example.com', '/a.pHp5', 'GET', 'ci'],
    ['example.com', '/a.p@p5', 'GET', 'pre'], // '@' is not 'H' or 'h' (0x40 | 0x20 is '`', not 'h')
    ['example.com', '/a.php5/', 'GET', 'pre'],
    ['example.com', '/a/cgi-bin/run', 'GET', 'cgi'],
    ['example.com', '/cgi-bin/', 'GET', 'cgi'],
    ['example.com', '/cgi-bin', 'GET', 'pre'],
    ['example.com', '/v1/app.js', 'GET', 'group'],
    ['example.com', '/v1/appxjs', 'GET', 'pre'],
    ['rx.test', '/a.php', 'GET', 'not-mine'], // the opaque regex comes first and its route takes GET
    ['rx.test', '/a.php', 'POST', 'rx-php'], // ... but not POST: V8's answer would not matter
    ['rx.test', '/b', 'POST', 'default'],
    ['rx.test', '/b', 'GET', 'not-mine'],
    ['other.test', '/a.php', 'GET', 'default'],
  ];
  for (const [host, path, method, want] of expect) {
    const cc = routeTableMatch(b.table, host, path, method);
    assert.equal(cc.kind === 'route' ? names[cc.route] : cc.kind, want, `${method} ${host} ${path}`);
    if (want !== 'not-mine') assert.ok(agree(b, host, path, method));
  }
});

test('the user\'s seed-php.yaml: PHP scripts (`\\.php$`), the terminated /wss and the static rest are all answered by the table', (t) => {
  if (!needAddon(t)) return;
  const loaded = loadConfig(path.join(SHARED_CONTRACT, 'seed-php.yaml'));
  assert.ok(loaded.ok);
  const config = loaded.config;
  const router = new Router(config);
  const b = { config, router, table: compileNativeRoutes(router, config)! };
  const kinds = config.routes.map((r) => (r.fastcgi !== undefined ? 'php' : r.static !== undefined ? 'static' : 'wss'));
  const expect: Array<[string, string, string]> = [
    ['/index.php', 'GET', 'php'],
    ['/blog/wp-login.php', 'POST', 'php'],
    ['/info.php', 'HEAD', 'php'],
    ['/index.PHP', 'GET', 'static'], // nginx's `~` is case-sensitive too
    ['/a.php/x', 'GET', 'static'],
    ['/css/site.css', 'GET', 'static'],
    ['/', 'GET', 'static'],
    ['/wss', 'GET', 'wss'],
    ['/wss/x.php', 'GET', 'php'], // regexes before prefixes
  ];
  for (const [p, method, want] of expect) {
    for (const host of ['', 'localhost', 'Example.TEST.']) {
      assert.ok(agree(b, host, p, method), `${method} ${host} ${p} not taken`);
      const cc = routeTableMatch(b.table, host, p, method);
      assert.equal(cc.kind === 'route' ? kinds[cc.route] : cc.kind, want, `${method} ${host} ${p}`);
    }
  }
});

test('known configs: a class holding a non-literal path_regex is JS past its exact paths; other classes stay the addon\'s', (t) => {
  if (!needAddon(t)) return;
  const b = build([
    { name: 'rx', match: { host: ['rx.test'], path_regex: '^/r[0-9]+$' }, proxy: 'a' },
    { name: 'rx-exact', match: { host: ['rx.test'], path_exact: '/health' }, proxy: 'a' },
    { name: 'plain', match: { host: ['plain.test'], path: '/' }, proxy: 'a' },
    { name: 'default', proxy: 'a' },
  ])!;
  assert.equal(routeTableMatch(b.table, 'rx.test', '/r1', 'GET').kind, 'not-mine');
  assert.equal(routeTableMatch(b.table, 'rx.test', '/other', 'GET').kind, 'not-mine'); // the regex is tried before falling through
  assert.deepEqual(routeTableMatch(b.table, 'RX.test', '/health', 'GET'), { kind: 'route', route: 1, candidate: true });
  assert.deepEqual(routeTableMatch(b.table, 'plain.test', '/r1', 'GET'), { kind: 'route', route: 2, candidate: true });
  assert.deepEqual(routeTableMatch(b.table, 'other.test', '/r1', 'GET'), { kind: 'route', route: 3, candidate: true });
  assert.deepEqual(routeTableMatch(b.table, '', '/', 'DELETE'), { kind: 'route', route: 3, candidate: true });
  const none = build([{ match: { host: ['only.test'] }, proxy: 'a' }])!;
  assert.deepEqual(routeTableMatch(none.table, 'other.test', '/', 'GET'), { kind: 'none' });
  assert.deepEqual(routeTableMatch(none.table, '', '/', 'GET'), { kind: 'none' });
  assert.deepEqual(routeTableMatch(none.table, 'only.test.', '/', 'GET'), { kind: 'route', route: 0, candidate: true });
  const empty = build([])!;
  assert.deepEqual(routeTableMatch(empty.table, 'a.test', '/', 'GET'), { kind: 'none' });
});

test('case folding: hosts of every printable ASCII byte, at every offset of a 24-byte name, fold as toLowerCase does', (t) => {
  if (!needAddon(t)) return;
  const bytes: string[] = [];
  for (let c = 0x21; c < 0x7f; c++) if (c !== 0x2f && c !== 0x2a && c !== 0x2e) bytes.push(String.fromCharCode(c));
  for (let at = 0; at < 24; at += 1) {
    const name = (c: string): string => `${'k'.repeat(at)}${c}${'m'.repeat(23 - at)}`;
    const routes: RouteInput[] = bytes.map((c) => ({ match: { host: [name(c)] }, proxy: 'a' }));
    routes.push({ match: { host: bytes.map((c) => `*.${name(c)}`) }, proxy: 'p' });
    const b = build(routes)!;
    for (const c of bytes) {
      // the byte, its other case, its neighbours: folding must map exactly 'A'..'Z' and nothing else
      const code = c.charCodeAt(0);
      for (const d of new Set([c, c.toUpperCase(), c.toLowerCase(), String.fromCharCode(code ^ 0x20), String.fromCharCode(code - 1), String.fromCharCode(Math.min(code + 1, 0x7e))])) {
        if (d.charCodeAt(0) < 0x21 || d.charCodeAt(0) > 0x7e) continue;
        for (const host of [name(d), name(d).toUpperCase(), `W.${name(d)}`, `w.${name(d).toUpperCase()}.`]) {
          assert.ok(agree(b, host, '/', 'GET'), `not taken: ${host}`);
        }
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------------------
// Literal regexes: the classifier (src/route/literal-regex.ts) held to V8's RegExp

/** The meaning route-table.cc MatchRegex gives a literal: its bytes at the start, the end, the whole path, or anywhere. */
function literalTest(lit: LiteralRegex, path: string): boolean {
  const n = lit.text.length;
  const at = (from: number): boolean => {
    for (let k = 0; k < n; k++) if ((path.charCodeAt(from + k) | lit.fold[k]) !== lit.text.charCodeAt(k)) return false;
    return true;
  };
  if (path.length < n) return false;
  if (lit.kind === 'exact') return path.length === n && at(0);
  if (lit.kind === 'prefix') return at(0);
  if (lit.kind === 'suffix') return at(path.length - n);
  for (let s = 0; s + n <= path.length; s++) if (at(s)) return true;
  return false;
}

/** Atoms the classifier must take, and atoms that make a regex something else (a class, a quantifier, an escape with a meaning, a lookaround). */
const LITERAL_ATOMS = ['a', 'b', 'p', 'P', 'h', 'H', 'x', '/', '-', '_', '~', '1', '%', '@', '`', '\\]', '\\}', '\\.', '\\/', '\\-', '\\$', '\\^', '\\(', '\\[', '\\{', '\\|', '\\*', '\\\\', '[pP]', '[Hh]', '[aA]'];
const OTHER_ATOMS = ['.', '[0-9]', '[ab]', '[pp]', '[p]', '[^p]', '[pP]?', '\\d', '\\w', '\\s', '\\b', '\\B', '\\a', '\\n', '\\0', '\\1', '\\x61', '\\u0061', '\\cJ', 'a*', 'a+', 'a?', 'a{2}', 'a{', '}', '|', '(?=a)', '(?!a)', '(?<=a)', '(?<n>a)', '\\k<n>', 'a^', '$a', 'é'];

const regexArb = fc
  .record({
    start: fc.boolean(),
    end: fc.boolean(),
    atoms: fc.array(fc.oneof({ weight: 20, arbitrary: fc.constantFrom(...LITERAL_ATOMS) }, { weight: 1, arbitrary: fc.constantFrom(...OTHER_ATOMS) }), { maxLength: 8 }),
    group: fc.option(fc.tuple(fc.nat(8), fc.nat(8), fc.constantFrom('(', '(?:')), { freq: 3 }),
    quantified: fc.constantFrom('', '', '', '', '', '*', '?', '{1}'),
    flags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('', 'i') }, { weight: 1, arbitrary: fc.constantFrom('m', 'im', 'g', 'y', 's', 'u', 'd', 'gi') }),
  })
  .map(({ start, end, atoms, group, quantified, flags }) => {
    const parts = [...atoms];
    if (group !== null) {
      const [a, b, open] = group;
      const from = Math.min(a, b, parts.length);
      const to = Math.min(Math.max(a, b), parts.length);
      parts.splice(to, 0, `)${quantified}`);
      parts.splice(from, 0, open);
    }
    const other = atoms.some((x) => OTHER_ATOMS.includes(x)) || (group !== null && quantified !== '') || (flags !== '' && flags !== 'i');
    return { source: `${start ? '^' : ''}${parts.join('')}${end ? '$' : ''}`, flags, other };
  });

/** Paths near a literal: its text with each letter's case flipped, cut, doubled, with bytes around it. */
function pathsNear(text: string, extra: readonly string[]): string[] {
  const out = new Set<string>([text, text.toUpperCase(), text.toLowerCase(), '', '/', text + text, ...extra]);
  for (let k = 0; k < text.length; k++) {
    const c = text[k];
    out.add(text.slice(0, k) + (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase()) + text.slice(k + 1));
    out.add(text.slice(0, k) + String.fromCharCode(c.charCodeAt(0) ^ 0x20) + text.slice(k + 1));
    out.add(text.slice(0, k) + text.slice(k + 1));
  }
  for (const p of [...out]) for (const [a, z] of [['x', ''], ['', 'x'], ['/', '/'], ['A', '.php'], ['\n', '\n']]) out.add(a + p + z);
  return [...out];
}

test('literal regexes: what the classifier takes matches as RegExp.test does; classes, quantifiers, escapes, lookarounds and flags but i are refused', (t) => {
  const known: Array<[string, string, LiteralRegex | undefined]> = [
    ['\\.php$', '', { kind: 'suffix', text: '.php', fold: [0, 0, 0, 0] }],
    ['\\.(php)$', '', { kind: 'suffix', text: '.php', fold: [0, 0, 0, 0] }],
    ['\\.[pP][hH][pP]$', '', { kind: 'suffix', text: '.php', fold: [0, 0x20, 0x20, 0x20] }],
    ['\\.PHP$', 'i', { kind: 'suffix', text: '.php', fold: [0, 0x20, 0x20, 0x20] }],
    ['^/api/', '', { kind: 'prefix', text: '/api/', fold: [0, 0, 0, 0, 0] }],
    ['^/x$', '', { kind: 'exact', text: '/x', fold: [0, 0] }],
    ['/cgi-bin/', '', { kind: 'contains', text: '/cgi-bin/', fold: [0, 0, 0, 0, 0, 0, 0, 0, 0] }],
    ['', '', { kind: 'contains', text: '', fold: [] }],
    ['\\.php$', 'm', undefined], // $ before a line end too
    ['\\.php', 'g', undefined], // test() moves lastIndex
    ['\\.php$', 'u', undefined],
    ['.php$', '', undefined],
    ['\\.ph?p$', '', undefined],
    ['\\.(php|phtml)$', '', undefined],
    ['\\.php\\b', '', undefined],
    ['^/api/v[0-9]+$', '', undefined],
    ['(?i:\\.php)$', '', undefined],
    ['\\.php(?=$)', '', undefined],
    ['(\\.php)+$', '', undefined],
    ['((php))', '', undefined],
    ['\\.[pp]hp$', '', undefined],
    ['\\.[ph]hp$', '', undefined],
    ['^/a^', '', undefined],
    ['a$b', '', undefined],
  ];
  for (const [source, flags, want] of known) assert.deepEqual(literalRegex(source, flags), want, `${source} /${flags}`);
  let literal = 0;
  let refused = 0;
  let tested = 0;
  fc.assert(
    fc.property(regexArb, fc.array(fc.stringMatching(/^[aApPhHxX/._\-~%@`1[\]\n]{0,12}$/), { maxLength: 6 }), ({ source, flags, other }, randomPaths) => {
      let re: RegExp;
      try {
        re = new RegExp(source, flags);
      } catch {
        return;
      }
      const lit = literalRegex(source, flags);
      if (other) assert.equal(lit, undefined, `taken, but not literal: /${source}/${flags}`);
      if (lit === undefined) {
        refused++;
        return;
      }
      literal++;
      for (const path of pathsNear(lit.text, randomPaths)) {
        tested++;
        re.lastIndex = 0;
        if (literalTest(lit, path) !== re.test(path)) assert.fail(`/${source}/${flags} on ${JSON.stringify(path)}: V8 ${re.test(path)}, as a literal ${JSON.stringify(lit)}`);
      }
    }),
    { numRuns: 4000 },
  );
  t.diagnostic(`${literal} literal regexes (${tested} paths tested against V8), ${refused} refused`);
  assert.ok(literal > 1500 && refused > 500, `${literal} literal, ${refused} refused`);
});

// ---------------------------------------------------------------------------------------------------------
// Random configs and requests

const HOSTS = ['example.com', 'Example.COM', 'example.com.', 'a.example.com', 'b.a.example.com', '*.example.com', '*.a.example.com', '*.EXAMPLE.com', '*.com', 'other.test', '*.other.test', '[::1]', '127.0.0.1', 'ex', '*.x'];
const PREFIXES = ['/', '/a', '/a/', '/ab', '/a/b', '/a/b/', '/api', '/api/', '/api/v1', '/b', '/B'];
const EXACTS = ['/', '/a', '/a/', '/a/b', '/api', '/x', '/B'];
/** path_regex sources: literal forms the table matches (suffix, prefix, whole path, substring, two-case classes, groups) and others it refuses. */
const LITERAL_REGEXES = ['\\.php$', '^/a', '^/api/', 'b$', '^/a$', '^/x$', '/b', '\\.[pP][hH][pP]$', '^/[aA][pP][iI]', '^(/api)/', '\\.(php)$', '^/a(?:/b)$', 'x', '^$', '^', '$', '', '^/B', '\\/a\\/', 'a\\.php'];
const OTHER_REGEXES = ['^/api/v[0-9]+$', '.php$', '^/a|^/b', '^/a+', '\\d', '^/a(?=/)', '[ab]$', '\\.ph(p|tml)$', '^/a/?$'];
const REGEXES = [...LITERAL_REGEXES, ...OTHER_REGEXES];
/** Methods of routes (the schema refuses lower case) and of requests (`get` is another method to the router). */
const METHODS = ['GET', 'HEAD', 'POST', 'PATCH', 'DELETE'];
const REQUEST_METHODS = ['GET', 'HEAD', 'POST', 'get', 'DELETE', 'OPTIONS'];

const pathCond = fc.oneof(
  { weight: 3, arbitrary: fc.constant({}) },
  { weight: 6, arbitrary: fc.constantFrom(...PREFIXES).map((path) => ({ path })) },
  { weight: 3, arbitrary: fc.constantFrom(...EXACTS).map((path_exact) => ({ path_exact })) },
  { weight: 3, arbitrary: fc.constantFrom(...REGEXES).map((path_regex) => ({ path_regex })) },
);
const action = fc.oneof(
  { weight: 6, arbitrary: fc.record({ upstream: fc.constantFrom('a', 'a', 'a', 'p', 't', 'h'), strip: fc.boolean() }).map(({ upstream, strip }) => ({ proxy: { upstream, strip_prefix: strip } })) },
  { weight: 1, arbitrary: fc.constant({ return: { status: 200, body: 'r' } }) },
  { weight: 1, arbitrary: fc.constant({ proxy: 'a', compress: true }) },
  { weight: 1, arbitrary: fc.constant({ proxy: 'a', cors: { origins: ['https://app.test'] } }) },
  { weight: 1, arbitrary: fc.constant({ proxy: 'a', rate_limit: { requests: { rate: '100/s' } } }) },
  { weight: 1, arbitrary: fc.constant({ proxy: 'a', websocket: { mode: 'terminate' } }) },
  { weight: 1, arbitrary: fc.constantFrom('fixed', '$host', 'a$$b').map((v) => ({ proxy: 'a', request_headers: { set: { 'X-V': v } } })) },
  { weight: 1, arbitrary: fc.constantFrom('fixed', '$scheme').map((v) => ({ proxy: 'a', response_headers: { set: { 'X-R': v } } })) },
);
const routeArb: fc.Arbitrary<RouteInput> = fc
  .record({
    host: fc.option(fc.uniqueArray(fc.constantFrom(...HOSTS), { minLength: 1, maxLength: 3 }), { freq: 2 }),
    path: pathCond,
    method: fc.option(fc.uniqueArray(fc.constantFrom(...METHODS), { minLength: 1, maxLength: 3 }), { freq: 2 }),
    action,
  })
  .map(({ host, path, method, action: a }) => ({ match: { ...(host === null ? {} : { host }), ...path, ...(method === null ? {} : { method }) }, ...a }) as RouteInput);

/** Requests near the config's own names: its hosts with case changes, a trailing dot, a label in front; its paths extended. */
const requestArb = fc.record({
  host: fc.oneof(
    fc.constantFrom(...HOSTS).map((h) => h.replace(/^\*\./, 'w.')),
    fc.constantFrom('', 'x.a.example.com', 'EXAMPLE.COM', 'example.com..', '.', 'a.example.com.', 'com', 'a.com', 'x', '[::1]', 'n.other.test', 'b.x', 'localhost', '.example.com', '.a.example.com', '.com', '.x'),
  ),
  hostCase: fc.boolean(),
  path: fc.oneof(
    fc.constantFrom(...PREFIXES, ...EXACTS),
    fc.tuple(fc.constantFrom(...PREFIXES, ...EXACTS), fc.constantFrom('', '/', 'x', '/x', '/b', 'i', '/v2', '/.well-known/acme-challenge/t', '.php', '/a.php', '.PHP', '.pHp', '.phpx', '/index.php')).map(([a, b]) => (a + b).replace(/^\/\//, '/')),
    fc.constantFrom('/api/v12', '/r', '/ab/', '/.well-known/acme-challenge/t', '/index.php', '/API/x', '/Api/', '/a.php/x', '/a/a.php', '/xa.php', '/x.php'),
  ),
  method: fc.constantFrom(...REQUEST_METHODS),
});

test('random configs and requests: whenever the addon answers, the router picks the same route with the same candidate bit', (t) => {
  if (!needAddon(t)) return;
  asked = 0;
  answered = 0;
  let configs = 0;
  let regexFree = 0;
  let literalOnly = 0;
  let regexFreeAnswered = 0;
  let regexFreeAsked = 0;
  let candidates = 0;
  fc.assert(
    fc.property(fc.array(routeArb, { minLength: 0, maxLength: 10 }), fc.array(requestArb, { minLength: 20, maxLength: 60 }), (routes, requests) => {
      const b = build(routes);
      if (b === undefined) return;
      configs++;
      // a config whose regexes are all literal leaves the table nothing to be unsure of, as one without regexes
      const regexes = b.config.routes.filter((r) => r.match.path_regex !== undefined);
      const hasRegex = regexes.some((r) => literalRegex(r.match.path_regex!, '') === undefined);
      if (regexes.length === 0) regexFree++;
      else if (!hasRegex) literalOnly++;
      for (const r of requests) {
        const host = r.hostCase ? r.host.toUpperCase() : r.host;
        const took = agree(b, host, r.path, r.method);
        if (took) {
          const cc = routeTableMatch(b.table, host, r.path, r.method);
          if (cc.kind === 'route' && cc.candidate) candidates++;
        }
        if (!hasRegex && !r.path.startsWith('/.well-known/acme-challenge/')) {
          regexFreeAsked++;
          if (took) regexFreeAnswered++;
          // nothing to be unsure of: a refusal here is a table that refuses what it could answer
          assert.ok(took, `not taken without a non-literal path_regex: ${r.method} ${host} ${r.path} in ${JSON.stringify(b.config.routes.map((x) => x.match))}`);
        }
      }
    }),
    // a fixed number of configs (not a time budget): the share asserted below is then never a matter of speed
    { numRuns: 400 },
  );
  t.diagnostic(`${configs} configs (${regexFree} without path_regex, ${literalOnly} more with literal ones only), ${asked} requests, ${answered} answered by the addon (${regexFreeAnswered} of ${regexFreeAsked} in configs without a non-literal regex), ${candidates} on candidate routes`);
  assert.ok(literalOnly > 50, `too few configs with literal regexes: ${literalOnly}`);
  assert.ok(configs > 200, `too few valid configs: ${configs} of 400`);
  assert.ok(answered > asked * 0.5, `the addon answered ${answered} of ${asked}: it refuses too much`);
  assert.ok(candidates > 0, 'no request on a candidate route');
});

// ---------------------------------------------------------------------------------------------------------
// Whole heads: request-head.cc's host and path, then the table, against parseRequestHead and decide

const HOST_LINES = ['example.com', 'Example.COM:8080', 'example.com.:443', 'a.EXAMPLE.com', 'w.a.example.com:1', '[::1]:8443', '[::1]', '127.0.0.1:80', 'other.test.', 'x:', 'ex'];

test('whole heads: the host the head reader gives (ports, case, trailing dots) routes as decide() routes the parsed head', (t) => {
  if (!needAddon(t)) return;
  if (addon?.requestHeadRewrite === undefined) return t.skip('no requestHeadRewrite');
  let heads = 0;
  let routed = 0;
  fc.assert(
    fc.property(
      fc.array(routeArb, { minLength: 1, maxLength: 8 }),
      fc.array(fc.record({ host: fc.constantFrom(...HOST_LINES), path: requestArb.map((r) => r.path), query: fc.constantFrom('', '?q=1', '?/a'), head: fc.boolean() }), { minLength: 10, maxLength: 30 }),
      (routes, requests) => {
        const b = build(routes);
        if (b === undefined) return;
        for (const r of requests) {
          const bytes = Buffer.from(`${r.head ? 'HEAD' : 'GET'} ${r.path}${r.query} HTTP/1.1\r\nHost: ${r.host}\r\nAccept: */*\r\n\r\n`, 'latin1');
          const scanned = addon.requestHeadRewrite!(bytes, [32768, 8192, 100], [], [], false, '', '', Uint8Array.from([127, 0, 0, 1]), false, 80);
          if (scanned === null) continue; // not the head reader's (a dotted path)
          heads++;
          const cc = routeTableMatch(b.table, scanned.host, scanned.path, scanned.method);
          if (cc.kind === 'not-mine') continue;
          routed++;
          const parsed = parseRequestHead(bytes, { headerSize: 32768, uriSize: 8192, headers: 100 });
          assert.equal(parsed.kind, 'done');
          if (parsed.kind !== 'done') return;
          const d = decide(b.router, parsed.head);
          const what = `${bytes.toString('latin1').split('\r\n').slice(0, 2).join(' | ')} in ${JSON.stringify(b.config.routes.map((x) => x.match))}`;
          if (cc.kind === 'none') assert.ok(d.kind === 'reject' && d.code === 'ROUTE_NOT_FOUND', `C++ found no route: ${what}`);
          else assert.ok(d.kind !== 'reject' && d.route.index === cc.route, `different routes: ${what}`);
        }
      },
    ),
    { numRuns: 300 },
  );
  t.diagnostic(`${heads} heads taken by the head reader, ${routed} routed by the table`);
  assert.ok(routed > heads * 0.5, `the table answered ${routed} of ${heads} heads`);
});

// ---------------------------------------------------------------------------------------------------------
// The bytes JS hands over

test('malformed table bytes are refused (a thrown error), never read past their end', (t) => {
  if (!needAddon(t)) return;
  const b = build([
    { match: { host: ['example.com', '*.example.com'], path: '/api', method: ['GET', 'HEAD'] }, proxy: 'a' },
    { match: { path_exact: '/x' }, proxy: 'p' },
    { match: { host: ['rx.test'], path_regex: '^/r' }, proxy: 'a' },
    { match: { host: ['rx.test'], path_regex: '\\.[pP]$' }, proxy: 'a' },
    { match: { host: ['rx.test'], path_regex: '^/r[0-9]' }, proxy: 'a' },
    { proxy: 'a' },
  ])!;
  const good = routeTableBytes(b.router, b.config);
  assert.ok(addon!.routeTableCompile!(good) !== undefined);
  // a literal's fold mask: 0x20 only on a lower-case letter, as long as the literal; a kind the table knows
  const latin = good.toString('latin1');
  const lit = '\x03\x02\x00\x00\x00.p\x02\x00\x00\x00\x00\x20'; // suffix, ".p", fold [0, 0x20]
  assert.ok(latin.includes(lit));
  const edit = (to: string): Buffer => Buffer.from(latin.replace(lit, to), 'latin1');
  assert.ok(addon!.routeTableCompile!(edit('\x03\x02\x00\x00\x00.p\x02\x00\x00\x00\x00\x00')) !== undefined);
  assert.throws(() => addon!.routeTableCompile!(edit('\x03\x02\x00\x00\x00.p\x02\x00\x00\x00\x20\x20')), /bad regex fold/);
  assert.throws(() => addon!.routeTableCompile!(edit('\x03\x02\x00\x00\x00.P\x02\x00\x00\x00\x00\x20')), /bad regex fold/);
  assert.throws(() => addon!.routeTableCompile!(edit('\x03\x02\x00\x00\x00.p\x02\x00\x00\x00\x00\x01')), /bad regex fold/);
  assert.throws(() => addon!.routeTableCompile!(edit('\x03\x02\x00\x00\x00.p\x01\x00\x00\x00\x00\x00')), /bad regex fold|routeTableCompile/);
  assert.throws(() => addon!.routeTableCompile!(edit('\x05\x02\x00\x00\x00.p\x02\x00\x00\x00\x00\x20')), /bad regex kind/);
  assert.throws(() => addon!.routeTableCompile!(edit('\x00\x02\x00\x00\x00.p\x02\x00\x00\x00\x00\x20')), /bad regex literal/);
  assert.throws(() => addon!.routeTableCompile!(edit('\x03\x02\x00\x00\x00.\xf0\x02\x00\x00\x00\x00\x00')), /bad regex literal/);
  assert.throws(() => addon!.routeTableCompile!(Buffer.from(latin.replace('PRT2', 'PRT1'), 'latin1')), /not a route table/);
  // a host or an exact path written twice (JS never does: they are Map keys) is refused, not shadowed
  const twice = build([
    { match: { host: ['aa.test'], path_exact: '/p1' }, proxy: 'a' },
    { match: { host: ['bb.test'], path_exact: '/p2' }, proxy: 'a' },
    { match: { host: ['aa.test'], path_exact: '/p3' }, proxy: 'a' },
  ])!;
  const twiceBytes = routeTableBytes(twice.router, twice.config);
  assert.ok(addon!.routeTableCompile!(twiceBytes) !== undefined);
  assert.throws(() => addon!.routeTableCompile!(Buffer.from(twiceBytes.toString('latin1').replace('bb.test', 'aa.test'), 'latin1')), /host twice/);
  assert.throws(() => addon!.routeTableCompile!(Buffer.from(twiceBytes.toString('latin1').replace('/p3', '/p1'), 'latin1')), /exact path twice/);
  let refused = 0;
  let accepted = 0;
  // every cut, then random mutations: each compiles or throws, and a table that compiles answers without crashing
  for (let n = 0; n < good.length; n++) {
    assert.throws(() => addon!.routeTableCompile!(Uint8Array.from(good.subarray(0, n))), /routeTableCompile/);
  }
  fc.assert(
    fc.property(fc.array(mutationArb([0x00, 0x01, 0x02, 0xff, 0x7f, 0x80]), { minLength: 1, maxLength: 4 }), (ms) => {
      const bytes = mutate(good, ms);
      let handle: object;
      try {
        handle = addon!.routeTableCompile!(bytes);
      } catch (err) {
        assert.match((err as Error).message, /routeTableCompile/);
        refused++;
        return;
      }
      accepted++;
      const table = { handle, routes: b.config.routes.length };
      for (const [host, path] of [['example.com', '/api'], ['a.example.com', '/api/x'], ['', '/x'], ['rx.test', '/r'], ['rx.test', '/a.P'], ['rx.test', '/r1']]) {
        const m = routeTableMatch(table, host, path, 'GET');
        if (m.kind === 'route') assert.ok(m.route < b.config.routes.length);
      }
    }),
    { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(1_000)] },
  );
  t.diagnostic(`${good.length} bytes; mutations: ${refused} refused, ${accepted} compiled`);
  assert.ok(refused > 0);
});

test('a table lives while JS holds its handle and is freed once nothing does (a reload drops the old one)', async (t) => {
  if (!needAddon(t)) return;
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const b = build([{ match: { host: ['example.com'], path: '/a' }, proxy: 'a' }, { proxy: 'a' }])!;
  const bytes = routeTableBytes(b.router, b.config);
  // the tables earlier tests dropped go first: collect until the count stays the same three rounds in a row
  let before = addon!.routeTableLive!();
  for (let same = 0, round = 0; same < 3 && round < 200; round++) {
    gc();
    await tick();
    const now = addon!.routeTableLive!();
    same = now === before ? same + 1 : 0;
    before = now;
  }
  // fifty reloads: each compiles a new table and drops the previous one; the last stays held and keeps answering
  let held: object | undefined;
  for (let i = 0; i < 50; i++) held = addon!.routeTableCompile!(bytes);
  assert.ok(addon!.routeTableLive!() >= before + 1);
  // finalizers run after a collection, from the event loop: collect and yield until the forty-nine are gone
  for (let round = 0; round < 200 && addon!.routeTableLive!() > before + 1; round++) {
    gc();
    await tick();
  }
  assert.equal(addon!.routeTableLive!(), before + 1, 'the dropped tables were freed, the held one was not');
  assert.deepEqual(routeTableMatch({ handle: held!, routes: 2 }, 'example.com', '/a/x', 'GET'), { kind: 'route', route: 0, candidate: true });
  held = undefined;
  for (let round = 0; round < 200 && addon!.routeTableLive!() > before; round++) {
    gc();
    await tick();
  }
  assert.equal(addon!.routeTableLive!(), before, 'the last table was freed once dropped');
});
