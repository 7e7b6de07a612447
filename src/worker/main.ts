// Entry point of a worker process, forked by primary/supervisor.ts: owns one Runtime (router, pools: runtime.ts) and the
// listening sockets, and swaps the runtime for each config the primary sends (boot, reload); requests in flight
// and open tunnels finish on what they started with, sockets of addresses that stay are kept. It hands every
// accepted socket (TLS terminated for https) to connection.ts or accept/l4.ts, and drains on 'shutdown'.
import type { Server, Socket } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { PassthroughTable, forwardL4, refuseClientHello } from '../tunnel/l4.js';
import { listenOnHandle, listenReusePort, boundAddress, type ListenOptions, type OnConnection } from '../accept/listener.js';
import { readPreface, type PrefaceResult } from '../accept/preface.js';
import { createCidrMatcher, type ProxyEndpoint, type ProxyHeader } from '../wire/proxy-protocol.js';
import { createTlsServer } from '../accept/tls.js';
import { formatErrors, loadConfigText, type ConfigError } from '../config/load.js';
import type { Config, ListenerConfig } from '../config/schema.js';
import { ConnectionRegistry } from '../core/registry.js';
import { handleConnection, type ContextSource, type ListenerInfo, type ProxiedEnds } from '../http/connection.js';
import { ProxyError } from '../core/errors.js';
import { WORKER_ENV, isToWorker, type ApplyMessage, type TargetControl, type TargetLoad, type ToPrimary, type ToWorker, type UpstreamLimitStatus, type UpstreamTargetStatus, type WorkerStats } from './ipc.js';
import { createLogger, type Logger } from '../core/log.js';
import { readdirSync } from 'node:fs';
import { FdBudget, raiseFdLimit, FD_RESERVE } from './fd-limit.js';
import { native } from '../native/addon.js';
import type { ByteSocket } from '../core/socket.js';
import { adoptNative } from '../native/io.js';
import { fdOf } from '../tunnel/splice.js';
import { Metrics, type RefusedReason } from '../core/metrics.js';
import { clientKey } from '../route/policy/client-address.js';
import { LimitStore, refusalLine } from '../route/policy/store.js';
import { buildRuntime, poolsLeftBehind, type Runtime, type RuntimeDeps } from './runtime.js';
import { readsLoad } from '../upstream/balancer.js';
import type { TargetSpec, UpstreamPool } from '../upstream/pool.js';
import { OpenKeys, PinTable } from '../upstream/sticky.js';
import { setStickySecret } from '../upstream/hash-key.js';
import { deferred, endpointOf, type Deferred } from '../core/util.js';

/** Connections refused for lack of file descriptors are logged at most once per this period (with the count). */
const FD_LOG_INTERVAL_MS = 10_000;

/** A drain that outlives its grace by this much ends the process anyway (the primary kills at grace + 5 s). */
const DRAIN_OVERRUN_MS = 2_000;

const LISTEN_OPTIONS: ListenOptions = { allowHalfOpen: true };

/**
 * Every listening socket accepts paused (pauseOnConnect): nothing is read until the accept path starts reading.
 * A tcp listener without PROXY needs it (the client's first bytes stay in the kernel for the splice hand-over),
 * and a socket kept across a reload may serve any kind of listener next, so all accept the same way.
 */
const ACCEPT_OPTIONS: ListenOptions = { ...LISTEN_OPTIONS, pauseOnConnect: true };

/** What a listener that reads no preface hands on: no header, no hello, nothing read ahead. */
const NO_PREFACE: PrefaceResult & { kind: 'done' } = Object.freeze({ kind: 'done', proxy: undefined, hello: undefined, rest: null });

/** Bound of a preface (PROXY header, ClientHello) when its phase timeout is "off": never unbounded. */
const PREFACE_FALLBACK_MS = 60_000;

