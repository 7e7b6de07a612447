// portico import-nginx: the nginx tokenizer (quotes, escapes, comments, includes, errors with their line) and
// the translation of each directive it knows, checked by loading the YAML it writes with Portico's own loader.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test, { type TestContext } from 'node:test';
import { parse } from 'yaml';
import { formatErrors, loadConfig } from '../../src/config/load.js';
import { importNginx, nginxDurationMs, nginxSize, type ImportResult } from '../../src/config/nginx-import.js';
import { NginxParseError, parseNginxFile, parseNginxText, tokenize } from '../../src/config/nginx-parse.js';
import { CLI, FIXTURES } from '../helpers/paths.js';

const SEED_CERTS = path.join(FIXTURES, 'seed', 'certs');

function folder(t: TestContext): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-import-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function translate(text: string): ImportResult {
  return importNginx(parseNginxText(text, 'test.conf', '/nonexistent'), 'test.conf');
}

type Out = { listeners: Record<string, unknown>[]; upstreams: Record<string, Record<string, unknown>>; routes: Record<string, unknown>[]; limits?: Record<string, unknown>; timeouts?: Record<string, unknown>; workers?: unknown };
const out = (r: ImportResult): Out => parse(r.yaml) as Out;

/** The YAML loads with Portico's loader, beside a copy of the contract's certificates (certs/site.*). */
function loads(t: TestContext, r: ImportResult): void {
  const dir = folder(t);
  mkdirSync(path.join(dir, 'certs'));
  for (const f of ['site.crt', 'site.key']) copyFileSync(path.join(SEED_CERTS, f), path.join(dir, 'certs', f));
  mkdirSync(path.join(dir, 'html'));
  writeFileSync(path.join(dir, 'portico.yaml'), r.yaml);
  const loaded = loadConfig(path.join(dir, 'portico.yaml'));
  if (!loaded.ok) assert.fail(`the imported config does not load:\n${formatErrors('portico.yaml', loaded.errors)}\n---\n${r.yaml}`);
}

test('tokens: quotes, escapes, comments and ${var} are read as nginx reads them', () => {
  const words = tokenize('a "b c" \'d;e\' f\\ g # comment ; {\nh ${x}y \\.php$ "q\\"r";', 'f').map((t) => t.text);
  assert.deepEqual(words, ['a', 'b c', 'd;e', 'f\\ g', 'h', '${x}y', '\\.php$', 'q"r', ';']);
});

