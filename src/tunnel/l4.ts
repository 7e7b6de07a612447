// L4 forwarding: a client socket whose bytes are not ours to read (a `tcp` listener, or a TLS passthrough name)
// is relayed untouched to a target of one upstream: pick, connect (retrying other targets while nothing was
// sent; the pool writes the PROXY header an upstream may want), replay what the listener read ahead, then
// splice (or the JS relay).
// One log line per connection at close. It parses no bytes; the listener's preface reader did that.
import type { ByteSocket, ClosedBy } from '../core/socket.js';
import { ProxyError } from '../core/errors.js';
import type { AccessLines, Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { ConnectionRegistry, Tracked } from '../core/registry.js';
import { Tunnel, type TunnelTimeouts } from './relay.js';
import { SpliceTunnel, canSplice, concatBytes, drainReadable } from './splice.js';
import type { Target } from '../upstream/balancer.js';
import type { UpstreamClient, UpstreamPool } from '../upstream/pool.js';
import { UpstreamAttempt, type AttemptRules } from '../upstream/attempt.js';
import { connectionKey } from '../upstream/hash-key.js';
import type { OpenKeys, PinTable } from '../upstream/sticky.js';
import { TLS_ALERT, tlsFatalAlert } from '../wire/client-hello.js';
import type { ProxyEndpoint } from '../wire/proxy-protocol.js';
import { noop } from '../core/util.js';

export interface L4Request {
  readonly mode: 'tcp' | 'passthrough';
  readonly pool: UpstreamPool;
  /** Bytes the listener read ahead (after any PROXY header): sent to the upstream first. */
  readonly rest: Buffer | null;
  /** The client, as its PROXY header named it, else the socket's peer. */
  readonly source: ProxyEndpoint | undefined;
  /** The address the client connected to, as its PROXY header named it, else the socket's local end. */
  readonly destination: ProxyEndpoint | undefined;
  /** Passthrough: the ClientHello's server name. */
  readonly sni?: string;
  /** Called once when the connection ends, whatever ended it (limits.connections_per_ip releases its count). */
  readonly onEnd?: () => void;
  /** The listener's half_close: false ends the tunnel at the first FIN either way. Absent = true. */
  readonly halfClose?: boolean;
}

export interface L4Context {
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly timeouts: TunnelTimeouts;
  /** Where the connection's line goes (log.access, log.access_file); absent = access logs off. */
  readonly accessLog: AccessLines | undefined;
  /** The worker's open tunnels per hash key (upstream/sticky.ts): a connection of a hash upstream holds its key. */
  readonly sticky?: OpenKeys;
  /** The worker's pins (upstream/sticky.ts): the addon's hash compiles are given their upstream's. */
  readonly pins?: PinTable;
}

/**
 * Takes ownership of `client` (not flowing; nothing of it consumed past `req.rest` except what Node buffered, which
 * is replayed right after it) and relays it to `req.pool`.
 */
export function forwardL4(client: ByteSocket, req: L4Request, ctx: L4Context, registry: ConnectionRegistry): void {
  new L4Connection(client, req, ctx, registry);
}

/**
 * L4 retries (attempt.ts): nothing was sent, so every target may be tried once, outside `retries.max` and the
 * retry budget; with no target left, UPSTREAM_UNAVAILABLE.
 */
const L4_RETRIES: AttemptRules = Object.freeze({ retry: 'untried', noneLeft: 'unavailable' });

class L4Connection extends UpstreamAttempt implements Tracked {
  registrySlot = -1;
  readonly #client: ByteSocket;
  readonly #req: L4Request;
  readonly #ctx: L4Context;
  readonly #registry: ConnectionRegistry;
  readonly #id: number;
  readonly #startedAt = Date.now();
  /** The target the tunnel runs to (for the log and its `active` count); null before the tunnel. */
  #target: Target | null = null;
  #tunnel: Tunnel | SpliceTunnel | null = null;
  /** The client closed or reset before a tunnel existed. */
  #clientGone = false;
  /** Failed before a tunnel existed: logged and unregistered once. */
  #failed = false;
  /** The target id its hash key is counted open on (ctx.sticky) while the tunnel runs; null: not counted. */
  #stickyOn: string | null = null;

  constructor(client: ByteSocket, req: L4Request, ctx: L4Context, registry: ConnectionRegistry) {
    // a hash upstream's key: the client's address as $remote_addr (a PROXY header's source when one came)
    super(req.pool, connectionKey(req.pool.config.balance, req.source?.address), L4_RETRIES);
    this.#client = client;
    this.#req = req;
    this.#ctx = ctx;
    this.#registry = registry;
    this.#id = registry.add(this);
    registry.tunnelOpened(); // an L4 connection is a tunnel from its first byte
    // until the tunnel owns it: a client that resets while we connect ends the attempt
    client.on('error', this.#onClientGone);
    client.on('close', this.#onClientGone);
    ctx.metrics.tunnelOpened();
    this.start();
  }

  protected get attemptOver(): boolean {
    return this.#clientGone || this.#failed;
  }

  // an L4 connection is its own client (a unique key): no pooled socket is ever another connection's
  protected upstreamClient(): UpstreamClient {
    return { key: `l4#${this.#id}`, source: this.#req.source, destination: this.#req.destination };
  }

  protected giveUp(err: ProxyError): void {
    this.#fail(this.#clientGone ? clientClosed() : err);
  }

  protected connected(upstream: ByteSocket, reused: boolean): void {
    const target = this.target!;
    if (reused) {
      target.active--;
      this.pool.release(target, upstream, false);
      // the config keeps L4 upstreams apart from HTTP routes, so a kept-alive socket means a bug
      this.#fail(new ProxyError('INTERNAL', `upstream ${this.pool.name} handed a kept-alive HTTP socket to an L4 connection`));
      return;
    }
    this.#start(target, upstream);
  }

  #start(target: Target, upstream: ByteSocket): void {
    const { pool } = this.#req;
    const client = this.#client;
    this.#target = target;
    pool.detach(target, upstream);
    client.off('error', this.#onClientGone);
    client.off('close', this.#onClientGone);
    // what Node read ahead while we connected goes with the replay, so splice is not refused for a full buffer
    const rest = concatBytes(this.#req.rest, drainReadable(client));
    const spliced = canSplice(client, upstream);
    this.#tunnel = spliced ? new SpliceTunnel(client, upstream, this.#ctx.timeouts, this.#onTunnelClosed) : new Tunnel(client, upstream, this.#ctx.timeouts, this.#onTunnelClosed);
    this.#tunnel.halfClose = this.#req.halfClose !== false;
    // sticky tunnels (upstream/sticky.ts): its key stays on this target, in every worker, while it is open
    const sticky = this.#ctx.sticky;
    if (sticky !== undefined && this.key !== undefined && sticky.opened(pool.name, this.key, target.id)) this.#stickyOn = target.id;
    this.#tunnel.start(rest, null);
  }

  #onClientGone = (): void => {
    this.#clientGone = true;
    // no tunnel yet: end now rather than when the connect completes (#fail withdraws the acquire)
    if (this.acquiring) this.#fail(clientClosed());
  };

  /** Before any tunnel: the client is closed, the connection logged with the error. */
  #fail(err: ProxyError): void {
    if (this.#failed) return;
    this.#failed = true;
    if (this.acquiring) {
      // the pool keeps a socket made for it: nothing here owns one yet
      this.withdrawAcquire();
      this.target!.active--;
    }
    const client = this.#client;
    client.off('error', this.#onClientGone);
    client.off('close', this.#onClientGone);
    client.on('error', noop);
    client.destroy();
    this.#unregister();
    this.#ctx.metrics.tunnelClosed(0, 0);
    if (err.side === 'upstream') this.#ctx.metrics.upstreamError(err.code);
    else if (err.code === 'FD_LIMIT') this.#ctx.metrics.connectionRefused('fd_limit');
    this.#logLine(0, 0, err.code === 'CLIENT_CLOSED' ? 'client' : err.code === 'SHUTDOWN' ? 'shutdown' : 'upstream_error', err);
  }

  #unregister(): void {
    this.#registry.tunnelClosed();
    this.#registry.delete(this);
    this.#req.onEnd?.();
  }

  #onTunnelClosed = (t: Tunnel | SpliceTunnel): void => {
    this.#unregister();
    if (this.#stickyOn !== null) this.#ctx.sticky!.closed(this.#req.pool.name, this.key!, this.#stickyOn);
    this.#stickyOn = null;
    if (this.#target !== null) this.#target.active--;
    this.#ctx.metrics.tunnelClosed(t.bytesUp, t.bytesDown);
    this.#ctx.metrics.tunnelLifetime('l4', this.#req.pool.name, Date.now() - this.#startedAt);
    // the relay chosen: SpliceTunnel.spliced reads false once closed, and a failed hand-over (EMFILE) runs
    // SpliceTunnel's own JS fallback, which it does not expose
    this.#logLine(t.bytesUp, t.bytesDown, t.closedBy as ClosedBy, undefined, t instanceof SpliceTunnel ? 'splice' : 'js');
  };

  #logLine(bytesIn: number, bytesOut: number, closedBy: ClosedBy, err: ProxyError | undefined, relay?: 'splice' | 'js'): void {
    logL4Line(this.#ctx, {
      conn: this.#id,
      mode: this.#req.mode,
      sni: this.#req.sni,
      remoteAddr: this.#req.source?.address,
      upstream: this.#req.pool.name,
      target: this.#target?.id,
      bytesIn,
      bytesOut,
      durationMs: Date.now() - this.#startedAt,
      closedBy,
      relay,
      err: err === undefined ? undefined : { code: err.code, message: err.message },
    });
  }

  sweep(now: number): void {
    this.#tunnel?.checkIdle(now);
  }

  /** Shutdown: a tunnel runs on until the grace ends (a drain must not cut it early). */
  drain(): void {}

  forceClose(): void {
    if (this.#tunnel !== null) this.#tunnel.close('shutdown');
    else this.#fail(new ProxyError('SHUTDOWN', 'Portico is stopping'));
  }
}


/** What one L4 connection's line says (JS and native paths alike: one format). */
export interface L4Line {
  readonly conn: number;
  readonly mode: 'tcp' | 'passthrough';
  readonly sni: string | undefined;
  readonly remoteAddr: string | undefined;
  readonly upstream: string;
  readonly target: string | undefined;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly durationMs: number;
  readonly closedBy: ClosedBy;
  readonly relay: 'splice' | 'js' | undefined;
  readonly err: { readonly code: string; readonly message: string } | undefined;
}

/** The one log line of an L4 connection at close: info with access logs on, warn when it failed (always). */
export function logL4Line(ctx: L4Context, line: L4Line): void {
  const access = ctx.accessLog;
  if (access !== undefined) {
    const { conn, ...fields } = line;
    access.line(conn, line.err === undefined ? 'info' : 'warn', fields, line.mode);
  } else if (line.err !== undefined) ctx.log.warn(line, line.mode); // with access logs off, a failure still reaches the process log
}

/**
 * The line of a passthrough-only TLS listener's refusal (a name it does not pass, or none): info with access logs,
 * else debug. The JS accept path and the addon's records both write it here.
 */
export function logUnknownName(ctx: L4Context, listener: number, sni: string | undefined, remoteAddr: string | undefined, reason: 'sni_unknown' | 'sni_missing'): void {
  const line = { listener, mode: 'passthrough', sni, remoteAddr, closedBy: 'refused', reason };
  if (ctx.accessLog !== undefined) ctx.accessLog.line(undefined, 'info', line, 'no passthrough for this TLS name: alert sent, closed');
  else if (ctx.log.isLevelEnabled('debug')) ctx.log.debug(line, 'no passthrough for this TLS name: alert sent, closed');
}

function clientClosed(): ProxyError {
  return new ProxyError('CLIENT_CLOSED', 'client closed before the upstream connection was made');
}

/** How long a refused TLS client gets to read its alert and close before its socket is destroyed. */
const REFUSED_LINGER_MS = 2_000;

/**
 * A TLS listener that terminates nothing met a ClientHello naming none of its passthrough names: one fatal alert
 * (unrecognized_name for an unknown name, missing_extension without SNI), then a FIN. The client's TLS stack
 * reports the alert by name instead of an unexplained EOF. Whatever it still sends is read and dropped until it
 * closes (bounded), so unread bytes cannot turn our close into a reset that destroys the alert in flight.
 * Takes ownership of `socket` (paused by the preface reader, no listener left on it).
 */
export function refuseClientHello(socket: ByteSocket, sni: string | undefined): void {
  const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
  socket.on('error', noop);
  socket.on('end', () => socket.destroy());
  socket.once('close', () => clearTimeout(timer));
  socket.resume();
  socket.end(tlsFatalAlert(sni === undefined ? TLS_ALERT.missingExtension : TLS_ALERT.unrecognizedName));
}

/**
 * SNI name -> passthrough upstream, compiled once per listener: exact names first, then `*.suffix` wildcards
 * (any depth, as route hosts), longest suffix first; names compare lower case. First entry wins on duplicates.
 */
export class PassthroughTable {
  readonly #exact = new Map<string, string>();
  readonly #wildcards: Array<{ suffix: string; upstream: string }> = [];

  constructor(entries: ReadonlyArray<{ readonly sni: string; readonly upstream: string }>) {
    for (const { sni, upstream } of entries) {
      const name = sni.toLowerCase();
      if (name.startsWith('*.')) {
        const suffix = name.slice(1); // ".example.com"
        if (!this.#wildcards.some((w) => w.suffix === suffix)) this.#wildcards.push({ suffix, upstream });
      } else if (!this.#exact.has(name)) {
        this.#exact.set(name, upstream);
      }
    }
    this.#wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
  }

  /** The upstream for `sni` (already lower case, as parseClientHello gives it), or undefined: terminate. */
  match(sni: string | undefined): string | undefined {
    if (sni === undefined) return undefined;
    const exact = this.#exact.get(sni);
    if (exact !== undefined) return exact;
    for (const w of this.#wildcards) if (sni.length > w.suffix.length && sni.endsWith(w.suffix)) return w.upstream;
    return undefined;
  }
}
