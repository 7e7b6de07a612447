// What a reload changes: compares the running config with a new one (listeners by address, upstreams by name,
// routes, settings), decides which listening sockets are kept and which are opened or closed, and words the
// result for the reload log line, `portico reload` and /status. Pure: no files, sockets or processes
// (primary/reload.ts drives the reload, worker/apply.ts and runtime.ts apply it).
import type { Config, ListenerConfig, UpstreamConfig } from './schema.js';
import type { ConfigError } from './load.js';

/**
 * A listener's identity across reloads: its bound host and port. A listener whose key is in both configs
 * keeps its socket (no connection is refused while its settings change); port-0 listeners on one host are
 * told apart by their order among themselves ("127.0.0.1:0", then "127.0.0.1:0#2", ...).
 */
export function listenerKeys(listeners: readonly ListenerConfig[]): string[] {
  const seen = new Map<string, number>();
  return listeners.map((l) => {
    const base = `${formatHost(l.address.host)}:${l.address.port}`;
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return n === 1 ? base : `${base}#${n}`;
  });
}

function formatHost(host: string): string {
  const lower = host.toLowerCase();
  return lower.includes(':') ? `[${lower}]` : lower;
}

/** Per listener of the new config: whether a worker keeps the socket it has under `key` or opens a new one. */
export interface ListenerPlanEntry {
  readonly index: number;
  readonly key: string;
  readonly keep: boolean;
}

export interface ListenerPlan {
  readonly entries: readonly ListenerPlanEntry[];
  /** Keys of sockets to close: in `open`, not in the new config. */
  readonly removed: readonly string[];
}

/** How to go from the sockets open under `open` (keys) to the listeners of `next`. */
export function planListeners(open: ReadonlySet<string>, next: readonly ListenerConfig[]): ListenerPlan {
  const keys = listenerKeys(next);
  const wanted = new Set(keys);
  return {
    entries: keys.map((key, index) => ({ index, key, keep: open.has(key) })),
    removed: [...open].filter((k) => !wanted.has(k)),
  };
}

/** What differs between the running config and a new one, by name. */
export interface ConfigChanges {
  /** Listener keys (see listenerKeys); `changed`: same address, other settings (TLS, mode, PROXY protocol...). */
  listeners: { added: string[]; removed: string[]; changed: string[] };
  upstreams: { added: string[]; removed: string[]; changed: string[] };
  routes: { before: number; after: number; changed: boolean };
  /** Top-level sections whose settings differ: limits, timeouts, tunnel, log, admin, resolver, static_cache. */
  settings: string[];
  /** The worker count differs: it is not changed by a reload (see README, "Reload"). */
  workers: { running: Config['workers']; configured: Config['workers'] } | null;
}

const SETTINGS = ['limits', 'timeouts', 'tunnel', 'log', 'admin', 'resolver', 'static_cache'] as const;

export function diffConfigs(old: Config, next: Config): ConfigChanges {
  const oldKeys = listenerKeys(old.listeners);
  const nextKeys = listenerKeys(next.listeners);
  const oldByKey = new Map(oldKeys.map((k, i) => [k, old.listeners[i]]));
  const listeners = { added: [] as string[], removed: [] as string[], changed: [] as string[] };
  nextKeys.forEach((k, i) => {
    const before = oldByKey.get(k);
    if (before === undefined) listeners.added.push(k);
    else if (!sameListenerSettings(before, next.listeners[i])) listeners.changed.push(k);
  });
  const nextSet = new Set(nextKeys);
  for (const k of oldKeys) if (!nextSet.has(k)) listeners.removed.push(k);

  const upstreams = { added: [] as string[], removed: [] as string[], changed: [] as string[] };
  for (const [name, u] of Object.entries(next.upstreams)) {
    const before = Object.hasOwn(old.upstreams, name) ? old.upstreams[name] : undefined;
    if (before === undefined) upstreams.added.push(name);
    else if (!sameUpstream(before, u)) upstreams.changed.push(name);
  }
  for (const name of Object.keys(old.upstreams)) if (!Object.hasOwn(next.upstreams, name)) upstreams.removed.push(name);

  return {
    listeners,
    upstreams,
    routes: { before: old.routes.length, after: next.routes.length, changed: !equalValues(old.routes, next.routes) },
    settings: SETTINGS.filter((s) => !equalValues(old[s], next[s])),
    workers: equalValues(old.workers, next.workers) ? null : { running: old.workers, configured: next.workers },
  };
}

