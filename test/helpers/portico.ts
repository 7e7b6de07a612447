// Runs the real `portico start -c FILE` as a child process for e2e tests: writes the config to a temp folder,
// parses the pino JSON lines on stdout, learns the listeners' ports from the "listening" line (tests use port 0)
// and guarantees the process is gone after the test (t.after). It does not know how Portico works inside.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { TestContext } from 'node:test';
import { stringify } from 'yaml';
import type { ConfigInput } from '../../src/config/schema.js';
import { CLI, FIXTURES, ROOT } from './paths.js';

/** The test-only self-signed certificate for localhost, 127.0.0.1 and ::1 (test/fixtures/tls/make-cert.sh). */
export const TEST_CERT = path.join(FIXTURES, 'tls', 'localhost.crt');
export const TEST_KEY = path.join(FIXTURES, 'tls', 'localhost.key');

/** A TLS listener on a free loopback port, serving the test certificate. */
export function tlsListener(): { address: string; tls: { certificates: { cert: string; key: string }[] } } {
  return { address: '127.0.0.1:0', tls: { certificates: [{ cert: TEST_CERT, key: TEST_KEY }] } };
}

/** A plain HTTP listener on a free loopback port. */
export function plainListener(): { address: string } {
  return { address: '127.0.0.1:0' };
}

/** One parsed stdout line; lines that are not JSON are kept as `{ msg, raw: true }`. */
export type LogLine = Record<string, unknown> & { msg?: unknown; level?: unknown };

export interface ListenerLog {
  address: string;
  port: number;
  tls: boolean;
}

export interface StartOptions {
  /** Extra environment for the child (merged over process.env). */
  env?: Record<string, string>;
  /** Time allowed until the "listening" line (default 20 s). */
  startTimeoutMs?: number;
  /** Echo the child's stdout/stderr to this process's stderr as they come (debugging). */
  echo?: boolean;
  /** A command the Portico process runs under, e.g. ['prlimit', '--nofile=1200:1200'] (it must exec its arguments). */
  wrap?: string[];
}

export interface Portico {
  readonly pid: number;
  /** Bound ports, in the order of the config's listeners. */
  readonly ports: number[];
  readonly listeners: ListenerLog[];
  /** Port of the first TLS / first plain listener (throws when there is none). */
  readonly tlsPort: number;
  readonly httpPort: number;
  /** Every stdout line so far, parsed. */
  readonly logs: LogLine[];
  /** Everything written to stderr so far. */
  readonly stderr: string;
  /** The folder holding the config file (deleted after the test). */
  readonly dir: string;
  readonly configPath: string;
  /** Resolves with the first log line (past or future) matching `predicate`; rejects after `timeoutMs`. */
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends `signal` without waiting. */
  kill(signal?: NodeJS.Signals): void;
  /** Sends `signal` (default SIGTERM) and resolves with the exit code (a signal name when killed by one); SIGKILL after `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | NodeJS.Signals>;
  /** Resolves when the process has exited (code, or signal name). */
  readonly exited: Promise<number | NodeJS.Signals>;
}

/**
 * Starts Portico on `config` (YAML text, or a config object written out as YAML). Relative paths in the config
 * resolve against a temp folder, so tests pass absolute paths (TEST_CERT, TEST_KEY).
 */
export async function startPortico(t: TestContext, config: string | ConfigInput, opts: StartOptions = {}): Promise<Portico> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-e2e-'));
  const configPath = path.join(dir, 'portico.yaml');
  await writeFile(configPath, typeof config === 'string' ? config : stringify(config));

  const argv = [process.execPath, CLI, 'start', '-c', configPath];
  const [cmd, ...args] = [...(opts.wrap ?? []), ...argv];
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so cleanup can also reach workers a killed primary would leave behind.
    detached: true,
  });
  const proc = new PorticoProcess(child, dir, configPath, opts.echo === true);
  t.after(async () => {
    await proc.stop('SIGKILL', 5_000);
    proc.killGroup();
    await rm(dir, { recursive: true, force: true });
  });

  const listening = await proc.waitForLog((l) => l.msg === 'listening' && Array.isArray(l.listeners), opts.startTimeoutMs ?? 20_000).catch((err: Error) => {
    throw new Error(`${err.message}\n--- stdout ---\n${proc.logs.map((l) => JSON.stringify(l)).join('\n')}\n--- stderr ---\n${proc.stderr}`);
  });
  proc.setListeners(listening.listeners as ListenerLog[]);
  return proc;
}

