// A target's FIFO of acquires waiting for a socket at max_connections: the waiter record and the walk that skips
// served or cancelled entries and keeps the array bounded. It arms no timer and counts nothing upstream-wide:
// the pool does (queue.size, queue.timeout).
import type { AcquireCallback, UpstreamClient } from './acquire-request.js';

/** An acquire waiting for a socket of a full target. */
export interface Waiter {
  readonly cb: AcquireCallback;
  /** End of the wait (pool clock); kept when the waiter moves to another target. */
  readonly deadline: number;
  /** Whom the connection made for this waiter will speak for (PROXY-sending pools). */
  readonly client: UpstreamClient | undefined;
  /** When its queue.timeout ends (pool clock): the pool's one queue timer answers it then. */
  readonly expires: number;
  /** Served, timed out or cancelled: skipped when met in the queue. */
  done: boolean;
}

/** A target slot's queue: waiters from `waitHead` on (entries before it are served; compacted now and then). */
export interface WaitQueue {
  waiters: Waiter[];
  waitHead: number;
}

/** Waiters still queued in a slot. */
export function firstWaiter(slot: WaitQueue): Waiter | undefined {
  const w = slot.waiters;
  while (slot.waitHead < w.length) {
    const waiter = w[slot.waitHead];
    if (!waiter.done) return waiter;
    slot.waitHead++;
  }
  if (slot.waitHead > 0) {
    w.length = 0;
    slot.waitHead = 0;
  }
  return undefined;
}

/** Takes the first live waiter off the queue, keeping the array from growing without bound. */
export function shiftWaiter(slot: WaitQueue): Waiter | undefined {
  const waiter = firstWaiter(slot);
  if (waiter === undefined) return undefined;
  slot.waitHead++;
  if (slot.waitHead >= 64 && slot.waitHead * 2 >= slot.waiters.length) {
    slot.waiters.splice(0, slot.waitHead);
    slot.waitHead = 0;
  }
  return waiter;
}
