// A worker's open access-log files (log.access_file), one writer per path shared by every runtime, so a reload
// that keeps the path keeps the file; SIGUSR1 reopens them all (logrotate renamed the file: lines go to a new
// one at the same path). A path no config uses any more is flushed and closed when a runtime replaces another.
import { LineWriter } from '../core/line-writer.js';

export class AccessFiles {
  readonly #open = new Map<string, LineWriter>();

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
      this.#open.delete(path);
    }
  }

  reopen(): void {
    for (const w of this.#open.values()) w.reopen();
  }

  flushSync(): void {
    for (const w of this.#open.values()) w.flushSync();
  }
}
