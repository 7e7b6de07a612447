// Config loading: the seed loads, every kind of mistake is reported with its YAML path and line, all of them at
// once, values are normalised, paths resolved, the result frozen; and `portico check` behaves as a command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { formatErrors, formatPath, loadConfig, resolveWorkers } from '../../src/config/load.js';
import type { ConfigError, LoadResult } from '../../src/config/load.js';
import { parseDuration, parseSize } from '../../src/config/schema.js';
import type { Config } from '../../src/config/schema.js';
import { CLI, FIXTURES, ROOT, SHARED_CONTRACT } from '../helpers/paths.js';

const SEED_DIR = path.join(FIXTURES, 'seed');

/** A fresh folder holding `files` (name -> text), removed after the test. */
function folder(t: TestContext, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  return dir;
}

function load(t: TestContext, yaml: string): LoadResult {
  return loadConfig(path.join(folder(t, { 'portico.yaml': yaml }), 'portico.yaml'));
}

function loaded(r: LoadResult): Config {
  if (!r.ok) assert.fail(`expected the config to load, got:\n${formatErrors('config', r.errors)}`);
  return r.config;
}

function errorsOf(r: LoadResult): ConfigError[] {
  if (r.ok) assert.fail('expected the config to be refused');
  return r.errors;
}

/** 1-based line of the first line of `yaml` containing `marker`. */
function lineOf(yaml: string, marker: string): number {
  const i = yaml.split('\n').findIndex((l) => l.includes(marker));
  assert.ok(i >= 0, `marker ${JSON.stringify(marker)} is not in the YAML`);
  return i + 1;
}

/** Asserts exactly one error at `path`, on the line holding `marker`, whose message matches `message`. */
function expectError(errors: ConfigError[], yaml: string, path: string, marker: string, message: RegExp): void {
  const at = errors.filter((e) => e.path === path);
  assert.equal(at.length, 1, `one error at ${path}, got:\n${formatErrors('f', errors)}`);
  assert.equal(at[0].line, lineOf(yaml, marker), `line of ${path}`);
  assert.ok(typeof at[0].column === 'number' && at[0].column >= 1, 'column is set');
  assert.match(at[0].message, message);
}

const SEED_CERT = `cert: ${path.join(SEED_DIR, 'certs', 'site.crt')}`;
const SEED_KEY = `key: ${path.join(SEED_DIR, 'certs', 'site.key')}`;

/** A small valid config; tests break one line of it at a time. */
const BASE = `workers: 2
listeners:
  - address: 127.0.0.1:8443
    tls:
      certificates:
        - ${SEED_CERT}
          ${SEED_KEY}
  - address: 127.0.0.1:8080
upstreams:
  app:
    targets: [127.0.0.1:9001]
    timeouts: { connect: 2s }
routes:
  - match: { path: /api }
    proxy: app
  - match: { path: / }
    proxy: app
limits:
  header_size: 16KiB
`;

function edit(yaml: string, from: string, to: string): string {
  assert.ok(yaml.includes(from), `${JSON.stringify(from)} is in the YAML`);
  return yaml.replace(from, () => to);
}

function assertSeed(config: Config, certDir: string): void {
  assert.equal(config.workers, 2);
  assert.deepEqual(
    config.listeners.map((l) => [l.address.host, l.address.port, l.tls !== undefined]),
    [['127.0.0.1', 8443, true], ['127.0.0.1', 8080, false]],
  );
  const cert = config.listeners[0].tls?.certificates[0];
  assert.equal(cert?.cert, path.join(certDir, 'site.crt'));
  assert.equal(cert?.key, path.join(certDir, 'site.key'));
  assert.equal(config.upstreams.chat.balance, 'round_robin');
  assert.deepEqual(config.upstreams.chat.targets.map((t) => [t.address, t.weight]), [['127.0.0.1:8888', 1], ['127.0.0.1:8889', 1]]);
  assert.equal(config.upstreams.tomcat.balance, 'least_conn');
  assert.deepEqual(config.upstreams.tomcat.targets.map((t) => [t.host, t.port, t.weight]), [['127.0.0.1', 8081, 3], ['127.0.0.1', 8082, 1]]);
  assert.deepEqual(config.routes.map((r) => r.proxy), [
    { upstream: 'chat', strip_prefix: false },
    { upstream: 'tomcat', strip_prefix: false },
    { upstream: 'tomcat', strip_prefix: false },
  ]);
  assert.deepEqual(config.routes[1].request_headers.set, { 'X-Real-IP': '$remote_addr' });
  assert.deepEqual(config.routes[2].match, { host: ['api.example.test'], path: '/' });
  assert.equal(config.log.level, 'info');
  assert.equal(config.log.access, true);
}

test('the seed kept in fixtures loads with its meaning', () => {
  const r = loadConfig(path.join(SEED_DIR, 'seed.yaml'));
  assertSeed(loaded(r), path.join(SEED_DIR, 'certs'));
  assert.equal(r.ok && r.file, path.join(SEED_DIR, 'seed.yaml'));
});

test('the seed in ../shared/contract loads as it is', (t) => {
  const file = path.join(SHARED_CONTRACT, 'seed.yaml');
  if (!existsSync(file)) {
    t.skip(`${file} is not present (outside the project checkout); the fixture copy is tested instead`);
    return;
  }
  assertSeed(loaded(loadConfig(file)), path.join(SHARED_CONTRACT, 'certs'));
});

test('the base config of these tests is valid', (t) => {
  loaded(load(t, BASE));
});

test('unknown key -> its path, its line, and the likely intended key', (t) => {
  const yaml = edit(BASE, '  - address: 127.0.0.1:8080', '  - address: 127.0.0.1:8080\n    reuse_port: true');
  expectError(errorsOf(load(t, yaml)), yaml, 'listeners[1].reuse_port', 'reuse_port', /unknown key "reuse_port"/);

  const typo = edit(BASE, 'upstreams:', 'upstream:');
  const errors = errorsOf(load(t, typo));
  expectError(errors, typo, 'upstream', 'upstream:', /unknown key "upstream" \(did you mean "upstreams"\?\)/);
});

test('wrong type -> path, line, expected and received', (t) => {
  const yaml = edit(BASE, 'workers: 2', 'workers: many');
  expectError(errorsOf(load(t, yaml)), yaml, 'workers', 'workers: many', /expected "auto" or a number, got "many"/);

  const list = edit(BASE, 'targets: [127.0.0.1:9001]', 'targets: 127.0.0.1:9001');
  expectError(errorsOf(load(t, list)), list, 'upstreams.app.targets', 'targets:', /expected a list, got "127.0.0.1:9001"/);
});

test('a route without an action -> one error naming the actions', (t) => {
  const yaml = edit(BASE, '  - match: { path: /api }\n    proxy: app', '  - match: { path: /api }\n    name: api');
  const errors = errorsOf(load(t, yaml));
  assert.equal(errors.length, 1, formatErrors('f', errors));
  expectError(errors, yaml, 'routes[0]', 'match: { path: /api }', /a route needs one of: proxy/);
});

