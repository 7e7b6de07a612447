// Live client connections and tunnels of one worker (HTTP and L4 alike): one sweep checks their deadlines, and
// shutdown finds them all. Knows nothing of protocols: a connection is anything Tracked. A leaf of core/, so
// the HTTP connection and the L4 relay both register here without importing each other.
import { removeUnordered } from './util.js';

/** How often deadlines (head, keep-alive, upstream phases, tunnel idle) are checked. */
const SWEEP_MS = 250;
/**
 * At shutdown, how long an idle keep-alive connection stays open before Portico closes it. A client may have sent
 * its next request just before it could learn of the shutdown: closing at once would read and drop that request
 * (the client sees a close, not an answer). In this window such a request is answered with `Connection: close`.
 */
export const DRAIN_IDLE_GRACE_MS = 1000;
/** What the registry needs of a live connection: deadline checks, the start of a drain, and its end. */
export interface Tracked {
  /**
   * The registry's bookkeeping: where this connection sits in its list, -1 while not registered. Written by the
   * registry alone; each implementor declares it (`registrySlot = -1`) so every instance has it from birth.
   */
  registrySlot: number;
  /** Deadline checks, once per sweep. */
  sweep(now: number): void;
  /** Shutdown begins now: every response from here says `Connection: close` (optional: most need not be told). */
  draining?(): void;
  /** Shutdown began DRAIN_IDLE_GRACE_MS ago: close now if idle, else finish what is in progress. */
  drain(): void;
  /** End of the shutdown grace: close now. */
  forceClose(): void;
}

/** removeUnordered's record of an entry that moved into a hole. */
function movedTo(c: Tracked, at: number): void {
  c.registrySlot = at;
}

/**
 * Live client connections and tunnels of one worker (HTTP and L4 alike), so one sweep checks their deadlines
 * and shutdown finds them all (Caddy registerConnection).
 */
export class ConnectionRegistry {
  /**
   * Live connections, unordered; each knows its index (registrySlot), so add and delete are O(1) and allocate
   * nothing. Not a Set: a Set with an entry added and deleted per connection is rehashed every few dozen
   * connections, and V8 leaves each obsolete table linked to its successor with its entries in place; once one
   * table is promoted, the chain keeps every connection any table ever held alive through scavenges until the
   * next full GC (measured: ~1 KiB promoted per connection, 11 ms scavenges, under new-connection load).
   */
  readonly #conns: Tracked[] = [];
  #tunnels = 0;
  #nextId = 0;
  #draining = false;
  #timer: NodeJS.Timeout | null = null;
  #idleWaiters: Array<() => void> = [];

  /** Open client connections (tunnels included). */
  get size(): number {
    return this.#conns.length;
  }

  get tunnels(): number {
    return this.#tunnels;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** @internal */
  add(c: Tracked): number {
    if (c.registrySlot !== -1) return ++this.#nextId; // already here: no second entry
    c.registrySlot = this.#conns.length;
    this.#conns.push(c);
    if (this.#timer === null) {
      this.#timer = setInterval(this.#sweep, SWEEP_MS);
      this.#timer.unref();
    }
    return ++this.#nextId;
  }

  /** @internal */
  delete(c: Tracked): void {
    if (!removeUnordered(this.#conns, c.registrySlot, c, movedTo)) return;
    c.registrySlot = -1;
    if (this.#conns.length === 0) {
      if (this.#timer !== null) {
        clearInterval(this.#timer);
        this.#timer = null;
      }
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** @internal */
  tunnelOpened(): void {
    this.#tunnels++;
  }

  /** @internal */
  tunnelClosed(): void {
    this.#tunnels--;
  }

  /**
   * `fn` on each connection registered now, over a copy: what `fn` closes may leave the list (the last entry
   * moves into its place) without another being skipped or visited twice; one that left before its turn is skipped.
   */
  #each(fn: (c: Tracked) => void): void {
    for (const c of this.#conns.slice()) if (c.registrySlot !== -1) fn(c);
  }

  #sweep = (): void => {
    const now = Date.now();
    this.#each((c) => c.sweep(now));
  };

  /**
   * Graceful stop: from now on every response says `Connection: close` and its connection closes after it;
   * idle keep-alive connections are closed after DRAIN_IDLE_GRACE_MS (so a request already on its way is
   * answered, not dropped), tunnels at the end of the grace; resolves when every connection is gone (or was
   * destroyed at the end).
   */
  drain(graceMs: number): Promise<void> {
    this.#draining = true;
    if (this.#conns.length === 0) return Promise.resolve();
    this.#each((c) => c.draining?.());
    return new Promise<void>((resolve) => {
      const idle = setTimeout(() => {
        this.#each((c) => c.drain());
      }, Math.min(DRAIN_IDLE_GRACE_MS, graceMs));
      idle.unref();
      const timer = setTimeout(() => {
        this.#each((c) => c.forceClose());
        // destroy() emits 'close' asynchronously; resolve once they are all gone
        if (this.#conns.length === 0) resolve();
        else this.#idleWaiters.push(resolve);
      }, graceMs);
      timer.unref();
      this.#idleWaiters.push(() => {
        clearTimeout(idle);
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
