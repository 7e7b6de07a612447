// Entry point of a worker process, forked by primary/supervisor.ts, and the Worker that wires it: the messages from the
// primary, the state that outlives a config (target states, discovered sets, retired pools, sticky tables,
// limits), load reports and the drain on 'shutdown'. Applying a config and its listening sockets are apply.ts's,
// what happens to an accepted socket is accept-paths.ts's, the stats report is stats.ts's.
import { isToWorker, WORKER_ENV, type ApplyMessage, type TargetControl, type TargetLoad, type ToWorker, type WorkerStats } from './ipc.js';
import { ConnectionRegistry } from '../core/registry.js';
import type { ContextSource } from '../http/connection.js';
import { createLogger, type Logger } from '../core/log.js';
import { AccessFiles } from './access-files.js';
import { stdoutWriter } from '../core/line-writer.js';
import { raiseFdLimit } from './fd-limit.js';
import { Metrics } from '../core/metrics.js';
import { LimitStore, refusalLine } from '../route/policy/store.js';
import { poolsLeftBehind, type Runtime } from './runtime.js';
import { readsLoad } from '../upstream/balancer.js';
import type { TargetSpec, UpstreamPool } from '../upstream/pool.js';
import { OpenKeys, PinTable } from '../upstream/sticky.js';
import { AcceptPaths } from './accept-paths.js';
import { Applier, closeStray, type ApplyHost } from './apply.js';
import { retiredActive, workerStats } from './stats.js';
import { send } from './send.js';
import type { Config } from '../config/schema.js';
import { TerminateApp } from '../terminate/app.js';
import { Drainer } from '../terminate/drain.js';
import type { TerminateServices } from '../terminate/handoff.js';
import { adoptFallbacks, loadUws, terminateHopFallbacks, terminateRoutePaths } from '../terminate/uws.js';
import { nativeTlsStatus, trimAfterHandshakes } from '../native/tls.js';
import { LISTEN_END_BOUND_MS, nativePeekAvailable } from '../native/io.js';
import { alpnChallenges } from '../accept/acme-alpn.js';
import { nativeExchangeSwapped } from '../handlers/fastcgi-native.js';

/**
 * A drain that outlives its grace by this much ends the process anyway, counted from the listeners' end (at most
 * LISTEN_END_BOUND_MS, 2.25 s; the primary kills at grace + 5 s).
 */
const DRAIN_OVERRUN_MS = 2_000;

/**
 * How often a worker compares its per-target load with what it last sent the primary (least_conn across
 * workers, see Target.remote): one scan of the targets of load-reading upstreams, a message only on change.
 * The same tick reports sticky tunnel changes and closes retired pools that nothing uses any more.
 */
const LOAD_REPORT_MS = 100;

/** Pending ACME challenges a worker holds at most (a CA validates a few names per order). */
const MAX_ACME_TOKENS = 256;

