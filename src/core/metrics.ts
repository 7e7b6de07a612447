// Per-worker counters of the data path, a plain snapshot the primary sums over workers, and the Prometheus text
// format. Counting allocates nothing (the data path calls it per request and per tunnel); text is built only
// on a scrape. No I/O here: primary/report.ts collects snapshots over IPC and admin/server.ts serves the text.
import type { ErrorCode } from './errors.js';
import { BUCKETS, Histogram, MAX_SERIES, renderHistogram, sumHistograms, type HistogramName, type HistogramSnapshot } from './histogram.js';

export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
export type StatusClass = (typeof STATUS_CLASSES)[number];

/** `proxy_*`: the PROXY header phase (missing, malformed, not complete in time); the rest: the ClientHello phase. */
export type PrefaceFailure = 'proxy_missing' | 'proxy_invalid' | 'proxy_timeout' | 'not_tls' | 'client_hello_invalid' | 'timeout' | 'closed';

/**
 * Why a listener closed a connection before routing it: a bad or missing preface, an untrusted PROXY sender, or
 * (a TLS listener that terminates nothing) a ClientHello naming no passthrough name.
 */
export type RefusedReason = PrefaceFailure | 'untrusted' | 'sni_unknown' | 'sni_missing' | 'connections_per_ip' | 'fd_limit';

/**
 * The refusals that concern the PROXY protocol, as `portico_proxy_protocol_refused_total{reason}`: a sender
 * outside proxy_protocol.trusted, no header, a malformed one, or none complete in time. Always rendered, zeros
 * included, so a rate() over them works from the first scrape.
 */
const PROXY_REFUSALS: ReadonlyArray<readonly [RefusedReason, string]> = [
  ['untrusted', 'untrusted'],
  ['proxy_missing', 'missing'],
  ['proxy_invalid', 'invalid'],
  ['proxy_timeout', 'timeout'],
];

/** A worker's counters at one moment: plain data, safe to send over IPC and to add up. */
export interface MetricsSnapshot {
  /** Client connections accepted (after the TLS handshake for https listeners). */
  connections: number;
  /** Responses by status class (499, a client gone before its response, counts as 4xx). */
  requests: Record<StatusClass, number>;
  tunnelsOpen: number;
  tunnelsTotal: number;
  /** Bytes read from clients / written to clients. */
  bytesIn: number;
  bytesOut: number;
  upstreamErrors: Partial<Record<ErrorCode, number>>;
  tlsHandshakeErrors: number;
  /** TLS handshakes completed by the native addon (the rest went through Node's TLS). */
  nativeTlsHandshakes?: number;
  /** Connections closed before routing, by reason. */
  refused: Partial<Record<RefusedReason, number>>;
  /** Requests answered 429 by a route's rate limit, by "KIND ROUTE" (KIND: requests | handshakes). */
  rateLimited: Record<string, number>;
  /** The splice relay's pipe pool (absent without the addon): gauges, and copies as a counter. */
  pipes?: PipeGauges;
  /** Latency histograms (histogram.ts BUCKETS), by their bounded label sets. */
  histograms: Record<HistogramName, HistogramSnapshot>;
  /** Responses per upstream target by status class, keyed "UPSTREAM\u0000TARGET". */
  targetResponses: Record<string, { upstream: string; target: string; classes: number[] }>;
  /** Terminated WebSockets (uWebSockets.js); absent until one opened. */
  terminated?: TerminatedCounters;
  /** Log lines dropped because stdout's reader or the access-log file's disk did not keep up (line-writer.ts). */
  logDropped?: LogDropped;
  staticCache?: StaticCacheStats;
  /** Chunked bodies held for FastCGI routes (handlers/body-buffer.ts). */
  bodyBuffer?: BodyBufferStats;
}

/** Chunked request bodies held whole by one worker (or summed): kept in memory, spilled to a temp file, disk held now. */
export interface BodyBufferStats {
  memory: number;
  file: number;
  diskBytes: number;
}

