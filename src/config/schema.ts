// The one description of Portico's config: its TypeScript type, its validation and its defaults.
// Durations ("30s", "500ms", "2m") and sizes ("16KiB", "1MiB") are normalised here to ms and bytes, once.
// It knows nothing about files or YAML positions (load.ts) and builds no runtime objects (router, pools).
import { isIP, isIPv4 } from 'node:net';
import { z } from 'zod';
import { checkCidr } from '../wire/proxy-protocol.js';
import { DEFAULT_STICKY_COOKIE, parseKeySpec } from './key-spec.js';
import { parseRate } from './rate.js';
import { isPlainObject } from '../core/util.js';
import { checkFastcgiReferences, fastcgiAction, fastcgiUpstreams } from './fastcgi.js';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
// Only units that read one way: a bare "k", "m" or "g" is 1000-based here but 1024-based in nginx.
const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1000, kib: 1024, mb: 1e6, mib: 1024 ** 2, gb: 1e9, gib: 1024 ** 3 };

/** The longest timer Node can arm: setTimeout fires at once (with a warning) for anything larger. */
export const MAX_DURATION_MS = 2 ** 31 - 1;

export const DURATION_FORMS = '"500ms", "30s", "5m", "1h", "1d", or "off"';
export const SIZE_FORMS = '"512B", "16KiB", "1MiB", "1GiB" (or "16KB", "1MB": powers of 1000)';

/**
 * Parses "30s", "1.5m", "250ms", "off" or 0 (= 0, disabled). A bare number other than 0 is refused: nginx reads
 * seconds where Node reads milliseconds, so `idle_timeout: 30` means something different to each reader.
 * Undefined when malformed or above MAX_DURATION_MS (about 24.8 days); a non-zero value never rounds to "off".
 */
export function parseDuration(input: string | number): number | undefined {
  if (typeof input === 'number') return input === 0 ? 0 : undefined;
  const s = input.trim().toLowerCase();
  if (s === 'off' || s === '0') return 0;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(s);
  if (!m) return undefined;
  const ms = Number(m[1]) * DURATION_UNITS[m[2]];
  if (ms > MAX_DURATION_MS) return undefined;
  return ms > 0 ? Math.max(1, Math.round(ms)) : 0;
}

/** Parses "16KiB", "1MiB", "512B", "1.5GB". A number without a unit is refused (bytes? KiB as in nginx's `k`?). */
export function parseSize(input: string | number): number | undefined {
  if (typeof input === 'number') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/.exec(input.trim().toLowerCase());
  if (!m || !Object.hasOwn(SIZE_UNITS, m[2])) return undefined;
  const bytes = Math.round(Number(m[1]) * SIZE_UNITS[m[2]]);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Why a duration or size was refused, with the forms that are accepted. */
function unitError(kind: 'duration' | 'size', v: string | number): string {
  const forms = kind === 'duration' ? `${DURATION_FORMS}; at most "24d"` : SIZE_FORMS;
  const bare = typeof v === 'number' || /^\s*\d+(?:\.\d+)?\s*$/.test(v);
  return bare ? `${kind} ${JSON.stringify(v)} has no unit: write it with one, e.g. ${forms}` : `invalid ${kind} ${JSON.stringify(v)} (use e.g. ${forms})`;
}

const duration = (dflt: string) =>
  z.union([z.string(), z.number()], { error: `expected a duration such as ${DURATION_FORMS}` }).default(dflt).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: unitError('duration', v) });
      return z.NEVER;
    }
    return ms;
  });

const size = (dflt: string) =>
  z.union([z.string(), z.number()], { error: `expected a size such as ${SIZE_FORMS}` }).default(dflt).transform((v, ctx) => {
    const bytes = parseSize(v);
    if (bytes === undefined || bytes === 0) {
      ctx.addIssue({ code: 'custom', message: unitError('size', v) });
      return z.NEVER;
    }
    return bytes;
  });

/** "host:port", "[v6]:port" or ":port" (all interfaces) -> { host, port }. */
export function parseAddress(input: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s\[\]]*)):(\d{1,5})$/.exec(input.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

const address = (what: string, allowPortZero = false) =>
  z.string().transform((v, ctx) => {
    const a = parseAddress(v);
    if (!a || (a.port === 0 && !allowPortZero)) {
      ctx.addIssue({ code: 'custom', message: `invalid ${what} address ${JSON.stringify(v)} (expected host:port, [v6]:port or :port)` });
      return z.NEVER;
    }
    return { address: v, host: a.host, port: a.port };
  });

/** A target's `unix:/path`: a Unix domain socket (php-fpm's `listen = /run/php/php-fpm.sock`); host is the path, port 0. */
export const UNIX_TARGET_PREFIX = 'unix:';
/** sockaddr_un.sun_path holds 108 bytes, its terminating NUL included. */
const MAX_UNIX_PATH = 107;

/** A target address: "host:port", "[v6]:port", or "unix:/absolute/path". */
const targetAddress = z.string().transform((v, ctx) => {
  if (!v.startsWith(UNIX_TARGET_PREFIX)) {
    const a = parseAddress(v);
    if (!a || a.port === 0) {
      ctx.addIssue({ code: 'custom', message: `invalid target address ${JSON.stringify(v)} (expected host:port, [v6]:port or unix:/path/to.sock)` });
      return z.NEVER;
    }
    return { address: v, host: a.host, port: a.port };
  }
  const p = v.slice(UNIX_TARGET_PREFIX.length);
  if (!p.startsWith('/') || p.includes('\0') || Buffer.byteLength(p) > MAX_UNIX_PATH) {
    ctx.addIssue({ code: 'custom', message: `invalid unix socket target ${JSON.stringify(v)} (expected unix:/absolute/path, at most ${MAX_UNIX_PATH} bytes)` });
    return z.NEVER;
  }
  return { address: v, host: p, port: 0 };
});

const stringList = z.union([z.string(), z.array(z.string()).min(1)]).transform((v) => (typeof v === 'string' ? [v] : v));

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/; // RFC 9110 §5.1 token

/**
 * Fields Portico owns on every hop: the message's framing (Content-Length, Transfer-Encoding) and the
 * hop-by-hop fields (RFC 9110 §7.6.1). A route rule that set or removed one could reframe a message (request
 * smuggling) or break keep-alive and WebSocket upgrades, so `check` refuses it. `Host` may be replaced (nginx's
 * `proxy_set_header Host`, for virtual-hosted backends) but never removed: an HTTP/1.1 request needs one.
 */
const PROXY_OWNED: ReadonlySet<string> = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'http2-settings']);

