// Balancing policies over a pool's targets. Every policy reads only `available`, `weight` and the load
// (`active` + `remote`); health checks and limits flip `available`, nothing else (STYLE.md 10). No sockets, no request parsing here
// (keys come from hash-key.ts). Picks allocate nothing: per-target state lives in typed arrays indexed like
// `targets`, which a balancer never reorders or resizes (a pool whose targets change builds a new balancer);
// hash tables are built once per balancer. Slow start scales weights from timestamps the pool sets
// (`rampUntil`), read at pick time: no timer per target or request.
import { stickyCookieValue } from './hash-key.js';
import type { BalancePolicy, BalanceSpec, Target } from './target.js';

export type { BalancePolicy, BalanceSpec, Target };

export interface Balancer {
  /** Picks a target, skipping unavailable ones and those in `exclude` (already tried); undefined when none. */
  pick(exclude?: ReadonlySet<Target>): Target | undefined;
  /**
   * Same as pick() for a request carrying `key` (hash key or sticky cookie value, see hash-key.ts). Key-less
   * policies ignore it; `hash` and `cookie` fall back to their key-less policy when the key is undefined.
   */
  pickFor(key: string | undefined, exclude?: ReadonlySet<Target>): Target | undefined;
}

export interface BalancerOptions {
  /** Uniform in [0, 1); random_two only. Tests inject a seeded one. Default Math.random. */
  readonly random?: () => number;
  /** Slow start window in ms (0 = off, the default); hash ignores it (a key keeps its target). */
  readonly slowStart?: number;
  /** Clock for slow start, same base as `Target.rampUntil`. Default Date.now. */
  readonly now?: () => number;
  /**
   * hash only: keys pinned to a target address while tunnels for them are open (upstream/sticky.ts). A live
   * map the owner updates in place; a pinned key goes to its target while that one is eligible.
   */
  readonly pins?: ReadonlyMap<string, string>;
}

/** Share of its weight a target gets the moment it comes back up with slow start on. */
export const SLOW_START_FLOOR = 0.1;

/** Slow start as a balancer reads it: the window and the clock, or null when off. */
interface Ramp {
  readonly window: number;
  readonly now: () => number;
}

function rampOf(options: BalancerOptions): Ramp | null {
  const window = options.slowStart ?? 0;
  return window > 0 ? { window, now: options.now ?? Date.now } : null;
}

/** The weight `t` has at `now`: linear from SLOW_START_FLOOR x weight to weight over the last `window` ms before rampUntil. */
export function rampedWeight(t: Target, now: number, window: number): number {
  const until = t.rampUntil;
  if (until === undefined || until <= now) return t.weight;
  const left = Math.min(1, (until - now) / window); // 1 when it just came up, 0 when the ramp is over
  return t.weight * (1 - (1 - SLOW_START_FLOOR) * left);
}

export function createBalancer(spec: BalanceSpec, targets: readonly Target[], options: BalancerOptions = {}): Balancer {
  if (typeof spec === 'string') {
    switch (spec) {
      case 'round_robin':
        return new SmoothWeightedRoundRobin(targets, rampOf(options));
      case 'least_conn':
        return new LeastConn(targets, rampOf(options));
      case 'random_two':
        return new RandomTwo(targets, options.random ?? Math.random, rampOf(options));
      default: {
        const never: never = spec;
        throw new TypeError(`unknown balance policy ${String(never)}`);
      }
    }
  }
  switch (spec.policy) {
    case 'hash':
      return new Maglev(targets, options.pins);
    case 'cookie':
      return new CookieSticky(targets, createBalancer(spec.fallback, targets, options), spec.secret);
    default: {
      const never: never = spec;
      throw new TypeError(`unknown balance policy ${JSON.stringify(never)}`);
    }
  }
}

/** Whether a policy reads the targets' load (active + remote): only those need the cross-worker aggregate. */
export function readsLoad(spec: BalanceSpec): boolean {
  if (typeof spec === 'string') return spec === 'least_conn' || spec === 'random_two';
  return spec.policy === 'cookie' && spec.fallback === 'least_conn';
}

/** Open requests + tunnels to `t` across all workers (this one exact, the others as last aggregated). */
const loadOf = (t: Target): number => t.active + (t.remote ?? 0);

