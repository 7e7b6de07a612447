// The primary process: binds listeners without accepting, forks the workers, fans SIGTERM out as a drain and
// SIGHUP as a reload, serves admin, and runs health checks and discovery once per instance. It touches no
// client socket. This file is the wiring: the shared state, start and stop, and what a worker's message means;
// each concern is its own file here (supervisor, listeners, targets, load-share, apply, reload, report).
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { chooseListenStrategy } from '../accept/listener.js';
import { ensureSelfSignedCertificates } from '../accept/tls.js';
import { prefaceBeforeTls } from '../accept/preface.js';
import { startAdminServer, type AdminSource } from '../admin/server.js';
import type { Config } from '../config/schema.js';
import { createLogger } from '../core/log.js';
import { deferred } from '../core/util.js';
import { nativeTlsStatus } from '../native/tls.js';
import { nativePeekAvailable } from '../native/io.js';
import { nativeStatus } from '../native/addon.js';
import { raiseFdLimit } from '../worker/fd-limit.js';
import type { ToPrimary } from '../worker/ipc.js';
import { ConfigApply } from './apply.js';
import { checkCertificates, listenerReport, prepareListeners, type PortOwners } from './listeners.js';
import { LoadShare } from './load-share.js';
import { Reload } from './reload.js';
import { Report } from './report.js';
import { announce, type PrimaryState, type WorkerSlot } from './state.js';
import { controlPaths, otherRunning, removeControlFiles, writePidFile, type ControlPaths } from './state-files.js';
import { Supervisor, send } from './supervisor.js';
import { Targets } from './targets.js';
import { Upgrade, announceReady } from './upgrade.js';
import { AcmeManager } from './acme.js';
import { PublishBatcher } from './publish.js';

export interface PrimaryOptions {
  configFile: string;
  config: Config;
  /**
   * Services to start before the workers and stop with Portico (`portico demo` passes the demo backends of
   * cli/demo.ts); the primary knows nothing of what they are.
   */
  sidecars?: () => Promise<{ close(): Promise<void> }>;
  /**
   * A deliberate hand-over (the future upgrade feature sets it): the pid of the Portico primary this one takes
   * over from. Its sockets (its own and its workers') are not a conflict, and its pid file may be replaced.
   * Nothing else sets it: a second Portico on taken ports or on a running config file is refused.
   */
  handoverFrom?: number;
}

class Primary {
  readonly #state: PrimaryState;
  readonly #control: ControlPaths;
  readonly #startSidecars: (() => Promise<{ close(): Promise<void> }>) | undefined;
  readonly #handoverFrom: number | undefined;
  readonly #owners: PortOwners;
  readonly #supervisor: Supervisor;
  /** Edge fan-out publishes from the admin API, one IPC message per turn (publish.ts). */
  readonly #publishes: PublishBatcher;
  readonly #loadShare: LoadShare;
  readonly #targets: Targets;
  readonly #apply: ConfigApply;
  readonly #reload: Reload;
  readonly #report: Report;
  readonly #upgrade: Upgrade;
  readonly #acme: AcmeManager;
  #sidecars: { close(): Promise<void> } | null = null;
  #finishing = false;
  #stopped = deferred();

