// Zero-downtime upgrade, nginx's binary-upgrade way: on SIGUSR2 (sent by `portico upgrade`) the running primary
// starts a new Portico from the files on disk now (new code, new config, new worker count) beside itself, with
// PORTICO_HANDOVER_FROM naming it, so the new one may bind the same ports (SO_REUSEPORT) and take the pid file.
// Once the new one says it is listening, this one stops accepting and drains: requests finish, tunnels stay up
// to the shutdown grace. If the new one fails to start, this one keeps serving as if nothing happened. The
// outcome is written for `portico upgrade` (state-files.ts). The new primary's side is `announceReady`.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Logger } from '../core/log.js';
import { writeUpgradeOutcome, type ControlPaths } from './state-files.js';

/** How long the new primary may take to be listening before the upgrade is given up (it is stopped). */
export const UPGRADE_START_TIMEOUT_MS = 60_000;

/** What the new primary sends on the IPC channel its parent (the old primary) opened. */
interface ReadyMessage {
  type: 'portico-upgrade-ready';
  pid: number;
  workers: number;
}

export interface UpgradeHooks {
  /** False while the primary cannot hand over (starting, reloading, stopping). */
  ready(): string | undefined;
  /** The new primary listens: stop accepting, drain, exit (the caller's shutdown with its grace). */
  handOver(newPid: number): void;
}

export class Upgrade {
  readonly #log: Logger;
  readonly #control: ControlPaths;
  readonly #configFile: string;
  readonly #hooks: UpgradeHooks;
  #child: ChildProcess | null = null;
  #attempt = 0;

  constructor(log: Logger, control: ControlPaths, configFile: string, hooks: UpgradeHooks) {
    this.#log = log;
    this.#control = control;
    this.#configFile = configFile;
    this.#hooks = hooks;
  }

  get inProgress(): boolean {
    return this.#child !== null;
  }

  /** SIGUSR2. */
  request(): void {
    const attempt = ++this.#attempt;
    const startedAt = Date.now();
    const refuse = (error: string): void => {
      this.#log.warn({ reason: error }, 'upgrade refused');
      void writeUpgradeOutcome(this.#control, { ok: false, pid: process.pid, attempt, startedAt, error }).catch(() => {});
    };
    if (this.#child !== null) return refuse('an upgrade is already in progress');
    const busy = this.#hooks.ready();
    if (busy !== undefined) return refuse(busy);

    // The same node, flags and entry point this primary was started with: the files on disk now are the new code.
    const entry = process.argv[1];
    const child = spawn(process.execPath, [...process.execArgv, entry, 'start', '-c', this.#configFile], {
      env: { ...process.env, PORTICO_HANDOVER_FROM: String(process.pid) },
      // its logs go where this primary's go (a terminal, the journal, a file)
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      // its own process group: a signal to this primary's group (a terminal's Ctrl-C) does not reach it
      detached: true,
    });
    this.#child = child;
    this.#log.info({ newPid: child.pid }, 'upgrade: starting a new primary beside this one');
    if (migrateRequests() === false) {
      this.#log.warn(
        { sysctl: 'net.ipv4.tcp_migrate_req=0' },
        'upgrade: a client whose TCP handshake is still in flight on an old listening socket when it closes is reset; net.ipv4.tcp_migrate_req=1 lets the kernel move it to the new listeners',
      );
    }
    let settled = false;
    const finish = (ok: boolean, detail: { newPid?: number; workers?: number; error?: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      child.off('error', onError);
      void writeUpgradeOutcome(this.#control, { ok, pid: process.pid, attempt, startedAt, ...detail }).catch((err: unknown) => this.#log.warn({ err }, 'cannot write the upgrade outcome'));
      if (ok) {
        // the channel was only for this message; the new primary must not die with this one
        if (child.connected) child.disconnect();
        child.unref();
        this.#log.info({ newPid: detail.newPid, workers: detail.workers }, 'upgrade: the new primary is listening; this one stops accepting and drains');
        this.#hooks.handOver(detail.newPid as number);
      } else {
        this.#child = null;
        this.#log.error({ error: detail.error }, 'upgrade failed: this primary keeps serving');
      }
    };
    const onMessage = (msg: unknown): void => {
      if (typeof msg !== 'object' || msg === null || (msg as ReadyMessage).type !== 'portico-upgrade-ready') return;
      const m = msg as ReadyMessage;
      finish(true, { newPid: m.pid, workers: m.workers });
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => finish(false, { error: `the new primary exited (${signal ?? `code ${code}`}) before it was listening; its error is in the log above` });
    const onError = (err: Error): void => finish(false, { error: `cannot start a new primary: ${err.message}` });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(false, { error: `the new primary was not listening within ${UPGRADE_START_TIMEOUT_MS / 1000}s: stopped` });
    }, UPGRADE_START_TIMEOUT_MS);
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.once('error', onError);
  }
}

/** New primary's side: tell the old primary (its parent, through the IPC channel) that this one is listening. */
export function announceReady(handoverFrom: number | undefined, workers: number, log: Logger): void {
  if (handoverFrom === undefined || typeof process.send !== 'function' || process.ppid !== handoverFrom) return;
  const msg: ReadyMessage = { type: 'portico-upgrade-ready', pid: process.pid, workers };
  process.send(msg, undefined, {}, (err) => {
    if (err) log.warn({ err }, 'upgrade: could not tell the old primary that this one is listening');
    // the old primary's exit must not take this one down
    process.channel?.unref();
  });
  process.on('disconnect', () => {});
}

/**
 * Whether the kernel moves the connections of a closing SO_REUSEPORT listener to another one of its group
 * (net.ipv4.tcp_migrate_req, Linux >= 5.14); undefined where it cannot be read. The old workers accept what their
 * accept queues hold before they close (NativeListener.end), so only handshakes in flight at that instant depend
 * on it.
 */
function migrateRequests(): boolean | undefined {
  try {
    return readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'latin1').trim() !== '0';
  } catch {
    return undefined;
  }
}
