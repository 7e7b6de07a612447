// Router: every match kind, the documented precedence (as a table), strip prefix, 404, header templates and
// the validators the config loader relies on. Configs go through configSchema.parse, as the loader's do.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import { Router, listenerHost, stripTarget } from '../../src/route/router.js';
import { decide } from '../../src/route/decide.js';
import { parseRequestHead, type RequestHead } from '../../src/wire/http-head.js';
import {
  RouterConfigError,
  compileHeaderTemplate,
  parseHeaderTemplate,
  validateHeaderTemplates,
  validateRouteMatches,
  type RequestVars,
} from '../../src/config/route-rules.js';

type RouteInput = NonNullable<ConfigInput['routes']>[number];

const UPSTREAMS = { a: { targets: ['127.0.0.1:9001'] }, b: { targets: ['127.0.0.1:9002'] } };

function config(routes: RouteInput[], extra: Partial<ConfigInput> = {}): Config {
  return configSchema.parse({ listeners: [{ address: '127.0.0.1:0' }], upstreams: UPSTREAMS, routes, ...extra });
}

/** The matched route's name, or the reject code. */
function hit(router: Router, host: string | undefined, method: string, path: string): string {
  const d = router.route(host, method, path);
  return d.kind === 'forward' ? d.route.name : d.kind === 'reject' ? d.code : d.kind;
}

/** The seed scenario (shared/contract/seed.yaml), inline so this test needs no fixture file. */
const SEED: ConfigInput = {
  workers: 2,
  listeners: [
    { address: '127.0.0.1:8443', tls: { certificates: [{ cert: './certs/site.crt', key: './certs/site.key' }] } },
    { address: '127.0.0.1:8080' },
  ],
  upstreams: {
    chat: { targets: ['127.0.0.1:8888', '127.0.0.1:8889'] },
    tomcat: { balance: 'least_conn', targets: [{ address: '127.0.0.1:8081', weight: 3 }, '127.0.0.1:8082'] },
  },
  routes: [
    { match: { path: '/wss' }, proxy: 'chat' },
    { match: { path: '/Tomcat' }, proxy: 'tomcat', request_headers: { set: { 'X-Real-IP': '$remote_addr' } } },
    { match: { host: 'api.example.test', path: '/' }, proxy: { upstream: 'tomcat', strip_prefix: false } },
  ],
};

const VARS: RequestVars = { remoteAddr: '203.0.113.7', host: 'example.test', scheme: 'https', requestUri: '/a/b?c=1', serverPort: 8443, trustedPeer: false };

test('seed config: /wss -> chat, /Tomcat/x -> tomcat, api.example.test / -> tomcat', () => {
  const router = new Router(configSchema.parse(SEED));
  const upstream = (host: string | undefined, path: string): string => {
    const d = router.route(host, 'GET', path);
    return d.kind === 'forward' ? d.upstream : d.kind === 'reject' ? d.code : d.kind;
  };
  assert.equal(upstream('localhost', '/wss'), 'chat');
  assert.equal(upstream(undefined, '/wss/room/1'), 'chat');
  assert.equal(upstream('localhost', '/Tomcat/x'), 'tomcat');
  assert.equal(upstream('localhost', '/Tomcat'), 'tomcat');
  assert.equal(upstream('api.example.test', '/'), 'tomcat');
  assert.equal(upstream('api.example.test', '/anything/else'), 'tomcat');
  // Host specificity comes before path length: api.example.test's `/` beats the host-less `/wss`.
  assert.equal(upstream('api.example.test', '/wss'), 'tomcat');
  assert.equal(upstream('localhost', '/wssx'), 'ROUTE_NOT_FOUND');
  assert.equal(upstream('localhost', '/tomcat/x'), 'ROUTE_NOT_FOUND', 'paths are case-sensitive');
  assert.equal(upstream('localhost', '/'), 'ROUTE_NOT_FOUND');

  const tomcat = router.route('localhost', 'GET', '/Tomcat/x');
  assert.equal(tomcat.kind, 'forward');
  if (tomcat.kind !== 'forward') return;
  assert.equal(tomcat.route.name, 'routes[1]');
  assert.equal(tomcat.route.stripPrefix, '');
  assert.deepEqual(tomcat.route.requestHeaders.set.map((h) => [h.name, h.lower, h.render(VARS)]), [['X-Real-IP', 'x-real-ip', '203.0.113.7']]);
  assert.deepEqual(tomcat.route.tunnel, { idle_timeout: 0, max_lifetime: 0, half_closed_timeout: 60_000 });
});

