// A WebSocket peer that ends its TCP connection without a Close frame has dropped the WebSocket (RFC 6455 §7.1.5:
// closed abnormally), which has no half-closed state: the tunnel ends at once, both sockets closed once what the
// dropping peer sent is delivered, as nginx ends an upgraded connection at its first end. A peer that ends after its
// Close frame (the closing handshake under way) keeps half-close: the other peer's Close still reaches it, for as long
// as the tunnel is not silent for tunnel.half_closed_timeout (then it ends, named so in its log line). On every
// relay a real `portico start` runs: the splice relay and the JS relay on a plain listener, the addon's TLS relay and
// Node's TLS with the JS relay on a TLS listener. The other peer never ends its side in these cases, so a tunnel
// that waited for its FIN would never end.
import { test as nodeTest, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { ConfigInput } from '../../src/config/schema.js';
import { nativeStatus } from '../../src/native/addon.js';
import { answerUpgrade } from '../helpers/backends.js';
import { plainListener, startPortico, tlsListener, type LogLine, type Portico } from '../helpers/portico.js';
import { testCaCert, upgradeByHand, writesRefused } from '../helpers/wire.js';
import { needNativeTls } from '../helpers/native-tls.js';
import { until } from '../helpers/until.js';
import { wsClose, wsFrame } from '../helpers/ws-frame.js';

const START = { startTimeoutMs: process.env.PORTICO_NATIVE_ADDON !== undefined ? 120_000 : 20_000 };
const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);

/** One frame (small payloads only here), masked with MASK (client to server) when `masked`. */
const frame = (opcode: number, payload: Buffer, masked: boolean) => wsFrame(opcode, payload, { mask: masked ? MASK : undefined });
const closeFrame = (masked: boolean) => wsClose(masked ? MASK : undefined);

interface Peer {
  socket: net.Socket;
  /** Bytes read after the 101 so far. */
  data(): Buffer;
  ended: Promise<void>;
  /** Resolves when the socket closed. */
  closed: Promise<void>;
}

function peer(socket: net.Socket, first: Buffer): Peer {
  const chunks = [first];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {});
  // not events.once: an 'error' (the reset a test provokes) must not reject them
  const ended = new Promise<void>((r) => socket.once('end', r));
  const closed = new Promise<void>((r) => socket.once('close', r));
  return { socket, data: () => Buffer.concat(chunks), ended, closed };
}

/** A backend that answers the upgrade with a valid 101 and keeps its side open whatever comes (allowHalfOpen). */
async function startBackend(t: TestContext): Promise<{ port: number; peer: Promise<Peer> }> {
  let resolve!: (p: Peer) => void;
  const got = new Promise<Peer>((r) => (resolve = r));
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    answerUpgrade(s, (rest) => resolve(peer(s, rest)));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as AddressInfo).port, peer: got };
}

/** A client that sends the upgrade by hand (plain or TLS, allowHalfOpen) and returns once the 101 head arrived. */
async function connectClient(t: TestContext, portico: Portico, secure: boolean, path: string): Promise<Peer> {
  const socket = secure
    ? tls.connect({ host: '127.0.0.1', port: portico.tlsPort, servername: 'localhost', ca: testCaCert(), ALPNProtocols: ['http/1.1'], allowHalfOpen: true } as tls.ConnectionOptions)
    : net.connect({ host: '127.0.0.1', port: portico.httpPort, allowHalfOpen: true });
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  await once(socket, secure ? 'secureConnect' : 'connect');
  return peer(socket, await upgradeByHand(socket, path));
}

const tunnelLine = (path: string) => (l: LogLine) => l.msg === 'tunnel' && l.path === path;

