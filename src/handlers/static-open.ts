// Opening a file of a static route so that nothing outside its root is ever served: the candidate's real path
// (symlinks resolved) must lie inside the root, the open itself follows no final symlink, and on Linux the file
// actually opened is named again by the kernel (/proc/self/fd) so a folder swapped for a symlink between the two
// steps is caught. Owns the count of open static files against limits.static_open_files; not the cache.
import { closeSync, fstatSync, openSync, readlinkSync, realpathSync, constants as fsConstants, type Stats } from 'node:fs';

const OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;
/** The kernel's name of an open fd: Linux only; elsewhere the real-path check before the open stands alone. */
const PROC_FD = process.platform === 'linux' ? '/proc/self/fd/' : null;

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

/** Closes a file this module opened. Synchronous: close(2) of a regular file is cheap, a thread-pool round trip is not. */
export function closeFile(fd: number): void {
  openFiles--;
  try {
    closeSync(fd);
  } catch {
    // EBADF/EIO on close of a file only read: nothing to do, the descriptor is gone either way
  }
}

export function inside(real: string, root: string): boolean {
  return real === root || (real.startsWith(root) && real.charCodeAt(root.length) === 47 /* / */);
}

/** An opened regular file or folder inside the root, or the status to answer (503 = the open-files cap or EMFILE). */
export type Opened = { ok: true; fd: number; st: Stats; real: string } | { ok: false; status: 403 | 404 | 503 };

/** Opens `candidate` if it resolves inside `root` (a real path) to a regular file or a folder. */
export function openInside(root: string, candidate: string): Opened {
  let real: string;
  try {
    real = realpathSync.native(candidate);
  } catch (err) {
    return { ok: false, status: (err as NodeJS.ErrnoException).code === 'EACCES' ? 403 : 404 };
  }
  // a symlink (anywhere on the way) that leads out of the root is refused
  if (!inside(real, root)) return { ok: false, status: 403 };
  const fd = openCounted(real);
  if (typeof fd !== 'number') return fd;
  let st: Stats;
  try {
    st = fstatSync(fd);
  } catch {
    closeFile(fd);
    return { ok: false, status: 404 };
  }
  if (!st.isFile() && !st.isDirectory()) {
    closeFile(fd);
    return { ok: false, status: 404 }; // devices, fifos, sockets are never served
  }
  // between realpath and open a folder on the way may have been swapped for a symlink out of the root: O_NOFOLLOW
  // guards only the last name, so ask the kernel what was opened
  if (!openedInside(fd, root)) {
    closeFile(fd);
    return { ok: false, status: 403 };
  }
  return { ok: true, fd, st, real };
}

/** Facts a cached lookup keeps to recognise its file when it opens it again. */
export interface FileIdentity {
  readonly real: string;
  readonly dev: number;
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

/** reopen(): the file is not the one looked up (look it up again). */
export const REOPEN_CHANGED = -1;
/** reopen(): the open-files cap or the fd limit (503). */
export const REOPEN_BUSY = -2;

/**
 * Opens a file found before (a cached lookup) if it is still the same one: same device, inode, size and mtime.
 * The identity stands for the real-path check made when it was found (an inode checked inside the root), so a
 * swap anywhere on the path yields another inode and a miss. Returns the fd, REOPEN_CHANGED or REOPEN_BUSY.
 */
export function reopen(f: FileIdentity): number {
  const fd = openCounted(f.real);
  if (typeof fd !== 'number') return fd.status === 503 ? REOPEN_BUSY : REOPEN_CHANGED;
  let st: Stats;
  try {
    st = fstatSync(fd);
  } catch {
    closeFile(fd);
    return REOPEN_CHANGED;
  }
  if (st.ino !== f.ino || st.dev !== f.dev || st.size !== f.size || st.mtimeMs !== f.mtimeMs || !st.isFile()) {
    closeFile(fd);
    return REOPEN_CHANGED;
  }
  return fd;
}

function openCounted(real: string): number | { ok: false; status: 403 | 404 | 503 } {
  if (openFiles >= openFilesCap) return { ok: false, status: 503 };
  try {
    const fd = openSync(real, OPEN_FLAGS);
    openFiles++;
    return fd;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EMFILE' || code === 'ENFILE') return { ok: false, status: 503 };
    return { ok: false, status: code === 'EACCES' || code === 'ELOOP' ? 403 : 404 };
  }
}

function openedInside(fd: number, root: string): boolean {
  if (PROC_FD === null) return true;
  let name: string;
  try {
    name = readlinkSync(PROC_FD + fd);
  } catch {
    return true; // no /proc mounted (some containers): the real-path check stands alone
  }
  return inside(name, root);
}