/** Lines dropped per destination: stdout (access log and pino's lines) and the `log.access_file` files. */
export interface LogDropped {
  stdout: number;
  file: number;
}

/** The static-file cache of one worker (handlers/static-cache.ts), or summed over workers. */
export interface StaticCacheStats {
  entries: number;
  bytes: number;
  hits: number;
  misses: number;
}

/** Terminated WebSockets of one worker, or summed over workers. */
export interface TerminatedCounters {
  open: number;
  total: number;
  /** Messages and payload bytes client -> backend (in) and backend -> client (out). */
  messagesIn: number;
  messagesOut: number;
  bytesIn: number;
  bytesOut: number;
  pingsMissed: number;
  /** Messages dropped (uWS backpressure limit, message rate). */
  drops: number;
  /** Closes by the client-side close code: a bounded set (RFC 6455 codes, then "3xxx" / "4xxx"). */
  closeCodes: Record<string, number>;
}

/** The label of a close code: codes 1000-1015 as they are, application ranges folded (bounded label set). */
export function closeCodeLabel(code: number): string {
  if (code >= 1000 && code <= 1015) return String(code);
  if (code >= 3000 && code <= 3999) return '3xxx';
  if (code >= 4000 && code <= 4999) return '4xxx';
  return 'other';
}

function emptyTerminated(): TerminatedCounters {
  return { open: 0, total: 0, messagesIn: 0, messagesOut: 0, bytesIn: 0, bytesOut: 0, pingsMissed: 0, drops: 0, closeCodes: {} };
}

function sumTerminated(a: TerminatedCounters | undefined, b: TerminatedCounters | undefined): TerminatedCounters {
  const x = a ?? emptyTerminated();
  const y = b ?? emptyTerminated();
  const closeCodes = { ...x.closeCodes };
  for (const [k, n] of Object.entries(y.closeCodes)) closeCodes[k] = (closeCodes[k] ?? 0) + n;
  return {
    open: x.open + y.open,
    total: x.total + y.total,
    messagesIn: x.messagesIn + y.messagesIn,
    messagesOut: x.messagesOut + y.messagesOut,
    bytesIn: x.bytesIn + y.bytesIn,
    bytesOut: x.bytesOut + y.bytesOut,
    pingsMissed: x.pingsMissed + y.pingsMissed,
    drops: x.drops + y.drops,
    closeCodes,
  };
}

/** The splice relay's pipe pool of one worker, or summed over workers. */
export interface PipeGauges {
  /** Pipes that exist (free in the pool or holding a tunnel's bytes). */
  open: number;
  inUse: number;
  /** limits.max_pipes, per worker (summed over workers in a total). */
  cap: number;
  /** Reads that went through the user-space copy because no pipe could be had (cap, pipe2 failure). */
  copies: number;
}

export class Metrics {
  #connections = 0;
  #requests = [0, 0, 0, 0, 0];
  #tunnelsOpen = 0;
  #tunnelsTotal = 0;
  #bytesIn = 0;
  #bytesOut = 0;
  #upstreamErrors = new Map<ErrorCode, number>();
  #tlsHandshakeErrors = 0;
  #nativeTlsHandshakes = 0;
  #refused = new Map<RefusedReason, number>();
  #rateLimited = new Map<string, number>();
  #terminated: TerminatedCounters | undefined;

