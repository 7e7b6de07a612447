// One error type for the whole data path (what failed, whose side, may it be retried) and the one place
// where an error code becomes an HTTP status and a canned response. Nothing here touches sockets.

export const ERROR_CODES = [
  // client side
  'CLIENT_BAD_REQUEST', // malformed or ambiguous head -> 400
  'CLIENT_URI_TOO_LONG', // -> 414
  'CLIENT_HEADERS_TOO_LARGE', // -> 431
  'CLIENT_BODY_TOO_LARGE', // -> 413
  'CLIENT_HEAD_TIMEOUT', // head not complete in time -> 408
  'CLIENT_BODY_TIMEOUT', // body stalled -> 408
  'CLIENT_CLOSED', // client went away before the response -> 499 (logs only)
  'CLIENT_TLS_HANDSHAKE', // handshake failed or timed out (logs only)
  'CLIENT_UNSUPPORTED_VERSION', // HTTP/2 preface or HTTP/x.y we do not speak -> 505
  'CLIENT_METHOD_NOT_ALLOWED', // CONNECT and other methods a reverse proxy refuses -> 405
  'CLIENT_RATE_LIMITED', // a route's rate limit refused the request -> 429 with Retry-After
  'CLIENT_SEND_TIMEOUT', // the client took no bytes of an answer for the route's send_timeout (logs only: cut)
  'CLIENT_LENGTH_REQUIRED', // a chunked body where the handler needs its length first (FastCGI CONTENT_LENGTH) -> 411
  // routing
  'ROUTE_NOT_FOUND', // -> 404
  // upstream side
  'UPSTREAM_UNAVAILABLE', // no available target in the pool, or its wait queue is full -> 503
  'UPSTREAM_QUEUE_TIMEOUT', // waited in the queue of a target at max_connections too long -> 503
  'UPSTREAM_TARGET_GONE', // the target left rotation (down, drained, removed) while a request waited for it: pick another, else 503
  'UPSTREAM_CONNECT_REFUSED', // -> 502 (retryable)
  'UPSTREAM_CONNECT_TIMEOUT', // -> 504 (retryable)
  'UPSTREAM_CONNECT_ERROR', // other connect failure -> 502 (retryable)
  'UPSTREAM_TLS', // TLS to the target failed: certificate, name or protocol -> 502 (retryable)
  'UPSTREAM_HEADERS_TIMEOUT', // no response head in time -> 504
  'UPSTREAM_IDLE_TIMEOUT', // body stalled -> 504 (or cut when headers were already sent)
  'UPSTREAM_BAD_RESPONSE', // malformed/ambiguous response head or body framing -> 502
  'UPSTREAM_RESET', // upstream closed or reset mid-exchange -> 502
  'UPSTREAM_HANDSHAKE_INVALID', // 101 with a wrong Sec-WebSocket-Accept -> 502
  // tunnel
  'TUNNEL_IDLE_TIMEOUT',
  'TUNNEL_LIFETIME',
  // process
  'SHUTDOWN', // Portico is stopping -> 503
  'FD_LIMIT', // this process is out of file descriptors (EMFILE/ENFILE) -> 503; never the target's fault
  'STATIC_FILES_BUSY', // static routes hold limits.static_open_files open files in this worker -> 503
  'BODY_BUFFER_FULL', // buffering a chunked body would pass body_buffer.disk_max in this worker -> 503
  'BODY_BUFFER_IO', // the temp file of a buffered body could not be opened, written or read (ENOSPC, EACCES...) -> 500
  'BODY_BUFFER_TIMEOUT', // an open, write or read of that temp file took over body_buffer.disk_timeout (stuck disk) -> 500
  'INTERNAL', // -> 500
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];
export type ErrorSide = 'client' | 'upstream' | 'internal';

export class ProxyError extends Error {
  readonly code: ErrorCode;
  readonly side: ErrorSide;
  /** True only when nothing reached the upstream: the request may be sent to another target. */
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, opts: { side?: ErrorSide; retryable?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ProxyError';
    this.code = code;
    this.side = opts.side ?? sideOf(code);
    this.retryable = opts.retryable ?? false;
  }
}

function sideOf(code: ErrorCode): ErrorSide {
  if (code.startsWith('CLIENT_')) return 'client';
  if (code.startsWith('UPSTREAM_')) return 'upstream';
  return 'internal';
}

