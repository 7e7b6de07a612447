// DNS discovery of upstream targets. Runs in the primary, once for the whole instance (workers never resolve):
// follows every `resolve: true` (A/AAAA) and `srv` target entry, re-resolves each name when its TTL runs out
// (clamped to resolver.min_ttl..max_ttl), keeps the last good answer when a lookup fails (timeout, SERVFAIL,
// NXDOMAIN, empty answer) and tries again with backoff. It reports an upstream's whole discovered set when it
// changes (primary/targets.ts sends it to the workers); it connects to no target and knows nothing of pools.
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Config, DiscoverySpec, ResolverConfig } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import { labels } from '../core/metrics.js';
import type { TargetSpec } from './pool.js';

/** One address record; `ttl` in seconds, as the answer gave it. */
export interface AddressAnswer {
  readonly address: string;
  readonly ttl: number;
}

/** One SRV record (RFC 2782); `name` is the host that offers the service. */
export interface SrvAnswer {
  readonly name: string;
  readonly port: number;
  readonly priority: number;
  readonly weight: number;
}

/**
 * The queries discovery makes; errors carry node:dns codes (ENOTFOUND = NXDOMAIN, ENODATA = no record of the
 * type, ESERVFAIL, ETIMEOUT, ECONNREFUSED...). `cancel` ends the client's queries in flight (ECANCELLED).
 */
export interface DnsClient {
  resolve4(name: string): Promise<AddressAnswer[]>;
  resolve6(name: string): Promise<AddressAnswer[]>;
  resolveSrv(name: string): Promise<SrvAnswer[]>;
  cancel(): void;
}

/** A node:dns Resolver (c-ares) for `config`: its servers, or the system's; one try per query (we back off). */
export function nodeDnsClient(config: ResolverConfig): DnsClient {
  const resolver = new Resolver({ timeout: config.timeout, tries: 1 });
  if (config.servers !== undefined) resolver.setServers(config.servers);
  return {
    resolve4: (name) => resolver.resolve4(name, { ttl: true }),
    resolve6: (name) => resolver.resolve6(name, { ttl: true }),
    resolveSrv: (name) => resolver.resolveSrv(name),
    cancel: () => resolver.cancel(),
  };
}

/** At most this many targets come from one name (SRV records, or addresses): a bigger answer is cut, and said so. */
export const MAX_TARGETS_PER_NAME = 1000;
/**
 * node:dns does not expose an SRV record's own TTL: an SRV name is looked up again on the shortest TTL of its
 * hosts' address records (registries give both the same TTL), or after this when none is known (IP hosts).
 */
export const SRV_FALLBACK_TTL_MS = 30_000;
/** An SRV name's hosts are looked up this many at a time, so a large registry answer is no burst of queries. */
const HOST_LOOKUPS_AT_ONCE = 16;
/** A lookup still running this long after `resolver.timeout` is cancelled (c-ares bounds it already). */
const LOOKUP_GUARD_MS = 1_000;
/** SRV weights are 0-65535; target weights at most 1000: larger ones are scaled down, keeping their ratios. */
const MAX_WEIGHT = 1000;

/** "ip:port", or "[v6]:port": how a discovered target is named everywhere (drain, status, health). */
export function targetId(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** A TTL (seconds) as discovery uses it: within [minMs, maxMs]; 0 and missing TTLs give minMs. */
export function clampTtl(ttlSeconds: number | undefined, minMs: number, maxMs: number): number {
  const ms = ttlSeconds === undefined || !Number.isFinite(ttlSeconds) ? 0 : ttlSeconds * 1000;
  return Math.min(maxMs, Math.max(minMs, ms));
}

/** Delay before the next try after `failures` failed lookups in a row (>= 1): min, doubling, at most max. */
export function backoffMs(failures: number, minMs: number, maxMs: number): number {
  const exp = Math.min(30, Math.max(0, failures - 1));
  return Math.min(maxMs, minMs * 2 ** exp);
}

/** A lookup's outcome: the targets and the TTL to follow, or why it failed (the last good set then stays). */
export type LookupResult =
  | { readonly ok: true; readonly targets: TargetSpec[]; readonly ttlMs: number; readonly warning: string | null }
  | { readonly ok: false; readonly reason: string };

function errCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ?? e.message ?? String(err);
}

