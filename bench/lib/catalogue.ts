// The standard loads of `portico bench` (scenarios/capacity.ts): what each sends, through which listener, with
// which load generator, and what one counted unit is. Data only: the scenario runs them, the report reads their
// titles, the planner (lib/plan.ts) names the loads whose figures it uses. No I/O.
import type { Scenario } from './report.js';

export interface LoadSpec {
  readonly id: Scenario;
  readonly title: string;
  /** Through the proxies' TLS listener (the proxy terminates TLS; backends stay plain). */
  readonly tls: boolean;
  readonly generator: 'wrk' | 'ws-load';
  /** Connections the generator keeps open (for `upgrade` loads: handshakes in flight). */
  readonly connections: number;
  /** WebSocket message bytes (ws-load). */
  readonly size?: number;
  /** wrk: `Connection: close`, one new connection per request. */
  readonly close?: boolean;
  readonly mode?: 'echo' | 'upgrade' | 'recv';
  /** Part of the full run only (the connection sweep of the throughput-vs-connections chart). */
  readonly fullOnly?: boolean;
  /** Goes through /ws: the WebSocket loads, which a terminating Portico (portico-terminate) takes too. */
  readonly websocket: boolean;
  /** Bulk loads count MiB each way instead of messages. */
  readonly bulk?: boolean;
  /**
   * Fan-out: `connections` WebSockets on FANOUT_PATH receive what is published to their topic; the unit is one
   * delivered message. Terminating Portico publishes through its admin API (edge fan-out); every other target
   * tunnels the WebSockets to the backend, which publishes to them itself (uWS topic).
   */
  readonly fanout?: boolean;
}

/** Publishes the fan-out load keeps undelivered at most (closed loop: the rate is what gets delivered). */
export const FANOUT_INFLIGHT = 16;

/** Message size of the bulk tunnel loads: big frames through the tunnel, one in flight per connection. */
export const BULK_MESSAGE = 60 * 1024;

export const LOADS: readonly LoadSpec[] = [
  { id: 'http-c16', title: 'HTTP keep-alive GET, 16 connections', tls: false, generator: 'wrk', connections: 16, fullOnly: true, websocket: false },
  { id: 'http', title: 'HTTP keep-alive GET, 64 connections', tls: false, generator: 'wrk', connections: 64, websocket: false },
  { id: 'http-c256', title: 'HTTP keep-alive GET, 256 connections', tls: false, generator: 'wrk', connections: 256, fullOnly: true, websocket: false },
  { id: 'https', title: 'HTTPS keep-alive GET, 64 connections', tls: true, generator: 'wrk', connections: 64, websocket: false },
  { id: 'http-new', title: 'New TCP connection per GET (Connection: close), 32 in flight', tls: false, generator: 'wrk', connections: 32, close: true, websocket: false },
  { id: 'https-new', title: 'New TLS connection per GET (TLS 1.3, resumed by the last ticket as wrk does, Connection: close), 32 in flight', tls: true, generator: 'wrk', connections: 32, close: true, websocket: false },
  { id: 'ws', title: 'WebSocket echo, 32 B messages, 100 connections', tls: false, generator: 'ws-load', connections: 100, size: 32, mode: 'echo', websocket: true },
  { id: 'ws-4k', title: 'WebSocket echo, 4 KiB messages, 100 connections', tls: false, generator: 'ws-load', connections: 100, size: 4096, mode: 'echo', websocket: true },
  { id: 'wss', title: 'WSS echo, 32 B messages, 100 connections', tls: true, generator: 'ws-load', connections: 100, size: 32, mode: 'echo', websocket: true },
  { id: 'wss-4k', title: 'WSS echo, 4 KiB messages, 100 connections', tls: true, generator: 'ws-load', connections: 100, size: 4096, mode: 'echo', websocket: true },
  { id: 'ws-upgrade', title: 'WebSocket handshakes (open, check 101, close), 16 in flight', tls: false, generator: 'ws-load', connections: 16, mode: 'upgrade', websocket: true },
  { id: 'wss-upgrade', title: 'WSS handshakes (TLS + upgrade, close), 16 in flight', tls: true, generator: 'ws-load', connections: 16, mode: 'upgrade', websocket: true },
  { id: 'fanout', title: 'Fan-out: each publish delivered to 1,000 WebSockets, 16 B messages', tls: false, generator: 'ws-load', connections: 1000, size: 16, mode: 'recv', websocket: true, fanout: true },
  { id: 'tunnel', title: 'Bulk tunnel, 60 KiB frames both ways, 8 connections', tls: false, generator: 'ws-load', connections: 8, size: BULK_MESSAGE, mode: 'echo', websocket: true, bulk: true },
  { id: 'tunnel-tls', title: 'Bulk tunnel over TLS, 60 KiB frames both ways, 8 connections', tls: true, generator: 'ws-load', connections: 8, size: BULK_MESSAGE, mode: 'echo', websocket: true, bulk: true },
];

/**
 * The load generator's command line, for the report's conditions: `native` when the C++ ws-load runs this load
 * (bench/native/ws-load.cc), else the JS one (bench/peers/ws-load.ts) and why.
 */
export function generatorOf(l: LoadSpec, native: { ok: boolean; tls?: boolean; reason?: string } = { ok: false }): string {
  if (l.generator === 'wrk') return `wrk -t1 -c${l.connections}${l.close === true ? " -H 'Connection: close'" : ''} ${l.tls ? 'https' : 'http'}://…/`;
  const args = `${l.tls ? ' --tls' : ''} --mode ${l.mode ?? 'echo'} --connections ${l.connections}${l.size === undefined ? '' : ` --size ${l.size}`}`;
  const pub = l.fanout === true ? ` --publish-port … --inflight ${FANOUT_INFLIGHT}` : '';
  if (native.ok && (!l.tls || native.tls === true)) return `ws-load (native C++, bench/native/ws-load.cc)${args}${pub}`;
  const why = native.ok ? 'the native one was built without OpenSSL' : native.reason ?? 'native not built';
  return `ws-load.js (JavaScript; ${why})${args}`;
}

export function loadById(id: string): LoadSpec | undefined {
  return LOADS.find((l) => l.id === id);
}

/** Connection counts of the idle-memory loads: WebSockets held open through each proxy, plain and TLS. */
export const IDLE_COUNTS = { full: [1000, 3000, 7000], quick: [200] } as const;
