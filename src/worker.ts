// Entry point of a worker process, forked by primary.ts: builds its runtime from the config file (router,
// pools, metrics, connection registry), accepts on the listeners the primary assigns, hands every client
// socket (TLS already terminated for https) to connection.ts, and drains on 'shutdown'. No data-path logic here
// beyond the accept path: a listener's preface (PROXY header, ClientHello) decides between HTTP, TLS and L4.
import type { Server, Socket } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { PassthroughTable, forwardL4, refuseClientHello, type L4Context } from './accept/l4.js';
import { listenOnHandle, listenReusePort, boundAddress, type ListenOptions, type OnConnection } from './accept/listener.js';
import { readPreface, type PrefaceResult } from './accept/preface.js';
import { createCidrMatcher, type ProxyEndpoint, type ProxyHeader } from './accept/proxy-protocol.js';
import { createTlsServer } from './accept/tls.js';
import { formatErrors, loadConfig } from './config/load.js';
import type { Config, ListenerConfig } from './config/schema.js';
import { ConnectionRegistry, handleConnection, type ConnectionContext, type ListenerInfo, type ProxiedEnds } from './connection.js';
import { ProxyError } from './errors.js';
import { WORKER_ENV, isToWorker, type ListenMessage, type TargetControl, type TargetLoad, type ToPrimary, type ToWorker, type UpstreamLimitStatus, type UpstreamTargetStatus, type WorkerStats } from './ipc.js';
import { createLogger, type Logger } from './log.js';
import { Metrics, type RefusedReason } from './metrics.js';
import { Router } from './router.js';
import { readsLoad } from './upstream/balancer.js';
import { UpstreamPool, type PoolHooks } from './upstream/pool.js';

/** A drain that outlives its grace by this much ends the process anyway (the primary kills at grace + 5 s). */
const DRAIN_OVERRUN_MS = 2_000;

const LISTEN_OPTIONS: ListenOptions = { allowHalfOpen: true };

/** What a listener that reads no preface hands on: no header, no hello, nothing read ahead. */
const NO_PREFACE: PrefaceResult & { kind: 'done' } = Object.freeze({ kind: 'done', proxy: undefined, hello: undefined, rest: null });

/** Bound of a preface (PROXY header, ClientHello) when its phase timeout is "off": never unbounded. */
const PREFACE_FALLBACK_MS = 60_000;

/**
 * How often a worker compares its per-target load with what it last sent the primary (least_conn across
 * workers, see Target.remote): one scan of the targets of load-reading upstreams, a message only on change.
 */
const LOAD_REPORT_MS = 100;

/** What connections of this worker share; rebuilt as a whole (never mutated) when the config changes. */
interface Runtime {
  readonly ctx: ConnectionContext;
  /** HTTP connections and L4 tunnels alike. */
  readonly registry: ConnectionRegistry;
  readonly l4ctx: L4Context;
}

