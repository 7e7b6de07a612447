// The `fastcgi:` route action (PHP-FPM and other FastCGI responders): its schema and the rules that tie it to
// its upstream (checked with the config's cross-references); the variables `params` may use are fastcgi-params.ts's.
// Pure config: no sockets, no file system access beyond nothing; the handler (handlers/fastcgi.ts) runs it.
import path from 'node:path';
import { z } from 'zod';
import { isPlainObject } from '../core/util.js';
import { duration, size } from './units.js';
import { parseParamTemplate } from './fastcgi-params.js';

// the params templates live in fastcgi-params.ts, without zod: the router compiles them on a worker's start path
export { FASTCGI_VARIABLES, parseParamTemplate, type FastcgiVariable, type TemplatePart } from './fastcgi-params.js';

/** CGI/1.1 meta-variable names: what FPM reads into $_SERVER (letters, digits, `_`). */
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * `fastcgi: { upstream, root, index, split_path_info, params }`: the request runs a script under `root` on a
 * FastCGI application (nginx: fastcgi_pass + fastcgi_params + fastcgi_param SCRIPT_FILENAME
 * $document_root$fastcgi_script_name). A script that does not exist under root is a 404 without asking FPM.
 */
export const fastcgiAction = z
  .object({
    /** The upstream (its targets: php-fpm's `host:port` or `unix:/path`) that runs the scripts. */
    upstream: z.string().min(1),
    /** Document root: scripts are looked up here (relative to the config file's folder); nothing outside it is run. */
    root: z.string().min(1),
    /** Script run for a path ending in `/` (nginx fastcgi_index; default index.php). */
    index: z
      .string()
      .regex(/^[^/\\\0]+$/, 'index is a file name, without / or \\')
      .refine((v) => v !== '.' && v !== '..', 'index is a file name')
      .default('index.php'),
    /**
     * nginx fastcgi_split_path_info: a regular expression with two groups, tested against the path: the first
     * is the script name, the second PATH_INFO (e.g. "^(.+\\.php)(/.*)$"). Default none: the whole path is the script.
     */
    split_path_info: z
      .string()
      .superRefine((v, ctx) => {
        try {
          const groups = new RegExp(`${v}|`).exec('')!.length - 1;
          if (groups !== 2) ctx.addIssue({ code: 'custom', message: `split_path_info needs exactly two capture groups (script, path info); it has ${groups}` });
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: `invalid regular expression: ${(err as Error).message}` });
        }
      })
      .optional(),
    /**
     * Extra FastCGI params (nginx fastcgi_param), set after the standard ones and replacing a standard one of
     * the same name. Values may use variables (see FASTCGI_VARIABLES), e.g. `APP_ENV: production`.
     */
    params: z
      .record(
        z.string().regex(PARAM_NAME, 'a param name uses letters, digits and _ (and does not start with a digit)').refine((n) => n.toUpperCase() !== 'HTTP_PROXY', 'HTTP_PROXY is never sent (httpoxy, CVE-2016-5385)'),
        z
          .string()
          .regex(/^[^\0]*$/, 'a param value must not contain NUL')
          .superRefine((v, ctx) => {
            const r = parseParamTemplate(v);
            if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r });
          }),
      )
      .default({}),
  })
  .strict();

export type FastcgiActionConfig = z.output<typeof fastcgiAction>;

/**
 * Cross-references of fastcgi routes, checked with the rest of the config (schema.ts checkReferences): the
 * upstream exists; it is not also a proxy upstream (a pooled socket is either FastCGI or HTTP: an idle one
 * picked by the other kind would be read as garbage) nor an L4 one; its active health check does not speak HTTP
 * (FPM would read an HTTP probe as a broken record: `type: fastcgi` or `tcp`).
 */
