// Automatic certificates against Pebble (the ACME test server) on loopback: Portico starts on a placeholder,
// gets a certificate for its name through HTTP-01 answered on its plain listener, serves it, renews it on a
// reload without dropping an open TLS connection, and keeps the certificate it has when a renewal fails.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import { startHttpBackend } from '../helpers/backends.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { freePort, hasPebble, startPebble } from '../helpers/pebble.js';
import { needPeer } from '../helpers/peers.js';
import { selfSigned } from '../helpers/certs.js';
import { startFakeAcme } from '../helpers/fake-acme.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { reloadPortico, startPortico, TEST_CERT, type LogLine } from '../helpers/portico.js';
import { until } from '../helpers/until.js';

const NAME = 'site.acme.test';

/** The certificate Portico presents for NAME, checked against Pebble's root; and an open socket when asked. */
function presented(port: number, root: string, keep = false): Promise<{ serial: string; issuer: string; socket?: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: NAME, ca: root, ALPNProtocols: ['http/1.1'] }, () => {
      const cert = socket.getPeerX509Certificate();
      if (cert === undefined) return reject(new Error('no certificate'));
      if (!keep) socket.destroy();
      resolve({ serial: cert.serialNumber, issuer: cert.issuer, socket: keep ? socket : undefined });
    });
    socket.on('error', reject);
  });
}

