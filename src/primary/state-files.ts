// The files through which `portico reload` reaches a running primary, the nginx way: a pid file (a plain number,
// so `kill -HUP $(cat FILE)` works too) and the outcome of the last reload, both in the state folder next to the
// config file: `<dir>/.state/<name>.pid` and `<dir>/.state/<name>.reload.json`. primary.ts writes them;
// `requestReload` (cli.ts) signals SIGHUP and waits for the outcome. No config parsing and no sockets here.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ConfigError } from '../config/load.js';
import type { ReloadOutcome } from '../config/reload.js';

export interface ControlPaths {
  readonly dir: string;
  readonly pid: string;
  readonly outcome: string;
  /** The outcome of the last `portico upgrade` (upgrade.ts). */
  readonly upgrade: string;
}

/** Outcomes are polled this often while `portico reload` waits. */
const POLL_MS = 50;

/** `config/portico.yaml` -> `config/.state/portico.pid` and `config/.state/portico.reload.json`. */
export function controlPaths(configFile: string): ControlPaths {
  const abs = path.resolve(configFile);
  const dir = path.join(path.dirname(abs), '.state');
  const name = path.basename(abs).replace(/\.ya?ml$/i, '') || 'portico';
  return { dir, pid: path.join(dir, `${name}.pid`), outcome: path.join(dir, `${name}.reload.json`), upgrade: path.join(dir, `${name}.upgrade.json`) };
}

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, text, { mode: 0o644 });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export function writePidFile(paths: ControlPaths, pid: number): Promise<void> {
  return writeAtomically(paths.pid, `${pid}\n`);
}

/** What the primary leaves for `portico reload`: the outcome and the primary it came from. */
export type OutcomeRecord = ReloadOutcome & { readonly pid: number };

export function writeOutcome(paths: ControlPaths, record: OutcomeRecord): Promise<void> {
  return writeAtomically(paths.outcome, `${JSON.stringify(record)}\n`);
}

/** What the old primary leaves for `portico upgrade`: the new primary's pid and worker count, or why not. */
export interface UpgradeRecord {
  readonly ok: boolean;
  /** The old primary. */
  readonly pid: number;
  readonly attempt: number;
  readonly startedAt: number;
  readonly newPid?: number;
  readonly workers?: number;
  readonly error?: string;
}

export function writeUpgradeOutcome(paths: ControlPaths, record: UpgradeRecord): Promise<void> {
  return writeAtomically(paths.upgrade, `${JSON.stringify(record)}\n`);
}

export function readUpgradeOutcome(paths: ControlPaths): UpgradeRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(paths.upgrade, 'utf8'));
  } catch {
    return undefined;
  }
  if (!isRecord(v) || typeof v.ok !== 'boolean' || typeof v.pid !== 'number' || typeof v.attempt !== 'number' || typeof v.startedAt !== 'number') return undefined;
  if (v.ok && (typeof v.newPid !== 'number' || typeof v.workers !== 'number')) return undefined;
  if (!v.ok && typeof v.error !== 'string') return undefined;
  return v as unknown as UpgradeRecord;
}

export type UpgradeRequest =
  | { readonly kind: 'done'; readonly outcome: UpgradeRecord }
  | { readonly kind: 'not-running'; readonly reason: string }
  | { readonly kind: 'timeout'; readonly pid: number };

/**
 * Signals the primary running `configFile` (SIGUSR2) and waits, at most `timeoutMs`, for the outcome of the
 * upgrade that signal started: the new primary listening (or why not).
 */