const eligible = (t: Target, exclude: ReadonlySet<Target> | undefined): boolean =>
  t.available && t.weight > 0 && (exclude === undefined || !exclude.has(t));

/**
 * nginx's smooth weighted round robin (ngx_http_upstream_get_peer): each pick adds every eligible target's
 * weight to its `current`, takes the largest `current` (first one on ties) and subtracts the total weight
 * from it. Weights 5,1,1 give a a b a c a a: the heavy target is spread out, not picked five times in a row.
 * Targets that are unavailable or excluded sit the pick out, so their `current` does not build up.
 */
class SmoothWeightedRoundRobin implements Balancer {
  readonly #targets: readonly Target[];
  /** Bounded by the total weight (<= 1000 per target): exact for integer weights, a rounding error while ramping. */
  readonly #current: Float64Array;
  readonly #ramp: Ramp | null;

  constructor(targets: readonly Target[], ramp: Ramp | null) {
    this.#targets = targets;
    this.#current = new Float64Array(targets.length);
    this.#ramp = ramp;
  }

  pickFor(_key: string | undefined, exclude?: ReadonlySet<Target>): Target | undefined {
    return this.pick(exclude);
  }

  pick(exclude?: ReadonlySet<Target>): Target | undefined {
    const targets = this.#targets;
    const current = this.#current;
    const ramp = this.#ramp;
    const now = ramp === null ? 0 : ramp.now();
    let best = -1;
    let total = 0;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i];
      if (!eligible(t, exclude)) continue;
      const w = ramp === null ? t.weight : rampedWeight(t, now, ramp.window);
      current[i] += w;
      total += w;
      if (best === -1 || current[i] > current[best]) best = i;
    }
    if (best === -1) return undefined;
    current[best] -= total;
    return targets[best];
  }
}

/**
 * Fewest open requests + tunnels (all workers: loadOf) relative to weight, compared as
 * a.load * b.weight < b.load * a.weight (no floats).
 * Ties go through smooth weighted round robin among the tied targets only, as nginx's least_conn does, so
 * idle targets share the load by weight instead of the first one taking everything.
 */
class LeastConn implements Balancer {
  readonly #targets: readonly Target[];
  readonly #current: Float64Array;
  readonly #ramp: Ramp | null;
  /** Weights of this pick (ramped by slow start), so both passes compare the same numbers. */
  readonly #w: Float64Array;

  constructor(targets: readonly Target[], ramp: Ramp | null) {
    this.#targets = targets;
    this.#current = new Float64Array(targets.length);
    this.#ramp = ramp;
    this.#w = new Float64Array(targets.length);
  }

  pickFor(_key: string | undefined, exclude?: ReadonlySet<Target>): Target | undefined {
    return this.pick(exclude);
  }

  pick(exclude?: ReadonlySet<Target>): Target | undefined {
    const targets = this.#targets;
    const ramp = this.#ramp;
    const now = ramp === null ? 0 : ramp.now();
    const w = this.#w;
    let best = -1;
    let ties = 0;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i];
      if (!eligible(t, exclude)) continue;
      w[i] = ramp === null ? t.weight : rampedWeight(t, now, ramp.window);
      if (best === -1) {
        best = i;
        ties = 1;
        continue;
      }
      const lhs = loadOf(t) * w[best];
      const rhs = loadOf(targets[best]) * w[i];
      if (lhs < rhs) {
        best = i;
        ties = 1;
      } else if (lhs === rhs) {
        ties++;
      }
    }
    if (best === -1 || ties === 1) return best === -1 ? undefined : targets[best];

    // Second pass over the tied targets only (those with the same active/weight as `best`, from `best` on).
    const current = this.#current;
    const bLoad = loadOf(targets[best]);
    let chosen = -1;
    let total = 0;
    for (let i = best; i < targets.length; i++) {
      const t = targets[i];
      if (!eligible(t, exclude) || loadOf(t) * w[best] !== bLoad * w[i]) continue;
      current[i] += w[i];
      total += w[i];
      if (chosen === -1 || current[i] > current[chosen]) chosen = i;
    }
    current[chosen] -= total;
    return targets[chosen];
  }
}

/** Random probes before random_two falls back to an exact O(n) draw (most targets are normally available). */
const RANDOM_PROBES = 4;

