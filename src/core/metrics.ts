// Per-worker counters of the data path, a plain snapshot the primary sums over workers, and the Prometheus text
// format. Counting allocates nothing (the data path calls it per request and per tunnel); text is built only
// on a scrape. No I/O here: primary/report.ts collects snapshots over IPC and admin/server.ts serves the text.
import type { ErrorCode } from './errors.js';

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
    };
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
    ...(a.pipes === undefined && b.pipes === undefined ? {} : { pipes: sumPipes(a.pipes, b.pipes) }),
  };
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
  if (s.pipes !== undefined) {
    metric('portico_splice_pipes_open', 'gauge', 'Pipes of the splice relays\' pools (free or holding bytes in flight), all workers.', [['', s.pipes.open]]);
    metric('portico_splice_pipes_in_use', 'gauge', 'Pipes holding bytes of a tunnel now; an idle tunnel holds none.', [['', s.pipes.inUse]]);
    metric('portico_splice_pipes_cap', 'gauge', 'limits.max_pipes summed over workers.', [['', s.pipes.cap]]);
    metric('portico_splice_pipe_copies_total', 'counter', 'Tunnel reads copied through a small buffer because no pipe could be had (cap reached or pipe2 failed).', [['', s.pipes.copies]]);
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
  }
  return `${out.join('\n')}\n`;
}

/** A Prometheus label set, values escaped: `{a="x",b="y"}`. */
export function labels(pairs: Record<string, string>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return `{${parts.join(',')}}`;
}
