// The JS byte relay of a tunnel (WebSocket after a valid 101, later raw TCP): bytes both ways with
// backpressure, half-close forwarded, byte counts, and one close reason. It owns both sockets from start()
// to close and destroys both exactly once; it knows nothing about HTTP. Timeouts are checked by the owner's
// sweep through checkIdle(), so no timer is created per tunnel.
import { randomBytes } from 'node:crypto';
import type { ByteSocket, ClosedBy } from '../core/socket.js';
import { endsAtOnce, FrameTracker, goingAwayFrame } from '../wire/ws-frames.js';
import { noop } from '../core/util.js';


export interface TunnelTimeouts {
  /** Ms without a byte either way before the tunnel is closed (0 = never). */
  idle: number;
  /** Ms after which the tunnel is closed whatever its traffic (0 = never). */
  lifetime: number;
  /**
   * Once one side ended and the other runs on: ms without a byte either way before the tunnel is closed (0 or
   * absent = never; tunnel.half_closed_timeout).
   */
  halfClosed?: number;
}

const KEEPALIVE_PROBE_MS = 60_000;
/**
 * At shutdown, how long a frame in progress may take to end before the tunnel is closed without a Close frame,
 * and how long the peers then get to close their side. Both within the worker's drain overrun (2 s).
 */
const GOING_AWAY_WAIT_MS = 500;
const GOING_AWAY_LINGER_MS = 1000;

/**
 * Idle, half-closed and lifetime limits of a tunnel, read off its byte counters at each sweep of the owner, so no
 * timer exists per tunnel. Shared by the JS relay and the splice relay so both close for the same reasons (a relay
 * thread applies the same limits on its own clock: relay.cc, tls-relay.cc).
 */
export class TunnelClock {
  readonly #timeouts: TunnelTimeouts;
  readonly #startedAt: number;
  #mark = -1;
  #markAt = 0;
  /** The sweep that first saw the tunnel half-closed: the end counts as activity (the bound is the silence after it). */
  #halfSeen = false;

  constructor(timeouts: TunnelTimeouts, startedAt: number) {
    this.#timeouts = timeouts;
    this.#startedAt = startedAt;
  }

