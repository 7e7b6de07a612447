// One request on a static route: map the normalized path into the route's root (dotfiles, symlinks out of the
// root and folders without an index refused), then answer with the file: conditional requests (304), a single
// byte range (206/416), a precompressed .br/.gz sibling, small files (and their compressed forms) from the
// worker's cache in one write, larger ones with sendfile or streamed with backpressure in bounded chunks.
// It owns the file descriptor it opens (closed on every path out) and borrows the client socket from its
// ReplyOwner (connection.ts). Like nginx without aio, the metadata calls and reads of small files are made on the
// event loop: a static root belongs on a local disk. Lookups are remembered (static-cache.ts) for
// static_cache.valid: a change on disk shows after at most that long.
import { fstatSync, read, readSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { ProxyError } from '../core/errors.js';
import type { StaticCacheStats } from '../core/metrics.js';
import type { StaticCacheConfig } from '../config/static-cache.js';
import type { StaticDecision, StaticConfig } from '../route/router.js';
import type { RequestHead } from '../wire/http-head.js';
import { chooseEncoding, type Coding } from '../wire/accept-encoding.js';
import { etagListMatches, ifRangeHolds, parseRange } from '../wire/range.js';
import { contentTypeOf } from './mime.js';
import { Encoder, compressWhole, compressible, compressionFor, variantKey } from './compress.js';
import { httpDate, replyHead, type ReplyJob, type ReplyOwner } from './reply.js';
import { headerValue } from './rewrite.js';
import { StaticCache, type CacheEntry, type CachedFile } from './static-cache.js';
import { REOPEN_CHANGED, closeFile, openInside, reopen, type Opened } from './static-open.js';
import { NativeSocket } from '../native/io.js';

export { setStaticOpenFiles, staticOpenFiles } from './static-open.js';

/** Without sendfile, files not held in memory up to this size are read in one call and leave with the head in one write. */
const SMALL_FILE = 64 * 1024;
/** One read of a larger file: what is held in memory per download (plus the socket's own buffer). */
const CHUNK = 256 * 1024;
/**
 * Files up to this size that the route compresses are compressed whole, once, on the event loop (about a
 * millisecond at level 1), and the result is kept with the cache entry; larger ones are compressed as they stream.
 */
const COMPRESS_WHOLE = 256 * 1024;
const SIBLINGS: readonly Coding[] = ['br', 'gzip'];
const SUFFIX: Readonly<Record<Coding, string>> = { br: '.br', gzip: '.gz' };

const DEFAULT_CACHE: StaticCacheConfig = { entries: 4096, valid: 5000, errors: true, file_size: 64 * 1024, memory: 32 * 1024 * 1024 };
let cache = new StaticCache(DEFAULT_CACHE);

/** Applies the config's static_cache (a reload with other limits starts an empty cache). */
export function setStaticCache(c: StaticCacheConfig): void {
  const l = cache.limits;
  if (l.entries === c.entries && l.valid === c.valid && l.errors === c.errors && l.file_size === c.file_size && l.memory === c.memory) return;
  pastHits += cache.hits;
  pastMisses += cache.misses;
  cache = new StaticCache(c);
}

/** Lookups of the caches this worker has had (a reload that changes the limits starts a new one). */
let pastHits = 0;
let pastMisses = 0;

/** The cache's fill and its lookups so far (metrics and tests). */
export function staticCacheStats(): StaticCacheStats {
  return { entries: cache.size, bytes: cache.bytes, hits: pastHits + cache.hits, misses: pastMisses + cache.misses };
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

/**
 * A ready answer (head and body in one buffer) of a cached file, valid while its Date second and its header
 * lines hold: the file's own (one entry can answer as itself and as the .gz sibling of another) and the
 * connection's (route headers, CORS).
 */
interface Memo {
  readonly date: string;
  readonly head: string;
  readonly fields: string;
  readonly decision: StaticDecision;
  readonly buf: Buffer;
}
type Memos = Partial<Record<Coding | 'identity', Memo>>;

/** What a lookup found, built from an opened file (its fstat) and, when small, its bytes. */
function fileEntry(o: Extract<Opened, { ok: true }>, stale: CacheEntry | undefined): CachedFile | null {
  const st = o.st;
  const mtime = Math.floor(st.mtimeMs / 1000);
  const same = stale !== undefined && stale.kind === 'file' && stale.real === o.real && stale.ino === st.ino && stale.dev === st.dev && stale.size === st.size && stale.mtimeMs === st.mtimeMs;
  let body: Buffer | null = null;
  if (same) body = stale.body;
  else if (st.size <= cache.limits.file_size && cache.limits.entries > 0) {
    body = Buffer.allocUnsafeSlow(st.size);
    const n = st.size === 0 ? 0 : readSync(o.fd, body, 0, st.size, 0);
    const after = fstatSync(o.fd);
    // written while it was read: serve it from disk this time, remember it once it holds still
    if (n !== st.size || after.size !== st.size || after.mtimeMs !== st.mtimeMs) return null;
  }
  return {
    kind: 'file',
    real: o.real,
    dev: st.dev,
    ino: st.ino,
    size: st.size,
    mtimeMs: st.mtimeMs,
    mtime,
    contentType: contentTypeOf(o.real),
    etagCore: `${mtime.toString(16)}-${st.size.toString(16)}`,
    lastModified: new Date(mtime * 1000).toUTCString(),
    body,
    bytes: (body === null ? 0 : body.length) + (same ? variantBytes(stale.variants) : 0),
    variants: same ? stale.variants : null,
    memo: null,
    expires: 0,
  };
}

function variantBytes(v: Map<string, Buffer | null> | null): number {
  let n = 0;
  if (v !== null) for (const b of v.values()) n += b === null ? 0 : b.length;
  return n;
}

/**
 * What `key` (a path under `root`) names, from the cache or found now: a file, a folder, a refusal (403/404,
 * remembered with static_cache.errors), or 503 (the open-files cap: never remembered).
 */
function lookup(root: string, key: string): CacheEntry | 503 {
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const stale = cache.takeStale(key);
  const o = openInside(root, key);
  if (!o.ok) {
    if (o.status === 503) return 503;
    const refused: CacheEntry = { kind: 'refused', status: o.status, bytes: 0, expires: 0 };
    cache.put(key, refused);
    return refused;
  }
  try {
    if (o.st.isDirectory()) {
      const folder: CacheEntry = { kind: 'folder', real: o.real, bytes: 0, expires: 0 };
      cache.put(key, folder);
      return folder;
    }
    const file = fileEntry(o, stale);
    if (file === null) return lookupUncached(o);
    cache.put(key, file);
    return file;
  } finally {
    closeFile(o.fd);
  }
}

/** A file that changed while it was read: its metadata now, its bytes from disk per request, not remembered. */
function lookupUncached(o: Extract<Opened, { ok: true }>): CachedFile {
  const st = fstatSync(o.fd);
  const mtime = Math.floor(st.mtimeMs / 1000);
  return { kind: 'file', real: o.real, dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, mtime, contentType: contentTypeOf(o.real), etagCore: `${mtime.toString(16)}-${st.size.toString(16)}`, lastModified: new Date(mtime * 1000).toUTCString(), body: null, bytes: 0, variants: null, memo: null, expires: 0 };
}

/**
 * Whether a path names nothing on a static route, the case a route's `fallback` takes over: no file, and no
 * folder with an index (the answers would be 404, and 403 for the folder that is not listed). Returns the decoded
 * path (nginx's $uri) then, else null: a refusal (a dotfile or a symlink out of the root 403, an undecodable
 * escape 400, the open-files cap 503), a file, a folder with its index and a folder named without its final `/`
 * (301) are answered by the route as without a fallback. Looked up through the cache, as the answer
 * itself would be, so a hit costs one more cache lookup.
 */
export function staticMiss(site: StaticConfig, p: string): string | null {
  const rel = fileRelative(p);
  if (!rel.ok) return null;
  let root: string;
  try {
    root = realRoot(site);
  } catch {
    return rel.rel; // a root that is not there finds nothing (the route's own answer is a 404)
  }
  const e = lookup(root, root + rel.rel);
  if (typeof e === 'number' || e.kind === 'file') return null;
  if (e.kind === 'refused') return e.status === 404 ? rel.rel : null;
  // a folder: named without its final `/` it is redirected to it (301); with it, one without an index falls back
  if (!rel.rel.endsWith('/')) return null;
  for (const index of site.index) {
    const r = lookup(root, path.join(e.real, index));
    if (typeof r === 'number' || r.kind === 'file' || (r.kind === 'refused' && r.status !== 404)) return null;
  }
  return rel.rel;
}

export class StaticReply implements ReplyJob {
  readonly route: StaticDecision['route'];
  readonly head: RequestHead;
  readonly startedAt = Date.now();
  status = 0;
  bytesOut = 0;
  responseStarted = false;
  readonly #owner: ReplyOwner;
  readonly #decision: StaticDecision;
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
  /** The request was served again after its file changed under a cached lookup (#openBody). */
  #retried = false;

  constructor(owner: ReplyOwner, d: StaticDecision, head: RequestHead, fields: string) {
    this.#owner = owner;
    this.route = d.route;
    this.#decision = d;
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
    const key = root + rel.rel; // rel starts with "/": the path as it would be joined, without a per-request join
    const found = this.#findFile(root, key, rel.rel.endsWith('/'));
    if (typeof found === 'number') {
      this.#refuse(found);
      return;
    }
    if (found.status === 301) {
      const location = `${this.head.path}/${this.head.query}`;
      this.#answer(301, `Location: ${location}\r\n`, `301 ${location}\n`);
      return;
    }
    this.#sendFile(root, found.key, found.file);
  }

  #refuse(status: number): void {
    this.#answer(status, '', `${status} ${status === 403 ? 'Forbidden' : status === 503 ? 'Service Unavailable' : 'Not Found'}\n`);
  }

  /** What `key` names, through the cache: a file, or a folder's index, or a status (301: a folder without its final slash). */
  #findFile(root: string, key: string, isDirPath: boolean): number | { status: 200; key: string; file: CachedFile } | { status: 301 } {
    const e = lookup(root, key);
    if (typeof e === 'number') return e;
    if (e.kind === 'refused') return e.status;
    if (e.kind === 'file') return { status: 200, key, file: e };
    // nginx: a folder named without its final slash is redirected to it, so relative links in its index work
    if (!isDirPath) return { status: 301 };
    for (const index of this.#site.index) {
      const k = path.join(e.real, index);
      const r = lookup(root, k);
      if (typeof r === 'number') return r;
      if (r.kind === 'file') return { status: 200, key: k, file: r };
      if (r.kind === 'refused' && r.status !== 404) return r.status;
    }
    return 403; // a folder without an index is not listed (nginx: 403)
  }

  /** Chooses the representation and range, writes the head, then the body. */
  #sendFile(root: string, key: string, found: CachedFile): void {
    const head = this.head;
    const site = this.#site;
    const h = head.headers;
    const rangeHeader = head.method === 'GET' ? headerValue(h, 'range') : undefined;
    const acceptEncoding = headerValue(h, 'accept-encoding');
    let file = found;
    let fileKey = key;
    // a precompressed sibling (FILE.br, FILE.gz) for a client that accepts it; ranges are served from the file itself
    let sibling: Coding | null = null;
    if (site.precompressed && rangeHeader === undefined && acceptEncoding !== undefined) {
      const best = chooseEncoding(acceptEncoding, SIBLINGS);
      // the client's favourite first, then the other if it accepts it too (a site may ship only .gz)
      const order = best === null ? [] : [best, ...SIBLINGS.filter((c) => c !== best && chooseEncoding(acceptEncoding, [c]) !== null)];
      for (const c of order) {
        const k = found.real + SUFFIX[c];
        const sib = lookup(root, k);
        if (typeof sib === 'number' || sib.kind !== 'file') continue;
        file = sib;
        fileKey = k;
        sibling = c;
        break;
      }
    }
    const contentType = found.contentType;
    const size = file.size;
    const mtime = file.mtime;
    const etag = site.etag ? `"${file.etagCore}${sibling === null ? '' : sibling === 'br' ? '-br' : '-gz'}"` : undefined;
    let validators = `Last-Modified: ${file.lastModified}\r\n`;
    if (etag !== undefined) validators += `ETag: ${etag}\r\n`;
    if (site.cache_control !== undefined) validators += `Cache-Control: ${site.cache_control}\r\n`;
    // a type the route compresses varies by Accept-Encoding for every client (caches must not mix them up)
    const compressed = sibling === null && compressible(this.route.compress, contentType, size);
    if (sibling !== null || compressed) validators += 'Vary: Accept-Encoding\r\n';
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
    const fields = `Content-Type: ${contentType}\r\n${sibling === null ? '' : `Content-Encoding: ${sibling}\r\n`}`;
    if (notModified) {
      this.#writeHead(304, fields + validators, 'none');
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
      ? compressionFor(this.route.compress, { method: head.method, status, contentType, contentEncoding: undefined, length, ranged: status === 206, acceptEncoding, versionMinor: head.versionMinor })
      : null;
    const body = file.body;
    if (coding !== null && length > 0 && (body !== null || size <= COMPRESS_WHOLE)) {
      // a file of up to COMPRESS_WHOLE: compressed once, kept with its entry, sent with a length
      const packed = this.#variant(fileKey, file, coding);
      if (packed === undefined) return;
      if (packed !== null) {
        // a weak ETag: the bytes differ from the file's, and another level would make other bytes again
        const weak = etag === undefined ? validators : validators.replace(`ETag: ${etag}`, `ETag: W/${etag}`);
        this.#sendBytes(fileKey, file, coding, 200, `${fields}Content-Encoding: ${coding}\r\n${weak}`, packed);
        return;
      }
      // compressing did not make it smaller: the file as it is (Vary stays, as the choice depends on the coding)
    } else if (coding !== null && length > 0) {
      if (!this.#openBody(fileKey, file)) return;
      // compressed on the fly: chunked, no ranges offered, a weak ETag (the bytes differ from the file's)
      const weak = etag === undefined ? validators : validators.replace(`ETag: ${etag}`, `ETag: W/${etag}`);
      const headStr = replyHead(200, `${fields}Content-Encoding: ${coding}\r\n${weak}${this.#fields}`, 'chunked', this.#connection());
      this.status = 200;
      this.#writeRaw(headStr);
      this.#encoder = new Encoder(this.#owner.socket, this.route.compress!, coding, length, this.#onEncoderDrain, (err) => this.#fail(new ProxyError('INTERNAL', `compression failed: ${err.message}`, { cause: err })));
      this.#pump();
      return;
    }
    if (body !== null && head.method === 'GET' && length > 0) {
      if (status === 200) this.#sendBytes(fileKey, file, sibling ?? 'identity', 200, fields + validators + extra, body);
      else this.#sendBytes(fileKey, file, null, status, fields + validators + extra, body.subarray(start, end));
      return;
    }
    const headStr = replyHead(status, fields + validators + extra + this.#fields, { length }, this.#connection());
    this.status = status;
    if (head.method === 'HEAD' || length === 0) {
      this.#writeRaw(headStr);
      this.#finish();
      return;
    }
    if (!this.#openBody(fileKey, file)) return;
    const socket = this.#owner.socket;
    const sendfile = socket instanceof NativeSocket && socket.canSendFile;
    if (length <= SMALL_FILE && !sendfile) {
      // head and body in one write
      const out = Buffer.allocUnsafe(headStr.length + length);
      out.write(headStr, 0, 'latin1');
      const n = readSync(this.#fd, out, headStr.length, length, start);
      this.#release();
      if (n !== length) {
        this.#fail(new ProxyError('INTERNAL', `static file ${file.real} changed while it was read`));
        return;
      }
      this.#writeRaw(out);
      this.bytesOut = out.length;
      this.#finish();
      return;
    }
    this.#writeRaw(headStr);
    this.bytesOut = headStr.length;
    // a plain listener on the addon's socket I/O: the page cache goes to the socket in the kernel (sendfile)
    if (sendfile) {
      this.#native = socket;
      this.#sendfile();
      return;
    }
    this.#pump();
  }

  /**
   * An answer whose body is in memory, head and body in one write. A whole-file answer (`memo` set) is kept
   * ready with the cache entry and reused while the Date second, the route and the connection's fields hold.
   */
  #sendBytes(key: string, file: CachedFile, memo: Coding | 'identity' | null, status: number, fields: string, body: Buffer): void {
    this.status = status;
    const connection = this.#connection();
    const date = httpDate();
    const memos = file.memo as Memos | null;
    if (memo !== null && connection === '' && memos !== null) {
      const m = memos[memo];
      if (m !== undefined && m.date === date && m.decision === this.#decision && m.head === fields && m.fields === this.#fields) {
        this.#writeRaw(m.buf);
        this.bytesOut = m.buf.length;
        this.#finish();
        return;
      }
    }
    const headStr = replyHead(status, fields + this.#fields, { length: body.length }, connection);
    const out = Buffer.allocUnsafe(headStr.length + body.length);
    out.write(headStr, 0, 'latin1');
    body.copy(out, headStr.length);
    if (memo !== null && connection === '') {
      const all: Memos = memos ?? {};
      const old = all[memo]?.buf.length ?? 0;
      all[memo] = { date, head: fields, fields: this.#fields, decision: this.#decision, buf: out };
      file.memo = all;
      cache.charge(key, file, out.length - old);
    }
    this.#writeRaw(out);
    this.bytesOut = out.length;
    this.#finish();
  }

  /**
   * The compressed form of a file's body, made once per cache entry (reading the file when its bytes are not
   * held); null when it is not smaller, undefined when the file could not be read (the answer is written).
   */
  #variant(key: string, file: CachedFile, coding: Coding): Buffer | null | undefined {
    const c = this.route.compress!;
    const vk = variantKey(c, coding);
    const known = file.variants?.get(vk);
    if (known !== undefined) return known;
    let body = file.body;
    if (body === null) {
      if (!this.#openBody(key, file)) return undefined;
      body = Buffer.allocUnsafeSlow(file.size);
      const n = readSync(this.#fd, body, 0, file.size, 0);
      this.#release();
      if (n !== file.size) {
        this.#fail(new ProxyError('INTERNAL', `static file ${file.real} changed while it was read`));
        return undefined;
      }
    }
    const out = compressWhole(c, coding, body);
    const kept = out.length < body.length ? out : null;
    const variants = file.variants ?? new Map<string, Buffer | null>();
    variants.set(vk, kept);
    file.variants = variants;
    cache.charge(key, file, kept === null ? 0 : kept.length);
    return kept;
  }

  /**
   * Opens the chosen file for its body if it is still the file the cached lookup describes. When it was replaced
   * or changed meanwhile, the lookup is dropped and the request served again from a fresh one (the head built so
   * far described the old file), once: a file rewritten twice in that moment answers 503.
   */
  #openBody(key: string, file: CachedFile): boolean {
    const fd = reopen(file);
    if (fd >= 0) {
      this.#fd = fd;
      return true;
    }
    if (fd === REOPEN_CHANGED) cache.delete(key);
    if (fd === REOPEN_CHANGED && !this.#retried) {
      this.#retried = true;
      this.#serve();
    } else this.#refuse(503);
    return false;
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
    // the rest of a sendfile(2) answer goes on with sendfile, not through reads into memory
    if (this.#native !== null) this.#sendfile();
    else this.#pump();
  }

  /** Closes the file (now, or after a read in flight). */
  #release(): void {
    if (this.#fd === -1 || this.#reading) return;
    const fd = this.#fd;
    this.#fd = -1;
    closeFile(fd);
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

