// Buffered, asynchronous writing of whole log lines to a file descriptor (stdout) or a file (the access log), so
// that a request pays for copying its line into a buffer, never for a write(2): lines are encoded straight into
// fixed chunks (256 KiB; PIPE_BUF to a pipe shared with other processes, so lines never interleave). A full chunk
// leaves at once, in one write on a libuv thread; a partial one at the end of the event-loop turn when nothing
// was written for FLUSH_MS, else once FLUSH_MS have passed (a busy proxy pays one write per chunk or per FLUSH_MS,
// not one per turn). Bounded: past `maxBuffered` bytes waiting, new lines are dropped and counted, never queued.
// A writer of many lines (the access log) may also hold them unwritten and hand them over when the chunk is about
// to leave (defer()), writing them straight into the chunk (claim()/commit()): its lines keep their order with
// everyone else's. A file can be reopened (logrotate: SIGUSR1). What a line says is the caller's; this file only
// moves bytes.
import { closeSync, fstatSync, openSync, write, writeSync } from 'node:fs';

/** Bytes of lines held waiting for the disk or stdout's reader; past it new lines are dropped (and counted). */
export const MAX_BUFFERED = 8 * 1024 * 1024;
/** POSIX PIPE_BUF on Linux: a write to a pipe up to this size is never interleaved with other writers'. */
const PIPE_BUF = 4096;
/**
 * One write to a file or terminal at most: a busy turn's lines leave in a few writes, a quiet one's in one. A write
 * costs ~40-50 µs of CPU whatever its size (fs.write, a libuv thread woken, its completion; measured on the bench
 * machine), 0.3 µs a line in 64 KiB chunks: at ~14 MB/s of lines a busy worker now writes every ~10 ms (FLUSH_MS)
 * rather than 200 times a second.
 */
export const FILE_CHUNK = 256 * 1024;
/**
 * Least time between the starts of two writes of a partial chunk: a write costs tens of µs of CPU (a libuv thread
 * woken, the syscall, the completion), so under load lines wait up to this long to share one (nginx's
 * `access_log ... flush=` is seconds); after a quiet spell the first line still leaves at the end of its turn.
 */
export const FLUSH_MS = 10;
/** A non-blocking stdout that is full (EAGAIN) is tried again after this. */
const RETRY_MS = 10;
/** Emptied chunks kept for the next lines instead of allocating new ones (one is filled while one is written). */
const SPARE_CHUNKS = 2;
/** How long `drain()` waits at most for the writes in flight (a clean stop must not hang on a dead disk). */
const DRAIN_MS = 5000;

/** Bytes ready to leave in one write, and how many lines they hold (counted as dropped if the write fails). */
type Piece = { buf: Buffer; lines: number };

/** A claimed chunk has at least this many bytes free (a line that outgrows it is given by writeBytes() instead). */
const CLAIM_ROOM = 1024;

export class LineWriter {
  readonly #path: string | undefined;
  #fd: number;
  /** Chunk size: whole lines of one write, small to a pipe shared with other processes. */
  readonly #chunk: number;
  readonly #maxBuffered: number;
  /** The chunk being filled, its used length and line count. */
  #cur: Buffer | null = null;
  #curLen = 0;
  #curLines = 0;
  /** Full chunks waiting for the write in flight, oldest first; their bytes. */
  #ready: Piece[] = [];
  #readyBytes = 0;
  #spare: Buffer[] = [];
  #writing = false;
  /** A flush is set (end of turn or timer) for the lines of the chunk being filled. */
  #scheduled = false;
  /** Date.now() when the last write of a partial chunk started. */
  #lastFlush = 0;
  #reopen = false;
  #closed = false;
  /** In flushSync(): pieces sealed meanwhile are written there, not started on libuv's thread. */
  #syncing = false;
  #drained: (() => void)[] = [];
  /** Lines held elsewhere (defer()): handed over before any other line, flush, drain or close. */
  #deferred: (() => void) | null = null;
  /** Lines dropped because the buffer was full (the disk or the reader of stdout did not keep up) or a write failed. */
  dropped = 0;
  /** Writes started (a full chunk, a partial one, or a line longer than a chunk): lines per write is what pacing buys. */
  writes = 0;

