// Health of upstream targets. Active: probes (http, tcp, websocket) and the HealthChecker that flips a target
// after `passes`/`fails` consecutive results; it runs in the primary, once per target for the whole instance,
// and only reports flips (primary/targets.ts sends them to workers). Passive: PassiveWindow, nginx max_fails/fail_timeout
// over times it is given (the pool owns one per target). Nothing here touches client sockets or picks targets.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { connect, type Socket } from 'node:net';
import { buildProxyV1, buildProxyV2Local } from '../wire/proxy-protocol.js';
import type { ActiveHealthConfig } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import type { UpstreamTls } from './upstream-tls.js';
import { netAddress } from './target.js';
import { encodeGetValues, readManagementReply } from '../wire/fastcgi.js';

/** Where a probe goes: the target's address as written in config, and what it resolves to. */
export interface ProbeTarget {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  /** Written first on every probe connection: the PROXY header an upstream with send_proxy_protocol expects. */
  readonly proxyHeader?: Buffer;
  /** The upstream's TLS to its targets: every probe speaks it (a tcp probe passes once the handshake does). */
  readonly tls?: UpstreamTls;
}

/**
 * What a probe of an upstream with send_proxy_protocol sends first: v1 "PROXY UNKNOWN" and v2 LOCAL both tell
 * the receiver to use the connection's real endpoints (proxy-protocol.txt §2.1, §2.2: meant for health checks).
 */
export function probeProxyHeader(version: 'off' | 'v1' | 'v2'): Buffer | undefined {
  return version === 'off' ? undefined : version === 'v1' ? buildProxyV1(undefined, undefined) : buildProxyV2Local();
}

/** A TCP connection to the target with its PROXY header (if any) queued as the first bytes, then TLS if the upstream has it. */
function probeConnect(target: ProbeTarget): Socket {
  const socket = connect(netAddress(target));
  if (target.proxyHeader !== undefined) socket.write(target.proxyHeader);
  return target.tls === undefined ? socket : target.tls.wrap(socket, target);
}

export type ProbeResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** An http probe reads at most this much body looking for `body_contains`; not found within it = failure. */
export const BODY_SCAN_LIMIT = 64 * 1024;
/** After a websocket probe's Close frame, the socket gets this long to close cleanly before it is destroyed. */
const WS_CLOSE_GRACE_MS = 1_000;
/** RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key to compute Sec-WebSocket-Accept. */
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const USER_AGENT = 'portico-health-check';

const OK: ProbeResult = Object.freeze({ ok: true });
const fail = (reason: string): ProbeResult => ({ ok: false, reason });

function errorReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  // a TLS failure's code alone (EPROTO, ERR_SSL_...) does not say what went wrong: keep the message too
  if (e.code !== undefined && /^(EPROTO$|ERR_SSL|ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED)/.test(e.code)) return `${e.code}: ${e.message}`;
  return e.code ?? e.message ?? String(err);
}

/**
 * One probe of `target` as `cfg` says, settled within `cfg.timeout` (or when `signal` aborts); it always
 * resolves (never rejects) and leaves no socket behind.
 */
export function probe(target: ProbeTarget, cfg: ActiveHealthConfig, signal?: AbortSignal): Promise<ProbeResult> {
  switch (cfg.type) {
    case 'tcp':
      return probeTcp(target, cfg.timeout, signal);
    case 'http':
      return probeHttp(target, cfg, signal);
    case 'websocket':
      return probeWebSocket(target, cfg, signal);
    case 'fastcgi':
      return probeFastcgi(target, cfg.timeout, signal);
    default: {
      const never: never = cfg.type;
      return Promise.resolve(fail(`unknown check type ${String(never)}`));
    }
  }
}

/**
 * The common frame of a probe: one settle, one timeout, abort support, and a cleanup that runs exactly once
 * whichever of them comes first.
 */
function bounded(timeoutMs: number, signal: AbortSignal | undefined, run: (settle: (r: ProbeResult) => void) => () => void): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let done = false;
    let cleanup: () => void = () => {};
    const settle = (r: ProbeResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      cleanup();
      resolve(r);
    };
    const onAbort = (): void => settle(fail('aborted'));
    const timer = setTimeout(() => settle(fail(`timeout after ${timeoutMs}ms`)), timeoutMs);
    timer.unref();
    if (signal?.aborted === true) return settle(fail('aborted'));
    signal?.addEventListener('abort', onAbort, { once: true });
    cleanup = run(settle);
    if (done) cleanup(); // settled synchronously inside run(): its cleanup was not known yet
  });
}

