// A worker's open access-log files (log.access_file), one writer per path shared by every runtime, so a reload
// that keeps the path keeps the file; SIGUSR1 reopens them all (logrotate renamed the file: lines go to a new
// one at the same path). A path no config uses any more is flushed and closed when a runtime replaces another.
import { LineWriter } from '../core/line-writer.js';

export class AccessFiles {
  readonly #open = new Map<string, LineWriter>();
  /** Lines dropped by writers already closed (a reload moved the file elsewhere). */
  #droppedClosed = 0;

  /** The writer of `path`, opened (appending) on first use; throws when the file cannot be opened. */
  writer(path: string): LineWriter {
    let w = this.#open.get(path);
    if (w === undefined) {
      w = new LineWriter(path);
      this.#open.set(path, w);
    }
    return w;
  }

  /** Closes the writers of every path but `keep` (the path of the config now in force, if any). */
  keepOnly(keep: string | undefined): void {
    for (const [path, w] of this.#open) {
      if (path === keep) continue;
      w.close();
      this.#droppedClosed += w.dropped;
      this.#open.delete(path);
    }
  }

  /** Lines dropped so far by every file writer (too slow a disk, a failed write). */
  get dropped(): number {
    let n = this.#droppedClosed;
    for (const w of this.#open.values()) n += w.dropped;
    return n;
  }

  reopen(): void {
    for (const w of this.#open.values()) w.reopen();
  }

  /** Resolves once every line given so far is written (bounded: see LineWriter.drain). */
  async drain(): Promise<void> {
    await Promise.all([...this.#open.values()].map((w) => w.drain()));
  }

  flushSync(): void {
    for (const w of this.#open.values()) w.flushSync();
  }
}
