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

/**
 * Compresses a body into `socket` as chunked transfer coding. write() returns false when the producer must wait
 * for `onDrain`; the encoder's own output waits for the socket (clientDrained). end(cb) flushes, writes the last
 * chunk, then calls cb.
 */
export class Encoder {
  /** Bytes written to the socket (framing included). */
  bytesOut = 0;
  readonly #socket: ByteSocket;
  readonly #z: zlib.Gzip | zlib.BrotliCompress;
  #paused = false;
  #done = false;

  constructor(socket: ByteSocket, c: CompressConfig, coding: Coding, sizeHint: number, onDrain: () => void, onError: (err: Error) => void) {
    this.#socket = socket;
    const level = rulesOf(c).level;
    this.#z =
      coding === 'gzip'
        ? zlib.createGzip({ level })
        : zlib.createBrotliCompress({
            params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level, ...(sizeHint > 0 ? { [zlib.constants.BROTLI_PARAM_SIZE_HINT]: sizeHint } : {}) },
          });
    this.#z.on('data', this.#onData);
    this.#z.on('drain', onDrain);
    this.#z.on('error', (err: Error) => {
      if (!this.#done) onError(err);
    });
  }

  #onData = (out: Buffer): void => {
    if (this.#done || out.length === 0) return;
    const framed = Buffer.concat([Buffer.from(`${out.length.toString(16)}\r\n`, 'latin1'), out, CRLF]);
    this.bytesOut += framed.length;
    if (!this.#socket.write(framed) && !this.#paused) {
      this.#paused = true;
      this.#z.pause();
    }
  };

  /** Body bytes in; false = wait for onDrain before writing more. */
  write(chunk: Buffer): boolean {
    return this.#z.write(chunk);
  }

  /** The client socket drained: let the compressor's output flow again. */
  clientDrained(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#z.resume();
  }

  end(onDone: () => void): void {
    this.#z.once('end', () => {
      if (this.#done) return;
      this.#done = true;
      this.bytesOut += LAST_CHUNK.length;
      this.#socket.write(LAST_CHUNK, 'latin1');
      onDone();
    });
    this.#z.end();
  }

  /** Drops the compressor (the answer was cut). */
  destroy(): void {
    this.#done = true;
    this.#z.destroy();
  }
}