/**
 * How often a worker compares its per-target load with what it last sent the primary (least_conn across
 * workers, see Target.remote): one scan of the targets of load-reading upstreams, a message only on change.
 * The same tick reports sticky tunnel changes and closes retired pools that nothing uses any more.
 */
const LOAD_REPORT_MS = 100;

/** A listening socket the primary's apply names by 'listen-handle' must arrive within this. */
const HANDLE_TIMEOUT_MS = 10_000;

/**
 * Sockets a new listener accepts between its bind and the end of the apply (a few ms) wait here, paused, for
 * the runtime they belong to; past this many more are closed.
 */
const MAX_HELD_SOCKETS = 1024;

/** A listening socket, kept across runtimes while its address stays in the config. */
interface OpenListener {
  readonly key: string;
  readonly server: Server;
  readonly port: number;
  /** What it does with an accepted socket; replaced by each apply (TLS certificates, mode, PROXY protocol...). */
  onConnection: OnConnection;
}

/** An apply that cannot be done; the worker keeps what it ran before. */
class ApplyError extends Error {
  readonly errors: ConfigError[];
  constructor(message: string, errors: ConfigError[] = []) {
    super(message);
    this.errors = errors;
  }
}

/** The client's address from a PROXY header: its source for a proxied TCP connection, else none (use the socket's). */
function proxiedSource(header: ProxyHeader | undefined): ProxyEndpoint | undefined {
  if (header === undefined || header.command !== 'proxy' || (header.family !== 'tcp4' && header.family !== 'tcp6')) return undefined;
  return header.source;
}

function proxiedDestination(header: ProxyHeader | undefined): ProxyEndpoint | undefined {
  if (header === undefined || header.command !== 'proxy' || (header.family !== 'tcp4' && header.family !== 'tcp6')) return undefined;
  return header.destination;
}

/** The client and the address it reached, from a PROXY header for a proxied TCP connection; else none. */
function proxiedEnds(header: ProxyHeader | undefined): ProxiedEnds | undefined {
  const source = proxiedSource(header);
  return source === undefined ? undefined : { source, destination: proxiedDestination(header) };
}

/** The TLS server wraps the accepted socket as `_parent` (Node's own name); the client's ends ride on it. */
const proxiedOf = new WeakMap<Socket, ProxiedEnds>();

function parentOf(socket: TLSSocket): Socket | undefined {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return typeof parent === 'object' && parent !== null ? (parent as Socket) : undefined;
}


class Worker {
  readonly id: number;
  #log: Logger;
  readonly #metrics = new Metrics();
  readonly #registry = new ConnectionRegistry();
  readonly #sticky = new OpenKeys();
  readonly #pins = new PinTable();
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
  /** Listening sockets by key (config/reload.ts listenerKeys). */
  readonly #listeners = new Map<string, OpenListener>();
  /** Handles sent by 'listen-handle', by "seq:index", until an apply takes them. */
  readonly #handles = new Map<string, Deferred<unknown>>();
  /** Applies run one at a time, in the order they came. */
  #applying: Promise<void> = Promise.resolve();
  #stopping = false;
  /** Per load-reading upstream, the counts last sent to the primary. */
  #sentLoad = new Map<string, number[]>();
  /** The other workers' load as last received, re-applied while retired pools still hold load. */
  #remoteLoad: TargetLoad | null = null;
  readonly #loadTimer: NodeJS.Timeout;
  /** The soft RLIMIT_NOFILE after the raise at start (-1: unlimited), and the per-accept check against it. */
  readonly #fdLimit: number;
  readonly #fds: FdBudget;
  /** fd_limit refusals already logged, and when the last line went out. */
  #fdRefusalsLogged = 0;
  #fdLoggedAt = 0;

