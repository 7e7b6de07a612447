// A client that goes away while the upstream connect is pending, through the real `portico start`: the socket
// the connect makes later must stay owned (the pool keeps it), so the backend's reset of it neither crashes the
// worker nor leaves anything counted. Checked on the worker as a user would: /status (pid, restarts, active,
// connections) and the worker's open sockets (/proc/PID/fd) back to their baseline. HTTP and tcp (L4) listeners.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { PYTHON } from '../helpers/clients.js';
import { startGateBackend } from '../helpers/gate-backend.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { adminStatus, statusUntil } from '../helpers/admin.js';

/** Sockets the process holds open (listeners, admin channel, clients, upstreams); epoll and pipes left out. */
function sockets(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed between the listing and the read
    }
  }
  return n;
}

/**
 * `backend`: 'rst' resets each connection as it is accepted (the connect may then fail); 'hold' keeps it, and
 * the test resets it once Portico has it (the late socket is connected, then reset).
 */
async function abortWhileConnecting(t: TestContext, mode: 'http' | 'tcp', backend: 'rst' | 'hold'): Promise<void> {
  if (!needPeer(t, 'python3', hasCommand(PYTHON))) return;
  const gate = await startGateBackend(t, backend);
  const listener = mode === 'http' ? plainListener() : { address: '127.0.0.1:0', mode: 'tcp' as const, upstream: 'app' };
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [listener],
    admin: { address: '127.0.0.1:0' },
    upstreams: { app: { targets: [`127.0.0.1:${gate.port}`], timeouts: { connect: '20s' } } },
    routes: mode === 'http' ? [{ match: { path: '/' }, proxy: 'app' }] : [],
  });
  const before = await adminStatus(portico);
  const pid = before.workers[0].pid;
  assert.ok(pid !== null, 'the worker has a process');
  const baseline = sockets(pid);

  const client = net.connect(portico.ports[0], '127.0.0.1');
  client.on('error', () => {});
  t.after(() => client.destroy());
  await once(client, 'connect');
  if (mode === 'http') client.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  await statusUntil(portico, 'the upstream connect under way', (s) => s.upstreams.app[0].active === 1);
  client.resetAndDestroy(); // gone (RST) while the connect is pending (the backend's accept queue is full)
  // an HTTP client's reset is seen at once; an L4 client is not read before its tunnel exists (seen at connect)
  if (mode === 'http') await statusUntil(portico, 'the client connection gone', (s) => s.connections === 0 && s.upstreams.app[0].active === 0);

  gate.open(); // the pending connect completes on its next SYN retry
  await gate.acceptedReaches(2); // the gate's own backlog filler, then Portico's connection
  if (backend === 'hold') {
    await statusUntil(portico, 'the client connection gone', (s) => s.connections === 0 && s.upstreams.app[0].active === 0);
    assert.equal(await gate.reset(), 2, 'the backend resets the late upstream socket');
  }
  const after = await statusUntil(portico, 'the worker back to its baseline sockets', (s) => s.connections === 0 && sockets(s.workers[0].pid ?? pid) <= baseline);
  assert.equal(after.workers[0].pid, pid, 'same worker');
  assert.equal(after.workers[0].restarts, 0, 'the worker never crashed');
  assert.equal(after.upstreams.app[0].active, 0);
  assert.ok(!portico.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('worker exited')), 'no worker exit logged');
}

for (const mode of ['http', 'tcp'] as const) {
  test(`${mode}: client gone while the upstream connect is pending, the late socket reset by the backend: worker survives, counts and sockets at baseline`, { timeout: 60_000 }, (t) =>
    abortWhileConnecting(t, mode, 'hold'),
  );
}

test('http: client gone while the upstream connect is pending, the backend resets it as it accepts: worker survives, counts and sockets at baseline', { timeout: 60_000 }, (t) =>
  abortWhileConnecting(t, 'http', 'rst'),
);
