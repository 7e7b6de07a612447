// A flood of TLS handshakes that never finish on the mission's own listener: one port with certificates and a
// passthrough name (HTTPS, WSS and TLS passthrough on 443). FLOOD clients each send a whole ClientHello a real client
// made (TLS 1.3, SNI localhost: terminated), take the server's whole first flight (the key exchange and the
// certificate: the server's full handshake cost was paid) and then stay silent, as a handshake-exhaustion attack
// does. Asserted while they hang: HTTPS requests, a WSS echo and a passthrough session are served; the worker's fds
// and RSS stay bounded per stalled handshake; every flood connection is closed by Portico at tls.handshake_timeout
// (not before, not much after) and counted as a handshake error; afterwards the worker is back at its baseline.
// On the addon (the hello decided at accept: /status helloAtAccept counts them as terminated) and on Node's TLS.
import assert from 'node:assert/strict';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { test, type TestContext } from 'node:test';
import type { ConfigInput } from '../../src/config/schema.js';
import { adminMetric, adminStatus } from '../helpers/admin.js';
import { startHttpBackend, startWsEchoBackend } from '../helpers/backends.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { echo, openWebSocket, request } from '../helpers/clients.js';
import { needNativeTls } from '../helpers/native-tls.js';
import { passThrough, startPassthroughBackend } from '../helpers/passthrough-backend.js';
import { TEST_CERT, TEST_KEY, startPortico } from '../helpers/portico.js';
import { fdCount, singleWorkerResources, startSampler, type WorkerResources } from '../helpers/proc-stats.js';
import { until } from '../helpers/until.js';

const FLOOD = 800;
/** Long enough that the real clients are served while every stalled handshake still hangs, even on a loaded CI machine. */
const HANDSHAKE_TIMEOUT_MS = 8_000;
const MiB = 2 ** 20;
/**
 * Bytes of the server's first TLS 1.3 flight at the least: a ServerHello alone is ~130; with EncryptedExtensions, the
 * test certificate, CertificateVerify and Finished it is ~790.
 */
const FIRST_FLIGHT_MIN = 600;
/**
 * RSS a stalled handshake may cost the worker at the flood's peak, the process's growth over its baseline divided by
 * FLOOD. Measured on the 2-core machine: 48 KiB on the addon, 59 KiB on Node's TLS; the same flood of 800 costs a
 * fresh nginx worker 44 KiB each and HAProxy 51 (OpenSSL's handshake state: its buffers, the key exchange, the
 * transcript). The bound is twice the addon's figure: a copy of the certificate chain per handshake would pass it.
 */
const RSS_PER_STALLED_KIB = 96;

interface Stalled {
  socket: net.Socket;
  openedAt: number;
  closedAt: number | undefined;
  /** Bytes the server sent (its first flight). */
  got: number;
  /** The first byte the server sent: 0x16, a handshake record. */
  first: number | undefined;
}

/** Opens `n` connections to `port` (50 at a time), writes `hello` whole on each and then nothing; reads what comes. */
async function stall(t: TestContext, port: number, hello: Buffer, n: number): Promise<Stalled[]> {
  const all: Stalled[] = [];
  t.after(() => {
    for (const s of all) s.socket.destroy();
  });
  for (let i = 0; i < n; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, () => {
        const socket = net.connect({ host: '127.0.0.1', port });
        const s: Stalled = { socket, openedAt: 0, closedAt: undefined, got: 0, first: undefined };
        all.push(s);
        socket.on('data', (d: Buffer) => {
          if (s.first === undefined) s.first = d[0];
          s.got += d.length;
        });
        socket.on('error', () => {});
        socket.on('close', () => (s.closedAt = performance.now()));
        return new Promise<void>((resolve, reject) => {
          socket.once('connect', () => {
            s.openedAt = performance.now();
            socket.write(hello);
            resolve();
          });
          socket.once('error', reject);
        });
      }),
    );
  }
  return all;
}

function config(web: number, ws: number, pass: number): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [
      {
        address: '127.0.0.1:0',
        tls: { certificates: [{ cert: TEST_CERT, key: TEST_KEY }], passthrough: [{ sni: 'pass.test', upstream: 'tls-backend' }], handshake_timeout: `${HANDSHAKE_TIMEOUT_MS}ms` },
      },
    ],
    upstreams: { web: { targets: [`127.0.0.1:${web}`] }, ws: { targets: [`127.0.0.1:${ws}`] }, 'tls-backend': { targets: [`127.0.0.1:${pass}`] } },
    routes: [{ match: { path: '/ws' }, proxy: 'ws' }, { proxy: 'web' }],
    log: { access: false },
  };
}

