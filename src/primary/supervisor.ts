// The worker processes: forks one per slot (child_process, not node:cluster), restarts one that dies with
// backoff, tells a draining stop to each and kills the ones that outlive the grace, and carries messages to
// them (send, broadcast, the stats fan-out). What a message means is not decided here: the primary's hooks are.
// It also keeps the standby worker (`standby_worker`): a process with its modules loaded that takes the place of
// the next worker to die, so a replacement's start is only its apply.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { resolveWorkers } from '../config/load.js';
import { deferred, type Deferred } from '../core/util.js';
import { WORKER_ENV, isToPrimary, type ToPrimary, type ToWorker, type WorkerStats } from '../worker/ipc.js';
import type { PrimaryState, WorkerSlot } from './state.js';

const WORKER_PATH = fileURLToPath(new URL('../worker/main.js', import.meta.url));
/**
 * Restart backoff: the first restart at once (the standby, or a fresh fork), then 100 ms doubling to 10 s; a
 * worker that lived 30 s starts over with an immediate restart.
 */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const HEALTHY_AFTER_MS = 30_000;
/** Workers still alive this long after the shutdown grace are killed. */
const FORCE_KILL_AFTER_GRACE_MS = 5_000;
/** A worker not accepting this long after its fork fails the start (config errors show up much sooner). */
const STARTUP_TIMEOUT_MS = 30_000;
/** A worker that does not answer a stats request in time is left out of /metrics and /status. */
const STATS_TIMEOUT_MS = 1_000;
/** A standby that died is forked again after this, doubling to STANDBY_BACKOFF_MAX_MS (a standby that took a slot starts over). */
const STANDBY_BACKOFF_MIN_MS = 1_000;
const STANDBY_BACKOFF_MAX_MS = 60_000;

/**
 * The standby worker process: `ready` once it said its modules are loaded; `leaving` once it was told to exit;
 * `claimed` when a slot took it before it was ready (called when it is).
 */
interface Standby {
  readonly child: ChildProcess;
  ready: boolean;
  leaving: boolean;
  claimed: (() => void) | null;
}

/** What the supervisor leaves to the rest of the primary. */
export interface SupervisorHooks {
  /** A valid message from the current process of `slot`. */
  message(slot: WorkerSlot, child: ChildProcess, msg: ToPrimary): void;
  /** The process of `slot` exited: what the instance held for it (pins, load, counters) is settled here. */
  exited(slot: WorkerSlot): void;
  /** The instance is stopping and every worker is gone. */
  allExited(): void;
}

export function send(child: ChildProcess, msg: ToWorker): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!child.connected) return reject(new Error('worker IPC channel closed'));
    child.send(msg, (err) => (err ? reject(err) : resolve()));
  });
}

export class Supervisor {
  readonly #state: PrimaryState;
  readonly #hooks: SupervisorHooks;
  readonly #slots: WorkerSlot[] = [];
  #forced = false;
  #failedWorkers = 0;
  #forceTimer: NodeJS.Timeout | null = null;
  #statsSeq = 0;
  #restartsTotal = 0;
  #standby: Standby | null = null;
  #standbyTimer: NodeJS.Timeout | null = null;
  #standbyBackoffMs = STANDBY_BACKOFF_MIN_MS;

  constructor(state: PrimaryState, hooks: SupervisorHooks) {
    this.#state = state;
    this.#hooks = hooks;
  }

  get slots(): readonly WorkerSlot[] {
    return this.#slots;
  }

  get restartsTotal(): number {
    return this.#restartsTotal;
  }

  /** Workers were killed: they outlived the shutdown grace, or a second signal came. */
  get forced(): boolean {
    return this.#forced;
  }

  /** Workers that did not exit 0 while draining. */
  get failedWorkers(): number {
    return this.#failedWorkers;
  }

  /** The pids of the running worker processes. */
  pids(): number[] {
    return this.#slots.flatMap((s) => (s.child?.pid === undefined ? [] : [s.child.pid]));
  }

