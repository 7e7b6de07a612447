// TLS listener behaviour on real loopback sockets: certificate choice by SNI (exact, wildcard, default), TLS
// versions, ALPN, session resumption across servers sharing ticket keys (as workers do), and the self-signed
// pair `npm start` generates. Certificates are generated into a temp folder by ensureSelfSigned itself.
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import tls from 'node:tls';
import { generate } from 'selfsigned';
import { SniSelector, certificateNames, createTlsServer, ensureSelfSigned, loadCertificates, type TlsConfig } from '../../src/accept/tls.js';

let dir: string;
let alpha: { cert: string; key: string };
let beta: { cert: string; key: string };

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'portico-tls-'));
  alpha = { cert: path.join(dir, 'alpha', 'cert.pem'), key: path.join(dir, 'alpha', 'key.pem') };
  beta = { cert: path.join(dir, 'beta', 'cert.pem'), key: path.join(dir, 'beta', 'key.pem') };
  assert.equal(await ensureSelfSigned(alpha.cert, alpha.key, ['alpha.test', '127.0.0.1']), true);
  assert.equal(await ensureSelfSigned(beta.cert, beta.key, ['beta.test', '*.beta.test']), true);
});

after(() => rmSync(dir, { recursive: true, force: true }));

function tlsConfig(overrides: Partial<TlsConfig> = {}): TlsConfig {
  return {
    certificates: [
      { ...alpha, self_signed: false },
      { ...beta, self_signed: false },
    ],
    min_version: 'TLSv1.2',
    handshake_timeout: 5_000,
    ...overrides,
  };
}

interface Running {
  port: number;
  clientErrors: Error[];
}

/** A listening tls.Server from createTlsServer (workers feed it accepted sockets; a test may simply listen). */
async function serve(t: TestContext, config: TlsConfig = tlsConfig(), ticketKeys?: Buffer): Promise<Running> {
  const server = createTlsServer(config, { allowHalfOpen: false, ticketKeys }, (socket) => socket.end('ok'));
  const clientErrors: Error[] = [];
  server.on('tlsClientError', (err) => clientErrors.push(err));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, clientErrors };
}

interface Handshake {
  subjectaltname: string | undefined;
  alpn: string | false | null;
  protocol: string | null;
  reused: boolean;
  session: Buffer | undefined;
}

/** Connects, records what was negotiated, reads the server's "ok" to the end. */
function handshake(port: number, opts: tls.ConnectionOptions = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    let session: Buffer | undefined;
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
    const timer = setTimeout(() => socket.destroy(new Error('handshake test timed out')), 10_000);
    socket.on('session', (s: Buffer) => (session = s));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('secureConnect', () => {
      const info = { subjectaltname: socket.getPeerCertificate().subjectaltname, alpn: socket.alpnProtocol, protocol: socket.getProtocol(), reused: socket.isSessionReused() };
      socket.resume();
      socket.on('end', () => {
        clearTimeout(timer);
        resolve({ ...info, session });
      });
    });
  });
}

