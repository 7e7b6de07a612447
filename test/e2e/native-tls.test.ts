// TLS terminated by the native addon (src/native/tls.cc) through a real `portico start` with 2 workers: curl,
// Python's ssl and `openssl s_client` handshake with TLS 1.2 and 1.3, SNI hit / wildcard / miss / none picks the
// certificate by src/accept/tls.ts's rules, ALPN is http/1.1 or refused, tickets resume on either worker,
// malformed and truncated ClientHellos and records never cost a worker, a handshake that stalls is cut at its
// timeout, a reload renews the certificate, and PORTICO_NATIVE_TLS=0 / PORTICO_NATIVE_IO=0 keep Node's TLS.
// portico_tls_native_handshakes_total tells the native path from Node's.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { ensureSelfSigned } from '../../src/accept/tls.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { adminStatus, adminUrl } from '../helpers/admin.js';
import { startHttpBackend } from '../helpers/backends.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { PYTHON, curl, hasCurl, parseCurlOutput, request, run } from '../helpers/clients.js';
import { FIXTURES } from '../helpers/paths.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { TEST_CERT, TEST_KEY, reloadPortico, startPortico, type Portico } from '../helpers/portico.js';
import { until } from '../helpers/until.js';
import { native } from '../../src/native/addon.js';
import { needNativeTls } from '../helpers/native-tls.js';

const TLS_PROBE = path.join(FIXTURES, 'clients', 'tls-probe.py');

interface Certs {
  dir: string;
  /** SHA-256 fingerprints (lower-case hex, no colons) of each certificate. */
  localhost: string;
  a: string;
  wildB: string;
  aCert: string;
  aKey: string;
  wildCert: string;
  wildKey: string;
}

function fingerprint(pem: Buffer): string {
  return new X509Certificate(pem).fingerprint256.replaceAll(':', '').toLowerCase();
}

/** Self-signed pairs for a.test and *.b.test beside the test localhost certificate (the default: listed first). */
async function makeCerts(t: TestContext): Promise<Certs> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-ntls-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const aCert = path.join(dir, 'a.crt');
  const aKey = path.join(dir, 'a.key');
  const wildCert = path.join(dir, 'b.crt');
  const wildKey = path.join(dir, 'b.key');
  await ensureSelfSigned(aCert, aKey, ['a.test']);
  await ensureSelfSigned(wildCert, wildKey, ['*.b.test']);
  return {
    dir,
    localhost: fingerprint(await readFile(TEST_CERT)),
    a: fingerprint(await readFile(aCert)),
    wildB: fingerprint(await readFile(wildCert)),
    aCert,
    aKey,
    wildCert,
    wildKey,
  };
}

