// Retry budget of one upstream in one worker (Finagle's RetryBudget, Envoy's retry_budget): retries may be at
// most a share of the requests seen over a sliding window, with a small floor per second so a quiet pool can
// still retry. It only counts, from times it is given; it never decides whether a request may be retried at all.

/** The sliding window: WINDOW_BUCKETS buckets of BUCKET_MS each (about 10 s). */
const BUCKET_MS = 1_000;
const WINDOW_BUCKETS = 10;
export const RETRY_WINDOW_MS = BUCKET_MS * WINDOW_BUCKETS;

export interface RetryBudgetStats {
  /** Requests counted over the current window. */
  readonly requests: number;
  /** Retries granted over the current window. */
  readonly retries: number;
  /** Retries granted since the pool started. */
  readonly retriesTotal: number;
  /** Retries refused by the budget since the pool started. */
  readonly deniedTotal: number;
}

export class RetryBudget {
  readonly #ratio: number;
  readonly #floor: number;
  readonly #requests = new Uint32Array(WINDOW_BUCKETS);
  readonly #retries = new Uint32Array(WINDOW_BUCKETS);
  /** Index of the current bucket in time (ms / BUCKET_MS); buckets older than the window are cleared lazily. */
  #bucket = -1;
  #requestSum = 0;
  #retrySum = 0;
  #retriesTotal = 0;
  #deniedTotal = 0;

  /** `ratio`: retries / requests allowed (0.2 = 20%); `minPerSecond`: retries always allowed per second. */
  constructor(ratio: number, minPerSecond: number) {
    this.#ratio = ratio;
    this.#floor = minPerSecond * (RETRY_WINDOW_MS / 1000);
  }

  /** Adds the totals of the budget this one replaces (a reloaded upstream), so counters never go back. */
  carryTotals(from: RetryBudgetStats): void {
    this.#retriesTotal += from.retriesTotal;
    this.#deniedTotal += from.deniedTotal;
  }

  /** Counts one request (its first attempt). */
  request(now: number): void {
    const i = this.#advance(now);
    this.#requests[i]++;
    this.#requestSum++;
  }

  /** True (and counted) when a retry fits the budget; false (counted as denied) when it would exceed it. */
  tryRetry(now: number): boolean {
    const i = this.#advance(now);
    if (this.#retrySum + 1 > Math.max(this.#floor, this.#ratio * this.#requestSum)) {
      this.#deniedTotal++;
      return false;
    }
    this.#retries[i]++;
    this.#retrySum++;
    this.#retriesTotal++;
    return true;
  }

  stats(now: number): RetryBudgetStats {
    this.#advance(now);
    return { requests: this.#requestSum, retries: this.#retrySum, retriesTotal: this.#retriesTotal, deniedTotal: this.#deniedTotal };
  }

  /** Moves the window to `now`, clearing the buckets it left behind (at most WINDOW_BUCKETS of them). */
  #advance(now: number): number {
    const bucket = Math.floor(now / BUCKET_MS);
    if (bucket !== this.#bucket) {
      // A clock that went back (tests, NTP steps) starts a fresh window rather than writing into the past.
      const steps = bucket > this.#bucket && this.#bucket !== -1 ? Math.min(bucket - this.#bucket, WINDOW_BUCKETS) : WINDOW_BUCKETS;
      for (let s = 1; s <= steps; s++) {
        const j = slotOf(bucket - steps + s);
        this.#requestSum -= this.#requests[j];
        this.#retrySum -= this.#retries[j];
        this.#requests[j] = 0;
        this.#retries[j] = 0;
      }
      this.#bucket = bucket;
    }
    return slotOf(bucket);
  }
}

const slotOf = (bucket: number): number => ((bucket % WINDOW_BUCKETS) + WINDOW_BUCKETS) % WINDOW_BUCKETS;
