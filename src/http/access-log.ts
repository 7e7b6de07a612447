// The access-log lines of the client connection: one per request (answered, failed or refused) and one per
// tunnel at its end. It only shapes the fields and writes them to the logger it is given; the caller checks
// `log.access` first (so a connection that does not log never builds its child logger) and owns the counting.
import type { ClosedBy } from '../core/socket.js';
import type { ErrorCode, ProxyError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { Exchange } from '../handlers/forward.js';
import type { ClientExchange } from '../handlers/client-exchange.js';
import type { RequestHead } from '../wire/http-head.js';
import { SpliceTunnel } from '../tunnel/splice.js';
import type { Tunnel } from '../tunnel/relay.js';

/** A forwarded request that ended: answered (`err` undefined), failed, or dropped by the client (499). */
export function logExchange(log: Logger, ex: ClientExchange, status: number, err: ProxyError | undefined): void {
  log.info(
    {
      mode: ex.mode,
      route: ex.route.name,
      upstream: ex.target?.id,
      method: ex.head.method,
      path: ex.head.target,
      status,
      bytesIn: ex.bytesIn,
      bytesOut: ex.bytesOut,
      durationMs: Date.now() - ex.startedAt,
      err: err === undefined ? undefined : { code: err.code, message: err.message },
    },
    'request',
  );
}

/** A request answered with a canned response before any exchange (bad head, no route...). */
export function logRejected(log: Logger, head: RequestHead | undefined, status: number, code: ErrorCode, reason: string): void {
  log.info({ mode: 'http', method: head?.method, path: head?.target, status, err: { code, message: reason } }, 'request');
}

/** A tunnel that ended; `ex` is the exchange whose 101 opened it. */
export function logTunnel(log: Logger, ex: Exchange, t: Tunnel | SpliceTunnel): void {
  log.info(
    {
      mode: 'tunnel',
      route: ex.route.name,
      upstream: ex.target?.id,
      path: ex.head.target,
      status: 101,
      bytesIn: t.bytesUp,
      bytesOut: t.bytesDown,
      durationMs: Date.now() - t.startedAt,
      closedBy: t.closedBy as ClosedBy,
      spliced: t instanceof SpliceTunnel && t.spliced,
    },
    'tunnel',
  );
}
