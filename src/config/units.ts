// Durations ("30s", "500ms", "2m") and sizes ("16KiB", "1MiB") as config writes them, and the zod fields that
// normalise them once to ms and bytes. Its own file so that section schemas beside schema.ts (cors.ts,
// static.ts...) can use them without importing schema.ts (no import cycles). Pure: no files, no YAML.
import { z } from 'zod';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
// Only units that read one way: a bare "k", "m" or "g" is 1000-based here but 1024-based in nginx.
const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1000, kib: 1024, mb: 1e6, mib: 1024 ** 2, gb: 1e9, gib: 1024 ** 3 };

/** The longest timer Node can arm: setTimeout fires at once (with a warning) for anything larger. */
export const MAX_DURATION_MS = 2 ** 31 - 1;

export const DURATION_FORMS = '"500ms", "30s", "5m", "1h", "1d", or "off"';
export const SIZE_FORMS = '"512B", "16KiB", "1MiB", "1GiB" (or "16KB", "1MB": powers of 1000)';

/**
 * Parses "30s", "1.5m", "250ms", "off" or 0 (= 0, disabled). A bare number other than 0 is refused: nginx reads
 * seconds where Node reads milliseconds, so `idle_timeout: 30` means something different to each reader.
 * Undefined when malformed or above MAX_DURATION_MS (about 24.8 days); a non-zero value never rounds to "off".
 */
export function parseDuration(input: string | number): number | undefined {
  if (typeof input === 'number') return input === 0 ? 0 : undefined;
  const s = input.trim().toLowerCase();
  if (s === 'off' || s === '0') return 0;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(s);
  if (!m) return undefined;
  const ms = Number(m[1]) * DURATION_UNITS[m[2]];
  if (ms > MAX_DURATION_MS) return undefined;
  return ms > 0 ? Math.max(1, Math.round(ms)) : 0;
}

/** Parses "16KiB", "1MiB", "512B", "1.5GB". A number without a unit is refused (bytes? KiB as in nginx's `k`?). */
export function parseSize(input: string | number): number | undefined {
  if (typeof input === 'number') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/.exec(input.trim().toLowerCase());
  if (!m || !Object.hasOwn(SIZE_UNITS, m[2])) return undefined;
  const bytes = Math.round(Number(m[1]) * SIZE_UNITS[m[2]]);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Why a duration or size was refused, with the forms that are accepted. */
function unitError(kind: 'duration' | 'size', v: string | number): string {
  const forms = kind === 'duration' ? `${DURATION_FORMS}; at most "24d"` : SIZE_FORMS;
  const bare = typeof v === 'number' || /^\s*\d+(?:\.\d+)?\s*$/.test(v);
  return bare ? `${kind} ${JSON.stringify(v)} has no unit: write it with one, e.g. ${forms}` : `invalid ${kind} ${JSON.stringify(v)} (use e.g. ${forms})`;
}

export const duration = (dflt: string) =>
  z.union([z.string(), z.number()], { error: `expected a duration such as ${DURATION_FORMS}` }).meta({ unit: 'duration' }).default(dflt).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: unitError('duration', v) });
      return z.NEVER;
    }
    return ms;
  });

export const size = (dflt: string) =>
  z.union([z.string(), z.number()], { error: `expected a size such as ${SIZE_FORMS}` }).meta({ unit: 'size' }).default(dflt).transform((v, ctx) => {
    const bytes = parseSize(v);
    if (bytes === undefined || bytes === 0) {
      ctx.addIssue({ code: 'custom', message: unitError('size', v) });
      return z.NEVER;
    }
    return bytes;
  });


/** A duration that must be above 0. */
export const positiveDuration = (dflt: string) => duration(dflt).refine((ms) => ms > 0, 'must be above 0 (not "off")');
