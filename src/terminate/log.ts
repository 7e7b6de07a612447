// The access-log line of a terminated WebSocket at its end: who closed it, with which code and reason, and what it
// relayed. Shapes fields only; the caller checks `log.access` first.
import type { Logger } from '../core/log.js';
import type { Exchange } from '../handlers/forward.js';
import type { SessionEnd } from './session.js';

export function logTerminated(log: Logger, ex: Exchange, remoteAddr: string, end: SessionEnd): void {
  log.info(
    {
      mode: 'terminate',
      handoff: end.handoff,
      route: ex.route.name,
      upstream: ex.target?.id,
      path: ex.head.target,
      remoteAddr,
      status: 101,
      closedBy: end.closedBy,
      code: end.code,
      reason: end.reason === '' ? undefined : end.reason,
      messagesIn: end.messagesIn,
      messagesOut: end.messagesOut,
      bytesIn: end.bytesIn,
      bytesOut: end.bytesOut,
      pingsMissed: end.pingsMissed || undefined,
      drops: end.drops || undefined,
      durationMs: end.durationMs,
    },
    'websocket',
  );
}