const ownedName = (name: string, removing: boolean): string | undefined => {
  const lower = name.toLowerCase();
  if (PROXY_OWNED.has(lower)) return `${name} is set by Portico itself (framing or hop-by-hop, RFC 9110 §7.6.1): a header rule may not set or remove it`;
  if (removing && lower === 'host') return `${name} cannot be removed (RFC 9112 §3.2: every HTTP/1.1 request carries one); \`set\` may replace it`;
  return undefined;
};

const headerOps = z
  .object({
    set: z
      .record(z.string().regex(HEADER_NAME, 'header name must be an RFC 9110 token'), z.string().regex(/^[^\r\n\0]*$/, 'header value must not contain CR, LF or NUL'))
      .superRefine((set, ctx) => {
        for (const name of Object.keys(set)) {
          const problem = ownedName(name, false);
          if (problem !== undefined) ctx.addIssue({ code: 'custom', path: [name], message: problem });
        }
      })
      .default({}),
    remove: z
      .array(
        z
          .string()
          .regex(HEADER_NAME, 'header name must be an RFC 9110 token')
          .superRefine((name, ctx) => {
            const problem = ownedName(name, true);
            if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
          }),
      )
      .default([]),
  })
  .strict()
  .prefault({});

/**
 * A DNS name as a resolver takes it: labels of letters, digits, "-" and "_" (SRV owner names such as
 * "_http._tcp.api" use "_"), 1-63 characters each, at most 253 in all, an optional final dot; not an IP address.
 */
export function checkDnsName(name: string): string | undefined {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (n.length === 0 || n.length > 253) return `invalid DNS name ${JSON.stringify(name)} (1 to 253 characters)`;
  if (isIP(n) !== 0) return `${JSON.stringify(name)} is an IP address, not a DNS name (write it as a plain target)`;
  for (const label of n.split('.')) {
    if (!/^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label)) {
      return `invalid DNS name ${JSON.stringify(name)}: label ${JSON.stringify(label)} (letters, digits, "-" and "_", 1 to 63 characters, no "-" at either end)`;
    }
  }
  if (/^\d+$/.test(n.slice(n.lastIndexOf('.') + 1))) return `invalid DNS name ${JSON.stringify(name)}: the last label is all digits`;
  return undefined;
}

