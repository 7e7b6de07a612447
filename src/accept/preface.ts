// What a listener reads from a fresh socket before anyone owns it: a PROXY header (trusted senders only) and/or
// a TLS ClientHello (for SNI passthrough), bounded in bytes and time. Every byte read past the PROXY header is
// handed back (`rest`) for replay, and the socket is left paused with its FIN, if any, still unread. It decides
// nothing about routing and opens no upstream: worker/accept-paths.ts chooses what happens next from the result.
import type { ListenerConfig } from '../config/schema.js';
import type { PrefaceFailure } from '../core/metrics.js';
import type { ByteSocket } from '../core/socket.js';
import { DEFAULT_CLIENT_HELLO_BYTES, parseClientHello, type ClientHello } from '../wire/client-hello.js';
import { DEFAULT_PROXY_V2_MAX_BYTES, parseProxyHeader, type ProxyHeader } from '../wire/proxy-protocol.js';
import { noop } from '../core/util.js';

export interface PrefaceOptions {
  /** Expect a PROXY header first (the sender was already checked against the trusted CIDRs). */
  readonly proxy: boolean;
  /** Read a ClientHello (after the PROXY header, if any). */
  readonly clientHello: boolean;
  /** The whole preface must arrive within this (ms, > 0). */
  readonly timeoutMs: number;
}


export type PrefaceResult =
  | {
      kind: 'done';
      /** The PROXY header, when one was expected. */
      proxy: ProxyHeader | undefined;
      /** The ClientHello, when one was asked for. */
      hello: ClientHello | undefined;
      /** Bytes read past the PROXY header, ClientHello included: the caller replays them first. */
      rest: Buffer | null;
      /** The PROXY header's length in bytes (0 without one): what a peeked connection takes off its queue. */
      used: number;
    }
  | { kind: 'failed'; reason: PrefaceFailure; detail?: string };

/**
 * What a TLS listener reads before its handshake, in words (a PROXY header; else a ClientHello, to pass some names
 * through); undefined when nothing. Such a listener terminates on the addon's TLS only where its connections can be
 * peeked (accept-paths.ts acceptModeOf): the primary's start line and the terminated WebSocket's hop say so.
 */
export function prefaceBeforeTls(l: ListenerConfig): string | undefined {
  if (l.tls === undefined) return undefined;
  if (l.proxy_protocol !== undefined) return 'a PROXY header';
  return (l.tls.passthrough?.length ?? 0) > 0 ? 'a ClientHello (passthrough)' : undefined;
}

/** Upper bound of bytes held while reading: a v2 header at its limit plus a ClientHello at its limit. */
const MAX_PREFACE_BYTES = DEFAULT_PROXY_V2_MAX_BYTES + DEFAULT_CLIENT_HELLO_BYTES;

/**
 * Reads the preface of `socket` and calls `done` once, on a later tick than the call. On 'done' the socket is
 * paused with no listener of ours left; on 'failed' it has been destroyed. The caller must not read from the
 * socket meanwhile.
 */
export function readPreface(socket: ByteSocket, opts: PrefaceOptions, done: (r: PrefaceResult) => void): void {
  new PrefaceReader(socket, opts, done);
}

class PrefaceReader {
  readonly #socket: ByteSocket;
  readonly #opts: PrefaceOptions;
  readonly #done: (r: PrefaceResult) => void;
  #buf: Buffer | null = null;
  #proxy: ProxyHeader | undefined;
  /** Offset in #buf past the PROXY header (0 until it is read). */
  #used = 0;
  #proxyRead: boolean;
  #timer: NodeJS.Timeout;
  #settled = false;

  constructor(socket: ByteSocket, opts: PrefaceOptions, done: (r: PrefaceResult) => void) {
    this.#socket = socket;
    this.#opts = opts;
    this.#done = done;
    this.#proxyRead = !opts.proxy;
    // 'error' first (STYLE.md 3); the timer is per connection only while its preface is incomplete
    socket.on('error', this.#onError);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    socket.on('data', this.#onData);
    // a socket accepted paused (pauseOnConnect) does not start flowing for a 'data' listener alone
    socket.resume();
    this.#timer = setTimeout(this.#onTimeout, opts.timeoutMs).unref();
  }

  #onData = (chunk: Buffer): void => {
    this.#buf = this.#buf === null ? chunk : Buffer.concat([this.#buf, chunk]);
    this.#parse();
  };

  #parse(): void {
    const buf = this.#buf!;
    if (!this.#proxyRead) {
      const r = parseProxyHeader(buf);
      if (r.kind === 'more') return this.#bounded();
      if (r.kind === 'none') return this.#fail('proxy_missing');
      if (r.kind === 'error') return this.#fail('proxy_invalid', r.reason);
      this.#proxy = r.header;
      this.#used = r.used;
      this.#proxyRead = true;
    }
    if (this.#opts.clientHello) {
      const view = this.#used === 0 ? buf : buf.subarray(this.#used);
      const r = parseClientHello(view);
      if (r.kind === 'more') return this.#bounded();
      if (r.kind === 'not_tls') return this.#fail('not_tls');
      if (r.kind === 'error') return this.#fail('client_hello_invalid', r.reason);
      return this.#finish(r.hello);
    }
    this.#finish(undefined);
  }

  /** The parsers bound their own input; this is the belt to their braces. */
  #bounded(): void {
    if (this.#buf !== null && this.#buf.length > MAX_PREFACE_BYTES) this.#fail(this.#proxyRead ? 'client_hello_invalid' : 'proxy_invalid', 'preface too large');
  }

  #finish(hello: ClientHello | undefined): void {
    const buf = this.#buf;
    const rest = buf === null || this.#used >= buf.length ? null : this.#used === 0 ? buf : buf.subarray(this.#used);
    // paused before our listeners go: a FIN that came with the bytes stays unread until the next owner reads
    this.#socket.pause();
    this.#settle({ kind: 'done', proxy: this.#proxy, hello, rest, used: this.#used });
  }

  #fail(reason: PrefaceFailure, detail?: string): void {
    this.#socket.destroy();
    this.#settle(detail === undefined ? { kind: 'failed', reason } : { kind: 'failed', reason, detail });
  }

  #settle(r: PrefaceResult): void {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#timer);
    const s = this.#socket;
    s.off('data', this.#onData);
    s.off('end', this.#onEnd);
    s.off('close', this.#onEnd);
    s.off('error', this.#onError);
    // a destroyed socket may still emit 'error' on a later tick: keep a no-op so it cannot crash the worker
    if (r.kind === 'failed') s.on('error', noop);
    this.#buf = null;
    // always on a later tick, so callers see one order whether the bytes came in one read or many
    process.nextTick(this.#done, r);
  }

  #onEnd = (): void => this.#fail(this.#buf === null ? 'closed' : this.#proxyRead ? 'client_hello_invalid' : 'proxy_invalid', 'connection ended inside the preface');
  #onError = (): void => this.#fail('closed');
  #onTimeout = (): void => this.#fail(this.#proxyRead ? 'timeout' : 'proxy_timeout');
}

