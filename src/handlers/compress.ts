// Response compression of a route (config/compress.ts): whether an answer gets compressed (the client's
// Accept-Encoding q-values, the answer's type, size and status: never an encoded body, a range, a 204/304, or
// HEAD), and the encoder that streams it to the client as a chunked body with backpressure both ways. Node's
// zlib does the work (gzip, brotli) on its thread pool; this module owns the zlib stream, never the socket.
import zlib from 'node:zlib';
import type { ByteSocket } from '../core/socket.js';
import type { CompressConfig } from '../route/router.js';
import { chooseEncoding, type Coding } from '../wire/accept-encoding.js';

interface Rules {
  readonly offered: readonly Coding[];
  /** Exact media types and "type/" prefixes (from "type/*"). */
  readonly exact: ReadonlySet<string>;
  readonly prefixes: readonly string[];
  readonly minSize: number;
  readonly level: number;
}

const compiled = new WeakMap<CompressConfig, Rules>();

function rulesOf(c: CompressConfig): Rules {
  let r = compiled.get(c);
  if (r === undefined) {
    const offered: Coding[] = [];
    if (c.brotli) offered.push('br');
    if (c.gzip) offered.push('gzip');
    r = {
      offered,
      exact: new Set(c.types.filter((t) => !t.endsWith('/*'))),
      prefixes: c.types.filter((t) => t.endsWith('/*')).map((t) => t.slice(0, -1)),
      minSize: c.min_size,
      level: c.level,
    };
    compiled.set(c, r);
  }
  return r;
}

/**
 * Whether an answer of this type and length is one the route compresses (for some client): such answers carry
 * `Vary: Accept-Encoding` whatever this client accepts. `length` -1 = unknown (streamed).
 */
export function compressible(c: CompressConfig | undefined, contentType: string | undefined, length: number): boolean {
  if (c === undefined || contentType === undefined) return false;
  const r = rulesOf(c);
  if (length >= 0 && length < r.minSize) return false;
  const semi = contentType.indexOf(';');
  const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  // a stream of events must reach the page as it is written: a compressor would hold it back
  if (type === 'text/event-stream') return false;
  if (r.exact.has(type)) return true;
  for (const p of r.prefixes) if (type.startsWith(p)) return true;
  return false;
}

export interface AnswerFacts {
  readonly method: string;
  readonly status: number;
  readonly contentType: string | undefined;
  /** The answer's own Content-Encoding, if any: such a body is never compressed again. */
  readonly contentEncoding: string | undefined;
  /** Body length, -1 when unknown. */
  readonly length: number;
  /** The answer is a range (206, or has Content-Range). */
  readonly ranged: boolean;
  /** The request's Accept-Encoding. */
  readonly acceptEncoding: string | undefined;
  /** HTTP/1.0 clients get no chunked body: they are answered as they are. */
  readonly versionMinor: 0 | 1;
}

/** The coding to compress this answer with, or null to send it as it is. */
export function compressionFor(c: CompressConfig | undefined, a: AnswerFacts): Coding | null {
  if (c === undefined || a.method === 'HEAD' || a.versionMinor === 0 || a.ranged) return null;
  if (a.status < 200 || a.status === 204 || a.status === 206 || a.status === 304) return null;
  if (a.contentEncoding !== undefined && a.contentEncoding.toLowerCase() !== 'identity') return null;
  if (!compressible(c, a.contentType, a.length)) return null;
  return chooseEncoding(a.acceptEncoding, rulesOf(c).offered);
}

/** The key of a compressed form of a body under config `c` (the coding and its level). */
export function variantKey(c: CompressConfig, coding: Coding): string {
  return `${coding}:${rulesOf(c).level}`;
}

/**
 * A small body compressed at once, on the event loop (as nginx does): for bodies of a few KiB the thread-pool
 * round trips of a zlib stream cost more than the compression itself. Callers keep the result (static files).
 */
export function compressWhole(c: CompressConfig, coding: Coding, body: Buffer): Buffer {
  const level = rulesOf(c).level;
  return coding === 'gzip'
    ? zlib.gzipSync(body, { level })
    : zlib.brotliCompressSync(body, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length } });
}

const CRLF = Buffer.from('\r\n');
const LAST_CHUNK = '0\r\n\r\n';
const END_WHOLE = Buffer.from(`\r\n${LAST_CHUNK}`, 'latin1');

