// How the relay threads' ends reach JavaScript (src/native/end-bridge.cc), for the splice relay and the TLS relay:
// an end waits for the event loop's next turn (delivered before the loop sleeps again), and only when the loop
// does not turn within the hold does the relay thread wake it. Driven with real tunnels; the loop is kept
// turning, or held still, synchronously and with bounds.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { native } from '../../src/native/addon.js';
import type { ByteSocket, ClosedBy } from '../../src/core/socket.js';
import { SpliceTunnel, canSplice, nativeStatus, type NativeRelay } from '../../src/tunnel/splice.js';
import { TLS_RELAY, canTlsRelay } from '../../src/tunnel/tls-relay.js';
import { NativeTlsServer, adoptNativeTls, nativeTlsStatus } from '../../src/native/tls.js';
import { connectNative, nativeIoAvailable, type NativeSocket } from '../../src/native/io.js';
import { acceptors, type Acceptor } from '../helpers/acceptor.js';
import { TEST_CERT, TEST_KEY } from '../helpers/portico.js';

interface Counts {
  active: number;
  endsDelivered: number;
  endWakes: number;
}

interface Kind {
  name: string;
  skip: string | undefined;
  counts(): Counts;
  /** A tunnel on this relay: both outside peers, and the relay's start. */
  legs(t: TestContext, front: Acceptor, back: Acceptor): Promise<{ clientPeer: net.Socket; upstreamPeer: net.Socket; client: ByteSocket; upstream: ByteSocket; relay: NativeRelay | undefined }>;
}

const NO_ADDON = nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`;
let tlsServer: NativeTlsServer | undefined;

const KINDS: Kind[] = [
  {
    name: 'splice relay',
    skip: NO_ADDON,
    counts: () => native()!.status(),
    async legs(_t, front, back) {
      const [clientPeer, client] = await front.pair();
      const [upstream, upstreamPeer] = await back.pair();
      assert.ok(canSplice(client, upstream));
      return { clientPeer, upstreamPeer, client, upstream, relay: undefined };
    },
  },
  {
    name: 'TLS relay',
    skip: NO_ADDON ?? (nativeTlsStatus().available && nativeIoAvailable() ? undefined : `native TLS not in use: ${nativeTlsStatus().reason}`),
    counts: () => (native() as unknown as { tlsRelayStatus(): Counts }).tlsRelayStatus(),
    async legs(_t, front, back) {
      tlsServer ??= new NativeTlsServer([{ cert: readFileSync(TEST_CERT), key: readFileSync(TEST_KEY), names: ['localhost'] }], 'TLSv1.2');
      const accepted = once(front.server, 'connection').then(([s]) => s as net.Socket);
      const clientPeer = tls.connect({ port: front.port, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(TEST_CERT), ALPNProtocols: ['http/1.1'] });
      let client: NativeSocket | undefined;
      const handshaken = new Promise<NativeSocket>((resolve, reject) => {
        void accepted.then((s) => (client = adoptNativeTls(s, tlsServer!, { allowHalfOpen: true, timeoutMs: 10_000 }, resolve, reject)));
      });
      await Promise.all([handshaken, once(clientPeer, 'secureConnect')]);
      const upstream = connectNative('127.0.0.1', back.port, { allowHalfOpen: true })!;
      const connected = once(upstream, 'connect');
      const upstreamPeer = await new Promise<net.Socket>((resolve) => back.server.once('connection', resolve));
      await connected;
      assert.ok(canTlsRelay(client!, upstream));
      return { clientPeer, upstreamPeer, client: client!, upstream, relay: TLS_RELAY };
    },
  },
];

/** Spins the JS thread (the loop does not turn) until `done`, at most `ms`; false when the time ran out. */
function spinUntil(done: () => boolean, ms: number): boolean {
  const until = Date.now() + ms;
  while (!done()) if (Date.now() > until) return false;
  return true;
}

for (const kind of KINDS) {
  /** A tunnel on the relay thread; `closed` resolves with its reason once JS heard of its end. */
  async function tunnel(t: TestContext, front: Acceptor, back: Acceptor) {
    const { clientPeer, upstreamPeer, client, upstream, relay } = await kind.legs(t, front, back);
    t.after(() => {
      clientPeer.destroy();
      upstreamPeer.destroy();
    });
    const active = kind.counts().active;
    let ended = false;
    const closed = new Promise<ClosedBy>((resolve) => {
      new SpliceTunnel(client, upstream, { idle: 0, lifetime: 0 }, (x) => {
        ended = true;
        resolve(x.closedBy!);
      }, false, relay).start(null, null);
    });
    // nothing was waiting in JS either way: the relay thread holds both legs once start() returned
    assert.equal(kind.counts().active, active + 1, 'the relay took the tunnel at start()');
    return { clientPeer, upstreamPeer, closed, ended: () => ended };
  }

  test(`${kind.name}: an end reaches JS on the loop's next turn, so a busy loop gets its ends without a wake-up from the relay thread`, { skip: kind.skip, timeout: 60_000 }, async (t) => {
    const { front, back } = await acceptors(t);
    const N = 30;
    const before = kind.counts();
    for (let i = 0; i < N; i++) {
      const x = await tunnel(t, front, back);
      // the loop keeps turning (a setImmediate each turn, so it never sleeps) until the end is delivered
      let turns = 0;
      const ticking = new Promise<void>((resolve) => {
        const tick = (): void => {
          if (x.ended() || ++turns > 1_000_000) return resolve();
          setImmediate(tick);
        };
        tick();
      });
      x.clientPeer.destroy();
      x.upstreamPeer.destroy();
      assert.ok(['client', 'upstream', 'client_error', 'upstream_error'].includes(await x.closed));
      await ticking;
      assert.ok(x.ended(), `tunnel ${i}: the end arrived while the loop turned (${turns} turns)`);
    }
    const after = kind.counts();
    assert.equal(after.endsDelivered - before.endsDelivered, N, 'every end delivered once');
    // a wake-up happens only when the JS thread did not turn within the hold (a loaded machine may deschedule it)
    assert.ok(after.endWakes - before.endWakes < N / 2, `ends delivered on the loop's own turns: ${after.endWakes - before.endWakes} wake-ups for ${N} ends`);
  });

  test(`${kind.name}: an end held while the loop does not turn wakes it once the hold is over`, { skip: kind.skip, timeout: 60_000 }, async (t) => {
    const { front, back } = await acceptors(t);
    for (let i = 0; i < 3; i++) {
      const x = await tunnel(t, front, back);
      const before = kind.counts();
      x.clientPeer.destroy();
      x.upstreamPeer.destroy();
      // the JS thread stays in this call: the relay ends the tunnel, holds the end, then must ask for a wake-up
      assert.ok(spinUntil(() => kind.counts().active < before.active, 5_000), 'the relay ended the tunnel');
      assert.ok(spinUntil(() => kind.counts().endWakes > before.endWakes, 5_000), 'the relay thread asked to wake the loop for the held end');
      assert.equal(kind.counts().endsDelivered, before.endsDelivered, 'nothing was delivered while the loop stood still');
      assert.equal(x.ended(), false);
      await x.closed;
      assert.equal(kind.counts().endsDelivered, before.endsDelivered + 1);
      assert.equal(kind.counts().endWakes, before.endWakes + 1, 'one wake-up for the end');
    }
  });
}