const dnsName = z.string().superRefine((v, ctx) => {
  const problem = checkDnsName(v);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

/** A target written in config as it is used: a fixed host:port (resolved by the OS at connect, if a name). */
export interface StaticTarget {
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
}

/** One entry of `targets` once validated: fixed, a name to resolve (`dns`), or an SRV name. */
type TargetEntry = ({ readonly kind: 'static' } & StaticTarget) | ({ readonly kind: 'dns' } & StaticTarget) | { readonly kind: 'srv'; readonly name: string };

const target = z.union([
  targetAddress.transform((a): TargetEntry => ({ kind: 'static', ...a, weight: 1, backup: false })),
  z
    .object({
      address: targetAddress.optional(),
      /** Share of new work relative to the other targets (default 1); 0 = drained: no new work, open tunnels stay. */
      weight: z.number().int().min(0).max(1000).optional(),
      /** Used only while every primary (non-backup) target is down or full (default false). */
      backup: z.boolean().optional(),
      /**
       * The host is a DNS name resolved by the primary (A and/or AAAA, `resolver.family`) and re-resolved on
       * its TTL: every address becomes a target on this port with this weight (default false: resolved by the
       * OS at each connect, one target).
       */
      resolve: z.boolean().optional(),
      /**
       * Instead of `address`: an SRV name such as "_http._tcp.api.service.consul", resolved by the primary and
       * re-resolved; each record's host (resolved to addresses) and port become targets, weighted by the
       * record's weight; the records of the lowest priority are primaries, the others backups.
       */
      srv: dnsName.optional(),
    })
    .strict()
    // Runs even when a field failed (every error at once), so it reads its input defensively.
    .superRefine((t, ctx) => checkTargetEntry(t as unknown, ctx), { when: () => true })
    .transform((t): TargetEntry => {
      if (t.srv !== undefined) return { kind: 'srv', name: t.srv };
      const a = t.address as NonNullable<typeof t.address>; // checkTargetEntry: address or srv
      return { kind: t.resolve === true ? 'dns' : 'static', ...a, weight: t.weight ?? 1, backup: t.backup ?? false };
    }),
]);

function checkTargetEntry(t: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainObject(t)) return;
  if (t.srv !== undefined) {
    const extra = ['address', 'weight', 'backup', 'resolve'].filter((k) => t[k] !== undefined);
    if (extra.length > 0) ctx.addIssue({ code: 'custom', path: [extra[0]], message: `an srv target takes no ${extra.join(', ')}: hosts, ports, weights and backups come from its SRV records` });
    return;
  }
  if (t.address === undefined) {
    ctx.addIssue({ code: 'custom', path: ['address'], message: 'a target needs `address` (host:port) or `srv` (an SRV name)' });
    return;
  }
  const host = isPlainObject(t.address) ? t.address.host : undefined;
  if (t.resolve === true && isPlainObject(t.address) && t.address.port === 0) {
    ctx.addIssue({ code: 'custom', path: ['resolve'], message: 'a unix: target has no name to resolve' });
  } else if (t.resolve === true && typeof host === 'string') {
    const problem = checkDnsName(host);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', path: ['address'], message: `resolve: ${problem}` });
  }
}

/**
 * A target entry the primary resolves and keeps following (src/upstream/discovery.ts): `dns` = the addresses
 * of `name` on `port`; `srv` = the SRV records of `name`. `index` is the entry's position in `targets`.
 */
export type DiscoverySpec =
  | { readonly kind: 'dns'; readonly index: number; readonly name: string; readonly address: string; readonly port: number; readonly weight: number; readonly backup: boolean }
  | { readonly kind: 'srv'; readonly index: number; readonly name: string };

/** Splits `targets` into the fixed ones and those discovery resolves (schema output; see `upstream`). */
function splitTargets(entries: readonly TargetEntry[]): { targets: StaticTarget[]; discover: DiscoverySpec[] } {
  const targets: StaticTarget[] = [];
  const discover: DiscoverySpec[] = [];
  entries.forEach((e, index) => {
    if (e.kind === 'static') {
      const { kind: _kind, ...t } = e;
      targets.push(t);
    } else if (e.kind === 'dns') {
      discover.push({ kind: 'dns', index, name: e.host, address: e.address, port: e.port, weight: e.weight, backup: e.backup });
    } else {
      discover.push({ kind: 'srv', index, name: e.name });
    }
  });
  return { targets, discover };
}

/** "200-399", "200,204", "200-299,301": inclusive ranges of HTTP status codes -> [low, high] pairs. */
export function parseStatusRanges(input: string): Array<[number, number]> | undefined {
  const ranges: Array<[number, number]> = [];
  for (const part of input.split(',')) {
    const m = /^\s*([1-5]\d\d)\s*(?:-\s*([1-5]\d\d)\s*)?$/.exec(part);
    if (!m) return undefined;
    const low = Number(m[1]);
    const high = m[2] === undefined ? low : Number(m[2]);
    if (high < low) return undefined;
    ranges.push([low, high]);
  }
  return ranges;
}

const positiveDuration = (dflt: string) => duration(dflt).refine((ms) => ms > 0, 'must be above 0 (not "off")');

/**
 * Active checks, run by the primary once per target for the whole instance (never once per worker); the state
 * reaches every worker over IPC. Absent = no active checks. A target starts healthy; it goes down after
 * `fails` consecutive failed probes and comes back after `passes` consecutive good ones (pingora style).
 */
const healthActive = z
  .object({
    /**
     * http: a request over a fresh connection; tcp: connect only; websocket: an Upgrade handshake (101 + valid
     * Sec-WebSocket-Accept), then a Close frame; fastcgi: an FCGI_GET_VALUES query answered by a
     * GET_VALUES_RESULT (for FastCGI upstreams such as php-fpm, which must never get HTTP).
     */
    type: z.enum(['http', 'tcp', 'websocket', 'fastcgi']).default('http'),
    /** Request target of http and websocket probes (default /healthz). */
    path: z.string().regex(/^\/[\x21-\x7e]*$/, 'path must start with / and contain no spaces or control characters').default('/healthz'),
    /** http probes only (default GET). */
    method: z.string().regex(HEADER_NAME, 'method must be an RFC 9110 token').default('GET'),
    /** Host header of http and websocket probes (default: the target's address as written). */
    host: z.string().regex(/^[\x21-\x7e]+$/, 'host must be printable ASCII without spaces').optional(),
    /** Statuses that count as healthy for http probes, e.g. "200-399" (default) or "200,204". */
    expect_status: z
      .string()
      .default('200-399')
      .transform((v, ctx) => {
        const ranges = parseStatusRanges(v);
        if (ranges === undefined) {
          ctx.addIssue({ code: 'custom', message: `invalid status list ${JSON.stringify(v)} (use e.g. "200-399" or "200,204")` });
          return z.NEVER;
        }
        return ranges;
      }),
    /** http probes only: the body (its first 64KiB) must contain this text. */
    body_contains: z.string().min(1).optional(),
    /** Time between probes of one target, jittered by up to 10% either way (default 5s). */
    interval: positiveDuration('5s'),
    /** One probe (connect + answer) must finish within this (default 2s). */
    timeout: positiveDuration('2s'),
    /** Consecutive good probes that bring a down target back (default 2). */
    passes: z.number().int().min(1).max(100).default(2),
    /** Consecutive failed probes that take a target down (default 3). */
    fails: z.number().int().min(1).max(100).default(3),
  })
  .strict()
  // Runs even when other fields failed (every error at once), so it reads its input defensively.
  .superRefine(
    (a, ctx) => {
      const { type, body_contains } = a as { type?: unknown; body_contains?: unknown };
      if (type !== 'http' && type !== undefined && body_contains !== undefined) ctx.addIssue({ code: 'custom', path: ['body_contains'], message: 'body_contains applies to http checks only' });
    },
    { when: () => true },
  );

/**
 * Passive checks, per worker, nginx max_fails/fail_timeout semantics: `max_fails` failures (connect refused or
 * timed out, no response head in time, 5xx when on_5xx) within `fail_timeout` take the target out of this
 * worker for `fail_timeout`; then it is tried again with a clean slate. max_fails 0 or fail_timeout "off"
 * disables them. When every target of an upstream is down, all of them are tried anyway (nginx), not 503.
 */
const healthPassive = z
  .object({
    /** Failures within fail_timeout that take a target out (default 1, as nginx; 0 = off). */
    max_fails: z.number().int().min(0).max(1000).default(1),
    /** The failure window and the time out (default 10s, as nginx). */
    fail_timeout: duration('10s'),
    /** Count 5xx responses as failures (default false). */
    on_5xx: z.boolean().default(false),
  })
  .strict();

const keylessPolicy = z.enum(['round_robin', 'least_conn', 'random_two']);

/**
 * round_robin: smooth weighted round robin (default); least_conn: fewest open requests + tunnels per weight;
 * random_two: the lighter of two random targets; { policy: hash, key }: consistent hashing (Maglev) on
 * "$remote_addr", "header:NAME", "cookie:NAME" or "query:NAME" (round robin when the request has no key);
 * { policy: cookie, name, fallback }: sticky cookie Portico sets itself (default name portico_sticky,
 * fallback round_robin) naming the target by an opaque id.
 */
const balance = z
  .union([
    keylessPolicy,
    z.discriminatedUnion(
      'policy',
      [
        z
          .object({
            policy: z.literal('hash'),
            key: z.string().transform((v, ctx) => {
              const spec = parseKeySpec(v);
              if (typeof spec === 'string') ctx.addIssue({ code: 'custom', message: spec });
              return v;
            }),
          })
          .strict(),
        z
          .object({
            policy: z.literal('cookie'),
            name: z.string().max(256).regex(HEADER_NAME, 'a cookie name must be an RFC 9110 token').default(DEFAULT_STICKY_COOKIE),
            fallback: z.enum(['round_robin', 'least_conn']).default('round_robin'),
            /**
             * The key the cookie value (an HMAC of the target address) is made with. Default: a random one made
             * by the primary at start, the same in every worker and across reloads, new at each restart (then
             * cookies are re-set once). Set it, the same everywhere, so that several instances behind one
             * balancer, or a restart, accept each other's cookies. At least 16 characters.
             */
            secret: z.string().min(16, 'balance.secret must be at least 16 characters').max(1024).optional(),
          })
          .strict(),
      ],
      { error: (issue) => (issue.code === 'invalid_union' ? 'policy must be "hash" or "cookie" (or write balance as round_robin, least_conn or random_two)' : undefined) },
    ),
  ])
  .default('round_robin');

const upstream = z
  .object({
    targets: z
      .array(target)
      .min(1, 'an upstream needs at least one target')
      // An SRV entry brings its own weights and primaries (its lowest priority).
      .refine((ts) => ts.some((t) => t.kind === 'srv' || t.weight > 0), 'at least one target needs a weight above 0')
      .refine((ts) => ts.some((t) => t.kind === 'srv' || !t.backup), 'at least one target must not be a backup'),
    balance,
    /** Upper bound of connections (idle + busy) Portico opens to one target, per worker (default 512). */
    max_connections: z.number().int().min(1).max(1_000_000).default(512),
    /**
     * Requests waiting (FIFO, per worker, all targets together) for a target at max_connections to free a
     * socket. Queue full or wait over `timeout` -> 503 with Retry-After. size 0 = no queue (default 128, 5s).
     */
    queue: z
      .object({
        size: z.number().int().min(0).max(1_000_000).default(128),
        timeout: positiveDuration('5s'),
      })
      .strict()
      .prefault({}),
    /**
     * A target coming (back) up (health flip, passive recovery, undrain; not at start or reload) gets its weight
     * ramped from 10% to 100% over this time. round_robin, least_conn, random_two; hash ignores it (default off).
     */
    slow_start: duration('off'),
    /**
     * Retries of a request on connect failure or a stale keep-alive socket: at most `max` per request, and over
     * a sliding 10s window at most `budget` x requests (but always `min_per_second` per second) per worker,
     * so a failing pool is not stormed (default 2, 0.2, 3).
     */
    retries: z
      .object({
        max: z.number().int().min(0).max(10).default(2),
        budget: z.number().min(0).max(1).default(0.2),
        min_per_second: z.number().int().min(0).max(10_000).default(3),
      })
      .strict()
      .prefault({}),
    keepalive: z
      .object({
        /** Idle keep-alive connections kept per target, per worker (default 256; 0 disables reuse). */
        max_idle: z.number().int().min(0).max(100_000).default(256),
        /** An idle pooled connection is closed after this long (default 60s). */
        idle_timeout: duration('60s'),
      })
      .strict()
      .prefault({}),
    timeouts: z
      .object({
        connect: duration('5s'),
        /** From the request sent to the response head received (default 60s, like nginx proxy_read_timeout). */
        response_headers: duration('60s'),
        /** Longest silence while a body streams, either way (default 60s). Never applies to tunnels. */
        idle: duration('60s'),
      })
      .strict()
      .prefault({}),
    /** Active (primary, shared) and passive (per worker) health checks; see healthActive and healthPassive. */
    health: z.object({ active: healthActive.optional(), passive: healthPassive.prefault({}) }).strict().prefault({}),
    /**
     * PROXY protocol header (client address -> address it connected to) written to every new connection before
     * any byte: "v1" (text) or "v2" (binary); default "off". For tcp listeners, TLS passthrough and HTTP routes
     * alike; a kept-alive connection then serves only the client its header named (and WebSocket tunnels get
     * the header too). Active health checks send PROXY UNKNOWN (v1) or a LOCAL header (v2) first.
     */
    send_proxy_protocol: z.enum(['off', 'v1', 'v2']).default('off'),
  })
  .strict()
  // `targets` keeps the fixed targets; `discover` the entries the primary resolves (resolve: true, srv).
  .transform((u) => ({ ...u, ...splitTargets(u.targets) }));

const tunnel = z
  .object({
    /** Closes a tunnel after this long with no byte either way (default off: WebSockets stay open). */
    idle_timeout: duration('off'),
    /** Closes a tunnel after this long whatever its traffic (default off). */
    max_lifetime: duration('off'),
  })
  .strict();

const proxy = z.union([
  z.string().min(1).transform((name) => ({ upstream: name, strip_prefix: false })),
  z.object({ upstream: z.string().min(1), strip_prefix: z.boolean().default(false) }).strict(),
]);

/**
 * One token-bucket limit of a route (src/policy/rate-limit.ts), counted per key in each worker: a key may send
 * `burst` requests at once, then one per `1/rate`; above it Portico answers 429 with Retry-After (the seconds
 * until the key's next request is admitted) and the backend sees nothing (nginx limit_req with nodelay).
 */
const rateLimit = z
  .object({
    /** Steady rate per key: "100/s", "6000/m", "10/h" (required; a bare number is refused: per what?). */
    rate: z.union([z.string(), z.number()]).transform((v, ctx) => {
      const interval = parseRate(v);
      if (typeof interval === 'string') {
        ctx.addIssue({ code: 'custom', message: interval });
        return z.NEVER;
      }
      return interval;
    }),
    /** Requests a key may send at once from a full bucket (default: one second of `rate`, at least 1). */
    burst: z.number().int().min(1).max(1_000_000).optional(),
    /**
     * What a key is: "$remote_addr" (default: the client address, IPv6 by `limits.ipv6_prefix`), or
     * "header:NAME", "cookie:NAME", "query:NAME"; a request without that value is keyed by its address.
     */
    key: z
      .string()
      .default('$remote_addr')
      .superRefine((v, ctx) => {
        const spec = parseKeySpec(v);
        if (typeof spec === 'string') ctx.addIssue({ code: 'custom', message: spec });
      }),
    /** Keys held per worker; when full, an idle or least recently used key is dropped (default 100000). */
    max_keys: z.number().int().min(1).max(10_000_000).default(100_000),
  })
  .strict()
  .transform((r) => ({ ...r, burst: r.burst ?? Math.max(1, Math.round(1000 / r.rate)) }));

/** Per-route limits: every request (WebSocket handshakes included), and WebSocket handshakes alone. */
const routeRateLimit = z
  .object({
    /** Requests of any kind, per key. */
    requests: rateLimit.optional(),
    /** WebSocket opening handshakes, per key (a tunnel costs more than a request: limit them apart). */
    handshakes: rateLimit.optional(),
  })
  .strict()
  .refine((r) => r.requests !== undefined || r.handshakes !== undefined, 'set `requests` and/or `handshakes` (or leave rate_limit out)');

const route = z
  .object({
    name: z.string().optional(),
    match: z
      .object({
        /** Exact host names or "*.suffix" wildcards, compared without port and case. */
        host: stringList.optional(),
        /** Path prefix on segment boundaries: "/wss" matches "/wss", "/wss/x", "/wss?x", not "/wssx". */
        path: z.string().startsWith('/').optional(),
        /** Exact path (query ignored). */
        path_exact: z.string().startsWith('/').optional(),
        /** JavaScript regular expression tested against the path (query ignored). */
        path_regex: z.string().optional(),
        method: stringList.optional(),
      })
      .strict()
      .default({}),
    /** Forward to an upstream (and tunnel its WebSocket handshakes). One action per route: ROUTE_ACTIONS. */
    proxy: proxy.optional(),
    /** Run a script under `root` on a FastCGI upstream (PHP-FPM); see config/fastcgi.ts. */
    fastcgi: fastcgiAction.optional(),
    request_headers: headerOps,
    response_headers: headerOps,
    tunnel: tunnel.optional(),
    /** Request and WebSocket handshake rate limits per client key (default none: nothing counted). */
    rate_limit: routeRateLimit.optional(),
  })
  .strict()
  // Runs even when other fields of the route failed, so every error is reported at once (zod skips a
  // refinement after an aborting issue by default); it therefore reads its input defensively.
  .superRefine((r, ctx) => checkRouteMatch(r as unknown, ctx), { when: () => true })
  .superRefine((r, ctx) => checkRouteAction(r as unknown, ctx), { when: () => true });

/**
 * What a route does with a request it matched: exactly one of these keys. A new kind of route (static files,
 * FastCGI, redirect...) adds its key here, its schema beside the route's, its Decision in route/router.ts
 * (routeDecisions) and its handler (CONTRIBUTING.md).
 */
export const ROUTE_ACTIONS = ['proxy', 'fastcgi'] as const;

function checkRouteAction(route: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainObject(route)) return;
  const present = ROUTE_ACTIONS.filter((k) => route[k] !== undefined);
  if (present.length === 0) ctx.addIssue({ code: 'custom', path: [], message: `a route needs one of: ${ROUTE_ACTIONS.join(', ')}` });
  else if (present.length > 1) ctx.addIssue({ code: 'custom', path: [present[1]], message: `use only one of ${present.join(', ')} in a route` });
}

