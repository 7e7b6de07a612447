// The config of a route's CORS policy (`cors: { origins, credentials, ... }`): who may read its answers from
// another origin. Schema only; route/policy/cors.ts compiles and applies it. `*` is never allowed together
// with credentials (browsers refuse the pair; `check` says so before a browser does).
import { z } from 'zod';
import { duration } from './units.js';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/; // RFC 9110 §5.6.2

/** "*", "https://app.example.com[:port]", or "https://*.example.com" (any subdomain depth, not the bare domain). */
export function checkOrigin(o: string): string | undefined {
  if (o === '*') return undefined;
  const m = /^(https?):\/\/(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(:\d{1,5})?$/.exec(o);
  if (m === null) return `invalid origin ${JSON.stringify(o)}: write scheme://host[:port] in lower case without a path ("https://app.example.com"), "https://*.example.com", or "*"`;
  if (m[7] !== undefined && Number(m[7].slice(1)) > 65535) return `invalid port in origin ${JSON.stringify(o)}`;
  return undefined;
}

const tokenList = (what: string) => z.array(z.string().regex(TOKEN, `${what} must be RFC 9110 tokens`));

export const corsPolicy = z
  .object({
    /** Origins allowed to read answers: exact, "https://*.suffix", or "*" (any; not with credentials). */
    origins: z
      .array(
        z.string().superRefine((v, ctx) => {
          const problem = checkOrigin(v);
          if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
        }),
      )
      .min(1, 'list at least one origin'),
    /** Allow cookies and HTTP auth (Access-Control-Allow-Credentials: true; default false). */
    credentials: z.boolean().default(false),
    /** Methods a preflight may ask for (default GET, HEAD, POST, PUT, PATCH, DELETE). */
    methods: tokenList('methods').default(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']),
    /** Request headers a preflight may ask for (default: any the preflight names, echoed back). */
    headers: tokenList('headers').optional(),
    /** Response headers the page may read beyond the safelisted ones (Access-Control-Expose-Headers; default none). */
    expose: tokenList('expose').default([]),
    /** How long a browser may cache a preflight answer (Access-Control-Max-Age; default 10m; "off" = not sent). */
    max_age: duration('10m'),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.credentials !== true) return;
    // Fetch standard: with credentials, "*" is not a wildcard in any of these headers; a browser refuses the answer
    const star = (list: unknown, key: string): void => {
      if (Array.isArray(list)) {
        const i = list.indexOf('*');
        if (i !== -1) ctx.addIssue({ code: 'custom', path: [key, i], message: `"*" cannot be used with credentials: true (browsers refuse it); list the ${key} instead` });
      }
    };
    star(c.origins, 'origins');
    star(c.methods, 'methods');
    star(c.headers, 'headers');
    star(c.expose, 'expose');
  });
