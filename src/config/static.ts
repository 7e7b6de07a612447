// The config of static-file routes (`static: { root, index, ... }`): what a route serves from disk and how
// clients may cache it. Schema only; the files are served by handlers/static.ts; `check` also makes sure the
// root is a directory (load.ts).
import { z } from 'zod';
import { duration } from './units.js';

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
  })
  .strict();
