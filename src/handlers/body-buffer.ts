// A chunked request body held whole before a handler that needs its length first (FastCGI's CONTENT_LENGTH):
// decoded with wire/http-head.ts ChunkedScanner, kept in memory up to `body_buffer.memory`, past it in a temp
// file that never has a name (O_TMPFILE, else opened and unlinked at once), so nothing is left on disk after a
// crash, an abort or a reload. It enforces limits.body_size as chunk sizes arrive, bounds the worker's disk use
// (`body_buffer.disk_max`) and each wait on it (`body_buffer.disk_timeout`), and replays the body with
// backpressure. It owns the file descriptor; no sockets.
import { close, constants as fsConstants, open, read, unlink, writev } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { ProxyError } from '../core/errors.js';
import type { BodyBufferStats } from '../core/metrics.js';
import { ChunkedScanner } from '../wire/http-head.js';

/** What the handler holding the body is told of it. */
export interface BodyBufferOwner {
  /** Stop / resume reading the client: the temp file is behind (writes pending past PENDING_HIGH). */
  bufferPaused(paused: boolean): void;
  /** The body is whole and stored: the client sent its last chunk and every write landed. */
  bufferReady(): void;
  /** The temp file failed (open, write) after push() returned: the request ends with `err`. */
  bufferFailed(err: ProxyError): void;
}

export interface BodyBufferSettings {
  /** Decoded bytes kept in memory; past it the whole body goes to a temp file. */
  readonly memory: number;
  /** Folder of the temp files (absolute). */
  readonly dir: string;
  /** Bytes all temp files of this worker may hold together. */
  readonly diskMax: number;
  /** limits.body_size (Infinity when off). */
  readonly maxBody: number;
  /** Longest wait for one open, write or read of the temp file (ms): a stuck disk fails the request, 500. */
  readonly diskTimeout: number;
}

/** Where a replayed body goes: `data` false = full, wait for resume(); then `end` once, or `failed`. */
export interface ReplaySink {
  replayData(data: Buffer): boolean;
  replayEnd(): void;
  replayFailed(err: ProxyError): void;
}

export interface Replay {
  /** The sink drained: go on. */
  resume(): void;
  /** No more calls to the sink (the request ended, or a retry replays anew). */
  stop(): void;
}

/** Body bytes gathered before one write to the temp file. */
const STAGE_BYTES = 64 * 1024;
/** One read of a replay: four whole FastCGI records of 65535 bytes (fewer thread-pool trips, bounded memory). */
const REPLAY_BYTES = 4 * 65535;
/** Bytes waiting for the temp file past which the client is paused (resumed once they are written). */
const PENDING_HIGH = 256 * 1024;

/**
 * O_TMPFILE: a file in `dir` with no name, gone with its last descriptor (Linux >= 3.11; ext4, xfs, btrfs,
 * tmpfs). `__O_TMPFILE` is 020000000 on every architecture Node runs on Linux; it is always combined with
 * O_DIRECTORY (whose value differs between architectures: taken from Node). Undefined elsewhere.
 */
const O_TMPFILE = process.platform === 'linux' ? 0o20000000 | fsConstants.O_DIRECTORY : undefined;
/** Folders where O_TMPFILE was refused (file system without it): named files unlinked at once there. */
const noTmpfile = new Set<string>();

/** This worker's held bodies: how many stayed in memory or went to a file, and the bytes temp files hold now. */
const stats: BodyBufferStats = { memory: 0, file: 0, diskBytes: 0 };

export function bodyBufferStats(): BodyBufferStats {
  return { ...stats };
}

/** An unnamed temp file in `dir`: O_TMPFILE, or (file systems without it) a new name unlinked before use. */
function openTemp(dir: string, done: (err: NodeJS.ErrnoException | null, fd: number) => void): void {
  if (O_TMPFILE !== undefined && !noTmpfile.has(dir)) {
    open(dir, O_TMPFILE | fsConstants.O_RDWR, 0o600, (err, fd) => {
      // EISDIR / EOPNOTSUPP / EINVAL: this kernel or file system has no O_TMPFILE (a missing folder is ENOENT)
      if (err !== null && (err.code === 'EISDIR' || err.code === 'EOPNOTSUPP' || err.code === 'EINVAL')) {
        noTmpfile.add(dir);
        openNamed(dir, done);
        return;
      }
      done(err, fd);
    });
    return;
  }
  openNamed(dir, done);
}

