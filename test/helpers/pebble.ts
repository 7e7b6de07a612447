// Pebble, Let's Encrypt's ACME test server (Debian's `pebble`), as a real peer: one process on loopback with its
// own HTTPS certificate (made here), its resolver pointed at the test's DNS server, validating HTTP-01 on the
// port the test names. Stopped and its folder removed in t.after. Nothing here knows about Portico.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { hasCommand } from './peers.js';
import { selfSigned } from './certs.js';
import { freePort } from './ports.js';

export function hasPebble(): boolean {
  // pebble has no --version; -h prints its usage and exits 2
  return hasCommand('sh', ['-c', 'command -v pebble']);
}

export interface Pebble {
  /** The ACME directory URL. */
  readonly directory: string;
  /** PEM file of the certificate Pebble's HTTPS serves (for `directory_ca`). */
  readonly caFile: string;
  /** Pebble's issuing root (PEM), from its management interface: what issued certificates chain to. */
  root(): Promise<string>;
  readonly output: () => string;
}

function get(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${res.statusCode}`))));
      })
      .on('error', reject);
  });
}

/** Starts Pebble validating HTTP-01 on `httpPort` and TLS-ALPN-01 on `tlsPort`, resolving names with `dnsPort`. */
export async function startPebble(t: TestContext, opts: { httpPort: number; tlsPort: number; dnsPort: number; validitySeconds?: number }): Promise<Pebble> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-pebble-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const pems = await selfSigned('localhost', { server: ['localhost', '127.0.0.1'] });
  const caFile = path.join(dir, 'cert.pem');
  await writeFile(caFile, pems.cert);
  await writeFile(path.join(dir, 'key.pem'), pems.key);
  let out = '';
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const [acmePort, mgmtPort] = [await freePort(), await freePort()];
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: caFile,
        privateKey: path.join(dir, 'key.pem'),
        httpPort: opts.httpPort,
        tlsPort: opts.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(opts.validitySeconds === undefined ? {} : { certificateValidityPeriod: opts.validitySeconds }),
      },
    };
    const configFile = path.join(dir, 'pebble-config.json');
    await writeFile(configFile, JSON.stringify(config));
    const child = spawn('pebble', ['-config', configFile, '-dnsserver', `127.0.0.1:${opts.dnsPort}`], {
      cwd: dir,
      // no random sleeps before validation, no nonce rejections, and every order validated again
      env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = once(child, 'exit');
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out = (out + s).slice(-64 * 1024)));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (out = (out + s).slice(-64 * 1024)));
    t.after(async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    });
    const directory = `https://127.0.0.1:${acmePort}/dir`;
    const deadline = Date.now() + 10_000;
    let up = false;
    while (!up && Date.now() < deadline && child.exitCode === null) {
      up = await get(directory, pems.cert).then(
        () => true,
        () => false,
      );
      if (!up) await new Promise((r) => setTimeout(r, 50));
    }
    if (up) {
      return { directory, caFile, root: () => get(`https://127.0.0.1:${mgmtPort}/roots/0`, pems.cert), output: () => out };
    }
    lastError = new Error(`pebble did not serve ${directory}`);
    child.kill('SIGKILL');
    await exited;
  }
  throw new Error(`${String(lastError)}\n${out}`);
}

export { freePort };