/** Writes `config` (YAML text, or an object written out as YAML) over the running instance's config file. */
export async function writeConfig(portico: Portico, config: string | ConfigInput): Promise<void> {
  await writeFile(portico.configPath, typeof config === 'string' ? config : stringify(config));
}

export interface ReloadResult {
  /** Exit code of `portico reload` (null when it was killed at the time limit). */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `portico reload -c FILE` against the running instance (after writing `config` when given), bounded in time. */
export async function reloadPortico(portico: Portico, config?: string | ConfigInput, timeoutMs = 60_000): Promise<ReloadResult> {
  if (config !== undefined) await writeConfig(portico, config);
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'reload', '-c', portico.configPath], { cwd: ROOT, timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr });
    });
  });
}

interface Waiter {
  predicate: (line: LogLine) => boolean;
  resolve: (line: LogLine) => void;
  reject: (err: Error) => void;
}

/** Process groups still alive, killed if the test process exits without its t.after hooks running. */
const liveGroups = new Set<number>();
process.on('exit', () => {
  for (const pgid of liveGroups) killGroupNow(pgid);
});

function killGroupNow(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // already gone
  }
}

class PorticoProcess implements Portico {
  readonly logs: LogLine[] = [];
  readonly dir: string;
  readonly configPath: string;
  readonly exited: Promise<number | NodeJS.Signals>;
  #child: ChildProcess;
  #stderr = '';
  #exitedValue: number | NodeJS.Signals | undefined;
  #listeners: ListenerLog[] = [];
  #waiters = new Set<Waiter>();

  constructor(child: ChildProcess, dir: string, configPath: string, echo: boolean) {
    this.#child = child;
    this.dir = dir;
    this.configPath = configPath;
    if (child.pid !== undefined) liveGroups.add(child.pid);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exitedValue = code ?? signal ?? 'SIGKILL';
        resolve(this.#exitedValue);
      });
    });
    // 'close' comes after stdout is drained: no line a waiter could still match is pending.
    child.once('close', () => {
      for (const w of this.#waiters) w.reject(new Error(`Portico exited (${this.#exitedValue}) before the awaited log line`));
      this.#waiters.clear();
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      // Bounded: a test only needs the tail of stderr to explain a failure.
      this.#stderr = (this.#stderr + s).slice(-64 * 1024);
      if (echo) process.stderr.write(s);
    });
    const lines = createInterface({ input: child.stdout!, crlfDelay: Infinity });
    lines.on('line', (text) => {
      if (echo) process.stderr.write(`${text}\n`);
      const line = parseLine(text);
      this.logs.push(line);
      for (const w of this.#waiters) {
        if (w.predicate(line)) {
          this.#waiters.delete(w);
          w.resolve(line);
        }
      }
    });
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  get stderr(): string {
    return this.#stderr;
  }

  get listeners(): ListenerLog[] {
    return this.#listeners;
  }

  get ports(): number[] {
    return this.#listeners.map((l) => l.port);
  }

  get tlsPort(): number {
    const l = this.#listeners.find((x) => x.tls);
    if (l === undefined) throw new Error('this Portico has no TLS listener');
    return l.port;
  }

  get httpPort(): number {
    const l = this.#listeners.find((x) => !x.tls);
    if (l === undefined) throw new Error('this Portico has no plain HTTP listener');
    return l.port;
  }

  setListeners(listeners: ListenerLog[]): void {
    this.#listeners = listeners;
  }

  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    const past = this.logs.find(predicate);
    if (past !== undefined) return Promise.resolve(past);
    if (this.#child.stdout?.readableEnded === true) return Promise.reject(new Error(`Portico exited (${this.#exitedValue}) before the awaited log line`));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        predicate,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`no matching Portico log line within ${timeoutMs} ms${this.#exitedValue === undefined ? '' : ` (process exited: ${this.#exitedValue})`}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  /** SIGKILL to the whole process group (the primary and any worker it left behind). */
  killGroup(): void {
    const pgid = this.#child.pid;
    if (pgid === undefined || !liveGroups.delete(pgid)) return;
    killGroupNow(pgid);
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.#exitedValue === undefined) this.#child.kill(signal);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<number | NodeJS.Signals> {
    if (this.#exitedValue !== undefined) return this.#exitedValue;
    this.#child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const forced = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.#child.kill('SIGKILL');
        resolve();
      }, timeoutMs);
    });
    await Promise.race([this.exited, forced]);
    clearTimeout(timer);
    return this.exited;
  }
}

function parseLine(text: string): LogLine {
  if (text.startsWith('{')) {
    try {
      const v: unknown = JSON.parse(text);
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as LogLine;
    } catch {
      // not JSON: kept raw below
    }
  }
  return { msg: text, raw: true };
}
