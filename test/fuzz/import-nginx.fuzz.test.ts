// Property tests of `portico import-nginx` (src/config/nginx-parse.ts, nginx-import.ts) under a time budget. The
// importer promises YAML that `portico check` accepts, with a comment where it could not translate: so for any
// nginx config it reads, it never throws, and what it writes loads with Portico's own loader (certificate files
// and roots present, as `loads` in test/unit/nginx-import.test.ts gives them). Configs are built from the
// directives the importer knows, with arguments from the values nginx users write and from the edges (empty,
// zero, huge, negative, units, variables, odd addresses, regexes that do not compile, names with every byte kind),
// nested as nginx nests them (and where it does not). The tokenizer on its own: any text either parses or throws
// NginxParseError with a line, never anything else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { assertFor } from '../helpers/fuzz.js';
import { FIXTURES } from '../helpers/paths.js';
import { formatErrors, loadConfigText } from '../../src/config/load.js';
import { importNginx } from '../../src/config/nginx-import.js';
import { NginxParseError, parseNginxText, type Directive } from '../../src/config/nginx-parse.js';

const BUDGET_MS = 2500;

/** Values that stand anywhere: the edges of every argument kind. */
const JUNK = ['', '0', '-1', '1', '65535', '65536', '99999999999', '1.5', 'on', 'off', 'auto', 'all', '$host', '$foo', '${host}x', '$1', 'a b', '"', "'", '\\', ';', '{', '/', '//', '*', '~', '=', '@x', 'é', '\u0000', 'x'.repeat(300), 'unix:', 'unix:/tmp/p.sock', '[::1]', '[::1]:80', '[::]:443', 'localhost', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:8080', 'http://', 'https://x', 'http://127.0.0.1:8080/', '10s', '1m', '1h', '1d', '0s', '5ms', '1y', '10k', '1M', '1G', '10x'];
const junkArb = fc.constantFrom(...JUNK);

/** Per directive, what its users write (each also takes any JUNK value). */
const VALUES: Record<string, readonly string[]> = {
  worker_processes: ['auto', '1', '2', '4', '0', '128', '99999'],
  listen: ['80', '443', '8080', '127.0.0.1:8080', '[::]:80', '[::]:443', '*:80', 'localhost:80', '0.0.0.0:443', '70000', '127.0.0.1:0', 'unix:/run/x.sock', ':80', '[::1]:0', '[fe80::1%lo]:80'],
  listenParam: ['ssl', 'http2', 'default_server', 'default', 'reuseport', 'deferred', 'proxy_protocol', 'backlog=511', 'backlog=0', 'backlog=70000', 'backlog=x', 'rcvbuf=64k', 'ipv6only=on', 'udp', 'quic', 'bind', 'fastopen=3', 'so_keepalive=on'],
  server_name: ['example.com', 'www.example.com', '.example.com', '*.example.com', 'example.*', '~^(?<x>.+)\\.com$', '_', 'localhost', 'Example.COM', 'xn--caf-dma.example', 'a_b.example', '-bad.example', 'bad..example', 'ex ample', '127.0.0.1', '[::1]', 'example.com:80'],
  ssl_certificate: ['certs/site.crt', './certs/site.crt', 'certs//site.crt'],
  ssl_certificate_key: ['certs/site.key', './certs/site.key'],
  root: ['html', './html', 'html/', '.', 'certs/..', 'html/../html'],
  index: ['index.html', 'index.htm', 'index.php', 'default.htm', '/index.html', '$x.html', 'a/b.html', '.hidden'],
  location: ['/', '/wss', '/wss/', '/Tomcat', '/api/', '/static/', '/x y', '/%2e%2e/', '/é', 'relative', '\\.php$', '^/api/(.*)$', '[', '(', '(?<n>x)', '\\.(gif|jpg)$', '/.well-known/acme-challenge/'],
  locationMod: ['=', '^~', '~', '~*', '@named', '!~', '=='],
  proxy_pass: ['http://127.0.0.1:8080', 'http://127.0.0.1:8080/', 'http://tomcat', 'http://tomcat/', 'https://127.0.0.1:8443', 'http://[::1]:8080', 'http://localhost:8080', 'http://backend.internal', 'http://$upstream', 'http://127.0.0.1:8080/app/', 'http://127.0.0.1:99999', 'http://unix:/run/app.sock', 'tomcat', 'ftp://127.0.0.1', 'http://a b'],
  fastcgi_pass: ['127.0.0.1:9000', 'unix:/run/php/php-fpm.sock', 'php', 'localhost:9000', '[::1]:9000', '127.0.0.1', '127.0.0.1:0', 'http://127.0.0.1:9000', 'unix:'],
  fastcgi_index: ['index.php', 'app.php', '', '/x.php', '../x.php'],
  fastcgi_param: ['SCRIPT_FILENAME', 'HTTPS', 'APP_ENV', 'PATH_INFO', 'HTTP_PROXY', 'lower', 'X Y', '$document_root$fastcgi_script_name', 'production', '$host', '$remote_addr', '$unknown_var', ''],
  fastcgi_split_path_info: ['^(.+\\.php)(/.+)$', '^(.+?\\.php)(/.*)$', '(', '^(.+)$', '^(.+\\.php)$', '(a)(b)(c)'],
  try_files: ['$uri', '$uri/', '=404', '/index.php?$args', '/index.php?$query_string', '/index.html', '@fallback', '$uri.html', '=500', '/x?$foo'],
  return: ['301', '302', '200', '204', '403', '404', '444', '500', '0', '999', '1000', '-1', 'https://$host$request_uri', 'https://example.com$request_uri', '/x', '"text body"', '$scheme://$host', 'http://$foo'],
  rewrite: ['^', '^(.*)$', '^/(.*)$', '^/old/(.*)$', '(', 'https://$host$1', 'https://example.com/$1', '/local', 'permanent', 'redirect', 'last', 'break'],
  proxy_set_header: ['Host', 'X-Real-IP', 'X-Forwarded-For', 'X-Forwarded-Proto', 'Upgrade', 'Connection', 'Content-Length', 'X-Custom', 'Bad Name', 'X:Y', '$host', '$http_host', '$remote_addr', '$proxy_add_x_forwarded_for', '$scheme', '$http_upgrade', '"upgrade"', 'upgrade', '$connection_upgrade', '$request_id', '$foo', 'value\r\nx'],
  add_header: ['X-Frame-Options', 'Cache-Control', 'Access-Control-Allow-Origin', 'Access-Control-Allow-Credentials', 'Access-Control-Allow-Methods', 'Access-Control-Allow-Headers', 'Access-Control-Expose-Headers', 'Access-Control-Max-Age', 'Strict-Transport-Security', 'Bad Name', 'SAMEORIGIN', '*', 'https://app.example.com', 'https://*.example.com', '$http_origin', 'true', 'false', 'GET, POST, OPTIONS', 'Content-Type, Authorization', '86400', '-5', 'always', 'max-age=31536000'],
  proxy_hide_header: ['X-Powered-By', 'Server', '', 'Bad Name'],
  timeout: ['60s', '60', '1h', '0', '0s', '1d', '500ms', '10m30s', '1y', 'x', '-5s', '99999999999'],
  client_max_body_size: ['0', '1m', '10M', '1g', '100k', '512', 'x', '-1', '99999999G'],
  limit_req_zone: ['$binary_remote_addr', '$remote_addr', '$http_x_api_key', '$cookie_session', '$arg_token', '$server_name', 'zone=one:10m', 'zone=two:1m', 'zone=:1m', 'rate=10r/s', 'rate=30r/m', 'rate=0r/s', 'rate=1r/h', 'rate=x'],
  limit_req: ['zone=one', 'zone=two', 'zone=missing', 'burst=5', 'burst=0', 'burst=-1', 'burst=x', 'burst=99999999', 'nodelay', 'delay=3'],
  limit_conn_zone: ['$binary_remote_addr', '$remote_addr', '$server_name', 'zone=addr:10m', 'zone=perserver:10m'],
  limit_conn: ['addr', 'perserver', 'missing', '10', '1', '0', '-1', '99999999999'],
  status: ['429', '503', '444', '200', 'x'],
  gzip: ['on', 'off', 'x'],
  gzip_types: ['text/plain', 'text/css', 'application/json', '*', 'text/html', 'bad type', 'image/svg+xml'],
  gzip_comp_level: ['1', '6', '9', '0', '10', 'x'],
  gzip_min_length: ['20', '1000', '0', '-1', '1k', 'x'],
  expires: ['max', 'epoch', 'off', '30d', '1h', '-1', '0', 'modified', '@15h30m', 'x', '99999999999d'],
  keepalive: ['16', '0', '32', '-1', 'x', '100000'],
  server: ['127.0.0.1:8080', '127.0.0.1:8081', '[::1]:8080', 'localhost:8080', 'backend.internal:80', 'backend.internal', 'unix:/run/app.sock', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536', '10.0.0.1:9000'],
  serverParam: ['weight=3', 'weight=0', 'weight=-1', 'weight=x', 'weight=1000', 'backup', 'down', 'max_fails=3', 'fail_timeout=30s', 'max_conns=100', 'resolve', 'slow_start=30s', 'service=http', 'route=x'],
  hash: ['$remote_addr', '$request_uri', '$http_x_user', '$cookie_sid', '$arg_id', '$binary_remote_addr', 'consistent', '$foo$bar'],
  upstreamName: ['tomcat', 'php', 'backend', 'ws_backend', 'api.v2', 'bad name', 'é', '', 'backend_tcp', 'tcp_127_0_0_1_9000'],
  mapKey: ['$ssl_preread_server_name', '$http_upgrade', '$host', '$uri'],
  mapVar: ['$backend', '$connection_upgrade', '$x', 'novar'],
  mapEntry: ['a.example.com', '.example.com', '*.example.com', '~^www\\d+', 'default', 'hostnames', 'bad name', 'é.example', '127.0.0.1:8443', 'backend', 'upstream_b', 'close', 'upgrade', ''],
  set_real_ip_from: ['10.0.0.0/8', '192.168.0.0/16', '::1', '0.0.0.0/0', 'unix:', '10.0.0.0/33', 'x', 'fe80::/10', '127.0.0.1'],
  ssl_preread: ['on', 'off'],
  proxy_protocol: ['on', 'off'],
  proxy_half_close: ['on', 'off'],
  include: ['mime.types', 'fastcgi_params', 'snippets/fastcgi-php.conf', 'proxy_params', 'conf.d/*.conf', 'missing.conf'],
  access_log: ['off', '/var/log/nginx/access.log', 'syslog:server=127.0.0.1'],
  allow: ['127.0.0.1', '10.0.0.0/8', 'all', 'unix:'],
  deny: ['all', '10.0.0.1'],
  ifArgs: ['($request_method', '=', 'OPTIONS)', '($http_origin', '~*', '(https://app.example.com))', '(-f', '$request_filename)', '($x)'],
  ssl_protocols: ['TLSv1.2', 'TLSv1.3', 'TLSv1'],
};

/** Files and folders a config names must exist for `portico check`: these take only values that name what `site()` holds. */
const ON_DISK = new Set(['ssl_certificate', 'ssl_certificate_key', 'root']);
const valueArb = (kind: string): fc.Arbitrary<string> => (ON_DISK.has(kind) ? fc.constantFrom(...VALUES[kind]) : fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...(VALUES[kind] ?? JUNK)) }, { weight: 1, arbitrary: junkArb }));
const argsArb = (kind: string, min = 1, max = 3): fc.Arbitrary<string[]> => fc.array(valueArb(kind), { minLength: min, maxLength: max });

