// The reload transaction (SIGHUP or `portico reload`): one at a time, read and validate the file, prepare what
// can fail in the primary, have every worker apply it, then commit everywhere or roll back everywhere; record
// the outcome (status, outcome file, log line). It never leaves workers on two configs once it is over.
import { startAdminServer, type AdminServer, type AdminSource } from '../admin/server.js';
import { ensureSelfSignedCertificates } from '../accept/tls.js';
import { formatErrors, loadConfig, type ConfigError } from '../config/load.js';
import { describeChanges, diffConfigs, equalValues, type ConfigChanges, type ReloadOutcome } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import { createLogger } from '../core/log.js';
import { hashHomes, type DiscoveredSets } from '../upstream/sticky.js';
import type { ConfigApply } from './apply.js';
import { checkCertificates, learnPorts, listenerReport, prepareListeners, type PortOwners } from './listeners.js';
import type { LoadShare } from './load-share.js';
import { announce, type ListenerState, type PrimaryState, type Served, type WorkerSlot } from './state.js';
import { writeOutcome, type ControlPaths } from './state-files.js';
import type { Supervisor } from './supervisor.js';
import { discoveryWaitMs, type Targets } from './targets.js';

/** The parts a reload works through; all belong to the one Primary. */
export interface ReloadParts {
  readonly supervisor: Supervisor;
  readonly targets: Targets;
  readonly loadShare: LoadShare;
  readonly apply: ConfigApply;
  readonly owners: PortOwners;
  readonly control: ControlPaths;
  /** What a new admin server serves (the primary's reports and drains). */
  adminSource(): AdminSource;
  /** A reload was committed: the served config is `config` now. */
  committed?(config: Config): void;
}

export class Reload {
  readonly #state: PrimaryState;
  readonly #parts: ReloadParts;
  /** A reload was asked for while one ran (or before the start finished): it runs next. */
  #reloadPending = false;
  #reloadAttempts = 0;
  #reloadsOk = 0;
  #reloadsFailed = 0;
  #lastReload: ReloadOutcome | null = null;
  #loadedAt = Date.now();

  constructor(state: PrimaryState, parts: ReloadParts) {
    this.#state = state;
    this.#parts = parts;
  }

  get ok(): number {
    return this.#reloadsOk;
  }

  get failed(): number {
    return this.#reloadsFailed;
  }

  get lastReload(): ReloadOutcome | null {
    return this.#lastReload;
  }

  /** When the served config was loaded (start, or the last reload that committed). */
  get loadedAt(): number {
    return this.#loadedAt;
  }

  /** SIGHUP. */
  request(): void {
    if (this.#state.stopping) {
      this.#state.log.warn('SIGHUP while stopping: no reload');
      return;
    }
    // One at a time; a signal during a reload (or the start) runs one more afterwards, which reads the file anew.
    if (this.#state.reloading || !this.#state.started) {
      this.#reloadPending = true;
      return;
    }
    void this.#reload();
  }

  /** The start finished: a reload asked for meanwhile runs now. */
  started(): void {
    if (this.#reloadPending) {
      this.#reloadPending = false;
      void this.#reload();
    }
  }

  /** A stop began: a queued reload does not run. */
  cancelPending(): void {
    this.#reloadPending = false;
  }

  /** One reload attempt, its outcome recorded (status, outcome file, log line), then a queued one if any. */
  async #reload(): Promise<void> {
    const state = this.#state;
    state.reloading = true;
    const attempt = ++this.#reloadAttempts;
    const startedAt = Date.now();
    let outcome: ReloadOutcome;
    try {
      outcome = await this.#tryReload(attempt, startedAt);
    } catch (err) {
      // a bug must not leave the instance half reloaded without a word: refused, said loudly
      state.log.error({ err }, 'reload failed unexpectedly');
      outcome = this.#refused(attempt, startedAt, `internal error: ${(err as Error).message}`, []);
    }
    // A plan not committed stops looking names up; sets that changed meanwhile go out now, to one config.
    this.#parts.targets.endReload();
    this.#lastReload = outcome;
    if (outcome.ok) {
      this.#reloadsOk++;
      announce(state).info(
        { generation: outcome.generation, changes: outcome.changes, listeners: listenerReport(state.served), durationMs: outcome.finishedAt - outcome.startedAt, warnings: outcome.warnings },
        `config reloaded: ${outcome.summary}`,
      );
      for (const warning of outcome.warnings) state.log.warn({ generation: outcome.generation }, warning);
    } else {
      this.#reloadsFailed++;
      const errors = outcome.errors.length === 0 ? undefined : formatErrors(state.configFile, outcome.errors).split('\n');
      state.log.error({ generation: outcome.generation, errors, durationMs: outcome.finishedAt - outcome.startedAt }, `config reload refused: ${outcome.error}; generation ${outcome.generation} keeps serving`);
    }
    // after a stop began the pid file goes away: no outcome file is left behind it
    const control = this.#parts.control;
    if (!state.stopping) await writeOutcome(control, { ...outcome, pid: process.pid }).catch((err: unknown) => state.log.warn({ err, file: control.outcome }, 'cannot write the reload outcome for `portico reload`'));
    state.reloading = false;
    for (const slot of this.#parts.supervisor.slots) this.#parts.apply.catchUp(slot);
    this.#parts.loadShare.scheduleLoadFlush();
    if (this.#reloadPending && !state.stopping) {
      this.#reloadPending = false;
      void this.#reload();
    }
  }

