// The `Range` request header (RFC 9110 §14.1.2, bytes only) and the entity-tag lists of If-None-Match and
// If-Range (§13.1.2, §13.1.5), read against one file. Pure and bounded: never throws, a malformed header is
// ignored as the RFC allows (the whole file is sent).

/** What a Range header asks of a file of `size` bytes. */
export type RangeRequest =
  | { readonly kind: 'none' } // no header, another unit, or malformed: send the whole file
  | { readonly kind: 'single'; readonly start: number; readonly end: number } // inclusive
  | { readonly kind: 'multi' } // two or more satisfiable ranges: Portico sends the whole file (200)
  | { readonly kind: 'unsatisfiable' }; // 416 with Content-Range: bytes */size

const NONE: RangeRequest = Object.freeze({ kind: 'none' });
const MULTI: RangeRequest = Object.freeze({ kind: 'multi' });
const UNSATISFIABLE: RangeRequest = Object.freeze({ kind: 'unsatisfiable' });
/** More ranges than this in one header is abuse (a range flood), not a client: ignored. */
const MAX_RANGES = 64;
const DIGITS = /^\d{1,15}$/;

export function parseRange(value: string | undefined, size: number): RangeRequest {
  if (value === undefined) return NONE;
  const eq = value.indexOf('=');
  if (eq === -1 || value.slice(0, eq).trim().toLowerCase() !== 'bytes') return NONE;
  const specs = value.slice(eq + 1).split(',');
  if (specs.length > MAX_RANGES) return NONE;
  let found: { start: number; end: number } | undefined;
  let satisfiable = 0;
  let any = false;
  for (const raw of specs) {
    const spec = raw.trim();
    if (spec === '') continue; // RFC 9110 §5.6.1: empty list elements are ignored
    const dash = spec.indexOf('-');
    if (dash === -1) return NONE;
    const first = spec.slice(0, dash);
    const last = spec.slice(dash + 1);
    any = true;
    let start: number;
    let end: number;
    if (first === '') {
      // suffix-range: the last N bytes
      if (!DIGITS.test(last)) return NONE;
      const n = Number(last);
      if (n === 0 || size === 0) continue;
      start = Math.max(0, size - n);
      end = size - 1;
    } else {
      if (!DIGITS.test(first) || (last !== '' && !DIGITS.test(last))) return NONE;
      start = Number(first);
      end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
      if (last !== '' && Number(last) < start) return NONE; // last-pos < first-pos: invalid, ignore the header
      if (start >= size) continue;
    }
    satisfiable++;
    found ??= { start, end };
  }
  if (!any) return NONE;
  if (satisfiable === 0) return UNSATISFIABLE;
  if (satisfiable > 1) return MULTI;
  return { kind: 'single', start: found!.start, end: found!.end };
}

/** Weak comparison (§8.8.3.2) of `etag` against an If-None-Match list; `*` matches any current file. */
export function etagListMatches(list: string, etag: string): boolean {
  const mine = etag.startsWith('W/') ? etag.slice(2) : etag;
  for (const raw of list.split(',')) {
    const t = raw.trim();
    if (t === '*') return true;
    if ((t.startsWith('W/') ? t.slice(2) : t) === mine) return true;
  }
  return false;
}

/**
 * If-Range (§13.1.5): the range applies only when the validator names the current file: a strong entity-tag
 * equal to `etag`, or a date equal to its Last-Modified (seconds).
 */
export function ifRangeHolds(value: string, etag: string | undefined, mtimeSeconds: number): boolean {
  const v = value.trim();
  if (v.startsWith('"')) return etag !== undefined && !etag.startsWith('W/') && v === etag;
  if (v.startsWith('W/')) return false;
  const t = Date.parse(v);
  return Number.isFinite(t) && Math.floor(t / 1000) === mtimeSeconds;
}
