// Portico's FastCGI 1.0 record codec (the spec: fastcgi-archives.github.io/FastCGI_Specification.html): the
// records a responder client writes (BEGIN_REQUEST, PARAMS, STDIN, GET_VALUES) and an incremental, bounded
// reader of what an application sends back (STDOUT, STDERR, END_REQUEST). Pure: no sockets, never throws on
// input; a malformed stream is a reason string the caller turns into a 502, never a crash.

/** §8: record types. */
export const FCGI_BEGIN_REQUEST = 1;
export const FCGI_ABORT_REQUEST = 2;
export const FCGI_END_REQUEST = 3;
export const FCGI_PARAMS = 4;
export const FCGI_STDIN = 5;
export const FCGI_STDOUT = 6;
export const FCGI_STDERR = 7;
export const FCGI_DATA = 8;
export const FCGI_GET_VALUES = 9;
export const FCGI_GET_VALUES_RESULT = 10;
export const FCGI_UNKNOWN_TYPE = 11;

/** §3.3: every record starts with this header. */
export const FCGI_HEADER_LEN = 8;
/** §3.3: contentLength is 16 bits. */
export const FCGI_MAX_CONTENT = 0xffff;
const FCGI_VERSION_1 = 1;
const FCGI_RESPONDER = 1;
const FCGI_KEEP_CONN = 1;

/** §5.5 protocolStatus of END_REQUEST. */
export const FCGI_REQUEST_COMPLETE = 0;
const PROTOCOL_STATUS_NAMES = ['REQUEST_COMPLETE', 'CANT_MPX_CONN', 'OVERLOADED', 'UNKNOWN_ROLE'];

/** A record header with `length` content bytes and no padding. */
function header(type: number, requestId: number, length: number, padding = 0): Buffer {
  const h = Buffer.allocUnsafe(FCGI_HEADER_LEN);
  h[0] = FCGI_VERSION_1;
  h[1] = type;
  h.writeUInt16BE(requestId, 2);
  h.writeUInt16BE(length, 4);
  h[6] = padding;
  h[7] = 0;
  return h;
}

/** §5.1: BEGIN_REQUEST for the Responder role; `keepConn` asks the application to keep the connection open. */
export function encodeBeginRequest(requestId: number, keepConn: boolean): Buffer {
  const b = Buffer.alloc(FCGI_HEADER_LEN + 8);
  header(FCGI_BEGIN_REQUEST, requestId, 8).copy(b, 0);
  b.writeUInt16BE(FCGI_RESPONDER, 8);
  b[10] = keepConn ? FCGI_KEEP_CONN : 0;
  return b;
}

/** §3.4: a name-value pair's lengths: 1 byte below 128, else 4 bytes with the top bit set. */
function lengthBytes(n: number): number {
  return n < 128 ? 1 : 4;
}

function writeLength(buf: Buffer, at: number, n: number): number {
  if (n < 128) {
    buf[at] = n;
    return at + 1;
  }
  buf.writeUInt32BE((n | 0x80000000) >>> 0, at);
  return at + 4;
}

/** §3.4: name-value pairs as their content bytes (no record headers); `pairs` is flat: name, value, ... as UTF-8. */
export function encodePairs(pairs: readonly string[]): Buffer {
  const bytes: Buffer[] = [];
  let body = 0;
  for (let i = 0; i < pairs.length; i++) {
    const b = Buffer.from(pairs[i], 'utf8');
    bytes.push(b);
    body += lengthBytes(b.length) + b.length;
  }
  const payload = Buffer.allocUnsafe(body);
  let at = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    const name = bytes[i];
    const value = bytes[i + 1] ?? Buffer.alloc(0);
    at = writeLength(payload, at, name.length);
    at = writeLength(payload, at, value.length);
    name.copy(payload, at);
    at += name.length;
    value.copy(payload, at);
    at += value.length;
  }
  return payload;
}

/**
 * A stream of name-value pairs (PARAMS or GET_VALUES), as records of at most FCGI_MAX_CONTENT bytes each,
 * followed (for PARAMS) by the empty record that ends the stream. Names and values are sent as UTF-8 bytes;
 * `pairs` is flat: name, value, name, value...
 */