type Tree = { name: string; args: string[]; block?: Tree[] };
const leaf = (name: string, args: fc.Arbitrary<string[]>): fc.Arbitrary<Tree> => args.map((a) => ({ name, args: a }));
const block = (name: string, args: fc.Arbitrary<string[]>, body: fc.Arbitrary<Tree[]>): fc.Arbitrary<Tree> => fc.tuple(args, body).map(([a, b]) => ({ name, args: a, block: b }));
const none = fc.constant<string[]>([]);

const timeoutNames = ['proxy_read_timeout', 'proxy_connect_timeout', 'proxy_send_timeout', 'fastcgi_read_timeout', 'fastcgi_connect_timeout', 'keepalive_timeout', 'client_header_timeout', 'client_body_timeout', 'proxy_timeout'];
const gzipNames = ['gzip', 'gzip_types', 'gzip_comp_level', 'gzip_min_length', 'gzip_vary', 'gzip_proxied', 'gzip_static', 'brotli', 'brotli_types', 'brotli_comp_level', 'brotli_min_length', 'brotli_static'];

/** A directive that may stand in http, server or location (the importer decides where it means something). */
const commonArb: fc.Arbitrary<Tree> = fc.oneof(
  leaf('root', argsArb('root', 1, 1)),
  leaf('index', argsArb('index', 1, 3)),
  leaf('alias', argsArb('junk', 1, 1)),
  leaf('try_files', argsArb('try_files', 1, 4)),
  fc.constantFrom(...timeoutNames).chain((n) => leaf(n, argsArb('timeout', 1, 1))),
  fc.constantFrom(...gzipNames).chain((n) => leaf(n, argsArb(n === 'gzip_types' || n === 'brotli_types' ? 'gzip_types' : n.endsWith('level') ? 'gzip_comp_level' : n.endsWith('length') ? 'gzip_min_length' : 'gzip', 1, 3))),
  leaf('proxy_set_header', fc.tuple(valueArb('proxy_set_header'), valueArb('proxy_set_header')).map(([a, b]) => [a, b])),
  leaf('add_header', fc.tuple(valueArb('add_header'), valueArb('add_header'), fc.option(fc.constant('always'), { nil: undefined })).map(([a, b, c]) => (c === undefined ? [a, b] : [a, b, c]))),
  leaf('proxy_hide_header', argsArb('proxy_hide_header', 1, 1)),
  leaf('client_max_body_size', argsArb('client_max_body_size', 1, 1)),
  leaf('limit_req', argsArb('limit_req', 1, 3)),
  leaf('limit_conn', argsArb('limit_conn', 1, 2)),
  fc.constantFrom('limit_req_status', 'limit_conn_status').chain((n) => leaf(n, argsArb('status', 1, 1))),
  leaf('expires', argsArb('expires', 1, 2)),
  leaf('access_log', argsArb('access_log', 1, 2)),
  leaf('include', argsArb('include', 1, 1)),
  leaf('proxy_http_version', fc.constant(['1.1'])),
  fc.constantFrom('ssl_protocols', 'ssl_ciphers', 'ssl_session_cache', 'ssl_session_tickets').chain((n) => leaf(n, argsArb('ssl_protocols', 1, 2))),
  leaf('unknown_directive', argsArb('junk', 0, 2)),
);

