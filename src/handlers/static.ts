// One request on a static route: map the normalized path into the route's root (dotfiles, symlinks out of the
// root and folders without an index refused), then answer with the file: conditional requests (304), a single
// byte range (206/416), a precompressed .br/.gz sibling, streamed with backpressure in bounded chunks.
// It owns the file descriptor it opens (closed on every path out) and borrows the client socket from its
// ReplyOwner (connection.ts). Like nginx without aio, the metadata calls (realpath, open, fstat) and reads of
// small files are made on the event loop: a static root belongs on a local disk.
import { close, fstatSync, openSync, read, readSync, realpathSync, constants as fsConstants, type Stats } from 'node:fs';
import path from 'node:path';
import { ProxyError } from '../core/errors.js';
import { noop } from '../core/util.js';
import type { StaticDecision, StaticConfig } from '../route/router.js';
import type { RequestHead } from '../wire/http-head.js';
import { chooseEncoding, type Coding } from '../wire/accept-encoding.js';
import { etagListMatches, ifRangeHolds, parseRange } from '../wire/range.js';
import { contentTypeOf } from './mime.js';
import { Encoder, compressible, compressionFor } from './compress.js';
import { replyHead, type ReplyJob, type ReplyOwner } from './reply.js';
import { headerValue } from './rewrite.js';
import { NativeSocket } from '../native/io.js';

/** Files up to this size are read in one call and leave with the head in one write. */
const SMALL_FILE = 64 * 1024;
/** One read of a larger file: what is held in memory per download (plus the socket's own buffer). */
const CHUNK = 256 * 1024;
const SIBLINGS: readonly Coding[] = ['br', 'gzip'];
const SUFFIX: Readonly<Record<Coding, string>> = { br: '.br', gzip: '.gz' };

/** Open files of static routes in this worker, against limits.static_open_files. */
let openFiles = 0;
let openFilesCap = 1024;

/** Sets the worker's cap (limits.static_open_files); applied by the next open. */
export function setStaticOpenFiles(cap: number): void {
  openFilesCap = cap;
}

/** Open static files now (tests and /status). */
export function staticOpenFiles(): number {
  return openFiles;
}

const roots = new WeakMap<StaticConfig, string>();

/** The route root's real path, found once per config (a reload makes a new config object). */
function realRoot(site: StaticConfig): string {
  let r = roots.get(site);
  if (r === undefined) {
    r = realpathSync.native(site.root);
    roots.set(site, r);
  }
  return r;
}

/** The path's segments as file names, or a refusal: a dotfile (but /.well-known), or an escape that cannot be decoded. */
function fileRelative(p: string): { ok: true; rel: string } | { ok: false; status: 400 | 403 } {
  let rel: string;
  try {
    rel = decodeURIComponent(p);
  } catch {
    return { ok: false, status: 400 };
  }
  // normalizePath refused %2F, %5C, %00 and dot segments already; these hold even if it changes
  if (rel.includes('\0') || rel.includes('\\')) return { ok: false, status: 400 };
  const segs = rel.split('/');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    if (s === '..' || s === '.') return { ok: false, status: 400 };
    if (s.startsWith('.') && !(i === 1 && s === '.well-known')) return { ok: false, status: 403 };
  }
  return { ok: true, rel };
}

function inside(real: string, root: string): boolean {
  return real === root || (real.startsWith(root) && real.charCodeAt(root.length) === 47 /* / */);
}

/** An opened regular file (real path inside the root), or the status to answer. */
type Opened = { ok: true; fd: number; st: Stats; real: string } | { ok: false; status: number; location?: string };

