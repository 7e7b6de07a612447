// The config of response compression per route (`compress: { gzip, brotli, types, min_size, level }`, or
// `compress: true` for the defaults). Schema only; handlers/compress.ts negotiates and compresses.
import { z } from 'zod';
import { size } from './units.js';

const MEDIA_RANGE = /^[a-z0-9!#$&^_.+-]+\/(\*|[a-z0-9!#$&^_.+-]+)$/;

/** Media types worth compressing by default (images, video, archives and fonts in woff2 are already compressed). */
export const DEFAULT_COMPRESS_TYPES = ['text/*', 'application/json', 'application/javascript', 'application/xml', 'application/rss+xml', 'application/atom+xml', 'application/manifest+json', 'application/wasm', 'image/svg+xml', 'font/ttf', 'font/otf'];

const options = z
  .object({
    /** Offer gzip (default true). */
    gzip: z.boolean().default(true),
    /** Offer brotli, preferred over gzip at equal q (default true). */
    brotli: z.boolean().default(true),
    /** Content types compressed: "type/subtype" or "type/*" (default: text, JSON, JS, XML, SVG...). */
    types: z.array(z.string().toLowerCase().regex(MEDIA_RANGE, 'a media type such as "text/html" or "text/*"')).min(1).default(DEFAULT_COMPRESS_TYPES),
    /** Bodies known to be smaller are sent as they are (default 1KiB); a body of unknown length is compressed. */
    min_size: size('1KiB'),
    /**
     * 1 (fastest) to 9 (smallest): the gzip level and the brotli quality (default 1, nginx's gzip_comp_level: on a
     * proxy CPU per answer is what runs out; level 5 costs ~1.3x (gzip) to ~3x (brotli) the CPU for ~10% less).
     * Static files of up to 256KiB are compressed once per change and kept (static_cache), so a higher level
     * costs them little.
     */
    level: z.number().int().min(1).max(9).default(1),
  })
  .strict();

/** `true` = the defaults; `false` = off (as leaving it out). */
export const compressOptions = z.union([z.boolean().transform((on) => (on ? options.parse({}) : undefined)), options]);
