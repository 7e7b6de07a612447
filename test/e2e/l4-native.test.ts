// tcp listeners served wholly by the addon (src/native/l4.cc, src/tunnel/l4-native.ts) through the real `portico
// start`: the listener says it is native, echo with half-close, a refused target skipped for the next one, every
// target down (closed and logged), the PROXY header a backend receives, a reload that changes targets without
// cutting open connections, a config the addon does not take (JS path, reason logged), and 10,000 idle
// connections in one worker with the fds back to the baseline after they close.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import tls from 'node:tls';
import fc from 'fast-check';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { native } from '../../src/native/addon.js';
import { parseProxyHeader, type ProxyHeader } from '../../src/wire/proxy-protocol.js';
import { FD_RESERVE } from '../../src/worker/fd-limit.js';
import { adminStatus, adminUrl, statusUntil } from '../helpers/admin.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { mutate, mutationArb as mutationArbOf } from '../helpers/fuzz.js';
import { closedPort } from '../helpers/backends.js';
import { PYTHON, request } from '../helpers/clients.js';
import { FIXTURES } from '../helpers/paths.js';
import { TEST_CERT, TEST_KEY, reloadPortico, startPortico, type LogLine, type Portico } from '../helpers/portico.js';
import { fdCount, tcpTimer } from '../helpers/proc-stats.js';
import { until } from '../helpers/until.js';
import { endedWithoutReply, roundTrip, tlsHello } from '../helpers/wire.js';
import { needNativeL4 } from '../helpers/native-io.js';
import { startTagEcho } from '../helpers/tcp-server.js';


/** The addon's L4 part here, or a loud skip: a missing build fails under PORTICO_REQUIRE_PEERS=1, a deliberate switch-off does not. */
async function listen(t: TestContext, server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

async function connect(t: TestContext, port: number): Promise<net.Socket> {
  const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  t.after(() => c.destroy());
  await once(c, 'connect');
  return c;
}

function servedByAddon(portico: Portico): Promise<unknown> {
  return portico.waitForLog((l) => l.msg === 'L4 listener served by the addon (accept, connect, splice)');
}

/** The listener is on the path the test asks for: the addon (said in the log), or not (nothing said of it). */
async function servedBy(portico: Portico, onAddon: boolean): Promise<void> {
  if (onAddon) await servedByAddon(portico);
  else assert.equal(portico.logs.find((l) => l.msg === 'L4 listener served by the addon (accept, connect, splice)'), undefined);
}

/** Echoes tagged A and B behind one tcp listener (upstream `echo`, with `extra`), on the addon or on the JS path. */
async function twoTargets(t: TestContext, onAddon: boolean, extra: Record<string, unknown>): Promise<{ a: number; b: number; portico: Portico }> {
  const a = await startTagEcho(t, 'A:');
  const b = await startTagEcho(t, 'B:');
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
    upstreams: { echo: { targets: [`127.0.0.1:${a}`, `127.0.0.1:${b}`], ...extra } },
    admin: { address: '127.0.0.1:0' },
  }, onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } });
  await servedBy(portico, onAddon);
  return { a, b, portico };
}

