// A TLS backend for SNI passthrough tests, with its own self-signed certificate for pass.test (Portico never sees
// its key), and a client that proves a connection reached it: it trusts only that certificate and checks the
// backend's reply. The backend answers `backend:<first data>` and ends.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { TestContext } from 'node:test';
import tls from 'node:tls';
import { ensureSelfSigned } from '../../src/accept/tls.js';

export interface PassthroughBackend {
  readonly port: number;
  /** Its certificate (PEM): the only one passThrough trusts. */
  readonly cert: Buffer;
}

export async function startPassthroughBackend(t: TestContext): Promise<PassthroughBackend> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-pass-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const certFile = path.join(dir, 'backend.crt');
  const keyFile = path.join(dir, 'backend.key');
  await ensureSelfSigned(certFile, keyFile, ['pass.test']);
  const cert = await readFile(certFile);
  const server = tls.createServer({ cert, key: await readFile(keyFile) }, (s) => {
    s.on('error', () => s.destroy());
    s.once('data', (d: Buffer) => s.end(`backend:${d.toString()}`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, cert };
}

/** TLS for pass.test to 127.0.0.1:`to` (or over a stream already open), "hello" sent: only `backend` can have answered. */
export async function passThrough(t: TestContext, to: number | Duplex, backend: PassthroughBackend): Promise<void> {
  const s = tls.connect({ ...(typeof to === 'number' ? { host: '127.0.0.1', port: to } : { socket: to }), servername: 'pass.test', ca: backend.cert });
  t.after(() => s.destroy());
  await once(s, 'secureConnect');
  assert.equal(s.getPeerX509Certificate()?.fingerprint256, new X509Certificate(backend.cert).fingerprint256);
  const reply: Buffer[] = [];
  s.on('data', (d: Buffer) => reply.push(d));
  s.write('hello');
  await once(s, 'end');
  // the reply is in: the close_notify Node writes back after the backend's end may be cancelled by the backend's
  // close (write ECANCELED when a JS stream is under the TLS socket, EPIPE on a socket), which is not the test's business
  s.on('error', () => undefined);
  assert.equal(Buffer.concat(reply).toString(), 'backend:hello');
}
