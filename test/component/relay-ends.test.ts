// How the splice relay's ends reach JavaScript (src/native/addon.cc): an end waits for the event loop's next turn
// (delivered before the loop sleeps again), and only when the loop does not turn within the hold does the relay
// thread wake it. Driven with real tunnels; the loop is held busy, or held still, synchronously and with bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/native/addon.js';
import type { ClosedBy } from '../../src/core/socket.js';
import { SpliceTunnel, canSplice, nativeStatus } from '../../src/tunnel/splice.js';
import { acceptors, type Acceptor } from '../helpers/acceptor.js';

const SKIP = nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`;

/** A splice tunnel between two loopback pairs; `closed` resolves with its reason once JS heard of its end. */
async function tunnel(front: Acceptor, back: Acceptor) {
  const [clientPeer, tunnelClient] = await front.pair();
  const [tunnelUpstream, upstreamPeer] = await back.pair();
  assert.ok(canSplice(tunnelClient, tunnelUpstream));
  let ended = false;
  const closed = new Promise<ClosedBy>((resolve) => {
    new SpliceTunnel(tunnelClient, tunnelUpstream, { idle: 0, lifetime: 0 }, (x) => {
      ended = true;
      resolve(x.closedBy!);
    }).start(null, null);
  });
  // the relay holds both fds once start() returned (no bytes were waiting): nothing more to flush
  await new Promise((r) => setImmediate(r));
  return { clientPeer, upstreamPeer, closed, ended: () => ended };
}

/** Spins the JS thread (the loop does not turn) until `done`, at most `ms`; false when the time ran out. */
function spinUntil(done: () => boolean, ms: number): boolean {
  const until = Date.now() + ms;
  while (!done()) if (Date.now() > until) return false;
  return true;
}

test('a relay end reaches JS on the loop\'s next turn: a busy loop gets its ends without a wake-up from the relay thread', { skip: SKIP, timeout: 60_000 }, async (t) => {
  const addon = native()!;
  const { front, back } = await acceptors(t);
  const N = 40;
  const before = addon.status();
  for (let i = 0; i < N; i++) {
    const x = await tunnel(front, back);
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
  const after = addon.status();
  assert.equal(after.endsDelivered - before.endsDelivered, N, 'every end delivered once');
  // a wake-up happens only when the JS thread did not turn within the hold (a loaded machine may deschedule it)
  assert.ok(after.endWakes - before.endWakes < N / 2, `ends delivered on the loop's own turns: ${after.endWakes - before.endWakes} wake-ups for ${N} ends`);
});

test('a relay end held while the loop does not turn wakes it: the relay thread calls once the hold is over', { skip: SKIP, timeout: 60_000 }, async (t) => {
  const addon = native()!;
  const { front, back } = await acceptors(t);
  for (let i = 0; i < 3; i++) {
    const x = await tunnel(front, back);
    const wakes = addon.status().endWakes;
    const delivered = addon.status().endsDelivered;
    x.clientPeer.destroy();
    x.upstreamPeer.destroy();
    // the JS thread stays in this call: the relay ends the tunnel, holds the end, then must ask for a wake-up
    assert.ok(spinUntil(() => addon.status().active === 0, 5_000), 'the relay ended the tunnel');
    assert.ok(spinUntil(() => addon.status().endWakes > wakes, 5_000), 'the relay thread asked to wake the loop for the held end');
    assert.equal(addon.status().endsDelivered, delivered, 'nothing was delivered while the loop stood still');
    assert.equal(x.ended(), false);
    await x.closed;
    assert.equal(addon.status().endsDelivered, delivered + 1);
    assert.equal(addon.status().endWakes, wakes + 1, 'one wake-up for the end');
  }
});