function checkRouteMatch(route: unknown, ctx: z.RefinementCtx): void {
  const match = isPlainObject(route) ? route.match : undefined;
  if (!isPlainObject(match)) return;
  const paths = [match.path, match.path_exact, match.path_regex].filter((p) => p !== undefined);
  if (paths.length > 1) ctx.addIssue({ code: 'custom', path: ['match'], message: 'use only one of path, path_exact, path_regex' });
  if (typeof match.path_regex === 'string') {
    try {
      new RegExp(match.path_regex);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['match', 'path_regex'], message: `invalid regular expression: ${(err as Error).message}` });
    }
  }
}

const certificate = z
  .object({
    cert: z.string().min(1),
    key: z.string().min(1),
    /** Names this certificate serves; default: the DNS names in its subjectAltName (else its CN). */
    hosts: z.array(z.string()).optional(),
    /** When cert and key are missing, generate a self-signed pair for `hosts` (default localhost) there. */
    self_signed: z.boolean().default(false),
  })
  .strict();

/** An SNI name of a passthrough entry: "name" or "*.suffix" (any depth, as route hosts); stored lower case. */
const sniPattern = z
  .string()
  .transform((v) => v.trim().toLowerCase().replace(/\.$/, ''))
  .refine(
    (v) => /^(\*\.)?[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/.test(v) && v.length <= 253,
    'sni must be a DNS name or "*.suffix", e.g. "db.example.com" or "*.example.com"',
  );

/**
 * TLS passthrough: a client whose ClientHello names `sni` is not terminated; its untouched TLS bytes go to
 * `upstream` (raw TCP). Exact names win over wildcards, longer wildcard suffixes over shorter.
 */
const passthrough = z.object({ sni: sniPattern, upstream: z.string().min(1) }).strict();

const listener = z
  .object({
    address: address('listener', true),
    /** http (default): HTTP/1.1, terminated TLS when `tls` is set; tcp: raw TCP relayed to `upstream`. */
    mode: z.enum(['http', 'tcp']).default('http'),
    /**
     * Connections the kernel queues for accept before it drops new SYNs (default: the system's
     * net.core.somaxconn, 4096 on current Linux; the kernel caps any value at it).
     */
    backlog: z.number().int().min(1).max(65535).optional(),
    /** tcp listeners only: the upstream every connection is relayed to. */
    upstream: z.string().min(1).optional(),
    /**
     * Expect a PROXY protocol v1 or v2 header before anything else, only from `trusted` senders (CIDRs or
     * addresses); others are closed at once, as is a connection whose header is missing or malformed. The
     * header's source becomes the client address ($remote_addr, X-Forwarded-For, X-Real-IP).
     */
    proxy_protocol: z
      .object({
        trusted: z
          .array(
            z.string().superRefine((v, ctx) => {
              const problem = checkCidr(v);
              if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
            }),
          )
          .min(1, 'list the CIDRs allowed to send PROXY headers (e.g. "10.0.0.0/8")'),
      })
      .strict()
      .optional(),
    tls: z
      .object({
        /**
         * The first certificate is the default for clients that send no (or an unknown) SNI name. None: the
         * listener only passes TLS through (needs `passthrough`); other names get a TLS alert and are closed.
         */
        certificates: z.array(certificate).default([]),
        min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
        /** Time allowed for the TLS handshake (default 10s); also bounds reading the ClientHello for passthrough. */
        handshake_timeout: duration('10s'),
        /** SNI names relayed untouched to an upstream instead of terminated here (default none). */
        passthrough: z.array(passthrough).optional(),
      })
      .strict()
      .superRefine((t, ctx) => checkTlsTerminates(t as unknown, ctx), { when: () => true })
      .optional(),
  })
  .strict()
  .superRefine((l, ctx) => checkListenerMode(l as unknown, ctx), { when: () => true });

/** A TLS listener terminates with its certificates, or (none) only passes names through: it needs one or the other. */
function checkTlsTerminates(t: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainObject(t)) return;
  const none = (v: unknown): boolean => v === undefined || (Array.isArray(v) && v.length === 0);
  if (none(t.certificates) && none(t.passthrough)) {
    ctx.addIssue({ code: 'custom', path: ['certificates'], message: 'a TLS listener needs at least one certificate, unless it only passes TLS through (then list tls.passthrough names)' });
  }
}

