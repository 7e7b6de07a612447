// Client addresses for the differential fuzz tests that hold the addon's view of a peer (its text, its client key,
// its hash key) to JavaScript's: random IPv4 and IPv6 literals (IPv4-mapped and -compatible heads, zero runs,
// link-local), Node's text of a socket's peer, and what parseProxyHeader gives of a PROXY v2 header's source.
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { buildProxyV2, parseProxyHeader } from '../../src/wire/proxy-protocol.js';

export const word = fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 1, max: 15 }));
/** Eight words, often with zero runs, an IPv4-mapped or -compatible head, or a link-local one. */
const words = fc.oneof(
  fc.array(word, { minLength: 8, maxLength: 8 }),
  fc.tuple(word, word).map(([a, b]) => [0, 0, 0, 0, 0, 0xffff, a, b]),
  fc.tuple(word, word).map(([a, b]) => [0, 0, 0, 0, 0, 0, a, b]),
  fc.array(word, { minLength: 4, maxLength: 4 }).map((tail) => [0xfe80, 0, 0, 0, ...tail]),
  fc.tuple(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 1, max: 8 }), fc.array(word, { minLength: 8, maxLength: 8 })).map(([at, n, w]) => w.map((v, i) => (i >= at && i < at + n ? 0 : v))),
);
/** An IPv6 address in a non-canonical spelling (every word written out): Node and the addon each write their own. */
export const ipv6 = words.map((w) => w.map((v) => v.toString(16)).join(':'));
export const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join('.'));
/** A link-local IPv6 address without its zone (the tests add one: "lo" exists everywhere). */
export const linkLocal = fc.array(word, { minLength: 4, maxLength: 4 }).map((tail) => ['fe80', '0', '0', '0', ...tail.map((v) => v.toString(16))].join(':'));

/** The address as Node writes a socket's peer. */
export function nodeText(address: string): string {
  return new net.SocketAddress({ address, family: net.isIPv4(address) ? 'ipv4' : 'ipv6' }).address;
}

/** The source address parseProxyHeader gives of a PROXY v2 header built with `address` as its source. */
export function proxiedSource(address: string): string {
  const header = buildProxyV2({ address, port: 40000 }, { address: net.isIPv4(address) ? '192.0.2.1' : '2001:db8::1', port: 443 });
  const parsed = parseProxyHeader(header);
  assert.ok(parsed.kind === 'done' && parsed.header.command === 'proxy' && parsed.header.source !== undefined, address);
  return parsed.header.source.address;
}
