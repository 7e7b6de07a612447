// A route's `websocket` section: how its WebSocket handshakes are served. `tunnel` (default) relays the bytes
// after the backend's 101; `terminate` ends the client's WebSocket in uWebSockets.js and relays messages over a
// WebSocket of Portico's own to the backend (src/terminate/). The schema takes schema.ts's duration and size
// builders as parameters, so this file does not import schema.ts (no import cycle).
import { z } from 'zod';
import { parseRate } from './rate.js';

export const WEBSOCKET_MODES = ['tunnel', 'terminate'] as const;

/**
 * How a terminated WebSocket's client connection reaches uWebSockets.js: `relay` (default) through a unix socket
 * to the worker's uWS app, the bytes moved by splice; `adopt` hands the client's own socket to uWS (adoptSocket)
 * on plain HTTP listeners, no second hop (src/terminate/handoff.ts).
 */
export const WEBSOCKET_HANDOFFS = ['relay', 'adopt'] as const;

/** The route's `websocket` schema, built with schema.ts's `duration` and `size`. */
export function websocketSchema<D extends z.ZodType<number>, S extends z.ZodType<number>>(duration: (dflt: string) => D, size: (dflt: string) => S) {
  return z
    .object({
      /** tunnel: bytes relayed after the backend's 101 (default); terminate: messages relayed by uWebSockets.js. */
      mode: z.enum(WEBSOCKET_MODES).default('tunnel'),
      /** terminate: largest message either way (default 1MiB); a bigger one closes the connection with 1009. */
      max_message_size: size('1MiB').refine((n) => n >= 125 && n <= 256 * 1024 ** 2, 'must be between 125B and 256MiB'),
      /** terminate: ping the client after this much silence; a client silent two intervals is closed (default 30s). */
      ping_interval: duration('30s'),
      /** terminate: closes (1001) a connection with no message either way for this long (default off). */
      idle_timeout: duration('off'),
      /**
       * terminate: bytes held for a slow side before the other side is paused (default 1MiB): at most this
       * toward the client (uWS backpressure) and this toward the backend, per connection.
       */
      max_buffer: size('1MiB').refine((n) => n >= 1024, 'must be at least 1KiB'),
      /** terminate: messages per second a client may send ("100/s"; default off); above it: close 1008. */
      message_rate: z
        .union([z.string(), z.number()])
        .transform((v, ctx) => {
          if (v === 'off') return 0;
          const interval = parseRate(v);
          if (typeof interval === 'string') {
            ctx.addIssue({ code: 'custom', message: interval });
            return z.NEVER;
          }
          return interval;
        })
        .default(0),
      /**
       * terminate: `relay` (default) or `adopt`. adopt hands the client's socket itself to uWebSockets.js (plain
       * HTTP listeners; TLS listeners keep the relay): less CPU per message and half the fds, but uWS.js cannot
       * pause reading a WebSocket, so a slow backend closes the client with 1013 once the backend leg holds
       * more than max_buffer plus one message, where relay pauses the client.
       */
      handoff: z.enum(WEBSOCKET_HANDOFFS).default('relay'),
      /** terminate: permessage-deflate toward clients that offer it (default false); the backend leg stays uncompressed. */
      compression: z.boolean().default(false),
      /** terminate: at shutdown or reload, Close frames sent per second per worker, with jitter (default "200/s"). */
      drain_rate: z
        .union([z.string(), z.number()])
        .transform((v, ctx) => {
          const interval = parseRate(v);
          if (typeof interval === 'string') {
            ctx.addIssue({ code: 'custom', message: interval });
            return z.NEVER;
          }
          return interval;
        })
        .default(5),
    })
    .strict();
}

export type WebsocketConfig = z.output<ReturnType<typeof websocketSchema>>;
