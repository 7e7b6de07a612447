// A full garbage collection in a running Portico process, asked for from outside through the V8 inspector, so that a
// memory test can tell what a process holds from garbage V8 has not collected yet. Portico is started with
// INSPECT_ENV (the inspector on a free loopback port in every process); the ports are read from its stderr.
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import type { Portico } from './portico.js';

/** Environment for startPortico: each process (primary and workers) opens the inspector on its own free loopback port. */
export const INSPECT_ENV = { NODE_OPTIONS: '--inspect=127.0.0.1:0' } as const;

interface InspectorReply {
  id?: number;
  result?: { result?: { value?: unknown } };
  error?: { message: string };
}

/** Sends inspector commands in order over one session and resolves with their results. */
async function session<T>(url: string, run: (call: (method: string, params?: object) => Promise<InspectorReply>) => Promise<T>): Promise<T> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let next = 1;
  const waiting = new Map<number, (reply: InspectorReply) => void>();
  ws.on('message', (data) => {
    const reply = JSON.parse(String(data)) as InspectorReply;
    if (reply.id !== undefined) waiting.get(reply.id)?.(reply);
  });
  const call = (method: string, params: object = {}): Promise<InspectorReply> =>
    new Promise((resolve, reject) => {
      const id = next++;
      const timer = setTimeout(() => reject(new Error(`inspector ${method}: no answer within 30 s`)), 30_000);
      waiting.set(id, (reply) => {
        clearTimeout(timer);
        waiting.delete(id);
        if (reply.error !== undefined) reject(new Error(`inspector ${method}: ${reply.error.message}`));
        else resolve(reply);
      });
      ws.send(JSON.stringify({ id, method, params }));
    });
  try {
    return await run(call);
  } finally {
    ws.close();
  }
}

/** Runs two full collections in the process `pid` of `portico` (started with INSPECT_ENV). */
export function collectGarbage(portico: Portico, pid: number): Promise<void> {
  return collectGarbageIn(portico.stderr, pid);
}

/** The same for any Portico started with INSPECT_ENV, given what its processes wrote to stderr so far. */
export async function collectGarbageIn(stderr: string, pid: number): Promise<void> {
  const urls = [...stderr.matchAll(/Debugger listening on (ws:\/\/\S+)/g)].map((m) => m[1]);
  assert.ok(urls.length > 0, `Portico was started without the inspector (INSPECT_ENV); stderr: ${stderr.slice(0, 500)}`);
  for (const url of urls) {
    const done = await session(url, async (call) => {
      const reply = await call('Runtime.evaluate', { expression: 'process.pid', returnByValue: true });
      if (reply.result?.result?.value !== pid) return false;
      await call('HeapProfiler.collectGarbage');
      await call('HeapProfiler.collectGarbage');
      return true;
    }).catch(() => false); // a process that has exited meanwhile (a replaced worker) no longer listens
    if (done) return;
  }
  assert.fail(`no inspector session found for pid ${pid} among ${urls.length}`);
}
