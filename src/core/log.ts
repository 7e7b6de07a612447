// The pino root logger and its bindings. Only this module imports pino; everything else takes a `Logger`.
// Field names are fixed (STYLE.md 11): conn, worker, route, mode, upstream, status, bytesIn, bytesOut,
// durationMs, closedBy, err.code. Secrets (keys, auth headers) are never passed to a logger.
import { pino, type Logger as PinoLogger, type LevelWithSilent } from 'pino';
import { stdoutWriter } from './line-writer.js';

export type Logger = PinoLogger;
export type LogLevel = LevelWithSilent;

/** Lines go to the process's one stdout writer (line-writer.ts): buffered, written off the event loop. */
export function createLogger(level: LogLevel, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: serializeError },
    },
    stdoutWriter(),
  );
}

/** Errors are logged by code and message; stacks only for internal errors, and only at debug. */
function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const e = err as Error & { code?: string; side?: string };
  const out: Record<string, unknown> = { type: e.name, code: e.code, message: e.message };
  if (e.side !== undefined) out.side = e.side;
  if (e.code === undefined || e.code === 'INTERNAL') out.stack = e.stack;
  return out;
}

/** A field of an access line: a string (JSON-escaped, cut at 512), a number, a flag, an error; undefined = absent. */
export type AccessValue = string | number | boolean | undefined | { readonly code: string; readonly message: string };

/**
 * Where the per-request and per-tunnel lines of the rooms below http/ go (L4 tunnels, refused TLS names): the
 * access log's destinations (http/access-log.ts AccessLog), not pino. Keys are field names written in code,
 * never input; `conn` undefined = a socket that was never registered.
 */
export interface AccessLines {
  line(conn: number | undefined, level: 'info' | 'warn', fields: Readonly<Record<string, AccessValue>>, msg: string): void;
}