  /** `target`: a file descriptor (1 = stdout; never closed here) or a file path, opened for appending. */
  constructor(target: number | string, maxBuffered = MAX_BUFFERED) {
    this.#path = typeof target === 'string' ? target : undefined;
    this.#fd = typeof target === 'string' ? openSync(target, 'a', 0o640) : target;
    this.#maxBuffered = maxBuffered;
    let fifo = false;
    try {
      const st = fstatSync(this.#fd);
      fifo = st.isFIFO() || st.isSocket();
    } catch {
      // an fd that cannot be stat'ed: keep writes small
      fifo = true;
    }
    this.#chunk = fifo ? PIPE_BUF : FILE_CHUNK;
  }

  /** Bytes waiting to be written (the write in flight not counted). */
  get buffered(): number {
    return this.#readyBytes + this.#curLen;
  }

  /** Appends `line` (which ends with "\n"); it leaves by the end of this turn of the event loop. */
  write(line: string): void {
    if (this.#deferred !== null) this.#pull();
    if (this.#closed) return;
    const cur = this.#cur;
    // a UTF-16 unit is at most 3 bytes of UTF-8: most lines are copied without measuring them first
    if (cur !== null && line.length * 3 <= cur.length - this.#curLen) {
      this.#curLen += cur.write(line, this.#curLen);
      this.#curLines++;
    } else {
      this.#writeSlow(line, Buffer.byteLength(line));
    }
    // while a write is in flight its completion (#next) takes these lines: no timer per turn meanwhile
    if (!this.#scheduled && !this.#writing) this.#schedule();
  }

  /** Appends `line` (whole, ending with "\n", copied now: the caller may reuse it): write() for an encoded line. */
  writeBytes(line: Uint8Array): void {
    if (this.#deferred !== null) this.#pull();
    if (this.#closed) return;
    const cur = this.#cur;
    const len = line.length;
    if (cur !== null && len <= cur.length - this.#curLen) {
      cur.set(line, this.#curLen);
      this.#curLen += len;
      this.#curLines++;
    } else {
      this.#writeSlow(line, len);
    }
    if (!this.#scheduled && !this.#writing) this.#schedule();
  }

  /**
   * `pull` holds lines for this writer and writes them (claim()/commit(), writeBytes()) when called: before any
   * other line is given, before a chunk leaves, before drain(), flushSync() and close(); they leave as a line
   * given now would (by the end of this turn, or with the paced write). Called once, then forgotten: the holder
   * defers again for lines it takes later. Lines deferred by another holder are pulled first (their order kept).
   */
  defer(pull: () => void): void {
    if (this.#deferred === pull || this.#closed) return;
    if (this.#deferred !== null) this.#pull();
    this.#deferred = pull;
    if (!this.#scheduled && !this.#writing) this.#schedule();
  }

  /** Forgets `pull` (its holder wrote its lines by itself). */
  undefer(pull: () => void): void {
    if (this.#deferred === pull) this.#deferred = null;
  }

  #pull(): void {
    const pull = this.#deferred;
    if (pull === null) return;
    this.#deferred = null;
    pull();
  }

  /**
   * The chunk being filled, with at least CLAIM_ROOM bytes free from `claimedAt`, for a line written straight
   * into it and then commit()ed; null when closed or when a new chunk would pass `maxBuffered` (writeBytes() then
   * drops and counts the line). Bytes written past what is committed are ignored.
   */
  claim(): Buffer | null {
    if (this.#deferred !== null) this.#pull();
    if (this.#closed) return null;
    const cur = this.#cur;
    if (cur !== null && cur.length - this.#curLen >= CLAIM_ROOM) return cur;
    if (this.#readyBytes + this.#curLen + this.#chunk > this.#maxBuffered) return null;
    this.#seal();
    const next = this.#spare.pop() ?? Buffer.allocUnsafeSlow(this.#chunk);
    this.#cur = next;
    this.#curLen = 0;
    this.#curLines = 0;
    return next;
  }

  /** Where a line written into the claimed chunk starts. */
  get claimedAt(): number {
    return this.#curLen;
  }

  /** The line of `len` bytes written into the claimed chunk from claimedAt (whole, ending with "\n") is taken. */
  commit(len: number): void {
    this.#curLen += len;
    this.#curLines++;
    if (!this.#scheduled && !this.#writing) this.#schedule();
  }

  /** The chunk being filled leaves at the end of this turn, or when FLUSH_MS have passed since the last flush. */
  #schedule(): void {
    this.#scheduled = true;
    const wait = this.#lastFlush + FLUSH_MS - Date.now();
    if (wait <= 0) setImmediate(this.#flush);
    else setTimeout(this.#flush, wait);
  }

  /** A line that may not fit the chunk being filled, as text or as bytes; `bytes`: its length in UTF-8. */
  #writeSlow(line: string | Uint8Array, bytes: number): void {
    const cur = this.#cur;
    if (cur !== null && bytes <= cur.length - this.#curLen) {
      this.#curLen += LineWriter.#copy(line, cur, this.#curLen);
      this.#curLines++;
      return;
    }
    // a new chunk counts whole: what it will hold is then within the bound before its lines come
    if (this.#readyBytes + this.#curLen + Math.max(bytes, this.#chunk) > this.#maxBuffered) {
      this.dropped++;
      return;
    }
    this.#seal();
    if (bytes > this.#chunk) {
      // longer than a chunk: a write of its own (to a pipe, it may then mix with other writers' lines)
      const buf = Buffer.allocUnsafeSlow(bytes);
      LineWriter.#copy(line, buf, 0);
      this.#queue({ buf, lines: 1 });
      return;
    }
    const next = this.#spare.pop() ?? Buffer.allocUnsafeSlow(this.#chunk);
    this.#cur = next;
    this.#curLen = LineWriter.#copy(line, next, 0);
    this.#curLines = 1;
  }

  static #copy(line: string | Uint8Array, to: Buffer, at: number): number {
    if (typeof line === 'string') return to.write(line, at);
    to.set(line, at);
    return line.length;
  }

  /** The chunk being filled joins the ready ones (and leaves now if nothing is in flight). */
  #seal(): void {
    const piece = this.#detach();
    if (piece !== undefined) this.#queue(piece);
  }

  /** The chunk being filled as a piece (undefined when empty); new lines go to another chunk. */
  #detach(): Piece | undefined {
    const cur = this.#cur;
    if (cur === null || this.#curLen === 0) return undefined;
    const piece = { buf: cur.subarray(0, this.#curLen), lines: this.#curLines };
    this.#cur = null;
    this.#curLen = 0;
    this.#curLines = 0;
    return piece;
  }

  #queue(piece: Piece): void {
    this.#ready.push(piece);
    this.#readyBytes += piece.buf.length;
    if (!this.#writing && !this.#syncing) this.#next();
  }

  readonly #flush = (): void => {
    this.#scheduled = false;
    // while a write is in flight the chunk keeps filling: the write after it takes these lines too (#next)
    if (this.#closed || this.#writing) return;
    this.#pull(); // full chunks of these lines leave at once; the write of one then takes the rest after it
    if (this.#writing || this.#curLen === 0) return;
    this.#lastFlush = Date.now();
    this.#seal();
  };

  /** Opens the file again by its path (after logrotate renamed it); stdout is left alone. */
  reopen(): void {
    if (this.#path === undefined || this.#closed) return;
    if (this.#writing) {
      this.#reopen = true; // after the write in flight, which still goes to the old file
      return;
    }
    this.#swapFile();
  }

  #swapFile(): void {
    this.#reopen = false;
    const path = this.#path as string;
    let fd: number;
    try {
      fd = openSync(path, 'a', 0o640);
    } catch {
      return; // keep writing to the open file: losing lines is worse than writing them to the renamed one
    }
    const old = this.#fd;
    this.#fd = fd;
    closeSync(old);
  }

  /** Resolves once every line given so far has been written (or failed), or after DRAIN_MS: a clean stop. */
  drain(): Promise<void> {
    this.#pull();
    this.#seal();
    if (!this.#writing) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, DRAIN_MS);
      timer.unref();
      this.#drained.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * Writes what is buffered now, synchronously (process exit). A write still in flight on libuv's thread is
   * not waited for: `drain()` first where the stop is a clean one.
   */
  flushSync(): void {
    // the chunk being filled was once sealed here and so started as an asynchronous write: lost at process exit
    this.#syncing = true;
    try {
      this.#pull();
      this.#seal();
    } finally {
      this.#syncing = false;
    }
    const pieces = this.#ready;
    this.#ready = [];
    this.#readyBytes = 0;
    // while a write is in flight the first ready piece is not yet started; all of these are unwritten
    for (const p of pieces) {
      let buf = p.buf;
      for (let tries = 0; buf.length > 0 && tries < 1000; ) {
        try {
          buf = buf.subarray(writeSync(this.#fd, buf));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') {
            this.dropped += p.lines;
            break;
          }
          tries++;
        }
      }
    }
  }

  /** Closes a file writer once what it holds is written (in order); a closed writer drops what it is given. */
  close(): void {
    if (this.#closed) return;
    this.#pull();
    this.#seal();
    this.#closed = true;
    if (this.#writing) return; // the writes in flight and ready go on; the last one closes the file
    if (this.#path !== undefined) closeSync(this.#fd);
  }

  /** Starts the write of the oldest ready piece, else of the lines that came meanwhile once FLUSH_MS have passed. */
  #next(): void {
    let piece = this.#ready.shift();
    if (piece !== undefined) this.#readyBytes -= piece.buf.length;
    else if (this.#curLen > 0 && !this.#closed) {
      const now = Date.now();
      if (now - this.#lastFlush >= FLUSH_MS) {
        this.#lastFlush = now;
        piece = this.#detach();
      } else if (!this.#scheduled) {
        this.#schedule();
      }
    } else {
      piece = this.#detach();
    }
    if (piece === undefined) {
      if (this.#closed && this.#path !== undefined) closeSync(this.#fd);
      for (const done of this.#drained.splice(0)) done();
      return;
    }
    this.#writing = true;
    this.writes++;
    this.#send(piece, piece.buf);
  }

  #send(piece: Piece, buf: Buffer): void {
    write(this.#fd, buf, 0, buf.length, null, (err, n) => {
      if (err !== null) {
        if (err.code === 'EAGAIN') {
          setTimeout(() => this.#send(piece, buf), RETRY_MS).unref();
          return;
        }
        // EPIPE (stdout's reader went away), ENOSPC...: these lines are lost; later ones are tried again
        this.dropped += piece.lines;
      } else if (n < buf.length) {
        this.#send(piece, buf.subarray(n));
        return;
      }
      // deferred lines join the chunk while this write still counts as in flight: none starts from inside
      this.#pull();
      this.#writing = false;
      const whole = piece.buf.buffer;
      if (piece.buf.byteOffset === 0 && whole.byteLength === this.#chunk && this.#spare.length < SPARE_CHUNKS) {
        this.#spare.push(Buffer.from(whole, 0, this.#chunk));
      }
      if (this.#reopen && !this.#closed) this.#swapFile();
      this.#next();
    });
  }
}

let stdout: LineWriter | null = null;

/** The process's one writer to stdout: pino's lines and the access log's share it, so their lines never mix. */
export function stdoutWriter(): LineWriter {
  if (stdout === null) {
    const w = new LineWriter(1);
    stdout = w;
    // lines of the last turn (a fatal error, process.exit) still leave
    process.once('exit', () => w.flushSync());
  }
  return stdout;
}
