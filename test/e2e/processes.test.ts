// The process model end to end, with the real `portico start -c FILE`: workers share a port and both accept,
// a killed worker is restarted while the other keeps serving, SIGTERM drains in-flight requests and exits 0,
// the admin listener answers /metrics and /status, self-signed certificates are made on first start.
// Backends are small node:http servers on 127.0.0.1:0 defined here; ports come from the "listening" log line.
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { defaultBacklog } from '../../src/accept/listener.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { connectOutcome } from '../helpers/backends.js';
import { plainListener, startPortico, type LogLine, type Portico } from '../helpers/portico.js';

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One GET on a fresh connection (no agent): every call is a new accept somewhere. */
function get(port: number, urlPath: string, opts: { tls?: { ca: Buffer; servername: string }; method?: string } = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const common = { host: '127.0.0.1', port, path: urlPath, method: opts.method ?? 'GET', agent: false as const };
    const onResponse = (res: http.IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    };
    const req = opts.tls === undefined ? http.request(common, onResponse) : https.request({ ...common, ca: opts.tls.ca, servername: opts.tls.servername }, onResponse);
    req.setTimeout(15_000, () => req.destroy(new Error('no response within 15 s')));
    req.on('error', reject);
    req.end();
  });
}

interface Backend {
  port: number;
  /** Requests received so far. */
  readonly received: number;
  /** Resolves once `n` requests have arrived (rejects after 15 s). */
  arrived(n: number): Promise<void>;
}

