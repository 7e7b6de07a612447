// Which requests may reach the admin listener: the checks that keep a browser page (CSRF, DNS rebinding) and,
// without a token, any non-loopback peer away from it. Pure functions over the request's headers and peer
// address; serving and answering are server.ts's job.
import { timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import { isIP } from 'node:net';

export interface AdminGuardOptions {
  /** When set, control requests need `Authorization: Bearer TOKEN` and may come from any address. */
  token?: string;
  /** Host names (besides `localhost` and IP literals) under which the admin listener may be addressed. */
  hosts?: readonly string[];
}

/**
 * The header a control request must carry when no token is set. A browser page on another origin cannot send
 * it without a CORS preflight, which the admin listener never grants; curl and scripts add it freely.
 */
export const ADMIN_HEADER = 'x-portico-admin';

export interface Refusal {
  status: 400 | 401 | 403;
  reason: string;
}

/** 127.0.0.0/8, ::1 and "localhost". */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host.toLowerCase().startsWith('::ffff:127.');
}

/** `Host` without its port, brackets removed from an IPv6 literal; undefined when malformed. */
function hostName(host: string): string | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+))(?::\d{1,5})?$/.exec(host);
  if (m === null) return undefined;
  return (m[1] ?? m[2]).toLowerCase();
}

/**
 * Checks every request, GETs included. `Host` must be an IP literal, `localhost` or a configured name: a DNS
 * rebinding page reaches the listener under the attacker's name, so its `Host` is refused. A browser's `Origin`
 * (sent on every cross-origin request and on POSTs) must be the listener's own (`http://` + `Host`), and a
 * `Sec-Fetch-Site` other than same-origin or none means a page elsewhere sent it.
 */
export function checkRequest(req: http.IncomingMessage, options: AdminGuardOptions): Refusal | null {
  const host = req.headers.host;
  const name = host === undefined ? undefined : hostName(host);
  if (host === undefined || name === undefined) return { status: 400, reason: 'bad request: a Host header (the admin address) is required' };
  const known = name === 'localhost' || isIP(name) !== 0 || (options.hosts ?? []).some((h) => h.toLowerCase() === name);
  if (!known) return { status: 403, reason: `forbidden: Host "${host}" is not an address of this admin listener (use its IP address, localhost, or list the name in admin.hosts)` };
  const origin = req.headers.origin;
  if (origin !== undefined && origin.toLowerCase() !== `http://${host.toLowerCase()}`) {
    return { status: 403, reason: `forbidden: requests from pages of another origin (${origin}) are refused` };
  }
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return { status: 403, reason: `forbidden: requests from pages of another site (Sec-Fetch-Site: ${site}) are refused` };
  return null;
}

/**
 * Checks a state change (drain, undrain) after checkRequest. With a token, the token decides. Without one, the
 * peer must be loopback and the request must carry `X-Portico-Admin` (any value), which no page can add
 * cross-origin without a preflight.
 */
export function checkControl(req: http.IncomingMessage, options: AdminGuardOptions): Refusal | null {
  if (options.token === undefined) {
    if (!isLoopback(req.socket.remoteAddress ?? '')) return { status: 403, reason: 'forbidden: control requests are accepted from loopback only (set admin.token to allow others)' };
    if (req.headers[ADMIN_HEADER] === undefined) return { status: 403, reason: 'forbidden: control requests need the header "X-Portico-Admin: 1" (or admin.token)' };
    return null;
  }
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? '');
  if (m === null) return { status: 401, reason: 'unauthorized: Authorization: Bearer TOKEN required' };
  const given = Buffer.from(m[1]);
  const expected = Buffer.from(options.token);
  return given.length === expected.length && timingSafeEqual(given, expected) ? null : { status: 401, reason: 'unauthorized: Authorization: Bearer TOKEN required' };
}
