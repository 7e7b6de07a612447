// The request-smuggling corpus: raw client bytes, and what a correct HTTP/1.1 reading says the client sent as
// its own requests. smuggling.test.ts sends each through a real Portico to real backends and checks the backend
// parsed exactly those requests (never one hidden in a body or a header). Data only: no sockets here.

export interface SmugglingCase {
  name: string;
  /** Raw bytes (latin1) the client writes at once on a fresh connection. */
  send: string;
  /** The client's own requests, in order, as "METHOD /path" (what a strict parser reads in `send`). */
  own: string[];
  /** How many of `own` are answered normally (default: all of them). */
  answered?: number;
  /** Status Portico refuses with after the answered requests; the connection then closes. */
  refused?: number;
  /** Written once the answers to `send` arrived, on the same connection (e.g. after an upgrade was refused). */
  after?: { send: string; own: string[] };
}

const H = 'Host: h.test\r\n';
/** A complete request hidden in a body or behind a framing trick: a backend must never see /SMUGGLED. */
const S = `GET /SMUGGLED HTTP/1.1\r\n${H}\r\n`;
const S2 = `GET /SMUGGLED HTTP/1.1\r\n${H}X-Ignore: `; // a prefix that would swallow the next client's request
const WS = `Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n`;

const post = (headers: string, body: string, target = '/own'): string => `POST ${target} HTTP/1.1\r\n${H}${headers}\r\n${body}`;
const chunk = (data: string): string => `${data.length.toString(16)}\r\n${data}\r\n`;
const chunkedS = `${chunk(S)}0\r\n\r\n`;
/** Refused before anything reaches a backend (or with only the client's own request head cut short). */
const refused = (name: string, send: string, own = ['POST /own']): SmugglingCase => ({ name, send, own, answered: 0, refused: 400 });
/** Accepted: the backend sees exactly the client's own requests. */
const accepted = (name: string, send: string, own = ['POST /own']): SmugglingCase => ({ name, send, own });

