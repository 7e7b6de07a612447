// The TLS tunnel relay seen from a tunnel's owner: a client leg whose TLS the addon terminates (a NativeSocket
// with `encrypted`) and a plain backend leg go to the addon's TLS relay thread (src/native/tls-relay.cc), which
// decrypts and encrypts there, so a WSS tunnel's bytes never enter JavaScript. SpliceTunnel drives the hand-over
// (leftovers first, then the sockets) with this as its NativeRelay; it knows nothing about HTTP. A raw relay (no
// `seen`: terminate's hop into uWebSockets.js, a unix socket) can also stop reading its client (pauseClient).
import net from 'node:net';
import { TLSSocket } from 'node:tls';
import { native, type NativeAddon, type SpliceStats } from '../native/addon.js';
import { NativeSocket } from '../native/io.js';
import type { ByteSocket, ClosedBy } from '../core/socket.js';
import { fdOf, type NativeRelay, type WebSocketSeen } from './splice.js';

interface TlsRelayAddon {
  /** > 0: the relay's id; 0: the client could not leave the native I/O (nothing changed); -1: it left and is closed. */
  tlsRelayStart(clientIoId: number, upstreamFd: number, idleMs: number, onEnd: (reason: ClosedBy, bytesUp: number, bytesDown: number, errno: number) => void, seen?: WebSocketSeen, halfClosedMs?: number): number;
  tlsRelayClose(id: number, reason: ClosedBy): boolean;
  tlsRelayStats(id: number): SpliceStats | null;
  /** Stops (true) or restarts (false) reading the client; false when the relay has already ended. */
  tlsRelayPause?(id: number, paused: boolean): boolean;
  tlsRelayStatus(): { active: number; endsDelivered: number; endWakes: number };
}

function relayAddon(): (NativeAddon & TlsRelayAddon) | undefined {
  const addon = native() as (NativeAddon & Partial<TlsRelayAddon>) | undefined;
  return addon?.tlsRelayStart === undefined ? undefined : (addon as NativeAddon & TlsRelayAddon);
}

/**
 * True when the tunnel can run on the TLS relay thread: the client's TLS is the addon's (a NativeSocket), the
 * other leg is a plain kernel socket (TCP, or the unix socket into uWebSockets.js), both open. What either JS
 * socket read ahead is written by SpliceTunnel before the fds change hands (its leftovers), so it may be there.
 */
export function canTlsRelay(client: ByteSocket, upstream: ByteSocket): boolean {
  return tlsRelayUnfit(client, upstream) === undefined;
}

/** Why canTlsRelay says no (for the log of a fallback), or undefined. */
export function tlsRelayUnfit(client: ByteSocket, upstream: ByteSocket): string | undefined {
  if (relayAddon() === undefined) return 'the native addon has no TLS relay';
  if (!(client instanceof NativeSocket) || !client.encrypted) return "Node's TLS terminated the client";
  if (upstream instanceof TLSSocket || !(upstream instanceof net.Socket || upstream instanceof NativeSocket)) return 'the other leg is not a plain kernel socket';
  if (upstream instanceof NativeSocket && upstream.encrypted) return 'the other leg is TLS';
  if (client.destroyed || upstream.destroyed || fdOf(upstream) < 0) return 'a leg is closed';
  return undefined;
}

/** Native TLS client leg + plain backend leg: the client's connection (fd and session) and a dup of the backend's fd. */
export const TLS_RELAY: NativeRelay = {
  start(client, upstream, timeouts, onEnd, seen) {
    const addon = relayAddon();
    if (addon === undefined || !(client instanceof NativeSocket)) return 0;
    const b = addon.dup(fdOf(upstream));
    // tlsRelayStart owns the dup from here
    const id = addon.tlsRelayStart(client.ioId, b, timeouts.idle, onEnd, seen, timeouts.halfClosed);
    // the connection left the native I/O (relayed, or closed when the relay could not start)
    if (id !== 0) client.released();
    return id;
  },
  close: (id, reason) => relayAddon()?.tlsRelayClose(id, reason) === true,
  // "shutdown" is the end of the drain there: Close 1001 each way at a frame boundary
  goingAway: (id) => relayAddon()?.tlsRelayClose(id, 'shutdown') === true,
  stats: (id) => relayAddon()?.tlsRelayStats(id) ?? null,
  pauseClient: (id, on) => void relayAddon()?.tlsRelayPause?.(id, on),
};

/** Tunnels on the TLS relay thread now (for leak checks). */
export function tlsRelayActive(): number {
  return relayAddon()?.tlsRelayStatus().active ?? 0;
}