/**
 * Power of two choices (Mitzenmacher; Envoy's least_request, HAProxy's `random(2)`): draw two distinct
 * eligible targets with probability in proportion to weight and keep the one with less load per weight
 * (loadOf, all workers: a.load * b.weight < b.load * a.weight, no floats); on equal load the first draw wins. So idle targets
 * share requests by weight (short requests rarely see any load), and under load the lighter one takes it.
 * Weighted draws use Vose's alias table, built once: O(1) while most targets are eligible; after a few draws
 * landing on ineligible targets, an exact draw over the eligible ones (O(n)), so it never gives up.
 */
class RandomTwo implements Balancer {
  readonly #targets: readonly Target[];
  readonly #random: () => number;
  /** Alias table: slot i keeps i with probability #keep[i], else gives #alias[i]. */
  readonly #keep: Float64Array;
  readonly #alias: Uint32Array;
  readonly #ramp: Ramp | null;

  constructor(targets: readonly Target[], random: () => number, ramp: Ramp | null) {
    this.#targets = targets;
    this.#random = random;
    this.#ramp = ramp;
    const n = targets.length;
    this.#keep = new Float64Array(n);
    this.#alias = new Uint32Array(n);
    let total = 0;
    for (const t of targets) total += t.weight;
    if (total > 0) buildAlias(targets.map((t) => (t.weight * n) / total), this.#keep, this.#alias);
  }

  pickFor(_key: string | undefined, exclude?: ReadonlySet<Target>): Target | undefined {
    return this.pick(exclude);
  }

  pick(exclude?: ReadonlySet<Target>): Target | undefined {
    const ramp = this.#ramp;
    const now = ramp === null ? 0 : ramp.now();
    const a = this.#draw(-1, exclude, now);
    if (a === -1) return undefined;
    const b = this.#draw(a, exclude, now);
    const targets = this.#targets;
    const ta = targets[a];
    if (b === -1) return ta;
    const tb = targets[b];
    const wa = ramp === null ? ta.weight : rampedWeight(ta, now, ramp.window);
    const wb = ramp === null ? tb.weight : rampedWeight(tb, now, ramp.window);
    return loadOf(tb) * wa < loadOf(ta) * wb ? tb : ta;
  }

  #weight(t: Target, now: number): number {
    const ramp = this.#ramp;
    return ramp === null ? t.weight : rampedWeight(t, now, ramp.window);
  }

