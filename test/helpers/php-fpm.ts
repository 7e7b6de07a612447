// php-fpm as a real peer in tests and benchmarks: one foreground master (`-F`, `-R` when root) with a temp
// config, on a loopback TCP port or a unix socket in a temp folder, stopped and removed in t.after. It also
// counts the connections FPM holds (from /proc/net/tcp) for keep-alive and leak checks. It knows nothing of Portico.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { freePort } from './ports.js';
import { toolEnv } from './netns.js';

const CANDIDATES = ['/usr/sbin/php-fpm8.2', '/usr/sbin/php-fpm', '/usr/sbin/php-fpm8.3', '/usr/sbin/php-fpm8.1'];

/** The php-fpm binary, or undefined when none is installed. */
export function phpFpmBinary(): string | undefined {
  for (const c of CANDIDATES) if (existsSync(c) && spawnSync(c, ['-v'], { stdio: 'ignore', timeout: 10_000, env: toolEnv() }).status === 0) return c;
  return undefined;
}

export function hasPhpFpm(): boolean {
  return phpFpmBinary() !== undefined;
}

export interface PhpFpmOptions {
  /** 'tcp' (default): 127.0.0.1 on a free port; 'unix': a socket in the temp folder. */
  listen?: 'tcp' | 'unix';
  /** Worker processes (pm = static; default 4). */
  children?: number;
  /** pm.max_requests: each worker exits (closing its connection) after this many requests (default 0: never). */
  maxRequests?: number;
  /** Extra php.ini settings (php_admin_value). */
  ini?: Record<string, string>;
}

export interface PhpFpm {
  /** The target as Portico's config writes it: "127.0.0.1:PORT" or "unix:/path". */
  readonly target: string;
  /** TCP port (0 for a unix socket). */
  readonly port: number;
  readonly socketPath: string | undefined;
  /** FPM's own log so far (master and workers' stderr). */
  log(): Promise<string>;
  /** Signals master and workers (SIGQUIT = graceful; SIGTERM/SIGKILL = now), waits for the master to exit, then kills what is left. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Established TCP connections FPM holds on its port now (TCP only). */
  connections(): Promise<number>;
  /** The peer ports of those connections (which connections they are). */
  connectionPeers(): Promise<number[]>;
}

/** Resolves once the address accepts; rejects when FPM exits first or after `timeoutMs`. */
async function accepting(addr: net.NetConnectOpts, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; attempt < 1000 && Date.now() < deadline; attempt++) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`php-fpm exited (${child.exitCode ?? child.signalCode})`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(addr, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 25))]);
  }
  throw new Error(`php-fpm did not accept within ${timeoutMs} ms`);
}

/**
 * ESTABLISHED sockets whose local port is `port`, in /proc/net/tcp and tcp6 (FPM's side of each connection):
 * the peer port of each, i.e. which client connection it is.
 */
export async function establishedOn(port: number): Promise<number[]> {
  const peers: number[] = [];
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(f, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 3 && cols[1].endsWith(`:${hex}`) && cols[3] === '01') peers.push(parseInt(cols[2].slice(cols[2].lastIndexOf(':') + 1), 16));
    }
  }
  return peers;
}

/**
 * Starts php-fpm with a temp config (pm static, errors to the FastCGI stderr stream, no php.ini: `-n` keeps
 * the machine's settings out). A port taken between the probe and FPM's bind is retried, three times at most.
 */
export async function startPhpFpm(t: TestContext, opts: PhpFpmOptions = {}): Promise<PhpFpm> {
  const bin = phpFpmBinary();
  if (bin === undefined) throw new Error('php-fpm is not installed');
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-fpm-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const logFile = path.join(dir, 'fpm.log');
  const log = (): Promise<string> => readFile(logFile, 'utf8').catch(() => '');
  const root = process.getuid?.() === 0;
  const ini = { display_errors: 'Off', log_errors: 'On', post_max_size: '64M', upload_max_filesize: '64M', max_execution_time: '60', ...opts.ini };
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const unix = opts.listen === 'unix';
    const port = unix ? 0 : await freePort();
    const socketPath = unix ? path.join(dir, 'php-fpm.sock') : undefined;
    const conf = path.join(dir, 'php-fpm.conf');
    await writeFile(
      conf,
      [
        '[global]',
        `error_log = ${logFile}`,
        `pid = ${path.join(dir, 'fpm.pid')}`,
        'daemonize = no',
        'log_level = notice',
        '[www]',
        `listen = ${unix ? socketPath : `127.0.0.1:${port}`}`,
        ...(root ? ['user = nobody', 'group = nogroup', 'listen.owner = root', 'listen.mode = 0666'] : []),
        'pm = static',
        `pm.max_children = ${opts.children ?? 4}`,
        ...(opts.maxRequests === undefined ? [] : [`pm.max_requests = ${opts.maxRequests}`]),
        'catch_workers_output = no',
        'clear_env = yes',
        ...Object.entries(ini).map(([k, v]) => `php_admin_value[${k}] = ${v}`),
        '',
      ].join('\n'),
    );
    const args = ['-n', '-F', '-y', conf, '-p', dir, ...(root ? ['-R'] : [])];
    // its own process group: the workers go with the master (a SIGKILLed master leaves them serving otherwise)
    // (never under scripts/asan.sh's LD_PRELOAD: php-fpm is not the addon, and AddressSanitizer stops it at start)
    const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true, env: toolEnv() });
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => {
      if (stderr.length < 65536) stderr += b.toString();
    });
    const exited = once(child, 'exit');
    const group = (signal: NodeJS.Signals): void => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // the group is gone already
      }
    };
    const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
      if (child.exitCode === null && child.signalCode === null) {
        group(signal);
        const timer = setTimeout(() => group('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      group('SIGKILL'); // workers a master killed at once (SIGKILL) did not take down
    };
    t.after(() => stop('SIGKILL'));
    try {
      await accepting(unix ? { path: socketPath! } : { host: '127.0.0.1', port }, child, 10_000);
    } catch (err) {
      lastError = new Error(`${(err as Error).message}\n--- php-fpm stderr ---\n${stderr}\n--- log ---\n${await log()}`);
      await stop('SIGKILL');
      continue;
    }
    return {
      target: unix ? `unix:${socketPath}` : `127.0.0.1:${port}`,
      port,
      socketPath,
      log,
      stop,
      connections: async () => (await establishedOn(port)).length,
      connectionPeers: () => establishedOn(port),
    };
  }
  throw lastError;
}