function probeTcp(target: ProbeTarget, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  return bounded(timeoutMs, signal, (settle) => {
    const socket = probeConnect(target);
    socket.on('error', (err) => settle(fail(errorReason(err))));
    socket.once(target.tls === undefined ? 'connect' : 'secureConnect', () => settle(OK));
    return () => socket.destroy();
  });
}

/** FCGI_GET_VALUES (request id 0, no script run): a FastCGI application that answers it is up. */
const FCGI_PROBE = encodeGetValues(['FCGI_MPXS_CONNS']);

function probeFastcgi(target: ProbeTarget, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  return bounded(timeoutMs, signal, (settle) => {
    const socket = probeConnect(target);
    let buf: Buffer = Buffer.alloc(0);
    socket.on('error', (err) => settle(fail(errorReason(err))));
    socket.once('connect', () => socket.write(FCGI_PROBE));
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const r = readManagementReply(buf);
      if (r.kind === 'ok') settle(OK);
      else if (r.kind === 'error') settle(fail(`FastCGI: ${r.reason}`));
      else if (buf.length > 70_000) settle(fail('FastCGI: reply too long'));
    });
    socket.on('end', () => settle(fail('FastCGI: closed before answering FCGI_GET_VALUES')));
    return () => socket.destroy();
  });
}

function inRanges(status: number, ranges: ReadonlyArray<readonly [number, number]>): boolean {
  for (const [low, high] of ranges) if (status >= low && status <= high) return true;
  return false;
}

function probeHttp(target: ProbeTarget, cfg: ActiveHealthConfig, signal?: AbortSignal): Promise<ProbeResult> {
  return bounded(cfg.timeout, signal, (settle) => {
    // No agent, our own connection: a fresh one per probe (a pooled one could pass while the target no longer
    // accepts), with the PROXY header first when the upstream wants one. (With `agent: false` Node would make
    // its own connection and ignore createConnection.)
    const req = http.request({
      host: target.host,
      port: target.port,
      method: cfg.method,
      path: cfg.path,
      createConnection: () => probeConnect(target),
      setHost: false,
      headers: { Host: cfg.host ?? target.id, 'User-Agent': USER_AGENT, Accept: '*/*', Connection: 'close' },
    });
    req.on('error', (err) => settle(fail(errorReason(err))));
    req.on('response', (res) => {
      res.on('error', (err) => settle(fail(errorReason(err))));
      const status = res.statusCode ?? 0;
      if (!inRanges(status, cfg.expect_status)) return settle(fail(`status ${status}`));
      const needle = cfg.body_contains;
      if (needle === undefined) return settle(OK);
      scanBody(res, Buffer.from(needle), settle);
    });
    req.end();
    return () => req.destroy();
  });
}

/** Reads at most BODY_SCAN_LIMIT bytes looking for `needle`, keeping only what a match across chunks needs. */
function scanBody(res: http.IncomingMessage, needle: Buffer, settle: (r: ProbeResult) => void): void {
  let seen = 0;
  let tail: Buffer = Buffer.alloc(0);
  res.on('data', (chunk: Buffer) => {
    const take = chunk.subarray(0, BODY_SCAN_LIMIT - seen);
    seen += take.length;
    const window = tail.length === 0 ? take : Buffer.concat([tail, take]);
    if (window.includes(needle)) return settle(OK);
    tail = window.subarray(Math.max(0, window.length - needle.length + 1));
    if (seen >= BODY_SCAN_LIMIT) settle(fail(`body_contains not found in the first ${BODY_SCAN_LIMIT} bytes`));
  });
  res.on('end', () => settle(fail('body_contains not found')));
}

function headerHasToken(value: string | string[] | undefined, token: string): boolean {
  const v = Array.isArray(value) ? value.join(',') : value;
  return v !== undefined && v.split(',').some((p) => p.trim().toLowerCase() === token);
}

/** A masked Close frame with status 1001 (going away), as a client must send it (RFC 6455 §5.3, §7.4.1). */
function clientCloseFrame(): Buffer {
  const mask = randomBytes(4);
  const frame = Buffer.from([0x88, 0x82, mask[0], mask[1], mask[2], mask[3], 0x03, 0xe9]);
  for (let i = 0; i < 2; i++) frame[6 + i] ^= mask[i];
  return frame;
}

