// least_conn across workers through a running Portico with 2 workers: each worker balances on its own open
// requests and tunnels plus the other workers' as the primary aggregates them, so long-lived WebSocket tunnels
// held by one worker steer the picks of the other. Waits for the aggregate through /status (loadSeen).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { WebSocket } from 'ws';
import { startWsEchoBackend } from '../helpers/backends.js';
import { openWebSocket, request } from '../helpers/clients.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import type { StatusReport } from '../helpers/admin.js';

/** Bound on waiting for the aggregate: it normally takes ~100-200 ms. */
const SETTLE_MS = 10_000;
const POLL_MS = 25;

test('least_conn with 2 workers: new tunnels land on the emptier target whichever worker accepts them', { timeout: 60_000 }, async (t) => {
  const a = await startWsEchoBackend(t);
  const b = await startWsEchoBackend(t);
  const A = `127.0.0.1:${a.port}`;
  const B = `127.0.0.1:${b.port}`;
  const portico = await startPortico(t, {
    workers: 2,
    listeners: [plainListener()],
    upstreams: { live: { targets: [A, B], balance: 'least_conn' } },
    routes: [{ match: { path: '/' }, proxy: 'live' }],
    admin: { address: '127.0.0.1:0' },
  });
  const line = await portico.waitForLog((l) => l.msg === 'listening');
  const admin = (line.admin as { port: number } | null)?.port;
  assert.ok(admin !== undefined);
  assert.equal((line.workers as unknown[]).length, 2);
  const adminUrl = `http://127.0.0.1:${admin}`;
  const tunnels: WebSocket[] = [];
  const open = async (): Promise<void> => {
    tunnels.push(await openWebSocket(t, `ws://127.0.0.1:${portico.httpPort}/ws/${tunnels.length}`));
  };

  /** Polls /status until every worker balances on the instance-wide counts and `total` tunnels are open. */
  const settled = async (total: number): Promise<void> => {
    const deadline = Date.now() + SETTLE_MS;
    let last = '';
    while (Date.now() < deadline) {
      const res = await request(`${adminUrl}/status`);
      assert.equal(res.status, 200);
      const s = JSON.parse(res.body.toString()) as StatusReport;
      assert.deepEqual(s.unanswered, []);
      const targets = s.upstreams.live;
      last = JSON.stringify(targets);
      const sum = targets.reduce((n, x) => n + x.active, 0);
      if (sum === total && targets.every((x) => x.loadSeen?.length === 2 && x.loadSeen.every((n) => n === x.active))) return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    assert.fail(`the aggregate did not settle on ${total} tunnels within ${SETTLE_MS} ms; last /status: ${last}`);
  };

  // Six tunnels on A while B is drained (spread over both workers as the kernel accepts them).
  assert.equal((await request(`${adminUrl}/upstreams/live/targets/${B}/drain`, { method: 'POST', headers: { 'x-portico-admin': '1' } })).status, 200);
  for (let i = 0; i < 6; i++) await open();
  assert.deepEqual([a.open, b.open], [6, 0]);
  assert.equal((await request(`${adminUrl}/upstreams/live/targets/${B}/undrain`, { method: 'POST', headers: { 'x-portico-admin': '1' } })).status, 200);

  // Each worker now sees A = 6 however many of those it holds itself: the next six all go to B.
  for (let i = 0; i < 6; i++) {
    await settled(6 + i);
    await open();
    assert.deepEqual([a.open, b.open], [6, i + 1], `tunnel ${7 + i}`);
  }

  // Equal load: a tie goes either way, then the other target is strictly emptier.
  await settled(12);
  await open();
  await settled(13);
  await open();
  assert.deepEqual([a.open, b.open], [7, 7]);

  for (const ws of tunnels) ws.terminate();
  await settled(0);
});