function buildRuntime(config: Config, log: Logger, id: number, metrics: Metrics): Runtime {
  const pools = new Map<string, UpstreamPool>();
  for (const [name, upstream] of Object.entries(config.upstreams)) pools.set(name, new UpstreamPool(name, upstream, poolHooks(name, upstream.health.passive.fail_timeout, log)));
  const ctx: ConnectionContext = { config, router: new Router(config), pools, log, worker: id, metrics };
  const l4ctx: L4Context = { log, metrics, timeouts: { idle: config.tunnel.idle_timeout, lifetime: config.tunnel.max_lifetime }, access: config.log.access };
  return { ctx, registry: new ConnectionRegistry(), l4ctx };
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

function endpoint(address: string | undefined, port: number | undefined): ProxyEndpoint | undefined {
  return address === undefined || port === undefined ? undefined : { address, port };
}

/** The TLS server wraps the accepted socket as `_parent` (Node's own name); the client's ends ride on it. */
const proxiedOf = new WeakMap<Socket, ProxiedEnds>();

function parentOf(socket: TLSSocket): Socket | undefined {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return typeof parent === 'object' && parent !== null ? (parent as Socket) : undefined;
}

/** Passive health flips are per worker: one line each, so a flapping target shows in every worker's log. */
function poolHooks(upstream: string, failTimeoutMs: number, log: Logger): PoolHooks {
  return {
    passive(target, down, code) {
      if (down) log.warn({ upstream, target: target.id, reason: code ?? '5xx', downForMs: failTimeoutMs }, 'upstream target is out of this worker: passive health (max_fails reached)');
      else log.info({ upstream, target: target.id }, 'upstream target is back in this worker: passive health fail_timeout over');
    },
    panic(on) {
      if (on) log.warn({ upstream }, 'no usable target in upstream: trying every non-drained target anyway');
      else log.info({ upstream }, 'upstream has usable targets again');
    },
  };
}

class Worker {
  readonly id: number;
  #config: Config;
  #log: Logger;
  #metrics = new Metrics();
  #runtime: Runtime;
  /** Health and drain per "upstream\ntarget", as the primary sent them; a runtime rebuilt on reload needs them again. */
  #targetControl = new Map<string, TargetControl>();
  #servers: Server[] = [];
  /** Bound port per listener index, once listening. */
  #ports: Array<number | undefined>;
  #stopping = false;
  /** Per load-reading upstream, the counts last sent to the primary. */
  #sentLoad = new Map<string, number[]>();
  readonly #loadTimer: NodeJS.Timeout;

  constructor(id: number, config: Config, log: Logger) {
    this.id = id;
    this.#config = config;
    this.#log = log;
    this.#runtime = buildRuntime(config, log, id, this.#metrics);
    this.#ports = config.listeners.map(() => undefined);
    // Kept through the drain: tunnels still open in a draining worker still load their targets.
    this.#loadTimer = setInterval(() => this.#reportLoad(), LOAD_REPORT_MS).unref();
  }

  /** Sends this worker's load (every load-reading upstream) when any count changed since the last send. */
  #reportLoad(): void {
    let changed = false;
    const pools = this.#runtime.ctx.pools;
    for (const [name, pool] of pools) {
      if (!readsLoad(pool.config.balance)) continue;
      const sent = this.#sentLoad.get(name);
      const targets = pool.targets;
      if (sent === undefined || sent.length !== targets.length) {
        changed = true;
        break;
      }
      for (let i = 0; i < targets.length && !changed; i++) changed = sent[i] !== targets[i].active;
      if (changed) break;
    }
    if (!changed) return;
    const next = new Map<string, number[]>();
    for (const [name, pool] of pools) if (readsLoad(pool.config.balance)) next.set(name, pool.targets.map((t) => t.active));
    this.#sentLoad = next;
    // fromEntries defines own properties: an upstream named "__proto__" stays data.
    const load: TargetLoad = Object.fromEntries(next);
    send({ type: 'load', load });
  }

  /** The other workers' load from the primary; upstreams it leaves out have none. */
  #applyRemoteLoad(load: TargetLoad): void {
    for (const [name, pool] of this.#runtime.ctx.pools) {
      const counts = Object.hasOwn(load, name) ? load[name] : undefined;
      if (counts === undefined) {
        for (const t of pool.targets) t.remote = 0;
      } else if (!pool.setRemoteLoad(counts)) {
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
    switch (msg.type) {
      case 'listen':
        this.#listen(msg, handle).catch((err: unknown) => {
          // A listener this worker cannot open makes it useless: exit, the primary logs it and restarts.
          this.#log.fatal({ err, listener: msg.index }, 'cannot listen');
          process.exit(1);
        });
        return;
      case 'shutdown':
        void this.shutdown('primary asked');
        return;
      case 'stats-request':
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
        this.#applyRemoteLoad(msg.load);
        return;
    }
  }

  #applyControl(c: TargetControl): void {
    const pool = this.#runtime.ctx.pools.get(c.upstream);
    // Unknown here (the primary's config differs, e.g. mid-reload): still kept in #targetControl, which a
    // runtime rebuilt on reload must be given again (every entry through this method).
    if (pool === undefined || !pool.setTargetState(c.target, c)) this.#log.debug({ upstream: c.upstream, target: c.target }, 'target state for a target this runtime does not have');
  }

  async #listen(msg: ListenMessage, handle: unknown): Promise<void> {
    const cfg: ListenerConfig | undefined = this.#config.listeners[msg.index];
    if (cfg === undefined) throw new Error(`the primary assigned listener ${msg.index} but the config has ${this.#config.listeners.length} (did the file change?)`);
    if (this.#stopping || this.#ports[msg.index] !== undefined) {
      closeStray(handle);
      return;
    }
    // Known before the first connection for shared handles; for a reuse-port listener on port 0, once bound.
    let info: ListenerInfo = { scheme: cfg.tls === undefined ? 'http' : 'https', port: msg.via === 'reuse-port' ? msg.port : cfg.address.port };
    const accept = (socket: Socket, proxied?: ProxiedEnds) => {
      this.#metrics.connectionAccepted();
      handleConnection(socket, info, this.#runtime.ctx, this.#runtime.registry, proxied);
    };
    let tlsServer: TlsServer | undefined;
    // a TLS listener without certificates only passes names through: nothing to terminate, no server
    if (cfg.tls !== undefined && cfg.tls.certificates.length > 0) {
      tlsServer = createTlsServer(cfg.tls, { ...LISTEN_OPTIONS, ticketKeys: Buffer.from(msg.ticketKeys, 'base64') }, (socket: TLSSocket) => {
        const parent = parentOf(socket);
        accept(socket, parent === undefined ? undefined : proxiedOf.get(parent));
      });
      tlsServer.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => this.#handshakeFailed(err, socket));
    }
    const onConnection = this.#acceptPath(cfg, msg.index, accept, tlsServer);
    // a tcp listener without PROXY reads nothing itself: the relay finds the client's bytes still in the kernel
    const listenOptions = cfg.mode === 'tcp' && cfg.proxy_protocol === undefined ? { ...LISTEN_OPTIONS, pauseOnConnect: true } : LISTEN_OPTIONS;
    const server = msg.via === 'handle' ? await listenOnHandle(handle, onConnection, listenOptions) : await listenReusePort(msg.host, msg.port, onConnection, listenOptions);
    server.on('error', (err) => this.#log.error({ err, listener: msg.index }, 'listener error'));
    this.#servers.push(server);
    const port = boundAddress(server).port;
    if (info.port !== port) info = { scheme: info.scheme, port };
    this.#ports[msg.index] = port;
    if (this.#stopping) {
      server.close();
      return;
    }
    const ports = this.#ports.filter((p) => p !== undefined);
    if (ports.length === this.#ports.length) send({ type: 'ready', ports });
  }

  /**
   * What a listener does with each accepted socket, compiled once: straight to HTTP or TLS when there is no
   * preface to read (the common case costs nothing more); else PROXY header and/or ClientHello first, then
   * HTTP, TLS termination, or an L4 relay (tcp listener, passthrough name).
   */
  #acceptPath(cfg: ListenerConfig, index: number, accept: (socket: Socket, proxied?: ProxiedEnds) => void, tlsServer: TlsServer | undefined): OnConnection {
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
        accept(socket, proxied);
        socket.resume(); // the preface reader left it paused; a 'data' listener alone does not restart it
        return;
      }
      if (proxied !== undefined) proxiedOf.set(socket, proxied);
      tlsServer.emit('connection', socket);
    };
    if (trusted === undefined && passthrough === undefined && tcpUpstream === undefined) return (socket) => terminate(socket);

    const timeout = cfg.tls !== undefined ? cfg.tls.handshake_timeout : this.#config.timeouts.head;
    const opts = { proxy: trusted !== undefined, clientHello: passthrough !== undefined, timeoutMs: timeout > 0 ? timeout : PREFACE_FALLBACK_MS };
    const l4 = (socket: Socket, mode: 'tcp' | 'passthrough', upstream: string, r: PrefaceResult & { kind: 'done' }): void => {
      const { ctx, registry, l4ctx } = this.#runtime;
      const pool = ctx.pools.get(upstream);
      if (pool === undefined) {
        // the schema checks references; a runtime without the pool is a bug, not the client's fault
        this.#log.error({ listener: index, upstream }, 'L4 upstream missing from the runtime');
        socket.destroy();
        return;
      }
      this.#metrics.connectionAccepted();
      const source = proxiedSource(r.proxy) ?? endpoint(socket.remoteAddress, socket.remotePort);
      const destination = proxiedDestination(r.proxy) ?? endpoint(socket.localAddress, socket.localPort);
      forwardL4(socket, { mode, pool, rest: r.rest, source, destination, sni: r.hello?.sni }, l4ctx, registry);
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
    if (this.#runtime.l4ctx.access) this.#log.info(line, 'no passthrough for this TLS name: alert sent, closed');
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
    const { ctx, registry } = this.#runtime;
    const upstreamTargets: UpstreamTargetStatus[] = [];
    const upstreamLimits: UpstreamLimitStatus[] = [];
    for (const [name, pool] of ctx.pools) {
      const health = pool.health();
      pool.targets.forEach((t, i) => {
        const h = health[i];
        upstreamTargets.push({
          upstream: name,
          target: t.id,
          available: t.available,
          active: t.active,
          healthy: h.healthy,
          draining: h.draining,
          passiveDown: h.passiveDown,
          failures: h.failures,
          remote: t.remote ?? 0,
        });
      });
      upstreamLimits.push({ upstream: name, ...pool.limits() });
    }
    return { metrics: this.#metrics.snapshot(), connections: registry.size, tunnels: registry.tunnels, upstreamTargets, upstreamLimits };
  }

  /** Stops accepting at once, lets connections finish within the grace (see ConnectionRegistry.drain), exits. */
  async shutdown(reason: string): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    const grace = this.#config.timeouts.shutdown_grace;
    const { ctx, registry } = this.#runtime;
    // close() stops accepting now; its callback would wait for every connection, the drain below does that.
    for (const server of this.#servers) server.close();
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
    for (const pool of ctx.pools.values()) pool.close();
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

/** A handle nobody will listen on is closed, or it would keep the listening socket alive in this process. */
function closeStray(handle: unknown): void {
  if (typeof handle === 'object' && handle !== null && 'close' in handle && typeof handle.close === 'function') handle.close();
}

function main(): void {
  if (process.send === undefined) {
    process.stderr.write('portico: worker.js is started by the primary; run `portico start -c FILE`\n');
    process.exit(2);
  }
  const id = Number(process.env[WORKER_ENV.id]);
  const file = process.env[WORKER_ENV.config] ?? process.argv[2];
  if (!Number.isInteger(id) || id < 1 || file === undefined) {
    process.stderr.write(`portico worker: ${WORKER_ENV.id} and ${WORKER_ENV.config} must be set by the primary\n`);
    process.exit(2);
  }
  const loaded = loadConfig(file);
  if (!loaded.ok) {
    process.stderr.write(`portico worker ${id}: invalid config\n${formatErrors(file, loaded.errors)}\n`);
    process.exit(1);
  }
  const log = createLogger(loaded.config.log.level, { worker: id });
  process.on('uncaughtException', (err) => {
    // The data path must not depend on this: it is the last resort that turns a bug into a restart.
    log.fatal({ err }, 'uncaught exception: worker exits and the primary restarts it');
    process.exit(1);
  });
  const worker = new Worker(id, loaded.config, log);
  process.on('message', (msg: unknown, handle: unknown) => worker.onMessage(msg, handle));
  // The primary drives shutdown: Ctrl-C reaches the whole process group, and only the primary acts on it.
  process.on('SIGINT', () => {});
  // A SIGTERM sent to this worker alone drains it; the primary then starts a replacement.
  process.on('SIGTERM', () => void worker.shutdown('SIGTERM'));
  process.on('disconnect', () => void worker.shutdown('primary gone'));
  send({ type: 'booted' });
}

main();