// the same behaviour on both paths: the addon's, and the JS path (PORTICO_NATIVE_L4=0) it must stay equal to
for (const onAddon of [true, false]) {
  const label = onAddon ? 'tcp listener on the addon' : 'tcp listener on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };
  test(`${label}: served by the addon; echo, then half-close each way; one access line with the splice relay`, { timeout: 60_000 }, async (t) => {
      if (onAddon && !needNativeL4(t)) return;
    const echo = await startTagEcho(t);
    const portico = await startPortico(t, { workers: 1, listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }], upstreams: { echo: { targets: [`127.0.0.1:${echo}`] } } }, env);
    await servedBy(portico, onAddon);
    const c = await connect(t, portico.ports[0]);
    assert.equal(await roundTrip(c, 'hello', 5), 'hello');
    // the client's FIN reaches the backend, which still answers on its open side, then FINs back
    const ended = once(c, 'end');
    c.end();
    await ended;
    const line = await portico.waitForLog((l) => l.msg === 'tcp');
    assert.equal(line.mode, 'tcp');
    assert.equal(line.relay, onAddon ? 'splice' : native() === undefined ? 'js' : 'splice');
    assert.equal(line.upstream, 'echo');
    assert.equal(line.target, `127.0.0.1:${echo}`);
    assert.equal(line.remoteAddr, '127.0.0.1');
    assert.equal(line.bytesIn, 5);
    assert.equal(line.bytesOut, 5);
    assert.ok(line.closedBy === 'client' || line.closedBy === 'upstream', `closedBy ${String(line.closedBy)}`);
  });

  test(`${label}: a refused target is skipped for the next one (each connection still reaches the echo), and passive health takes it out`, { timeout: 60_000 }, async (t) => {
      if (onAddon && !needNativeL4(t)) return;
    const dead = await closedPort();
    const echo = await startTagEcho(t, 'e:');
    const portico = await startPortico(t, {
      workers: 1,
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'mixed' }],
      upstreams: { mixed: { targets: [`127.0.0.1:${dead}`, `127.0.0.1:${echo}`] } },
      admin: { address: '127.0.0.1:0' },
    }, env);
    await servedBy(portico, onAddon);
    for (let i = 0; i < 4; i++) {
      const c = await connect(t, portico.ports[0]);
      assert.equal(await roundTrip(c, `n${i}`, 4), `e:n${i}`);
      c.destroy();
    }
    const lines = await until('four access lines', () => portico.logs.filter((l) => l.msg === 'tcp'), (ls) => ls.length >= 4);
    for (const l of lines) assert.equal(l.target, `127.0.0.1:${echo}`);
    // the refused connect was reported to the pool: passive health marks the target down
    await statusUntil(portico, 'the refused target passively down', (s) => s.upstreams.mixed?.some((x) => x.target === `127.0.0.1:${dead}` && !x.available) === true);
  });

  test(`${label}: its only target refuses: the client is closed without a byte, and a warn line gives the connect error`, { timeout: 60_000 }, async (t) => {
      if (onAddon && !needNativeL4(t)) return;
    const dead = await closedPort();
    const portico = await startPortico(t, { workers: 1, listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'down' }], upstreams: { down: { targets: [`127.0.0.1:${dead}`] } } }, env);
    await servedBy(portico, onAddon);
    const c = await connect(t, portico.ports[0]);
    await endedWithoutReply(c);
    const line = await portico.waitForLog((l) => l.msg === 'tcp' && l.closedBy === 'upstream_error');
    assert.equal(line.level, 'warn');
    assert.deepEqual(line.err, { code: 'UPSTREAM_CONNECT_REFUSED', message: 'upstream connect failed: ECONNREFUSED' });
    assert.equal(line.target, undefined);
  });

  test(`${label}: send_proxy_protocol v1: the backend reads the real client address and the listener, then the bytes`, { timeout: 60_000 }, async (t) => {
      if (onAddon && !needNativeL4(t)) return;
    const seen: Array<(h: { header: ProxyHeader; after: string }) => void> = [];
    const server = net.createServer((s) => {
      s.on('error', () => s.destroy());
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        const r = parseProxyHeader(buf);
        if (r.kind === 'done' && buf.length >= r.used + 4) {
          seen.shift()?.({ header: r.header, after: buf.subarray(r.used).toString() });
          s.end('ok');
        }
      });
    });
    const backend = await listen(t, server);
    const portico = await startPortico(t, {
      workers: 1,
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'pp' }],
      upstreams: { pp: { targets: [`127.0.0.1:${backend}`], send_proxy_protocol: 'v1' } },
    }, env);
    await servedBy(portico, onAddon);
    const got = new Promise<{ header: ProxyHeader; after: string }>((resolve) => seen.push(resolve));
    const c = await connect(t, portico.ports[0]);
    c.write('ping');
    const { header, after } = await got;
    assert.equal(header.version, 1);
    assert.equal(header.family, 'tcp4');
    assert.deepEqual(header.source, { address: '127.0.0.1', port: c.localPort });
    assert.deepEqual(header.destination, { address: '127.0.0.1', port: portico.ports[0] });
    assert.equal(after, 'ping');
  });

  test(`${label}: unix socket targets: a missing socket is skipped for the next one; the PROXY v2 header, the bytes and a half-close go through the socket`, { timeout: 60_000 }, async (t) => {
      if (onAddon && !needNativeL4(t)) return;
    const dir = await mkdtemp(path.join(tmpdir(), 'portico-l4-unix-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'echo.sock');
    const missing = path.join(dir, 'missing.sock');
    const heads: ProxyHeader[] = [];
    const sockets = new Set<net.Socket>();
    // reads the PROXY header, then echoes with "u:" in front; ends its side after the client's FIN
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
      let buf: Buffer | undefined = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        if (buf === undefined) return void s.write(`u:${d.toString('latin1')}`);
        buf = Buffer.concat([buf, d]);
        const r = parseProxyHeader(buf);
        if (r.kind !== 'done') return;
        heads.push(r.header);
        const rest = buf.subarray(r.used);
        buf = undefined;
        if (rest.length > 0) s.write(`u:${rest.toString('latin1')}`);
      });
      s.on('end', () => s.end('bye'));
    });
    server.listen(sock);
    await once(server, 'listening');
    t.after(() => {
      for (const s of sockets) s.destroy();
      server.close();
    });
    const portico = await startPortico(t, {
      workers: 1,
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'local' }],
      upstreams: { local: { targets: [`unix:${missing}`, `unix:${sock}`], send_proxy_protocol: 'v2' } },
    }, env);
    await servedBy(portico, onAddon);
    for (let i = 0; i < 3; i++) {
      const c = await connect(t, portico.ports[0]);
      assert.equal(await roundTrip(c, `n${i}`, 4), `u:n${i}`);
      const rest: Buffer[] = [];
      c.on('data', (d: Buffer) => rest.push(d));
      const ended = once(c, 'end');
      c.end(); // the client's FIN reaches the unix socket's peer, which answers on its open side, then ends
      await ended;
      assert.equal(Buffer.concat(rest).toString(), 'bye');
      c.destroy();
    }
    assert.equal(heads.length, 3);
    for (const h of heads) {
      assert.equal(h.version, 2);
      assert.equal(h.family, 'tcp4');
      assert.deepEqual(h.destination, { address: '127.0.0.1', port: portico.ports[0] });
    }
    const lines = await until('three access lines', () => portico.logs.filter((l) => l.msg === 'tcp'), (ls) => ls.length >= 3);
    for (const l of lines) {
      assert.equal(l.target, `unix:${sock}`);
      assert.equal(l.bytesIn, 2);
      assert.equal(l.bytesOut, 7); // "u:nI" and "bye"
    }
  });
}

