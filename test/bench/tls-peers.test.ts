// The TLS listeners `portico bench` starts for nginx, HAProxy and Portico make the same handshake for the same
// client: TLS 1.3, and a resumption by ticket on the next connection. A peer left on its own defaults may not
// (nginx 1.22 has TLS 1.3 off), and its "new TLS connection" row then measures a cheaper handshake than the others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { freePort, stopTree, type Spawned } from '../../bench/lib/procs.js';
import { startBackends, startHaproxy, startNginxProxy, startPortico, type Target, type TlsListener } from '../../bench/peers/targets.js';
import { ensureSelfSigned } from '../../src/accept/tls.js';
import { hasCommand, needPeer } from '../helpers/peers.js';

interface Handshake {
  protocol: string | null;
  reused: boolean;
  session: Buffer | undefined;
}

/** One HTTPS request with Connection: close, offering `session`; what was negotiated and the last ticket received. */
function handshake(port: number, session?: Buffer): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, session, ALPNProtocols: ['http/1.1'] });
    let ticket: Buffer | undefined;
    let protocol: string | null = null;
    let reused = false;
    const timer = setTimeout(() => s.destroy(new Error('no answer in 10 s')), 10_000);
    s.on('session', (t: Buffer) => (ticket = t));
    s.once('secureConnect', () => {
      protocol = s.getProtocol();
      reused = s.isSessionReused();
      s.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    });
    s.on('data', () => undefined);
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.once('close', () => {
      clearTimeout(timer);
      resolve({ protocol, reused, session: ticket });
    });
  });
}

test('bench TLS listeners (nginx, HAProxy, Portico): TLS 1.3 for a TLS 1.3 client, resumed by ticket on the next connection', { timeout: 120_000 }, async (t) => {
  if (!needPeer(t, 'nginx', hasCommand('nginx', ['-v'])) || !needPeer(t, 'haproxy', hasCommand('haproxy', ['-v']))) return;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'portico-bench-tls-'));
  const started: Spawned[] = [];
  t.after(async () => {
    for (const p of started.reverse()) await stopTree(p, 3000);
    rmSync(tmp, { recursive: true, force: true });
  });
  const cert = path.join(tmp, 'tls', 'bench.crt');
  const key = path.join(tmp, 'tls', 'bench.key');
  await ensureSelfSigned(cert, key, ['localhost', '127.0.0.1']);
  const pem = path.join(tmp, 'tls', 'bench.pem');
  writeFileSync(pem, `${readFileSync(cert, 'utf8')}\n${readFileSync(key, 'utf8')}`);
  const listener = async (): Promise<TlsListener> => ({ port: await freePort(), cert, key, pem });

  const backends = await startBackends(tmp, true, undefined);
  started.push(backends.http, backends.ws);
  const targets: Target[] = [];
  const keep = (target: Target): void => {
    if (target.proc !== undefined) started.push(target.proc);
    targets.push(target);
  };
  keep(await startNginxProxy(tmp, backends, 'test', undefined, await listener()));
  keep(await startHaproxy(tmp, backends, 'test', undefined, await listener()));
  keep(await startPortico(tmp, backends, false, undefined, { tls: await listener() }));

  for (const target of targets) {
    assert.equal(target.error, undefined, `${target.id} did not start: ${target.error}`);
    const first = await handshake(target.tlsPort!);
    assert.equal(first.protocol, 'TLSv1.3', `${target.id} negotiated ${first.protocol}`);
    assert.ok(first.session !== undefined, `${target.id} issued no ticket`);
    const second = await handshake(target.tlsPort!, first.session);
    assert.equal(second.protocol, 'TLSv1.3', `${target.id} negotiated ${second.protocol} on resumption`);
    assert.equal(second.reused, true, `${target.id} did not resume the ticket`);
  }
});
