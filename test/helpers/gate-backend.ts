// A backend whose accept is held shut (test/fixtures/backends/gate.py): connects to it stay pending until the
// test opens the gate, then each accepted connection is reset (mode 'rst') or held silently ('hold'). For the
// "client gone while the upstream connect is pending" cases. Python runs it: Node cannot stop accepting.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { TestContext } from 'node:test';
import { PYTHON } from './clients.js';
import { FIXTURES } from './paths.js';

export interface GateBackend {
  readonly port: number;
  /** Connections accepted since the gate opened (its own backlog filler included). */
  readonly accepted: number;
  /** Starts accepting. */
  open(): void;
  /** 'hold' mode: resets every connection held; resolves with how many. */
  reset(): Promise<number>;
  /** Resolves once `n` connections were accepted; rejects after `timeoutMs`. */
  acceptedReaches(n: number, timeoutMs?: number): Promise<void>;
}

export async function startGateBackend(t: TestContext, mode: 'rst' | 'hold'): Promise<GateBackend> {
  const child = spawn(PYTHON, [path.join(FIXTURES, 'backends', 'gate.py'), mode], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    child.stdin.end('close\n');
    child.kill();
  });
  let accepted = 0;
  const waiters: Array<() => void> = [];
  const resets: Array<(n: number) => void> = [];
  const lines = createInterface({ input: child.stdout });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('gate backend did not start')), 10_000);
    child.once('error', reject);
    lines.on('line', (line) => {
      const [word, n] = line.split(' ');
      if (word === 'port') {
        clearTimeout(timer);
        resolve(Number(n));
      } else if (word === 'accepted') {
        accepted = Number(n);
        for (const w of waiters.splice(0)) w();
      } else if (word === 'reset') {
        resets.shift()?.(Number(n));
      }
    });
  });
  return {
    port,
    get accepted() {
      return accepted;
    },
    open: () => child.stdin.write('open\n'),
    reset: () =>
      new Promise<number>((resolve) => {
        resets.push(resolve);
        child.stdin.write('reset\n');
      }),
    acceptedReaches(n, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`gate backend: ${accepted} accepted, waited for ${n}`)), timeoutMs);
        const check = (): void => {
          if (accepted >= n) {
            clearTimeout(timer);
            resolve();
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}
