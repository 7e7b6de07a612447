// The client key of connection and rate limits: an IPv4 address as it is, an IPv6 address cut to its prefix
// (default /64, what one host or one home network gets, so an attacker cannot rotate through the 2^64
// addresses of its own network to multiply its limits). Pure; no sockets.
import { addressWords } from '../../wire/proxy-protocol.js';

const WORDS = new Uint16Array(8);

/**
 * The key of `address` for limits: IPv4 unchanged; IPv6 masked to `ipv6Prefix` bits and written
 * "w0:w1:w2:w3::/64" (hex words, no compression past the prefix). An address that does not parse is its own
 * key (a unix socket path, an empty string: every such client shares one key).
 */
export function clientKey(address: string, ipv6Prefix: number): string {
  if (address.indexOf(':') === -1) return address;
  if (!addressWords(address, WORDS)) return address;
  const w = WORDS;
  // an IPv4-mapped address is an IPv4 client: its own key, never one /64 shared by every IPv4 client, and at /128
  // the same key as the unmapped text other places give it (a dual-stack listener's clients)
  if (w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0xffff) return `${w[6] >>> 8}.${w[6] & 255}.${w[7] >>> 8}.${w[7] & 255}`;
  if (ipv6Prefix >= 128) return address;
  const full = ipv6Prefix >>> 4;
  const parts: string[] = [];
  for (let i = 0; i < full; i++) parts.push(WORDS[i].toString(16));
  const bits = ipv6Prefix & 15;
  if (bits !== 0) parts.push((WORDS[full] & (0xffff << (16 - bits)) & 0xffff).toString(16));
  return `${parts.join(':')}${parts.length < 8 ? '::' : ''}/${ipv6Prefix}`;
}
