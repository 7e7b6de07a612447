// Applies each config the primary sends (boot, reload, roll-back): builds the next Runtime (reusing unchanged
// pools), opens the listening sockets of new addresses, then swaps runtime and accept paths at once; on any
// failure it closes what it opened and nothing changes. It owns the listening sockets, kept across applies while
// their address stays; what outlives a runtime (target states, discovered sets, retired pools) is the Worker's.
import { deferred, type Deferred } from '../core/util.js';
import { openOnHandle, openReusePort, type AcceptedSocket, type Listening, type ListenOptions, type OnConnection } from '../accept/listener.js';
import type { ConfigError } from '../config/load.js';
import { receivedConfig } from '../config/transfer.js';
import type { Config } from '../config/schema.js';
import type { ApplyMessage } from './ipc.js';
import { createLogger, type Logger } from '../core/log.js';
import { fdNumberOf } from '../tunnel/splice.js';
import { buildRuntime, poolsLeftBehind, type Runtime, type RuntimeDeps } from './runtime.js';
import type { TerminateServices } from '../terminate/handoff.js';
import type { TargetSpec } from '../upstream/pool.js';
import { setStickySecret } from '../upstream/hash-key.js';
import { ACCEPT_OPTIONS, acceptModeOf, deferAcceptOf, passthroughAtAcceptOf, ignoreHeldError, type AcceptPaths } from './accept-paths.js';
import { send } from './send.js';
import { native } from '../native/addon.js';

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
  readonly server: Listening;
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

/** What an apply reads from its Worker and hands back to it. */
export interface ApplyHost {
  readonly id: number;
  /** null until the first apply. */
  readonly runtime: Runtime | null;
  readonly stopping: boolean;
  readonly log: Logger;
  /** What the next runtime shares with the running one (metrics, sticky tables, limits), logging to `log`. */
  runtimeDeps(log: Logger): RuntimeDeps;
  /** The worker's uWebSockets.js services for `config` (started on first need); throws when they cannot start. */
  terminateFor(config: Config, log: Logger): Promise<TerminateServices | undefined>;
  /** The discovered sets for apply `msg` (message number `at`). */
  setsFor(msg: ApplyMessage, at: number): Map<string, { readonly targets: readonly TargetSpec[]; readonly at: number }>;
  /** The target states the primary sent so far, onto a runtime not serving yet. */
  applyControls(next: Runtime): void;
  /** The swap of runtime and logger: must not fail. */
  swap(next: Runtime, log: Logger): void;
  /** After the swap: this config's discovered sets, the pools `previous` left behind retired, load re-sent. */
  settle(msg: ApplyMessage, at: number, previous: Runtime | undefined, next: Runtime): void;
}

export class Applier {
  readonly #host: ApplyHost;
  readonly #paths: AcceptPaths;
  /** Listening sockets by key (config/reload.ts listenerKeys). */
  readonly #listeners = new Map<string, OpenListener>();
  /** Handles sent by 'listen-handle', by "seq:index", until an apply takes them. */
  readonly #handles = new Map<string, Deferred<unknown>>();
  /** Applies run one at a time, in the order they came. */
  #applying: Promise<void> = Promise.resolve();

  constructor(host: ApplyHost, paths: AcceptPaths) {
    this.#host = host;
    this.#paths = paths;
  }

  /** Queues apply `msg` (message number `at`) behind those that came before it. */
  enqueue(msg: ApplyMessage, at: number): void {
    const run = (): Promise<void> => this.#apply(msg, at);
    this.#applying = this.#applying.then(run, run);
  }

  /** The listening socket of assignment `index` of apply `seq` (a 'listen-handle' message). */
  receiveHandle(seq: number, index: number, handle: unknown): void {
    this.#handleSlot(seq, index).resolve(handle);
  }

