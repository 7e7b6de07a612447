// Odd ClientHellos while a TLS-ALPN-01 challenge is pending, on native TLS and on Node's: the server_name and ALPN
// extensions of a real ClientHello (offering acme-tls/1 for the name) are replaced by fast-check's bytes, broken
// lists and near misses, and sent on fresh connections; the worker must never crash, and afterwards the
// challenge is still served to acme-tls/1 and normal HTTPS still works. The challenge is held pending by a CA
// that never validates (test/helpers/fake-acme.ts), so no Pebble is needed. This drives the addon's own
// ClientHello reading (OnClientHello in src/native/tls.cc), which runs before OpenSSL checks the extensions.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import tls from 'node:tls';
import fc from 'fast-check';
import { captureNodeHello } from '../helpers/client-hello-capture.js';
import { startFakeAcme } from '../helpers/fake-acme.js';
import { freePort } from '../helpers/pebble.js';
import { needPeer } from '../helpers/peers.js';
import { startPortico, TEST_CERT, type Portico } from '../helpers/portico.js';
import { nativeTlsStatus } from '../../src/native/tls.js';

/** Workers start slower under scripts/asan.sh (an instrumented addon preloaded with libasan). */
const START_TIMEOUT_MS = process.env.PORTICO_NATIVE_ADDON !== undefined ? 120_000 : 20_000;

const NAME = 'fuzz.acme.test';
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const RUNS = 120;

/** A single-record ClientHello rebuilt with other bodies for some extensions (every length fixed up). */
function withExtensions(hello: Buffer, bodies: ReadonlyMap<number, Buffer>): Buffer {
  assert.equal(hello[0], 0x16, 'a handshake record');
  assert.equal(hello.readUInt16BE(3), hello.length - 5, 'one record holds the whole ClientHello');
  let at = 5 + 4 + 2 + 32; // record header, handshake header, legacy_version, random
  at += 1 + hello[at]; // legacy_session_id
  at += 2 + hello.readUInt16BE(at); // cipher_suites
  at += 1 + hello[at]; // legacy_compression_methods
  const head = hello.subarray(5 + 4, at);
  const extEnd = at + 2 + hello.readUInt16BE(at);
  const exts: Buffer[] = [];
  for (let p = at + 2; p < extEnd; ) {
    const type = hello.readUInt16BE(p);
    const len = hello.readUInt16BE(p + 2);
    const body = bodies.get(type) ?? hello.subarray(p + 4, p + 4 + len);
    const ext = Buffer.alloc(4);
    ext.writeUInt16BE(type, 0);
    ext.writeUInt16BE(body.length, 2);
    exts.push(ext, body);
    p += 4 + len;
  }
  const extBlock = Buffer.concat(exts);
  const extLen = Buffer.alloc(2);
  extLen.writeUInt16BE(extBlock.length);
  const body = Buffer.concat([head, extLen, extBlock]);
  const hs = Buffer.from([0x01, (body.length >> 16) & 0xff, (body.length >> 8) & 0xff, body.length & 0xff]);
  const rec = Buffer.from([0x16, hello[1], hello[2], 0, 0]);
  rec.writeUInt16BE(hs.length + body.length, 3);
  return Buffer.concat([rec, hs, body]);
}

/** RFC 6066 §3 ServerNameList with one host_name entry. */
function sniBody(name: Buffer): Buffer {
  const entry = Buffer.concat([Buffer.from([0, name.length >> 8, name.length & 0xff]), name]);
  return Buffer.concat([Buffer.from([entry.length >> 8, entry.length & 0xff]), entry]);
}

/** RFC 7301 §3.1 ProtocolNameList. */
function alpnBody(protocols: readonly Buffer[]): Buffer {
  const list = Buffer.concat(protocols.flatMap((p) => [Buffer.from([p.length & 0xff]), p]));
  return Buffer.concat([Buffer.from([list.length >> 8, list.length & 0xff]), list]);
}

/**
 * Sends `bytes` on a fresh connection and waits (bounded) until the server closes or answers. `end`: a
 * FIN follows the bytes (a truncated record then ends the input; how long a server holds a stalled handshake is
 * tested with tls.handshake_timeout elsewhere).
 */
function send(port: number, bytes: Buffer, end = false): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => (end ? socket.end(bytes) : socket.write(bytes)));
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    };
    const timer = setTimeout(done, 2000);
    socket.on('data', done);
    socket.on('close', done);
    socket.on('error', done);
  });
}

function handshake(port: number, alpn: string, maxVersion: tls.SecureVersion = 'TLSv1.3'): Promise<{ alpn: string | false; acmeCert: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: NAME, ALPNProtocols: [alpn], maxVersion, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerX509Certificate();
      resolve({ alpn: socket.alpnProtocol ?? false, acmeCert: cert?.raw.includes(Buffer.from('06082b0601050507011f', 'hex')) === true });
      socket.destroy();
    });
    socket.on('error', reject);
  });
}

/** The challenge reached the worker: acme-tls/1 is negotiated (bounded: the IPC message is on its way). */
async function untilPending(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await handshake(port, 'acme-tls/1').catch(() => undefined);
    if (r?.alpn === 'acme-tls/1' && r.acmeCert) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('the challenge certificate was never served');
}

