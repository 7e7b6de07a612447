// Paced drain of terminated WebSockets (one per worker): connections to close (shutdown, a reload that removed
// their route, a drained target) wait in a queue and get their Close frame one at a time, `drain_rate` per second
// with jitter, so reconnecting clients do not stampede the next instance. Stragglers are the owner's: at the
// deadline the registry force-closes what is left. One timer for the whole queue, none per connection.

/** What the drainer closes. */
export interface Drainable {
  readonly session: {
    /** Closes both sides with `code` (1001 going away, 1012 service restart). */
    goAway(code: number, reason: string, by?: 'shutdown' | 'reload' | 'target_drained'): void;
  };
  /** The route's drain_rate as the interval between two closes (ms). */
  readonly drainInterval: number;
}

interface Entry {
  readonly c: Drainable;
  readonly code: number;
  readonly reason: string;
  readonly by: 'shutdown' | 'reload' | 'target_drained';
}

export class Drainer {
  readonly #queue = new Map<Drainable, Entry>();
  #timer: NodeJS.Timeout | null = null;
  readonly #random: () => number;

  /** `random` in [0, 1) (tests may pin it). */
  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  get queued(): number {
    return this.#queue.size;
  }

  /** Queues `c` for its Close `code`; a connection already queued keeps its place. */
  add(c: Drainable, code: number, reason: string, by: Entry['by'] = 'shutdown'): void {
    if (this.#queue.has(c)) return;
    this.#queue.set(c, { c, code, reason, by });
    if (this.#timer === null) this.#schedule(c.drainInterval);
  }

  /** `c` ended by itself: it leaves the queue. */
  forget(c: Drainable): void {
    this.#queue.delete(c);
    if (this.#queue.size === 0 && this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
  }

  /** The next close after `interval` ms, jittered in [0.5, 1.5) x interval: the mean rate stays drain_rate. */
  #schedule(interval: number): void {
    const wait = interval * (0.5 + this.#random());
    this.#timer = setTimeout(this.#next, wait);
    this.#timer.unref();
  }

  #next = (): void => {
    this.#timer = null;
    const first = this.#queue.values().next();
    if (first.done === true) return;
    const e = first.value;
    this.#queue.delete(e.c);
    e.c.session.goAway(e.code, e.reason, e.by);
    const after = this.#queue.values().next();
    if (after.done !== true) this.#schedule(after.value.c.drainInterval);
  };
}