// half_close: false (nginx stream's default) on every L4 path: the addon's, the JS path with the splice relay
// (PORTICO_NATIVE_L4=0) and the JS relay (PORTICO_NATIVE=0). The first FIN either way closes both sides.
for (const [label, env] of [
  ['addon', {}],
  ['JS path, splice relay (PORTICO_NATIVE_L4=0)', { PORTICO_NATIVE_L4: '0' }],
  ['JS relay (PORTICO_NATIVE=0)', { PORTICO_NATIVE: '0' }],
] as const) {
  test(`half_close: false, ${label}: the client's FIN closes both sides (the backend's later answer never comes); the backend's FIN does too`, { timeout: 60_000 }, async (t) => {
    if (label === 'addon' && !needNativeL4(t)) return;
    // echoes; after the peer's FIN it answers "late" on its open side, then ends (a half-close relay delivers it).
    // A connection that opens with "first" gets "bye" and the backend's FIN at once, and stays open for reading.
    let ends = 0;
    const sockets = new Set<net.Socket>();
    const backendEnd = new EventEmitter();
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
      s.on('data', (d: Buffer) => {
        if (d.toString('latin1') === 'first') s.end('bye');
        else s.write(d);
      });
      s.on('end', () => {
        ends++;
        backendEnd.emit('end');
        if (s.writable) s.end('late');
      });
    });
    t.after(() => {
      for (const s of sockets) s.destroy();
    });
    const backend = await listen(t, server);
    const portico = await startPortico(t, {
      workers: 1,
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'b', half_close: false }],
      upstreams: { b: { targets: [`127.0.0.1:${backend}`] } },
    }, { env });
    if (label === 'addon') await servedByAddon(portico);

    // the client's FIN first: Portico closes both; the backend sees the FIN, its "late" meets a closed socket
    const c = await connect(t, portico.ports[0]);
    assert.equal(await roundTrip(c, 'ping', 4), 'ping');
    let after = '';
    c.on('data', (d: Buffer) => (after += d.toString('latin1')));
    const clientEnd = once(c, 'end');
    c.end();
    await clientEnd;
    const line = await portico.waitForLog((l) => l.msg === 'tcp');
    assert.equal(line.closedBy, 'client');
    assert.equal(line.bytesIn, 4);
    assert.equal(line.bytesOut, 4);
    if (ends === 0) await once(backendEnd, 'end');
    assert.equal(after, '', 'nothing after the client\'s FIN: the tunnel closed at it');

    // the backend's FIN first: Portico closes the client's side too (FIN after "bye") and the upstream's, while the
    // client has not ended: the backend sees a FIN of its own connection
    const c2 = net.connect({ host: '127.0.0.1', port: portico.ports[0], allowHalfOpen: true });
    t.after(() => c2.destroy());
    await once(c2, 'connect');
    let got = '';
    c2.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const backendSawEnd = once(backendEnd, 'end');
    const c2End = once(c2, 'end');
    c2.write('first');
    await c2End;
    assert.equal(got, 'bye');
    await backendSawEnd;
    const line2 = await portico.waitForLog((l) => l.msg === 'tcp' && l !== line);
    assert.equal(line2.closedBy, 'upstream');
  });
}

test('native tcp listener: a reload moves new connections to the new target; an open connection keeps its own', { timeout: 90_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const a = await startTagEcho(t, 'A:');
  const b = await startTagEcho(t, 'B:');
  const config = (target: number) => ({ workers: 1, listeners: [{ address: '127.0.0.1:0', mode: 'tcp' as const, upstream: 'echo' }], upstreams: { echo: { targets: [`127.0.0.1:${target}`] } } });
  const portico = await startPortico(t, config(a));
  await servedByAddon(portico);
  const before = await connect(t, portico.ports[0]);
  assert.equal(await roundTrip(before, 'x', 3), 'A:x');
  // the same listener (its socket kept): the addon's listener takes the new compile
  const r = await reloadPortico(portico, config(b));
  assert.equal(r.code, 0, r.stderr);
  const after = await connect(t, portico.ports[0]);
  assert.equal(await roundTrip(after, 'y', 3), 'B:y');
  // the connection opened before the reload still talks to A
  assert.equal(await roundTrip(before, 'z', 3), 'A:z');
  const closed = once(before, 'close');
  before.end();
  await closed;
  const line = await portico.waitForLog((l) => l.msg === 'tcp' && l.target === `127.0.0.1:${a}`);
  assert.equal(line.bytesIn, 2);
});

