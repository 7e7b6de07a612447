// Sticky tunnels for `hash` upstreams: a key keeps its target while any of its tunnels is open, in any worker,
// across reloads. Workers count open tunnels per (upstream, key, target) (OpenKeys); the primary sums them
// (StickyAggregate) into "pins", the keys whose tunnels sit off the target they hash to now, which every worker's
// Maglev balancer reads (PinTable). Pure bookkeeping: no sockets, no IPC (worker/main.ts and primary/load-share.ts carry it).
import type { Config } from '../config/schema.js';
import { maglevHome, type Target } from './balancer.js';
import { usableDiscovered, type TargetSpec } from './target-set.js';

/** One change of open tunnels: [upstream, key, target, +n or -n]. */
export type StickyChange = readonly [upstream: string, key: string, target: string, delta: number];

/** Pins of one upstream to set and unset; `full`: replaces every pin the worker had for it. */
export interface PinUpdate {
  readonly upstream: string;
  readonly full: boolean;
  readonly set: ReadonlyArray<readonly [key: string, target: string]>;
  readonly unset: readonly string[];
}

/**
 * Keys tracked per process (worker or primary), all upstreams together: an entry is one (upstream, key,
 * target) with open tunnels, so memory is bounded by open tunnels and by this. Tunnels past it (and keys
 * longer than MAX_STICKY_KEY_LENGTH) are not pinned: they follow the hash, as before.
 */
export const MAX_STICKY_KEYS = 65_536;
export const MAX_STICKY_KEY_LENGTH = 256;

const entryId = (upstream: string, key: string, target: string): string => JSON.stringify([upstream, key, target]);

/** A worker's open tunnels per (upstream, key, target), and what changed since the last report. */
export class OpenKeys {
  readonly #counts = new Map<string, number>();
  #pending = new Map<string, number>();

  /** Open entries (for tests and status). */
  get size(): number {
    return this.#counts.size;
  }

