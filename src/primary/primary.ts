// The primary process: binds listeners without accepting, forks the workers (child_process, not node:cluster),
// restarts one that dies with backoff, fans SIGTERM out as a drain and SIGHUP as a reload (validate, every worker
// applies, or all roll back), serves admin, sums metrics, per-target load and sticky tunnels, runs the active
// health checks and DNS discovery once per instance and owns drains. It touches no client socket.
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindShared, chooseListenStrategy, defaultBacklog, type ListenStrategy, type SharedHandle } from '../accept/listener.js';
import { describeConflict, findListenConflict, parentOf } from '../accept/port-owner.js';
import { nativeStatus } from '../native/addon.js';
import { raiseFdLimit } from '../worker/fd-limit.js';
import { ensureSelfSignedCertificates, loadCertificates } from '../accept/tls.js';
import { startAdminServer, type AdminServer, type DrainResult, type StatusReport, type TargetHealthReport } from '../admin/server.js';
import { formatErrors, loadConfig, resolveWorkers, type ConfigError } from '../config/load.js';
import { describeChanges, diffConfigs, equalValues, listenerKeys, planListeners, renderReloadMetrics, type ConfigChanges, type ReloadOutcome } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import { controlPaths, otherRunning, removeControlFiles, writeOutcome, writePidFile, type ControlPaths } from './state-files.js';
import { WORKER_ENV, isToPrimary, type ApplyMessage, type ListenerAssignment, type TargetControl, type TargetLoad, type ToPrimary, type ToWorker, type UpstreamLimitStatus, type WorkerStats } from '../worker/ipc.js';
import { createLogger, type Logger } from '../core/log.js';
import { emptySnapshot, renderPrometheus, sumSnapshots, type MetricsSnapshot, type UpstreamLimitTotals } from '../core/metrics.js';
import { readsLoad } from '../upstream/balancer.js';
import { Discovery, type DiscoveryPlan } from '../upstream/discovery.js';
import { HealthChecker, probeProxyHeader, renderHealthMetrics, type ProbeTarget } from '../upstream/health.js';
import type { TargetSpec } from '../upstream/pool.js';
import { StickyAggregate, hashHomes, type DiscoveredSets, type PinUpdate } from '../upstream/sticky.js';

export interface PrimaryOptions {
  configFile: string;
  config: Config;
  /** The YAML `config` was loaded from: what workers are given (they never read the file themselves). */
  configText: string;
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

const WORKER_PATH = fileURLToPath(new URL('../worker/main.js', import.meta.url));
/** Restart backoff: 100 ms doubling to 10 s; a worker that lived 30 s starts over at 100 ms. */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const HEALTHY_AFTER_MS = 30_000;
/** Workers still alive this long after the shutdown grace are killed. */
const FORCE_KILL_AFTER_GRACE_MS = 5_000;
/** A worker not accepting this long after its fork fails the start (config errors show up much sooner). */
const STARTUP_TIMEOUT_MS = 30_000;
/** A worker that does not answer a stats request in time is left out of /metrics and /status. */
const STATS_TIMEOUT_MS = 1_000;
/** Certificates that expire sooner than this are warned about at start and on reload. */
const EXPIRY_WARNING_MS = 14 * 86_400_000;
/** A worker that has not applied a config this long after it was sent fails the reload (which is rolled back). */
const APPLY_TIMEOUT_MS = 30_000;
/**
 * Load reports arriving within this window are summed and fanned out once: with N workers each reporting at
 * most every 100 ms, the primary sends at most N messages per window instead of N per report.
 */
const LOAD_FLUSH_MS = 25;

/** How long a start or reload waits for the first lookups of DNS names: an SRV lookup, then its hosts'. */
function discoveryWaitMs(config: Config): number {
  return 2 * config.resolver.timeout + 1_000;
}

type SlotState = 'starting' | 'ready' | 'restarting' | 'stopping' | 'exited';

/** What a worker said about an apply; `gone`: it exited first (its replacement gets the current config). */
type ApplyResult = { ok: true; ports: number[] } | { ok: false; gone: boolean; error: string; errors: ConfigError[] };

/** An apply sent to a worker and not answered yet. */
interface PendingApply {
  readonly seq: number;
  readonly generation: number;
  /** Listener keys the worker has open once it applied. */
  readonly keys: ReadonlySet<string>;
  finish(result: ApplyResult): void;
}

/** One listener of the running (or the next) config, as the primary holds it. */
interface ListenerState {
  readonly key: string;
  /** shared-handle: the primary's bound socket; null with reuse-port (each worker binds its own). */
  readonly handle: SharedHandle | null;
  readonly address: string;
  /** reuse-port with port 0: resolved by the first worker that binds it. */
  port: number;
  readonly tls: boolean;
}

/** A config the workers are (to be) on. */
interface Served {
  readonly generation: number;
  readonly config: Config;
  readonly text: string;
  readonly listeners: readonly ListenerState[];
}

/** One worker position (id 1..N); its process changes on every restart. */
interface Slot {
  readonly id: number;
  child: ChildProcess | null;
  state: SlotState;
  booted: boolean;
  startedAt: number;
  restarts: number;
  backoffMs: number;
  restartTimer: NodeJS.Timeout | null;
  /** Settled when this process accepts on every listener, or exits first. */
  ready: Deferred | null;
  /** Why its first apply failed (a port it could not bind...): the reason a start fails, said in one line. */
  bootError: string | null;
  pendingStats: Map<number, (stats: WorkerStats | null) => void>;
  lastStats: WorkerStats | null;
  /** This process's last load report (its own open requests + tunnels per target); null before the first. */
  load: Map<string, number[]> | null;
  /** The config generation `load` counts positions of. */
  loadGeneration: number;
  /** The other workers' load as last sent to this process, serialized with its generation; '' = none. */
  remoteSent: string;
  /** The config generation this process serves (0 before its first apply). */
  generation: number;
  /** Listener keys this process has sockets for. */
  listenerKeys: ReadonlySet<string>;
  applying: PendingApply | null;
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
  return { promise, resolve, reject };
}

class Primary {
  /** The config every worker serves (or gets when it starts); replaced as a whole by a reload. */
  #served: Served;
  readonly #configFile: string;
  readonly #control: ControlPaths;
  readonly #startSidecars: (() => Promise<{ close(): Promise<void> }>) | undefined;
  readonly #handoverFrom: number | undefined;
  #log: Logger;
  /** Built-in reusePort (Node >= 22.12), the addon's SO_REUSEPORT socket, else a handle shared by the primary. */
  readonly #strategy: ListenStrategy = chooseListenStrategy();
  readonly #startedAt = Date.now();
  readonly #ticketKeys = randomBytes(48).toString('base64');
  /** Sticky cookie key for upstreams without `balance.secret`: one per instance, kept across reloads. */
  readonly #stickySecret = randomBytes(32).toString('base64');
  #slots: Slot[] = [];
  #applySeq = 0;
  #admin: AdminServer | null = null;
  #sidecars: { close(): Promise<void> } | null = null;
  /** Active health checkers, one per upstream that configures them. */
  #health = new Map<string, HealthChecker>();
  /** Open tunnels per hash key across workers, and the pins they cause (upstream/sticky.ts). */
  readonly #sticky = new StickyAggregate();
  #loadedAt = Date.now();
  #reloading = false;
  /** A reload was asked for while one ran (or before the start finished): it runs next. */
  #reloadPending = false;
  #reloadAttempts = 0;
  #reloadsOk = 0;
  #reloadsFailed = 0;
  #lastReload: ReloadOutcome | null = null;
  /** Drained targets, as "upstream\ntarget"; the primary is the source of truth, so a restarted worker gets them. */
  readonly #drained = new Set<string>();
  /** DNS discovery of `resolve: true` and `srv` targets (null until prepared; it may follow no name). */
  #discovery: Discovery | null = null;
  /** The discovery plan of the reload running, until it is committed or abandoned. */
  #plan: DiscoveryPlan | null = null;
  /** While a reload applies: upstreams whose discovered set changed, sent once it is over; else null. */
  #heldDiscovery: Set<string> | null = null;
  /** Certificates, sockets, admin and sidecars exist (or failed): shutdown may finish only after this. */
  #prepared = false;
  #started = false;
  #stopping = false;
  #forced = false;
  #failedWorkers = 0;
  #forceTimer: NodeJS.Timeout | null = null;
  #statsSeq = 0;
  #restartsTotal = 0;
  /** Counters of workers that exited, as last collected, so totals do not fall back when a worker restarts. */
  #retired: MetricsSnapshot = emptySnapshot();
  /** Same for the upstreams' queue and retry counters. */
  readonly #retiredLimits = new Map<string, UpstreamLimitTotals>();
  #loadFlush: NodeJS.Timeout | null = null;
  #stopped = deferred();

