// tcp listeners whose upstream follows a DNS name (`resolve: true`), through the real `portico start` and a DNS
// server the test runs on loopback (test/helpers/dns-server.ts), on the addon (src/tunnel/l4-native.ts compiles the
// listener again when discovery changes the targets) and on the JS path (PORTICO_NATIVE_L4=0), same assertions:
// connections spread over the discovered targets; the answer changes (one target added, one removed) and new
// connections follow it while an open connection to the removed one keeps relaying, then is logged when it ends;
// an answer that did not change compiles nothing; a drained target that stayed stays drained across the change; a
// name with no address yet closes connections as UPSTREAM_UNAVAILABLE until it answers. Backends share one port on
// 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all loopback), as the pods of a headless service do.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import type { ConfigInput } from '../../src/config/schema.js';
import { adminStatus, adminUrl, statusUntil } from '../helpers/admin.js';
import { request } from '../helpers/clients.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import { until } from '../helpers/until.js';
import { endedWithoutReply, roundTrip } from '../helpers/wire.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { needNativeL4 } from '../helpers/native-io.js';
import { startTagEcho } from '../helpers/tcp-server.js';

const SERVED = 'L4 listener served by the addon (accept, connect, splice)';
const RECOMPILED = 'L4 listener compiled again for its discovered targets';
const CHANGED = 'upstream targets changed by discovery';
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'] as const;

/** Echoes tagged "1:", "2:", "3:" on 127.0.0.1..3, one port for all; a few tries when that port is taken on one. */
async function threeOnOnePort(t: TestContext): Promise<number> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 10; attempt++) {
    const port = await startTagEcho(t, '1:', { host: HOSTS[0] });
    try {
      await startTagEcho(t, '2:', { host: HOSTS[1], port });
      await startTagEcho(t, '3:', { host: HOSTS[2], port });
      return port;
    } catch (err) {
      lastError = err; // taken on another loopback address: another port (what was opened closes after the test)
    }
  }
  throw new Error(`no port free on 127.0.0.1-3 after 10 tries: ${String(lastError)}`);
}

function config(dns: TestDnsServer, port: number, upstream: Record<string, unknown> = {}): ConfigInput {
  return {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'svc' }],
    upstreams: { svc: { targets: [{ address: `svc.test:${port}`, resolve: true }], ...upstream } },
    resolver: { servers: [`127.0.0.1:${dns.port}`], timeout: '500ms', min_ttl: '200ms', backoff: { min: '200ms', max: '1s' }, family: 'ipv4' },
    admin: { address: '127.0.0.1:0' },
  } as ConfigInput;
}

function answer(dns: TestDnsServer, hosts: readonly string[]): void {
  dns.set('svc.test', { A: hosts.map((address) => ({ address, ttl: 1 })) });
}

async function connect(t: TestContext, port: number): Promise<net.Socket> {
  const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  t.after(() => c.destroy());
  await once(c, 'connect');
  return c;
}

/**
 * Which backend ("1", "2" or "3") answered a new connection that sent `first`; `keep`: left open (else closed at
 * once).
 */
async function tagOf(t: TestContext, portico: Portico, keep = false, first = 'hi'): Promise<{ tag: string; socket: net.Socket }> {
  const c = await connect(t, portico.ports[0]);
  c.setDefaultEncoding('latin1'); // a ClientHello's bytes as written
  const got = await roundTrip(c, first, first.length + 2);
  if (!keep) c.destroy();
  return { tag: got.slice(0, got.indexOf(':')), socket: c };
}

async function tagsOf(t: TestContext, portico: Portico, n: number, first?: string): Promise<string[]> {
  const tags: string[] = [];
  for (let i = 0; i < n; i++) tags.push((await tagOf(t, portico, false, first)).tag);
  return tags;
}

/** The listener is on the path the test asks for: the addon (said in the log), or not (nothing said of it). */
async function servedBy(portico: Portico, onAddon: boolean): Promise<void> {
  if (onAddon) await portico.waitForLog((l) => l.msg === SERVED);
  else assert.equal(portico.logs.find((l) => l.msg === SERVED), undefined);
}

const recompiles = (portico: Portico): LogLine[] => portico.logs.filter((l) => l.msg === RECOMPILED);

/** Connections until backend `tag` answers one (the worker has the new set: the primary's line comes first), at most 40. */
async function untilTag(t: TestContext, portico: Portico, tag: string, first?: string): Promise<void> {
  for (let i = 0; i < 40; i++) if ((await tagOf(t, portico, false, first)).tag === tag) return;
  assert.fail(`backend ${tag} never answered in 40 connections`);
}

