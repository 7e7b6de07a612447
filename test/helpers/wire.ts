// Byte-level HTTP/1.1 client pieces for e2e tests that must see exactly what went over the wire (pipelining,
// responses without bodies, canned errors, a 101 that must never arrive). A strict response reader over one
// socket; it is a test tool, not a general client: it throws on anything it does not expect.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { TEST_CERT } from './portico.js';

export interface WireResponse {
  status: number;
  reason: string;
  /** Lower-cased names; repeated fields joined with ", ". */
  headers: Record<string, string>;
  body: Buffer;
  /** Bytes of head and body as received (chunk framing included). */
  raw: Buffer;
}

let testCa: Buffer | undefined;
export function testCaCert(): Buffer {
  testCa ??= readFileSync(TEST_CERT);
  return testCa;
}

/** A TLS connection to Portico on 127.0.0.1:port, SNI localhost, trusting only the test certificate. */
export function connectTls(t: TestContext, port: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: testCaCert(), ALPNProtocols: ['http/1.1'] });
    t.after(() => {
      socket.destroy();
    });
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

export function connectPlain(t: TestContext, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    t.after(() => {
      socket.destroy();
    });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

/**
 * Reads responses one after the other from a socket. `next()` takes whether the matching request was HEAD
 * (no body whatever the headers say). `closed` resolves when the peer ended or the socket closed.
 */
export class ResponseReader {
  #buf: Buffer = Buffer.alloc(0);
  #ended = false;
  #wake: (() => void) | undefined;
  #error: Error | undefined;
  readonly closed: Promise<void>;

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
      this.#wake?.();
    });
    this.closed = new Promise((resolve) => {
      const done = (): void => {
        this.#ended = true;
        this.#wake?.();
        resolve();
      };
      socket.once('end', done);
      socket.once('close', done);
    });
    socket.on('error', (err) => {
      this.#error = err;
      this.#wake?.();
    });
  }

  /** Bytes received and not consumed by a parsed response. */
  get pending(): Buffer {
    return this.#buf;
  }

  get ended(): boolean {
    return this.#ended;
  }

  async next(opts: { head?: boolean; timeoutMs?: number } = {}): Promise<WireResponse> {
    const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
    for (;;) {
      const parsed = parseResponse(this.#buf, opts.head === true, this.#ended);
      if (parsed !== undefined) {
        this.#buf = this.#buf.subarray(parsed.used);
        return parsed.response;
      }
      if (this.#ended) throw new Error(`connection ended before a complete response; got ${JSON.stringify(this.#buf.toString('latin1').slice(0, 300))}`);
      if (this.#error !== undefined) throw this.#error;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no complete response in time; got ${JSON.stringify(this.#buf.toString('latin1').slice(0, 300))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          this.#wake = undefined;
          resolve();
        };
      });
    }
  }

  /** Waits until the peer closes (bounded); returns every byte received since the last parsed response. */
  async rest(timeoutMs = 10_000): Promise<Buffer> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('peer did not close in time')), timeoutMs);
    });
    try {
      await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
    return this.#buf;
  }
}

/** undefined = need more bytes. Throws on malformed input. */
function parseResponse(buf: Buffer, head: boolean, ended: boolean): { response: WireResponse; used: number } | undefined {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd === -1) return undefined;
  const lines = buf.subarray(0, headEnd).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]);
  if (m === null) throw new Error(`bad status line ${JSON.stringify(lines[0])}`);
  const status = Number(m[1]);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`bad header line ${JSON.stringify(line)}`);
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  let pos = headEnd + 4;
  let body: Buffer = Buffer.alloc(0);
  const noBody = head || (status >= 100 && status < 200) || status === 204 || status === 304;
  if (!noBody) {
    if (/(^|,)\s*chunked\s*$/i.test(headers['transfer-encoding'] ?? '')) {
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', pos);
        if (lineEnd === -1) return undefined;
        const sizeText = buf.subarray(pos, lineEnd).toString('latin1').split(';', 1)[0].trim();
        if (!/^[0-9a-fA-F]+$/.test(sizeText)) throw new Error(`bad chunk size ${JSON.stringify(sizeText)}`);
        const size = parseInt(sizeText, 16);
        pos = lineEnd + 2;
        if (size === 0) {
          // Trailer section up to the empty line.
          const trailerEnd = buf.indexOf('\r\n', pos);
          if (trailerEnd === -1) return undefined;
          if (trailerEnd !== pos) {
            const end = buf.indexOf('\r\n\r\n', pos);
            if (end === -1) return undefined;
            pos = end + 4;
          } else {
            pos += 2;
          }
          break;
        }
        if (buf.length < pos + size + 2) return undefined;
        parts.push(buf.subarray(pos, pos + size));
        if (buf[pos + size] !== 13 || buf[pos + size + 1] !== 10) throw new Error('chunk not followed by CRLF');
        pos += size + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const len = Number(headers['content-length']);
      if (!Number.isSafeInteger(len) || len < 0) throw new Error(`bad content-length ${headers['content-length']}`);
      if (buf.length < pos + len) return undefined;
      body = buf.subarray(pos, pos + len);
      pos += len;
    } else {
      // Read until close (RFC 9112 §6.3 rule 8).
      if (!ended) return undefined;
      body = buf.subarray(pos);
      pos = buf.length;
    }
  }
  return { response: { status, reason: m[2], headers, body: Buffer.from(body), raw: Buffer.from(buf.subarray(0, pos)) }, used: pos };
}