/**
 * Bodies of a known length up to this are gathered and compressed at once when they end (compressWhole): a
 * zlib stream costs thread-pool round trips per write and per flush, which on a small body cost several times
 * the compression itself (measured: ~800 against ~140 CPU-µs for 64 KiB of text at level 1).
 */
const WHOLE_LIMIT = 256 * 1024;

/**
 * Compresses a body into `socket` as chunked transfer coding. write() returns false when the producer must wait
 * for `onDrain`; the encoder's own output waits for the socket (clientDrained). end(cb) flushes, writes the last
 * chunk, then calls cb. A body of known length up to WHOLE_LIMIT is held and compressed at once in end().
 */
export class Encoder {
  /** Bytes written to the socket (framing included). */
  bytesOut = 0;
  readonly #socket: ByteSocket;
  readonly #config: CompressConfig;
  readonly #coding: Coding;
  readonly #sizeHint: number;
  readonly #onDrain: () => void;
  readonly #onError: (err: Error) => void;
  /** The body so far, when it is compressed whole; null once streaming. */
  #whole: Buffer | null = null;
  #held = 0;
  #z: zlib.Gzip | zlib.BrotliCompress | null = null;
  #paused = false;
  #done = false;

  constructor(socket: ByteSocket, c: CompressConfig, coding: Coding, sizeHint: number, onDrain: () => void, onError: (err: Error) => void) {
    this.#socket = socket;
    this.#config = c;
    this.#coding = coding;
    this.#sizeHint = sizeHint;
    this.#onDrain = onDrain;
    this.#onError = onError;
    if (sizeHint > 0 && sizeHint <= WHOLE_LIMIT) this.#whole = Buffer.allocUnsafe(sizeHint);
    else this.#stream();
  }

  #stream(): zlib.Gzip | zlib.BrotliCompress {
    const level = rulesOf(this.#config).level;
    const z =
      this.#coding === 'gzip'
        ? zlib.createGzip({ level })
        : zlib.createBrotliCompress({
            params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level, ...(this.#sizeHint > 0 ? { [zlib.constants.BROTLI_PARAM_SIZE_HINT]: this.#sizeHint } : {}) },
          });
    z.on('data', this.#onData);
    z.on('drain', this.#onDrain);
    z.on('error', (err: Error) => {
      if (!this.#done) this.#onError(err);
    });
    this.#z = z;
    return z;
  }

  #onData = (out: Buffer): void => {
    if (this.#done || out.length === 0) return;
    const framed = Buffer.concat([Buffer.from(`${out.length.toString(16)}\r\n`, 'latin1'), out, CRLF]);
    this.bytesOut += framed.length;
    if (!this.#socket.write(framed) && !this.#paused && this.#z !== null) {
      this.#paused = true;
      this.#z.pause();
    }
  };

  /** Body bytes in; false = wait for onDrain before writing more. */
  write(chunk: Buffer): boolean {
    const whole = this.#whole;
    if (whole !== null) {
      if (this.#held + chunk.length <= whole.length) {
        // copied: a socket may hand out a buffer it reuses for its next read
        chunk.copy(whole, this.#held);
        this.#held += chunk.length;
        return true;
      }
      // more than the length announced: stream from here on, what was held first
      this.#whole = null;
      const z = this.#stream();
      z.write(whole.subarray(0, this.#held));
    }
    return this.#z!.write(chunk);
  }

  /** The client socket drained: let the compressor's output flow again. */
  clientDrained(): void {
    if (!this.#paused || this.#z === null) return;
    this.#paused = false;
    this.#z.resume();
  }

  end(onDone: () => void): void {
    const whole = this.#whole;
    if (whole !== null) {
      this.#whole = null;
      let out: Buffer;
      try {
        out = compressWhole(this.#config, this.#coding, whole.subarray(0, this.#held));
      } catch (err) {
        this.#onError(err as Error);
        return;
      }
      this.#done = true;
      // one write: the chunk and the last chunk
      const framed = Buffer.concat([Buffer.from(`${out.length.toString(16)}\r\n`, 'latin1'), out, END_WHOLE]);
      this.bytesOut += framed.length;
      this.#socket.write(framed);
      onDone();
      return;
    }
    const z = this.#z!;
    z.once('end', () => {
      if (this.#done) return;
      this.#done = true;
      this.bytesOut += LAST_CHUNK.length;
      this.#socket.write(LAST_CHUNK, 'latin1');
      onDone();
    });
    z.end();
  }

  /** Drops the compressor (the answer was cut). */
  destroy(): void {
    this.#done = true;
    this.#whole = null;
    this.#z?.destroy();
  }
}
