// Micro-benchmark of routing one request: JavaScript's Router.route against the addon's route table (route-table.cc
// MatchRoute through its test export routeTableMatch, which also pays N-API for four string arguments: an upper bound
// of what the C++ costs). Checks that both pick the expected route before timing (STYLE.md 14); not a test. Writes
// the tables' bytes to build/bench/route-table.bin and route-table-php.bin for bench/native/route-table-bench.cc
// (Match alone, no N-API).
// Run: npm run bench:micro:route-table
import { mkdirSync, writeFileSync } from 'node:fs';
import { Bench } from 'tinybench';
import { printBatchTable } from './batch-table.js';
import { configSchema, type ConfigInput } from '../../src/config/schema.js';
import { Router } from '../../src/route/router.js';
import { compileNativeRoutes, routeTableBytes, routeTableMatch } from '../../src/route/native-routes.js';
import { native } from '../../src/native/addon.js';

const BATCH = 1000;

// A site's routes: API versions and a health check, a static prefix and a default per host, wildcards, eight exact
// hosts of an app farm, a host-less /api and a default. The same table in bench/native/route-table-bench.cc.
const routes: NonNullable<ConfigInput['routes']> = [
  { match: { host: ['api.example.com'], path: '/v1' }, proxy: 'a' },
  { match: { host: ['api.example.com'], path: '/v2' }, proxy: 'a' },
  { match: { host: ['api.example.com'], path_exact: '/health' }, proxy: 'a' },
  { match: { host: ['www.example.com'], path: '/static/' }, proxy: 'a' },
  { match: { host: ['www.example.com'], path: '/' }, proxy: 'a' },
  { match: { host: ['*.example.com'], path: '/' }, proxy: 'a' },
  { match: { host: ['*.cdn.example.com'] }, proxy: 'a' },
  { match: { host: ['admin.example.com'], path: '/', method: ['GET', 'HEAD'] }, proxy: 'a' },
  ...Array.from({ length: 8 }, (_, i) => ({ match: { host: [`app${i + 1}.example.net`], path: '/' }, proxy: 'a' })),
  { match: { path: '/api' }, proxy: 'a' },
  { proxy: 'a' },
];
// The PHP site's shape (/work/shared/contract/seed-php.yaml, bench/scenarios/php.ts: `/wss`, nginx's `location ~
// \.php$` as `path_regex: '\.php$'`, then `/`), host-less as there; proxy actions stand in for its fastcgi and
// static ones (the action does not change the match). The same table in bench/native/route-table-bench.cc.
const phpRoutes: NonNullable<ConfigInput['routes']> = [
  { match: { path: '/wss' }, proxy: 'a' },
  { match: { path_regex: '\\.php$' }, proxy: 'a' },
  { match: { path: '/' }, proxy: 'a' },
];
const match = (native() as unknown as { routeTableMatch?: (t: object, h: string, p: string, m: string) => number } | undefined)?.routeTableMatch;
mkdirSync('build/bench', { recursive: true });
const tables = [
  { routes, file: 'build/bench/route-table.bin' },
  { routes: phpRoutes, file: 'build/bench/route-table-php.bin' },
].map(({ routes: r, file }) => {
  const config = configSchema.parse({ listeners: [{ address: '127.0.0.1:0' }], upstreams: { a: { targets: ['127.0.0.1:9001'] } }, routes: r });
  const router = new Router(config);
  const table = compileNativeRoutes(router, config);
  if (table === undefined || match === undefined) {
    console.error('the native addon (with routeTableCompile) is not built: npm run build:native');
    process.exit(1);
  }
  writeFileSync(file, routeTableBytes(router, config));
  return { router, table };
});

// host (as the head reader gives it), path, the route both must pick, the table (0: the site, 1: PHP)
const cases: Array<[string, string, string, number, number]> = [
  ['exact host, prefix', 'www.example.com', '/Tomcat/app/index.html', 4, 0],
  ['exact host, 2nd prefix', 'api.example.com', '/v2/users/42', 1, 0],
  ['wildcard', 'x.cdn.example.com', '/img/a.png', 6, 0],
  ['fall-through', '127.0.0.1', '/', 17, 0],
  ['PHP: \\.php$', 'localhost', '/index.php', 1, 1],
  ['PHP: past \\.php$ to /', 'localhost', '/css/site.css', 2, 1],
];
for (const [name, host, path, want, t] of cases) {
  const d = tables[t].router.route(host, 'GET', path);
  const cc = routeTableMatch(tables[t].table, host, path, 'GET');
  if (d.kind !== 'forward' || d.route.index !== want || cc.kind !== 'route' || cc.route !== want) {
    console.error(`bench precheck failed: ${name}`);
    process.exit(1);
  }
}

// The router's strings come from the head parser as slices of the head's text, new per request, their hashes not
// computed yet; a constant string keeps its hash, which flatters Map.get. Both are timed, and the slices alone.
const texts = cases.map(([, host, path]) => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);

let sink = 0;
const bench = new Bench({ name: 'route', time: 1000, warmupTime: 200 });
cases.forEach(([name, host, path, , t], k) => {
  const { router, table } = tables[t];
  const text = texts[k];
  const ps = 4;
  const pe = ps + path.length;
  const hs = text.indexOf('Host: ') + 6;
  const he = hs + host.length;
  bench
    .add(`JS: slices alone, ${name}`, () => {
      for (let i = 0; i < BATCH; i++) sink += text.slice(hs, he).length + text.slice(ps, pe).length;
    })
    .add(`JS: slices + Router.route, ${name}`, () => {
      for (let i = 0; i < BATCH; i++) sink += router.route(text.slice(hs, he), 'GET', text.slice(ps, pe)).kind.length;
    })
    .add(`JS: Router.route (constant strings), ${name}`, () => {
      for (let i = 0; i < BATCH; i++) sink += router.route(host, 'GET', path).kind.length;
    })
    .add(`addon: routeTableMatch, ${name}`, () => {
      for (let i = 0; i < BATCH; i++) sink += match!(table.handle, host, path, 'GET');
    });
});
await bench.run();
printBatchTable('route: JS Router against the addon table (N-API included)', bench, BATCH);
if (sink === -1) console.log(sink);