  #refused(attempt: number, startedAt: number, error: string, errors: readonly ConfigError[]): ReloadOutcome {
    return { ok: false, attempt, startedAt, finishedAt: Date.now(), generation: this.#state.served.generation, error, errors };
  }

  /**
   * Reads and validates the file, prepares what can fail in the primary (certificates, new sockets, admin),
   * then has every worker apply it. All workers took it: commit. Any refused: the ones that took it go back to
   * the running config, and the reload is refused. The running config serves throughout.
   */
  async #tryReload(attempt: number, startedAt: number): Promise<ReloadOutcome> {
    const state = this.#state;
    const { targets, loadShare } = this.#parts;
    const loaded = loadConfig(state.configFile);
    if (!loaded.ok) return this.#refused(attempt, startedAt, `${loaded.errors.length} error${loaded.errors.length === 1 ? '' : 's'} in ${state.configFile}`, loaded.errors);
    const next = loaded.config;
    const running = state.served;
    const changes = diffConfigs(running.config, next);
    try {
      for (const cert of await ensureSelfSignedCertificates(next)) state.log.info({ cert }, 'generated a self-signed certificate');
      checkCertificates(next, state.log);
    } catch (err) {
      return this.#refused(attempt, startedAt, (err as Error).message, []);
    }
    let prepared: { states: ListenerState[]; fresh: ListenerState[] };
    try {
      prepared = await prepareListeners(next, running.listeners, this.#parts.owners);
    } catch (err) {
      return this.#refused(attempt, startedAt, (err as Error).message, []);
    }
    const closeFresh = (): Promise<unknown> => Promise.all(prepared.fresh.map((l) => l.handle?.close()));
    let admin: { server: AdminServer | null; replaces: boolean };
    try {
      admin = await this.#prepareAdmin(running.config, next);
    } catch (err) {
      await closeFresh();
      return this.#refused(attempt, startedAt, `admin: ${(err as Error).message}`, []);
    }
    // New and changed DNS names are looked up before the workers apply (bounded, as at start): an upstream a
    // reload adds with a name has its targets from its first request. Unchanged names keep their watch.
    const plan = targets.planReload(next);
    await plan?.ready(discoveryWaitMs(next));
    if (state.stopping) {
      await closeFresh();
      if (admin.replaces) await admin.server?.close();
      return this.#refused(attempt, startedAt, 'Portico is stopping', []);
    }

    // From here workers may be on two configs: discovery changes wait for the outcome (see #reload).
    targets.holdDiscovery();
    // Workers flush their sticky tunnel changes before answering: the pins below see every open key.
    await this.#parts.supervisor.collect();
    // One snapshot of the new config's discovered sets for every worker; commit() reports what changed since.
    const sets = plan?.sets() ?? {};
    const target: Served = { generation: running.generation + 1, config: next, listeners: prepared.states };
    const health = targets.healthCheckers(next, sets, targets.health);
    this.#parts.supervisor.broadcast(targets.fullState(next, health, sets));
    loadShare.broadcastPins(loadShare.sticky.setHomes(hashHomes(next.upstreams, sets)));
    const stopping = { error: 'Portico is stopping', errors: [] };
    let failure = state.stopping ? stopping : await this.#applyEverywhere(target, sets, running);
    // a stop that began while the workers applied wins: nothing is committed (new checkers would outlive it)
    if (failure === null && state.stopping) failure = stopping;
    if (failure !== null) {
      targets.dropHealth(health);
      this.#parts.supervisor.broadcast(targets.fullState());
      loadShare.broadcastPins(loadShare.sticky.setHomes(hashHomes(running.config.upstreams, targets.liveSets())));
      await closeFresh();
      if (admin.replaces) await admin.server?.close();
      return this.#refused(attempt, startedAt, failure.error, failure.errors);
    }

    // Commit: from here on nothing can refuse the reload.
    const wanted = new Set(target.listeners.map((l) => l.key));
    for (const l of running.listeners) if (!wanted.has(l.key)) void l.handle?.close();
    targets.commitPlan(plan, sets);
    state.served = target;
    this.#loadedAt = Date.now();
    targets.commitHealth(health, next);
    this.#commitAdmin(next, admin);
    if (next.log.level !== running.config.log.level) state.log = createLogger(next.log.level, { role: 'primary' });
    this.#parts.committed?.(next);
    return {
      ok: true,
      attempt,
      startedAt,
      finishedAt: Date.now(),
      generation: target.generation,
      changes,
      summary: describeChanges(changes),
      warnings: this.#warnings(changes),
    };
  }

