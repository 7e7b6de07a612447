// Micro-benchmark of FastCGI's request records for a bodyless GET: JavaScript's (parseRequestHead, then what
// handlers/fastcgi.ts does per request: requestParams + encodeRequestStart; and those two alone, the head parsed
// already) against the addon's (fcgi-request.cc through its test export fcgiRequestRecords, which also pays N-API
// for fourteen arguments, a plan and a connection made per call, and the Buffer it returns: an upper bound). Checks
// that both give the same bytes before timing (STYLE.md 14); not a test. Writes each case (head, fixed pairs, script
// pairs, expected records) to build/bench/fcgi-request/ for bench/native/fcgi-request-bench.cc, which times the C++
// alone. Run: npm run bench:micro:fcgi-request
import { mkdirSync, writeFileSync } from 'node:fs';
import { Bench } from 'tinybench';
import { printBatchTable } from './batch-table.js';
import { parseRequestHead, type HeadLimits, type RequestHead } from '../../src/wire/http-head.js';
import { encodeRequestStart } from '../../src/wire/fastcgi.js';
import { fixedParams, nativeParamsPlan, requestParams, scriptParams, type ParamContext } from '../../src/handlers/fastcgi-params.js';
import type { Script } from '../../src/handlers/fastcgi-script.js';
import type { CompiledFastcgi } from '../../src/route/router.js';
import { native } from '../../src/native/addon.js';
import { browserGet } from './heads.js';

const LIMITS: HeadLimits = { headerSize: 32 * 1024, uriSize: 8 * 1024, headers: 100 };
const BATCH = 100;

type Records = (...args: unknown[]) => Buffer | null;
const records = (native() as unknown as { fcgiRequestRecords?: Records } | undefined)?.fcgiRequestRecords;
if (records === undefined) {
  console.error('the native addon (with fcgiRequestRecords) is not built: npm run build:native');
  process.exit(1);
}

/** wrk's request to PHP hello (bench/scenarios/php.ts's load). */
const smallGet = Buffer.from('GET /index.php HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n', 'latin1');
const f: CompiledFastcgi = Object.freeze({ root: '/srv/www/html', index: 'index.php', split: null, params: [] });
const script: Script = { scriptName: '/index.php', pathInfo: '', uri: '/index.php', filename: '/srv/www/html/index.php' };
const ctx: ParamContext = {
  vars: { remoteAddr: '127.0.0.1', host: '', scheme: 'http', requestUri: '', serverPort: 8080, trustedPeer: false },
  remotePort: '53122',
  serverAddr: '127.0.0.1',
  forwarding: { trusts: () => false, xForwardedFor: 'replace', forwarded: false },
};
const plan = nativeParamsPlan(f);
const scriptBytes = Buffer.from(scriptParams(f, script), 'latin1');
const loopback = Uint8Array.from([127, 0, 0, 1]);
const limits = [LIMITS.headerSize, LIMITS.uriSize, LIMITS.headers];

function parse(buf: Buffer): RequestHead {
  const r = parseRequestHead(buf, LIMITS);
  if (r.kind !== 'done') throw new Error('not parsed');
  return r.head;
}

function params(h: RequestHead): Buffer {
  const c = { ...ctx, vars: { ...ctx.vars, host: h.host ?? '', requestUri: h.target } };
  return encodeRequestStart(1, true, fixedParams(f), requestParams(h, script, f, c), true);
}

function viaAddon(buf: Buffer): Buffer {
  const r = records!(buf, limits, plan.fixed, plan.overridden, plan.perRequest, scriptBytes, loopback, 53122, loopback, 8080, false, false, 1, true);
  if (r === null) throw new Error('not taken');
  return r;
}

const cases = [
  ['browser GET', browserGet],
  ['small GET', smallGet],
] as const;
const dir = 'build/bench/fcgi-request';
mkdirSync(dir, { recursive: true });
for (const [name, buf] of cases) {
  const js = params(parse(buf));
  if (!js.equals(viaAddon(buf))) {
    console.error(`bench precheck failed: ${name} differs`);
    process.exit(1);
  }
  const file = name.replace(' ', '-');
  writeFileSync(`${dir}/${file}.head`, buf);
  writeFileSync(`${dir}/${file}.fixed`, plan.fixed);
  writeFileSync(`${dir}/${file}.script`, scriptBytes);
  writeFileSync(`${dir}/${file}.records`, js);
}

let sink = 0;
const bench = new Bench({ name: 'fcgi request', time: 1000, warmupTime: 200 });
for (const [name, buf] of cases) {
  const head = parse(buf);
  bench
    .add(`JS: parse + requestParams + encodeRequestStart, ${name} (${buf.length} B)`, () => {
      for (let i = 0; i < BATCH; i++) sink += params(parse(buf)).length;
    })
    .add(`JS: requestParams + encodeRequestStart (head parsed), ${name}`, () => {
      for (let i = 0; i < BATCH; i++) sink += params(head).length;
    })
    .add(`addon: fcgiRequestRecords, ${name} (${buf.length} B)`, () => {
      for (let i = 0; i < BATCH; i++) sink += viaAddon(buf).length;
    });
}
await bench.run();
printBatchTable('FastCGI request records: JS against the addon (N-API included)', bench, BATCH);
if (sink === -1) console.log(sink);