/** "No such name" and "no record of this type" are answers, not failures of the resolver. */
const isNoData = (code: string): boolean => code === 'ENOTFOUND' || code === 'ENODATA';

function describe(code: string): string {
  if (code === 'ENOTFOUND') return 'NXDOMAIN';
  if (code === 'ENODATA') return 'no records';
  if (code === 'ESERVFAIL') return 'SERVFAIL';
  if (code === 'ETIMEOUT') return 'timeout';
  if (code === 'EREFUSED') return 'REFUSED';
  return code;
}

/** Rejects after `ms` (and cancels the client) unless `p` settles first. */
function guarded<T>(p: Promise<T>, ms: number, client: DnsClient): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      client.cancel();
      reject(Object.assign(new Error(`no answer within ${ms}ms`), { code: 'ETIMEOUT' }));
    }, ms);
    timer.unref();
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

type Addresses = { readonly ok: true; readonly answers: AddressAnswer[] } | { readonly ok: false; readonly reason: string };

/**
 * The A and/or AAAA records of `name` (family any: both, and a failure of either fails the lookup, so a
 * half answer never shrinks the set). An empty answer (NXDOMAIN, or no record of any asked type) fails too.
 */
async function lookupAddresses(client: DnsClient, name: string, config: ResolverConfig): Promise<Addresses> {
  const limit = config.timeout + LOOKUP_GUARD_MS;
  const asks: Array<{ type: string; p: Promise<AddressAnswer[]> }> = [];
  if (config.family !== 'ipv6') asks.push({ type: 'A', p: guarded(client.resolve4(name), limit, client) });
  if (config.family !== 'ipv4') asks.push({ type: 'AAAA', p: guarded(client.resolve6(name), limit, client) });
  const settled = await Promise.allSettled(asks.map((a) => a.p));
  const answers: AddressAnswer[] = [];
  const codes: string[] = [];
  for (let i = 0; i < settled.length; i++) {
    const s = settled[i];
    if (s.status === 'fulfilled') {
      answers.push(...s.value);
      continue;
    }
    const code = errCode(s.reason);
    if (!isNoData(code)) return { ok: false, reason: `${name} ${asks[i].type}: ${describe(code)}` };
    codes.push(code);
  }
  if (answers.length === 0) {
    const nx = codes.length > 0 && codes.every((c) => c === 'ENOTFOUND');
    return { ok: false, reason: `${name}: ${nx ? 'NXDOMAIN' : `empty answer (no ${asks.map((a) => a.type).join('/')} records)`}` };
  }
  return { ok: true, answers };
}

