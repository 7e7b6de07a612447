// The addon's tables of open connections per client key (src/native/client-table.cc), as JavaScript sees them: one
// per worker (route/policy/conn-limit.ts makes it), counted in by JavaScript and by the addon's L4 thread alike, so
// that limits.connections_per_ip counts every connection of a client once. Types and availability only.
import { native, type NativeAddon } from './addon.js';

export interface ClientTableAddon {
  /** A new empty table; its id names it to the other calls and to an L4 compile's `limit`. */
  clientTable(): number;
  /** Counts a connection of `key` when it has fewer than `max` open; false (nothing counted) when it has not. */
  clientAcquire(table: number, key: string, max: number): boolean;
  clientRelease(table: number, key: string): void;
  clientCount(table: number, key: string): number;
  clientSize(table: number): number;
  /**
   * The key the addon's L4 thread gives a client at `address` with `limits.ipv6_prefix` `prefix`: as a socket's
   * peer, or (`proxied`) as a PROXY header's source; null when the address does not parse. For the fuzz test.
   */
  l4ClientKey(address: string, prefix: number, proxied?: boolean): string | null;
}

/** The addon's client tables, or undefined where the addon is not loaded (PORTICO_NATIVE=0, no build, an older build). */
export function nativeClients(): ClientTableAddon | undefined {
  const addon = native() as (NativeAddon & Partial<ClientTableAddon>) | undefined;
  if (addon?.clientTable === undefined) return undefined;
  return addon as NativeAddon & ClientTableAddon;
}
