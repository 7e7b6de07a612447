// Who a pooled upstream socket works for right now. The socket outlives the exchanges it serves, so it carries
// one set of listeners for its whole life (added when first adopted) that pass each event to its current owner:
// a kept-alive socket costs no listener churn per request, and an event after the owner let go (the socket idle
// in the pool, or destroyed by an exchange that failed) reaches nobody. Shared by the HTTP and FastCGI exchanges.
import type { ByteSocket } from '../core/socket.js';
import { NativeSocket, type DataReceiver } from '../native/io.js';

/** What an exchange does with the events of the upstream socket it owns (called by the listeners below only). */
export interface UpstreamSocketOwner {
  upstreamData(chunk: Buffer): void;
  /** The peer ended its side (FIN). */
  upstreamEnd(): void;
  upstreamError(err: Error): void;
  upstreamClose(): void;
  upstreamDrain(): void;
  /**
   * A native socket's answer relayed by the addon (NativeSocket.answerTo, upgradeTo): only owners that arm one get
   * these. `sentDown`: an upgrade's bytes that came behind the 101 (already written to the client with it).
   */
  upstreamAnswer?(status: number, flags: number, headBytes: number, bodyBytes: number, clientQueued: number, sentDown: Buffer | null): void;
}

const kOwner = Symbol('portico.upstream-owner');
type OwnedSocket = ByteSocket & { [kOwner]?: UpstreamSocketOwner | null };

/** `owner` gets the socket's events from now on (the listeners are added on the socket's first adoption). */
export function adoptSocket(socket: ByteSocket, owner: UpstreamSocketOwner): void {
  const s = socket as OwnedSocket;
  if (s[kOwner] === undefined) {
    // a native socket's bytes come to the owner in one call, not through emit() and each 'data' listener
    if (socket instanceof NativeSocket) socket.setDataReceiver(new OwnerData(socket as NativeSocket & OwnedSocket));
    else s.on('data', onData);
    s.on('end', onEnd);
    s.on('error', onError);
    s.on('close', onClose);
    s.on('drain', onDrain);
  }
  s[kOwner] = owner;
}

/** The owner lets go (the socket goes back to the pool, or is destroyed): its events reach nobody. */
export function releaseSocket(socket: ByteSocket): void {
  (socket as OwnedSocket)[kOwner] = null;
}

/** For a socket that leaves the pool's protocol for good (a tunnel): its new user attaches listeners of its own. */
export function disownSocket(socket: ByteSocket): void {
  if (socket instanceof NativeSocket) socket.setDataReceiver(null);
  else socket.removeListener('data', onData);
  socket.removeListener('end', onEnd);
  socket.removeListener('error', onError);
  socket.removeListener('close', onClose);
  socket.removeListener('drain', onDrain);
  delete (socket as OwnedSocket)[kOwner];
}

/**
 * A native socket's 'data': to its owner; with none (idle in the pool, or given up by a failed exchange) to its
 * 'data' listeners, where the pool's idle listener takes stray bytes for a broken connection. While an owner
 * has it, the socket is not idle, so the idle listener had nothing to do with its bytes anyway.
 */
class OwnerData implements DataReceiver {
  readonly #socket: NativeSocket & OwnedSocket;

  constructor(socket: NativeSocket & OwnedSocket) {
    this.#socket = socket;
  }

  socketData(chunk: Buffer): void {
    const owner = this.#socket[kOwner];
    if (owner !== undefined && owner !== null) owner.upstreamData(chunk);
    else this.#socket.emit('data', chunk);
  }

  socketAnswer(status: number, flags: number, headBytes: number, bodyBytes: number, clientQueued: number, sentDown: Buffer | null): void {
    this.#socket[kOwner]?.upstreamAnswer?.(status, flags, headBytes, bodyBytes, clientQueued, sentDown);
  }
}

function onData(this: OwnedSocket, chunk: Buffer): void {
  this[kOwner]?.upstreamData(chunk);
}
function onEnd(this: OwnedSocket): void {
  this[kOwner]?.upstreamEnd();
}
function onError(this: OwnedSocket, err: Error): void {
  this[kOwner]?.upstreamError(err);
}
function onClose(this: OwnedSocket): void {
  this[kOwner]?.upstreamClose();
}
function onDrain(this: OwnedSocket): void {
  this[kOwner]?.upstreamDrain();
}
