// Reads the traffic mix of `portico bench --plan PLAN.yaml` into the planner's input (lib/plan.ts): one zod schema,
// strict (an unknown key is an error), durations and sizes written with units as in Portico's config. Every error
// comes back with its YAML path. Reads text; the caller reads the file.
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseDuration, parseSize } from '../../src/config/schema.js';
import type { PlanInput } from './plan.js';

const count = z.number().int().min(0).max(1e9);
const perSecond = z.number().min(0).max(1e9);

const headroom = z.union([z.number().min(0).max(0.95), z.string().regex(/^\d{1,2}(\.\d+)?%$/, 'a share such as "30%" or 0.3')]).default('30%');

const schema = z
  .object({
    /** Share of cores and memory kept free (default 30%). */
    headroom,
    /** Client legs over TLS (default true: HTTPS and WSS). */
    tls: z.boolean().default(true),
    websockets: z
      .object({
        clients: count,
        /** Each client sends one message this often: "5s". */
        message_every: z.string(),
        /** Bytes per message (default "32B"). */
        message_size: z.string().default('32B'),
      })
      .strict()
      .optional(),
    new_connections_per_second: perSecond.optional(),
    http_requests_per_second: perSecond.optional(),
    /** Keep-alive HTTP connections open at once (default 0). */
    http_connections: count.optional(),
    bulk_mib_per_second: perSecond.optional(),
  })
  .strict();

export type PlanFileResult = { ok: true; input: PlanInput } | { ok: false; errors: string[] };

export function readPlan(text: string): PlanFileResult {
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (err) {
    return { ok: false, errors: [`not YAML: ${(err as Error).message}`] };
  }
  const parsed = schema.safeParse(data ?? {});
  if (!parsed.success) {
    return { ok: false, errors: parsed.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(top)'}: ${i.message}`) };
  }
  const p = parsed.data;
  const errors: string[] = [];
  const share = typeof p.headroom === 'number' ? p.headroom : Number(p.headroom.slice(0, -1)) / 100;
  if (share > 0.95) errors.push('headroom: at most 95%');
  let websockets: PlanInput['websockets'];
  if (p.websockets !== undefined) {
    const every = parseDuration(p.websockets.message_every);
    const size = parseSize(p.websockets.message_size);
    if (every === undefined || every === 0) errors.push(`websockets.message_every: a duration above 0 such as "5s", got ${JSON.stringify(p.websockets.message_every)}`);
    if (size === undefined || size < 1 || size > 64 * 1024 * 1024) errors.push(`websockets.message_size: a size such as "32B" or "4KiB", got ${JSON.stringify(p.websockets.message_size)}`);
    if (every !== undefined && every > 0 && size !== undefined) websockets = { clients: p.websockets.clients, messageEveryMs: every, messageBytes: size };
  }
  const input: PlanInput = {
    headroom: share, tls: p.tls, websockets,
    newConnectionsPerSecond: p.new_connections_per_second, httpRequestsPerSecond: p.http_requests_per_second,
    httpConnections: p.http_connections, bulkMiBPerSecond: p.bulk_mib_per_second,
  };
  if (websockets === undefined && !input.newConnectionsPerSecond && !input.httpRequestsPerSecond && !input.bulkMiBPerSecond && !input.httpConnections) {
    errors.push('(top): the plan names no traffic: give websockets, new_connections_per_second, http_requests_per_second, http_connections or bulk_mib_per_second');
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, input };
}
