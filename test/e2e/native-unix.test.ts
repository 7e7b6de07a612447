// `unix:/path` targets on the addon's socket I/O (io.cc ioConnectUnix, io.ts connectNative) against the real
// `portico start` (one worker) and real peers on Unix sockets in a temp folder: php-fpm answers the same bytes with
// FastCGI's relayed answer on and off (counted as native when on), keeps its connection, still has its STDERR
// logged, and a stopped FPM is a 502; a missing path, a socket nobody listens on and a full backlog give the same
// answers as node:net's connects (PORTICO_NATIVE_IO=0); an HTTP backend keeps its connection with the relayed
// answer armed, and answers the same through node:net; a WebSocket tunnel to a `ws` backend echoes both ways through the addon's 101 and leaves the
// worker's descriptors where they were.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend, startWsEchoBackend } from '../helpers/backends.js';
import { PYTHON, closed, echo, openWebSocket, request } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico, type Portico } from '../helpers/portico.js';
import { adminStatus } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';
import { needNativeIo } from '../helpers/native-io.js';
import { fdCount, workerPids } from '../helpers/proc-stats.js';
import { FIXTURES } from '../helpers/paths.js';
import { hasPhpFpm, startPhpFpm } from '../helpers/php-fpm.js';

const DOCROOT = path.join(FIXTURES, 'php');
const START = { startTimeoutMs: process.env.PORTICO_NATIVE_ADDON !== undefined ? 120_000 : 20_000 };

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-unix-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function phpConfig(target: string): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener()],
    upstreams: { php: { targets: [target], max_connections: 2 } },
    routes: [{ match: { path_regex: '\\.php$' }, fastcgi: { upstream: 'php', root: DOCROOT } }],
    log: { level: 'warn', access: false },
  } as ConfigInput;
}

function proxyConfig(target: string): ConfigInput {
  return {
    workers: 1,
    admin: { address: '127.0.0.1:0' },
    listeners: [plainListener()],
    upstreams: { b: { targets: [target] } },
    routes: [{ match: { path: '/' }, proxy: 'b' }],
    log: { level: 'warn', access: false },
  } as ConfigInput;
}

async function counts(p: Portico): Promise<{ answers: number; upgrades: number }> {
  const s = await adminStatus(p);
  return { answers: s.workers.reduce((n, w) => n + (w.nativeAnswers ?? 0), 0), upgrades: s.workers.reduce((n, w) => n + (w.nativeUpgrades ?? 0), 0) };
}

/** The raw answers to `paths`, one after the other on one keep-alive connection; `after` runs after each. */
async function rawAnswers(t: TestContext, p: Portico, paths: string[], after: () => void = () => {}): Promise<string[]> {
  const socket = await connectPlain(t, p.httpPort);
  const reader = new ResponseReader(socket);
  const out: string[] = [];
  for (const at of paths) {
    socket.write(`GET ${at} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    out.push((await reader.next()).raw.toString('latin1'));
    after();
  }
  socket.destroy();
  return out;
}

/** Inodes of the connected sockets whose name is `socketPath` (/proc/net/unix): the server's ends of its connections. */
function acceptedAt(socketPath: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length >= 8 && cols[7] === socketPath && cols[5] === '03') out.push(cols[6]);
  }
  return out;
}

test('unix: FastCGI: php-fpm on a Unix socket gives the same bytes with the relayed answer on and off, counted as native, on one kept connection; STDERR logged; FPM stopped -> 502', { timeout: 90_000 }, async (t) => {
  if (!needNativeIo(t) || !needPeer(t, 'php-fpm', hasPhpFpm())) return;
  const fpm = await startPhpFpm(t, { listen: 'unix', children: 2 });
  const p = await startPortico(t, phpConfig(fpm.target), START);
  const js = await startPortico(t, phpConfig(fpm.target), { ...START, env: { PORTICO_NATIVE_ANSWER: '0' } });
  const paths = ['/index.php', '/index.php', '/index.php?x=1', '/big.php?kib=1', '/big.php?kib=1', '/stderr.php', '/stderr.php', '/index.php'];
  const before = await counts(p);
  // FPM's side of the worker's connections after each answer: one, the same one throughout (kept, not reopened)
  const seen = new Set<string>();
  const native = await rawAnswers(t, p, paths, () => {
    const open = acceptedAt(fpm.socketPath!);
    assert.equal(open.length, 1, `one FPM connection, kept: ${open.join(' ')}`);
    seen.add(open[0]);
  });
  assert.equal(seen.size, 1, 'every request on the same FPM connection');
  const plain = await rawAnswers(t, js, paths);
  assert.deepEqual(native, plain);
  assert.match(native[0], /^HTTP\/1\.1 200 OK\r\n[^]*Transfer-Encoding: chunked\r\n[^]*hello from php\n/);
  // the repeats of index.php and big.php are the addon's (a route's first answer, and stderr.php's, are JavaScript's)
  const after = await counts(p);
  assert.ok(after.answers >= before.answers + 3, `relayed natively: ${after.answers - before.answers}`);
  assert.equal((await counts(js)).answers, 0, 'PORTICO_NATIVE_ANSWER=0 relays nothing natively');
  const stderrLines = (): number => p.logs.filter((l) => l.msg === 'FastCGI stderr' && String(l.stderr).includes('portico-stderr-line-two')).length;
  await until('every stderr.php request logged its second line', stderrLines, (n) => n === 2);
  await fpm.stop('SIGKILL');
  for (const instance of [p, js]) {
    const down = await request(`http://127.0.0.1:${instance.httpPort}/index.php`);
    assert.equal(down.status, 502);
  }
});