export const CORPUS: readonly SmugglingCase[] = [
  // ---- CL.TE and TE.CL ----------------------------------------------------------------------------------
  refused('CL.TE: Content-Length and Transfer-Encoding', post(`Content-Length: ${5 + S.length}\r\nTransfer-Encoding: chunked\r\n`, `0\r\n\r\n${S}`)),
  refused('TE.CL: Transfer-Encoding first, then Content-Length', post(`Transfer-Encoding: chunked\r\nContent-Length: 4\r\n`, chunkedS)),
  refused('CL.TE with a lower-case, repeated TE', post(`Content-Length: 6\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n`, `0\r\n\r\n${S}`)),
  refused('CL.TE in HTTP/1.0', `POST /own HTTP/1.0\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${S}`),
  refused('Transfer-Encoding in HTTP/1.0', `POST /own HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n${chunkedS}`),
  // ---- TE.TE obfuscations -------------------------------------------------------------------------------
  refused('TE: xchunked', post('Transfer-Encoding: xchunked\r\n', chunkedS)),
  refused('TE: chunked, identity', post('Transfer-Encoding: chunked, identity\r\n', chunkedS)),
  refused('TE: identity, chunked', post('Transfer-Encoding: identity, chunked\r\n', chunkedS)),
  refused('TE: gzip, chunked (codings Portico does not re-frame)', post('Transfer-Encoding: gzip, chunked\r\n', chunkedS)),
  refused('TE: chunked twice in one field', post('Transfer-Encoding: chunked, chunked\r\n', chunkedS)),
  refused('TE: chunked, then a second TE field with another coding', post('Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n', chunkedS)),
  refused('TE: "chunked" quoted', post('Transfer-Encoding: "chunked"\r\n', chunkedS)),
  refused('TE: chunk', post('Transfer-Encoding: chunk\r\n', chunkedS)),
  refused('TE: chunked; with a parameter-like tail', post('Transfer-Encoding: chunked;q=1\r\n', chunkedS)),
  refused('TE: empty value', post('Transfer-Encoding: \r\n', chunkedS)),
  refused('TE name followed by a space before the colon', post('Transfer-Encoding : chunked\r\n', chunkedS)),
  refused('TE name followed by a tab before the colon', post('Transfer-Encoding\t: chunked\r\n', chunkedS)),
  refused('TE with a vertical tab before the value', post('Transfer-Encoding: \x0bchunked\r\n', chunkedS)),
  refused('TE with a form feed after the value', post('Transfer-Encoding: chunked\x0c\r\n', chunkedS)),
  refused('TE value with NUL', post('Transfer-Encoding: chunked\x00\r\n', chunkedS)),
  refused('TE name with NUL', post('Transfer-Encoding\x00: chunked\r\n', chunkedS)),
  refused('TE sent as an obs-fold continuation', post('X-Pad: 1\r\n Transfer-Encoding: chunked\r\n', chunkedS)),
  refused('TE value folded onto the next line', post('Transfer-Encoding:\r\n chunked\r\n', chunkedS)),
  refused('TE after a bare CR inside another field', post('X-Pad: 1\rTransfer-Encoding: chunked\r\n', chunkedS)),
  accepted('TE with extra OWS around the value is plain chunked', post('Transfer-Encoding:  \tchunked \t\r\n', chunkedS)),
  accepted('TE: CHUNKED (coding names are case-insensitive)', post('Transfer-Encoding: CHUNKED\r\n', chunkedS)),
  accepted('Transfer_Encoding (underscore) is another field; Content-Length frames the body', post(`Transfer_Encoding: chunked\r\nContent-Length: ${S.length}\r\n`, S)),
  // ---- Content-Length variants --------------------------------------------------------------------------
  refused('duplicate Content-Length, same value', post(`Content-Length: ${S.length}\r\nContent-Length: ${S.length}\r\n`, S)),
  refused('duplicate Content-Length, different values', post(`Content-Length: 0\r\nContent-Length: ${S.length}\r\n`, S)),
  refused('Content-Length list in one field', post(`Content-Length: ${S.length}, ${S.length}\r\n`, S)),
  refused('signed Content-Length +N', post(`Content-Length: +${S.length}\r\n`, S)),
  refused('negative Content-Length', post('Content-Length: -1\r\n', S)),
  refused('hex Content-Length', post(`Content-Length: 0x${S.length.toString(16)}\r\n`, S)),
  refused('Content-Length with an inner space', post('Content-Length: 1 0\r\n', S)),
  refused('Content-Length with an underscore', post('Content-Length: 1_0\r\n', S)),
  refused('Content-Length beyond 2^53', post('Content-Length: 99999999999999999999\r\n', S)),
  refused('empty Content-Length', post('Content-Length: \r\n', S)),
  refused('Content-Length name with a space before the colon', post(`Content-Length : ${S.length}\r\n`, S)),
  refused('Content-Length as an obs-fold continuation', post(`X-Pad: 1\r\n Content-Length: ${S.length}\r\n`, S)),
  accepted('Content-Length padded with OWS', post(`Content-Length:   ${S.length}\t \r\n`, S)),
  accepted('Content-Length with leading zeros', post(`Content-Length: 000${S.length}\r\n`, S)),
  accepted('GET with a Content-Length body that looks like a request', `GET /own HTTP/1.1\r\n${H}Content-Length: ${S.length}\r\n\r\n${S}`, ['GET /own']),
  // ---- line endings, control bytes, request line ----------------------------------------------------------
  refused('bare LF line endings', `GET /own HTTP/1.1\n${H.replace('\r\n', '\n')}\n`, ['GET /own']),
  refused('bare LF inside the header section', post(`X-Pad: 1\nTransfer-Encoding: chunked\r\n`, chunkedS)),
  refused('bare CR ending a field line', post(`X-Pad: 1\r\rContent-Length: 3\r\n`, 'abc')),
  refused('bare CR in the request line', `GET /own\rHTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  refused('NUL in a header value', post(`X-Pad: a\x00b\r\nContent-Length: ${S.length}\r\n`, S)),
  refused('DEL in a header value', post(`X-Pad: a\x7fb\r\nContent-Length: ${S.length}\r\n`, S)),
  refused('space inside a field name', post(`Content Length: ${S.length}\r\n`, S)),
  refused('NUL in the request target', `GET /own\x00/x HTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  refused('two spaces in the request line', `GET  /own HTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  refused('lower-case version', `GET /own http/1.1\r\n${H}\r\n`, ['GET /own']),
  refused('request line with a fourth part', `GET /own HTTP/1.1 x\r\n${H}\r\n`, ['GET /own']),
  refused('fragment in the target', `GET /own#x HTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  refused('invalid character in the method', `G@T /own HTTP/1.1\r\n${H}\r\n`, ['G@T /own']),
  refused('HTTP/1.1 without Host', `GET /own HTTP/1.1\r\n\r\n`, ['GET /own']),
  refused('two Host fields', `GET /own HTTP/1.1\r\n${H}Host: other.test\r\n\r\n`, ['GET /own']),
  refused('Host with a path in it', `GET /own HTTP/1.1\r\nHost: h.test/SMUGGLED\r\n\r\n`, ['GET /own']),
  { name: 'HTTP/2.0 request line', send: `GET /own HTTP/2.0\r\n${H}\r\n`, own: ['GET /own'], answered: 0, refused: 505 },
  accepted('obs-text (0x80-0xff) in a header value is allowed', `GET /own HTTP/1.1\r\n${H}X-Pad: caf\xe9\r\n\r\n`, ['GET /own']),
  accepted('empty lines before the request line', `\r\n\r\nGET /own HTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  // ---- chunked framing ------------------------------------------------------------------------------------
  refused('chunk-size overflow (18 hex digits)', post('Transfer-Encoding: chunked\r\n', `ffffffffffffffffff\r\n${S}\r\n0\r\n\r\n`)),
  refused('chunk-size beyond 2^53 (15 hex digits)', post('Transfer-Encoding: chunked\r\n', `fffffffffffffff\r\n${S}\r\n0\r\n\r\n`)),
  refused('negative chunk-size', post('Transfer-Encoding: chunked\r\n', `-1\r\n${S}\r\n0\r\n\r\n`)),
  refused('0x chunk-size', post('Transfer-Encoding: chunked\r\n', `0x${S.length.toString(16)}\r\n${S}\r\n0\r\n\r\n`)),
  refused('chunk-size with a leading space', post('Transfer-Encoding: chunked\r\n', ` ${S.length.toString(16)}\r\n${S}\r\n0\r\n\r\n`)),
  refused('chunk-size line ended by a bare LF', post('Transfer-Encoding: chunked\r\n', `${S.length.toString(16)}\n${S}\r\n0\r\n\r\n`)),
  refused('chunk data longer than its size', post('Transfer-Encoding: chunked\r\n', `3\r\n${S}\r\n0\r\n\r\n`)),
  refused('chunk data not followed by CRLF', post('Transfer-Encoding: chunked\r\n', `3\r\nabcX0\r\n\r\n${S}`)),
  refused('chunk-ext with a bare LF', post('Transfer-Encoding: chunked\r\n', `3;a\nabc\r\n0\r\n\r\n${S}`)),
  refused('chunk-ext quoted value with a CR', post('Transfer-Encoding: chunked\r\n', `3;a="x\ry"\r\nabc\r\n0\r\n\r\n${S}`)),
  refused('chunk-ext with an invalid name', post('Transfer-Encoding: chunked\r\n', `3;@\r\nabc\r\n0\r\n\r\n${S}`)),
  refused('chunk-size line over the 4 KiB bound', post('Transfer-Encoding: chunked\r\n', `3;a=${'x'.repeat(5000)}\r\nabc\r\n0\r\n\r\n`)),
  refused('last chunk ended by a bare LF', post('Transfer-Encoding: chunked\r\n', `0\n\r\n${S}`)),
  refused('trailer field folded (obs-fold)', post('Transfer-Encoding: chunked\r\n', `0\r\nX-T: 1\r\n folded\r\n\r\n${S}`)),
  refused('trailer ended by a bare LF', post('Transfer-Encoding: chunked\r\n', `0\r\nX-T: 1\n\r\n${S}`)),
  refused('trailer value with NUL', post('Transfer-Encoding: chunked\r\n', `0\r\nX-T: a\x00\r\n\r\n${S}`)),
  refused('trailer name with a space before the colon', post('Transfer-Encoding: chunked\r\n', `0\r\nX-T : 1\r\n\r\n${S}`)),
  accepted('chunk extensions, token and quoted', post('Transfer-Encoding: chunked\r\n', `${S.length.toString(16)};a=b;c="d;e"\r\n${S}\r\n0;last\r\n\r\n`)),
  refused('a trailer naming Content-Length (RFC 9110 §6.5.1)', post('Transfer-Encoding: chunked\r\n', `${chunk(S)}0\r\nX-T: 1\r\ncontent-length: 5\r\n\r\n`)),
  refused('a trailer naming Transfer-Encoding', post('Transfer-Encoding: chunked\r\n', `${chunk(S)}0\r\nTransfer-Encoding: chunked\r\n\r\n`)),
  refused('a trailer naming Host', post('Transfer-Encoding: chunked\r\n', `${chunk(S)}0\r\nHOST: other.test\r\n\r\n`)),
  accepted('trailers with names close to the framing ones', post('Transfer-Encoding: chunked\r\n', `${chunk(S)}0\r\nContent-Lengths: 5\r\nHos: x\r\nX-Content-Length: 5\r\n\r\n`)),
  accepted('upper-case hex chunk sizes, several chunks', post('Transfer-Encoding: chunked\r\n', `B\r\nabcdefghijk\r\n${chunk(S).toUpperCase().replace(S.toUpperCase(), S)}0\r\n\r\n`)),
  // ---- Connection-nominated fields (issue 8 item 1) ----------------------------------------------------------
  accepted('Connection: Content-Length keeps the framing', post(`Content-Length: ${S.length}\r\nConnection: Content-Length\r\n`, S)),
  accepted('Connection: keep-alive, content-length keeps the framing', post(`Content-Length: ${S.length}\r\nConnection: keep-alive, content-length\r\n`, S)),
  accepted('Connection: Transfer-Encoding keeps the chunked framing', post('Transfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n', chunkedS)),
  accepted('Connection: Transfer-Encoding with a body that would be read as the next request', post('Transfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n', `${chunk(S2)}0\r\n\r\n`)),
  accepted('Connection: Host keeps Host', `GET /own HTTP/1.1\r\n${H}Connection: Host\r\n\r\n`, ['GET /own']),
  accepted('Connection: Host, Content-Length, Transfer-Encoding in two fields', post(`Content-Length: ${S.length}\r\nConnection: host\r\nConnection: Content-Length, Transfer-Encoding\r\n`, S)),
  accepted('HTTP/1.0 keep-alive with Connection: content-length', `POST /own HTTP/1.0\r\n${H}Connection: keep-alive, Content-Length\r\nContent-Length: ${S.length}\r\n\r\n${S}`),
  // ---- absolute-form targets -------------------------------------------------------------------------------
  accepted('absolute-form target with a matching Host', `GET http://h.test/own HTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  accepted('absolute-form https with the default port', `GET https://h.test:443/own?q=1 HTTP/1.1\r\n${H}\r\n`, ['GET /own?q=1']),
  refused('absolute-form authority differs from Host', `GET http://other.test/own HTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  refused('absolute-form with userinfo', `GET http://h.test@other.test/own HTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  refused('absolute-form with another scheme', `GET ftp://h.test/own HTTP/1.1\r\n${H}\r\n`, ['GET /own']),
  // ---- pipelining, upgrades, HTTP/1.0 -------------------------------------------------------------------------
  accepted('pipelined requests after a chunked body', post('Transfer-Encoding: chunked\r\n', `${chunk('abc')}0\r\n\r\nGET /next HTTP/1.1\r\n${H}\r\n`), ['POST /own', 'GET /next']),
  accepted('three pipelined requests with bodies', `${post('Content-Length: 3\r\n', 'abc')}${post(`Content-Length: ${S.length}\r\n`, S, '/own2')}GET /own3 HTTP/1.1\r\n${H}\r\n`, ['POST /own', 'POST /own2', 'GET /own3']),
  accepted('pipelined request after an Upgrade request the backend does not take', `GET /ws HTTP/1.1\r\n${H}${WS}\r\nGET /after HTTP/1.1\r\n${H}\r\n`, ['GET /ws', 'GET /after']),
  {
    name: 'request after a refused upgrade, on the same connection',
    send: `GET /ws HTTP/1.1\r\n${H}${WS}\r\n`,
    own: ['GET /ws'],
    after: { send: post(`Content-Length: ${S.length}\r\n`, S), own: ['POST /own'] },
  },
  accepted('Upgrade request with a body is not a tunnel; its body stays a body', `GET /ws HTTP/1.1\r\n${H}${WS}Content-Length: ${S.length}\r\n\r\n${S}`, ['GET /ws']),
  accepted('Upgrade in HTTP/1.0 is ignored', `GET /ws HTTP/1.0\r\n${H}${WS}\r\n`, ['GET /ws']),
  accepted('HTTP/1.0 without Host', `GET /own HTTP/1.0\r\n\r\n`, ['GET /own']),
  accepted('Expect: 100-continue with a body', post(`Expect: 100-continue\r\nContent-Length: ${S.length}\r\n`, S)),
];