for (const onAddon of [true, false]) {
  const label = onAddon ? 'discovered tcp upstream on the addon' : 'discovered tcp upstream on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };

  test(`${label}: connections spread over the name's addresses; the answer changes and new connections follow, an open one to the removed target relays on and is logged at its end; an unchanged answer compiles nothing`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const dns = await startDnsServer(t);
    const port = await threeOnOnePort(t);
    answer(dns, [HOSTS[0], HOSTS[1]]);
    const portico = await startPortico(t, config(dns, port), env);
    await servedBy(portico, onAddon);
    assert.deepEqual(new Set(await tagsOf(t, portico, 6)), new Set(['1', '2']));

    // a connection to 127.0.0.1 held open across the change
    let old: net.Socket | undefined;
    for (let i = 0; i < 4 && old === undefined; i++) {
      const { tag, socket } = await tagOf(t, portico, true);
      if (tag === '1') old = socket;
      else socket.destroy();
    }
    assert.ok(old !== undefined, 'a connection reached 127.0.0.1');

    // the same answer, looked up again (TTL 1 s): nothing changes, nothing is compiled again
    await dns.nextQuery((q) => q.name === 'svc.test');
    await dns.nextQuery((q) => q.name === 'svc.test');
    answer(dns, [HOSTS[1], HOSTS[2]]);
    await portico.waitForLog((l) => l.msg === CHANGED && Array.isArray(l.removed) && l.removed.includes(`${HOSTS[0]}:${port}`), 15_000);
    if (onAddon) {
      await portico.waitForLog((l) => l.msg === RECOMPILED, 10_000);
      assert.equal(recompiles(portico).length, 1, 'one compile for the one change, none for the answers that repeated it');
    }
    await untilTag(t, portico, '3');
    const after = await tagsOf(t, portico, 6);
    assert.deepEqual(new Set(after), new Set(['2', '3']), `after the change: ${after.join(',')}`);

    // the connection to the target that left relays on, its target listed as leaving with its load
    assert.equal(await roundTrip(old, 'still', 7), '1:still');
    const s = await statusUntil(portico, 'the removed target listed as leaving with its open connection', (x) => x.upstreams.svc?.some((r) => r.target === `${HOSTS[0]}:${port}` && r.leaving === true && r.active >= 1) === true);
    assert.equal(s.upstreams.svc.find((r) => r.target === `${HOSTS[0]}:${port}`)?.available, false);

    // its end: one access line naming the target that left, then the target is gone from /status
    const ended = once(old, 'end');
    old.end();
    await ended;
    const line = await portico.waitForLog((l) => l.msg === 'tcp' && l.target === `${HOSTS[0]}:${port}` && l.bytesIn === 7);
    assert.equal(line.upstream, 'svc');
    assert.equal(line.bytesIn, 7); // "hi" and "still"
    assert.equal(line.bytesOut, 11); // "1:hi" and "1:still"
    assert.ok(line.closedBy === 'client' || line.closedBy === 'upstream', `closedBy ${String(line.closedBy)}`);
    await statusUntil(portico, 'the removed target no longer listed', (x) => x.upstreams.svc?.some((r) => r.target === `${HOSTS[0]}:${port}`) === false);
    if (onAddon) assert.equal(recompiles(portico).length, 1);
    else assert.equal(recompiles(portico).length, 0);
  });

  test(`${label}: least_conn across a change of the answer: the connections still open on the targets that stayed count in the new picks`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const dns = await startDnsServer(t);
    const port = await threeOnOnePort(t);
    answer(dns, [HOSTS[0], HOSTS[1]]);
    const portico = await startPortico(t, config(dns, port, { balance: 'least_conn' }), env);
    await servedBy(portico, onAddon);
    const load = (s: Awaited<ReturnType<typeof adminStatus>>, host: string): number | undefined => s.upstreams.svc?.find((r) => r.target === `${host}:${port}`)?.active;
    // four held: each to the target with fewer (a tie either way), so two and two; then 2's close: 1 has two, 2 none
    const held: Array<{ tag: string; socket: net.Socket }> = [];
    for (let i = 0; i < 4; i++) held.push(await tagOf(t, portico, true));
    assert.deepEqual(held.map((h) => h.tag).sort(), ['1', '1', '2', '2']);
    for (const h of held) if (h.tag === '2') h.socket.destroy();
    await statusUntil(portico, "2's connections gone, 1's two counted", (s) => load(s, HOSTS[1]) === 0 && load(s, HOSTS[0]) === 2);
    // 3 joins: a new compile on the addon, whose own counts start at zero
    const compiled = recompiles(portico).length;
    answer(dns, HOSTS);
    await statusUntil(portico, '3 listed', (s) => load(s, HOSTS[2]) === 0);
    if (onAddon) await until('the listener compiled again', async () => recompiles(portico).length, (n) => n > compiled, 10_000);
    // 1 still holds two: the next two go to 2 and 3, not to 1
    const next = [(await tagOf(t, portico, true)).tag, (await tagOf(t, portico, true)).tag];
    assert.deepEqual(next.sort(), ['2', '3']);
  });

  test(`${label}: a drained target that stays in the answer stays drained when a target joins`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const dns = await startDnsServer(t);
    const port = await threeOnOnePort(t);
    answer(dns, [HOSTS[0], HOSTS[1]]);
    const portico = await startPortico(t, config(dns, port), env);
    await servedBy(portico, onAddon);
    const drain = await request(`${adminUrl(portico)}/upstreams/svc/targets/${HOSTS[1]}:${port}/drain`, { method: 'POST', headers: { 'x-portico-admin': '1' } });
    assert.equal(drain.status, 200, drain.body.toString());
    // the drain reaches the worker, then the addon within a push (100 ms): connections until only 1 answers
    await until('only 127.0.0.1 answers', () => tagsOf(t, portico, 4), (tags) => tags.every((x) => x === '1'), 10_000, 0);

    answer(dns, [HOSTS[0], HOSTS[1], HOSTS[2]]);
    await portico.waitForLog((l) => l.msg === CHANGED && Array.isArray(l.added) && l.added.includes(`${HOSTS[2]}:${port}`), 15_000);
    if (onAddon) await portico.waitForLog((l) => l.msg === RECOMPILED, 10_000);
    await untilTag(t, portico, '3');
    const after = await tagsOf(t, portico, 8);
    assert.deepEqual(new Set(after), new Set(['1', '3']), `after the change: ${after.join(',')}`);
    const s = await adminStatus(portico);
    assert.equal(s.health.svc.find((h) => h.target === `${HOSTS[1]}:${port}`)?.draining, true);
  });

  test(`${label}: a name with no address yet: each connection is closed without a byte and logged UPSTREAM_UNAVAILABLE; once it answers, connections reach it`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const dns = await startDnsServer(t);
    const port = await threeOnOnePort(t);
    dns.set('svc.test', {}); // the name exists, with no address (NODATA)
    const portico = await startPortico(t, config(dns, port), env);
    await servedBy(portico, onAddon);
    const c = await connect(t, portico.ports[0]);
    await endedWithoutReply(c);
    const line = await portico.waitForLog((l) => l.msg === 'tcp' && l.closedBy === 'upstream_error');
    assert.equal(line.level, 'warn');
    assert.deepEqual(line.err, { code: 'UPSTREAM_UNAVAILABLE', message: 'no available target in upstream "svc"' });
    assert.equal(line.target, undefined);
    assert.equal(line.upstream, 'svc');

    answer(dns, [HOSTS[2]]);
    await portico.waitForLog((l) => l.msg === CHANGED && Array.isArray(l.added) && l.added.includes(`${HOSTS[2]}:${port}`), 15_000);
    if (onAddon) await portico.waitForLog((l) => l.msg === RECOMPILED, 10_000);
    await untilTag(t, portico, '3');
    assert.deepEqual(new Set(await tagsOf(t, portico, 3)), new Set(['3']));
  });

  test(`${label.replace('tcp upstream', 'upstream of a TLS passthrough name')}: a name's connections follow the answer; the fixed upstream beside it in the name table goes on`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const dns = await startDnsServer(t);
    const port = await threeOnOnePort(t);
    answer(dns, [HOSTS[0]]);
    const base = config(dns, port);
    const portico = await startPortico(t, {
      ...base,
      listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: '*.pass.test', upstream: 'svc' }, { sni: 'fixed.test', upstream: 'fixed' }] } }],
      upstreams: { ...base.upstreams, fixed: { targets: [`${HOSTS[1]}:${port}`] } },
    } as ConfigInput, env);
    await servedBy(portico, onAddon);
    // the backends echo the ClientHello behind their tag: what the name reached
    const pass = (await captureNodeHello({ servername: 'a.pass.test' })).toString('latin1');
    const fixed = (await captureNodeHello({ servername: 'fixed.test' })).toString('latin1');
    assert.deepEqual(new Set(await tagsOf(t, portico, 3, pass)), new Set(['1']));
    assert.deepEqual(new Set(await tagsOf(t, portico, 2, fixed)), new Set(['2']));

    answer(dns, [HOSTS[2]]);
    await portico.waitForLog((l) => l.msg === CHANGED && Array.isArray(l.added) && l.added.includes(`${HOSTS[2]}:${port}`), 15_000);
    if (onAddon) await portico.waitForLog((l) => l.msg === RECOMPILED, 10_000);
    await untilTag(t, portico, '3', pass);
    assert.deepEqual(new Set(await tagsOf(t, portico, 3, pass)), new Set(['3']));
    assert.deepEqual(new Set(await tagsOf(t, portico, 2, fixed)), new Set(['2']));
    const line = await portico.waitForLog((l) => l.msg === 'passthrough' && l.sni === 'a.pass.test' && l.target === `${HOSTS[2]}:${port}`);
    assert.equal(line.upstream, 'svc');
  });
}
