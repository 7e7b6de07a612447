// Token buckets per key (GCRA: one number per key, the bucket's "theoretical arrival time"), in a table of
// bounded size: when full, an idle key (its bucket refilled, so it is as good as absent) or else the least
// recently used one by a CLOCK sweep is dropped, so a client rotating keys cannot grow memory. Pure: the clock
// is passed in, nothing here logs, counts metrics or touches sockets.

export interface RateSpec {
  /** Milliseconds between two requests at the steady rate (1000 for "1/s"). */
  readonly intervalMs: number;
  /** Requests a key with a full bucket may send at once. */
  readonly burst: number;
  /** Keys held at most; beyond, one is dropped per new key. */
  readonly maxKeys: number;
}

/** Keys looked at per eviction before the oldest is dropped whatever its state (bounds the work per insert). */
const EVICTION_SCAN = 16;

class Bucket {
  /** GCRA: the time (ms) at which the bucket is full again; <= now means full. */
  tat: number;
  /**
   * CLOCK: used again since it was made or the sweep last passed it. A new key starts unused, so a flood of
   * keys seen once evicts itself, not the keys that come back (scan resistance, as SIEVE).
   */
  used = false;
  constructor(tat: number) {
    this.tat = tat;
  }
}

/**
 * The buckets of one limit (one route's requests, or its WebSocket handshakes). `take(key, now)` admits a
 * request (0) or refuses it, returning how long (ms, > 0) until the key may send again.
 */
export class RateTable {
  readonly spec: RateSpec;
  readonly #buckets = new Map<string, Bucket>();
  /** How far ahead of now a bucket's tat may run: a full burst. */
  readonly #window: number;

  constructor(spec: RateSpec) {
    this.spec = spec;
    this.#window = spec.burst * spec.intervalMs;
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** 0: admitted (one token taken). Else refused: ms until one token is back. */
  take(key: string, now: number): number {
    const b = this.#buckets.get(key);
    if (b === undefined) {
      if (this.#buckets.size >= this.spec.maxKeys) this.#evict(now);
      // burst >= 1: the first request of a new key is always admitted
      this.#buckets.set(key, new Bucket(now + this.spec.intervalMs));
      return 0;
    }
    b.used = true;
    const next = (b.tat > now ? b.tat : now) + this.spec.intervalMs;
    const over = next - now - this.#window;
    if (over > 0) return over;
    b.tat = next;
    return 0;
  }

  /**
   * Frees one slot: the first key (in CLOCK order) that is idle (its bucket full: dropping it changes nothing)
   * or not used since the sweep last passed; used keys get a second chance (moved to the back). After
   * EVICTION_SCAN keys the front one goes anyway, so an insert costs a bounded amount of work.
   */
  #evict(now: number): void {
    const buckets = this.#buckets;
    let scanned = 0;
    for (const [key, b] of buckets) {
      if (b.tat <= now || !b.used || ++scanned > EVICTION_SCAN) {
        buckets.delete(key);
        return;
      }
      b.used = false;
      buckets.delete(key);
      buckets.set(key, b);
    }
  }
}
