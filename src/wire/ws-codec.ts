// WebSocket messages over one backend connection (RFC 6455 §5): an incremental reader of the frames a server
// sends (unmasked), reassembling fragmented messages up to a size limit, and an encoder of the masked frames a
// client sends. Pure and bounded: no sockets, never throws on input; a protocol error is a result with the
// close code to send. Used by the terminated WebSocket's backend leg (terminate/session.ts).
import { isUtf8 as bufferIsUtf8 } from 'node:buffer';
import { randomFillSync } from 'node:crypto';

export const OP_CONT = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

/** One thing the reader found: a whole message, a control frame, or the error that ends the connection. */
export type WsEvent =
  | { kind: 'message'; binary: boolean; data: Buffer }
  | { kind: 'ping'; data: Buffer }
  | { kind: 'pong'; data: Buffer }
  | { kind: 'close'; code: number; reason: string }
  | { kind: 'error'; code: number; reason: string };

/** RFC 6455 §7.4.1: codes a peer may send in a Close frame (1005, 1006 and 1015 never go on the wire). */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/**
 * Incremental reader of server-to-client frames. `push(chunk)` returns the events completed by the chunk, in
 * order; after an `error` or `close` event it reads nothing more. Buffers at most one frame header and the
 * message in progress (`maxMessage` bytes, else error 1009). A message's `data` may be a view of the chunk
 * pushed: the caller uses it before it reuses that chunk's memory (the session sends it on at once).
 */
export class FrameReader {
  readonly #maxMessage: number;
  #buf: Buffer | null = null;
  /** Fragments of the data message in progress and their total size; opcode of its first frame (0 = none). */
  #parts: Buffer[] = [];
  #partBytes = 0;
  #msgOp = 0;
  #done = false;

  constructor(maxMessage: number) {
    this.#maxMessage = maxMessage;
  }

