// TLS-ALPN-01 (RFC 8737) against Pebble on loopback, on the native TLS path and on Node's (PORTICO_NATIVE_TLS=0):
// a config with no plain listener gets its certificate through challenge certificates that the TLS listener
// serves to `acme-tls/1` handshakes. While Pebble's validation is held (its DNS answer waits), openssl s_client
// sees the challenge certificate with acme-tls/1 and the connection carries no HTTP, and normal HTTPS for the
// name is untouched; once the order is over, an acme-tls/1 handshake fails instead of getting a certificate.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import tls from 'node:tls';
import { startHttpBackend } from '../helpers/backends.js';
import { adminUrl } from '../helpers/admin.js';
import { request } from '../helpers/clients.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { freePort, hasPebble, startPebble } from '../helpers/pebble.js';
import { hasCommand, needPeer } from '../helpers/peers.js';
import { startPortico, type Portico } from '../helpers/portico.js';
import { nativeTlsStatus } from '../../src/native/tls.js';

/** Workers start slower under scripts/asan.sh (an instrumented addon preloaded with libasan). */
const START_TIMEOUT_MS = process.env.PORTICO_NATIVE_ADDON !== undefined ? 120_000 : 20_000;

const NAME = 'alpn.acme.test';
/** DER of the id-pe-acmeIdentifier OID 1.3.6.1.5.5.7.1.31 (RFC 8737 §6.1), as it appears in a certificate. */
const OID_DER = Buffer.from('06082b0601050507011f', 'hex');

interface SClient {
  code: number | null;
  out: string;
}

/** `openssl s_client -alpn acme-tls/1 -servername NAME` with stdin closed at once; bounded by 10 s. */
function sClient(port: number, alpn: string): Promise<SClient> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', NAME, '-alpn', alpn, '-showcerts'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
    child.stdin.end();
  });
}

function firstCert(out: string): X509Certificate | undefined {
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(out)?.[0];
  return pem === undefined ? undefined : new X509Certificate(pem);
}

/** An acme-tls/1 handshake through Node: what was negotiated, and what came after it once a request was written. */
function acmeTlsHandshake(port: number): Promise<{ alpn: string | false; afterRequest: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: NAME, ALPNProtocols: ['acme-tls/1'], rejectUnauthorized: false }, () => {
      const alpn = socket.alpnProtocol ?? false;
      let after = '';
      socket.setEncoding('utf8').on('data', (d: string) => (after += d));
      socket.on('close', () => resolve({ alpn, afterRequest: after }));
      socket.write(`GET / HTTP/1.1\r\nHost: ${NAME}\r\n\r\n`);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
    socket.setTimeout(10_000, () => socket.destroy(new Error('the acme-tls/1 connection was not closed by the server')));
  });
}

/** GET / over normal HTTPS for NAME (http/1.1): the status and whether the certificate holds the acme extension. */
function normalHttps(port: number): Promise<{ status: string; acmeCert: boolean; alpn: string | false }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: NAME, ALPNProtocols: ['http/1.1'], rejectUnauthorized: false }, () => {
      const cert = socket.getPeerX509Certificate();
      const alpn = socket.alpnProtocol ?? false;
      let reply = '';
      socket.setEncoding('utf8').on('data', (d: string) => (reply += d));
      socket.on('end', () => resolve({ status: reply.split('\r\n')[0], acmeCert: cert?.raw.includes(OID_DER) === true, alpn }));
      socket.write(`GET /during HTTP/1.1\r\nHost: ${NAME}\r\nConnection: close\r\n\r\n`);
    });
    socket.on('error', reject);
  });
}

async function nativeHandshakes(portico: Portico): Promise<number> {
  const res = await request(`${adminUrl(portico)}/metrics`);
  const m = /^portico_tls_native_handshakes_total (\d+)$/m.exec(res.body.toString());
  return m === null ? 0 : Number(m[1]);
}