function openNamed(dir: string, done: (err: NodeJS.ErrnoException | null, fd: number) => void): void {
  const file = path.join(dir, `.portico-body-${process.pid}-${randomBytes(8).toString('hex')}`);
  open(file, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_RDWR, 0o600, (err, fd) => {
    if (err !== null) return done(err, -1);
    unlink(file, (uerr) => {
      if (uerr === null) return done(null, fd);
      close(fd, () => done(uerr, -1));
    });
  });
}

/** What waits on the temp file: one operation at a time (writes in order, reads only once every write landed). */
type DiskOp = 'open' | 'write' | 'read';

/** The request's error for a failed temp-file operation (500; the code and folder say what to fix). */
function ioError(op: string, dir: string, err: NodeJS.ErrnoException): ProxyError {
  return new ProxyError('BODY_BUFFER_IO', `request body temp file ${op} in ${dir} failed: ${err.code ?? err.message}`, { cause: err });
}

export class BodyBuffer {
  readonly #settings: BodyBufferSettings;
  readonly #owner: BodyBufferOwner;
  readonly #scanner = new ChunkedScanner();
  /** Raw bytes taken from the client (framing included): progress for the body timeout. */
  received = 0;
  /** Decoded body bytes. */
  length = 0;
  #error: ProxyError | null = null;
  #over = false;
  /** In memory until it passes settings.memory; then the same bytes are the first ones written to the file. */
  #parts: Buffer[] | null = [];
  // the temp file: -1 while not open (or closed); writes queue in #pending while one is in flight
  #spilled = false;
  #fd = -1;
  #opening = false;
  #inflight = 0;
  #stage: Buffer | null = null;
  #staged = 0;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #written = 0;
  /** Bytes counted against disk_max (released when the file is closed). */
  #reserved = 0;
  #paused = false;
  #readyTold = false;
  #disposed = false;
  #failed = false;
  /**
   * The disk operation in flight and what its timeout ends (null: none waits). One timer, refreshed as each
   * operation starts: a timer that fires with nothing in flight does nothing. The client's body timeout never
   * covers these waits (the client is paused for them, or done), and nothing else would end one.
   */
  #diskOp: DiskOp | null = null;
  #diskFail: ((err: ProxyError) => void) | null = null;
  #diskTimer: NodeJS.Timeout | null = null;

  constructor(settings: BodyBufferSettings, owner: BodyBufferOwner) {
    this.#settings = settings;
    this.#owner = owner;
  }

  /** The client sent the whole body (last chunk, trailers and final CRLF). */
  get clientDone(): boolean {
    return this.#scanner.done;
  }

  /** The body is whole and stored: replay() may start. */
  get ready(): boolean {
    return this.#scanner.done && !this.#failed && (!this.#spilled || (this.#fd >= 0 && this.#written === this.length));
  }

  get onDisk(): boolean {
    return this.#spilled;
  }

  /** Waiting for the disk (the client is paused for it): not the client's stall. */
  get waitingOnDisk(): boolean {
    return this.#paused;
  }

  /** Why push() returned -1: 400 (framing), 413 (limits.body_size), 503 (disk_max). */
  get error(): ProxyError {
    return this.#error ?? new ProxyError('CLIENT_BAD_REQUEST', `invalid chunked request body: ${this.#scanner.error ?? ''}`);
  }