  /** Bytes held (a partial frame and the fragments of a message in progress). */
  get buffered(): number {
    return (this.#buf?.length ?? 0) + this.#partBytes;
  }

  push(chunk: Buffer): WsEvent[] {
    const out: WsEvent[] = [];
    if (this.#done) return out;
    let buf = this.#buf === null ? chunk : Buffer.concat([this.#buf, chunk]);
    this.#buf = null;
    let i = 0;
    while (!this.#done) {
      const r = this.#frame(buf, i, out);
      if (r === 0) break;
      i += r;
    }
    if (!this.#done && i < buf.length) {
      buf = buf.subarray(i);
      // keep only what a later frame needs: copy so a big chunk is not pinned by a small tail
      this.#buf = Buffer.from(buf);
    }
    return out;
  }

  /** Reads one frame at `at`; returns the bytes it used, or 0 when the frame is not complete yet. */
  #frame(buf: Buffer, at: number, out: WsEvent[]): number {
    const avail = buf.length - at;
    if (avail < 2) return 0;
    const b0 = buf[at];
    const b1 = buf[at + 1];
    const fin = (b0 & 0x80) !== 0;
    const rsv = b0 & 0x70;
    const op = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    let len = b1 & 0x7f;
    let hdr = 2;
    if (rsv !== 0) return this.#fail(out, 1002, 'reserved bits set (no extension was negotiated)');
    // RFC 6455 §5.1: a client closes the connection on a masked frame from the server
    if (masked) return this.#fail(out, 1002, 'masked frame from the server');
    if (len === 126) {
      if (avail < 4) return 0;
      len = buf.readUInt16BE(at + 2);
      hdr = 4;
    } else if (len === 127) {
      if (avail < 10) return 0;
      const hi = buf.readUInt32BE(at + 2);
      // lengths past 2^53 are not countable; past the message limit anyway
      if (hi > 0x1fffff) return this.#fail(out, 1009, 'frame length too large');
      len = hi * 2 ** 32 + buf.readUInt32BE(at + 6);
      hdr = 10;
    }
    const control = op >= 0x8;
    if (control) {
      // RFC 6455 §5.5: control frames are not fragmented and carry at most 125 bytes
      if (!fin || len > 125) return this.#fail(out, 1002, 'invalid control frame');
      if (op !== OP_CLOSE && op !== OP_PING && op !== OP_PONG) return this.#fail(out, 1002, `unknown opcode ${op}`);
    } else if (op === OP_CONT) {
      if (this.#msgOp === 0) return this.#fail(out, 1002, 'continuation without a message');
    } else if (op === OP_TEXT || op === OP_BINARY) {
      if (this.#msgOp !== 0) return this.#fail(out, 1002, 'new message inside a fragmented one');
    } else {
      return this.#fail(out, 1002, `unknown opcode ${op}`);
    }
    if (!control && this.#partBytes + len > this.#maxMessage) return this.#fail(out, 1009, `message over ${this.#maxMessage} bytes`);
    if (avail < hdr + len) return 0;
    const payload = buf.subarray(at + hdr, at + hdr + len);
    if (control) {
      if (op === OP_PING) out.push({ kind: 'ping', data: Buffer.from(payload) });
      else if (op === OP_PONG) out.push({ kind: 'pong', data: Buffer.from(payload) });
      else {
        const c = parseClosePayload(payload);
        if (c.kind === 'error') return this.#fail(out, c.code, c.reason);
        this.#done = true;
        out.push(c);
      }
      return hdr + len;
    }
    if (op !== OP_CONT) this.#msgOp = op;
    if (fin && this.#parts.length === 0) {
      // no copy: the caller consumes the events before its next push (see push())
      out.push({ kind: 'message', binary: op === OP_BINARY, data: payload });
      this.#msgOp = 0;
      return hdr + len;
    }
    this.#parts.push(Buffer.from(payload));
    this.#partBytes += len;
    if (fin) {
      const data = Buffer.concat(this.#parts, this.#partBytes);
      out.push({ kind: 'message', binary: this.#msgOp === OP_BINARY, data });
      this.#parts = [];
      this.#partBytes = 0;
      this.#msgOp = 0;
    }
    return hdr + len;
  }

  #fail(out: WsEvent[], code: number, reason: string): number {
    this.#done = true;
    this.#parts = [];
    this.#partBytes = 0;
    out.push({ kind: 'error', code, reason });
    return 0;
  }
}

/** RFC 6455 §5.5.1: an empty payload (no code: 1005), or a 2-byte code and a UTF-8 reason. */
export function parseClosePayload(p: Buffer): { kind: 'close'; code: number; reason: string } | { kind: 'error'; code: number; reason: string } {
  if (p.length === 0) return { kind: 'close', code: 1005, reason: '' };
  if (p.length === 1) return { kind: 'error', code: 1002, reason: 'close frame with a 1-byte payload' };
  const code = p.readUInt16BE(0);
  if (!isValidCloseCode(code)) return { kind: 'error', code: 1002, reason: `invalid close code ${code}` };
  const reason = p.subarray(2);
  if (!isUtf8(reason)) return { kind: 'error', code: 1007, reason: 'close reason is not UTF-8' };
  return { kind: 'close', code, reason: reason.toString('utf8') };
}

export function isUtf8(b: Buffer): boolean {
  return b.length === 0 || bufferIsUtf8(b);
}

/** Mask keys are taken from one random pool refilled in blocks (RFC 6455 §5.3 asks for unpredictable keys). */
const MASK_POOL = Buffer.allocUnsafe(4096);
let maskAt = MASK_POOL.length;

/**
 * One masked frame (client to server, FIN set) carrying `payload` whole: header and masked payload in one
 * buffer, ready for one write.
 */
export function encodeFrame(op: number, payload: Buffer | Uint8Array): Buffer {
  const len = payload.length;
  const hdr = len < 126 ? 2 : len < 65536 ? 4 : 10;
  // bigger payloads are masked a 32-bit word at a time: their bytes start 4-aligned in their own ArrayBuffer
  const wordwise = len >= WORDWISE_FROM;
  const lead = wordwise ? (4 - ((hdr + 4) & 3)) & 3 : 0;
  const out = wordwise ? Buffer.from(new ArrayBuffer(lead + hdr + 4 + len), lead, hdr + 4 + len) : Buffer.allocUnsafe(hdr + 4 + len);
  out[0] = 0x80 | op;
  if (len < 126) out[1] = 0x80 | len;
  else if (len < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    out.writeUInt32BE(len >>> 0, 6);
  }
  if (maskAt + 4 > MASK_POOL.length) {
    randomFillSync(MASK_POOL);
    maskAt = 0;
  }
  const m0 = MASK_POOL[maskAt];
  const m1 = MASK_POOL[maskAt + 1];
  const m2 = MASK_POOL[maskAt + 2];
  const m3 = MASK_POOL[maskAt + 3];
  maskAt += 4;
  out[hdr] = m0;
  out[hdr + 1] = m1;
  out[hdr + 2] = m2;
  out[hdr + 3] = m3;
  const base = hdr + 4;
  let i = 0;
  if (wordwise) {
    out.set(payload, base);
    // the key and the payload share the word layout: words[0] is the key, in this machine's byte order
    const words = new Uint32Array(out.buffer, out.byteOffset + hdr, 1 + (len >>> 2));
    const m = words[0];
    for (let w = 1; w < words.length; w++) words[w] ^= m;
    i = len & ~3;
    for (; i < len; i++) out[base + i] ^= (i & 3) === 0 ? m0 : (i & 3) === 1 ? m1 : (i & 3) === 2 ? m2 : m3;
    return out;
  }
  for (; i < len; i++) out[base + i] = payload[i] ^ ((i & 3) === 0 ? m0 : (i & 3) === 1 ? m1 : (i & 3) === 2 ? m2 : m3);
  return out;
}

/** Payload size from which encodeFrame masks word by word (a fresh ArrayBuffer beats the byte loop from here). */
const WORDWISE_FROM = 256;

/** A masked Close frame with `code` and `reason` (the reason cut to fit 123 bytes). */
export function encodeClose(code: number, reason: string): Buffer {
  if (code === 1005 || code === 1006) return encodeFrame(OP_CLOSE, Buffer.alloc(0));
  let r = Buffer.from(reason, 'utf8');
  if (r.length > 123) r = r.subarray(0, 123);
  const p = Buffer.allocUnsafe(2 + r.length);
  p.writeUInt16BE(code, 0);
  r.copy(p, 2);
  return encodeFrame(OP_CLOSE, p);
}
