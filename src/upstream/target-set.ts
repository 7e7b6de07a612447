// A pool's set of targets: the fixed ones from config, then the discovered ones, each with its slot; the targets
// discovery removed that still have work (leaving) and every one it ever removed (gone). It places a new
// discovered set and takes removed slots out; it connects nothing and computes no availability (the pool does).
import type { UpstreamConfig } from '../config/schema.js';
import type { Target } from './balancer.js';
import { closeIdle, type TargetSlot } from './target-slot.js';

/** A target as discovery hands it to the pool: `id` is "ip:port" ("[v6]:port"), the key it is known by. */
export interface TargetSpec {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
}

/** What setDiscovered() changed, by target id. */
export interface DiscoveredChange {
  readonly added: string[];
  readonly removed: string[];
}

/**
 * The discovered targets a pool of `config` uses, in the order given: one per address, none repeating a fixed
 * target's address (the fixed one serves). Balancers see the fixed targets, then these (sticky.ts hashHomes
 * builds the same list).
 */
export function usableDiscovered(config: UpstreamConfig, specs: readonly TargetSpec[]): TargetSpec[] {
  const taken = new Set(config.targets.map((t) => t.address));
  const out: TargetSpec[] = [];
  for (const spec of specs) {
    if (taken.has(spec.id)) continue;
    taken.add(spec.id);
    out.push(spec);
  }
  return out;
}

/** Builds the slot of a new target (the set registers it); `old`: the same address in the pool replaced. */
export type NewSlot = (spec: TargetSpec, startUp: boolean, old?: TargetSlot) => TargetSlot;

export class TargetSet {
  /** Every target in rotation or able to return to it, by its object (the pool shares this map). */
  readonly slots = new Map<Target, TargetSlot>();
  /**
   * Targets removed by discovery that still have open sockets or work (a spliced tunnel's sockets are closed
   * in JS but its target stays `active`), for /status; pruned when a report or a new set finds them idle.
   */
  readonly leaving = new Map<Target, TargetSlot>();
  /** Every target ever removed: a late acquire for one is told to pick again. */
  readonly gone = new WeakSet<Target>();
  /** Fixed targets (config order), then discovered ones (in the primary's order); replaced, never mutated. */
  targets: readonly Target[] = [];
  discoveredOnce = false;
  /** How many of `targets` are fixed (from config). */
  readonly #fixed: number;
  readonly #newSlot: NewSlot;
  /** Tells a removed slot's waiters to pick another target. */
  readonly #moveWaiters: (slot: TargetSlot, why: string) => void;

  constructor(fixed: number, newSlot: NewSlot, moveWaiters: (slot: TargetSlot, why: string) => void) {
    this.#fixed = fixed;
    this.#newSlot = newSlot;
    this.#moveWaiters = moveWaiters;
  }

  /** A new slot for `spec`, registered (see NewSlot). */
  add(spec: TargetSpec, startUp: boolean, old?: TargetSlot): TargetSlot {
    const slot = this.#newSlot(spec, startUp, old);
    this.slots.set(slot.target, slot);
    return slot;
  }

  /** Whether the discovered targets in use are `usable` already, weights and roles included. */
  same(usable: readonly TargetSpec[]): boolean {
    const fixed = this.#fixed;
    if (this.targets.length - fixed !== usable.length) return false;
    return usable.every((spec, i) => {
      const t = this.targets[fixed + i];
      return t.id === spec.id && t.weight === spec.weight && (t.backup ?? false) === spec.backup;
    });
  }

  /**
   * Puts `usable` (see usableDiscovered) after the fixed targets; the balancer is the pool's to rebuild.
   * `before`: the replaced pool's slots, for a pool being built.
   */
  place(usable: readonly TargetSpec[], before?: ReadonlyMap<string, TargetSlot>): DiscoveredChange {
    const fixed = this.#fixed;
    const current = new Map<string, TargetSlot>();
    for (let i = fixed; i < this.targets.length; i++) {
      const t = this.targets[i];
      current.set(t.id, this.slots.get(t) as TargetSlot);
    }
    const leavingById = new Map<string, TargetSlot>();
    for (const slot of this.leaving.values()) leavingById.set(slot.target.id, slot);
    const next: Target[] = this.targets.slice(0, fixed);
    const kept = new Set<TargetSlot>();
    const added: string[] = [];
    for (const spec of usable) {
      let slot = current.get(spec.id);
      if (slot === undefined) {
        const back = leavingById.get(spec.id);
        if (back !== undefined) {
          // Came back before its last socket closed: the same target again, its sockets reusable.
          this.leaving.delete(back.target);
          this.gone.delete(back.target);
          back.removed = false;
          this.slots.set(back.target, back);
          slot = back;
        } else {
          slot = this.add(spec, !this.discoveredOnce, before?.get(spec.id));
        }
        added.push(spec.id);
      }
      slot.target.weight = spec.weight;
      slot.target.backup = spec.backup;
      kept.add(slot);
      next.push(slot.target);
    }
    const removed: string[] = [];
    for (const slot of current.values()) {
      if (kept.has(slot)) continue;
      removed.push(slot.target.id);
      this.remove(slot);
    }
    this.discoveredOnce = true;
    this.targets = Object.freeze(next);
    return { added, removed };
  }

  /** Takes a slot out for good: waiters move, idle sockets close, the rest finish (see setDiscovered). */
  remove(slot: TargetSlot): void {
    this.slots.delete(slot.target);
    this.gone.add(slot.target);
    slot.removed = true;
    slot.up = false;
    slot.target.available = false;
    if (slot.passiveTimer !== null) clearTimeout(slot.passiveTimer);
    slot.passiveTimer = null;
    this.#moveWaiters(slot, 'was removed by discovery');
    closeIdle(slot);
    if (slot.open > 0 || slot.tunnels > 0 || slot.target.active > 0) this.leaving.set(slot.target, slot);
  }

  /** Forgets leaving targets with neither sockets nor requests and tunnels left. */
  prune(): void {
    for (const [target, slot] of this.leaving) if (slot.open === 0 && slot.tunnels === 0 && target.active <= 0) this.leaving.delete(target);
  }
}
