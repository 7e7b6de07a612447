// The CGI response head a FastCGI application writes at the start of its STDOUT (RFC 3875 §6): header fields,
// `Status: NNN reason` instead of a status line, `Location` without Status meaning 302, ended by an empty line.
// Pure, bounded and strict like the HTTP head parser: a malformed head is a reason (-> 502), never a throw.

export interface CgiHead {
  status: number;
  reason: string;
  /** Flat list: name, value, ... (names as received; Status and framing fields are not in it). */
  headers: string[];
  /** The application's Content-Length, or -1 when it sent none. */
  contentLength: number;
}

export interface CgiHeadLimits {
  /** Bytes of the whole head, empty line included. */
  headerSize: number;
  /** Header fields. */
  headers: number;
}

export type CgiHeadResult = { kind: 'more' } | { kind: 'done'; head: CgiHead; used: number } | { kind: 'error'; reason: string };

/** Fields Portico writes itself from its own framing (RFC 9110 §7.6.1 hop-by-hop and framing fields). */
const DROPPED: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);

const REASONS: Record<number, string> = {
  200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 206: 'Partial Content', 301: 'Moved Permanently',
  302: 'Found', 303: 'See Other', 304: 'Not Modified', 307: 'Temporary Redirect', 308: 'Permanent Redirect',
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  409: 'Conflict', 410: 'Gone', 422: 'Unprocessable Content', 429: 'Too Many Requests', 500: 'Internal Server Error',
  501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

/** RFC 9110 §5.6.2 tchar. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

/** The end of the head: index just past the empty line (LF LF or LF CR LF), or -1. */
function headEnd(buf: Buffer, limit: number): number {
  const n = Math.min(buf.length, limit);
  // an empty head (the body starts at once after an empty line) is allowed: CGI needs at least one field, PHP always sends one
  if (n >= 1 && buf[0] === 0x0a) return 1;
  if (n >= 2 && buf[0] === 0x0d && buf[1] === 0x0a) return 2;
  let from = 0;
  for (;;) {
    const lf = buf.indexOf(0x0a, from);
    if (lf < 0 || lf + 1 >= n) return -1;
    if (buf[lf + 1] === 0x0a) return lf + 2;
    if (buf[lf + 1] === 0x0d && lf + 2 < n && buf[lf + 2] === 0x0a) return lf + 3;
    from = lf + 1;
  }
}

/** Parses the CGI head at the start of `buf` (all STDOUT bytes so far). */
export function parseCgiHead(buf: Buffer, limits: CgiHeadLimits): CgiHeadResult {
  const end = headEnd(buf, limits.headerSize);
  if (end < 0) return buf.length >= limits.headerSize ? { kind: 'error', reason: `response head over ${limits.headerSize} bytes` } : { kind: 'more' };
  const headers: string[] = [];
  let status = -1;
  let reason = '';
  let contentLength = -1;
  let location = false;
  let fields = 0;
  let i = 0;
  for (;;) {
    let lf = buf.indexOf(0x0a, i);
    const lineEnd = lf > i && buf[lf - 1] === 0x0d ? lf - 1 : lf;
    if (lineEnd === i) break; // the empty line
    if (++fields > limits.headers) return { kind: 'error', reason: `more than ${limits.headers} response header fields` };
    let c = i;
    while (c < lineEnd && buf[c] < 128 && TCHAR[buf[c]] === 1) c++;
    if (c === i || c >= lineEnd || buf[c] !== 0x3a) return { kind: 'error', reason: 'malformed header line in the application response' };
    const name = buf.toString('latin1', i, c);
    let vs = c + 1;
    let ve = lineEnd;
    while (vs < ve && (buf[vs] === 0x20 || buf[vs] === 0x09)) vs++;
    while (ve > vs && (buf[ve - 1] === 0x20 || buf[ve - 1] === 0x09)) ve--;
    for (let k = vs; k < ve; k++) {
      const b = buf[k];
      if ((b < 0x20 && b !== 0x09) || b === 0x7f) return { kind: 'error', reason: `control character in response header ${name}` };
    }
    const value = buf.toString('latin1', vs, ve);
    const lower = name.toLowerCase();
    i = lf + 1;
    lf = -1;
    if (lower === 'status') {
      const m = /^([1-5]\d\d)(?:[ \t]+(.*))?$/.exec(value);
      if (m === null || status !== -1) return { kind: 'error', reason: `invalid or repeated Status header ${JSON.stringify(value)}` };
      status = Number(m[1]);
      if (status < 200) return { kind: 'error', reason: `interim status ${status} as the final response` };
      reason = m[2] ?? '';
      continue;
    }
    if (lower === 'content-length') {
      if (!/^\d{1,15}$/.test(value) || (contentLength !== -1 && contentLength !== Number(value))) return { kind: 'error', reason: `invalid or conflicting Content-Length ${JSON.stringify(value)}` };
      contentLength = Number(value);
      continue;
    }
    if (DROPPED.has(lower)) continue;
    if (lower === 'location') location = true;
    headers.push(name, value);
  }
  if (status === -1) status = location ? 302 : 200; // RFC 3875 §6.2.3: a client redirect
  if (reason === '') reason = REASONS[status] ?? 'Unknown';
  return { kind: 'done', head: { status, reason, headers, contentLength }, used: end };
}