const locationBodyItem: fc.Arbitrary<Tree> = fc.oneof(
  { weight: 3, arbitrary: leaf('proxy_pass', argsArb('proxy_pass', 1, 1)) },
  { weight: 2, arbitrary: leaf('fastcgi_pass', argsArb('fastcgi_pass', 1, 1)) },
  { weight: 1, arbitrary: leaf('fastcgi_index', argsArb('fastcgi_index', 1, 1)) },
  { weight: 1, arbitrary: leaf('fastcgi_param', argsArb('fastcgi_param', 1, 3)) },
  { weight: 1, arbitrary: leaf('fastcgi_split_path_info', argsArb('fastcgi_split_path_info', 1, 1)) },
  { weight: 1, arbitrary: leaf('return', argsArb('return', 1, 2)) },
  { weight: 1, arbitrary: leaf('rewrite', argsArb('rewrite', 2, 3)) },
  { weight: 1, arbitrary: leaf('allow', argsArb('allow', 1, 1)) },
  { weight: 1, arbitrary: leaf('deny', argsArb('deny', 1, 1)) },
  { weight: 1, arbitrary: block('if', argsArb('ifArgs', 1, 3), fc.array(fc.oneof(leaf('return', argsArb('return', 1, 2)), leaf('add_header', argsArb('add_header', 2, 2))), { maxLength: 3 })) },
  { weight: 1, arbitrary: block('location', argsArb('location', 1, 1), fc.array(leaf('proxy_pass', argsArb('proxy_pass', 1, 1)), { maxLength: 1 })) },
  { weight: 6, arbitrary: commonArb },
);

