// The native addon's listening side end to end through the real `portico start`: SO_REUSEPORT workers get
// their share of 1000 connections from the kernel, and PORTICO_NATIVE=0 falls back to the shared handle and says
// why. The splice relay driven directly is test/component/splice.test.ts.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { listenStrategy } from '../../src/accept/listener.js';
import { nativeStatus } from '../../src/native/addon.js';
import { plainListener, startPortico, type LogLine } from '../helpers/portico.js';

const NO_NATIVE = nativeStatus().native ? undefined : `native addon not in use: ${nativeStatus().reason}`;

/** One GET on a fresh connection; resolves with the status. */
function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(15_000, () => req.destroy(new Error('no response within 15 s')));
    req.on('error', reject);
    req.end();
  });
}

async function startBackend(t: TestContext): Promise<number> {
  const server = http.createServer((req, res) => res.end('ok'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

function proxyConfig(backendPort: number) {
  return {
    workers: 2,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backendPort}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  };
}

const isAccess = (l: LogLine): boolean => typeof l.status === 'number' && typeof l.worker === 'number';

test('SO_REUSEPORT workers: the kernel spreads 1000 connections over both worker processes', { skip: NO_NATIVE, timeout: 120_000 }, async (t) => {
  const backendPort = await startBackend(t);
  const portico = await startPortico(t, proxyConfig(backendPort));
  const listening = await portico.waitForLog((l) => l.msg === 'listening');
  assert.equal(listening.strategy, 'reuse-port');
  for (let batch = 0; batch < 20; batch++) {
    const statuses = await Promise.all(Array.from({ length: 50 }, (_, i) => get(portico.httpPort, `/spread/${batch}/${i}`)));
    assert.deepEqual(new Set(statuses), new Set([200]));
  }
  await portico.waitForLog(() => portico.logs.filter(isAccess).length >= 1000, 10_000).catch(() => undefined);
  const perWorker = new Map<unknown, number>();
  for (const l of portico.logs.filter(isAccess)) perWorker.set(l.worker, (perWorker.get(l.worker) ?? 0) + 1);
  const counts = [...perWorker.values()];
  t.diagnostic(`connections per worker: ${JSON.stringify(Object.fromEntries(perWorker))}`);
  assert.equal(counts.reduce((a, b) => a + b, 0), 1000);
  assert.equal(perWorker.size, 2, `connections per worker: ${JSON.stringify([...perWorker])}`);
  // a 4-tuple hash over 1000 ephemeral ports: far from an even split would mean one socket takes all
  for (const n of counts) assert.ok(n >= 100, `connections per worker: ${JSON.stringify([...perWorker])}`);
});

test('PORTICO_NATIVE=0: workers share the primary handle, and the start log says the addon is off and why', { timeout: 60_000 }, async (t) => {
  const backendPort = await startBackend(t);
  const portico = await startPortico(t, proxyConfig(backendPort), { env: { PORTICO_NATIVE: '0' } });
  const listening = await portico.waitForLog((l) => l.msg === 'listening');
  // Node >= 22.12 has reusePort built in; below it, only the addon provides it
  assert.equal(listening.strategy, listenStrategy());
  const warning = await portico.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('native addon not in use'));
  assert.equal(warning.reason, 'disabled by PORTICO_NATIVE=0');
  assert.equal(await get(portico.httpPort, '/'), 200);
});
