// `balance: { policy: hash, key: $remote_addr }` on L4 listeners, on the addon and on the JS path
// (PORTICO_NATIVE_L4=0) with the same assertions: each client address reaches the target balancer.ts's Maglev table
// gives its key (clients from several loopback addresses, or named by a PROXY header), the keys spread; a drained
// target's keys, and only they, move where Maglev walks them and come back; a key with a tunnel open off its home stays
// there while it is open (sticky pins, the addon's included); TLS passthrough by name hashes too; and a flood of 2,000
// client addresses at once: every key counted open, hundreds pinned at once, all of it gone with the connections.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import { createBalancer, maglevHome, type Target } from '../../src/upstream/balancer.js';
import { buildProxyV1, buildProxyV2 } from '../../src/wire/proxy-protocol.js';
import { adminUrl, statusUntil } from '../helpers/admin.js';
import { request } from '../helpers/clients.js';
import { needNativeL4 } from '../helpers/native-io.js';
import { TEST_CERT, TEST_KEY, startPortico, type Portico } from '../helpers/portico.js';
import { startTagEcho } from '../helpers/tcp-server.js';
import { until } from '../helpers/until.js';
import { roundTrip, tlsHello } from '../helpers/wire.js';

const HASH = { policy: 'hash', key: '$remote_addr' } as const;
/** Client addresses on loopback (Linux routes all of 127/8 to lo): 12 keys over 3 targets spread unless hashing is broken. */
const SOURCES = Array.from({ length: 12 }, (_, i) => `127.0.0.${i + 2}`);
const TAGS = ['A', 'B', 'C'] as const;
/** Connections (and client addresses) of the flood test. */
const FLOOD = 2_000;

function targetsOf(ports: readonly number[], available: readonly boolean[] = ports.map(() => true)): Target[] {
  return ports.map((port, i) => ({ id: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, available: available[i], active: 0 }));
}

/** The tag of the target Maglev gives `key` over `ports` (A, B, C by position), with these targets available. */
function expected(ports: readonly number[], key: string, available?: readonly boolean[]): string {
  const targets = targetsOf(ports, available);
  const t = available === undefined ? maglevHome(targets)(key) : createBalancer(HASH, targets).pickFor(key)?.id;
  return TAGS[targets.findIndex((x) => x.id === t)];
}

/** Three tagged echoes ("A:", "B:", "C:") behind a tcp listener of upstream `echo` (hash), on the path asked for. */
async function threeTargets(t: TestContext, onAddon: boolean, workers = 1, listener: Record<string, unknown> = {}): Promise<{ ports: number[]; portico: Portico }> {
  const ports = [];
  for (const tag of TAGS) ports.push(await startTagEcho(t, `${tag}:`));
  const portico = await startPortico(t, {
    workers,
    listeners: [{ address: '127.0.0.1:0', mode: 'tcp', upstream: 'echo', ...listener }],
    upstreams: { echo: { targets: ports.map((p) => `127.0.0.1:${p}`), balance: HASH } },
    admin: { address: '127.0.0.1:0' },
  }, onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } });
  await servedBy(portico, onAddon);
  return { ports, portico };
}

async function servedBy(portico: Portico, onAddon: boolean): Promise<void> {
  if (onAddon) await portico.waitForLog((l) => l.msg === 'L4 listener served by the addon (accept, connect, splice)');
  else assert.equal(portico.logs.find((l) => l.msg === 'L4 listener served by the addon (accept, connect, splice)'), undefined);
}

/** A connection from `source` to `port`, open. */
async function openFrom(t: TestContext, port: number, source: string): Promise<net.Socket> {
  const c = net.connect({ host: '127.0.0.1', port, localAddress: source, allowHalfOpen: true });
  t.after(() => c.destroy());
  await once(c, 'connect');
  return c;
}

/** The tag of the target a new connection from `source` reaches (closed after). */
async function reached(t: TestContext, port: number, source: string): Promise<string> {
  const c = await openFrom(t, port, source);
  const reply = await roundTrip(c, 'k', 3);
  c.destroy();
  return reply[0];
}

