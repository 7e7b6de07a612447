// The primary process: binds the listeners without ever accepting on them, forks the workers (child_process,
// not node:cluster, so a per-worker SO_REUSEPORT socket can plug in later), restarts a worker that dies with
// backoff, fans SIGTERM out as a drain, serves the admin listener, sums the workers' metrics and per-target load,
// runs the active health checks once per instance and owns drains. It touches no client socket.
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindShared, chooseListenStrategy, type ListenStrategy, type SharedHandle } from './accept/listener.js';
import { nativeStatus } from './native/addon.js';
import { ensureSelfSignedCertificates, loadCertificates } from './accept/tls.js';
import { startAdminServer, type AdminServer, type DrainResult, type StatusReport, type TargetHealthReport } from './admin/server.js';
import { resolveWorkers } from './config/load.js';
import type { Config } from './config/schema.js';
import { WORKER_ENV, isToPrimary, type ListenMessage, type TargetControl, type TargetLoad, type ToPrimary, type ToWorker, type UpstreamLimitStatus, type WorkerStats } from './ipc.js';
import { createLogger, type Logger } from './log.js';
import { emptySnapshot, renderPrometheus, sumSnapshots, type MetricsSnapshot, type UpstreamLimitTotals } from './metrics.js';
import { readsLoad } from './upstream/balancer.js';
import { HealthChecker, probeProxyHeader, renderHealthMetrics } from './upstream/health.js';

export interface PrimaryOptions {
  configFile: string;
  config: Config;
  /** Start the demo backends (src/demo.ts) before the workers; they stop with Portico. */
  demo?: boolean;
}

const WORKER_PATH = fileURLToPath(new URL('./worker.js', import.meta.url));
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
/** Certificates that expire sooner than this are warned about at start. */
const EXPIRY_WARNING_MS = 14 * 86_400_000;
/**
 * Load reports arriving within this window are summed and fanned out once: with N workers each reporting at
 * most every 100 ms, the primary sends at most N messages per window instead of N per report.
 */
const LOAD_FLUSH_MS = 25;

type SlotState = 'starting' | 'ready' | 'restarting' | 'stopping' | 'exited';

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
  pendingStats: Map<number, (stats: WorkerStats | null) => void>;
  lastStats: WorkerStats | null;
  /** This process's last load report (its own open requests + tunnels per target); null before the first. */
  load: Map<string, number[]> | null;
  /** The other workers' load as last sent to this process, serialized; '{}' = none (its pools start at 0). */
  remoteSent: string;
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

interface BoundListener {
  address: string;
  port: number;
  tls: boolean;
}