  async startWorkers(): Promise<void> {
    const count = resolveWorkers(this.#state.served.config);
    for (let id = 1; id <= count; id++) {
      this.#slots.push({
        id, child: null, state: 'starting', booted: false, startedAt: 0, restarts: 0, backoffMs: 0, restartTimer: null, ready: null, bootError: null,
        pendingStats: new Map(), lastStats: null, load: null, loadGeneration: 0, remoteSent: '', generation: 0, listenerKeys: new Set(), applying: null,
      });
    }
    const startup = setTimeout(() => {
      for (const slot of this.#slots) slot.ready?.reject(new Error(`worker ${slot.id} was not accepting ${STARTUP_TIMEOUT_MS / 1000}s after it started`));
    }, STARTUP_TIMEOUT_MS);
    try {
      // reuse-port with a port-0 listener: the first worker picks the port, the others join it.
      const first = this.#state.strategy === 'reuse-port' && this.#state.served.listeners.some((l) => l.port === 0) ? 1 : 0;
      for (const slot of this.#slots.slice(0, first)) await this.#spawn(slot).promise;
      if (!this.#state.stopping) await Promise.all(this.#slots.slice(first).map((slot) => this.#spawn(slot).promise));
    } finally {
      clearTimeout(startup);
    }
  }

  #spawn(slot: WorkerSlot): Deferred {
    // the standby, when there is one, is this slot's process from now on: it loaded its modules (or is loading
    // them, and had a head start over a fresh fork, which would only share the CPU with it)
    const standby = this.#takeStandby();
    const child =
      standby?.child ??
      this.#fork({ [WORKER_ENV.id]: String(slot.id) });
    const ready = deferred();
    // once this slot serves, a new standby may start (not before: the slot's start gets the CPU first)
    ready.promise.then(() => this.syncStandby(), () => {});
    slot.child = child;
    slot.state = 'starting';
    slot.booted = false;
    slot.startedAt = Date.now();
    slot.ready = ready;
    slot.bootError = null;
    slot.lastStats = null;
    slot.load = null;
    slot.loadGeneration = 0;
    slot.remoteSent = '';
    slot.generation = 0;
    slot.listenerKeys = new Set();
    slot.applying = null;
    child.on('message', (msg: unknown) => this.#onMessage(slot, child, msg));
    child.on('exit', (code, signal) => this.#onExit(slot, child, code, signal));
    child.on('error', (err) => {
      this.#state.log.error({ err, worker: slot.id }, 'worker process error');
      // A fork that failed never emits 'exit'.
      if (child.pid === undefined) this.#onExit(slot, child, null, null);
    });
    if (standby !== null) {
      // a standby that cannot be told is gone: its 'exit' (now this slot's) restarts the slot as any exit does
      const tell = (): void => {
        send(child, { type: 'take-slot', id: slot.id }).catch((err: unknown) => {
          this.#state.log.warn({ err, worker: slot.id, workerPid: child.pid }, 'the standby worker could not take the slot');
          child.kill('SIGKILL');
        });
      };
      if (standby.ready) tell();
      else standby.claimed = tell;
    }
    this.#state.log.info({ worker: slot.id, workerPid: child.pid, standby: standby !== null }, 'worker started');
    return ready;
  }

  /** A worker process (a slot's, or the standby with `role` saying so), with the config file's name. */
  #fork(role: Record<string, string>): ChildProcess {
    return fork(WORKER_PATH, [], {
      env: { ...process.env, ...role, [WORKER_ENV.config]: this.#state.configFile },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
  }

  /** The standby as /status shows it; null when there is none. */
  get standby(): { pid: number | null; state: 'loading' | 'ready' | 'leaving' } | null {
    const s = this.#standby;
    return s === null ? null : { pid: s.child.pid ?? null, state: s.leaving ? 'leaving' : s.ready ? 'ready' : 'loading' };
  }

  /** The standby, loaded or loading, for a slot (it leaves the standby role); null when there is none. */
  #takeStandby(): Standby | null {
    const s = this.#standby;
    if (s === null || s.leaving || !s.child.connected) return null;
    this.#standby = null;
    this.#standbyBackoffMs = STANDBY_BACKOFF_MIN_MS;
    return s;
  }

  /**
   * Forks a standby when the served config wants one (`standby_worker`), none runs or is due, and every slot
   * serves; stops the one there is when the config no longer wants it (a reload). Called once the instance
   * is up, after each reload and whenever a slot is ready.
   */
  syncStandby(): void {
    const state = this.#state;
    if (!state.started || state.stopping || !state.served.config.standby_worker) {
      if (this.#standbyTimer !== null) clearTimeout(this.#standbyTimer);
      this.#standbyTimer = null;
      this.#stopStandby();
      return;
    }
    if (this.#standby !== null || this.#standbyTimer !== null || this.#slots.some((s) => s.state !== 'ready')) return;
    const child = this.#fork({ [WORKER_ENV.standby]: '1' });
    const standby: Standby = { child, ready: false, leaving: false, claimed: null };
    this.#standby = standby;
    child.on('message', (msg: unknown) => {
      if (standby.ready || !isToPrimary(msg) || msg.type !== 'standby') return;
      standby.ready = true;
      if (standby.claimed !== null) return standby.claimed();
      if (this.#standby === standby) state.log.info({ workerPid: child.pid }, 'standby worker ready');
    });
    child.on('exit', (code, signal) => this.#onStandbyExit(standby, code, signal));
    child.on('error', (err) => {
      state.log.error({ err, workerPid: child.pid }, 'standby worker process error');
      if (child.pid === undefined) this.#onStandbyExit(standby, null, null);
    });
    state.log.info({ workerPid: child.pid }, 'standby worker started');
  }

  /** Tells the standby (if any) to exit; it is forgotten once it did. */
  #stopStandby(): void {
    const s = this.#standby;
    if (s === null || s.leaving) return;
    s.leaving = true;
    s.child.kill('SIGTERM');
  }

  #onStandbyExit(standby: Standby, code: number | null, signal: NodeJS.Signals | null): void {
    // a standby that took a slot is that slot's process: its exit is #onExit's
    if (this.#standby !== standby) return;
    this.#standby = null;
    if (standby.leaving || this.#state.stopping) return void this.checkAllExited();
    const delay = this.#standbyBackoffMs;
    this.#standbyBackoffMs = Math.min(delay * 2, STANDBY_BACKOFF_MAX_MS);
    this.#state.log.warn({ workerPid: standby.child.pid, code, signal, restartInMs: delay }, 'standby worker exited: forking another');
    this.#standbyTimer = setTimeout(() => {
      this.#standbyTimer = null;
      this.syncStandby();
    }, delay);
  }

  #onMessage(slot: WorkerSlot, child: ChildProcess, msg: unknown): void {
    if (slot.child !== child) return;
    if (!isToPrimary(msg)) {
      this.#state.log.warn({ worker: slot.id, msg }, 'ignoring an unknown message from a worker');
      return;
    }
    this.#hooks.message(slot, child, msg);
  }

  /** To every booted worker; one that is gone is handled by its 'exit' (and gets the full state when it is back). */
  broadcast(msg: ToWorker): void {
    for (const slot of this.#slots) {
      const child = slot.child;
      if (child === null || !slot.booted) continue;
      send(child, msg).catch((err: unknown) => this.#state.log.debug({ err, worker: slot.id }, 'could not send a target state to a worker'));
    }
  }

  /** Asks every running worker for its numbers; the ones that do not answer in time are listed as such. */
  async collect(timeoutMs = STATS_TIMEOUT_MS): Promise<{ answers: Array<{ slot: WorkerSlot; stats: WorkerStats }>; unanswered: number[] }> {
    const id = ++this.#statsSeq;
    const asked: Array<{ slot: WorkerSlot; child: ChildProcess }> = [];
    for (const slot of this.#slots) if (slot.state === 'ready' && slot.booted && slot.child !== null) asked.push({ slot, child: slot.child });
    const replies = await Promise.all(
      asked.map(
        ({ slot, child }) =>
          new Promise<WorkerStats | null>((resolve) => {
            const done = (stats: WorkerStats | null) => {
              clearTimeout(timer);
              slot.pendingStats.delete(id);
              resolve(stats);
            };
            const timer = setTimeout(() => done(null), timeoutMs);
            slot.pendingStats.set(id, done);
            send(child, { type: 'stats-request', id }).catch(() => done(null));
          }),
      ),
    );
    const answers: Array<{ slot: WorkerSlot; stats: WorkerStats }> = [];
    const unanswered: number[] = [];
    replies.forEach((stats, i) => {
      if (stats === null) unanswered.push(asked[i].slot.id);
      else answers.push({ slot: asked[i].slot, stats });
    });
    return { answers, unanswered };
  }

  #onExit(slot: WorkerSlot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child !== child) return;
    slot.child = null;
    slot.booted = false;
    slot.applying?.finish({ ok: false, gone: true, error: `worker ${slot.id} exited`, errors: [] });
    for (const resolve of slot.pendingStats.values()) resolve(null);
    slot.pendingStats.clear();
    this.#hooks.exited(slot);
    if (this.#state.stopping) {
      slot.state = 'exited';
      if (code !== 0) this.#failedWorkers++;
      this.#state.log.info({ worker: slot.id, workerPid: child.pid, code, signal }, 'worker exited');
      slot.ready?.resolve();
      this.checkAllExited();
      return;
    }
    if (!this.#state.started) {
      slot.state = 'exited';
      const why = slot.bootError ?? `it exited (${signal ?? `code ${code}`}); see its error above`;
      slot.ready?.reject(new Error(`worker ${slot.id} could not start: ${why}`));
      return;
    }
    if (Date.now() - slot.startedAt >= HEALTHY_AFTER_MS) slot.backoffMs = 0;
    const delay = slot.backoffMs;
    slot.backoffMs = delay === 0 ? BACKOFF_MIN_MS : Math.min(delay * 2, BACKOFF_MAX_MS);
    slot.state = 'restarting';
    this.#state.log.warn({ worker: slot.id, workerPid: child.pid, code, signal, restartInMs: delay }, 'worker exited unexpectedly: restarting it');
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      slot.restarts++;
      this.#restartsTotal++;
      this.#spawn(slot);
    }, delay);
  }

  /** Every worker stops accepting and drains (one still loading its config is stopped); killed after `graceMs` + 5 s. */
  stopAll(graceMs: number): void {
    this.syncStandby(); // stopping: the standby exits (nothing to drain) and none is forked again
    for (const slot of this.#slots) {
      if (slot.restartTimer !== null) {
        clearTimeout(slot.restartTimer);
        slot.restartTimer = null;
      }
      const child = slot.child;
      if (child === null) {
        slot.state = 'exited';
        continue;
      }
      slot.state = 'stopping';
      // A worker still loading its config has no listener yet; a booted one drains.
      if (slot.booted) send(child, { type: 'shutdown' }).catch(() => child.kill('SIGTERM'));
      else child.kill('SIGTERM');
    }
    this.#forceTimer = setTimeout(() => {
      this.#state.log.warn({ afterMs: graceMs + FORCE_KILL_AFTER_GRACE_MS }, 'workers still alive after the grace: killing them');
      this.killAll();
    }, graceMs + FORCE_KILL_AFTER_GRACE_MS);
  }

  killAll(): void {
    this.#standby?.child.kill('SIGKILL');
    for (const slot of this.#slots) {
      if (slot.child === null) continue;
      this.#forced = true;
      slot.child.kill('SIGKILL');
    }
  }

  checkAllExited(): void {
    if (!this.#state.stopping || !this.#state.prepared || this.#slots.some((s) => s.child !== null) || this.#standby !== null) return;
    if (this.#forceTimer !== null) {
      clearTimeout(this.#forceTimer);
      this.#forceTimer = null;
    }
    this.#hooks.allExited();
  }
}