test('precedence: host class, then exact > regex (file order) > longest prefix > no path, then method, then file order', () => {
  const router = new Router(
    config([
      { name: 'root', match: { path: '/' }, proxy: 'a' },
      { name: 'api', match: { path: '/api' }, proxy: 'a' },
      { name: 'api-v2', match: { path: '/api/v2' }, proxy: 'a' },
      { name: 'static-dir', match: { path: '/static/' }, proxy: 'a' },
      { name: 'api-post', match: { path: '/api', method: ['POST', 'PUT'] }, proxy: 'b' },
      { name: 'api-dup', match: { path: '/api' }, proxy: 'b' },
      { name: 'php', match: { path_regex: '\\.php$' }, proxy: 'b' },
      { name: 'php-admin', match: { path_regex: '^/admin/.*\\.php$' }, proxy: 'b' },
      { name: 'health', match: { path_exact: '/api/health' }, proxy: 'b' },
      { name: 'get-only', match: { path: '/get', method: 'GET' }, proxy: 'b' },
      { name: 'host-api', match: { host: 'app.example.test', path: '/api' }, proxy: 'a' },
      { name: 'host-any', match: { host: ['App.Example.Test', 'other.test'] }, proxy: 'a' },
      { name: 'wild', match: { host: '*.example.test', path: '/api' }, proxy: 'a' },
      { name: 'wild-deep', match: { host: '*.deep.example.test' }, proxy: 'a' },
    ]),
  );
  const cases: Array<[host: string | undefined, method: string, path: string, expected: string]> = [
    [undefined, 'GET', '/', 'root'],
    [undefined, 'GET', '/anything', 'root'],
    [undefined, 'GET', '/api', 'api'],
    [undefined, 'GET', '/api/', 'api'],
    [undefined, 'GET', '/api/x', 'api'],
    [undefined, 'GET', '/apix', 'root'], // segment boundary
    [undefined, 'POST', '/api/x', 'api-post'], // same prefix: method-specific first even though later in the file
    [undefined, 'PUT', '/api', 'api-post'],
    [undefined, 'DELETE', '/api', 'api'], // then file order: api before api-dup
    [undefined, 'GET', '/api/v2', 'api-v2'],
    [undefined, 'GET', '/api/v2/users', 'api-v2'], // longest prefix
    [undefined, 'GET', '/api/v2x', 'api'],
    [undefined, 'GET', '/static/app.css', 'static-dir'],
    [undefined, 'GET', '/static/', 'static-dir'],
    [undefined, 'GET', '/static', 'root'], // a prefix ending in '/' needs that '/'
    [undefined, 'GET', '/api/x.php', 'php'], // regex before prefix
    [undefined, 'GET', '/admin/x.php', 'php'], // regexes in file order
    [undefined, 'GET', '/api/health', 'health'], // exact before regex and prefix
    [undefined, 'GET', '/api/health/', 'api'], // exact means exact
    [undefined, 'GET', '/get', 'get-only'],
    [undefined, 'POST', '/get', 'root'], // method mismatch falls through to the next match
    [undefined, 'get', '/get', 'root'], // methods are case-sensitive
    ['app.example.test', 'GET', '/api/x', 'host-api'],
    ['app.example.test', 'GET', '/api/health', 'host-api'], // host class before path kind
    ['app.example.test', 'GET', '/other', 'host-any'], // no-path route of the same host class
    ['app.example.test.', 'GET', '/api', 'host-api'], // absolute DNS name
    ['other.test', 'GET', '/api', 'host-any'],
    ['x.example.test', 'GET', '/api', 'wild'],
    ['a.b.example.test', 'GET', '/api/x', 'wild'], // one or more labels
    ['x.example.test', 'GET', '/other', 'root'], // falls through to host-less routes
    ['example.test', 'GET', '/api', 'api'], // the bare suffix is not a wildcard match
    ['xexample.test', 'GET', '/api', 'api'],
    ['a.deep.example.test', 'GET', '/api', 'wild-deep'], // longest suffix first
    [undefined, 'GET', '/api', 'api'],
    ['', 'GET', '/api', 'api'],
  ];
  for (const [host, method, path, expected] of cases) {
    assert.equal(hit(router, host, method, path), expected, `${method} ${host ?? '(no host)'} ${path}`);
  }
});

