// A worker serves the Config the primary validated, received over IPC as JSON (config/transfer.ts), and never
// parses or validates a config itself: what it gets must equal what the primary loaded (a key whose value is
// undefined arrives absent, which reads the same), a value JSON would change is refused by the loader with its
// path, and the worker's modules reach neither yaml nor zod (what made its start slow).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { loadConfig, loadConfigText } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { receivedConfig, transferProblem } from '../../src/config/transfer.js';
import { FIXTURES, ROOT } from '../helpers/paths.js';

/** `value` as the loader returned it, keys whose value is undefined left out (JSON drops them). */
function withoutUndefined(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutUndefined);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, withoutUndefined(v)]));
  return value;
}

/** What a worker serves when the primary sends `config` (the IPC channel serializes messages as JSON). */
function overIpc(config: Config): Config {
  return receivedConfig(JSON.parse(JSON.stringify({ type: 'apply', config })).config as Config);
}

const TLS = path.join(FIXTURES, 'tls');

/** Most kinds of route and upstream setting in one file, those whose schema transforms values in particular. */
const RICH = `
workers: 2
listeners:
  - address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${TLS}/localhost.crt, key: ${TLS}/localhost.key }] }
  - { address: 127.0.0.1:0, proxy_protocol: { trusted: [10.0.0.0/8] } }
upstreams:
  app:
    targets: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 3 }, { address: 127.0.0.1:9003, backup: true }]
    balance: { policy: cookie, name: portico_sticky }
    health: { active: { type: http, path: /healthz, interval: 5s } }
    tls: true
  plain:
    targets: [127.0.0.1:9004]
    tls: false
  php:
    targets: [127.0.0.1:9000]
    health: { active: { type: fastcgi, interval: 5s } }
routes:
  - match: { path: /ws }
    proxy: plain
    websocket: { mode: terminate, max_message_size: 64KiB, ping_interval: 20s }
  - match: { path: /api }
    proxy: { upstream: app, strip_prefix: true }
    request_headers: { set: { X-Real-IP: $remote_addr } }
    cors: { origins: ["https://*.example.test"], credentials: true }
    compress: true
    rate_limit: { requests: { rate: 100/s, key: "header:X-Api-Key" }, handshakes: { rate: 10/m } }
  - match: { path: /plain }
    proxy: plain
    compress: false
  - match: { path_regex: '\\.php(/|$)' }
    fastcgi: { upstream: php, root: ${FIXTURES}/php, split_path_info: '^(.+\\.php)(/.*)$', params: { APP_ENV: $host } }
  - match: { path: /assets }
    static: { root: ${FIXTURES}/php, index: [index.html], cache_control: "public, max-age=60" }
  - match: { path_exact: /old }
    redirect: { to: "https://$host/new$request_uri", status: 301 }
  - match: { path: /healthz }
    return: { status: 200, body: "ok\\n" }
forwarding: { trusted_proxies: [10.0.0.0/8, "::1"] }
timeouts: { head: 10s, shutdown_grace: 3s }
tunnel: { idle_timeout: off }
log: { level: warn, access: true }
`;

test('a config over IPC is the config the primary loaded: the shipped examples, the seed and a rich one', () => {
  const files = [path.join(ROOT, 'config', 'portico.yaml'), path.join(FIXTURES, 'seed', 'seed.yaml'), ...readdirSync(path.join(ROOT, 'config', 'examples')).map((f) => path.join(ROOT, 'config', 'examples', f))];
  const loaded = files.map((file) => ({ file, r: loadConfig(file) }));
  loaded.push({ file: 'RICH', r: loadConfigText(RICH, path.join(FIXTURES, 'portico.yaml')) });
  for (const { file, r } of loaded) {
    assert.ok(r.ok, `${file}: ${r.ok ? '' : JSON.stringify(r.errors)}`);
    const received = overIpc(r.config);
    assert.deepStrictEqual(received, withoutUndefined(r.config), `${file}: the worker's config differs from the primary's`);
    assert.ok(Object.isFrozen(received) && Object.isFrozen(received.routes[0]) && Object.isFrozen(received.listeners[0].address), `${file}: frozen like a loaded config`);
  }
});

test('transferProblem names the path of a value JSON would not carry as it is', () => {
  assert.equal(transferProblem({ a: [1, 'x', null, true, { b: undefined }] }), undefined, 'a key of value undefined arrives absent: allowed');
  assert.equal(transferProblem({ routes: [{ match: { re: /x/ } }] }), 'routes[0].match.re: a RegExp, not a plain object');
  assert.equal(transferProblem({ upstreams: { a: { seen: new Set() } } }), 'upstreams.a.seen: a Set, not a plain object');
  assert.equal(transferProblem({ limits: { max: Infinity } }), 'limits.max: Infinity (JSON carries finite numbers only)');
  assert.equal(transferProblem({ list: [1, undefined] }), 'list[1]: undefined in a list');
  assert.equal(transferProblem({ f: () => 1 }), 'f: a function');
  assert.equal(transferProblem(new Map()), '(the config): a Map, not a plain object');
  const deep: Record<string, unknown> = {};
  let at = deep;
  for (let i = 0; i < 40; i++) at = (at.n = {}) as Record<string, unknown>;
  assert.match(transferProblem(deep) ?? '', /nested deeper than 32/);
});

/** Bare module names the static imports of `entry` (a dist file) reach, following relative imports. */
function packagesReached(entry: string): Map<string, string> {
  const seen = new Set<string>();
  const packages = new Map<string, string>();
  const walk = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    // compiled ESM: one import per line; `import type` is gone after tsc
    for (const m of readFileSync(file, 'utf8').matchAll(/^\s*(?:import|export)\s[^'"]*?['"]([^'"]+)['"];?$/gm)) {
      const spec = m[1];
      if (spec.startsWith('.')) walk(path.resolve(path.dirname(file), spec));
      else if (!spec.startsWith('node:') && !packages.has(spec)) packages.set(spec, path.relative(ROOT, file));
    }
  };
  walk(entry);
  return packages;
}

test('a worker process starts without yaml and zod: its static imports reach neither', () => {
  const reached = packagesReached(path.join(ROOT, 'dist', 'src', 'worker', 'main.js'));
  assert.ok(reached.has('pino'), 'the walk follows the imports (the worker logs with pino)');
  for (const name of ['yaml', 'zod']) assert.equal(reached.get(name), undefined, `${name} is imported by ${reached.get(name)}`);
});
