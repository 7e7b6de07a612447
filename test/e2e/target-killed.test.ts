// A target killed under load (its listener closed and every connection reset at once): continuous GETs through
// Portico see no failed request, because connect failures and GETs cut before a response byte (on a reused
// connection, or on a new one the dying target had accepted) are retried on the other target, and passive
// health then keeps the dead target out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { once } from 'node:events';
import { request } from '../helpers/clients.js';
import { plainListener, startPortico } from '../helpers/portico.js';

interface KillableBackend {
  port: number;
  hits: number;
  /** Abrupt death: no new connections, every open one reset. */
  kill(): void;
}

async function killableBackend(t: { after(fn: () => void): void }, name: string): Promise<KillableBackend> {
  const sockets = new Set<Socket>();
  const state = { hits: 0 };
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    state.hits++;
    req.resume();
    req.on('end', () => res.end(name));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const kill = (): void => {
    server.close();
    for (const s of sockets) s.resetAndDestroy();
  };
  t.after(kill);
  return {
    port: (server.address() as AddressInfo).port,
    get hits() {
      return state.hits;
    },
    kill,
  };
}

test('a target killed under load: continuous GETs see no failed request and land on the survivor', { timeout: 60_000 }, async (t) => {
  const a = await killableBackend(t, 'a');
  const b = await killableBackend(t, 'b');
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`] } },
    routes: [{ proxy: 'app' }],
  });
  const base = `http://127.0.0.1:${portico.httpPort}`;
  const bodies: string[] = [];
  const failures: string[] = [];
  // Four clients in parallel, each a bounded run of keep-alive-pooled GETs; the kill lands mid-run.
  let sent = 0;
  const client = async (): Promise<void> => {
    while (sent < 600) {
      sent++;
      if (sent === 200) a.kill();
      try {
        const r = await request(`${base}/n/${sent}`);
        if (r.status === 200) bodies.push(r.body.toString());
        else failures.push(`status ${r.status}`);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  };
  await Promise.all([client(), client(), client(), client()]);
  assert.deepEqual(failures, [], 'no request failed while a target died');
  assert.equal(bodies.length, 600);
  assert.ok(bodies.slice(0, 150).includes('a'), 'both targets served before the kill');
  // after the kill everything is served by b (passive health keeps a out; retries cover the rest)
  assert.ok(bodies.slice(-200).every((x) => x === 'b'), 'the dead target gets no more requests');
});