const locationArb: fc.Arbitrary<Tree> = block(
  'location',
  fc.oneof(argsArb('location', 1, 1), fc.tuple(valueArb('locationMod'), valueArb('location')).map(([m, p]) => [m, p]), argsArb('junk', 0, 3)),
  fc.array(locationBodyItem, { maxLength: 6 }),
);

const listenArb: fc.Arbitrary<Tree> = leaf('listen', fc.tuple(valueArb('listen'), fc.array(valueArb('listenParam'), { maxLength: 3 })).map(([a, ps]) => [a, ...ps]));

const serverArb: fc.Arbitrary<Tree> = block(
  'server',
  none,
  fc.array(
    fc.oneof(
      { weight: 3, arbitrary: listenArb },
      { weight: 1, arbitrary: leaf('server_name', argsArb('server_name', 1, 3)) },
      { weight: 1, arbitrary: leaf('ssl_certificate', argsArb('ssl_certificate', 1, 1)) },
      { weight: 1, arbitrary: leaf('ssl_certificate_key', argsArb('ssl_certificate_key', 1, 1)) },
      { weight: 1, arbitrary: leaf('return', argsArb('return', 1, 2)) },
      { weight: 4, arbitrary: locationArb },
      { weight: 2, arbitrary: commonArb },
    ),
    { maxLength: 10 },
  ),
);

