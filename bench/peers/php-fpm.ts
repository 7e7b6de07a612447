// php-fpm for the PHP benchmarks (scenarios/php.ts, probes/php-chunked-upload.ts): one master in the foreground
// (its workers are its children, stopped with it) on a free loopback port, pm static, opcache off (-n), from a
// config written into the run's temp folder, pinned as asked. A module of its own because scenarios run on
// import. No load and no timing here.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { freePort, pinned, spawnProcess, versionOf, waitForPort, type BenchmarkScope, type Spawned } from '../lib/procs.js';

const FPM_BINARIES = ['/usr/sbin/php-fpm8.2', '/usr/sbin/php-fpm', '/usr/sbin/php-fpm8.3'];

export interface FpmOptions {
  /** Workers (pm static): a kept FastCGI connection holds one. */
  readonly children: number;
  /** CPUs to pin to (taskset list); undefined = not pinned. */
  readonly cpus: string | undefined;
  /** More php_admin_value settings (display_errors is off, uploads go to the master's folder). */
  readonly ini?: Readonly<Record<string, string>>;
}

export interface Fpm {
  readonly proc: Spawned;
  readonly port: number;
  /** The master's folder (config, log, pid, upload temp files). */
  readonly dir: string;
  /** Version and setup, for the conditions printed above a table. */
  readonly label: string;
}

/** Starts a php-fpm master named `name` (its folder under scope.tmp) and waits for its port; stopped with the scope. */
export async function startFpm(scope: BenchmarkScope, name: string, opts: FpmOptions): Promise<Fpm> {
  const bin = FPM_BINARIES.find((b) => versionOf(b, ['-v']) !== undefined);
  if (bin === undefined) throw new Error('php-fpm is not installed');
  const dir = path.join(scope.tmp, name);
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const root = process.getuid?.() === 0;
  const conf = path.join(dir, 'php-fpm.conf');
  const ini = { display_errors: 'Off', upload_tmp_dir: dir, ...opts.ini };
  writeFileSync(
    conf,
    ['[global]', `error_log = ${dir}/fpm.log`, `pid = ${dir}/fpm.pid`, 'daemonize = no', '[www]', `listen = 127.0.0.1:${port}`, 'listen.backlog = 4096',
      ...(root ? ['user = nobody', 'group = nogroup'] : []), 'pm = static', `pm.max_children = ${opts.children}`, 'pm.max_requests = 0',
      ...Object.entries(ini).map(([k, v]) => `php_admin_value[${k}] = ${v}`), ''].join('\n'),
  );
  // started by root, the workers run as nobody: they write uploads into this folder
  if (root) spawnSync('chmod', ['777', dir]);
  const [cmd, args] = pinned(opts.cpus, bin, ['-n', '-F', '-y', conf, '-p', dir, ...(root ? ['-R'] : [])]);
  const proc = spawnProcess(cmd, args);
  scope.started.push(proc);
  await waitForPort('127.0.0.1', port, 10_000, proc);
  return { proc, port, dir, label: `${(versionOf(bin, ['-v']) ?? bin).split('\n')[0]}, pm static ${opts.children} workers, opcache off (-n)` };
}