function config(backendPort: number, certs: Certs, extra: { handshake_timeout?: string; workers?: number } = {}): ConfigInput {
  return {
    workers: extra.workers ?? 2,
    listeners: [
      {
        address: '127.0.0.1:0',
        tls: {
          certificates: [
            { cert: TEST_CERT, key: TEST_KEY },
            { cert: certs.aCert, key: certs.aKey },
            { cert: certs.wildCert, key: certs.wildKey },
          ],
          ...(extra.handshake_timeout !== undefined ? { handshake_timeout: extra.handshake_timeout } : {}),
        },
      },
    ],
    admin: { address: '127.0.0.1:0' },
    upstreams: { app: { targets: [`127.0.0.1:${backendPort}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    log: { level: 'info', access: true },
  };
}

/** portico_tls_native_handshakes_total summed over the workers (the primary's /metrics). */
async function nativeHandshakes(portico: Portico): Promise<number> {
  const res = await request(`${adminUrl(portico)}/metrics`);
  const m = /^portico_tls_native_handshakes_total (\d+)$/m.exec(res.body.toString());
  assert.ok(m !== null, 'portico_tls_native_handshakes_total is in /metrics');
  return Number(m[1]);
}

async function handshakeErrors(portico: Portico): Promise<number> {
  const res = await request(`${adminUrl(portico)}/metrics`);
  return Number(/^portico_tls_handshake_errors_total (\d+)$/m.exec(res.body.toString())?.[1] ?? NaN);
}

interface Probe {
  version?: string;
  alpn?: string | null;
  fingerprint?: string;
  status?: number | null;
  reused?: boolean;
  error?: string;
}

async function pythonProbe(port: number, sni: string, alpn: string, min: '1.2' | '1.3', max: '1.2' | '1.3', n = 1): Promise<Probe[]> {
  const r = await run(PYTHON, [TLS_PROBE, '127.0.0.1', String(port), sni, alpn, min, max, String(n)], 60_000);
  assert.equal(r.code, 0, `tls-probe.py failed: ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Probe);
}

/** `openssl s_client` with its arguments, one GET sent after the handshake; stdout and stderr together. */
async function sClient(port: number, args: string[]): Promise<string> {
  const r = await run('sh', ['-c', `printf 'GET /s HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' | openssl s_client -connect 127.0.0.1:${port} -ign_eof ${args.join(' ')} 2>&1`], 30_000);
  return r.stdout;
}

function subjectOf(out: string): string | undefined {
  return /^subject=(.*)$/m.exec(out)?.[1]?.trim();
}


/** Workers start slower under scripts/asan.sh (an instrumented addon preloaded with libasan). */
const START = { startTimeoutMs: process.env.PORTICO_NATIVE_ADDON !== undefined ? 120_000 : 20_000 };

const pythonSsl = (): boolean => hasCommand(PYTHON, ['-c', 'import ssl']);
const haveOpenssl = (): boolean => hasCommand('openssl', ['version']);

test('native TLS: curl, Python and openssl s_client over TLS 1.2 and 1.3; SNI hit, wildcard, miss and none; ALPN http/1.1', async (t) => {
  if (!needNativeTls(t)) return;
  if (!needPeer(t, 'curl', hasCurl()) || !needPeer(t, 'python3 ssl', pythonSsl()) || !needPeer(t, 'openssl', haveOpenssl())) return;
  const certs = await makeCerts(t);
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(backend.port, certs), START);
  const port = portico.tlsPort;
  const before = await nativeHandshakes(portico);

  for (const v of ['1.2', '1.3']) {
    const r = await curl(`https://localhost:${port}/curl-${v}`, [`--tlsv${v}`, '--tls-max', v, '-w', '\n%{ssl_verify_result}']);
    assert.equal(r.code, 0, r.stderr);
    const res = parseCurlOutput(r.stdout);
    assert.equal(res.status, 200);
    assert.match(res.body, new RegExp(`"url":"/curl-${v.replace('.', '\\.')}"`));
  }

  const cases: Array<[sni: string, expect: string, what: string]> = [
    ['localhost', certs.localhost, 'exact name of the default certificate'],
    ['a.test', certs.a, 'exact name of the second certificate'],
    ['A.Test.', certs.a, 'exact name, other case and a trailing dot'],
    ['x.b.test', certs.wildB, 'wildcard *.b.test'],
    ['y.x.b.test', certs.localhost, 'a wildcard covers one label only: default'],
    ['nope.example', certs.localhost, 'unknown name: default'],
    ['-', certs.localhost, 'no SNI: default'],
  ];
  for (const v of ['1.2', '1.3'] as const) {
    for (const [sni, expect, what] of cases) {
      const [p] = await pythonProbe(port, sni, 'h2,http/1.1', v, v);
      assert.equal(p.error, undefined, `${what} (TLS ${v})`);
      assert.equal(p.version, `TLSv${v}`, what);
      assert.equal(p.alpn, 'http/1.1', `${what}: ALPN picks http/1.1 over h2`);
      assert.equal(p.fingerprint, expect, `${what} (TLS ${v})`);
      assert.equal(p.status, 200, what);
    }
  }

  const a = await sClient(port, ['-servername', 'a.test', '-tls1_3']);
  assert.equal(subjectOf(a), 'CN = a.test', a);
  assert.match(a, /HTTP\/1\.1 200 OK/);
  const none = await sClient(port, ['-noservername', '-tls1_2']);
  assert.match(none, /Protocol\s*:\s*TLSv1\.2/);
  assert.match(none, /HTTP\/1\.1 200 OK/);
  // a client that offers only h2 is refused with no_application_protocol (RFC 7301 §3.2), as Node's TLS does
  const h2 = await sClient(port, ['-servername', 'localhost', '-alpn', 'h2']);
  assert.match(h2, /no application protocol/);
  assert.doesNotMatch(h2, /HTTP\/1\.1 200/);

  // every handshake above went through the addon (2 curl + 14 Python + 2 s_client that got an answer)
  assert.ok((await nativeHandshakes(portico)) - before >= 18, 'the handshakes were native');
  // on connections the addon accepted itself: the handshake started where the connection was (no net.Socket;
  // one handed to Node through toNetSocket would have gone through Node's TLS, not counted above)
  const status = await adminStatus(portico);
  for (const w of status.workers) assert.equal(w.accept, 'native', `worker ${w.pid} accepts natively`);
  const accepted = status.workers.reduce((n, w) => n + (w.acceptBatches?.accepted ?? 0), 0);
  assert.ok(accepted >= 18, `the connections were accepted natively (${accepted})`);
});

test('native TLS: session tickets resume on either of 2 workers (TLS 1.2 and 1.3)', async (t) => {
  if (!needNativeTls(t)) return;
  if (!needPeer(t, 'python3 ssl', pythonSsl())) return;
  const certs = await makeCerts(t);
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(backend.port, certs), START);
  for (const v of ['1.2', '1.3'] as const) {
    const probes = await pythonProbe(portico.tlsPort, 'localhost', 'http/1.1', v, v, 16);
    for (const [i, p] of probes.entries()) {
      assert.equal(p.error, undefined);
      assert.equal(p.status, 200);
      assert.equal(p.version, `TLSv${v}`);
      assert.equal(p.reused, i > 0, `connection ${i} (TLS ${v}) ${i > 0 ? 'resumed' : 'was a full handshake'}`);
    }
  }
  // the 32 connections were spread over both workers by SO_REUSEPORT: a ticket from one opened on the other
  const lines = await until('access lines of the 32 probes', () => portico.logs.filter((l) => l.url === '/probe' || (l as { path?: unknown }).path === '/probe'), (l) => l.length >= 32);
  const workers = new Set(lines.map((l) => l.worker));
  assert.equal(workers.size, 2, `probes served by workers ${[...workers].join(', ')}`);
  assert.ok((await nativeHandshakes(portico)) >= 32);
});

/** One TLS 1.3 GET offering `session`: whether it resumed and the tickets the server sent on it. */
async function ticketExchange(port: number, session: Buffer | undefined): Promise<{ reused: boolean; tickets: Buffer[]; status: number | undefined }> {
  const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, minVersion: 'TLSv1.3', session, ALPNProtocols: ['http/1.1'] });
  const tickets: Buffer[] = [];
  socket.on('session', (s: Buffer) => tickets.push(s));
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  let reused = false;
  socket.on('secure', () => {
    reused = socket.isSessionReused();
    socket.write('GET /ticket HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
  });
  const timer = setTimeout(() => socket.destroy(new Error('no answer within 10 s')), 10_000);
  try {
    // the server closes after its answer; the tickets of the handshake come before it
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.once('end', () => resolve());
    });
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
  const status = /^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString('latin1'))?.[1];
  return { reused, tickets, status: status === undefined ? undefined : Number(status) };
}