test('upstream tls: missing CA file, a cert without key, a bad sni and tls on an L4 upstream are refused with their paths', (t) => {
  const missing = edit(BASE, '    timeouts: { connect: 2s }', '    timeouts: { connect: 2s }\n    tls: { ca: ./nope.pem }');
  expectError(errorsOf(load(t, missing)), missing, 'upstreams.app.tls.ca', 'ca: ./nope', /nope\.pem does not exist/);
  const half = edit(BASE, '    timeouts: { connect: 2s }', `    timeouts: { connect: 2s }\n    tls: { ${SEED_CERT} }`);
  expectError(errorsOf(load(t, half)), half, 'upstreams.app.tls.key', 'tls: { cert', /needs both `cert` and `key`/);
  const sni = edit(BASE, '    timeouts: { connect: 2s }', '    timeouts: { connect: 2s }\n    tls: { sni: "bad name" }');
  expectError(errorsOf(load(t, sni)), sni, 'upstreams.app.tls.sni', 'sni: "bad', /sni must be a DNS name/);
  const l4 = edit(BASE, 'routes:', '  raw:\n    targets: [127.0.0.1:9002]\n    tls: true\nroutes:').replace('  - address: 127.0.0.1:8080', '  - address: 127.0.0.1:8080\n  - address: 127.0.0.1:7000\n    mode: tcp\n    upstream: raw');
  expectError(errorsOf(load(t, l4)), l4, 'listeners[2].upstream', 'upstream: raw', /has tls: L4 listeners/);
  const ok = edit(BASE, '    timeouts: { connect: 2s }', `    timeouts: { connect: 2s }\n    tls: { sni: app.internal, ca: ${path.join(SEED_DIR, 'certs', 'site.crt')} }`);
  const cfg = loaded(load(t, ok));
  assert.equal(cfg.upstreams.app.tls?.verify, true, 'verification is on by default');
  assert.equal(loaded(load(t, edit(BASE, '    timeouts: { connect: 2s }', '    timeouts: { connect: 2s }\n    tls: false'))).upstreams.app.tls, undefined);
});

test('acme: the managed certificate is served beside the others; bad domains, a challenge no listener can answer, a request_timeout over 10m and a config without a plain listener are refused', (t) => {
  const withAcme = edit(BASE, `        - ${SEED_CERT}\n          ${SEED_KEY}`, `        - ${SEED_CERT}\n          ${SEED_KEY}\n      acme: { domains: [www.example.test, example.test], email: ops@example.test }`);
  const cfg = loaded(load(t, withAcme));
  const tls = cfg.listeners[0].tls!;
  assert.equal(tls.acme?.directory, 'https://acme-v02.api.letsencrypt.org/directory');
  assert.equal(tls.acme?.renew_before, 30 * 86_400_000);
  const managed = tls.certificates.at(-1)!;
  assert.match(managed.cert, /[/]\.state[/]acme[/]www\.example\.test[/]cert\.pem$/);
  assert.equal(managed.self_signed, true, 'a placeholder is made until the CA issued one');
  assert.deepEqual(managed.hosts, ['www.example.test', 'example.test']);

  const wildcard = withAcme.replace('domains: [www.example.test, example.test]', 'domains: ["*.example.test"]');
  expectError(errorsOf(load(t, wildcard)), wildcard, 'listeners[0].tls.acme.domains[0]', 'acme:', /no wildcard/);
  assert.deepEqual(tls.acme?.challenge, ['http-01'], 'http-01 by default, as a list');
  assert.equal(tls.acme?.tls_alpn_port, 443);
  // tls-alpn-01 needs a TLS listener on the port the CA connects to (443, or tls_alpn_port)
  const alpn = withAcme.replace('email: ops@example.test', 'challenge: tls-alpn-01');
  expectError(errorsOf(load(t, alpn)), alpn, 'listeners[0].tls.acme.challenge', 'acme:', /TLS listener on port 443 .* this config has none/);
  const alpnHere = withAcme.replace('email: ops@example.test', 'challenge: [tls-alpn-01, http-01], tls_alpn_port: 8443');
  assert.deepEqual(loaded(load(t, alpnHere)).listeners[0].tls!.acme?.challenge, ['tls-alpn-01', 'http-01']);
  // tls-alpn-01 alone needs no plain listener
  const alpnOnly = withAcme.replace('email: ops@example.test', 'challenge: tls-alpn-01, tls_alpn_port: 8443').replace('  - address: 127.0.0.1:8080\n', '');
  assert.deepEqual(loaded(load(t, alpnOnly)).listeners[0].tls!.acme?.challenge, ['tls-alpn-01']);
  const passedThrough = alpnOnly.replace('      acme:', '      passthrough: [{ sni: "*.example.test", upstream: app }]\n      acme:');
  expectError(errorsOf(load(t, passedThrough)), passedThrough, 'listeners[0].tls.acme.challenge', 'acme:', /passes www\.example\.test through/);
  const dns01 = withAcme.replace('email: ops@example.test', 'challenge: dns-01');
  expectError(errorsOf(load(t, dns01)), dns01, 'listeners[0].tls.acme.challenge', 'acme:', /"http-01" or "tls-alpn-01"/);
  const badPort = withAcme.replace('email: ops@example.test', 'challenge: tls-alpn-01, tls_alpn_port: 70000');
  expectError(errorsOf(load(t, badPort)), badPort, 'listeners[0].tls.acme.tls_alpn_port', 'acme:', /65535/);
  const noPlain = withAcme.replace('  - address: 127.0.0.1:8080\n', '');
  expectError(errorsOf(load(t, noPlain)), noPlain, 'listeners[0].tls.acme.challenge', 'acme:', /plain listener/);
  const missingCa = withAcme.replace('email: ops@example.test', 'directory_ca: ./nope.pem');
  expectError(errorsOf(load(t, missingCa)), missingCa, 'listeners[0].tls.acme.directory_ca', 'acme:', /does not exist/);
  assert.equal(tls.acme?.request_timeout, 30_000);
  const longWait = withAcme.replace('email: ops@example.test', 'request_timeout: 1h');
  expectError(errorsOf(load(t, longWait)), longWait, 'listeners[0].tls.acme.request_timeout', 'acme:', /at most 10m/);
});

test('bad duration "30x" -> path and line of the value', (t) => {
  const yaml = edit(BASE, '{ connect: 2s }', '{ connect: 30x }');
  expectError(errorsOf(load(t, yaml)), yaml, 'upstreams.app.timeouts.connect', 'connect: 30x', /invalid duration "30x"/);

  const tooLong = edit(BASE, '{ connect: 2s }', '{ connect: 30d }');
  expectError(errorsOf(load(t, tooLong)), tooLong, 'upstreams.app.timeouts.connect', 'connect: 30d', /at most "24d"/);
});

test('half_close: tcp listeners and TLS passthrough take it; an http listener is refused at the key, a non-boolean too', (t) => {
  const ok = `listeners:
  - { address: 127.0.0.1:0, mode: tcp, upstream: db, half_close: false }
  - address: 127.0.0.1:0
    half_close: false
    tls: { passthrough: [{ sni: db.example.com, upstream: db }] }
upstreams:
  db: { targets: [127.0.0.1:5432] }
`;
  const c = loaded(load(t, ok));
  assert.deepEqual(c.listeners.map((l) => l.half_close), [false, false]);

  const http = `listeners:
  - address: 127.0.0.1:0
    half_close: false
upstreams:
  app: { targets: [127.0.0.1:8080] }
routes:
  - proxy: app
`;
  expectError(errorsOf(load(t, http)), http, 'listeners[0].half_close', 'half_close: false', /tcp listeners and TLS passthrough only/);
  const word = edit(ok, 'half_close: false }', 'half_close: maybe }');
  expectError(errorsOf(load(t, word)), word, 'listeners[0].half_close', 'half_close: maybe', /boolean/);
});

test('defer_accept: listeners whose clients speak first take it (default: unset, on where it applies); a tcp listener without proxy_protocol is refused at the key, a non-boolean too', (t) => {
  const ok = `listeners:
  - { address: 127.0.0.1:0, defer_accept: false }
  - { address: 127.0.0.1:0, mode: tcp, upstream: db, defer_accept: true, proxy_protocol: { trusted: [127.0.0.1] } }
  - { address: 127.0.0.1:0, mode: tcp, upstream: db, defer_accept: false }
  - { address: 127.0.0.1:0 }
upstreams:
  db: { targets: [127.0.0.1:5432] }
`;
  const c = loaded(load(t, ok));
  assert.deepEqual(c.listeners.map((l) => l.defer_accept), [false, true, false, undefined]);

  const tcp = `listeners:
  - { address: 127.0.0.1:0, mode: tcp, upstream: db, defer_accept: true }
upstreams:
  db: { targets: [127.0.0.1:5432] }
`;
  expectError(errorsOf(load(t, tcp)), tcp, 'listeners[0].defer_accept', 'defer_accept: true', /server that speaks first/);
  const word = edit(ok, 'defer_accept: false }', 'defer_accept: later }');
  expectError(errorsOf(load(t, word)), word, 'listeners[0].defer_accept', 'defer_accept: later', /boolean/);
});

