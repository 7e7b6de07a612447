// The capacity planner of `portico bench --plan`: a traffic mix (WebSocket clients and their message rate, new
// connections, HTTP requests, bulk bytes) and the per-unit figures one bench run measured -> the cores, memory and
// file descriptors Portico needs, with the headroom assumed and every figure used named. Pure arithmetic: the
// figures come in as data (figuresFrom() reads them from a run's summary), nothing here measures or reads files.
import type { IdleSeries } from './recorded.js';
import { idleCost, type LoadSummary, type Row } from './summary.js';
import type { Scenario } from './report.js';

/** The traffic a deployment expects at peak (lib/plan-file.ts reads it from PLAN.yaml). */
export interface PlanInput {
  /** Share of every core and of memory kept free, 0 <= headroom < 1 (0.3 = plan for 70% use). */
  headroom: number;
  /** Clients reach Portico over TLS (HTTPS, WSS): the TLS figures are used. */
  tls: boolean;
  websockets?: { clients: number; messageEveryMs: number; messageBytes: number };
  newConnectionsPerSecond?: number;
  httpRequestsPerSecond?: number;
  /** Keep-alive HTTP connections open at once (each holds descriptors and memory like an idle WebSocket). */
  httpConnections?: number;
  bulkMiBPerSecond?: number;
}

/** One measured figure: its value and where it came from (load, target, rounds), and any mark it carries. */
export interface Figure {
  value: number;
  unit: string;
  from: string;
  marks?: string[];
}

/** The per-unit costs the planner multiplies by. CPU figures are the proxy's CPU-µs per unit, all its processes. */
export interface Figures {
  /** CPU-µs per WebSocket message of 32 bytes and of 4 KiB (one echo: a frame each way). */
  messageSmallUs?: Figure;
  message4kUs?: Figure;
  requestUs?: Figure;
  /** CPU-µs per new connection carrying one request (the TLS handshake included when tls). */
  newConnectionUs?: Figure;
  bulkUsPerMiB?: Figure;
  /** RSS and descriptors per idle connection (WebSocket held open, one worker). */
  idleKiB?: Figure;
  idleFds?: Figure;
  /** RSS and descriptors of Portico (primary + 1 worker) with nothing open: counted once per worker. */
  baseKiB?: Figure;
  baseFds?: Figure;
}

export interface PlanLine {
  what: string;
  /** Units per second (messages, requests, connections, MiB). */
  rate: number;
  unit: string;
  figure: Figure;
  /** Cores this line alone keeps busy, before headroom. */
  cores: number;
}

export interface PlanResult {
  input: PlanInput;
  lines: PlanLine[];
  /** Busy cores before headroom, and whole cores (= workers) with headroom. */
  busyCores: number;
  cores: number;
  memoryMiB: number;
  memoryMiBWithHeadroom: number;
  fds: number;
  fdsWithHeadroom: number;
  /** Every connection the mix holds open at once. */
  openConnections: number;
  figures: Figures;
  assumptions: string[];
}

export class PlanError extends Error {
  readonly code = 'PLAN_FIGURE_MISSING';
}

const SMALL = 32;
const LARGE = 4096;

/**
 * CPU-µs of one message of `bytes`, linear through the 32 B and 4 KiB figures (extended past them, never below
 * the small figure): the per-byte part of the cost is what grows with size.
 */
export function messageCostUs(bytes: number, small: number, large: number): number {
  const perByte = Math.max(0, (large - small) / (LARGE - SMALL));
  return small + perByte * Math.max(0, bytes - SMALL);
}

function need(f: Figure | undefined, name: string): Figure {
  if (f === undefined) throw new PlanError(`the plan needs the ${name} figure, which this bench run did not measure (run it without --only, or with the load that gives it)`);
  return f;
}

