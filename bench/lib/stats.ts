// Order statistics over a benchmark's samples (rounds, runs, per-operation timings): median and percentiles.
// Pure functions over arrays of numbers; every entry point takes its medians from here, never its own copy.
// An empty set has no median or percentile: NaN, so a missing figure prints as NaN rather than as a number.

/** Linear interpolation between the two closest ranks of sorted `s` at fractional position `pos` (0..n-1). */
function atPosition(s: readonly number[], pos: number): number {
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return lo === hi ? s[lo] : s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/** The middle value; for an even count the mean of the two middle values. NaN for an empty set. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * The p-th percentile (0..100), interpolated linearly between the closest ranks (so percentile(x, 50) is the
 * median, 0 the minimum, 100 the maximum). NaN for an empty set; throws on p outside 0..100.
 */
export function percentile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be in 0..100, got ${p}`);
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return atPosition(s, ((s.length - 1) * p) / 100);
}
