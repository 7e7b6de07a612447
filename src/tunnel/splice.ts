// The splice relay of a tunnel whose legs are both plain kernel sockets: the bytes move kernel to kernel on the
// addon's thread (src/native/relay.cc), never through this event loop. This module decides eligibility, hands
// the fds over (dup, then destroy the JS sockets: one owner per fd) and mirrors Tunnel's surface so the owner
// can use either. It falls back to the JS Tunnel when the hand-over fails; it knows nothing about HTTP.
import net from 'node:net';
import { TLSSocket } from 'node:tls';
import { native, nativeStatus, type NativeStatus, type SpliceStats } from '../native/addon.js';
import type { ByteSocket, ClosedBy } from '../core/socket.js';
import { NativeSocket } from '../native/io.js';
import { keepHalfOpen, Tunnel, TunnelClock, type TunnelTimeouts } from './relay.js';
import { noop } from '../core/util.js';

export { nativeStatus, type NativeStatus };

/** As in relay.ts: TCP keep-alive finds a peer that vanished without FIN (tunnels have no idle timeout by default). */
const KEEPALIVE_PROBE_MS = 60_000;

/** The libuv stream handle behind a net.Socket: its fd, and reading stopped without closing. */
interface StreamHandle {
  fd?: number;
  /** Node's own flag (net.js tryReadStart): must say false after readStop, or resume() never restarts reading. */
  reading?: boolean;
  readStop?(): number;
  readStart?(): number;
}

function handleOf(socket: ByteSocket): StreamHandle | undefined {
  if (socket instanceof NativeSocket) return undefined;
  const h = (socket as unknown as { _handle?: StreamHandle | null })._handle;
  return h === null ? undefined : h;
}