  constructor(opts: PrimaryOptions) {
    this.#configFile = path.resolve(opts.configFile);
    this.#control = controlPaths(this.#configFile);
    this.#served = { generation: 1, config: opts.config, text: opts.configText, listeners: [] };
    this.#startSidecars = opts.sidecars;
    this.#handoverFrom = opts.handoverFrom;
    this.#log = createLogger(opts.config.log.level, { role: 'primary' });
  }

  get #config(): Config {
    return this.#served.config;
  }

  /** Resolves after a complete shutdown. */
  get stopped(): Promise<void> {
    return this.#stopped.promise;
  }

  /** Why the stop was not clean, or undefined when every worker drained and exited 0 in time. */
  get failure(): string | undefined {
    if (this.#forced) return 'workers were killed: they outlived the shutdown grace, or a second signal came';
    if (this.#failedWorkers > 0) return `${this.#failedWorkers} worker(s) did not exit cleanly while draining`;
    return undefined;
  }

  async start(): Promise<void> {
    // Before anything is bound: a second instance on one config file would take the pid file from the first.
    const running = otherRunning(this.#control);
    if (running !== undefined && running !== this.#handoverFrom) {
      throw new Error(`another Portico (pid ${running}) is running ${this.#configFile} (pid file ${this.#control.pid}): stop it first, or use \`portico reload\``);
    }
    process.on('SIGTERM', this.#onSignal);
    process.on('SIGINT', this.#onSignal);
    process.on('SIGHUP', this.#onReloadSignal);
    try {
      try {
        await this.#prepare();
      } finally {
        this.#prepared = true;
      }
      if (!this.#stopping) await this.#startWorkers();
    } catch (err) {
      this.#log.fatal({ err }, 'start failed');
      if (this.#stopping) this.#checkAllExited();
      else this.#shutdown('start failed');
      await this.#stopped.promise;
      throw err;
    }
    // A signal that came while preparing found nothing to stop yet.
    this.#checkAllExited();
    if (this.#stopping) return;
    this.#started = true;
    // `portico reload` finds this process through the pid file (written before the line below, so whoever read
    // that line finds the file); without it, SIGHUP still works. One that started meanwhile on the same file (a
    // race past the check at the top) keeps its pid file.
    const other = otherRunning(this.#control);
    if (other !== undefined && other !== this.#handoverFrom) this.#log.warn({ otherPid: other, pidFile: this.#control.pid }, 'another Portico took the pid file of this config file meanwhile: it is left as it is (`portico reload` reaches that one)');
    else await writePidFile(this.#control, process.pid).catch((err: unknown) => this.#log.warn({ err, pidFile: this.#control.pid }, 'cannot write the pid file: `portico reload` will not find this process (SIGHUP still reloads)'));
    // a stop that came while writing may have looked for the file before it existed
    if (this.#stopping) return void removeControlFiles(this.#control, process.pid).catch(() => {});
    // Tools and tests read the bound ports (port 0 in config) from this line.
    this.#announce().info(
      {
        listeners: this.#listenerReport(),
        admin: this.#admin === null ? null : { address: this.#admin.address, port: this.#admin.port },
        workers: this.#slots.map((s) => ({ id: s.id, pid: s.child?.pid ?? null })),
        strategy: this.#strategy,
        pidFile: this.#control.pid,
      },
      'listening',
    );
    if (this.#reloadPending) {
      this.#reloadPending = false;
      void this.#reload();
    }
  }

  /** Lines tools rely on (listening, reloads) are written even when log.level is above info. */
  #announce(): Logger {
    return this.#log.isLevelEnabled('info') || this.#config.log.level === 'silent' ? this.#log : this.#log.child({}, { level: 'info' });
  }

  #listenerReport(): Array<{ address: string; port: number; tls: boolean; backlog: number }> {
    const configured = this.#served.config.listeners;
    return this.#served.listeners.map((l, i) => ({ address: l.address, port: l.port, tls: l.tls, backlog: configured[i]?.backlog ?? defaultBacklog() }));
  }

  /** Everything that must exist before a worker starts: certificates, sidecars, sockets, admin. */
  async #prepare(): Promise<void> {
    const config = this.#config;
    const native = nativeStatus();
    // said once, here: without the addon tunnels use the JS relay and (Node < 22.12) workers share one socket
    if (!native.native) this.#log.warn({ reason: native.reason }, 'native addon not in use: JS relay only');
    // Workers inherit the raised limit (fork keeps rlimits); said once, here.
    const fds = raiseFdLimit();
    if (fds.notRaised !== undefined) this.#log.warn({ fdLimit: fds.soft, hard: fds.hard, reason: fds.notRaised }, `file descriptors: soft limit ${fds.soft}, could not raise it to the hard limit ${fds.hard}`);
    else this.#log.info({ fdLimit: fds.soft, hard: fds.hard, before: fds.before }, `file descriptors: limit ${fds.soft} per process${fds.before !== fds.soft ? ` (soft limit raised from ${fds.before})` : ''}`);
    for (const cert of await ensureSelfSignedCertificates(config)) this.#log.info({ cert }, 'generated a self-signed certificate');
    // Workers load the same files: fail here, once, with the file name, rather than in a restart loop.
    this.#checkCertificates(config);
    if (this.#startSidecars !== undefined) {
      this.#sidecars = await this.#startSidecars();
    }
    const { states } = await this.#prepareListeners(config, []);
    this.#served = { ...this.#served, listeners: states };
    if (config.admin !== undefined) {
      this.#admin = await startAdminServer(config.admin.address.host, config.admin.address.port, this.#adminSource(), this.#log, { token: config.admin.token, hosts: config.admin.hosts });
    }
    if (this.#stopping) return; // a signal came while preparing
    await this.#startDiscovery();
    if (this.#stopping) return;
    const sets = this.#liveSets();
    this.#health = this.#healthCheckers(config, sets, new Map());
    for (const checker of this.#health.values()) checker.start();
    this.#sticky.setHomes(hashHomes(config.upstreams, sets));
  }

  #adminSource() {
    return { metrics: () => this.#metricsText(), status: () => this.#status(), drain: (u: string, t: string, d: boolean) => this.#drain(u, t, d) };
  }

  /**
   * Throws (one line: the port and who holds it) when another process listens where `host:port` would bind:
   * SO_REUSEPORT would otherwise let this instance share the port with it and take part of its traffic.
   */
  #refuseTakenPort(host: string, port: number): void {
    const own = new Set<number>([process.pid, ...this.#slots.flatMap((s) => (s.child?.pid === undefined ? [] : [s.child.pid]))]);
    const handover = this.#handoverFrom;
    const mine = (pid: number) => own.has(pid) || (handover !== undefined && (pid === handover || parentOf(pid) === handover));
    const conflict = findListenConflict(host, port, mine);
    if (conflict !== undefined) throw new Error(describeConflict(host, port, conflict));
  }

  /** Throws (with the file name) when a certificate of `config` cannot be used; warns about expiring ones. */
  #checkCertificates(config: Config): void {
    for (const listener of config.listeners) {
      if (listener.tls === undefined) continue;
      for (const cert of loadCertificates(listener.tls)) {
        const left = cert.notAfter.getTime() - Date.now();
        if (left < EXPIRY_WARNING_MS) this.#log.warn({ cert: cert.certFile, notAfter: cert.notAfter.toISOString() }, left < 0 ? 'certificate has expired' : 'certificate expires soon');
      }
    }
  }

  /**
   * The listeners of `config`: those whose key (address) is in `running` keep their state (the primary's bound
   * socket, the resolved port); new ones are bound now (shared-handle) or left to the workers (reuse-port).
   * On failure, what was bound here is closed again.
   */
  async #prepareListeners(config: Config, running: readonly ListenerState[]): Promise<{ states: ListenerState[]; fresh: ListenerState[] }> {
    const byKey = new Map(running.map((l) => [l.key, l]));
    const keys = listenerKeys(config.listeners);
    const states: ListenerState[] = [];
    const fresh: ListenerState[] = [];
    try {
      for (const [i, listener] of config.listeners.entries()) {
        const tls = listener.tls !== undefined;
        const kept = byKey.get(keys[i]);
        if (kept !== undefined) {
          states.push({ key: kept.key, handle: kept.handle, address: kept.address, port: kept.port, tls });
          continue;
        }
        this.#refuseTakenPort(listener.address.host, listener.address.port);
        let state: ListenerState;
        if (this.#strategy === 'shared-handle') {
          const handle = await bindShared(listener.address.host, listener.address.port);
          state = { key: keys[i], handle, address: handle.bound.address, port: handle.bound.port, tls };
        } else {
          state = { key: keys[i], handle: null, address: listener.address.host, port: listener.address.port, tls };
        }
        fresh.push(state);
        states.push(state);
      }
    } catch (err) {
      await Promise.all(fresh.map((l) => l.handle?.close()));
      throw err;
    }
    return { states, fresh };
  }

  // ---- discovery: the primary resolves, every worker gets the same set ----

  /**
   * Looks every discovered name up before the workers start (bounded: an SRV lookup and its hosts' lookups,
   * each within resolver.timeout), so they start with targets; a name that fails then is retried with backoff
   * while Portico serves (its upstream answers 503 until it resolves). It exists even with no name to follow:
   * a reload may add some.
   */
  async #startDiscovery(): Promise<void> {
    const discovery = new Discovery(this.#config, (upstream) => this.#onDiscovered(upstream), this.#log);
    this.#discovery = discovery;
    discovery.start();
    await discovery.ready(discoveryWaitMs(this.#config));
  }

  /**
   * A changed set (or one held while a reload ran): drains of targets that left are forgotten, health checks
   * follow, every worker gets it, and a hash upstream's pins are worked out on its new targets.
   */
  #onDiscovered(upstream: string): void {
    if (this.#heldDiscovery !== null) {
      // mid-reload, workers are on two configs: the set goes out once the reload is over (see #tryReload)
      this.#heldDiscovery.add(upstream);
      return;
    }
    this.#forgetDrains();
    if (!Object.hasOwn(this.#config.upstreams, upstream)) return; // a reload removed it meanwhile
    const targets = this.#discovery?.targets(upstream) ?? [];
    this.#health.get(upstream)?.setTargets(this.#probeTargets(upstream, this.#config, this.#liveSets()));
    this.#broadcast({ type: 'discovered-targets', upstream, targets });
    const balance = this.#config.upstreams[upstream]?.balance;
    if (balance !== undefined && typeof balance !== 'string' && balance.policy === 'hash') {
      this.#broadcastPins(this.#sticky.setHomes(hashHomes(this.#config.upstreams, this.#liveSets())));
    }
  }

  /** What discovery follows now, per upstream (empty before it started). */
  #liveSets(): DiscoveredSets {
    return this.#discovery?.sets() ?? {};
  }

  /** Addresses of an upstream's targets: from config, then discovered (one entry per address). */
  #targetIds(upstream: string, config: Config = this.#config, sets: DiscoveredSets = this.#liveSets()): string[] {
    return [...new Set(this.#probeTargets(upstream, config, sets).map((t) => t.id))];
  }

  #probeTargets(upstream: string, config: Config, sets: DiscoveredSets): ProbeTarget[] {
    const u = Object.hasOwn(config.upstreams, upstream) ? config.upstreams[upstream] : undefined;
    // an upstream that wants a PROXY header gets one on probes too (UNKNOWN / LOCAL: see probeProxyHeader)
    const proxyHeader = probeProxyHeader(u?.send_proxy_protocol ?? 'off');
    const fixed = (u?.targets ?? []).map((t) => ({ id: t.address, host: t.host, port: t.port, proxyHeader }));
    const found = (Object.hasOwn(sets, upstream) ? sets[upstream] : []).map((t) => ({ id: t.id, host: t.host, port: t.port, proxyHeader }));
    return [...fixed, ...found];
  }

  /** Drains of targets the served config and discovery no longer have are forgotten (one coming back is not drained). */
  #forgetDrains(): void {
    for (const key of this.#drained) {
      const [upstream, address] = key.split('\n');
      if (!this.#targetIds(upstream).includes(address)) this.#drained.delete(key);
    }
  }

  /**
   * Active checkers for `config` (discovered targets from `sets`): an upstream whose check is unchanged keeps its
   * checker (`running`), its targets set at commit (see setTargets: those that stay keep their state); a new or
   * changed one starts from the old checker's verdicts, so a target known down does not look healthy for a
   * while. Not started here. Each reports only flips, sent to every worker at once.
   */
  #healthCheckers(config: Config, sets: DiscoveredSets, running: ReadonlyMap<string, HealthChecker>): Map<string, HealthChecker> {
    const checkers = new Map<string, HealthChecker>();
    for (const [name, upstream] of Object.entries(config.upstreams)) {
      const active = upstream.health.active;
      if (active === undefined) continue;
      const old = running.get(name);
      // `running` probes the served config's upstreams: a changed send_proxy_protocol changes every probe's first bytes
      const served = Object.hasOwn(this.#config.upstreams, name) ? this.#config.upstreams[name] : undefined;
      if (old !== undefined && equalValues(old.config, active) && served?.send_proxy_protocol === upstream.send_proxy_protocol) {
        checkers.set(name, old);
        continue;
      }
      const onFlip = (target: string): void => this.#broadcast({ type: 'target-state', ...this.#targetControl(name, target) });
      checkers.set(name, new HealthChecker(name, this.#probeTargets(name, config, sets), active, onFlip, this.#log, old === undefined ? undefined : (id) => old.isHealthy(id)));
    }
    return checkers;
  }

  #targetControl(upstream: string, target: string, health: ReadonlyMap<string, HealthChecker> = this.#health): TargetControl {
    return { upstream, target, healthy: health.get(upstream)?.isHealthy(target) ?? true, draining: this.#drained.has(`${upstream}\n${target}`) };
  }

  /** Everything that differs from the defaults (healthy, not draining), sent before every apply. */
  #fullState(config: Config = this.#config, health: ReadonlyMap<string, HealthChecker> = this.#health, sets: DiscoveredSets = this.#liveSets()): ToWorker {
    const targets: TargetControl[] = [];
    for (const name of Object.keys(config.upstreams)) {
      for (const address of this.#targetIds(name, config, sets)) {
        const c = this.#targetControl(name, address, health);
        if (!c.healthy || c.draining) targets.push(c);
      }
    }
    return { type: 'upstream-state', targets };
  }

  /** To every booted worker; one that is gone is handled by its 'exit' (and gets the full state when it is back). */
  #broadcast(msg: ToWorker): void {
    for (const slot of this.#slots) {
      const child = slot.child;
      if (child === null || !slot.booted) continue;
      this.#send(child, msg).catch((err: unknown) => this.#log.debug({ err, worker: slot.id }, 'could not send a target state to a worker'));
    }
  }

  async #drain(upstream: string, target: string, draining: boolean): Promise<DrainResult> {
    const config = this.#config.upstreams[upstream];
    if (config === undefined || !Object.hasOwn(this.#config.upstreams, upstream)) return { ok: false, status: 404, error: `unknown upstream "${upstream}"` };
    const ids = this.#targetIds(upstream);
    if (!ids.includes(target)) return { ok: false, status: 404, error: `upstream "${upstream}" has no target "${target}" (targets: ${ids.join(', ')})` };
    const key = `${upstream}\n${target}`;
    if (draining) this.#drained.add(key);
    else this.#drained.delete(key);
    this.#broadcast({ type: 'target-state', ...this.#targetControl(upstream, target) });
    // IPC keeps order per worker: a stats answer proves the worker handled the state change sent before it.
    const { answers, unanswered } = await this.#collect();
    const appliedBy = answers.filter((a) => a.stats.upstreamTargets.some((t) => t.upstream === upstream && t.target === target && t.draining === draining)).map((a) => a.slot.id);
    return { ok: true, upstream, target, draining, appliedBy, unanswered };
  }

  async #startWorkers(): Promise<void> {
    const count = resolveWorkers(this.#config);
    for (let id = 1; id <= count; id++) {
      this.#slots.push({
        id, child: null, state: 'starting', booted: false, startedAt: 0, restarts: 0, backoffMs: BACKOFF_MIN_MS, restartTimer: null, ready: null, bootError: null,
        pendingStats: new Map(), lastStats: null, load: null, loadGeneration: 0, remoteSent: '', generation: 0, listenerKeys: new Set(), applying: null,
      });
    }
    const startup = setTimeout(() => {
      for (const slot of this.#slots) slot.ready?.reject(new Error(`worker ${slot.id} was not accepting ${STARTUP_TIMEOUT_MS / 1000}s after it started`));
    }, STARTUP_TIMEOUT_MS);
    try {
      // reuse-port with a port-0 listener: the first worker picks the port, the others join it.
      const first = this.#strategy === 'reuse-port' && this.#served.listeners.some((l) => l.port === 0) ? 1 : 0;
      for (const slot of this.#slots.slice(0, first)) await this.#spawn(slot).promise;
      if (!this.#stopping) await Promise.all(this.#slots.slice(first).map((slot) => this.#spawn(slot).promise));
    } finally {
      clearTimeout(startup);
    }
  }

  #spawn(slot: Slot): Deferred {
    const child = fork(WORKER_PATH, [], {
      env: { ...process.env, [WORKER_ENV.id]: String(slot.id), [WORKER_ENV.config]: this.#configFile },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const ready = deferred();
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
      this.#log.error({ err, worker: slot.id }, 'worker process error');
      // A fork that failed never emits 'exit'.
      if (child.pid === undefined) this.#onExit(slot, child, null, null);
    });
    this.#log.info({ worker: slot.id, workerPid: child.pid }, 'worker started');
    return ready;
  }

  #onMessage(slot: Slot, child: ChildProcess, msg: unknown): void {
    if (slot.child !== child) return;
    if (!isToPrimary(msg)) {
      this.#log.warn({ worker: slot.id, msg }, 'ignoring an unknown message from a worker');
      return;
    }
    this.#dispatch(slot, child, msg);
  }

  #dispatch(slot: Slot, child: ChildProcess, msg: ToPrimary): void {
    switch (msg.type) {
      case 'booted':
        slot.booted = true;
        if (this.#stopping) this.#send(child, { type: 'shutdown' }).catch(() => child.kill('SIGTERM'));
        else {
          // Before its first apply (which brings the discovered targets): a worker never serves a request with a
          // target the instance has taken out.
          this.#send(child, this.#fullState()).catch((err: unknown) => this.#log.debug({ err, worker: slot.id }, 'could not send the target states to a worker'));
          this.#sendPins(child, this.#sticky.full());
          this.#applyServed(slot, child);
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
        this.#broadcastPins(this.#sticky.apply(slot.id, msg.changes));
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
        this.#scheduleLoadFlush();
        return;
    }
  }

  /**
   * Sends `slot` the config the instance serves and, when it is applied, brings the slot up (first apply) or
   * to the config a reload committed meanwhile.
   */
  #applyServed(slot: Slot, child: ChildProcess): void {
    const served = this.#served;
    void this.#apply(slot, child, served, this.#liveSets()).then((result) => {
      if (slot.child !== child) return;
      if (!result.ok) {
        // at boot the worker exits by itself and is restarted; on a later apply it keeps its config
        if (!result.gone && slot.state === 'starting') slot.bootError = result.error;
        if (!result.gone) this.#log.error({ worker: slot.id, generation: served.generation, error: result.error }, 'worker did not apply the config');
        return;
      }
      this.#learnPorts(served, result.ports);
      this.#sendRemoteLoad(slot, child);
      if (slot.state === 'starting') {
        slot.state = 'ready';
        slot.ready?.resolve();
        this.#log.info({ worker: slot.id, workerPid: child.pid }, 'worker ready');
      }
      this.#catchUp(slot);
    });
  }

  /** A worker that is not on the served config (it started during a reload) gets it, unless a reload runs. */
  #catchUp(slot: Slot): void {
    const child = slot.child;
    if (child === null || !slot.booted || slot.applying !== null || this.#reloading || this.#stopping || slot.generation === this.#served.generation) return;
    this.#applyServed(slot, child);
  }

  /** reuse-port: ports the first worker bound for port-0 listeners; the next workers join them. */
  #learnPorts(served: Served, ports: readonly number[]): void {
    served.listeners.forEach((l, i) => {
      if (l.port === 0 && ports[i] !== undefined) l.port = ports[i];
    });
  }

  /**
   * Asks a worker to serve `target` with the discovered targets `discovered`, and with the sockets it needs: it
   * keeps those whose key it has, binds or receives the others, and closes the rest. Settles when it answered,
   * exited, or after APPLY_TIMEOUT_MS.
   */
  #apply(slot: Slot, child: ChildProcess, target: Served, discovered: DiscoveredSets): Promise<ApplyResult> {
    slot.applying?.finish({ ok: false, gone: false, error: 'superseded by a newer apply', errors: [] });
    const seq = ++this.#applySeq;
    const plan = planListeners(slot.listenerKeys, target.config.listeners);
    const listeners = plan.entries.map((e): ListenerAssignment => {
      if (e.keep) return { index: e.index, key: e.key, via: 'keep' };
      if (this.#strategy === 'shared-handle') return { index: e.index, key: e.key, via: 'handle' };
      return { index: e.index, key: e.key, via: 'reuse-port', host: target.config.listeners[e.index].address.host, port: target.listeners[e.index].port };
    });
    const msg: ApplyMessage = {
      type: 'apply', seq, generation: target.generation, file: this.#configFile, text: target.text, listeners, ticketKeys: this.#ticketKeys, stickySecret: this.#stickySecret,
      discovered: { ...discovered },
    };
    return new Promise<ApplyResult>((resolve) => {
      const timer = setTimeout(() => pending.finish({ ok: false, gone: false, error: `worker ${slot.id} did not apply the config within ${APPLY_TIMEOUT_MS / 1000}s`, errors: [] }), APPLY_TIMEOUT_MS);
      const pending: PendingApply = {
        seq,
        generation: target.generation,
        keys: new Set(plan.entries.map((e) => e.key)),
        finish(result) {
          clearTimeout(timer);
          if (slot.applying === pending) slot.applying = null;
          resolve(result);
        },
      };
      slot.applying = pending;
      const failed = (err: unknown): void => pending.finish({ ok: false, gone: false, error: `could not send the config to worker ${slot.id}: ${(err as Error).message}`, errors: [] });
      this.#send(child, msg).catch(failed);
      for (const a of listeners) {
        if (a.via !== 'handle') continue;
        const handle = target.listeners[a.index].handle;
        if (handle === null) failed(new Error(`listener ${a.key} has no bound socket`));
        else handle.sendTo(child, { type: 'listen-handle', seq, index: a.index }).catch(failed);
      }
    });
  }

  #sendPins(child: ChildProcess, updates: PinUpdate[]): void {
    if (updates.length === 0) return;
    this.#send(child, { type: 'pins', updates }).catch((err: unknown) => this.#log.debug({ err }, 'could not send sticky pins to a worker'));
  }

  #broadcastPins(updates: PinUpdate[]): void {
    if (updates.length > 0) this.#broadcast({ type: 'pins', updates });
  }

  #scheduleLoadFlush(): void {
    if (this.#loadFlush !== null || this.#stopping) return;
    this.#loadFlush = setTimeout(() => {
      this.#loadFlush = null;
      for (const slot of this.#slots) if (slot.child !== null && slot.booted) this.#sendRemoteLoad(slot, slot.child);
    }, LOAD_FLUSH_MS);
    this.#loadFlush.unref();
  }

  /**
   * Sends `slot` the sum of every other live worker's load, per upstream and target, when it changed. Counts
   * are positions in target lists: only workers on the same config generation are added up.
   */
  #sendRemoteLoad(slot: Slot, child: ChildProcess): void {
    const generation = slot.generation;
    if (generation === 0) return;
    const remote = new Map<string, number[]>();
    for (const other of this.#slots) {
      if (other === slot || other.child === null || other.load === null || other.loadGeneration !== generation) continue;
      for (const [upstream, counts] of other.load) {
        let sum = remote.get(upstream);
        if (sum === undefined) remote.set(upstream, (sum = []));
        for (let i = 0; i < counts.length; i++) sum[i] = (sum[i] ?? 0) + counts[i];
      }
    }
    // fromEntries defines own properties: an upstream named "__proto__" stays data.
    const load: TargetLoad = Object.fromEntries(remote);
    const text = `${generation}:${JSON.stringify(load)}`;
    if (text === slot.remoteSent) return;
    slot.remoteSent = text;
    this.#send(child, { type: 'remote-load', generation, load }).catch((err: unknown) => this.#log.debug({ err, worker: slot.id }, 'could not send the remote load to a worker'));
  }

  #send(child: ChildProcess, msg: ToWorker): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!child.connected) return reject(new Error('worker IPC channel closed'));
      child.send(msg, (err) => (err ? reject(err) : resolve()));
    });
  }

  #onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child !== child) return;
    slot.child = null;
    slot.booted = false;
    slot.applying?.finish({ ok: false, gone: true, error: `worker ${slot.id} exited`, errors: [] });
    // its tunnels are gone with it: their keys no longer hold pins
    this.#broadcastPins(this.#sticky.dropWorker(slot.id));
    for (const resolve of slot.pendingStats.values()) resolve(null);
    slot.pendingStats.clear();
    if (slot.lastStats !== null) {
      // Its last counters stay in the totals; what it counted since the last scrape is lost.
      this.#retired = sumSnapshots(this.#retired, { ...slot.lastStats.metrics, tunnelsOpen: 0 });
      for (const l of slot.lastStats.upstreamLimits) addLimits(this.#retiredLimits, l, false);
      slot.lastStats = null;
    }
    // Its requests and tunnels are gone with it: the other workers stop counting them.
    if (slot.load !== null) {
      slot.load = null;
      this.#scheduleLoadFlush();
    }
    if (this.#stopping) {
      slot.state = 'exited';
      if (code !== 0) this.#failedWorkers++;
      this.#log.info({ worker: slot.id, workerPid: child.pid, code, signal }, 'worker exited');
      slot.ready?.resolve();
      this.#checkAllExited();
      return;
    }
    if (!this.#started) {
      slot.state = 'exited';
      const why = slot.bootError ?? `it exited (${signal ?? `code ${code}`}); see its error above`;
      slot.ready?.reject(new Error(`worker ${slot.id} could not start: ${why}`));
      return;
    }
    if (Date.now() - slot.startedAt >= HEALTHY_AFTER_MS) slot.backoffMs = BACKOFF_MIN_MS;
    const delay = slot.backoffMs;
    slot.backoffMs = Math.min(delay * 2, BACKOFF_MAX_MS);
    slot.state = 'restarting';
    this.#log.warn({ worker: slot.id, workerPid: child.pid, code, signal, restartInMs: delay }, 'worker exited unexpectedly: restarting it');
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      slot.restarts++;
      this.#restartsTotal++;
      this.#spawn(slot);
    }, delay);
  }

  #onSignal = (signal: NodeJS.Signals): void => {
    this.#shutdown(signal);
  };

  #onReloadSignal = (): void => {
    if (this.#stopping) {
      this.#log.warn('SIGHUP while stopping: no reload');
      return;
    }
    // One at a time; a signal during a reload (or the start) runs one more afterwards, which reads the file anew.
    if (this.#reloading || !this.#started) {
      this.#reloadPending = true;
      return;
    }
    void this.#reload();
  };