for (const nodeTls of [false, true]) {
  const which = nodeTls ? "Node's TLS (PORTICO_NATIVE_TLS=0)" : 'the addon';
  test(`${which}: ${FLOOD} handshakes stalled after the server's first flight on the mixed TLS port: HTTPS, WSS and passthrough served meanwhile, memory bounded per handshake, each closed at tls.handshake_timeout and counted, the worker back at its baseline`, { timeout: 120_000 }, async (t) => {
    if (!nodeTls && !needNativeTls(t)) return;
    const web = await startHttpBackend(t, { name: 'web' });
    const ws = await startWsEchoBackend(t);
    const pass = await startPassthroughBackend(t);
    const portico = await startPortico(t, config(web.port, ws.port, pass.port), { env: nodeTls ? { PORTICO_NATIVE_TLS: '0' } : {} });
    const port = portico.tlsPort;
    const hello = await captureNodeHello({ servername: 'localhost' });

    // warm: every path once, then the baseline with nothing open
    assert.equal((await request(`https://localhost:${port}/warm`)).status, 200);
    const warmWs = await openWebSocket(t, `wss://localhost:${port}/ws`);
    assert.equal(await echo(warmWs, 'warm'), 'warm');
    warmWs.close(1000);
    await passThrough(t, port, pass);
    const quiet = (r: WorkerResources): boolean => r.connections === 0 && r.tunnels === 0;
    const baseline = await until('worker quiet', () => singleWorkerResources(portico), quiet);
    const pid = baseline.pid!;
    const fds0 = fdCount(pid);
    const errors0 = await adminMetric(portico, 'portico_tls_handshake_errors_total');
    const atAccept0 = (await adminStatus(portico)).workers[0].helloAtAccept?.terminated ?? 0;
    const sampler = startSampler([pid], 100);
    t.after(() => sampler.stop());
    const rss0 = sampler.samples[0].rss;

    const flood = await stall(t, port, hello, FLOOD);
    const openedAt = performance.now();
    // every one got the server's whole first flight (ServerHello .. Finished)
    await until('the server answered every stalled ClientHello', () => flood.filter((s) => s.got >= FIRST_FLIGHT_MIN).length, (n) => n === FLOOD, 30_000, 50);
    const answeredMs = performance.now() - openedAt;

    // while they hang: real clients of each kind
    const served: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await request(`https://localhost:${port}/during-${i}`, { timeoutMs: 5_000 });
      assert.equal(res.status, 200);
      served.push(`https ${i}`);
    }
    const live = await openWebSocket(t, `wss://localhost:${port}/ws`);
    assert.equal(await echo(live, 'during'), 'during');
    live.close(1000);
    await passThrough(t, port, pass);
    const servedMs = performance.now() - openedAt;
    const stillOpen = flood.filter((s) => s.closedAt === undefined).length;
    assert.ok(servedMs < HANDSHAKE_TIMEOUT_MS, `the real clients were served within the flood's life (${servedMs.toFixed(0)} ms)`);
    assert.equal(stillOpen, FLOOD, 'no stalled handshake was closed before its timeout (served while all hung)');

    await until('every stalled handshake closed by Portico', () => flood.filter((s) => s.closedAt === undefined).length, (n) => n === 0, HANDSHAKE_TIMEOUT_MS + 20_000, 50);
    const samples = sampler.stop();
    const lived = flood.map((s) => (s.closedAt as number) - s.openedAt).sort((a, b) => a - b);
    const peakFds = Math.max(...samples.map((s) => s.fds));
    const peakRss = Math.max(...samples.map((s) => s.rss));
    const perKiB = (peakRss - rss0) / 1024 / FLOOD;
    t.diagnostic(
      `${FLOOD} stalled: all answered in ${answeredMs.toFixed(0)} ms (${flood[0].got} bytes each), 5 HTTPS + 1 WSS + 1 passthrough served ${servedMs.toFixed(0)} ms after the flood opened; ` +
        `lived ${lived[0].toFixed(0)}..${lived[FLOOD - 1].toFixed(0)} ms (median ${lived[FLOOD >> 1].toFixed(0)}); worker fds ${fds0} -> peak ${peakFds}, RSS ${(rss0 / MiB).toFixed(1)} -> peak ${(peakRss / MiB).toFixed(1)} MiB (${perKiB.toFixed(1)} KiB per stalled handshake)`,
    );
    assert.ok(flood.every((s) => s.first === 0x16), 'the server answered each with a handshake record');
    assert.ok(lived[0] >= HANDSHAKE_TIMEOUT_MS - 100, `closed before tls.handshake_timeout (${lived[0].toFixed(0)} ms)`);
    assert.ok(lived[FLOOD - 1] < HANDSHAKE_TIMEOUT_MS + 10_000, `a stalled handshake outlived its timeout by far (${lived[FLOOD - 1].toFixed(0)} ms)`);
    assert.ok(peakFds <= fds0 + FLOOD + 64, `fds bounded by the connections (peak ${peakFds}, baseline ${fds0})`);
    assert.ok(perKiB <= RSS_PER_STALLED_KIB, `RSS per stalled handshake ${perKiB.toFixed(1)} KiB (bound ${RSS_PER_STALLED_KIB})`);
    await until('each counted as a handshake error', () => adminMetric(portico, 'portico_tls_handshake_errors_total'), (n) => n - errors0 >= FLOOD, 10_000);
    if (!nodeTls) {
      const atAccept = (await adminStatus(portico)).workers[0].helloAtAccept?.terminated ?? 0;
      assert.ok(atAccept - atAccept0 >= FLOOD, `the addon decided each at accept (${atAccept - atAccept0} of ${FLOOD})`);
    }
    const after = await until('the worker back at its baseline', () => singleWorkerResources(portico), (r) => quiet(r) && r.fdsBeyondIdle <= baseline.fdsBeyondIdle, 20_000);
    assert.equal(after.pid, pid, 'the same worker');
  });
}
