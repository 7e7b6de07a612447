// The admin listener, served by the primary: GET /metrics (Prometheus text) and GET /status (JSON). Meant for
// loopback: another address works but is warned about, since it exposes internals to whoever can reach it.
// It only formats what its AdminSource returns; gathering numbers from the workers is primary.ts's job.
import http from 'node:http';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';

export interface StatusReport {
  pid: number;
  /** Seconds since the primary started. */
  uptime: number;
  listenStrategy: string;
  workers: Array<{ id: number; pid: number | null; uptime: number; restarts: number; state: string }>;
  listeners: Array<{ address: string; port: number; tls: boolean }>;
  /** Per upstream: each target with its availability (in every worker) and open requests + tunnels (summed). */
  upstreams: Record<string, Array<{ target: string; available: boolean; active: number }>>;
  connections: number;
  tunnels: number;
  /** Workers that did not answer in time; their numbers are missing above. */
  unanswered: number[];
}

export interface AdminSource {
  metrics(): Promise<string>;
  status(): Promise<StatusReport>;
}

export interface AdminServer {
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** 127.0.0.0/8, ::1 and "localhost". */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host.toLowerCase().startsWith('::ffff:127.');
}

const PROMETHEUS_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export async function startAdminServer(host: string, port: number, source: AdminSource, log: Logger): Promise<AdminServer> {
  if (!isLoopback(host)) log.warn({ address: host, port }, 'admin listener is not on loopback: /metrics and /status are reachable from the network');
  const server = http.createServer({ requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000, maxHeaderSize: 8192 }, (req, res) => {
    serve(req, res, source, log);
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
    close() {
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
  if (route === undefined) return send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics or /status\n', req.method === 'HEAD');
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

function send(res: http.ServerResponse, status: number, type: string, body: string, headOnly: boolean): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(headOnly ? undefined : body);
}
