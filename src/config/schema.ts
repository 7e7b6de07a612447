// The one description of Portico's config: its TypeScript type, its validation and its defaults.
// Durations ("30s", "500ms", "2m") and sizes ("16KiB", "1MiB") are normalised here to ms and bytes, once.
// It knows nothing about files or YAML positions (load.ts) and builds no runtime objects (router, pools).
import { isIP, isIPv4 } from 'node:net';
import { z } from 'zod';
import { checkCidr } from '../wire/proxy-protocol.js';
import { upstreamTls } from './upstream-tls.js';
import { acmeChallengeIssues, acmeSchema } from './acme.js';
import { DEFAULT_STICKY_COOKIE, parseKeySpec } from './key-spec.js';
import { parseRate } from './rate.js';
import { websocketSchema } from './websocket.js';
import { isPlainObject } from '../core/util.js';
import { compressOptions } from './compress.js';
import { corsPolicy } from './cors.js';
import { httpsRedirect, redirectAction, returnAction } from './redirect.js';
import { staticAction } from './static.js';
import { staticCacheSchema } from './static-cache.js';
import { bodyBufferSchema, checkFastcgiReferences, fastcgiAction, fastcgiUpstreams } from './fastcgi.js';

import { DURATION_FORMS, MAX_DURATION_MS, SIZE_FORMS, duration, parseDuration, parseSize, positiveDuration, size } from './units.js';

export { DURATION_FORMS, MAX_DURATION_MS, SIZE_FORMS, parseDuration, parseSize };