test('host-specific routes fall through exact -> wildcard -> host-less, then 404', () => {
  const router = new Router(
    config([
      { name: 'exact', match: { host: 'a.example.test', path: '/one' }, proxy: 'a' },
      { name: 'wild', match: { host: '*.example.test', path: '/two' }, proxy: 'a' },
      { name: 'any', match: { path: '/three' }, proxy: 'a' },
    ]),
  );
  assert.equal(hit(router, 'a.example.test', 'GET', '/one'), 'exact');
  assert.equal(hit(router, 'a.example.test', 'GET', '/two'), 'wild');
  assert.equal(hit(router, 'a.example.test', 'GET', '/three'), 'any');
  assert.equal(hit(router, 'a.example.test', 'GET', '/four'), 'ROUTE_NOT_FOUND');
  assert.equal(hit(router, 'b.example.test', 'GET', '/one'), 'ROUTE_NOT_FOUND');
  assert.equal(hit(router, undefined, 'GET', '/two'), 'ROUTE_NOT_FOUND');
});

test('ties on the same exact path or regex: method-specific first, then file order', () => {
  const router = new Router(
    config([
      { name: 'exact-any', match: { path_exact: '/x' }, proxy: 'a' },
      { name: 'exact-get', match: { path_exact: '/x', method: ['GET'] }, proxy: 'a' },
      { name: 're-any', match: { path_regex: '^/r' }, proxy: 'a' },
      { name: 're-any-2', match: { path_regex: '^/r' }, proxy: 'a' },
      { name: 're-post', match: { path_regex: '^/r', method: ['POST'] }, proxy: 'a' },
      { name: 'nopath-any', match: {}, proxy: 'a' },
      { name: 'nopath-delete', match: { method: 'DELETE' }, proxy: 'a' },
    ]),
  );
  assert.equal(hit(router, undefined, 'GET', '/x'), 'exact-get');
  assert.equal(hit(router, undefined, 'POST', '/x'), 'exact-any');
  assert.equal(hit(router, undefined, 'POST', '/r1'), 're-post');
  assert.equal(hit(router, undefined, 'GET', '/r1'), 're-any');
  assert.equal(hit(router, undefined, 'GET', '/elsewhere'), 'nopath-any');
  assert.equal(hit(router, undefined, 'DELETE', '/elsewhere'), 'nopath-delete');
});

test('no matching route -> reject ROUTE_NOT_FOUND; an empty route list rejects everything', () => {
  const router = new Router(config([{ match: { host: 'only.test', path: '/api', method: ['GET'] }, proxy: 'a' }]));
  assert.deepEqual(router.route('only.test', 'GET', '/'), { kind: 'reject', code: 'ROUTE_NOT_FOUND', reason: 'no route' });
  assert.deepEqual(router.route('only.test', 'POST', '/api'), { kind: 'reject', code: 'ROUTE_NOT_FOUND', reason: 'no route' });
  assert.deepEqual(router.route('else.test', 'GET', '/api'), { kind: 'reject', code: 'ROUTE_NOT_FOUND', reason: 'no route' });
  assert.deepEqual(router.route(undefined, 'GET', '/api'), { kind: 'reject', code: 'ROUTE_NOT_FOUND', reason: 'no route' });
  assert.equal(hit(new Router(config([])), 'x.test', 'GET', '/'), 'ROUTE_NOT_FOUND');
});