function checkListenerMode(l: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainObject(l)) return;
  if (l.mode === 'tcp') {
    if (l.upstream === undefined) ctx.addIssue({ code: 'custom', path: ['upstream'], message: 'a tcp listener needs `upstream`: the pool its connections are relayed to' });
    if (l.tls !== undefined) ctx.addIssue({ code: 'custom', path: ['tls'], message: 'a tcp listener relays raw bytes and terminates no TLS (for TLS by SNI, use tls.passthrough on an http listener)' });
  } else if (l.upstream !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['upstream'], message: 'upstream applies to tcp listeners only (add mode: tcp, or route HTTP with routes)' });
  }
}

/** "10.0.0.53", "127.0.0.1:5353", "::1" or "[::1]:5353": what node:dns setServers() takes (no names). */
export function parseResolverServer(input: string): string | undefined {
  const v = input.trim();
  if (isIP(v) !== 0) return v;
  const a = parseAddress(v);
  if (a === undefined || a.port === 0 || isIP(a.host) === 0 || v.startsWith(':')) return undefined;
  return v;
}

/**
 * The DNS resolver discovery uses (the primary only; workers never resolve). Each name is re-resolved when its
 * TTL runs out, the TTL clamped to [min_ttl, max_ttl]; a failed lookup (timeout, SERVFAIL, NXDOMAIN, empty
 * answer) keeps the last good targets and is tried again after `backoff.min`, doubling up to `backoff.max`.
 */