export function plan(input: PlanInput, figures: Figures): PlanResult {
  if (!(input.headroom >= 0 && input.headroom < 1)) throw new RangeError(`headroom must be in [0, 1), got ${input.headroom}`);
  const lines: PlanLine[] = [];
  const assumptions: string[] = [
    `headroom ${(input.headroom * 100).toFixed(0)}%: cores and memory are sized so that the load uses ${((1 - input.headroom) * 100).toFixed(0)}% of them`,
    'CPU figures are per core of one Portico worker (workers: 1 in the run); workers scale by cores, one per core',
    `client legs ${input.tls ? 'over TLS (HTTPS, WSS figures)' : 'in plain text (HTTP, WS figures)'}; backends plain, on other machines (their CPU is not counted)`,
  ];
  const ws = input.websockets;
  if (ws !== undefined && ws.clients > 0) {
    const small = need(figures.messageSmallUs, `${input.tls ? 'WSS' : 'WebSocket'} 32 B echo`);
    const large = need(figures.message4kUs, `${input.tls ? 'WSS' : 'WebSocket'} 4 KiB echo`);
    const rate = ws.clients / (ws.messageEveryMs / 1000);
    const cost = messageCostUs(ws.messageBytes, small.value, large.value);
    lines.push({
      what: `${ws.clients.toLocaleString('en-US')} WebSocket clients, one ${ws.messageBytes}-byte message every ${ws.messageEveryMs / 1000} s each`,
      rate, unit: 'msg', cores: (rate * cost) / 1e6,
      figure: { value: cost, unit: 'CPU-µs/msg', from: `${small.from}; ${large.from}; linear in message size`, marks: [...(small.marks ?? []), ...(large.marks ?? [])] },
    });
    assumptions.push('a message costs what one echo did in the run (a frame to the backend and one back): conservative when the backend does not answer each message');
  }
  if ((input.httpRequestsPerSecond ?? 0) > 0) {
    const f = need(figures.requestUs, `${input.tls ? 'HTTPS' : 'HTTP'} keep-alive request`);
    const rate = input.httpRequestsPerSecond ?? 0;
    lines.push({ what: `${rate.toLocaleString('en-US')} ${input.tls ? 'HTTPS' : 'HTTP'} requests/s on keep-alive connections`, rate, unit: 'req', figure: f, cores: (rate * f.value) / 1e6 });
  }
  if ((input.newConnectionsPerSecond ?? 0) > 0) {
    const f = need(figures.newConnectionUs, `new ${input.tls ? 'TLS' : 'TCP'} connection`);
    const rate = input.newConnectionsPerSecond ?? 0;
    lines.push({ what: `${rate.toLocaleString('en-US')} new ${input.tls ? 'TLS' : 'TCP'} connections/s (peak)`, rate, unit: 'conn', figure: f, cores: (rate * f.value) / 1e6 });
    assumptions.push(`a new connection costs what one did in the run: ${input.tls ? 'a full TLS handshake (no session resumption) and ' : ''}one request, then close`);
  }
  if ((input.bulkMiBPerSecond ?? 0) > 0) {
    const f = need(figures.bulkUsPerMiB, `bulk tunnel${input.tls ? ' over TLS' : ''}`);
    const rate = input.bulkMiBPerSecond ?? 0;
    lines.push({ what: `${rate.toLocaleString('en-US')} MiB/s through tunnels, each way`, rate, unit: 'MiB', figure: f, cores: (rate * f.value) / 1e6 });
  }
  const busyCores = lines.reduce((n, l) => n + l.cores, 0);
  const cores = Math.max(1, Math.ceil(busyCores / (1 - input.headroom) - 1e-9));
  const openConnections = (ws?.clients ?? 0) + (input.httpConnections ?? 0);
  const idleKiB = openConnections > 0 ? need(figures.idleKiB, 'idle connection memory') : figures.idleKiB;
  const idleFds = openConnections > 0 ? need(figures.idleFds, 'idle connection descriptors') : figures.idleFds;
  const baseKiB = need(figures.baseKiB, 'Portico memory at rest');
  const baseFds = need(figures.baseFds, 'Portico descriptors at rest');
  const memoryKiB = cores * baseKiB.value + openConnections * (idleKiB?.value ?? 0);
  const memoryMiB = memoryKiB / 1024;
  const fds = Math.ceil(cores * baseFds.value + openConnections * (idleFds?.value ?? 0));
  if (openConnections > 0) {
    assumptions.push(`every open connection (${openConnections.toLocaleString('en-US')}) costs the memory and descriptors of an idle ${input.tls ? 'WSS' : 'WebSocket'} connection in the run, backend leg included`);
  }
  assumptions.push('memory: one Portico at rest (primary + 1 worker) per worker, conservative; descriptors: add them to each worker\'s limit in proportion (LimitNOFILE)');
  return {
    input, lines, busyCores, cores, memoryMiB, memoryMiBWithHeadroom: memoryMiB / (1 - input.headroom),
    fds, fdsWithHeadroom: Math.ceil(fds / (1 - input.headroom)), openConnections, figures, assumptions,
  };
}