test('native TLS: a TLS 1.3 resumption gets a fresh ticket, so a client using each ticket once resumes every time', async (t) => {
  if (!needNativeTls(t)) return;
  const certs = await makeCerts(t);
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(backend.port, certs), START);
  const before = await nativeHandshakes(portico);
  const first = await ticketExchange(portico.tlsPort, undefined);
  assert.equal(first.status, 200);
  assert.equal(first.reused, false);
  assert.ok(first.tickets.length >= 1, 'a full handshake issues tickets');
  // RFC 8446 §C.4: each connection offers the newest ticket, never one already used
  let ticket = first.tickets.at(-1);
  for (let i = 0; i < 4; i++) {
    const next = await ticketExchange(portico.tlsPort, ticket);
    assert.equal(next.status, 200);
    assert.equal(next.reused, true, `connection ${i + 2} resumed with the ticket of the one before`);
    assert.ok(next.tickets.length >= 1, `connection ${i + 2} (resumed) got a fresh ticket`);
    assert.notDeepEqual(next.tickets.at(-1), ticket);
    ticket = next.tickets.at(-1);
  }
  assert.ok((await nativeHandshakes(portico)) - before >= 5, 'the handshakes were native');
});

test('native TLS: malformed and truncated ClientHellos and records never crash a worker', async (t) => {
  if (!needNativeTls(t)) return;
  const certs = await makeCerts(t);
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(backend.port, certs, { workers: 1 }), START);
  const port = portico.tlsPort;
  const pids = (await adminStatus(portico)).workers.map((w) => w.pid);
  const hello = await captureNodeHello({ servername: 'localhost', ALPNProtocols: ['http/1.1'] });
  // a seeded generator: the same cases every run
  let seed = 0x2545f491;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const send = (bytes: Buffer, end: boolean): Promise<void> =>
    new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      const done = (): void => {
        clearTimeout(timer);
        s.destroy();
        resolve();
      };
      // Portico answers with an alert and closes, or waits for more until the client gives up
      const timer = setTimeout(done, 300);
      s.on('error', done);
      s.on('close', done);
      s.on('data', () => {});
      s.on('connect', () => (end ? s.end(bytes) : s.write(bytes)));
    });
  const CASES = 300;
  for (let i = 0; i < CASES; i++) {
    const kind = i % 4;
    let bytes: Buffer;
    if (kind === 0) bytes = hello.subarray(0, rand(hello.length)); // truncated
    else if (kind === 1) {
      bytes = Buffer.from(hello);
      for (let k = 0, n = 1 + rand(8); k < n; k++) bytes[rand(bytes.length)] = rand(256); // bytes flipped
    } else if (kind === 2) {
      bytes = Buffer.from(hello);
      bytes.writeUInt16BE(rand(0x10000), 3); // record length lies
    } else bytes = Buffer.from(Array.from({ length: 1 + rand(600) }, () => rand(256))); // noise
    await send(bytes, rand(2) === 0);
  }
  // records after a good handshake: garbage written under the TLS layer of a live connection
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve) => {
      const raw = net.connect(port, '127.0.0.1');
      const secure = tls.connect({ socket: raw, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
      const timer = setTimeout(() => secure.destroy(), 2000);
      secure.on('error', () => {});
      secure.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
      secure.on('secureConnect', () => {
        const junk = Buffer.from([0x17, 0x03, 0x03, 0x00, 0x20, ...Array.from({ length: i % 2 === 0 ? 32 : 7 }, () => rand(256))]);
        raw.write(junk);
      });
    });
  }
  const status = await adminStatus(portico);
  assert.deepEqual(status.workers.map((w) => w.pid), pids, 'the same worker process serves');
  assert.equal(status.workers[0].restarts, 0);
  assert.ok((await handshakeErrors(portico)) >= CASES / 2, 'the bad hellos were counted as handshake errors');
  const [ok] = await pythonProbe(port, 'localhost', 'http/1.1', '1.3', '1.3').catch(() => [{ status: null } as Probe]);
  const res = ok.status === 200 ? ok.status : parseCurlOutput((await curl(`https://localhost:${port}/after`)).stdout).status;
  assert.equal(res, 200);
  assert.ok((await nativeHandshakes(portico)) >= 1);
});

