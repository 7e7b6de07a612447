// The admin listener, served by the primary: GET /metrics (Prometheus text), GET /status (JSON) and
// POST /upstreams/NAME/targets/ADDRESS/drain|undrain. Meant for loopback: another address works but is warned
// about. Who may ask is guard.ts's: every request is checked (Host, Origin), drains need the token or, without
// one, a loopback peer and the X-Portico-Admin header.
// It only formats what its AdminSource returns; gathering numbers and fanning out drains is the primary's job
// (primary/report.ts, primary/targets.ts).
import { isUtf8 } from 'node:buffer';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkControl, checkRequest, isLoopback } from './guard.js';
import type { AdminGuardOptions, Refusal } from './guard.js';
import { DashboardFeed, serveDashboardAsset } from './dashboard.js';
import type { Logger } from '../core/log.js';
import type { DiscoveryStatus } from '../upstream/discovery.js';

export interface StatusReport {
  pid: number;
  /** Seconds since the primary started. */
  uptime: number;
  /** The config serving: generation 1 is the one Portico started with, each committed reload adds one. */
  config: {
    file: string;
    generation: number;
    /** ISO time the serving config was loaded (start, or the last successful reload). */
    loadedAt: string;
    reloads: { ok: number; failed: number };
    /** The last reload attempt; on failure, its error and every config error as `FILE:LINE:COL path: message`. */
    lastReload:
      | null
      | { at: string; ok: true; generation: number; summary: string; warnings: string[] }
      | { at: string; ok: false; generation: number; error: string; errors: string[] };
  };
  /** Sticky tunnels: hash keys with open tunnels (per target), and keys held on another target than they hash to. */
  sticky: { keys: number; pins: number };
  listenStrategy: string;
  /** Whether the native addon (splice relay, SO_REUSEPORT) is in use, and why not. */
  native: { native: boolean; reason?: string };
  /** `generation`: the config it serves (0 before its first); connections and tunnels when it answered. */
  /**
   * `fds`: descriptors open and the soft RLIMIT_NOFILE; `pipes`: the splice relay's pipe pool (open = free +
   * in use, in use = holding a tunnel's bytes now, cap = limits.max_pipes, copies = reads copied at the cap).
   */
  workers: Array<{
    id: number;
    pid: number | null;
    uptime: number;
    restarts: number;
    state: string;
    generation: number;
    connections?: number;
    tunnels?: number;
    fds?: { open: number; limit: number };
    /** Who accepts its connections: the addon's epoll set (native accept) or Node's net.Server. */
    accept?: 'native' | 'node';
    /** Native accept: connections accepted and the batches (wake-ups) they came in. */
    acceptBatches?: { accepted: number; batches: number };
    /** Native accept, mixed TLS listeners: connections terminated on the addon's decision at accept, and those peeked for JavaScript. */
    helloAtAccept?: { terminated: number; peeked: number };
    /** Native accept: listeners (keys) whose socket has TCP_DEFER_ACCEPT in force, as the kernel says. */
    deferAccept?: string[];
    /** Answers the addon relayed itself (the common forwarded answer: no JavaScript per exchange). */
    nativeAnswers?: number;
    /** WebSocket 101s the addon checked and wrote itself (no JavaScript between the backend's 101 and the client's). */
    nativeUpgrades?: number;
    /** FastCGI exchanges the addon started itself (PORTICO_NATIVE_EXCHANGE=1: no JavaScript before the request went to FPM). */
    nativeExchanges?: number;
    /** Reads of clients marked ready for it that the addon left to JavaScript (a send to FPM that failed included). */
    nativeExchangesDeclined?: number;
    pipes?: { open: number; inUse: number; cap: number; copies: number };
  }>;
  /**
   * The standby worker (`standby_worker`): its pid, and `loading` until its modules are loaded, then `ready` to
   * take the next dead worker's slot (`leaving`: told to exit by a reload that turned it off); null when there is
   * none (off, or not forked yet: it follows a replacement once every slot serves).
   */
  standby: { pid: number | null; state: 'loading' | 'ready' | 'leaving' } | null;
  /** `backlog`: the listen backlog asked of the kernel (listeners[].backlog, else the system's somaxconn). */
  listeners: Array<{ address: string; port: number; tls: boolean; backlog: number }>;
  /**
   * Per upstream: each target with its availability (in every worker), open requests + tunnels (`active`),
   * the pools' sockets open to it (`open`: connecting, busy, idle, JS-relayed tunnels; a spliced tunnel's socket
   * belongs to the native relay and counts in `active` only) and of those kept idle (`idle`), summed.
   * `loadSeen` (least_conn, random_two, cookie with a least_conn fallback): the load each answering worker
   * balances on, its own active + the other workers' as last aggregated by the primary; every entry equals
   * `active` once the aggregate caught up (within ~100-200 ms of a change). `leaving`: removed by discovery,
   * its open connections and tunnels still finishing (listed until the last one closes).
   */
  upstreams: Record<string, Array<{ target: string; available: boolean; active: number; open: number; idle: number; loadSeen?: number[]; leaving?: boolean }>>;
  /** Per upstream: wait queue and retry counters, summed over workers (counters include exited workers). */
  limits: Record<string, { queued: number; queueRejected: number; queueTimeouts: number; retries: number; retriesDenied: number }>;
  /** Per upstream: each target's health, in the order of `upstreams`. */
  health: Record<string, TargetHealthReport[]>;
  /** Per upstream that follows DNS names: each name's targets and last lookup (time, TTL, error). */
  discovery: Record<string, DiscoveryStatus[]>;
  connections: number;
  tunnels: number;
  /** Workers that did not answer in time; their numbers are missing above. */
  unanswered: number[];
}

