// Faults of the splice relay that a test cannot cause from outside: a relay that cannot start (no pipes left).
import type { TestContext } from 'node:test';
import { native } from '../../src/native/addon.js';

/**
 * Until the test ends, spliceStart fails as it does on EMFILE, keeping its contract: it owns (closes) the fds it was
 * given; spliceTakeIo takes nothing (its contract when the relay cannot start).
 */
export function spliceStartFails(t: TestContext): void {
  const addon = native()!;
  const real = addon.spliceStart;
  addon.spliceStart = (a, b) => {
    addon.close(a);
    addon.close(b);
    throw new Error('spliceStart: pipe2: Too many open files');
  };
  // the hand-over by id (native sockets) fails as it does when the relay cannot start: nothing taken
  const realTake = addon.spliceTakeIo;
  if (realTake !== undefined) addon.spliceTakeIo = () => 0;
  t.after(() => {
    addon.spliceStart = real;
    addon.spliceTakeIo = realTake;
  });
}
