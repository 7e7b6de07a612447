// The config of the routes Portico answers itself and of the policies on any route (static, redirect, return,
// https_redirect, cors, compress): bad values are refused by `portico check` with their YAML path and line,
// good ones load with their defaults, and seed-php's `static:` and `cors:` blocks load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { formatErrors, loadConfig, type ConfigError, type LoadResult } from '../../src/config/load.js';
import { SHARED_CONTRACT } from '../helpers/paths.js';
import { run } from '../helpers/clients.js';
import { CLI } from '../helpers/paths.js';

/** A folder with `html/` and the config `yaml`; returns the load result. */
function load(t: TestContext, yaml: string): { r: LoadResult; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-config-web-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'html'));
  const file = path.join(dir, 'portico.yaml');
  writeFileSync(file, yaml);
  return { r: loadConfig(file), file };
}

function errorsOf(r: LoadResult): ConfigError[] {
  if (r.ok) assert.fail('expected the config to be refused');
  return r.errors;
}

function lineOf(yaml: string, marker: string): number {
  const i = yaml.split('\n').findIndex((l) => l.includes(marker));
  assert.ok(i >= 0, `marker ${marker}`);
  return i + 1;
}

function expectError(errors: ConfigError[], yaml: string, at: string, marker: string, message: RegExp): void {
  const found = errors.filter((e) => e.path === at);
  assert.equal(found.length, 1, `one error at ${at}, got:\n${formatErrors('f', errors)}`);
  assert.equal(found[0].line, lineOf(yaml, marker), `line of ${at}`);
  assert.match(found[0].message, message);
}

const HEAD = `listeners:
  - address: 127.0.0.1:8080
routes:
`;

test('static, redirect, return, cors and compress load with their defaults; static.root resolves against the file', (t) => {
  const yaml = `${HEAD}  - match: { path_regex: '^/u/(\\w+)$' }
    redirect: { to: "/user/$1" }
  - match: { path: /old }
    redirect: https://$host$request_uri
  - match: { path: /ok }
    return: { status: 200, body: ok }
    compress: true
  - match: { path: / }
    static: { root: ./html }
    cors: { origins: ["https://a.example.test"] }
`;
  const { r, file } = load(t, yaml);
  if (!r.ok) assert.fail(formatErrors('f', r.errors));
  const [re, old, ok, st] = r.config.routes;
  assert.deepEqual(re.redirect, { to: '/user/$1', status: 302 });
  assert.deepEqual(old.redirect, { to: 'https://$host$request_uri', status: 302 });
  assert.deepEqual(ok.return, { status: 200, body: 'ok', content_type: 'text/plain; charset=utf-8' });
  assert.equal(ok.compress?.level, 1);
  assert.equal(ok.compress?.min_size, 1024);
  assert.deepEqual(st.static, { root: path.join(path.dirname(file), 'html'), index: ['index.html'], precompressed: true, etag: true, send_timeout: 60_000 });
  assert.deepEqual(st.cors, { origins: ['https://a.example.test'], credentials: false, methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], expose: [], max_age: 600_000 });
  assert.equal(r.config.limits.static_open_files, 1024);
});

test('bad values -> path and line: redirect status and captures, return body on 204, static root, cors wildcard with credentials, compress level', (t) => {
  const yaml = `listeners:
  - address: 127.0.0.1:8443
    tls: { certificates: [] , passthrough: [{ sni: a.test, upstream: raw }] }
    https_redirect: true
upstreams:
  x: { targets: [127.0.0.1:1] }
  raw: { targets: [127.0.0.1:2] }
routes:
  - match: { path: /a }
    redirect: { to: /b, status: 305 }
  - match: { path: /d }
    return: { status: 204, body: "no" }
  - match: { path: /e }
    static: { root: ./missing }
  - match: { path: /f }
    static: { root: ./html, index: "a/b.html" }
  - match: { path: /g }
    proxy: x
    cors: { origins: ["*"], credentials: true }
  - match: { path: /h }
    proxy: x
    cors: { origins: ["https://app.example.test/path"] }
  - match: { path: /i }
    proxy: x
    compress: { level: 12 }
  - match: { path: /j }
    static: { root: ./html, etag: false }
    proxy: x
`;
  const { r } = load(t, yaml);
  const errors = errorsOf(r);
  expectError(errors, yaml, 'listeners[0].https_redirect', 'https_redirect: true', /plain http listeners only/);
  expectError(errors, yaml, 'routes[0].redirect.status', 'status: 305', /301, 302, 303, 307, 308/);
  expectError(errors, yaml, 'routes[1].return.body', 'body: "no"', /204 answer has no body/);
  expectError(errors, yaml, 'routes[2].static.root', './missing', /missing/);
  expectError(errors, yaml, 'routes[3].static.index', 'a/b.html', /file name, without \//);
  expectError(errors, yaml, 'routes[4].cors.origins[0]', 'origins: ["*"]', /"\*" cannot be used with credentials/);
  expectError(errors, yaml, 'routes[5].cors.origins[0]', '/path"]', /invalid origin/);
  expectError(errors, yaml, 'routes[6].compress.level', 'level: 12', /at most 9/);
  expectError(errors, yaml, 'routes[7].static', 'etag: false', /use only one of proxy, static/);
});

test('redirect targets: a capture the path_regex lacks, or an unknown variable -> path and line of `to`', (t) => {
  const yaml = `${HEAD}  - match: { path_regex: '^/u/(\\w+)$' }
    redirect: { to: "/user/$2" }
  - match: { path: /c }
    redirect: { to: "/x/$nope" }
  - match: { path: /e }
    redirect: "/y/$1"
`;
  const errors = errorsOf(load(t, yaml).r);
  expectError(errors, yaml, 'routes[0].redirect.to', '/user/$2', /\$2: the path_regex has 1 capture group/);
  expectError(errors, yaml, 'routes[1].redirect.to', '$nope', /unknown variable \$nope/);
  expectError(errors, yaml, 'routes[2].redirect.to', '/y/$1', /needs a match.path_regex/);
});

test('https_redirect: true needs a TLS listener somewhere in the file', (t) => {
  const yaml = `listeners:
  - address: 127.0.0.1:8080
    https_redirect: true
`;
  expectError(errorsOf(load(t, yaml).r), yaml, 'listeners[0].https_redirect', 'https_redirect', /needs a TLS listener/);
});

test('portico check on seed-php: the whole file loads (terminate, fastcgi, cors and static routes)', async () => {
  const file = path.join(SHARED_CONTRACT, 'seed-php.yaml');
  const res = await run(process.execPath, [CLI, 'check', '-c', file]);
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /^ok: 1 listener \(1 TLS\), 2 upstreams \(2 targets\), 3 routes/);
});
