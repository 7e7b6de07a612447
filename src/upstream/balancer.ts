// Balancing policies over a pool's targets. Every policy reads only `available` (and weight, active);
// health checks and limits flip `available`, nothing else (STYLE.md 10). No sockets here.
// Picks are O(n) over the targets and allocate nothing: the per-target state lives in typed arrays
// indexed like `targets`, which a balancer never reorders or resizes.

/** One backend address as balancers and pools see it. Mutable counters are owned by the pool. */
export interface Target {
  /** "host:port" as written in config */
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  /** Healthy and not full. Weight 0 targets are never picked. */
  available: boolean;
  /** Open requests plus open tunnels to this target in this worker. */
  active: number;
}

export interface Balancer {
  /** Picks a target, skipping unavailable ones and those in `exclude` (already tried); undefined when none. */
  pick(exclude?: ReadonlySet<Target>): Target | undefined;
}

export type BalancePolicy = 'round_robin' | 'least_conn';

export function createBalancer(policy: BalancePolicy, targets: readonly Target[]): Balancer {
  switch (policy) {
    case 'round_robin':
      return new SmoothWeightedRoundRobin(targets);
    case 'least_conn':
      return new LeastConn(targets);
    default: {
      const never: never = policy;
      throw new TypeError(`unknown balance policy ${String(never)}`);
    }
  }
}

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
  /** Bounded by the total weight (<= 1000 per target), so doubles hold them exactly. */
  readonly #current: Float64Array;

  constructor(targets: readonly Target[]) {
    this.#targets = targets;
    this.#current = new Float64Array(targets.length);
  }

  pick(exclude?: ReadonlySet<Target>): Target | undefined {
    const targets = this.#targets;
    const current = this.#current;
    let best = -1;
    let total = 0;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i];
      if (!eligible(t, exclude)) continue;
      current[i] += t.weight;
      total += t.weight;
      if (best === -1 || current[i] > current[best]) best = i;
    }
    if (best === -1) return undefined;
    current[best] -= total;
    return targets[best];
  }
}

/**
 * Fewest `active` relative to weight, compared as a.active * b.weight < b.active * a.weight (no floats).
 * Ties go through smooth weighted round robin among the tied targets only, as nginx's least_conn does, so
 * idle targets share the load by weight instead of the first one taking everything.
 */
class LeastConn implements Balancer {
  readonly #targets: readonly Target[];
  readonly #current: Float64Array;

  constructor(targets: readonly Target[]) {
    this.#targets = targets;
    this.#current = new Float64Array(targets.length);
  }

  pick(exclude?: ReadonlySet<Target>): Target | undefined {
    const targets = this.#targets;
    let best = -1;
    let ties = 0;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i];
      if (!eligible(t, exclude)) continue;
      if (best === -1) {
        best = i;
        ties = 1;
        continue;
      }
      const b = targets[best];
      const lhs = t.active * b.weight;
      const rhs = b.active * t.weight;
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
    const b = targets[best];
    let chosen = -1;
    let total = 0;
    for (let i = best; i < targets.length; i++) {
      const t = targets[i];
      if (!eligible(t, exclude) || t.active * b.weight !== b.active * t.weight) continue;
      current[i] += t.weight;
      total += t.weight;
      if (chosen === -1 || current[i] > current[chosen]) chosen = i;
    }
    current[chosen] -= total;
    return targets[chosen];
  }
}