/** "host:port", "[v6]:port" or ":port" (all interfaces) -> { host, port }. */
export function parseAddress(input: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s\[\]]*)):(\d{1,5})$/.exec(input.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** parseAddress's form as a JSON Schema pattern, for editors (json-schema.ts); the port range is check's. */
const ADDRESS_PATTERN = '^\\s*(?:\\[[0-9a-fA-F:.]+\\]|[^:\\s\\[\\]]*):\\d{1,5}\\s*$';

const address = (what: string, allowPortZero = false) =>
  z.string().meta({ pattern: ADDRESS_PATTERN }).transform((v, ctx) => {
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
      weight: z.number().int().min(0).max(1000).optional().describe('Share of new work relative to the other targets (default 1); 0 = drained: no new work, open tunnels stay.'),
      backup: z.boolean().optional().describe('Used only while every primary (non-backup) target is down or full (default false).'),
      resolve: z.boolean().optional().describe('The host is a DNS name resolved by the primary (A and/or AAAA, `resolver.family`) and re-resolved on its TTL: every address becomes a target on this port with this weight (default false: resolved by the OS at each connect, one target).'),
      srv: dnsName.optional().describe('Instead of `address`: an SRV name such as "_http._tcp.api.service.consul", resolved by the primary and re-resolved; each record\'s host (resolved to addresses) and port become targets, weighted by the record\'s weight; the records of the lowest priority are primaries, the others backups.'),
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


/**
 * Active checks, run by the primary once per target for the whole instance (never once per worker); the state
 * reaches every worker over IPC. Absent = no active checks. A target starts healthy; it goes down after
 * `fails` consecutive failed probes and comes back after `passes` consecutive good ones (pingora style).
 */
const healthActive = z
  .object({
    type: z.enum(['http', 'tcp', 'websocket', 'fastcgi']).default('http').describe('http: a request over a fresh connection; tcp: connect only; websocket: an Upgrade handshake (101 + valid Sec-WebSocket-Accept), then a Close frame; fastcgi: an FCGI_GET_VALUES query answered by a GET_VALUES_RESULT (for FastCGI upstreams such as php-fpm, which must never get HTTP).'),
    path: z.string().regex(/^\/[\x21-\x7e]*$/, 'path must start with / and contain no spaces or control characters').default('/healthz').describe('Request target of http and websocket probes (default /healthz).'),
    method: z.string().regex(HEADER_NAME, 'method must be an RFC 9110 token').default('GET').describe('http probes only (default GET).'),
    host: z.string().regex(/^[\x21-\x7e]+$/, 'host must be printable ASCII without spaces').optional().describe('Host header of http and websocket probes (default: the target\'s address as written).'),
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
      }).describe('Statuses that count as healthy for http probes, e.g. "200-399" (default) or "200,204".'),
    body_contains: z.string().min(1).optional().describe('http probes only: the body (its first 64KiB) must contain this text.'),
    interval: positiveDuration('5s').describe('Time between probes of one target, jittered by up to 10% either way (default 5s).'),
    timeout: positiveDuration('2s').describe('One probe (connect + answer) must finish within this (default 2s).'),
    passes: z.number().int().min(1).max(100).default(2).describe('Consecutive good probes that bring a down target back (default 2).'),
    fails: z.number().int().min(1).max(100).default(3).describe('Consecutive failed probes that take a target down (default 3).'),
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
    max_fails: z.number().int().min(0).max(1000).default(1).describe('Failures within fail_timeout that take a target out (default 1, as nginx; 0 = off).'),
    fail_timeout: duration('10s').describe('The failure window and the time out (default 10s, as nginx).'),
    on_5xx: z.boolean().default(false).describe('Count 5xx responses as failures (default false).'),
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
            secret: z.string().min(16, 'balance.secret must be at least 16 characters').max(1024).optional().describe('The key the cookie value (an HMAC of the target address) is made with. Default: a random one made by the primary at start, the same in every worker and across reloads, new at each restart (then cookies are re-set once). Set it, the same everywhere, so that several instances behind one balancer, or a restart, accept each other\'s cookies. At least 16 characters.'),
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
      // An SRV entry brings its own weights and primaries (its lowest priority). An empty list is min(1)'s
      // one error, not three.
      .refine((ts) => ts.length === 0 || ts.some((t) => t.kind === 'srv' || t.weight > 0), 'at least one target needs a weight above 0')
      .refine((ts) => ts.length === 0 || ts.some((t) => t.kind === 'srv' || !t.backup), 'at least one target must not be a backup'),
    balance,
    max_connections: z.number().int().min(1).max(1_000_000).default(512).describe('Upper bound of connections (idle + busy) Portico opens to one target, per worker (default 512).'),
    queue: z
      .object({
        size: z.number().int().min(0).max(1_000_000).default(128),
        timeout: positiveDuration('5s'),
      })
      .strict()
      .prefault({}).describe('Requests waiting (FIFO, per worker, all targets together) for a target at max_connections to free a socket. Queue full or wait over `timeout` -> 503 with Retry-After. size 0 = no queue (default 128, 5s).'),
    slow_start: duration('off').describe('A target coming (back) up (health flip, passive recovery, undrain; not at start or reload) gets its weight ramped from 10% to 100% over this time. round_robin, least_conn, random_two; hash ignores it (default off).'),
    retries: z
      .object({
        max: z.number().int().min(0).max(10).default(2),
        budget: z.number().min(0).max(1).default(0.2),
        min_per_second: z.number().int().min(0).max(10_000).default(3),
      })
      .strict()
      .prefault({}).describe('Retries of a request on connect failure or a stale keep-alive socket: at most `max` per request, and over a sliding 10s window at most `budget` x requests (but always `min_per_second` per second) per worker, so a failing pool is not stormed (default 2, 0.2, 3).'),
    keepalive: z
      .object({
        max_idle: z.number().int().min(0).max(100_000).default(256).describe('Idle keep-alive connections kept per target, per worker (default 256; 0 disables reuse).'),
        idle_timeout: duration('60s').describe('An idle pooled connection is closed after this long (default 60s).'),
      })
      .strict()
      .prefault({}),
    timeouts: z
      .object({
        connect: duration('5s'),
        response_headers: duration('60s').describe('From the request sent to the response head received (default 60s, like nginx proxy_read_timeout).'),
        idle: duration('60s').describe('Longest silence while a body streams, either way (default 60s). Never applies to tunnels.'),
      })
      .strict()
      .prefault({}),
    health: z.object({ active: healthActive.optional(), passive: healthPassive.prefault({}) }).strict().prefault({}).describe('Active (primary, shared) and passive (per worker) health checks; see healthActive and healthPassive.'),
    send_proxy_protocol: z.enum(['off', 'v1', 'v2']).default('off').describe('PROXY protocol header (client address -> address it connected to) written to every new connection before any byte: "v1" (text) or "v2" (binary); default "off". For tcp listeners, TLS passthrough and HTTP routes alike; a kept-alive connection then serves only the client its header named (and WebSocket tunnels get the header too). Active health checks send PROXY UNKNOWN (v1) or a LOCAL header (v2) first.'),
    /** TLS to the targets (config/upstream-tls.ts): `true` for the defaults (verification on), or settings. */
    tls: upstreamTls.optional().describe('TLS to the targets: `true` for the defaults (verification on), or sni, verify, ca, cert, key, min_version, session_reuse.'),
  })
  .strict()
  // `targets` keeps the fixed targets; `discover` the entries the primary resolves (resolve: true, srv).
  .transform((u) => ({ ...u, ...splitTargets(u.targets) }));

const tunnel = z
  .object({
    idle_timeout: duration('off').describe('Closes a tunnel after this long with no byte either way (default off: WebSockets stay open).'),
    max_lifetime: duration('off').describe('Closes a tunnel after this long whatever its traffic (default off).'),
    half_closed_timeout: duration('60s').describe('Once one side has ended its sending half (FIN) and the other still may send, closes the tunnel after this long with no byte either way (default 60s; HAProxy `timeout client-fin`/`server-fin`). A peer that never ends its side then holds no connection for good. off: only idle_timeout bounds it. Tunnels and tcp listeners alike.'),
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
    rate: z.union([z.string(), z.number()]).meta({ unit: 'rate' }).transform((v, ctx) => {
      const interval = parseRate(v);
      if (typeof interval === 'string') {
        ctx.addIssue({ code: 'custom', message: interval });
        return z.NEVER;
      }
      return interval;
    }).describe('Steady rate per key: "100/s", "6000/m", "10/h" (required; a bare number is refused: per what?).'),
    burst: z.number().int().min(1).max(1_000_000).optional().describe('Requests a key may send at once from a full bucket (default: one second of `rate`, at least 1).'),
    key: z
      .string()
      .default('$remote_addr')
      .superRefine((v, ctx) => {
        const spec = parseKeySpec(v);
        if (typeof spec === 'string') ctx.addIssue({ code: 'custom', message: spec });
      }).describe('What a key is: "$remote_addr" (default: the client address, IPv6 by `limits.ipv6_prefix`), or "header:NAME", "cookie:NAME", "query:NAME"; a request without that value is keyed by its address.'),
    max_keys: z.number().int().min(1).max(10_000_000).default(100_000).describe('Keys held per worker; when full, an idle or least recently used key is dropped (default 100000).'),
  })
  .strict()
  .transform((r) => ({ ...r, burst: r.burst ?? Math.max(1, Math.round(1000 / r.rate)) }));

/** Per-route limits: every request (WebSocket handshakes included), and WebSocket handshakes alone. */
const routeRateLimit = z
  .object({
    requests: rateLimit.optional().describe('Requests of any kind, per key.'),
    handshakes: rateLimit.optional().describe('WebSocket opening handshakes, per key (a tunnel costs more than a request: limit them apart).'),
  })
  .strict()
  .refine((r) => r.requests !== undefined || r.handshakes !== undefined, 'set `requests` and/or `handshakes` (or leave rate_limit out)');

const route = z
  .object({
    name: z.string().optional(),
    match: z
      .object({
        host: stringList.optional().describe('Exact host names or "*.suffix" wildcards, compared without port and case.'),
        path: z.string().startsWith('/').optional().describe('Path prefix on segment boundaries: "/wss" matches "/wss", "/wss/x", "/wss?x", not "/wssx".'),
        path_exact: z.string().startsWith('/').optional().describe('Exact path (query ignored).'),
        path_regex: z.string().optional().describe('JavaScript regular expression tested against the path (query ignored).'),
        method: stringList.optional(),
      })
      .strict()
      .default({}),
    /** Forward to an upstream (and tunnel its WebSocket handshakes). One action per route: ROUTE_ACTIONS. */
    proxy: proxy.optional(),
    /** Serve files from a folder (config/static.ts). */
    static: staticAction.optional(),
    /** Answer with a redirect (config/redirect.ts). */
    redirect: redirectAction.optional(),
    /** Answer with a fixed status and body (config/redirect.ts). */
    return: returnAction.optional(),
    /** Cross-origin policy (config/cors.ts): preflights answered here, CORS headers on every answer, errors included. */
    cors: corsPolicy.optional(),
    /** Compress answers for clients that accept gzip or brotli (config/compress.ts; default off). */
    compress: compressOptions.optional(),
    /** Run a script under `root` on a FastCGI upstream (PHP-FPM); see config/fastcgi.ts. */
    fastcgi: fastcgiAction.optional(),
    request_headers: headerOps,
    response_headers: headerOps,
    tunnel: tunnel.optional(),
    websocket: websocketSchema(duration, size).optional().describe('How WebSocket handshakes of a proxy route are served: tunnel (default, raw bytes after the 101) or terminate (uWebSockets.js; messages relayed).'),
    rate_limit: routeRateLimit.optional().describe('Request and WebSocket handshake rate limits per client key (default none: nothing counted).'),
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
export const ROUTE_ACTIONS = ['proxy', 'fastcgi', 'static', 'redirect', 'return'] as const;

function checkRouteAction(route: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainObject(route)) return;
  const present = ROUTE_ACTIONS.filter((k) => route[k] !== undefined);
  if (present.length === 0) ctx.addIssue({ code: 'custom', path: [], message: `a route needs one of: ${ROUTE_ACTIONS.join(', ')}` });
  else if (present.length > 1) ctx.addIssue({ code: 'custom', path: [present[1]], message: `use only one of ${present.join(', ')} in a route` });
  if (route.websocket !== undefined && route.proxy === undefined) ctx.addIssue({ code: 'custom', path: ['websocket'], message: 'websocket applies to proxy routes only' });
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
    hosts: z.array(z.string()).optional().describe('Names this certificate serves; default: the DNS names in its subjectAltName (else its CN).'),
    self_signed: z.boolean().default(false).describe('When cert and key are missing, generate a self-signed pair for `hosts` (default localhost) there.'),
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
    mode: z.enum(['http', 'tcp']).default('http').describe('http (default): HTTP/1.1, terminated TLS when `tls` is set; tcp: raw TCP relayed to `upstream`.'),
    backlog: z.number().int().min(1).max(65535).optional().describe('Connections the kernel queues for accept before it drops new SYNs (default: the system\'s net.core.somaxconn, 4096 on current Linux; the kernel caps any value at it).'),
    https_redirect: httpsRedirect.describe('Plain listeners only: redirect every request to https (true: the first TLS listener, or a port).'),
    upstream: z.string().min(1).optional().describe('tcp listeners only: the upstream every connection is relayed to.'),
    defer_accept: z.boolean().optional().describe('Listeners whose clients speak first (http, TLS, and tcp with proxy_protocol): true (default) has the kernel hand a connection over only once its first bytes came (TCP_DEFER_ACCEPT, as nginx `listen … deferred`), so accepting it and reading its request take one wake-up, not two; a client that sends nothing is accepted about 1 s after its handshake, and the head (or handshake) timeout runs from there. A listener that stops (drain, hand-over) first waits for such clients while the kernel still holds some on its port (1.25 s at most). Native accept only; false accepts at the handshake. A tcp listener without proxy_protocol never defers (its server may speak first).'),
    half_close: z.boolean().optional().describe('tcp listeners and TLS passthrough: true (default) forwards one side\'s FIN to the other and relays the other way until that side ends too (a client may shut its sending side and still read the answer); false closes both sides once either has ended and what it sent is written out, as nginx `stream` does by default (`proxy_half_close off`): fewer system calls and wake-ups per connection, for protocols where the first FIN ends the conversation.'),
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
      .optional().describe('Expect a PROXY protocol v1 or v2 header before anything else, only from `trusted` senders (CIDRs or addresses); others are closed at once, as is a connection whose header is missing or malformed. The header\'s source becomes the client address ($remote_addr, X-Forwarded-For, X-Real-IP).'),
    tls: z
      .object({
        certificates: z.array(certificate).default([]).describe('The first certificate is the default for clients that send no (or an unknown) SNI name. None: the listener only passes TLS through (needs `passthrough`); other names get a TLS alert and are closed.'),
        min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
        handshake_timeout: duration('10s').describe('Time allowed for the TLS handshake (default 10s); also bounds reading the ClientHello for passthrough.'),
        passthrough: z.array(passthrough).optional().describe('SNI names relayed untouched to an upstream instead of terminated here (default none).'),
        acme: acmeSchema.optional().describe('Get and renew a certificate from an ACME CA (Let\'s Encrypt by default); it is served beside `certificates`.'),
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
  if (none(t.certificates) && none(t.passthrough) && t.acme === undefined) {
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
  if (l.half_close !== undefined && l.mode !== 'tcp' && !(isPlainObject(l.tls) && Array.isArray(l.tls.passthrough) && l.tls.passthrough.length > 0)) {
    ctx.addIssue({ code: 'custom', path: ['half_close'], message: 'half_close applies to tcp listeners and TLS passthrough only' });
  }
  if (l.defer_accept === true && l.mode === 'tcp' && l.proxy_protocol === undefined) {
    ctx.addIssue({ code: 'custom', path: ['defer_accept'], message: 'defer_accept applies to listeners whose clients speak first: a tcp listener without proxy_protocol may have a server that speaks first' });
  }
  if (l.https_redirect !== undefined && l.https_redirect !== false && (l.tls !== undefined || l.mode === 'tcp')) {
    ctx.addIssue({ code: 'custom', path: ['https_redirect'], message: 'https_redirect applies to plain http listeners only' });
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
    servers: z
      .array(
        z.string().superRefine((v, ctx) => {
          if (parseResolverServer(v) === undefined) ctx.addIssue({ code: 'custom', message: `invalid resolver address ${JSON.stringify(v)} (expected an IP address with an optional port: "10.0.0.53", "127.0.0.1:5353", "[::1]:53")` });
        }),
      )
      .min(1, 'list at least one name server, or leave `servers` out for the system resolver')
      .optional().describe('Name servers, "ip" or "ip:port" (default: the system\'s, from /etc/resolv.conf).'),
    timeout: positiveDuration('2s').describe('One DNS query (default 2s); a lookup that times out counts as failed.'),
    min_ttl: positiveDuration('1s').describe('Shortest time between two lookups of one name, whatever its TTL says (default 1s).'),
    max_ttl: positiveDuration('1h').describe('Longest time a name\'s answer is kept before it is looked up again (default 1h).'),
    backoff: z.object({ min: positiveDuration('1s'), max: positiveDuration('30s') }).strict().prefault({}).describe('After a failed lookup: first retry after `min`, doubling up to `max` (default 1s, 30s).'),
    family: z.enum(['any', 'ipv4', 'ipv6']).default('any').describe('Address records asked for: any (A and AAAA, default), ipv4 (A) or ipv6 (AAAA).'),
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
    workers: z.union([z.literal('auto'), z.number().int().min(1).max(256)]).default('auto').describe('Worker processes; "auto" = one per core (default).'),
    standby_worker: z
      .boolean()
      .default(true)
      .describe('A spare worker process, forked once the workers are up: modules loaded, no listener, no config. It takes the place of a worker that dies at once (its start is then only applying the config), and another is forked once it serves. Costs one idle process (~60 MiB RSS, ~17 MiB of it its own). false: a dead worker is replaced by a new process, which loads its modules first (default true).'),
    listeners: z.array(listener).min(1, 'at least one listener is needed').describe('Addresses Portico accepts connections on: HTTP (TLS terminated when `tls` is set, or passed through by SNI) or raw TCP.'),
    upstreams: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'upstream names use letters, digits, _ . -'), upstream).default({}).describe('Named pools of backend targets, balanced, health-checked and kept alive; routes and tcp listeners name them.'),
    routes: z.array(route).default([]).describe('Tried in order; the first whose `match` fits the request takes it (no match -> 404).'),
    limits: z
      .object({
        header_size: size('32KiB').describe('Request line + headers; larger -> 431 (default 32KiB).'),
        uri_size: size('8KiB').describe('Request target; longer -> 414 (default 8KiB).'),
        headers: z.number().int().min(1).max(10_000).default(100).describe('Header fields per request (default 100).'),
        body_size: z.union([z.literal('off'), size('1MiB')]).default('off' as const).describe('Request body bytes; larger -> 413 (default off = unlimited, streamed).'),
        connections_per_ip: z.union([z.literal('off'), z.number().int().min(1).max(10_000_000)]).default('off' as const).describe('Open connections per client address, per worker (HTTP, HTTPS, their WebSocket tunnels, L4 relays); more are closed at accept, before the TLS handshake (default off: carrier NAT puts thousands behind one address).'),
        ipv6_prefix: z.number().int().min(1).max(128).default(64).describe('IPv6 clients are one client per this prefix for connection and rate limits (default 64).'),
        max_pipes: z.number().int().min(0).max(1_000_000).default(1024).describe('Pipes each worker\'s splice relay may hold at once (default 1024). A tunnel takes one only while bytes are in flight, so this bounds busy tunnels\' kernel buffers, not open tunnels; above it bytes are copied through a 16 KiB buffer instead (slower, never refused). 0 = always copy.'),
        static_open_files: z.number().int().min(1).max(1_000_000).default(1024).describe('Files static routes may hold open at once, per worker (default 1024); past it a request gets 503.'),
      })
      .strict()
      .prefault({}),
    body_buffer: bodyBufferSchema.prefault({}).describe('Chunked request bodies to FastCGI routes, held whole until their length is known: memory, then an unnamed temp file (config/fastcgi.ts).'),
    static_cache: staticCacheSchema.prefault({}).describe('Per-worker cache of static files: lookups, small files and their compressed forms (nginx open_file_cache).'),
    timeouts: z
      .object({
        head: duration('15s').describe('From connection (or previous response) to a complete request head; else 408 (default 15s).'),
        keepalive: duration('75s').describe('Idle client keep-alive connection with no request in progress (default 75s).'),
        body: duration('60s').describe('Longest wait for the next bytes of a request body the client is sending (nginx client_body_timeout); else 408 and close, never held against the target (default 60s).'),
        shutdown_grace: duration('30s').describe('SIGTERM: time in-flight requests get to finish before tunnels and the rest are closed (default 30s).'),
      })
      .strict()
      .prefault({}),
    tunnel: tunnel.prefault({}).describe('Default tunnel (WebSocket) timeouts; a route\'s `tunnel` overrides them.'),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('pino level of the JSON lines on stdout (default info).'),
        access: z.boolean().default(true).describe('One line per request and per tunnel on stdout (default true).'),
        access_file: z
          .string()
          .min(1)
          .optional()
          .describe('Also write the access lines to this file (relative to the config file), appended; SIGUSR1 reopens it (logrotate). With `access: false`, only there.'),
        request_id: z
          .boolean()
          .default(true)
          .describe('Send every request upstream with X-Request-Id: the client\'s own when it sent a valid one (1-128 printable characters), else one Portico makes; logged as `reqId` (default true).'),
        limit_interval: positiveDuration('10s').describe('Refusals by connection and rate limits: one line per client key at the first, then a summary per this interval (default 10s).'),
      })
      .strict()
      .prefault({}),
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
        x_forwarded_for: z.enum(['replace', 'append']).default('replace').describe('X-Forwarded-For from an untrusted peer: `replace` it with the peer address (default) or `append` the peer to it.'),
        forwarded: z.boolean().default(false).describe('Also send an RFC 7239 `Forwarded` element (for, host, proto); default false (a client\'s copy is still dropped).'),
      })
      .strict()
      .prefault({}).describe('Forwarding headers (X-Forwarded-*, X-Real-IP, Forwarded) and whom to believe about them. A client\'s copies are believed only from `trusted_proxies` (like nginx `set_real_ip_from`); from anyone else Portico sets them itself. The address checked is the client address Portico sees (a PROXY header\'s source included).'),
    resolver: resolver.prefault({}).describe('DNS for targets with `resolve: true` and `srv` targets; see `resolver` above.'),
    admin: z
      .object({
        address: address('admin', true).describe('host:port of the admin API (/status, /metrics, drains); keep it on loopback or a private network.'),
        token: z.string().min(16, 'admin token must be at least 16 characters').regex(/^[\x21-\x7e]+$/, 'admin token must be printable ASCII without spaces').optional().describe('When set, POST requests (drain, undrain) need `Authorization: Bearer TOKEN` and may come from any address; without it they are accepted from loopback peers only, with the header `X-Portico-Admin: 1`.'),
        hosts: z.array(z.string().regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i, 'a host name (letters, digits, dots, dashes), without port')).max(64).default([]).describe('Host names the admin listener may be reached by (`Host` header), besides `localhost` and IP addresses; any other name is refused so that a DNS-rebinding page cannot read or drive it (default none).'),
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

/** ACME: each challenge needs a listener to answer it (acmeChallengeIssues); two ACME listeners may not share a first domain (one state folder). */
function checkAcme(c: Record<string, unknown>, ctx: z.RefinementCtx): void {
  if (!Array.isArray(c.listeners)) return;
  const views = c.listeners.map((l: unknown) => {
    const tls = isPlainObject(l) && isPlainObject(l.tls) ? l.tls : undefined;
    const names = Array.isArray(tls?.passthrough) ? tls.passthrough.map((p: unknown) => (isPlainObject(p) && typeof p.sni === 'string' ? p.sni : '')) : [];
    return { port: endpointOf(isPlainObject(l) ? l.address : undefined)?.port, plain: isPlainObject(l) && tls === undefined && l.mode !== 'tcp', terminates: tls !== undefined && (tls.acme !== undefined || (Array.isArray(tls.certificates) && tls.certificates.length > 0)), passthrough: names };
  });
  const firsts = new Map<string, number>();
  c.listeners.forEach((l: unknown, i) => {
    const acme = isPlainObject(l) && isPlainObject(l.tls) && isPlainObject(l.tls.acme) ? l.tls.acme : undefined;
    if (acme === undefined) return;
    const path = ['listeners', i, 'tls', 'acme'];
    for (const issue of acmeChallengeIssues(acme, views)) ctx.addIssue({ code: 'custom', path: [...path, issue.path], message: issue.message });
    const first = Array.isArray(acme.domains) && typeof acme.domains[0] === 'string' ? acme.domains[0].trim().toLowerCase() : undefined;
    if (first === undefined) return;
    const other = firsts.get(first);
    if (other !== undefined) ctx.addIssue({ code: 'custom', path: [...path, 'domains'], message: `listeners[${other}] also orders a certificate for ${first}: one listener per certificate (list more addresses under one listener instead)` });
    else firsts.set(first, i);
  });
}

function checkReferences(c: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainObject(c)) return;
  checkAcme(c, ctx);
  const upstreams = isPlainObject(c.upstreams) ? c.upstreams : undefined;
  if (Array.isArray(c.routes) && upstreams !== undefined) {
    c.routes.forEach((r: unknown, i) => {
      const name = isPlainObject(r) && isPlainObject(r.proxy) ? r.proxy.upstream : undefined;
      if (typeof name === 'string' && !Object.hasOwn(upstreams, name)) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'proxy'], message: `unknown upstream "${name}" (defined: ${Object.keys(upstreams).join(', ') || 'none'})` });
      }
    });
  }
  if (Array.isArray(c.listeners)) {
    const hasTls = c.listeners.some((l) => isPlainObject(l) && l.tls !== undefined);
    c.listeners.forEach((l: unknown, i) => {
      if (isPlainObject(l) && l.https_redirect === true && !hasTls) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'https_redirect'], message: 'https_redirect: true needs a TLS listener to send clients to (or give the https port as a number)' });
    });
  }
  if (Array.isArray(c.routes) && upstreams !== undefined) checkFastcgiReferences(c.routes, upstreams, ctx);
  if (Array.isArray(c.routes)) checkScriptIndexes(c.routes, ctx);
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
 * Index files of static routes that a fastcgi route runs (`index: index.php` beside a `\.php$` route): `route` and
 * `slot` place the file in `routes[route].static.index` (a string or a list), `script` is the fastcgi route. Served
 * as a file, such an index sends the script's source to whoever asks for the folder (nginx's `index index.php` is an
 * internal redirect to the PHP location; Portico's is static.fallback). Raw routes as written or parsed; a regex
 * that does not compile is checkRouteMatch's to report. `portico check` refuses these; the importer leaves them out.
 */
