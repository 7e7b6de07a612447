// Listening sockets. Two strategies share one worker-side API: a bound socket created by the primary and shared
// with every worker (the fallback), or one SO_REUSEPORT listener per worker: the addon's socket served by native
// accept (accept4 in batches on the addon's epoll set, no net.Socket per connection) when native I/O is on, else
// Node's net.Server (built-in reusePort on Node >= 22.12, or the addon's socket through `listen({ fd })`).
// The primary only binds, it never listens or accepts.
// Accepted sockets go to an `onConnection` callback; nothing above accept is imported here (DESIGN.md).
import net from 'node:net';
import { readFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { getSystemErrorName } from 'node:util';
import { native } from '../native/addon.js';
import { listenNative, nativeIoAvailable, type AcceptMode, type NativeListener, type NativeSocket } from '../native/io.js';
import { nativeL4, type L4Addon } from '../native/l4.js';

export type ListenStrategy = 'shared-handle' | 'reuse-port';

/** Node 20 ignores `reusePort` (the second bind gets EADDRINUSE); Node >= 22.12 honours it. */
export function listenStrategy(version: string = process.versions.node): ListenStrategy {
  const [major, minor] = version.split('.').map(Number);
  return major > 22 || (major === 22 && minor >= 12) ? 'reuse-port' : 'shared-handle';
}

/** The strategy of this process: built-in reusePort, else the addon's SO_REUSEPORT socket, else a shared handle. */
export function chooseListenStrategy(): ListenStrategy {
  if (listenStrategy() === 'reuse-port') return 'reuse-port';
  return native() !== undefined ? 'reuse-port' : 'shared-handle';
}

export interface BoundAddress {
  address: string;
  family: 'IPv4' | 'IPv6';
  port: number;
}

/**
 * The libuv TCP handle behind a net.Server, as `net._createServerHandle` returns it. node:cluster's SCHED_NONE
 * mode uses the same function to bind in the primary without listening and sends the handle to its workers;
 * `child.send(msg, handle)` carries a raw TCP handle and `server.listen(handle)` adopts one. No public API
 * creates a bound socket that does not listen (net.Server.listen always accepts), and a primary that listened
 * would accept connections and leave them hanging. Only this module touches the internal API.
 */
interface RawTcpHandle {
  getsockname(out: Partial<BoundAddress>): number;
  close(callback?: () => void): void;
}

type CreateServerHandle = (address: string, port: number, addressType: 4 | 6, fd: undefined, flags: number) => RawTcpHandle | number;

const createServerHandle = (net as unknown as { _createServerHandle?: CreateServerHandle })._createServerHandle;

/** A socket bound by the primary, not listening: workers make it listen and accept; the primary never does. */
export class SharedHandle {
  readonly bound: BoundAddress;
  #raw: RawTcpHandle | undefined;

  /** @internal use bindShared() */
  constructor(raw: RawTcpHandle, bound: BoundAddress) {
    this.#raw = raw;
    this.bound = bound;
  }

  /**
   * Sends the handle to a worker, which gets it as the second argument of its 'message' event. The primary
   * keeps its own copy open (a restarted worker needs it) until close().
   */
  sendTo(child: ChildProcess, message: object): Promise<void> {
    const raw = this.#raw;
    if (raw === undefined) return Promise.reject(new Error('listening handle already closed'));
    return new Promise((resolve, reject) => {
      // The typings only list net.Server/Socket; child_process sends a raw TCP handle as 'net.Native'.
      // A closed channel reports through the callback (ERR_IPC_CHANNEL_CLOSED), never by throwing.
      child.send(message, raw as unknown as net.Server, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Closes the primary's copy. The socket itself closes (new connections are refused) once every worker
   * has closed its copy too.
   */
  close(): Promise<void> {
    const raw = this.#raw;
    this.#raw = undefined;
    if (raw === undefined) return Promise.resolve();
    return new Promise((resolve) => raw.close(resolve));
  }
}

/** An IP literal for `host` (names are resolved once, first address wins). */
export async function resolveHost(host: string): Promise<{ ip: string; family: 4 | 6 }> {
  const family = net.isIP(host);
  if (family === 4 || family === 6) return { ip: host, family };
  try {
    const found = await lookup(host);
    return { ip: found.address, family: found.family === 6 ? 6 : 4 };
  } catch (err) {
    throw new Error(`cannot resolve listener host "${host}": ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/** Primary side of 'shared-handle': binds host:port (port 0 picks one, shared by every worker). */
export async function bindShared(host: string, port: number): Promise<SharedHandle> {
  if (createServerHandle === undefined) {
    throw new Error(
      'this Node.js has no net._createServerHandle, which Portico uses to share a listening socket between ' +
        'worker processes on Node < 22.12; run Portico on Node >= 22.12 (per-worker reusePort listeners) instead',
    );
  }
  const { ip, family } = await resolveHost(host);
  const raw = createServerHandle(ip, port, family, undefined, 0);
  if (typeof raw === 'number') throw bindError(host, port, raw);
  const out: Partial<BoundAddress> = {};
  const err = raw.getsockname(out);
  if (err !== 0 || out.port === undefined) {
    raw.close();
    throw bindError(host, port, err);
  }
  return new SharedHandle(raw, { address: out.address ?? ip, family: out.family === 'IPv6' ? 'IPv6' : 'IPv4', port: out.port });
}

function bindError(host: string, port: number, errno: number, code?: string): Error {
  let name = code ?? `errno ${errno}`;
  try {
    if (code === undefined) name = getSystemErrorName(errno);
  } catch {
    // not a system error number: keep the number
  }
  const hint = name === 'EADDRINUSE' ? ' (address already in use)' : name === 'EACCES' ? ' (permission denied: ports below 1024 need privileges)' : name === 'EADDRNOTAVAIL' ? ' (no such local address)' : '';
  const err = new Error(`cannot listen on ${host}:${port}: ${name}${hint}`) as NodeJS.ErrnoException;
  err.code = name;
  return err;
}

let systemBacklog: number | undefined;

/**
 * The listen backlog when a listener sets none: the kernel's own cap, net.core.somaxconn (4096 on current
 * Linux; nginx and HAProxy use it too), read once. Node's default of 511 drops SYNs in a connection burst
 * long before the kernel would. 511 where /proc cannot be read.
 */
export function defaultBacklog(): number {
  if (systemBacklog !== undefined) return systemBacklog;
  systemBacklog = 511;
  try {
    const n = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
    if (Number.isInteger(n) && n >= 1) systemBacklog = Math.min(n, 65535);
  } catch {
    // not Linux, or /proc not mounted: keep Node's default
  }
  return systemBacklog;
}

/** A client connection as a listener hands it on: Node's socket, or a natively accepted one. */
export type AcceptedSocket = net.Socket | NativeSocket;

export type OnConnection = (socket: AcceptedSocket) => void;

export interface ListenOptions {
  /** Keep the writable side open when the client half-closes (half-close is forwarded, STYLE.md 4). */
  allowHalfOpen: boolean;
  /** Listen backlog (default: defaultBacklog(), the system's somaxconn). */
  backlog?: number;
  /**
   * Accepted sockets do not start reading: what the client sends stays in the kernel until the owner resumes
   * (or a splice relay takes the fd with nothing to replay). For listeners that read no preface.
   */
  pauseOnConnect?: boolean;
}

function createServer(onConnection: OnConnection, opts: ListenOptions): net.Server {
  // noDelay: a proxy forwards what it has at once; Nagle would add up to 40 ms to every small write.
  return net.createServer({ allowHalfOpen: opts.allowHalfOpen, noDelay: true, pauseOnConnect: opts.pauseOnConnect === true }, onConnection);
}

function listening(server: net.Server, start: () => void): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.once('listening', () => {
      server.off('error', onError);
      resolve(server);
    });
    start();
  });
}

/** Worker side of 'shared-handle': listens and accepts on the handle the primary sent. */
export function listenOnHandle(handle: unknown, onConnection: OnConnection, opts: ListenOptions): Promise<net.Server> {
  if (typeof handle !== 'object' || handle === null) return Promise.reject(new Error('no listening handle received from the primary'));
  const server = createServer(onConnection, opts);
  return listening(server, () => server.listen(handle, opts.backlog ?? defaultBacklog()));
}

/** A listening socket as a worker keeps it: a native listener or Node's net.Server, one surface. */
export interface Listening {
  readonly port: number;
  /** Accepted by the addon (no net.Socket per connection). */
  readonly native: boolean;
  /** Stops accepting now and closes the socket; connections already accepted go on. */
  close(): void;
  /**
   * Stops accepting, but first accepts the clients already in the kernel's accept queue (native accept; Node's
   * accept closes at once, as close()); resolves once the socket is closed. For a drain, where close() would
   * reset those clients.
   */
  end(): Promise<void>;
  /**
   * What accepted connections do first (native accept; Node's accept holds every one paused, pauseOnConnect), and
   * for a peek-mode TLS listener the names it passes through: the addon then decides at accept which connections
   * it terminates (NativeListener.setPassthrough).
   */
  setMode(mode: AcceptMode, passthrough?: readonly string[]): void;
  /**
   * Accept a connection only once its first bytes came (TCP_DEFER_ACCEPT; native accept and the L4 thread: their
   * end() waits for the connections the kernel holds back; Node's accept does not defer, and closes at once).
   */
  setDeferAccept(on: boolean): void;
  /** TCP_DEFER_ACCEPT as the kernel has it on this socket, in seconds (0 when not deferring). */
  deferAcceptSeconds(): number;
  /**
   * An L4 listener served wholly by the addon (native/l4.ts): `config` is its compile, and the listening socket
   * moves to the addon's L4 thread (no connection reaches `onConnection`); undefined moves it back to native
   * accept. False when this listener cannot (Node's accept): it stays as it is.
   */
  serveL4(config: number | undefined): boolean;
}

function listeningOf(server: net.Server): Listening {
  const close = (): void => void server.close();
  return { port: boundAddress(server).port, native: false, close, end: () => endAfterAccepting(server, close), setMode: () => {}, setDeferAccept: () => {}, deferAcceptSeconds: () => 0, serveL4: () => false };
}

/** How long Node's listener keeps accepting at its end while clients keep arriving (ms). */
const END_ACCEPT_MS = 100;

/**
 * Node's end of a listener: libuv accepts in its poll phase (one connection per turn of the loop here, Node 20), and
 * a close called from another callback (the primary's message to stop accepting) resets every client queued since.
 * So the close waits for a turn of the loop that accepted nothing (or END_ACCEPT_MS, should clients keep coming):
 * what the kernel queued before the end is accepted. A client whose handshake ends between that turn and the close
 * is still reset; the native listener's end drains with accept4 up to its close and waits for deferred clients
 * (native-notes/io.md).
 */
function endAfterAccepting(server: net.Server, close: () => void): Promise<void> {
  let accepted = 0;
  const count = (): void => void accepted++;
  server.on('connection', count);
  const until = performance.now() + END_ACCEPT_MS;
  return new Promise((resolve) => {
    let seen = -1; // the first turn may run before any poll phase (called from one): it only starts the count
    const turn = (): void => {
      if (accepted === seen || performance.now() > until) {
        server.off('connection', count);
        close();
        resolve();
        return;
      }
      seen = accepted;
      setImmediate(turn);
    };
    setImmediate(turn);
  });
}

/**
 * A native listening socket, served by native accept (io.cc) or, for an L4 listener the addon serves wholly, by
 * the L4 thread (l4.cc); the fd moves between the two on a reload, never closed in between.
 */
class NativeListening implements Listening {
  readonly port: number;
  readonly native = true;
  #accept: NativeListener | undefined;
  #l4: number | undefined;
  #mode: AcceptMode;
  #passthrough: readonly string[] | undefined;
  #defer: boolean;
  readonly #onConnection: OnConnection;
  readonly #onError: (err: Error) => void;

  constructor(server: NativeListener, onConnection: OnConnection, onError: (err: Error) => void) {
    this.port = server.address().port;
    this.#accept = server;
    this.#mode = server.mode;
    this.#defer = server.deferAccept;
    this.#onConnection = onConnection;
    this.#onError = onError;
    server.on('error', onError);
  }

  close(): void {
    this.#accept?.close();
    this.#accept = undefined;
    if (this.#l4 !== undefined) nativeL4Addon()?.l4Close(this.#l4);
    this.#l4 = undefined;
  }

  end(): Promise<void> {
    // an L4 listener comes back to native accept for its end: the clients in its queues (accept, and SYN while it
    // deferred) are accepted there and served by the JS L4 path, where closing on the L4 thread would reset them
    if (this.#l4 !== undefined) {
      const fd = nativeL4Addon()!.l4Release(this.#l4);
      this.#l4 = undefined;
      this.#relisten(fd);
    }
    const accept = this.#accept;
    this.#accept = undefined;
    return accept === undefined ? Promise.resolve() : accept.end();
  }

  setMode(mode: AcceptMode, passthrough?: readonly string[]): void {
    this.#mode = mode;
    this.#passthrough = mode === 'peek' ? passthrough : undefined;
    if (this.#accept === undefined) return;
    this.#accept.mode = mode;
    this.#accept.setPassthrough(this.#passthrough);
  }

  setDeferAccept(on: boolean): void {
    this.#defer = on;
    if (this.#accept !== undefined) this.#accept.deferAccept = on;
    if (this.#l4 !== undefined) this.#l4Defer(on);
  }

  deferAcceptSeconds(): number {
    if (this.#l4 !== undefined) return this.#l4Defer();
    return this.#accept?.deferAcceptSeconds() ?? 0;
  }

  /** TCP_DEFER_ACCEPT on the L4 thread's socket: set or cleared with `on`; the seconds in force (0 when unknown). */
  #l4Defer(on?: boolean): number {
    try {
      return nativeL4Addon()?.l4Defer?.(this.#l4!, on) ?? 0;
    } catch {
      return 0; // refused by the kernel: accepted at the handshake, as without the option
    }
  }

  serveL4(config: number | undefined): boolean {
    const addon = nativeL4Addon();
    if (addon === undefined) return false;
    if (config !== undefined) {
      if (this.#l4 !== undefined) addon.l4Use(this.#l4, config);
      else if (this.#accept !== undefined) {
        const accept = this.#accept;
        const fd = accept.release();
        this.#accept = undefined;
        try {
          this.#l4 = addon.l4Listen(fd, config);
        } catch (err) {
          this.#relisten(fd);
          throw err;
        }
        // a passthrough listener's clients speak first (deferAcceptOf is false for a tcp listener without PROXY)
        if (this.#defer) this.#l4Defer(true);
      } else return false;
      return true;
    }
    if (this.#l4 === undefined) return true;
    const fd = addon.l4Release(this.#l4);
    this.#l4 = undefined;
    return this.#relisten(fd);
  }

  /** Back to native accept on `fd` (closed if even that fails: the listener then accepts nothing). */
  #relisten(fd: number): boolean {
    const listener = listenNative(fd, this.#mode, this.#onConnection, this.#defer);
    if (listener === undefined) {
      native()?.close(fd);
      return false;
    }
    listener.on('error', this.#onError);
    listener.setPassthrough(this.#passthrough);
    this.#accept = listener;
    return true;
  }
}

function nativeL4Addon(): L4Addon | undefined {
  const l4 = nativeL4();
  return l4.addon;
}

/**
 * Worker side of 'reuse-port' as a Listening: native accept when the addon's I/O is on (`mode` says what an
 * accepted connection does first, `deferAccept` whether it is accepted only once its first bytes came), else Node's
 * server (listenReusePort). `onError` hears accept failures.
 */
export async function openReusePort(host: string, port: number, onConnection: OnConnection, opts: ListenOptions & { mode: AcceptMode; deferAccept: boolean }, onError: (err: Error) => void): Promise<Listening> {
  const addon = native();
  if (addon !== undefined && nativeIoAvailable()) {
    const fd = await reusePortFd(host, port, opts.backlog ?? defaultBacklog());
    let listener: NativeListener | undefined;
    try {
      listener = listenNative(fd, opts.mode, onConnection, opts.deferAccept);
    } catch (err) {
      addon.close(fd);
      throw err;
    }
    if (listener !== undefined) return new NativeListening(listener, onConnection, onError);
    addon.close(fd);
  }
  const server = await listenReusePort(host, port, onConnection, opts);
  server.on('error', onError);
  return listeningOf(server);
}

/** Worker side of 'shared-handle' as a Listening (always Node's server: the handle is libuv's). */
export async function openOnHandle(handle: unknown, onConnection: OnConnection, opts: ListenOptions, onError: (err: Error) => void): Promise<Listening> {
  const server = await listenOnHandle(handle, onConnection, opts);
  server.on('error', onError);
  return listeningOf(server);
}

/** The addon's listening SO_REUSEPORT socket on host:port (the caller owns the fd). */
async function reusePortFd(host: string, port: number, backlog: number): Promise<number> {
  const addon = native();
  if (addon === undefined) throw new Error('reuse-port listeners need Node >= 22.12 or the native addon; use the shared handle');
  const { ip } = await resolveHost(host);
  try {
    return addon.reusePortListen(ip, port, backlog);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw code === undefined ? err : Object.assign(bindError(host, port, 0, code), { cause: err });
  }
}

/** Worker side of 'reuse-port': its own SO_REUSEPORT listener; the kernel spreads connections over workers. */
export async function listenReusePort(host: string, port: number, onConnection: OnConnection, opts: ListenOptions): Promise<net.Server> {
  const backlog = opts.backlog ?? defaultBacklog();
  if (listenStrategy() === 'reuse-port') {
    const server = createServer(onConnection, opts);
    // @types/node 20 does not know `reusePort` (added in Node 22.12, ignored before).
    const options: net.ListenOptions & { reusePort: boolean } = { host, port, backlog, reusePort: true };
    return listening(server, () => server.listen(options));
  }
  const fd = await reusePortFd(host, port, backlog);
  // Node adopts the fd (and closes it with the server); a worker is a child_process, so no cluster routing.
  const server = createServer(onConnection, opts);
  try {
    return await listening(server, () => server.listen({ fd, backlog }));
  } catch (err) {
    server.close();
    throw err;
  }
}

/** The address a listening server is bound to. */
export function boundAddress(server: net.Server): BoundAddress {
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('server is not listening on TCP');
  return { address: a.address, family: a.family === 'IPv6' ? 'IPv6' : 'IPv4', port: a.port };
}
