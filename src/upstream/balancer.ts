// Balancing policies over a pool's targets. Every policy reads only `available` (and weight, active);
// health checks and limits flip `available`, nothing else (STYLE.md 10). No sockets here.

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

export declare function createBalancer(policy: BalancePolicy, targets: readonly Target[]): Balancer;