export function scriptIndexes(routes: readonly unknown[]): Array<{ route: number; slot: number; file: string; script: number }> {
  const scripts: { re: RegExp; at: number }[] = [];
  routes.forEach((r: unknown, j) => {
    const re = isPlainObject(r) && r.fastcgi !== undefined && isPlainObject(r.match) ? r.match.path_regex : undefined;
    if (typeof re !== 'string') return;
    try {
      scripts.push({ re: new RegExp(re), at: j });
    } catch {
      // checkRouteMatch reports it
    }
  });
  const out: Array<{ route: number; slot: number; file: string; script: number }> = [];
  if (scripts.length === 0) return out;
  routes.forEach((r: unknown, i) => {
    const index = isPlainObject(r) && isPlainObject(r.static) ? r.static.index : undefined;
    const files = typeof index === 'string' ? [index] : Array.isArray(index) ? index : [];
    files.forEach((f: unknown, slot) => {
      const script = typeof f === 'string' ? scripts.find((x) => x.re.test(`/${f}`)) : undefined;
      if (script !== undefined) out.push({ route: i, slot, file: f as string, script: script.at });
    });
  });
  return out;
}

function checkScriptIndexes(routes: unknown[], ctx: z.RefinementCtx): void {
  for (const { route, slot, file, script } of scriptIndexes(routes)) {
    const index = (routes[route] as { static: { index: unknown } }).static.index;
    const path = typeof index === 'string' ? ['routes', route, 'static', 'index'] : ['routes', route, 'static', 'index', slot];
    ctx.addIssue({ code: 'custom', path, message: `"${file}" is a script of routes[${script}] (fastcgi): as this static route's index, a request for a folder would get its source; leave it out (static.fallback: "/${file}?$args" sends folders without another index to it)` });
  }
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
    else if (isPlainObject(upstreams[name]) && upstreams[name].tls !== undefined && upstreams[name].tls !== false) {
      ctx.addIssue({ code: 'custom', path, message: `upstream "${name}" has tls: L4 listeners and passthrough relay bytes as they are (use a separate upstream without tls)` });
    } else if (routed.has(name)) ctx.addIssue({ code: 'custom', path, message: `upstream "${name}" also serves HTTP routes: give raw TCP its own upstream entry (same targets are fine)` });
    else checkL4Balance(name, upstreams[name], path, ctx);
  };
  listeners.forEach((l, i) => {
    if (!isPlainObject(l)) return;
    if (l.mode === 'tcp') check(l.upstream, ['listeners', i, 'upstream']);
    const pass = isPlainObject(l.tls) && Array.isArray(l.tls.passthrough) ? l.tls.passthrough : [];
    pass.forEach((p: unknown, j) => check(isPlainObject(p) ? p.upstream : undefined, ['listeners', i, 'tls', 'passthrough', j, 'upstream']));
  });
}

