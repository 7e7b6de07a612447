// A full garbage collection in a running Portico process, asked for from outside through the V8 inspector, so that a
// memory test can tell what a process holds from garbage V8 has not collected yet. Portico is started with
// INSPECT_ENV (the inspector on a free loopback port in every process); the ports are read from its stderr. A heap
// snapshot tells what a process keeps by constructor (objectCounts).
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
async function session<T>(
  url: string,
  run: (call: (method: string, params?: object) => Promise<InspectorReply>) => Promise<T>,
  onEvent?: (method: string, params: Record<string, unknown>) => void,
): Promise<T> {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 30 });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let next = 1;
  const waiting = new Map<number, (reply: InspectorReply) => void>();
  ws.on('message', (data) => {
    const reply = JSON.parse(String(data)) as InspectorReply & { method?: string; params?: Record<string, unknown> };
    if (reply.id !== undefined) waiting.get(reply.id)?.(reply);
    else if (reply.method !== undefined) onEvent?.(reply.method, reply.params ?? {});
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

/** V8's heap in use and the memory of ArrayBuffers/Buffers (outside that heap), in KiB, after the collections. */
export interface HeapAfterGc {
  heapUsedKiB: number;
  externalKiB: number;
}

/** Runs two full collections in the process `pid` of `portico` (started with INSPECT_ENV). */
export async function collectGarbage(portico: Portico, pid: number): Promise<void> {
  await collectGarbageIn(portico.stderr, pid);
}

/** The same for any Portico started with INSPECT_ENV, given what its processes wrote to stderr so far. */
export async function collectGarbageIn(stderr: string, pid: number): Promise<HeapAfterGc> {
  const urls = [...stderr.matchAll(/Debugger listening on (ws:\/\/\S+)/g)].map((m) => m[1]);
  assert.ok(urls.length > 0, `Portico was started without the inspector (INSPECT_ENV); stderr: ${stderr.slice(0, 500)}`);
  for (const url of urls) {
    const done = await session(url, async (call) => {
      const reply = await call('Runtime.evaluate', { expression: 'process.pid', returnByValue: true });
      if (reply.result?.result?.value !== pid) return undefined;
      await call('HeapProfiler.collectGarbage');
      await call('HeapProfiler.collectGarbage');
      const usage = await call('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true });
      const m = JSON.parse(String(usage.result?.result?.value)) as { heapUsed: number; external: number };
      return { heapUsedKiB: Math.round(m.heapUsed / 1024), externalKiB: Math.round(m.external / 1024) };
    }).catch(() => undefined); // a process that has exited meanwhile (a replaced worker) no longer listens
    if (done !== undefined) return done;
  }
  assert.fail(`no inspector session found for pid ${pid} among ${urls.length}`);
}

/** The fields of a V8 heap snapshot that objectCounts reads. */
interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/**
 * How many live objects of each constructor in `names` the process `pid` of `portico` holds: a heap snapshot
 * (V8 collects garbage before taking it) read by constructor name.
 */
export async function objectCounts(portico: Portico, pid: number, names: readonly string[]): Promise<Map<string, number>> {
  const urls = [...portico.stderr.matchAll(/Debugger listening on (ws:\/\/\S+)/g)].map((m) => m[1]);
  for (const url of urls) {
    const chunks: string[] = [];
    const taken = await session(
      url,
      async (call) => {
        const reply = await call('Runtime.evaluate', { expression: 'process.pid', returnByValue: true });
        if (reply.result?.result?.value !== pid) return false;
        await call('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
        return true;
      },
      (method, params) => {
        if (method === 'HeapProfiler.addHeapSnapshotChunk') chunks.push(String(params.chunk));
      },
    ).catch(() => false);
    if (!taken) continue;
    const snap = JSON.parse(chunks.join('')) as HeapSnapshot;
    const fields = snap.snapshot.meta.node_fields;
    const typeNames = snap.snapshot.meta.node_types[0];
    const typeAt = fields.indexOf('type');
    const nameAt = fields.indexOf('name');
    const counts = new Map(names.map((n) => [n, 0]));
    for (let i = 0; i < snap.nodes.length; i += fields.length) {
      if (typeNames[snap.nodes[i + typeAt]] !== 'object') continue;
      const name = snap.strings[snap.nodes[i + nameAt]];
      const n = counts.get(name);
      if (n !== undefined) counts.set(name, n + 1);
    }
    return counts;
  }
  assert.fail(`no inspector session found for pid ${pid} among ${urls.length}`);
}