/**
 * Sends the first 20 bytes of `hello` (then FIN when `fin`) and waits for the server to close: the milliseconds it
 * took; fails when the connection is still open after 10 s (the tests' handshake timeouts are 300 ms or 30 s).
 */
function halfHello(port: number, hello: Buffer, fin: boolean): Promise<number> {
  const started = Date.now();
  return new Promise<number>((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => (fin ? s.end(hello.subarray(0, 20)) : s.write(hello.subarray(0, 20))));
    const guard = setTimeout(() => reject(new Error(`still open after 10 s (half a ClientHello${fin ? ' and FIN' : ''})`)), 10_000);
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(guard);
      resolve(Date.now() - started);
    });
  });
}

test('native TLS: a handshake that stalls is cut at tls.handshake_timeout and counted', async (t) => {
  if (!needNativeTls(t)) return;
  const certs = await makeCerts(t);
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, config(backend.port, certs, { workers: 1, handshake_timeout: '300ms' }), START);
  const hello = await captureNodeHello({ servername: 'localhost' });
  const before = await handshakeErrors(portico);
  const tookMs = await halfHello(portico.tlsPort, hello, false); // half a ClientHello, then silence
  assert.ok(tookMs >= 250, 'not closed before the timeout');
  await until('the timeout counted', () => handshakeErrors(portico), (n) => n > before);
});