const resolver = z
  .object({
    /** Name servers, "ip" or "ip:port" (default: the system's, from /etc/resolv.conf). */
    servers: z
      .array(
        z.string().superRefine((v, ctx) => {
          if (parseResolverServer(v) === undefined) ctx.addIssue({ code: 'custom', message: `invalid resolver address ${JSON.stringify(v)} (expected an IP address with an optional port: "10.0.0.53", "127.0.0.1:5353", "[::1]:53")` });
        }),
      )
      .min(1, 'list at least one name server, or leave `servers` out for the system resolver')
      .optional(),
    /** One DNS query (default 2s); a lookup that times out counts as failed. */
    timeout: positiveDuration('2s'),
    /** Shortest time between two lookups of one name, whatever its TTL says (default 1s). */
    min_ttl: positiveDuration('1s'),
    /** Longest time a name's answer is kept before it is looked up again (default 1h). */
    max_ttl: positiveDuration('1h'),
    /** After a failed lookup: first retry after `min`, doubling up to `max` (default 1s, 30s). */
    backoff: z.object({ min: positiveDuration('1s'), max: positiveDuration('30s') }).strict().prefault({}),
    /** Address records asked for: any (A and AAAA, default), ipv4 (A) or ipv6 (AAAA). */
    family: z.enum(['any', 'ipv4', 'ipv6']).default('any'),
  })
  .strict()
  .superRefine(
    (r, ctx) => {
      const { min_ttl, max_ttl, backoff } = r as { min_ttl?: unknown; max_ttl?: unknown; backoff?: { min?: unknown; max?: unknown } };
      if (typeof min_ttl === 'number' && typeof max_ttl === 'number' && min_ttl > max_ttl) ctx.addIssue({ code: 'custom', path: ['min_ttl'], message: 'min_ttl must not be above max_ttl' });
      if (typeof backoff?.min === 'number' && typeof backoff.max === 'number' && backoff.min > backoff.max) ctx.addIssue({ code: 'custom', path: ['backoff', 'min'], message: 'backoff.min must not be above backoff.max' });
    },
    { when: () => true },
  );

