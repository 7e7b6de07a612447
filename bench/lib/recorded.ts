// What one `portico bench` run recorded, as written to report.json and read back by the report generator and the
// planner: the conditions, the targets and loads, every raw round, the idle-memory series. Types only, so that
// the generator (lib/summary.ts, lib/report-*.ts) stays pure over this data and tests can feed it fixtures.
import type { Run, Scenario } from './report.js';
import type { TargetId } from './shape.js';

export interface Conditions {
  /** ISO times the run started and ended. */
  date: string;
  finishedAt: string;
  command: string;
  cpus: number;
  cpuModel: string;
  kernel: string;
  node: string;
  memTotalKiB: number;
  versions: { portico: string; nginx?: string; haproxy?: string; wrk?: string; openssl: string };
  pinning: { enabled: boolean; reason: string; proxyCpu: string; clientCpu: string };
  /** /proc/loadavg's 1, 5 and 15 minute figures when the run started and when it ended. */
  loadAvgBefore: number[];
  loadAvgAfter: number[];
  backends: { http: string; ws: string };
  /** The native addon loaded in Portico (splice, native socket I/O), or why not. */
  addon: string;
  rounds: number;
  durationS: number;
  warmupS: number;
  quick: boolean;
  /** Facts a reader must know (a user's config rewritten onto synthetic backends, a feature not in this build). */
  notes: string[];
}

export interface RecordedTarget {
  id: TargetId;
  label: string;
  error?: string;
}

export interface RecordedLoad {
  id: Scenario;
  title: string;
  unit: string;
  tls: boolean;
  generator: string;
}

/** RSS and descriptors of a proxy's process tree with N idle WebSockets open through it. */
export interface IdleSeries {
  target: TargetId;
  label: string;
  tls: boolean;
  baseline: { rssKiB: number; fds: number };
  points: Array<{ connections: number; rssKiB: number; fds: number }>;
  error?: string;
}

export interface Recorded {
  version: 1;
  conditions: Conditions;
  targets: RecordedTarget[];
  loads: RecordedLoad[];
  /** Every timed round, failed ones included (warm-ups and checks are not recorded). */
  runs: Run[];
  idle: IdleSeries[];
}