/**
 * A Unix socket at `socketPath` that fails connects: 'refuse' is bound but never listens (ECONNREFUSED), 'full'
 * listens with backlog 0 and never accepts, its queue filled here by one connection (EAGAIN for the next).
 */
async function failingSocket(t: TestContext, socketPath: string, kind: 'refuse' | 'full'): Promise<void> {
  const script = [
    'import socket, sys',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
    's.bind(sys.argv[1])',
    "if sys.argv[2] == 'full': s.listen(0)",
    "print('ready', flush=True)",
    'sys.stdin.read()',
  ].join('\n');
  const child = spawn(PYTHON, ['-c', script, socketPath, kind], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    child.kill('SIGKILL');
  });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  assert.equal(line, 'ready');
  if (kind === 'full') {
    const filler = net.connect({ path: socketPath });
    filler.on('error', () => {});
    t.after(() => filler.destroy());
    await once(filler, 'connect');
    // the queue is full now: a further connect fails at once
    const code = await new Promise<string>((resolve) => {
      const probe = net.connect({ path: socketPath });
      probe.on('connect', () => resolve('connected'));
      probe.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    assert.equal(code, 'EAGAIN');
  }
}

test('unix: a missing path, a socket nobody listens on and a full backlog give the same answers natively as through node:net', { timeout: 90_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const dir = tempDir(t);
  const missing = path.join(dir, 'missing.sock');
  const refusing = path.join(dir, 'refusing.sock');
  const full = path.join(dir, 'full.sock');
  await failingSocket(t, refusing, 'refuse');
  await failingSocket(t, full, 'full');
  for (const [socketPath, why] of [[missing, 'ENOENT'], [refusing, 'ECONNREFUSED'], [full, 'EAGAIN']]) {
    const got: string[][] = [];
    for (const env of [{}, { PORTICO_NATIVE_IO: '0' }] as Array<Record<string, string>>) {
      const p = await startPortico(t, { ...phpConfig(`unix:${socketPath}`), log: { level: 'info', access: true } } as ConfigInput, { ...START, env });
      // each answer's status, and the error its access line names; the first failure takes the target out of the
      // worker (passive health, logged with its reason)
      const seen: string[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await request(`http://127.0.0.1:${p.httpPort}/index.php`);
        const lines = await until('its access line', () => p.logs.filter((l) => l.path === '/index.php' && l.status !== undefined), (ls) => ls.length === i + 1);
        const err = (lines[i].err ?? {}) as { code?: string; message?: string };
        seen.push(`${r.status} ${err.code} ${err.message}`);
      }
      for (const l of p.logs) if (typeof l.msg === 'string' && l.msg.startsWith('upstream target is out')) seen.push(`${l.msg} ${l.reason}`);
      got.push(seen);
      await p.stop();
    }
    assert.deepEqual(got[0], got[1], `${why}: native and node:net`);
    assert.equal(got[0][0], `502 UPSTREAM_CONNECT_${why === 'ECONNREFUSED' ? 'REFUSED' : 'ERROR'} upstream connect failed: ${why}`);
    assert.ok(got[0].some((x) => x.startsWith('upstream target is out')), got[0].join('\n'));
  }
});

test('unix: an HTTP backend on a Unix socket: one kept connection, the relayed answer armed (nativeAnswers moves), X-Forwarded-For the client; the same answers through node:net (PORTICO_NATIVE_IO=0)', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const dir = tempDir(t);
  const backend = await startHttpBackend(t, { path: path.join(dir, 'http.sock') });
  const p = await startPortico(t, proxyConfig(`unix:${path.join(dir, 'http.sock')}`), START);
  const before = await counts(p);
  const answers = await rawAnswers(t, p, ['/a', '/a', '/a', '/b', '/a']);
  for (const raw of answers) assert.match(raw, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(backend.connections, 1, 'every request on one backend connection');
  assert.deepEqual(backend.requests.map((r) => r.connection), [0, 0, 0, 0, 0]);
  assert.ok(backend.requests.every((r) => r.headers['x-forwarded-for'] === '127.0.0.1'), JSON.stringify(backend.requests.map((r) => r.headers['x-forwarded-for'])));
  const after = await counts(p);
  assert.ok(after.answers >= before.answers + 3, `relayed natively: ${after.answers - before.answers}`);
  // PORTICO_NATIVE_IO=0: node:net's socket, the same answers, nothing relayed natively
  const off = await startPortico(t, proxyConfig(`unix:${path.join(dir, 'http.sock')}`), { ...START, env: { PORTICO_NATIVE_IO: '0' } });
  const undated = (raws: string[]): string[] => raws.map((r) => r.replace(/\r\ndate: [^\r]*/i, ''));
  const plain = undated(await rawAnswers(t, off, ['/status/200', '/status/200']));
  assert.match(plain[0], /^HTTP\/1\.1 200 OK\r\n/);
  assert.deepEqual(plain, undated(await rawAnswers(t, p, ['/status/200', '/status/200'])));
  assert.equal((await counts(off)).answers, 0);
});

test('unix: a WebSocket tunnelled to a backend on a Unix socket: the addon\'s 101, echo both ways, close, the worker\'s descriptors back where they were', { timeout: 60_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const dir = tempDir(t);
  const ws = await startWsEchoBackend(t, { path: path.join(dir, 'ws.sock') });
  const p = await startPortico(t, proxyConfig(`unix:${path.join(dir, 'ws.sock')}`), START);
  const [pid] = await workerPids(p);
  const before = await counts(p);
  const tunnel = async (i: number): Promise<void> => {
    const c = await openWebSocket(t, `ws://127.0.0.1:${p.httpPort}/ws`);
    assert.equal(await echo(c, `text ${i}`), `text ${i}`);
    assert.deepEqual(await echo(c, Buffer.alloc(200_000, i)), Buffer.alloc(200_000, i));
    c.close(1000);
    assert.equal(await closed(c), 1000);
  };
  // the first tunnel leaves the relay's pipe pool (and the pool's admin connection) as they stay
  await tunnel(0);
  await until('the worker at rest', async () => [(await adminStatus(p)).tunnels, ws.open], ([tn, o]) => tn === 0 && o === 0);
  const fds = fdCount(pid);
  for (let i = 1; i <= 5; i++) await tunnel(i);
  assert.equal((await counts(p)).upgrades, before.upgrades + 6, 'each 101 written by the addon');
  assert.equal(ws.upgrades.length, 6);
  await until('the worker at rest', async () => [(await adminStatus(p)).tunnels, fdCount(pid), ws.open], ([tn, f, o]) => tn === 0 && f === fds && o === 0);
});