  /** Who accepts the connections of the listening sockets (all of one kind: native I/O is per process). */
  get accept(): 'native' | 'node' | undefined {
    for (const entry of this.#listeners.values()) return entry.server.native ? 'native' : 'node';
    return undefined;
  }

  /** The keys of the listening sockets the kernel defers (TCP_DEFER_ACCEPT in force, read back from the socket). */
  get deferring(): string[] {
    return [...this.#listeners.values()].filter((entry) => entry.server.deferAcceptSeconds() > 0).map((entry) => entry.key);
  }

  /**
   * Stops accepting on every listening socket (the drain); connections already accepted go on, and so do the
   * clients already in the accept queues (end() accepts them before it closes: a hand-over to a new Portico must
   * not reset them). Resolves once every socket is closed.
   */
  async stopAccepting(): Promise<void> {
    await Promise.all([...this.#listeners.values()].map((entry) => entry.server.end()));
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
    const host = this.#host;
    const boot = host.runtime === null;
    try {
      if (host.stopping) throw new ApplyError('the worker is stopping');
      const ports = await this.#applyOrThrow(msg, at);
      send({ type: 'applied', seq: msg.seq, generation: msg.generation, ok: true, ports });
    } catch (err) {
      const e = err instanceof ApplyError ? err : new ApplyError((err as Error).message);
      send({ type: 'applied', seq: msg.seq, generation: msg.generation, ok: false, error: e.message, errors: e.errors });
      if (boot) {
        // without a runtime this worker cannot serve: exit, the primary logs it and restarts with backoff
        host.log.fatal({ err: e, generation: msg.generation }, 'cannot start serving the config');
        process.exit(1);
      }
      host.log.error({ err: e, generation: msg.generation }, 'config not applied: this worker keeps the running one');
    } finally {
      // handles sent for this apply that it never took (it failed first) must not keep their sockets open
      for (const a of msg.listeners) if (a.via === 'handle' && this.#handles.has(`${msg.seq}:${a.index}`)) this.#takeHandle(msg.seq, a.index).then(closeStray, () => {});
    }
  }

  async #applyOrThrow(msg: ApplyMessage, at: number): Promise<number[]> {
    // validated by the primary: what it accepted is served as it is (files it named are read below, as they are now)
    const config = receivedConfig(msg.config);
    const host = this.#host;
    const running = host.runtime;
    const log = running === null || running.config.log.level !== config.log.level ? createLogger(config.log.level, { worker: host.id }) : host.log;
    const previous = running ?? undefined;
    // before any pool is built: cookie balancers map values to targets with it (the same in every apply)
    setStickySecret(msg.stickySecret);
    let terminate: TerminateServices | undefined;
    try {
      terminate = await host.terminateFor(config, log);
    } catch (err) {
      throw new ApplyError(`cannot start terminated WebSocket: ${(err as Error).message}`);
    }
    const deps: RuntimeDeps = { ...host.runtimeDeps(log), terminate };
    let next: Runtime;
    try {
      // a changed upstream's new pool starts with its discovered targets: no request of it finds none
      const sets = Object.fromEntries([...host.setsFor(msg, at)].map(([upstream, known]) => [upstream, known.targets]));
      next = buildRuntime(config, msg.generation, deps, previous, sets);
    } catch (err) {
      throw new ApplyError(`cannot build the runtime: ${(err as Error).message}`);
    }
    // pools this apply made (closed again if it fails); the others are the running runtime's, untouched
    const fresh = previous === undefined ? [...next.pools.values()] : poolsLeftBehind(next, previous);
    host.applyControls(next);

    // New sockets first: they hold what they accept until the swap below.
    const paths = this.#paths;
    const fds = paths.fds;
    const opened: Array<{ entry: OpenListener; held: AcceptedSocket[] }> = [];
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
        const held: AcceptedSocket[] = [];
        // Accepted paused (ACCEPT_OPTIONS): nothing is read until the accept path takes it as a fresh one.
        const hold: OnConnection = (socket) => {
          if (held.length >= MAX_HELD_SOCKETS) socket.destroy();
          // paused: a natively accepted socket that reads at once keeps what comes until its owner resumes it
          else held.push(socket.on('error', ignoreHeldError).pause());
        };
        const entryRef: { entry?: OpenListener } = {};
        const onConnection: OnConnection = (socket) => {
          // Refused here, counted and logged, rather than accepted into a connection whose upstream socket would
          // find no descriptor (or dropped silently by libuv at EMFILE).
          if (!fds.admit(fdNumberOf(socket))) return paths.refuseForFds(socket);
          if (entryRef.entry === undefined) hold(socket);
          else entryRef.entry.onConnection(socket);
        };
        const options: ListenOptions = { ...ACCEPT_OPTIONS, backlog: config.listeners[a.index]?.backlog };
        const onError = (err: Error) => host.log.error({ err, listener: a.key }, 'listener error');
        const server = a.via === 'handle' ? await openOnHandle(await this.#takeHandle(msg.seq, a.index), onConnection, options, onError) : await openReusePort(a.host, a.port, onConnection, { ...options, mode: acceptModeOf(config, a.index), deferAccept: deferAcceptOf(config, a.index) }, onError);
        const entry: OpenListener = { key: a.key, server, port: server.port, onConnection: hold };
        entryRef.entry = entry;
        opened.push({ entry, held });
        ports[a.index] = entry.port;
      }
      if (host.stopping) throw new ApplyError('the worker is stopping');
      // TLS contexts are built here, from the certificate files as they are now: renewed files take effect.
      const handlers = config.listeners.map((_, index) => paths.handlerFor(config, index, ports[index], msg.ticketKeys, ports));
      // The swap: nothing below can fail.
      host.swap(next, log);
      native()?.setPipeCap(config.limits.max_pipes);
      for (const a of msg.listeners) {
        const entry = a.via === 'keep' ? this.#listeners.get(a.key) : opened.find((o) => o.entry.key === a.key)?.entry;
        if (entry === undefined) continue;
        entry.onConnection = handlers[a.index];
        // a kept socket may serve another kind of listener now (plain <-> TLS, tcp, PROXY)
        entry.server.setMode(acceptModeOf(config, a.index), passthroughAtAcceptOf(config, a.index));
        entry.server.setDeferAccept(deferAcceptOf(config, a.index));
        paths.serveL4(entry.key, entry.server, config, a.index, next);
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
    host.settle(msg, at, previous, next);
    return ports;
  }
}

/** A handle nobody will listen on is closed, or it would keep the listening socket alive in this process. */
export function closeStray(handle: unknown): void {
  if (typeof handle === 'object' && handle !== null && 'close' in handle && typeof handle.close === 'function') handle.close();
}