function probeWebSocket(target: ProbeTarget, cfg: ActiveHealthConfig, signal?: AbortSignal): Promise<ProbeResult> {
  return bounded(cfg.timeout, signal, (settle) => {
    const key = randomBytes(16).toString('base64');
    const expected = createHash('sha1').update(key + WS_GUID).digest('base64');
    let upgraded: Socket | null = null;
    const req = http.request({
      host: target.host,
      port: target.port,
      method: 'GET',
      path: cfg.path,
      createConnection: () => probeConnect(target), // no agent: a fresh connection (see probeHttp)
      setHost: false,
      headers: {
        Host: cfg.host ?? target.id,
        'User-Agent': USER_AGENT,
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': key,
      },
    });
    req.on('error', (err) => settle(fail(errorReason(err))));
    req.on('response', (res) => {
      res.resume();
      settle(fail(`status ${res.statusCode ?? 0} (expected 101)`));
    });
    req.on('upgrade', (res, socket) => {
      upgraded = socket;
      socket.on('error', () => {}); // the verdict is in; a reset while closing is not the target's fault
      // RFC 6455 §4.1: the client must fail the connection unless all of these hold.
      if (res.statusCode !== 101) return settle(fail(`status ${res.statusCode ?? 0} (expected 101)`));
      if (!headerHasToken(res.headers.upgrade, 'websocket')) return settle(fail('101 without Upgrade: websocket'));
      if (!headerHasToken(res.headers.connection, 'upgrade')) return settle(fail('101 without Connection: upgrade'));
      if (res.headers['sec-websocket-accept'] !== expected) return settle(fail('invalid Sec-WebSocket-Accept'));
      settle(OK);
    });
    req.end();
    return () => {
      const socket = upgraded as Socket | null;
      // After the upgrade the request's socket is the upgraded one: destroying the request would cut it.
      if (socket === null) return void req.destroy();
      if (socket.destroyed) return;
      // Polite close: a Close frame and FIN, then whatever the server answers is drained until it closes.
      socket.resume();
      socket.end(clientCloseFrame());
      setTimeout(() => socket.destroy(), WS_CLOSE_GRACE_MS).unref();
    };
  });
}

/**
 * Consecutive-result thresholds (pingora `health_check.rs`): a healthy target goes down after `fails`
 * failures in a row and comes back after `passes` successes in a row; a result of the other kind restarts the
 * count. Starts healthy.
 */
export class Thresholds {
  readonly passes: number;
  readonly fails: number;
  #healthy = true;
  /** Consecutive results that disagree with the current state. */
  #streak = 0;

  constructor(passes: number, fails: number, healthy = true) {
    this.passes = passes;
    this.fails = fails;
    this.#healthy = healthy;
  }

  get healthy(): boolean {
    return this.#healthy;
  }

  /** Records one result; true when it flipped the state. */
  record(ok: boolean): boolean {
    if (ok === this.#healthy) {
      this.#streak = 0;
      return false;
    }
    this.#streak++;
    if (this.#streak < (this.#healthy ? this.fails : this.passes)) return false;
    this.#healthy = ok;
    this.#streak = 0;
    return true;
  }
}

/** One target as the admin status shows its active checks. */
export interface ActiveTargetStatus {
  readonly target: string;
  readonly healthy: boolean;
  /** Epoch ms of the last finished probe; null before the first. */
  readonly lastCheck: number | null;
  readonly lastResult: 'ok' | 'fail' | null;
  /** Why the last probe failed. */
  readonly lastReason: string | null;
  readonly checksOk: number;
  readonly checksFailed: number;
  readonly flipsDown: number;
  readonly flipsUp: number;
}

export type FlipListener = (target: string, healthy: boolean) => void;

interface Entry {
  readonly target: ProbeTarget;
  readonly thresholds: Thresholds;
  timer: NodeJS.Timeout | null;
  abort: AbortController | null;
  lastCheck: number | null;
  lastResult: 'ok' | 'fail' | null;
  lastReason: string | null;
  checksOk: number;
  checksFailed: number;
  flipsDown: number;
  flipsUp: number;
}

/** Next delay: `interval` jittered by up to 10% either way, so targets (and instances) do not probe in lockstep. */
function jittered(intervalMs: number): number {
  return Math.max(1, Math.round(intervalMs * (0.9 + 0.2 * Math.random())));
}

/**
 * Active checks of one upstream's targets. Each target has its own timer chain: probe, record, wait a jittered
 * interval, probe again, so probes of one target never overlap and a slow target delays only itself. The first
 * probe runs within 10% of an interval after start(). Every flip is logged once and reported to `onFlip`.
 */
export class HealthChecker {
  readonly upstream: string;
  readonly config: ActiveHealthConfig;
  /** One entry per target address, in the order targets were given. */
  readonly #byId = new Map<string, Entry>();
  readonly #onFlip: FlipListener;
  readonly #log: Logger;
  #running = false;

