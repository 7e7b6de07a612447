// tcp listeners served wholly by the addon (src/native/l4.cc), from the worker's side: which listeners it can
// serve (else the JS path of l4.ts, with the reason logged), their compile (targets, policy, timeouts, PROXY out, a
// hash upstream's Maglev table; compiled again when DNS discovery changes an upstream's targets), the target states
// and a hash upstream's pins pushed on change, and the addon's batches of closed connections turned into the same log
// line (logL4Line), metrics and passive-health reports as the JS path. Holds no object per connection, but for a
// hash upstream's: its key counted open (OpenKeys) until its record.
import { isIP } from 'node:net';
import { constants } from 'node:os';
import type { Config } from '../config/schema.js';
import type { ConnectionRegistry, Tracked } from '../core/registry.js';
import type { Metrics } from '../core/metrics.js';
import type { ErrorCode } from '../core/errors.js';
import type { ClosedBy } from '../core/socket.js';
import type { Logger } from '../core/log.js';
import { nativeL4, type L4Addon, type L4Batch, type L4Compiled, type L4Held, type L4Limit, type L4Record } from '../native/l4.js';
import { unmapIPv4 } from '../core/util.js';
import { SLOW_START_FLOOR, buildMaglevTable, type Target } from '../upstream/balancer.js';
import type { OpenKeys, PinTable, PinUpdate } from '../upstream/sticky.js';
import type { UpstreamPool } from '../upstream/pool.js';
import { netAddress } from '../upstream/target.js';
import { logL4Line, logUnknownName, type L4Context } from './l4.js';

/** How often target states (health, drain, passive, panic, the other workers' load) are compared and pushed. */
const PUSH_MS = 100;
/** Replaced compiles kept (at most) for the connections still open on them (a reload each); the oldest go first. */
const RETIRED_KEPT = 64;

/** What a listener's compile answers: the addon's config id, or why the listener stays on the JS path. */
export type NativeL4Plan = { readonly config: number } | { readonly reason: string };

interface Compiled {
  readonly id: number;
  /** The tcp listener's index (its refusals' debug line names it); undefined for a passthrough name's upstream. */
  readonly listener: number | undefined;
  readonly pool: UpstreamPool;
  readonly ctx: L4Context;
  readonly targets: readonly Target[];
  /** The states last pushed ("1"/"0" per target, then the remote loads). */
  pushed: string;
  retired: boolean;
  /**
   * The addon's open connections per target as last added to the targets' `active` (the pool's load and
   * `/status` read it; least_conn across workers too): each period adds the difference.
   */
  readonly active: number[];
  /** A hash compile: target address -> its index in `targets` (the first of a repeated address, as Maglev's pins). */
  readonly byId: ReadonlyMap<string, number> | undefined;
}

/** A hash key counted open (OpenKeys) for a connection the addon relays, until its record. */
interface HeldKey {
  readonly keys: OpenKeys;
  readonly upstream: string;
  readonly key: string;
  readonly target: string;
}

/** Bound of a preface (ClientHello, PROXY header) when its phase timeout is "off" (accept-paths.ts PREFACE_FALLBACK_MS). */
const PEEK_FALLBACK_MS = 60_000;

/**
 * What a compile of a listener whose upstreams follow DNS names was made from, and how its listening socket takes
 * another: compiled again when discovery changes one of their targets (see #follow).
 */
interface Followed {
  readonly config: Config;
  readonly index: number;
  readonly pools: ReadonlyMap<string, UpstreamPool>;
  readonly ctx: L4Context;
  readonly use: (id: number) => boolean;
}

/** A passthrough-only TLS listener's table: its listener, and the compiles of its upstreams. */
interface Table {
  readonly index: number;
  readonly ctx: L4Context;
  readonly configs: readonly number[];
  retired: boolean;
}

/**
 * limits.connections_per_ip as the worker holds it (route/policy/store.ts LimitStore, passed in from above): the
 * table its connections count in (the addon's, where it is loaded: the L4 thread counts in it too) and the log
 * of refusals, which the addon's refusals join.
 */