describe('certificate selection by SNI', () => {
  test('an exact SNI name gets the certificate whose SAN lists it', async (t) => {
    const { port } = await serve(t);
    assert.match((await handshake(port, { servername: 'beta.test' })).subjectaltname ?? '', /DNS:beta\.test/);
    assert.match((await handshake(port, { servername: 'alpha.test' })).subjectaltname ?? '', /DNS:alpha\.test/);
  });

  test('a name under a wildcard SAN gets that certificate; the wildcard covers one label only', async (t) => {
    const { port } = await serve(t);
    assert.match((await handshake(port, { servername: 'www.beta.test' })).subjectaltname ?? '', /DNS:beta\.test/);
    assert.match((await handshake(port, { servername: 'a.b.beta.test' })).subjectaltname ?? '', /DNS:alpha\.test/);
  });

  test('SNI matching ignores case', async (t) => {
    const { port } = await serve(t);
    assert.match((await handshake(port, { servername: 'BETA.Test' })).subjectaltname ?? '', /DNS:beta\.test/);
  });

  test('an unknown SNI name gets the first certificate', async (t) => {
    const { port } = await serve(t);
    assert.match((await handshake(port, { servername: 'unknown.test' })).subjectaltname ?? '', /DNS:alpha\.test/);
  });

  test('a client sending no SNI gets the first certificate', async (t) => {
    const { port } = await serve(t);
    // Node sends no SNI when servername is empty (and never for an IP address).
    assert.match((await handshake(port, { servername: '' })).subjectaltname ?? '', /DNS:alpha\.test/);
  });

  test('explicit hosts in config replace the names read from the certificate', async (t) => {
    const config = tlsConfig({
      certificates: [
        { ...alpha, self_signed: false },
        { ...beta, hosts: ['other.example'], self_signed: false },
      ],
    });
    const { port } = await serve(t, config);
    assert.match((await handshake(port, { servername: 'other.example' })).subjectaltname ?? '', /DNS:beta\.test/);
    assert.match((await handshake(port, { servername: 'beta.test' })).subjectaltname ?? '', /DNS:alpha\.test/);
  });

  test('when two certificates claim a name, the earlier one in the config serves it', () => {
    const certs = loadCertificates(tlsConfig({ certificates: [{ ...beta, self_signed: false }, { ...alpha, hosts: ['beta.test'], self_signed: false }] }));
    const selector = new SniSelector(certs);
    assert.equal(selector.select('beta.test').certFile, beta.cert);
    assert.equal(selector.select('beta.test.').certFile, beta.cert, 'a trailing dot names the same host');
  });
});

