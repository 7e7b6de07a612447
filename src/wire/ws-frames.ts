// Where the WebSocket frames of one direction of a tunnel begin and end (RFC 6455 §5.2), followed from the byte
// counts in each frame header, so Portico can put a Close frame of its own between two frames at shutdown and
// tell a peer that dropped the WebSocket (an end without a Close) from one closing it. It reads headers only
// (payloads are skipped by length, never unmasked or parsed) and never changes a byte. Extensions
// (permessage-deflate...) keep this layout: the length field counts extension and application data. The addon's
// twin is src/native/frames.h, with the same rules.

/** The longest frame header: 2 bytes, 8 of extended length, 4 of mask key. */
const MAX_HEADER = 14;
const OPCODE_CLOSE = 0x8;

export class FrameTracker {
  /** The direction's frames must carry a mask (client to server, RFC 6455 §5.3), else must not. */
  readonly #masked: boolean;
  /** Payload bytes of the current frame still to come; 0 at a boundary or while a header is incomplete. */
  #payloadLeft = 0;
  /** Bytes of a header split across reads (at most MAX_HEADER). */
  #header: number[] = [];
  #broken = false;
  #closeSeen = false;

  constructor(masked: boolean) {
    this.#masked = masked;
  }

  /** True between two frames: a frame written now cannot cut into another. */
  get atBoundary(): boolean {
    return !this.#broken && this.#payloadLeft === 0 && this.#header.length === 0;
  }

  /**
   * The stream is not valid framing (see validStart; or a length past 2^53): Portico no longer knows where frames
   * end, and never guesses.
   */
  get broken(): boolean {
    return this.#broken;
  }

  /** A Close frame went this way: after it the sender may send nothing more (RFC 6455 §5.5.1). */
  get closeSeen(): boolean {
    return this.#closeSeen;
  }

  /** Follows every byte of `chunk`. */
  feed(chunk: Buffer): void {
    this.#advance(chunk, false);
  }

  /**
   * Follows `chunk` only up to the end of the frame in progress; returns how many of its bytes that is
   * (0 when at a boundary already, chunk.length when the frame goes on past it).
   */
  feedToBoundary(chunk: Buffer): number {
    return this.#advance(chunk, true);
  }

  #advance(chunk: Buffer, stopAtBoundary: boolean): number {
    let i = 0;
    const n = chunk.length;
    while (i < n && !this.#broken) {
      if (this.#payloadLeft > 0) {
        const take = Math.min(this.#payloadLeft, n - i);
        this.#payloadLeft -= take;
        i += take;
        if (this.#payloadLeft === 0 && stopAtBoundary) return i;
        continue;
      }
      if (stopAtBoundary && this.#header.length === 0) return i;
      this.#header.push(chunk[i++]);
      // the first two bytes say everything but the length's value: checked as soon as they are in
      if (this.#header.length === 2 && !validStart(this.#header, this.#masked)) {
        this.#broken = true;
        break;
      }
      const need = headerLength(this.#header);
      if (this.#header.length < need) continue;
      const len = payloadLength(this.#header);
      if ((this.#header[0] & 0x0f) === OPCODE_CLOSE) this.#closeSeen = true;
      this.#header = [];
      if (len === undefined) {
        this.#broken = true;
        break;
      }
      this.#payloadLeft = len;
      if (len === 0 && stopAtBoundary) return i;
    }
    return i;
  }
}

/**
 * A header's first two bytes as an endpoint may send them: a known opcode (0-2 data, 8-10 control), control frames
 * unfragmented and at most 125 bytes, the mask bit as the direction requires. RSV bits are the extensions'
 * business (not checked).
 */
function validStart(h: readonly number[], masked: boolean): boolean {
  const op = h[0] & 0x0f;
  if (op > 0xa || (op > 0x2 && op < 0x8)) return false;
  if ((op & 0x8) !== 0 && ((h[0] & 0x80) === 0 || (h[1] & 0x7f) > 125)) return false;
  return ((h[1] & 0x80) !== 0) === masked;
}

/** Header length once the first two bytes are known (else 2, the bytes needed to know it). */
function headerLength(h: readonly number[]): number {
  if (h.length < 2) return 2;
  const len7 = h[1] & 0x7f;
  const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
  return Math.min(MAX_HEADER, 2 + ext + (h[1] & 0x80 ? 4 : 0));
}

/** Payload length of a complete header; undefined when over 2^53 - 1 (not a length anyone sends). */
function payloadLength(h: readonly number[]): number | undefined {
  const len7 = h[1] & 0x7f;
  if (len7 < 126) return len7;
  if (len7 === 126) return (h[2] << 8) | h[3];
  let v = 0;
  for (let k = 2; k < 10; k++) v = v * 256 + h[k];
  return Number.isSafeInteger(v) ? v : undefined;
}

/**
 * The WebSocket end rule of every relay (the addon's is frames.h EndsAtOnce): the peer whose direction `ender`
 * follows ended its connection, and the tunnel ends at once instead of passing its FIN on, as nginx ends an
 * upgraded connection at its first end. Yes when that peer dropped the WebSocket (no Close frame from it, its framing
 * followed: RFC 6455 §7.1.5, closed abnormally), which has no half-closed state; and when the closing handshake is
 * done (a Close each way, `other`'s whole: at a frame boundary): neither peer may send anything more (§5.5.1). An
 * end after a Close the other peer has not answered yet, or on bytes that are not frames, keeps half-close.
 */
export function endsAtOnce(ender: FrameTracker, other: FrameTracker): boolean {
  if (ender.broken) return false;
  return !ender.closeSeen || (other.closeSeen && other.atBoundary);
}

/** Close frame with status 1001 (going away), RFC 6455 §7.4.1; masked when it goes to a server (§5.3). */
export function goingAwayFrame(masked: boolean, mask: Buffer): Buffer {
  const code = [0x03, 0xe9];
  if (!masked) return Buffer.from([0x80 | OPCODE_CLOSE, 0x02, ...code]);
  return Buffer.from([0x80 | OPCODE_CLOSE, 0x80 | 0x02, mask[0], mask[1], mask[2], mask[3], code[0] ^ mask[0], code[1] ^ mask[1]]);
}