export interface L4ClientLimits {
  readonly connections: { readonly nativeTable: number | undefined };
  readonly connectionLog: { refused(key: string, client: string, now: number): void };
}

/** Why listener `index` of `config` cannot be served by the addon, whatever its upstreams; undefined when it can. */
function listenerUnsupported(config: Config, index: number, limits: L4ClientLimits): string | undefined {
  const cfg = config.listeners[index];
  // the addon counts in the worker's table, which is JavaScript's Map where the addon's tables are missing
  if (config.limits.connections_per_ip !== 'off' && limits.connections.nativeTable === undefined) return 'limits.connections_per_ip is counted in JavaScript (no native client table)';
  if (cfg.tls !== undefined && cfg.tls.certificates.length > 0) return 'the listener terminates TLS too (its ClientHello is read in JavaScript)';
  return undefined;
}

/** Why upstream `pool` cannot be balanced by the addon; undefined when it can. */
function unsupported(pool: UpstreamPool | undefined): string | undefined {
  if (pool === undefined) return 'upstream missing from the runtime';
  const balance = pool.config.balance;
  // portico check refuses the others on an L4 upstream (an L4 connection has no request)
  if (typeof balance !== 'string' && (balance.policy !== 'hash' || balance.key !== '$remote_addr')) return `balance ${balance.policy} on ${balance.policy === 'hash' ? balance.key : 'a cookie'} is not served by the addon`;
  const named = pool.targets.find((t) => isIP(t.host) === 0 && !('path' in netAddress(t)));
  if (named !== undefined) return `target ${named.id} is neither an IP address nor a unix socket`;
  return undefined;
}

export class NativeL4 implements Tracked {
  registrySlot = -1;
  readonly #addon: L4Addon;
  readonly #registry: ConnectionRegistry;
  readonly #metrics: Metrics;
  readonly #limits: L4ClientLimits;
  readonly #configs = new Map<number, Compiled>();
  readonly #tables = new Map<number, Table>();
  /** Config id by listener key: the compile each listening socket serves now. */
  readonly #serving = new Map<string, number>();
  /** By compile or table id: what it was made from, when one of its upstreams follows DNS names. */
  readonly #followed = new Map<number, Followed>();
  /** A #follow is queued (discovery changed a pool's targets). */
  #followQueued = false;
  /** Reasons already logged, by listener key: said once per change, not at every reload. */
  readonly #said = new Map<string, string>();
  /** Connections open in the addon as the batches told (in the registry while > 0, so a drain waits for them). */
  #live = 0;
  /** By connection id: the hash keys of relayed connections, counted open until their records come. */
  readonly #held = new Map<number, HeldKey>();
  /** The pin tables watched (one per worker in practice): each update reaches the hash compiles of its upstream. */
  readonly #pinTables = new WeakSet<PinTable>();
  #timer: NodeJS.Timeout | null = null;

  /** The worker's one NativeL4, or the reason there is none (addon missing, native I/O off, PORTICO_NATIVE_L4=0). */
  static create(registry: ConnectionRegistry, metrics: Metrics, limits: L4ClientLimits): NativeL4 | string {
    const l4 = nativeL4();
    if (l4.addon === undefined) return l4.reason;
    return new NativeL4(l4.addon, registry, metrics, limits);
  }

