// Turns the runs of a benchmark into its summary (medians, spread, ratios, CPU per request/message) and prints
// the conditions block and the results tables. Pure over the data it is given: no processes, no files.
import type { TargetId } from './shape.js';
import { median } from './stats.js';

/**
 * http, ws: `npm run bench` (scenarios/http-ws.ts); tcp, tls: the L4 connection-rate benchmark (scenarios/connrate.ts);
 * newconn (a new TCP connection per request), wshs and wsshs (sequential WebSocket and WSS handshakes): `npm run bench` too;
 * http-tls-upstream (keep-alive HTTP to the proxy, HTTPS from it to the backend): `npm run bench:https-upstream`;
 * the rest: `portico bench` (scenarios/capacity.ts, its catalogue in lib/catalogue.ts).
 */
export type Scenario =
  | 'http' | 'ws' | 'newconn' | 'wshs' | 'wsshs' | 'tcp' | 'tls'
  | 'http-c16' | 'http-c256' | 'https' | 'http-new' | 'https-new'
  | 'ws-4k' | 'wss' | 'wss-4k' | 'ws-upgrade' | 'wss-upgrade' | 'tunnel' | 'tunnel-tls' | 'fanout' | 'http-tls-upstream';

/** What one counted unit of a scenario is: a request, an echoed message, a whole connection, a MiB each way. */
export const UNIT: Record<Scenario, string> = {
  http: 'req', ws: 'msg', newconn: 'req', wshs: 'hs', wsshs: 'hs', tcp: 'conn', tls: 'conn',
  'http-c16': 'req', 'http-c256': 'req', https: 'req', 'http-new': 'conn', 'https-new': 'conn',
  'ws-4k': 'msg', wss: 'msg', 'wss-4k': 'msg', 'ws-upgrade': 'upgrade', 'wss-upgrade': 'upgrade', tunnel: 'MiB', 'tunnel-tls': 'MiB',
  fanout: 'msg', 'http-tls-upstream': 'req',
};

/** Scenarios whose load generator reports per-unit latency (wrk and the connrate client). */
export const WITH_LATENCY: ReadonlySet<Scenario> = new Set<Scenario>(['http', 'newconn', 'wshs', 'wsshs', 'tcp', 'tls', 'http-c16', 'http-c256', 'https', 'http-new', 'https-new', 'http-tls-upstream']);

export interface Run {
  scenario: Scenario;
  target: TargetId;
  round: number;
  ok: boolean;
  error?: string;
  count: number;
  rate: number;
  wallMs: number;
  proxyCpuUs: number;
  /** The kernel part of proxyCpuUs. */
  proxySysUs: number;
  clientCpuUs: number;
  backendCpuUs: number;
  /** Machine CPU in the window not spent by proxy, client or backends: other work on the box, the harness, kernel threads. */
  otherCpuUs: number;
  stealUs: number;
  /** Times this run was repeated because other processes disturbed it. */
  retries?: number;
  processes: { role: 'proxy' | 'client' | 'backend'; pid: number; label: string; cpuUs: number; sysUs: number }[];
  latencyUs?: { p50: number; p90: number; p99: number; max: number; mean: number };
  notes: string[];
  info: string[];
}

export interface Summary {
  scenario: Scenario;
  target: TargetId;
  label: string;
  roundsOk: number;
  rounds: number;
  /** Why the row has no figures, or why some rounds failed (the first reason). */
  error?: string;
  rate?: number;
  rateMin?: number;
  rateMax?: number;
  vsNginx?: number;
  vsDirect?: number;
  /**
   * nginx's CPU-µs per unit over this target's: 1.00x = same CPU per request as nginx, 0.80x = 25% more.
   * The fair comparison when the shared client core, not the proxy, caps the rate.
   */
  cpuVsNginx?: number;
  /** Median proxy CPU time per unit (request, echoed message, connection), µs. */
  proxyCpuUsPerUnit?: number;
  /** Its user-space and kernel parts (medians of each, so they need not add up exactly). */
  proxyUserUsPerUnit?: number;
  proxySysUsPerUnit?: number;
  /** Median share of one core, in percent, over the run's window. */
  proxyCpuPct?: number;
  clientCpuPct?: number;
  backendCpuPct?: number;
  otherCpuPct?: number;
  stealPct?: number;
  latencyP50Us?: number;
  latencyP99Us?: number;
  /** Per-process CPU of the run whose rate is the median. */
  medianRunProcesses?: Run['processes'];
  medianRunWallMs?: number;
}

/** CPU time over a wall-clock window, as a percentage of one core. */
export const pct = (cpuUs: number, wallMs: number): number => (wallMs > 0 ? (cpuUs / (wallMs * 1000)) * 100 : 0);

