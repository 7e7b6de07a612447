// Log lines for refusals by a limit, once per client key per interval, never per request: the first refusal of
// a key is reported at once, the ones after it as one summary (with the count) per interval while they go on;
// a key quiet for a whole interval is forgotten, so its next refusal is reported at once again. Bounded: keys
// beyond `maxKeys` are summed into one line. Pure: the caller gives the clock and turns reports into log lines.

export type RefusalReport =
  /** The first refusal of `key` (after a quiet interval). */
  | { readonly kind: 'first'; readonly key: string; readonly client: string }
  /** `count` more refusals of `key` during the last `sinceMs`. */
  | { readonly kind: 'summary'; readonly key: string; readonly client: string; readonly count: number; readonly sinceMs: number }
  /** `count` refusals of keys not tracked one by one (the table was full) during the last `sinceMs`. */
  | { readonly kind: 'overflow'; readonly count: number; readonly sinceMs: number };

interface Entry {
  /** Refusals since the last report. */
  count: number;
  since: number;
  /** The last client address seen for the key (differs from the key for header keys and IPv6 prefixes). */
  client: string;
}

/** Keys tracked one by one by default: the lines of a flood from more keys are summed. */
export const REFUSAL_LOG_KEYS = 10_000;

export class RefusalLog {
  readonly #entries = new Map<string, Entry>();
  readonly #report: (r: RefusalReport) => void;
  readonly #maxKeys: number;
  #overflowCount = 0;
  #overflowSince = 0;

  constructor(report: (r: RefusalReport) => void, maxKeys = REFUSAL_LOG_KEYS) {
    this.#report = report;
    this.#maxKeys = maxKeys;
  }

  /** Keys with refusals pending or reported within the last interval. */
  get size(): number {
    return this.#entries.size;
  }

  refused(key: string, client: string, now: number): void {
    const e = this.#entries.get(key);
    if (e !== undefined) {
      e.count++;
      e.client = client;
      return;
    }
    if (this.#entries.size >= this.#maxKeys) {
      if (this.#overflowCount === 0) this.#overflowSince = now;
      this.#overflowCount++;
      return;
    }
    this.#entries.set(key, { count: 0, since: now, client });
    this.#report({ kind: 'first', key, client });
  }

  /** End of an interval: one summary per key refused since its last report; quiet keys are forgotten. */
  flush(now: number): void {
    for (const [key, e] of this.#entries) {
      if (e.count === 0) {
        this.#entries.delete(key);
        continue;
      }
      this.#report({ kind: 'summary', key, client: e.client, count: e.count, sinceMs: now - e.since });
      e.count = 0;
      e.since = now;
    }
    if (this.#overflowCount > 0) {
      this.#report({ kind: 'overflow', count: this.#overflowCount, sinceMs: now - this.#overflowSince });
      this.#overflowCount = 0;
    }
  }
}