export interface TargetHealthReport {
  target: string;
  draining: boolean;
  /** Active checks, run once for the whole instance by the primary; null when the upstream has none. */
  active: null | {
    type: 'http' | 'tcp' | 'websocket' | 'fastcgi';
    healthy: boolean;
    /** ISO time of the last finished probe; null before the first. */
    lastCheck: string | null;
    lastResult: 'ok' | 'fail' | null;
    lastReason: string | null;
  };
  /** Passive health is per worker: in how many of the answering workers the target is out, and failures counted. */
  passive: { enabled: boolean; downInWorkers: number[]; failures: number };
}

/** What a drain or undrain did: the new state in every worker, or why nothing changed. */
export type DrainResult =
  | { ok: true; upstream: string; target: string; draining: boolean; appliedBy: number[]; unanswered: number[] }
  | { ok: false; status: 404; error: string };

export interface AdminSource {
  metrics(): Promise<string>;
  status(): Promise<StatusReport>;
  /** Sets `draining` for `target` (its address as written in config) in every worker. */
  drain(upstream: string, target: string, draining: boolean): Promise<DrainResult>;
  /** Edge fan-out: sends a message to every worker's subscribers of `topic`; returns the workers it went to. */
  publish(topic: string, data: Buffer, binary: boolean): number;
}

export type AdminOptions = AdminGuardOptions;

export interface AdminServer {
  readonly address: string;
  readonly port: number;
  /** New options (a reload changed the token) for the requests that come next. */
  setOptions(options: AdminOptions): void;
  close(): Promise<void>;
}

const PROMETHEUS_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export async function startAdminServer(host: string, port: number, source: AdminSource, log: Logger, options: AdminOptions = {}): Promise<AdminServer> {
  if (!isLoopback(host)) log.warn({ address: host, port }, 'admin listener is not on loopback: /metrics and /status are reachable from the network');
  let current = options;
  const feed = new DashboardFeed(source, log);
  const server = http.createServer({ requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000, maxHeaderSize: 8192 }, (req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    const refused = checkRequest(req, current);
    if (refused !== null) return refuse(req, res, path, refused, log);
    if (path.startsWith('/upstreams/')) serveControl(req, res, path, source, log, current);
    else if (path.startsWith('/topics/')) servePublish(req, res, path, source, log, current);
    else if (path === '/dashboard/events') feed.serve(req, res);
    else if (!serveDashboardAsset(path, req, res)) serve(req, res, source, log);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'admin listener error'));
  const bound = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    address: bound.address,
    port: bound.port,
    setOptions(next) {
      current = next;
    },
    close() {
      feed.close();
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function serve(req: http.IncomingMessage, res: http.ServerResponse, source: AdminSource, log: Logger): void {
  const path = (req.url ?? '/').split('?', 1)[0];
  const route = path === '/metrics' ? source.metrics.bind(source) : path === '/status' ? () => source.status().then((s) => `${JSON.stringify(s, null, 2)}\n`) : undefined;
  if (route === undefined) return send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /status or /dashboard\n', req.method === 'HEAD');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', false);
  }
  const type = path === '/metrics' ? PROMETHEUS_TYPE : 'application/json; charset=utf-8';
  route().then(
    (body) => send(res, 200, type, body, req.method === 'HEAD'),
    (err: unknown) => {
      log.error({ err, path }, 'admin request failed');
      send(res, 500, 'text/plain; charset=utf-8', 'internal error\n', false);
    },
  );
}

const TEXT = 'text/plain; charset=utf-8';
const CONTROL_PATH = /^\/upstreams\/([^/]+)\/targets\/([^/]+)\/(drain|undrain)$/;