  /** A tunnel for `key` opened on `target`; false when it is not tracked (the caller then skips closed()). */
  opened(upstream: string, key: string, target: string): boolean {
    if (key.length > MAX_STICKY_KEY_LENGTH) return false;
    const id = entryId(upstream, key, target);
    const n = this.#counts.get(id);
    if (n === undefined && this.#counts.size >= MAX_STICKY_KEYS) return false;
    this.#counts.set(id, (n ?? 0) + 1);
    this.#pending.set(id, (this.#pending.get(id) ?? 0) + 1);
    return true;
  }

  /** A tracked tunnel closed (only after opened() returned true for it). */
  closed(upstream: string, key: string, target: string): void {
    const id = entryId(upstream, key, target);
    const n = this.#counts.get(id);
    if (n === undefined) return;
    if (n <= 1) this.#counts.delete(id);
    else this.#counts.set(id, n - 1);
    this.#pending.set(id, (this.#pending.get(id) ?? 0) - 1);
  }

  /** The changes since the last call (net, zero deltas left out). */
  takeChanges(): StickyChange[] {
    if (this.#pending.size === 0) return [];
    const out: StickyChange[] = [];
    for (const [id, delta] of this.#pending) {
      if (delta === 0) continue;
      const [upstream, key, target] = JSON.parse(id) as [string, string, string];
      out.push([upstream, key, target, delta]);
    }
    this.#pending = new Map();
    return out;
  }
}

/** Where a key of an upstream hashes to now (the target's address), ignoring health. */
export type HomeOf = (key: string) => string | undefined;

/** Discovered targets per upstream, as the primary hands them to workers (upstreams that follow no name: absent). */
export type DiscoveredSets = Readonly<Record<string, readonly TargetSpec[]>>;

/**
 * Where keys hash to, for every `hash` upstream of a config (others have no pins), over the targets its pools
 * balance on: the fixed ones, then the discovered ones in `discovered` (the list UpstreamPool builds).
 */
export function hashHomes(upstreams: Config['upstreams'], discovered: DiscoveredSets = {}): Map<string, HomeOf> {
  const homes = new Map<string, HomeOf>();
  for (const [name, u] of Object.entries(upstreams)) {
    if (typeof u.balance === 'string' || u.balance.policy !== 'hash') continue;
    const found = Object.hasOwn(discovered, name) ? usableDiscovered(u, discovered[name]) : [];
    const targets = [
      ...u.targets.map((t): Target => ({ id: t.address, host: t.host, port: t.port, weight: t.weight, available: true, active: 0 })),
      ...found.map((t): Target => ({ id: t.id, host: t.host, port: t.port, weight: t.weight, available: true, active: 0 })),
    ];
    homes.set(name, maglevHome(targets));
  }
  return homes;
}

/** The primary's view: every worker's open tunnels per (upstream, key, target), and the pins last sent. */
export class StickyAggregate {
  /** Per worker id: entry id -> count, so a worker that exits takes its tunnels with it. */
  readonly #byWorker = new Map<number, Map<string, number>>();
  /** Per upstream, per key, per target: open tunnels across workers. */
  readonly #totals = new Map<string, Map<string, Map<string, number>>>();
  #entries = 0;
  /** Per hash upstream: where keys hash to; upstreams not listed have no pins. */
  #homes = new Map<string, HomeOf>();
  /** Pins as the workers have them. */
  readonly #pins = new Map<string, Map<string, string>>();

  /** (upstream, key, target) entries with open tunnels, all workers together. */
  get size(): number {
    return this.#entries;
  }

  /** Pins in force, all upstreams together. */
  get pinCount(): number {
    let n = 0;
    for (const m of this.#pins.values()) n += m.size;
    return n;
  }

  /** The hash upstreams changed (start, reload): every pin is worked out again; one full update per upstream. */
  setHomes(homes: ReadonlyMap<string, HomeOf>): PinUpdate[] {
    this.#homes = new Map(homes);
    const updates: PinUpdate[] = [];
    for (const upstream of new Set([...this.#pins.keys(), ...this.#homes.keys()])) {
      const pins = new Map<string, string>();
      const keys = this.#totals.get(upstream);
      if (keys !== undefined && this.#homes.has(upstream)) {
        for (const key of keys.keys()) {
          const pin = this.#pinFor(upstream, key);
          if (pin !== undefined) pins.set(key, pin);
        }
      }
      if (pins.size === 0 && !this.#pins.has(upstream)) continue;
      if (pins.size === 0) this.#pins.delete(upstream);
      else this.#pins.set(upstream, pins);
      updates.push({ upstream, full: true, set: [...pins], unset: [] });
    }
    return updates;
  }

  /** Applies one worker's changes; returns the pin updates they cause. */
  apply(worker: number, changes: readonly StickyChange[]): PinUpdate[] {
    let mine = this.#byWorker.get(worker);
    if (mine === undefined) this.#byWorker.set(worker, (mine = new Map()));
    const touched = new Map<string, Set<string>>();
    for (const [upstream, key, target, delta] of changes) {
      const id = entryId(upstream, key, target);
      const had = mine.get(id) ?? 0;
      if (had === 0 && (delta < 0 || this.#entries >= MAX_STICKY_KEYS)) continue;
      const now = Math.max(0, had + delta);
      if (now === 0) mine.delete(id);
      else mine.set(id, now);
      this.#add(upstream, key, target, now - had);
      let keys = touched.get(upstream);
      if (keys === undefined) touched.set(upstream, (keys = new Set()));
      keys.add(key);
    }
    return this.#updatesFor(touched);
  }

  /** A worker exited: its tunnels are gone. */
  dropWorker(worker: number): PinUpdate[] {
    const mine = this.#byWorker.get(worker);
    if (mine === undefined) return [];
    this.#byWorker.delete(worker);
    const touched = new Map<string, Set<string>>();
    for (const [id, n] of mine) {
      const [upstream, key, target] = JSON.parse(id) as [string, string, string];
      this.#add(upstream, key, target, -n);
      let keys = touched.get(upstream);
      if (keys === undefined) touched.set(upstream, (keys = new Set()));
      keys.add(key);
    }
    return this.#updatesFor(touched);
  }

  /** Every pin, for a worker that just started. */
  full(): PinUpdate[] {
    return [...this.#pins].map(([upstream, pins]) => ({ upstream, full: true, set: [...pins], unset: [] }));
  }

  /** Open tunnels for `key` per target (tests, status). */
  tunnelsOf(upstream: string, key: string): ReadonlyMap<string, number> {
    return this.#totals.get(upstream)?.get(key) ?? new Map();
  }

  #add(upstream: string, key: string, target: string, delta: number): void {
    if (delta === 0) return;
    let keys = this.#totals.get(upstream);
    if (keys === undefined) this.#totals.set(upstream, (keys = new Map()));
    let targets = keys.get(key);
    if (targets === undefined) keys.set(key, (targets = new Map()));
    const before = targets.get(target) ?? 0;
    const after = before + delta;
    if (after <= 0) {
      targets.delete(target);
      if (before > 0) this.#entries--;
      if (targets.size === 0) keys.delete(key);
      if (keys.size === 0) this.#totals.delete(upstream);
    } else {
      targets.set(target, after);
      if (before === 0) this.#entries++;
    }
  }

  /**
   * The target `key` is pinned to: the one holding most of its open tunnels (ties: the key's home, else the
   * lowest address), or undefined when that is the home anyway, the key has no open tunnel, or the upstream
   * does not hash.
   */
  #pinFor(upstream: string, key: string): string | undefined {
    const home = this.#homes.get(upstream);
    const targets = this.#totals.get(upstream)?.get(key);
    if (home === undefined || targets === undefined) return undefined;
    const homeTarget = home(key);
    let best: string | undefined;
    let bestCount = 0;
    for (const [target, n] of targets) {
      if (n > bestCount || (n === bestCount && best !== undefined && best !== homeTarget && (target === homeTarget || target < best))) {
        best = target;
        bestCount = n;
      }
    }
    return best === homeTarget ? undefined : best;
  }

  #updatesFor(touched: ReadonlyMap<string, ReadonlySet<string>>): PinUpdate[] {
    const updates: PinUpdate[] = [];
    for (const [upstream, keys] of touched) {
      if (!this.#homes.has(upstream)) continue;
      let pins = this.#pins.get(upstream);
      const set: Array<[string, string]> = [];
      const unset: string[] = [];
      for (const key of keys) {
        const pin = this.#pinFor(upstream, key);
        const was = pins?.get(key);
        if (pin === was) continue;
        if (pin === undefined) {
          pins?.delete(key);
          unset.push(key);
        } else {
          if (pins === undefined) this.#pins.set(upstream, (pins = new Map()));
          pins.set(key, pin);
          set.push([key, pin]);
        }
      }
      if (pins !== undefined && pins.size === 0) this.#pins.delete(upstream);
      if (set.length + unset.length > 0) updates.push({ upstream, full: false, set, unset });
    }
    return updates;
  }
}

/**
 * A worker's pins, per upstream, as the primary sent them. The map of an upstream is created once and kept
 * (balancers hold it across reloads); updates change its entries in place.
 */
export class PinTable {
  readonly #byUpstream = new Map<string, Map<string, string>>();
  /** Told of each update once applied (the addon's L4 compiles keep a copy of their upstream's pins). */
  readonly #watchers = new Set<(update: PinUpdate) => void>();

  /** Calls `fn` after every update from now on; the returned function stops it. */
  watch(fn: (update: PinUpdate) => void): () => void {
    this.#watchers.add(fn);
    return () => this.#watchers.delete(fn);
  }

  /** The live pin map of `upstream` (key -> target address). */
  of(upstream: string): ReadonlyMap<string, string> {
    let m = this.#byUpstream.get(upstream);
    if (m === undefined) this.#byUpstream.set(upstream, (m = new Map()));
    return m;
  }

  apply(update: PinUpdate): void {
    const m = this.of(update.upstream) as Map<string, string>;
    if (update.full) m.clear();
    for (const key of update.unset) m.delete(key);
    for (const [key, target] of update.set) m.set(key, target);
    for (const fn of this.#watchers) fn(update);
  }
}