export const configSchema = z
  .object({
    /** Worker processes; "auto" = one per core (default). */
    workers: z.union([z.literal('auto'), z.number().int().min(1).max(256)]).default('auto'),
    listeners: z.array(listener).min(1, 'at least one listener is needed'),
    upstreams: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'upstream names use letters, digits, _ . -'), upstream).default({}),
    routes: z.array(route).default([]),
    limits: z
      .object({
        /** Request line + headers; larger -> 431 (default 32KiB). */
        header_size: size('32KiB'),
        /** Request target; longer -> 414 (default 8KiB). */
        uri_size: size('8KiB'),
        /** Header fields per request (default 100). */
        headers: z.number().int().min(1).max(10_000).default(100),
        /** Request body bytes; larger -> 413 (default off = unlimited, streamed). */
        body_size: z.union([z.literal('off'), size('1MiB')]).default('off' as const),
        /**
         * Open connections per client address, per worker (HTTP, HTTPS, their WebSocket tunnels, L4 relays); more are
         * closed at accept, before the TLS handshake (default off: carrier NAT puts thousands behind one address).
         */
        connections_per_ip: z.union([z.literal('off'), z.number().int().min(1).max(10_000_000)]).default('off' as const),
        /** IPv6 clients are one client per this prefix for connection and rate limits (default 64). */
        ipv6_prefix: z.number().int().min(1).max(128).default(64),
        /**
         * Pipes each worker's splice relay may hold at once (default 1024). A tunnel takes one only while bytes
         * are in flight, so this bounds busy tunnels' kernel buffers, not open tunnels; above it bytes are copied
         * through a 16 KiB buffer instead (slower, never refused). 0 = always copy.
         */
        max_pipes: z.number().int().min(0).max(1_000_000).default(1024),
      })
      .strict()
      .prefault({}),
    timeouts: z
      .object({
        /** From connection (or previous response) to a complete request head; else 408 (default 15s). */
        head: duration('15s'),
        /** Idle client keep-alive connection with no request in progress (default 75s). */
        keepalive: duration('75s'),
        /**
         * Longest wait for the next bytes of a request body the client is sending (nginx client_body_timeout);
         * else 408 and close, never held against the target (default 60s).
         */
        body: duration('60s'),
        /** SIGTERM: time in-flight requests get to finish before tunnels and the rest are closed (default 30s). */
        shutdown_grace: duration('30s'),
      })
      .strict()
      .prefault({}),
    /** Default tunnel (WebSocket) timeouts; a route's `tunnel` overrides them. */
    tunnel: tunnel.prefault({}),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** One line per request and per tunnel (default true). */
        access: z.boolean().default(true),
        /** Refusals by connection and rate limits: one line per client key at the first, then a summary per this interval (default 10s). */
        limit_interval: positiveDuration('10s'),
      })
      .strict()
      .prefault({}),
    /**
     * Forwarding headers (X-Forwarded-*, X-Real-IP, Forwarded) and whom to believe about them. A client's copies
     * are believed only from `trusted_proxies` (like nginx `set_real_ip_from`); from anyone else Portico sets
     * them itself. The address checked is the client address Portico sees (a PROXY header's source included).
     */
    forwarding: z
      .object({
        /** CIDRs or addresses of proxies in front of Portico whose forwarding headers are kept and appended to (default none). */
        trusted_proxies: z
          .array(
            z.string().superRefine((v, ctx) => {
              const problem = checkCidr(v);
              if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
            }),
          )
          .default([]),
        /** X-Forwarded-For from an untrusted peer: `replace` it with the peer address (default) or `append` the peer to it. */
        x_forwarded_for: z.enum(['replace', 'append']).default('replace'),
        /** Also send an RFC 7239 `Forwarded` element (for, host, proto); default false (a client's copy is still dropped). */
        forwarded: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    /** DNS for targets with `resolve: true` and `srv` targets; see `resolver` above. */
    resolver: resolver.prefault({}),
    admin: z
      .object({
        address: address('admin', true),
        /**
         * When set, POST requests (drain, undrain) need `Authorization: Bearer TOKEN` and may come from any
         * address; without it they are accepted from loopback peers only, with the header `X-Portico-Admin: 1`.
         */
        token: z.string().min(16, 'admin token must be at least 16 characters').regex(/^[\x21-\x7e]+$/, 'admin token must be printable ASCII without spaces').optional(),
        /**
         * Host names the admin listener may be reached by (`Host` header), besides `localhost` and IP addresses;
         * any other name is refused so that a DNS-rebinding page cannot read or drive it (default none).
         */
        hosts: z.array(z.string().regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i, 'a host name (letters, digits, dots, dashes), without port')).max(64).default([]),
      })
      .strict()
      .optional(),
  })
  .strict()
  // Cross-references run even when other parts failed (see checkRouteMatch), so they read defensively.
  .superRefine((c, ctx) => checkReferences(c as unknown, ctx), { when: () => true });

