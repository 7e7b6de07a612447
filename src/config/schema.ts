// The one description of Portico's config: its TypeScript type, its validation and its defaults.
// Durations ("30s", "500ms", "2m") and sizes ("16KiB", "1MiB") are normalised here to ms and bytes, once.
// It knows nothing about files or YAML positions (load.ts) and builds no runtime objects (router, pools).
import { z } from 'zod';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1000, kb: 1000, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3,
};

/** Parses "30s", "1.5m", "250ms", "0", "off" (= 0, disabled) or a bare number of milliseconds. */
export function parseDuration(input: string | number): number | undefined {
  if (typeof input === 'number') return Number.isFinite(input) && input >= 0 ? Math.round(input) : undefined;
  const s = input.trim().toLowerCase();
  if (s === 'off' || s === '0') return 0;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(s);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2]]);
}

/** Parses "16KiB", "1MiB", "512", "1.5GB" or a bare number of bytes. */
export function parseSize(input: string | number): number | undefined {
  if (typeof input === 'number') return Number.isInteger(input) && input >= 0 ? input : undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(input.trim().toLowerCase());
  if (!m || !(m[2] in SIZE_UNITS)) return undefined;
  return Math.round(Number(m[1]) * SIZE_UNITS[m[2]]);
}

const duration = (dflt: string) =>
  z.union([z.string(), z.number()]).default(dflt).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `invalid duration ${JSON.stringify(v)} (use e.g. "500ms", "30s", "5m", or "off")` });
      return z.NEVER;
    }
    return ms;
  });

const size = (dflt: string) =>
  z.union([z.string(), z.number()]).default(dflt).transform((v, ctx) => {
    const bytes = parseSize(v);
    if (bytes === undefined || bytes === 0) {
      ctx.addIssue({ code: 'custom', message: `invalid size ${JSON.stringify(v)} (use e.g. "16KiB", "1MiB" or a number of bytes)` });
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

const stringList = z.union([z.string(), z.array(z.string()).min(1)]).transform((v) => (typeof v === 'string' ? [v] : v));

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/; // RFC 9110 §5.1 token

const headerOps = z
  .object({
    set: z.record(z.string().regex(HEADER_NAME, 'header name must be an RFC 9110 token'), z.string().regex(/^[^\r\n\0]*$/, 'header value must not contain CR, LF or NUL')).default({}),
    remove: z.array(z.string().regex(HEADER_NAME, 'header name must be an RFC 9110 token')).default([]),
  })
  .strict()
  .prefault({});

const target = z.union([
  address('target').transform((a) => ({ ...a, weight: 1 })),
  z
    .object({ address: address('target'), weight: z.number().int().min(0).max(1000).default(1) })
    .strict()
    .transform((t) => ({ ...t.address, weight: t.weight })),
]);

const upstream = z
  .object({
    targets: z.array(target).min(1, 'an upstream needs at least one target'),
    /** round_robin: smooth weighted round robin (default); least_conn: fewest open requests + tunnels. */
    balance: z.enum(['round_robin', 'least_conn']).default('round_robin'),
    /** Upper bound of connections (idle + busy) Portico opens to one target, per worker (default 512). */
    max_connections: z.number().int().min(1).max(1_000_000).default(512),
    keepalive: z
      .object({
        /** Idle keep-alive connections kept per target, per worker (default 32; 0 disables reuse). */
        max_idle: z.number().int().min(0).max(100_000).default(32),
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
  })
  .strict();

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
    proxy,
    request_headers: headerOps,
    response_headers: headerOps,
    tunnel: tunnel.optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    const paths = [r.match.path, r.match.path_exact, r.match.path_regex].filter((p) => p !== undefined);
    if (paths.length > 1) ctx.addIssue({ code: 'custom', path: ['match'], message: 'use only one of path, path_exact, path_regex' });
    if (r.match.path_regex !== undefined) {
      try {
        new RegExp(r.match.path_regex);
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['match', 'path_regex'], message: `invalid regular expression: ${(err as Error).message}` });
      }
    }
  });

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

const listener = z
  .object({
    address: address('listener', true),
    tls: z
      .object({
        /** The first certificate is the default for clients that send no (or an unknown) SNI name. */
        certificates: z.array(certificate).min(1, 'a TLS listener needs at least one certificate'),
        min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
        /** Time allowed for the TLS handshake (default 10s). */
        handshake_timeout: duration('10s'),
      })
      .strict()
      .optional(),
  })
  .strict();

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
      })
      .strict()
      .prefault({}),
    timeouts: z
      .object({
        /** From connection (or previous response) to a complete request head; else 408 (default 15s). */
        head: duration('15s'),
        /** Idle client keep-alive connection with no request in progress (default 75s). */
        keepalive: duration('75s'),
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
      })
      .strict()
      .prefault({}),
    admin: z
      .object({ address: address('admin', true) })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    c.routes.forEach((r, i) => {
      if (!(r.proxy.upstream in c.upstreams)) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'proxy'], message: `unknown upstream "${r.proxy.upstream}" (defined: ${Object.keys(c.upstreams).join(', ') || 'none'})` });
      }
    });
    const seen = new Map<string, number>();
    c.listeners.forEach((l, i) => {
      const key = `${l.address.host}:${l.address.port}`;
      if (l.address.port !== 0 && seen.has(key)) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'address'], message: `address ${l.address.address} is already used by listeners[${seen.get(key)}]` });
      seen.set(key, i);
    });
  });

export type ConfigInput = z.input<typeof configSchema>;
/** Validated config with defaults applied; durations in ms, sizes in bytes. Paths are already absolute after load(). */
export type Config = z.output<typeof configSchema>;
export type ListenerConfig = Config['listeners'][number];
export type UpstreamConfig = Config['upstreams'][string];
export type TargetConfig = UpstreamConfig['targets'][number];
export type RouteConfig = Config['routes'][number];
export type TunnelConfig = Config['tunnel'];