const upstreamArb = (stream: boolean): fc.Arbitrary<Tree> =>
  block(
    'upstream',
    argsArb('upstreamName', 1, 1),
    fc.array(
      fc.oneof(
        { weight: 4, arbitrary: leaf('server', fc.tuple(valueArb('server'), fc.array(valueArb('serverParam'), { maxLength: 3 })).map(([a, ps]) => [a, ...ps])) },
        { weight: 1, arbitrary: leaf('least_conn', none) },
        { weight: 1, arbitrary: leaf('ip_hash', none) },
        { weight: 1, arbitrary: leaf('hash', argsArb('hash', 1, 2)) },
        { weight: 1, arbitrary: leaf('random', fc.constantFrom([], ['two'], ['two', 'least_conn'])) },
        { weight: 1, arbitrary: leaf('keepalive', argsArb('keepalive', 1, 1)) },
        { weight: 1, arbitrary: leaf('keepalive_timeout', argsArb('timeout', 1, 1)) },
        { weight: 1, arbitrary: leaf('zone', fc.constant(stream ? ['tcp', '64k'] : ['http', '64k'])) },
        { weight: 1, arbitrary: leaf('unknown_directive', argsArb('junk', 0, 1)) },
      ),
      { maxLength: 5 },
    ),
  );