test('bad size -> path and line', (t) => {
  const yaml = edit(BASE, 'header_size: 16KiB', 'header_size: 16 furlongs');
  expectError(errorsOf(load(t, yaml)), yaml, 'limits.header_size', 'header_size', /invalid size "16 furlongs"/);

  const zero = edit(BASE, 'header_size: 16KiB', 'header_size: 0');
  expectError(errorsOf(load(t, zero)), zero, 'limits.header_size', 'header_size', /size 0 has no unit/);
  const zeroBytes = edit(BASE, 'header_size: 16KiB', 'header_size: 0B');
  expectError(errorsOf(load(t, zeroBytes)), zeroBytes, 'limits.header_size', 'header_size', /invalid size "0B"/);
});

test('admin.hosts takes host names only -> path and line of the bad entry', (t) => {
  const yaml = `${BASE}admin: { address: 127.0.0.1:9901, hosts: [ok.internal, "evil.example:80"] }\n`;
  expectError(errorsOf(load(t, yaml)), yaml, 'admin.hosts[1]', 'evil.example:80', /a host name \(letters, digits, dots, dashes\), without port/);
  assert.deepEqual(loaded(load(t, `${BASE}admin: { address: 127.0.0.1:9901, hosts: [ok.internal] }\n`)).admin?.hosts, ['ok.internal']);
});

test('balance.secret of a cookie upstream: at least 16 characters -> path and line', (t) => {
  const yaml = edit(BASE, 'timeouts: { connect: 2s }', 'timeouts: { connect: 2s }\n    balance: { policy: cookie, secret: short }');
  expectError(errorsOf(load(t, yaml)), yaml, 'upstreams.app.balance.secret', 'secret: short', /balance.secret must be at least 16 characters/);
  const ok = edit(BASE, 'timeouts: { connect: 2s }', 'timeouts: { connect: 2s }\n    balance: { policy: cookie, secret: 0123456789abcdef }');
  assert.deepEqual(loaded(load(t, ok)).upstreams.app.balance, { policy: 'cookie', name: 'portico_sticky', fallback: 'round_robin', secret: '0123456789abcdef' });
});

test('route to an unknown upstream -> routes[i].proxy with the defined names', (t) => {
  const yaml = edit(BASE, '  - match: { path: / }\n    proxy: app', '  - match: { path: / }\n    proxy: toString');
  expectError(errorsOf(load(t, yaml)), yaml, 'routes[1].proxy', 'proxy: toString', /unknown upstream "toString" \(defined: app\)/);
});

test('two listeners on one address (or a wildcard over it) -> the later listener', (t) => {
  const yaml = edit(BASE, '  - address: 127.0.0.1:8080', '  - address: 127.0.0.1:8443 # again');
  expectError(errorsOf(load(t, yaml)), yaml, 'listeners[1].address', '# again', /collides with listeners\[0\]/);

  const wildcard = edit(BASE, '  - address: 127.0.0.1:8080', '  - address: ":8443" # all interfaces');
  expectError(errorsOf(load(t, wildcard)), wildcard, 'listeners[1].address', '# all interfaces', /collides with listeners\[0\]/);

  const admin = `${BASE}admin: { address: 127.0.0.1:8080 }\n`;
  expectError(errorsOf(load(t, admin)), admin, 'admin.address', 'admin:', /collides with listeners\[1\]/);

  loaded(load(t, edit(BASE, '  - address: 127.0.0.1:8080', '  - address: "[::1]:8443"')));
});

test('an upstream whose targets all weigh 0 is refused; a single weight-0 target is allowed', (t) => {
  const none = edit(BASE, 'targets: [127.0.0.1:9001]', 'targets: [{ address: 127.0.0.1:9001, weight: 0 }]');
  expectError(errorsOf(load(t, none)), none, 'upstreams.app.targets', 'targets:', /at least one target needs a weight above 0/);
  const some = edit(BASE, 'targets: [127.0.0.1:9001]', 'targets: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 0 }]');
  assert.deepEqual(loaded(load(t, some)).upstreams.app.targets.map((x) => x.weight), [1, 0]);
});

test('discovered targets: resolve: true and srv entries go to `discover` (in entry order), fixed ones stay in `targets`; resolver defaults', (t) => {
  const yaml = edit(
    BASE,
    'targets: [127.0.0.1:9001]',
    'targets: [127.0.0.1:9001, { address: api.svc.cluster.local:8080, resolve: true, weight: 3 }, { srv: _http._tcp.api.service.consul }, { address: localhost:9002, resolve: false }]',
  );
  const config = loaded(load(t, yaml));
  assert.deepEqual(config.upstreams.app.targets.map((x) => x.address), ['127.0.0.1:9001', 'localhost:9002']);
  assert.deepEqual(config.upstreams.app.discover, [
    { kind: 'dns', index: 1, name: 'api.svc.cluster.local', address: 'api.svc.cluster.local:8080', port: 8080, weight: 3, backup: false },
    { kind: 'srv', index: 2, name: '_http._tcp.api.service.consul' },
  ]);
  assert.deepEqual(config.resolver, { timeout: 2000, min_ttl: 1000, max_ttl: 3_600_000, backoff: { min: 1000, max: 30_000 }, family: 'any' });
  const onlySrv = edit(BASE, 'targets: [127.0.0.1:9001]', 'targets: [{ srv: _x._tcp.example.com }]');
  assert.deepEqual(loaded(load(t, onlySrv)).upstreams.app.targets, [], 'an upstream may have discovered targets only');
  const servers = edit(BASE, 'limits:', 'resolver:\n  servers: [127.0.0.1:5353, 10.0.0.53, "[::1]:53", "::1"]\n  family: ipv4\nlimits:');
  assert.deepEqual(loaded(load(t, servers)).resolver.servers, ['127.0.0.1:5353', '10.0.0.53', '[::1]:53', '::1']);
});

