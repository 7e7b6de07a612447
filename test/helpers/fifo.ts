// A named pipe for a LineWriter to write to as it would to a piped stdout: opened read-write and non-blocking, so
// opening never waits for a reader and a full pipe gives EAGAIN. Closed after the test, unless the test closed it
// first (its last writer gone, a reader of the path then sees EOF).
import { spawnSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';

export interface Fifo {
  readonly path: string;
  readonly fd: number;
  /** Closes the descriptor now (once). */
  close(): void;
}

export function openFifo(t: TestContext, dir: string, name: string): Fifo {
  const file = path.join(dir, name);
  const made = spawnSync('mkfifo', [file]);
  assert.equal(made.status, 0, String(made.stderr));
  const fd = openSync(file, constants.O_RDWR | constants.O_NONBLOCK);
  let open = true;
  const close = (): void => {
    if (!open) return;
    open = false;
    closeSync(fd);
  };
  t.after(close);
  return { path: file, fd, close };
}
