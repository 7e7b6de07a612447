// Buffered, asynchronous writing of whole log lines to a file descriptor (stdout) or a file (the access log), so
// that a request pays for appending a string, never for a write(2): lines written in one turn of the event loop
// leave in one write on a libuv thread. Bounded (lines past `maxBuffered` are counted and dropped), whole lines
// only per write (at most PIPE_BUF bytes to a pipe shared with other processes, so lines never interleave), and
// a file can be reopened (logrotate: SIGUSR1). What a line says is the caller's; this file only moves bytes.
import { closeSync, fstatSync, openSync, write, writeSync } from 'node:fs';

/** Bytes of lines held while a write is in flight; past it new lines are dropped (and counted), never queued. */
const MAX_BUFFERED = 8 * 1024 * 1024;
/** POSIX PIPE_BUF on Linux: a write to a pipe up to this size is never interleaved with other writers'. */
const PIPE_BUF = 4096;
/** One write to a file or terminal at most (whole lines). */
const MAX_WRITE = 256 * 1024;
/** A non-blocking stdout that is full (EAGAIN) is tried again after this. */
const RETRY_MS = 10;

export class LineWriter {
  readonly #path: string | undefined;
  #fd: number;
  /** Whole lines of one write: small to a pipe shared with other processes, larger elsewhere. */
  readonly #chunk: number;
  #pending: string[] = [];
  #pendingBytes = 0;
  #writing = false;
  #scheduled = false;
  #reopen = false;
  #closed = false;
  /** Lines dropped because the buffer was full (the disk or the reader of stdout did not keep up). */
  dropped = 0;

  /** `target`: a file descriptor (1 = stdout; never closed here) or a file path, opened for appending. */
  constructor(target: number | string) {
    this.#path = typeof target === 'string' ? target : undefined;
    this.#fd = typeof target === 'string' ? openSync(target, 'a', 0o640) : target;
    let fifo = false;
    try {
      const st = fstatSync(this.#fd);
      fifo = st.isFIFO() || st.isSocket();
    } catch {
      // an fd that cannot be stat'ed: keep writes small
      fifo = true;
    }
    // lengths are counted in UTF-16 units: a third of PIPE_BUF stays under it whatever the characters
    this.#chunk = fifo ? Math.floor(PIPE_BUF / 3) : MAX_WRITE;
  }

  /** Appends `line` (which ends with "\n"); it leaves in the next turn of the event loop. */
  write(line: string): void {
    if (this.#closed) return;
    if (this.#pendingBytes > MAX_BUFFERED) {
      this.dropped++;
      return;
    }
    this.#pending.push(line);
    this.#pendingBytes += line.length;
    if (!this.#scheduled && !this.#writing) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
  }

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

  /** Writes what is buffered now, synchronously (process exit). */
  flushSync(): void {
    let text = this.#take(Infinity);
    for (let tries = 0; text !== '' && tries < 1000; ) {
      try {
        const n = writeSync(this.#fd, text);
        text = Buffer.from(text).subarray(n).toString();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
        tries++;
      }
    }
  }

  /** Flushes and closes a file writer; a closed writer drops what it is given. */
  close(): void {
    if (this.#closed) return;
    this.flushSync();
    this.#closed = true;
    if (this.#path !== undefined) closeSync(this.#fd);
  }

  /** Whole lines from the front of the buffer, at most `limit` bytes (one line at least). */
  #take(limit: number): string {
    const p = this.#pending;
    if (p.length === 0) return '';
    let n = 0;
    let bytes = 0;
    while (n < p.length && (n === 0 || bytes + p[n].length <= limit)) bytes += p[n++].length;
    const text = n === p.length ? p.join('') : p.slice(0, n).join('');
    if (n === p.length) this.#pending = [];
    else this.#pending = p.slice(n);
    this.#pendingBytes -= bytes;
    return text;
  }

  readonly #flush = (): void => {
    this.#scheduled = false;
    if (this.#writing || this.#closed) return;
    const text = this.#take(this.#chunk);
    if (text === '') return;
    this.#writing = true;
    this.#send(Buffer.from(text));
  };

  #send(buf: Buffer): void {
    write(this.#fd, buf, 0, buf.length, null, (err, n) => {
      if (err !== null) {
        if (err.code === 'EAGAIN' && !this.#closed) {
          setTimeout(() => this.#send(buf), RETRY_MS).unref();
          return;
        }
        // EPIPE (stdout's reader went away), ENOSPC...: these lines are lost; later ones are tried again
      } else if (n < buf.length) {
        this.#send(buf.subarray(n));
        return;
      }
      this.#writing = false;
      if (this.#reopen) this.#swapFile();
      if (this.#pending.length > 0) this.#flush();
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
