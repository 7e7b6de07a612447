// Every queued waiter of a pool in expiry order, for the pool's one queue timer: a binary min-heap on (expiry,
// arrival), so a fire takes off only the entries whose time is up, whatever the number queued. An entry served or
// cancelled elsewhere stays in, marked done (lazy deletion): it is dropped when it reaches the top, or by a
// compaction once such entries outnumber the live ones. It arms no timer and answers no one: the pool does.

/** What the heap orders: set `done` when the entry leaves its queue by another way, then call dropped(). */
export interface Expiring {
  /** When its wait ends (pool clock, ms). */
  readonly expires: number;
  readonly done: boolean;
}

export class ExpiryHeap<T extends Expiring> {
  #items: T[] = [];
  /** Arrival number of each entry, beside it: equal expiries come out in the order they went in. */
  #order: number[] = [];
  #arrivals = 0;
  /** Entries marked done and still in the heap. */
  #dead = 0;
  /** Entries taken off the top since the start: the timer's work, for tests that bound it. */
  #visited = 0;

  /**
   * Adds an entry. O(log n), and O(1) for the usual one: a waiter with the full queue.timeout expires no earlier
   * than those before it, so it stays at the bottom.
   */
  push(item: T): void {
    this.#items.push(item);
    this.#order.push(this.#arrivals++);
    this.#up(this.#items.length - 1);
  }

  /** One entry was marked done outside take(): counted, and the heap compacted once they outnumber the rest. */
  dropped(): void {
    this.#dead++;
    if (this.#dead * 2 > this.#items.length) this.#compact();
  }

  /**
   * Takes off every live entry with `expires <= now`, earliest first (equal expiries in arrival order), and the
   * done ones met on the way. O(k log n) for k entries due: never a walk of the queue.
   */
  take(now: number): T[] {
    const out: T[] = [];
    while (this.#items.length > 0 && this.#items[0].expires <= now) {
      const item = this.#pop();
      if (!item.done) out.push(item);
    }
    return out;
  }

  /** The earliest expiry of a live entry (done ones at the top are dropped); Infinity when none. */
  next(): number {
    while (this.#items.length > 0 && this.#items[0].done) this.#pop();
    return this.#items.length > 0 ? this.#items[0].expires : Infinity;
  }

  /** Forgets every entry (the pool closed and answered them). */
  clear(): void {
    this.#items = [];
    this.#order = [];
    this.#dead = 0;
  }

  /** Entries in the heap, done ones included (bounded: at most twice the live ones). */
  get size(): number {
    return this.#items.length;
  }

  /** Entries taken off the top so far (see #visited). */
  get visited(): number {
    return this.#visited;
  }

  #pop(): T {
    this.#visited++;
    const items = this.#items;
    const order = this.#order;
    const top = items[0];
    if (top.done) this.#dead--;
    const lastItem = items.pop() as T;
    const lastOrder = order.pop() as number;
    if (items.length > 0) {
      items[0] = lastItem;
      order[0] = lastOrder;
      this.#down(0);
    }
    return top;
  }

  /** Rebuilds the heap from its live entries: O(n), paid for by the n/2 dropped() calls since the last one. */
  #compact(): void {
    const items: T[] = [];
    const order: number[] = [];
    for (let i = 0; i < this.#items.length; i++) {
      if (this.#items[i].done) continue;
      items.push(this.#items[i]);
      order.push(this.#order[i]);
    }
    this.#items = items;
    this.#order = order;
    this.#dead = 0;
    for (let i = (items.length >> 1) - 1; i >= 0; i--) this.#down(i);
  }

  #before(i: number, j: number): boolean {
    const a = this.#items[i].expires;
    const b = this.#items[j].expires;
    return a < b || (a === b && this.#order[i] < this.#order[j]);
  }

  #swap(i: number, j: number): void {
    const items = this.#items;
    const order = this.#order;
    const item = items[i];
    items[i] = items[j];
    items[j] = item;
    const o = order[i];
    order[i] = order[j];
    order[j] = o;
  }

  #up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(i, parent)) return;
      this.#swap(i, parent);
      i = parent;
    }
  }

  #down(i: number): void {
    const n = this.#items.length;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) return;
      const right = left + 1;
      const child = right < n && this.#before(right, left) ? right : left;
      if (!this.#before(child, i)) return;
      this.#swap(i, child);
      i = child;
    }
  }
}
