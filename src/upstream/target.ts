// A target as balancers, pools and keys see it, and the balance policy config selects: the types every file of
// upstream/ shares, in a leaf of their own so the balancer and the key code need not import each other.

/** One backend address as balancers and pools see it. Mutable counters are owned by the pool. */
export interface Target {
  /** "host:port" as written in config */
  readonly id: string;
  readonly host: string;
  readonly port: number;
  /**
   * Changed only by the pool, for a discovered target whose SRV weight changed, and always together with a
   * new balancer (balancers may precompute from weights).
   */
  weight: number;
  /** Healthy and not full. Weight 0 targets are never picked. */
  available: boolean;
  /** Open requests plus open tunnels to this target in this worker. */
  active: number;
  /**
   * Open requests plus open tunnels to this target in the other workers, as the primary last summed them
   * (absent = 0). least_conn and random_two balance on active + remote, so a tunnel held by another worker
   * counts here too. Stale by at most ~100-200 ms: each worker reports its counts when they changed, at most
   * every 100 ms (worker/main.ts LOAD_REPORT_MS), the primary coalesces for 25 ms and sends each worker the others'
   * sum. A burst of picks within that window sees only this worker's own new load, which is what least_conn
   * per worker would see anyway. Set by the pool (setRemoteLoad), read-only for balancers.
   */
  remote?: number;
  /** Used only while no primary target is available (the pool folds that into `available`). Pool-owned, like weight. */
  backup?: boolean;
  /**
   * Slow start: until this time (ms, the balancer's clock) the target's weight ramps up from 10% to 100%;
   * 0 or absent = full weight. Set by the pool when the target comes (back) up.
   */
  rampUntil?: number;
}

/** The key-less policies, written as a plain string in config. */
export type BalancePolicy = 'round_robin' | 'least_conn' | 'random_two';

/** What `upstreams.*.balance` holds once validated (schema.ts); the key is parsed by hash-key.ts. */
export type BalanceSpec =
  | BalancePolicy
  | { readonly policy: 'hash'; readonly key: string }
  | { readonly policy: 'cookie'; readonly name: string; readonly fallback: 'round_robin' | 'least_conn'; readonly secret?: string };


/** What node:net connect() takes for a target: a Unix socket path (`unix:/path` targets: host is the path, port 0) or host and port. */
export function netAddress(t: { readonly host: string; readonly port: number }): { path: string } | { host: string; port: number } {
  return t.port === 0 && t.host.startsWith('/') ? { path: t.host } : { host: t.host, port: t.port };
}
