// The one bounded poll of the tests: read a value every few ms until a condition holds, failing with the last
// value after a deadline. For state that no event announces (counts in /status, a pool's open sockets); a test
// that can wait on an event waits on the event instead.
import assert from 'node:assert/strict';

/**
 * Calls `read` every `pollMs` until `done(value)` holds and returns that value; after `withinMs` fails with the
 * last value read (so a leak shows what stayed open).
 */
export async function until<T>(what: string, read: () => T | Promise<T>, done: (v: T) => boolean, withinMs = 10_000, pollMs = 50): Promise<T> {
  const deadline = Date.now() + withinMs;
  let last = await read();
  while (!done(last)) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${withinMs} ms; last: ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
    last = await read();
  }
  return last;
}