/** Keeps one answer per address, sorted, at most MAX_TARGETS_PER_NAME: every process derives the same list. */
function distinctAddresses(answers: readonly AddressAnswer[]): AddressAnswer[] {
  const byAddress = new Map<string, AddressAnswer>();
  for (const a of answers) {
    const seen = byAddress.get(a.address);
    if (seen === undefined || a.ttl < seen.ttl) byAddress.set(a.address, a);
  }
  return [...byAddress.values()].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

/** Resolves a `resolve: true` entry: every address of its name on its port, with its weight and backup role. */
export async function lookupDns(client: DnsClient, spec: Extract<DiscoverySpec, { kind: 'dns' }>, config: ResolverConfig): Promise<LookupResult> {
  const r = await lookupAddresses(client, spec.name, config);
  if (!r.ok) return r;
  const all = distinctAddresses(r.answers);
  const answers = all.slice(0, MAX_TARGETS_PER_NAME);
  const targets = answers.map((a): TargetSpec => ({ id: targetId(a.address, spec.port), host: a.address, port: spec.port, weight: spec.weight, backup: spec.backup }));
  const ttl = Math.min(...answers.map((a) => a.ttl));
  const warning = all.length > answers.length ? `${all.length} addresses: the first ${MAX_TARGETS_PER_NAME} are used` : null;
  return { ok: true, targets, ttlMs: clampTtl(ttl, config.min_ttl, config.max_ttl), warning };
}

/**
 * SRV weights as target weights: 0 (RFC 2782: "very small chance" next to others) becomes 1, and when the
 * largest is above 1000 all are scaled so that it is 1000 (at least 1 each).
 */
export function srvWeights(weights: readonly number[]): number[] {
  const max = Math.max(0, ...weights);
  const scale = max > MAX_WEIGHT ? MAX_WEIGHT / max : 1;
  return weights.map((w) => Math.min(MAX_WEIGHT, Math.max(1, Math.round(w * scale))));
}

/**
 * Turns SRV records and their hosts' addresses into targets: every address of a record's host on the record's
 * port, weighted by the record's weight; the lowest priority present gives primaries, every other priority
 * backups (nginx does the same). One target per address:port (the record with the lowest priority, then the
 * highest weight, wins); sorted by id.
 */
export function srvTargets(records: readonly SrvAnswer[], addressesOf: (host: string) => readonly string[] | undefined): TargetSpec[] {
  if (records.length === 0) return [];
  const best = Math.min(...records.map((r) => r.priority));
  const weights = srvWeights(records.map((r) => r.weight));
  const order = records.map((r, i) => ({ r, w: weights[i] })).sort((a, b) => a.r.priority - b.r.priority || b.w - a.w);
  const byId = new Map<string, TargetSpec>();
  for (const { r, w } of order) {
    for (const address of addressesOf(r.name) ?? []) {
      const id = targetId(address, r.port);
      if (!byId.has(id)) byId.set(id, { id, host: address, port: r.port, weight: w, backup: r.priority !== best });
    }
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** A record's host as DNS gives it (no final dot, lower case): the key addresses are kept under. */
const hostKey = (name: string): string => name.replace(/\.$/, '').toLowerCase();

/**
 * Resolves an `srv` entry: its records, then each host's addresses. A host whose lookup fails keeps the
 * addresses it had last time (`previous`), if any; the lookup succeeds with a warning while at least one
 * target is left, and fails when none is (the last good set then stays whole).
 */
export async function lookupSrv(
  client: DnsClient,
  spec: Extract<DiscoverySpec, { kind: 'srv' }>,
  config: ResolverConfig,
  previous: ReadonlyMap<string, readonly string[]>,
): Promise<LookupResult & { readonly hosts?: Map<string, string[]> }> {
  let records: SrvAnswer[];
  try {
    records = await guarded(client.resolveSrv(spec.name), config.timeout + LOOKUP_GUARD_MS, client);
  } catch (err) {
    const code = errCode(err);
    return { ok: false, reason: `${spec.name} SRV: ${code === 'ENODATA' ? 'empty answer (no SRV records)' : describe(code)}` };
  }
  if (records.length === 0) return { ok: false, reason: `${spec.name} SRV: empty answer (no SRV records)` };
  const warnings: string[] = [];
  if (records.length > MAX_TARGETS_PER_NAME) {
    warnings.push(`${records.length} SRV records: the first ${MAX_TARGETS_PER_NAME} are used`);
    records = records.slice(0, MAX_TARGETS_PER_NAME);
  }
  const names = [...new Set(records.map((r) => hostKey(r.name)))];
  const hosts = new Map<string, string[]>();
  let ttl = Infinity;
  const looked = await mapLimit(names, HOST_LOOKUPS_AT_ONCE, (host) => (isIP(host) !== 0 ? Promise.resolve<Addresses>({ ok: true, answers: [] }) : lookupAddresses(client, host, config)));
  names.forEach((host, i) => {
    if (isIP(host) !== 0) return void hosts.set(host, [host]);
    const r = looked[i];
    if (r.ok) {
      const answers = distinctAddresses(r.answers);
      hosts.set(host, answers.map((a) => a.address));
      ttl = Math.min(ttl, ...answers.map((a) => a.ttl));
      return;
    }
    warnings.push(r.reason);
    const kept = previous.get(host);
    if (kept !== undefined) hosts.set(host, [...kept]);
  });
  const targets = srvTargets(
    records.map((r) => ({ ...r, name: hostKey(r.name) })),
    (host) => hosts.get(host),
  ).slice(0, MAX_TARGETS_PER_NAME);
  if (targets.length === 0) return { ok: false, reason: `${spec.name} SRV: no host resolved (${warnings.join('; ')})` };
  const ttlMs = ttl === Infinity ? clampTtl(SRV_FALLBACK_TTL_MS / 1000, config.min_ttl, config.max_ttl) : clampTtl(ttl, config.min_ttl, config.max_ttl);
  return { ok: true, targets, ttlMs, warning: warnings.length > 0 ? warnings.join('; ') : null, hosts };
}

/** `fn` over `items`, at most `limit` at a time; results in the order of `items`. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

/** One followed name as /status shows it. */
export interface DiscoveryStatus {
  /** Position of the entry in the upstream's `targets`. */
  readonly entry: number;
  readonly type: 'dns' | 'srv';
  readonly name: string;
  /** dns entries: the port every address is used on. */
  readonly port?: number;
  /** The targets in use (the last good answer). */
  readonly targets: string[];
  /** ISO time of the last lookup that gave targets; null before the first. */
  readonly lastResolved: string | null;
  /** Seconds the last good answer is followed for (its TTL, clamped to min_ttl..max_ttl). */
  readonly ttl: number | null;
  /** ISO time of the next lookup (while one runs: when it started); null before start and after stop. */
  readonly nextResolve: string | null;
  /** Why the last lookup failed, or what it could not resolve (SRV hosts); null when the last one was clean. */
  readonly lastError: string | null;
  readonly lastErrorAt: string | null;
  /** Failed lookups in a row (0 after a success): the backoff step. */
  readonly failures: number;
  readonly lookups: { readonly ok: number; readonly failed: number };
}

/** Tells the owner an upstream's discovered set changed: the whole new set (every entry together), and the diff. */
export type DiscoveryListener = (upstream: string, targets: readonly TargetSpec[], change: { readonly added: string[]; readonly removed: string[] }) => void;

interface Watch {
  readonly upstream: string;
  /** Replaced (same name, other position in `targets`) when a reload keeps the watch. */
  spec: DiscoverySpec;
  /** The resolver settings its client was made with. */
  readonly resolver: ResolverConfig;
  readonly client: DnsClient;
  targets: TargetSpec[];
  /** srv: each host's addresses from the last lookup that had them. */
  hosts: Map<string, string[]>;
  resolvedAt: number | null;
  ttlMs: number | null;
  nextAt: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
  failures: number;
  ok: number;
  failed: number;
  timer: NodeJS.Timeout | null;
  /** Stopped for good (removed by a reload, or the whole discovery stopped): a lookup in flight is dropped. */
  stopped: boolean;
  /** Settled after the first lookup, whatever its outcome. */
  first: Promise<void>;
  firstDone: () => void;
}

/** A watch's identity across reloads: its upstream and entry, wherever the entry sits in `targets`. */
function watchKey(upstream: string, spec: DiscoverySpec): string {
  const { index: _index, ...rest } = spec;
  return JSON.stringify([upstream, rest]);
}

/**
 * What following a new config would take (Discovery.plan): every watch it needs, the running ones it keeps,
 * new ones already looking their names up (their answers are not reported until the plan is committed).
 */
export class DiscoveryPlan {
  readonly resolver: ResolverConfig;
  /** Per upstream, its watches in entry order. */
  readonly byUpstream: ReadonlyMap<string, readonly Watch[]>;
  /** Watches started for this plan: dropped by abandon(), live from commit(). */
  readonly fresh: readonly Watch[];
  /** The entry each watch follows in the new config. */
  readonly specs: ReadonlyMap<Watch, DiscoverySpec>;

  constructor(resolver: ResolverConfig, byUpstream: ReadonlyMap<string, readonly Watch[]>, fresh: readonly Watch[], specs: ReadonlyMap<Watch, DiscoverySpec>) {
    this.resolver = resolver;
    this.byUpstream = byUpstream;
    this.fresh = fresh;
    this.specs = specs;
  }

  /** Resolves once every new name had its first lookup, or after `maxMs`. */
  ready(maxMs: number): Promise<void> {
    return firstLookups(this.fresh, maxMs);
  }

  /** Every upstream's discovered set under the new config, as they are now (see Discovery.sets). */
  sets(): Record<string, TargetSpec[]> {
    return setsOf(this.byUpstream);
  }
}

/** Resolves once each of `watches` had its first lookup, or after `maxMs`, whichever comes first. */
async function firstLookups(watches: readonly Watch[], maxMs: number): Promise<void> {
  if (watches.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, maxMs);
    timer.unref();
  });
  await Promise.race([Promise.all(watches.map((w) => w.first)), bound]);
  clearTimeout(timer);
}

/** The discovered targets of `watches` (one upstream's, in entry order): one per id, the first entry's. */
function targetsOf(watches: readonly Watch[]): TargetSpec[] {
  const out: TargetSpec[] = [];
  const seen = new Set<string>();
  for (const w of watches) {
    for (const t of w.targets) {
      if (seen.has(t.id)) continue;
      seen.add(t.id);
      out.push(t);
    }
  }
  return out;
}

function setsOf(byUpstream: ReadonlyMap<string, readonly Watch[]>): Record<string, TargetSpec[]> {
  // fromEntries defines own properties: an upstream named "__proto__" stays data.
  return Object.fromEntries([...byUpstream].map(([upstream, watches]) => [upstream, targetsOf(watches)]));
}

export interface DiscoveryOptions {
  /** Default: a node:dns resolver per name on `config.resolver`. */
  readonly client?: (config: ResolverConfig) => DnsClient;
  /** Clock for status times (ms). Default Date.now. */
  readonly now?: () => number;
}

/**
 * Every name of every upstream, each on its own timer chain (lookup, then wait its TTL or its backoff, then
 * look up again), so a slow or failing name delays only itself. start() looks every name up at once.
 */
export class Discovery {
  #config: ResolverConfig;
  #watches: Watch[] = [];
  #byUpstream = new Map<string, Watch[]>();
  /** Watches of plans not committed or abandoned yet (stop() must reach them too). */
  readonly #planned = new Set<Watch>();
  /** Each upstream's set as last reported, by id, to report only changes. */
  readonly #reported = new Map<string, string>();
  readonly #onChange: DiscoveryListener;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #makeClient: (config: ResolverConfig) => DnsClient;
  #running = false;

  constructor(config: Config, onChange: DiscoveryListener, log: Logger, options: DiscoveryOptions = {}) {
    this.#config = config.resolver;
    this.#onChange = onChange;
    this.#log = log;
    this.#now = options.now ?? Date.now;
    this.#makeClient = options.client ?? nodeDnsClient;
    for (const [upstream, u] of Object.entries(config.upstreams)) {
      if (u.discover.length === 0) continue;
      const watches = u.discover.map((spec) => this.#watch(upstream, spec, config.resolver));
      this.#byUpstream.set(upstream, watches);
      this.#watches.push(...watches);
    }
  }

  #watch(upstream: string, spec: DiscoverySpec, resolver: ResolverConfig, seed?: Watch): Watch {
    let firstDone!: () => void;
    const first = new Promise<void>((resolve) => (firstDone = resolve));
    // One client per name: cancel() on a guard timeout then ends only that name's queries.
    const w: Watch = { upstream, spec, resolver, client: this.#makeClient(resolver), targets: [], hosts: new Map(), resolvedAt: null, ttlMs: null, nextAt: null, lastError: null, lastErrorAt: null, failures: 0, ok: 0, failed: 0, timer: null, stopped: false, first, firstDone };
    if (seed !== undefined) {
      // the same name under new resolver settings: its last good answer and counters carry on
      Object.assign(w, { targets: seed.targets, hosts: seed.hosts, resolvedAt: seed.resolvedAt, ttlMs: seed.ttlMs, lastError: seed.lastError, lastErrorAt: seed.lastErrorAt, failures: seed.failures, ok: seed.ok, failed: seed.failed });
    }
    return w;
  }

  /**
   * What following `next` (a reloaded config) takes. A name whose upstream and entry (kind, name, port, weight,
   * backup) are unchanged keeps its watch: its last good set, its state and its timer. A new or changed entry
   * gets a new watch, looked up now; so does every entry when the resolver settings changed (seeded with the
   * last good set of the same entry, which stays until an answer replaces it). Nothing running changes until
   * commit(); abandon() drops the new watches.
   */
  plan(next: Config): DiscoveryPlan {
    const sameResolver = JSON.stringify(next.resolver) === JSON.stringify(this.#config);
    const running = new Map<string, Watch[]>();
    for (const w of this.#watches) {
      const key = watchKey(w.upstream, w.spec);
      const list = running.get(key);
      if (list === undefined) running.set(key, [w]);
      else list.push(w);
    }
    const byUpstream = new Map<string, Watch[]>();
    const fresh: Watch[] = [];
    const specs = new Map<Watch, DiscoverySpec>();
    for (const [upstream, u] of Object.entries(next.upstreams)) {
      if (u.discover.length === 0) continue;
      const watches = u.discover.map((spec) => {
        const old = running.get(watchKey(upstream, spec))?.shift();
        let w: Watch;
        if (old !== undefined && sameResolver) w = old;
        else {
          w = this.#watch(upstream, spec, next.resolver, old);
          fresh.push(w);
        }
        specs.set(w, spec);
        return w;
      });
      byUpstream.set(upstream, watches);
    }
    for (const w of fresh) {
      this.#planned.add(w);
      if (this.#running) void this.#run(w);
      else w.firstDone();
    }
    return new DiscoveryPlan(next.resolver, byUpstream, fresh, specs);
  }

  /**
   * Follows `plan` from now on: watches it does not keep stop, its new ones become live. `handedOut`: the sets
   * the workers were given with the new config; an upstream whose set differs now is reported at once.
   */
  commit(plan: DiscoveryPlan, handedOut: Readonly<Record<string, readonly TargetSpec[]>>): void {
    const kept = new Set<Watch>();
    for (const watches of plan.byUpstream.values()) for (const w of watches) kept.add(w);
    for (const w of this.#watches) if (!kept.has(w)) this.#halt(w);
    for (const w of plan.fresh) this.#planned.delete(w);
    for (const [w, spec] of plan.specs) w.spec = spec;
    this.#config = plan.resolver;
    this.#byUpstream = new Map([...plan.byUpstream].map(([u, ws]) => [u, [...ws]]));
    this.#watches = [...kept];
    this.#reported.clear();
    for (const upstream of this.#byUpstream.keys()) {
      const sent = Object.hasOwn(handedOut, upstream) ? handedOut[upstream] : [];
      this.#reported.set(upstream, JSON.stringify(sent));
      this.#report(upstream);
    }
  }

  /** Drops a plan that was not committed: its new watches stop, the running ones go on untouched. */
  abandon(plan: DiscoveryPlan): void {
    for (const w of plan.fresh) {
      this.#planned.delete(w);
      this.#halt(w);
    }
  }

  /** Whether any upstream has a name to follow. */
  get active(): boolean {
    return this.#watches.length > 0;
  }

  /** Looks every name up now, then keeps following them. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const w of this.#watches) void this.#run(w);
  }

  /** Resolves once every name had its first lookup, or after `maxMs`, whichever comes first. */
  ready(maxMs: number): Promise<void> {
    return firstLookups(this.#watches, maxMs);
  }

  /** Stops every timer and cancels lookups in flight; their results are dropped. */
  stop(): void {
    this.#running = false;
    for (const w of [...this.#watches, ...this.#planned]) {
      if (w.timer !== null) clearTimeout(w.timer);
      w.timer = null;
      w.nextAt = null;
      w.client.cancel();
      w.firstDone();
    }
  }

  /** Stops one watch for good. */
  #halt(w: Watch): void {
    w.stopped = true;
    if (w.timer !== null) clearTimeout(w.timer);
    w.timer = null;
    w.nextAt = null;
    w.client.cancel();
    w.firstDone();
  }

  /** An upstream's discovered targets (every entry's, in entry order, one per id); empty when it has none yet. */
  targets(upstream: string): TargetSpec[] {
    return targetsOf(this.#byUpstream.get(upstream) ?? []);
  }

  /** Every upstream's discovered set (upstreams that follow no name are left out). */
  sets(): Record<string, TargetSpec[]> {
    return setsOf(this.#byUpstream);
  }

  /** Upstreams that follow at least one name. */
  upstreams(): string[] {
    return [...this.#byUpstream.keys()];
  }

  status(): Record<string, DiscoveryStatus[]> {
    const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
    const out: Record<string, DiscoveryStatus[]> = {};
    for (const [upstream, watches] of this.#byUpstream) {
      out[upstream] = watches.map((w) => ({
        entry: w.spec.index,
        type: w.spec.kind,
        name: w.spec.name,
        ...(w.spec.kind === 'dns' ? { port: w.spec.port } : {}),
        targets: w.targets.map((t) => t.id),
        lastResolved: iso(w.resolvedAt),
        ttl: w.ttlMs === null ? null : w.ttlMs / 1000,
        nextResolve: iso(w.nextAt),
        lastError: w.lastError,
        lastErrorAt: iso(w.lastErrorAt),
        failures: w.failures,
        lookups: { ok: w.ok, failed: w.failed },
      }));
    }
    return out;
  }

  /** Prometheus text for every followed name (appended to the primary's /metrics). */
  renderMetrics(): string {
    const targets: string[] = [];
    const lookups: string[] = [];
    const last: string[] = [];
    for (const w of this.#watches) {
      const l = { upstream: w.upstream, name: w.spec.name };
      targets.push(`portico_discovery_targets${labels(l)} ${w.targets.length}`);
      lookups.push(`portico_discovery_lookups_total${labels({ ...l, result: 'ok' })} ${w.ok}`, `portico_discovery_lookups_total${labels({ ...l, result: 'fail' })} ${w.failed}`);
      if (w.resolvedAt !== null) last.push(`portico_discovery_last_success_seconds${labels(l)} ${Math.floor(w.resolvedAt / 1000)}`);
    }
    if (targets.length === 0) return '';
    return [
      '# HELP portico_discovery_targets Targets in use from a discovered name (its last good answer).',
      '# TYPE portico_discovery_targets gauge',
      ...targets,
      '# HELP portico_discovery_lookups_total DNS lookups of a discovered name by result.',
      '# TYPE portico_discovery_lookups_total counter',
      ...lookups,
      '# HELP portico_discovery_last_success_seconds Unix time of the last lookup of a name that gave targets.',
      '# TYPE portico_discovery_last_success_seconds gauge',
      ...last,
      '',
    ].join('\n');
  }

  async #run(w: Watch): Promise<void> {
    w.timer = null; // nextAt stays: the time of the lookup now running, until it sets the next one
    let result: LookupResult & { hosts?: Map<string, string[]> };
    try {
      result = w.spec.kind === 'dns' ? await lookupDns(w.client, w.spec, w.resolver) : await lookupSrv(w.client, w.spec, w.resolver, w.hosts);
    } catch (err) {
      result = { ok: false, reason: `${w.spec.name}: ${errCode(err)}` }; // lookups return their failures; this is a bug guard
    }
    if (!this.#running || w.stopped) return;
    const now = this.#now();
    let delay: number;
    if (result.ok) {
      w.ok++;
      w.failures = 0;
      w.resolvedAt = now;
      w.ttlMs = result.ttlMs;
      w.targets = result.targets;
      if (result.hosts !== undefined) w.hosts = result.hosts;
      w.lastError = result.warning;
      if (result.warning !== null) {
        w.lastErrorAt = now;
        this.#log.warn({ upstream: w.upstream, name: w.spec.name, reason: result.warning }, 'discovery: part of an answer could not be used');
      }
      // A partial answer is looked at again soon, as a failure would be.
      delay = result.warning === null ? result.ttlMs : Math.min(result.ttlMs, backoffMs(1, w.resolver.backoff.min, w.resolver.backoff.max));
      // a planned watch's answers wait for its plan's commit (which compares them with what workers got)
      if (!this.#planned.has(w)) this.#report(w.upstream);
    } else {
      w.failed++;
      w.failures++;
      w.lastError = result.reason;
      w.lastErrorAt = now;
      delay = jitter(backoffMs(w.failures, w.resolver.backoff.min, w.resolver.backoff.max));
      // The first failure and then every tenth is a warning; the rest would repeat it every backoff.
      const fields = { upstream: w.upstream, name: w.spec.name, reason: result.reason, failures: w.failures, keeping: w.targets.length, retryInMs: delay };
      if (w.failures === 1 || w.failures % 10 === 0) this.#log.warn(fields, 'discovery lookup failed: keeping the last good targets');
      else this.#log.debug(fields, 'discovery lookup failed: keeping the last good targets');
    }
    w.firstDone();
    w.nextAt = now + delay;
    w.timer = setTimeout(() => void this.#run(w), delay);
    w.timer.unref();
  }

  /** Reports `upstream`'s set when it differs from the last report. */
  #report(upstream: string): void {
    const targets = this.targets(upstream);
    const key = JSON.stringify(targets);
    const before = this.#reported.get(upstream);
    if (key === before) return;
    this.#reported.set(upstream, key);
    const old = new Set(before === undefined ? [] : (JSON.parse(before) as TargetSpec[]).map((t) => t.id));
    const now = new Set(targets.map((t) => t.id));
    const added = [...now].filter((id) => !old.has(id));
    const removed = [...old].filter((id) => !now.has(id));
    this.#log.info({ upstream, added, removed, targets: [...now] }, 'upstream targets changed by discovery');
    this.#onChange(upstream, targets, { added, removed });
  }
}

/** +-10%, so names that failed together do not retry in lockstep. */
function jitter(ms: number): number {
  return Math.max(1, Math.round(ms * (0.9 + 0.2 * Math.random())));
}
