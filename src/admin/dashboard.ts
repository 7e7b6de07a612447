// GET /dashboard on the admin listener: a live page of what /status and /metrics hold, served by Portico itself
// (no build step, no CDN; the page, its script and its style are in dashboard-page.ts). The figures reach the
// page as Server-Sent Events from /dashboard/events: one gather of /status and /metrics per tick, shared by
// every open page, and no gather at all while nobody watches. Rates and percentiles are computed in the page
// from the difference between two samples. Same access rules as the rest of the admin API (server.ts).
import type http from 'node:http';
import type { Logger } from '../core/log.js';
import { APP_CSS, APP_JS, PAGE_HTML } from './dashboard-page.js';

/** What a tick gathers: the admin source's two reads. */
export interface DashboardSource {
  metrics(): Promise<string>;
  status(): Promise<unknown>;
}

/** Pages open at once; one more gets 503 (each costs a socket and a copy of every sample). */
export const MAX_WATCHERS = 8;
/** A page whose socket has this much unsent is too slow to follow: it is closed (it reconnects by itself). */
const MAX_BACKLOG_BYTES = 1024 * 1024;
const DEFAULT_INTERVAL_MS = 1_000;

// The page's own resources only: inline script and style are refused, and it talks to its own origin.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const ASSETS: Readonly<Record<string, { type: string; body: string }>> = {
  '/dashboard': { type: 'text/html; charset=utf-8', body: PAGE_HTML },
  '/dashboard/app.js': { type: 'text/javascript; charset=utf-8', body: APP_JS },
  '/dashboard/app.css': { type: 'text/css; charset=utf-8', body: APP_CSS },
};

/** Serves the page's files; false when `path` is none of them. */
export function serveDashboardAsset(path: string, req: http.IncomingMessage, res: http.ServerResponse): boolean {
  const asset = ASSETS[path === '/dashboard/' ? '/dashboard' : path];
  if (asset === undefined) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
    return true;
  }
  res.writeHead(200, {
    'Content-Type': asset.type,
    'Content-Length': Buffer.byteLength(asset.body),
    'Cache-Control': 'no-store',
    'Content-Security-Policy': CSP,
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
  });
  res.end(req.method === 'HEAD' ? undefined : asset.body);
  return true;
}

/** The event stream of the open pages: ticks while at least one is open. */
export class DashboardFeed {
  readonly #source: DashboardSource;
  readonly #log: Logger;
  readonly #intervalMs: number;
  readonly #watchers = new Set<http.ServerResponse>();
  #timer: NodeJS.Timeout | undefined;
  #gathering = false;
  #ticks = 0;

  constructor(source: DashboardSource, log: Logger, intervalMs = DEFAULT_INTERVAL_MS) {
    this.#source = source;
    this.#log = log;
    this.#intervalMs = intervalMs;
  }

  /** Ticks since start: a test can tell that nothing is gathered while nobody watches. */
  get ticks(): number {
    return this.#ticks;
  }

  get watchers(): number {
    return this.#watchers.size;
  }

  /** GET /dashboard/events. */
  serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.method !== 'GET') {
      res.writeHead(405, { Allow: 'GET', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    if (this.#watchers.size >= MAX_WATCHERS) {
      res.writeHead(503, { 'Content-Type': 'text/plain; charset=utf-8', 'Retry-After': '5' }).end(`too many dashboards open (at most ${MAX_WATCHERS})\n`);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' });
    res.write(`retry: 2000\n\n`);
    req.socket.setNoDelay(true);
    this.#watchers.add(res);
    res.on('close', () => {
      this.#watchers.delete(res);
      if (this.#watchers.size === 0) this.#stop();
    });
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#tick(), this.#intervalMs);
      this.#timer.unref();
    }
    void this.#tick(); // the first sample at once, so the page is not empty for a tick
  }

  close(): void {
    this.#stop();
    for (const res of this.#watchers) res.destroy();
    this.#watchers.clear();
  }

  #stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #tick(): Promise<void> {
    // one gather at a time: a slow one (a worker that does not answer) makes the next tick skip, not pile up
    if (this.#gathering || this.#watchers.size === 0) return;
    this.#gathering = true;
    this.#ticks++;
    try {
      const [status, metrics] = await Promise.all([this.#source.status(), this.#source.metrics()]);
      const frame = `data: ${JSON.stringify({ t: Date.now(), status, metrics })}\n\n`;
      for (const res of this.#watchers) {
        if (res.writableLength > MAX_BACKLOG_BYTES) {
          res.destroy();
          continue;
        }
        res.write(frame);
      }
    } catch (err) {
      this.#log.error({ err }, 'dashboard sample failed');
    } finally {
      this.#gathering = false;
    }
  }
}
