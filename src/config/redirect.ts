// The config of routes that answer by themselves without a backend: `redirect` (a Location built from a template
// with nginx's variables and the path_regex captures $1..$9) and `return` (a fixed status and body). Schemas
// only; the templates are compiled by the router (route/redirect-target.ts) and checked there with their paths.
import { z } from 'zod';

/** RFC 9110 §15.4: the redirect statuses (303 turns the method into GET; 307/308 keep method and body). */
export const REDIRECT_STATUSES = [301, 302, 303, 307, 308] as const;

const NO_CTL = /^[^\x00-\x1f\x7f]*$/;

/**
 * `redirect: { to, status }`, or `redirect: URL` (302). `to` may use $scheme, $host, $request_uri, $server_port,
 * $remote_addr and, on a path_regex route, its captures $1..$9 (nginx `return 301 https://$host$request_uri`).
 */
export const redirectAction = z.union([
  z
    .string()
    .min(1)
    .regex(NO_CTL, 'a redirect target must not contain control characters')
    .transform((to) => ({ to, status: 302 as (typeof REDIRECT_STATUSES)[number] })),
  z
    .object({
      /** The Location template (absolute URL or a path). */
      to: z.string().min(1).regex(NO_CTL, 'a redirect target must not contain control characters'),
      /** 301, 302 (default), 303, 307 or 308. */
      status: z
        .number()
        .refine((n): n is (typeof REDIRECT_STATUSES)[number] => (REDIRECT_STATUSES as readonly number[]).includes(n), `status must be one of ${REDIRECT_STATUSES.join(', ')}`)
        .default(302),
    })
    .strict(),
]);

/** `return: { status, body, content_type }`: a fixed answer (nginx `return 200 "ok"`), e.g. a health or a gone page. */
export const returnAction = z
  .object({
    /** 200-599; a 204 or 304 carries no body. For a redirect use `redirect`. */
    status: z.number().int().min(200).max(599),
    /** The body, sent as UTF-8 (default empty). */
    body: z.string().default(''),
    content_type: z.string().min(1).regex(NO_CTL, 'content_type must not contain control characters').default('text/plain; charset=utf-8'),
  })
  .strict()
  .superRefine((r, ctx) => {
    if ((r.status === 204 || r.status === 304) && r.body !== '') ctx.addIssue({ code: 'custom', path: ['body'], message: `a ${r.status} answer has no body (RFC 9110 §15.3.5, §15.4.5)` });
  });

/**
 * `listeners[].https_redirect`: on a plain listener, every request is redirected to https on the same host
 * (301 for GET/HEAD, 308 otherwise, so a POST stays a POST). `true` = the port of the first TLS listener in
 * the file (omitted from the URL when it is 443); a number = that port (a TLS port behind a NAT or balancer).
 */
export const httpsRedirect = z.union([z.boolean(), z.number().int().min(1).max(65535)]).optional();