test('route() returns the same precompiled decision objects (no per-request allocation)', () => {
  const router = new Router(config([{ match: { path: '/a' }, proxy: 'a' }]));
  assert.equal(router.route(undefined, 'GET', '/a/1'), router.route('h.test', 'GET', '/a/2'));
  assert.equal(router.route(undefined, 'GET', '/b'), router.route(undefined, 'GET', '/c'));
});

test('strip prefix: the matched prefix without its trailing slash, only for path prefixes with strip_prefix', () => {
  const router = new Router(
    config([
      { name: 'api', match: { path: '/api' }, proxy: { upstream: 'a', strip_prefix: true } },
      { name: 'static', match: { path: '/static/' }, proxy: { upstream: 'a', strip_prefix: true } },
      { name: 'exact', match: { path_exact: '/e' }, proxy: { upstream: 'a', strip_prefix: true } },
      { name: 'regex', match: { path_regex: '^/r' }, proxy: { upstream: 'a', strip_prefix: true } },
      { name: 'keep', match: { path: '/keep' }, proxy: 'a' },
      { name: 'root', match: { path: '/' }, proxy: { upstream: 'a', strip_prefix: true } },
    ]),
  );
  const strip = (path: string): string => {
    const d = router.route(undefined, 'GET', path);
    assert.equal(d.kind, 'forward');
    return d.kind === 'forward' ? d.route.stripPrefix : '';
  };
  assert.equal(strip('/api/x'), '/api');
  assert.equal(strip('/static/a.css'), '/static');
  assert.equal(strip('/e'), '');
  assert.equal(strip('/r1'), '');
  assert.equal(strip('/keep/x'), '');
  assert.equal(strip('/zzz'), '');

  assert.equal(stripTarget('/api/x', '/api'), '/x');
  assert.equal(stripTarget('/api', '/api'), '/');
  assert.equal(stripTarget('/api/', '/api'), '/');
  assert.equal(stripTarget('/api?q=1', '/api'), '/?q=1');
  assert.equal(stripTarget('/api/x?q=1', '/api'), '/x?q=1');
  assert.equal(stripTarget('/static/a.css', '/static'), '/a.css');
  assert.equal(stripTarget('/other', '/api'), '/other');
  assert.equal(stripTarget('/x?y', ''), '/x?y');
});

test('header templates render every variable, in both $name and ${name} forms', () => {
  assert.equal(
    compileHeaderTemplate('for=$remote_addr host=$host scheme=$scheme uri=$request_uri port=$server_port')(VARS),
    'for=203.0.113.7 host=example.test scheme=https uri=/a/b?c=1 port=8443',
  );
  assert.equal(compileHeaderTemplate('${remote_addr}')(VARS), '203.0.113.7');
  assert.equal(compileHeaderTemplate('$scheme://${host}_x:$server_port')(VARS), 'https://example.test_x:8443');
  assert.equal(compileHeaderTemplate('$host$request_uri')(VARS), 'example.test/a/b?c=1');
  assert.equal(compileHeaderTemplate('plain text')(VARS), 'plain text');
  assert.equal(compileHeaderTemplate('')(VARS), '');
});

test('header templates: $$ is a literal $, and so is a $ not followed by a name or {', () => {
  assert.equal(compileHeaderTemplate('$$host')(VARS), '$host');
  assert.equal(compileHeaderTemplate('a$$$host')(VARS), 'a$example.test');
  assert.equal(compileHeaderTemplate('costs 5$')(VARS), 'costs 5$');
  assert.equal(compileHeaderTemplate('$ 1 $1 $-')(VARS), '$ 1 $1 $-');
  assert.equal(compileHeaderTemplate('$')(VARS), '$');
});

