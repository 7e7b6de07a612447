// Rates as config writes them ("100/s", "6000/m", "10/h"), parsed once into the interval between two requests.
// Here so the schema validates them and route/policy/rate-limit.ts uses them from one definition. Pure.

const RATE_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000 };

/** Highest rate accepted: more than a worker could serve; a typo, not a limit. */
export const MAX_RATE_PER_SECOND = 1_000_000;

/**
 * Parses "100/s", "6000/m", "0.5/s", "10/h" into milliseconds between requests (the emission interval).
 * A string is the error. A bare number is refused: "100" could mean per second or per minute.
 */
export function parseRate(input: unknown): number | string {
  const usage = 'write a rate as "100/s", "6000/m" or "10/h" (requests per second, minute or hour)';
  if (typeof input === 'number') return `a bare number is ambiguous: ${usage}`;
  if (typeof input !== 'string') return usage;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:r)?\s*\/\s*(s|m|h)\s*$/i.exec(input);
  if (m === null) return `invalid rate ${JSON.stringify(input)}: ${usage}`;
  const count = Number(m[1]);
  const per = RATE_UNITS[m[2].toLowerCase()];
  if (!(count > 0)) return `invalid rate ${JSON.stringify(input)}: must be above 0`;
  if ((count * 1000) / per > MAX_RATE_PER_SECOND) return `invalid rate ${JSON.stringify(input)}: above ${MAX_RATE_PER_SECOND}/s`;
  return per / count;
}

