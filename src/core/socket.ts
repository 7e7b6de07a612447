// The socket vocabulary every room shares: what the data path needs of a client or upstream socket (net.Socket
// and the addon's NativeSocket both are one) and why a connection or tunnel closed. Types only.
import type { EventEmitter } from 'node:events';

/** What the HTTP path needs of a client or upstream socket; both net.Socket and NativeSocket are one. */
export interface ByteSocket extends EventEmitter {
  readonly destroyed: boolean;
  readonly readable: boolean;
  readonly writable: boolean;
  readonly readableEnded: boolean;
  readonly writableEnded: boolean;
  readonly readableLength: number;
  readonly writableLength: number;
  /** As net.Socket's: false ends our writable side when the peer's FIN arrives; settable (a tunnel sets it true). */
  allowHalfOpen: boolean;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  write(data: Uint8Array | string, cb?: (err?: Error | null) => void): boolean;
  write(data: Uint8Array | string, encoding: BufferEncoding, cb?: (err?: Error | null) => void): boolean;
  end(cb?: () => void): this;
  end(data: Uint8Array | string, cb?: () => void): this;
  destroy(error?: Error): this;
  destroySoon(): void;
  pause(): this;
  resume(): this;
  isPaused(): boolean;
  /** Takes what arrived and was not delivered yet (paused), a chunk at a time; null when nothing is held. */
  read(): Buffer | string | null;
  cork(): void;
  uncork(): void;
  setNoDelay(noDelay?: boolean): this;
  setKeepAlive(enable?: boolean, initialDelay?: number): this;
  setTimeout(timeout: number): this;
}

/** Who or what ended a tunnel or connection, as logs (`closedBy`) and metrics name it. */
export type ClosedBy = 'client' | 'upstream' | 'client_error' | 'upstream_error' | 'idle_timeout' | 'half_closed_timeout' | 'lifetime' | 'shutdown';