test('parse errors name the file and the line', () => {
  assert.throws(() => parseNginxText('server {\n  listen 80;\n', 'x.conf'), (e: unknown) => e instanceof NginxParseError && e.line === 1 && /unclosed \{/.test(e.message));
  assert.throws(() => parseNginxText('a b\n}', 'x.conf'), (e: unknown) => e instanceof NginxParseError && e.line === 2);
  assert.throws(() => parseNginxText('listen "80;\n', 'x.conf'), /x\.conf:1: unclosed " quote/);
  assert.throws(() => parseNginxText('listen 80', 'x.conf'), /no ending ";"/);
});

test('include: relative to the including file, globs in the last part, a self-include refused, a missing one kept', (t) => {
  const dir = folder(t);
  mkdirSync(path.join(dir, 'conf.d'));
  writeFileSync(path.join(dir, 'conf.d', 'b.conf'), 'upstream b { server 127.0.0.1:2; }\n');
  writeFileSync(path.join(dir, 'conf.d', 'a.conf'), 'upstream a { server 127.0.0.1:1; }\n');
  writeFileSync(path.join(dir, 'main.conf'), 'http { include conf.d/*.conf; include fastcgi_params; }\n');
  const http = parseNginxFile(path.join(dir, 'main.conf'))[0];
  assert.deepEqual(http.block?.map((d) => `${d.name} ${d.args.join(' ')}`), ['upstream a', 'upstream b', 'include fastcgi_params']);
  writeFileSync(path.join(dir, 'loop.conf'), 'include loop.conf;\n');
  assert.throws(() => parseNginxFile(path.join(dir, 'loop.conf')), /includes itself/);
});

test('hostile includes end with a parse error naming the place: too deep, globs that multiply, too large, an unreadable folder; globs as glob(3)', (t) => {
  const dir = folder(t);
  const parseError = (file: string, message: RegExp) => (e: unknown) => e instanceof NginxParseError && message.test(e.message) && e.message.includes(file);
  // a chain of 18 files, each including the next (no cycle)
  for (let i = 0; i < 18; i++) writeFileSync(path.join(dir, `chain${i}.conf`), i < 17 ? `include chain${i + 1}.conf;\n` : 'worker_processes 1;\n');
  assert.throws(() => parseNginxFile(path.join(dir, 'chain0.conf')), parseError('chain16.conf', /nested deeper than 16/));
  assert.deepEqual(parseNginxFile(path.join(dir, 'chain2.conf')).map((d) => d.name), ['worker_processes'], '16 levels are fine');
  // 4 levels of 8 files each including all 8 of the next level: 8 + 64 + 512 + 4096 reads from 32 files
  for (let level = 0; level < 4; level++) {
    mkdirSync(path.join(dir, `l${level}`));
    for (let i = 0; i < 8; i++) writeFileSync(path.join(dir, `l${level}`, `f${i}.conf`), level < 3 ? `include ../l${level + 1}/*.conf;\n` : 'worker_processes 1;\n');
  }
  writeFileSync(path.join(dir, 'fan.conf'), 'include l0/*.conf;\n');
  assert.throws(() => parseNginxFile(path.join(dir, 'fan.conf')), parseError('.conf', /more than 1024 files read through include/));
  writeFileSync(path.join(dir, 'fan3.conf'), 'include l1/*.conf;\n');
  assert.equal(parseNginxFile(path.join(dir, 'fan3.conf')).length, 512, 'three levels (584 reads) are within the budget');
  writeFileSync(path.join(dir, 'big.conf'), Buffer.alloc(4 * 1024 * 1024 + 1, 0x20));
  writeFileSync(path.join(dir, 'inc-big.conf'), 'include big.conf;\n');
  assert.throws(() => parseNginxFile(path.join(dir, 'inc-big.conf')), parseError('big.conf', /larger than 4194304 bytes/));
  // glob(3): a [ without its ] is a plain character; classes and [!...] as usual
  mkdirSync(path.join(dir, 'conf.d'));
  for (const f of ['[a1.conf', 'a1.conf', 'b.conf', 'c.conf']) writeFileSync(path.join(dir, 'conf.d', f), `upstream ${f} {}\n`);
  const names = (glob: string) => parseNginxText(`include conf.d/${glob};`, 'g.conf', dir).map((d) => d.args[0]);
  assert.deepEqual(names('[a*.conf'), ['[a1.conf']);
  assert.deepEqual(names('[ab]*.conf'), ['a1.conf', 'b.conf']);
  assert.deepEqual(names('[!ab]*.conf'), ['[a1.conf', 'c.conf']);
  assert.deepEqual(names('?.conf'), ['b.conf', 'c.conf']);
  writeFileSync(path.join(dir, 'notdir.conf'), 'include big.conf/*.conf;\n');
  assert.throws(() => parseNginxFile(path.join(dir, 'notdir.conf')), parseError('notdir.conf:1', /include "big.conf\/\*.conf"/));
});

test('durations and sizes in nginx forms', () => {
  assert.equal(nginxDurationMs('60'), 60_000);
  assert.equal(nginxDurationMs('1m30s'), 90_000);
  assert.equal(nginxDurationMs('500ms'), 500);
  assert.equal(nginxDurationMs('2h'), 7_200_000);
  assert.equal(nginxDurationMs('5x'), undefined);
  assert.equal(nginxSize('10m'), '10MiB');
  assert.equal(nginxSize('8k'), '8KiB');
  assert.equal(nginxSize('1024'), '1024B');
  assert.equal(nginxSize('0'), 'off');
  assert.equal(nginxSize('1.5m'), undefined);
});

test('upstream: weights, backup, down, balancing and keepalive', (t) => {
  const r = translate(`
    upstream a { least_conn; server 10.0.0.1:80 weight=3; server 10.0.0.2 backup; server 10.0.0.3:81 down max_fails=2 fail_timeout=5s; keepalive 32; }
    upstream b { ip_hash; server 10.0.0.4:80; }
    upstream c { hash $http_x_user consistent; server 10.0.0.5:80; }
    upstream d { hash $request_uri; server 10.0.0.6:80; }
    server { listen 8080; location /a { proxy_pass http://a; } location /b { proxy_pass http://b; } location /c { proxy_pass http://c; } location /d { proxy_pass http://d; } }`);
  const o = out(r);
  assert.deepEqual(o.upstreams.a.targets, [{ address: '10.0.0.1:80', weight: 3 }, { address: '10.0.0.2:80', backup: true }, { address: '10.0.0.3:81', weight: 0 }]);
  assert.equal(o.upstreams.a.balance, 'least_conn');
  assert.deepEqual(o.upstreams.a.keepalive, { max_idle: 32 });
  assert.deepEqual(o.upstreams.a.health, { passive: { max_fails: 2, fail_timeout: '5s' } });
  assert.deepEqual(o.upstreams.b.balance, { policy: 'hash', key: '$remote_addr' });
  assert.deepEqual(o.upstreams.c.balance, { policy: 'hash', key: 'header:x-user' });
  assert.equal(o.upstreams.d.balance, undefined, '$request_uri is not a Portico hash key');
  assert.ok(r.notes.some((n) => /hash \$request_uri/.test(n.message)), 'the untranslated hash is reported');
  assert.ok(r.yaml.includes('# test.conf:'), 'notes are comments in the YAML');
  loads(t, r);
});

test('listen, server_name and the default server', (t) => {
  const r = translate(`
    server { listen 80 deferred; listen [::]:80 backlog=2048; server_name www.example.test .example.test; location / { proxy_pass http://127.0.0.1:9000; } }
    server { listen 127.0.0.1:8443 ssl http2 backlog=70000; server_name api.example.test; ssl_certificate certs/site.crt; ssl_certificate_key certs/site.key;
             location / { proxy_pass http://127.0.0.1:9001; } }`);
  const o = out(r);
  assert.deepEqual(o.listeners.map((l) => l.address), ['[::]:80', '127.0.0.1:8443'], 'listen 80 and [::]:80 are one dual-stack listener');
  assert.deepEqual(o.listeners[1].tls, { certificates: [{ cert: './certs/site.crt', key: './certs/site.key' }] });
  assert.equal(o.listeners[0].backlog, 2048, 'backlog=N is the listener\'s backlog');
  assert.equal(o.listeners[1].backlog, undefined);
  assert.ok(!r.notes.some((n) => /deferred|backlog=2048/.test(n.message)), 'deferred (Portico defers by default) and a backlog need no note');
  assert.ok(r.notes.some((n) => /backlog=70000.*1 to 65535/.test(n.message)), 'a backlog out of range is reported');
  assert.equal((o.routes[0].match as Record<string, unknown>).host, undefined, 'the first server is the default: any host');
  assert.equal((o.routes[1].match as Record<string, unknown>).host, 'api.example.test');
  assert.ok(r.notes.some((n) => /http2/.test(n.message)));
  loads(t, r);
});

test('locations: prefix, exact, regex, case-insensitive regex, ^~, and prefix replacement by proxy_pass URI', (t) => {
  const r = translate(`
    server { listen 8080;
      location /api/ { proxy_pass http://127.0.0.1:9000/; }
      location = /health { proxy_pass http://127.0.0.1:9000; }
      location ~ \\.php$ { proxy_pass http://127.0.0.1:9001; }
      location ~* \\.(jpg|png)$ { proxy_pass http://127.0.0.1:9002; }
      location ^~ /static/ { proxy_pass http://127.0.0.1:9002; }
      location @fallback { proxy_pass http://127.0.0.1:9003; }
    }`);
  const o = out(r);
  const matches = o.routes.map((x) => x.match);
  assert.deepEqual(matches, [{ path: '/api/' }, { path_exact: '/health' }, { path_regex: '\\.php$' }, { path_regex: '\\.([jJ][pP][gG]|[pP][nN][gG])$' }, { path: '/static/' }, { path_exact: '/api' }, { path_exact: '/static' }]);
  // nginx's "special processing": /api (no slash) is answered 301 -> /api/ for a proxied /api/ location
  assert.deepEqual(o.routes[5].redirect, { to: '/api/$is_args$args', status: 301 });
  assert.deepEqual(o.routes[0].proxy, { upstream: 'api', strip_prefix: true });
  const ci = new RegExp(String((o.routes[3].match as Record<string, unknown>).path_regex));
  assert.ok(ci.test('/A.JPG') && ci.test('/a.jpg') && !ci.test('/a.gif'));
  assert.ok(r.notes.some((n) => /\^~/.test(n.message)));
  assert.ok(r.notes.some((n) => /named locations/.test(n.message)));
  loads(t, r);
});

test('proxy_set_header: Portico defaults dropped, custom headers kept, unknown variables reported; timeouts and body size', (t) => {
  const r = translate(`
    http { client_max_body_size 10m;
    server { listen 8080;
      location /ws { proxy_pass http://127.0.0.1:9000; proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";
        proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Env "prod-$scheme"; proxy_set_header X-Id $request_time;
        proxy_read_timeout 1h; proxy_connect_timeout 3s;
        add_header X-Frame-Options DENY; proxy_hide_header X-Powered-By; }
    } }`);
  const o = out(r);
  assert.deepEqual(o.routes[0].request_headers, { set: { 'X-Env': 'prod-$scheme' } });
  assert.deepEqual(o.routes[0].response_headers, { set: { 'X-Frame-Options': 'DENY' }, remove: ['X-Powered-By'] });
  assert.ok(r.notes.some((n) => /\$request_time/.test(n.message)), "an unknown variable is reported");
  assert.deepEqual(o.upstreams.ws.timeouts, { response_headers: '3600s', idle: '3600s', connect: '3s' });
  assert.deepEqual(o.routes[0].tunnel, { idle_timeout: '3600s' }, 'nginx cut idle WebSockets after proxy_read_timeout');
  assert.deepEqual(o.limits, { body_size: '10MiB' });
  loads(t, r);
});

test('untranslatable directives become comments and notes, never silently dropped', () => {
  const r = translate(`server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; auth_basic "x"; limit_req zone=one; } }`);
  const lines = r.notes.map((n) => n.message).join('\n');
  assert.match(lines, /auth_basic/);
  assert.match(lines, /limit_req/);
  assert.ok(r.notes.every((n) => /^test\.conf:\d+$/.test(n.source)));
  for (const n of r.notes) assert.ok(r.yaml.includes(n.message), `note in the YAML: ${n.message}`);
});

test('the README example imports to a config that loads', (t) => {
  const r = importNginx(parseNginxFile(path.join(FIXTURES, 'nginx', 'readme.conf')), 'readme.conf');
  const o = out(r);
  assert.deepEqual(Object.keys(o.upstreams), ['chat', 'tomcat']);
  assert.deepEqual(o.listeners.map((l) => l.address), ['0.0.0.0:443', '0.0.0.0:8080']);
  assert.deepEqual(o.routes.map((x) => x.match), [{ path: '/wss' }, { path: '/Tomcat' }, { host: 'api.example.test', path: '/' }]);
  loads(t, r);
});

test('servers on different ports: the importer says that routes apply to every listener', () => {
  const r = translate(`server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; } }
    server { listen 9090; server_name b.test; location / { proxy_pass http://127.0.0.1:9001; } }`);
  assert.ok(r.notes.some((n) => /apply to every listener/.test(n.message)), r.notes.map((n) => n.message).join('\n'));
  const same = translate(`server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; } }
    server { listen 8080; server_name b.test; location / { proxy_pass http://127.0.0.1:9001; } }`);
  assert.equal(same.notes.length, 0, same.notes.map((n) => n.message).join('\n'));
});

test('a plain server that only redirects to HTTPS becomes https_redirect on its listener', () => {
  const r = translate(`server { listen 80; return 301 https://$host$request_uri; }
    server { listen 443 ssl; ssl_certificate certs/site.crt; ssl_certificate_key certs/site.key; location / { proxy_pass http://127.0.0.1:9000; } }`);
  const o = out(r);
  assert.deepEqual(o.listeners.map((l) => [l.address, l.https_redirect]), [['0.0.0.0:80', true], ['0.0.0.0:443', undefined]]);
  assert.equal(o.routes.length, 1);
  assert.equal(r.notes.length, 0, r.notes.map((n) => n.message).join('\n'));
});

test("the seed's nginx config (DESIGN.md) imports to the shape of the contract's seed-php.yaml, and loads", (t) => {
  const r = importNginx(parseNginxFile(path.join(FIXTURES, 'nginx', 'seed.conf')), 'seed.conf');
  assert.equal(r.notes.length, 0, r.notes.map((n) => `${n.source}: ${n.message}`).join('\n'));
  const o = out(r);
  assert.deepEqual(o.routes, [
    { match: { path: '/wss' }, proxy: 'wss' },
    { match: { path: '/Tomcat' }, proxy: 'tomcat' },
    { match: { path_regex: '\\.php$' }, fastcgi: { upstream: 'php', root: './html', index: 'index.php' } },
    { match: { path: '/' }, static: { root: './html', index: 'index.html' } },
  ]);
  loads(t, r);
});

test('proxy_pass https:// -> tls on the upstream, with a note that Portico verifies', (t) => {
  const r = translate(`upstream sec { server 10.0.0.9:443; }
    server { listen 8080; location / { proxy_pass https://sec; } location /x { proxy_pass https://10.0.0.8:8443; } }`);
  const o = out(r);
  assert.equal(o.upstreams.sec.tls, true);
  assert.equal(o.upstreams.x.tls, true);
  assert.ok(r.notes.some((n) => /verifies/.test(n.message)));
  loads(t, r);
});

test('stream {}: tcp listeners, their upstreams (a name http {} took gets a suffix), connect timeout, PROXY both ways', (t) => {
  const r = translate(`
    http { upstream db { server 10.0.0.1:80; } server { listen 8080; location / { proxy_pass http://db; } } }
    stream {
      set_real_ip_from 10.1.0.0/16;
      upstream db { least_conn; zone db 64k; server 10.0.0.5:3306; server 10.0.0.6:3306 backup; }
      server { listen 3306; proxy_pass db; proxy_connect_timeout 2s; proxy_timeout 10m; }
      server { listen 127.0.0.1:6379 proxy_protocol; listen 6380 udp; set_real_ip_from 10.2.0.1; proxy_pass 10.0.0.7:6379; proxy_protocol on; proxy_half_close off; }
      server { listen 9443 ssl; proxy_pass db; }
    }`);
  const o = out(r);
  assert.deepEqual(o.upstreams.db, { targets: ['10.0.0.1:80'] }, 'http {} keeps its name');
  assert.deepEqual(o.upstreams.db_tcp, { targets: ['10.0.0.5:3306', { address: '10.0.0.6:3306', backup: true }], balance: 'least_conn', timeouts: { connect: '2s' } });
  assert.deepEqual(o.upstreams['tcp_10.0.0.7_6379'], { targets: ['10.0.0.7:6379'], send_proxy_protocol: 'v1' });
  assert.deepEqual(o.listeners.slice(1), [
    { address: '0.0.0.0:3306', mode: 'tcp', upstream: 'db_tcp' },
    { address: '127.0.0.1:6379', mode: 'tcp', upstream: 'tcp_10.0.0.7_6379', proxy_protocol: { trusted: ['10.1.0.0/16', '10.2.0.1'] }, half_close: false },
  ]);
  const notes = r.notes.map((n) => n.message).join('\n');
  assert.match(notes, /stream upstream "db" is "db_tcp"/);
  assert.match(notes, /proxy_timeout: Portico's L4 relays have no idle timeout/);
  assert.match(notes, /listen 6380 udp.*TCP only/);
  assert.match(notes, /listen 9443 ssl.*relay bytes as they are/);
  assert.doesNotMatch(notes, /zone/, 'zone needs no note');
  loads(t, r);
});

test('stream {}: hash $remote_addr consistent -> hash on $remote_addr; a stream hash on a request variable is left out with its reason', (t) => {
  const r = translate(`
    stream {
      upstream mqtt { hash $remote_addr consistent; server 10.0.0.5:1883; server 10.0.0.6:1883; }
      upstream game { hash $http_x_user; server 10.0.0.7:7777; }
      upstream db { hash $cookie_s consistent; server 10.0.0.8:5432; }
      server { listen 1883; proxy_pass mqtt; }
      server { listen 7777; proxy_pass game; }
      server { listen 5432; proxy_pass db; }
    }`);
  const o = out(r);
  assert.deepEqual(o.upstreams.mqtt.balance, { policy: 'hash', key: '$remote_addr' });
  assert.equal(o.upstreams.game.balance, undefined);
  assert.equal(o.upstreams.db.balance, undefined);
  const skipped = r.notes.filter((n) => /stream connection has no HTTP request/.test(n.message));
  assert.equal(skipped.length, 2, JSON.stringify(r.notes));
  loads(t, r);
});

test('stream {}: ssl_preread and a map of server names -> TLS passthrough by SNI; the map default and regex names noted', (t) => {
  const r = translate(`
    stream {
      map $ssl_preread_server_name $backend {
        hostnames;
        a.example.test a_up;
        .b.example.test b_up;
        *.c.example.test 10.0.0.9:443;
        ~^d\\d+\\.example\\.test$ a_up;
        default a_up;
      }
      map $remote_addr $x { default 1; }
      upstream a_up { server 10.0.0.7:443; }
      upstream b_up { server 10.0.0.8:443; }
      server { listen 443; ssl_preread on; proxy_pass $backend; }
      server { listen 8443; proxy_pass $backend; }
    }`);
  const o = out(r);
  assert.deepEqual(o.listeners, [
    {
      address: '0.0.0.0:443',
      tls: {
        passthrough: [
          { sni: 'a.example.test', upstream: 'a_up' },
          { sni: 'b.example.test', upstream: 'b_up' },
          { sni: '*.b.example.test', upstream: 'b_up' },
          { sni: '*.c.example.test', upstream: 'tcp_10.0.0.9_443' },
        ],
      },
    },
  ]);
  const notes = r.notes.map((n) => n.message).join('\n');
  assert.match(notes, /map default "a_up": a passthrough-only listener refuses names it does not list/);
  assert.match(notes, /regular expression of server names/);
  assert.match(notes, /only a map of \$ssl_preread_server_name/);
  assert.match(notes, /proxy_pass with a variable: only a map .* with `ssl_preread on`/, 'the server without ssl_preread is reported');
  loads(t, r);
});

test('deny all -> 403 whatever the location serves; an allow list closes the route to all (noted), never opens it', (t) => {
  const r = translate(`server { listen 8080; root html;
    location ~ /\\.ht { deny all; }
    location /admin { allow 10.0.0.0/8; deny all; proxy_pass http://127.0.0.1:9000; }
    location /open { deny 10.9.9.9; proxy_pass http://127.0.0.1:9001; }
  }`);
  const o = out(r);
  assert.deepEqual(o.routes[0], { match: { path_regex: '/\\.ht' }, return: { status: 403 } });
  assert.deepEqual(o.routes[1], { match: { path: '/admin' }, return: { status: 403 } });
  assert.deepEqual(o.routes[2], { match: { path: '/open' }, proxy: 'open' });
  const notes = r.notes.map((n) => n.message).join('\n');
  assert.match(notes, /allow 10\.0\.0\.0\/8.*answers 403 to every client/);
  assert.match(notes, /deny 10\.9\.9\.9.*no address lists per route/);
  loads(t, r);
});

test('expires -> Cache-Control: static.cache_control on files, a response header (noted) on a proxy; off, epoch, max, negative', (t) => {
  const r = translate(`server { listen 8080; root html; expires 1h;
    location /img/ { expires 30d; }
    location /none/ { expires off; }
    location /old/ { expires epoch; }
    location /forever/ { expires max; }
    location /neg/ { expires -1; }
    location /app { proxy_pass http://127.0.0.1:9000; }
    location /mod/ { expires modified +24h; }
  }`);
  const o = out(r);
  const cc = (i: number): unknown => (o.routes[i].static as Record<string, unknown> | undefined)?.cache_control;
  assert.equal(cc(0), 'max-age=2592000');
  assert.equal(cc(1), undefined, 'off: nothing');
  assert.equal(cc(2), 'no-cache');
  assert.equal(cc(3), 'max-age=315360000');
  assert.equal(cc(4), 'no-cache');
  assert.deepEqual(o.routes[5].response_headers, { set: { 'Cache-Control': 'max-age=3600' } }, "the server's expires on the proxy");
  assert.equal(cc(6), 'max-age=3600', 'an expires not translated leaves the inherited one');
  const notes = r.notes.map((n) => n.message).join('\n');
  assert.match(notes, /expires: Portico sets this Cache-Control on every answer/);
  assert.match(notes, /expires modified \+24h/);
  loads(t, r);
});

test('CORS: add_header Access-Control-* and the preflight `if` become the route\'s cors policy; a reflected origin is never opened', (t) => {
  const r = translate(`server { listen 8080;
    location /api/ {
      if ($request_method = 'OPTIONS') {
        add_header Access-Control-Allow-Origin "https://app.example.test";
        add_header Access-Control-Allow-Methods "GET, POST, OPTIONS";
        add_header Access-Control-Allow-Headers "Authorization,Content-Type";
        add_header Access-Control-Max-Age 1728000;
        add_header Content-Type "text/plain; charset=utf-8";
        add_header Content-Length 0;
        return 204;
      }
      add_header Access-Control-Allow-Origin "https://app.example.test" always;
      add_header Access-Control-Allow-Credentials true always;
      add_header Access-Control-Expose-Headers "X-Total" always;
      proxy_pass http://127.0.0.1:9000;
    }
    location /open/ { add_header Access-Control-Allow-Origin *; add_header Access-Control-Allow-Credentials true; proxy_pass http://127.0.0.1:9001; }
    location /echo/ { add_header Access-Control-Allow-Origin $http_origin; add_header Access-Control-Allow-Credentials true; proxy_pass http://127.0.0.1:9002; }
    location /other/ { if ($request_method = POST) { return 405; } proxy_pass http://127.0.0.1:9003; }
  }`);
  const o = out(r);
  assert.deepEqual(o.routes[0].cors, { origins: ['https://app.example.test'], credentials: true, methods: ['GET', 'POST', 'OPTIONS'], headers: ['Authorization', 'Content-Type'], expose: ['X-Total'], max_age: '1728000s' });
  assert.equal(o.routes[0].response_headers, undefined, 'no Access-Control-* header written by hand');
  assert.deepEqual(o.routes[1].cors, { origins: ['*'] }, '"*" with credentials: written without them');
  assert.equal(o.routes[2].cors, undefined, 'a reflected origin opens nothing');
  const notes = r.notes.map((n) => n.message).join('\n');
  assert.match(notes, /Credentials with origin "\*": browsers refuse the pair/);
  assert.match(notes, /origin from a variable allows every origin/);
  assert.match(notes, /without an Access-Control-Allow-Origin Portico could take/);
  assert.match(notes, /if \(\$request_method = POST\)/, 'another `if` is still reported');
  loads(t, r);
});

test('gzip (http, server or location level) -> the routes\' compress: nginx\'s types (text/html always), level, min length; off where turned off', (t) => {
  const r = translate(`
    http {
      gzip on; gzip_types text/plain application/json; gzip_comp_level 5; gzip_min_length 256; gzip_vary on; gzip_proxied any;
      server { listen 8080; root html;
        location /a { proxy_pass http://127.0.0.1:9000; }
        location /b { gzip off; proxy_pass http://127.0.0.1:9001; }
        location /c { gzip_types *; proxy_pass http://127.0.0.1:9002; }
        location = /d { return 200 "x"; }
        location /e { gzip_types text/css bad; }
      }
      server { listen 8081; gzip off; location / { proxy_pass http://127.0.0.1:9003; } }
    }`);
  const o = out(r);
  assert.deepEqual(o.routes[0].compress, { brotli: false, types: ['text/html', 'text/plain', 'application/json'], level: 5, min_size: '256B' });
  assert.equal(o.routes[1].compress, undefined, 'gzip off in the location');
  assert.deepEqual(o.routes[2].compress, { brotli: false, level: 5, min_size: '256B' }, 'gzip_types *: Portico\'s own list');
  assert.equal(o.routes[3].compress, undefined, 'a fixed answer is not compressed');
  assert.deepEqual(o.routes[4].compress, { brotli: false, types: ['text/html', 'text/css'], level: 5, min_size: '256B' });
  assert.equal(o.routes[5].compress, undefined, 'gzip off in the server');
  const notes = r.notes.map((n) => n.message).join('\n');
  assert.match(notes, /media types bad/);
  assert.doesNotMatch(notes, /gzip_vary|gzip_proxied|gzip on/);
  loads(t, r);
});

test('index with several files keeps them in order; the usual $http_upgrade map needs no note', (t) => {
  const r = translate(`http {
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    server { listen 8080; root html; index index.php index.html /abs.html;
      location /ws { proxy_pass http://127.0.0.1:9000; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade; }
      location / { }
    } }`);
  const o = out(r);
  assert.deepEqual(o.routes[1].static, { root: './html', index: ['index.php', 'index.html'] });
  assert.deepEqual(r.notes.map((n) => n.message), ['not translated: `index index.php index.html /abs.html;` (an index is a file name (no path, no variable); the others are kept)']);
  loads(t, r);
});

test('limit_req_zone + limit_req -> rate_limit.requests (burst + 1, key); limit_conn -> limits.connections_per_ip (noted)', (t) => {
  const r = translate(`http {
    limit_req_zone $binary_remote_addr zone=one:10m rate=10r/s;
    limit_req_zone $http_x_api_key zone=keyed:10m rate=600r/m;
    limit_req_zone $request_uri zone=uri:10m rate=1r/s;
    limit_conn_zone $binary_remote_addr zone=addr:10m;
    limit_req_status 429;
    server { listen 8080; limit_req zone=one burst=20 nodelay; limit_conn addr 50;
      location /a { proxy_pass http://127.0.0.1:9000; }
      location /b { limit_req zone=keyed burst=5; proxy_pass http://127.0.0.1:9001; }
      location /c { limit_req zone=uri; limit_conn addr 10; proxy_pass http://127.0.0.1:9002; }
    } }`);
  const o = out(r);
  assert.deepEqual(o.routes[0].rate_limit, { requests: { rate: '10/s', burst: 21 } });
  assert.deepEqual(o.routes[1].rate_limit, { requests: { rate: '600/m', burst: 6, key: 'header:x-api-key' } });
  assert.deepEqual(o.routes[2].rate_limit, { requests: { rate: '10/s', burst: 21 } }, 'an untranslated limit_req leaves the server\'s');
  assert.equal(o.limits?.connections_per_ip, 10, 'the lowest limit_conn');
  const notes = r.notes.map((n) => n.message).join('\n');
  assert.match(notes, /limit_req_zone \$request_uri/);
  assert.match(notes, /limit_req without nodelay/);
  assert.match(notes, /limit_conn: Portico counts a client's open connections per worker/);
  assert.ok(!r.yaml.includes('&'), 'no YAML anchors');
  loads(t, r);
});

test('http {} client timeouts -> timeouts.keepalive, head and body', (t) => {
  const r = translate(`http { keepalive_timeout 65; client_header_timeout 10s; client_body_timeout 2m;
    server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; } } }`);
  assert.deepEqual(out(r).timeouts, { keepalive: '65s', head: '10s', body: '120s' });
  assert.equal(r.notes.length, 0, r.notes.map((n) => n.message).join('\n'));
  loads(t, r);
  const off = translate(`http { keepalive_timeout 0; server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; } } }`);
  assert.equal(out(off).timeouts, undefined);
  assert.match(off.notes[0].message, /keepalive_timeout 0/);
});

test('try_files $uri $uri/ URI -> static.fallback (the PHP front controller); a PHP index never stays a static index (its source would be sent)', (t) => {
  const r = translate(`server { listen 8080; root html; index index.php index.html;
    location / { try_files $uri $uri/ /index.php?$query_string; }
    location /spa/ { try_files $uri /index.html; }
    location /plain/ { try_files $uri $uri/ =404; }
    location /named/ { try_files $uri @app; }
    location ~ \\.php$ { fastcgi_pass 127.0.0.1:9000; fastcgi_index index.php; }
  }`);
  const o = out(r);
  assert.deepEqual(o.routes[0].static, { root: './html', index: 'index.html', fallback: '/index.php?$query_string' });
  assert.deepEqual(o.routes[1].static, { root: './html', index: 'index.html', fallback: '/index.html' });
  assert.deepEqual(o.routes[2].static, { root: './html', index: 'index.html' });
  assert.deepEqual(o.routes[3].static, { root: './html', index: 'index.html' });
  const notes = r.notes.map((n) => n.message).join('\n');
  assert.match(notes, /index index\.php: not a static route's index \(it would send the script's source\); a folder without another index reaches it through the fallback/);
  assert.match(notes, /try_files without \$uri\/: Portico's static route also serves a folder's index/);
  assert.match(notes, /try_files \$uri @app/);
  loads(t, r);
});

test('what `portico check` refuses is left out with a note naming the directive and the reason: a listener whole (and a server left without one loses its routes), a location refused in its match whole, one refused in its action answering 503, a target alone', (t) => {
  const r = translate(`http {
    upstream tomcat { server 127.0.0.1:65536; server 127.0.0.1:8080; }
    upstream gone { server 127.0.0.1:65536; }
    server {
      listen 8080;
      listen 8443 ssl;
      location relative { proxy_pass http://127.0.0.1:9001; }
      location /t { proxy_pass http://tomcat; proxy_hide_header "Bad Name"; proxy_hide_header X-Powered-By; }
      location /g { proxy_pass http://gone; }
      location / { proxy_pass http://127.0.0.1:9000; proxy_set_header Authorization ""; proxy_hide_header "Bad Name"; }
    }
    server { listen 9443 ssl; server_name tls-only.example; location /tls-only/ { proxy_pass http://127.0.0.1:9003; } }
  }`);
  assert.deepEqual(r.problems, []);
  const o = out(r);
  // 8443 ssl has no certificate: the listener goes whole, never a plain one on 8443
  assert.deepEqual(o.listeners, [{ address: '0.0.0.0:8080' }]);
  assert.deepEqual(o.upstreams.tomcat.targets, ['127.0.0.1:8080']);
  assert.equal(o.upstreams.gone, undefined);
  // the relative location goes whole (a route without its path would match everything); /g, whose upstream went,
  // answers 503 rather than fall through to / (another backend); the TLS-only server's location goes with its listener
  assert.deepEqual(
    o.routes.map((x) => x.match),
    [{ path: '/t' }, { path: '/g' }, { path: '/' }],
  );
  assert.deepEqual(o.routes[1], { match: { path: '/g' }, return: { status: 503 } });
  assert.deepEqual(o.routes[0].response_headers, { remove: ['X-Powered-By'] });
  // nginx passes no header set to "" (a client's Authorization kept from the backend); a header list left empty goes
  assert.deepEqual(o.routes[2].request_headers, { remove: ['Authorization'] });
  assert.equal(o.routes[2].response_headers, undefined);
  const notes = r.notes.map((n) => `${n.source}: ${n.message}`).join('\n');
  assert.match(notes, /test\.conf:6: not translated: `listen 8443 ssl;` \(`portico check` refuses it: tls\.certificates: a TLS listener needs at least one certificate/);
  assert.match(notes, /test\.conf:2: upstreams\.tomcat\.targets\[0\] left out \(`portico check` refuses it: invalid target address "127\.0\.0\.1:65536"/);
  assert.match(notes, /test\.conf:7: not translated: `location relative \{ \.\.\. \}` \(`portico check` refuses it: match\.path: must start with "\/"\)/);
  assert.match(notes, /test\.conf:8: response_headers\.remove\[0\] left out \(`portico check` refuses it: header name must be an RFC 9110 token\)/);
  assert.match(notes, /test\.conf:3: not translated: `upstream gone \{ \.\.\. \}` \(`portico check` refuses it: targets: an upstream needs at least one target\)/);
  assert.match(notes, /test\.conf:9: not translated: `location \/g \{ \.\.\. \}` \(`portico check` refuses it: proxy: unknown upstream "gone" .*; in its place the route answers 503, so that its requests reach no other route\)/);
  assert.match(notes, /test\.conf:12: no listener of this server is left: its locations are left out/);
  loads(t, r);
});

test('a server none of whose listens can be translated brings no routes; a config with nothing to listen on is refused, and the command writes nothing', (t) => {
  const r = translate(`http {
    server { listen unix:/run/a.sock; location /private/ { proxy_pass http://127.0.0.1:9002; } }
    server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; } }
  }`);
  assert.deepEqual(out(r).routes.map((x) => x.match), [{ path: '/' }]);
  assert.match(r.notes.map((n) => n.message).join('\n'), /no listen of this server could be translated: its locations are left out/);
  loads(t, r);

  const none = translate('http { server { listen unix:/run/a.sock; location / { proxy_pass http://127.0.0.1:9000; } } }');
  assert.equal(none.counts.listeners, 0);
  assert.deepEqual(none.problems, ['listeners: at least one listener is needed']);
  const dir = folder(t);
  writeFileSync(path.join(dir, 'nginx.conf'), 'events {}\nhttp { server { listen unix:/run/a.sock; location / { proxy_pass http://127.0.0.1:9000; } } }\n');
  const cli = spawnSync(process.execPath, [CLI, 'import-nginx', path.join(dir, 'nginx.conf'), '-o', path.join(dir, 'portico.yaml')], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(cli.status, 1, cli.stderr);
  assert.match(cli.stderr, /portico: nothing written: what could be translated does not make a config \(listeners: at least one listener is needed\)/);
  assert.ok(!existsSync(path.join(dir, 'portico.yaml')), 'a YAML was written');
});

test('ssl_certificate in http {} serves every server without its own; listen 127.0.0.1:P beside listen P is the wildcard listener (noted), [::1] beside 0.0.0.0 stays its own', (t) => {
  const r = translate(`http {
    ssl_certificate certs/site.crt; ssl_certificate_key certs/site.key;
    server { listen 443 ssl; server_name a.example; location / { proxy_pass http://127.0.0.1:9000; } }
    server { listen 127.0.0.1:443 ssl; server_name b.example; location / { proxy_pass http://127.0.0.1:9001; } }
    server { listen 127.0.0.1:8080; location /status { return 200 ok; } }
    server { listen 8080; listen [::1]:8080; server_name c.example; location / { proxy_pass http://127.0.0.1:9002; } }
  }`);
  assert.deepEqual(r.problems, []);
  const o = out(r);
  assert.deepEqual(o.listeners, [
    { address: '0.0.0.0:443', tls: { certificates: [{ cert: './certs/site.crt', key: './certs/site.key' }] } },
    { address: '0.0.0.0:8080' },
    { address: '[::1]:8080' },
  ]);
  const notes = r.notes.map((n) => `${n.source}: ${n.message}`).join('\n');
  assert.match(notes, /test\.conf:4: listen 127\.0\.0\.1:443 and 0\.0\.0\.0:443 are one listener here, 0\.0\.0\.0:443/);
  assert.match(notes, /test\.conf:6: listen 0\.0\.0\.0:8080 and 127\.0\.0\.1:8080 are one listener here, 0\.0\.0\.0:8080/);
  assert.doesNotMatch(notes, /ssl_certificate|refuses it/);
  assert.equal(o.routes.length, 4);
  loads(t, r);
});

test('return 204 TEXT is a 204 without a body (nginx sends none), not a route the checker refuses', (t) => {
  const r = translate('http { server { listen 8080; location /e { return 204 "nothing"; } location /m { return 304 x; } } }');
  assert.deepEqual(out(r).routes.map((x) => x.return), [{ status: 204 }, { status: 304 }]);
  assert.equal(r.notes.length, 0, r.notes.map((n) => n.message).join('\n'));
  loads(t, r);
});

test('add_header NAME "" adds nothing (as nginx); ip_hash in stream {}, which nginx refuses, is read as hash $remote_addr and noted', (t) => {
  const r = translate(`http { server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; add_header X-Empty ""; add_header X-Real v; } } }
    stream { upstream db { ip_hash; server 127.0.0.1:5432; } server { listen 15432; proxy_pass db; } }`);
  const o = out(r);
  assert.deepEqual(o.routes[0].response_headers, { set: { 'X-Real': 'v' } });
  assert.deepEqual(o.upstreams.db.balance, { policy: 'hash', key: '$remote_addr' });
  assert.match(r.notes.map((n) => n.message).join('\n'), /ip_hash is not a stream \{\} directive \(nginx refuses it there\): read as hash \$remote_addr/);
  loads(t, r);
});