/** Answers every request with "ok:<path>" after `delayMs`. */
async function startBackend(t: TestContext, delayMs = 0): Promise<Backend> {
  let received = 0;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const server = http.createServer((req, res) => {
    received++;
    for (const w of waiters.filter((w) => received >= w.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
    const answer = () => res.end(`ok:${req.url}`);
    if (delayMs === 0) answer();
    else {
      const timer = setTimeout(answer, delayMs);
      res.on('close', () => clearTimeout(timer));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return {
    port: (server.address() as AddressInfo).port,
    get received() {
      return received;
    },
    arrived(n: number) {
      if (received >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${received} of ${n} requests reached the backend`)), 15_000);
        waiters.push({
          n,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
  };
}

function proxyConfig(backendPort: number, extra: Partial<ConfigInput> = {}): ConfigInput {
  return {
    workers: 2,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${backendPort}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    ...extra,
  };
}

/** An access-log line (one per request), from any worker. */
function isAccess(l: LogLine): boolean {
  return typeof l.status === 'number' && typeof l.worker === 'number' && typeof l.pid === 'number';
}

async function listeningLine(portico: Portico): Promise<{ workers: Array<{ id: number; pid: number }>; admin: { address: string; port: number } | null }> {
  const line = await portico.waitForLog((l) => l.msg === 'listening');
  return line as unknown as { workers: Array<{ id: number; pid: number }>; admin: { address: string; port: number } | null };
}

test('two workers share one listening port and both accept connections', async (t) => {
  const backend = await startBackend(t);
  const portico = await startPortico(t, proxyConfig(backend.port));
  const { workers } = await listeningLine(portico);
  assert.equal(workers.length, 2);
  const served = () => new Set(portico.logs.filter(isAccess).map((l) => l.pid));
  // Which process accepts is the kernel's choice: send bounded batches of concurrent fresh connections.
  for (let round = 0; round < 30 && served().size < 2; round++) {
    const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => get(portico.httpPort, `/spread/${round}/${i}`)));
    for (const r of replies) assert.equal(r.status, 200);
  }
  await Promise.all(workers.map((w) => portico.waitForLog((l) => isAccess(l) && l.pid === w.pid, 5_000)));
  assert.deepEqual([...served()].sort(), workers.map((w) => w.pid).sort());
});

test('a killed worker is restarted while the other keeps answering on the same port', async (t) => {
  const backend = await startBackend(t);
  const portico = await startPortico(t, proxyConfig(backend.port));
  const { workers } = await listeningLine(portico);
  const victim = workers[0];

  let victimGone = false;
  let stop = false;
  const results: Array<{ ok: boolean; afterExit: boolean; error?: string }> = [];
  // Sequential requests on fresh connections for the whole episode: at most one can be in flight on the
  // victim when it dies; every request started after its exit was logged must succeed.
  const traffic = (async () => {
    for (let i = 0; i < 5_000 && !stop; i++) {
      const afterExit = victimGone;
      try {
        const r = await get(portico.httpPort, `/during-restart/${i}`);
        results.push({ ok: r.status === 200, afterExit });
      } catch (err) {
        results.push({ ok: false, afterExit, error: (err as Error).message });
      }
    }
  })();

  try {
    await backend.arrived(5);
    process.kill(victim.pid, 'SIGKILL');
    await portico.waitForLog((l) => l.level === 'warn' && l.worker === victim.id && l.workerPid === victim.pid && l.signal === 'SIGKILL');
    victimGone = true;
    const ready = await portico.waitForLog((l) => l.msg === 'worker ready' && l.worker === victim.id && l.workerPid !== victim.pid, 15_000);
    assert.equal(typeof ready.workerPid, 'number');
    // The replacement takes its share of the same port.
    await portico.waitForLog((l) => isAccess(l) && l.pid === ready.workerPid, 30_000);
  } finally {
    stop = true;
    await traffic;
  }
  const failures = results.filter((r) => !r.ok);
  assert.deepEqual(failures.filter((r) => r.afterExit), [], 'no request failed once the dead worker was gone');
  // Shared handle: the listening socket outlives the worker, so only the request in flight on it can fail.
  // SO_REUSEPORT: the dead worker's own socket also held connections the kernel had queued for it until the
  // process was gone; those are reset (kernel behaviour, native-notes/reuseport.md). Either way, only before exit.
  const strategy = ((await listeningLine(portico)) as unknown as { strategy?: string }).strategy;
  const allowed = strategy === 'reuse-port' ? 5 : 1;
  assert.ok(failures.length <= allowed, `${strategy}: at most ${allowed} request(s) in flight or queued on the killed worker may fail: ${JSON.stringify(failures)}`);
  assert.ok(results.filter((r) => r.afterExit && r.ok).length > 0);
});

test('SIGTERM: in-flight requests complete, new connections are refused, the process exits 0', async (t) => {
  const backend = await startBackend(t, 500);
  const portico = await startPortico(t, proxyConfig(backend.port, { timeouts: { shutdown_grace: '10s' } }));
  const inFlight = Array.from({ length: 20 }, (_, i) => get(portico.httpPort, `/slow/${i}`));
  await backend.arrived(20);

  portico.kill('SIGTERM');
  // each worker's listener ends once it accepted the clients already queued (Node's accept: a loop turn that took
  // none, at most 100 ms while clients keep coming); then every copy of the listening socket is closed, and a new
  // client is refused, not left hanging
  for (const id of [1, 2]) await portico.waitForLog((l) => l.msg === 'worker draining' && l.worker === id);
  for (const id of [1, 2]) await portico.waitForLog((l) => l.msg === 'worker stopped accepting' && l.worker === id);
  assert.equal(await connectOutcome(portico.httpPort), 'ECONNREFUSED');

  const replies = await Promise.all(inFlight);
  assert.deepEqual(
    replies.map((r) => r.status),
    replies.map(() => 200),
  );
  replies.forEach((r, i) => assert.equal(r.body, `ok:/slow/${i}`));
  assert.equal(await portico.exited, 0);
  assert.ok(portico.logs.some((l) => l.msg === 'stopped' && l.forced === false));
});

test('the admin listener serves Prometheus /metrics and JSON /status on loopback', async (t) => {
  const backend = await startBackend(t);
  const portico = await startPortico(t, proxyConfig(backend.port, { admin: { address: '127.0.0.1:0' } }));
  const { workers, admin } = await listeningLine(portico);
  assert.ok(admin !== null);
  assert.equal(admin.address, '127.0.0.1');

  assert.equal((await get(portico.httpPort, '/counted')).status, 200);
  await portico.waitForLog((l) => isAccess(l) && l.path === '/counted');

  const metrics = await get(admin.port, '/metrics');
  assert.equal(metrics.status, 200);
  assert.equal(metrics.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  assert.match(metrics.body, /^# TYPE portico_requests_total counter$/m);
  assert.match(metrics.body, /^portico_requests_total\{class="2xx"\} 1$/m);
  assert.match(metrics.body, /^portico_workers 2$/m);
  assert.match(metrics.body, new RegExp(`^portico_upstream_target_available\\{upstream="app",target="127\\.0\\.0\\.1:${backend.port}"\\} 1$`, 'm'));
  // pool limits, summed over workers, and connections refused before routing (none here: no preface to read)
  assert.match(metrics.body, /^portico_upstream_queued\{upstream="app"\} 0$/m);
  assert.match(metrics.body, /^# TYPE portico_upstream_queue_rejected_total counter$/m);
  assert.match(metrics.body, /^portico_upstream_queue_rejected_total\{upstream="app"\} 0$/m);
  assert.match(metrics.body, /^portico_upstream_queue_timeouts_total\{upstream="app"\} 0$/m);
  assert.match(metrics.body, /^portico_upstream_retries_total\{upstream="app"\} 0$/m);
  assert.match(metrics.body, /^portico_upstream_retries_denied_total\{upstream="app"\} 0$/m);
  assert.match(metrics.body, /^# TYPE portico_connections_refused_total counter$/m);

  const status = await get(admin.port, '/status');
  assert.equal(status.status, 200);
  const report = JSON.parse(status.body) as {
    workers: Array<{ id: number; pid: number; uptime: number; restarts: number }>;
    listeners: Array<{ address: string; port: number; tls: boolean }>;
    upstreams: Record<string, Array<{ target: string; available: boolean; active: number; open: number; idle: number }>>;
    limits: Record<string, { queued: number; queueRejected: number; queueTimeouts: number; retries: number; retriesDenied: number }>;
    tunnels: number;
    native: { native: boolean; reason?: string };
  };
  // the addon either serves or says why not (PORTICO_NATIVE=0, no build...)
  assert.equal(typeof report.native.native, 'boolean');
  if (!report.native.native) assert.equal(typeof report.native.reason, 'string');
  assert.deepEqual(
    report.workers.map((w) => ({ id: w.id, pid: w.pid, restarts: w.restarts })),
    workers.map((w) => ({ id: w.id, pid: w.pid, restarts: 0 })),
  );
  assert.deepEqual(report.listeners, [{ address: '127.0.0.1', port: portico.httpPort, tls: false, backlog: defaultBacklog() }]);
  // the one request left its upstream connection idle in the pool of the worker that served it
  assert.deepEqual(report.upstreams.app, [{ target: `127.0.0.1:${backend.port}`, available: true, active: 0, open: 1, idle: 1 }]);
  assert.deepEqual(report.limits, { app: { queued: 0, queueRejected: 0, queueTimeouts: 0, retries: 0, retriesDenied: 0 } });
  assert.equal(report.tunnels, 0);

  assert.equal((await get(admin.port, '/nothing-here')).status, 404);
  assert.equal((await get(admin.port, '/metrics', { method: 'POST' })).status, 405);
});

test('a self_signed certificate is generated on first start and served over TLS', async (t) => {
  const backend = await startBackend(t);
  const config = proxyConfig(backend.port, {
    listeners: [{ address: '127.0.0.1:0', tls: { certificates: [{ cert: './state/site.crt', key: './state/site.key', self_signed: true, hosts: ['localhost', '127.0.0.1'] }] } }],
  });
  const portico = await startPortico(t, config);
  assert.ok(portico.logs.some((l) => l.msg === 'generated a self-signed certificate'));
  const ca = readFileSync(path.join(portico.dir, 'state', 'site.crt'));
  const reply = await get(portico.tlsPort, '/secure', { tls: { ca, servername: 'localhost' } });
  assert.equal(reply.status, 200);
  assert.equal(reply.body, 'ok:/secure');
});

test('a listener address already in use fails the start with the address and reason, exit 1', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const port = (blocker.address() as AddressInfo).port;
  await assert.rejects(
    startPortico(t, { workers: 1, listeners: [{ address: `127.0.0.1:${port}` }] }, { startTimeoutMs: 15_000 }),
    (err: Error) => err.message.includes(`127.0.0.1:${port}`) && err.message.includes('EADDRINUSE') && err.message.includes('exited (1)'),
  );
});
