// One target's state in a pool: its open/tunnel counts, the idle keep-alive set (per client in a PROXY-sending
// pool), health inputs and queue, and the bookkeeping of each socket to it (PooledSocket) that keeps those counts
// right through every end. It never connects, picks or decides availability: the pool does.
import type { ByteSocket } from '../core/socket.js';
import type { Target } from './balancer.js';
import type { PassiveWindow } from './health.js';
import type { WaitQueue } from './wait-queue.js';
import { batchNow } from '../core/clock.js';
import { NativeSocket } from '../native/io.js';
import { TAKEN, lendSocket, unlendSocket } from '../native/exchange.js';

/** TCP keep-alive probes on pooled sockets start after this much silence, to notice dead peers and NATs. */
const TCP_KEEPALIVE_DELAY_MS = 60_000;

/** A target of one pool (named apart from the primary's worker `Slot`). */
export interface TargetSlot extends WaitQueue {
  readonly target: Target;
  /**
   * LIFO: the most recently used (warmest) socket is at the end and is reused first. In a PROXY-sending pool it
   * holds every client's idle sockets in the order they became idle (the oldest first, evicted first).
   */
  readonly idle: PooledSocket[];
  /** PROXY-sending pools only: idle sockets by client key (each also in `idle`); null otherwise. */
  readonly byClient: Map<string, PooledSocket[]> | null;
  open: number;
  /** Detached sockets (tunnels): out of `open`, so long-lived tunnels never use up max_connections. */
  tunnels: number;
  /** At max_connections with no idle socket: new picks go elsewhere while another target has room. */
  full: boolean;
  /** Usable by health at the last refresh; a false -> true edge starts slow start. */
  up: boolean;
  /** Tells the pool that `open` or the idle stack changed (queue service, fullness). */
  readonly changed: () => void;
  /** Active check state from the primary. */
  healthy: boolean;
  draining: boolean;
  readonly passive: PassiveWindow;
  /** Brings the target back when its passive down period ends. */
  passiveTimer: NodeJS.Timeout | null;
  /** Removed by discovery: nothing new is sent; busy sockets are closed on release, tunnels stay. */
  removed: boolean;
  /**
   * The pool's lending id (upstream/lending.ts): its idle native sockets are lent to the addon's native FastCGI
   * exchange while the target is available; -1 = not lending. `lendIndex`: this target's number there.
   */
  lend: number;
  readonly lendIndex: number;
}

type SocketState = 'connecting' | 'busy' | 'idle' | 'detached' | 'closed';

/** A socket is worth keeping or reusing only while both directions are open and nothing is buffered. */
export function healthy(socket: ByteSocket): boolean {
  return !socket.destroyed && socket.readable && socket.writable && !socket.readableEnded && !socket.writableEnded && socket.readableLength === 0;
}

/** The pool's bookkeeping for one upstream socket, made once when it connects; its listeners are bound once. */
export class PooledSocket {
  readonly socket: ByteSocket;
  readonly slot: TargetSlot;
  /** The client its PROXY header named (PROXY-sending pools); undefined otherwise. */
  readonly clientKey: string | undefined;
  state: SocketState = 'connecting';
  /** Its acquirer's first bytes were written on it at connect (connectTarget): it is never pooled for another. */
  spoke = false;
  /** Idle and lent to the addon (see TargetSlot.lend): reclaim() before JS uses or closes it. */
  lent = false;
  #idleTimer: NodeJS.Timeout | undefined;
  #idleSince = 0;
  #idleTimeoutMs = 0;
  #bound = false;