describe('protocol versions and ALPN', () => {
  test('TLS 1.1 is refused and the refusal is reported as a client error, not a crash', async (t) => {
    const running = await serve(t);
    // SECLEVEL=0 lets this client offer TLS 1.1 at all, so the refusal comes from the server.
    await assert.rejects(handshake(running.port, { servername: 'alpha.test', minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }));
    assert.equal(running.clientErrors.length, 1);
  });

  test('TLS 1.2 is accepted by default and refused when min_version is TLSv1.3', async (t) => {
    const v12 = await serve(t);
    assert.equal((await handshake(v12.port, { maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2');
    const v13 = await serve(t, tlsConfig({ min_version: 'TLSv1.3' }));
    await assert.rejects(handshake(v13.port, { maxVersion: 'TLSv1.2' }));
    assert.equal((await handshake(v13.port)).protocol, 'TLSv1.3');
  });

  test('ALPN negotiates http/1.1 when the client also offers h2, with the default and an SNI certificate', async (t) => {
    const { port } = await serve(t);
    assert.equal((await handshake(port, { ALPNProtocols: ['h2', 'http/1.1'] })).alpn, 'http/1.1');
    assert.equal((await handshake(port, { servername: 'beta.test', ALPNProtocols: ['h2', 'http/1.1'] })).alpn, 'http/1.1');
  });

  test('a handshake that never starts is cut at handshake_timeout and counted as a client error', async (t) => {
    const running = await serve(t, tlsConfig({ handshake_timeout: 200 }));
    const socket = connect(running.port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server never closed the silent connection')), 10_000);
      socket.on('error', () => {});
      socket.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.resume();
    });
    assert.equal(running.clientErrors.length, 1);
    assert.equal((running.clientErrors[0] as NodeJS.ErrnoException).code, 'ERR_TLS_HANDSHAKE_TIMEOUT');
  });
});

describe('session resumption', () => {
  test('a session ticket from one server resumes on another sharing the ticket keys (as workers do)', async (t) => {
    const keys = randomBytes(48);
    const a = await serve(t, tlsConfig(), keys);
    const b = await serve(t, tlsConfig(), keys);
    const first = await handshake(a.port, { servername: 'beta.test' });
    assert.ok(first.session, 'the server issued a session ticket');
    const second = await handshake(b.port, { servername: 'beta.test', session: first.session });
    // A resumed session sends no certificate: resumption itself is the proof.
    assert.equal(second.reused, true);
  });

  test('servers with different ticket keys do not resume each other’s sessions', async (t) => {
    const a = await serve(t, tlsConfig(), randomBytes(48));
    const b = await serve(t, tlsConfig(), randomBytes(48));
    const first = await handshake(a.port, { servername: 'alpha.test' });
    assert.equal((await handshake(b.port, { servername: 'alpha.test', session: first.session })).reused, false);
  });
});

describe('self-signed certificates', () => {
  test('the generated pair has the hosts as DNS and IP SANs, an EC P-256 key, a year of validity, a 0600 key', () => {
    const x509 = new X509Certificate(readFileSync(alpha.cert));
    assert.equal(x509.subjectAltName, 'DNS:alpha.test, IP Address:127.0.0.1');
    assert.equal(x509.publicKey.asymmetricKeyType, 'ec');
    assert.equal(x509.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const days = (Date.parse(x509.validTo) - Date.now()) / 86_400_000;
    assert.ok(days > 360 && days <= 366, `valid for ${days} more days`);
    assert.equal(statSync(alpha.key).mode & 0o777, 0o600);
    assert.ok(x509.checkPrivateKey(createPrivateKey(readFileSync(alpha.key))));
  });

  test('a client trusting the generated certificate verifies it for its host name', async (t) => {
    const { port } = await serve(t);
    const ok = await handshake(port, { servername: 'alpha.test', rejectUnauthorized: true, ca: readFileSync(alpha.cert) });
    assert.match(ok.subjectaltname ?? '', /alpha\.test/);
  });

  test('existing files are kept as they are', async () => {
    const before = readFileSync(alpha.cert, 'utf8');
    assert.equal(await ensureSelfSigned(alpha.cert, alpha.key, ['changed.test']), false);
    assert.equal(readFileSync(alpha.cert, 'utf8'), before);
  });

  test('a lone certificate without its key is an error, and nothing is overwritten', async () => {
    const cert = path.join(dir, 'lone', 'cert.pem');
    const key = path.join(dir, 'lone', 'key.pem');
    await ensureSelfSigned(cert, key);
    rmSync(key);
    const before = readFileSync(cert, 'utf8');
    await assert.rejects(ensureSelfSigned(cert, key), /exists but .*key\.pem does not/);
    assert.equal(readFileSync(cert, 'utf8'), before);
  });

  test('without hosts the certificate serves localhost, 127.0.0.1 and ::1', async () => {
    const cert = path.join(dir, 'default', 'cert.pem');
    await ensureSelfSigned(cert, path.join(dir, 'default', 'key.pem'));
    assert.equal(new X509Certificate(readFileSync(cert)).subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    assert.deepEqual(certificateNames(readFileSync(cert)), ['localhost']);
  });
});

describe('certificate names', () => {
  test('a certificate without a subjectAltName is known by its CN', async () => {
    const pems = await generate([{ name: 'commonName', value: 'Legacy.Example' }], { keyType: 'ec', algorithm: 'sha256', extensions: [{ name: 'basicConstraints', cA: false }] });
    assert.equal(new X509Certificate(pems.cert).subjectAltName, undefined);
    assert.deepEqual(certificateNames(pems.cert), ['legacy.example']);
  });

  test('a key that does not match its certificate is refused with both file names', () => {
    const wrongKey = path.join(dir, 'wrong-key.pem');
    writeFileSync(wrongKey, readFileSync(beta.key));
    assert.throws(() => loadCertificates(tlsConfig({ certificates: [{ cert: alpha.cert, key: wrongKey, self_signed: false }] })), (err: Error) => err.message.includes(alpha.cert) && err.message.includes(wrongKey));
  });

  test('a missing certificate file is refused with its path', () => {
    const missing = path.join(dir, 'missing.pem');
    assert.throws(() => loadCertificates(tlsConfig({ certificates: [{ cert: missing, key: alpha.key, self_signed: false }] })), new RegExp(`${missing.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: ENOENT`));
  });
});