test('header templates: unknown or malformed variables are errors that say what to write', () => {
  const message = (v: string): string => {
    const r = parseHeaderTemplate(v);
    assert.equal(r.ok, false, v);
    return r.ok ? '' : r.message;
  };
  assert.match(message('$foo'), /unknown variable \$foo.*\$remote_addr.*\$\$ for a literal/);
  assert.match(message('$host_x'), /unknown variable \$host_x/); // greedy name, as nginx: use ${host}_x
  assert.match(message('$http_upgrade'), /forwards Upgrade/);
  assert.match(message('$proxy_add_x_forwarded_for'), /X-Forwarded-For by default/);
  assert.match(message('${host'), /unterminated/);
  assert.match(message('${}'), /invalid variable name/);
  assert.match(message('${1x}'), /invalid variable name/);
  assert.match(message('${nope}'), /unknown variable \$nope/);
  assert.throws(() => compileHeaderTemplate('$nope'), RouterConfigError);
});

test('header ops: remove names are lower-cased; set keeps the written name and a lower-cased copy', () => {
  const router = new Router(
    config([
      {
        match: {},
        proxy: 'a',
        request_headers: { set: { 'X-Forwarded-Host': '$host' }, remove: ['X-Secret', 'cookie'] },
        response_headers: { set: { 'Strict-Transport-Security': 'max-age=63072000' }, remove: ['Server'] },
      },
    ]),
  );
  const d = router.route(undefined, 'GET', '/');
  assert.equal(d.kind, 'forward');
  if (d.kind !== 'forward') return;
  assert.deepEqual([...d.route.requestHeaders.remove], ['x-secret', 'cookie']);
  assert.deepEqual([...d.route.responseHeaders.remove], ['server']);
  assert.deepEqual(d.route.requestHeaders.set.map((h) => [h.name, h.lower, h.render(VARS)]), [['X-Forwarded-Host', 'x-forwarded-host', 'example.test']]);
  assert.deepEqual(d.route.responseHeaders.set.map((h) => h.render(VARS)), ['max-age=63072000']);
});

test('tunnel timeouts: a route overrides the config default', () => {
  const router = new Router(
    config(
      [
        { name: 'own', match: { path: '/own' }, proxy: 'a', tunnel: { idle_timeout: '5m' } },
        { name: 'default', match: { path: '/' }, proxy: 'a' },
      ],
      { tunnel: { max_lifetime: '1h' } },
    ),
  );
  const tunnelOf = (path: string): unknown => {
    const d = router.route(undefined, 'GET', path);
    return d.kind === 'forward' ? d.route.tunnel : undefined;
  };
  assert.deepEqual(tunnelOf('/own'), { idle_timeout: 300_000, max_lifetime: 0, half_closed_timeout: 60_000 });
  assert.deepEqual(tunnelOf('/x'), { idle_timeout: 0, max_lifetime: 3_600_000, half_closed_timeout: 60_000 });
});

test('validateHeaderTemplates reports every bad template with its config path; Router refuses such a config', () => {
  const bad = config([
    { match: { path: '/ok' }, proxy: 'a', request_headers: { set: { 'X-Real-IP': '$remote_addr' } } },
    { match: { path: '/bad' }, proxy: 'a', request_headers: { set: { 'X-A': '$remote_adr', 'X-B': 'fine' } }, response_headers: { set: { 'X-C': '${host' } } },
  ]);
  const issues = validateHeaderTemplates(bad);
  assert.deepEqual(
    issues.map((i) => i.path),
    [
      ['routes', 1, 'request_headers', 'set', 'X-A'],
      ['routes', 1, 'response_headers', 'set', 'X-C'],
    ],
  );
  assert.match(issues[0].message, /unknown variable \$remote_adr/);
  assert.deepEqual(validateHeaderTemplates(configSchema.parse(SEED)), []);
  assert.throws(
    () => new Router(bad),
    (err: unknown) => err instanceof RouterConfigError && err.issues.length === 2 && /routes\.1\.request_headers\.set\.X-A/.test(err.message),
  );
});