async function issueByTlsAlpn(t: TestContext, nativeTls: boolean): Promise<void> {
  if (!needPeer(t, 'pebble', hasPebble()) || !needPeer(t, 'openssl', hasCommand('openssl', ['version']))) return;
  if (nativeTls && !nativeTlsStatus().available) {
    if (process.env.PORTICO_NATIVE_TLS === '0' || process.env.PORTICO_NATIVE === '0' || process.env.PORTICO_NATIVE_IO === '0') return void t.skip('native TLS switched off');
    if (!needPeer(t, `native TLS (${nativeTlsStatus().reason})`, false)) return;
  }
  const dns = await startDnsServer(t);
  dns.set(NAME, { A: [{ address: '127.0.0.1' }] });
  const backend = await startHttpBackend(t);
  const tlsPort = await freePort();
  // no plain listener at all: http-01 cannot be what passes; Pebble validates TLS-ALPN-01 on tlsPort
  const pebble = await startPebble(t, { httpPort: await freePort(), tlsPort, dnsPort: dns.port, validitySeconds: 3600 });
  const config = {
    workers: 2,
    admin: { address: '127.0.0.1:0' },
    listeners: [
      {
        address: `127.0.0.1:${tlsPort}`,
        tls: { acme: { domains: [NAME], directory: pebble.directory, directory_ca: pebble.caFile, challenge: 'tls-alpn-01' as const, tls_alpn_port: tlsPort } },
      },
    ],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
  };
  // Pebble's look-up of NAME is held: the challenge stays pending in Portico until the test lets it go
  dns.holding = true;
  const asked = dns.nextQuery((q) => q.name === NAME, 60_000);
  const portico = await startPortico(t, config, { env: nativeTls ? {} : { PORTICO_NATIVE_TLS: '0' }, startTimeoutMs: START_TIMEOUT_MS });
  t.after(() => dns.releaseReplies());
  await asked.catch((err: Error) => {
    throw new Error(`${err.message}\n--- pebble ---\n${pebble.output()}\n--- portico ---\n${portico.logs.slice(-20).map((l) => JSON.stringify(l)).join('\n')}`);
  });

  // pending: acme-tls/1 for NAME gets the challenge certificate (self-signed for NAME, critical acmeIdentifier)
  const pending = await sClient(tlsPort, 'acme-tls/1');
  assert.match(pending.out, /ALPN protocol: acme-tls\/1/, pending.out);
  const challengeCert = firstCert(pending.out);
  assert.ok(challengeCert !== undefined, pending.out);
  assert.match(challengeCert.subjectAltName ?? '', new RegExp(`DNS:${NAME.replace(/\./g, '\\.')}`));
  assert.ok(challengeCert.raw.includes(OID_DER), 'the challenge certificate holds the id-pe-acmeIdentifier extension');
  // ... and the connection carries nothing after the handshake: a request written on it gets no answer, only a close
  const acmeConn = await acmeTlsHandshake(tlsPort);
  assert.equal(acmeConn.alpn, 'acme-tls/1');
  assert.equal(acmeConn.afterRequest, '', 'no HTTP on a TLS-ALPN-01 connection');
  // normal HTTPS for the same name meanwhile: the normal (placeholder) certificate, routed as always
  const normal = await normalHttps(tlsPort);
  assert.equal(normal.alpn, 'http/1.1');
  assert.equal(normal.acmeCert, false, 'a ClientHello without acme-tls/1 never gets the challenge certificate');
  assert.match(normal.status, /^HTTP\/1\.1 200/);
  const handshakes = await nativeHandshakes(portico);
  if (nativeTls) assert.ok(handshakes > 0, 'the native TLS path served');
  else assert.equal(handshakes, 0, 'Node\'s TLS served');

  // Pebble validates: the certificate is issued through TLS-ALPN-01
  dns.releaseReplies();
  const issued = await portico.waitForLog((l) => l.msg === 'acme: certificate issued', 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n--- pebble ---\n${pebble.output()}`);
  });
  const ready = portico.logs.filter((l) => l.msg === 'acme: challenge ready');
  assert.deepEqual(ready.map((l) => [l.domain, l.challenge]), [[NAME, 'tls-alpn-01']]);
  const root = await pebble.root();
  await untilServed(tlsPort, root, String(issued.serial).toUpperCase());

  // not pending any more: an acme-tls/1 handshake fails (no application protocol), no certificate under acme-tls/1
  const after = await sClient(tlsPort, 'acme-tls/1');
  assert.doesNotMatch(after.out, /ALPN protocol: acme-tls\/1/, after.out);
  assert.match(after.out, /no application protocol|alert number 120/, after.out);
}

async function untilServed(port: number, root: string, serial: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  let last = '';
  while (Date.now() < deadline) {
    last = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: NAME, ca: root, ALPNProtocols: ['http/1.1'] }, () => {
        const serialNumber = socket.getPeerX509Certificate()?.serialNumber ?? '';
        socket.destroy();
        resolve(serialNumber);
      });
      socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ERR_TLS_CERT_ALTNAME_INVALID' || /self[- ]signed/.test(err.message) ? resolve('placeholder') : reject(err)));
    });
    if (last === serial) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`still serving ${last}, not ${serial}`);
}

test('ACME TLS-ALPN-01 on native TLS: challenge certificate to acme-tls/1 only while pending, connection closed after the handshake, certificate issued', (t) => issueByTlsAlpn(t, true));

test('ACME TLS-ALPN-01 on Node\'s TLS (PORTICO_NATIVE_TLS=0): the same', (t) => issueByTlsAlpn(t, false));
