// The admin listener as tests reach it: its port and URL (from the "listening" line startPortico waited for),
// GET /status as the real StatusReport type (src/admin/server.ts), and a bounded poll of /status until a
// condition holds. Asserts only that the admin listener exists and answers 200; what a test expects is its own.
import assert from 'node:assert/strict';
import type { StatusReport } from '../../src/admin/server.js';
import { request } from './clients.js';
import type { Portico } from './portico.js';
import { until } from './until.js';

export type { StatusReport };

/** Port of the admin listener, from the "listening" log line (the config must have `admin`). */
export function adminPort(portico: Portico): number {
  const line = portico.logs.find((l) => l.msg === 'listening');
  const port = (line?.admin as { port?: number } | null | undefined)?.port;
  assert.ok(port !== undefined, 'the test config has an admin listener');
  return port;
}

/** http://ADDRESS:PORT of the admin listener: its own address, or 127.0.0.1 when it listens on every address. */
export function adminUrl(portico: Portico): string {
  const line = portico.logs.find((l) => l.msg === 'listening');
  const address = (line?.admin as { address?: string } | null | undefined)?.address;
  const host = address === undefined || address === '0.0.0.0' || address === '::' ? '127.0.0.1' : address.includes(':') ? `[${address}]` : address;
  return `http://${host}:${adminPort(portico)}`;
}

/** GET /status, answered 200. */
export async function adminStatus(portico: Portico): Promise<StatusReport> {
  const res = await request(`${adminUrl(portico)}/status`);
  assert.equal(res.status, 200);
  return JSON.parse(res.body.toString()) as StatusReport;
}

/** A sample without labels from /metrics (`name value`); fails when /metrics has no such line. */
export async function adminMetric(portico: Portico, name: string): Promise<number> {
  const res = await request(`${adminUrl(portico)}/metrics`);
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(res.body.toString());
  assert.ok(m !== null, `${name} is in /metrics`);
  return Number(m[1]);
}

/** FastCGI exchanges the addon started (PORTICO_NATIVE_EXCHANGE=1), summed over the workers' /status. */
export async function nativeExchanges(portico: Portico): Promise<number> {
  return (await adminStatus(portico)).workers.reduce((n, w) => n + (w.nativeExchanges ?? 0), 0);
}

/** Polls /status until `done` holds and returns that status; fails with the last one after `withinMs`. */
export function statusUntil(portico: Portico, what: string, done: (s: StatusReport) => boolean, withinMs = 10_000, pollMs = 50): Promise<StatusReport> {
  return until(what, () => adminStatus(portico), done, withinMs, pollMs);
}