  /** A terminated WebSocket opened (its 101 went to the client). */
  terminatedOpened(): void {
    const t = (this.#terminated ??= emptyTerminated());
    t.open++;
    t.total++;
  }

  /** A terminated WebSocket ended: its counts and the close code the client side ended with. */
  terminatedClosed(end: { code: number; messagesIn: number; messagesOut: number; bytesIn: number; bytesOut: number; pingsMissed: number; drops: number }): void {
    const t = (this.#terminated ??= emptyTerminated());
    if (t.open > 0) t.open--;
    t.messagesIn += end.messagesIn;
    t.messagesOut += end.messagesOut;
    t.bytesIn += end.bytesIn;
    t.bytesOut += end.bytesOut;
    t.pingsMissed += end.pingsMissed;
    t.drops += end.drops;
    const label = closeCodeLabel(end.code);
    t.closeCodes[label] = (t.closeCodes[label] ?? 0) + 1;
  }
  readonly #histograms: Record<HistogramName, Histogram> = {
    request: new Histogram(BUCKETS.request, ['route', 'class']),
    connect: new Histogram(BUCKETS.connect, ['upstream', 'target']),
    firstByte: new Histogram(BUCKETS.firstByte, ['upstream', 'target']),
    tls: new Histogram(BUCKETS.tls, []),
    tunnel: new Histogram(BUCKETS.tunnel, ['kind', 'upstream']),
  };
  readonly #targetResponses = new Map<string, Map<string, Float64Array>>();
  #targetSeries = 0;

  connectionAccepted(): void {
    this.#connections++;
  }

  /**
   * One request finished: its status (499 when the client left first) and the bytes read from / written to
   * the client for it.
   */
  request(status: number, bytesIn: number, bytesOut: number): void {
    const cls = (status / 100) | 0;
    if (cls >= 1 && cls <= 5) this.#requests[cls - 1]++;
    this.#bytesIn += bytesIn;
    this.#bytesOut += bytesOut;
  }

  /**
   * A forwarded request ended (after request()): its duration by route and status class; its upstream target's
   * responses by class; the connect time of a new connection (`connectMs` -1: none, or a kept-alive one) and the
   * time to the first response byte (-1: none). Times in ms.
   */
  exchange(route: string, upstream: string, target: string | undefined, status: number, durationMs: number, connectMs: number, reused: boolean, firstByteMs: number): void {
    const cls = (status / 100) | 0;
    if (cls < 1 || cls > 5) return;
    this.#histograms.request.observe(route, STATUS_CLASSES[cls - 1], durationMs / 1000);
    if (target === undefined) return;
    if (connectMs >= 0 && !reused) this.#histograms.connect.observe(upstream, target, connectMs / 1000);
    if (firstByteMs >= 0) this.#histograms.firstByte.observe(upstream, target, firstByteMs / 1000);
    let byTarget = this.#targetResponses.get(upstream);
    let counts = byTarget?.get(target);
    if (counts === undefined) {
      if (this.#targetSeries >= MAX_SERIES) return; // bounded: past it only the histograms (folded) count
      counts = new Float64Array(5);
      if (byTarget === undefined) this.#targetResponses.set(upstream, (byTarget = new Map()));
      byTarget.set(target, counts);
      this.#targetSeries++;
    }
    counts[cls - 1]++;
  }

  /** A client TLS handshake finished after `ms`. */
  tlsHandshake(ms: number): void {
    this.#histograms.tls.observe('', '', ms / 1000);
  }

  /** A tunnel ended after `ms`: `kind` websocket (or another upgrade) or l4. */
  tunnelLifetime(kind: 'websocket' | 'l4', upstream: string, ms: number): void {
    this.#histograms.tunnel.observe(kind, upstream, ms / 1000);
  }

  tunnelOpened(): void {
    this.#tunnelsOpen++;
    this.#tunnelsTotal++;
  }

  /** A tunnel closed after relaying bytesUp (client -> upstream) and bytesDown (upstream -> client). */
  tunnelClosed(bytesUp: number, bytesDown: number): void {
    if (this.#tunnelsOpen > 0) this.#tunnelsOpen--;
    this.#bytesIn += bytesUp;
    this.#bytesOut += bytesDown;
  }

  /** Client bytes not covered by request() or tunnelClosed(). */
  bytes(bytesIn: number, bytesOut: number): void {
    this.#bytesIn += bytesIn;
    this.#bytesOut += bytesOut;
  }

  upstreamError(code: ErrorCode): void {
    this.#upstreamErrors.set(code, (this.#upstreamErrors.get(code) ?? 0) + 1);
  }

  tlsHandshakeError(): void {
    this.#tlsHandshakeErrors++;
  }

  nativeTlsHandshake(): void {
    this.#nativeTlsHandshakes++;
  }

  connectionRefused(reason: RefusedReason): void {
    this.#refused.set(reason, (this.#refused.get(reason) ?? 0) + 1);
  }

  /** A request refused by a rate limit; `id` is "KIND ROUTE" (policy/route-limits.ts Limit.metricId). */
  rateLimited(id: string): void {
    this.#rateLimited.set(id, (this.#rateLimited.get(id) ?? 0) + 1);
  }

  refusedCount(reason: RefusedReason): number {
    return this.#refused.get(reason) ?? 0;
  }

  snapshot(): MetricsSnapshot {
    const r = this.#requests;
    return {
      connections: this.#connections,
      requests: { '1xx': r[0], '2xx': r[1], '3xx': r[2], '4xx': r[3], '5xx': r[4] },
      tunnelsOpen: this.#tunnelsOpen,
      tunnelsTotal: this.#tunnelsTotal,
      bytesIn: this.#bytesIn,
      bytesOut: this.#bytesOut,
      upstreamErrors: Object.fromEntries(this.#upstreamErrors),
      tlsHandshakeErrors: this.#tlsHandshakeErrors,
      nativeTlsHandshakes: this.#nativeTlsHandshakes,
      refused: Object.fromEntries(this.#refused),
      rateLimited: Object.fromEntries(this.#rateLimited),
      ...(this.#terminated === undefined ? {} : { terminated: { ...this.#terminated, closeCodes: { ...this.#terminated.closeCodes } } }),
      histograms: {
        request: this.#histograms.request.snapshot(),
        connect: this.#histograms.connect.snapshot(),
        firstByte: this.#histograms.firstByte.snapshot(),
        tls: this.#histograms.tls.snapshot(),
        tunnel: this.#histograms.tunnel.snapshot(),
      },
      targetResponses: this.#targetResponsesSnapshot(),
    };
  }

  #targetResponsesSnapshot(): MetricsSnapshot['targetResponses'] {
    const out: MetricsSnapshot['targetResponses'] = {};
    for (const [upstream, byTarget] of this.#targetResponses) {
      for (const [target, counts] of byTarget) out[`${upstream}\u0000${target}`] = { upstream, target, classes: Array.from(counts) };
    }
    return out;
  }

  /** This worker's counters alone, as Prometheus text. */
  render(): string {
    return renderPrometheus(this.snapshot());
  }
}

export function emptySnapshot(): MetricsSnapshot {
  return new Metrics().snapshot();
}

/** a + b, field by field (a new object; neither input changes). */
export function sumSnapshots(a: MetricsSnapshot, b: MetricsSnapshot): MetricsSnapshot {
  const upstreamErrors: Partial<Record<ErrorCode, number>> = { ...a.upstreamErrors };
  for (const [code, n] of Object.entries(b.upstreamErrors) as [ErrorCode, number][]) upstreamErrors[code] = (upstreamErrors[code] ?? 0) + n;
  const refused: Partial<Record<RefusedReason, number>> = { ...a.refused };
  for (const [reason, n] of Object.entries(b.refused) as [RefusedReason, number][]) refused[reason] = (refused[reason] ?? 0) + n;
  const rateLimited: Record<string, number> = { ...a.rateLimited };
  for (const [id, n] of Object.entries(b.rateLimited)) rateLimited[id] = (rateLimited[id] ?? 0) + n;
  const requests = { ...a.requests };
  for (const cls of STATUS_CLASSES) requests[cls] += b.requests[cls];
  const histograms = { ...a.histograms };
  for (const name of Object.keys(BUCKETS) as HistogramName[]) histograms[name] = sumHistograms(a.histograms[name] ?? {}, b.histograms[name] ?? {});
  const targetResponses: MetricsSnapshot['targetResponses'] = {};
  for (const side of [a.targetResponses, b.targetResponses]) {
    for (const [k, v] of Object.entries(side)) {
      const t = targetResponses[k];
      if (t === undefined) targetResponses[k] = { upstream: v.upstream, target: v.target, classes: [...v.classes] };
      else v.classes.forEach((n, i) => (t.classes[i] = (t.classes[i] ?? 0) + n));
    }
  }
  return {
    connections: a.connections + b.connections,
    requests,
    tunnelsOpen: a.tunnelsOpen + b.tunnelsOpen,
    tunnelsTotal: a.tunnelsTotal + b.tunnelsTotal,
    bytesIn: a.bytesIn + b.bytesIn,
    bytesOut: a.bytesOut + b.bytesOut,
    upstreamErrors,
    tlsHandshakeErrors: a.tlsHandshakeErrors + b.tlsHandshakeErrors,
    nativeTlsHandshakes: (a.nativeTlsHandshakes ?? 0) + (b.nativeTlsHandshakes ?? 0),
    refused,
    rateLimited,
    histograms,
    targetResponses,
    ...(a.pipes === undefined && b.pipes === undefined ? {} : { pipes: sumPipes(a.pipes, b.pipes) }),
    ...(a.terminated === undefined && b.terminated === undefined ? {} : { terminated: sumTerminated(a.terminated, b.terminated) }),
    ...(a.logDropped === undefined && b.logDropped === undefined
      ? {}
      : { logDropped: { stdout: (a.logDropped?.stdout ?? 0) + (b.logDropped?.stdout ?? 0), file: (a.logDropped?.file ?? 0) + (b.logDropped?.file ?? 0) } }),
    ...(a.staticCache === undefined && b.staticCache === undefined ? {} : { staticCache: sumStaticCache(a.staticCache, b.staticCache) }),
    ...(a.bodyBuffer === undefined && b.bodyBuffer === undefined
      ? {}
      : { bodyBuffer: { memory: (a.bodyBuffer?.memory ?? 0) + (b.bodyBuffer?.memory ?? 0), file: (a.bodyBuffer?.file ?? 0) + (b.bodyBuffer?.file ?? 0), diskBytes: (a.bodyBuffer?.diskBytes ?? 0) + (b.bodyBuffer?.diskBytes ?? 0) } }),
  };
}


function sumStaticCache(a: StaticCacheStats | undefined, b: StaticCacheStats | undefined): StaticCacheStats {
  const z = { entries: 0, bytes: 0, hits: 0, misses: 0 };
  const x = a ?? z;
  const y = b ?? z;
  return { entries: x.entries + y.entries, bytes: x.bytes + y.bytes, hits: x.hits + y.hits, misses: x.misses + y.misses };
}
function sumPipes(a: PipeGauges | undefined, b: PipeGauges | undefined): PipeGauges {
  const z: PipeGauges = { open: 0, inUse: 0, cap: 0, copies: 0 };
  const x = a ?? z;
  const y = b ?? z;
  return { open: x.open + y.open, inUse: x.inUse + y.inUse, cap: x.cap + y.cap, copies: x.copies + y.copies };
}

/** One upstream's wait queue and retry counters, summed over workers. */
export interface UpstreamLimitTotals {
  upstream: string;
  /** Requests waiting for a socket now (a gauge). */
  queued: number;
  queueRejected: number;
  queueTimeouts: number;
  retriesTotal: number;
  retriesDenied: number;
}

/** Process-level values only the primary knows. */
export interface ProcessGauges {
  workers: number;
  workerRestarts: number;
  /** Open client connections, all workers. */
  connectionsOpen: number;
  upstreamTargets: ReadonlyArray<{ upstream: string; target: string; available: boolean; active: number }>;
  /** Absent: no per-upstream limit metrics (a caller that does not collect them). */
  upstreamLimits?: readonly UpstreamLimitTotals[];
  /** Per worker that answered: its event loop and memory (absent: not collected). */
  workerProcesses?: ReadonlyArray<{ worker: number } & ProcessHealth>;
}

/**
 * A process's event loop and memory: the loop's delay over the time since the last report (perf_hooks
 * monitorEventLoopDelay: how late timers ran, i.e. how long one turn blocked everything else), in seconds, and
 * the V8 heap and resident set in bytes.
 */
export interface ProcessHealth {
  loopDelayP50: number;
  loopDelayP99: number;
  loopDelayMax: number;
  heapUsed: number;
  heapTotal: number;
  rss: number;
}

/** Prometheus text exposition format 0.0.4. */
export function renderPrometheus(s: MetricsSnapshot, gauges?: ProcessGauges): string {
  const out: string[] = [];
  const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: ReadonlyArray<[labels: string, value: number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) out.push(`${name}${labels} ${value}`);
  };
  metric('portico_connections_total', 'counter', 'Client connections accepted.', [['', s.connections]]);
  metric('portico_requests_total', 'counter', 'Responses by status class.', STATUS_CLASSES.map((c) => [labels({ class: c }), s.requests[c]]));
  metric('portico_tunnels_open', 'gauge', 'Open tunnels (WebSocket and other upgrades).', [['', s.tunnelsOpen]]);
  metric('portico_tunnels_total', 'counter', 'Tunnels opened.', [['', s.tunnelsTotal]]);
  metric('portico_client_received_bytes_total', 'counter', 'Bytes read from clients.', [['', s.bytesIn]]);
  metric('portico_client_sent_bytes_total', 'counter', 'Bytes written to clients.', [['', s.bytesOut]]);
  const codes = Object.entries(s.upstreamErrors).sort(([a], [b]) => (a < b ? -1 : 1));
  metric('portico_upstream_errors_total', 'counter', 'Upstream failures by error code.', codes.map(([code, n]) => [labels({ code }), n ?? 0]));
  metric('portico_tls_handshake_errors_total', 'counter', 'TLS handshakes that failed or timed out.', [['', s.tlsHandshakeErrors]]);
  metric('portico_tls_native_handshakes_total', 'counter', 'TLS handshakes completed by the native addon (the others by Node).', [['', s.nativeTlsHandshakes ?? 0]]);
  if (s.staticCache !== undefined) {
    metric('portico_static_cache_entries', 'gauge', 'Lookups held by the static-file caches (static_cache.entries per worker), summed over workers.', [['', s.staticCache.entries]]);
    metric('portico_static_cache_bytes', 'gauge', 'File contents and compressed forms held by the static-file caches (static_cache.memory per worker).', [['', s.staticCache.bytes]]);
    metric('portico_static_cache_lookups_total', 'counter', 'Static-file lookups, by whether a valid cached entry answered them.', [
      [labels({ result: 'hit' }), s.staticCache.hits],
      [labels({ result: 'miss' }), s.staticCache.misses],
    ]);
  }
  if (s.bodyBuffer !== undefined) {
    metric('portico_body_buffered_total', 'counter', 'Chunked request bodies held whole for FastCGI routes (CONTENT_LENGTH first), by where: memory (up to body_buffer.memory) or an unnamed temp file.', [
      [labels({ to: 'memory' }), s.bodyBuffer.memory],
      [labels({ to: 'file' }), s.bodyBuffer.file],
    ]);
    metric('portico_body_buffer_disk_bytes', 'gauge', 'Bytes the temp files of held request bodies take now (bounded per worker by body_buffer.disk_max).', [['', s.bodyBuffer.diskBytes]]);
  }
  metric('portico_log_lines_dropped_total', 'counter', 'Log lines dropped because their buffer was full or a write failed (stdout\'s reader or the access-log disk too slow), by destination.', [
    [labels({ to: 'stdout' }), s.logDropped?.stdout ?? 0],
    [labels({ to: 'file' }), s.logDropped?.file ?? 0],
  ]);
  const refused = Object.entries(s.refused).sort(([a], [b]) => (a < b ? -1 : 1));
  metric('portico_connections_refused_total', 'counter', 'Connections closed before routing (untrusted PROXY sender, bad or missing preface, unknown passthrough name), or refused for lack of file descriptors (fd_limit: at accept, or when its upstream connect got EMFILE), by reason.', refused.map(([reason, n]) => [labels({ reason }), n ?? 0]));
  metric(
    'portico_proxy_protocol_refused_total',
    'counter',
    'Connections refused on listeners that expect a PROXY header: sender not trusted, header missing, invalid, or not complete in time.',
    PROXY_REFUSALS.map(([reason, label]) => [labels({ reason: label }), s.refused[reason] ?? 0]),
  );
  const limited = Object.entries(s.rateLimited).sort(([a], [b]) => (a < b ? -1 : 1));
  metric(
    'portico_rate_limited_total',
    'counter',
    'Requests answered 429 by a route rate limit, by route and limit (requests, handshakes).',
    limited.map(([id, n]) => {
      const space = id.indexOf(' ');
      return [labels({ route: id.slice(space + 1), limit: id.slice(0, space) }), n];
    }),
  );
  const h = s.histograms;
  const histogram = (name: string, help: string, which: HistogramName) => out.push(...renderHistogram(name, help, BUCKETS[which], h?.[which] ?? {}, labels));
  histogram('portico_request_duration_seconds', 'Forwarded and FastCGI requests from the request head to the end of the response (or the failure), by route and status class.', 'request');
  histogram('portico_upstream_connect_seconds', 'New connections to a target, from the request that asked for one to connected (kept-alive sockets are not counted).', 'connect');
  histogram('portico_upstream_first_byte_seconds', 'From the request head to the first byte of the target\'s response.', 'firstByte');
  histogram('portico_tls_handshake_seconds', 'Client TLS handshakes that completed, from the first byte read to finished.', 'tls');
  histogram('portico_tunnel_duration_seconds', 'Tunnels from open to close, by kind (websocket, l4) and upstream.', 'tunnel');
  const responses = Object.values(s.targetResponses ?? {}).sort((x, y) => (x.upstream + x.target < y.upstream + y.target ? -1 : 1));
  metric(
    'portico_upstream_responses_total',
    'counter',
    'Responses from each target (answered, or failed as 502/504 when it was tried), by status class.',
    responses.flatMap((r) => STATUS_CLASSES.map((c, i): [string, number] => [labels({ upstream: r.upstream, target: r.target, class: c }), r.classes[i] ?? 0])),
  );
  if (s.pipes !== undefined) {
    metric('portico_splice_pipes_open', 'gauge', 'Pipes of the splice relays\' pools (free or holding bytes in flight), all workers.', [['', s.pipes.open]]);
    metric('portico_splice_pipes_in_use', 'gauge', 'Pipes holding bytes of a tunnel now; an idle tunnel holds none.', [['', s.pipes.inUse]]);
    metric('portico_splice_pipes_cap', 'gauge', 'limits.max_pipes summed over workers.', [['', s.pipes.cap]]);
    metric('portico_splice_pipe_copies_total', 'counter', 'Tunnel reads copied through a small buffer because no pipe could be had (cap reached or pipe2 failed).', [['', s.pipes.copies]]);
  }
  if (s.terminated !== undefined) {
    const t = s.terminated;
    metric('portico_ws_terminated_open', 'gauge', 'Open terminated WebSockets (uWebSockets.js).', [['', t.open]]);
    metric('portico_ws_terminated_total', 'counter', 'Terminated WebSockets opened.', [['', t.total]]);
    metric('portico_ws_messages_total', 'counter', 'Messages relayed by terminated WebSockets, by direction (in: client to backend).', [[labels({ direction: 'in' }), t.messagesIn], [labels({ direction: 'out' }), t.messagesOut]]);
    metric('portico_ws_message_bytes_total', 'counter', 'Message payload bytes relayed by terminated WebSockets, by direction.', [[labels({ direction: 'in' }), t.bytesIn], [labels({ direction: 'out' }), t.bytesOut]]);
    metric('portico_ws_pings_missed_total', 'counter', 'Keepalive pings a client left unanswered.', [['', t.pingsMissed]]);
    metric('portico_ws_drops_total', 'counter', 'Messages dropped (backpressure limit, message rate).', [['', t.drops]]);
    const codes = Object.entries(t.closeCodes).sort(([a], [b]) => (a < b ? -1 : 1));
    metric('portico_ws_closes_total', 'counter', 'Terminated WebSockets closed, by the close code the client side ended with (1006: no Close frame).', codes.map(([code, n]) => [labels({ code }), n]));
  }
  if (gauges !== undefined) {
    metric('portico_workers', 'gauge', 'Worker processes running.', [['', gauges.workers]]);
    metric('portico_worker_restarts_total', 'counter', 'Workers restarted after an unexpected exit.', [['', gauges.workerRestarts]]);
    metric('portico_connections_open', 'gauge', 'Open client connections.', [['', gauges.connectionsOpen]]);
    const targets = gauges.upstreamTargets;
    metric('portico_upstream_target_available', 'gauge', 'Target available (1) or not (0) in every worker.', targets.map((t) => [labels({ upstream: t.upstream, target: t.target }), t.available ? 1 : 0]));
    metric('portico_upstream_target_active', 'gauge', 'Open requests and tunnels to a target.', targets.map((t) => [labels({ upstream: t.upstream, target: t.target }), t.active]));
    const limits = gauges.upstreamLimits ?? [];
    const per = (pick: (l: UpstreamLimitTotals) => number): Array<[string, number]> => limits.map((l) => [labels({ upstream: l.upstream }), pick(l)]);
    metric('portico_upstream_queued', 'gauge', 'Requests waiting for a connection to a target at max_connections.', per((l) => l.queued));
    metric('portico_upstream_queue_rejected_total', 'counter', 'Requests refused because the wait queue was full (or off).', per((l) => l.queueRejected));
    metric('portico_upstream_queue_timeouts_total', 'counter', 'Requests that waited queue.timeout without a connection.', per((l) => l.queueTimeouts));
    metric('portico_upstream_retries_total', 'counter', 'Retries to another target granted by the retry budget.', per((l) => l.retriesTotal));
    metric('portico_upstream_retries_denied_total', 'counter', 'Retries refused by the retry budget.', per((l) => l.retriesDenied));
    const procs = gauges.workerProcesses;
    if (procs !== undefined) {
      const each = (pick: (p: ProcessHealth) => number): Array<[string, number]> => procs.map((p) => [labels({ worker: String(p.worker) }), pick(p)]);
      metric('portico_worker_event_loop_delay_p50_seconds', 'gauge', 'Median event-loop delay of each worker since the previous scrape.', each((p) => p.loopDelayP50));
      metric('portico_worker_event_loop_delay_p99_seconds', 'gauge', '99th percentile event-loop delay of each worker since the previous scrape.', each((p) => p.loopDelayP99));
      metric('portico_worker_event_loop_delay_max_seconds', 'gauge', 'Longest event-loop delay of each worker since the previous scrape.', each((p) => p.loopDelayMax));
      metric('portico_worker_heap_used_bytes', 'gauge', 'V8 heap in use, per worker.', each((p) => p.heapUsed));
      metric('portico_worker_heap_total_bytes', 'gauge', 'V8 heap reserved, per worker.', each((p) => p.heapTotal));
      metric('portico_worker_resident_bytes', 'gauge', 'Resident set size, per worker.', each((p) => p.rss));
    }
  }
  return `${out.join('\n')}\n`;
}

/** A Prometheus label set, values escaped: `{a="x",b="y"}`. */
export function labels(pairs: Record<string, string>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return `{${parts.join(',')}}`;
}