export function summarize(scenario: Scenario, targets: { id: TargetId; label: string; error?: string }[], runs: Run[], rounds: number): Summary[] {
  const rows: Summary[] = targets.map((t) => {
    const mine = runs.filter((r) => r.scenario === scenario && r.target === t.id);
    const ok = mine.filter((r) => r.ok);
    const firstError = t.error ?? mine.find((r) => !r.ok)?.error;
    const row: Summary = { scenario, target: t.id, label: t.label, roundsOk: ok.length, rounds, error: firstError };
    if (ok.length === 0) return row;
    const rates = ok.map((r) => r.rate);
    row.rate = median(rates);
    row.rateMin = Math.min(...rates);
    row.rateMax = Math.max(...rates);
    if (t.id !== 'direct') {
      row.proxyCpuUsPerUnit = median(ok.map((r) => r.proxyCpuUs / r.count));
      row.proxyUserUsPerUnit = median(ok.map((r) => (r.proxyCpuUs - r.proxySysUs) / r.count));
      row.proxySysUsPerUnit = median(ok.map((r) => r.proxySysUs / r.count));
    }
    if (t.id !== 'direct') row.proxyCpuPct = median(ok.map((r) => pct(r.proxyCpuUs, r.wallMs)));
    row.clientCpuPct = median(ok.map((r) => pct(r.clientCpuUs, r.wallMs)));
    row.backendCpuPct = median(ok.map((r) => pct(r.backendCpuUs, r.wallMs)));
    row.otherCpuPct = median(ok.map((r) => pct(r.otherCpuUs, r.wallMs)));
    row.stealPct = median(ok.map((r) => pct(r.stealUs, r.wallMs)));
    const lat = ok.filter((r) => r.latencyUs !== undefined);
    if (lat.length > 0) {
      row.latencyP50Us = median(lat.map((r) => r.latencyUs?.p50 ?? 0));
      row.latencyP99Us = median(lat.map((r) => r.latencyUs?.p99 ?? 0));
    }
    // The run closest to the median rate stands for the row in the per-process breakdown.
    const rep = ok.reduce((best, r) => (Math.abs(r.rate - (row.rate ?? 0)) < Math.abs(best.rate - (row.rate ?? 0)) ? r : best));
    row.medianRunProcesses = rep.processes;
    row.medianRunWallMs = rep.wallMs;
    return row;
  });
  const nginxRow = rows.find((r) => r.target === 'nginx');
  const direct = rows.find((r) => r.target === 'direct')?.rate;
  for (const r of rows) {
    if (r.rate === undefined) continue;
    if (nginxRow?.rate !== undefined) r.vsNginx = r.rate / nginxRow.rate;
    if (direct !== undefined) r.vsDirect = r.rate / direct;
    if (nginxRow?.proxyCpuUsPerUnit !== undefined && r.proxyCpuUsPerUnit !== undefined && r.proxyCpuUsPerUnit > 0) {
      r.cpuVsNginx = nginxRow.proxyCpuUsPerUnit / r.proxyCpuUsPerUnit;
    }
  }
  return rows;
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const fixed = (n: number | undefined, digits: number, suffix = ''): string => (n === undefined ? '—' : `${n.toFixed(digits)}${suffix}`);

function table(header: string[], rows: string[][], rightAligned: Set<number>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function formatTable(scenario: Scenario, rows: Summary[]): string {
  const unit = UNIT[scenario];
  const latency = WITH_LATENCY.has(scenario);
  const header = [
    'target', `${unit}/s (median)`, 'min..max', 'vs nginx', 'vs direct', `proxy CPU-µs/${unit}`, 'user + sys', 'CPU eff. vs nginx', 'proxy CPU', 'client CPU', 'backend CPU', 'other CPU',
    ...(latency ? ['p50 / p99 latency'] : []), 'rounds',
  ];
  const body: string[][] = [];
  const failures: string[] = [];
  for (const r of rows) {
    if (r.rate === undefined) {
      body.push([r.label, `failed: ${shorten(r.error ?? 'no successful round', 120)}`]);
      continue;
    }
    if (r.error !== undefined) failures.push(`${r.label}: ${r.rounds - r.roundsOk} of ${r.rounds} rounds failed: ${shorten(r.error, 200)}`);
    body.push([
      r.label,
      int(r.rate),
      `${int(r.rateMin ?? 0)}..${int(r.rateMax ?? 0)}`,
      fixed(r.vsNginx, 2, 'x'),
      fixed(r.vsDirect, 2, 'x'),
      fixed(r.proxyCpuUsPerUnit, 1),
      r.proxyUserUsPerUnit === undefined ? '—' : `${r.proxyUserUsPerUnit.toFixed(1)} + ${(r.proxySysUsPerUnit ?? 0).toFixed(1)}`,
      fixed(r.cpuVsNginx, 2, 'x'),
      fixed(r.proxyCpuPct, 0, '%'),
      fixed(r.clientCpuPct, 0, '%'),
      fixed(r.backendCpuPct, 0, '%'),
      fixed(r.otherCpuPct, 0, '%'),
      ...(latency ? [r.latencyP50Us === undefined ? '—' : `${(r.latencyP50Us / 1000).toFixed(2)} / ${((r.latencyP99Us ?? 0) / 1000).toFixed(2)} ms`] : []),
      `${r.roundsOk}/${r.rounds}`,
    ]);
  }
  const right = new Set(header.map((_, i) => i).filter((i) => i > 0));
  return [table(header, body, right), ...failures.map((f) => `  note: ${f}`)].join('\n');
}

/**
 * Per-process CPU of each row's median run: shows where a proxy's CPU went (primary vs worker, master vs
 * worker). Processes under 0.1% (the idle backend of the other load, nginx masters) are left out.
 */
export function formatProcesses(rows: Summary[]): string {
  const out: string[] = [];
  for (const r of rows) {
    if (r.medianRunProcesses === undefined || r.medianRunWallMs === undefined) continue;
    const wall = r.medianRunWallMs;
    const parts = (role: string): string =>
      (r.medianRunProcesses ?? [])
        .filter((p) => p.role === role && pct(p.cpuUs, wall) >= 0.1)
        .map((p) => `${p.label} [${p.pid}] ${pct(p.cpuUs, wall).toFixed(1)}%`)
        .join(', ') || '—';
    out.push(`  ${r.label}\n      proxy: ${parts('proxy')}\n      client: ${parts('client')}\n      backend: ${parts('backend')}`);
  }
  return out.join('\n');
}

function shorten(s: string, max: number): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max - 3)}...` : one;
}
