// Lost wake-ups of the splice relay (src/native/relay.cc): its epoll set is edge triggered, and a turn ends on a
// copied read that comes back short when the edge was quiet (Source in relay.cc), so every byte and FIN must
// still be read with no further edge. Driven with real sockets: a Python peer sends its bytes, urgent bytes and
// FIN in one segment (TCP_CORK), which Node's sockets cannot; and Node peers trade bursts of small frames each
// way on several tunnels at once. Raw and WebSocket-framed relays, net and native legs; and the TLS relay
// (src/native/tls-relay.cc), whose plain upstream side reads by the same rule. Every wait is bounded.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { SpliceTunnel, canSplice, nativeStatus, type NativeRelay } from '../../src/tunnel/splice.js';
import type { ByteSocket, ClosedBy } from '../../src/core/socket.js';
import { adoptNative, connectNative, nativeIoAvailable, type NativeSocket } from '../../src/native/io.js';
import { NativeTlsServer, adoptNativeTls, nativeTlsStatus } from '../../src/native/tls.js';
import { TLS_RELAY, canTlsRelay } from '../../src/tunnel/tls-relay.js';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { TEST_CERT, TEST_KEY } from '../helpers/portico.js';
import { PYTHON } from '../helpers/clients.js';
import { FIXTURES } from '../helpers/paths.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { wsClose, wsFrame } from '../helpers/ws-frame.js';