export class StaticReply implements ReplyJob {
  readonly route: StaticDecision['route'];
  readonly head: RequestHead;
  readonly startedAt = Date.now();
  status = 0;
  bytesOut = 0;
  responseStarted = false;
  readonly #owner: ReplyOwner;
  readonly #site: StaticConfig;
  /** Header lines from the connection: the route's response_headers.set and CORS. */
  readonly #fields: string;
  #fd = -1;
  #pos = 0;
  /** Exclusive end of the bytes to send. */
  #end = 0;
  #reading = false;
  #waitingDrain = false;
  #over = false;
  #progressMark = -1;
  #progressAt = 0;
  /** The client socket when the body goes with sendfile(2), else null. */
  #native: NativeSocket | null = null;
  /** Compresses the body on its way out (route `compress`), or null. */
  #encoder: Encoder | null = null;

  constructor(owner: ReplyOwner, d: StaticDecision, head: RequestHead, fields: string) {
    this.#owner = owner;
    this.route = d.route;
    this.#site = d.site;
    this.head = head;
    this.#fields = fields;
  }

  start(): void {
    try {
      this.#serve();
    } catch (err) {
      this.#fail(new ProxyError('INTERNAL', `static file: ${(err as Error).message}`, { cause: err }));
    }
  }

  #serve(): void {
    const head = this.head;
    if (head.method !== 'GET' && head.method !== 'HEAD') {
      this.#answer(405, 'Allow: GET, HEAD\r\n', `405 ${head.method} is not allowed here\n`);
      return;
    }
    const rel = fileRelative(head.path);
    if (!rel.ok) {
      this.#answer(rel.status, '', rel.status === 403 ? '403 Forbidden\n' : '400 Bad Request\n');
      return;
    }
    let root: string;
    try {
      root = realRoot(this.#site);
    } catch {
      this.#answer(404, '', '404 Not Found\n');
      return;
    }
    const opened = this.#openInside(root, path.join(root, rel.rel), rel.rel.endsWith('/'));
    if (!opened.ok) {
      if (opened.location !== undefined) this.#answer(opened.status, `Location: ${opened.location}\r\n`, `${opened.status} ${opened.location}\n`);
      else this.#answer(opened.status, '', `${opened.status} ${opened.status === 403 ? 'Forbidden' : opened.status === 503 ? 'Service Unavailable' : 'Not Found'}\n`);
      return;
    }
    this.#sendFile(root, opened.fd, opened.st, opened.real);
  }

