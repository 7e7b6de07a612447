// The process's file-descriptor budget: makes sure the soft RLIMIT_NOFILE is the hard one at start (Node 20
// raises it itself at startup, node.cc PlatformInit, but offers no API; the addon's setrlimit checks and says
// why not), and refuses an accepted connection while fewer than FD_RESERVE descriptors
// are left, so that the connection's upstream socket always finds one and libuv never reaches EMFILE on accept
// (it then accepts and closes connections itself, and Node reports nothing). Counting and the rate-limited log
// line are the caller's (accept-paths.ts); this module keeps no sockets.
import { readFileSync } from 'node:fs';
import { native } from '../native/addon.js';

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

/** Near the limit an exact count is taken at most this often. */
const NEAR_RECOUNT_MS = 10;
/**
 * Above this soft limit no exact count is taken (one poll() slot per descriptor: 8 MiB and ~25 ms at 1Mi; a
 * limit of "infinity" can mean 2^30): the descriptor-number test alone applies.
 */
const MAX_COUNTED_LIMIT = 1 << 20;

/**
 * Decides per accepted connection whether descriptors are left for it. The estimate starts from an exact count
 * (addon: one poll() over the table, ~0.5 ms at 20,000) and each accept adds two (its socket and its
 * upstream's), never subtracting closes, so it only errs towards refusing; once it comes near the limit an exact
 * count replaces it, at most every 10 ms, and a refusal the estimate alone makes is checked by a count first: native
 * accept takes a whole batch before the first is admitted, so a count already holds the batch's sockets and two
 * more per accept would refuse connections for descriptors nobody uses. A refusal the count itself makes needs
 * no new count, so refusals cost nothing at the limit. Far from the limit an accept costs an addition.
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
    this.#count = soft > MAX_COUNTED_LIMIT ? undefined : count;
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
    if (this.#countedAt === Number.NEGATIVE_INFINITY || (this.#exact + this.#since >= soft - 4 * FD_RESERVE && now - this.#countedAt >= NEAR_RECOUNT_MS)) this.#recount(now);
    if (this.#exact + this.#since < soft - FD_RESERVE) return true;
    if (this.#since === 0 || this.#exact >= soft - FD_RESERVE) return false;
    this.#recount(now);
    return this.#exact < soft - FD_RESERVE;
  }

  #recount(now: number): void {
    this.#exact = this.#count!(this.soft) + 1; // + the upstream socket this connection will open
    this.#countedAt = now;
    this.#since = 0;
  }
}

function nativeCounter(): ((below: number) => number) | undefined {
  const addon = native();
  return addon === undefined ? undefined : (below) => addon.countOpenFds(below);
}