  /** Consumes client bytes buf[start..]: how many belong to the body (it stops at its end), or -1 (see error). */
  push(buf: Buffer, start: number): number {
    if (this.#error !== null || this.#disposed) return -1;
    const n = this.#scanner.push(buf, start, this.#onData);
    // a size line counts as soon as it ends (before its data): refused from it alone, as forward.ts does
    if (this.#over || this.#scanner.dataBytes > this.#settings.maxBody) {
      this.#error = new ProxyError('CLIENT_BODY_TOO_LARGE', `chunked request body over ${this.#settings.maxBody} bytes`);
      return -1;
    }
    if (n < 0 || this.#error !== null) return -1;
    this.received += n;
    if (this.#scanner.done) this.#complete();
    return n;
  }

  /** One run of decoded body bytes (the scanner's data callback); the buffer is the caller's: copied. */
  #onData = (buf: Buffer, from: number, to: number): void => {
    if (this.#over || this.#error !== null) return;
    // the scanner counted this chunk's size before its data: nothing past limits.body_size is kept
    if (this.#scanner.dataBytes > this.#settings.maxBody) {
      this.#over = true;
      return;
    }
    const size = to - from;
    this.length += size;
    const parts = this.#parts;
    if (parts !== null && this.length <= this.#settings.memory) {
      parts.push(Buffer.from(buf.subarray(from, to)));
      return;
    }
    if (!this.#spilled) this.#spill();
    if (this.#error !== null || !this.#reserve(size)) return;
    let at = from;
    while (at < to) {
      const stage = (this.#stage ??= Buffer.allocUnsafe(STAGE_BYTES));
      const take = Math.min(to - at, STAGE_BYTES - this.#staged);
      buf.copy(stage, this.#staged, at, at + take);
      this.#staged += take;
      at += take;
      if (this.#staged === STAGE_BYTES) this.#queueStage();
    }
    this.#flush();
  };

  /** Past settings.memory: the bytes held so far become the first write of a new temp file. */
  #spill(): void {
    this.#spilled = true;
    stats.file++;
    const held = this.#parts ?? [];
    this.#parts = null;
    let bytes = 0;
    for (const p of held) bytes += p.length;
    if (!this.#reserve(bytes)) return;
    for (const p of held) this.#pending.push(p);
    this.#pendingBytes += bytes;
    this.#opening = true;
    this.#inflight++;
    const dir = this.#settings.dir;
    this.#diskWait('open', this.#writeTimedOut);
    openTemp(dir, (err, fd) => {
      this.#inflight--;
      this.#opening = false;
      this.#diskDone();
      if (err !== null) return this.#ioFailed(ioError('open', dir, err));
      this.#fd = fd;
      if (this.#disposed) return this.#closeFile();
      this.#flush();
    });
  }

  /** Counts `bytes` against the worker's disk_max; past it the request is refused (503), nothing more kept. */
  #reserve(bytes: number): boolean {
    if (stats.diskBytes + bytes > this.#settings.diskMax) {
      this.#error ??= new ProxyError('BODY_BUFFER_FULL', `request body temp files of this worker would pass body_buffer.disk_max (${this.#settings.diskMax} bytes)`);
      return false;
    }
    stats.diskBytes += bytes;
    this.#reserved += bytes;
    return true;
  }

  #queueStage(): void {
    if (this.#staged === 0) return;
    const b = this.#staged === STAGE_BYTES ? this.#stage! : this.#stage!.subarray(0, this.#staged);
    this.#pending.push(b);
    this.#pendingBytes += b.length;
    this.#stage = null;
    this.#staged = 0;
  }

  /** The last chunk was read: the body is kept in memory (ready now), or its last bytes go to the file. */
  #complete(): void {
    if (!this.#spilled) {
      stats.memory++;
      this.#tellReady();
      return;
    }
    this.#queueStage();
    this.#flush();
  }

  /** Writes what is pending (one writev at a time, in order), pausing the client while too much waits. */
  #flush(): void {
    if (this.#pendingBytes >= PENDING_HIGH && !this.#paused) {
      this.#paused = true;
      this.#owner.bufferPaused(true);
    }
    if (this.#fd < 0 || this.#inflight > 0 || this.#disposed || this.#failed) return;
    if (this.#pending.length === 0) {
      if (this.#paused) {
        this.#paused = false;
        this.#owner.bufferPaused(false);
      }
      if (this.#scanner.done && this.#written === this.length) this.#tellReady();
      return;
    }
    const batch = this.#pending;
    const bytes = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#inflight++;
    this.#diskWait('write', this.#writeTimedOut);
    writev(this.#fd, batch, this.#written, (err, n) => {
      this.#inflight--;
      this.#diskDone();
      if (this.#disposed) return this.#closeFile();
      if (err !== null) return this.#ioFailed(ioError('write', this.#settings.dir, err));
      this.#written += n;
      if (n < bytes) {
        // a short write (a regular file gives one only as it fills): the rest goes again, first
        this.#pending = [...restAfter(batch, n), ...this.#pending];
        this.#pendingBytes += bytes - n;
      }
      this.#flush();
    });
  }

  /** `op` starts on the temp file: `fail` ends the request if it is not done within body_buffer.disk_timeout. */
  #diskWait(op: DiskOp, fail: (err: ProxyError) => void): void {
    this.#diskOp = op;
    this.#diskFail = fail;
    if (this.#diskTimer === null) {
      this.#diskTimer = setTimeout(this.#diskTimedOut, this.#settings.diskTimeout);
      this.#diskTimer.unref();
    } else {
      this.#diskTimer.refresh();
    }
  }

  #diskDone(): void {
    this.#diskOp = null;
    this.#diskFail = null;
  }

  readonly #diskTimedOut = (): void => {
    const op = this.#diskOp;
    const fail = this.#diskFail;
    if (op === null || fail === null || this.#disposed) return;
    // the operation stays in flight (a thread of the pool is stuck in it): its descriptor is closed when it
    // returns (see #closeFile), the request ends now
    this.#diskFail = null;
    fail(new ProxyError('BODY_BUFFER_TIMEOUT', `request body temp file ${op} in ${this.#settings.dir} took over ${this.#settings.diskTimeout}ms (body_buffer.disk_timeout)`));
  };

  readonly #writeTimedOut = (err: ProxyError): void => this.#ioFailed(err);

  #tellReady(): void {
    if (this.#readyTold || this.#disposed) return;
    this.#readyTold = true;
    this.#owner.bufferReady();
  }

  #ioFailed(err: ProxyError): void {
    if (this.#disposed || this.#failed) return;
    this.#failed = true;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#owner.bufferFailed(err);
  }

  /**
   * The body from its first byte into `sink`: memory parts at once, a file by REPLAY_BYTES reads, each next
   * read only after the sink took the previous one (never the whole file in memory). Only once ready.
   */
  replay(sink: ReplaySink): Replay {
    let stopped = false;
    let waiting = false;
    let position = 0;
    let index = 0;
    let reading = false;
    const parts = this.#parts;
    const failed = (err: ProxyError): void => {
      if (stopped) return;
      stopped = true;
      sink.replayFailed(err);
    };
    const step = (): void => {
      waiting = false;
      if (parts !== null) {
        while (!stopped && index < parts.length) {
          if (!sink.replayData(parts[index++])) {
            waiting = true;
            return;
          }
        }
        if (!stopped) sink.replayEnd();
        return;
      }
      if (reading || stopped) return;
      if (position >= this.length) {
        sink.replayEnd();
        return;
      }
      const fd = this.#fd;
      const want = Math.min(REPLAY_BYTES, this.length - position);
      const into = Buffer.allocUnsafe(want);
      reading = true;
      this.#inflight++;
      this.#diskWait('read', failed);
      read(fd, into, 0, want, position, (err, n) => {
        reading = false;
        this.#inflight--;
        this.#diskDone();
        if (this.#disposed) return this.#closeFile();
        if (stopped) return;
        if (err !== null || n === 0) {
          stopped = true;
          sink.replayFailed(err !== null ? ioError('read', this.#settings.dir, err) : new ProxyError('BODY_BUFFER_IO', `request body temp file in ${this.#settings.dir} ended at ${position} of ${this.length} bytes`));
          return;
        }
        position += n;
        if (sink.replayData(n === want ? into : into.subarray(0, n))) step();
        else waiting = true;
      });
    };
    queueMicrotask(step);
    return {
      resume: () => {
        if (waiting && !stopped) step();
      },
      stop: () => {
        stopped = true;
      },
    };
  }

  /** The request is over: memory dropped, the file closed (after any read or write in flight), its disk use released. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#parts = null;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#stage = null;
    stats.diskBytes -= this.#reserved;
    this.#reserved = 0;
    if (this.#diskTimer !== null) clearTimeout(this.#diskTimer);
    this.#diskTimer = null;
    this.#diskFail = null;
    this.#closeFile();
  }

  /** Closes the descriptor once nothing uses it: a pending read or write on a closed, reused fd would hit another file. */
  #closeFile(): void {
    if (this.#fd < 0 || this.#inflight > 0 || this.#opening) return;
    const fd = this.#fd;
    this.#fd = -1;
    close(fd, () => {});
  }
}

/** The buffers of `batch` after its first `n` bytes. */
function restAfter(batch: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = n;
  for (const b of batch) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}
