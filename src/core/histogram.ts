// Prometheus histograms of the data path: fixed buckets per metric, one count array per label set, observed
// without allocating (a bucket search over a dozen bounds). Label sets are bounded: past MAX_SERIES a metric folds
// new ones into one `other` series, so a config with churning targets cannot grow a scrape without end. Snapshots
// are plain data, summed over workers by the primary and rendered there (metrics.ts).

/** Bucket upper bounds in seconds, per metric: loopback proxying is sub-millisecond, a WAN target is not. */
export const BUCKETS = {
  /** Client request to the end of its response. */
  request: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  /** A new connection to a target (kept-alive ones are not observed). */
  connect: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  /** Request start to the upstream's first response byte. */
  firstByte: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  /** Client TLS handshake, first byte to finished. */
  tls: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  /** A tunnel's whole life (WebSocket, L4). */
  tunnel: [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400],
} as const;

export type HistogramName = keyof typeof BUCKETS;

/** Label sets one histogram keeps apart before it folds the rest into `other`. */
export const MAX_SERIES = 512;

/** One label set's counts: per bucket (not cumulative; the last is +Inf), the sum of values and their count. */
export interface SeriesSnapshot {
  labels: Record<string, string>;
  buckets: number[];
  sum: number;
  count: number;
}

/** A histogram's series keyed by their label values joined (plain data, safe over IPC). */
export type HistogramSnapshot = Record<string, SeriesSnapshot>;

class Series {
  readonly labels: Record<string, string>;
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(labels: Record<string, string>, buckets: number) {
    this.labels = labels;
    this.counts = new Float64Array(buckets + 1);
  }
}

/**
 * A histogram with up to two label names. `observe(a, b, seconds)`: the series of label values (a, b); the key
 * is built only the first time a pair is seen within one `a` (two Map lookups per observation after that).
 */
export class Histogram {
  readonly #bounds: readonly number[];
  readonly #names: readonly string[];
  readonly #series = new Map<string, Map<string, Series>>();
  #size = 0;
  #other: Series | null = null;

  constructor(bounds: readonly number[], names: readonly string[]) {
    this.#bounds = bounds;
    this.#names = names;
  }

  observe(a: string, b: string, seconds: number): void {
    let inner = this.#series.get(a);
    let s = inner?.get(b);
    if (s === undefined) s = this.#add(a, b, inner);
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]) i++;
    s.counts[i]++;
    s.sum += seconds;
    s.count++;
  }

  #add(a: string, b: string, inner: Map<string, Series> | undefined): Series {
    if (this.#size >= MAX_SERIES) {
      const labels: Record<string, string> = {};
      for (const n of this.#names) labels[n] = 'other';
      return (this.#other ??= new Series(labels, this.#bounds.length));
    }
    const labels: Record<string, string> = {};
    if (this.#names.length > 0) labels[this.#names[0]] = a;
    if (this.#names.length > 1) labels[this.#names[1]] = b;
    const s = new Series(labels, this.#bounds.length);
    if (inner === undefined) {
      inner = new Map();
      this.#series.set(a, inner);
    }
    inner.set(b, s);
    this.#size++;
    return s;
  }

  snapshot(): HistogramSnapshot {
    const out: HistogramSnapshot = {};
    const put = (s: Series) => {
      out[this.#names.map((n) => s.labels[n]).join('\u0000')] = { labels: s.labels, buckets: Array.from(s.counts), sum: s.sum, count: s.count };
    };
    for (const inner of this.#series.values()) for (const s of inner.values()) put(s);
    if (this.#other !== null) put(this.#other);
    return out;
  }
}

/** a + b, series by series (new objects). */
export function sumHistograms(a: HistogramSnapshot, b: HistogramSnapshot): HistogramSnapshot {
  const out: HistogramSnapshot = {};
  for (const [k, s] of Object.entries(a)) out[k] = { labels: s.labels, buckets: [...s.buckets], sum: s.sum, count: s.count };
  for (const [k, s] of Object.entries(b)) {
    const t = out[k];
    if (t === undefined || t.buckets.length !== s.buckets.length) {
      out[k] = { labels: s.labels, buckets: [...s.buckets], sum: s.sum, count: s.count };
      continue;
    }
    for (let i = 0; i < s.buckets.length; i++) t.buckets[i] += s.buckets[i];
    t.sum += s.sum;
    t.count += s.count;
  }
  return out;
}

/** Prometheus text of one histogram: cumulative `_bucket{le}` lines, `_sum` and `_count` per series. */
export function renderHistogram(name: string, help: string, bounds: readonly number[], h: HistogramSnapshot, labels: (pairs: Record<string, string>) => string): string[] {
  const out = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
  const keys = Object.keys(h).sort();
  for (const k of keys) {
    const s = h[k];
    let cumulative = 0;
    for (let i = 0; i <= bounds.length; i++) {
      cumulative += s.buckets[i] ?? 0;
      out.push(`${name}_bucket${labels({ ...s.labels, le: i < bounds.length ? String(bounds[i]) : '+Inf' })} ${cumulative}`);
    }
    const base = Object.keys(s.labels).length === 0 ? '' : labels(s.labels);
    out.push(`${name}_sum${base} ${s.sum}`, `${name}_count${base} ${s.count}`);
  }
  return out;
}

/** A plausible HistogramSnapshot from another process (IPC): plain counts only. */
export function isHistogramSnapshot(v: unknown): v is HistogramSnapshot {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  return Object.values(v).every((s: unknown) => {
    if (typeof s !== 'object' || s === null) return false;
    const r = s as Record<string, unknown>;
    const labels = r.labels;
    return (
      typeof labels === 'object' && labels !== null && Object.values(labels).every((x) => typeof x === 'string') &&
      Array.isArray(r.buckets) && r.buckets.every((n) => typeof n === 'number' && n >= 0) &&
      typeof r.sum === 'number' && typeof r.count === 'number' && r.count >= 0
    );
  });
}