/** POST /upstreams/NAME/targets/ADDRESS/drain|undrain (ADDRESS as written in config, percent-encoded if need be). */
function serveControl(req: http.IncomingMessage, res: http.ServerResponse, path: string, source: AdminSource, log: Logger, options: AdminOptions): void {
  req.resume(); // a body, if any, means nothing here
  const m = CONTROL_PATH.exec(path);
  if (m === null) return send(res, 404, TEXT, 'not found: POST /upstreams/NAME/targets/ADDRESS/drain or /undrain\n', req.method === 'HEAD');
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    return send(res, 405, TEXT, 'method not allowed\n', false);
  }
  const denied = checkControl(req, options);
  if (denied !== null) return refuse(req, res, path, denied, log);
  let upstream: string;
  let target: string;
  try {
    upstream = decodeURIComponent(m[1]);
    target = decodeURIComponent(m[2]);
  } catch {
    return send(res, 400, TEXT, 'bad percent-encoding in the path\n', false);
  }
  const draining = m[3] === 'drain';
  source.drain(upstream, target, draining).then(
    (result) => {
      if (!result.ok) return send(res, result.status, TEXT, `${result.error}\n`, false);
      log.info({ upstream, target, draining, remoteAddr: req.socket.remoteAddress }, draining ? 'upstream target drained' : 'upstream target undrained');
      const { ok: _ok, ...body } = result;
      send(res, 200, 'application/json; charset=utf-8', `${JSON.stringify(body)}\n`, false);
    },
    (err: unknown) => {
      log.error({ err, path }, 'admin request failed');
      send(res, 500, TEXT, 'internal error\n', false);
    },
  );
}

const PUBLISH_PATH = /^\/topics\/([^/]+)\/publish$/;
/** Largest message POST /topics/NAME/publish takes (it is copied to every worker). */
const MAX_PUBLISH_BYTES = 1024 * 1024;

/**
 * POST /topics/NAME/publish: the body is one message to every terminated WebSocket subscribed to NAME (a
 * backend named the topic in its 101, README "Edge fan-out"); binary when Content-Type is
 * application/octet-stream, else text (UTF-8). Needs the token or X-Portico-Admin, as drains do.
 */
function servePublish(req: http.IncomingMessage, res: http.ServerResponse, path: string, source: AdminSource, log: Logger, options: AdminOptions): void {
  const m = PUBLISH_PATH.exec(path);
  if (m === null) {
    req.resume();
    return send(res, 404, TEXT, 'not found: POST /topics/NAME/publish\n', req.method === 'HEAD');
  }
  if (req.method !== 'POST') {
    req.resume();
    res.setHeader('Allow', 'POST');
    return send(res, 405, TEXT, 'method not allowed\n', false);
  }
  const denied = checkControl(req, options);
  if (denied !== null) return refuse(req, res, path, denied, log);
  let topic: string;
  try {
    topic = decodeURIComponent(m[1]);
  } catch {
    req.resume();
    return send(res, 400, TEXT, 'bad percent-encoding in the path\n', false);
  }
  const binary = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase() === 'application/octet-stream';
  const parts: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size > MAX_PUBLISH_BYTES) {
      send(res, 413, TEXT, `message over ${MAX_PUBLISH_BYTES} bytes\n`, false);
      req.destroy();
      return;
    }
    parts.push(c);
  });
  req.on('end', () => {
    if (size > MAX_PUBLISH_BYTES) return;
    const data = Buffer.concat(parts, size);
    if (!binary && !isUtf8(data)) return send(res, 400, TEXT, 'a text message must be UTF-8 (send binary as application/octet-stream)\n', false);
    const workers = source.publish(topic, data, binary);
    log.debug({ topic, bytes: size, binary, workers }, 'topic published');
    send(res, 202, 'application/json; charset=utf-8', `${JSON.stringify({ topic, bytes: size, binary, workers })}\n`, false);
  });
}

/** Answers a refused request (and logs it: a refusal may be an attack, or a script missing its header). */
function refuse(req: http.IncomingMessage, res: http.ServerResponse, path: string, refusal: Refusal, log: Logger): void {
  req.resume();
  log.warn({ remoteAddr: req.socket.remoteAddress, method: req.method, path, host: req.headers.host, origin: req.headers.origin, status: refusal.status }, `admin request refused: ${refusal.reason}`);
  if (refusal.status === 401) res.setHeader('WWW-Authenticate', 'Bearer');
  send(res, refusal.status, TEXT, `${refusal.reason}\n`, false);
}

function send(res: http.ServerResponse, status: number, type: string, body: string, headOnly: boolean): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(headOnly ? undefined : body);
}