  private constructor(addon: L4Addon, registry: ConnectionRegistry, metrics: Metrics, limits: L4ClientLimits) {
    this.#addon = addon;
    this.#registry = registry;
    this.#metrics = metrics;
    this.#limits = limits;
    addon.l4Init((batch) => this.#onBatch(batch));
  }

  /**
   * Compiles tcp listener `index` of `config` for the addon, against the runtime's pools; or the reason it stays
   * on the JS path. The listener's previous compile (`key`) is retired when the caller serves the new one.
   * `use` puts another compile in service on the listening socket (false: it is gone): when discovery changes the
   * targets of one of its upstreams, the listener is compiled again (as a reload would) and takes the new one.
   */
  plan(config: Config, index: number, pools: ReadonlyMap<string, UpstreamPool>, ctx: L4Context, use?: (id: number) => boolean): NativeL4Plan {
    const plan = this.#plan(config, index, pools, ctx);
    if (use !== undefined && 'config' in plan && this.#compilesOf(plan.config).some((c) => c.pool.config.discover.length > 0)) this.#followed.set(plan.config, { config, index, pools, ctx, use });
    return plan;
  }

  #plan(config: Config, index: number, pools: ReadonlyMap<string, UpstreamPool>, ctx: L4Context): NativeL4Plan {
    const cfg = config.listeners[index];
    const refused = listenerUnsupported(config, index, this.#limits);
    if (refused !== undefined) return { reason: refused };
    const max = config.limits.connections_per_ip;
    const table = this.#limits.connections.nativeTable;
    const limit: L4Limit | undefined = max === 'off' || table === undefined ? undefined : { table, max, ipv6Prefix: config.limits.ipv6_prefix };
    // proxy_protocol: the header within the preface's bound, as accept-paths.ts #acceptPath sets it (a tcp
    // listener's timeouts.head; a passthrough listener's handshake_timeout, its ClientHello's bound too)
    const trusted = cfg.proxy_protocol?.trusted;
    if (cfg.mode === 'tcp') {
      const pool = cfg.upstream === undefined ? undefined : pools.get(cfg.upstream);
      const reason = unsupported(pool);
      if (reason !== undefined || pool === undefined) return { reason: reason ?? 'upstream missing from the runtime' };
      const head = cfg.tls !== undefined ? cfg.tls.handshake_timeout : config.timeouts.head;
      const proxyIn = trusted === undefined ? undefined : { trusted, timeoutMs: head > 0 ? head : PEEK_FALLBACK_MS };
      return { config: this.#compile(pool, ctx, cfg.half_close !== false, index, proxyIn, limit) };
    }
    // a passthrough-only TLS listener: one compile per upstream, then the name table over them
    const entries = cfg.tls?.passthrough ?? [];
    const byUpstream = new Map<string, number>();
    for (const e of entries) {
      if (byUpstream.has(e.upstream)) continue;
      const pool = pools.get(e.upstream);
      const reason = unsupported(pool);
      if (reason !== undefined || pool === undefined) {
        for (const id of byUpstream.values()) this.#retire(id);
        return { reason: `${e.upstream}: ${reason ?? 'upstream missing from the runtime'}` };
      }
      byUpstream.set(e.upstream, this.#compile(pool, ctx, cfg.half_close !== false, undefined, undefined, undefined));
    }
    const timeout = cfg.tls!.handshake_timeout;
    const id = this.#addon.l4CompileSni({
      entries: entries.map((e) => ({ sni: e.sni, config: byUpstream.get(e.upstream)! })),
      peekMs: timeout > 0 ? timeout : PEEK_FALLBACK_MS,
      proxyIn: trusted === undefined ? undefined : { trusted },
      limit,
    });
    this.#tables.set(id, { index, ctx, configs: [...byUpstream.values()], retired: false });
    return { config: id };
  }

  /** `limit`: a tcp listener's connections_per_ip (a passthrough listener's is its table's, not its upstreams'). */
  #compile(pool: UpstreamPool, ctx: L4Context, halfClose: boolean, listener: number | undefined, proxyIn: L4Compiled['proxyIn'], limit: L4Limit | undefined): number {
    const header = pool.config.send_proxy_protocol;
    const balance = pool.config.balance;
    const hash = typeof balance !== 'string';
    if (hash && balance.policy !== 'hash') throw new Error(`balance ${balance.policy} reached the addon's compile`); // unsupported() refuses it
    const targets = pool.targets;
    const id = this.#addon.l4Compile({
      targets: targets.map((t) => ({ ip: t.host, port: t.port, weight: t.weight })),
      balance: hash ? 'hash' : balance,
      // the table the pool's Maglev balancer builds over the same targets: the addon picks as it does
      table: hash ? Uint32Array.from(buildMaglevTable(targets)) : undefined,
      connectMs: pool.config.timeouts.connect,
      idleMs: ctx.timeouts.idle,
      lifetimeMs: ctx.timeouts.lifetime,
      halfClosedMs: ctx.timeouts.halfClosed,
      proxy: header === 'v1' ? 1 : header === 'v2' ? 2 : 0,
      halfClose,
      slowStartMs: hash ? 0 : pool.config.slow_start, // hash ignores slow start (balancer.ts Maglev): keys keep their target
      slowStartFloor: SLOW_START_FLOOR,
      proxyIn,
      limit,
    });
    let byId: Map<string, number> | undefined;
    if (hash) {
      byId = new Map();
      for (let i = 0; i < targets.length; i++) if (!byId.has(targets[i].id)) byId.set(targets[i].id, i);
    }
    const compiled: Compiled = { id, listener, pool, ctx, targets, pushed: '', retired: false, active: targets.map(() => 0), byId };
    this.#configs.set(id, compiled);
    if (hash && ctx.pins !== undefined) {
      // the pins in force now, then every update (sticky tunnels hold for the addon's connections as for the JS path's)
      if (!this.#pinTables.has(ctx.pins)) {
        this.#pinTables.add(ctx.pins);
        ctx.pins.watch(this.#pinsChanged);
      }
      const pins = ctx.pins.of(pool.name);
      if (pins.size > 0) this.#pushPins(compiled, { upstream: pool.name, full: true, set: [...pins], unset: [] });
    }
    if (pool.config.discover.length > 0) pool.onTargets(this.#targetsChanged);
    this.#push(compiled);
    this.#timer ??= setInterval(this.#pushAll, PUSH_MS).unref();
    return id;
  }

  /** A pin update of an upstream reaches its live hash compiles. */
  #pinsChanged = (update: PinUpdate): void => {
    for (const c of this.#configs.values()) if (!c.retired && c.byId !== undefined && c.pool.name === update.upstream) this.#pushPins(c, update);
  };

  /** One pin update as compile `c`'s indices; a pin to an address it does not balance over is no pin (Maglev's too). */
  #pushPins(c: Compiled, update: PinUpdate): void {
    const keys: string[] = [];
    const targets: number[] = [];
    const unset = [...update.unset];
    for (const [key, id] of update.set) {
      const i = c.byId!.get(id);
      if (i === undefined) unset.push(key);
      else {
        keys.push(key);
        targets.push(i);
      }
    }
    try {
      this.#addon.l4Pins(c.id, update.full, keys, targets, unset);
    } catch (err) {
      // never thrown into the pin table's other watchers and the worker's IPC: a bug, said loudly
      c.ctx.log.error({ upstream: c.pool.name, err }, 'the addon refused a hash upstream\'s pins');
    }
  }