test('native tcp listener: a connection of a replaced compile that ends after the reload is logged and leaves no load behind', { timeout: 90_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const a = await startTagEcho(t, 'A:');
  // least_conn: the worker reports its load (the retired pool's included) and /status shows what the primary saw
  const config = (connect: string) => ({
    workers: 1,
    listeners: [{ address: '127.0.0.1:0', mode: 'tcp' as const, upstream: 'echo' }],
    upstreams: { echo: { targets: [`127.0.0.1:${a}`], balance: 'least_conn' as const, timeouts: { connect } } },
    admin: { address: '127.0.0.1:0' },
  });
  const portico = await startPortico(t, config('2s'));
  await servedByAddon(portico);
  const before = await connect(t, portico.ports[0]);
  assert.equal(await roundTrip(before, 'x', 3), 'A:x');
  await statusUntil(portico, 'the open connection counted', (s) => s.upstreams.echo?.[0]?.active === 1);
  const r = await reloadPortico(portico, config('3s')); // a new pool and compile; `before` keeps the old one
  assert.equal(r.code, 0, r.stderr);
  // the old compile's connection ends: whenever its record comes, it is logged, and its count leaves the target
  for (let i = 0; i < 5; i++) {
    const c = await connect(t, portico.ports[0]);
    assert.equal(await roundTrip(c, `n${i}`, 4), `A:n${i}`);
    c.destroy();
  }
  const closed = once(before, 'close');
  before.end();
  await closed;
  const line = await portico.waitForLog((l) => l.msg === 'tcp' && l.bytesIn === 1 && l.bytesOut === 3);
  assert.equal(line.target, `127.0.0.1:${a}`);
  await statusUntil(portico, 'no load left on the target', (s) => s.upstreams.echo?.[0]?.active === 0 && (s.upstreams.echo?.[0]?.loadSeen ?? [0]).every((n) => n === 0));
});

test('native tcp listener: draining a target from the admin API sends new connections elsewhere; its open connection goes on', { timeout: 90_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const { a, portico } = await twoTargets(t, true, {});
  // round robin starts with the first target
  const open = await connect(t, portico.ports[0]);
  assert.equal(await roundTrip(open, 'x', 3), 'A:x');
  const drained = await request(`${adminUrl(portico)}/upstreams/echo/targets/127.0.0.1:${a}/drain`, { method: 'POST', headers: { 'x-portico-admin': '1' } });
  assert.equal(drained.status, 200);
  await statusUntil(portico, 'A drained', (s) => s.upstreams.echo?.some((x) => x.target === `127.0.0.1:${a}` && !x.available) === true);
  // the addon hears of it within its push period; every connection after that goes to B (two in a row: round
  // robin alone would alternate A, B)
  const twice = async (): Promise<string> => {
    const replies: string[] = [];
    for (const text of ['p', 'q']) {
      const c = await connect(t, portico.ports[0]);
      replies.push(await roundTrip(c, text, 3));
      c.destroy();
    }
    return replies.join(' ');
  };
  await until('two new connections in a row reach B', twice, (r) => r === 'B:p B:q', 5_000, 20);
  for (let i = 0; i < 4; i++) {
    const c = await connect(t, portico.ports[0]);
    assert.equal(await roundTrip(c, `n${i}`, 4), `B:n${i}`);
    c.destroy();
  }
  assert.equal(await roundTrip(open, 'y', 3), 'A:y', 'the open connection to the drained target goes on');
});

// slow_start on both paths: the addon ramps a returning target's weight itself from the end JS pushes (l4.cc
// RampedWeights), as balancer.ts does for the JS path. A target back from a drain starts at a tenth of its weight.
// (least_conn takes the same ramped weights, l4.cc PickLeastConn; not checked here: a closed connection's count
// leaves the addon's load a moment after the close, so sequential connections do not tie the way this needs.)
for (const onAddon of [true, false]) {
  const label = onAddon ? 'tcp listener on the addon' : 'tcp listener on the JS path (PORTICO_NATIVE_L4=0)';
  test(`${label}: slow_start: a target back from a drain gets a small share of new connections at first`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { b, portico } = await twoTargets(t, onAddon, { slow_start: '120s' });
    const once1 = async (text: string): Promise<string> => {
      const c = await connect(t, portico.ports[0]);
      const reply = await roundTrip(c, text, text.length + 2);
      c.destroy();
      return reply.slice(0, 1);
    };
    const admin = (verb: string) => request(`${adminUrl(portico)}/upstreams/echo/targets/127.0.0.1:${b}/${verb}`, { method: 'POST', headers: { 'x-portico-admin': '1' } });
    assert.equal((await admin('drain')).status, 200);
    await until('four new connections in a row reach A', async () => [await once1('p'), await once1('q'), await once1('r'), await once1('s')].join(''), (r) => r === 'AAAA', 5_000, 20);
    assert.equal((await admin('undrain')).status, 200);
    await statusUntil(portico, 'B back', (s) => s.upstreams.echo?.some((x) => x.target === `127.0.0.1:${b}` && x.available) === true);
    // the listener hears of it within its push period: the first connection to B says so
    await until('a new connection reaches B', () => once1('x'), (r) => r === 'B', 5_000, 0);
    const seen = { A: 0, B: 0 };
    for (let i = 0; i < 44; i++) seen[(await once1(`n${i}`)) as 'A' | 'B']++;
    // equal weights would give B 22 of 44; a tenth of A's weight (rising 0.75 % a second over 120 s) about 4
    t.diagnostic(`after the comeback: A ${seen.A}, B ${seen.B}`);
    assert.equal(seen.A + seen.B, 44);
    assert.ok(seen.B >= 2 && seen.B <= 8, `B got ${seen.B} of 44`);
  });
}

