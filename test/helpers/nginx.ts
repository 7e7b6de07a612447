// nginx as a real peer in e2e tests: one foreground process (master_process off), its prefix, pid, temp paths
// and error log in a temp folder, stopped and removed in t.after. The caller gives the `http {}` body with
// {{PORT}} where the listen port goes. Nothing system-wide is touched; nothing here knows about Portico.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { freePort } from './ports.js';

export function hasNginx(): boolean {
  return spawnSync('nginx', ['-v'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

/** Debian's nginx builds `stream` as a module (package libnginx-mod-stream): loaded from here when a test needs it. */
const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

export function hasNginxStream(): boolean {
  return hasNginx() && existsSync(STREAM_MODULE);
}

export interface Nginx {
  readonly port: number;
  /** The error log so far (for assertion messages). */
  errorLog(): Promise<string>;
}

/** Resolves once 127.0.0.1:port accepts; rejects when nginx exits first or after `timeoutMs`. */
async function listening(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; attempt < 1000 && Date.now() < deadline; attempt++) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nginx exited (${child.exitCode ?? child.signalCode})`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 25))]);
  }
  throw new Error(`nginx did not listen on ${port} within ${timeoutMs} ms`);
}

/**
 * Starts nginx with `httpBody` inside `http { }` and, given, `opts.stream` inside `stream { }` (the module
 * loaded; {{PORT}} replaced in both: the port waited for). A port taken between the probe and nginx's bind
 * (another test's port-0 listener) is retried on a new port, three times at most.
 */
export async function startNginx(t: TestContext, httpBody: string, opts: { stream?: string } = {}): Promise<Nginx> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-nginx-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const errorFile = path.join(dir, 'error.log');
  const errorLog = (): Promise<string> => readFile(errorFile, 'utf8').catch(() => '');
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const conf = path.join(dir, 'nginx.conf');
    await writeFile(
      conf,
      [
        ...(opts.stream === undefined ? [] : [`load_module ${STREAM_MODULE};`]),
        'daemon off; master_process off; worker_processes 1;',
        `pid ${path.join(dir, 'nginx.pid')}; error_log ${errorFile} info;`,
        'events { worker_connections 256; }',
        `http { access_log off; client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`,
        httpBody.replaceAll('{{PORT}}', String(port)),
        '}',
        ...(opts.stream === undefined ? [] : ['stream {', opts.stream.replaceAll('{{PORT}}', String(port)), '}']),
        '',
      ].join('\n'),
    );
    const child = spawn('nginx', ['-p', dir, '-c', conf, '-e', errorFile], { stdio: 'ignore' });
    const exited = once(child, 'exit');
    t.after(async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    });
    try {
      await listening(port, child, 10_000);
      return { port, errorLog };
    } catch (err) {
      lastError = err;
      child.kill('SIGKILL');
      await exited;
    }
  }
  throw new Error(`nginx did not start: ${String(lastError)}\n${await errorLog()}`);
}