export function checkFastcgiReferences(routes: unknown[], upstreams: Record<string, unknown>, ctx: z.RefinementCtx): void {
  const proxied = new Set<string>();
  for (const r of routes) {
    const name = isPlainObject(r) && isPlainObject(r.proxy) ? r.proxy.upstream : undefined;
    if (typeof name === 'string') proxied.add(name);
  }
  routes.forEach((r, i) => {
    const name = isPlainObject(r) && isPlainObject(r.fastcgi) ? r.fastcgi.upstream : undefined;
    if (typeof name !== 'string') return;
    const at = ['routes', i, 'fastcgi', 'upstream'];
    if (!Object.hasOwn(upstreams, name)) {
      ctx.addIssue({ code: 'custom', path: at, message: `unknown upstream "${name}" (defined: ${Object.keys(upstreams).join(', ') || 'none'})` });
      return;
    }
    if (proxied.has(name)) {
      ctx.addIssue({ code: 'custom', path: at, message: `upstream "${name}" also serves proxy routes: its pooled connections speak either HTTP or FastCGI, so give FastCGI its own upstream entry (same targets are fine)` });
    }
    const u = upstreams[name];
    const active = isPlainObject(u) && isPlainObject(u.health) && isPlainObject(u.health.active) ? u.health.active : undefined;
    if (active !== undefined && (active.type === 'http' || active.type === 'websocket')) {
      ctx.addIssue({ code: 'custom', path: ['upstreams', name, 'health', 'active', 'type'], message: `upstream "${name}" runs FastCGI (routes[${i}]): an ${String(active.type)} check would send HTTP to it; use type: fastcgi (FCGI_GET_VALUES) or tcp` });
    }
  });
}

/** The fastcgi upstreams' names: their raw-TCP (L4) use is refused like that of proxy upstreams. */
export function fastcgiUpstreams(routes: unknown[]): Set<string> {
  const out = new Set<string>();
  for (const r of routes) {
    const name = isPlainObject(r) && isPlainObject(r.fastcgi) ? r.fastcgi.upstream : undefined;
    if (typeof name === 'string') out.add(name);
  }
  return out;
}

/** `root` made absolute against the config file's folder (load.ts calls it with the other relative paths). */
export function resolveFastcgiRoot<R extends { fastcgi?: FastcgiActionConfig }>(route: R, baseDir: string): R {
  return route.fastcgi === undefined ? route : { ...route, fastcgi: { ...route.fastcgi, root: path.resolve(baseDir, route.fastcgi.root) } };
}

/** Largest `body_buffer.memory`: it is held per request being buffered, so connections x this is the bound. */
const MAX_BODY_MEMORY = 64 * 1024 * 1024;

/**
 * `body_buffer`: where a chunked request body to a FastCGI route waits until its length is known (FastCGI sends
 * CONTENT_LENGTH before the body; nginx client_body_buffer_size + client_body_temp_path). Decoded bytes stay in
 * memory up to `memory`; a larger body goes whole to a temp file in `temp_dir` that has no name on disk
 * (handlers/body-buffer.ts). Content-Length bodies are streamed as they arrive and never buffered.
 */
export const bodyBufferSchema = z
  .object({
    memory: size('16KiB')
      .refine((n) => n <= MAX_BODY_MEMORY, `at most ${MAX_BODY_MEMORY / 1024 / 1024}MiB (it is held per request while buffering)`)
      .describe('Decoded bytes of a chunked body kept in memory; a larger body goes to a temp file (default 16KiB, nginx client_body_buffer_size).'),
    temp_dir: z
      .string()
      .min(1)
      .regex(/^[^\0]*$/, 'a folder path must not contain NUL')
      .optional()
      .describe('Folder of the temp files (relative to the config file\'s folder; default: the OS temp folder, $TMPDIR or /tmp). Files there have no name (O_TMPFILE, else unlinked once open): nothing is left after a crash. Where /tmp is a tmpfs, its files are RAM: point this at a disk folder.'),
    disk_max: size('1GiB').describe('Bytes the temp files of one worker may hold at once; a body that would pass it is refused with 503 (default 1GiB).'),
    disk_timeout: duration('30s')
      .refine((ms) => ms > 0, 'above 0 (a stuck disk would hold the request for ever)')
      .describe('Longest wait for one open, write or read of a temp file; past it the request fails with 500 (BODY_BUFFER_TIMEOUT), since the client\'s timeouts.body does not cover a wait on the disk (default 30s).'),
  })
  .strict();

export type BodyBufferConfig = z.output<typeof bodyBufferSchema>;