  #warnings(changes: ConfigChanges): string[] {
    const w = changes.workers;
    if (w === null) return [];
    return [`workers: ${w.running} -> ${w.configured} is not applied by a reload: ${this.#parts.supervisor.slots.length} workers keep running until Portico is restarted`];
  }

  /**
   * Has every worker on `running` apply `target` (the first one alone first when it must pick a port for a new
   * port-0 listener). Returns the first refusal after rolling the others back, or null when all took it.
   * Workers that exit meanwhile do not count: their replacements get the served config when they start.
   */
  async #applyEverywhere(target: Served, sets: DiscoveredSets, running: Served): Promise<{ error: string; errors: readonly ConfigError[] } | null> {
    const slots = this.#parts.supervisor.slots.filter((s) => s.child !== null && s.booted && s.state === 'ready' && s.generation === running.generation);
    const applied: WorkerSlot[] = [];
    let failure: { error: string; errors: readonly ConfigError[] } | null = null;
    const applyTo = async (slot: WorkerSlot): Promise<void> => {
      const child = slot.child;
      if (child === null) return;
      const result = await this.#parts.apply.apply(slot, child, target, sets);
      if (result.ok) {
        applied.push(slot);
        learnPorts(target, result.ports);
      } else if (!result.gone) {
        failure ??= { error: `worker ${slot.id}: ${result.error.split('\n')[0]}`, errors: result.errors };
      }
    };
    const firstAlone = this.#state.strategy === 'reuse-port' && target.listeners.some((l) => l.port === 0);
    const rest = firstAlone ? slots.slice(1) : slots;
    if (firstAlone && slots.length > 0) await applyTo(slots[0]);
    if (failure === null) await Promise.all(rest.map(applyTo));
    if (failure === null) return null;
    await Promise.all(
      applied.map(async (slot) => {
        const child = slot.child;
        if (child === null) return;
        // the sets discovery follows now (held back from broadcast while the reload ran)
        const back = await this.#parts.apply.apply(slot, child, running, this.#parts.targets.liveSets());
        if (!back.ok && !back.gone) this.#state.log.error({ worker: slot.id, error: back.error }, 'worker could not go back to the running config after a refused reload');
      }),
    );
    return failure;
  }

  /** A changed admin address is bound before the workers apply anything (a failure refuses the reload). */
  async #prepareAdmin(running: Config, next: Config): Promise<{ server: AdminServer | null; replaces: boolean }> {
    const a = running.admin;
    const b = next.admin;
    if (b === undefined || (a !== undefined && equalValues(a.address, b.address))) return { server: this.#state.admin, replaces: false };
    const server = await startAdminServer(b.address.host, b.address.port, this.#parts.adminSource(), this.#state.log, { token: b.token, hosts: b.hosts });
    return { server, replaces: true };
  }

  #commitAdmin(next: Config, admin: { server: AdminServer | null; replaces: boolean }): void {
    const state = this.#state;
    const old = state.admin;
    if (next.admin === undefined) {
      state.admin = null;
      void old?.close();
      return;
    }
    if (admin.replaces) {
      state.admin = admin.server;
      void old?.close();
      return;
    }
    state.admin?.setOptions({ token: next.admin.token, hosts: next.admin.hosts });
  }
}