/** True when nothing a reload acts on differs. */
export function isEmpty(c: ConfigChanges): boolean {
  const { listeners: l, upstreams: u } = c;
  return l.added.length + l.removed.length + l.changed.length + u.added.length + u.removed.length + u.changed.length === 0 && !c.routes.changed && c.settings.length === 0 && c.workers === null;
}

/** One line for people: "listeners +1 -0 ~1 (...); upstreams ...; routes 3 -> 4; settings: log". */
export function describeChanges(c: ConfigChanges): string {
  if (isEmpty(c)) return 'no changes';
  const parts: string[] = [];
  const group = (name: string, g: { added: string[]; removed: string[]; changed: string[] }): void => {
    if (g.added.length + g.removed.length + g.changed.length === 0) return;
    const names = [...g.added.map((n) => `+${n}`), ...g.removed.map((n) => `-${n}`), ...g.changed.map((n) => `~${n}`)];
    parts.push(`${name} ${names.join(' ')}`);
  };
  group('listeners', c.listeners);
  group('upstreams', c.upstreams);
  if (c.routes.changed) parts.push(c.routes.before === c.routes.after ? `routes changed (${c.routes.after})` : `routes ${c.routes.before} -> ${c.routes.after}`);
  if (c.settings.length > 0) parts.push(`settings: ${c.settings.join(', ')}`);
  if (c.workers !== null) parts.push(`workers ${c.workers.running} -> ${c.workers.configured} (needs a restart)`);
  return parts.join('; ');
}

/** An upstream whose config is unchanged keeps its pool (health, passive failures, idle sockets, counters). */
export function sameUpstream(a: UpstreamConfig, b: UpstreamConfig): boolean {
  return equalValues(a, b);
}

function sameListenerSettings(a: ListenerConfig, b: ListenerConfig): boolean {
  const { address: _a, ...restA } = a;
  const { address: _b, ...restB } = b;
  return equalValues(restA, restB);
}

/** Structural equality of plain config values (objects compared by key, whatever the key order). */
export function equalValues(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => equalValues(v, b[i]));
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const ka = Object.keys(ra).filter((k) => ra[k] !== undefined);
  const kb = Object.keys(rb).filter((k) => rb[k] !== undefined);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(rb, k) && equalValues(ra[k], rb[k]));
}

/** Reload and sticky tunnel figures for /metrics (Prometheus text), appended by the primary. */
export function renderReloadMetrics(m: { generation: number; ok: number; failed: number; loadedAt: number; stickyKeys: number; pins: number }): string {
  return [
    '# HELP portico_config_generation Config generation serving (1 = the config Portico started with, +1 per reload).',
    '# TYPE portico_config_generation gauge',
    `portico_config_generation ${m.generation}`,
    '# HELP portico_config_reloads_total Reload attempts by result.',
    '# TYPE portico_config_reloads_total counter',
    `portico_config_reloads_total{result="ok"} ${m.ok}`,
    `portico_config_reloads_total{result="failed"} ${m.failed}`,
    '# HELP portico_config_loaded_timestamp_seconds When the serving config was loaded (start or last successful reload).',
    '# TYPE portico_config_loaded_timestamp_seconds gauge',
    `portico_config_loaded_timestamp_seconds ${Math.floor(m.loadedAt / 1000)}`,
    '# HELP portico_sticky_keys Hash keys with open tunnels, per target they are open on, across workers.',
    '# TYPE portico_sticky_keys gauge',
    `portico_sticky_keys ${m.stickyKeys}`,
    '# HELP portico_sticky_pins Hash keys held on another target than they hash to, while their tunnels are open.',
    '# TYPE portico_sticky_pins gauge',
    `portico_sticky_pins ${m.pins}`,
    '',
  ].join('\n');
}

/** The outcome of one reload attempt, as /status, the log and `portico reload` report it. */
export type ReloadOutcome =
  | {
      readonly ok: true;
      /** Attempts since start, failed ones included; `portico reload` waits for one that started after its signal. */
      readonly attempt: number;
      readonly startedAt: number;
      readonly finishedAt: number;
      /** The generation now serving (1 = the config Portico started with). */
      readonly generation: number;
      readonly changes: ConfigChanges;
      readonly summary: string;
      /** Things the reload did not apply (a worker count change), said once here and in the log. */
      readonly warnings: readonly string[];
    }
  | {
      readonly ok: false;
      readonly attempt: number;
      readonly startedAt: number;
      readonly finishedAt: number;
      /** The generation still serving. */
      readonly generation: number;
      /** Config errors with their YAML path and line (empty when the config was valid but could not be applied). */
      readonly errors: readonly ConfigError[];
      /** Why it was refused, in one line. */
      readonly error: string;
    };