/**
 * An L4 connection has no request: a `hash` key read from one (header:, cookie:, query:) or the `cookie` policy
 * would find nothing and silently round-robin. Refused at the upstream's balance, naming the listener.
 */
function checkL4Balance(name: string, upstream: unknown, from: (string | number)[], ctx: z.RefinementCtx): void {
  const balance = isPlainObject(upstream) ? upstream.balance : undefined;
  if (!isPlainObject(balance)) return;
  const user = from.join('.').replace(/\.(\d+)/g, '[$1]');
  const fix = 'hash it by "$remote_addr" (the client address), or balance it round_robin, least_conn or random_two';
  if (balance.policy === 'cookie') {
    ctx.addIssue({ code: 'custom', path: ['upstreams', name, 'balance'], message: `upstream "${name}" is balanced by a sticky cookie, but ${user} relays raw bytes (no HTTP request, no cookie to read or set): ${fix}` });
  } else if (balance.policy === 'hash' && typeof balance.key === 'string' && balance.key !== '$remote_addr') {
    ctx.addIssue({ code: 'custom', path: ['upstreams', name, 'balance', 'key'], message: `upstream "${name}" hashes a request's ${JSON.stringify(balance.key)}, but ${user} relays raw bytes (no HTTP request to read it from): ${fix}` });
  }
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
export type { WebsocketConfig } from './websocket.js';
export type RouteRateLimitConfig = NonNullable<RouteConfig['rate_limit']>;
export type RateLimitConfig = NonNullable<RouteRateLimitConfig['requests']>;
export type HealthConfig = UpstreamConfig['health'];
export type ActiveHealthConfig = NonNullable<HealthConfig['active']>;
