// Portico's own HTTP/1.x head parser: request and response heads, strict (RFC 9112), incremental and bounded.
// Pure functions over bytes: no sockets, no allocation beyond the result, never throws on input (STYLE.md 7).
// Also the body-framing scanner for chunked bodies: it finds where a message ends, it does not decode.
import type { ErrorCode } from '../errors.js';

export interface HeadLimits {
  /** Max bytes of request line + headers + final CRLF (-> CLIENT_HEADERS_TOO_LARGE / 431). */
  headerSize: number;
  /** Max bytes of the request-target (-> CLIENT_URI_TOO_LONG / 414). */
  uriSize: number;
  /** Max number of header fields (-> CLIENT_HEADERS_TOO_LARGE / 431). */
  headers: number;
}

/** Message framing after the head (RFC 9112 §6.3). */
export type BodyKind = 'none' | 'length' | 'chunked' | 'close';

interface HeadCommon {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor: 0 | 1;
  /** Flat list: name, value, name, value... names as received (case kept), values trimmed of OWS. */
  headers: string[];
  /** Content-Length value, or -1 when absent. */
  contentLength: number;
  /** Transfer-Encoding is exactly chunked as the final coding. */
  chunked: boolean;
  bodyKind: BodyKind;
  /** Persistent connection per version and Connection header (RFC 9112 §9.3). */
  keepAlive: boolean;
  /** Lower-cased tokens of the Connection header(s) (hop-by-hop names to drop, RFC 9110 §7.6.1). */
  connection: string[];
  /** Lower-cased Upgrade header value when Connection lists "upgrade", else undefined. */
  upgrade: string | undefined;
}

export interface RequestHead extends HeadCommon {
  method: string;
  /** Raw request-target as received. */
  target: string;
  /** Path part of an origin-form target (before '?'); for absolute-form, the path of the URL. */
  path: string;
  /** Query including the leading '?', or ''. */
  query: string;
  /** Host header value lower-cased with any port removed; undefined when absent (then HTTP/1.1 -> error). */
  host: string | undefined;
  /** Host header exactly as received (for $host / X-Forwarded-Host). */
  hostRaw: string | undefined;
  /** Expect: 100-continue was sent. */
  expectContinue: boolean;
}

export interface ResponseHead extends HeadCommon {
  status: number;
  reason: string;
}

export type ParseResult<H> =
  | { kind: 'more' }
  | { kind: 'done'; head: H; /** bytes of buf the head used, final CRLF included */ used: number }
  | { kind: 'error'; code: ErrorCode; reason: string };

/**
 * Parses a request head at the start of `buf`. 'more' when the head is incomplete and still within limits.
 * Errors: CLIENT_BAD_REQUEST (ambiguity or syntax), CLIENT_HEADERS_TOO_LARGE, CLIENT_URI_TOO_LONG,
 * CLIENT_UNSUPPORTED_VERSION (HTTP/2 preface, HTTP/2.0, HTTP/1.2+...).
 */
export declare function parseRequestHead(buf: Buffer, limits: HeadLimits): ParseResult<RequestHead>;

/**
 * Parses a response head. `requestMethod` decides bodyKind (HEAD -> none; 1xx/204/304 -> none; RFC 9112 §6.3).
 * Errors use UPSTREAM_BAD_RESPONSE.
 */
export declare function parseResponseHead(buf: Buffer, limits: HeadLimits, requestMethod: string): ParseResult<ResponseHead>;

/**
 * Tracks a chunked body (RFC 9112 §7.1) as it streams, to find its end without decoding it.
 * Strict: hex sizes only (no sign, no 0x, bounded length), CRLF only, chunk-ext and trailers bounded.
 */
export declare class ChunkedScanner {
  constructor(maxLineBytes?: number);
  /** True once the last-chunk, trailers and final CRLF were consumed. */
  readonly done: boolean;
  /**
   * Consumes bytes from buf[start..]. Returns how many bytes belong to the body (stops at its end), or -1
   * when the framing is invalid (then `error` says why).
   */
  push(buf: Buffer, start: number): number;
  readonly error: string | undefined;
}
