// A backend whose connects stay pending: test/fixtures/backends/backlog-peer.py listens with backlog 0 and does
// not accept, and one connection made here fills its accept queue, so the kernel drops later SYNs (the client
// retransmits them) until the test calls accept(). Lets a test act while Portico's upstream connect is pending.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { TestContext } from 'node:test';
import { PYTHON } from './clients.js';
import { FIXTURES } from './paths.js';

export interface BacklogPeer {
  readonly port: number;
  /** Connections it accepted and still holds. */
  readonly held: number;
  /** Starts accepting: the connects the kernel kept retrying complete (on the client's next SYN retransmit). */
  accept(): void;
  /** Closes every accepted connection with an RST. */
  reset(): void;
  /** Stops accepting and fills the accept queue again: new connects stay pending, as at the start. */
  block(): Promise<void>;
}

export async function startBacklogPeer(t: TestContext): Promise<BacklogPeer> {
  const child = spawn(PYTHON, [path.join(FIXTURES, 'backends', 'backlog-peer.py')], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    child.kill('SIGKILL');
  });
  let held = 0;
  let blocked = 0;
  const watchers = new Set<() => void>();
  const lines = createInterface({ input: child.stdout! });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`backlog-peer.py exited (${code}) before it listened`)));
    lines.on('line', (line) => {
      const [word, n] = line.split(' ');
      if (word === 'port') resolve(Number(n));
      else if (word === 'accepted' || word === 'closed') held = Number(n);
      else if (word === 'reset') held = 0;
      else if (word === 'blocked') blocked++;
      for (const w of watchers) w();
    });
  });
  // A filler: queued by the kernel, never accepted until accept(); from then on SYNs to the port are dropped.
  const fill = async (): Promise<void> => {
    const filler = net.connect({ host: '127.0.0.1', port });
    filler.on('error', () => {});
    t.after(() => {
      filler.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      filler.once('connect', resolve);
      filler.once('error', reject);
    });
  };
  await fill();
  const waitFor = (done: () => boolean, what: string, withinMs: number): Promise<void> => {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        watchers.delete(check);
        reject(new Error(`backlog peer: ${what} not within ${withinMs} ms (holds ${held})`));
      }, withinMs);
      const check = (): void => {
        if (!done()) return;
        clearTimeout(timer);
        watchers.delete(check);
        resolve();
      };
      watchers.add(check);
    });
  };
  return {
    port,
    get held() {
      return held;
    },
    accept: () => child.stdin!.write('accept\n'),
    reset: () => child.stdin!.write('reset\n'),
    async block() {
      const before = blocked;
      child.stdin!.write('block\n');
      await waitFor(() => blocked > before, 'block', 10_000);
      await fill();
    },
  };
}
