// The process's file-descriptor budget: makes sure the soft RLIMIT_NOFILE is the hard one at start (Node 20
// raises it itself at startup, node.cc PlatformInit, but offers no API; the addon's setrlimit checks and says
// why not), and refuses an accepted connection while fewer than FD_RESERVE descriptors
// are left, so that the connection's upstream socket always finds one and libuv never reaches EMFILE on accept
// (it then accepts and closes connections itself, and Node reports nothing). Counting and the rate-limited log
// line are the caller's (worker.ts); this module keeps no sockets.
import { readFileSync } from 'node:fs';
import { native } from './native/addon.js';

/** Descriptors kept free: an accepted connection needs one more for its upstream, a request may need a few. */
export const FD_RESERVE = 32;

export interface FdLimit {
  /** The soft limit now in force (-1: unlimited). */
  soft: number;
  hard: number;
  /** The soft limit before the raise. */
  before: number;
  /** Why the soft limit could not be raised (no addon, setrlimit refused); undefined when it was, or did not need to be. */
  notRaised?: string;
}

/** Max open files of this process as /proc/self/limits shows them (soft, hard; -1 = unlimited); undefined off Linux. */
function readLimits(): { soft: number; hard: number } | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const m = line === undefined ? null : /^Max open files\s+(\S+)\s+(\S+)/.exec(line);
    if (m === null) return undefined;
    const n = (v: string) => (v === 'unlimited' ? -1 : Number(v));
    return { soft: n(m[1]), hard: n(m[2]) };
  } catch {
    return undefined;
  }
}

/** Raises the soft RLIMIT_NOFILE to the hard one; says what it is now and, when it could not raise it, why. */
export function raiseFdLimit(): FdLimit {
  const addon = native();
  if (addon !== undefined) {
    try {
      return addon.raiseFdLimit();
    } catch (err) {
      const now = readLimits() ?? { soft: -1, hard: -1 };
      return { ...now, before: now.soft, notRaised: (err as Error).message };
    }
  }
  const now = readLimits() ?? { soft: -1, hard: -1 };
  const notRaised = now.soft === now.hard ? undefined : 'the native addon is not loaded (Node has no setrlimit)';
  return { ...now, before: now.soft, notRaised };
}

/** An exact count is taken at least this often, and at most this often while the estimate is near the limit. */
const RECOUNT_MS = 1_000;
const NEAR_RECOUNT_MS = 10;

/**
 * Decides per accepted connection whether descriptors are left for it. Exact counts (addon: one poll() over
 * the table) are taken once a second, and every 10 ms at most while the estimate is near the limit; between
 * them each accept adds two (its socket and its upstream's), so the estimate only errs towards refusing.
 * Without the addon the accepted descriptor's number is the only signal: Linux hands out the lowest free one,
 * so one at soft - FD_RESERVE or above means no more than FD_RESERVE are free (holes below make it lenient).
 */
export class FdBudget {
  readonly soft: number;
  readonly #count: ((below: number) => number) | undefined;
  readonly #now: () => number;
  #exact = 0;
  #countedAt = Number.NEGATIVE_INFINITY;
  #since = 0;

  constructor(soft: number, count: ((below: number) => number) | undefined = nativeCounter(), now: () => number = Date.now) {
    this.soft = soft;
    this.#count = count;
    this.#now = now;
  }

  /** False when admitting a connection that was given descriptor `fd` would leave fewer than FD_RESERVE free. */
  admit(fd: number): boolean {
    const soft = this.soft;
    if (soft <= 0) return true; // unlimited
    if (fd >= soft - FD_RESERVE) return false;
    if (this.#count === undefined) return true;
    this.#since += 2;
    const now = this.#now();
    const age = now - this.#countedAt;
    if (age >= RECOUNT_MS || (this.#exact + this.#since >= soft - 4 * FD_RESERVE && age >= NEAR_RECOUNT_MS)) {
      this.#exact = this.#count(soft) + 1; // + the upstream socket this connection will open
      this.#countedAt = now;
      this.#since = 0;
    }
    return this.#exact + this.#since < soft - FD_RESERVE;
  }
}

function nativeCounter(): ((below: number) => number) | undefined {
  const addon = native();
  return addon === undefined ? undefined : (below) => addon.countOpenFds(below);
}
