// The addon's L4 listeners (l4.cc) as JavaScript sees them: compiled configs, listening sockets handed over, target
// states pushed, and closed-connection records received in batches. Types and availability only; what a record
// means for logs and metrics is src/tunnel/l4-native.ts.
import type { ClosedBy } from '../core/socket.js';
import type { RefusedReason } from '../core/metrics.js';
import { native, type NativeAddon } from './addon.js';
import { nativeIoAvailable } from './io.js';

/** One listener's compile: targets as IP literals (index = the pool's target index), policy, timeouts, PROXY out. */
export interface L4Compiled {
  /** `ip` is an IP literal, or a unix socket's path (a `unix:/path` target: port 0). */
  readonly targets: ReadonlyArray<{ readonly ip: string; readonly port: number; readonly weight: number }>;
  /** upstreams.X.balance: the policies the addon serves (hash: on the client's address, `$remote_addr`). */
  readonly balance: 'round_robin' | 'least_conn' | 'random_two' | 'hash';
  /** hash: the Maglev table over `targets` (balancer.ts buildMaglevTable: slot -> target index). */
  readonly table?: Uint32Array;
  readonly connectMs: number;
  readonly idleMs: number;
  /** tunnel.max_lifetime (ms; absent or 0: none): the relay ends with closedBy "lifetime" once it lived this long. */
  readonly lifetimeMs?: number;
  /** tunnel.half_closed_timeout (ms; absent or 0: none): a half-closed relay ends with closedBy "half_closed_timeout" after this long with no byte. */
  readonly halfClosedMs?: number;
  /** PROXY header to the upstream: 0 none, 1 v1, 2 v2. */
  readonly proxy: 0 | 1 | 2;
  /** The listener's half_close (false: both sides close at the first FIN); absent = true. */
  readonly halfClose?: boolean;
  /** The upstream's slow_start window (ms; 0 off) and the share of a target's weight its ramp starts at. */
  readonly slowStartMs?: number;
  readonly slowStartFloor?: number;
  /** The tcp listener's proxy_protocol: a PROXY header first, from `trusted` senders only, within `timeoutMs`. */
  readonly proxyIn?: L4ProxyIn & { readonly timeoutMs: number };
  /** The tcp listener's limits.connections_per_ip (absent: off). */
  readonly limit?: L4Limit;
}

/**
 * limits.connections_per_ip as the addon counts it: in client table `table` (the worker's, src/native/clients.ts,
 * where JavaScript counts its connections too), at most `max` per client key, IPv6 keyed by `ipv6Prefix` bits.
 * A client at its limit is closed at accept (before anything is read; with a PROXY header, once it named the
 * client), reported as a refusal 'connections_per_ip' with its `key`.
 */
export interface L4Limit {
  readonly table: number;
  readonly max: number;
  readonly ipv6Prefix: number;
}

/**
 * A listener's proxy_protocol as the addon reads it (accept-paths.ts #acceptPath): the CIDRs of
 * proxy_protocol.trusted (an untrusted sender is refused at accept), and the header read before anything else.
 */
export interface L4ProxyIn {
  readonly trusted: readonly string[];
}

/** One closed connection: before any relay (`error` says why), or after its splice relay ended. */
export interface L4Record {
  readonly id: number;
  readonly config: number;
  /** Passthrough: the listener's SNI table (absent for a tcp listener). */
  readonly table?: number;
  /** Passthrough: the ClientHello's server name, when it had one. */
  readonly sni?: string;
  /** Closed before routing (a preface failure, an untrusted PROXY sender, or an unknown name after its alert). */
  readonly refused?: RefusedReason;
  /** With `refused`: what the ClientHello or PROXY header reader said (the JS readers' words). */
  readonly detail?: string;
  /** Refused 'connections_per_ip': the client's key (client-address.ts clientKey). */
  readonly key?: string;
  /** The target relayed to (index in the compile), -1 when none was connected. */
  readonly target: number;
  /** The client: as its PROXY header named it (a routed connection's, or one connections_per_ip refused), else the socket's peer. */
  readonly address: string;
  readonly port: number;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  readonly closedBy: ClosedBy;
  /**
   * Why it closed before any relay (a ProxyError code): UPSTREAM_UNAVAILABLE, the last target's connect failure
   * (UPSTREAM_CONNECT_*), FD_LIMIT, SHUTDOWN, INTERNAL.
   */
  readonly error?: string;
  /** Connect failures on the way, for passive health (`code`: UPSTREAM_CONNECT_REFUSED/_TIMEOUT/_ERROR). */
  readonly failures: ReadonlyArray<{ readonly target: number; readonly code: string; readonly errno: number }>;
}

