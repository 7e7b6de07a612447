// One worker's runtime for one config generation: the router, the upstream pools and the contexts that client
// connections and L4 relays read. Built whole from a config, reusing the previous runtime's pools whose upstream
// is unchanged, and never mutated: apply.ts swaps it on reload, main.ts retires the pools it left behind. Listening
// sockets are not here (apply.ts keeps them across runtimes, so no connection is refused during a reload).
import type { L4Context } from '../tunnel/l4.js';
import { sameUpstream } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import type { ConnectionContext } from '../http/connection.js';
import { AccessLog } from '../http/access-log.js';
import { stdoutWriter } from '../core/line-writer.js';
import type { AccessFiles } from './access-files.js';
import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { LimitStore } from '../route/policy/store.js';
import { Router } from '../route/router.js';
import { UpstreamPool, type PoolHooks } from '../upstream/pool.js';
import type { DiscoveredSets, OpenKeys, PinTable } from '../upstream/sticky.js';
import { setStaticCache, setStaticOpenFiles } from '../handlers/static.js';
import type { TerminateServices } from '../terminate/handoff.js';

/** What outlives every runtime of a worker. */
export interface RuntimeDeps {
  readonly log: Logger;
  readonly worker: number;
  readonly metrics: Metrics;
  readonly sticky: OpenKeys;
  readonly pins: PinTable;
  /** Connection and rate limits (absent: none, as in tests that build a runtime without a worker). */
  readonly limits?: LimitStore;
  /** ACME HTTP-01 tokens the primary asked this worker to answer. */
  readonly acmeTokens?: ReadonlyMap<string, string>;
  /** The worker's uWebSockets.js app (started by the first config with a terminate route). */
  readonly terminate?: TerminateServices;
  /** The worker's access-log files (absent: `log.access_file` is not written, as in tests without a worker). */
  readonly accessFiles?: AccessFiles;
}

export interface Runtime {
  /** 1 = the config the instance started with; +1 per reload the primary committed. */
  readonly generation: number;
  readonly config: Config;
  readonly pools: ReadonlyMap<string, UpstreamPool>;
  readonly ctx: ConnectionContext;
  readonly l4ctx: L4Context;
}

/**
 * The runtime for `config`. An upstream whose config equals the one in `previous` keeps its pool object (health,
 * passive failures, idle keep-alive sockets, counters, the balancer's rotation, its discovered targets); a
 * changed one gets a new pool that carries what still applies (see PoolOptions.previous) and starts with the
 * upstream's set in `discovered`. Throws only on a config load.ts would refuse.
 */
export function buildRuntime(config: Config, generation: number, deps: RuntimeDeps, previous?: Runtime, discovered: DiscoveredSets = {}): Runtime {
  const pools = new Map<string, UpstreamPool>();
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    const old = previous?.pools.get(name);
    if (old !== undefined && sameUpstream(old.config, upstream)) {
      pools.set(name, old);
      continue;
    }
    const hooks = poolHooks(name, upstream.health.passive.fail_timeout, deps.log);
    const found = upstream.discover.length > 0 && Object.hasOwn(discovered, name) ? discovered[name] : undefined;
    pools.set(name, new UpstreamPool(name, upstream, hooks, { pins: deps.pins.of(name), previous: old, discovered: found }));
  }
  const { log, worker, metrics, sticky, limits, acmeTokens, terminate } = deps;
  const routeLimits = limits?.build(config);
  setStaticOpenFiles(config.limits.static_open_files);
  setStaticCache(config.static_cache);
  const router = new Router(config);
  const accessLog = accessLogFor(config, deps, router);
  const ctx: ConnectionContext = { config, router, pools, log, worker, metrics, sticky, limits, routeLimits, acmeTokens, terminate, accessLog };
  const l4ctx: L4Context = { log, metrics, timeouts: { idle: config.tunnel.idle_timeout, lifetime: config.tunnel.max_lifetime, halfClosed: config.tunnel.half_closed_timeout }, accessLog, sticky, pins: deps.pins };
  return { generation, config, pools, ctx, l4ctx };
}

/** The access log of `config`, or undefined when it writes no line (then connections build none). */
function accessLogFor(config: Config, deps: RuntimeDeps, router: Router): AccessLog | undefined {
  const path = config.log.access_file;
  const file = path === undefined ? undefined : deps.accessFiles?.writer(path);
  if (!config.log.access && file === undefined) return undefined;
  return new AccessLog({ stdout: config.log.access ? stdoutWriter() : undefined, file, worker: deps.worker, trusts: router.forwarding.trusts });
}

/** Pools of `previous` that `next` does not use (removed or changed upstreams): to retire, then close. */
export function poolsLeftBehind(previous: Runtime, next: Runtime): UpstreamPool[] {
  const kept = new Set(next.pools.values());
  return [...previous.pools.values()].filter((p) => !kept.has(p));
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
