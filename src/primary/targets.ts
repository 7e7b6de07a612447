// The instance's view of upstream targets, once for all workers: DNS discovery (the primary resolves, every
// worker gets the same set), the active health checkers and their flips, drains (the primary is their source
// of truth), target ids and the state sent to a worker before each apply. It opens no connection to a client.
import type { Config } from '../config/schema.js';
import { equalValues } from '../config/reload.js';
import type { DrainResult } from '../admin/server.js';
import { Discovery, type DiscoveryPlan } from '../upstream/discovery.js';
import { HealthChecker, probeProxyHeader, type ProbeTarget } from '../upstream/health.js';
import { UpstreamTls } from '../upstream/upstream-tls.js';
import type { UpstreamTlsConfig } from '../config/upstream-tls.js';
import { hashHomes, type DiscoveredSets } from '../upstream/sticky.js';
import type { TargetControl, ToWorker } from '../worker/ipc.js';
import type { LoadShare } from './load-share.js';
import type { PrimaryState } from './state.js';
import type { Supervisor } from './supervisor.js';

/** How long a start or reload waits for the first lookups of DNS names: an SRV lookup, then its hosts'. */
export function discoveryWaitMs(config: Config): number {
  return 2 * config.resolver.timeout + 1_000;
}

export class Targets {
  readonly #state: PrimaryState;
  readonly #supervisor: Supervisor;
  readonly #loadShare: LoadShare;
  /** Active health checkers, one per upstream that configures them. */
  #health = new Map<string, HealthChecker>();
  /** Drained targets, as "upstream\ntarget"; the primary is the source of truth, so a restarted worker gets them. */
  readonly #drained = new Set<string>();
  /** TLS client contexts of health probes, per upstream `tls` settings object (see #probeTls). */
  readonly #tlsContexts = new WeakMap<UpstreamTlsConfig, UpstreamTls>();
  /** DNS discovery of `resolve: true` and `srv` targets (null until prepared; it may follow no name). */
  #discovery: Discovery | null = null;
  /** The discovery plan of the reload running, until it is committed or abandoned. */
  #plan: DiscoveryPlan | null = null;
  /** While a reload applies: upstreams whose discovered set changed, sent once it is over; else null. */
  #heldDiscovery: Set<string> | null = null;

  constructor(state: PrimaryState, supervisor: Supervisor, loadShare: LoadShare) {
    this.#state = state;
    this.#supervisor = supervisor;
    this.#loadShare = loadShare;
  }