test('bad names and resolver options -> path, line and why (portico check prints these)', (t) => {
  const cases: Array<[from: string, to: string, path: string, marker: string, message: RegExp]> = [
    ['targets: [127.0.0.1:9001]', 'targets: [{ srv: "bad name" }]', 'upstreams.app.targets[0].srv', 'bad name', /invalid DNS name "bad name": label "bad name"/],
    ['targets: [127.0.0.1:9001]', 'targets: [{ srv: "a..b" }]', 'upstreams.app.targets[0].srv', 'a..b', /label ""/],
    ['targets: [127.0.0.1:9001]', `targets: [{ srv: "${'x'.repeat(64)}.test" }]`, 'upstreams.app.targets[0].srv', 'xxxx', /1 to 63 characters/],
    ['targets: [127.0.0.1:9001]', 'targets: [{ srv: "-bad.test" }]', 'upstreams.app.targets[0].srv', '-bad', /no "-" at either end/],
    ['targets: [127.0.0.1:9001]', 'targets: [{ address: "10.0.0.1:80", resolve: true }]', 'upstreams.app.targets[0].address', '10.0.0.1', /is an IP address, not a DNS name/],
    ['targets: [127.0.0.1:9001]', 'targets: [{ address: "api.1:80", resolve: true }]', 'upstreams.app.targets[0].address', 'api.1', /last label is all digits/],
    ['targets: [127.0.0.1:9001]', 'targets: [{ srv: _x._tcp.a.test, weight: 2 }]', 'upstreams.app.targets[0].weight', '_x._tcp', /an srv target takes no weight/],
    ['targets: [127.0.0.1:9001]', 'targets: [{ srv: _x._tcp.a.test, address: "a.test:80" }]', 'upstreams.app.targets[0].address', '_x._tcp', /an srv target takes no address/],
    ['targets: [127.0.0.1:9001]', 'targets: [{ weight: 2 }]', 'upstreams.app.targets[0].address', 'weight: 2', /needs `address` \(host:port\) or `srv`/],
    ['targets: [127.0.0.1:9001]', 'targets: [{ address: "api.test:80", resolve: "yes" }]', 'upstreams.app.targets[0].resolve', 'resolve', /expected a boolean/],
    ['limits:', 'resolver:\n  servers: [dns.google]\nlimits:', 'resolver.servers[0]', 'dns.google', /invalid resolver address "dns.google"/],
    ['limits:', 'resolver:\n  servers: ["127.0.0.1:0"]\nlimits:', 'resolver.servers[0]', '127.0.0.1:0', /invalid resolver address/],
    ['limits:', 'resolver:\n  servers: []\nlimits:', 'resolver.servers', 'servers', /at least one name server/],
    ['limits:', 'resolver:\n  min_ttl: 2h\nlimits:', 'resolver.min_ttl', 'min_ttl', /min_ttl must not be above max_ttl/],
    ['limits:', 'resolver:\n  backoff: { min: 1m, max: 10s }\nlimits:', 'resolver.backoff.min', 'backoff', /backoff.min must not be above backoff.max/],
    ['limits:', 'resolver:\n  timeout: off\nlimits:', 'resolver.timeout', 'timeout: off', /must be above 0/],
    ['limits:', 'resolver:\n  family: v4\nlimits:', 'resolver.family', 'family', /expected "any" or "ipv4" or "ipv6"/],
  ];
  for (const [from, to, at, marker, message] of cases) {
    const yaml = edit(BASE, from, to);
    expectError(errorsOf(load(t, yaml)), yaml, at, marker, message);
  }
});

test('YAML syntax error -> its line, nothing else guessed', (t) => {
  const tab = edit(BASE, '  - address: 127.0.0.1:8080', '\t- address: 127.0.0.1:8080');
  const errors = errorsOf(load(t, tab));
  assert.equal(errors.length, 1, formatErrors('f', errors));
  assert.deepEqual([errors[0].path, errors[0].line, errors[0].column], ['', lineOf(tab, '\t- address'), 1]);
  assert.match(errors[0].message, /tab/i);

  const unclosed = edit(BASE, 'targets: [127.0.0.1:9001]', 'targets: [127.0.0.1:9001\n    balance: "least_conn');
  const more = errorsOf(load(t, unclosed));
  assert.ok(more.length >= 1);
  for (const e of more) {
    assert.equal(e.path, '');
    assert.ok(typeof e.line === 'number' && e.line > lineOf(unclosed, 'targets: [') && e.line <= unclosed.split('\n').length, formatErrors('f', more));
  }
});

test('an alias bomb or an oversized file is refused without expanding it', (t) => {
  const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 9; i++) lines.push(`${'abcdefghi'[i]}: &${'abcdefghi'[i]} [${Array(10).fill(`*${'abcdefghi'[i - 1]}`).join(', ')}]`);
  assert.match(errorsOf(load(t, `${lines.join('\n')}\nlisteners: *i\n`))[0].message, /resource exhaustion/);
  assert.match(errorsOf(load(t, `# ${'x'.repeat(5 * 1024 * 1024)}\n`))[0].message, /bytes \(at most/);
});

test('duplicate key -> an error at the second one, naming the first', (t) => {
  const yaml = edit(BASE, '    proxy: app\n  - match: { path: / }', '    proxy: app\n    proxy: app\n  - match: { path: / }');
  const errors = errorsOf(load(t, yaml));
  assert.equal(errors.length, 1, formatErrors('f', errors));
  assert.equal(errors[0].path, 'routes[0].proxy');
  assert.equal(errors[0].line, lineOf(yaml, 'proxy: app') + 1);
  assert.match(errors[0].message, new RegExp(`duplicate key "proxy" \\(first set on line ${lineOf(yaml, 'proxy: app')}\\)`));
});

test('missing certificate or key file -> the path of that field', (t) => {
  const yaml = edit(edit(BASE, SEED_CERT, 'cert: ./missing.crt'), SEED_KEY, 'key: ./missing.key');
  const errors = errorsOf(load(t, yaml));
  expectError(errors, yaml, 'listeners[0].tls.certificates[0].cert', 'missing.crt', /missing\.crt does not exist/);
  expectError(errors, yaml, 'listeners[0].tls.certificates[0].key', 'missing.key', /missing\.key does not exist/);
});

test('self_signed certificate files may be missing: they are generated at start', (t) => {
  const yaml = edit(edit(BASE, SEED_CERT, 'cert: ./state/a.crt'), SEED_KEY, 'key: ./state/a.key\n          self_signed: true');
  const config = loaded(load(t, yaml));
  assert.equal(config.listeners[0].tls?.certificates[0].self_signed, true);
  assert.ok(path.isAbsolute(config.listeners[0].tls?.certificates[0].cert ?? ''));
});

test('a key that does not belong to the certificate is refused at the key', (t) => {
  const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
  const dir = folder(t, { 'other.key': String(other), 'junk.crt': 'not a certificate\n' });
  const yaml = edit(edit(BASE, SEED_KEY, 'key: ./other.key'), '  - address: 127.0.0.1:8080', `        - cert: ./junk.crt\n          ${SEED_KEY}\n  - address: 127.0.0.1:8080`);
  writeFileSync(path.join(dir, 'portico.yaml'), yaml);
  const errors = errorsOf(loadConfig(path.join(dir, 'portico.yaml')));
  expectError(errors, yaml, 'listeners[0].tls.certificates[0].key', 'other.key', /does not belong to the certificate/);
  expectError(errors, yaml, 'listeners[0].tls.certificates[1].cert', 'junk.crt', /not a PEM certificate/);
});

test('more than one of path, path_exact, path_regex -> routes[i].match', (t) => {
  const yaml = edit(BASE, '{ path: /api }', '{ path: /api, path_regex: "^/api" }');
  expectError(errorsOf(load(t, yaml)), yaml, 'routes[0].match', 'path_regex', /only one of path, path_exact, path_regex/);

  const badRegex = edit(BASE, '{ path: /api }', '{ path_regex: "(" }');
  expectError(errorsOf(load(t, badRegex)), badRegex, 'routes[0].match.path_regex', 'path_regex', /invalid regular expression/);
});

test('a missing required key points at the map that lacks it', (t) => {
  const yaml = 'workers: 2\nupstreams:\n  app:\n    balance: least_conn\n';
  const errors = errorsOf(load(t, yaml));
  expectError(errors, yaml, 'listeners', 'workers', /is required/);
  expectError(errors, yaml, 'upstreams.app.targets', 'app:', /is required/);
});

test('every error of a file is reported at once, in file order', (t) => {
  const yaml = [
    'workers: 0',
    'listeners:',
    '  - address: 127.0.0.1:8080',
    '    tls: { certificates: [{ cert: ./no.crt, key: ./no.key }] }',
    '  - address: 127.0.0.1:8080',
    'upstreams:',
    '  app:',
    '    targets: [nope]',
    '    balance: fastest',
    '    timeouts: { idle: soon }',
    'routes:',
    '  - match: { path: api, path_exact: /x }',
    '    proxy: ghost',
    'limits: { header_size: huge }',
    'log: { level: loud, colour: true }',
    '',
  ].join('\n');
  const errors = errorsOf(load(t, yaml));
  assert.deepEqual(
    errors.map((e) => e.path),
    [
      'workers',
      'listeners[0].tls.certificates[0].cert',
      'listeners[0].tls.certificates[0].key',
      'listeners[1].address',
      'upstreams.app.targets[0]',
      'upstreams.app.balance',
      'upstreams.app.timeouts.idle',
      'routes[0].match',
      'routes[0].match.path',
      'routes[0].proxy',
      'limits.header_size',
      'log.level',
      'log.colour',
    ],
    formatErrors('f', errors),
  );
  for (const e of errors) assert.equal(typeof e.line, 'number', `${e.path} has a line`);
  assert.deepEqual(errors.map((e) => e.line), [...errors.map((e) => e.line ?? 0)].sort((a, b) => a - b));
});

