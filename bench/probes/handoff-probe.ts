// Probes, on this machine, the ways a connection accepted by Node can reach uWebSockets.js, and what each costs:
// (1) SSLApp.adoptSocket(dup(fd)) of a paused, untouched socket; (2) App.adoptSocket after a recvPeek of the
// head; (3) a per-worker App on listen_unix fed PROXY v2 + the replayed head through a JS relay. Loopback only,
// bounded in count and time; it asserts nothing and exits by itself. Figures go to native-notes/handoff.md.
// Usage: npm run bench:handoff -- [--n 1000] [--concurrency 10]
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import uWS from 'uWebSockets.js';
import WebSocket from 'ws';
import { ensureSelfSigned } from '../../src/accept/tls.js';
import { buildProxyV2 } from '../../src/wire/proxy-protocol.js';
import { native, nativeStatus } from '../../src/native/addon.js';
import { readArgs } from '../lib/args.js';
import { median, percentile } from '../lib/stats.js';

/** adoptSocket is in the binary but not in the package's typings. */
type Adopting = uWS.TemplatedApp & { adoptSocket?: (fd: number) => uWS.TemplatedApp };

const HOST = '127.0.0.1';
/** A second loopback address for the client, so "the real peer" is told apart from the proxy's own address. */
const CLIENT_ADDR = '127.0.0.2';
const PHASE_MS = 60_000;

const USAGE = `usage: npm run bench:handoff -- [--n 1000] [--concurrency 10]
  --n N              connections per hand-off way
  --concurrency N    connections in flight`;
const ARGS = readArgs(process.argv.slice(2), { n: 'string', concurrency: 'string' }, USAGE);
const N = ARGS.int('n', 1000, 1, 100_000);
const CONC = ARGS.int('concurrency', 10, 1, 1000);

function fdOf(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  return fd;
}

function text(ab: ArrayBuffer): string {
  return Buffer.from(ab).toString();
}

function uwsListen(app: uWS.TemplatedApp): Promise<{ port: number; close: () => void }> {
  return new Promise((resolve, reject) => {
    app.listen(HOST, 0, (ls) => {
      if (ls === false) reject(new Error('uWS listen failed'));
      else resolve({ port: uWS.us_socket_local_port(ls), close: () => uWS.us_listen_socket_close(ls) });
    });
  });
}

/** Routes every app gets: GET answers with the peer uWS sees; /ws echoes and greets with the peer. */
function routes(app: uWS.TemplatedApp): uWS.TemplatedApp {
  return app
    .get('/*', (res) => {
      const proxied = text(res.getProxiedRemoteAddressAsText());
      res.end(`peer=${text(res.getRemoteAddressAsText())} proxied=${proxied === '' ? '-' : proxied}#`);
    })
    .ws('/ws', {
      open: (ws) => void ws.send(`peer=${text(ws.getRemoteAddressAsText())}`),
      message: (ws, msg) => void ws.send(msg),
    });
}

/** One GET over a fresh connection (TLS or not); resolves with the body once the '#' marker arrives. */
function oneGet(port: number, secure: boolean, localAddress: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const opts = { port, host: HOST, localAddress };
    const s: net.Socket = secure ? tls.connect({ ...opts, rejectUnauthorized: false }) : net.connect(opts);
    let buf = '';
    const timer = setTimeout(() => fail(new Error(`no answer in 5 s (got ${JSON.stringify(buf.slice(0, 80))})`)), 5000);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    };
    s.once(secure ? 'secureConnect' : 'connect', () => s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.endsWith('#')) {
        clearTimeout(timer);
        s.destroy();
        resolve(buf.slice(buf.indexOf('\r\n\r\n') + 4));
      }
    });
    s.on('error', fail);
    s.on('close', () => fail(new Error(`closed early (got ${JSON.stringify(buf.slice(0, 80))})`)));
  });
}