  /**
   * Index of an eligible target other than `skip`, drawn in proportion to (ramped) weight; -1 when there is
   * none. The alias table holds configured weights: a ramping target drawn from it is kept with probability
   * ramped / configured (rejection sampling), so the table is never rebuilt.
   */
  #draw(skip: number, exclude: ReadonlySet<Target> | undefined, now: number): number {
    const targets = this.#targets;
    const n = targets.length;
    if (n === 0) return -1;
    for (let probe = 0; probe < RANDOM_PROBES; probe++) {
      const u = this.#random() * n;
      const slot = Math.min(n - 1, Math.floor(u));
      const i = u - slot < this.#keep[slot] ? slot : this.#alias[slot];
      if (i === skip || !eligible(targets[i], exclude)) continue;
      const t = targets[i];
      if (this.#ramp === null || t.rampUntil === undefined || t.rampUntil <= now) return i;
      if (this.#random() * t.weight < this.#weight(t, now)) return i;
    }
    let total = 0;
    for (let i = 0; i < n; i++) if (i !== skip && eligible(targets[i], exclude)) total += this.#weight(targets[i], now);
    if (total === 0) return -1;
    let r = this.#random() * total;
    let last = -1;
    for (let i = 0; i < n; i++) {
      if (i === skip || !eligible(targets[i], exclude)) continue;
      last = i;
      r -= this.#weight(targets[i], now);
      if (r < 0) return i;
    }
    return last; // rounding left r at ~0 past the last eligible target
  }
}

/** Vose's alias method over `scaled` (weights scaled to average 1): fills keep/alias, O(n), once. */
function buildAlias(scaled: number[], keep: Float64Array, alias: Uint32Array): void {
  const small: number[] = [];
  const large: number[] = [];
  scaled.forEach((p, i) => (p < 1 ? small : large).push(i));
  while (small.length > 0 && large.length > 0) {
    const s = small.pop() as number;
    const l = large[large.length - 1];
    keep[s] = scaled[s];
    alias[s] = l;
    scaled[l] = scaled[l] + scaled[s] - 1;
    if (scaled[l] < 1) small.push(large.pop() as number);
  }
  for (const i of large) keep[i] = 1;
  for (const i of small) keep[i] = 1; // only float rounding leaves any here
}

/** Maglev lookup tables hold at least this many entries per target (the paper's M >= 100 N). */
const ENTRIES_PER_TARGET = 100;
/** The paper's smallest recommended size; a prime. */
const MIN_TABLE_SIZE = 65_537;
/** Table steps walked past unavailable targets before the bounded fallback scan takes over. */
const MAX_WALK = 256;

/**
 * Consistent hashing with Google's Maglev lookup table (Eisenbud et al., NSDI 2016, §3.4), weighted as in
 * Envoy's MaglevTable: every target with weight > 0 fills table slots along its own permutation, a target
 * taking a turn only as often as its weight allows, so slots split in proportion to weight (within a slot).
 * Chosen over a ring with virtual nodes for its O(1) lookup (one modulo, one array read, vs a binary search
 * over N x vnodes) and its even split (a 100-vnode ring leaves ~10% load spread between targets); the price is
 * slightly more than the minimal 1/N of keys moving when a target is added or removed from config (measured in
 * test/unit/balancer.test.ts and the report). The table is built from config once: health flips never rebuild
 * it. A key whose slot holds an ineligible target walks the next slots to the first eligible one: only the
 * keys of a target that went down move, spread over the others by their share of the table, and they come
 * back when it returns. Without a key (header absent...) a pick is smooth weighted round robin. A key pinned
 * (sticky tunnels: its open tunnels are on another target than its slot) goes to that target while it is
 * eligible; the pin map is empty for almost every key and costs one size check per pick then.
 */
class Maglev implements Balancer {
  readonly #targets: readonly Target[];
  /** Slot -> index into #targets. */
  readonly #table: Uint16Array | Uint32Array;
  readonly #fallback: SmoothWeightedRoundRobin;
  readonly #pins: ReadonlyMap<string, string> | undefined;
  /** Address -> target, for pins (a repeated address: the first one). */
  readonly #byId = new Map<string, Target>();