type Endpoint = { address: string; host: string; port: number };

function endpointOf(v: unknown): Endpoint | undefined {
  if (!isPlainObject(v) || typeof v.address !== 'string' || typeof v.host !== 'string' || typeof v.port !== 'number') return undefined;
  return { address: v.address, host: v.host, port: v.port };
}

/**
 * Two sockets on one port collide when their hosts are equal, when either is `::` (dual-stack: every IPv4 and
 * IPv6 address), or when one is 0.0.0.0 and the other an IPv4 address. Host names are not resolved here.
 */
function collides(a: Endpoint, b: Endpoint): boolean {
  if (a.port === 0 || a.port !== b.port) return false;
  if (a.host.toLowerCase() === b.host.toLowerCase() || a.host === '::' || b.host === '::') return true;
  return (a.host === '0.0.0.0' && isIPv4(b.host)) || (b.host === '0.0.0.0' && isIPv4(a.host));
}

function checkReferences(c: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainObject(c)) return;
  const upstreams = isPlainObject(c.upstreams) ? c.upstreams : undefined;
  if (Array.isArray(c.routes) && upstreams !== undefined) {
    c.routes.forEach((r: unknown, i) => {
      const name = isPlainObject(r) && isPlainObject(r.proxy) ? r.proxy.upstream : undefined;
      if (typeof name === 'string' && !Object.hasOwn(upstreams, name)) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'proxy'], message: `unknown upstream "${name}" (defined: ${Object.keys(upstreams).join(', ') || 'none'})` });
      }
    });
  }
  if (Array.isArray(c.routes) && upstreams !== undefined) checkFastcgiReferences(c.routes, upstreams, ctx);
  if (Array.isArray(c.listeners) && upstreams !== undefined) checkL4References(c.listeners, upstreams, Array.isArray(c.routes) ? c.routes : [], ctx);
  const taken: { at: string; endpoint: Endpoint }[] = [];
  const claim = (endpoint: Endpoint | undefined, at: string, path: (string | number)[]): void => {
    if (endpoint === undefined) return;
    const clash = taken.find((t) => collides(t.endpoint, endpoint));
    if (clash) ctx.addIssue({ code: 'custom', path, message: `address ${endpoint.address} collides with ${clash.at} (${clash.endpoint.address})` });
    else taken.push({ at, endpoint });
  };
  if (Array.isArray(c.listeners)) {
    c.listeners.forEach((l: unknown, i) => claim(isPlainObject(l) ? endpointOf(l.address) : undefined, `listeners[${i}]`, ['listeners', i, 'address']));
  }
  if (isPlainObject(c.admin)) claim(endpointOf(c.admin.address), 'admin', ['admin', 'address']);
}

/**
 * Upstreams of tcp listeners and TLS passthrough must exist, and must not also serve routes: an L4 connection
 * takes a fresh connection and keeps it for good, so it must never meet a kept-alive HTTP socket.
 */
function checkL4References(listeners: unknown[], upstreams: Record<string, unknown>, routes: unknown[], ctx: z.RefinementCtx): void {
  const routed = fastcgiUpstreams(routes);
  for (const r of routes) {
    const name = isPlainObject(r) && isPlainObject(r.proxy) ? r.proxy.upstream : undefined;
    if (typeof name === 'string') routed.add(name);
  }
  const check = (name: unknown, path: (string | number)[]): void => {
    if (typeof name !== 'string') return;
    if (!Object.hasOwn(upstreams, name)) ctx.addIssue({ code: 'custom', path, message: `unknown upstream "${name}" (defined: ${Object.keys(upstreams).join(', ') || 'none'})` });
    else if (routed.has(name)) ctx.addIssue({ code: 'custom', path, message: `upstream "${name}" also serves HTTP routes: give raw TCP its own upstream entry (same targets are fine)` });
  };
  listeners.forEach((l, i) => {
    if (!isPlainObject(l)) return;
    if (l.mode === 'tcp') check(l.upstream, ['listeners', i, 'upstream']);
    const pass = isPlainObject(l.tls) && Array.isArray(l.tls.passthrough) ? l.tls.passthrough : [];
    pass.forEach((p: unknown, j) => check(isPlainObject(p) ? p.upstream : undefined, ['listeners', i, 'tls', 'passthrough', j, 'upstream']));
  });
}

export type ConfigInput = z.input<typeof configSchema>;
/** Validated config with defaults applied; durations in ms, sizes in bytes. Paths are already absolute after load(). */
export type Config = z.output<typeof configSchema>;
export type ListenerConfig = Config['listeners'][number];
export type UpstreamConfig = Config['upstreams'][string];
export type TargetConfig = UpstreamConfig['targets'][number];
export type ResolverConfig = Config['resolver'];
export type RouteConfig = Config['routes'][number];
export type TunnelConfig = Config['tunnel'];
export type RouteRateLimitConfig = NonNullable<RouteConfig['rate_limit']>;
export type RateLimitConfig = NonNullable<RouteRateLimitConfig['requests']>;
export type HealthConfig = UpstreamConfig['health'];
export type ActiveHealthConfig = NonNullable<HealthConfig['active']>;