/** Resolves with `p`'s value, or rejects naming `what` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

const VARIANTS = [
  { name: 'splice relay', secure: false, env: {} },
  { name: 'JS relay (PORTICO_NATIVE=0)', secure: false, env: { PORTICO_NATIVE: '0' } },
  { name: "addon's TLS relay", secure: true, env: {} },
  { name: "Node's TLS and the JS relay (PORTICO_NATIVE=0)", secure: true, env: { PORTICO_NATIVE: '0' } },
] as const;

for (const v of VARIANTS) {
  const native = !('PORTICO_NATIVE' in v.env);
  const test = (title: string, fn: (t: TestContext) => Promise<void>) => nodeTest(`${v.name}: ${title}`, { timeout: 60_000 }, fn);

  async function setup(t: TestContext, tunnel?: ConfigInput['tunnel']): Promise<{ portico: Portico; backend: { port: number; peer: Promise<Peer> } } | undefined> {
    if (v.secure && native && !needNativeTls(t)) return undefined;
    const backend = await startBackend(t);
    const config: ConfigInput = {
      workers: 1,
      listeners: [v.secure ? tlsListener() : plainListener()],
      upstreams: { ws: { targets: [`127.0.0.1:${backend.port}`] } },
      routes: [{ match: { path: '/' }, proxy: 'ws' }],
      ...(tunnel === undefined ? {} : { tunnel }),
      log: { level: 'info', access: true },
    };
    return { portico: await startPortico(t, config, { ...START, env: { ...v.env } }), backend };
  }

  /** Where the tunnel ran: the addon's relays when they are on, the JS relay when switched off. */
  function assertRelay(line: LogLine): void {
    if (!native) assert.equal(line.spliced, false, 'the JS relay');
    else if (nativeStatus().native) assert.equal(line.spliced, true, "the addon's relay");
  }

  test('a client that ends without a Close frame ends the tunnel at once; its last frame reaches the backend first', async (t) => {
    const rig = await setup(t);
    if (rig === undefined) return;
    const client = await connectClient(t, rig.portico, v.secure, '/client-drops');
    const backend = await rig.backend.peer;
    const last = frame(0x1, Buffer.from('last words'), true);
    client.socket.end(last);
    // the backend gets the frame, then its connection closed, although it never ends its own side
    await within(backend.ended, 5000, 'the backend sees the end');
    assert.deepEqual(backend.data(), last);
    await within(client.ended, 5000, "the client's connection ended by Portico");
    const line = await rig.portico.waitForLog(tunnelLine('/client-drops'));
    assert.equal(line.closedBy, 'client');
    assertRelay(line);
    // Portico's side toward the backend is closed, not half-open: what the backend writes now is refused (Node stopped
    // reading at the FIN, so only a write sees it)
    assert.equal(await writesRefused(backend.socket, frame(0x1, Buffer.from('too late'), false)), true, "the backend's writes are refused: its socket closes");
    assert.equal(client.data().length, 0, 'nothing reached the client after its end');
  });

  /**
   * `ender` ends its connection behind `last` (after `before`, when given) and the tunnel ends at once: the other
   * peer sees the end without ending its own side, having received `received` in all, and the access line names the
   * ender. The peers, for what the caller checks further.
   */
  async function endsAtOnce(t: TestContext, path: string, ender: 'client' | 'backend', last: Buffer, received: Buffer, before?: (client: Peer, backend: Peer) => Promise<void>): Promise<{ client: Peer; backend: Peer } | undefined> {
    const rig = await setup(t);
    if (rig === undefined) return undefined;
    const client = await connectClient(t, rig.portico, v.secure, path);
    const backend = await rig.backend.peer;
    if (before !== undefined) await before(client, backend);
    const [e, other] = ender === 'client' ? [client, backend] : [backend, client];
    e.socket.end(last);
    await within(other.ended, 5000, `the ${ender === 'client' ? 'backend' : 'client'} sees the end`);
    assert.deepEqual(other.data(), received);
    const line = await within(rig.portico.waitForLog(tunnelLine(path)), 5000, 'the tunnel ends without the other peer ending');
    assert.equal(line.closedBy, ender === 'client' ? 'client' : 'upstream');
    assertRelay(line);
    return { client, backend };
  }

  test('a backend that ends without a Close frame ends the tunnel at once; its last frame reaches the client first', async (t) => {
    const last = frame(0x2, randomBytes(100), false);
    await endsAtOnce(t, '/backend-drops', 'backend', last, last);
  });

  for (const dropper of ['client', 'backend'] as const) {
    test(`a ${dropper} that ends before any byte crossed ends the tunnel at once; the other peer sees the end`, (t) =>
      endsAtOnce(t, `/${dropper}-ends-first`, dropper, Buffer.alloc(0), Buffer.alloc(0)).then(() => undefined));
  }

  // (a TLS socket of Node's cannot reset: plain clients only)
  if (!v.secure) test('a client that resets before any byte crossed ends the tunnel; the backend sees the end', async (t) => {
    const rig = await setup(t);
    if (rig === undefined) return;
    const client = await connectClient(t, rig.portico, v.secure, '/reset-first');
    const backend = await rig.backend.peer;
    client.socket.resetAndDestroy();
    await within(backend.ended, 5000, 'the backend sees the end');
    const line = await within(rig.portico.waitForLog(tunnelLine('/reset-first')), 5000, 'the tunnel ends');
    assert.ok(line.closedBy === 'client_error' || line.closedBy === 'client', String(line.closedBy));
  });

  for (const ender of ['client', 'backend'] as const) {
    test(`after the closing handshake (a Close each way), the ${ender}'s end ends the tunnel at once; the other peer sees the end`, async (t) => {
      // the client's Close and the backend's answer cross; neither peer ends its connection yet. Nothing may follow a
      // closing handshake either way: the tunnel does not wait for the other peer's end
      const crossed = async (client: Peer, backend: Peer): Promise<void> => {
        client.socket.write(closeFrame(true));
        await until("the client's Close reaches the backend", () => backend.data().length, (n) => n >= closeFrame(true).length, 5000, 5);
        backend.socket.write(closeFrame(false));
        await until("the backend's Close reaches the client", () => client.data().length, (n) => n >= closeFrame(false).length, 5000, 5);
      };
      const peers = await endsAtOnce(t, `/closed-then-${ender}-ends`, ender, Buffer.alloc(0), ender === 'client' ? closeFrame(true) : closeFrame(false), crossed);
      if (peers === undefined) return;
      assert.deepEqual(peers.backend.data(), closeFrame(true));
      assert.deepEqual(peers.client.data(), closeFrame(false));
    });
  }

  test("a Close still half-way when the other peer ends after its own keeps half-close: the rest of it still arrives", async (t) => {
    const rig = await setup(t);
    if (rig === undefined) return;
    const client = await connectClient(t, rig.portico, v.secure, '/close-half-way');
    const backend = await rig.backend.peer;
    const answer = closeFrame(false);
    // the backend's Close without its last byte: the handshake is not done while it is in flight
    backend.socket.write(answer.subarray(0, answer.length - 1));
    await until("the backend's Close, but its last byte", () => client.data().length, (n) => n >= answer.length - 1, 5000, 5);
    client.socket.end(closeFrame(true));
    await within(backend.ended, 5000, "the client's Close and FIN reach the backend");
    backend.socket.end(answer.subarray(answer.length - 1));
    await within(client.ended, 5000, 'the client sees the end after the last byte');
    assert.deepEqual(client.data(), answer);
    const line = await rig.portico.waitForLog(tunnelLine('/close-half-way'));
    assert.ok(line.closedBy === 'client' || line.closedBy === 'upstream', String(line.closedBy));
    assertRelay(line);
  });

  test('300 clients that drop right behind the 101, 20 at a time: every tunnel ends, the worker lives (the relay ends during its start)', async (t) => {
    const rig = await setup(t);
    if (rig === undefined) return;
    // the client's FIN is there before the relay is: its first event ends it, while the hand-over may still be
    // registering its sockets (tls-relay.cc crashed the worker on this within 10 handshakes before AwaitRegistered);
    // 20 at once, so that hand-overs and ends of several tunnels meet in the relay thread's batches
    const N = 300;
    const AT_ONCE = 20;
    for (let batch = 0; batch < N; batch += AT_ONCE) {
      await Promise.all(
        Array.from({ length: AT_ONCE }, async (_, k) => {
          const i = batch + k;
          const client = await connectClient(t, rig.portico, v.secure, `/drop-${i % 10}`);
          // half of them with a last frame (the tunnel then crossed bytes), half with none
          if (i % 2 === 0) client.socket.end(frame(0x1, Buffer.from(`bye ${i}`), true));
          client.socket.destroy();
        }),
      );
    }
    await within(
      (async () => {
        while (rig.portico.logs.filter((l) => l.msg === 'tunnel' && String(l.path).startsWith('/drop-')).length < N) await new Promise((r) => setTimeout(r, 20));
      })(),
      20_000,
      `${N} tunnels logged`,
    );
    assert.equal(rig.portico.logs.filter((l) => l.msg === 'worker exited unexpectedly').length, 0, 'no worker died');
  });

  /**
   * `first` ends its side behind `last`; the other peer reads it and the FIN, answers with `answer` and ends too: the
   * tunnel stayed open toward `first` (half-close), and each peer got exactly the other's bytes.
   */
  async function halfClosed(t: TestContext, path: string, first: 'client' | 'backend', last: Buffer, answer: Buffer): Promise<void> {
    const rig = await setup(t);
    if (rig === undefined) return;
    const client = await connectClient(t, rig.portico, v.secure, path);
    const backend = await rig.backend.peer;
    const [ender, other] = first === 'client' ? [client, backend] : [backend, client];
    ender.socket.end(last);
    await within(other.ended, 5000, `the ${first}'s FIN is passed on`);
    assert.deepEqual(other.data(), last);
    other.socket.end(answer);
    await within(ender.ended, 5000, `the ${first} gets the answer after its FIN, then the end`);
    assert.deepEqual(ender.data(), answer);
    const line = await rig.portico.waitForLog(tunnelLine(path));
    assert.ok(line.closedBy === 'client' || line.closedBy === 'upstream', String(line.closedBy));
    assertRelay(line);
  }

  for (const first of ['client', 'backend'] as const) {
    const other = first === 'client' ? 'backend' : 'client';
    // client frames are masked, a backend's are not; some peers half-close right behind their Close
    const masked = first === 'client';
    test(`a ${first}'s end after its Close frame keeps half-close: the ${other}'s last message and Close still reach it`, (t) =>
      halfClosed(t, `/closing-${first}`, first, closeFrame(masked), Buffer.concat([frame(0x1, Buffer.from('a last message'), !masked), closeFrame(!masked)])));
    // opcode 0xc: not a frame any endpoint sends
    test(`bytes that are not WebSocket frames keep half-close: the ${other} still answers after the ${first} ended`, (t) =>
      halfClosed(t, `/raw-${first}`, first, Buffer.from('last words'), Buffer.from('answer after your FIN')));
  }

  /**
   * `first` sends `last`, stays silent for `quietMs`, then ends its side (a bare FIN), and the other peer stays silent
   * without ending its own: the tunnel stays half-open for tunnel.half_closed_timeout (1 s here) of silence after the
   * FIN (the FIN counts as activity, whatever silence came before it), then ends; the other peer's connection is
   * closed too, and the line says why.
   */
  async function silentAfter(t: TestContext, path: string, first: 'client' | 'backend', last: Buffer, quietMs: number): Promise<void> {
    const rig = await setup(t, { half_closed_timeout: '1s' });
    if (rig === undefined) return;
    const client = await connectClient(t, rig.portico, v.secure, path);
    const backend = await rig.backend.peer;
    const [ender, other] = first === 'client' ? [client, backend] : [backend, client];
    ender.socket.write(last);
    await new Promise((r) => setTimeout(r, quietMs));
    const finAt = Date.now();
    ender.socket.end();
    await within(other.ended, 5000, `the ${first}'s FIN is passed on`);
    assert.deepEqual(other.data(), last);
    await within(ender.closed, 6000, `the ${first}'s half-open connection is closed`);
    const waited = Date.now() - finAt;
    assert.ok(waited >= 900, `closed ${waited} ms after the FIN: not before the silence bound`);
    const line = await rig.portico.waitForLog(tunnelLine(path));
    assert.equal(line.closedBy, 'half_closed_timeout');
    assertRelay(line);
    // the silent peer's connection is closed too, not left half-open: what it writes now is refused
    const silent = first === 'client' ? 'backend' : 'client';
    assert.equal(await writesRefused(other.socket, frame(0x1, Buffer.from('too late'), silent === 'client')), true, `the ${silent}'s writes are refused`);
  }

  test('a client that ends after its Close frame while the backend stays silent: the tunnel ends after tunnel.half_closed_timeout', (t) =>
    silentAfter(t, '/close-unanswered', 'client', closeFrame(true), 0));
  test('a backend that ends after raw bytes and 1.3 s of silence while the client stays silent: the tunnel ends after tunnel.half_closed_timeout', (t) =>
    silentAfter(t, '/raw-unanswered', 'backend', Buffer.from('last words'), 1300));
}