/** N GETs, CONC at a time; connections per second, or the first error. */
async function load(port: number, secure: boolean): Promise<{ perSec: number; failed: number; firstError?: string }> {
  let next = 0;
  let failed = 0;
  let firstError: string | undefined;
  const deadline = Date.now() + PHASE_MS;
  const t0 = process.hrtime.bigint();
  const lane = async (): Promise<void> => {
    while (next < N && Date.now() < deadline) {
      next++;
      try {
        await oneGet(port, secure, HOST);
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: CONC }, lane));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { perSec: Math.round(next / s), failed, firstError };
}

async function wsCheck(port: number, secure: boolean): Promise<string> {
  const ws = new WebSocket(`${secure ? 'wss' : 'ws'}://${HOST}:${port}/ws`, { rejectUnauthorized: false, localAddress: CLIENT_ADDR });
  const timer = setTimeout(() => ws.terminate(), 5000);
  try {
    const [greet] = (await once(ws, 'message')) as [Buffer];
    ws.send('echo-me');
    const [echo] = (await once(ws, 'message')) as [Buffer];
    ws.close();
    return `${greet.toString()}, echo=${echo.toString()}`;
  } finally {
    clearTimeout(timer);
  }
}

/** Per-hand-off timings in µs: median and p99. */
class Timings {
  #us: number[] = [];
  add(start: bigint): void {
    if (this.#us.length < 100_000) this.#us.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  report(): string {
    if (this.#us.length === 0) return 'n=0';
    return `n=${this.#us.length} median=${median(this.#us).toFixed(1)}µs p99=${percentile(this.#us, 99).toFixed(1)}µs`;
  }
}

function listenNode(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port)));
}