/** The status a client sees for an error (or that logs record: 499 never goes on the wire). */
export function statusOf(code: ErrorCode): number {
  switch (code) {
    case 'CLIENT_BAD_REQUEST':
      return 400;
    case 'CLIENT_URI_TOO_LONG':
      return 414;
    case 'CLIENT_HEADERS_TOO_LARGE':
      return 431;
    case 'CLIENT_BODY_TOO_LARGE':
      return 413;
    case 'CLIENT_HEAD_TIMEOUT':
    case 'CLIENT_BODY_TIMEOUT':
    case 'CLIENT_SEND_TIMEOUT':
      return 408;
    case 'CLIENT_CLOSED':
    case 'CLIENT_TLS_HANDSHAKE':
      return 499;
    case 'CLIENT_UNSUPPORTED_VERSION':
      return 505;
    case 'CLIENT_METHOD_NOT_ALLOWED':
      return 405;
    case 'CLIENT_RATE_LIMITED':
      return 429;
    case 'CLIENT_LENGTH_REQUIRED':
      return 411;
    case 'ROUTE_NOT_FOUND':
      return 404;
    case 'UPSTREAM_UNAVAILABLE':
    case 'UPSTREAM_QUEUE_TIMEOUT':
    case 'UPSTREAM_TARGET_GONE':
    case 'SHUTDOWN':
    case 'FD_LIMIT':
    case 'STATIC_FILES_BUSY':
    case 'BODY_BUFFER_FULL':
      return 503;
    case 'UPSTREAM_CONNECT_TIMEOUT':
    case 'UPSTREAM_HEADERS_TIMEOUT':
    case 'UPSTREAM_IDLE_TIMEOUT':
    case 'TUNNEL_IDLE_TIMEOUT':
    case 'TUNNEL_LIFETIME':
      return 504;
    case 'INTERNAL':
    case 'BODY_BUFFER_IO':
    case 'BODY_BUFFER_TIMEOUT':
      return 500;
    default:
      return 502; // every other upstream failure (Caddy statusError: 502 by default)
  }
}

const REASONS: Record<number, string> = {
  400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 408: 'Request Timeout', 411: 'Length Required',
  413: 'Content Too Large', 414: 'URI Too Long', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large',
  500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

const cannedCache = new Map<ErrorCode, Buffer>();

/**
 * The canned response for an error: written only while nothing of a response reached the client, and the
 * connection is closed after it (STYLE.md 2). Built once per code.
 */
export function cannedResponse(code: ErrorCode): Buffer {
  let buf = cannedCache.get(code);
  if (buf === undefined) {
    const status = statusOf(code) === 499 ? 400 : statusOf(code);
    const reason = REASONS[status] ?? 'Error';
    const body = `${status} ${reason}\n`;
    const extra = status === 503 ? 'Retry-After: 1\r\n' : '';
    buf = Buffer.from(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\n${extra}Connection: close\r\nServer: portico\r\n\r\n${body}`,
      'latin1',
    );
    cannedCache.set(code, buf);
  }
  return buf;
}

/** Retry-After values whose 429 is kept built (a minute covers every rate of 1/m and faster). */
const RATE_LIMITED_CACHED = 60;
const rateLimitedCache: Array<Buffer | undefined> = [];

/**
 * The 429 of a rate limit, with `Retry-After: seconds` (RFC 9110 §10.2.3) computed from the key's bucket;
 * like every canned response it closes the connection.
 */
export function rateLimitedResponse(seconds: number): Buffer {
  const s = Math.max(1, Math.ceil(seconds));
  const cached = s <= RATE_LIMITED_CACHED ? rateLimitedCache[s] : undefined;
  if (cached !== undefined) return cached;
  const body = '429 Too Many Requests\n';
  const buf = Buffer.from(
    `HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nRetry-After: ${s}\r\nConnection: close\r\nServer: portico\r\n\r\n${body}`,
    'latin1',
  );
  if (s <= RATE_LIMITED_CACHED) rateLimitedCache[s] = buf;
  return buf;
}

/**
 * A canned response with extra header lines ("Name: value\r\n"...) after its status line: a route's CORS
 * headers, so that a browser shows the real status of an error instead of a CORS failure. Built per use (rare).
 */
export function withFields(response: Buffer, lines: string): Buffer {
  if (lines === '') return response;
  const eol = response.indexOf('\r\n') + 2;
  return Buffer.concat([response.subarray(0, eol), Buffer.from(lines, 'latin1'), response.subarray(eol)]);
}

/** Maps a socket-level error of an upstream connect to a ProxyError (nothing was sent: retryable). */
export function connectError(err: NodeJS.ErrnoException): ProxyError {
  // Out of descriptors is Portico's own shortage: another target would fail the same way, and the target is fine.
  if (err.code === 'EMFILE' || err.code === 'ENFILE') return new ProxyError('FD_LIMIT', `upstream connect failed: ${err.code} (out of file descriptors)`, { side: 'internal', cause: err });
  const code: ErrorCode = err.code === 'ECONNREFUSED' ? 'UPSTREAM_CONNECT_REFUSED' : err.code === 'ETIMEDOUT' ? 'UPSTREAM_CONNECT_TIMEOUT' : 'UPSTREAM_CONNECT_ERROR';
  return new ProxyError(code, `upstream connect failed: ${err.code ?? err.message}`, { retryable: true, cause: err });
}
