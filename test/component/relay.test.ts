// The tunnel relay over real loopback sockets: bytes both ways, half-close, backpressure, resets, timeouts.
// One suite over a relay factory: the JS relay and the splice relay (when the addon is built; also with its pipe
// pool's cap at 0, so every byte takes the user-space copy path, and with WebSocket framing on), each with
// net.Socket legs and with NativeSocket legs (src/native/io.ts), and the TLS relay (a client whose TLS the addon
// terminates, a Node TLS client in front of it), run the very same cases (STYLE.md 13).
import { test as nodeTest, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { Tunnel, type TunnelTimeouts } from '../../src/tunnel/relay.js';
import { SpliceTunnel, canSplice, nativeStatus } from '../../src/tunnel/splice.js';
import { native } from '../../src/native/addon.js';
import type { ByteSocket, ClosedBy } from '../../src/core/socket.js';
import { adoptNative, connectNative, nativeIoAvailable, type NativeSocket } from '../../src/native/io.js';
import { NativeTlsServer, adoptNativeTls, nativeTlsStatus } from '../../src/native/tls.js';
import { TLS_RELAY, canTlsRelay } from '../../src/tunnel/tls-relay.js';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { TEST_CERT, TEST_KEY } from '../helpers/portico.js';

/** What the suite needs of a relay: Tunnel's public surface, plus "the proxy stopped reading downstream". */
interface RelayUnderTest {
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly closedBy: ClosedBy | undefined;
  readonly startedAt: number;
  start(clientRest: Buffer | null, upstreamRest: Buffer | null): void;
  checkIdle(now: number): void;
  close(by: ClosedBy): void;
}

interface Relay {
  name: string;
  /** Why this relay cannot run here (the suite is skipped, loudly), or undefined. */
  skip: string | undefined;
  /** The tunnel's own sockets: as Node accepted and connected them, or moved onto native I/O. */
  legs: 'net' | 'native' | 'tls';
  make(client: ByteSocket, upstream: ByteSocket, timeouts: TunnelTimeouts, onClose: (by: ClosedBy) => void): RelayUnderTest;
  /** True once the relay holds back the upstream because the client does not read. */
  holdsBackDownstream(t: RelayUnderTest): boolean;
}

const NATIVE_IO_SKIP = nativeIoAvailable() ? undefined : `native I/O not in use: ${nativeStatus().reason ?? 'PORTICO_NATIVE_IO=0 or no io functions in the addon'}`;

const RELAYS: Relay[] = [
  {
    name: 'js relay',
    skip: undefined,
    legs: 'net',
    make: (c, u, timeouts, onClose) => new Tunnel(c, u, timeouts, (t) => onClose(t.closedBy!)),
    holdsBackDownstream: (t) => (t as Tunnel).upstream.isPaused(),
  },
  {
    name: 'splice relay',
    skip: nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`,
    legs: 'net',
    make: (c, u, timeouts, onClose) => {
      assert.ok(canSplice(c, u), 'both legs are plain TCP with empty JS buffers');
      native()?.setPipeCap(DEFAULT_PIPE_CAP);
      return new SpliceTunnel(c, u, timeouts, (t) => onClose(t.closedBy!));
    },
    holdsBackDownstream: (t) => (t as SpliceTunnel).blocked.down,
  },
  {
    // the pool's cap reached: the relay thread copies through a small buffer instead of a pipe
    name: 'splice relay at pipe cap 0',
    skip: nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`,
    legs: 'net',
    make: (c, u, timeouts, onClose) => {
      assert.ok(canSplice(c, u), 'both legs are plain TCP with empty JS buffers');
      native()?.setPipeCap(0);
      return new SpliceTunnel(c, u, timeouts, (t) => onClose(t.closedBy!));
    },
    holdsBackDownstream: (t) => (t as SpliceTunnel).blocked.down,
  },
  {
    // a WebSocket tunnel's relay follows frame headers (PumpFramed); the cases' bytes are not frames, so this
    // runs its reads up to the first header it refuses, then its raw path (framing lost): the same contract
    name: 'splice relay, WebSocket framing on',
    skip: nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`,
    legs: 'net',
    make: (c, u, timeouts, onClose) => {
      assert.ok(canSplice(c, u), 'both legs are plain TCP with empty JS buffers');
      native()?.setPipeCap(DEFAULT_PIPE_CAP);
      return new SpliceTunnel(c, u, timeouts, (t) => onClose(t.closedBy!), true);
    },
    holdsBackDownstream: (t) => (t as SpliceTunnel).blocked.down,
  },
];
const DEFAULT_PIPE_CAP = native()?.pipeStats().cap ?? 0;
// the same relays with both legs on native I/O, as the plain-HTTP path hands them over
for (const r of [...RELAYS]) RELAYS.push({ ...r, name: `${r.name} on native sockets`, skip: r.skip ?? NATIVE_IO_SKIP, legs: 'native' });
// a client leg whose TLS the addon terminates and a native plain upstream: the addon's TLS relay thread
RELAYS.push({
  name: 'tls relay',
  skip: nativeTlsStatus().available ? undefined : `native TLS not in use: ${nativeTlsStatus().reason}`,
  legs: 'tls',
  make: (c, u, timeouts, onClose) => {
    assert.ok(canTlsRelay(c, u), 'a native TLS client leg and a plain upstream');
    return new SpliceTunnel(c, u, timeouts, (t) => onClose(t.closedBy!), false, TLS_RELAY);
  },
  holdsBackDownstream: (t) => (t as SpliceTunnel).blocked.down,
});
let tlsServer: NativeTlsServer | undefined;

for (const relay of RELAYS) suite(relay);

function suite(relay: Relay): void {
  const name = relay.name;
  const test = (title: string, fn: (t: TestContext) => Promise<void>) => nodeTest(`${name}: ${title.replace(/^relay: /, '')}`, { skip: relay.skip }, fn);

  interface Rig {
    /** The outside client and the outside upstream peer. */
    clientPeer: net.Socket;
    upstreamPeer: net.Socket;
    tunnel: RelayUnderTest;
    closed: Promise<ClosedBy>;
    cleanup(): void;
  }

  async function acceptOne(): Promise<{ server: net.Server; port: number; accepted: Promise<net.Socket> }> {
    const server = net.createServer({ allowHalfOpen: true });
    const accepted = once(server, 'connection').then(([s]) => s as net.Socket);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { server, port: (server.address() as net.AddressInfo).port, accepted };
  }

  async function rig(timeouts = { idle: 0, lifetime: 0 }, clientRest: Buffer | null = null, upstreamRest: Buffer | null = null): Promise<Rig> {
    const front = await acceptOne();
    const back = await acceptOne();
    const secure = relay.legs === 'tls';
    const clientPeer = secure
      ? tls.connect({ port: front.port, host: '127.0.0.1', allowHalfOpen: true, servername: 'localhost', ca: readFileSync(TEST_CERT), ALPNProtocols: ['http/1.1'] } as tls.ConnectionOptions)
      : net.connect({ port: front.port, host: '127.0.0.1', allowHalfOpen: true });
    const accepted = await front.accepted;
    const native = relay.legs !== 'net';
    let tunnelClient: ByteSocket | undefined;
    if (secure) {
      tlsServer ??= new NativeTlsServer([{ cert: readFileSync(TEST_CERT), key: readFileSync(TEST_KEY), names: ['localhost'] }], 'TLSv1.2');
      const handshaken = new Promise<NativeSocket>((resolve, reject) => {
        tunnelClient = adoptNativeTls(accepted, tlsServer!, { allowHalfOpen: true, timeoutMs: 10_000 }, resolve, reject);
      });
      assert.ok(tunnelClient !== undefined, 'adoptNativeTls took the accepted socket');
      await Promise.all([handshaken, once(clientPeer, 'secureConnect')]);
    } else {
      tunnelClient = native ? adoptNative(accepted, { allowHalfOpen: true }) : accepted;
    }
    assert.ok(tunnelClient !== undefined, 'adoptNative took the accepted socket');
    const tunnelUpstream: ByteSocket | undefined = native
      ? connectNative('127.0.0.1', back.port, { allowHalfOpen: true })
      : net.connect({ port: back.port, host: '127.0.0.1', allowHalfOpen: true });
    assert.ok(tunnelUpstream !== undefined, 'connectNative gave a socket');
    // listening before the accept is awaited: the native 'connect' may come first
    const upstreamConnected = once(tunnelUpstream, 'connect').catch(() => undefined);
    const upstreamPeer = await back.accepted;
    await upstreamConnected;
    let resolveClosed!: (b: ClosedBy) => void;
    const closed = new Promise<ClosedBy>((r) => (resolveClosed = r));
    const tunnel = relay.make(tunnelClient!, tunnelUpstream, timeouts, resolveClosed);
    tunnel.start(clientRest, upstreamRest);
    return {
      clientPeer,
      upstreamPeer,
      tunnel,
      closed,
      cleanup() {
        for (const s of [clientPeer, upstreamPeer, tunnelClient!, tunnelUpstream]) s.destroy();
        front.server.close();
        back.server.close();
      },
    };
  }

  /** The peer saw the other side go away: FIN ('end', half-open sockets stay open after it) or a reset. */
  function gone(s: net.Socket): Promise<unknown> {
    return Promise.race([once(s, 'end'), once(s, 'close')]);
  }

  function collect(s: net.Socket): { done: Promise<Buffer>; bytes(): number } {
    const chunks: Buffer[] = [];
    let n = 0;
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      n += c.length;
    });
    return { done: once(s, 'end').then(() => Buffer.concat(chunks)), bytes: () => n };
  }

  test('relay: bytes flow both ways and are counted; leftovers from the handshake come first', async (t) => {
    const r = await rig({ idle: 0, lifetime: 0 }, Buffer.from('early-client|'), Buffer.from('early-upstream|'));
    t.after(() => r.cleanup());
    const atUpstream = collect(r.upstreamPeer);
    const atClient = collect(r.clientPeer);
    r.clientPeer.end('hello upstream');
    const up = await atUpstream.done;
    assert.equal(up.toString(), 'early-client|hello upstream');
    r.upstreamPeer.end('hello client');
    const down = await atClient.done;
    assert.equal(down.toString(), 'early-upstream|hello client');
    const by = await r.closed;
    assert.ok(by === 'upstream' || by === 'client');
    assert.equal(r.tunnel.bytesUp, up.length);
    assert.equal(r.tunnel.bytesDown, down.length);
     // the splice and TLS relays moved the bytes on the addon's thread, not through the JS fallback
    if (r.tunnel instanceof SpliceTunnel) assert.ok(r.tunnel.spliced, "relayed on the addon's thread");
  });

  test('relay: client half-close reaches the upstream, which can still answer before closing', async (t) => {
    const r = await rig();
    t.after(() => r.cleanup());
    const atClient = collect(r.clientPeer);
    r.clientPeer.end('request then FIN');
    const [data] = await Promise.all([collect(r.upstreamPeer).done]);
    assert.equal(data.toString(), 'request then FIN');
    // the upstream got FIN but the tunnel is still open the other way
    assert.equal(r.tunnel.closedBy, undefined);
    r.upstreamPeer.write('late answer');
    r.upstreamPeer.end();
    assert.equal((await atClient.done).toString(), 'late answer');
    assert.equal(await r.closed, 'upstream');
  });

  test('relay: 32 MiB downstream to a slow reader keeps memory bounded (backpressure) and arrives intact', async (t) => {
    const r = await rig();
    t.after(() => r.cleanup());
    const payload = randomBytes(32 * 1024 * 1024);
    r.clientPeer.pause();
    r.upstreamPeer.end(payload);
    // with the reader paused the relay must stop reading the upstream: wait until it has paused it
    const deadline = Date.now() + 10_000;
    while (!relay.holdsBackDownstream(r.tunnel) && Date.now() < deadline) await new Promise((res) => setImmediate(res));
    assert.ok(relay.holdsBackDownstream(r.tunnel), 'upstream held back while the client does not read');
    assert.ok(r.tunnel.bytesDown < payload.length, 'not everything was buffered in the proxy');
    const got = collect(r.clientPeer);
    r.clientPeer.resume();
    const data = await got.done;
    assert.equal(createHash('sha256').update(data).digest('hex'), createHash('sha256').update(payload).digest('hex'));
    assert.equal(r.tunnel.bytesDown, payload.length);
  });

  test('relay: upstream reset mid-tunnel -> client socket is closed and the reason recorded', async (t) => {
    const r = await rig();
    t.after(() => r.cleanup());
    r.clientPeer.on('error', () => {});
    const clientClosed = gone(r.clientPeer);
    r.upstreamPeer.resetAndDestroy();
    const by = await r.closed;
    assert.ok(by === 'upstream_error' || by === 'upstream', `closed by ${by}`);
    await clientClosed;
  });

  test('relay: client goes away -> upstream gets FIN, and the tunnel ends when the upstream closes too', async (t) => {
    const r = await rig();
    t.after(() => r.cleanup());
    r.upstreamPeer.on('error', () => {});
    const upGone = gone(r.upstreamPeer);
    r.clientPeer.destroy();
    await upGone;
    r.upstreamPeer.end();
    const by = await r.closed;
    assert.ok(['client', 'upstream', 'client_error'].includes(by), `closed by ${by}`);
  });

  test('relay: idle timeout closes only after the limit with no byte either way; traffic resets it', async (t) => {
    const r = await rig({ idle: 1000, lifetime: 0 });
    t.after(() => r.cleanup());
    r.clientPeer.on('error', () => {});
    const t0 = Date.now();
    r.tunnel.checkIdle(t0);
    r.tunnel.checkIdle(t0 + 900);
    assert.equal(r.tunnel.closedBy, undefined);
    const atUp = once(r.upstreamPeer, 'data');
    r.clientPeer.write('x');
    await atUp;
    r.tunnel.checkIdle(t0 + 1500); // activity seen: the idle clock restarts here
    r.tunnel.checkIdle(t0 + 2400);
    assert.equal(r.tunnel.closedBy, undefined);
    r.tunnel.checkIdle(t0 + 2600);
    assert.equal(await r.closed, 'idle_timeout');
  });

  test('relay: lifetime closes a busy tunnel', async (t) => {
    const r = await rig({ idle: 0, lifetime: 5000 });
    t.after(() => r.cleanup());
    r.clientPeer.on('error', () => {});
    r.tunnel.checkIdle(r.tunnel.startedAt + 4999);
    assert.equal(r.tunnel.closedBy, undefined);
    r.tunnel.checkIdle(r.tunnel.startedAt + 5000);
    assert.equal(await r.closed, 'lifetime');
  });
}