test('durations and sizes are normalised to milliseconds and bytes, defaults applied', (t) => {
  const yaml = `${edit(BASE, '{ connect: 2s }', '{ connect: 250ms, response_headers: 1.5m, idle: 90s }')}timeouts: { head: 10s, keepalive: "off" }
tunnel: { idle_timeout: 2h, max_lifetime: 1d, half_closed_timeout: 90s }
`.replace('header_size: 16KiB', 'header_size: 16KiB\n  uri_size: 2048B\n  body_size: 1.5MiB');
  const c = loaded(load(t, yaml));
  assert.deepEqual(c.upstreams.app.timeouts, { connect: 250, response_headers: 90_000, idle: 90_000 });
  assert.deepEqual(c.upstreams.app.keepalive, { max_idle: 256, idle_timeout: 60_000 });
  assert.deepEqual(c.timeouts, { head: 10_000, keepalive: 0, body: 60_000, shutdown_grace: 30_000 });
  assert.deepEqual(c.tunnel, { idle_timeout: 7_200_000, max_lifetime: 86_400_000, half_closed_timeout: 90_000 });
  assert.deepEqual(c.limits, { header_size: 16_384, uri_size: 2048, headers: 100, body_size: 1_572_864, connections_per_ip: 'off', ipv6_prefix: 64, max_pipes: 1024, static_open_files: 1024 });

  const defaults = loaded(load(t, BASE));
  assert.deepEqual(defaults.tunnel, { idle_timeout: 0, max_lifetime: 0, half_closed_timeout: 60_000 });
  assert.equal(loaded(load(t, `${BASE}tunnel: { half_closed_timeout: "off" }\n`)).tunnel.half_closed_timeout, 0, 'off: no half-closed bound');
  assert.equal(defaults.limits.body_size, 'off');
  assert.equal(defaults.limits.uri_size, 8192);
});

test('parseDuration and parseSize accept the documented forms only', () => {
  const durations: [string | number, number | undefined][] = [
    ['30s', 30_000], ['500ms', 500], ['1.5m', 90_000], ['2h', 7_200_000], ['1d', 86_400_000], ['off', 0], ['0', 0], [0, 0],
    [' 5S ', 5000], ['0.2ms', 1], ['24d', 2_073_600_000], ['25d', undefined], ['30x', undefined],
    ['-1s', undefined], ['s', undefined], ['', undefined], [-5, undefined], [Number.NaN, undefined], ['1e3s', undefined],
    // a bare number: milliseconds to Node, seconds to nginx -> refused
    [1200, undefined], [30, undefined], ['30', undefined], ['1.5', undefined],
  ];
  for (const [input, ms] of durations) assert.equal(parseDuration(input), ms, `parseDuration(${JSON.stringify(input)})`);
  const sizes: [string | number, number | undefined][] = [
    ['16KiB', 16_384], ['1MiB', 1_048_576], ['1mb', 1_000_000], ['512b', 512], ['512B', 512], ['2 GiB', 2 * 1024 ** 3], ['4KB', 4000],
    ['constructor', undefined], ['1constructor', undefined], ['1 toString', undefined], ['12 parsecs', undefined],
    [-1, undefined], [1.5, undefined], ['99999999999999999999GiB', undefined],
    // no unit (bytes? nginx's KiB?), or nginx's one-letter units that mean 1024 there and 1000 by SI -> refused
    ['512', undefined], [4096, undefined], ['1k', undefined], ['1m', undefined], ['1g', undefined],
  ];
  for (const [input, bytes] of sizes) assert.equal(parseSize(input), bytes, `parseSize(${JSON.stringify(input)})`);
});

test('portico check refuses a bare number for every duration and size key, naming the key and the accepted forms', (t) => {
  // One config that sets every duration and size key to a bare number: each must be refused at its own path.
  const yaml = `listeners:
  - address: 127.0.0.1:8443
    tls:
      handshake_timeout: 10
      certificates:
        - ${SEED_CERT}
          ${SEED_KEY}
upstreams:
  app:
    targets: [127.0.0.1:9001]
    timeouts: { connect: 5, response_headers: 60, idle: 60 }
    keepalive: { idle_timeout: 30 }
    queue: { timeout: 5 }
    slow_start: 30
    health:
      active: { type: tcp, interval: 5, timeout: 2 }
      passive: { fail_timeout: 10 }
routes:
  - match: { path: / }
    proxy: app
tunnel: { idle_timeout: 30, max_lifetime: 3600, half_closed_timeout: 60 }
limits: { header_size: 32, uri_size: 8192, body_size: 1048576 }
timeouts: { head: 15, keepalive: 75, shutdown_grace: 30 }
resolver: { timeout: 2, min_ttl: 1, max_ttl: 3600, backoff: { min: 1, max: 30 } }
`;
  const errors = errorsOf(load(t, yaml));
  const paths = [
    'upstreams.app.timeouts.connect', 'upstreams.app.timeouts.response_headers', 'upstreams.app.timeouts.idle',
    'upstreams.app.keepalive.idle_timeout', 'upstreams.app.queue.timeout', 'upstreams.app.slow_start',
    'upstreams.app.health.active.interval', 'upstreams.app.health.active.timeout', 'upstreams.app.health.passive.fail_timeout',
    'tunnel.idle_timeout', 'tunnel.max_lifetime', 'tunnel.half_closed_timeout', 'timeouts.head', 'timeouts.keepalive', 'timeouts.shutdown_grace',
    'resolver.timeout', 'resolver.min_ttl', 'resolver.max_ttl', 'resolver.backoff.min', 'resolver.backoff.max',
  ];
  const sizePaths = ['limits.header_size', 'limits.uri_size', 'limits.body_size'];
  for (const p of paths) {
    const e = errors.find((x) => x.path === p);
    assert.ok(e, `${p} refused (got ${errors.map((x) => x.path).join(', ')})`);
    assert.match(e.message, /duration \d+ has no unit: write it with one, e\.g\. "500ms", "30s", "5m"/, p);
  }
  for (const p of sizePaths) {
    const e = errors.find((x) => x.path === p);
    assert.ok(e, `${p} refused`);
    assert.match(e.message, /size \d+ has no unit: write it with one, e\.g\. "512B", "16KiB", "1MiB"/, p);
  }
  const tls = errors.find((x) => /handshake_timeout$/.test(x.path));
  assert.ok(tls, 'listeners[0].tls.handshake_timeout refused');
  // the same keys written with a unit (and 0 = off where allowed) load
  const fixed = yaml
    .replace(/(handshake_timeout|connect|response_headers|idle|idle_timeout|half_closed_timeout|timeout|slow_start|interval|fail_timeout|max_lifetime|head|keepalive|shutdown_grace|min_ttl|max_ttl|min|max): (\d+)/g, '$1: $2s')
    .replace(/(header_size|uri_size|body_size): (\d+)/g, '$1: $2B');
  loaded(load(t, fixed));
});

