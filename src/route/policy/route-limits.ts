// The rate limits of one route: its bucket tables (requests, WebSocket handshakes), how a request's key is
// found, and the refusal logs. A request is checked with `RouteLimits.check` (through checkPolicies, index.ts)
// after routing and before any upstream work; a route without limits has no entry
// (store.ts builds them per config and keeps them across reloads).
import { createHash } from 'node:crypto';
import type { RateLimitConfig } from '../../config/schema.js';
import type { RequestHead } from '../../wire/http-head.js';
import { compileKey, type KeyExtractor } from '../../upstream/hash-key.js';
import { RateTable } from './rate-limit.js';
import { RefusalLog, type RefusalReport } from './refusal-log.js';

export type LimitKind = 'requests' | 'handshakes';

/** Request values longer than this are keyed by their hash (an API key or session id is shorter). */
const LONG_KEY = 64;

/** Who refused, as logs and metrics name it: a route's limit, or the connection limit (no route). */
export interface LimitSource {
  readonly route: string | undefined;
  readonly kind: LimitKind | 'connections';
}

/** Turns one refusal report of a limit into a log line. */
export type LimitReporter = (source: LimitSource, r: RefusalReport) => void;

/** One limit of one route: its buckets, how a request's key is found, and its refusal log. */
export class Limit implements LimitSource {
  readonly route: string;
  readonly kind: LimitKind;
  readonly table: RateTable;
  readonly log: RefusalLog;
  /** null: the client key ($remote_addr); else a value from the request, the client key when it has none. */
  readonly #key: KeyExtractor | null;
  /** Its counter in metrics.ts: "KIND ROUTE" (built once, so counting allocates nothing). */
  readonly metricId: string;
  /** The config it was built from, to keep it across a reload that did not change it. */
  readonly signature: string;

  constructor(route: string, kind: LimitKind, spec: RateLimitConfig, report: LimitReporter) {
    this.route = route;
    this.kind = kind;
    this.table = new RateTable({ intervalMs: spec.rate, burst: spec.burst, maxKeys: spec.max_keys });
    this.#key = spec.key === '$remote_addr' ? null : compileKey(spec.key);
    this.metricId = `${kind} ${route}`;
    this.signature = JSON.stringify(spec);
    this.log = new RefusalLog((r) => report(this, r));
  }

  /**
   * The key of a request: the client key, or "k VALUE" for a value from the request (an address never starts
   * with "k "). A value longer than LONG_KEY is kept as its SHA-256, so max_keys bounds memory whatever the
   * client sends (a header may be 4 KiB).
   */
  keyOf(head: RequestHead, client: string): string {
    if (this.#key === null) return client;
    const v = this.#key(head, client);
    if (v === undefined) return client;
    return v.length > LONG_KEY ? `k ${createHash('sha256').update(v).digest('base64')}` : `k ${v}`;
  }
}

/** Why a request was refused: which limit, and in how many ms its key may send again. */
export interface Refusal {
  readonly limit: Limit;
  readonly retryAfterMs: number;
}

/** The limits of one route (either may be absent). */
export class RouteLimits {
  readonly requests: Limit | null;
  readonly handshakes: Limit | null;

  constructor(requests: Limit | null, handshakes: Limit | null) {
    this.requests = requests;
    this.handshakes = handshakes;
  }

  /**
   * Admits a request (null) or refuses it. `client`: the client key (clientKey()); `address`: the client
   * address, for the log. A handshake must pass both limits; a refused request takes no token from the other.
   */
  check(head: RequestHead, client: string, address: string, handshake: boolean, now: number): Refusal | null {
    const r = this.requests;
    if (r !== null) {
      const key = r.keyOf(head, client);
      const wait = r.table.take(key, now);
      if (wait > 0) return refuse(r, key, address, wait, now);
    }
    const h = this.handshakes;
    if (h !== null && handshake) {
      const key = h.keyOf(head, client);
      const wait = h.table.take(key, now);
      if (wait > 0) return refuse(h, key, address, wait, now);
    }
    return null;
  }
}

function refuse(limit: Limit, key: string, address: string, wait: number, now: number): Refusal {
  limit.log.refused(key, address, now);
  return { limit, retryAfterMs: wait };
}