const mapArb: fc.Arbitrary<Tree> = block(
  'map',
  fc.tuple(valueArb('mapKey'), valueArb('mapVar')).map(([k, v]) => [k, v]),
  fc.array(
    fc.tuple(valueArb('mapEntry'), fc.array(valueArb('mapEntry'), { maxLength: 2 })).map(([name, args]): Tree => ({ name, args })),
    { maxLength: 5 },
  ),
);

const httpArb: fc.Arbitrary<Tree> = block(
  'http',
  none,
  fc.array(
    fc.oneof(
      { weight: 3, arbitrary: serverArb },
      { weight: 2, arbitrary: upstreamArb(false) },
      { weight: 1, arbitrary: leaf('limit_req_zone', argsArb('limit_req_zone', 1, 3)) },
      { weight: 1, arbitrary: leaf('limit_conn_zone', argsArb('limit_conn_zone', 1, 2)) },
      { weight: 1, arbitrary: mapArb },
      { weight: 1, arbitrary: leaf('set_real_ip_from', argsArb('set_real_ip_from', 1, 1)) },
      { weight: 2, arbitrary: commonArb },
    ),
    { maxLength: 8 },
  ),
);

const streamServerArb: fc.Arbitrary<Tree> = block(
  'server',
  none,
  fc.array(
    fc.oneof(
      { weight: 3, arbitrary: listenArb },
      { weight: 3, arbitrary: leaf('proxy_pass', fc.oneof(argsArb('server', 1, 1), argsArb('upstreamName', 1, 1), argsArb('mapVar', 1, 1))) },
      { weight: 1, arbitrary: leaf('ssl_preread', argsArb('ssl_preread', 1, 1)) },
      { weight: 1, arbitrary: leaf('proxy_protocol', argsArb('proxy_protocol', 1, 1)) },
      { weight: 1, arbitrary: leaf('proxy_half_close', argsArb('proxy_half_close', 1, 1)) },
      { weight: 1, arbitrary: fc.constantFrom('proxy_connect_timeout', 'proxy_timeout').chain((n) => leaf(n, argsArb('timeout', 1, 1))) },
      { weight: 1, arbitrary: leaf('set_real_ip_from', argsArb('set_real_ip_from', 1, 1)) },
      { weight: 1, arbitrary: leaf('unknown_directive', argsArb('junk', 0, 1)) },
    ),
    { maxLength: 6 },
  ),
);

const streamArb: fc.Arbitrary<Tree> = block(
  'stream',
  none,
  fc.array(fc.oneof({ weight: 2, arbitrary: upstreamArb(true) }, { weight: 3, arbitrary: streamServerArb }, { weight: 1, arbitrary: mapArb }, { weight: 1, arbitrary: leaf('set_real_ip_from', argsArb('set_real_ip_from', 1, 1)) }), { maxLength: 5 }),
);

const mainArb: fc.Arbitrary<Tree[]> = fc.array(
  fc.oneof(
    { weight: 4, arbitrary: httpArb },
    { weight: 2, arbitrary: streamArb },
    { weight: 1, arbitrary: leaf('worker_processes', argsArb('worker_processes', 1, 1)) },
    { weight: 1, arbitrary: block('events', none, fc.constant([])) },
    // a conf.d snippet: server and upstream blocks at the top
    { weight: 1, arbitrary: serverArb },
    { weight: 1, arbitrary: upstreamArb(false) },
    { weight: 1, arbitrary: leaf('unknown_directive', argsArb('junk', 0, 1)) },
  ),
  { minLength: 1, maxLength: 4 },
);

function directives(trees: readonly Tree[], line = { n: 1 }): Directive[] {
  return trees.map((t) => {
    const at = line.n++;
    return { name: t.name, args: t.args, file: 'fuzz.conf', line: at, block: t.block === undefined ? undefined : directives(t.block, line) };
  });
}