  /**
   * `initial`: a target's state to start from (a checker replaced on reload carries its predecessor's verdicts);
   * undefined = healthy.
   */
  constructor(upstream: string, targets: readonly ProbeTarget[], config: ActiveHealthConfig, onFlip: FlipListener, log: Logger, initial?: (id: string) => boolean | undefined) {
    this.upstream = upstream;
    this.config = config;
    this.#onFlip = onFlip;
    this.#log = log;
    // The same address listed twice is one backend: probed once.
    for (const target of targets) if (!this.#byId.has(target.id)) this.#byId.set(target.id, this.#entry(target, initial?.(target.id) ?? true));
  }

  #entry(target: ProbeTarget, healthy = true): Entry {
    return {
      target,
      thresholds: new Thresholds(this.config.passes, this.config.fails, healthy),
      timer: null,
      abort: null,
      lastCheck: null,
      lastResult: null,
      lastReason: null,
      checksOk: 0,
      checksFailed: 0,
      flipsDown: 0,
      flipsUp: 0,
    };
  }

  /** The addresses it checks, each once, in the order they were given (config, then discovered). */
  get targetIds(): string[] {
    return [...this.#byId.keys()];
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const entry of this.#byId.values()) this.#schedule(entry, this.#firstDelay());
  }

  /** The first probe of a target runs within 10% of an interval, so targets do not all start together. */
  #firstDelay(): number {
    return Math.random() * this.config.interval * 0.1;
  }

  /** Stops every timer and aborts probes in flight; their results are dropped. */
  stop(): void {
    this.#running = false;
    for (const entry of this.#byId.values()) this.#halt(entry);
  }

  #halt(entry: Entry): void {
    if (entry.timer !== null) clearTimeout(entry.timer);
    entry.timer = null;
    entry.abort?.abort();
    entry.abort = null;
  }

  /**
   * The targets changed (discovery): new ones start healthy and are probed within 10% of an interval; those
   * that left stop being probed and are forgotten (one that comes back starts healthy again); the rest go on
   * with their state and timers.
   */
  setTargets(targets: readonly ProbeTarget[]): void {
    const next = new Set(targets.map((t) => t.id));
    for (const [id, entry] of this.#byId) {
      if (next.has(id)) continue;
      this.#halt(entry);
      this.#byId.delete(id);
    }
    for (const target of targets) {
      if (this.#byId.has(target.id)) continue;
      const entry = this.#entry(target);
      this.#byId.set(target.id, entry);
      if (this.#running) this.#schedule(entry, this.#firstDelay());
    }
  }

  /** True for unknown targets: only what was checked and found failing is ever reported down. */
  isHealthy(target: string): boolean {
    return this.#byId.get(target)?.thresholds.healthy ?? true;
  }

  status(): ActiveTargetStatus[] {
    return [...this.#byId.values()].map((e) => ({
      target: e.target.id,
      healthy: e.thresholds.healthy,
      lastCheck: e.lastCheck,
      lastResult: e.lastResult,
      lastReason: e.lastReason,
      checksOk: e.checksOk,
      checksFailed: e.checksFailed,
      flipsDown: e.flipsDown,
      flipsUp: e.flipsUp,
    }));
  }

  #schedule(entry: Entry, delayMs: number): void {
    entry.timer = setTimeout(() => {
      entry.timer = null;
      void this.#run(entry);
    }, delayMs);
    entry.timer.unref();
  }

  async #run(entry: Entry): Promise<void> {
    const abort = new AbortController();
    entry.abort = abort;
    const result = await probe(entry.target, this.config, abort.signal);
    // aborted: stopped, or the target left (its entry is gone)
    if (abort.signal.aborted || !this.#running) return;
    entry.abort = null;
    this.#record(entry, result);
    this.#schedule(entry, jittered(this.config.interval));
  }

