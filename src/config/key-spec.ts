// Balancing keys as config writes them ("$remote_addr", "header:NAME", "cookie:NAME", "query:NAME") and the
// sticky cookie's default name: parsed here so the schema validates them and upstream/hash-key.ts compiles them
// from one definition. Pure.

/** Default name of the cookie Portico sets for `{ policy: cookie }`. */
export const DEFAULT_STICKY_COOKIE = 'portico_sticky';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/; // RFC 9110 §5.6.2 (header names, RFC 6265 cookie-name)

export type KeySpec =
  | { readonly from: 'remote_addr' }
  | { readonly from: 'header' | 'cookie' | 'query'; readonly name: string };

/**
 * Parses a key spec; a string is the error message. schema.ts validates config with this (and hash-key.ts compiles it), so a config that
 * loaded always compiles.
 */
export function parseKeySpec(spec: string): KeySpec | string {
  if (spec === '$remote_addr') return { from: 'remote_addr' };
  const colon = spec.indexOf(':');
  const from = colon === -1 ? '' : spec.slice(0, colon);
  const name = colon === -1 ? '' : spec.slice(colon + 1);
  const usage = 'use "$remote_addr", "header:NAME", "cookie:NAME" or "query:NAME"';
  if (from !== 'header' && from !== 'cookie' && from !== 'query') return `invalid key ${JSON.stringify(spec)}: ${usage}`;
  if (name.length === 0) return `invalid key ${JSON.stringify(spec)}: the ${from} name is missing (${usage})`;
  if (name.length > 256) return `invalid key: the ${from} name is longer than 256 characters`;
  if (from === 'query') {
    // Compared with the decoded parameter name: any printable text, no controls.
    if (/[\u0000-\u001f\u007f]/.test(name)) return `invalid key ${JSON.stringify(spec)}: the query parameter name has control characters`;
  } else if (!TOKEN.test(name)) {
    return `invalid key ${JSON.stringify(spec)}: a ${from} name must be an RFC 9110 token (letters, digits, !#$%&'*+-.^_\`|~)`;
  }
  return { from, name };
}