  constructor(targets: readonly Target[], pins?: ReadonlyMap<string, string>) {
    this.#targets = targets;
    this.#fallback = new SmoothWeightedRoundRobin(targets, null); // hash ignores slow start: keys keep their target
    this.#table = buildMaglevTable(targets);
    this.#pins = pins;
    for (const t of targets) if (!this.#byId.has(t.id)) this.#byId.set(t.id, t);
  }

  pick(exclude?: ReadonlySet<Target>): Target | undefined {
    return this.#fallback.pick(exclude);
  }

  pickFor(key: string | undefined, exclude?: ReadonlySet<Target>): Target | undefined {
    if (key === undefined) return this.#fallback.pick(exclude);
    const pins = this.#pins;
    if (pins !== undefined && pins.size > 0) {
      // A key with open tunnels on another target than its slot stays there while that target is eligible.
      const id = pins.get(key);
      const pinned = id === undefined ? undefined : this.#byId.get(id);
      if (pinned !== undefined && eligible(pinned, exclude)) return pinned;
    }
    const table = this.#table;
    const size = table.length;
    if (size === 0) return undefined;
    const targets = this.#targets;
    const h = hashKey(key);
    let slot = h % size;
    const first = targets[table[slot]];
    if (eligible(first, exclude)) return first;
    const walk = Math.min(size, MAX_WALK);
    for (let step = 1; step < walk; step++) {
      if (++slot === size) slot = 0;
      const t = targets[table[slot]];
      if (eligible(t, exclude)) return t;
    }
    // Few eligible targets left (or they own few slots): a deterministic scan from a key-chosen start.
    const n = targets.length;
    const start = h % n;
    for (let i = 0; i < n; i++) {
      const t = targets[(start + i) % n];
      if (eligible(t, exclude)) return t;
    }
    return undefined;
  }
}

/** Smallest prime >= n (n is at most a few million: trial division is fast enough for a one-time build). */
function primeAtLeast(n: number): number {
  for (let p = n | 1; ; p += 2) {
    let prime = p > 2;
    for (let d = 3; d * d <= p; d += 2) {
      if (p % d === 0) {
        prime = false;
        break;
      }
    }
    if (prime) return p;
  }
}

/** The lookup table for `targets` (empty when none has weight > 0). Exported for the remap measurements. */
export function buildMaglevTable(targets: readonly Target[]): Uint16Array | Uint32Array {
  const members: number[] = [];
  for (let i = 0; i < targets.length; i++) if (targets[i].weight > 0) members.push(i);
  if (members.length === 0) return new Uint16Array(0);
  const size = primeAtLeast(Math.max(MIN_TABLE_SIZE, members.length * ENTRIES_PER_TARGET));
  const table = targets.length <= 0xffff ? new Uint16Array(size) : new Uint32Array(size);
  const filled = new Uint8Array(size);

  const m = members.length;
  const next = new Float64Array(m); // next permutation slot of each member
  const skip = new Float64Array(m);
  const credit = new Float64Array(m); // Envoy's target_weight_: a member takes a turn once iteration * w reaches it
  let maxWeight = 0;
  const seen = new Map<string, number>();
  for (let j = 0; j < m; j++) {
    const t = targets[members[j]];
    maxWeight = Math.max(maxWeight, t.weight);
    // Permutations come from the address, not the position, so reordering the config moves no key; a repeated
    // address gets its own permutation.
    const dup = seen.get(t.id) ?? 0;
    seen.set(t.id, dup + 1);
    const name = dup === 0 ? t.id : `${t.id}#${dup}`;
    next[j] = hashString(name, 0x9e3779b9) % size; // offset
    skip[j] = (hashString(name, 0x85ebca6b) % (size - 1)) + 1;
  }
  let count = 0;
  for (let iteration = 1; count < size; iteration++) {
    for (let j = 0; j < m && count < size; j++) {
      const w = targets[members[j]].weight;
      if (iteration * w < credit[j]) continue;
      credit[j] += maxWeight;
      let c = next[j];
      while (filled[c] === 1) c = (c + skip[j]) % size;
      filled[c] = 1;
      table[c] = members[j];
      next[j] = (c + skip[j]) % size;
      count++;
    }
  }
  return table;
}

/**
 * Where each key hashes to in the Maglev table of `targets` (its "home"), ignoring availability: the primary's
 * reference for sticky tunnel pins (upstream/sticky.ts). Builds the table once.
 */
export function maglevHome(targets: readonly Target[]): (key: string) => string | undefined {
  const table = buildMaglevTable(targets);
  return (key) => (table.length === 0 ? undefined : targets[table[hashKey(key) % table.length]].id);
}

/**
 * FNV-1a over UTF-16 code units, then murmur3's fmix32 so that keys differing in their last characters (IPs,
 * counters) spread over the whole 32-bit range. Non-cryptographic: a client choosing keys can choose its
 * target, which is what a hash key means anyway.
 */
export function hashString(s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The hash a `hash` balancer applies to request keys (exported so tests can measure remapping). */
export const hashKey = (key: string): number => hashString(key, 0);

/**
 * Cookie stickiness: a request whose cookie names an eligible target goes there; otherwise (no cookie, an
 * unknown or stale value, the target down, drained or already tried) the fallback policy picks and the caller
 * sets the cookie to the new target (hash-key.ts stickyCookieFor). Values are looked up in a Map built once.
 */
class CookieSticky implements Balancer {
  readonly #byValue = new Map<string, Target>();
  readonly #fallback: Balancer;

  constructor(targets: readonly Target[], fallback: Balancer, secret: string | undefined) {
    this.#fallback = fallback;
    for (const t of targets) {
      const value = stickyCookieValue(t, secret);
      if (!this.#byValue.has(value)) this.#byValue.set(value, t); // a repeated address: the first one answers
    }
  }

  pick(exclude?: ReadonlySet<Target>): Target | undefined {
    return this.#fallback.pick(exclude);
  }

  pickFor(key: string | undefined, exclude?: ReadonlySet<Target>): Target | undefined {
    if (key !== undefined) {
      const t = this.#byValue.get(key);
      if (t !== undefined && eligible(t, exclude)) return t;
    }
    return this.#fallback.pick(exclude);
  }
}