  /** Opens `candidate` (or the index of that folder) if it is a regular file inside `root`. */
  #openInside(root: string, candidate: string, isDirPath: boolean): Opened {
    const first = this.#openFile(root, candidate);
    if (!first.ok || !first.st.isDirectory()) return first;
    this.#closeFd(first.fd);
    if (!isDirPath) {
      // nginx: a folder named without its final slash is redirected to it, so relative links in its index work
      return { ok: false, status: 301, location: `${this.head.path}/${this.head.query}` };
    }
    for (const index of this.#site.index) {
      const r = this.#openFile(root, path.join(first.real, index));
      if (r.ok && r.st.isFile()) return r;
      if (r.ok) this.#closeFd(r.fd);
      else if (r.status !== 404) return r;
    }
    return { ok: false, status: 403 }; // a folder without an index is not listed (nginx: 403)
  }

  #openFile(root: string, candidate: string): Opened {
    let real: string;
    try {
      real = realpathSync.native(candidate);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return { ok: false, status: code === 'EACCES' ? 403 : 404 };
    }
    // a symlink (anywhere on the way) that leads out of the root is refused
    if (!inside(real, root)) return { ok: false, status: 403 };
    if (openFiles >= openFilesCap) return { ok: false, status: 503 };
    let fd: number;
    try {
      fd = openSync(real, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EMFILE' || code === 'ENFILE') return { ok: false, status: 503 };
      return { ok: false, status: code === 'EACCES' || code === 'ELOOP' ? 403 : 404 };
    }
    openFiles++;
    let st: Stats;
    try {
      st = fstatSync(fd);
    } catch {
      this.#closeFd(fd);
      return { ok: false, status: 404 };
    }
    if (!st.isFile() && !st.isDirectory()) {
      this.#closeFd(fd);
      return { ok: false, status: 404 }; // devices, fifos, sockets are never served
    }
    return { ok: true, fd, st, real };
  }

  #closeFd(fd: number): void {
    openFiles--;
    close(fd, noop);
  }

  /** Chooses the representation and range, writes the head, then the body. */
  #sendFile(root: string, fd: number, st: Stats, real: string): void {
    const head = this.head;
    const site = this.#site;
    const h = head.headers;
    const rangeHeader = head.method === 'GET' ? headerValue(h, 'range') : undefined;
    const contentType = contentTypeOf(real);
    let fields = `Content-Type: ${contentType}\r\n`;
    // a precompressed sibling (FILE.br, FILE.gz) for a client that accepts it; ranges are served from the file itself
    let vary = false;
    if (site.precompressed && rangeHeader === undefined) {
      const ae = headerValue(h, 'accept-encoding');
      const best = chooseEncoding(ae, SIBLINGS);
      // the client's favourite first, then the other if it accepts it too (a site may ship only .gz)
      const order = best === null ? [] : [best, ...SIBLINGS.filter((c) => c !== best && chooseEncoding(ae, [c]) !== null)];
      for (const c of order) {
        const sib = this.#openFile(root, real + SUFFIX[c]);
        if (!sib.ok) continue;
        if (!sib.st.isFile()) {
          this.#closeFd(sib.fd);
          continue;
        }
        this.#closeFd(fd);
        fd = sib.fd;
        st = sib.st;
        fields += `Content-Encoding: ${c}\r\n`;
        vary = true;
        break;
      }
    }
    this.#fd = fd;
    const size = st.size;
    const mtime = Math.floor(st.mtimeMs / 1000);
    const etag = site.etag ? `"${mtime.toString(16)}-${size.toString(16)}${vary ? `-${fields.includes('br\r\n') ? 'br' : 'gz'}` : ''}"` : undefined;
    let validators = `Last-Modified: ${new Date(mtime * 1000).toUTCString()}\r\n`;
    if (etag !== undefined) validators += `ETag: ${etag}\r\n`;
    if (site.cache_control !== undefined) validators += `Cache-Control: ${site.cache_control}\r\n`;
    // a type the route compresses varies by Accept-Encoding for every client (caches must not mix them up)
    const compressed = !vary && compressible(this.route.compress, contentType, size);
    if (vary || compressed) validators += 'Vary: Accept-Encoding\r\n';
    // RFC 9110 §13.2.2: If-None-Match first; If-Modified-Since only without it, and only for GET and HEAD
    const inm = headerValue(h, 'if-none-match');
    let notModified = false;
    if (inm !== undefined) notModified = etag !== undefined && etagListMatches(inm, etag);
    else {
      const ims = headerValue(h, 'if-modified-since');
      if (ims !== undefined) {
        const t = Date.parse(ims);
        notModified = Number.isFinite(t) && mtime <= Math.floor(t / 1000);
      }
    }
    if (notModified) {
      this.#release();
      this.#writeHead(304, validators, 'none');
      this.#finish();
      return;
    }
    let start = 0;
    let end = size;
    let status = 200;
    let extra = 'Accept-Ranges: bytes\r\n';
    if (rangeHeader !== undefined) {
      const ifRange = headerValue(h, 'if-range');
      const r = ifRange === undefined || ifRangeHolds(ifRange, etag, mtime) ? parseRange(rangeHeader, size) : { kind: 'none' as const };
      if (r.kind === 'unsatisfiable') {
        this.#release();
        this.#answer(416, `Content-Range: bytes */${size}\r\n${validators}`, '');
        return;
      }
      if (r.kind === 'single') {
        status = 206;
        start = r.start;
        end = r.end + 1;
        extra += `Content-Range: bytes ${r.start}-${r.end}/${size}\r\n`;
      }
      // several ranges: the whole file (200), which RFC 9110 §14.2 allows; no multipart/byteranges
    }
    this.#pos = start;
    this.#end = end;
    const length = end - start;
    const coding = compressed
      ? compressionFor(this.route.compress, { method: head.method, status, contentType, contentEncoding: undefined, length, ranged: status === 206, acceptEncoding: headerValue(h, 'accept-encoding'), versionMinor: head.versionMinor })
      : null;
    if (coding !== null && length > 0) {
      // compressed on the fly: chunked, no ranges offered, a weak ETag (the bytes differ from the file's)
      const weak = etag === undefined ? validators : validators.replace(`ETag: ${etag}`, `ETag: W/${etag}`);
      const headStr = replyHead(200, `${fields}Content-Encoding: ${coding}\r\n${weak}${this.#fields}`, 'chunked', this.#connection());
      this.status = 200;
      this.#writeRaw(headStr);
      this.#encoder = new Encoder(this.#owner.socket, this.route.compress!, coding, length, this.#onEncoderDrain, (err) => this.#fail(new ProxyError('INTERNAL', `compression failed: ${err.message}`, { cause: err })));
      this.#pump();
      return;
    }
    const headStr = replyHead(status, fields + validators + extra + this.#fields, { length }, this.#connection());
    this.status = status;
    if (head.method === 'HEAD' || length === 0) {
      this.#release();
      this.#writeRaw(headStr);
      this.#finish();
      return;
    }
    if (length <= SMALL_FILE) {
      // head and body in one write
      const out = Buffer.allocUnsafe(headStr.length + length);
      out.write(headStr, 0, 'latin1');
      const n = readSync(fd, out, headStr.length, length, start);
      this.#release();
      if (n !== length) {
        this.#fail(new ProxyError('INTERNAL', `static file ${real} changed while it was read`));
        return;
      }
      this.#writeRaw(out);
      this.bytesOut = out.length;
      this.#finish();
      return;
    }
    this.#writeRaw(headStr);
    this.bytesOut = headStr.length;
    const socket = this.#owner.socket;
    // a plain listener on the addon's socket I/O: the page cache goes to the socket in the kernel (sendfile)
    if (socket instanceof NativeSocket && socket.canSendFile) {
      this.#native = socket;
      this.#sendfile();
      return;
    }
    this.#pump();
  }

  /** sendfile(2) until the socket is full (then 'drain' calls again) or the range is sent. */
  #sendfile(): void {
    const socket = this.#native!;
    const asked = this.#end - this.#pos;
    const n = socket.sendFile(this.#fd, this.#pos, asked);
    if (n < 0) {
      this.#fail(n === -61 ? new ProxyError('INTERNAL', 'static file shrank while it was sent') : new ProxyError('CLIENT_CLOSED', `sendfile failed (errno ${-n})`));
      return;
    }
    this.#pos += n;
    this.bytesOut += n;
    if (this.#pos >= this.#end) {
      this.#release();
      this.#finish();
      return;
    }
    // fewer bytes than asked: the socket is full; its 'drain' calls again (a file that shrank meanwhile waits for
    // send_timeout, which cuts it)
    this.#waitingDrain = true;
  }

  #connection(): 'close' | 'keep-alive' | '' {
    return this.#owner.closing ? 'close' : this.head.versionMinor === 0 ? 'keep-alive' : '';
  }

  /** A short answer of the route itself (404, 403, 405, 301, 416) on a connection kept alive. */
  #answer(status: number, fields: string, body: string): void {
    this.status = status;
    const withType = body === '' ? fields : `${fields}Content-Type: text/plain; charset=utf-8\r\n`;
    const headStr = replyHead(status, withType + this.#fields, { length: Buffer.byteLength(body) }, this.#connection());
    this.#writeRaw(this.head.method === 'HEAD' ? headStr : headStr + body);
    this.#finish();
  }

  #writeHead(status: number, fields: string, framing: 'none'): void {
    this.status = status;
    this.#writeRaw(replyHead(status, fields + this.#fields, framing, this.#connection()));
  }

  #writeRaw(data: string | Buffer): boolean {
    this.responseStarted = true;
    if (typeof data === 'string') {
      this.bytesOut += data.length;
      return this.#owner.socket.write(data, 'latin1');
    }
    return this.#owner.socket.write(data);
  }

  /** Reads the next chunk once the previous one was taken by the socket: one read in flight, one chunk held. */
  #pump = (): void => {
    if (this.#over || this.#reading || this.#waitingDrain) return;
    const n = Math.min(CHUNK, this.#end - this.#pos);
    const buf = Buffer.allocUnsafe(n);
    this.#reading = true;
    read(this.#fd, buf, 0, n, this.#pos, (err, got) => {
      this.#reading = false;
      if (this.#over) {
        this.#release(); // aborted while the read was in flight: the fd is closed only now (no reuse under a read)
        return;
      }
      if (err !== null || got === 0) {
        this.#fail(new ProxyError('INTERNAL', err !== null ? `static file read failed: ${err.code ?? err.message}` : 'static file shrank while it was sent'));
        return;
      }
      this.#pos += got;
      const chunk = got === n ? buf : buf.subarray(0, got);
      const encoder = this.#encoder;
      if (encoder !== null) {
        const ok = encoder.write(chunk);
        if (this.#pos >= this.#end) {
          this.#release();
          encoder.end(() => {
            this.bytesOut += encoder.bytesOut;
            this.#finish();
          });
        } else if (!ok) this.#waitingDrain = true;
        else this.#pump();
        return;
      }
      this.bytesOut += got;
      const ok = this.#owner.socket.write(chunk);
      if (this.#pos >= this.#end) {
        this.#release();
        this.#finish();
      } else if (!ok) this.#waitingDrain = true;
      else this.#pump();
    });
  };

  /** The compressor took what it held: read on. */
  #onEncoderDrain = (): void => {
    if (!this.#waitingDrain) return;
    this.#waitingDrain = false;
    if (this.#native !== null) this.#sendfile();
    else this.#pump();
  };

  clientDrained(): void {
    if (this.#encoder !== null) {
      // the compressor's output waits for the socket; the file reads wait for the compressor (#onEncoderDrain)
      this.#encoder.clientDrained();
      return;
    }
    if (!this.#waitingDrain) return;
    this.#waitingDrain = false;
    this.#pump();
  }

  /** Closes the file (now, or after a read in flight). */
  #release(): void {
    if (this.#fd === -1 || this.#reading) return;
    const fd = this.#fd;
    this.#fd = -1;
    this.#closeFd(fd);
  }

  #finish(): void {
    if (this.#over) return;
    this.#over = true;
    this.#owner.replyDone(this);
  }

  #fail(err: ProxyError): void {
    if (this.#over) return;
    this.#over = true;
    this.#encoder?.destroy();
    this.#release();
    this.#owner.replyFailed(this, err);
  }

  abort(): void {
    if (this.#over) return;
    this.#over = true;
    this.#encoder?.destroy();
    this.#release();
  }

  /** route.static.send_timeout: the client took nothing for that long. */
  checkDeadline(now: number): void {
    if (this.#over) return;
    const mark = this.bytesOut + (this.#encoder?.bytesOut ?? 0);
    if (mark !== this.#progressMark || !this.#waitingDrain) {
      this.#progressMark = mark;
      this.#progressAt = now;
      return;
    }
    const limit = this.#site.send_timeout;
    if (limit > 0 && now - this.#progressAt >= limit) this.#fail(new ProxyError('CLIENT_SEND_TIMEOUT', `the client took no bytes for ${limit}ms`));
  }
}