// random_two on both paths: of two targets both are always the two drawn, so the less loaded one takes each new
// connection (round robin would alternate); the addon counts its own open connections per target (l4.cc PickRandomTwo).
for (const onAddon of [true, false]) {
  const label = onAddon ? 'tcp listener on the addon' : 'tcp listener on the JS path (PORTICO_NATIVE_L4=0)';
  test(`${label}: balance random_two: new connections go to the target with fewer open ones`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { b, portico } = await twoTargets(t, onAddon, { balance: 'random_two' });
    const held: Record<'A' | 'B', net.Socket[]> = { A: [], B: [] };
    const open = async (i: number): Promise<'A' | 'B'> => {
      const c = await connect(t, portico.ports[0]);
      const side = (await roundTrip(c, `h${i}`, 4)).slice(0, 1) as 'A' | 'B';
      held[side].push(c);
      return side;
    };
    // six held open: each one to the side with fewer (a tie either way), so they end three and three
    for (let i = 0; i < 6; i++) await open(i);
    assert.deepEqual([held.A.length, held.B.length], [3, 3]);
    // B's three close: once the pool's count says so, the next three all go to B, the fourth to either
    for (const c of held.B.splice(0)) c.destroy();
    await statusUntil(portico, "B's connections gone", (s) => s.upstreams.echo?.find((x) => x.target === `127.0.0.1:${b}`)?.active === 0);
    const next = [await open(6), await open(7), await open(8)];
    assert.deepEqual(next, ['B', 'B', 'B']);
    for (const c of [...held.A, ...held.B]) c.destroy();
  });
}

// tunnel.max_lifetime on both paths: the addon's relay ends a connection that lived this long however busy it is
// (relay.cc's sweep, Reason::kLifetime), as the JS path's tunnel sweep does.
for (const onAddon of [true, false]) {
  const label = onAddon ? 'tcp listener on the addon' : 'tcp listener on the JS path (PORTICO_NATIVE_L4=0)';
  test(`${label}: tunnel.max_lifetime ends a busy connection once it lived that long, logged as lifetime`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const echo = await startTagEcho(t);
    const LIFETIME_MS = 1_500;
    const portico = await startPortico(t, {
      workers: 1,
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
      upstreams: { echo: { targets: [`127.0.0.1:${echo}`] } },
      tunnel: { max_lifetime: `${LIFETIME_MS}ms`, idle_timeout: '60s' },
    }, onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } });
    await servedBy(portico, onAddon);
    const started = Date.now();
    const c = await connect(t, portico.ports[0]);
    c.on('error', () => {});
    // busy all along: a byte every 100 ms, echoed, until the relay's end closes both sockets: the client reads its
    // FIN (allowHalfOpen), or a reset when one of its bytes reached Portico's socket after the relay's last read (a
    // close with unread data answers RST: RFC 2525; a slow run, under ASan, meets it); the test's timeout bounds it
    let echoes = 0;
    c.on('data', (d: Buffer) => (echoes += d.length));
    const ended = new Promise<string>((resolve) => {
      c.once('end', () => resolve('FIN'));
      c.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    const tick = setInterval(() => c.write('x'), 100);
    t.after(() => clearInterval(tick));
    let bound: NodeJS.Timeout | undefined;
    const how = await Promise.race([ended, new Promise<never>((_, reject) => (bound = setTimeout(() => reject(new Error('still open 15 s after its start')), 15_000)))]);
    clearTimeout(bound);
    clearInterval(tick);
    const lived = Date.now() - started;
    t.diagnostic(`closed (${how}) after ${lived} ms, ${echoes} bytes echoed`);
    assert.ok(how === 'FIN' || how === 'ECONNRESET', `the connection ended by ${how}`);
    assert.ok(lived >= LIFETIME_MS, `closed after ${lived} ms, before its lifetime`);
    assert.ok(echoes >= 5, `only ${echoes} bytes echoed before the close`);
    const line = await portico.waitForLog((l) => l.msg === 'tcp');
    assert.equal(line.closedBy, 'lifetime');
  });
}

for (const onAddon of [true, false]) {
  const label = onAddon ? 'tcp listener on the addon' : 'tcp listener on the JS path (PORTICO_NATIVE_L4=0)';
  test(`${label}: SIGTERM: an open connection still relays during the grace, then is closed and logged as shutdown; exit 0`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const echo = await startTagEcho(t);
    const portico = await startPortico(t, {
      workers: 1,
      listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
      upstreams: { echo: { targets: [`127.0.0.1:${echo}`] } },
      timeouts: { shutdown_grace: '1500ms' },
    }, onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } });
    await servedBy(portico, onAddon);
    const open = await connect(t, portico.ports[0]);
    assert.equal(await roundTrip(open, 'a', 1), 'a');
    const closed = once(open, 'end');
    const stopping = portico.stop('SIGTERM', 20_000);
    await portico.waitForLog((l) => l.msg === 'worker draining');
    // within the grace the tunnel still relays
    assert.equal(await roundTrip(open, 'b', 1), 'b');
    await closed;
    assert.equal(await stopping, 0);
    const line = portico.logs.find((l) => l.msg === 'tcp');
    assert.equal(line?.closedBy, 'shutdown');
    assert.equal(line?.bytesIn, 2);
  });
}

test('a tcp listener whose upstream hashes on $remote_addr is served by the addon (no longer the JS path), and relays', { timeout: 60_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const echo = await startTagEcho(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
    upstreams: { echo: { targets: [`127.0.0.1:${echo}`], balance: { policy: 'hash', key: '$remote_addr' } } },
  });
  await servedByAddon(portico);
  assert.equal(portico.logs.find((l) => l.msg === 'L4 listener served by JavaScript, not the addon'), undefined);
  const c = await connect(t, portico.ports[0]);
  assert.equal(await roundTrip(c, 'js', 2), 'js');
  c.end();
  const line = await portico.waitForLog((l) => l.msg === 'tcp');
  assert.equal(line.bytesIn, 2);
  assert.equal(line.relay, 'splice');
});