test('ACME: first issue, renewal on reload without dropping connections, a failed renewal keeps the certificate', async (t) => {
  if (!needPeer(t, 'pebble', hasPebble())) return;
  const dns = await startDnsServer(t);
  dns.set(NAME, { A: [{ address: '127.0.0.1' }] });
  const backend = await startHttpBackend(t);
  const httpPort = await freePort();
  const tlsPort = await freePort();
  const pebble = await startPebble(t, { httpPort, tlsPort, dnsPort: dns.port, validitySeconds: 3600 });
  const config = {
    workers: 2,
    listeners: [
      { address: `127.0.0.1:${httpPort}` },
      { address: `127.0.0.1:${tlsPort}`, tls: { acme: { domains: [NAME], email: 'ops@acme.test', directory: pebble.directory, directory_ca: pebble.caFile, renew_before: '2h' } } },
    ],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  };
  const portico = await startPortico(t, config);
  /** A wait that timed out, with what the CA and Portico said last. */
  const explain = (err: Error): never => {
    // Portico's lines first and Pebble's last ones: a failure report shows its start and its end
    const pebbleTail = pebble.output().trimEnd().split('\n').slice(-15).join('\n');
    throw new Error(`${err.message}\n--- portico ---\n${portico.logs.slice(-25).map((l) => JSON.stringify(l)).join('\n')}\n--- pebble (last lines) ---\n${pebbleTail}`);
  };

  // first issue: the placeholder is replaced by Pebble's certificate for NAME, in every worker
  const first = await portico.waitForLog((l) => l.msg === 'acme: certificate issued', 60_000).catch(explain);
  assert.ok(portico.logs.some((l) => l.msg === 'acme: answered an http-01 challenge'), 'a worker answered the CA on the plain listener');
  const root = await pebble.root();
  // every worker rebuilds its TLS contexts from the new files (an apply each): wait until all of them serve it
  await untilServed(tlsPort, root, String(first.serial).toUpperCase());
  const a = await presented(tlsPort, root); // verified against Pebble's root, for NAME
  assert.match(a.issuer, /Pebble/);
  assert.equal(a.serial, String(first.serial).toUpperCase());
  // every worker serves it (connections spread over 2 workers)
  for (let i = 0; i < 6; i++) assert.equal((await presented(tlsPort, root)).serial, a.serial);
  const files = path.join(portico.dir, '.state', 'acme', NAME);
  const onDisk = new X509Certificate(await readFile(path.join(files, 'cert.pem')));
  assert.equal(onDisk.serialNumber, a.serial);
  assert.equal((await stat(path.join(files, 'key.pem'))).mode & 0o077, 0, 'the key is readable by its owner only');

  // renewal (Pebble's certificates live 1 h, renew_before is 2 h): a reload looks again and renews
  const open = await presented(tlsPort, root, true);
  t.after(() => open.socket?.destroy());
  assert.equal((await reloadPortico(portico)).code, 0);
  const second = await portico.waitForLog((l) => l.msg === 'acme: certificate issued' && l.serial !== first.serial, 60_000).catch(explain);
  await untilServed(tlsPort, root, String(second.serial).toUpperCase()).catch((err: Error) => {
    throw new Error(`${err.message}\n${portico.logs.slice(-25).map((l) => JSON.stringify(l)).join('\n')}`);
  });
  // the connection opened before the renewal still works
  open.socket!.write(`GET /still HTTP/1.1\r\nHost: ${NAME}\r\nConnection: close\r\n\r\n`);
  const reply = await new Promise<string>((resolve) => {
    let s = '';
    open.socket!.setEncoding('utf8').on('data', (d: string) => (s += d)).on('end', () => resolve(s));
  });
  assert.match(reply, /^HTTP\/1\.1 200/);

  // a failed renewal: the name now points at a server that answers every challenge with 404 (at once, so the
  // CA marks it invalid on its first try); the certificate that serves stays
  const wrong = http.createServer((_req, res) => res.writeHead(404).end('not here'));
  wrong.listen(httpPort, '127.0.0.2');
  await once(wrong, 'listening');
  t.after(() => wrong.close());
  dns.set(NAME, { A: [{ address: '127.0.0.2' }] });
  // Pebble reuses the account's valid authorization now and then even with PEBBLE_AUTHZREUSE=0 (wfe.go: a new one
  // only when rand.Intn(100) > percent, so 1 order in 100 skips the challenge and is issued): then the renewal
  // succeeded without asking the wrong server, and the next reload's order is the one that must fail
  let serving = String(second.serial).toUpperCase();
  let failed: LogLine | undefined;
  for (let attempt = 0; attempt < 3 && failed === undefined; attempt++) {
    const from = portico.logs.length;
    assert.equal((await reloadPortico(portico)).code, 0);
    const outcome = await portico.waitForLog((l) => portico.logs.indexOf(l) >= from && (l.msg === 'acme: order failed' || (l.msg === 'acme: certificate issued' && String(l.serial).toUpperCase() !== serving)), 60_000).catch(explain);
    if (outcome.msg === 'acme: order failed') failed = outcome;
    else {
      t.diagnostic(`the CA reused its authorization (no challenge asked): issued ${String(outcome.serial)}; reloading again`);
      serving = String(outcome.serial).toUpperCase();
      await untilServed(tlsPort, root, serving);
    }
  }
  assert.ok(failed !== undefined, 'a renewal order failed within 3 reloads');
  assert.equal(failed.serving, 'the previous certificate');
  assert.equal((await presented(tlsPort, root)).serial, serving);
});

async function untilServed(port: number, root: string, serial: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  let last = '';
  while (Date.now() < deadline) {
    let all = true;
    for (let i = 0; i < 4; i++) {
      last = (await presented(port, root)).serial;
      if (last !== serial) all = false;
    }
    if (all) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`still serving ${last}, not ${serial}`);
}

/** The certificate served for NAME, whoever signed it (the placeholder is self-signed): issuer and subject. */
function servedUnverified(port: number): Promise<{ issuer: string; subject: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: NAME, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.destroy();
      if (cert === undefined) reject(new Error('no certificate'));
      else resolve({ issuer: cert.issuer, subject: cert.subject });
    });
    socket.on('error', reject);
  });
}

/** Portico on a lying CA: a plain listener for http-01 and a TLS listener whose certificate comes from `directory`. */
function lyingCaConfig(directory: string): ConfigInput {
  return {
    workers: 1,
    listeners: [
      { address: '127.0.0.1:0' },
      { address: '127.0.0.1:0', tls: { acme: { domains: [NAME], directory, directory_ca: TEST_CERT, request_timeout: '1s' } } },
    ],
    routes: [{ match: { path: '/' }, return: { status: 200, body: 'ok' } }],
  };
}