async function main(): Promise<void> {
  const addon = native();
  if (addon === undefined) throw new Error(`native addon needed: ${nativeStatus().reason}`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portico-handoff-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  await ensureSelfSigned(cert, key, [HOST]);
  const out = (line: string): void => void process.stdout.write(`${line}\n`);
  out(`uWS adoptSocket: ${typeof (uWS.App() as Adopting).adoptSocket}; N=${N} connections per run, ${CONC} at a time, ${HOST}`);

  // Can the client bind a second loopback address? Then the peer check is unambiguous.
  const probe = net.connect({ port: 9, host: HOST, localAddress: CLIENT_ADDR });
  const bindOk = await new Promise<boolean>((r) => {
    probe.on('error', (e: NodeJS.ErrnoException) => r(e.code !== 'EADDRNOTAVAIL'));
    probe.on('connect', () => r(true));
  });
  probe.destroy();
  const peerAddr = bindOk ? CLIENT_ADDR : HOST;

  // --- (1) SSLApp adopts the untouched socket and terminates TLS itself.
  {
    const app = routes(uWS.SSLApp({ cert_file_name: cert, key_file_name: key })) as Adopting;
    const adopt = app.adoptSocket;
    if (adopt === undefined) throw new Error('adoptSocket missing');
    const t = new Timings();
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      const start = process.hrtime.bigint();
      const fd = addon.dup(fdOf(socket));
      socket.destroy();
      adopt.call(app, fd);
      t.add(start);
    });
    const port = await listenNode(server);
    const direct = await uwsListen(routes(uWS.SSLApp({ cert_file_name: cert, key_file_name: key })));
    out(`(1) SSLApp adopt: GET from ${peerAddr} -> ${await oneGet(port, true, peerAddr)}`);
    out(`(1) SSLApp adopt: WSS -> ${await wsCheck(port, true)}`);
    const a = await load(port, true);
    out(`(1) SSLApp adopt: ${a.perSec} TLS conn/s (failed ${a.failed}${a.firstError ? `: ${a.firstError}` : ''}); hand-off dup+destroy+adoptSocket ${t.report()}`);
    const d = await load(direct.port, true);
    out(`(1) SSLApp own listen (baseline): ${d.perSec} TLS conn/s (failed ${d.failed}${d.firstError ? `: ${d.firstError}` : ''})`);
    server.close();
    direct.close();
  }

  // --- (2) plain App adopts a plaintext socket after the head was peeked (nothing consumed).
  {
    const app = routes(uWS.App()) as Adopting;
    const adopt = app.adoptSocket;
    if (adopt === undefined) throw new Error('adoptSocket missing');
    const t = new Timings();
    let lastHead = '';
    let peekPolls = 0;
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      const fd = fdOf(socket);
      // The head may not have arrived at accept time: poll, bounded (a real worker would wait on readability).
      const tryPeek = (left: number): void => {
        const start = process.hrtime.bigint();
        const head = addon.recvPeek(fd, 4096);
        if (head === null && left > 0) {
          peekPolls++;
          setImmediate(tryPeek, left - 1);
          return;
        }
        lastHead = head === null ? '(nothing)' : head.toString('latin1').split('\r\n')[0];
        const dup = addon.dup(fd);
        socket.destroy();
        adopt.call(app, dup);
        t.add(start);
      };
      tryPeek(1000);
    });
    const port = await listenNode(server);
    const direct = await uwsListen(routes(uWS.App()));
    out(`(2) App adopt after recvPeek: GET from ${peerAddr} -> ${await oneGet(port, false, peerAddr)} (peeked "${lastHead}")`);
    out(`(2) App adopt after recvPeek: WS -> ${await wsCheck(port, false)}`);
    peekPolls = 0;
    const a = await load(port, false);
    out(`(2) App adopt after recvPeek: ${a.perSec} conn/s (failed ${a.failed}${a.firstError ? `: ${a.firstError}` : ''}); hand-off recvPeek+dup+destroy+adoptSocket ${t.report()}; empty peeks polled again ${peekPolls}`);
    const d = await load(direct.port, false);
    out(`(2) App own listen (baseline): ${d.perSec} conn/s (failed ${d.failed}${d.firstError ? `: ${d.firstError}` : ''})`);
    server.close();
    direct.close();
  }

  // --- (3) DESIGN.md path: App on listen_unix, PROXY v2 + replayed head, bytes relayed by Node.
  {
    const sock = path.join(dir, 'uws.sock');
    const app = routes(uWS.App());
    await new Promise<void>((resolve, reject) => {
      app.listen_unix((ls) => (ls ? resolve() : reject(new Error('listen_unix failed'))), sock);
    });
    const t = new Timings();
    const server = net.createServer((client) => {
      client.once('data', (head: Buffer) => {
        const start = process.hrtime.bigint();
        client.pause();
        const up = net.connect(sock);
        up.once('connect', () => {
          const hdr = buildProxyV2({ address: client.remoteAddress ?? '', port: client.remotePort ?? 0 }, { address: client.localAddress ?? '', port: client.localPort ?? 0 });
          up.write(Buffer.concat([hdr, head]));
          client.pipe(up).pipe(client);
          client.resume();
          t.add(start);
        });
        const end = (): void => {
          client.destroy();
          up.destroy();
        };
        up.on('error', end);
        up.on('close', end);
        client.on('error', end);
        client.on('close', end);
      });
    });
    const port = await listenNode(server);
    out(`(3) listen_unix + PROXY v2: GET from ${peerAddr} -> ${await oneGet(port, false, peerAddr)}`);
    out(`(3) listen_unix + PROXY v2: WS -> ${await wsCheck(port, false)}`);
    const a = await load(port, false);
    out(`(3) listen_unix + PROXY v2: ${a.perSec} conn/s (failed ${a.failed}${a.firstError ? `: ${a.firstError}` : ''}); first byte to head replayed (unix connect + write) ${t.report()}`);
    server.close();
  }
  rmSync(dir, { recursive: true, force: true });
}

const guard = setTimeout(() => {
  process.stderr.write('handoff-probe: gave up after 240 s\n');
  process.exit(1);
}, 240_000);
main().then(
  () => {
    clearTimeout(guard);
    // Adopted uWS sockets and the unix listener keep uWS's loop alive; the probe is done.
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`handoff-probe: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
