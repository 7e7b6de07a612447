// The syntax of a static route's `fallback` (nginx's last `try_files` argument, `/index.php?$args`): an absolute
// path, fixed and normalized, then an optional query template after `?` or `$is_args`. Parsed once by `check` (its
// errors) and by the router (its parts); rendered per request. Zod-free: a worker imports it through the router.
import { normalizePath, isRefused } from '../wire/path.js';
import { scanTemplate } from './template.js';

/** The request values a fallback's query may use: the client's own query and path, as nginx names them. */
export const FALLBACK_VARIABLES = ['args', 'query_string', 'is_args', 'uri'] as const;
export type FallbackVariable = (typeof FALLBACK_VARIABLES)[number];

export type FallbackPart = { readonly text: string } | { readonly variable: FallbackVariable };

/** A parsed fallback: the path routed again, and the query's parts (null: the fallback has no query). */
export interface ParsedFallback {
  /** Normalized (wire/path.ts), as a route sees it. */
  readonly path: string;
  readonly query: readonly FallbackPart[] | null;
  /** The query uses $uri (the request's decoded path is then rendered as bytes). */
  readonly usesUri: boolean;
}

/** Visible ASCII: a fallback goes into a request line when its route is a proxy (no space, no control). */
const VISIBLE = /^[\x21-\x7e]*$/;

/** The fallback's path and query parts, or why it is refused (`portico check` prints it with the YAML path). */
export function parseFallback(value: string): { ok: true; fallback: ParsedFallback } | { ok: false; message: string } {
  if (!VISIBLE.test(value)) return { ok: false, message: 'a fallback is written in visible ASCII: no spaces or control characters' };
  if (!value.startsWith('/')) return { ok: false, message: 'a fallback is an absolute path ("/index.php?$args")' };
  if (value.includes('#')) return { ok: false, message: 'a fallback has no fragment (#)' };
  // the path is literal: it ends at `?` or at the first `$`, which must then be $is_args (`/index.php$is_args$args`)
  const q = value.indexOf('?');
  const d = value.indexOf('$');
  const end = q === -1 ? d : d === -1 ? q : Math.min(q, d);
  const rawPath = end === -1 ? value : value.slice(0, end);
  const rest = end === -1 ? '' : value.slice(end);
  if (rest !== '' && !rest.startsWith('?') && !/^\$(is_args|\{is_args\})/.test(rest)) {
    return { ok: false, message: 'a fallback\'s path is literal: variables go in its query, after "?" or $is_args' };
  }
  const path = normalizePath(rawPath);
  if (isRefused(path)) return { ok: false, message: `a fallback's path is refused as a request's would be: ${path.refused}` };
  if (path !== rawPath) return { ok: false, message: `a fallback's path is written normalized: "${path}"` };
  if (rest === '') return { ok: true, fallback: { path, query: null, usesUri: false } };
  const known: ReadonlySet<string> = new Set(FALLBACK_VARIABLES);
  const scanned = scanTemplate<FallbackPart>(rest.startsWith('?') ? rest.slice(1) : rest, (name) =>
    known.has(name) ? { variable: name as FallbackVariable } : { refused: `unknown variable $${name} in a fallback (known: ${FALLBACK_VARIABLES.map((v) => `$${v}`).join(', ')})` },
  );
  if (!scanned.ok) return { ok: false, message: scanned.message };
  const parts: FallbackPart[] = scanned.parts.map((p) => (typeof p === 'string' ? { text: p } : p)).filter((p) => !('text' in p) || p.text !== '');
  // `/x?...`: the query is always there; `/x$is_args...`: its first part is $is_args, rendered as nginx does
  if (rest.startsWith('?')) parts.unshift({ text: '?' });
  return { ok: true, fallback: { path, query: parts, usesUri: parts.some((p) => 'variable' in p && p.variable === 'uri') } };
}

/** What a request gives a fallback's variables: its query as sent (with its `?`, or '') and its decoded path. */
export interface FallbackRequest {
  readonly query: string;
  /** The decoded path as bytes (latin1 string of its UTF-8), as nginx's $uri. */
  readonly uri: string;
}

/**
 * The fallback's query for one request, with its leading `?` ('' when it renders empty). $uri is escaped where
 * its bytes could not stand in a request line's query (controls, space, `#`, `%`, bytes past ASCII), so a proxy
 * route gets a valid target; $args is the client's query as the parser accepted it.
 */
export function renderFallbackQuery(parts: readonly FallbackPart[] | null, r: FallbackRequest): string {
  if (parts === null) return '';
  const args = r.query.length > 0 ? r.query.slice(1) : '';
  let out = '';
  for (const p of parts) {
    if ('text' in p) out += p.text;
    else if (p.variable === 'is_args') out += args.length > 0 ? '?' : '';
    else if (p.variable === 'uri') out += escapeQueryBytes(r.uri);
    else out += args;
  }
  if (out === '' || out === '?') return '';
  return out.charCodeAt(0) === 63 /* ? */ ? out : `?${out}`;
}

const HEX = '0123456789ABCDEF';

/** Percent-escapes the bytes of a latin1 string that a query cannot hold literally. */
function escapeQueryBytes(s: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x20 && c < 0x7f && c !== 0x23 /* # */ && c !== 0x25 /* % */) continue;
    out += s.slice(from, i) + '%' + HEX[c >> 4] + HEX[c & 15];
    from = i + 1;
  }
  return from === 0 ? s : out + s.slice(from);
}
