// Client addresses as bytes and as Node writes them, for the tests that compare the addon's address text with
// JavaScript's (the request head and FastCGI's records in C++).
import { SocketAddress } from 'node:net';
import { unmapIPv4 } from '../../src/core/util.js';

/** The 8 hex words of an IPv6 address (16 bytes), uncompressed. */
export function ipv6Words(address: Uint8Array): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((address[i] << 8) | address[i + 1]).toString(16));
  return words.join(':');
}

/**
 * Node's text for an address (libuv's, what socket.remoteAddress / localAddress give), as connection.ts keeps it
 * (IPv4-mapped as IPv4).
 */
export function nodeAddressText(address: Uint8Array): string {
  const text = address.length === 4 ? address.join('.') : new SocketAddress({ address: ipv6Words(address), family: 'ipv6' }).address;
  return unmapIPv4(text);
}

/** An address's bytes from its text (IPv4, IPv6 with `::` and a trailing IPv4 part). */
export function addressBytes(text: string): Uint8Array {
  if (!text.includes(':')) return Uint8Array.from(text.split('.').map(Number));
  let t = text;
  const last = t.lastIndexOf(':');
  if (t.slice(last + 1).includes('.')) {
    // the trailing IPv4 part is the last two words
    const v4 = t.slice(last + 1).split('.').map(Number);
    t = `${t.slice(0, last + 1)}${((v4[0] << 8) | v4[1]).toString(16)}:${((v4[2] << 8) | v4[3]).toString(16)}`;
  }
  const [a, b] = t.split('::');
  const left = a === '' ? [] : a.split(':').map((w) => parseInt(w, 16));
  const right = b === undefined || b === '' ? [] : b.split(':').map((w) => parseInt(w, 16));
  const words = b === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}
