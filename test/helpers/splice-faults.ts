// Faults of the splice relay that a test cannot cause from outside: a relay that cannot start (no pipes left).
import type { TestContext } from 'node:test';
import { native } from '../../src/native/addon.js';

/** Until the test ends, spliceStart fails as it does on EMFILE, keeping its contract: it owns (closes) the fds it was given. */
export function spliceStartFails(t: TestContext): void {
  const addon = native()!;
  const real = addon.spliceStart;
  addon.spliceStart = (a, b) => {
    addon.close(a);
    addon.close(b);
    throw new Error('spliceStart: pipe2: Too many open files');
  };
  t.after(() => (addon.spliceStart = real));
}
