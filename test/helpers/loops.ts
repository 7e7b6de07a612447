// Request loops for tests that change Portico under traffic (reloads, discovery): GETs back to back over one
// kept-alive connection or a fresh one each time, every failure recorded, bounded in count and time, and a wait
// for "every loop made N more requests". Waits poll a counter, never sleep for a result.
import assert from 'node:assert/strict';
import http from 'node:http';

/** One GET with its own host and agent (keep-alive tests pass an agent); says whether the socket was reused. */
export function get(host: string, port: number, urlPath: string, agent: http.Agent | false = false): Promise<{ status: number; body: string; reused: boolean; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, path: urlPath, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, reused: req.reusedSocket, headers: res.headers }));
      res.on('error', reject);
    });
    req.setTimeout(15_000, () => req.destroy(new Error('no response within 15 s')));
    req.on('error', reject);
    req.end();
  });
}

export interface GetLoop {
  /** GETs answered 200 so far. */
  readonly ok: number;
  stop(): Promise<{ ok: number; failures: string[] }>;
}

/** A loop's bounds: at most this many requests, for at most this long (defaults 20,000 and 60 s). */
export interface LoopBounds {
  maxRequests?: number;
  maxMs?: number;
  /** The address to GET from (default 127.0.0.1). */
  host?: string;
}

/**
 * GETs `urlPath` back to back until stopped (at most 20,000 requests or 60 s unless `bounds` say otherwise), over
 * one kept-alive connection or a fresh connection each time; records every failure. `check` may add a failure
 * for a 200 (wrong backend).
 */
export function getLoop(port: number, urlPath: string, keepAlive: boolean, check?: (r: { body: string; headers: http.IncomingHttpHeaders }) => string | undefined, bounds: LoopBounds = {}): GetLoop {
  const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
  const failures: string[] = [];
  let ok = 0;
  let stopped = false;
  const deadline = Date.now() + (bounds.maxMs ?? 60_000);
  const maxRequests = bounds.maxRequests ?? 20_000;
  const done = (async () => {
    for (let i = 0; i < maxRequests && !stopped && Date.now() < deadline; i++) {
      try {
        const r = await get(bounds.host ?? '127.0.0.1', port, urlPath, agent);
        const problem = r.status === 200 ? check?.(r) : `status ${r.status}: ${r.body.slice(0, 100)}`;
        if (problem === undefined) ok++;
        else failures.push(problem);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  })();
  return {
    get ok() {
      return ok;
    },
    async stop() {
      stopped = true;
      await done;
      if (agent !== false) agent.destroy();
      return { ok, failures };
    },
  };
}

/** Waits until every loop has completed at least `more` further GETs; fails after `withinMs`. */
export async function progress(loops: ReadonlyArray<{ readonly ok: number }>, more: number, withinMs = 10_000): Promise<void> {
  const start = loops.map((l) => l.ok);
  const deadline = Date.now() + withinMs;
  while (loops.some((l, i) => l.ok < start[i] + more)) {
    if (Date.now() > deadline) assert.fail(`GET loops made no progress: ${loops.map((l) => l.ok).join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