  get #config(): Config {
    return this.#state.served.config;
  }

  get health(): ReadonlyMap<string, HealthChecker> {
    return this.#health;
  }

  get discovery(): Discovery | null {
    return this.#discovery;
  }

  isDrained(upstream: string, target: string): boolean {
    return this.#drained.has(`${upstream}\n${target}`);
  }

  /**
   * Looks every discovered name up before the workers start (bounded: an SRV lookup and its hosts' lookups,
   * each within resolver.timeout), so they start with targets; a name that fails then is retried with backoff
   * while Portico serves (its upstream answers 503 until it resolves). It exists even with no name to follow:
   * a reload may add some.
   */
  async startDiscovery(): Promise<void> {
    const discovery = new Discovery(this.#config, (upstream) => this.#onDiscovered(upstream), this.#state.log);
    this.#discovery = discovery;
    discovery.start();
    await discovery.ready(discoveryWaitMs(this.#config));
  }

  /** The served config's health checkers start, and hash upstreams get their homes, on what discovery found. */
  startHealth(): void {
    const config = this.#config;
    const sets = this.liveSets();
    this.#health = this.healthCheckers(config, sets, new Map());
    for (const checker of this.#health.values()) checker.start();
    this.#loadShare.sticky.setHomes(hashHomes(config.upstreams, sets));
  }

  /** Shutdown: no more probes, no more lookups. */
  stop(): void {
    for (const checker of this.#health.values()) checker.stop();
    this.#discovery?.stop();
  }

  /**
   * A changed set (or one held while a reload ran): drains of targets that left are forgotten, health checks
   * follow, every worker gets it, and a hash upstream's pins are worked out on its new targets.
   */
  #onDiscovered(upstream: string): void {
    if (this.#heldDiscovery !== null) {
      // mid-reload, workers are on two configs: the set goes out once the reload is over (see Reload.#tryReload)
      this.#heldDiscovery.add(upstream);
      return;
    }
    this.#forgetDrains();
    if (!Object.hasOwn(this.#config.upstreams, upstream)) return; // a reload removed it meanwhile
    const targets = this.#discovery?.targets(upstream) ?? [];
    this.#health.get(upstream)?.setTargets(this.probeTargets(upstream, this.#config, this.liveSets()));
    this.#supervisor.broadcast({ type: 'discovered-targets', upstream, targets });
    const balance = this.#config.upstreams[upstream]?.balance;
    if (balance !== undefined && typeof balance !== 'string' && balance.policy === 'hash') {
      this.#loadShare.broadcastPins(this.#loadShare.sticky.setHomes(hashHomes(this.#config.upstreams, this.liveSets())));
    }
  }

  // ---- a reload's part: plan the new names, hold changes while workers are on two configs, commit ----

  /** New and changed DNS names of `next` are looked up (unchanged names keep their watch); null: no discovery. */
  planReload(next: Config): DiscoveryPlan | null {
    const plan = this.#discovery?.plan(next) ?? null;
    this.#plan = plan;
    return plan;
  }

  /** From here workers may be on two configs: discovery changes wait for the outcome (see endReload). */
  holdDiscovery(): void {
    this.#heldDiscovery = new Set();
  }

  /** The reload's plan is followed from now on. */
  commitPlan(plan: DiscoveryPlan | null, sets: DiscoveredSets): void {
    if (plan !== null) this.#discovery?.commit(plan, sets);
    this.#plan = null;
  }

  /** After the served config became `next`: its checkers replace the running ones, and stale drains go. */
  commitHealth(health: Map<string, HealthChecker>, next: Config): void {
    for (const [name, checker] of this.#health) if (health.get(name) !== checker) checker.stop();
    const live = this.liveSets();
    for (const [name, checker] of health) {
      if (this.#health.get(name) !== checker) checker.start();
      else checker.setTargets(this.probeTargets(name, next, live)); // kept: targets that stay keep their state
    }
    this.#health = health;
    this.#forgetDrains();
  }

  /** A refused reload: the checkers made for it (not the running ones) are stopped. */
  dropHealth(health: ReadonlyMap<string, HealthChecker>): void {
    for (const checker of health.values()) if (![...this.#health.values()].includes(checker)) checker.stop();
  }

  /** The reload is over: a plan not committed stops looking names up; sets that changed meanwhile go out now, to one config. */
  endReload(): void {
    if (this.#plan !== null) this.#discovery?.abandon(this.#plan);
    this.#plan = null;
    const held = this.#heldDiscovery ?? [];
    this.#heldDiscovery = null;
    for (const upstream of held) this.#onDiscovered(upstream);
  }

  /** What discovery follows now, per upstream (empty before it started). */
  liveSets(): DiscoveredSets {
    return this.#discovery?.sets() ?? {};
  }

  /** Addresses of an upstream's targets: from config, then discovered (one entry per address). */
  targetIds(upstream: string, config: Config = this.#config, sets: DiscoveredSets = this.liveSets()): string[] {
    return [...new Set(this.probeTargets(upstream, config, sets).map((t) => t.id))];
  }

  probeTargets(upstream: string, config: Config, sets: DiscoveredSets): ProbeTarget[] {
    const u = Object.hasOwn(config.upstreams, upstream) ? config.upstreams[upstream] : undefined;
    // an upstream that wants a PROXY header gets one on probes too (UNKNOWN / LOCAL: see probeProxyHeader)
    const proxyHeader = probeProxyHeader(u?.send_proxy_protocol ?? 'off');
    const tls = u?.tls === undefined ? undefined : this.#probeTls(u.tls);
    const fixed = (u?.targets ?? []).map((t) => ({ id: t.address, host: t.host, port: t.port, proxyHeader, tls }));
    const found = (Object.hasOwn(sets, upstream) ? sets[upstream] : []).map((t) => ({ id: t.id, host: t.host, port: t.port, proxyHeader, tls }));
    return [...fixed, ...found];
  }

  /** One TLS client context per upstream `tls` object of a config (configs are frozen: the object is the key). */
  #probeTls(config: UpstreamTlsConfig): UpstreamTls {
    let t = this.#tlsContexts.get(config);
    if (t === undefined) this.#tlsContexts.set(config, (t = new UpstreamTls(config)));
    return t;
  }

  /** Drains of targets the served config and discovery no longer have are forgotten (one coming back is not drained). */
  #forgetDrains(): void {
    for (const key of this.#drained) {
      const [upstream, address] = key.split('\n');
      if (!this.targetIds(upstream).includes(address)) this.#drained.delete(key);
    }
  }

  /**
   * Active checkers for `config` (discovered targets from `sets`): an upstream whose check is unchanged keeps its
   * checker (`running`), its targets set at commit (see setTargets: those that stay keep their state); a new or
   * changed one starts from the old checker's verdicts, so a target known down does not look healthy for a
   * while. Not started here. Each reports only flips, sent to every worker at once.
   */
  healthCheckers(config: Config, sets: DiscoveredSets, running: ReadonlyMap<string, HealthChecker>): Map<string, HealthChecker> {
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
      const onFlip = (target: string): void => this.#supervisor.broadcast({ type: 'target-state', ...this.#targetControl(name, target) });
      checkers.set(name, new HealthChecker(name, this.probeTargets(name, config, sets), active, onFlip, this.#state.log, old === undefined ? undefined : (id) => old.isHealthy(id)));
    }
    return checkers;
  }

  #targetControl(upstream: string, target: string, health: ReadonlyMap<string, HealthChecker> = this.#health): TargetControl {
    return { upstream, target, healthy: health.get(upstream)?.isHealthy(target) ?? true, draining: this.#drained.has(`${upstream}\n${target}`) };
  }

  /** Everything that differs from the defaults (healthy, not draining), sent before every apply. */
  fullState(config: Config = this.#config, health: ReadonlyMap<string, HealthChecker> = this.#health, sets: DiscoveredSets = this.liveSets()): ToWorker {
    const targets: TargetControl[] = [];
    for (const name of Object.keys(config.upstreams)) {
      for (const address of this.targetIds(name, config, sets)) {
        const c = this.#targetControl(name, address, health);
        if (!c.healthy || c.draining) targets.push(c);
      }
    }
    return { type: 'upstream-state', targets };
  }

  async drain(upstream: string, target: string, draining: boolean): Promise<DrainResult> {
    const config = this.#config.upstreams[upstream];
    if (config === undefined || !Object.hasOwn(this.#config.upstreams, upstream)) return { ok: false, status: 404, error: `unknown upstream "${upstream}"` };
    const ids = this.targetIds(upstream);
    if (!ids.includes(target)) return { ok: false, status: 404, error: `upstream "${upstream}" has no target "${target}" (targets: ${ids.join(', ')})` };
    const key = `${upstream}\n${target}`;
    if (draining) this.#drained.add(key);
    else this.#drained.delete(key);
    this.#supervisor.broadcast({ type: 'target-state', ...this.#targetControl(upstream, target) });
    // IPC keeps order per worker: a stats answer proves the worker handled the state change sent before it.
    const { answers, unanswered } = await this.#supervisor.collect();
    const appliedBy = answers.filter((a) => a.stats.upstreamTargets.some((t) => t.upstream === upstream && t.target === target && t.draining === draining)).map((a) => a.slot.id);
    return { ok: true, upstream, target, draining, appliedBy, unanswered };
  }
}
