// 10,000 connections opened at once against one worker with the default config: every one is accepted and
// answered (a 404 from the router: no upstream involved), none reset or timed out; the listen backlog is the
// system's somaxconn (not Node's 511), as /status and the listening line say; nothing is refused for fds, and
// the worker's connections and fds return to their baseline once all are closed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { native } from '../../src/native/addon.js';
import { request } from '../helpers/clients.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { adminStatus, adminUrl } from '../helpers/admin.js';
import { statusLineUntilClose } from '../helpers/wire.js';

const CONNECTIONS = 10_000;
/** Source addresses the clients spread over (loopback is 127/8), so no one address runs out of ephemeral ports. */
const SOURCES = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];

function somaxconn(): number {
  return Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
}

/** TcpExt ListenOverflows / ListenDrops, machine-wide (for the diagnostic line only: other processes add to it). */
function listenDrops(): { overflows: number; drops: number } {
  const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/).map(Number);
  return { overflows: values[names.indexOf('ListenOverflows')] ?? 0, drops: values[names.indexOf('ListenDrops')] ?? 0 };
}

test(`${CONNECTIONS} connections opened at once against one worker: all accepted and answered, backlog = somaxconn, none refused`, { timeout: 240_000 }, async (t) => {
  // this process holds every client socket: its own soft limit must allow them
  native()?.raiseFdLimit();
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    routes: [],
    admin: { address: '127.0.0.1:0' },
    log: { access: false },
  });
  const expected = somaxconn();
  const listening = portico.logs.find((l) => l.msg === 'listening');
  assert.equal((listening?.listeners as Array<{ backlog: number }>)[0].backlog, expected, 'the listening line names the backlog');
  const before = await adminStatus(portico);
  assert.equal(before.listeners[0].backlog, expected, `/status: backlog ${before.listeners[0].backlog}, somaxconn ${expected}`);
  const baseFds = before.workers[0].fds?.open ?? 0;

  const drops0 = listenDrops();
  const outcomes = await Promise.all(Array.from({ length: CONNECTIONS }, (_, i) => statusLineUntilClose(portico.httpPort, 'GET /flood HTTP/1.1\r\nHost: flood.test\r\n\r\n', SOURCES[i % SOURCES.length])));
  const drops1 = listenDrops();
  const tally = new Map<string, number>();
  for (const o of outcomes) tally.set(o, (tally.get(o) ?? 0) + 1);
  t.diagnostic(`outcomes: ${JSON.stringify([...tally])}; machine-wide ListenOverflows +${drops1.overflows - drops0.overflows}, ListenDrops +${drops1.drops - drops0.drops}`);
  assert.equal(tally.get('HTTP/1.1 404 Not Found'), CONNECTIONS, `every connection answered: ${JSON.stringify([...tally])}`);

  const metrics = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  assert.doesNotMatch(metrics, /portico_connections_refused_total\{reason="fd_limit"\} [1-9]/);
  const total = /^portico_connections_total (\d+)$/m.exec(metrics);
  assert.ok(total !== null && Number(total[1]) >= CONNECTIONS, `accepted: ${total?.[1]}`);
  // every connection closed: the worker is back to where it started
  const end = Date.now() + 30_000;
  let after = await adminStatus(portico);
  while ((after.workers[0].connections !== 0 || (after.workers[0].fds?.open ?? 0) > baseFds + 4) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    after = await adminStatus(portico);
  }
  assert.equal(after.workers[0].connections, 0);
  assert.ok((after.workers[0].fds?.open ?? 0) <= baseFds + 4, `fds ${after.workers[0].fds?.open}, baseline ${baseFds}`);
});