/** The socket's file descriptor, or -1 (closed, or not a kernel socket). */
export function fdOf(socket: ByteSocket): number {
  if (socket instanceof NativeSocket) return socket.fd;
  const fd = handleOf(socket)?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** The socket's descriptor number for counting descriptors (the fd budget at accept), or -1; not for I/O on it. */
export function fdNumberOf(socket: ByteSocket): number {
  return socket instanceof NativeSocket ? socket.fdNumber : fdOf(socket);
}

/**
 * True when both sockets can be relayed by splice(2): the addon is loaded, both are plain TCP or unix sockets
 * (not TLS: a terminated leg is decrypted in user space), open, and nothing is waiting in their JS read buffers.
 */
export function canSplice(client: ByteSocket, upstream: ByteSocket): boolean {
  if (native() === undefined) return false;
  for (const s of [client, upstream]) {
    // a TLS leg (Node's or the addon's) carries ciphertext on its fd: never spliced
    if (s instanceof TLSSocket || !(s instanceof net.Socket || s instanceof NativeSocket) || (s instanceof NativeSocket && s.encrypted)) return false;
    if (s.destroyed || s.readableLength > 0 || closedFd(s)) return false;
  }
  return true;
}

/** A socket without a kernel fd any more (a NativeSocket has one until destroyed: no ioFd call to ask). */
function closedFd(s: ByteSocket): boolean {
  return s instanceof NativeSocket ? s.destroyed : fdOf(s) < 0;
}

/**
 * How a tunnel's sockets reach a relay thread of the addon: splice(2) for two plain legs (below), the TLS relay
 * for a client leg whose TLS the addon terminates (tls-relay.ts).
 */
export interface NativeRelay {
  /**
   * Hands both sockets' bytes to the relay thread: the relay id (> 0; the caller then destroys the JS sockets,
   * which by now close only their own copies), or 0 when nothing was taken (the JS relay takes over).
   * Throws like 0, with the sockets untouched. `timeouts`: the relay thread applies `idle` and `halfClosed` (the
   * owner's sweep keeps `lifetime`). `halfClose` false: a raw relay ends at the first FIN either way (an L4
   * listener's `half_close: false`); a relay that always half-closes may ignore it only if no L4 path uses it.
   */
  start(client: ByteSocket, upstream: ByteSocket, timeouts: TunnelTimeouts, onEnd: (reason: ClosedBy, bytesUp: number, bytesDown: number) => void, seen: WebSocketSeen | undefined, halfClose?: boolean): number;
  /** False when the relay has already ended (its onEnd is on its way). */
  close(id: number, reason: ClosedBy): boolean;
  /** Shutdown of a WebSocket tunnel: Close 1001 each way at a frame boundary; false when it had already ended. */
  goingAway(id: number): boolean;
  stats(id: number): SpliceStats | null;
  /** Stops (true) or restarts (false) reading the client's side (raw relays: terminate's hop into uWebSockets.js). */
  pauseClient?(id: number, on: boolean): void;
  /**
   * Takes two sockets that have nothing waiting in JavaScript either way (NativeSocket.settled) as they stand,
   * in one step, TCP keep-alive included (armed by the relay thread once the tunnel lived a second): no pause, no
   * flush, no dup. The relay id, or 0 when it cannot (nothing changed: the caller goes the usual way). Absent:
   * always the usual way.
   */
  takeSettled?(client: ByteSocket, upstream: ByteSocket, timeouts: TunnelTimeouts, onEnd: (reason: ClosedBy, bytesUp: number, bytesDown: number) => void, seen: WebSocketSeen | undefined, halfClose?: boolean): number;
}

/** WebSocket tunnels: the bytes already relayed each way, so a relay thread knows where the frames stand. */
export interface WebSocketSeen {
  up: Buffer | null;
  down: Buffer | null;
}

/**
 * Two plain kernel sockets go to the splice thread (relay.cc): two NativeSockets by their ids (the fds leave the
 * native I/O unclosed, spliceTakeIo), else dups of both fds.
 */
export const SPLICE_RELAY: NativeRelay = {
  start(client, upstream, timeouts, onEnd, seen, halfClose) {
    const addon = native();
    if (addon === undefined) return 0;
    // keep-alive is already on (start() set it before the flush)
    if (client instanceof NativeSocket && upstream instanceof NativeSocket && addon.spliceTakeIo !== undefined) return takeIo(client, upstream, timeouts, 0, onEnd, seen, halfClose);
    const a = addon.dup(fdOf(client));
    let b: number;
    try {
      b = addon.dup(fdOf(upstream));
    } catch (err) {
      addon.close(a);
      throw err;
    }
    // spliceStart owns both dups from here, also when it throws
    return addon.spliceStart(a, b, timeouts.idle, onEnd, seen, halfClose, timeouts.halfClosed);
  },
  close: (id, reason) => native()?.spliceClose(id, reason) === true,
  goingAway: (id) => native()?.spliceGoingAway(id) === true,
  stats: (id) => native()?.spliceStats(id) ?? null,
  pauseClient: (id, on) => native()?.splicePause?.(id, 0, on),
  takeSettled(client, upstream, timeouts, onEnd, seen, halfClose) {
    if (!(client instanceof NativeSocket && upstream instanceof NativeSocket) || native()?.spliceTakeIo === undefined) return 0;
    return takeIo(client, upstream, timeouts, KEEPALIVE_PROBE_MS / 1000, onEnd, seen, halfClose);
  },
};

/** Both NativeSockets' connections go to the splice relay by id; once taken, the JS sockets are done (they close nothing). */
function takeIo(client: NativeSocket, upstream: NativeSocket, timeouts: TunnelTimeouts, keepAliveS: number, onEnd: (reason: ClosedBy, bytesUp: number, bytesDown: number) => void, seen: WebSocketSeen | undefined, halfClose = true): number {
  const id = native()!.spliceTakeIo!(client.ioId, upstream.ioId, timeouts.idle, keepAliveS, onEnd, seen, halfClose, timeouts.halfClosed);
  if (id > 0) {
    client.released();
    upstream.released();
  }
  return id;
}


type Phase = 'new' | 'flushing' | 'native' | 'fallback' | 'closed';

export class SpliceTunnel {
  /**
   * The JS sockets as handed in, until the relay thread owns dups of their fds: then destroyed and let go (an
   * idle tunnel then holds no socket object, its upstream's pool bookkeeping or their listeners); the JS
   * fallback relay takes them over instead.
   */
  #legs: { client: ByteSocket; upstream: ByteSocket } | null;
  readonly startedAt: number;
  closedBy: ClosedBy | undefined;
  #timeouts: TunnelTimeouts;
  #onClose: (t: SpliceTunnel) => void;
  #phase: Phase = 'new';
  #wentNative = false;
  #id = 0;
  #fallback: Tunnel | undefined;
  /** Bytes relayed by plain writes before the hand-over (leftovers). */
  #restUp = 0;
  #restDown = 0;
  /** Final native counts, once the relay ended. */
  #doneUp = 0;
  #doneDown = 0;
  #reported = false;
  #clock: TunnelClock;
  /** WebSocket tunnels: the leftovers each way (the first bytes of each frame stream), until the hand-over. */
  readonly #websocket: boolean;
  #seen: WebSocketSeen = NOTHING_SEEN;
  readonly #relay: NativeRelay;
  /** holdUp(): nothing more is read from the client (applied at the hand-over when asked before it). */
  #heldUp = false;
  /** Set before start(): false ends a raw tunnel at the first FIN either way (an L4 listener's `half_close: false`). */
  halfClose = true;

  /**
   * `websocket`: the bytes are WebSocket frames (after a 101), so shutdown() can send Close frames; `relay`: the
   * addon's thread that moves the bytes (splice for two plain legs, the default).
   */
  constructor(client: ByteSocket, upstream: ByteSocket, timeouts: TunnelTimeouts, onClose: (t: SpliceTunnel) => void, websocket = false, relay: NativeRelay = SPLICE_RELAY) {
    this.#relay = relay;
    this.#legs = { client, upstream };
    // until the relay thread has them (or the JS fallback is built), a FIN must not end our side either
    keepHalfOpen(client, upstream);
    this.#timeouts = timeouts;
    this.#onClose = onClose;
    this.#websocket = websocket;
    this.startedAt = Date.now();
    this.#clock = new TunnelClock(timeouts, this.startedAt);
  }

  /** Bytes client -> upstream (leftovers included). */
  get bytesUp(): number {
    if (this.#fallback !== undefined) return this.#fallback.bytesUp;
    return this.#restUp + (this.#phase === 'native' ? (this.#stats()?.bytesUp ?? this.#doneUp) : this.#doneUp);
  }

  /** Bytes upstream -> client (leftovers included). */
  get bytesDown(): number {
    if (this.#fallback !== undefined) return this.#fallback.bytesDown;
    return this.#restDown + (this.#phase === 'native' ? (this.#stats()?.bytesDown ?? this.#doneDown) : this.#doneDown);
  }

  /** Whether the bytes went through the addon's thread (false before the hand-over and on the JS fallback; stays true after close). */
  get spliced(): boolean {
    return this.#wentNative;
  }

  /** Per direction: bytes wait in the kernel for a destination that does not read (backpressure). */
  get blocked(): { up: boolean; down: boolean } {
    const s = this.#phase === 'native' ? this.#stats() : null;
    return { up: s?.upBlocked ?? false, down: s?.downBlocked ?? false };
  }

  /**
   * Stops (true) or restarts (false) reading the client, for an owner whose upstream is slow (terminate's unix
   * hop into uWS, which cannot pause a WebSocket itself). Raw relays only: a WebSocket relay ignores it.
   */
  holdUp(on: boolean): void {
    if (this.#heldUp === on) return;
    this.#heldUp = on;
    if (this.#fallback !== undefined) this.#fallback.holdUp(on);
    else if (this.#phase === 'native') this.#relay.pauseClient?.(this.#id, on);
  }

  #stats() {
    return this.#id === 0 ? null : this.#relay.stats(this.#id);
  }

  /**
   * Starts relaying. `clientRest`/`upstreamRest` (bytes read past the handshake) and anything still in the
   * sockets' JS read buffers are written with plain writes first; the fds go to the relay once those flushed.
   * `sentDown`: upstream bytes already written to the client (behind a 101 the addon wrote): counted, and the
   * frames down start after them.
   */
  start(clientRest: Buffer | null, upstreamRest: Buffer | null, sentDown: Buffer | null = null): void {
    if (this.#phase !== 'new' || this.#legs === null) return;
    this.#phase = 'flushing';
    const { client, upstream } = this.#legs;
    const sent = sentDown !== null && sentDown.length > 0 ? sentDown : null;
    this.#restDown = sent?.length ?? 0;
    if (this.#websocket && sent !== null) this.#seen = { up: null, down: sent };
    // nothing to write first and nothing waiting in JS either way (the usual WebSocket handshake): the relay
    // takes both connections as they stand, in one call
    if (clientRest === null && upstreamRest === null && this.#relay.takeSettled !== undefined && settled(client) && settled(upstream)) {
      const id = this.#relay.takeSettled(client, upstream, this.#timeouts, this.#onNativeEnd, this.#websocket ? this.#seen : undefined, this.halfClose);
      if (id > 0) {
        this.#native(id);
        this.#legs = null;
        return;
      }
    }
    client.on('error', this.#onClientError);
    upstream.on('error', this.#onUpstreamError);
    // From here the kernel keeps every new byte (and FIN) for the relay thread: libuv reads nothing more.
    for (const s of [client, upstream]) {
      s.pause();
      const handle = handleOf(s);
      if (handle?.readStop !== undefined) {
        handle.readStop();
        handle.reading = false;
      }
      s.setTimeout(0);
      // a socket option, so it stays with the kernel socket the relay gets: a peer that vanished without FIN
      // is found by TCP keep-alive, as in the JS relay (a unix socket ignores it)
      s.setKeepAlive(true, KEEPALIVE_PROBE_MS);
    }
    const toUpstream = concatBytes(clientRest, drainReadable(client));
    const toClient = concatBytes(upstreamRest, drainReadable(upstream));
    this.#restUp = toUpstream?.length ?? 0;
    this.#restDown += toClient?.length ?? 0;
    if (this.#websocket) this.#seen = { up: toUpstream, down: concatBytes(sent, toClient) };
    let pending = 1;
    const flushed = (): void => {
      if (--pending === 0) this.#handOver();
    };
    // write callbacks run once the bytes are in the kernel, in order before anything the relay moves
    if (toUpstream !== null) {
      pending++;
      upstream.write(toUpstream, flushed);
    }
    if (toClient !== null) {
      pending++;
      client.write(toClient, flushed);
    }
    if (upstream.writableLength > 0 || client.writableLength > 0) {
      // earlier writes of the owner (the replayed head, the 101) also go before the fds change hands
      pending++;
      flushAll([client, upstream], flushed);
    }
    if (inBatch(client) || inBatch(upstream)) {
      // the addon read more of a leg in the batch being dispatched: it reaches the paused socket (held) before
      // the batch ends, and #handOver sends it on; handing the fds over now would drop it
      pending++;
      process.nextTick(flushed);
    }
    flushed();
  }

  #handOver(): void {
    if (this.#phase !== 'flushing' || this.#legs === null) return;
    const { client, upstream } = this.#legs;
    if (client.destroyed || upstream.destroyed || closedFd(client) || closedFd(upstream)) {
      this.#fallBack();
      return;
    }
    // bytes a native socket read in the batch that paused it arrived after start() drained it: out first
    const lateUp = drainReadable(client);
    const lateDown = drainReadable(upstream);
    if (lateUp !== null || lateDown !== null) {
      this.#restUp += lateUp?.length ?? 0;
      this.#restDown += lateDown?.length ?? 0;
      if (this.#websocket) this.#seen = { up: concatBytes(this.#seen.up, lateUp), down: concatBytes(this.#seen.down, lateDown) };
      let pending = 1;
      const again = (): void => {
        if (--pending === 0) this.#handOver();
      };
      if (lateUp !== null) {
        pending++;
        upstream.write(lateUp, again);
      }
      if (lateDown !== null) {
        pending++;
        client.write(lateDown, again);
      }
      again();
      return;
    }
    let id = 0;
    try {
      // the relay owns what it took from here, also when it throws; a WebSocket relay follows the frames from
      // where the leftovers left them
      id = this.#relay.start(client, upstream, this.#timeouts, this.#onNativeEnd, this.#websocket ? this.#seen : undefined, this.halfClose);
    } catch {
      // EMFILE and the like: the JS relay still works, the sockets are untouched
      this.#fallBack();
      return;
    }
    if (id <= 0) {
      this.#fallBack();
      return;
    }
    this.#native(id);
    // The relay thread now holds its own copies: close libuv's. libuv has read nothing since readStop and
    // every write of ours has completed, so no byte is left behind in either copy. (NativeSockets taken by id
    // are done already: nothing to close.)
    for (const s of [client, upstream]) {
      s.removeListener('error', s === client ? this.#onClientError : this.#onUpstreamError);
      if (s.destroyed) continue;
      s.on('error', noop);
      s.destroy();
    }
    this.#legs = null;
  }

  /** The relay thread moves the bytes from here (relay id `id`). */
  #native(id: number): void {
    this.#id = id;
    this.#phase = 'native';
    this.#wentNative = true;
    if (this.#websocket) this.#seen = NOTHING_SEEN;
    if (this.#heldUp) this.#relay.pauseClient?.(id, true);
  }

  #fallBack(): void {
    if (this.#legs === null) return;
    const { client, upstream } = this.#legs;
    client.removeListener('error', this.#onClientError);
    upstream.removeListener('error', this.#onUpstreamError);
    if (client.destroyed || upstream.destroyed) {
      this.#finish(client.destroyed ? 'client_error' : 'upstream_error');
      return;
    }
    this.#phase = 'fallback';
    this.#legs = null;
    // undo start()'s readStop: Readable still counts a read in progress, so resume() alone would not restart it
    for (const s of [client, upstream]) {
      const handle = handleOf(s);
      if (handle?.readStart !== undefined && handle.reading === false) {
        handle.reading = true;
        handle.readStart();
      }
    }
    const timeouts = this.#timeouts;
    this.#fallback = new Tunnel(
      client,
      upstream,
      timeouts,
      (t) => {
        this.closedBy = t.closedBy;
        this.#phase = 'closed';
        this.#report();
      },
      this.#websocket,
    );
    this.#fallback.halfClose = this.halfClose;
    // its frame trackers start where the leftovers left the frame streams
    this.#fallback.relayedBefore(this.#seen.up, this.#seen.down);
    if (this.#heldUp) this.#fallback.holdUp(true);
    this.#seen = NOTHING_SEEN;
    // leftovers were already written: they are counted here and not replayed
    this.#fallback.bytesUp = this.#restUp;
    this.#fallback.bytesDown = this.#restDown;
    this.#fallback.start(null, null);
  }

  #onNativeEnd = (reason: ClosedBy, bytesUp: number, bytesDown: number): void => {
    this.#doneUp = bytesUp;
    this.#doneDown = bytesDown;
    this.#phase = 'closed';
    // a close(by) asked by the owner keeps its reason; otherwise the relay's own
    this.closedBy ??= reason;
    this.#report();
  };

  #onClientError = (): void => this.close('client_error');
  #onUpstreamError = (): void => this.close('upstream_error');

  /** Called periodically by the owner: closes the tunnel past its idle or lifetime limit. */
  checkIdle(now: number): void {
    if (this.#fallback !== undefined) {
      this.#fallback.checkIdle(now);
      return;
    }
    if (this.closedBy !== undefined) return;
    // The relay thread also enforces `idle` on its own clock; this keeps the owner's sweep authoritative too.
    const due = this.#clock.due(now, this.bytesUp + this.bytesDown);
    if (due !== undefined) this.close(due);
  }

  /**
   * End of the shutdown grace. A WebSocket tunnel on a relay thread gets a Close 1001 each way there, between
   * two frames (both relays follow the frame headers; see RelayEngine::RequestGoingAway in src/native/relay.h
   * and StartGoingAway in src/native/tls-relay.cc), and ends within 1.5 s; a raw one (L4) is closed (its peers
   * see a FIN or a reset, as before). A tunnel that fell back to the JS relay, which does the same, is closed by it.
   */
  shutdown(): void {
    if (this.#fallback !== undefined) return this.#fallback.shutdown();
    if (!this.#websocket || this.#phase !== 'native' || this.closedBy !== undefined) return this.close('shutdown');
    // false: the relay ended meanwhile and its own reason is on its way to #onNativeEnd
    if (this.#relay.goingAway(this.#id)) this.closedBy = 'shutdown';
  }

  /** Ends the tunnel once; the owner's onClose runs when the relay has closed both fds (with final counts). */
  close(by: ClosedBy): void {
    if (this.#fallback !== undefined) {
      this.#fallback.close(by);
      return;
    }
    if (this.closedBy !== undefined || this.#phase === 'closed') return;
    if (this.#phase === 'native') {
      // false: the relay ended meanwhile and its own reason is on its way to #onNativeEnd
      if (this.#relay.close(this.#id, by)) this.closedBy = by;
      return;
    }
    this.#finish(by);
  }

  /** Before the hand-over: both JS sockets are ours to destroy. */
  #finish(by: ClosedBy): void {
    this.closedBy = by;
    this.#phase = 'closed';
    const legs = this.#legs;
    this.#legs = null;
    for (const s of legs === null ? [] : [legs.client, legs.upstream]) {
      s.removeListener('error', s === legs?.client ? this.#onClientError : this.#onUpstreamError);
      s.on('error', noop);
      s.destroy();
    }
    this.#report();
  }

  #report(): void {
    if (this.#reported) return;
    this.#reported = true;
    this.#onClose(this);
  }
}

/** A WebSocket tunnel's leftovers before any: shared, never written to (#seen is replaced, not changed). */
const NOTHING_SEEN: WebSocketSeen = Object.freeze({ up: null, down: null });

/** A NativeSocket with an event still to come in the batch being dispatched (NativeSocket.inBatch). */
function inBatch(s: ByteSocket): boolean {
  return s instanceof NativeSocket && s.inBatch;
}

/** A NativeSocket with nothing waiting in JavaScript (NativeSocket.settled); a net.Socket never is. */
function settled(s: ByteSocket): boolean {
  return s instanceof NativeSocket && s.settled;
}

/** What Node read ahead and nobody consumed: it goes out by plain write before the hand-over. */
export function drainReadable(socket: ByteSocket): Buffer | null {
  if (socket.readableLength === 0) return null;
  const chunks: Buffer[] = [];
  // bounded by readableLength: read() returns null once the buffer is empty
  for (let chunk = socket.read(); chunk !== null; chunk = socket.read()) {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }
  return chunks.length === 0 ? null : Buffer.concat(chunks);
}

/** Bytes a then b, either possibly missing. */
export function concatBytes(a: Buffer | null, b: Buffer | null): Buffer | null {
  if (a === null || a.length === 0) return b;
  if (b === null || b.length === 0) return a;
  return Buffer.concat([a, b]);
}

/** Calls `done` once neither socket has queued writes (an empty write's callback runs after earlier ones). */
function flushAll(sockets: ByteSocket[], done: () => void): void {
  let left = sockets.length;
  for (const s of sockets) s.write(Buffer.alloc(0), () => --left === 0 && done());
}
