// A worker's limits across reloads: the open connections per client (one table for the worker's life), the
// routes' rate limits (a route whose limit did not change keeps its tables, so its clients keep their buckets)
// and one timer that flushes every refusal log once per `log.limit_interval`.
import { createHash } from 'node:crypto';
import type { Config, RateLimitConfig } from '../../config/schema.js';
import { ConnectionsPerClient } from './conn-limit.js';
import { REFUSAL_LOG_KEYS, RefusalLog, type RefusalReport } from './refusal-log.js';
import { Limit, RouteLimits, type LimitKind, type LimitReporter, type LimitSource } from './route-limits.js';

const CONNECTIONS: LimitSource = { route: undefined, kind: 'connections' };

/**
 * The limits of one worker, across reloads. `build(config)` gives the runtime its per-route array (index =
 * route index, undefined = no limits), keeping the Limit of a route whose position, name, kind and config are
 * unchanged.
 */
export class LimitStore {
  /** Open connections per client key (limits.connections_per_ip). */
  readonly connections = new ConnectionsPerClient();
  /** Refusals of limits.connections_per_ip. */
  readonly connectionLog: RefusalLog;
  readonly #report: LimitReporter;
  #limits = new Map<string, Limit>();
  #timer: NodeJS.Timeout | null = null;
  #intervalMs = 0;

  constructor(report: LimitReporter) {
    this.#report = report;
    this.connectionLog = new RefusalLog((r) => report(CONNECTIONS, r));
  }

  build(config: Config): ReadonlyArray<RouteLimits | undefined> {
    const next = new Map<string, Limit>();
    const take = (index: number, route: string, kind: LimitKind, spec: RateLimitConfig | undefined): Limit | null => {
      if (spec === undefined) return null;
      // route names need not be unique: the index keeps two routes' buckets apart (a moved route starts fresh)
      const id = `${kind} ${index} ${route}`;
      const old = this.#limits.get(id);
      const limit = old !== undefined && old.signature === JSON.stringify(spec) ? old : new Limit(route, kind, spec, this.#report);
      next.set(id, limit);
      return limit;
    };
    const out = config.routes.map((r, i) => {
      if (r.rate_limit === undefined) return undefined;
      const name = r.name ?? `routes[${i}]`;
      return new RouteLimits(take(i, name, 'requests', r.rate_limit.requests), take(i, name, 'handshakes', r.rate_limit.handshakes));
    });
    // a limit left behind says what it still had to say
    const now = Date.now();
    for (const [id, limit] of this.#limits) if (next.get(id) !== limit) limit.log.flush(now);
    this.#limits = next;
    this.#schedule(config.log.limit_interval, this.#limits.size > 0 || config.limits.connections_per_ip !== 'off');
    return out;
  }

  /** Flushes every refusal log now (the timer does it once per interval). */
  flush(now: number): void {
    this.connectionLog.flush(now);
    for (const limit of this.#limits.values()) limit.log.flush(now);
  }

  #schedule(intervalMs: number, needed: boolean): void {
    if (!needed) {
      this.connectionLog.flush(Date.now()); // the limit was turned off: what it refused is still said
      this.stop();
      return;
    }
    if (this.#timer !== null && this.#intervalMs === intervalMs) return;
    this.stop();
    this.#intervalMs = intervalMs;
    this.#timer = setInterval(() => this.flush(Date.now()), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}

/** A refusal report as a log line: its level, fields and message. */
export interface RefusalLine {
  readonly level: 'warn' | 'info';
  readonly fields: Record<string, unknown>;
  readonly msg: string;
}

/**
 * The log line of a refusal report. A key taken from the request (a header, cookie or query value: often a
 * credential) is logged as a short hash, never as it is; an address key (IPv4, IPv6 prefix) as it is.
 */
export function refusalLine(source: LimitSource, r: RefusalReport): RefusalLine {
  const what = source.kind === 'connections' ? 'connections_per_ip' : `rate_limit.${source.kind}`;
  const base: Record<string, unknown> = { route: source.route, limit: what };
  if (r.kind === 'overflow') {
    return { level: 'warn', fields: { ...base, refused: r.count, durationMs: r.sinceMs }, msg: `${what}: refusals of clients beyond the ${REFUSAL_LOG_KEYS} logged one by one` };
  }
  const key = r.key.startsWith('k ') ? { keyHash: createHash('sha256').update(r.key).digest('hex').slice(0, 16) } : { clientKey: r.key };
  const fields = { ...base, remoteAddr: r.client, ...key };
  if (r.kind === 'first') return { level: 'warn', fields, msg: `${what}: limit reached, refusing this client (summaries follow while it goes on)` };
  return { level: 'info', fields: { ...fields, refused: r.count, durationMs: r.sinceMs }, msg: `${what}: client still refused` };
}
