// Native TLS termination (src/native/tls.cc) seen from JS: whether it runs in this process and why not, one
// native server (an OpenSSL context per certificate) per listener, the session ticket keys every worker shares,
// and starting a natively accepted connection's handshake (or moving a net.Socket into one), bounded by its
// timeout. It reads no file and knows no config: accept/tls.ts hands it PEMs and names; the handshaken socket
// is a NativeSocket that speaks plaintext.
import { hkdfSync } from 'node:crypto';
import type net from 'node:net';
import { DEFAULT_CIPHERS } from 'node:tls';
import { native, type NativeAddon } from './addon.js';
import { adoptNative, type NativeSocket, type NativeSocketOptions } from './io.js';

interface TlsAddon {
  ioAdoptTls(fd: number, serverId: number): number;
  ioStartTls(id: number, serverId: number): void;
  tlsStatus(): { available: boolean; reason?: string; openssl?: string };
  tlsServerNew(opts: { certs: ReadonlyArray<{ cert: Buffer; key: Buffer; names: readonly string[] }>; minVersion: string; ciphers: string; acmeAlpn?: boolean }): number;
  tlsSetAlpnChallenge?(name: string, cert: string | null, key: string | null): void;
  tlsServerFree(id: number): void;
  tlsSetTicketKeys(keys: Uint8Array): void;
  /** Returns freed memory to the system once a burst of handshakes is over (tls.cc TrimIdle); undefined when it did nothing. */
  tlsTrimIdle?(): HandshakeTrim | undefined;
}

export interface NativeTlsStatus {
  available: boolean;
  /** Why Node's TLS terminates instead (disabled, no addon, no native I/O, OpenSSL symbols missing). */
  reason?: string;
  /** The OpenSSL the addon uses (Node's own). */
  openssl?: string;
}

let status: NativeTlsStatus | undefined;

function tlsAddon(): TlsAddon | undefined {
  const addon = native() as (NativeAddon & Partial<TlsAddon>) | undefined;
  return addon?.tlsStatus === undefined || addon.ioAdoptTls === undefined || addon.ioStartTls === undefined ? undefined : (addon as NativeAddon & TlsAddon);
}

/** Whether listeners terminate TLS in the addon; PORTICO_NATIVE_TLS=0 (or PORTICO_NATIVE_IO=0) keeps Node's TLS. */
export function nativeTlsStatus(): NativeTlsStatus {
  if (status !== undefined) return status;
  const addon = tlsAddon();
  if (process.env.PORTICO_NATIVE_TLS === '0') status = { available: false, reason: 'disabled by PORTICO_NATIVE_TLS=0' };
  else if (addon === undefined) status = { available: false, reason: 'the native addon is not loaded or has no TLS part' };
  // asked without starting native I/O: the primary says this once and never serves a connection itself
  else if (process.env.PORTICO_NATIVE_IO === '0') status = { available: false, reason: 'native socket I/O is off (PORTICO_NATIVE_IO=0)' };
  else {
    const s = addon.tlsStatus();
    status = s.available ? { available: true, openssl: s.openssl } : { available: false, reason: s.reason ?? 'OpenSSL is not usable from the addon' };
  }
  return status;
}

export interface NativeCertificate {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Lower-cased SNI names it serves: exact names and `*.suffix` wildcards (the first certificate is the default). */
  readonly names: readonly string[];
}

/** Frees a listener's contexts once its server object is unreachable; live connections keep their own reference. */
const contexts = new FinalizationRegistry<number>((id) => tlsAddon()?.tlsServerFree(id));

/** One listener's certificates as OpenSSL contexts in the addon (built once per apply: a reload renews them). */
export class NativeTlsServer {
  readonly id: number;
  /** Serves TLS-ALPN-01 challenge certificates to `acme-tls/1` handshakes (setNativeAlpnChallenge). */
  readonly acmeAlpn: boolean;

  /** Throws with OpenSSL's reason when a pair is unusable. Check nativeTlsStatus() first. */
  constructor(certs: readonly NativeCertificate[], minVersion: 'TLSv1.2' | 'TLSv1.3', acmeAlpn = false) {
    const addon = tlsAddon();
    if (addon === undefined) throw new Error('native TLS is not available');
    if (acmeAlpn && addon.tlsSetAlpnChallenge === undefined) throw new Error('this addon cannot answer TLS-ALPN-01 (rebuild it)');
    // Node's default cipher list: the same choice as the listeners Node terminates
    this.id = addon.tlsServerNew({ certs, minVersion, ciphers: DEFAULT_CIPHERS, acmeAlpn });
    this.acmeAlpn = acmeAlpn;
    contexts.register(this, this.id);
  }
}

/**
 * Serves `cert`/`key` (PEM) as the TLS-ALPN-01 challenge certificate for `name` on every native server made with
 * acmeAlpn (null: the challenge is over). False when the addon refused the pair; true without native TLS.
 */
export function setNativeAlpnChallenge(name: string, cert: string | null, key: string | null): boolean {
  const addon = tlsAddon();
  if (addon?.tlsSetAlpnChallenge === undefined || !nativeTlsStatus().available) return true;
  try {
    addon.tlsSetAlpnChallenge(name, cert, key);
    return true;
  } catch {
    return false;
  }
}

/** RFC 8737 §6.2: what a TLS-ALPN-01 validation negotiates; such a connection carries nothing after its handshake. */
const ACME_TLS_ALPN = 'acme-tls/1';

/** Bytes of one ticket key: 16 name, 32 HMAC-SHA256, 32 AES-256. */
const TICKET_KEY_BYTES = 80;