function fromRow(row: Row | undefined, value: (r: Row) => number | undefined, unit: string): Figure | undefined {
  if (row === undefined) return undefined;
  const v = value(row);
  if (v === undefined || !Number.isFinite(v)) return undefined;
  return { value: v, unit, from: `${row.load}, ${row.label}, median of ${row.used} round(s)`, ...(row.marks.length > 0 ? { marks: [...row.marks] } : {}) };
}

/**
 * The planner's figures from a run's summary: Portico on the user's config when the run had one, else the
 * standard Portico row; TLS or plain loads as `tls` says. A load the run did not measure leaves its figure out.
 */
export function figuresFrom(loads: readonly LoadSummary[], idle: readonly IdleSeries[], tls: boolean): Figures {
  const target = loads.some((l) => l.rows.some((r) => r.target === 'portico-user')) ? 'portico-user' : 'portico';
  const row = (id: Scenario): Row | undefined => loads.find((l) => l.load.id === id)?.rows.find((r) => r.target === target && r.proxyCpuUsPerUnit !== undefined);
  const cpu = (id: Scenario, unit: string): Figure | undefined => fromRow(row(id), (r) => r.proxyCpuUsPerUnit, unit);
  const series = idle.find((s) => s.target === target && s.tls === tls && s.error === undefined && s.points.length > 0)
    ?? idle.find((s) => s.target === 'portico' && s.tls === tls && s.error === undefined && s.points.length > 0);
  const cost = series === undefined ? undefined : idleCost(series);
  const where = series === undefined ? '' : `idle ${tls ? 'WSS' : 'WebSocket'} connections, ${series.label}, slope from 0 to ${cost?.connections ?? 0}`;
  return {
    messageSmallUs: cpu(tls ? 'wss' : 'ws', 'CPU-µs/msg'),
    message4kUs: cpu(tls ? 'wss-4k' : 'ws-4k', 'CPU-µs/msg'),
    requestUs: cpu(tls ? 'https' : 'http', 'CPU-µs/req'),
    newConnectionUs: cpu(tls ? 'https-new' : 'http-new', 'CPU-µs/conn'),
    bulkUsPerMiB: cpu(tls ? 'tunnel-tls' : 'tunnel', 'CPU-µs/MiB'),
    ...(cost === undefined || series === undefined
      ? {}
      : {
        idleKiB: { value: Math.max(0, cost.kibPerConn), unit: 'KiB/conn', from: where },
        idleFds: { value: Math.max(0, cost.fdsPerConn), unit: 'fds/conn', from: where },
        baseKiB: { value: series.baseline.rssKiB, unit: 'KiB', from: `${series.label} at rest (RSS of its processes)` },
        baseFds: { value: series.baseline.fds, unit: 'fds', from: `${series.label} at rest (open descriptors of its processes)` },
      }),
  };
}