test('validateRouteMatches reports bad host patterns and lower-case methods with their paths', () => {
  const bad = config([
    { match: { host: ['*', 'a.*.test', '*example.test', '*.ok.test', 'ok.test'] }, proxy: 'a' },
    { match: { method: ['GET', 'get'] }, proxy: 'a' },
  ]);
  const issues = validateRouteMatches(bad);
  assert.deepEqual(
    issues.map((i) => i.path),
    [
      ['routes', 0, 'match', 'host', 0],
      ['routes', 0, 'match', 'host', 1],
      ['routes', 0, 'match', 'host', 2],
      ['routes', 1, 'match', 'method', 1],
    ],
  );
  assert.match(issues[0].message, /leave match\.host out/);
  assert.match(issues[3].message, /case-sensitive/);
  assert.deepEqual(validateRouteMatches(configSchema.parse(SEED)), []);
  assert.throws(() => new Router(bad), RouterConfigError);
});

test('listenerHost: the $host of a request without a host is the address reached, IPv6 bracketed, IPv4-mapped unwrapped', () => {
  assert.equal(listenerHost('127.0.0.1'), '127.0.0.1');
  assert.equal(listenerHost('::ffff:10.0.0.1'), '10.0.0.1');
  assert.equal(listenerHost('::1'), '[::1]');
  assert.equal(listenerHost(undefined), '');
});

/** A parsed request head, for decide(). */
function head(text: string): RequestHead {
  const r = parseRequestHead(Buffer.from(text, 'latin1'), { headerSize: 8192, uriSize: 4096, headers: 100 });
  assert.equal(r.kind, 'done');
  return (r as { head: RequestHead }).head;
}

test('decide: a WebSocket handshake on a route is a tunnel, other requests forward; both decisions are built once per route', () => {
  const router = new Router(config([{ name: 'ws', match: { path: '/ws' }, proxy: 'a' }]));
  const ws = 'Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
  const t1 = decide(router, head(`GET /ws HTTP/1.1\r\n${ws}`));
  const t2 = decide(router, head(`GET /ws/room HTTP/1.1\r\n${ws}`));
  assert.equal(t1.kind, 'tunnel');
  assert.equal(t1, t2, 'the same precomputed object for every handshake on the route');
  assert.equal(t1.kind === 'tunnel' ? t1.route.name : '', 'ws');
  const f = decide(router, head('GET /ws HTTP/1.1\r\nHost: x\r\n\r\n'));
  assert.equal(f.kind, 'forward');
  assert.equal(f, router.route('x', 'GET', '/ws'));
  // RFC 6455 §4.1: only an HTTP/1.1 GET without a body opens a tunnel; other Upgrade offers are forwarded
  assert.equal(decide(router, head(`POST /ws HTTP/1.1\r\nContent-Length: 0\r\n${ws}`)).kind, 'forward');
  assert.equal(decide(router, head(`GET /ws HTTP/1.0\r\n${ws}`)).kind, 'forward');
  assert.equal(decide(router, head('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n')).kind, 'forward');
  // refused before routing: a CONNECT, a path that does not normalize, no route
  const c = decide(router, head('CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n'));
  assert.deepEqual(c.kind === 'reject' ? [c.code, c.reason] : c.kind, ['CLIENT_METHOD_NOT_ALLOWED', 'CONNECT is not served']);
  const bad = decide(router, head('GET /ws/%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n'));
  assert.equal(bad.kind === 'reject' ? bad.code : bad.kind, 'CLIENT_BAD_REQUEST');
  const none = decide(router, head('GET /other HTTP/1.1\r\nHost: x\r\n\r\n'));
  assert.deepEqual(none.kind === 'reject' ? [none.code, none.reason] : none.kind, ['ROUTE_NOT_FOUND', 'no route']);
});