  /**
   * The reason to close now, or undefined. `bytes`: both directions so far; `halfClosed`: one side ended and the
   * other runs on.
   */
  due(now: number, bytes: number, halfClosed = false): 'lifetime' | 'idle_timeout' | 'half_closed_timeout' | undefined {
    const { idle, lifetime } = this.#timeouts;
    if (lifetime > 0 && now - this.#startedAt >= lifetime) return 'lifetime';
    const fin = halfClosed ? (this.#timeouts.halfClosed ?? 0) : 0;
    if (idle <= 0 && fin <= 0) return undefined;
    if (bytes !== this.#mark || (fin > 0 && !this.#halfSeen)) {
      this.#mark = bytes;
      this.#markAt = now;
      this.#halfSeen = fin > 0;
      return undefined;
    }
    const silent = now - this.#markAt;
    if (idle > 0 && silent >= idle) return 'idle_timeout';
    if (fin > 0 && silent >= fin) return 'half_closed_timeout';
    return undefined;
  }
}

export class Tunnel {
  readonly client: ByteSocket;
  readonly upstream: ByteSocket;
  readonly startedAt: number;
  /** Bytes client -> upstream and upstream -> client. */
  bytesUp = 0;
  bytesDown = 0;
  closedBy: ClosedBy | undefined;
  #clock: TunnelClock;
  #onClose: (t: Tunnel) => void;
  #clientEnded = false;
  #upstreamEnded = false;
  /** Set before start(): false ends the tunnel at the first FIN either way (an L4 listener's `half_close: false`). */
  halfClose = true;
  /** WebSocket tunnels: frame boundaries client -> upstream and upstream -> client (null for raw TCP). */
  #framesUp: FrameTracker | null = null;
  #framesDown: FrameTracker | null = null;
  /** shutdown() is waiting for frames in progress to end (bounded by this timer). */
  #goingAway: NodeJS.Timeout | null = null;
  /** The Close frames are written: close() ends the sockets and waits for them (#linger). */
  #lingering = false;
  /** holdUp(): the owner stopped reading the client; the upstream's drain does not restart it. */
  #heldUp = false;

  /** `websocket`: the bytes are WebSocket frames (after a 101), so shutdown() can send Close frames. */
  constructor(client: ByteSocket, upstream: ByteSocket, timeouts: TunnelTimeouts, onClose: (t: Tunnel) => void, websocket = false) {
    this.client = client;
    this.upstream = upstream;
    keepHalfOpen(client, upstream);
    this.#onClose = onClose;
    this.startedAt = Date.now();
    this.#clock = new TunnelClock(timeouts, this.startedAt);
    if (websocket) {
      this.#framesUp = new FrameTracker(true);
      this.#framesDown = new FrameTracker(false);
    }
  }

  /** Bytes each way relayed before this relay took over (a SpliceTunnel falling back): the frames start there. */
  relayedBefore(up: Buffer | null, down: Buffer | null): void {
    if (up !== null) this.#framesUp?.feed(up);
    if (down !== null) this.#framesDown?.feed(down);
  }

  /**
   * Starts relaying. `clientRest`/`upstreamRest`: bytes already read from either side past the handshake,
   * delivered first (peeking never loses a byte). `sentDown`: upstream bytes already written to the client (behind
   * a 101 the addon wrote): counted and followed, not written again.
   */
  start(clientRest: Buffer | null, upstreamRest: Buffer | null, sentDown: Buffer | null = null): void {
    const { client, upstream } = this;
    if (sentDown !== null) {
      this.bytesDown += sentDown.length;
      this.#framesDown?.feed(sentDown);
    }
    // 'error' first: a reset during setup must land on our handler (STYLE.md 3)
    client.on('error', this.#onClientError);
    upstream.on('error', this.#onUpstreamError);
    client.on('close', this.#onClientClose);
    upstream.on('close', this.#onUpstreamClose);
    client.on('end', this.#onClientEnd);
    upstream.on('end', this.#onUpstreamEnd);
    client.on('data', this.#onClientData);
    upstream.on('data', this.#onUpstreamData);
    client.on('drain', this.#onClientDrain);
    upstream.on('drain', this.#onUpstreamDrain);
    client.setTimeout(0);
    upstream.setTimeout(0);
    // a peer that vanished without FIN is found by TCP keep-alive, since tunnels have no idle timeout by default
    client.setKeepAlive(true, KEEPALIVE_PROBE_MS);
    upstream.setKeepAlive(true, KEEPALIVE_PROBE_MS);
    if (upstreamRest !== null && upstreamRest.length > 0) this.#onUpstreamData(upstreamRest);
    if (clientRest !== null && clientRest.length > 0) this.#onClientData(clientRest);
    // A FIN read before the relay existed (the client half-closed while the 101 was awaited) emitted its 'end'
    // to the HTTP side and will not come again: forward it now, after the bytes that preceded it.
    if (client.readableEnded) this.#onClientEnd();
    if (upstream.readableEnded && this.closedBy === undefined) this.#onUpstreamEnd();
    if (this.closedBy !== undefined) return;
    client.resume();
    upstream.resume();
  }

  #onClientData = (chunk: Buffer): void => {
    if (this.#goingAway !== null) return this.#toBoundary(chunk, this.client, this.upstream, this.#framesUp!, true);
    this.bytesUp += chunk.length;
    this.#framesUp?.feed(chunk);
    if (!this.upstream.write(chunk)) this.client.pause();
  };

  #onUpstreamData = (chunk: Buffer): void => {
    if (this.#goingAway !== null) return this.#toBoundary(chunk, this.upstream, this.client, this.#framesDown!, false);
    this.bytesDown += chunk.length;
    this.#framesDown?.feed(chunk);
    if (!this.client.write(chunk)) this.upstream.pause();
  };

  /**
   * End of the shutdown grace. A WebSocket tunnel gets a Close frame with 1001 (going away) each way, to the
   * client and (masked) to the backend, written between two frames: a frame in progress is relayed to its end
   * first (at most GOING_AWAY_WAIT_MS), bytes after it are dropped. A direction that already carried a Close
   * gets none; one whose framing Portico lost, or a raw TCP tunnel, is closed without (the peer sees 1006).
   */
  shutdown(): void {
    if (this.closedBy !== undefined || this.#goingAway !== null) return;
    const up = this.#framesUp;
    const down = this.#framesDown;
    if (up === null || down === null || up.broken || down.broken) return this.close('shutdown');
    this.#goingAway = setTimeout(() => this.#sayGoingAway(), GOING_AWAY_WAIT_MS);
    this.#goingAway.unref();
    // a direction already between frames reads nothing more: what would come is past the Close
    if (up.atBoundary) this.client.pause();
    if (down.atBoundary) this.upstream.pause();
    if (up.atBoundary && down.atBoundary) this.#sayGoingAway();
  }

  /** While going away: relays `chunk` up to the end of the frame in progress, drops the rest. */
  #toBoundary(chunk: Buffer, src: ByteSocket, dst: ByteSocket, frames: FrameTracker, upward: boolean): void {
    if (this.closedBy !== undefined) return;
    const n = frames.feedToBoundary(chunk);
    if (n > 0) {
      if (upward) this.bytesUp += n;
      else this.bytesDown += n;
      // backpressure as in the relay: the drain handlers resume the source
      if (!dst.write(n === chunk.length ? chunk : chunk.subarray(0, n))) src.pause();
    }
    if (!frames.atBoundary && !frames.broken) return;
    src.pause();
    if (this.#framesUp!.atBoundary && this.#framesDown!.atBoundary) this.#sayGoingAway();
  }

  #sayGoingAway(): void {
    if (this.closedBy !== undefined) return;
    if (this.#goingAway !== null) clearTimeout(this.#goingAway);
    const up = this.#framesUp!;
    const down = this.#framesDown!;
    if (down.atBoundary && !down.closeSeen && !this.#upstreamEnded) this.client.write(goingAwayFrame(false, Buffer.alloc(0)));
    if (up.atBoundary && !up.closeSeen && !this.#clientEnded) this.upstream.write(goingAwayFrame(true, randomBytes(4)));
    this.#lingering = true;
    this.close('shutdown');
  }

  /**
   * After the Close frames: both sockets are ended (the frames leave before the FIN; over TLS the encrypted
   * bytes must reach the kernel, which destroySoon() does not wait for) and read to the end, so no unread byte
   * turns the close into a reset that drops the frame at the peer. The owner is told once both closed, or
   * GOING_AWAY_LINGER_MS later, when what is left is destroyed.
   */
  #linger(): void {
    let open = 0;
    const timer = setTimeout(() => {
      this.client.destroy();
      this.upstream.destroy();
    }, GOING_AWAY_LINGER_MS);
    timer.unref();
    const closed = (): void => {
      if (--open > 0) return;
      clearTimeout(timer);
      this.#onClose(this);
    };
    for (const s of [this.client, this.upstream]) {
      if (s.destroyed) continue;
      open++;
      s.once('close', closed);
      s.on('data', noop);
      s.resume();
      s.end();
    }
    if (open === 0) closed();
  }

  /** Stops (true) or restarts (false) reading the client, for an owner whose upstream is slow (terminate's hop). */
  holdUp(on: boolean): void {
    if (this.#heldUp === on) return;
    this.#heldUp = on;
    if (on) this.client.pause();
    else if (this.closedBy === undefined && !this.#clientEnded) this.client.resume();
  }

  #onUpstreamDrain = (): void => {
    if (this.closedBy === undefined && !this.#clientEnded && !this.#heldUp) this.client.resume();
  };

  #onClientDrain = (): void => {
    if (this.closedBy === undefined && !this.#upstreamEnded) this.upstream.resume();
  };

  // Half-close: a FIN from one side becomes a FIN to the other; the tunnel ends when both sides have ended.
  // Without (halfClose false), the first FIN ends it: close() flushes what was written, then closes both. So does
  // a WebSocket peer's end without a Close frame, or after the closing handshake (#endsAtOnce).
  #onClientEnd = (): void => {
    this.#clientEnded = true;
    if (this.#upstreamEnded || !this.halfClose || this.#endsAtOnce(this.#framesUp, this.#framesDown)) this.close('client');
    else this.upstream.end();
  };

  #onUpstreamEnd = (): void => {
    this.#upstreamEnded = true;
    if (this.#clientEnded || !this.halfClose || this.#endsAtOnce(this.#framesDown, this.#framesUp)) this.close('upstream');
    else this.client.end();
  };

  /**
   * The side whose frames `ender` follows ended its connection: whether the tunnel ends at once (ws-frames.ts
   * endsAtOnce, the rule of every relay; close() flushes what was written). A raw tunnel and a shutdown under way
   * keep half-close.
   */
  #endsAtOnce(ender: FrameTracker | null, other: FrameTracker | null): boolean {
    return ender !== null && other !== null && this.#goingAway === null && !this.#lingering && endsAtOnce(ender, other);
  }

  #onClientError = (): void => this.close('client_error');
  #onUpstreamError = (): void => this.close('upstream_error');
  #onClientClose = (): void => this.close('client');
  #onUpstreamClose = (): void => this.close('upstream');

  /** Called periodically by the owner: closes the tunnel past its idle, half-closed or lifetime limit. */
  checkIdle(now: number): void {
    if (this.closedBy !== undefined) return;
    const due = this.#clock.due(now, this.bytesUp + this.bytesDown, this.#clientEnded !== this.#upstreamEnded);
    if (due !== undefined) this.close(due);
  }

  /** Ends the tunnel once: both sockets destroyed, listeners removed, the owner told with the reason. */
  close(by: ClosedBy): void {
    if (this.closedBy !== undefined) return;
    this.closedBy = by;
    if (this.#goingAway !== null) clearTimeout(this.#goingAway);
    const { client, upstream } = this;
    client.removeListener('data', this.#onClientData);
    upstream.removeListener('data', this.#onUpstreamData);
    client.removeListener('drain', this.#onClientDrain);
    upstream.removeListener('drain', this.#onUpstreamDrain);
    client.removeListener('end', this.#onClientEnd);
    upstream.removeListener('end', this.#onUpstreamEnd);
    client.removeListener('close', this.#onClientClose);
    upstream.removeListener('close', this.#onUpstreamClose);
    // errors after teardown are expected (EPIPE, ECONNRESET) and must not crash the worker: keep a no-op
    client.removeListener('error', this.#onClientError);
    upstream.removeListener('error', this.#onUpstreamError);
    client.on('error', noop);
    upstream.on('error', noop);
    if (this.#lingering) return this.#linger();
    if (by === 'client' || by === 'upstream') {
      // orderly: let queued bytes flush, then close (end() after the peer's FIN completes the close)
      client.end();
      upstream.end();
      client.destroySoon();
      upstream.destroySoon();
    } else {
      client.destroy();
      upstream.destroy();
    }
    this.#onClose(this);
  }
}

/**
 * Both legs of a tunnel keep their writable side when their peer's FIN arrives: the relay passes each end on itself
 * (half-close) or ends the tunnel. An upstream connection is made with allowHalfOpen false (a pooled connection
 * ends with its peer's FIN), so without this a backend's FIN ended our side toward it, and what the client sent
 * after that was lost. Set when the relay is built, before any 'end' of the tunnel's can be emitted.
 */
export function keepHalfOpen(client: ByteSocket, upstream: ByteSocket): void {
  client.allowHalfOpen = true;
  upstream.allowHalfOpen = true;
}