export async function requestUpgrade(configFile: string, timeoutMs: number): Promise<UpgradeRequest> {
  const paths = controlPaths(configFile);
  const pid = readPid(paths);
  if (pid === undefined) return { kind: 'not-running', reason: `no pid file at ${paths.pid}: is Portico running with this config?` };
  if (!isPortico(pid)) return { kind: 'not-running', reason: `process ${pid} (from ${paths.pid}) is not a running Portico: a stale pid file?` };
  const before = readUpgradeOutcome(paths);
  const lastAttempt = before?.pid === pid ? before.attempt : 0;
  const sentAt = Date.now();
  try {
    process.kill(pid, 'SIGUSR2');
  } catch (err) {
    return { kind: 'not-running', reason: `cannot signal process ${pid}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  const deadline = sentAt + timeoutMs;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const outcome = readUpgradeOutcome(paths);
    if (outcome !== undefined && outcome.pid === pid && outcome.attempt > lastAttempt && outcome.startedAt >= sentAt) return { kind: 'done', outcome };
    if (!isPortico(pid)) return { kind: 'not-running', reason: `process ${pid} exited during the upgrade` };
  }
  return { kind: 'timeout', pid };
}

/** Removes the pid file (and the outcome) only while they still name `pid`: a newer primary's files stay. */
export async function removeControlFiles(paths: ControlPaths, pid: number): Promise<void> {
  if (readPid(paths) !== pid) return;
  await rm(paths.pid, { force: true });
  await rm(paths.outcome, { force: true });
}

export function readPid(paths: ControlPaths): number | undefined {
  try {
    const text = readFileSync(paths.pid, 'utf8').trim();
    return /^\d{1,10}$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function isConfigError(v: unknown): v is ConfigError {
  return isRecord(v) && typeof v.path === 'string' && typeof v.message === 'string' && (v.line === undefined || typeof v.line === 'number');
}

/** The outcome file, when it exists and has the expected shape (it is another process's output: checked). */
export function readOutcome(paths: ControlPaths): OutcomeRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(paths.outcome, 'utf8'));
  } catch {
    return undefined;
  }
  if (!isRecord(v) || typeof v.ok !== 'boolean' || typeof v.pid !== 'number' || typeof v.attempt !== 'number' || typeof v.startedAt !== 'number' || typeof v.generation !== 'number') return undefined;
  if (v.ok) return typeof v.summary === 'string' && Array.isArray(v.warnings) ? (v as unknown as OutcomeRecord) : undefined;
  return typeof v.error === 'string' && Array.isArray(v.errors) && v.errors.every(isConfigError) ? (v as unknown as OutcomeRecord) : undefined;
}

/** Another live Portico the pid file names (a second instance on one config file), else undefined. */
export function otherRunning(paths: ControlPaths): number | undefined {
  const pid = readPid(paths);
  return pid !== undefined && pid !== process.pid && isPortico(pid) ? pid : undefined;
}

/** True when `pid` is alive and, where /proc tells, runs Portico (a stale pid file may name a reused pid). */
function isPortico(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false; // gone (ESRCH), or another user's process (EPERM): not ours to signal either way
  }
  const cmdline = `/proc/${pid}/cmdline`;
  if (!existsSync(cmdline)) return true;
  try {
    const args = readFileSync(cmdline, 'utf8');
    return /portico|cli\.js/.test(args);
  } catch {
    return false;
  }
}

export type ReloadRequest =
  | { readonly kind: 'done'; readonly outcome: OutcomeRecord }
  | { readonly kind: 'not-running'; readonly reason: string }
  | { readonly kind: 'timeout'; readonly pid: number };

/**
 * Signals the primary running `configFile` (SIGHUP) and waits, at most `timeoutMs`, for the outcome of a
 * reload that started after the signal (one already running when it arrived is followed by a fresh one).
 */
export async function requestReload(configFile: string, timeoutMs: number): Promise<ReloadRequest> {
  const paths = controlPaths(configFile);
  const pid = readPid(paths);
  if (pid === undefined) return { kind: 'not-running', reason: `no pid file at ${paths.pid}: is Portico running with this config?` };
  if (!isPortico(pid)) return { kind: 'not-running', reason: `process ${pid} (from ${paths.pid}) is not a running Portico: a stale pid file?` };
  const before = readOutcome(paths);
  const lastAttempt = before?.pid === pid ? before.attempt : 0;
  const sentAt = Date.now();
  try {
    process.kill(pid, 'SIGHUP');
  } catch (err) {
    return { kind: 'not-running', reason: `cannot signal process ${pid}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  const deadline = sentAt + timeoutMs;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const outcome = readOutcome(paths);
    if (outcome !== undefined && outcome.pid === pid && outcome.attempt > lastAttempt && outcome.startedAt >= sentAt) return { kind: 'done', outcome };
    if (!isPortico(pid)) return { kind: 'not-running', reason: `process ${pid} exited while reloading` };
  }
  return { kind: 'timeout', pid };
}