/**
 * A connection of a hash compile relayed to `target` (index in compile `config`): its `key` (the client's address as
 * $remote_addr) is open there until its record (`id`) comes, in this batch or a later one.
 */
export interface L4Held {
  readonly id: number;
  readonly config: number;
  readonly target: number;
  readonly key: string;
}

export interface L4Batch {
  /** Connections accepted since the last batch. */
  readonly opened: number;
  /** Hash keys relayed since the last batch (absent: none). */
  readonly held?: readonly L4Held[];
  readonly closed: readonly L4Record[];
}

export interface L4Addon {
  l4Init(onBatch: (batch: L4Batch) => void): void;
  l4Compile(config: L4Compiled): number;
  /**
   * A passthrough-only TLS listener's names -> compiles; `peekMs` bounds the ClientHello, and the PROXY header
   * before it with `proxyIn`. Same id space.
   */
  l4CompileSni(table: { entries: ReadonlyArray<{ sni: string; config: number }>; peekMs: number; proxyIn?: L4ProxyIn; limit?: L4Limit }): number;
  /** `rampUntil`: each target's slow-start end (Date.now's ms; 0 or past: not ramping). */
  l4Targets(config: number, up: readonly boolean[], remote: readonly number[], rampUntil?: readonly number[]): void;
  /**
   * A hash compile's pins (upstream/sticky.ts, targets as indices of the compile): `full` replaces them all, then
   * `unset` go and keys[i] -> targets[i] are set.
   */
  l4Pins(config: number, full: boolean, keys: readonly string[], targets: readonly number[], unset: readonly string[]): void;
  /** The key and hash a hash compile gives a client at `address` (a socket's peer, or a PROXY header's source): for tests. */
  l4HashKey(address: string, proxied?: boolean): { key: string; hash: number } | null;
  /** A hash compile's pick over `table` (eligible targets, the key's pin or -1): for tests. */
  l4HashPick(table: Uint32Array, eligible: readonly boolean[], key: string, pinned: number): number;
  l4Forget(config: number): void;
  /** Open connections per target of a compile; null once it is forgotten and none is left. */
  l4Active(config: number): number[] | null;
  l4Listen(fd: number, config: number): number;
  l4Use(listener: number, config: number): void;
  /** With `on`, sets or clears TCP_DEFER_ACCEPT (a passthrough listener); the seconds in force. Absent from older addons. */
  l4Defer?(listener: number, on?: boolean): number;
  /** Stops accepting; the listening socket, open and no longer deferring. */
  l4Release(listener: number): number;
  l4Close(listener: number): void;
  l4CloseAll(): void;
  l4Stats(): { listeners: number; connecting: number; relayed: number };
}

/**
 * The addon's L4 part, or why it is not used: PORTICO_NATIVE_L4=0, native I/O off (PORTICO_NATIVE_IO=0, no
 * addon), or a build without it.
 */
export function nativeL4(): { addon: NativeAddon & L4Addon } | { addon: undefined; reason: string } {
  if (process.env.PORTICO_NATIVE_L4 === '0') return { addon: undefined, reason: 'disabled by PORTICO_NATIVE_L4=0' };
  const addon = native() as (NativeAddon & Partial<L4Addon>) | undefined;
  if (addon === undefined || !nativeIoAvailable()) return { addon: undefined, reason: 'native socket I/O is off' };
  if (addon.l4Init === undefined) return { addon: undefined, reason: 'the native addon has no L4 part' };
  return { addon: addon as NativeAddon & L4Addon };
}