const SEGMENT_PEER = path.join(FIXTURES, 'clients', 'segment-peer.py');
const HAS_PYTHON = hasCommand(PYTHON, ['--version']);
const SPLICE_SKIP = nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`;
const NATIVE_IO_SKIP = nativeIoAvailable() ? undefined : 'native I/O not in use';
/** How long a byte or a FIN may take to cross the relay: far above a relay's microseconds, far below a hang. */
const CROSS_MS = 5_000;

interface Variant {
  name: string;
  framed: boolean;
  native: boolean;
  skip: string | undefined;
}
const VARIANTS: Variant[] = [];
for (const native of [false, true]) {
  for (const framed of [false, true]) {
    VARIANTS.push({
      name: `splice relay${framed ? ', WebSocket framing on' : ''}${native ? ', native sockets' : ''}`,
      framed,
      native,
      skip: SPLICE_SKIP ?? (native ? NATIVE_IO_SKIP : undefined),
    });
  }
}

const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);

/** A binary frame (RFC 6455 §5.2) of `payload`, masked when it goes client to server (§5.3). */
function frame(payload: Buffer, masked: boolean): Buffer {
  assert.ok(payload.length < 126, 'small frames only');
  return wsFrame(0x2, payload, { mask: masked ? MASK : undefined });
}

/** Bytes of message `i` of a stream: a frame when the relay follows frames (else framing would be lost, and
 * with it the copied reads this file is about), raw bytes otherwise. */
function message(v: Variant, up: boolean, i: number): Buffer {
  const payload = Buffer.from(`${up ? 'up' : 'down'}-${i}-`.padEnd(8 + (i % 50), '.'));
  return v.framed ? frame(payload, up) : payload;
}

/** Everything a socket receives, its FIN, and a bounded wait for both (one waiter at a time). */
function sink(s: net.Socket): { bytes: () => Buffer; waitFor: (n: number, what: string, end?: boolean) => Promise<void> } {
  const chunks: Buffer[] = [];
  let n = 0;
  let ended = false;
  let wake: (() => void) | undefined;
  s.on('data', (c: Buffer) => {
    chunks.push(c);
    n += c.length;
    wake?.();
  });
  s.on('end', () => {
    ended = true;
    wake?.();
  });
  return {
    bytes: () => Buffer.concat(chunks),
    async waitFor(want, what, end = false) {
      const deadline = Date.now() + CROSS_MS;
      while (n < want || (end && !ended)) {
        const left = deadline - Date.now();
        assert.ok(left > 0, `${what}: ${n} of ${want} bytes${end ? `, FIN ${ended ? 'seen' : 'not seen'}` : ''} after ${CROSS_MS} ms (a lost wake-up)`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    },
  };
}

async function listen(t: TestContext, pauseOnConnect = false): Promise<{ port: number; accepted: Promise<net.Socket> }> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect });
  const accepted = once(server, 'connection').then(([s]) => s as net.Socket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, accepted };
}

/** An accepted socket as one of the tunnel's legs: Node's, or moved onto native I/O. */
function leg(v: Variant, accepted: net.Socket): ByteSocket {
  const s = v.native ? adoptNative(accepted, { allowHalfOpen: true }) : accepted;
  assert.ok(s !== undefined, 'adoptNative took the accepted socket');
  return s;
}

/** Starts the splice relay (or `relay`, the TLS relay) between the legs and waits until the addon holds it. */
async function splice(t: TestContext, framed: boolean, client: ByteSocket, upstream: ByteSocket, relay?: NativeRelay): Promise<{ tunnel: SpliceTunnel; closed: Promise<ClosedBy> }> {
  assert.ok(relay === undefined ? canSplice(client, upstream) : canTlsRelay(client, upstream), 'the addon can relay these legs');
  let tunnel!: SpliceTunnel;
  const closed = new Promise<ClosedBy>((resolve) => {
    tunnel = new SpliceTunnel(client, upstream, { idle: 0, lifetime: 0 }, (x) => resolve(x.closedBy!), framed, relay);
    tunnel.start(null, null);
  });
  t.after(() => tunnel.close('shutdown'));
  const deadline = Date.now() + CROSS_MS;
  while (!tunnel.spliced) {
    assert.ok(Date.now() < deadline, 'the tunnel went to the addon\'s relay');
    await new Promise((r) => setImmediate(r));
  }
  return { tunnel, closed };
}

/** The Python peer (segment-peer.py), connected to `port`; `send()` makes it send `steps` and resolves once it did. */
async function segmentPeer(t: TestContext, port: number, steps: string[]): Promise<{ send: () => Promise<void> }> {
  const child = spawn(PYTHON, [SEGMENT_PEER, String(port), ...steps], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  const lines = createInterface({ input: child.stdout });
  const said = (what: string): Promise<string> =>
    Promise.race([
      new Promise<string>((resolve, reject) => {
        lines.once('line', resolve);
        child.once('exit', (code) => reject(new Error(`segment-peer.py exited (${code}) before "${what}"`)));
      }),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`segment-peer.py: no "${what}" within 10 s`)), 10_000).unref()),
    ]);
  const ready = await said('ready');
  assert.match(ready, /^ready \d+$/);
  return {
    async send() {
      child.stdin.write('go\n');
      assert.equal(await said('sent'), 'sent');
    },
  };
}

/**
 * A Python peer on one side of a relay sends `steps` in one segment; the Node peer on the other side must get
 * `expected` (and a FIN when `fin`) without any further edge. `relaying`: the segment arrives while the relay runs;
 * else before the relay takes the socket (it is reported by the registration's edge: the client's last bytes and
 * FIN right behind its handshake). The leg on Python's side is read by nobody before the relay (pauseOnConnect,
 * a paused native socket).
 */
async function oneSegment(t: TestContext, v: Variant, from: 'client' | 'upstream', when: 'relaying' | 'before', steps: string[], expected: Buffer, fin: boolean): Promise<void> {
  const pySide = await listen(t, true);
  const nodeSide = await listen(t);
  const py = await segmentPeer(t, pySide.port, steps);
  const pyLeg = leg(v, await pySide.accepted);
  if (v.native) pyLeg.pause();
  const receiver = net.connect({ port: nodeSide.port, host: '127.0.0.1', allowHalfOpen: true });
  t.after(() => receiver.destroy());
  const nodeLeg = leg(v, await nodeSide.accepted);
  const got = sink(receiver);
  const [client, upstream] = from === 'client' ? [pyLeg, nodeLeg] : [nodeLeg, pyLeg];
  if (when === 'before') await py.send();
  await splice(t, v.framed, client, upstream);
  if (when === 'relaying') await py.send();
  await got.waitFor(expected.length, `${from} -> the other side`, fin);
  assert.deepEqual(got.bytes(), expected);
}

for (const v of VARIANTS) {
  for (const from of ['client', 'upstream'] as const) {
    const up = from === 'client';
    test(`${v.name}: bytes and FIN in one segment from the ${from} (one edge with EPOLLRDHUP): both reach the other side`, { skip: v.skip, timeout: 30_000 }, async (t) => {
      if (!needPeer(t, 'python3', HAS_PYTHON)) return;
      const bytes = Buffer.concat([message(v, up, 1), message(v, up, 2)]);
      await oneSegment(t, v, from, 'relaying', [`data:${bytes.toString('hex')}`, 'fin'], bytes, true);
    });

    test(`${v.name}: TCP urgent data from the ${from} among bytes of one edge: the bytes after it still arrive`, { skip: v.skip, timeout: 30_000 }, async (t) => {
      if (!needPeer(t, 'python3', HAS_PYTHON)) return;
      // a read stops short at the urgent mark with bytes behind it; the urgent byte itself is not inline (SO_OOBINLINE
      // is off, as in every relay) and so is not relayed: between two frames it leaves the framing intact
      const before = message(v, up, 1);
      const after = message(v, up, 2);
      await oneSegment(t, v, from, 'before', [`data:${before.toString('hex')}`, 'oob:21', `data:${after.toString('hex')}`], Buffer.concat([before, after]), false);
    });

    test(`${v.name}: bytes, TCP urgent data, bytes and FIN from the ${from} before one edge: the read that stops at the mark is not taken for the end`, { skip: v.skip, timeout: 30_000 }, async (t) => {
      if (!needPeer(t, 'python3', HAS_PYTHON)) return;
      // the edge says EPOLLRDHUP (the FIN is in) and EPOLLPRI: a read short of what it asked for stopped at the
      // urgent mark, not at the FIN, and the bytes behind the mark must still go out before the FIN
      const before = message(v, up, 1);
      const after = message(v, up, 2);
      await oneSegment(t, v, from, 'before', [`data:${before.toString('hex')}`, 'oob:21', `data:${after.toString('hex')}`, 'fin'], Buffer.concat([before, after]), true);
    });
  }

  test(`${v.name}: bursts of small messages both ways on 8 tunnels at once, then the last message with FIN: nothing waits for a later edge`, { skip: v.skip, timeout: 120_000 }, async (t) => {
    const ROUNDS = 60;
    await Promise.all(
      Array.from({ length: 8 }, async (_, k) => {
        const front = await listen(t);
        const back = await listen(t);
        // the peers connect, the tunnel's legs are the accepted ends (which side dialled is nothing to the relay)
        const clientPeer = net.connect({ port: front.port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
        const client = leg(v, await front.accepted);
        const upstreamPeer = net.connect({ port: back.port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
        const upstream = leg(v, await back.accepted);
        t.after(() => [clientPeer, upstreamPeer].forEach((s) => s.destroy()));
        const { closed } = await splice(t, v.framed, client, upstream);
        const atUpstream = sink(upstreamPeer);
        const atClient = sink(clientPeer);
        const sentUp: Buffer[] = [];
        const sentDown: Buffer[] = [];
        let upBytes = 0;
        let downBytes = 0;
        let i = 0;
        for (let round = 0; round < ROUNDS; round++) {
          // 1 to 8 writes each way, each its own syscall (and mostly its own segment), the two sides at once
          const burst = 1 + ((round * 7 + k) % 8);
          for (let m = 0; m < burst; m++, i++) {
            const u = message(v, true, i);
            const d = message(v, false, i);
            sentUp.push(u);
            sentDown.push(d);
            upBytes += u.length;
            downBytes += d.length;
            clientPeer.write(u);
            upstreamPeer.write(d);
            if (m % 3 === 2) await new Promise((r) => setImmediate(r));
          }
          await Promise.all([atUpstream.waitFor(upBytes, `tunnel ${k} round ${round}: up`), atClient.waitFor(downBytes, `tunnel ${k} round ${round}: down`)]);
        }
        // the last message and FIN in one write-and-end each way: often one edge with EPOLLRDHUP. Framed, the last
        // message ends with a Close frame (the closing handshake, both at once): a WebSocket end without one drops
        // the tunnel at once (test/e2e/ws-dropped.test.ts), and the other side's last message with it
        const lastUp = v.framed ? Buffer.concat([message(v, true, i), wsClose(MASK)]) : message(v, true, i);
        const lastDown = v.framed ? Buffer.concat([message(v, false, i), wsClose()]) : message(v, false, i);
        clientPeer.end(lastUp);
        upstreamPeer.end(lastDown);
        await Promise.all([atUpstream.waitFor(upBytes + lastUp.length, `tunnel ${k}: last up`, true), atClient.waitFor(downBytes + lastDown.length, `tunnel ${k}: last down`, true)]);
        assert.deepEqual(atUpstream.bytes(), Buffer.concat([...sentUp, lastUp]));
        assert.deepEqual(atClient.bytes(), Buffer.concat([...sentDown, lastDown]));
        const by = await Promise.race([closed, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`tunnel ${k} did not end`)), CROSS_MS).unref())]);
        assert.ok(by === 'client' || by === 'upstream', `closed by ${by}`);
      }),
    );
  });
}

const TLS_RELAY_SKIP = nativeTlsStatus().available ? undefined : `native TLS not in use: ${nativeTlsStatus().reason}`;

test('tls relay: TCP urgent data from the upstream, each time among bytes of one segment pair: the bytes behind it always reach the TLS client', { skip: TLS_RELAY_SKIP, timeout: 60_000 }, async (t) => {
  if (!needPeer(t, 'python3', HAS_PYTHON)) return;
  // Each round: bytes, an urgent byte (TCP pushes both at once) and bytes right behind them (the next segment, at
  // uncork). When both segments are in before the relay thread collects the edge, its read stops short at the
  // urgent mark with bytes behind it, and no edge will come for them: the relay must know (EPOLLPRI). Whether
  // both are in by then is the machine's timing, so there are many rounds; the regular paths must never lose one.
  const ROUNDS = 60;
  const before = (i: number): Buffer => Buffer.from(`round ${i}: bytes before the urgent mark;`);
  const after = (i: number): Buffer => Buffer.from(`round ${i}: bytes behind it;`);
  const steps = Array.from({ length: ROUNDS }, (_, i) => [`data:${before(i).toString('hex')}`, 'oob:21', `data:${after(i).toString('hex')}`, ...(i < ROUNDS - 1 ? ['round'] : [])]).flat();
  const front = await listen(t);
  const back = await listen(t, true);
  const py = await segmentPeer(t, back.port, steps);
  const upstream = adoptNative(await back.accepted, { allowHalfOpen: true });
  assert.ok(upstream !== undefined, 'adoptNative took the upstream socket');
  const clientPeer = tls.connect({ port: front.port, host: '127.0.0.1', allowHalfOpen: true, servername: 'localhost', ca: readFileSync(TEST_CERT) } as tls.ConnectionOptions);
  t.after(() => clientPeer.destroy());
  const server = new NativeTlsServer([{ cert: readFileSync(TEST_CERT), key: readFileSync(TEST_KEY), names: ['localhost'] }], 'TLSv1.2');
  const accepted = await front.accepted;
  let client: NativeSocket | undefined;
  const handshaken = new Promise<NativeSocket>((resolve, reject) => {
    client = adoptNativeTls(accepted, server, { allowHalfOpen: true, timeoutMs: 10_000 }, resolve, reject);
  });
  assert.ok(client !== undefined, 'adoptNativeTls took the accepted socket');
  await Promise.all([handshaken, once(clientPeer, 'secureConnect')]);
  const got = sink(clientPeer as net.Socket);
  assert.ok(client !== undefined);
  await splice(t, false, client, upstream, TLS_RELAY);
  // the urgent byte is not inline (SO_OOBINLINE is off) and so is not relayed
  const expected: Buffer[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    await py.send();
    expected.push(before(i), after(i));
    await got.waitFor(Buffer.concat(expected).length, `round ${i}: upstream -> TLS client`);
  }
  assert.deepEqual(got.bytes(), Buffer.concat(expected));
});
