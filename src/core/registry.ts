// Live client connections and tunnels of one worker (HTTP and L4 alike): one sweep checks their deadlines, and
// shutdown finds them all. Knows nothing of protocols: a connection is anything Tracked. A leaf of core/, so
// the HTTP connection and the L4 relay both register here without importing each other.

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
  /** Deadline checks, once per sweep. */
  sweep(now: number): void;
  /** Shutdown began DRAIN_IDLE_GRACE_MS ago: close now if idle, else finish what is in progress. */
  drain(): void;
  /** End of the shutdown grace: close now. */
  forceClose(): void;
}

/**
 * Live client connections and tunnels of one worker (HTTP and L4 alike), so one sweep checks their deadlines
 * and shutdown finds them all (Caddy registerConnection).
 */
export class ConnectionRegistry {
  readonly #conns = new Set<Tracked>();
  #tunnels = 0;
  #nextId = 0;
  #draining = false;
  #timer: NodeJS.Timeout | null = null;
  #idleWaiters: Array<() => void> = [];

  /** Open client connections (tunnels included). */
  get size(): number {
    return this.#conns.size;
  }

  get tunnels(): number {
    return this.#tunnels;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** @internal */
  add(c: Tracked): number {
    this.#conns.add(c);
    if (this.#timer === null) {
      this.#timer = setInterval(this.#sweep, SWEEP_MS);
      this.#timer.unref();
    }
    return ++this.#nextId;
  }

  /** @internal */
  delete(c: Tracked): void {
    if (!this.#conns.delete(c)) return;
    if (this.#conns.size === 0) {
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

  #sweep = (): void => {
    const now = Date.now();
    for (const c of this.#conns) c.sweep(now);
  };

  /**
   * Graceful stop: from now on every response says `Connection: close` and its connection closes after it;
   * idle keep-alive connections are closed after DRAIN_IDLE_GRACE_MS (so a request already on its way is
   * answered, not dropped), tunnels at the end of the grace; resolves when every connection is gone (or was
   * destroyed at the end).
   */
  drain(graceMs: number): Promise<void> {
    this.#draining = true;
    if (this.#conns.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const idle = setTimeout(() => {
        for (const c of this.#conns) c.drain();
      }, Math.min(DRAIN_IDLE_GRACE_MS, graceMs));
      idle.unref();
      const timer = setTimeout(() => {
        for (const c of this.#conns) c.forceClose();
        // destroy() emits 'close' asynchronously; resolve once they are all gone
        if (this.#conns.size === 0) resolve();
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