test('ACME: a CA that never answers fails the order at request_timeout; it is retried later and the placeholder keeps serving', async (t) => {
  const ca = await startFakeAcme(t, 'hang');
  const portico = await startPortico(t, lyingCaConfig(ca.directory));
  const failed = await portico.waitForLog((l) => l.msg === 'acme: order failed', 20_000);
  assert.match(String((failed.err as { message?: string } | undefined)?.message), /^no answer from the CA at 127\.0\.0\.1:\d+ .*request_timeout 1000 ms/);
  assert.equal(failed.retryInMs, 60_000);
  assert.equal(failed.serving, 'the placeholder');
  assert.deepEqual(ca.requests, ['GET /dir'], 'the directory was asked once and never answered');
  const served = await servedUnverified(portico.tlsPort);
  assert.equal(served.issuer, served.subject, 'the self-signed placeholder is still served');
});

test('ACME: a CA that hands out a certificate for another key is refused; nothing is written, the placeholder keeps serving', async (t) => {
  const other = await selfSigned(NAME, { server: [NAME] });
  const ca = await startFakeAcme(t, other.cert);
  const portico = await startPortico(t, lyingCaConfig(ca.directory));
  const failed = await portico.waitForLog((l) => l.msg === 'acme: order failed', 20_000);
  assert.match(String((failed.err as { message?: string } | undefined)?.message), /not for the key of this order/);
  assert.ok(ca.requests.includes('POST /cert/1'), `the whole order ran: ${ca.requests.join(', ')}`);
  const certFile = path.join(portico.dir, '.state', 'acme', NAME, 'cert.pem');
  const onDisk = await readFile(certFile, 'utf8').catch(() => ''); // the placeholder, or nothing
  assert.ok(!onDisk.includes(other.cert.trim().split('\n')[1]), 'the lying answer was not written');
  const served = await servedUnverified(portico.tlsPort);
  assert.equal(served.issuer, served.subject, 'the self-signed placeholder is still served');
});

test('ACME HTTP-01: the CA is told to validate only once the worker holds the token; a worker started while it is pending answers it too', async (t) => {
  const ca = await startFakeAcme(t, { pending: NAME, type: 'http-01', holdAuthz: true });
  const portico = await startPortico(t, lyingCaConfig(ca.directory));
  ca.checkAt(`http://127.0.0.1:${portico.httpPort}`);
  const worker = Number((await portico.waitForLog((l) => l.msg === 'worker ready' && l.worker === 1)).workerPid);
  await until('the CA was asked for the authorization', () => ca.requests.includes('POST /authz/1'), (asked) => asked, 20_000);
  // a worker that cannot handle its IPC now (stopped) cannot confirm the token: the CA must not be told yet
  process.kill(worker, 'SIGSTOP');
  let stopped = true;
  t.after(() => void (stopped && process.kill(worker, 'SIGCONT')));
  ca.release();
  // An absence, so a bounded window: unconfirmed, acme-client says "validate now" milliseconds after the answer.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.ok(!ca.requests.includes('POST /chall/1'), `the CA was told to validate before the worker confirmed: ${ca.requests.join(', ')}`);
  process.kill(worker, 'SIGCONT');
  stopped = false;
  await until('the CA was told to validate', () => ca.validations.length, (n) => n >= 1, 15_000);
  const [checked] = ca.validations;
  assert.equal(checked.status, 200, `the CA's fetch at "validate now": ${JSON.stringify(checked)}`);
  assert.ok(checked.body.startsWith(`${ca.token}.`), 'the key authorization is the token and the account thumbprint');

  // the worker dies during the order: the one that takes its slot answers the token as well
  process.kill(worker, 'SIGKILL');
  await portico.waitForLog((l) => l.msg === 'worker ready' && l.worker === 1 && Number(l.workerPid) !== worker, 15_000);
  const again = await fetch(`http://127.0.0.1:${portico.httpPort}/.well-known/acme-challenge/${ca.token}`);
  assert.equal(again.status, 200);
  assert.equal(await again.text(), checked.body);
});
