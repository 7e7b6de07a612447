// The config of static-file routes (`static: { root, index, ... }`): what a route serves from disk and how
// clients may cache it. Schema only; the files are served by handlers/static.ts; `check` also makes sure the
// root is a directory (load.ts).
import { z } from 'zod';
import { duration } from './units.js';
import { parseFallback } from './static-fallback.js';

const NO_CTL = /^[^\x00-\x1f\x7f]*$/;
const FILE_NAME = /^[^/\\\x00]+$/;

export const staticAction = z
  .object({
    /** The folder served (relative to the config file's folder); nothing outside it is ever opened. */
    root: z.string().min(1),
    /** File(s) tried, in order, for a path that names a folder (default index.html; [] = none: 404). */
    index: z
      .union([z.string().regex(FILE_NAME, 'an index is a file name, without /'), z.array(z.string().regex(FILE_NAME, 'an index is a file name, without /'))])
      .default('index.html')
      .transform((v) => (typeof v === 'string' ? [v] : v)),
    /** Cache-Control sent with every file of this route (default none), e.g. "public, max-age=3600". */
    cache_control: z.string().min(1).regex(NO_CTL, 'cache_control must not contain control characters').optional(),
    /** Serve FILE.br / FILE.gz instead of FILE when the client accepts that coding and the sibling exists (default true). */
    precompressed: z.boolean().default(true),
    /** ETag (size and mtime, as nginx) and If-None-Match handling (default true); Last-Modified is always sent. */
    etag: z.boolean().default(true),
    /** A client that takes no bytes of a file for this long is cut (nginx send_timeout; default 60s). */
    send_timeout: duration('60s'),
    /**
     * A path that names no file and no folder with an index (404, or 403 for a folder that is not listed; a
     * refusal such as a dotfile stays a refusal) is routed again,
     * once, as this URI: nginx `try_files $uri $uri/ /index.php?$args` is `fallback: "/index.php?$args"`, the
     * front controller of PHP applications (or "/index.html" for a single-page app). An absolute path, then an
     * optional query after `?` or `$is_args`, which may use $args / $query_string (the client's query), $is_args
     * ("?" when it has one) and $uri (its decoded path). The route that matches the fallback's path answers
     * (a fastcgi route for `\\.php$`, or any other); FastCGI sees REQUEST_URI as the client sent it, SCRIPT_NAME
     * and QUERY_STRING from the fallback. A fallback that lands on a static route whose fallback misses too answers
     * 500 (no second re-route); one that matches no route answers as "no route" does. Default none (404).
     */
    fallback: z
      .string()
      .superRefine((v, ctx) => {
        const r = parseFallback(v);
        if (!r.ok) ctx.addIssue({ code: 'custom', message: r.message });
      })
      .optional()
      .describe(
        'A URI routed again, once, when the path names no file and no folder with an index (refusals such as dotfiles stay refusals), as nginx try_files $uri $uri/ URI: "/index.php?$args" (a PHP front controller), "/index.html" (a single-page app). An absolute path, then an optional query after "?" or $is_args using $args, $query_string, $is_args, $uri. The route matching its path answers; a second miss answers 500. Default none (404).',
      ),
  })
  .strict();