class Worker {
  readonly id: number;
  #log: Logger;
  readonly #metrics = new Metrics();
  /** The access-log files of every runtime (log.access_file), reopened on SIGUSR1. */
  readonly accessFiles = new AccessFiles();
  readonly #registry = new ConnectionRegistry();
  readonly #sticky = new OpenKeys();
  readonly #pins = new PinTable();
  /** ACME HTTP-01 tokens of the primary's pending orders (bounded: MAX_ACME_TOKENS). */
  readonly #acmeTokens = new Map<string, string>();
  /** Connection and rate limit state, kept across reloads; its refusal lines go to the current logger. */
  readonly #limits = new LimitStore((source, r) => {
    const line = refusalLine(source, r);
    this.#log[line.level](line.fields, line.msg);
  });
  /** null until the first apply. */
  #runtime: Runtime | null = null;
  /** What connections read their context from: follows #runtime, so a swap reaches kept-alive connections. */
  readonly #source: ContextSource;
  /** Pools a reload replaced or removed, still used by requests in flight or tunnels; closed when unused. */
  #retired: UpstreamPool[] = [];
  /** Health and drain per "upstream\ntarget", as the primary sent them; every new runtime's pools get them. */
  #targetControl = new Map<string, TargetControl>();
  /**
   * Discovered targets per upstream, as the primary last sent them (with each apply, then on every change), and
   * the number of the message that brought them (see #received): an apply still running when a newer set
   * comes gives its runtime the newer one.
   */
  #discovered = new Map<string, { readonly targets: readonly TargetSpec[]; readonly at: number }>();
  /** Messages received from the primary so far: their order is the primary's order. */
  #received = 0;
  #stopping = false;
  /** Per load-reading upstream, the counts last sent to the primary. */
  #sentLoad = new Map<string, number[]>();
  /** The other workers' load as last received, re-applied while retired pools still hold load. */
  #remoteLoad: TargetLoad | null = null;
  readonly #loadTimer: NodeJS.Timeout;
  /** The soft RLIMIT_NOFILE after the raise at start (-1: unlimited). */
  readonly #fdLimit: number;
  /** What each listener does with an accepted socket; the fd budget and its refusal log. */
  readonly #paths: AcceptPaths;
  /** Applies configs one at a time and owns the listening sockets. */
  readonly #applier: Applier;
  /** The uWebSockets.js app of terminated WebSocket routes: started by the first config that has one, then kept. */
  #terminate: TerminateServices | undefined;

  constructor(id: number, log: Logger, fdLimit: number) {
    this.id = id;
    this.#log = log;
    this.#fdLimit = fdLimit;
    const worker = this;
    this.#source = {
      get current() {
        return worker.#current().ctx;
      },
    };
    this.#paths = new AcceptPaths({
      metrics: this.#metrics,
      registry: this.#registry,
      limits: this.#limits,
      source: this.#source,
      fdLimit,
      current: () => worker.#current(),
      get log() {
        return worker.#log;
      },
    });
    this.#applier = new Applier(this.#applyHost(), this.#paths);
    // Kept through the drain: tunnels still open in a draining worker still load their targets.
    this.#loadTimer = setInterval(() => this.#tick(), LOAD_REPORT_MS).unref();
  }

  get log(): Logger {
    return this.#log;
  }

  #current(): Runtime {
    const runtime = this.#runtime;
    // listeners exist only after the first apply built a runtime
    if (runtime === null) throw new Error('no runtime yet: a connection was accepted before the first apply');
    return runtime;
  }

  #tick(): void {
    // while retired pools hold load (and once more after the last one closed) `remote` is recomputed
    const hadRetired = this.#retired.length > 0;
    this.#closeUnusedRetired();
    this.#reportSticky();
    this.#reportLoad();
    this.#paths.logFdRefusals();
    // a burst of TLS handshakes is over: the memory they freed goes back to the system (src/native/tls.cc)
    const trimmed = trimAfterHandshakes();
    if (trimmed !== undefined) this.#log.debug(trimmed, 'memory freed by TLS handshakes returned to the system');
    if (hadRetired && this.#remoteLoad !== null) this.#applyRemoteLoad(this.#remoteLoad);
  }

  #closeUnusedRetired(): void {
    if (this.#retired.length === 0) return;
    this.#retired = this.#retired.filter((pool) => {
      if (pool.busy) return true;
      pool.close();
      return false;
    });
  }

  /** A pool's load per target as this worker reports it: its own requests and tunnels, retired pools' too. */
  #loadOf(pool: UpstreamPool): number[] {
    if (this.#retired.length === 0) return pool.targets.map((t) => t.active);
    return pool.targets.map((t) => t.active + retiredActive(this.#retired, pool.name, t.id));
  }

  #reportSticky(): void {
    const changes = this.#sticky.takeChanges();
    if (changes.length > 0) send({ type: 'sticky', changes });
  }

  /** Sends this worker's load (every load-reading upstream) when any count changed since the last send. */
  #reportLoad(): void {
    const runtime = this.#runtime;
    if (runtime === null) return;
    const next = new Map<string, number[]>();
    let changed = false;
    for (const [name, pool] of runtime.pools) {
      if (!readsLoad(pool.config.balance)) continue;
      const counts = this.#loadOf(pool);
      next.set(name, counts);
      const sent = this.#sentLoad.get(name);
      if (!changed) changed = sent === undefined || sent.length !== counts.length || sent.some((n, i) => n !== counts[i]);
    }
    if (!changed && next.size === this.#sentLoad.size) return;
    this.#sentLoad = next;
    // fromEntries defines own properties: an upstream named "__proto__" stays data.
    const load: TargetLoad = Object.fromEntries(next);
    send({ type: 'load', generation: runtime.generation, load });
  }

  /** The other workers' load from the primary; upstreams it leaves out have none. */
  #applyRemoteLoad(load: TargetLoad): void {
    this.#remoteLoad = load;
    const runtime = this.#runtime;
    if (runtime === null) return;
    for (const [name, pool] of runtime.pools) {
      const received = Object.hasOwn(load, name) ? load[name] : undefined;
      // this worker's own retired pools count as "remote" for the new pool's targets of the same address
      const counts = received === undefined ? pool.targets.map(() => 0) : received;
      const withRetired = this.#retired.length === 0 ? counts : counts.map((n, i) => n + (i < pool.targets.length ? retiredActive(this.#retired, name, pool.targets[i].id) : 0));
      if (!pool.setRemoteLoad(withRetired)) {
        this.#log.debug({ upstream: name, targets: pool.targets.length, received: counts.length }, 'remote load for a different target list: ignored');
      }
    }
  }

  onMessage(msg: unknown, handle: unknown): void {
    if (!isToWorker(msg)) {
      this.#log.warn({ msg }, 'ignoring an unknown message from the primary');
      closeStray(handle);
      return;
    }
    this.#onPrimaryMessage(msg, handle);
  }

  #onPrimaryMessage(msg: ToWorker, handle: unknown): void {
    const at = ++this.#received;
    switch (msg.type) {
      case 'apply':
        this.#applier.enqueue(msg, at);
        return;
      case 'listen-handle':
        this.#applier.receiveHandle(msg.seq, msg.index, handle);
        return;
      case 'take-slot':
        // only a standby takes a slot (before it is a Worker); this one has its slot
        this.#log.warn({ slot: msg.id }, 'ignoring take-slot: this worker has its slot');
        return;
      case 'publish':
        // edge fan-out: uWS delivers to this worker's subscribers (none when no terminate route ever ran here); one
        // turn for the whole batch, so uWS drains it to each subscriber in one write
        if (this.#terminate !== undefined) for (const m of msg.messages) this.#terminate.app.publish(m.topic, Buffer.from(m.data, 'base64'), m.binary);
        return;
      case 'shutdown':
        void this.shutdown('primary asked');
        return;
      case 'stats-request':
        // sticky changes first: the primary reads an answer as "everything before it was reported"
        this.#reportSticky();
        send({ type: 'stats', id: msg.id, ...this.#stats() });
        return;
      case 'upstream-state': {
        const previous = this.#targetControl;
        this.#targetControl = new Map(msg.targets.map((c) => [`${c.upstream}\n${c.target}`, c]));
        // Targets missing from the full state go back to the defaults.
        for (const [key, c] of previous) if (!this.#targetControl.has(key)) this.#applyControl({ ...c, healthy: true, draining: false });
        for (const c of this.#targetControl.values()) this.#applyControl(c);
        return;
      }
      case 'target-state': {
        const { type: _type, ...control } = msg;
        this.#targetControl.set(`${control.upstream}\n${control.target}`, control);
        this.#applyControl(control);
        if (control.draining) this.#drainTarget(control.upstream, control.target);
        return;
      }
      case 'remote-load':
        // counts are positions in the target lists of one generation: another generation's mean nothing here
        if (msg.generation === this.#runtime?.generation) this.#applyRemoteLoad(msg.load);
        return;
      case 'pins':
        for (const update of msg.updates) this.#pins.apply(update);
        return;
      case 'discovered-targets':
        this.#discovered.set(msg.upstream, { targets: msg.targets, at });
        this.#applyDiscovered(msg.upstream, msg.targets);
        return;
      case 'acme-challenge':
        if (msg.keyAuthorization === null) this.#acmeTokens.delete(msg.token);
        else if (this.#acmeTokens.size < MAX_ACME_TOKENS) this.#acmeTokens.set(msg.token, msg.keyAuthorization);
        return;
      case 'acme-alpn-challenge':
        if (msg.cert === null || msg.key === null) alpnChallenges.delete(msg.name);
        else if (!alpnChallenges.set(msg.name, msg.cert, msg.key)) this.#log.warn({ domain: msg.name }, 'acme: a tls-alpn-01 challenge certificate could not be loaded (or too many are pending)');
        return;
    }
  }

  /**
   * Swaps an upstream's discovered targets in `runtime`'s pool (a no-op when they did not change). States the
   * primary sent for targets that left are forgotten (a target that comes back starts healthy, as in the
   * primary); those for targets still here are applied again, which covers a state that arrived before its
   * target did.
   */
  #applyDiscovered(upstream: string, targets: readonly TargetSpec[], runtime: Runtime | null = this.#runtime): void {
    const pool = runtime?.pools.get(upstream);
    // a set sent for another config (an upstream this one removed, or gave no DNS name) has no pool to go to
    if (pool === undefined || pool.config.discover.length === 0) return void this.#log.debug({ upstream }, 'discovered targets for an upstream that follows no name in this runtime');
    const { added, removed } = pool.setDiscovered(targets);
    if (added.length === 0 && removed.length === 0) return;
    for (const id of removed) this.#targetControl.delete(`${upstream}\n${id}`);
    for (const c of this.#targetControl.values()) if (c.upstream === upstream) this.#applyControl(c, runtime);
    this.#log.debug({ upstream, added, removed, targets: pool.targets.length }, 'discovered targets applied');
  }

  #applyControl(c: TargetControl, runtime: Runtime | null = this.#runtime): void {
    const pool = runtime?.pools.get(c.upstream);
    // Unknown here (the primary's config differs, e.g. mid-reload): still kept in #targetControl, which a
    // new runtime is given again (every entry through this method).
    if (pool === undefined || !pool.setTargetState(c.target, c)) this.#log.debug({ upstream: c.upstream, target: c.target }, 'target state for a target this runtime does not have');
  }

  /**
   * The discovered sets for apply `msg` (message number `at`): its own, except where a set the primary sent
   * after it came first (the primary holds sets back while a reload applies, so a newer one is of this config).
   */
  #setsFor(msg: ApplyMessage, at: number): Map<string, { readonly targets: readonly TargetSpec[]; readonly at: number }> {
    const sets = new Map(Object.entries(msg.discovered).map(([upstream, targets]) => [upstream, { targets, at }]));
    for (const [upstream, known] of this.#discovered) if (known.at > at && sets.has(upstream)) sets.set(upstream, known);
    return sets;
  }

  /** What an apply reads from this worker and hands back to it (apply.ts); the fields stay private here. */
  #applyHost(): ApplyHost {
    const worker = this;
    return {
      id: this.id,
      get runtime() {
        return worker.#runtime;
      },
      get stopping() {
        return worker.#stopping;
      },
      get log() {
        return worker.#log;
      },
      runtimeDeps: (log) => ({ log, worker: this.id, metrics: this.#metrics, sticky: this.#sticky, pins: this.#pins, limits: this.#limits, acmeTokens: this.#acmeTokens, accessFiles: this.accessFiles }),
      terminateFor: (config, log) => this.#terminateFor(config, log),
      setsFor: (msg, at) => this.#setsFor(msg, at),
      applyControls: (next) => {
        for (const c of this.#targetControl.values()) this.#applyControl(c, next);
      },
      swap: (next, log) => {
        this.#runtime = next;
        nativeExchangeSwapped(); // the addon starts no request under the old routes (fastcgi-native.ts)
        this.#log = log;
        this.#drainRemovedRoutes(next.config);
        this.accessFiles.keepOnly(next.config.log.access_file);
      },
      settle: (msg, at, previous, next) => {
        // The sets of this config from now on (re-read: more may have come while sockets were opened); a kept pool
        // gets a change that came while a reload ran, a new one what came since it was built.
        this.#discovered = this.#setsFor(msg, at);
        for (const [upstream, known] of this.#discovered) this.#applyDiscovered(upstream, known.targets);
        if (previous !== undefined) {
          for (const pool of poolsLeftBehind(previous, next)) {
            pool.retire();
            this.#retired.push(pool);
          }
          this.#log.info({ generation: next.generation, retiredPools: this.#retired.length, connections: this.#registry.size, tunnels: this.#registry.tunnels }, 'config applied');
        }
        this.#sentLoad = new Map(); // report the new generation's load at the next tick
      },
    };
  }

  /** Starts the uWebSockets.js app when `config` is the first with a terminate route; logs the build it loaded. */
  async #terminateFor(config: Config, log: Logger): Promise<TerminateServices | undefined> {
    // handoff: adopt routes keep the relay hop on these listeners: said once per listener and apply, never silent
    for (const f of adoptFallbacks(config, nativePeekAvailable())) log.warn({ listener: f.listener, reason: f.reason }, 'websocket handoff: adopt falls back to relay on this listener');
    for (const f of terminateHopFallbacks(config, nativeTlsStatus(), nativePeekAvailable())) log.warn({ listener: f.listener, reason: f.reason }, 'terminated WebSocket: the hop into uWebSockets.js stays in JavaScript on this listener');
    if (this.#terminate !== undefined || terminateRoutePaths(config).length === 0) return this.#terminate;
    const s = loadUws();
    if (!s.ok) throw new Error(`uWebSockets.js cannot load: ${s.reason}`);
    const app = await TerminateApp.start(s.uws, s.build);
    this.#terminate = { app, drainer: new Drainer(), open: new Set() };
    log.info({ uws: s.build, socket: app.socketPath }, 'uWebSockets.js loaded for terminated WebSocket');
    return this.#terminate;
  }

  /** A drained target: its terminated WebSockets get a paced Close 1012 (clients reconnect to another target). */
  #drainTarget(upstream: string, target: string): void {
    const t = this.#terminate;
    if (t === undefined) return;
    for (const c of t.open) if (c.upstream === upstream && c.target === target) c.drain(1012, 'target_drained');
  }

  /** After a reload: terminated WebSockets whose route (name and upstream) is gone get a paced Close 1012. */
  #drainRemovedRoutes(config: Config): void {
    const t = this.#terminate;
    if (t === undefined || t.open.size === 0) return;
    const kept = new Set<string>();
    config.routes.forEach((r, i) => {
      if (r.websocket?.mode === 'terminate') kept.add(r.name ?? `routes[${i}]`);
    });
    for (const c of t.open) if (!kept.has(c.route)) c.drain(1012, 'reload');
  }

  #stats(): WorkerStats {
    return workerStats({ runtime: this.#runtime, retired: this.#retired, registry: this.#registry, metrics: this.#metrics, fdLimit: this.#fdLimit, accept: this.#applier.accept, deferAccept: this.#applier.deferring, logDropped: { stdout: stdoutWriter().dropped, file: this.accessFiles.dropped } });
  }

  /** Stops accepting at once, lets connections finish within the grace (see ConnectionRegistry.drain), exits. */
  async shutdown(reason: string): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    const grace = this.#runtime?.config.timeouts.shutdown_grace ?? 0;
    const registry = this.#registry;
    const ended = this.#applier.stopAccepting();
    this.#log.info({ reason, graceMs: grace, connections: registry.size, tunnels: registry.tunnels }, 'worker draining');
    setTimeout(() => {
      this.#log.warn({ connections: registry.size }, 'drain overran its grace: exiting');
      process.exit(1);
    }, LISTEN_END_BOUND_MS + grace + DRAIN_OVERRUN_MS).unref();
    let code = 0;
    try {
      // the accept queues' clients join the registry first (a batch or two), so the drain waits for them too
      await ended;
      this.#log.info({ connections: registry.size, tunnels: registry.tunnels }, 'worker stopped accepting');
      await registry.drain(grace);
    } catch (err) {
      this.#log.error({ err }, 'drain failed');
      code = 1;
    }
    for (const pool of this.#runtime?.pools.values() ?? []) pool.close();
    for (const pool of this.#retired) pool.close();
    clearInterval(this.#loadTimer);
    const refused = Object.values(this.#metrics.snapshot().refused).reduce((a, b) => a + (b ?? 0), 0);
    this.#log.info({ refusedBeforeRouting: refused }, 'worker stopped');
    // every access-log line of the drained requests is written before the exit (a clean stop loses none)
    await Promise.all([this.accessFiles.drain(), stdoutWriter().drain()]);
    process.exit(code);
  }
}

function main(): void {
  if (process.send === undefined) {
    process.stderr.write('portico: worker/main.js is started by the primary; run `portico start -c FILE`\n');
    process.exit(2);
  }
  // The primary raised (and logged) the limit already; a worker started some other way raises its own.
  const fds = raiseFdLimit();
  if (process.env[WORKER_ENV.standby] === '1') return standBy(fds.soft);
  const id = Number(process.env[WORKER_ENV.id]);
  if (!Number.isInteger(id) || id < 1) {
    process.stderr.write(`portico worker: ${WORKER_ENV.id} must be set by the primary\n`);
    process.exit(2);
  }
  serve(id, fds.soft);
}

/**
 * A standby worker (primary/supervisor.ts): its modules are loaded (what takes a worker's start its time) and it
 * holds no socket and no config. It becomes worker N on 'take-slot' and from then on starts like a fresh one;
 * until then it only waits, and a SIGTERM or the primary going away ends it at once (it has nothing to drain).
 */
function standBy(fdLimit: number): void {
  const exit = (): void => process.exit(0);
  const crash = (err: Error): void => {
    process.stderr.write(`portico standby worker: ${err.stack ?? err.message}\n`);
    process.exit(1);
  };
  const ignore = (): void => {};
  const onMessage = (msg: unknown): void => {
    if (!isToWorker(msg) || msg.type !== 'take-slot') return void process.stderr.write('portico standby worker: ignoring a message before take-slot\n');
    for (const [event, fn] of [['message', onMessage], ['SIGTERM', exit], ['disconnect', exit], ['SIGINT', ignore], ['SIGHUP', ignore], ['SIGUSR1', ignore], ['uncaughtException', crash]] as const) process.off(event, fn);
    serve(msg.id, fdLimit);
  };
  process.on('uncaughtException', crash);
  process.on('message', onMessage);
  process.on('SIGINT', ignore);
  process.on('SIGHUP', ignore);
  // it has no access-log file to reopen, and Node's own SIGUSR1 action (the inspector) is not wanted either
  process.on('SIGUSR1', ignore);
  process.on('SIGTERM', exit);
  process.on('disconnect', exit);
  send({ type: 'standby' });
}

/** Worker `id` from now on: wires the process to a Worker and tells the primary it is ready for its first apply. */
function serve(id: number, fdLimit: number): void {
  // The config comes with the first apply; until then, the default level.
  const worker = new Worker(id, createLogger('info', { worker: id }), fdLimit);
  process.on('uncaughtException', (err) => {
    // The data path must not depend on this: it is the last resort that turns a bug into a restart.
    worker.log.fatal({ err }, 'uncaught exception: worker exits and the primary restarts it');
    process.exit(1);
  });
  process.on('message', (msg: unknown, handle: unknown) => worker.onMessage(msg, handle));
  // The primary drives shutdown and reload: Ctrl-C and SIGHUP reach the whole process group, only the primary acts.
  process.on('SIGINT', () => {});
  process.on('SIGHUP', () => {});
  // A SIGTERM sent to this worker alone drains it; the primary then starts a replacement.
  process.on('SIGTERM', () => void worker.shutdown('SIGTERM'));
  // The primary passes on the SIGUSR1 of logrotate: the access-log files are opened again by their paths.
  process.on('SIGUSR1', () => worker.accessFiles.reopen());
  process.on('exit', () => worker.accessFiles.flushSync());
  process.on('disconnect', () => void worker.shutdown('primary gone'));
  send({ type: 'booted' });
}

main();