async function startEchoProcess(t: TestContext): Promise<number> {
  const child = spawn(PYTHON, [path.join(FIXTURES, 'backends', 'tcp-echo.py')], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    child.stdin.end();
    child.kill();
  });
  const lines = createInterface({ input: child.stdout });
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('tcp echo backend did not start')), 10_000);
    child.once('error', reject);
    lines.on('line', (line) => {
      const [word, n] = line.split(' ');
      if (word !== 'port') return;
      clearTimeout(timer);
      resolve(Number(n));
    });
  });
}

const CONNECTIONS = 10_000;

test(`native tcp listener: ${CONNECTIONS.toLocaleString('en')} idle connections in one worker, 2 fds each, each still echoes; fds back to the baseline after they close`, { timeout: 600_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  native()?.raiseFdLimit();
  const backend = await startEchoProcess(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
    upstreams: { echo: { targets: [`127.0.0.1:${backend}`] } },
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  await servedByAddon(portico);
  const status = await adminStatus(portico);
  const pid = status.workers[0].pid!;
  // one connection first: the L4 thread, the relay thread and its pipes exist from here on
  const warm = await connect(t, portico.ports[0]);
  assert.equal(await roundTrip(warm, 'warm', 4), 'warm');
  warm.destroy();
  await statusUntil(portico, 'warm-up connection gone', (s) => s.workers[0].tunnels === 0, 20_000);
  const baseFds = fdCount(pid);
  const fdLimit = status.workers[0].fds?.limit ?? -1;
  const fits = fdLimit < 0 ? CONNECTIONS : Math.floor((fdLimit - baseFds - FD_RESERVE - 16) / 2);
  const n = Math.min(CONNECTIONS, fits);
  if (n < CONNECTIONS) t.diagnostic(`worker fd limit ${fdLimit}: ${n} connections fit, not ${CONNECTIONS}`);
  assert.ok(n >= 9_000, `at least 9,000 connections fit (${n})`);
  const sockets: net.Socket[] = [];
  t.after(() => {
    for (const s of sockets) s.destroy();
  });
  const BATCH = 200;
  for (let i = 0; i < n; i += BATCH) {
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, () => connect(t, portico.ports[0])))));
  }
  await statusUntil(portico, `${n} connections open`, (s) => s.workers[0].tunnels === n, 60_000, 200);
  // connected and relayed: both sockets of each exist in the worker, nothing else per connection
  const perConnection = (fdCount(pid) - baseFds) / n;
  t.diagnostic(`${n} idle L4 connections: ${perConnection.toFixed(3)} fds each`);
  assert.ok(perConnection <= 2.01, `an idle connection holds its two sockets only (${perConnection.toFixed(3)} fds each)`);
  for (let i = 0; i < sockets.length; i += 97) assert.equal(await roundTrip(sockets[i], `idle ${i}`, `idle ${i}`.length), `idle ${i}`);
  for (const s of sockets.splice(0)) s.destroy();
  await statusUntil(portico, 'every connection closed', (s) => s.workers[0].tunnels === 0 && s.workers[0].connections === 0, 120_000, 200);
  await until('fds back to the baseline', () => fdCount(pid), (fds) => fds <= baseFds + 4, 60_000, 200);
});

/** A TLS backend on the test certificate: answers `backend:<data>` to the first bytes and closes. */
async function startTlsBackend(t: TestContext): Promise<number> {
  const [cert, key] = await Promise.all([readFile(TEST_CERT), readFile(TEST_KEY)]);
  const server = tls.createServer({ cert, key }, (s) => {
    s.on('error', () => s.destroy());
    s.once('data', (d: Buffer) => s.end(`backend:${d.toString()}`));
  });
  return listen(t, server);
}

/** How a TLS client fails against `port` (the alert's error code). */
function tlsRefusal(t: TestContext, port: number, servername: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername === undefined ? {} : { servername }) });
    t.after(() => c.destroy());
    c.on('secureConnect', () => reject(new Error('handshake completed')));
    c.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** Sends `bytes` and resolves once Portico closed the connection (whatever it sent back). */
function sendAndClosed(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`not closed within 10 s after ${bytes.toString('hex').slice(0, 64)}...`));
    }, 10_000);
    c.on('error', () => {});
    c.on('data', () => {});
    c.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    c.end(bytes);
  });
}