for (const nodeTls of [false, true]) {
  const which = nodeTls ? "Node's TLS (PORTICO_NATIVE_TLS=0)" : 'native TLS';
  test(`${which}: a FIN in the middle of a ClientHello ends the connection at once, not at tls.handshake_timeout; once secure, a client's FIN after its request still gets the answer`, async (t) => {
    if (!nodeTls && !needNativeTls(t)) return;
    const certs = await makeCerts(t);
    const backend = await startHttpBackend(t);
    const portico = await startPortico(t, config(backend.port, certs, { workers: 1, handshake_timeout: '30s' }), { ...START, env: nodeTls ? { PORTICO_NATIVE_TLS: '0' } : {} });
    const hello = await captureNodeHello({ servername: 'localhost' });
    await halfHello(portico.tlsPort, hello, true); // half a ClientHello, then FIN: fails if still open after 10 s

    // half-open after the handshake: the request, then close_notify + FIN, then the answer (the backend waits 300 ms)
    const ca = await readFile(TEST_CERT);
    const answer = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: portico.tlsPort, servername: 'localhost', ca, allowHalfOpen: true } as tls.ConnectionOptions, () => {
        s.end('GET /delay?ms=300 HTTP/1.1\r\nHost: localhost\r\n\r\n');
      });
      let got = '';
      s.setEncoding('utf8').on('data', (c: string) => (got += c));
      s.on('end', () => resolve(got));
      s.on('error', reject);
      s.setTimeout(10_000, () => s.destroy(new Error('no answer within 10 s')));
    });
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /"url":"\/delay\?ms=300"/);
    assert.equal(await nativeHandshakes(portico), nodeTls ? 0 : 1);
  });
}

test('native TLS: portico reload renews the certificate for new connections', async (t) => {
  if (!needNativeTls(t)) return;
  if (!needPeer(t, 'python3 ssl', pythonSsl())) return;
  const certs = await makeCerts(t);
  const backend = await startHttpBackend(t);
  // the listener's default certificate lives in files the test replaces
  const live = { cert: path.join(certs.dir, 'live.crt'), key: path.join(certs.dir, 'live.key') };
  await copyFile(certs.aCert, live.cert);
  await copyFile(certs.aKey, live.key);
  const cfg = config(backend.port, { ...certs, aCert: live.cert, aKey: live.key }, { workers: 2 });
  const portico = await startPortico(t, cfg, START);
  const [first] = await pythonProbe(portico.tlsPort, 'a.test', 'http/1.1', '1.3', '1.3');
  assert.equal(first.fingerprint, certs.a);
  const renewedCert = path.join(certs.dir, 'renewed.crt');
  const renewedKey = path.join(certs.dir, 'renewed.key');
  await ensureSelfSigned(renewedCert, renewedKey, ['a.test']);
  await copyFile(renewedCert, live.cert);
  await copyFile(renewedKey, live.key);
  const r = await reloadPortico(portico);
  assert.equal(r.code, 0, r.stderr);
  const renewed = fingerprint(await readFile(renewedCert));
  const after = await pythonProbe(portico.tlsPort, 'a.test', 'http/1.1', '1.3', '1.3', 6);
  for (const p of after) {
    assert.equal(p.fingerprint, renewed, 'every worker serves the renewed certificate');
    assert.equal(p.status, 200);
  }
  assert.ok((await nativeHandshakes(portico)) >= 7);
});

/** The suite `openssl s_client` reports it negotiated ("Cipher is X"), or undefined when the handshake failed. */
function cipherOf(out: string): string | undefined {
  return /Cipher is (\S+)/.exec(out)?.[1];
}