  constructor(socket: ByteSocket, slot: TargetSlot, clientKey: string | undefined) {
    this.socket = socket;
    this.slot = slot;
    this.clientKey = clientKey;
    slot.open++;
    slot.changed();
    // The open count goes down in #onClose only, guarded by `state`: exactly once however often the socket is
    // destroyed or released, whether 'close' or forget() comes first.
    socket.once('close', this.#onClose);
  }

  /**
   * Parks the socket in its slot's idle stack. The idle listeners are bound once and act only while the socket
   * is idle, and the idle timer is not touched per request: it re-arms itself for what is left when it fires
   * early (a kept-alive socket costs no listener or timer churn per request).
   */
  enterIdle(idleTimeoutMs: number): void {
    const s = this.socket;
    if (!this.#bound) {
      this.#bound = true;
      s.setKeepAlive(true, TCP_KEEPALIVE_DELAY_MS);
      // first in line: the exchange's listener may park the socket while an event is being delivered, and
      // the same event must not then count as arriving on an idle socket
      s.prependListener('error', this.#onIdleError);
      s.prependListener('data', this.#onIdleData);
      s.prependListener('end', this.#onIdleEnd);
    }
    s.resume(); // the caller may have paused it; an idle socket must keep reading to see 'end' or stray bytes
    this.#idleTimeoutMs = idleTimeoutMs;
    if (idleTimeoutMs > 0) {
      this.#idleSince = batchNow();
      if (this.#idleTimer === undefined) this.#idleTimer = setTimeout(this.#onIdleTimeout, idleTimeoutMs).unref();
    }
    this.state = 'idle';
    this.slot.idle.push(this);
    this.lend();
    if (this.slot.byClient !== null && this.clientKey !== undefined) {
      const mine = this.slot.byClient.get(this.clientKey);
      if (mine === undefined) this.slot.byClient.set(this.clientKey, [this]);
      else mine.push(this);
    }
    this.slot.changed();
  }

  /** Takes an idle socket out of its slot's idle lists (not of `open`). */
  unlistIdle(): void {
    const idle = this.slot.idle;
    const i = idle.lastIndexOf(this);
    if (i !== -1) idle.splice(i, 1);
    const byClient = this.slot.byClient;
    if (byClient === null || this.clientKey === undefined) return;
    const mine = byClient.get(this.clientKey);
    if (mine === undefined) return;
    const j = mine.lastIndexOf(this);
    if (j !== -1) mine.splice(j, 1);
    if (mine.length === 0) byClient.delete(this.clientKey);
  }

  /** Lends this idle socket to the addon when its pool lends (TargetSlot.lend) and its target is in rotation. */
  lend(): void {
    const slot = this.slot;
    if (this.lent || this.state !== 'idle' || slot.lend < 0 || !slot.target.available || (slot.target.rampUntil ?? 0) > batchNow() || !(this.socket instanceof NativeSocket)) return;
    lendSocket(slot.lend, slot.lendIndex, this.socket);
    this.lent = true;
  }

  /**
   * An idle socket JS wants (to use or to close): false when the addon took it meanwhile, a STARTED event of the
   * batch being dispatched names it (the pool moves it to busy there: UpstreamPool.takeLent); true when it is JS's.
   */
  reclaim(): boolean {
    if (!this.lent) return true;
    this.lent = false;
    return unlendSocket(this.socket as NativeSocket) !== TAKEN;
  }

  /** Hands the socket over (to an exchange, or for good to an L4 relay); the idle listeners go quiet. */
  leaveIdle(next: 'busy' | 'detached'): void {
    this.state = next;
  }

  readonly #onIdleError = (): void => {
    if (this.state === 'idle' && this.reclaim()) this.socket.destroy();
  };

  // An upstream may not speak first on an idle HTTP/1.1 connection: whatever arrives is a protocol violation.
  readonly #onIdleData = (): void => {
    if (this.state === 'idle' && this.reclaim()) this.socket.destroy();
  };

  readonly #onIdleEnd = (): void => {
    if (this.state === 'idle' && this.reclaim()) this.socket.destroy();
  };

  readonly #onIdleTimeout = (): void => {
    this.#idleTimer = undefined;
    if (this.state !== 'idle') return; // busy: the next enterIdle arms a new timer
    const left = this.#idleSince + this.#idleTimeoutMs - Date.now();
    if (left > 0) this.#idleTimer = setTimeout(this.#onIdleTimeout, left).unref();
    else if (this.reclaim()) this.socket.destroy();
  };

  /**
   * Drops the socket from every count, once: on its 'close', or earlier when a connect failed (its handle
   * closes a loop turn later, and a retry must not find the target "full" because of it).
   */
  forget(): void {
    this.#onClose();
  }

  /** A tunnel from now on: it leaves `open` (max_connections is the keep-alive pool's bound, not a tunnel cap). */
  detach(): void {
    if (this.state === 'closed' || this.state === 'detached') return;
    if (this.state === 'idle') this.unlistIdle();
    this.state = 'detached';
    this.slot.open--;
    this.slot.tunnels++;
    this.slot.changed();
  }

  readonly #onClose = (): void => {
    if (this.state === 'closed') return;
    if (this.state === 'idle') this.unlistIdle();
    const wasTunnel = this.state === 'detached';
    this.state = 'closed';
    if (wasTunnel) this.slot.tunnels--;
    else this.slot.open--;
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.slot.changed();
  };
}

/** The idle sockets of `slot` are no longer lent (its target left rotation): the addon picks none of them. */
export function unlendIdle(slot: TargetSlot): void {
  for (const pooled of slot.idle) {
    if (pooled.lent && !pooled.reclaim()) pooled.lent = false; // taken: a STARTED event moves it to busy
  }
}

/** Closes every idle socket of `slot`, emptied now so stats() shows none at once; each 'close' lowers `open` later. */
export function closeIdle(slot: TargetSlot): void {
  slot.byClient?.clear();
  for (const pooled of slot.idle.splice(0)) {
    if (pooled.reclaim()) pooled.socket.destroy();
    else pooled.leaveIdle('busy'); // the addon's: its exchange ends it (a closed pool keeps nothing)
  }
}
