// Micro-benchmark of the request head's way from bytes to the upstream's head: JavaScript's (parseRequestHead, the
// path normalization of decide.ts, buildRequestHead) against the addon's (request-head.cc through its test export
// requestHeadRewrite, which also pays N-API for its eleven arguments and the object it returns: an upper bound of
// what the C++ costs). Checks that both give the same bytes before timing (STYLE.md 14); not a test.
// Run: npm run bench:micro:request-head
import { Bench } from 'tinybench';
import { printBatchTable } from './batch-table.js';
import { parseRequestHead, type HeadLimits } from '../../src/wire/http-head.js';
import { normalizePath } from '../../src/wire/path.js';
import { buildRequestHead, responseSkipNames } from '../../src/handlers/rewrite.js';
import type { CompiledRoute, RequestVars } from '../../src/route/router.js';
import { native } from '../../src/native/addon.js';
import { browserGet } from './heads.js';

const LIMITS: HeadLimits = { headerSize: 32 * 1024, uriSize: 8 * 1024, headers: 100 };
const BATCH = 100;

type Rewrite = (...args: unknown[]) => { head: string } | null;
const rewrite = (native() as unknown as { requestHeadRewrite?: Rewrite } | undefined)?.requestHeadRewrite;
if (rewrite === undefined) {
  console.error('the native addon (with requestHeadRewrite) is not built: npm run build:native');
  process.exit(1);
}

const smallGet = Buffer.from('GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n', 'latin1');

const ops = { remove: new Set<string>(), set: [] };
const route = { stripPrefix: '', requestHeaders: ops, forwarding: { trusts: () => false, xForwardedFor: 'replace', forwarded: false } } as unknown as CompiledRoute;
const skip = responseSkipNames(ops);
const address = Uint8Array.from([127, 0, 0, 1]);
const limits = [LIMITS.headerSize, LIMITS.uriSize, LIMITS.headers];

function viaJs(buf: Buffer): string {
  const r = parseRequestHead(buf, LIMITS);
  if (r.kind !== 'done') throw new Error('not parsed');
  const h = r.head;
  const path = normalizePath(h.path);
  if (typeof path !== 'string') throw new Error('refused');
  h.path = path;
  const vars: RequestVars = { remoteAddr: '127.0.0.1', host: h.host ?? '', scheme: 'http', requestUri: h.target, serverPort: 8080, trustedPeer: false };
  return buildRequestHead(h, route, vars, false);
}

function viaAddon(buf: Buffer): string {
  const r = rewrite!(buf, limits, skip, [], false, '', '', address, false, 8080);
  if (r === null) throw new Error('not taken');
  return r.head;
}

for (const [name, buf] of [['browser GET', browserGet], ['small GET', smallGet]] as const) {
  if (viaJs(buf) !== viaAddon(buf)) {
    console.error(`bench precheck failed: ${name} differs`);
    process.exit(1);
  }
}

let sink = 0;
const bench = new Bench({ name: 'request head', time: 1000, warmupTime: 200 });
for (const [name, buf] of [['browser GET', browserGet], ['small GET', smallGet]] as const) {
  bench
    .add(`JS: parse + normalize + build, ${name} (${buf.length} B)`, () => {
      for (let i = 0; i < BATCH; i++) sink += viaJs(buf).length;
    })
    .add(`addon: requestHeadRewrite, ${name} (${buf.length} B)`, () => {
      for (let i = 0; i < BATCH; i++) sink += viaAddon(buf).length;
    });
}
await bench.run();
printBatchTable('request head: JS against the addon (N-API included)', bench, BATCH);
if (sink === -1) console.log(sink);