/** Resolves when the peer closes; rejects if it sends anything first (a refused connection gets no byte). */
export function closedWithoutReply(socket: net.Socket, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', (d: Buffer) => reject(new Error(`unexpected reply: ${JSON.stringify(d.toString('latin1').slice(0, 80))}`)));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Whether the far end of `socket` is closed rather than half-open: a socket that saw the peer's FIN learns of a close
 * only by writing (the first write draws the reset, a later one fails on it). Writes `bytes` every 20 ms, up to 100
 * times, until the socket closes; true when it did. Against a half-open peer that reads them, false.
 */
export async function writesRefused(socket: net.Socket, bytes: Buffer | string): Promise<boolean> {
  socket.on('error', () => {});
  if (socket.destroyed) return true;
  const closed = new Promise<void>((r) => socket.once('close', r));
  let done = false;
  void closed.then(() => (done = true));
  for (let i = 0; i < 100 && !done; i++) {
    socket.write(bytes);
    await Promise.race([closed, new Promise((r) => setTimeout(r, 20))]);
  }
  return done;
}

/** Resolves when the peer ends its side (a half-open client sees 'end' before any 'close'); rejects if it sent a byte. */
export function endedWithoutReply(socket: net.Socket, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket not ended after ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', (d: Buffer) => reject(new Error(`unexpected reply: ${JSON.stringify(d.toString('latin1').slice(0, 80))}`)));
    socket.on('error', () => {});
    socket.on('end', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * One connection that sends `head` and reads until the server closes: resolves with the status line, the socket
 * error's code, 'closed without a reply' or 'timeout' (bounded: a SYN dropped at a full backlog is retried by the
 * kernel after 1 s, 3 s, 7 s...). Never rejects, so thousands can run in one Promise.all.
 */
export function statusLineUntilClose(port: number, head: string, localAddress?: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (outcome: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done('timeout'), 60_000);
    socket.on('connect', () => socket.write(head));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? 'error'));
    socket.on('close', () => done(Buffer.concat(chunks).toString('latin1').split('\r\n')[0] || 'closed without a reply'));
  });
}

/** What an open socket got until the server closed it: the status line, 'closed without a reply', or `error CODE`. */
export function statusLineOnClose(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code ?? err.message}`));
    socket.once('close', () => resolve(Buffer.concat(chunks).toString('latin1').split('\r\n')[0] || 'closed without a reply'));
  });
}

/** Raw bytes on a fresh connection: everything the server sent until it closed (latin1, byte for byte). */
export async function exchangeUntilClose(port: number, bytes: string | Buffer): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  s.write(bytes);
  const parts: Buffer[] = [];
  s.on('data', (b: Buffer) => parts.push(b));
  await once(s, 'close');
  return Buffer.concat(parts).toString('latin1');
}

/**
 * Writes `text` on `socket` (plain or TLS) and resolves with what comes back once at least `expect` characters came
 * (latin1); rejects on the socket's error or after 10 s.
 */
export function roundTrip(socket: net.Socket, text: string, expect: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => {
      socket.off('data', onData);
      socket.off('error', onError);
      reject(new Error(`no reply to ${JSON.stringify(text)} within 10 s (got ${JSON.stringify(got)})`));
    }, 10_000);
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      if (got.length < expect) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      resolve(got);
    };
    const onError = (err: Error): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      reject(err);
    };
    socket.on('data', onData);
    socket.once('error', onError);
    socket.write(text);
  });
}

/**
 * Sends "hello" over TLS for `servername` to `to` (a port on 127.0.0.1, or a connected socket) without checking the
 * certificate (a passthrough backend's own), and returns everything that came back until the backend's FIN.
 */
export async function tlsHello(t: TestContext, to: number | net.Socket, servername: string): Promise<string> {
  const c = typeof to === 'number' ? tls.connect({ host: '127.0.0.1', port: to, servername, rejectUnauthorized: false }) : tls.connect({ socket: to, servername, rejectUnauthorized: false });
  t.after(() => c.destroy());
  await once(c, 'secureConnect');
  const reply: Buffer[] = [];
  c.on('data', (d: Buffer) => reply.push(d));
  c.write('hello');
  await once(c, 'end');
  return Buffer.concat(reply).toString();
}

/**
 * Sends a WebSocket upgrade for `path` by hand on a connected `socket` and resolves, once the whole 101 head is
 * in, with the bytes that came after it (a later 'data' listener sees the rest). Rejects on another status or
 * after `timeoutMs`.
 */
export function upgradeByHand(socket: net.Socket, path: string, timeoutMs = 10_000): Promise<Buffer> {
  const key = randomBytes(16).toString('base64');
  socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  return new Promise<Buffer>((resolve, reject) => {
    const guard = setTimeout(() => {
      socket.removeListener('data', onData);
      reject(new Error(`no 101 within ${timeoutMs} ms`));
    }, timeoutMs);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(guard);
      socket.removeListener('data', onData);
      const head = buf.subarray(0, end).toString('latin1');
      if (!/^HTTP\/1\.1 101 /.test(head)) reject(new Error(`not a 101: ${head.split('\r\n')[0]}`));
      else resolve(buf.subarray(end + 4));
    };
    socket.on('data', onData);
  });
}