  /** One reload attempt, its outcome recorded (status, outcome file, log line), then a queued one if any. */
  async #reload(): Promise<void> {
    this.#reloading = true;
    const attempt = ++this.#reloadAttempts;
    const startedAt = Date.now();
    let outcome: ReloadOutcome;
    try {
      outcome = await this.#tryReload(attempt, startedAt);
    } catch (err) {
      // a bug must not leave the instance half reloaded without a word: refused, said loudly
      this.#log.error({ err }, 'reload failed unexpectedly');
      outcome = this.#refused(attempt, startedAt, `internal error: ${(err as Error).message}`, []);
    }
    // A plan not committed stops looking names up; sets that changed meanwhile go out now, to one config.
    if (this.#plan !== null) this.#discovery?.abandon(this.#plan);
    this.#plan = null;
    const held = this.#heldDiscovery ?? [];
    this.#heldDiscovery = null;
    for (const upstream of held) this.#onDiscovered(upstream);
    this.#lastReload = outcome;
    if (outcome.ok) {
      this.#reloadsOk++;
      this.#announce().info(
        { generation: outcome.generation, changes: outcome.changes, listeners: this.#listenerReport(), durationMs: outcome.finishedAt - outcome.startedAt, warnings: outcome.warnings },
        `config reloaded: ${outcome.summary}`,
      );
      for (const warning of outcome.warnings) this.#log.warn({ generation: outcome.generation }, warning);
    } else {
      this.#reloadsFailed++;
      const errors = outcome.errors.length === 0 ? undefined : formatErrors(this.#configFile, outcome.errors).split('\n');
      this.#log.error({ generation: outcome.generation, errors, durationMs: outcome.finishedAt - outcome.startedAt }, `config reload refused: ${outcome.error}; generation ${outcome.generation} keeps serving`);
    }
    // after a stop began the pid file goes away: no outcome file is left behind it
    if (!this.#stopping) await writeOutcome(this.#control, { ...outcome, pid: process.pid }).catch((err: unknown) => this.#log.warn({ err, file: this.#control.outcome }, 'cannot write the reload outcome for `portico reload`'));
    this.#reloading = false;
    for (const slot of this.#slots) this.#catchUp(slot);
    this.#scheduleLoadFlush();
    if (this.#reloadPending && !this.#stopping) {
      this.#reloadPending = false;
      void this.#reload();
    }
  }

  #refused(attempt: number, startedAt: number, error: string, errors: readonly ConfigError[]): ReloadOutcome {
    return { ok: false, attempt, startedAt, finishedAt: Date.now(), generation: this.#served.generation, error, errors };
  }

  /**
   * Reads and validates the file, prepares what can fail in the primary (certificates, new sockets, admin),
   * then has every worker apply it. All workers took it: commit. Any refused: the ones that took it go back to
   * the running config, and the reload is refused. The running config serves throughout.
   */
  async #tryReload(attempt: number, startedAt: number): Promise<ReloadOutcome> {
    const loaded = loadConfig(this.#configFile);
    if (!loaded.ok) return this.#refused(attempt, startedAt, `${loaded.errors.length} error${loaded.errors.length === 1 ? '' : 's'} in ${this.#configFile}`, loaded.errors);
    const next = loaded.config;
    const running = this.#served;
    const changes = diffConfigs(running.config, next);
    try {
      for (const cert of await ensureSelfSignedCertificates(next)) this.#log.info({ cert }, 'generated a self-signed certificate');
      this.#checkCertificates(next);
    } catch (err) {
      return this.#refused(attempt, startedAt, (err as Error).message, []);
    }
    let prepared: { states: ListenerState[]; fresh: ListenerState[] };
    try {
      prepared = await this.#prepareListeners(next, running.listeners);
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
    const plan = this.#discovery?.plan(next) ?? null;
    this.#plan = plan;
    await plan?.ready(discoveryWaitMs(next));
    if (this.#stopping) {
      await closeFresh();
      if (admin.replaces) await admin.server?.close();
      return this.#refused(attempt, startedAt, 'Portico is stopping', []);
    }

    // From here workers may be on two configs: discovery changes wait for the outcome (see #reload).
    this.#heldDiscovery = new Set();
    // Workers flush their sticky tunnel changes before answering: the pins below see every open key.
    await this.#collect();
    // One snapshot of the new config's discovered sets for every worker; commit() reports what changed since.
    const sets = plan?.sets() ?? {};
    const target: Served = { generation: running.generation + 1, config: next, text: loaded.text, listeners: prepared.states };
    const health = this.#healthCheckers(next, sets, this.#health);
    this.#broadcast(this.#fullState(next, health, sets));
    this.#broadcastPins(this.#sticky.setHomes(hashHomes(next.upstreams, sets)));
    const stopping = { error: 'Portico is stopping', errors: [] };
    let failure = this.#stopping ? stopping : await this.#applyEverywhere(target, sets, running);
    // a stop that began while the workers applied wins: nothing is committed (new checkers would outlive it)
    if (failure === null && this.#stopping) failure = stopping;
    if (failure !== null) {
      for (const checker of health.values()) if (![...this.#health.values()].includes(checker)) checker.stop();
      this.#broadcast(this.#fullState());
      this.#broadcastPins(this.#sticky.setHomes(hashHomes(running.config.upstreams, this.#liveSets())));
      await closeFresh();
      if (admin.replaces) await admin.server?.close();
      return this.#refused(attempt, startedAt, failure.error, failure.errors);
    }

    // Commit: from here on nothing can refuse the reload.
    const wanted = new Set(target.listeners.map((l) => l.key));
    for (const l of running.listeners) if (!wanted.has(l.key)) void l.handle?.close();
    if (plan !== null) this.#discovery?.commit(plan, sets);
    this.#plan = null;
    this.#served = target;
    this.#loadedAt = Date.now();
    for (const [name, checker] of this.#health) if (health.get(name) !== checker) checker.stop();
    const live = this.#liveSets();
    for (const [name, checker] of health) {
      if (this.#health.get(name) !== checker) checker.start();
      else checker.setTargets(this.#probeTargets(name, next, live)); // kept: targets that stay keep their state
    }
    this.#health = health;
    this.#forgetDrains();
    this.#commitAdmin(next, admin);
    if (next.log.level !== running.config.log.level) this.#log = createLogger(next.log.level, { role: 'primary' });
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
    return [`workers: ${w.running} -> ${w.configured} is not applied by a reload: ${this.#slots.length} workers keep running until Portico is restarted`];
  }

  /**
   * Has every worker on `running` apply `target` (the first one alone first when it must pick a port for a new
   * port-0 listener). Returns the first refusal after rolling the others back, or null when all took it.
   * Workers that exit meanwhile do not count: their replacements get the served config when they start.
   */
  async #applyEverywhere(target: Served, sets: DiscoveredSets, running: Served): Promise<{ error: string; errors: readonly ConfigError[] } | null> {
    const slots = this.#slots.filter((s) => s.child !== null && s.booted && s.state === 'ready' && s.generation === running.generation);
    const applied: Slot[] = [];
    let failure: { error: string; errors: readonly ConfigError[] } | null = null;
    const applyTo = async (slot: Slot): Promise<void> => {
      const child = slot.child;
      if (child === null) return;
      const result = await this.#apply(slot, child, target, sets);
      if (result.ok) {
        applied.push(slot);
        this.#learnPorts(target, result.ports);
      } else if (!result.gone) {
        failure ??= { error: `worker ${slot.id}: ${result.error.split('\n')[0]}`, errors: result.errors };
      }
    };
    const firstAlone = this.#strategy === 'reuse-port' && target.listeners.some((l) => l.port === 0);
    const rest = firstAlone ? slots.slice(1) : slots;
    if (firstAlone && slots.length > 0) await applyTo(slots[0]);
    if (failure === null) await Promise.all(rest.map(applyTo));
    if (failure === null) return null;
    await Promise.all(
      applied.map(async (slot) => {
        const child = slot.child;
        if (child === null) return;
        // the sets discovery follows now (held back from broadcast while the reload ran)
        const back = await this.#apply(slot, child, running, this.#liveSets());
        if (!back.ok && !back.gone) this.#log.error({ worker: slot.id, error: back.error }, 'worker could not go back to the running config after a refused reload');
      }),
    );
    return failure;
  }

  /** A changed admin address is bound before the workers apply anything (a failure refuses the reload). */
  async #prepareAdmin(running: Config, next: Config): Promise<{ server: AdminServer | null; replaces: boolean }> {
    const a = running.admin;
    const b = next.admin;
    if (b === undefined || (a !== undefined && equalValues(a.address, b.address))) return { server: this.#admin, replaces: false };
    const server = await startAdminServer(b.address.host, b.address.port, this.#adminSource(), this.#log, { token: b.token, hosts: b.hosts });
    return { server, replaces: true };
  }

  #commitAdmin(next: Config, admin: { server: AdminServer | null; replaces: boolean }): void {
    const old = this.#admin;
    if (next.admin === undefined) {
      this.#admin = null;
      void old?.close();
      return;
    }
    if (admin.replaces) {
      this.#admin = admin.server;
      void old?.close();
      return;
    }
    this.#admin?.setOptions({ token: next.admin.token, hosts: next.admin.hosts });
  }

  /** First call: stop accepting and drain. Second call: stop now. */
  #shutdown(reason: string): void {
    if (this.#stopping) {
      this.#log.warn({ reason }, 'second stop request: killing workers now');
      this.#killAll();
      return;
    }
    this.#stopping = true;
    this.#reloadPending = false;
    for (const checker of this.#health.values()) checker.stop();
    this.#discovery?.stop();
    if (this.#loadFlush !== null) clearTimeout(this.#loadFlush);
    this.#loadFlush = null;
    const grace = this.#config.timeouts.shutdown_grace;
    this.#log.info({ reason, graceMs: grace }, 'shutting down: workers stop accepting and drain');
    // The primary's copies go first: once the workers close theirs, the port refuses new connections.
    for (const l of this.#served.listeners) void l.handle?.close();
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
      if (slot.booted) this.#send(child, { type: 'shutdown' }).catch(() => child.kill('SIGTERM'));
      else child.kill('SIGTERM');
    }
    this.#forceTimer = setTimeout(() => {
      this.#log.warn({ afterMs: grace + FORCE_KILL_AFTER_GRACE_MS }, 'workers still alive after the grace: killing them');
      this.#killAll();
    }, grace + FORCE_KILL_AFTER_GRACE_MS);
    this.#checkAllExited();
  }

  #killAll(): void {
    for (const slot of this.#slots) {
      if (slot.child === null) continue;
      this.#forced = true;
      slot.child.kill('SIGKILL');
    }
  }

  #checkAllExited(): void {
    if (!this.#stopping || !this.#prepared || this.#slots.some((s) => s.child !== null)) return;
    if (this.#forceTimer !== null) {
      clearTimeout(this.#forceTimer);
      this.#forceTimer = null;
    }
    void this.#finish();
  }

  #finishing = false;

  async #finish(): Promise<void> {
    if (this.#finishing) return;
    this.#finishing = true;
    try {
      await Promise.all([this.#admin?.close(), this.#sidecars?.close(), ...this.#served.listeners.map((l) => l.handle?.close())]);
      if (this.#started) await removeControlFiles(this.#control, process.pid);
    } catch (err) {
      this.#log.error({ err }, 'error while closing');
    }
    process.off('SIGTERM', this.#onSignal);
    process.off('SIGINT', this.#onSignal);
    process.off('SIGHUP', this.#onReloadSignal);
    this.#log.info({ forced: this.#forced, failedWorkers: this.#failedWorkers }, 'stopped');
    this.#stopped.resolve();
  }

  /** Asks every running worker for its numbers; the ones that do not answer in time are listed as such. */
  async #collect(): Promise<{ answers: Array<{ slot: Slot; stats: WorkerStats }>; unanswered: number[] }> {
    const id = ++this.#statsSeq;
    const asked: Array<{ slot: Slot; child: ChildProcess }> = [];
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
            const timer = setTimeout(() => done(null), STATS_TIMEOUT_MS);
            slot.pendingStats.set(id, done);
            this.#send(child, { type: 'stats-request', id }).catch(() => done(null));
          }),
      ),
    );
    const answers: Array<{ slot: Slot; stats: WorkerStats }> = [];
    const unanswered: number[] = [];
    replies.forEach((stats, i) => {
      if (stats === null) unanswered.push(asked[i].slot.id);
      else answers.push({ slot: asked[i].slot, stats });
    });
    return { answers, unanswered };
  }

  async #metricsText(): Promise<string> {
    const { answers } = await this.#collect();
    let total = this.#retired;
    let connectionsOpen = 0;
    for (const { stats } of answers) {
      total = sumSnapshots(total, stats.metrics);
      connectionsOpen += stats.connections;
    }
    const targets = mergeTargets(answers.map((a) => a.stats));
    const reloads = renderReloadMetrics({ generation: this.#served.generation, ok: this.#reloadsOk, failed: this.#reloadsFailed, loadedAt: this.#loadedAt, stickyKeys: this.#sticky.size, pins: this.#sticky.pinCount });
    const text = reloads + renderPrometheus(total, {
      workers: this.#slots.filter((s) => s.child !== null).length,
      workerRestarts: this.#restartsTotal,
      connectionsOpen,
      upstreamTargets: targets,
      upstreamLimits: [...this.#limits(answers).values()],
    });
    return (this.#health.size === 0 ? text : text + renderHealthMetrics(this.#health.values())) + (this.#discovery?.renderMetrics() ?? '');
  }

  /** Per target: drain, the primary's active checks, and passive state gathered from the answering workers. */
  #healthReport(answers: ReadonlyArray<{ slot: Slot; stats: WorkerStats }>): Record<string, TargetHealthReport[]> {
    const report: Record<string, TargetHealthReport[]> = {};
    for (const [name, upstream] of Object.entries(this.#config.upstreams)) {
      const checker = this.#health.get(name);
      const active = new Map((checker?.status() ?? []).map((s) => [s.target, s]));
      const passive = upstream.health.passive;
      report[name] = this.#targetIds(name).map((target): TargetHealthReport => {
        const a = active.get(target);
        const downInWorkers: number[] = [];
        let failures = 0;
        for (const { slot, stats } of answers) {
          const t = stats.upstreamTargets.find((x) => x.upstream === name && x.target === target);
          if (t === undefined) continue;
          if (t.passiveDown) downInWorkers.push(slot.id);
          failures += t.failures;
        }
        return {
          target,
          draining: this.#drained.has(`${name}\n${target}`),
          active:
            checker === undefined || a === undefined
              ? null
              : { type: checker.config.type, healthy: a.healthy, lastCheck: a.lastCheck === null ? null : new Date(a.lastCheck).toISOString(), lastResult: a.lastResult, lastReason: a.lastReason },
          passive: { enabled: passive.max_fails > 0 && passive.fail_timeout > 0, downInWorkers, failures },
        };
      });
    }
    return report;
  }

  /** Queue and retry counters per upstream: the answering workers' plus those of workers that exited. */
  #limits(answers: ReadonlyArray<{ stats: WorkerStats }>): Map<string, UpstreamLimitTotals> {
    const totals = new Map<string, UpstreamLimitTotals>();
    for (const name of Object.keys(this.#config.upstreams)) totals.set(name, { upstream: name, queued: 0, queueRejected: 0, queueTimeouts: 0, retriesTotal: 0, retriesDenied: 0 });
    for (const l of this.#retiredLimits.values()) addTotals(totals, l);
    for (const { stats } of answers) for (const l of stats.upstreamLimits) addLimits(totals, l, true);
    return totals;
  }

  async #status(): Promise<StatusReport> {
    const { answers, unanswered } = await this.#collect();
    const now = Date.now();
    const upstreams: StatusReport['upstreams'] = {};
    for (const t of mergeTargets(answers.map((a) => a.stats))) {
      const balancesOnLoad = readsLoad(this.#config.upstreams[t.upstream]?.balance ?? 'round_robin');
      (upstreams[t.upstream] ??= []).push({ target: t.target, available: t.available, active: t.active, open: t.open, idle: t.idle, ...(balancesOnLoad ? { loadSeen: t.loadSeen } : {}), ...(t.leaving ? { leaving: true } : {}) });
    }
    const health = this.#healthReport(answers);
    const limits: StatusReport['limits'] = {};
    for (const [name, l] of this.#limits(answers)) {
      limits[name] = { queued: l.queued, queueRejected: l.queueRejected, queueTimeouts: l.queueTimeouts, retries: l.retriesTotal, retriesDenied: l.retriesDenied };
    }
    const last = this.#lastReload;
    return {
      pid: process.pid,
      uptime: Math.round((now - this.#startedAt) / 1000),
      config: {
        file: this.#configFile,
        generation: this.#served.generation,
        loadedAt: new Date(this.#loadedAt).toISOString(),
        reloads: { ok: this.#reloadsOk, failed: this.#reloadsFailed },
        lastReload:
          last === null
            ? null
            : last.ok
              ? { at: new Date(last.finishedAt).toISOString(), ok: true, generation: last.generation, summary: last.summary, warnings: [...last.warnings] }
              : { at: new Date(last.finishedAt).toISOString(), ok: false, generation: last.generation, error: last.error, errors: formatErrors(this.#configFile, last.errors).split('\n').filter((l) => l !== '') },
      },
      sticky: { keys: this.#sticky.size, pins: this.#sticky.pinCount },
      listenStrategy: this.#strategy,
      native: nativeStatus(),
      workers: this.#slots.map((s) => {
        const stats = answers.find((a) => a.slot === s)?.stats;
        return {
          id: s.id,
          pid: s.child?.pid ?? null,
          uptime: s.child === null ? 0 : Math.round((now - s.startedAt) / 1000),
          restarts: s.restarts,
          state: s.state,
          generation: s.generation,
          ...(stats === undefined ? {} : { connections: stats.connections, tunnels: stats.tunnels, fds: stats.fds, pipes: stats.metrics.pipes }),
        };
      }),
      listeners: this.#listenerReport(),
      upstreams,
      limits,
      health,
      discovery: this.#discovery?.status() ?? {},
      connections: answers.reduce((n, a) => n + a.stats.connections, 0),
      tunnels: answers.reduce((n, a) => n + a.stats.tunnels, 0),
      unanswered,
    };
  }
}

interface MergedTarget {
  upstream: string;
  target: string;
  available: boolean;
  active: number;
  /** Sockets open to the target and, of those, idle in a pool: summed over workers. */
  open: number;
  idle: number;
  /** What each worker balances on (its own active + the others' as last aggregated), in answer order. */
  loadSeen: number[];
  /** Removed by discovery in every worker that has it, its connections still finishing. */
  leaving: boolean;
}

/**
 * One entry per upstream target: available only if available in every worker, active summed. A repeated
 * address is one entry (its counts added), so loadSeen adds up per worker too.
 */
function mergeTargets(all: readonly WorkerStats[]): MergedTarget[] {
  const merged = new Map<string, MergedTarget>();
  all.forEach((stats, w) => {
    for (const t of stats.upstreamTargets) {
      const key = `${t.upstream}\n${t.target}`;
      let m = merged.get(key);
      if (m === undefined) merged.set(key, (m = { upstream: t.upstream, target: t.target, available: t.available, active: 0, open: 0, idle: 0, loadSeen: [], leaving: t.leaving }));
      else {
        m.available &&= t.available;
        m.leaving &&= t.leaving;
      }
      m.active += t.active;
      m.open += t.open;
      m.idle += t.idle;
      m.loadSeen[w] = (m.loadSeen[w] ?? 0) + t.active + t.remote;
    }
  });
  return [...merged.values()].map((m) => ({ ...m, loadSeen: Array.from(m.loadSeen, (n) => n ?? 0) }));
}

/** Adds one worker's limits to `totals` (`withGauge`: its queue length too; an exited worker has none). */
function addLimits(totals: Map<string, UpstreamLimitTotals>, l: UpstreamLimitStatus, withGauge: boolean): void {
  addTotals(totals, { upstream: l.upstream, queued: withGauge ? l.queued : 0, queueRejected: l.queueRejected, queueTimeouts: l.queueTimeouts, retriesTotal: l.retries.retriesTotal, retriesDenied: l.retries.deniedTotal });
}

function addTotals(totals: Map<string, UpstreamLimitTotals>, l: UpstreamLimitTotals): void {
  const t = totals.get(l.upstream);
  if (t === undefined) {
    totals.set(l.upstream, { ...l });
    return;
  }
  t.queued += l.queued;
  t.queueRejected += l.queueRejected;
  t.queueTimeouts += l.queueTimeouts;
  t.retriesTotal += l.retriesTotal;
  t.retriesDenied += l.retriesDenied;
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
