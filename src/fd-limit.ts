// The process's file-descriptor budget: raises the soft RLIMIT_NOFILE to the hard one at start (through the
// addon; Node has no API for it), and refuses an accepted connection while fewer than FD_RESERVE descriptors
// are left, so that the connection's upstream socket (and libuv, which otherwise drops connections silently at
// EMFILE) always finds one. Counting and the rate-limited log line are the caller's (worker.ts); no sockets kept.
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

/**
 * True when a socket that was given descriptor `fd` leaves fewer than FD_RESERVE free under `soft`. Linux hands
 * out the lowest free descriptor, so every one below `fd` is in use: a cheap, conservative test per accept.
 */
export function nearFdLimit(fd: number, soft: number): boolean {
  return soft > 0 && fd >= 0 && fd >= soft - FD_RESERVE;
}