test('relative certificate paths resolve against the config file folder, not the working directory', (t) => {
  const dir = folder(t);
  cpSync(path.join(SEED_DIR, 'certs'), path.join(dir, 'conf', 'certs'), { recursive: true });
  const yaml = edit(edit(BASE, SEED_CERT, 'cert: ./certs/site.crt'), SEED_KEY, 'key: certs/../certs/site.key');
  writeFileSync(path.join(dir, 'conf', 'portico.yaml'), yaml);
  const r = loadConfig(path.relative(process.cwd(), path.join(dir, 'conf', 'portico.yaml')));
  const c = loaded(r);
  assert.equal(c.listeners[0].tls?.certificates[0].cert, path.join(dir, 'conf', 'certs', 'site.crt'));
  assert.equal(c.listeners[0].tls?.certificates[0].key, path.join(dir, 'conf', 'certs', 'site.key'));
  assert.equal(r.ok && r.file, path.join(dir, 'conf', 'portico.yaml'));
});

test('the loaded config is deeply frozen', (t) => {
  const c = loaded(load(t, BASE));
  const frozen = [c, c.listeners, c.listeners[0], c.listeners[0].address, c.listeners[0].tls?.certificates[0], c.upstreams.app.targets[0], c.routes[0].match, c.routes[0].request_headers.set, c.limits];
  for (const o of frozen) assert.ok(Object.isFrozen(o));
  assert.throws(() => {
    (c as { workers: unknown }).workers = 9;
  }, TypeError);
  assert.throws(() => {
    (c.listeners as unknown as unknown[]).push({});
  }, TypeError);
});

test('resolveWorkers: "auto" is the usable core count, a number is itself', (t) => {
  assert.equal(resolveWorkers(loaded(load(t, edit(BASE, 'workers: 2', 'workers: auto')))), availableParallelism());
  assert.equal(resolveWorkers(loaded(load(t, BASE))), 2);
  assert.equal(loaded(load(t, edit(BASE, 'workers: 2\n', ''))).workers, 'auto');
});

test('YAML anchors and merge keys work, and an unknown alias is reported at its line', (t) => {
  const yaml = edit(BASE, 'upstreams:\n  app:\n    targets: [127.0.0.1:9001]', 'upstreams:\n  app: &common\n    targets: [127.0.0.1:9001]\n  other:\n    <<: *common\n    balance: least_conn');
  const c = loaded(load(t, yaml));
  assert.equal(c.upstreams.other.balance, 'least_conn');
  assert.equal(c.upstreams.other.timeouts.connect, 2000);

  const bad = edit(BASE, '    proxy: app\n  - match: { path: / }', '    proxy: *nowhere\n  - match: { path: / }');
  expectError(errorsOf(load(t, bad)), bad, 'routes[0].proxy', '*nowhere', /unknown alias \*nowhere/);
});

test('nonsense shapes are refused with errors, never a throw', (t) => {
  const shapes = [
    'hello\n',
    '42\n',
    'listeners: [null, 5, [], "x"]\nroutes: [null, 5, { match: null, proxy: 1 }, { match: [], proxy: {} }]\nupstreams: null\nadmin: null\n',
    'listeners: { a: 1 }\nroutes: {}\nupstreams: { a: null, b: [], c: { targets: {} } }\ntunnel: []\nlog: 5\n',
    'listeners:\n  - address: 127.0.0.1:1\n    tls: { certificates: [null, { cert: 5, key: [] }, { cert: "", key: "" }] }\n',
    '? [a, b]\n: 1\n{x: 1}: 2\nlisteners: []\n',
  ];
  for (const yaml of shapes) {
    const errors = errorsOf(load(t, yaml));
    assert.ok(errors.length > 0 && errors.every((e) => typeof e.message === 'string' && e.message !== ''), yaml);
  }
});

test('an empty, missing or unreadable file is one error naming the file', (t) => {
  const empty = errorsOf(load(t, '# nothing\n'));
  assert.equal(empty.length, 1);
  assert.match(empty[0].message, /empty/);
  const dir = folder(t);
  const missing = errorsOf(loadConfig(path.join(dir, 'nope.yaml')));
  assert.deepEqual(missing.map((e) => e.path), ['']);
  assert.match(missing[0].message, /nope\.yaml does not exist/);
  assert.match(errorsOf(loadConfig(dir))[0].message, /is not a file/);
  const list = errorsOf(load(t, '- a\n- b\n'));
  assert.match(list[0].message, /expected a map, got a list/);
});

test('formatErrors prints FILE:LINE:COL path: message, one line per error', () => {
  const text = formatErrors('portico.yaml', [
    { path: 'routes[2].proxy', line: 14, column: 5, message: 'unknown upstream "x"' },
    { path: '', line: 3, column: 1, message: 'bad indent' },
    { path: '', message: 'cannot read config' },
  ]);
  assert.equal(text, 'portico.yaml:14:5 routes[2].proxy: unknown upstream "x"\nportico.yaml:3:1: bad indent\nportico.yaml: cannot read config');
  assert.equal(formatPath(['upstreams', 'a.b', 'targets', 0, 'weight']), 'upstreams["a.b"].targets[0].weight');
});

// ---- `portico check` as a real command ----

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { cwd: ROOT, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') reject(err);
      else resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
    });
  });
}

test('portico check on the seed: exit 0 and a one-line summary', async () => {
  const r = await runCli(['check', '-c', path.join(SEED_DIR, 'seed.yaml')]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'ok: 2 listeners (1 TLS), 2 upstreams (4 targets), 3 routes, workers 2\n');
  assert.equal(r.stderr, '');
});