  constructor(id: number, log: Logger, fdLimit: number) {
    this.id = id;
    this.#log = log;
    this.#fdLimit = fdLimit;
    this.#fds = new FdBudget(fdLimit);
    const worker = this;
    this.#source = {
      get current() {
        return worker.#current().ctx;
      },
    };
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
    this.#logFdRefusals();
    if (hadRetired && this.#remoteLoad !== null) this.#applyRemoteLoad(this.#remoteLoad);
  }

  /** One line per FD_LOG_INTERVAL_MS at most, with the count since the last, never one per connection. */
  #logFdRefusals(): void {
    const refused = this.#metrics.refusedCount('fd_limit');
    if (refused === this.#fdRefusalsLogged) return;
    const now = Date.now();
    if (now - this.#fdLoggedAt < FD_LOG_INTERVAL_MS) return;
    this.#log.warn(
      { refused: refused - this.#fdRefusalsLogged, fdLimit: this.#fdLimit, reserve: FD_RESERVE },
      'connections refused: out of file descriptors (raise the hard limit: LimitNOFILE= in systemd, ulimit -Hn)',
    );
    this.#fdRefusalsLogged = refused;
    this.#fdLoggedAt = now;
  }

  #closeUnusedRetired(): void {
    if (this.#retired.length === 0) return;
    this.#retired = this.#retired.filter((pool) => {
      if (pool.busy) return true;
      pool.close();
      return false;
    });
  }

  /** Open requests + tunnels to `target` in the retired pools of `upstream` (they still load the backend). */
  #retiredActive(upstream: string, target: string): number {
    let n = 0;
    for (const pool of this.#retired) {
      if (pool.name !== upstream) continue;
      for (const t of pool.targets) if (t.id === target) n += t.active;
    }
    return n;
  }

  /** A pool's load per target as this worker reports it: its own requests and tunnels, retired pools' too. */
  #loadOf(pool: UpstreamPool): number[] {
    if (this.#retired.length === 0) return pool.targets.map((t) => t.active);
    return pool.targets.map((t) => t.active + this.#retiredActive(pool.name, t.id));
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
      const withRetired = this.#retired.length === 0 ? counts : counts.map((n, i) => n + (i < pool.targets.length ? this.#retiredActive(name, pool.targets[i].id) : 0));
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
    this.#dispatch(msg, handle);
  }

  #dispatch(msg: ToWorker, handle: unknown): void {
    const at = ++this.#received;
    switch (msg.type) {
      case 'apply': {
        const run = (): Promise<void> => this.#apply(msg, at);
        this.#applying = this.#applying.then(run, run);
        return;
      }
      case 'listen-handle':
        this.#handleSlot(msg.seq, msg.index).resolve(handle);
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

  #handleSlot(seq: number, index: number): Deferred<unknown> {
    const id = `${seq}:${index}`;
    let d = this.#handles.get(id);
    if (d === undefined) this.#handles.set(id, (d = deferred<unknown>()));
    return d;
  }

  /** The handle of assignment `index` of apply `seq`, once its 'listen-handle' message is here. */
  async #takeHandle(seq: number, index: number): Promise<unknown> {
    const d = this.#handleSlot(seq, index);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no listening socket from the primary for listener ${index} within ${HANDLE_TIMEOUT_MS}ms`)), HANDLE_TIMEOUT_MS);
    });
    try {
      return await Promise.race([d.promise, timeout]);
    } finally {
      clearTimeout(timer);
      this.#handles.delete(`${seq}:${index}`);
    }
  }

  /**
   * Serves `msg`'s config: builds the runtime (reusing unchanged pools), opens the sockets of new listeners,
   * then swaps everything at once; on any failure nothing changes. At boot a failure ends the process.
   */
  async #apply(msg: ApplyMessage, at: number): Promise<void> {
    const boot = this.#runtime === null;
    try {
      if (this.#stopping) throw new ApplyError('the worker is stopping');
      const ports = await this.#applyOrThrow(msg, at);
      send({ type: 'applied', seq: msg.seq, generation: msg.generation, ok: true, ports });
    } catch (err) {
      const e = err instanceof ApplyError ? err : new ApplyError((err as Error).message);
      send({ type: 'applied', seq: msg.seq, generation: msg.generation, ok: false, error: e.message, errors: e.errors });
      if (boot) {
        // without a runtime this worker cannot serve: exit, the primary logs it and restarts with backoff
        this.#log.fatal({ err: e, generation: msg.generation }, 'cannot start serving the config');
        process.exit(1);
      }
      this.#log.error({ err: e, generation: msg.generation }, 'config not applied: this worker keeps the running one');
    } finally {
      // handles sent for this apply that it never took (it failed first) must not keep their sockets open
      for (const a of msg.listeners) if (a.via === 'handle' && this.#handles.has(`${msg.seq}:${a.index}`)) this.#takeHandle(msg.seq, a.index).then(closeStray, () => {});
    }
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

  async #applyOrThrow(msg: ApplyMessage, at: number): Promise<number[]> {
    const loaded = loadConfigText(msg.text, msg.file);
    if (!loaded.ok) throw new ApplyError(`invalid config\n${formatErrors(msg.file, loaded.errors)}`, loaded.errors);
    const config = loaded.config;
    const log = this.#runtime === null || this.#runtime.config.log.level !== config.log.level ? createLogger(config.log.level, { worker: this.id }) : this.#log;
    const previous = this.#runtime ?? undefined;
    // before any pool is built: cookie balancers map values to targets with it (the same in every apply)
    setStickySecret(msg.stickySecret);
    const deps: RuntimeDeps = { log, worker: this.id, metrics: this.#metrics, sticky: this.#sticky, pins: this.#pins, limits: this.#limits };
    let next: Runtime;
    try {
      // a changed upstream's new pool starts with its discovered targets: no request of it finds none
      const sets = Object.fromEntries([...this.#setsFor(msg, at)].map(([upstream, known]) => [upstream, known.targets]));
      next = buildRuntime(config, msg.generation, deps, previous, sets);
    } catch (err) {
      throw new ApplyError(`cannot build the runtime: ${(err as Error).message}`);
    }
    // pools this apply made (closed again if it fails); the others are the running runtime's, untouched
    const fresh = previous === undefined ? [...next.pools.values()] : poolsLeftBehind(next, previous);
    for (const c of this.#targetControl.values()) this.#applyControl(c, next);

    // New sockets first: they hold what they accept until the swap below.
    const opened: Array<{ entry: OpenListener; held: Socket[] }> = [];
    const wanted = new Set<string>();
    const ports: number[] = [];
    try {
      for (const a of msg.listeners) {
        wanted.add(a.key);
        if (a.via === 'keep') {
          const kept = this.#listeners.get(a.key);
          if (kept === undefined) throw new ApplyError(`listener ${a.key} was to be kept, but this worker has no socket for it`);
          ports[a.index] = kept.port;
          continue;
        }
        const held: Socket[] = [];
        // Accepted paused (ACCEPT_OPTIONS): nothing is read until the accept path takes it as a fresh one.
        const hold: OnConnection = (socket) => {
          if (held.length >= MAX_HELD_SOCKETS) socket.destroy();
          else held.push(socket.on('error', ignoreHeldError));
        };
        const entryRef: { entry?: OpenListener } = {};
        const onConnection: OnConnection = (socket) => {
          // Refused here, counted and logged, rather than accepted into a connection whose upstream socket would
          // find no descriptor (or dropped silently by libuv at EMFILE).
          if (!this.#fds.admit(fdOf(socket))) return this.#refuseForFds(socket);
          if (entryRef.entry === undefined) hold(socket);
          else entryRef.entry.onConnection(socket);
        };
        const options: ListenOptions = { ...ACCEPT_OPTIONS, backlog: config.listeners[a.index]?.backlog };
        const server = a.via === 'handle' ? await listenOnHandle(await this.#takeHandle(msg.seq, a.index), onConnection, options) : await listenReusePort(a.host, a.port, onConnection, options);
        server.on('error', (err) => this.#log.error({ err, listener: a.key }, 'listener error'));
        const entry: OpenListener = { key: a.key, server, port: boundAddress(server).port, onConnection: hold };
        entryRef.entry = entry;
        opened.push({ entry, held });
        ports[a.index] = entry.port;
      }
      if (this.#stopping) throw new ApplyError('the worker is stopping');
      // TLS contexts are built here, from the certificate files as they are now: renewed files take effect.
      const handlers = config.listeners.map((_, index) => this.#handlerFor(config, index, ports[index], msg.ticketKeys));
      // The swap: nothing below can fail.
      this.#runtime = next;
      native()?.setPipeCap(config.limits.max_pipes);
      this.#log = log;
      for (const a of msg.listeners) {
        const entry = a.via === 'keep' ? this.#listeners.get(a.key) : opened.find((o) => o.entry.key === a.key)?.entry;
        if (entry !== undefined) entry.onConnection = handlers[a.index];
      }
      for (const { entry, held } of opened) {
        this.#listeners.set(entry.key, entry);
        for (const socket of held.splice(0)) {
          socket.off('error', ignoreHeldError);
          if (!socket.destroyed) entry.onConnection(socket);
        }
      }
    } catch (err) {
      for (const { entry, held } of opened) {
        entry.server.close();
        for (const socket of held) socket.destroy();
      }
      for (const pool of fresh) pool.close();
      throw err;
    }
    for (const [key, entry] of this.#listeners) {
      if (wanted.has(key)) continue;
      // stops accepting; connections it accepted are in the registry and go on
      entry.server.close();
      this.#listeners.delete(key);
    }
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
    return ports;
  }

  /** The accept path of listener `index` of `config` (bound to `port`), with its own TLS server. */
  #handlerFor(config: Config, index: number, port: number, ticketKeys: string): OnConnection {
    const cfg = config.listeners[index];
    const info: ListenerInfo = { scheme: cfg.tls === undefined ? 'http' : 'https', port };
    const accept = (socket: ByteSocket, proxied?: ProxiedEnds) => {
      this.#metrics.connectionAccepted();
      handleConnection(socket, info, this.#source, this.#registry, proxied);
    };
    let tlsServer: TlsServer | undefined;
    // a TLS listener without certificates only passes names through: nothing to terminate, no server
    if (cfg.tls !== undefined && cfg.tls.certificates.length > 0) {
      try {
        tlsServer = createTlsServer(cfg.tls, { ...LISTEN_OPTIONS, ticketKeys: Buffer.from(ticketKeys, 'base64') }, (socket: TLSSocket) => {
          const parent = parentOf(socket);
          accept(socket, parent === undefined ? undefined : proxiedOf.get(parent));
        });
      } catch (err) {
        throw new ApplyError(`listeners[${index}]: ${(err as Error).message}`);
      }
      tlsServer.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => this.#handshakeFailed(err, socket));
    }
    return this.#connectionLimit(config, index, this.#acceptPath(config, index, accept, tlsServer));
  }

  /**
   * limits.connections_per_ip before anything is read: a client already at its limit is closed at accept, so it
   * costs no TLS handshake. The connection counts itself once let in (connection.ts, #countRelay for L4); a
   * listener with a PROXY header learns the client only from it, so there those alone decide.
   */
  #connectionLimit(config: Config, index: number, path: OnConnection): OnConnection {
    const max = config.limits.connections_per_ip;
    const cfg = config.listeners[index];
    if (max === 'off' || cfg.proxy_protocol !== undefined) return path;
    const limits = this.#limits;
    const prefix = config.limits.ipv6_prefix;
    return (socket) => {
      const address = socket.remoteAddress ?? '';
      const key = clientKey(address, prefix);
      if (limits.connections.count(key) < max) return path(socket);
      this.#metrics.connectionRefused('connections_per_ip');
      limits.connectionLog.refused(key, address.startsWith('::ffff:') ? address.slice(7) : address, Date.now());
      socket.destroy();
    };
  }

  /**
   * What a listener does with each accepted socket, compiled once: straight to HTTP or TLS when there is no
   * preface to read (the common case costs nothing more); else PROXY header and/or ClientHello first, then
   * HTTP, TLS termination, or an L4 relay (tcp listener, passthrough name).
   */
  #acceptPath(config: Config, index: number, accept: (socket: ByteSocket, proxied?: ProxiedEnds) => void, tlsServer: TlsServer | undefined): OnConnection {
    const cfg = config.listeners[index];
    let trusted: ((address: string) => boolean) | undefined;
    if (cfg.proxy_protocol !== undefined) {
      const m = createCidrMatcher(cfg.proxy_protocol.trusted);
      // the schema checked every CIDR: failing here means the two disagree, which must not go unnoticed
      if (!m.ok) throw new Error(`listener ${index}: invalid proxy_protocol.trusted: ${m.errors.map((e) => e.reason).join('; ')}`);
      trusted = m.match;
    }
    const passthrough = cfg.tls?.passthrough !== undefined && cfg.tls.passthrough.length > 0 ? new PassthroughTable(cfg.tls.passthrough) : undefined;
    const tcpUpstream = cfg.mode === 'tcp' ? cfg.upstream : undefined;
    const terminate = (socket: Socket, proxied?: ProxiedEnds): void => {
      if (tlsServer === undefined) {
        // plain HTTP with nothing read yet, its ends the socket's own (no PROXY header named others): onto native
        // I/O when the addon has it (the net.Socket is closed)
        const moved = proxied === undefined ? adoptNative(socket, LISTEN_OPTIONS) : undefined;
        if (moved !== undefined) {
          accept(moved);
          return;
        }
        accept(socket, proxied);
        socket.resume(); // the preface reader left it paused; a 'data' listener alone does not restart it
        return;
      }
      if (proxied !== undefined) proxiedOf.set(socket, proxied);
      tlsServer.emit('connection', socket);
    };
    if (trusted === undefined && passthrough === undefined && tcpUpstream === undefined) return (socket) => terminate(socket);

    const timeout = cfg.tls !== undefined ? cfg.tls.handshake_timeout : config.timeouts.head;
    const opts = { proxy: trusted !== undefined, clientHello: passthrough !== undefined, timeoutMs: timeout > 0 ? timeout : PREFACE_FALLBACK_MS };
    const l4 = (socket: Socket, mode: 'tcp' | 'passthrough', upstream: string, r: PrefaceResult & { kind: 'done' }): void => {
      // the runtime current at accept time: a reload in between gives the connection the new pool
      const { ctx, l4ctx } = this.#current();
      const pool = ctx.pools.get(upstream);
      if (pool === undefined) {
        // the schema checks references; a runtime without the pool is a bug, not the client's fault
        this.#log.error({ listener: index, upstream }, 'L4 upstream missing from the runtime');
        socket.destroy();
        return;
      }
      this.#metrics.connectionAccepted();
      const source = proxiedSource(r.proxy) ?? endpointOf(socket.remoteAddress, socket.remotePort);
      const destination = proxiedDestination(r.proxy) ?? endpointOf(socket.localAddress, socket.localPort);
      const onEnd = this.#countRelay(ctx.config, source?.address ?? socket.remoteAddress ?? '');
      if (onEnd === null) {
        socket.destroy();
        return;
      }
      forwardL4(socket, { mode, pool, rest: r.rest, source, destination, sni: r.hello?.sni, onEnd }, l4ctx, this.#registry);
    };
    // a tcp listener without PROXY has nothing to read first: the server may be the one to speak (SMTP, MySQL)
    if (tcpUpstream !== undefined && trusted === undefined) return (socket) => l4(socket, 'tcp', tcpUpstream, NO_PREFACE);
    return (socket) => {
      if (trusted !== undefined && !trusted(socket.remoteAddress ?? '')) {
        this.#refused(socket, index, 'untrusted', 'PROXY header sender not in proxy_protocol.trusted');
        socket.destroy();
        return;
      }
      readPreface(socket, opts, (r) => {
        if (r.kind === 'failed') {
          this.#refused(socket, index, r.reason, r.detail);
          return;
        }
        if (tcpUpstream !== undefined) return l4(socket, 'tcp', tcpUpstream, r);
        const upstream = passthrough?.match(r.hello?.sni);
        if (upstream !== undefined) return l4(socket, 'passthrough', upstream, r);
        if (cfg.tls !== undefined && tlsServer === undefined) return this.#unknownName(socket, index, r.hello?.sni);
        // peeking never loses a byte: what was read goes back in front of the socket for its next reader
        if (r.rest !== null) socket.unshift(r.rest);
        terminate(socket, proxiedEnds(r.proxy));
      });
    };
  }

  /**
   * limits.connections_per_ip for an L4 relay (tcp listener, TLS passthrough): counted until it ends (the
   * returned release), refused (null: counted and logged here; the caller closes it), or no limit (undefined).
   */
  #countRelay(config: Config, address: string): (() => void) | null | undefined {
    const max = config.limits.connections_per_ip;
    if (max === 'off') return undefined;
    const limits = this.#limits;
    const key = clientKey(address, config.limits.ipv6_prefix);
    if (limits.connections.acquire(key, max)) return () => limits.connections.release(key);
    this.#metrics.connectionRefused('connections_per_ip');
    limits.connectionLog.refused(key, address.startsWith('::ffff:') ? address.slice(7) : address, Date.now());
    return null;
  }

  /** Too few descriptors left for this connection and its upstream: closed at once, counted, logged by #tick. */
  #refuseForFds(socket: Socket): void {
    socket.on('error', ignoreHeldError);
    socket.destroy(); // closes the fd now (uv_close), so the reserve holds for what is already accepted
    this.#metrics.connectionRefused('fd_limit');
    // the first refusal after a quiet spell is said at once; the tick then batches the rest
    this.#logFdRefusals();
  }

  /** A connection closed before routing (untrusted PROXY sender, bad or missing preface): counted, debug log. */
  #refused(socket: Socket, index: number, reason: RefusedReason, detail?: string): void {
    this.#metrics.connectionRefused(reason);
    if (this.#log.isLevelEnabled('debug')) this.#log.debug({ listener: index, reason, detail, remoteAddr: socket.remoteAddress }, 'connection refused before routing');
  }

  /**
   * A passthrough-only TLS listener met a name it does not pass through (or none): a TLS alert and a close,
   * counted, and one line like an L4 connection's (info with access logs, else debug).
   */
  #unknownName(socket: Socket, index: number, sni: string | undefined): void {
    const reason: RefusedReason = sni === undefined ? 'sni_missing' : 'sni_unknown';
    this.#metrics.connectionRefused(reason);
    const line = { listener: index, mode: 'passthrough', sni, remoteAddr: socket.remoteAddress, closedBy: 'refused', reason };
    if (this.#current().l4ctx.access) this.#log.info(line, 'no passthrough for this TLS name: alert sent, closed');
    else if (this.#log.isLevelEnabled('debug')) this.#log.debug(line, 'no passthrough for this TLS name: alert sent, closed');
    refuseClientHello(socket, sni);
  }

  /** Handshake failures are the client's business: counted, logged at debug, never fatal. */
  #handshakeFailed(err: NodeJS.ErrnoException, socket: TLSSocket): void {
    this.#metrics.tlsHandshakeError();
    if (this.#log.isLevelEnabled('debug')) {
      const error = new ProxyError('CLIENT_TLS_HANDSHAKE', `TLS handshake failed: ${err.message}`, { cause: err });
      this.#log.debug({ err: error, reason: err.code, remoteAddr: socket.remoteAddress }, 'tls handshake failed');
    }
  }

  #stats(): WorkerStats {
    const upstreamTargets: UpstreamTargetStatus[] = [];
    const upstreamLimits: UpstreamLimitStatus[] = [];
    for (const [name, pool] of this.#runtime?.pools ?? []) {
      for (const t of pool.report()) {
        const retired = this.#retired.length === 0 ? 0 : this.#retiredActive(name, t.target);
        upstreamTargets.push({
          upstream: name,
          ...t,
          // tunnels still held by retired pools load the same backend (and are in `remote` for balancing)
          active: t.active + retired,
          remote: Math.max(0, t.remote - retired),
        });
      }
      upstreamLimits.push({ upstream: name, ...pool.limits() });
    }
    const registry = this.#registry;
    const pipes = native()?.pipeStats();
    const metrics = this.#metrics.snapshot();
    if (pipes !== undefined) metrics.pipes = { open: pipes.open, inUse: pipes.inUse, cap: pipes.cap, copies: pipes.copies };
    let fdsOpen = 0;
    try {
      fdsOpen = readdirSync('/proc/self/fd').length;
    } catch {
      // not Linux: no count
    }
    return { metrics, connections: registry.size, tunnels: registry.tunnels, upstreamTargets, upstreamLimits, fds: { open: fdsOpen, limit: this.#fdLimit } };
  }

  /** Stops accepting at once, lets connections finish within the grace (see ConnectionRegistry.drain), exits. */
  async shutdown(reason: string): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    const grace = this.#runtime?.config.timeouts.shutdown_grace ?? 0;
    const registry = this.#registry;
    // close() stops accepting now; its callback would wait for every connection, the drain below does that.
    for (const entry of this.#listeners.values()) entry.server.close();
    this.#log.info({ reason, graceMs: grace, connections: registry.size, tunnels: registry.tunnels }, 'worker draining');
    setTimeout(() => {
      this.#log.warn({ connections: registry.size }, 'drain overran its grace: exiting');
      process.exit(1);
    }, grace + DRAIN_OVERRUN_MS).unref();
    let code = 0;
    try {
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
    process.exit(code);
  }
}

function send(msg: ToPrimary): void {
  // A closed channel means the primary is gone; 'disconnect' starts the shutdown, nothing to report here.
  if (process.connected && process.send !== undefined) process.send(msg, undefined, undefined, () => {});
}

/** A held socket (see MAX_HELD_SOCKETS) that fails while it waits is destroyed by Node; nothing else to do. */
function ignoreHeldError(): void {}

/** A handle nobody will listen on is closed, or it would keep the listening socket alive in this process. */
function closeStray(handle: unknown): void {
  if (typeof handle === 'object' && handle !== null && 'close' in handle && typeof handle.close === 'function') handle.close();
}

function main(): void {
  if (process.send === undefined) {
    process.stderr.write('portico: worker/main.js is started by the primary; run `portico start -c FILE`\n');
    process.exit(2);
  }
  const id = Number(process.env[WORKER_ENV.id]);
  if (!Number.isInteger(id) || id < 1) {
    process.stderr.write(`portico worker: ${WORKER_ENV.id} must be set by the primary\n`);
    process.exit(2);
  }
  // The primary raised (and logged) the limit already; a worker started some other way raises its own.
  const fds = raiseFdLimit();
  // The config comes with the first apply; until then, the default level.
  const worker = new Worker(id, createLogger('info', { worker: id }), fds.soft);
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
  process.on('disconnect', () => void worker.shutdown('primary gone'));
  send({ type: 'booted' });
}

main();