async function fuzzWhilePending(t: TestContext, nativeTls: boolean): Promise<void> {
  if (nativeTls && !nativeTlsStatus().available) {
    if (['PORTICO_NATIVE', 'PORTICO_NATIVE_IO', 'PORTICO_NATIVE_TLS'].some((v) => process.env[v] === '0')) return void t.skip('native TLS switched off');
    if (!needPeer(t, `native TLS (${nativeTlsStatus().reason})`, false)) return;
  }
  const ca = await startFakeAcme(t, { pendingTlsAlpn: NAME });
  const port = await freePort();
  const portico: Portico = await startPortico(
    t,
    {
      workers: 1,
      admin: { address: '127.0.0.1:0' },
      listeners: [{ address: `127.0.0.1:${port}`, tls: { acme: { domains: [NAME], directory: ca.directory, directory_ca: TEST_CERT, challenge: 'tls-alpn-01', tls_alpn_port: port } } }],
      routes: [{ match: { path: '/' }, return: { status: 200, body: 'ok' } }],
    },
    { env: nativeTls ? {} : { PORTICO_NATIVE_TLS: '0' }, startTimeoutMs: START_TIMEOUT_MS },
  );
  await portico.waitForLog((l) => l.msg === 'acme: challenge ready', 20_000);
  await untilPending(port);

  const hello = await captureNodeHello({ servername: NAME, ALPNProtocols: ['acme-tls/1'] });
  const name = Buffer.from(NAME);
  const acme = Buffer.from('acme-tls/1');
  const odd: Array<[sni: Buffer, alpn: Buffer]> = [
    [Buffer.alloc(0), Buffer.alloc(0)], // empty bodies
    [sniBody(name), Buffer.from([0x00])], // truncated list length
    [sniBody(name), Buffer.from([0x00, 0x0b, 0x0a, ...acme])], // list length one short
    [sniBody(name), Buffer.from([0x00, 0x0d, 0x0a, ...acme, 0x00])], // a zero-length name after it
    [sniBody(name), Buffer.from([0x00, 0x0b, 0x0b, ...acme])], // a name longer than the list
    [sniBody(name), alpnBody([acme.subarray(0, 9)])], // a prefix of acme-tls/1
    [sniBody(name), alpnBody([Buffer.from('ACME-TLS/1')])], // other case: not the protocol
    [sniBody(name), alpnBody(Array.from({ length: 40 }, () => acme))], // many times over
    [sniBody(Buffer.from(`${NAME}\0.evil`)), alpnBody([acme])], // a NUL in the name
    [sniBody(Buffer.from('x'.repeat(1000))), alpnBody([acme])], // a huge name
    [sniBody(Buffer.alloc(0)), alpnBody([acme])], // an empty name
    [Buffer.from([0x00, 0x05, 0x01, 0x00, 0x02, 0x61, 0x62]), alpnBody([acme])], // a non-host_name entry only
    [Buffer.from([0x00, 0x10, 0x00, 0x00, 0x0e, ...name]), alpnBody([acme])], // name length past the list
    [sniBody(Buffer.from(`${NAME.toUpperCase()}.`)), alpnBody([acme])], // other case and a trailing dot: still the name
  ];
  for (const [sni, alpn] of odd) await send(port, withExtensions(hello, new Map([[EXT_SERVER_NAME, sni], [EXT_ALPN, alpn]])));
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 }), fc.boolean(), async (sni, alpn, keepSni) => {
      const bodies = new Map([[EXT_ALPN, Buffer.from(alpn)]]);
      if (!keepSni) bodies.set(EXT_SERVER_NAME, Buffer.from(sni));
      await send(port, withExtensions(hello, bodies));
    }),
    { numRuns: RUNS },
  );
  // and raw junk after a valid record header, mostly shorter than the record it announces, then FIN: both TLS
  // paths close at the end of input (e2e/native-tls.test.ts)
  await fc.assert(fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 600 }), async (junk) => send(port, Buffer.concat([hello.subarray(0, 9), Buffer.from(junk)]), true)), { numRuns: 30 });

  assert.ok(!portico.logs.some((l) => l.msg === 'worker exited unexpectedly: restarting it'), 'no worker crashed');
  const pending = await handshake(port, 'acme-tls/1');
  assert.deepEqual(pending, { alpn: 'acme-tls/1', acmeCert: true }, 'the challenge is still served');
  // TLS 1.2 fails, never acme-tls/1 over a normal certificate: natively the challenge certificate (acme-client's,
  // keyUsage keyCertSign only) cannot sign a TLS 1.2 ECDHE exchange (alert 40); Node's TLS picks the certificate
  // before ALPN there and so refuses acme-tls/1 (alert 120). CAs validate over TLS 1.3, which Portico always offers.
  const tls12 = await handshake(port, 'acme-tls/1', 'TLSv1.2').catch((err: Error) => err);
  assert.match(String(tls12), nativeTls ? /alert handshake failure|alert number 40/i : /no application protocol|alert number 120/i);
  const normal = await handshake(port, 'http/1.1');
  assert.deepEqual(normal, { alpn: 'http/1.1', acmeCert: false }, 'normal handshakes are untouched');
  assert.equal(ca.requests.filter((r) => r === 'POST /chall/1').length >= 1, true, 'the challenge was handed to the CA');
}

test('TLS-ALPN-01 pending on native TLS: odd and random server_name / ALPN extensions crash nothing', (t) => fuzzWhilePending(t, true));

test('TLS-ALPN-01 pending on Node\'s TLS: odd and random server_name / ALPN extensions crash nothing', (t) => fuzzWhilePending(t, false));