/** nginx's text for a tree: every argument quoted (the tokenizer's escapes), blocks nested. */
function render(trees: readonly Tree[], indent = ''): string {
  return trees
    .map((t) => {
      const head = [t.name, ...t.args].map((a) => `"${a.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(' ');
      return t.block === undefined ? `${indent}${head};\n` : `${indent}${head} {\n${render(t.block, indent + '  ')}${indent}}\n`;
    })
    .join('');
}

/** A folder with what the generated configs name: certs/site.{crt,key} and html/ (as the unit test's `loads`). */
function site(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-import-fuzz-'));
  mkdirSync(path.join(dir, 'certs'));
  for (const f of ['site.crt', 'site.key']) copyFileSync(path.join(FIXTURES, 'seed', 'certs', f), path.join(dir, 'certs', f));
  mkdirSync(path.join(dir, 'html'));
  return dir;
}

test('import-nginx never throws, and every config it writes loads (portico check)', (t) => {
  const dir = site();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let runs = 0;
  let loaded = 0;
  let withRoutes = 0;
  let unlistened = 0;
  assertFor(
    fc.property(mainArb, (trees) => {
      runs++;
      const ds = directives(trees);
      const r = importNginx(ds, 'fuzz.conf');
      const result = loadConfigText(r.yaml, path.join(dir, 'portico.yaml'));
      if (r.problems.length > 0) {
        // the one thing settling cannot leave out: the listeners themselves
        assert.equal(r.counts.listeners, 0, `problems with listeners left:\n${r.problems.join('\n')}\n--- nginx ---\n${render(trees)}`);
        assert.ok(!result.ok, 'a config with problems loaded');
        unlistened++;
        return;
      }
      if (!result.ok) assert.fail(`the imported config does not load:\n${formatErrors('portico.yaml', result.errors)}\n--- nginx ---\n${render(trees)}--- yaml ---\n${r.yaml}`);
      loaded++;
      if (result.config.routes.length > 0) withRoutes++;
    }),
    BUDGET_MS,
    () => loaded >= 200 && withRoutes >= 50,
  );
  assert.ok(loaded >= 200, `only ${loaded} of ${runs} configs loaded`);
  assert.ok(withRoutes >= 50, `only ${withRoutes} imported configs had a route`);
});

test('the nginx text of a config parses back to the same directives', () => {
  assertFor(
    fc.property(mainArb, (trees) => {
      // an include is read from disk by the parser: its text is not the directive
      const includes = (ts: readonly Tree[]): boolean => ts.some((x) => x.name === 'include' || includes(x.block ?? []));
      fc.pre(!includes(trees));
      const strip = (ds: readonly Directive[]): unknown => ds.map((d) => ({ name: d.name, args: d.args, block: d.block === undefined ? undefined : strip(d.block) }));
      assert.deepEqual(strip(parseNginxText(render(trees), 'fuzz.conf', '/nonexistent')), strip(directives(trees)));
    }),
    800,
    () => true,
  );
});

const TEXT_PIECES = ['server', 'location', 'http', '{', '}', ';', ' ', '\n', '\t', '"', "'", '\\', '#', '$', '${', 'include', 'listen 80', '~', '\r', '\u0000', 'é', 'a'];
const textArb = fc.oneof(fc.array(fc.constantFrom(...TEXT_PIECES), { maxLength: 60 }).map((p) => p.join('')), fc.string({ maxLength: 80 }));

test('the tokenizer: any text parses or is refused with its file and line, never another error', () => {
  let refused = 0;
  assertFor(
    fc.property(textArb, (text) => {
      try {
        const ds = parseNginxText(text, 'fuzz.conf', '/nonexistent');
        importNginx(ds, 'fuzz.conf');
      } catch (e) {
        if (!(e instanceof NginxParseError)) throw e;
        assert.equal(e.file, 'fuzz.conf');
        assert.ok(Number.isInteger(e.line) && e.line >= 1 && e.line <= text.split('\n').length + 1, `line ${e.line} of a ${text.split('\n').length}-line text`);
        refused++;
      }
    }),
    800,
    () => refused >= 20,
  );
});