class Primary {
  readonly #config: Config;
  readonly #configFile: string;
  readonly #demo: boolean;
  readonly #log: Logger;
  /** Built-in reusePort (Node >= 22.12), the addon's SO_REUSEPORT socket, else a handle shared by the primary. */
  readonly #strategy: ListenStrategy = chooseListenStrategy();
  readonly #startedAt = Date.now();
  readonly #ticketKeys = randomBytes(48).toString('base64');
  #slots: Slot[] = [];
  #handles: SharedHandle[] = [];
  /** reuse-port: the port each listener got (port 0 is resolved by the first worker). */
  #ports: number[];
  #listeners: BoundListener[] = [];
  #admin: AdminServer | null = null;
  #demoBackends: { close(): Promise<void> } | null = null;
  /** Active health checkers, one per upstream that configures them. */
  readonly #health = new Map<string, HealthChecker>();
  /** Drained targets, as "upstream\ntarget"; the primary is the source of truth, so a restarted worker gets them. */
  readonly #drained = new Set<string>();
  /** Certificates, sockets, admin and demo exist (or failed): shutdown may finish only after this. */
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
    this.#config = opts.config;
    this.#configFile = path.resolve(opts.configFile);
    this.#demo = opts.demo === true;
    this.#log = createLogger(opts.config.log.level, { role: 'primary' });
    this.#ports = opts.config.listeners.map((l) => l.address.port);
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
    process.on('SIGTERM', this.#onSignal);
    process.on('SIGINT', this.#onSignal);
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
    const announce = this.#log.isLevelEnabled('info') || this.#config.log.level === 'silent' ? this.#log : this.#log.child({}, { level: 'info' });
    // Tools and tests read the bound ports (port 0 in config) from this line.
    announce.info(
      {
        listeners: this.#listeners,
        admin: this.#admin === null ? null : { address: this.#admin.address, port: this.#admin.port },
        workers: this.#slots.map((s) => ({ id: s.id, pid: s.child?.pid ?? null })),
        strategy: this.#strategy,
      },
      'listening',
    );
  }

  /** Everything that must exist before a worker starts: certificates, demo backends, sockets, admin. */
  async #prepare(): Promise<void> {
    const config = this.#config;
    const native = nativeStatus();
    // said once, here: without the addon tunnels use the JS relay and (Node < 22.12) workers share one socket
    if (!native.native) this.#log.warn({ reason: native.reason }, 'native addon not in use: JS relay only');
    for (const cert of await ensureSelfSignedCertificates(config)) this.#log.info({ cert }, 'generated a self-signed certificate');
    // Workers load the same files: fail here, once, with the file name, rather than in a restart loop.
    for (const listener of config.listeners) {
      if (listener.tls === undefined) continue;
      for (const cert of loadCertificates(listener.tls)) {
        const left = cert.notAfter.getTime() - Date.now();
        if (left < EXPIRY_WARNING_MS) this.#log.warn({ cert: cert.certFile, notAfter: cert.notAfter.toISOString() }, left < 0 ? 'certificate has expired' : 'certificate expires soon');
      }
    }
    if (this.#demo) {
      const { startDemoBackends } = await import('./demo.js');
      this.#demoBackends = await startDemoBackends();
    }
    if (this.#strategy === 'shared-handle') {
      for (const listener of config.listeners) {
        const handle = await bindShared(listener.address.host, listener.address.port);
        this.#handles.push(handle);
        this.#listeners.push({ address: handle.bound.address, port: handle.bound.port, tls: listener.tls !== undefined });
      }
    }
    if (config.admin !== undefined) {
      const source = { metrics: () => this.#metricsText(), status: () => this.#status(), drain: (u: string, t: string, d: boolean) => this.#drain(u, t, d) };
      this.#admin = await startAdminServer(config.admin.address.host, config.admin.address.port, source, this.#log, { token: config.admin.token });
    }
    this.#startHealthChecks();
  }

  /** Targets start healthy; a checker reports only flips, each sent to every worker at once. */
  #startHealthChecks(): void {
    if (this.#stopping) return; // a signal came while preparing
    for (const [name, upstream] of Object.entries(this.#config.upstreams)) {
      const active = upstream.health.active;
      if (active === undefined) continue;
      const proxyHeader = probeProxyHeader(upstream.send_proxy_protocol);
      const targets = upstream.targets.map((t) => ({ id: t.address, host: t.host, port: t.port, proxyHeader }));
      const checker = new HealthChecker(name, targets, active, (target) => this.#broadcast({ type: 'target-state', ...this.#control(name, target) }), this.#log);
      this.#health.set(name, checker);
      checker.start();
    }
  }

  #control(upstream: string, target: string): TargetControl {
    return { upstream, target, healthy: this.#health.get(upstream)?.isHealthy(target) ?? true, draining: this.#drained.has(`${upstream}\n${target}`) };
  }

  /** Everything that differs from the defaults (healthy, not draining), for a worker that just booted. */
  #fullState(): ToWorker {
    const targets: TargetControl[] = [];
    for (const [name, upstream] of Object.entries(this.#config.upstreams)) {
      for (const address of new Set(upstream.targets.map((t) => t.address))) {
        const c = this.#control(name, address);
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
    if (!config.targets.some((t) => t.address === target)) {
      return { ok: false, status: 404, error: `upstream "${upstream}" has no target "${target}" (targets: ${config.targets.map((t) => t.address).join(', ')})` };
    }
    const key = `${upstream}\n${target}`;
    if (draining) this.#drained.add(key);
    else this.#drained.delete(key);
    this.#broadcast({ type: 'target-state', ...this.#control(upstream, target) });
    // IPC keeps order per worker: a stats answer proves the worker handled the state change sent before it.
    const { answers, unanswered } = await this.#collect();
    const appliedBy = answers.filter((a) => a.stats.upstreamTargets.some((t) => t.upstream === upstream && t.target === target && t.draining === draining)).map((a) => a.slot.id);
    return { ok: true, upstream, target, draining, appliedBy, unanswered };
  }

  async #startWorkers(): Promise<void> {
    const count = resolveWorkers(this.#config);
    for (let id = 1; id <= count; id++) {
      this.#slots.push({ id, child: null, state: 'starting', booted: false, startedAt: 0, restarts: 0, backoffMs: BACKOFF_MIN_MS, restartTimer: null, ready: null, pendingStats: new Map(), lastStats: null, load: null, remoteSent: '{}' });
    }
    const startup = setTimeout(() => {
      for (const slot of this.#slots) slot.ready?.reject(new Error(`worker ${slot.id} was not accepting ${STARTUP_TIMEOUT_MS / 1000}s after it started`));
    }, STARTUP_TIMEOUT_MS);
    try {
      // reuse-port with a port-0 listener: the first worker picks the port, the others join it.
      const first = this.#strategy === 'reuse-port' && this.#ports.includes(0) ? 1 : 0;
      for (const slot of this.#slots.slice(0, first)) await this.#spawn(slot).promise;
      if (!this.#stopping) await Promise.all(this.#slots.slice(first).map((slot) => this.#spawn(slot).promise));
    } finally {
      clearTimeout(startup);
    }
    if (this.#strategy === 'reuse-port') {
      this.#listeners = this.#config.listeners.map((l, i) => ({ address: l.address.host, port: this.#ports[i], tls: l.tls !== undefined }));
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
    slot.lastStats = null;
    slot.load = null;
    slot.remoteSent = '{}';
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
        if (this.#stopping) this.#send(child, { type: 'shutdown' });
        else {
          // Before its listeners: a worker never serves a request with a target the instance has taken out.
          this.#send(child, this.#fullState()).catch((err: unknown) => this.#log.debug({ err, worker: slot.id }, 'could not send the target states to a worker'));
          this.#sendRemoteLoad(slot, child);
          this.#assignListeners(slot, child);
        }
        return;
      case 'ready':
        if (this.#strategy === 'reuse-port') {
          msg.ports.forEach((port, i) => {
            if (this.#ports[i] === 0) this.#ports[i] = port;
          });
        }
        if (slot.state === 'starting') slot.state = 'ready';
        slot.ready?.resolve();
        this.#log.info({ worker: slot.id, workerPid: child.pid }, 'worker ready');
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
        this.#scheduleLoadFlush();
        return;
    }
  }

  #scheduleLoadFlush(): void {
    if (this.#loadFlush !== null || this.#stopping) return;
    this.#loadFlush = setTimeout(() => {
      this.#loadFlush = null;
      for (const slot of this.#slots) if (slot.child !== null && slot.booted) this.#sendRemoteLoad(slot, slot.child);
    }, LOAD_FLUSH_MS);
    this.#loadFlush.unref();
  }

  /** Sends `slot` the sum of every other live worker's load, per upstream and target, when it changed. */
  #sendRemoteLoad(slot: Slot, child: ChildProcess): void {
    const remote = new Map<string, number[]>();
    for (const other of this.#slots) {
      if (other === slot || other.child === null || other.load === null) continue;
      for (const [upstream, counts] of other.load) {
        let sum = remote.get(upstream);
        if (sum === undefined) remote.set(upstream, (sum = []));
        for (let i = 0; i < counts.length; i++) sum[i] = (sum[i] ?? 0) + counts[i];
      }
    }
    // fromEntries defines own properties: an upstream named "__proto__" stays data.
    const load: TargetLoad = Object.fromEntries(remote);
    const text = JSON.stringify(load);
    if (text === slot.remoteSent) return;
    slot.remoteSent = text;
    this.#send(child, { type: 'remote-load', load }).catch((err: unknown) => this.#log.debug({ err, worker: slot.id }, 'could not send the remote load to a worker'));
  }

  #assignListeners(slot: Slot, child: ChildProcess): void {
    this.#config.listeners.forEach((listener, index) => {
      let sent: Promise<void>;
      if (this.#strategy === 'shared-handle') {
        sent = this.#handles[index].sendTo(child, { type: 'listen', index, via: 'handle', ticketKeys: this.#ticketKeys } satisfies ListenMessage);
      } else {
        const msg: ListenMessage = { type: 'listen', index, via: 'reuse-port', host: listener.address.host, port: this.#ports[index], ticketKeys: this.#ticketKeys };
        sent = this.#send(child, msg);
      }
      // A worker that died meanwhile is handled by its 'exit'.
      sent.catch((err: unknown) => this.#log.debug({ err, worker: slot.id }, 'could not send a listener to a worker'));
    });
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
      slot.ready?.reject(new Error(`worker ${slot.id} exited during start (${signal ?? `code ${code}`}); see its error above`));
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

  /** First call: stop accepting and drain. Second call: stop now. */
  #shutdown(reason: string): void {
    if (this.#stopping) {
      this.#log.warn({ reason }, 'second stop request: killing workers now');
      this.#killAll();
      return;
    }
    this.#stopping = true;
    for (const checker of this.#health.values()) checker.stop();
    if (this.#loadFlush !== null) clearTimeout(this.#loadFlush);
    this.#loadFlush = null;
    const grace = this.#config.timeouts.shutdown_grace;
    this.#log.info({ reason, graceMs: grace }, 'shutting down: workers stop accepting and drain');
    // The primary's copies go first: once the workers close theirs, the port refuses new connections.
    for (const handle of this.#handles) void handle.close();
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
      await Promise.all([this.#admin?.close(), this.#demoBackends?.close(), ...this.#handles.map((h) => h.close())]);
    } catch (err) {
      this.#log.error({ err }, 'error while closing');
    }
    process.off('SIGTERM', this.#onSignal);
    process.off('SIGINT', this.#onSignal);
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
    const text = renderPrometheus(total, {
      workers: this.#slots.filter((s) => s.child !== null).length,
      workerRestarts: this.#restartsTotal,
      connectionsOpen,
      upstreamTargets: targets,
      upstreamLimits: [...this.#limits(answers).values()],
    });
    return this.#health.size === 0 ? text : text + renderHealthMetrics(this.#health.values());
  }

  /** Per target: drain, the primary's active checks, and passive state gathered from the answering workers. */
  #healthReport(answers: ReadonlyArray<{ slot: Slot; stats: WorkerStats }>): Record<string, TargetHealthReport[]> {
    const report: Record<string, TargetHealthReport[]> = {};
    for (const [name, upstream] of Object.entries(this.#config.upstreams)) {
      const checker = this.#health.get(name);
      const active = new Map((checker?.status() ?? []).map((s) => [s.target, s]));
      const passive = upstream.health.passive;
      report[name] = [...new Set(upstream.targets.map((t) => t.address))].map((target): TargetHealthReport => {
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
      (upstreams[t.upstream] ??= []).push({ target: t.target, available: t.available, active: t.active, ...(balancesOnLoad ? { loadSeen: t.loadSeen } : {}) });
    }
    const health = this.#healthReport(answers);
    const limits: StatusReport['limits'] = {};
    for (const [name, l] of this.#limits(answers)) {
      limits[name] = { queued: l.queued, queueRejected: l.queueRejected, queueTimeouts: l.queueTimeouts, retries: l.retriesTotal, retriesDenied: l.retriesDenied };
    }
    return {
      pid: process.pid,
      uptime: Math.round((now - this.#startedAt) / 1000),
      listenStrategy: this.#strategy,
      native: nativeStatus(),
      workers: this.#slots.map((s) => ({
        id: s.id,
        pid: s.child?.pid ?? null,
        uptime: s.child === null ? 0 : Math.round((now - s.startedAt) / 1000),
        restarts: s.restarts,
        state: s.state,
      })),
      listeners: this.#listeners,
      upstreams,
      limits,
      health,
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
  /** What each worker balances on (its own active + the others' as last aggregated), in answer order. */
  loadSeen: number[];
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
      if (m === undefined) merged.set(key, (m = { upstream: t.upstream, target: t.target, available: t.available, active: 0, loadSeen: [] }));
      else m.available &&= t.available;
      m.active += t.active;
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
  const primary = new Primary(opts);
  await primary.start();
  await primary.stopped;
  // Everything is closed; this only guards against a stray handle keeping a stopped proxy alive.
  setTimeout(() => process.exit(), 2_000).unref();
  const failure = primary.failure;
  if (failure !== undefined) throw new Error(failure);
}