  #record(entry: Entry, result: ProbeResult): void {
    entry.lastCheck = Date.now();
    entry.lastResult = result.ok ? 'ok' : 'fail';
    entry.lastReason = result.ok ? null : result.reason;
    if (result.ok) entry.checksOk++;
    else entry.checksFailed++;
    if (!entry.thresholds.record(result.ok)) return;
    const fields = { upstream: this.upstream, target: entry.target.id, check: this.config.type, healthy: result.ok };
    if (result.ok) {
      entry.flipsUp++;
      this.#log.info({ ...fields, passes: this.config.passes }, 'upstream target is up: active health check passed');
    } else {
      entry.flipsDown++;
      this.#log.warn({ ...fields, fails: this.config.fails, reason: result.reason }, 'upstream target is down: active health check failed');
    }
    this.#onFlip(entry.target.id, result.ok);
  }
}

/** Prometheus text for the active checks of every checker (appended to the primary's /metrics). */
export function renderHealthMetrics(checkers: Iterable<HealthChecker>): string {
  const healthy: string[] = [];
  const checks: string[] = [];
  const flips: string[] = [];
  for (const checker of checkers) {
    for (const s of checker.status()) {
      const l = `upstream="${escapeLabel(checker.upstream)}",target="${escapeLabel(s.target)}"`;
      healthy.push(`portico_upstream_target_healthy{${l}} ${s.healthy ? 1 : 0}`);
      checks.push(`portico_health_checks_total{${l},result="ok"} ${s.checksOk}`, `portico_health_checks_total{${l},result="fail"} ${s.checksFailed}`);
      flips.push(`portico_health_flips_total{${l},to="down"} ${s.flipsDown}`, `portico_health_flips_total{${l},to="up"} ${s.flipsUp}`);
    }
  }
  return [
    '# HELP portico_upstream_target_healthy Active health check state of a target (1 healthy, 0 down).',
    '# TYPE portico_upstream_target_healthy gauge',
    ...healthy,
    '# HELP portico_health_checks_total Active health probes by result.',
    '# TYPE portico_health_checks_total counter',
    ...checks,
    '# HELP portico_health_flips_total Active health state changes of a target.',
    '# TYPE portico_health_flips_total counter',
    ...flips,
    '',
  ].join('\n');
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/**
 * nginx max_fails/fail_timeout for one target, over times the caller passes in (epoch ms): `maxFails`
 * failures within `failTimeoutMs` take the target down for `failTimeoutMs`; older failures expire. Failures
 * while down are not counted (the down period is not extended by requests that were tried anyway). When it
 * comes back, it starts with a clean slate. maxFails 0 or failTimeoutMs 0 = disabled (never down).
 */
export class PassiveWindow {
  readonly maxFails: number;
  readonly failTimeoutMs: number;
  /** Ring of the last `maxFails` failure times. */
  readonly #times: Float64Array;
  #count = 0;
  #next = 0;
  #downUntil = 0;

  constructor(maxFails: number, failTimeoutMs: number) {
    this.maxFails = failTimeoutMs > 0 ? maxFails : 0;
    this.failTimeoutMs = failTimeoutMs;
    this.#times = new Float64Array(this.maxFails);
  }

  get enabled(): boolean {
    return this.maxFails > 0;
  }

  /** Epoch ms when the current down period ends; 0 when it was never down. */
  get downUntil(): number {
    return this.#downUntil;
  }

  isDown(now: number): boolean {
    return now < this.#downUntil;
  }

  /** Failures still inside the window at `now` (0 while down). */
  failures(now: number): number {
    if (this.isDown(now)) return 0;
    let n = 0;
    for (let i = 0; i < this.#count; i++) if (this.#times[i] > now - this.failTimeoutMs) n++;
    return n;
  }

  /** Records a failure at `now`; true when it takes the target down (until now + failTimeoutMs). */
  failure(now: number): boolean {
    if (!this.enabled || this.isDown(now)) return false;
    this.#times[this.#next] = now;
    this.#next = (this.#next + 1) % this.maxFails;
    if (this.#count < this.maxFails) this.#count++;
    // Full ring: the oldest of the last maxFails failures sits where the next one will go.
    if (this.#count < this.maxFails || this.#times[this.#next] <= now - this.failTimeoutMs) return false;
    this.#downUntil = now + this.failTimeoutMs;
    this.#count = 0;
    this.#next = 0;
    return true;
  }
}
