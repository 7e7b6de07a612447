// Loopback socket pairs for relay tests: both ends of a real TCP connection, so a relay can be put between two
// of them (its "client" is the accepted side of one pair, its "upstream" the connecting side of another).
import { once } from 'node:events';
import net from 'node:net';
import type { TestContext } from 'node:test';

/** A loopback server whose accepted sockets are matched to their client by the client's local port. */
export class Acceptor {
  readonly server = net.createServer({ allowHalfOpen: true });
  port = 0;
  #waiting = new Map<number, (s: net.Socket) => void>();
  #early = new Map<number, net.Socket>();

  async listen(t: TestContext): Promise<void> {
    this.server.on('connection', (s: net.Socket) => {
      const resolve = this.#waiting.get(s.remotePort ?? 0);
      if (resolve === undefined) this.#early.set(s.remotePort ?? 0, s);
      else {
        this.#waiting.delete(s.remotePort ?? 0);
        resolve(s);
      }
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as net.AddressInfo).port;
    t.after(() => this.server.close());
  }

  /** Connects and resolves with both ends: [connecting side, accepted side]. */
  async pair(): Promise<[net.Socket, net.Socket]> {
    const c = net.connect({ port: this.port, host: '127.0.0.1', allowHalfOpen: true });
    await once(c, 'connect');
    const local = c.localPort ?? 0;
    const early = this.#early.get(local);
    if (early !== undefined) {
      this.#early.delete(local);
      return [c, early];
    }
    return [c, await new Promise<net.Socket>((resolve) => this.#waiting.set(local, resolve))];
  }
}

/** Two listening acceptors: `front` gives a relay its client side, `back` its upstream side. */
export async function acceptors(t: TestContext): Promise<{ front: Acceptor; back: Acceptor }> {
  const front = new Acceptor();
  const back = new Acceptor();
  await front.listen(t);
  await back.listen(t);
  return { front, back };
}

/** The four ends around a relay under test, destroyed when the test ends: the relay joins tunnelClient and tunnelUpstream. */
export interface RelayEnds {
  clientPeer: net.Socket;
  tunnelClient: net.Socket;
  tunnelUpstream: net.Socket;
  upstreamPeer: net.Socket;
}

export async function relayEnds(t: TestContext, front: Acceptor, back: Acceptor): Promise<RelayEnds> {
  const [clientPeer, tunnelClient] = await front.pair();
  const [tunnelUpstream, upstreamPeer] = await back.pair();
  t.after(() => [clientPeer, upstreamPeer, tunnelClient, tunnelUpstream].forEach((s) => s.destroy()));
  return { clientPeer, tunnelClient, tunnelUpstream, upstreamPeer };
}