async function control(portico: Portico, port: number, what: 'drain' | 'undrain'): Promise<void> {
  const res = await request(`${adminUrl(portico)}/upstreams/echo/targets/127.0.0.1:${port}/${what}`, { method: 'POST', headers: { 'x-portico-admin': '1' } });
  assert.equal(res.status, 200);
  await statusUntil(portico, `${port} ${what}ed`, (s) => s.upstreams.echo?.some((x) => x.target === `127.0.0.1:${port}` && x.available === (what === 'undrain')) === true);
}

for (const onAddon of [true, false]) {
  const label = onAddon ? 'hash upstream on the addon' : 'hash upstream on the JS path (PORTICO_NATIVE_L4=0)';
  const env = onAddon ? {} : { env: { PORTICO_NATIVE_L4: '0' } };

  test(`${label}: each client address always reaches the target its key hashes to (two workers agree), and the addresses spread`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { ports, portico } = await threeTargets(t, onAddon, 2);
    const seen = new Set<string>();
    for (const source of SOURCES) {
      const want = expected(ports, source);
      seen.add(want);
      // several connections each: with two workers, both take some (the kernel spreads them)
      for (let i = 0; i < 4; i++) assert.equal(await reached(t, portico.ports[0], source), want, `${source}, connection ${i + 1}`);
    }
    assert.ok(seen.size >= 2, `keys spread over ${[...seen].join(', ')}`);
    const line = await portico.waitForLog((l) => l.msg === 'tcp' && l.remoteAddr === SOURCES[0]);
    assert.equal(line.target, `127.0.0.1:${ports[TAGS.indexOf(expected(ports, SOURCES[0]) as (typeof TAGS)[number])]}`);
  });

  test(`${label}: a drained target's keys, and only they, move where Maglev walks them, and come back when it returns`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { ports, portico } = await threeTargets(t, onAddon);
    const port = portico.ports[0];
    const down = TAGS.indexOf(expected(ports, SOURCES[0]) as (typeof TAGS)[number]);
    const available = ports.map((_, i) => i !== down);
    await control(portico, ports[down], 'drain');
    // the addon hears of it within its push period: the first key of the drained target moved, then all are checked
    await until('the drained target\'s key moved', () => reached(t, port, SOURCES[0]), (r) => r === expected(ports, SOURCES[0], available), 5_000, 20);
    let moved = 0;
    for (const source of SOURCES) {
      const home = expected(ports, source);
      const now = expected(ports, source, available);
      if (home === TAGS[down]) moved++;
      else assert.equal(now, home, 'Maglev moves only the drained target\'s keys');
      assert.equal(await reached(t, port, source), now, `${source} (home ${home}) with ${TAGS[down]} drained`);
    }
    assert.ok(moved >= 1);
    await control(portico, ports[down], 'undrain');
    await until('the key came back', () => reached(t, port, SOURCES[0]), (r) => r === TAGS[down], 5_000, 20);
    for (const source of SOURCES) assert.equal(await reached(t, port, source), expected(ports, source), `${source} back home`);
  });

  test(`${label}: a key with a connection open off its home stays there while it is open (pinned), then goes home`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { ports, portico } = await threeTargets(t, onAddon);
    const port = portico.ports[0];
    // a target that is home to two keys at least (12 keys over 3 targets: one has four or more)
    const home = TAGS.find((tag) => SOURCES.filter((s) => expected(ports, s) === tag).length >= 2)!;
    const [held, other] = SOURCES.filter((s) => expected(ports, s) === home);
    const h = TAGS.indexOf(home);
    const away = expected(ports, held, ports.map((_, i) => i !== h));
    await control(portico, ports[h], 'drain');
    await until('the key moved off its drained home', () => reached(t, port, held), (r) => r === away, 5_000, 20);
    const open = await openFrom(t, port, held);
    assert.equal(await roundTrip(open, 'x', 3), `${away}:x`);
    // the worker reports the key open on `away`; the primary pins it there (off its home) and tells the worker
    await statusUntil(portico, 'the open key pinned', (s) => s.sticky.keys === 1 && s.sticky.pins === 1);
    await control(portico, ports[h], 'undrain');
    // the other key of that home goes back at once (the target is eligible again where the picks are made) ...
    await until('an unpinned key back home', () => reached(t, port, other), (r) => r === home, 5_000, 20);
    // ... the pinned one does not while its connection is open
    for (let i = 0; i < 3; i++) assert.equal(await reached(t, port, held), away, `pinned key, connection ${i + 1}`);
    open.destroy();
    await statusUntil(portico, 'the pin is gone', (s) => s.sticky.keys === 0 && s.sticky.pins === 0);
    await until('the key back home', () => reached(t, port, held), (r) => r === home, 5_000, 20);
  });

  for (const version of ['v1', 'v2'] as const) {
    test(`${label}: behind a PROXY ${version} header, the header's source is the key (clients behind one balancer address go where their own keys say)`, { timeout: 60_000 }, async (t) => {
      if (onAddon && !needNativeL4(t)) return;
      const { ports, portico } = await threeTargets(t, onAddon, 1, { proxy_protocol: { trusted: ['127.0.0.1'] } });
      const clients = [
        ...Array.from({ length: 10 }, (_, i) => ({ address: `198.51.100.${i + 7}`, key: `198.51.100.${i + 7}` })),
        { address: '2001:db8::17', key: '2001:db8::17' },
        // an IPv4-mapped source is its IPv4 address, as $remote_addr (a TCP6 header: the destination is IPv6)
        ...(version === 'v2' ? [{ address: '::ffff:203.0.113.5', key: '203.0.113.5' }] : []),
      ];
      const seen = new Set<string>();
      for (const { address, key } of clients) {
        const v6 = address.includes(':');
        const src = { address, port: 40000 };
        const dst = { address: v6 ? '2001:db8::1' : '192.0.2.1', port: 443 };
        const header = version === 'v1' ? buildProxyV1(src, dst) : buildProxyV2(src, dst);
        const want = expected(ports, key);
        seen.add(want);
        for (let i = 0; i < 2; i++) {
          const c = await openFrom(t, portico.ports[0], '127.0.0.1');
          c.write(header);
          assert.equal(await roundTrip(c, 'p', 3), `${want}:p`, `${address} (key ${key}), connection ${i + 1}`);
          c.destroy();
        }
      }
      assert.ok(seen.size >= 2, `keys spread over ${[...seen].join(', ')}`);
    });
  }

  test(`${label}: TLS passthrough by name to a hash upstream: each client address reaches its key's target`, { timeout: 60_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const [cert, key] = await Promise.all([readFile(TEST_CERT), readFile(TEST_KEY)]);
    const ports: number[] = [];
    for (const tag of TAGS) {
      const server = tls.createServer({ cert, key }, (s) => {
        s.on('error', () => s.destroy());
        s.once('data', () => s.end(tag));
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      t.after(() => server.close());
      ports.push((server.address() as net.AddressInfo).port);
    }
    const portico = await startPortico(t, {
      workers: 1,
      listeners: [{ address: '127.0.0.1:0', tls: { passthrough: [{ sni: 'hash.example', upstream: 'pass' }] } }],
      upstreams: { pass: { targets: ports.map((p) => `127.0.0.1:${p}`), balance: HASH } },
    }, env);
    await servedBy(portico, onAddon);
    const seen = new Set<string>();
    for (const source of SOURCES.slice(0, 8)) {
      const want = expected(ports, source);
      seen.add(want);
      for (let i = 0; i < 2; i++) {
        const raw = await openFrom(t, portico.ports[0], source);
        assert.equal(await tlsHello(t, raw, 'hash.example'), want, `${source}, connection ${i + 1}`);
      }
    }
    assert.ok(seen.size >= 2, `keys spread over ${[...seen].join(', ')}`);
  });
  test(`${label}: a flood of client addresses: 2,000 open at once from 2,000 sources each reach their key's target, every key counted open; with a target drained, its keys' new connections move and, their home connections closed, ~700 keys are pinned there, staying when it returns; all of it gone when they close`, { timeout: 120_000 }, async (t) => {
    if (onAddon && !needNativeL4(t)) return;
    const { ports, portico } = await threeTargets(t, onAddon);
    const port = portico.ports[0];
    const home = maglevHome(targetsOf(ports));
    const tagOf = (source: string): string => TAGS[ports.findIndex((p) => `127.0.0.1:${p}` === home(source))];
    // the baseline after one connection: the first one makes what every later one shares (the relay's thread and its polling)
    assert.equal(await reached(t, port, '127.0.0.1'), tagOf('127.0.0.1'));
    const before = (await statusUntil(portico, 'the first connection closed', (s) => s.workers[0].tunnels === 0)).workers[0].fds?.open ?? 0;
    // 127.1.0.1 and on (250 per /24): one address per client, each its own key
    const sources = Array.from({ length: FLOOD }, (_, i) => `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`);
    assert.equal(new Set(sources).size, FLOOD);
    const open: net.Socket[] = [];
    t.after(() => open.forEach((c) => c.destroy()));
    const first = new Map<string, net.Socket>();
    const count = new Map<string, number>();
    for (let i = 0; i < FLOOD; i += 100) {
      await Promise.all(
        sources.slice(i, i + 100).map(async (source) => {
          const c = await openFrom(t, port, source);
          open.push(c);
          first.set(source, c);
          const reply = await roundTrip(c, 'f', 3);
          assert.equal(reply, `${tagOf(source)}:f`, `${source}`);
          count.set(reply[0], (count.get(reply[0]) ?? 0) + 1);
        }),
      );
    }
    // Maglev spreads 2,000 keys over 3 equal targets within a few percent of a third each
    for (const tag of TAGS) assert.ok((count.get(tag) ?? 0) > FLOOD / 4, `${tag}: ${count.get(tag) ?? 0} of ${FLOOD} keys`);
    await statusUntil(portico, `${FLOOD} keys open, none pinned`, (s) => s.sticky.keys === FLOOD && s.sticky.pins === 0, 20_000);
    // a drained target keeps its open connections; its keys' new ones go where Maglev walks them; once a key's
    // connection at home closes, its connections off home pin it there (a key lives where most of its connections
    // are, home on a tie): every one of the drained target's keys, and only they
    const down = 1;
    const available = ports.map((_, i) => i !== down);
    const movedKeys = sources.filter((s) => tagOf(s) === TAGS[down]);
    await control(portico, ports[down], 'drain');
    await until('the drained target\'s keys move', () => reached(t, port, movedKeys[0]), (r) => r === expected(ports, movedKeys[0], available), 5_000, 20);
    for (let i = 0; i < movedKeys.length; i += 100) {
      await Promise.all(
        movedKeys.slice(i, i + 100).map(async (source) => {
          const c = await openFrom(t, port, source);
          open.push(c);
          assert.equal(await roundTrip(c, 'g', 3), `${expected(ports, source, available)}:g`, `${source} with ${TAGS[down]} drained`);
        }),
      );
    }
    await statusUntil(portico, `the ${movedKeys.length} moved keys open twice, at home and off it, not pinned (a tie)`, (s) => s.sticky.keys === FLOOD + movedKeys.length && s.sticky.pins === 0, 20_000);
    for (const source of movedKeys) first.get(source)!.destroy();
    await statusUntil(portico, `the ${movedKeys.length} moved keys pinned off home`, (s) => s.sticky.keys === FLOOD && s.sticky.pins === movedKeys.length, 20_000);
    await control(portico, ports[down], 'undrain');
    // back in rotation, its pinned keys stay where their open connections are; the others' home is unchanged
    const pinned = movedKeys[movedKeys.length - 1];
    const unpinned = sources.find((s) => tagOf(s) !== TAGS[down])!;
    assert.equal(await reached(t, port, pinned), expected(ports, pinned, available), 'a pinned key stays off home while open');
    assert.equal(await reached(t, port, unpinned), tagOf(unpinned));
    for (const c of open) c.destroy();
    await statusUntil(portico, 'every key and pin gone', (s) => s.sticky.keys === 0 && s.sticky.pins === 0, 20_000);
    // the worker's descriptors back where they were (idle: nothing pooled on an L4 upstream)
    await statusUntil(portico, 'the worker\'s fds back', (s) => (s.workers[0].fds?.open ?? Infinity) <= before, 20_000);
    assert.equal(await reached(t, port, pinned), TAGS[down], 'home again once its connections closed');
  });
}