export function encodeParams(requestId: number, pairs: readonly string[], type: number = FCGI_PARAMS): Buffer {
  const payload = encodePairs(pairs);
  const body = payload.length;
  const records = Math.ceil(body / FCGI_MAX_CONTENT);
  const end = type === FCGI_PARAMS ? FCGI_HEADER_LEN : 0;
  const out = Buffer.allocUnsafe(records * FCGI_HEADER_LEN + body + end);
  let o = 0;
  for (let from = 0; from < body; from += FCGI_MAX_CONTENT) {
    const len = Math.min(FCGI_MAX_CONTENT, body - from);
    header(type, requestId, len).copy(out, o);
    o += FCGI_HEADER_LEN;
    payload.copy(out, o, from, from + len);
    o += len;
  }
  if (end > 0) header(type, requestId, 0).copy(out, o);
  return out;
}

/**
 * A name-value pair (§3.4) as a "binary" string, one char per byte as latin1 writes it: the form the per-request
 * params are collected in, so that one request's pairs cost one string and one write into the outgoing buffer
 * instead of a Buffer per name and value. `name` and `value` must be binary strings already (see binary()).
 */
export function binaryPair(name: string, value: string): string {
  return lengthChars(name.length) + lengthChars(value.length) + name + value;
}

/** One-char strings for the lengths below 128 (the common case: one byte, no allocation). */
const SHORT_LENGTHS: readonly string[] = Array.from({ length: 128 }, (_, n) => String.fromCharCode(n));

