// Micro-benchmark of the WebSocket accept value a 101 check needs: JavaScript's (rewrite.ts websocketAccept, Node's
// one-shot crypto.hash) against the addon's (ws-accept.h through its test export wsAccept, N-API included: an upper
// bound of what ioAnswerUpgradeKey pays for it). PORTICO_NATIVE_ADDON=<file> times another build of the addon in the
// same way (the before of a change to ws-accept.h). Checks both give RFC 6455's value before timing (STYLE.md 14);
// not a test. Run: npm run bench:micro:ws-accept
import { Bench } from 'tinybench';
import { printBatchTable } from './batch-table.js';
import { websocketAccept } from '../../src/handlers/rewrite.js';
import { native } from '../../src/native/addon.js';

const BATCH = 100;
const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const WANT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';

const wsAccept = (native() as unknown as { wsAccept?: (key: string) => string | null } | undefined)?.wsAccept;
if (wsAccept === undefined) {
  console.error('the native addon (with wsAccept) is not built: npm run build:native');
  process.exit(1);
}
if (websocketAccept(KEY) !== WANT || wsAccept(KEY) !== WANT) {
  console.error("bench precheck failed: an accept value is not RFC 6455's");
  process.exit(1);
}

let sink = 0;
const bench = new Bench({ name: 'ws accept', time: 1000, warmupTime: 200 });
bench
  .add(`JS: websocketAccept (${KEY.length}-byte key)`, () => {
    for (let i = 0; i < BATCH; i++) sink += websocketAccept(KEY).length;
  })
  .add(`addon: wsAccept (${KEY.length}-byte key)${process.env.PORTICO_NATIVE_ADDON ? ` of ${process.env.PORTICO_NATIVE_ADDON}` : ''}`, () => {
    for (let i = 0; i < BATCH; i++) sink += wsAccept(KEY)!.length;
  });
await bench.run();
printBatchTable('WebSocket accept value: JS against the addon (N-API included)', bench, BATCH);
if (sink === -1) console.log(sink);
