// What reloads of a TLS-passthrough listener on the addon leave behind (src/tunnel/l4-native.ts): each reload makes
// a new SNI table and a compile per upstream and retires the previous ones; retired tables stay only for the
// refusals of connections still reading a ClientHello, RETIRED_KEPT (64) at most, and retired compiles stay until
// their last connection's record came. Driven here without a Portico, as a worker's accept-paths.ts drives it
// (plan, the listener's l4Use, serving): one connection opened before the first of 70 reloads in a row and closed
// after the last still gets its access line, the tables held stop at the bound, and nothing is held once that
// connection is gone. Skipped (loudly) without the addon's L4 part; CI makes that a failure.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { loadConfigText } from '../../src/config/load.js';
import type { AccessValue } from '../../src/core/log.js';
import { createLogger } from '../../src/core/log.js';
import { Metrics } from '../../src/core/metrics.js';
import { ConnectionRegistry } from '../../src/core/registry.js';
import { native } from '../../src/native/addon.js';
import { listenNative } from '../../src/native/io.js';
import { nativeL4 } from '../../src/native/l4.js';
import type { L4Context } from '../../src/tunnel/l4.js';
import { LimitStore } from '../../src/route/policy/store.js';
import { NativeL4 } from '../../src/tunnel/l4-native.js';
import { UpstreamPool } from '../../src/upstream/pool.js';
import { needNativeL4 } from '../helpers/native-io.js';
import { TEST_CERT, TEST_KEY } from '../helpers/portico.js';
import { until } from '../helpers/until.js';
import { roundTrip } from '../helpers/wire.js';

const RELOADS = 70;

/** A TLS backend that answers each record with `backend:` and it, and ends when the client ends. */
async function startTlsEcho(t: TestContext): Promise<number> {
  const [cert, key] = await Promise.all([readFile(TEST_CERT), readFile(TEST_KEY)]);
  const server = tls.createServer({ cert, key }, (s) => {
    s.on('error', () => s.destroy());
    s.on('data', (d: Buffer) => s.write(`backend:${d.toString()}`));
    s.on('end', () => s.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return (server.address() as AddressInfo).port;
}

test(`TLS passthrough on the addon: ${RELOADS} reloads in a row hold at most 64 retired SNI tables; a connection opened before the first and closed after the last gets its access line; nothing held once it is gone`, { timeout: 60_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const backend = await startTlsEcho(t);
  const registry = new ConnectionRegistry();
  const metrics = new Metrics();
  const log = createLogger('error');
  const l4 = NativeL4.create(registry, metrics, new LimitStore(() => {}));
  assert.ok(l4 instanceof NativeL4, String(l4));
  t.after(() => l4.forceClose());
  // the access lines of every generation land here (each runtime's context is its own object)
  const lines: Array<{ generation: number; fields: Readonly<Record<string, AccessValue>>; msg: string }> = [];

  // each reload: a new runtime (its own pool and context, as a changed upstream gives), planned against the listener
  const reload = (generation: number): number => {
    const text = JSON.stringify({
      listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: 'localhost', upstream: 'tls' }], handshake_timeout: `${5 + generation}s` } }],
      upstreams: { tls: { targets: [`127.0.0.1:${backend}`] } },
    });
    const loaded = loadConfigText(text, 'portico.yaml');
    assert.ok(loaded.ok, JSON.stringify(loaded));
    const pool = new UpstreamPool('tls', loaded.config.upstreams.tls);
    t.after(() => pool.close());
    const ctx: L4Context = { log, metrics, timeouts: { idle: 60_000, lifetime: 0 }, accessLog: { line: (_conn, _level, fields, msg) => lines.push({ generation, fields, msg }) } };
    const plan = l4.plan(loaded.config, 0, new Map([['tls', pool]]), ctx);
    assert.ok('config' in plan, JSON.stringify(plan));
    return plan.config;
  };

  // a listening fd (its port learnt through native accept, then released) served by the L4 thread
  const fd = native()!.reusePortListen('127.0.0.1', 0, 128);
  const probe = listenNative(fd, 'read', () => assert.fail('nothing connects to the probe'))!;
  const port = probe.address().port;
  assert.equal(probe.release(), fd);
  const addon = nativeL4().addon!;
  const first = reload(1);
  const listener = addon.l4Listen(fd, first);
  t.after(() => addon.l4Close(listener));
  l4.serving('127.0.0.1:0', first, log);

  const early = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
  t.after(() => early.destroy());
  await once(early, 'secureConnect');
  assert.equal(await roundTrip(early, 'one', 11), 'backend:one');

  // the reloads, back to back (no timer of NativeL4 runs in between), each a new table and compile
  for (let g = 2; g <= RELOADS + 1; g++) {
    const id = reload(g);
    addon.l4Use(listener, id);
    l4.serving('127.0.0.1:0', id, log);
  }
  const held = l4.retiredHeld();
  assert.equal(held.tables, 64, `the retired tables held stop at the bound (${JSON.stringify(held)})`);
  assert.equal(held.compiles, 1, `of the retired compiles only the one with an open connection is held (${JSON.stringify(held)})`);

  // the newest compile serves new connections; the early one still relays on its own
  const late = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
  t.after(() => late.destroy());
  await once(late, 'secureConnect');
  assert.equal(await roundTrip(late, 'two', 11), 'backend:two');
  assert.equal(await roundTrip(early, 'three', 13), 'backend:three');
  late.end();
  await once(late, 'close');
  early.end();
  await once(early, 'close');

  // both connections' lines, each in the context of the runtime whose compile it took
  const line = await until('the early connection\'s access line', () => lines.find((l) => l.generation === 1), (l) => l !== undefined, 10_000, 10);
  assert.equal(line!.msg, 'passthrough');
  assert.equal(line!.fields.sni, 'localhost');
  assert.equal(line!.fields.target, `127.0.0.1:${backend}`);
  const lateLine = await until('the late connection\'s access line', () => lines.find((l) => l.generation === RELOADS + 1), (l) => l !== undefined, 10_000, 10);
  assert.equal(lateLine!.msg, 'passthrough');
  assert.equal(lines.length, 2, JSON.stringify(lines));

  // the early compile leaves once its record came; the tables stay at the bound (nothing else lets them go)
  await until('no retired compile held', () => l4.retiredHeld(), (h) => h.compiles === 0, 10_000, 20);
  assert.deepEqual(l4.retiredHeld(), { compiles: 0, tables: 64 });
});