function lengthChars(n: number): string {
  if (n < 128) return SHORT_LENGTHS[n];
  return String.fromCharCode(((n >>> 24) & 0x7f) | 0x80, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

const NON_ASCII = /[^\x00-\x7f]/;

/** Text (a decoded path, a config value) as its UTF-8 bytes in binary form; ASCII text is its own form. */
export function binary(text: string): string {
  return NON_ASCII.test(text) ? Buffer.from(text, 'utf8').toString('latin1') : text;
}

/** Node's own latin1 encoder of Buffer.prototype (what `buf.write(s, at, 'latin1')` calls after parsing its arguments). */
interface Latin1Encoder {
  latin1Write(s: string, offset: number): number;
}

/**
 * Writes `text` (one byte per char) into `buf` at `at`, returns the bytes written: Node's encoder called directly,
 * without write()'s argument handling (a request's opening and answer each make a few such writes).
 */
export function putLatin1(buf: Buffer, text: string, at: number): number {
  return (buf as Buffer & Latin1Encoder).latin1Write(text, at);
}

/** Copies `bytes` into `buf` at `at` (TypedArray set: no copy()'s argument handling), returns their length. */
export function putBytes(buf: Buffer, bytes: Uint8Array, at: number): number {
  buf.set(bytes, at);
  return bytes.length;
}

/** Writes a record header at `at`; returns the offset after it. */
function putHeader(buf: Buffer, at: number, type: number, requestId: number, length: number): number {
  // byte stores, not writeUInt16BE (a bounds-checked call each): this runs four times per request
  buf[at] = FCGI_VERSION_1;
  buf[at + 1] = type;
  buf[at + 2] = requestId >>> 8;
  buf[at + 3] = requestId & 0xff;
  buf[at + 4] = length >>> 8;
  buf[at + 5] = length & 0xff;
  buf[at + 6] = 0;
  buf[at + 7] = 0;
  return at + FCGI_HEADER_LEN;
}

/**
 * The opening of one request as a single buffer, so that it leaves in one send: BEGIN_REQUEST, the PARAMS
 * stream (`fixed`, pairs encoded once per route, then `pairs`, this request's, in binary form; split into
 * records of at most FCGI_MAX_CONTENT), its empty closing record, and with `stdinEnd` the empty STDIN record of
 * a request without a body.
 */
export function encodeRequestStart(requestId: number, keepConn: boolean, fixed: Buffer, pairs: string, stdinEnd: boolean): Buffer {
  const body = fixed.length + pairs.length;
  const records = Math.ceil(body / FCGI_MAX_CONTENT);
  const out = Buffer.allocUnsafe(2 * FCGI_HEADER_LEN + records * FCGI_HEADER_LEN + body + FCGI_HEADER_LEN + (stdinEnd ? FCGI_HEADER_LEN : 0));
  let o = putHeader(out, 0, FCGI_BEGIN_REQUEST, requestId, 8);
  // the BEGIN_REQUEST body: role (2 bytes), flags, 5 reserved zero bytes (stores: fill() is a call into C++)
  out[o] = FCGI_RESPONDER >>> 8;
  out[o + 1] = FCGI_RESPONDER & 0xff;
  out[o + 2] = keepConn ? FCGI_KEEP_CONN : 0;
  out[o + 3] = 0;
  out[o + 4] = 0;
  out[o + 5] = 0;
  out[o + 6] = 0;
  out[o + 7] = 0;
  o += 8;
  // no pairs at all: only the closing record (an empty one before it would end the stream early)
  if (body > 0 && body <= FCGI_MAX_CONTENT) {
    o = putHeader(out, o, FCGI_PARAMS, requestId, body);
    o += putBytes(out, fixed, o);
    o += putLatin1(out, pairs, o);
  } else if (body > FCGI_MAX_CONTENT) {
    // past 64 KiB (a request with very large headers): the pairs are laid out once, then cut into records
    const payload = Buffer.concat([fixed, Buffer.from(pairs, 'latin1')]);
    for (let from = 0; from < body; from += FCGI_MAX_CONTENT) {
      const len = Math.min(FCGI_MAX_CONTENT, body - from);
      o = putHeader(out, o, FCGI_PARAMS, requestId, len);
      o += payload.copy(out, o, from, from + len);
    }
  }
  o = putHeader(out, o, FCGI_PARAMS, requestId, 0);
  if (stdinEnd) putHeader(out, o, FCGI_STDIN, requestId, 0);
  return out;
}

/**
 * STDIN records carrying `data` (split at FCGI_MAX_CONTENT), as buffers to write in order: headers are
 * small new buffers, data is never copied. An empty `data` gives the empty record that ends the stream.
 */
export function encodeStdin(requestId: number, data: Buffer): Buffer[] {
  if (data.length === 0) return [header(FCGI_STDIN, requestId, 0)];
  const out: Buffer[] = [];
  for (let from = 0; from < data.length; from += FCGI_MAX_CONTENT) {
    const len = Math.min(FCGI_MAX_CONTENT, data.length - from);
    out.push(header(FCGI_STDIN, requestId, len), from === 0 && len === data.length ? data : data.subarray(from, from + len));
  }
  return out;
}

/** §5.4: ABORT_REQUEST (sent when the client left: the application may stop early). */
export function encodeAbortRequest(requestId: number): Buffer {
  return header(FCGI_ABORT_REQUEST, requestId, 0);
}

/** §4.1: a management query (request id 0) for `names` (e.g. FCGI_MPXS_CONNS): what a health probe sends. */
export function encodeGetValues(names: readonly string[]): Buffer {
  const pairs: string[] = [];
  for (const n of names) pairs.push(n, '');
  return encodeParams(0, pairs, FCGI_GET_VALUES);
}

/** What the application's stream delivers to its reader's owner; called synchronously from push(). */
export interface RecordSink {
  /** STDOUT bytes (the CGI response), possibly part of a record; never empty. */
  stdout(data: Buffer): void;
  /** STDERR bytes, possibly part of a record; never empty. */
  stderr(data: Buffer): void;
  /**
   * END_REQUEST: the response is complete. Nothing may follow it: `trailing` says bytes came right after it in the
   * same push (the reader fails on them next; the connection must not be reused).
   */
  end(appStatus: number, protocolStatus: number, trailing: boolean): void;
}

/** A stream error: why the application's bytes are not FastCGI we accept. */
export type ReadError = string;

type ReaderState = 'header' | 'content' | 'padding' | 'ended' | 'failed';

/**
 * Reads the records of one request from an application, incrementally: push() any split of the stream, the sink
 * sees the same calls as for the whole stream. STDOUT and STDERR content is passed on as it arrives (no record is
 * buffered whole); END_REQUEST's 8 bytes are collected. Strict: version 1, this request's id only, known types,
 * END_REQUEST exactly 8 bytes, nothing after it. Bounded: at most 8 header bytes and 8 END_REQUEST bytes held.
 */
export class RecordReader {
  readonly #requestId: number;
  readonly #sink: RecordSink;
  #state: ReaderState = 'header';
  /** A record header split across pushes is collected here (allocated then only: a whole one is read in place). */
  #head: Buffer | null = null;
  #headHave = 0;
  #type = 0;
  #contentLeft = 0;
  #paddingLeft = 0;
  /** END_REQUEST's content: its two fields, filled as its bytes arrive. */
  #appStatus = 0;
  #protocolStatus = 0;
  #endHave = 0;
  #error: ReadError | null = null;
  /** Bytes of the push follow the record just read (END_REQUEST's `trailing`). */
  #trailing = false;

  constructor(requestId: number, sink: RecordSink) {
    this.#requestId = requestId;
    this.#sink = sink;
  }

  /** END_REQUEST was read. */
  get ended(): boolean {
    return this.#state === 'ended';
  }

  get error(): ReadError | null {
    return this.#error;
  }

  /** Consumes `chunk`; returns null, or the stream error (then and from now on). Bytes after END_REQUEST are an error. */
  push(chunk: Buffer): ReadError | null {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      switch (this.#state) {
        case 'header': {
          if (this.#headHave === 0 && n - i >= FCGI_HEADER_LEN) {
            i += FCGI_HEADER_LEN;
            const problem = this.#onHeader(chunk, i - FCGI_HEADER_LEN);
            if (problem !== null) return this.#fail(problem);
            break;
          }
          const head = (this.#head ??= Buffer.alloc(FCGI_HEADER_LEN));
          const take = Math.min(FCGI_HEADER_LEN - this.#headHave, n - i);
          chunk.copy(head, this.#headHave, i, i + take);
          this.#headHave += take;
          i += take;
          if (this.#headHave === FCGI_HEADER_LEN) {
            this.#headHave = 0;
            const problem = this.#onHeader(head, 0);
            if (problem !== null) return this.#fail(problem);
          }
          break;
        }
        case 'content': {
          const take = Math.min(this.#contentLeft, n - i);
          this.#contentLeft -= take;
          const part = i === 0 && take === n ? chunk : chunk.subarray(i, i + take);
          i += take;
          if (this.#type === FCGI_STDOUT) this.#sink.stdout(part);
          else if (this.#type === FCGI_STDERR) this.#sink.stderr(part);
          else this.#endBytes(part);
          if (this.#state !== 'content') return this.#error; // the sink failed us meanwhile (see stop())
          if (this.#contentLeft === 0) {
            this.#trailing = i < n;
            this.#afterContent();
          }
          break;
        }
        case 'padding': {
          const take = Math.min(this.#paddingLeft, n - i);
          this.#paddingLeft -= take;
          i += take;
          if (this.#paddingLeft === 0) {
            this.#trailing = i < n;
            this.#recordDone();
          }
          break;
        }
        case 'ended':
          return this.#fail('bytes after FCGI_END_REQUEST');
        case 'failed':
          return this.#error;
      }
    }
    return this.#error;
  }

  /** The owner gave up on this stream (e.g. the sink failed): push() reads nothing more. */
  stop(reason: ReadError): void {
    if (this.#state !== 'failed') this.#fail(reason);
  }

  #fail(reason: ReadError): ReadError {
    this.#state = 'failed';
    this.#error = reason;
    return reason;
  }

  /** END_REQUEST content bytes (§5.5: appStatus, 4 bytes big-endian, then protocolStatus), however split. */
  #endBytes(part: Buffer): void {
    for (let j = 0; j < part.length; j++, this.#endHave++) {
      if (this.#endHave < 4) this.#appStatus = this.#appStatus * 256 + part[j];
      else if (this.#endHave === 4) this.#protocolStatus = part[j];
    }
  }

  /** The record header at `h[at..at+8]`. */
  #onHeader(h: Buffer, at: number): ReadError | null {
    if (h[at] !== FCGI_VERSION_1) return `record version ${h[at]} (expected 1)`;
    const type = h[at + 1];
    const id = (h[at + 2] << 8) | h[at + 3];
    const length = (h[at + 4] << 8) | h[at + 5];
    if (type !== FCGI_STDOUT && type !== FCGI_STDERR && type !== FCGI_END_REQUEST) return `unexpected record type ${type}`;
    if (id !== this.#requestId) return `record for request ${id} (expected ${this.#requestId})`;
    if (type === FCGI_END_REQUEST && length !== 8) return `FCGI_END_REQUEST of ${length} bytes (expected 8)`;
    this.#type = type;
    this.#contentLeft = length;
    this.#paddingLeft = h[at + 6];
    this.#endHave = 0;
    this.#appStatus = 0;
    this.#protocolStatus = 0;
    if (length > 0) this.#state = 'content';
    else this.#afterContent();
    return null;
  }

  #afterContent(): void {
    if (this.#paddingLeft > 0) this.#state = 'padding';
    else this.#recordDone();
  }

  #recordDone(): void {
    if (this.#type === FCGI_END_REQUEST) {
      this.#state = 'ended';
      this.#sink.end(this.#appStatus, this.#protocolStatus, this.#trailing);
      return;
    }
    this.#state = 'header';
  }
}

/** A readable name for an END_REQUEST protocolStatus (for error messages). */
export function protocolStatusName(status: number): string {
  return PROTOCOL_STATUS_NAMES[status] ?? `protocol status ${status}`;
}

/**
 * Reads one complete management reply (GET_VALUES_RESULT or UNKNOWN_TYPE, request id 0) from the start of
 * `buf`: 'more' until the record is whole; 'ok' with the pairs for GET_VALUES_RESULT; an error otherwise.
 */
export function readManagementReply(buf: Buffer): { kind: 'more' } | { kind: 'ok'; values: Map<string, string> } | { kind: 'error'; reason: string } {
  if (buf.length < FCGI_HEADER_LEN) return { kind: 'more' };
  if (buf[0] !== FCGI_VERSION_1) return { kind: 'error', reason: `record version ${buf[0]} (expected 1)` };
  const type = buf[1];
  const id = buf.readUInt16BE(2);
  const length = buf.readUInt16BE(4);
  if (id !== 0) return { kind: 'error', reason: `management reply for request ${id}` };
  if (type !== FCGI_GET_VALUES_RESULT) return { kind: 'error', reason: type === FCGI_UNKNOWN_TYPE ? 'FCGI_UNKNOWN_TYPE' : `unexpected record type ${type}` };
  if (buf.length < FCGI_HEADER_LEN + length) return { kind: 'more' };
  const pairs = decodePairs(buf.subarray(FCGI_HEADER_LEN, FCGI_HEADER_LEN + length));
  return pairs === null ? { kind: 'error', reason: 'malformed name-value pairs' } : { kind: 'ok', values: pairs };
}

/** §3.4 name-value pairs of one record's content; null when a length runs past the end. */
export function decodePairs(content: Buffer): Map<string, string> | null {
  const out = new Map<string, string>();
  let i = 0;
  const readLen = (): number => {
    if (i >= content.length) return -1;
    if (content[i] < 128) return content[i++];
    if (i + 4 > content.length) return -1;
    const v = content.readUInt32BE(i) & 0x7fffffff;
    i += 4;
    return v;
  };
  while (i < content.length) {
    const nl = readLen();
    const vl = nl < 0 ? -1 : readLen();
    if (vl < 0 || i + nl + vl > content.length) return null;
    const name = content.toString('latin1', i, i + nl);
    i += nl;
    out.set(name, content.toString('latin1', i, i + vl));
    i += vl;
  }
  return out;
}