  constructor(opts: PrimaryOptions) {
    const configFile = path.resolve(opts.configFile);
    this.#control = controlPaths(configFile);
    const state: PrimaryState = {
      served: { generation: 1, config: opts.config, listeners: [] },
      configFile,
      log: createLogger(opts.config.log.level, { role: 'primary' }),
      strategy: chooseListenStrategy(),
      admin: null,
      prepared: false,
      started: false,
      stopping: false,
      reloading: false,
    };
    this.#state = state;
    this.#startSidecars = opts.sidecars;
    this.#handoverFrom = opts.handoverFrom;
    const supervisor = new Supervisor(state, {
      message: (slot, child, msg) => this.#onWorkerMessage(slot, child, msg),
      exited: (slot) => this.#onWorkerExit(slot),
      allExited: () => void this.#finish(),
    });
    const loadShare = new LoadShare(state, supervisor);
    const targets = new Targets(state, supervisor, loadShare);
    const apply = new ConfigApply(state, targets, loadShare);
    this.#owners = { strategy: state.strategy, workerPids: () => supervisor.pids(), handoverFrom: opts.handoverFrom };
    this.#acme = new AcmeManager(state.log, configFile, {
      broadcast: (msg) => supervisor.broadcast(msg),
      // a stats round trip: IPC keeps order per worker, so its answer means every earlier message was handled
      delivered: async (timeoutMs) => (await supervisor.collect(timeoutMs)).unanswered,
      // workers rebuild their TLS contexts from the files with an apply of the served config (a reload does too)
      refresh: () => {
        if (state.reloading || state.stopping) return;
        for (const slot of supervisor.slots) if (slot.child !== null && slot.booted && slot.applying === null) apply.applyServed(slot, slot.child);
      },
    });
    const reload = new Reload(state, {
      supervisor,
      targets,
      loadShare,
      apply,
      owners: this.#owners,
      control: this.#control,
      adminSource: () => this.#adminSource(),
      committed: (config) => {
        this.#acme.update(config);
        supervisor.syncStandby();
      },
    });
    this.#supervisor = supervisor;
    this.#publishes = new PublishBatcher((msg) => supervisor.broadcast(msg));
    this.#loadShare = loadShare;
    this.#targets = targets;
    this.#apply = apply;
    this.#reload = reload;
    this.#report = new Report(state, { supervisor, targets, loadShare, reload });
    this.#upgrade = new Upgrade(state.log, this.#control, configFile, {
      ready: () => (state.strategy === 'shared-handle' ? 'an upgrade needs per-worker SO_REUSEPORT listeners (the native addon, or Node >= 22.12); this instance shares one socket' : !state.started ? 'Portico is still starting' : state.stopping ? 'Portico is stopping' : state.reloading ? 'a reload is in progress: try again when it is done' : undefined),
      handOver: () => {
        // the new primary may be waiting for the admin address (a fixed port cannot be shared)
        const admin = state.admin;
        state.admin = null;
        void admin?.close();
        this.#shutdown('upgrade');
      },
    });
  }

  get #config(): Config {
    return this.#state.served.config;
  }

  /** Resolves after a complete shutdown. */
  get stopped(): Promise<void> {
    return this.#stopped.promise;
  }

  /** Why the stop was not clean, or undefined when every worker drained and exited 0 in time. */
  get failure(): string | undefined {
    if (this.#supervisor.forced) return 'workers were killed: they outlived the shutdown grace, or a second signal came';
    if (this.#supervisor.failedWorkers > 0) return `${this.#supervisor.failedWorkers} worker(s) did not exit cleanly while draining`;
    return undefined;
  }

  async start(): Promise<void> {
    const state = this.#state;
    // Before anything is bound: a second instance on one config file would take the pid file from the first.
    const running = otherRunning(this.#control);
    if (running !== undefined && running !== this.#handoverFrom) {
      throw new Error(`another Portico (pid ${running}) is running ${state.configFile} (pid file ${this.#control.pid}): stop it first, or use \`portico reload\``);
    }
    process.on('SIGTERM', this.#onSignal);
    process.on('SIGINT', this.#onSignal);
    process.on('SIGHUP', this.#onReloadSignal);
    process.on('SIGUSR2', this.#onUpgradeSignal);
    process.on('SIGUSR1', this.#onReopenSignal);
    try {
      try {
        await this.#prepare();
      } finally {
        state.prepared = true;
      }
      if (!state.stopping) await this.#supervisor.startWorkers();
    } catch (err) {
      state.log.fatal({ err }, 'start failed');
      if (state.stopping) this.#supervisor.checkAllExited();
      else this.#shutdown('start failed');
      await this.#stopped.promise;
      throw err;
    }
    // A signal that came while preparing found nothing to stop yet.
    this.#supervisor.checkAllExited();
    if (state.stopping) return;
    state.started = true;
    // `portico reload` finds this process through the pid file (written before the line below, so whoever read
    // that line finds the file); without it, SIGHUP still works. One that started meanwhile on the same file (a
    // race past the check at the top) keeps its pid file.
    const other = otherRunning(this.#control);
    if (other !== undefined && other !== this.#handoverFrom) state.log.warn({ otherPid: other, pidFile: this.#control.pid }, 'another Portico took the pid file of this config file meanwhile: it is left as it is (`portico reload` reaches that one)');
    else await writePidFile(this.#control, process.pid).catch((err: unknown) => state.log.warn({ err, pidFile: this.#control.pid }, 'cannot write the pid file: `portico reload` will not find this process (SIGHUP still reloads)'));
    // a stop that came while writing may have looked for the file before it existed
    if (state.stopping) return void removeControlFiles(this.#control, process.pid).catch(() => {});
    // Tools and tests read the bound ports (port 0 in config) from this line.
    announce(state).info(
      {
        listeners: listenerReport(state.served),
        admin: state.admin === null ? null : { address: state.admin.address, port: state.admin.port },
        workers: this.#supervisor.slots.map((s) => ({ id: s.id, pid: s.child?.pid ?? null })),
        strategy: state.strategy,
        pidFile: this.#control.pid,
      },
      'listening',
    );
    this.#reload.started();
    this.#supervisor.syncStandby();
    this.#acme.update(this.#config);
    announceReady(this.#handoverFrom, this.#supervisor.slots.length, state.log);
  }

  /** Everything that must exist before a worker starts: certificates, sidecars, sockets, admin. */
  async #prepare(): Promise<void> {
    const state = this.#state;
    const config = this.#config;
    const native = nativeStatus();
    // said once, here: without the addon tunnels use the JS relay and (Node < 22.12) workers share one socket
    if (!native.native) state.log.warn({ reason: native.reason }, 'native addon not in use: JS relay only');
    const nativeTls = nativeTlsStatus();
    if (native.native && config.listeners.some((l) => (l.tls?.certificates.length ?? 0) > 0)) {
      if (nativeTls.available) {
        state.log.info({ openssl: nativeTls.openssl }, 'TLS terminated by the native addon');
        // the addon starts a handshake on a connection nothing was consumed from: a preface (PROXY header, a
        // ClientHello for passthrough) is peeked where the kernel can, else read in JavaScript, and Node's TLS replays it
        if (!nativePeekAvailable()) {
          config.listeners.forEach((l, i) => {
            if ((l.tls?.certificates.length ?? 0) === 0) return;
            const preface = prefaceBeforeTls(l);
            if (preface !== undefined) state.log.info({ listener: i, address: l.address.address }, `listeners[${i}]: Node's TLS terminates here, not the addon: ${preface} is read first and this kernel cannot peek TCP (SO_PEEK_OFF, Linux >= 6.10)`);
          });
        }
      } else state.log.warn({ reason: nativeTls.reason }, "TLS terminated by Node's TLS, not the native addon");
    }
    // Workers inherit the raised limit (fork keeps rlimits); said once, here.
    const fds = raiseFdLimit();
    if (fds.notRaised !== undefined) state.log.warn({ fdLimit: fds.soft, hard: fds.hard, reason: fds.notRaised }, `file descriptors: soft limit ${fds.soft}, could not raise it to the hard limit ${fds.hard}`);
    else state.log.info({ fdLimit: fds.soft, hard: fds.hard, before: fds.before }, `file descriptors: limit ${fds.soft} per process${fds.before !== fds.soft ? ` (soft limit raised from ${fds.before})` : ''}`);
    for (const cert of await ensureSelfSignedCertificates(config)) state.log.info({ cert }, 'generated a self-signed certificate');
    // Workers load the same files: fail here, once, with the file name, rather than in a restart loop.
    checkCertificates(config, state.log);
    if (this.#startSidecars !== undefined) {
      this.#sidecars = await this.#startSidecars();
    }
    const { states } = await prepareListeners(config, [], this.#owners);
    state.served = { ...state.served, listeners: states };
    if (config.admin !== undefined) {
      const admin = config.admin;
      const start = () => startAdminServer(admin.address.host, admin.address.port, this.#adminSource(), state.log, { token: admin.token, hosts: admin.hosts });
      try {
        state.admin = await start();
      } catch (err) {
        if (this.#handoverFrom === undefined || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        // the old primary frees its admin address once this one is listening (upgrade.ts): take it then
        void this.#adminWhenFree(start);
      }
    }
    if (state.stopping) return; // a signal came while preparing
    await this.#targets.startDiscovery();
    if (state.stopping) return;
    this.#targets.startHealth();
  }

  /** Hand-over only: retries the admin address the old primary still holds, for as long as a start may take. */
  async #adminWhenFree(start: () => Promise<NonNullable<PrimaryState['admin']>>): Promise<void> {
    const state = this.#state;
    state.log.info('upgrade: the admin address is still the old primary\'s; it is taken over once this one is listening');
    const deadline = Date.now() + 2 * 60_000;
    while (!state.stopping && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      try {
        const admin = await start();
        if (state.stopping) return void admin.close();
        state.admin = admin;
        state.log.info({ address: admin.address, port: admin.port }, 'admin listening');
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') return void state.log.error({ err }, 'admin listener failed');
      }
    }
    if (!state.stopping) state.log.error('upgrade: the admin address did not come free: this primary runs without admin');
  }

  #adminSource(): AdminSource {
    return {
      metrics: () => this.#report.metricsText(),
      status: () => this.#report.status(),
      drain: (u: string, t: string, d: boolean) => this.#targets.drain(u, t, d),
      // edge fan-out: every worker's uWS app delivers to its own subscribers of the topic
      publish: (topic: string, data: Buffer, binary: boolean) => {
        this.#publishes.add(topic, data, binary);
        return this.#supervisor.pids().length;
      },
    };
  }

  /** What a worker's message means (IPC keeps order per worker). */
  #onWorkerMessage(slot: WorkerSlot, child: ChildProcess, msg: ToPrimary): void {
    switch (msg.type) {
      case 'standby':
        // said once by a standby, before it took this slot (supervisor.ts); nothing to do as a worker
        return;
      case 'booted':
        slot.booted = true;
        if (this.#state.stopping) send(child, { type: 'shutdown' }).catch(() => child.kill('SIGTERM'));
        else {
          // Before its first apply (which brings the discovered targets): a worker never serves a request with a
          // target the instance has taken out.
          send(child, this.#targets.fullState()).catch((err: unknown) => this.#state.log.debug({ err, worker: slot.id }, 'could not send the target states to a worker'));
          this.#loadShare.sendPins(child, this.#loadShare.sticky.full());
          // ACME challenges pending now (a worker restarted during an order): the CA may ask this worker next
          for (const challenge of this.#acme.pending()) send(child, challenge).catch(() => {});
          this.#apply.applyServed(slot, child);
        }
        return;
      case 'applied': {
        const pending = slot.applying;
        if (pending === null || pending.seq !== msg.seq) return;
        if (msg.ok) {
          slot.generation = msg.generation;
          slot.listenerKeys = pending.keys;
          pending.finish({ ok: true, ports: msg.ports });
        } else {
          pending.finish({ ok: false, gone: false, error: msg.error, errors: msg.errors });
        }
        return;
      }
      case 'sticky':
        this.#loadShare.broadcastPins(this.#loadShare.sticky.apply(slot.id, msg.changes));
        return;
      case 'stats': {
        const { type: _type, id, ...stats } = msg;
        slot.lastStats = stats;
        const resolve = slot.pendingStats.get(id);
        slot.pendingStats.delete(id);
        resolve?.(stats);
        return;
      }
      case 'load':
        slot.load = new Map(Object.entries(msg.load));
        slot.loadGeneration = msg.generation;
        this.#loadShare.scheduleLoadFlush();
        return;
    }
  }

  /** A worker exited (the supervisor restarts it or not): what the instance held for it is let go. */
  #onWorkerExit(slot: WorkerSlot): void {
    this.#loadShare.workerExited(slot);
    this.#report.retire(slot);
  }

  /** First call: stop accepting and drain. Second call: stop now. */
  #shutdown(reason: string): void {
    const state = this.#state;
    if (state.stopping) {
      state.log.warn({ reason }, 'second stop request: killing workers now');
      this.#supervisor.killAll();
      return;
    }
    state.stopping = true;
    this.#reload.cancelPending();
    this.#acme.stop();
    this.#targets.stop();
    this.#loadShare.stop();
    const grace = this.#config.timeouts.shutdown_grace;
    state.log.info({ reason, graceMs: grace }, 'shutting down: workers stop accepting and drain');
    // The primary's copies go first: once the workers close theirs, the port refuses new connections.
    for (const l of state.served.listeners) void l.handle?.close();
    this.#supervisor.stopAll(grace);
    this.#supervisor.checkAllExited();
  }

  async #finish(): Promise<void> {
    if (this.#finishing) return;
    this.#finishing = true;
    const state = this.#state;
    try {
      await Promise.all([state.admin?.close(), this.#sidecars?.close(), ...state.served.listeners.map((l) => l.handle?.close())]);
      if (state.started) await removeControlFiles(this.#control, process.pid);
    } catch (err) {
      state.log.error({ err }, 'error while closing');
    }
    process.off('SIGTERM', this.#onSignal);
    process.off('SIGINT', this.#onSignal);
    process.off('SIGHUP', this.#onReloadSignal);
    process.off('SIGUSR2', this.#onUpgradeSignal);
    process.off('SIGUSR1', this.#onReopenSignal);
    state.log.info({ forced: this.#supervisor.forced, failedWorkers: this.#supervisor.failedWorkers }, 'stopped');
    this.#stopped.resolve();
  }

  /** logrotate's SIGUSR1: the workers write the access-log files, so they reopen them. */
  #onReopenSignal = (): void => {
    const pids = this.#supervisor.pids();
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGUSR1');
      } catch {
        // a worker that just exited: its replacement opens the file anew
      }
    }
    this.#state.log.info({ workers: pids.length }, 'SIGUSR1: workers reopen the access-log files');
  };

  #onSignal = (signal: NodeJS.Signals): void => {
    this.#shutdown(signal);
  };

  #onReloadSignal = (): void => {
    // during an upgrade the new primary owns the config file's future: a reload goes to it (the pid file names it)
    if (this.#upgrade.inProgress) return void this.#state.log.warn('reload ignored: an upgrade is in progress (reload the new primary)');
    this.#reload.request();
  };

  #onUpgradeSignal = (): void => {
    this.#upgrade.request();
  };
}

/**
 * Runs Portico in this process as the primary. Resolves after a clean shutdown (SIGTERM/SIGINT: every worker
 * drained and exited 0). Rejects when it cannot start (after cleaning up) or when the stop was not clean.
 */
export async function runPrimary(opts: PrimaryOptions): Promise<void> {
  const primary = new Primary({ ...opts, handoverFrom: opts.handoverFrom ?? handoverFromEnv() });
  await primary.start();
  await primary.stopped;
  // Everything is closed; this only guards against a stray handle keeping a stopped proxy alive.
  setTimeout(() => process.exit(), 2_000).unref();
  const failure = primary.failure;
  if (failure !== undefined) throw new Error(failure);
}

/**
 * PORTICO_HANDOVER_FROM=PID: the hook the upgrade feature will use to start a new primary beside the old one
 * (see PrimaryOptions.handoverFrom). A value that is not a live process's pid is ignored.
 */
function handoverFromEnv(): number | undefined {
  const v = process.env.PORTICO_HANDOVER_FROM;
  if (v === undefined || !/^\d{1,10}$/.test(v)) return undefined;
  try {
    process.kill(Number(v), 0);
    return Number(v);
  } catch {
    return undefined;
  }
}