  /** The compiles of compile or table `id`. */
  #compilesOf(id: number): Compiled[] {
    const table = this.#tables.get(id);
    const ids = table === undefined ? [id] : table.configs;
    const out: Compiled[] = [];
    for (const i of ids) {
      const c = this.#configs.get(i);
      if (c !== undefined) out.push(c);
    }
    return out;
  }

  /**
   * A pool's discovered targets changed: once the change is applied whole (the worker applies the target states
   * the primary sent for them right after the set, in the same turn), the listeners that balance over them follow.
   */
  #targetsChanged = (): void => {
    if (this.#followQueued) return;
    this.#followQueued = true;
    queueMicrotask(this.#follow);
  };

  /**
   * Every listener whose compile balances over a target list its pool replaced is compiled again and takes the new
   * compile; the old one is retired like a reload's (its connections run on and are logged through it, their
   * targets keep their load until then). Targets that stayed are the same objects: health, drain, passive state and
   * slow start reach the new compile with its first push. A set sent again unchanged replaces nothing: no compile.
   */
  #follow = (): void => {
    this.#followQueued = false;
    for (const [key, id] of [...this.#serving]) {
      const f = this.#followed.get(id);
      if (f === undefined || !this.#compilesOf(id).some((c) => c.targets !== c.pool.targets)) continue;
      const log = f.ctx.log;
      let next: NativeL4Plan;
      try {
        next = this.plan(f.config, f.index, f.pools, f.ctx, f.use);
      } catch (err) {
        log.error({ listener: key, err }, 'L4 listener keeps its compile: the addon refused the one for its new targets');
        continue;
      }
      if ('reason' in next) {
        log.error({ listener: key, reason: next.reason }, 'L4 listener keeps its compile: its new targets cannot be compiled');
        continue;
      }
      let used = false;
      try {
        used = f.use(next.config);
      } catch {
        // the listening socket is gone (closed by a reload): nobody serves either compile
      }
      if (!used) {
        this.discard(next.config);
        this.#retire(id);
        this.#serving.delete(key);
        continue;
      }
      this.serving(key, next.config, log);
      const targets = this.#compilesOf(next.config).map((c) => ({ upstream: c.pool.name, targets: c.targets.length }));
      log.info({ listener: key, upstreams: targets }, 'L4 listener compiled again for its discovered targets');
    }
  };

  /** Listener `key` serves compile `id` now (undefined: the JS path); the one it served before is retired. */
  serving(key: string, id: number | undefined, log: Logger, reason?: string): void {
    const before = this.#serving.get(key);
    if (before !== undefined && before !== id) this.#retire(before);
    if (id === undefined) this.#serving.delete(key);
    else this.#serving.set(key, id);
    const said = id === undefined ? reason : 'native';
    if (said !== undefined && this.#said.get(key) !== said) {
      this.#said.set(key, said);
      if (id === undefined) log.info({ listener: key, reason }, 'L4 listener served by JavaScript, not the addon');
      else log.info({ listener: key, passthrough: this.#tables.has(id) }, 'L4 listener served by the addon (accept, connect, splice)');
    }
  }

  /**
   * The replaced compiles and SNI tables still held (kept for their connections' records and refusals), each
   * bounded by RETIRED_KEPT: what a reload leaves behind, for tests.
   */
  retiredHeld(): { compiles: number; tables: number } {
    let compiles = 0;
    for (const c of this.#configs.values()) if (c.retired) compiles++;
    let tables = 0;
    for (const t of this.#tables.values()) if (t.retired) tables++;
    return { compiles, tables };
  }

  /** A compile no listener took (the apply failed after it, or the listening socket could not move). */
  discard(id: number): void {
    this.#retire(id);
  }

  #retire(id: number): void {
    this.#followed.delete(id);
    const table = this.#tables.get(id);
    if (table !== undefined) {
      if (table.retired) return;
      table.retired = true;
      this.#addon.l4Forget(id);
      for (const c of table.configs) this.#retire(c);
      // kept for the refusals of its connections still reading a ClientHello, the oldest dropped past the bound
      for (const [old] of pastKept(this.#tables)) this.#tables.delete(old);
      return;
    }
    const c = this.#configs.get(id);
    if (c === undefined || c.retired) return;
    c.retired = true;
    this.#addon.l4Forget(id);
    // those whose connections all ended (and were logged) leave first: else reloads quicker than the push timer
    // would leave only the replaced compiles nobody uses, and the bound drop one a connection still needs
    for (const old of this.#configs.values()) if (old.retired) this.#count(old);
    for (const [, old] of pastKept(this.#configs)) this.#forget(old);
  }

  #forget(c: Compiled): void {
    c.active.forEach((n, i) => (c.targets[i].active -= n));
    c.active.fill(0);
    this.#configs.delete(c.id);
  }

  #pushAll = (): void => {
    // every compile's count first, so each live compile is pushed the others' as they are now
    for (const c of this.#configs.values()) this.#count(c);
    for (const c of this.#configs.values()) if (!c.retired) this.#push(c);
  };

  /**
   * The addon's open connections into the targets' `active`; a retired compile leaves once it has none and its
   * last records came (the addon answers null only then), its counts taken off its targets.
   */
  #count(c: Compiled): void {
    const now = this.#addon.l4Active(c.id);
    if (now === null) {
      if (c.retired) this.#forget(c);
      return;
    }
    for (let i = 0; i < c.active.length; i++) {
      const d = (now[i] ?? 0) - c.active[i];
      if (d === 0) continue;
      c.targets[i].active += d;
      c.active[i] += d;
    }
  }

  /**
   * Health, drain, passive state and backups are folded into `available` by the pool; in panic (nothing
   * available) every target not drained is tried, as attempt.ts does through the pool's fallback.
   */
  #push(c: Compiled): void {
    const { pool, targets } = c;
    let up = targets.map((t) => t.available);
    if (pool.panic) {
      const draining = new Set(pool.health().filter((h) => h.draining).map((h) => h.target));
      up = targets.map((t) => !draining.has(t.id));
    }
    // what the addon does not count itself: the other workers' load, and this worker's other connections to the
    // target (a replaced compile's, still open after a discovery change or a reload that kept the pool; the JS
    // path's): least_conn and random_two weigh them as the JS balancer does (its `active` counts them all)
    const remote = targets.map((t, i) => (t.remote ?? 0) + Math.max(0, t.active - c.active[i]));
    // a slow start's end changes once per comeback: the addon ramps the weight itself at each pick
    const rampUntil = targets.map((t) => t.rampUntil ?? 0);
    const key = `${up.map((u) => (u ? '1' : '0')).join('')} ${remote.join(',')} ${rampUntil.join(',')}`;
    if (key === c.pushed) return;
    c.pushed = key;
    this.#addon.l4Targets(c.id, up, remote, rampUntil);
  }

  #onBatch(batch: L4Batch): void {
    if (batch.held !== undefined) for (const h of batch.held) this.#hold(h);
    if (batch.opened > 0) {
      if (this.#live === 0) this.#registry.add(this);
      this.#live += batch.opened;
      for (let i = 0; i < batch.opened; i++) {
        this.#metrics.connectionAccepted();
        this.#metrics.tunnelOpened();
        this.#registry.tunnelOpened();
      }
    }
    let ended = 0;
    for (const r of batch.closed) {
      if (r.refused !== undefined) this.#refused(r);
      else {
        ended++;
        this.#closed(r);
      }
    }
    if (ended > 0) {
      this.#live = Math.max(0, this.#live - ended);
      if (this.#live === 0) this.#registry.delete(this);
    }
  }

  /** A hash key relayed (before its record, always): counted open on its target, as l4.ts counts the JS path's. */
  #hold(h: L4Held): void {
    const c = this.#configs.get(h.config);
    const keys = c?.ctx.sticky;
    const target = c?.targets[h.target];
    if (keys === undefined || target === undefined) return;
    if (keys.opened(c!.pool.name, h.key, target.id)) this.#held.set(h.id, { keys, upstream: c!.pool.name, key: h.key, target: target.id });
  }

  /** Closed before routing: as accept-paths.ts #refused, #unknownName, #connectionLimit and #countRelay. */
  #refused(r: L4Record): void {
    const reason = r.refused!;
    this.#metrics.connectionRefused(reason);
    if (reason === 'connections_per_ip') return this.#limits.connectionLog.refused(r.key ?? '', unmapIPv4(r.address), Date.now());
    const table = this.#tables.get(r.table ?? -1);
    if (table !== undefined && (reason === 'sni_unknown' || reason === 'sni_missing')) return logUnknownName(table.ctx, table.index, r.sni, r.address, reason);
    // a passthrough listener's table, or a tcp listener's compile (a PROXY header refused)
    const compiled = table === undefined ? this.#configs.get(r.config) : undefined;
    const ctx = table?.ctx ?? compiled?.ctx;
    const listener = table?.index ?? compiled?.listener;
    if (ctx === undefined || listener === undefined) return;
    if (ctx.log.isLevelEnabled('debug')) ctx.log.debug({ listener, reason, detail: r.detail, remoteAddr: r.address }, 'connection refused before routing');
  }

  #closed(r: L4Record): void {
    this.#registry.tunnelClosed();
    const held = this.#held.get(r.id);
    if (held !== undefined) {
      this.#held.delete(r.id);
      held.keys.closed(held.upstream, held.key, held.target);
    }
    const c = this.#configs.get(r.config);
    const targets = c?.targets ?? [];
    for (const f of r.failures) {
      const t = targets[f.target];
      if (t !== undefined) c!.pool.reportFailure(t, f.code as ErrorCode);
    }
    const metrics = this.#metrics;
    const failed = r.error !== undefined;
    metrics.tunnelClosed(r.bytesUp, r.bytesDown);
    if (failed) {
      // as l4.ts #fail: an upstream-side error is counted by its code, out of descriptors as a refusal
      if (r.error === 'FD_LIMIT') metrics.connectionRefused('fd_limit');
      else if (r.error === 'UPSTREAM_UNAVAILABLE' || r.error?.startsWith('UPSTREAM_CONNECT_') === true) metrics.upstreamError(r.error as ErrorCode);
    } else if (c !== undefined) metrics.tunnelLifetime('l4', c.pool.name, r.durationMs);
    if (c === undefined) return; // retired long ago: nothing left to name it by
    logL4Line(c.ctx, {
      conn: r.id,
      mode: r.table === undefined ? 'tcp' : 'passthrough',
      sni: r.sni,
      remoteAddr: r.address,
      upstream: c.pool.name,
      target: failed ? undefined : targets[r.target]?.id,
      bytesIn: r.bytesUp,
      bytesOut: r.bytesDown,
      durationMs: r.durationMs,
      closedBy: r.closedBy as ClosedBy,
      relay: failed ? undefined : 'splice',
      err: failed ? { code: r.error ?? 'INTERNAL', message: failureMessage(r, c) } : undefined,
    });
  }

  sweep(): void {}

  /** Shutdown: a tunnel runs on until the grace ends (as the JS path's L4 connections). */
  drain(): void {}

  forceClose(): void {
    this.#addon.l4CloseAll();
  }
}

/** The retired entries of `map` beyond the RETIRED_KEPT newest (a Map keeps insertion order: the oldest first). */
function pastKept<K, V extends { readonly retired: boolean }>(map: ReadonlyMap<K, V>): Array<[K, V]> {
  const retired = [...map].filter(([, v]) => v.retired);
  return retired.slice(0, Math.max(0, retired.length - RETIRED_KEPT));
}

/** The messages the JS path gives the same failures (attempt.ts, errors.ts connectError, upstream-connect.ts). */
function failureMessage(r: L4Record, c: Compiled): string {
  const last = r.failures.at(-1);
  switch (r.error) {
    case 'UPSTREAM_UNAVAILABLE':
      return `no available target in upstream "${c.pool.name}"`;
    case 'UPSTREAM_CONNECT_TIMEOUT':
      return `upstream connect to ${c.targets[last?.target ?? -1]?.id ?? '?'} timed out after ${c.pool.config.timeouts.connect}ms`;
    case 'UPSTREAM_CONNECT_REFUSED':
    case 'UPSTREAM_CONNECT_ERROR':
      return `upstream connect failed: ${last === undefined ? 'unknown error' : (ERRNO_NAMES.get(last.errno) ?? `errno ${last.errno}`)}`;
    case 'FD_LIMIT':
      return 'upstream connect failed: EMFILE (out of file descriptors)';
    case 'SHUTDOWN':
      return 'Portico is stopping';
    default:
      return 'the connection could not be handed to the splice relay';
  }
}

const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));