for (const onAddon of [true, false]) {
  const label = onAddon ? 'TLS passthrough on the addon' : 'TLS passthrough on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };
  test(`${label}: a name passes through (exact and wildcard), another gets unrecognized_name, none gets missing_extension, plaintext and malformed hellos are closed; one line each`, { timeout: 90_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const backend = await startTlsBackend(t);
    const portico = await startPortico(t, {
      workers: 1,
      admin: { address: '127.0.0.1:0' },
      listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: 'localhost', upstream: 'tls' }, { sni: '*.pass.test', upstream: 'tls' }] } }],
      upstreams: { tls: { targets: [`127.0.0.1:${backend}`] } },
      log: { level: 'debug' },
    }, env);
    await servedBy(portico, onAddon);
    const port = portico.ports[0];
    assert.equal(await tlsHello(t, port, 'LocalHost'), 'backend:hello');
    assert.equal(await tlsHello(t, port, 'a.b.pass.test'), 'backend:hello');
    const hit = await portico.waitForLog((l) => l.msg === 'passthrough' && l.sni === 'a.b.pass.test');
    assert.equal(hit.mode, 'passthrough');
    assert.equal(hit.target, `127.0.0.1:${backend}`);
    assert.ok((hit.bytesOut as number) > 0 && (hit.bytesIn as number) > 0, 'bytes went both ways');
    assert.equal(await tlsRefusal(t, port, 'other.test'), 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME');
    assert.equal(await tlsRefusal(t, port, 'pass.test'), 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME', 'a wildcard needs a label before its suffix');
    assert.equal(await tlsRefusal(t, port, undefined), 'ERR_SSL_TLSV13_ALERT_MISSING_EXTENSION');
    const refused = (sni: string | undefined) => (l: LogLine) => l.msg === 'no passthrough for this TLS name: alert sent, closed' && l.sni === sni && l.closedBy === 'refused';
    await portico.waitForLog(refused('other.test'));
    await portico.waitForLog(refused(undefined));
    await sendAndClosed(port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await portico.waitForLog((l) => l.msg === 'connection refused before routing' && l.reason === 'not_tls');
    // a handshake record whose ClientHello claims a session id longer than 32 bytes
    const body = Buffer.concat([Buffer.of(0x03, 0x03), Buffer.alloc(32), Buffer.of(33)]);
    await sendAndClosed(port, Buffer.concat([Buffer.of(0x16, 0x03, 0x01, 0x00, 4 + body.length, 0x01, 0x00, 0x00, body.length), body]));
    const invalid = await portico.waitForLog((l) => l.msg === 'connection refused before routing' && l.reason === 'client_hello_invalid');
    assert.equal(invalid.detail, 'legacy_session_id longer than 32 bytes (RFC 8446 §4.1.2)');
    const metrics = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
    assert.match(metrics, /^portico_connections_refused_total\{reason="sni_unknown"\} 2$/m);
    assert.match(metrics, /^portico_connections_refused_total\{reason="sni_missing"\} 1$/m);
    assert.match(metrics, /^portico_connections_refused_total\{reason="not_tls"\} 1$/m);
  });
}