test('portico check on a bad file: exit 1 and every error with file, line and path on stderr', async (t) => {
  const yaml = edit(edit(BASE, 'workers: 2', 'workers: many'), '{ connect: 2s }', '{ connect: 30x }');
  const file = path.join(folder(t, { 'bad.yaml': yaml }), 'bad.yaml');
  const r = await runCli(['check', '-c', file]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines[0], `${file}:${lineOf(yaml, 'workers')}:1 workers: expected "auto" or a number, got "many"`);
  assert.match(lines[1], new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${lineOf(yaml, 'connect: 30x')}:\\d+ upstreams\\.app\\.timeouts\\.connect: invalid duration "30x"`));
  assert.match(lines[2], /2 errors/);
});

test('portico check on discovered targets: the summary counts the names; bad names and resolver options are errors with their lines', async (t) => {
  const good = edit(BASE, 'targets: [127.0.0.1:9001]', 'targets: [127.0.0.1:9001, { address: api.test:80, resolve: true }, { srv: _http._tcp.api.test }]');
  const ok = await runCli(['check', '-c', path.join(folder(t, { 'good.yaml': good }), 'good.yaml')]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, 'ok: 2 listeners (1 TLS), 1 upstream (1 target + 2 DNS names to follow), 2 routes, workers 2\n');
  const bad = edit(
    edit(BASE, 'targets: [127.0.0.1:9001]', 'targets: [{ srv: "_http._tcp.bad name" }, { address: "10.0.0.1:80", resolve: true }]'),
    'limits:',
    'resolver:\n  servers: [resolver.local]\n  min_ttl: 2h\nlimits:',
  );
  const file = path.join(folder(t, { 'bad.yaml': bad }), 'bad.yaml');
  const r = await runCli(['check', '-c', file]);
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  assert.deepEqual(
    lines.slice(0, -1).map((l) => l.slice(file.length + 1).replace(/^(\d+):\d+ /, '$1 ')),
    [
      `${lineOf(bad, 'bad name')} upstreams.app.targets[0].srv: invalid DNS name "_http._tcp.bad name": label "bad name" (letters, digits, "-" and "_", 1 to 63 characters, no "-" at either end)`,
      `${lineOf(bad, 'bad name')} upstreams.app.targets[1].address: resolve: "10.0.0.1" is an IP address, not a DNS name (write it as a plain target)`,
      `${lineOf(bad, 'resolver.local')} resolver.servers[0]: invalid resolver address "resolver.local" (expected an IP address with an optional port: "10.0.0.53", "127.0.0.1:5353", "[::1]:53")`,
      `${lineOf(bad, 'min_ttl')} resolver.min_ttl: min_ttl must not be above max_ttl`,
    ],
  );
  assert.match(lines[lines.length - 1], /4 errors/);
});

test('the default config and every example pass portico check', async () => {
  const examples = readdirSync(path.join(ROOT, 'config', 'examples')).filter((f) => f.endsWith('.yaml'));
  assert.ok(examples.length >= 3, 'the examples are present');
  for (const file of ['config/portico.yaml', ...examples.map((f) => `config/examples/${f}`)]) {
    const r = await runCli(['check', '-c', file]);
    assert.equal(r.code, 0, `${file}:\n${r.stderr}`);
    assert.match(r.stdout, /^ok: \d+ listeners? \(\d+ TLS\), \d+ upstreams? \(\d+ targets?( \+ \d+ DNS names? to follow)?\), \d+ routes?, workers \S+/);
  }
});

test('portico with no, an unknown or a malformed command: usage on stderr, exit 2', async () => {
  for (const args of [[], ['frobnicate'], ['check', '--nope'], ['check', 'a.yaml', 'b.yaml']]) {
    const r = await runCli(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, /usage: portico <command>/);
    assert.equal(r.stdout, '');
  }
});

test('portico --help and check --help: usage on stdout, exit 0', async () => {
  for (const args of [['--help'], ['help'], ['check', '--help']]) {
    const r = await runCli(args);
    assert.equal(r.code, 0, args.join(' '));
    assert.match(r.stdout, /usage: portico <command>/);
  }
});

test('portico start with a bad config starts nothing and exits 1 with the errors', async (t) => {
  const file = path.join(folder(t, { 'bad.yaml': edit(BASE, 'proxy: app', 'proxy: ghost') }), 'bad.yaml');
  const r = await runCli(['start', '-c', file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /routes\[0\]\.proxy: unknown upstream "ghost"/);
  assert.match(r.stderr, /nothing was started/);
});

test('router rules are config errors with paths: unknown header variable, bad host pattern, lower-case method', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-cfg-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'c.yaml');
  writeFileSync(
    file,
    [
      'listeners: [{ address: 127.0.0.1:0 }]',
      'upstreams: { app: { targets: [127.0.0.1:9] } }',
      'routes:',
      '  - match: { host: "a.*.com" }',
      '    proxy: app',
      '  - match: { method: get }',
      '    proxy: app',
      '    request_headers: { set: { X-A: $nope } }',
      '',
    ].join('\n'),
  );
  const r = loadConfig(file);
  assert.equal(r.ok, false);
  const errs = (r as { errors: Array<{ path: string; line?: number }> }).errors;
  const paths = errs.map((e) => e.path);
  assert.ok(paths.some((p) => p.startsWith('routes[0].match.host')), paths.join(' | '));
  assert.ok(paths.some((p) => p.startsWith('routes[1].match.method')), paths.join(' | '));
  assert.ok(paths.some((p) => p.startsWith('routes[1].request_headers.set')), paths.join(' | '));
  assert.ok(errs.every((e) => typeof e.line === 'number'));
});

test('portico check refuses header rules on framing and hop-by-hop fields, removing Host, and bad forwarding values, with their paths', async (t) => {
  const yaml = [
    'listeners: [{ address: 127.0.0.1:0 }]',
    'upstreams: { app: { targets: [127.0.0.1:9] } }',
    'forwarding:',
    '  trusted_proxies: [10.0.0.0/33]',
    '  x_forwarded_for: keep',
    'routes:',
    '  - match: { path: /a }',
    '    proxy: app',
    '    request_headers:',
    '      set: { Host: backend.internal, X-Ok: "1" }',
    '      remove: [Content-Length]',
    '    response_headers:',
    '      remove: [Transfer-Encoding, Server]',
    '      set: { Connection: close }',
    '  - match: { path: /b }',
    '    proxy: app',
    '    request_headers: { remove: [host] }',
    '',
  ].join('\n');
  const errors = errorsOf(load(t, yaml));
  assert.ok(!errors.some((e) => e.path === 'routes[0].request_headers.set.Host'), 'Host may be replaced (proxy_set_header Host)');
  expectError(errors, yaml, 'routes[1].request_headers.remove[0]', 'remove: [host]', /host cannot be removed/);
  expectError(errors, yaml, 'routes[0].request_headers.remove[0]', 'remove: [Content-Length]', /Content-Length is set by Portico itself/);
  expectError(errors, yaml, 'routes[0].response_headers.remove[0]', 'remove: [Transfer-Encoding', /Transfer-Encoding is set by Portico itself/);
  expectError(errors, yaml, 'routes[0].response_headers.set.Connection', 'set: { Connection', /hop-by-hop/);
  expectError(errors, yaml, 'forwarding.trusted_proxies[0]', 'trusted_proxies', /prefix must be 0\.\.32/);
  expectError(errors, yaml, 'forwarding.x_forwarded_for', 'x_forwarded_for', /replace|append/);
  assert.equal(errors.length, 6, formatErrors('f', errors));
  for (const name of ['TE', 'Keep-Alive', 'Upgrade', 'Proxy-Connection', 'Trailer']) {
    const one = edit(yaml, 'remove: [Content-Length]', `remove: [${name}]`);
    assert.ok(errorsOf(load(t, one)).some((e) => e.path === 'routes[0].request_headers.remove[0]'), name);
  }
  const dir = folder(t, { 'c.yaml': yaml });
  const r = await runCli(['check', '-c', path.join(dir, 'c.yaml')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /c\.yaml:11:\d+ routes\[0\]\.request_headers\.remove\[0\]: Content-Length is set by Portico itself/);
});

test('forwarding defaults: no trusted proxies, X-Forwarded-For replaced, no Forwarded', (t) => {
  const c = loaded(load(t, BASE));
  assert.deepEqual(c.forwarding, { trusted_proxies: [], x_forwarded_for: 'replace', forwarded: false });
  const on = loaded(load(t, `${BASE}forwarding: { trusted_proxies: [10.0.0.0/8, "::1"], x_forwarded_for: append, forwarded: true }\n`));
  assert.deepEqual(on.forwarding, { trusted_proxies: ['10.0.0.0/8', '::1'], x_forwarded_for: 'append', forwarded: true });
});

test('portico check: listeners[].backlog and limits.max_pipes are bounded integers, refused with their paths', async (t) => {
  const good = edit(edit(BASE, '  - address: 127.0.0.1:8080', '  - address: 127.0.0.1:8080\n    backlog: 8192'), 'header_size: 16KiB', 'header_size: 16KiB\n  max_pipes: 0');
  const c = loaded(load(t, good));
  assert.equal(c.listeners[1].backlog, 8192);
  assert.equal(c.listeners[0].backlog, undefined, 'no backlog set: the system default (somaxconn) applies at listen');
  assert.equal(c.limits.max_pipes, 0);
  const bad = edit(edit(BASE, '  - address: 127.0.0.1:8080', '  - address: 127.0.0.1:8080\n    backlog: 0'), 'header_size: 16KiB', 'header_size: 16KiB\n  max_pipes: lots');
  const file = path.join(folder(t, { 'bad.yaml': bad }), 'bad.yaml');
  const r = await runCli(['check', '-c', file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`:${lineOf(bad, 'backlog: 0')}:\\d+ listeners\\[1\\]\\.backlog: `));
  assert.match(r.stderr, new RegExp(`:${lineOf(bad, 'max_pipes: lots')}:\\d+ limits\\.max_pipes: `));
  const huge = edit(BASE, '  - address: 127.0.0.1:8080', '  - address: 127.0.0.1:8080\n    backlog: 70000');
  expectError(errorsOf(load(t, huge)), huge, 'listeners[1].backlog', 'backlog: 70000', /65535/);
});

// ---- fastcgi routes (config/fastcgi.ts) ----

const PHP = BASE.replace('limits:\n', () => "  - match: { path_regex: '\\.php$' }\n    fastcgi: { upstream: php, root: ./html, index: index.php }\nlimits:\n").replace('upstreams:\n', 'upstreams:\n  php:\n    targets: [127.0.0.1:9000]\n');

test('a fastcgi route loads: root resolved against the config folder, defaults set, unix: targets', (t) => {
  const dir = folder(t, { 'portico.yaml': PHP.replace('127.0.0.1:9000', 'unix:/run/php/php-fpm.sock') });
  const config = loaded(loadConfig(path.join(dir, 'portico.yaml')));
  const route = config.routes[2];
  assert.equal(route.fastcgi?.root, path.join(dir, 'html'));
  assert.equal(route.fastcgi?.index, 'index.php');
  assert.deepEqual(route.fastcgi?.params, {});
  assert.deepEqual(config.upstreams.php.targets[0], { address: 'unix:/run/php/php-fpm.sock', host: '/run/php/php-fpm.sock', port: 0, weight: 1, backup: false });
});

test('fastcgi: bad values are refused with their YAML path', (t) => {
  const cases: Array<[string, string, string, string, RegExp]> = [
    ['upstream: php,', 'upstream: nope,', 'routes[2].fastcgi.upstream', 'upstream: nope', /unknown upstream "nope"/],
    ['index: index.php }', 'index: a/b.php }', 'routes[2].fastcgi.index', 'index: a/b.php', /file name/],
    ['index: index.php }', "index: index.php, split_path_info: '^(.+\\.php)$' }", 'routes[2].fastcgi.split_path_info', 'split_path_info', /two capture groups/],
    ['index: index.php }', "index: index.php, split_path_info: '(' }", 'routes[2].fastcgi.split_path_info', 'split_path_info', /invalid regular expression/],
    ['index: index.php }', "index: index.php, params: { APP: '$nope' } }", 'routes[2].fastcgi.params.APP', 'params:', /unknown variable \$nope/],
    ['index: index.php }', "index: index.php, params: { APP: '${uri' } }", 'routes[2].fastcgi.params.APP', 'params:', /unterminated \$\{ at offset 0/],
    ['index: index.php }', "index: index.php, params: { APP: 'x${1a}' } }", 'routes[2].fastcgi.params.APP', 'params:', /invalid variable name \$\{1a\} at offset 1/],
    ['index: index.php }', "index: index.php, params: { HTTP_PROXY: x } }", 'routes[2].fastcgi.params.HTTP_PROXY', 'params:', /httpoxy/],
    ['targets: [127.0.0.1:9000]', 'targets: [unix:php.sock]', 'upstreams.php.targets[0]', 'unix:php.sock', /unix:\/absolute\/path/],
  ];
  for (const [from, to, at, marker, message] of cases) {
    const yaml = edit(PHP, from, to);
    expectError(errorsOf(load(t, yaml)), yaml, at, marker, message);
  }
});

// ---- a static route's fallback (config/static-fallback.ts) ----

const FALLBACK = edit(PHP, '  - match: { path: / }\n    proxy: app\n', "  - match: { path: / }\n    static: { root: ., fallback: '/index.php?$args' }\n");

test('static.fallback loads as written; a bad one is refused with its YAML path and a clear reason', (t) => {
  const route = loaded(load(t, FALLBACK)).routes[1];
  assert.equal(route.static?.fallback, '/index.php?$args');
  loaded(load(t, edit(FALLBACK, "fallback: '/index.php?$args'", "fallback: '/index.php$is_args$args'")));
  loaded(load(t, edit(FALLBACK, "fallback: '/index.php?$args'", "fallback: /index.html")));
  const cases: Array<[string, RegExp]> = [
    ["fallback: 'index.php?$args'", /absolute path/],
    ['fallback: "/index.php\\n"', /control characters/],
    ['fallback: "/index.php?a=\\u0001"', /control characters/],
    ["fallback: '/index php'", /no spaces/],
    ["fallback: '/index.php?$nope'", /unknown variable \$nope in a fallback/],
    ["fallback: '/x$uri'", /path is literal/],
    ["fallback: '/a/../../index.php'", /refused as a request's would be: ".." above the root/],
    ["fallback: '/a//index.php'", /written normalized: "\/a\/index.php"/],
    ["fallback: '/index.php#top'", /fragment/],
  ];
  for (const [to, message] of cases) {
    const yaml = edit(FALLBACK, "fallback: '/index.php?$args'", to);
    expectError(errorsOf(load(t, yaml)), yaml, 'routes[1].static.fallback', 'fallback:', message);
  }
});

test('fastcgi: an upstream shared with proxy routes, or checked with HTTP, is refused', (t) => {
  const shared = edit(PHP, 'upstream: php,', 'upstream: app,');
  expectError(errorsOf(load(t, shared)), shared, 'routes[2].fastcgi.upstream', 'upstream: app,', /also serves proxy routes/);
  const http = edit(PHP, '    targets: [127.0.0.1:9000]\n', '    targets: [127.0.0.1:9000]\n    health: { active: { type: http } }\n');
  expectError(errorsOf(load(t, http)), http, 'upstreams.php.health.active.type', 'type: http', /use type: fastcgi/);
  const probe = edit(PHP, '    targets: [127.0.0.1:9000]\n', '    targets: [127.0.0.1:9000]\n    health: { active: { type: fastcgi } }\n');
  loaded(load(t, probe));
});

test('the seed-php fastcgi route loads (the file in ../shared/contract may still fail on other parts of the seed)', (t) => {
  const file = path.join(SHARED_CONTRACT, 'seed-php.yaml');
  if (!existsSync(file)) {
    t.skip(`${file} is not present (outside the project checkout)`);
    return;
  }
  const r = loadConfig(file);
  const errors = r.ok ? [] : r.errors;
  // routes[1] is the seed's PHP route; its `cors` key belongs to the CORS part of the seed
  const fastcgiErrors = errors.filter((e) => (e.path.startsWith('routes[1]') && !e.path.startsWith('routes[1].cors')) || e.path.startsWith('upstreams.php'));
  assert.deepEqual(fastcgiErrors, [], formatErrors('seed-php.yaml', fastcgiErrors));
  if (r.ok) {
    const route = r.config.routes.find((x) => x.fastcgi !== undefined);
    assert.equal(route?.fastcgi?.root, path.join(SHARED_CONTRACT, 'html'));
    assert.equal(route?.fastcgi?.index, 'index.php');
  }
});

test('standby_worker: true by default, a boolean; portico check refuses anything else with its path and line', async (t) => {
  assert.equal(loaded(load(t, BASE)).standby_worker, true);
  assert.equal(loaded(load(t, edit(BASE, 'workers: 2', 'workers: 2\nstandby_worker: false'))).standby_worker, false);
  const yaml = edit(BASE, 'workers: 2', 'workers: 2\nstandby_worker: "yes"');
  const file = path.join(folder(t, { 'bad.yaml': yaml }), 'bad.yaml');
  const r = await runCli(['check', '-c', file]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim().split('\n')[0], `${file}:${lineOf(yaml, 'standby_worker')}:1 standby_worker: expected a boolean, got "yes"`);
});

test("a static route's index that a fastcgi route runs is refused (a folder's request would get the script's source)", (t) => {
  const one = edit(FALLBACK, "static: { root: ., fallback: '/index.php?$args' }", 'static: { root: ., index: index.php }');
  expectError(errorsOf(load(t, one)), one, 'routes[1].static.index[0]', 'index: index.php', /"index.php" is a script of routes\[2\] \(fastcgi\).*get its source/);
  const list = edit(FALLBACK, "static: { root: ., fallback: '/index.php?$args' }", 'static: { root: ., index: [index.html, index.php] }');
  expectError(errorsOf(load(t, list)), list, 'routes[1].static.index[1]', 'index: [index.html, index.php]', /"index.php" is a script of routes\[2\]/);
  // a file no fastcgi route runs stays an index
  loaded(load(t, edit(FALLBACK, "static: { root: ., fallback: '/index.php?$args' }", 'static: { root: ., index: [index.html, index.htm] }')));
});