// The client's cipher order decides (nginx's default, Mozilla's intermediate profile): a browser that offers
// AES-128-GCM first gets it, with TLS 1.3's key schedule on SHA-256. The same on both TLS paths.
for (const env of [{}, { PORTICO_NATIVE_TLS: '0' }] as Array<Record<string, string>>) {
  const which = env.PORTICO_NATIVE_TLS === '0' ? "Node's TLS" : 'native TLS';
  test(`${which}: the client's cipher order picks the suite, TLS 1.3 and 1.2`, async (t) => {
    if (!needPeer(t, 'openssl', haveOpenssl())) return;
    if (env.PORTICO_NATIVE_TLS === undefined && !needNativeTls(t)) return;
    const certs = await makeCerts(t);
    const backend = await startHttpBackend(t);
    const portico = await startPortico(t, config(backend.port, certs, { workers: 1 }), { env, ...START });
    const aes128 = 'TLS_AES_128_GCM_SHA256';
    const aes256 = 'TLS_AES_256_GCM_SHA384';
    const ecdsa128 = 'ECDHE-ECDSA-AES128-GCM-SHA256';
    const ecdsa256 = 'ECDHE-ECDSA-AES256-GCM-SHA384';
    const cases: Array<[string[], string]> = [
      [['-tls1_3', '-ciphersuites', `${aes128}:${aes256}`], aes128],
      [['-tls1_3', '-ciphersuites', `${aes256}:${aes128}`], aes256],
      [['-tls1_3', '-ciphersuites', `TLS_CHACHA20_POLY1305_SHA256:${aes128}:${aes256}`], 'TLS_CHACHA20_POLY1305_SHA256'],
      [['-tls1_2', '-cipher', `${ecdsa128}:${ecdsa256}`], ecdsa128],
      [['-tls1_2', '-cipher', `${ecdsa256}:${ecdsa128}`], ecdsa256],
    ];
    for (const [args, expect] of cases) {
      const out = await sClient(portico.tlsPort, args);
      assert.equal(cipherOf(out), expect, `s_client ${args.join(' ')}: ${out.slice(-400)}`);
      assert.match(out, /HTTP\/1\.1 200/, 'the request went through');
    }
    const handshakes = await nativeHandshakes(portico);
    if (env.PORTICO_NATIVE_TLS === '0') assert.equal(handshakes, 0);
    else assert.equal(handshakes, cases.length, 'every handshake ran in the addon');
  });
}

for (const env of [{ PORTICO_NATIVE_TLS: '0' }, { PORTICO_NATIVE_IO: '0' }] as Array<Record<string, string>>) {
  const name = Object.keys(env)[0];
  test(`${name}=0 keeps Node's TLS: same certificates and answers, no native handshake`, async (t) => {
    if (!needPeer(t, 'python3 ssl', pythonSsl())) return;
    const certs = await makeCerts(t);
    const backend = await startHttpBackend(t);
    const portico = await startPortico(t, config(backend.port, certs, { workers: 1 }), { env, ...START });
    for (const [sni, expect] of [['a.test', certs.a], ['x.b.test', certs.wildB], ['-', certs.localhost]] as const) {
      const [p] = await pythonProbe(portico.tlsPort, sni, 'h2,http/1.1', '1.2', '1.3');
      assert.equal(p.fingerprint, expect);
      assert.equal(p.alpn, 'http/1.1');
      assert.equal(p.status, 200);
    }
    assert.equal(await nativeHandshakes(portico), 0);
  });
}

test('the native addon resolves every OpenSSL function it calls in this node', async (t) => {
  if (!needNativeTls(t)) return;
  const addon = native() as unknown as { tlsStatus?: () => { available: boolean; reason?: string; openssl?: string } } | undefined;
  assert.ok(addon?.tlsStatus !== undefined);
  const s = addon.tlsStatus();
  assert.equal(s.reason, undefined);
  assert.equal(s.available, true);
  assert.equal(s.openssl?.split(' ')[1], process.versions.openssl.replace(/\+.*/, ''));
});