test('TLS passthrough on the addon defers accept (the tcp listener beside it does not); SIGTERM: clients that connected before the drain and send their ClientHello after it began are all passed through, none reset', { timeout: 90_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const backend = await startTlsBackend(t);
  const echo = await startTagEcho(t);
  const portico = await startPortico(t, {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: 'localhost', upstream: 'tls' }] } }, { address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }],
    upstreams: { tls: { targets: [`127.0.0.1:${backend}`] }, echo: { targets: [`127.0.0.1:${echo}`] } },
    timeouts: { shutdown_grace: '5s' },
    log: { access: false },
  });
  const onAddon = () => portico.logs.filter((l) => l.msg === 'L4 listener served by the addon (accept, connect, splice)').length;
  await until('both listeners on the addon', onAddon, (n) => n === 2, 20_000);
  const status = await adminStatus(portico);
  assert.deepEqual(status.workers[0].deferAccept, ['127.0.0.1:0'], 'the passthrough listener defers, the tcp one (its server may speak first) does not');
  const port = portico.ports[0];
  assert.equal(await tlsHello(t, port, 'localhost'), 'backend:hello', 'passes through while deferring');

  const N = 20;
  // connected, nothing sent: each waits in the kernel's SYN queue of the passthrough listener (deferred)
  const raws = await Promise.all(Array.from({ length: N }, () => connect(t, port)));
  const stopping = portico.stop('SIGTERM', 30_000);
  await portico.waitForLog((l: LogLine) => l.msg === 'worker draining');
  const replies = raws.map(async (raw, i) => {
    try {
      const c = tls.connect({ socket: raw, servername: 'localhost', rejectUnauthorized: false });
      c.on('error', () => {});
      await once(c, 'secureConnect');
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      c.write(`late ${i}`);
      await once(c, 'end');
      return Buffer.concat(got).toString();
    } catch (err) {
      return `error ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
    }
  });
  const got = await Promise.all(replies);
  const wrong = got.map((g, i) => [i, g] as const).filter(([i, g]) => g !== `backend:late ${i}`);
  assert.deepEqual(wrong, [], `${wrong.length} of ${N} clients were not passed through`);
  assert.equal(await stopping, 0);
});

test('TLS passthrough on the addon: 300 fuzzed ClientHellos (mutated, truncated, split) never crash the worker; a good name still passes after them', { timeout: 120_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const backend = await startTlsBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: 'localhost', upstream: 'tls' }], handshake_timeout: '2s' } }],
    upstreams: { tls: { targets: [`127.0.0.1:${backend}`] } },
  });
  await servedByAddon(portico);
  const port = portico.ports[0];
  const before = (await adminStatus(portico)).workers[0];
  const seed = await captureNodeHello({ servername: 'localhost' });
  const rng = fc.sample(fc.tuple(fc.array(mutationArbOf([0x00, 0x01, 0x03, 0x16, 0x2e, 0xff]), { minLength: 1, maxLength: 4 }), fc.nat()), { numRuns: 300, seed: 42 });
  for (let i = 0; i < rng.length; i += 30) {
    await Promise.all(
      rng.slice(i, i + 30).map(async ([mutations, cut]) => {
        const buf = mutate(seed, mutations);
        // some arrive whole, some truncated (the peek deadline or the FIN ends them)
        await sendAndClosed(port, cut % 3 === 0 ? buf.subarray(0, cut % (buf.length + 1)) : buf);
      }),
    );
  }
  assert.equal(await tlsHello(t, port, 'localhost'), 'backend:hello');
  const after = (await adminStatus(portico)).workers[0];
  assert.equal(after.pid, before.pid, 'the same worker process');
  assert.equal(after.restarts, 0);
});

// The addon reads the ClientHello itself (no peek) and sends it on, behind the PROXY header, before the relay
// starts: the backend must get the header, then the hello and whatever the client sent behind it, byte for byte,
// whether the hello came whole or in pieces; the log counts every byte; a bulk transfer after it (the relay
// splices it) arrives intact both ways.
for (const onAddon of [true, false]) {
  const label = onAddon ? 'TLS passthrough on the addon' : 'TLS passthrough on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };
  for (const pieces of [1, 3]) {
    test(`${label}: a ClientHello ${pieces === 1 ? 'in one write' : 'in 3 writes'} with bytes behind it reaches a PROXY v2 backend byte for byte, then 4 MiB each way; bytesIn counts them all`, { timeout: 60_000 }, async (t) => {
      if (onAddon && !needNativeL4(t)) return;
      const hello = await captureNodeHello({ servername: 'bulk.pass.test' });
      const tail = Buffer.from('after the hello');
      const up = Buffer.alloc(4 << 20);
      for (let i = 0; i < up.length; i++) up[i] = (i * 7) & 0xff;
      const down = Buffer.alloc(4 << 20);
      for (let i = 0; i < down.length; i++) down[i] = (i * 13) & 0xff;
      const head = hello.length + tail.length;
      let resolveFirst: (b: { header: ProxyHeader; first: Buffer }) => void = () => {};
      const arrived = new Promise<{ header: ProxyHeader; first: Buffer }>((resolve) => (resolveFirst = resolve));
      let resolveRest: (b: Buffer) => void = () => {};
      const rest = new Promise<Buffer>((resolve) => (resolveRest = resolve));
      const server = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => s.destroy());
        let buf = Buffer.alloc(0);
        let used = -1;
        s.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          if (used < 0) {
            const r = parseProxyHeader(buf);
            if (r.kind !== 'done' || buf.length < r.used + head) return;
            used = r.used;
            resolveFirst({ header: r.header, first: buf.subarray(used, used + head) });
            s.write(down);
          }
        });
        s.on('end', () => {
          resolveRest(buf.subarray(used + head));
          s.end();
        });
      });
      const backend = await listen(t, server);
      const portico = await startPortico(t, {
        workers: 1,
        listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: '*.pass.test', upstream: 'raw' }] } }],
        upstreams: { raw: { targets: [`127.0.0.1:${backend}`], send_proxy_protocol: 'v2' } },
      }, env);
      await servedBy(portico, onAddon);
      const c = await connect(t, portico.ports[0]);
      c.setNoDelay(true);
      const received: Buffer[] = [];
      c.on('data', (d: Buffer) => received.push(d));
      const cuts = pieces === 1 ? [hello.length] : [5, 60, hello.length];
      let from = 0;
      for (const cut of cuts) {
        // each piece handed to the kernel before the next is written
        await new Promise<void>((resolve, reject) => c.write(hello.subarray(from, cut), (err) => (err ? reject(err) : resolve())));
        from = cut;
      }
      c.write(tail);
      const { header, first } = await arrived;
      assert.equal(header.version, 2);
      assert.deepEqual(header.source, { address: '127.0.0.1', port: c.localPort });
      assert.ok(first.equals(Buffer.concat([hello, tail])), 'the ClientHello and the bytes behind it, as sent');
      const ended = once(c, 'end');
      c.end(up);
      assert.ok((await rest).equals(up), '4 MiB up, intact');
      await ended;
      assert.ok(Buffer.concat(received).equals(down), '4 MiB down, intact');
      const line = await portico.waitForLog((l) => l.msg === 'passthrough' && l.sni === 'bulk.pass.test');
      assert.equal(line.bytesIn, head + up.length);
      assert.equal(line.bytesOut, down.length);
    });
  }
}

// The addon arms TCP keep-alive on the upstream socket only once a connection has lived a second (a short one
// makes no setsockopt for it): a tunnel that stays open must still get it.
test('tcp listener on the addon: a connection open past a second has TCP keep-alive armed on its upstream socket', { timeout: 60_000 }, async (t) => {
  if (!needNativeL4(t)) return;
  const upstreamPorts: number[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    upstreamPorts.push(s.remotePort!);
    s.on('error', () => s.destroy());
    s.on('data', (d: Buffer) => s.write(d));
  });
  const backend = await listen(t, server);
  t.after(() => server.close());
  const portico = await startPortico(t, { workers: 1, listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo' }], upstreams: { echo: { targets: [`127.0.0.1:${backend}`] } } });
  await servedByAddon(portico);
  const c = await connect(t, portico.ports[0]);
  assert.equal(await roundTrip(c, 'ping', 4), 'ping');
  const from = upstreamPorts[0]!;
  await until('keep-alive timer on the upstream socket', () => tcpTimer(from, backend), (tr) => tr === 2, 10_000);
  assert.equal(await roundTrip(c, 'pong', 4), 'pong', 'the tunnel still relays');
});