/** How long one ticket key seals new tickets; the one before it still opens them for as long again. */
export const TICKET_ROTATION_MS = 12 * 3_600_000;

/**
 * The ticket keys of the period holding `now` and of the one before, derived from the secret the primary gave
 * every worker (HKDF-SHA256 over the period's number): every worker seals and opens with the same keys without
 * a message per rotation, and a key is gone from every worker two periods after it started.
 */
export function ticketKeyRing(secret: Buffer, now: number): Buffer {
  const period = Math.floor(now / TICKET_ROTATION_MS);
  return Buffer.concat([period, period - 1].map((p) => Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), `portico ticket key ${p}`, TICKET_KEY_BYTES))));
}

let ticketSecret: Buffer | undefined;
let rotation: NodeJS.Timeout | undefined;

/** Seals tickets with keys from `secret` (the primary's, shared by all workers), rotated every TICKET_ROTATION_MS. */
export function useTicketSecret(secret: Buffer): void {
  const addon = tlsAddon();
  if (addon === undefined || (ticketSecret !== undefined && ticketSecret.equals(secret))) return;
  ticketSecret = secret;
  const rotate = (): void => {
    const now = Date.now();
    addon.tlsSetTicketKeys(ticketKeyRing(secret, now));
    clearTimeout(rotation);
    // at the next period's start (+1 s: every worker's clock has passed it too)
    rotation = setTimeout(rotate, TICKET_ROTATION_MS - (now % TICKET_ROTATION_MS) + 1000);
    rotation.unref();
  };
  rotate();
}

export interface HandshakeOptions extends NativeSocketOptions {
  /** Bound of the handshake in ms (never unbounded). */
  timeoutMs: number;
}

/** A handshake that outlived its timeout; reported like Node's tlsClientError. */
export class HandshakeTimeoutError extends Error {
  readonly code = 'ERR_TLS_HANDSHAKE_TIMEOUT';
}

/**
 * Moves an accepted net.Socket that has read nothing into a native TLS handshake: `onSecure` gets the plaintext
 * socket, `onFailure` the error of a handshake that failed, timed out or was cut (the socket is then destroyed).
 * Undefined when it cannot move (no native TLS, bytes already read, EMFILE): Node's TLS serves it instead.
 */
export function adoptNativeTls(socket: net.Socket, server: NativeTlsServer, opts: HandshakeOptions, onSecure: (s: NativeSocket) => void, onFailure: (err: Error, s: NativeSocket) => void): NativeSocket | undefined {
  const moved = adoptNative(socket, opts, server.id);
  if (moved === undefined) return undefined;
  awaitHandshake(moved, server, opts.timeoutMs, onSecure, onFailure);
  return moved;
}

/**
 * Starts a native TLS handshake on a natively accepted connection that nothing read from (native accept, a
 * hold-mode listener): no net.Socket is ever made for it. Callbacks as adoptNativeTls's. False when it cannot
 * (the addon has no ioStartTls, bytes were read ahead, OpenSSL refused): the socket is untouched, Node's TLS
 * serves it instead.
 */
export function startNativeTls(socket: NativeSocket, server: NativeTlsServer, opts: HandshakeOptions, onSecure: (s: NativeSocket) => void, onFailure: (err: Error, s: NativeSocket) => void): boolean {
  if (!socket.startTls(server.id)) return false;
  awaitHandshake(socket, server, opts.timeoutMs, onSecure, onFailure);
  // a held connection was accepted paused: the handshake runs whatever, plaintext waits for whoever resumes it
  return true;
}

/**
 * 'secure' within `timeoutMs`, else the socket is destroyed with HandshakeTimeoutError; errors go to onFailure.
 * A TLS-ALPN-01 validation (acme-tls/1 negotiated) is closed after its handshake instead (RFC 8737 §3).
 */
function awaitHandshake(socket: NativeSocket, server: NativeTlsServer, timeoutMs: number, onSecure: (s: NativeSocket) => void, onFailure: (err: Error, s: NativeSocket) => void): void {
  const timer = setTimeout(() => socket.destroy(new HandshakeTimeoutError('TLS handshake timeout')), timeoutMs);
  timer.unref();
  const failed = (err: Error): void => {
    clearTimeout(timer);
    onFailure(err, socket);
  };
  const closed = (): void => clearTimeout(timer);
  socket.on('error', failed);
  socket.once('close', closed);
  socket.once('secure', () => {
    clearTimeout(timer);
    socket.removeListener('error', failed);
    socket.removeListener('close', closed);
    if (server.acmeAlpn && socket.tlsInfo()?.alpn === ACME_TLS_ALPN) {
      socket.on('error', () => undefined); // a validator that leaves first is no fault of ours
      socket.end();
      return;
    }
    onSecure(socket);
  });
}

/** What trimAfterHandshakes did: the handshakes since the previous trim, the RSS it gave back, what it took (ms). */
export interface HandshakeTrim {
  handshakes: number;
  freedKiB: number;
  ms: number;
}

/**
 * Asked often by the worker (its 100 ms tick): once a burst of natively terminated handshakes is over, the
 * memory they freed goes back to the system (malloc_trim in the addon), or each 30 s while they go on. Undefined
 * when nothing was done (most calls: two atomic loads in the addon) or the addon does not terminate TLS.
 */
export function trimAfterHandshakes(): HandshakeTrim | undefined {
  const addon = nativeTlsStatus().available ? tlsAddon() : undefined;
  return addon?.tlsTrimIdle?.();
}
