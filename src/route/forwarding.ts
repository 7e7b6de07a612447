// Who may tell the backend where a request came from: the `forwarding` config compiled once per config into a
// policy (trusted proxy CIDRs, X-Forwarded-For mode, RFC 7239 Forwarded on/off) and the Forwarded element
// Portico adds. buildRequestHead (handlers/rewrite.ts) applies it; this file opens no sockets and reads no headers.
import { isIP } from 'node:net';
import { createCidrMatcher } from '../wire/proxy-protocol.js';
import type { Config } from '../config/schema.js';

export interface ForwardingPolicy {
  /** True when `address` (the client address Portico sees, PROXY source included) is a trusted proxy. */
  trusts(address: string): boolean;
  /** From untrusted peers: `replace` X-Forwarded-For with the peer address, or `append` to the client's list. */
  readonly xForwardedFor: 'replace' | 'append';
  /** Send Portico's own RFC 7239 `Forwarded` element. */
  readonly forwarded: boolean;
}

const NEVER = (): boolean => false;

export function compileForwarding(config: Config): ForwardingPolicy {
  const f = config.forwarding;
  let trusts: (address: string) => boolean = NEVER;
  if (f.trusted_proxies.length > 0) {
    const m = createCidrMatcher(f.trusted_proxies);
    // the schema checked every CIDR: failing here means the two disagree, which must not go unnoticed
    if (!m.ok) throw new Error(`invalid forwarding.trusted_proxies: ${m.errors.map((e) => e.reason).join('; ')}`);
    trusts = m.match;
  }
  return Object.freeze({ trusts, xForwardedFor: f.x_forwarded_for, forwarded: f.forwarded });
}

/** A token (RFC 7230 tchar) needs no quotes; anything else (IPv6, host:port) is a quoted-string (RFC 7239 §4). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Portico's Forwarded element (RFC 7239 §4): `for` the client address (IPv6 bracketed and quoted, §6),
 * `host` the Host as received (when there is one), `proto` the scheme.
 */
export function forwardedElement(remoteAddr: string, hostRaw: string | undefined, scheme: string): string {
  const forValue = remoteAddr.includes(':') ? `"[${remoteAddr}]"` : remoteAddr === '' ? 'unknown' : remoteAddr;
  let out = `for=${forValue}`;
  if (hostRaw !== undefined && hostRaw !== '') out += `;host=${TOKEN.test(hostRaw) ? hostRaw : `"${hostRaw}"`}`;
  return `${out};proto=${scheme}`;
}

/**
 * The client as far as trust reaches (nginx `real_ip_recursive on`): `peer` unless it is a trusted proxy; then
 * X-Forwarded-For read from the right, past every trusted hop, to the first untrusted address. An entry that is
 * not an IP address stops the walk at the hop before it. For the access log only: routing uses no header.
 */
export function realClient(peer: string, xff: string | undefined, trusts: (address: string) => boolean): string {
  if (xff === undefined || !trusts(peer)) return peer;
  let client = peer;
  const hops = xff.split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const a = hops[i].trim();
    if (isIP(a) === 0) break;
    client = a;
    if (!trusts(a)) break;
  }
  return client;
}
