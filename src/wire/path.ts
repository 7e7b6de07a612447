// The request path as routes see it and as it is forwarded: RFC 3986 §6.2.2 normalization (percent-decoding of
// unreserved characters, §5.2.4 remove_dot_segments) plus nginx's merge_slashes, and refusal (400) of what a
// backend could read as a way out of the prefix a route matched. Pure, allocation-free for ordinary paths;
// knows nothing of routes or sockets. Forwarding this same string keeps "nothing reaches a backend outside the
// prefix its route matched": the backend is never given dots or separators that the router did not resolve.

/** Why a path is refused (answered 400); constants, so a refusal allocates nothing. */
export interface PathRefusal {
  readonly refused: string;
}

const refusal = (refused: string): PathRefusal => Object.freeze({ refused });
export const PATH_BAD_ESCAPE = refusal('invalid percent-encoding in path');
/** %2F: a backend that decodes it would see a separator the router did not (`/app/..%2Fadmin`). */
export const PATH_ENCODED_SLASH = refusal('encoded "/" (%2F) in path');
/** `\` or %5C: some backends (IIS, Windows file servers, some Java) read it as `/`. */
export const PATH_BACKSLASH = refusal('backslash in path');
export const PATH_NUL = refusal('encoded NUL (%00) in path');
/** `%2e%2e`, `.%2e`: no client produces them (browsers and curl resolve dots first); they are probes. */
export const PATH_ENCODED_DOT = refusal('percent-encoded dot segment in path');
/** `..;/` and `.;x`: Tomcat and other servlet containers strip `;params` and then read a dot segment. */
export const PATH_DOT_PARAMS = refusal('dot segment with parameters (";") in path');
export const PATH_ABOVE_ROOT = refusal('".." above the root in path');

export type NormalizedPath = string | PathRefusal;

const SLASH = 0x2f;
const DOT = 0x2e;
const PERCENT = 0x25;
const BACKSLASH = 0x5c;
const SEMICOLON = 0x3b;

/** RFC 3986 §2.3 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
const UNRESERVED = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  UNRESERVED[c] = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === DOT || c === 0x5f || c === 0x7e ? 1 : 0;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}
const HEX = '0123456789ABCDEF';

/**
 * The normalized form of an origin-form path (`/...`, query already split off), or why it is refused. A path
 * not starting with `/` (`*` of OPTIONS, '' of CONNECT) is returned as is. The same string comes back, with no
 * allocation, when there is nothing to do: no `%`, no `\`, no `//`, no segment starting with `.`.
 */
export function normalizePath(path: string): NormalizedPath {
  const n = path.length;
  if (n === 0 || path.charCodeAt(0) !== SLASH) return path;
  let prev = SLASH;
  for (let i = 1; i < n; i++) {
    const c = path.charCodeAt(i);
    if (c === PERCENT || c === BACKSLASH || (prev === SLASH && (c === SLASH || c === DOT))) return normalizeSlow(path);
    prev = c;
  }
  return path;
}

/** The general case: segments read one by one (unreserved escapes decoded), dot segments resolved on a stack. */
function normalizeSlow(path: string): NormalizedPath {
  const n = path.length;
  const out: string[] = [];
  let seg = '';
  let encodedDot = false;
  /** The path ends in `/` (or in a dot segment, which RFC 3986 §5.2.4 leaves as a trailing `/`). */
  let trailing = false;
  let i = 1;
  for (;;) {
    const c = i < n ? path.charCodeAt(i) : SLASH;
    if (c === SLASH) {
      // end of a segment; empty ones (`//`, and the one after a final `/`) are merged away (nginx merge_slashes)
      if (i >= n) trailing = seg === '' || seg === '.' || seg === '..';
      if (seg === '.' || seg === '..') {
        if (encodedDot) return PATH_ENCODED_DOT;
        if (seg === '..') {
          if (out.length === 0) return PATH_ABOVE_ROOT;
          out.pop();
        }
      } else if (seg !== '') {
        if (seg.charCodeAt(0) === DOT && dotParams(seg)) return PATH_DOT_PARAMS;
        out.push(seg);
      }
      if (i >= n) break;
      seg = '';
      encodedDot = false;
      i++;
      continue;
    }
    if (c === BACKSLASH) return PATH_BACKSLASH;
    if (c !== PERCENT) {
      seg += path[i];
      i++;
      continue;
    }
    const hi = i + 2 < n ? hexValue(path.charCodeAt(i + 1)) : -1;
    const lo = hi < 0 ? -1 : hexValue(path.charCodeAt(i + 2));
    if (lo < 0) return PATH_BAD_ESCAPE;
    const b = hi * 16 + lo;
    if (b === SLASH) return PATH_ENCODED_SLASH;
    if (b === BACKSLASH) return PATH_BACKSLASH;
    if (b === 0) return PATH_NUL;
    if (b < 128 && UNRESERVED[b] === 1) {
      // RFC 3986 §2.3: an escaped unreserved character is the character itself
      seg += String.fromCharCode(b);
      if (b === DOT) encodedDot = true;
    } else {
      seg += '%' + HEX[hi] + HEX[lo]; // §6.2.2.1: hex digits upper case
    }
    i += 3;
  }
  if (out.length === 0) return '/';
  const joined = '/' + out.join('/');
  return trailing ? joined + '/' : joined;
}

/** `.;x`, `..;x`, and the same with `;` escaped (%3B): a dot segment once a servlet container strips params. */
function dotParams(seg: string): boolean {
  const dots = seg.charCodeAt(1) === DOT ? 2 : 1;
  const c = seg.charCodeAt(dots);
  if (c === SEMICOLON) return true;
  return c === PERCENT && seg.charCodeAt(dots + 1) === 0x33 /* 3 */ && (seg.charCodeAt(dots + 2) | 0x20) === 0x62 /* b */;
}

/** Narrows a normalizePath result. */
export function isRefused(r: NormalizedPath): r is PathRefusal {
  return typeof r !== 'string';
}
