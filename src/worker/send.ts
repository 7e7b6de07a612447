// The worker's one way to the primary: a message over the fork() IPC channel (the types are ipc.ts's). It never
// throws and never waits: a closed channel means the primary is gone, and 'disconnect' starts the shutdown.
import type { ToPrimary } from './ipc.js';

export function send(msg: ToPrimary): void {
  // A closed channel means the primary is gone; 'disconnect' starts the shutdown, nothing to report here.
  if (process.connected && process.send !== undefined) process.send(msg, undefined, undefined, () => {});
}
