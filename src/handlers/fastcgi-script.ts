// Which script a fastcgi request runs: the decoded path split into script name and PATH_INFO (nginx
// fastcgi_split_path_info), the index for a directory path, and the check that the script is a regular file
// whose real path lies under the real document root. Only a request that passes reaches FPM: a missing script
// is a 404 without asking it, and no path outside root (traversal, symlinks out, `/uploads/x.jpg/.php`) is run.
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import type { CompiledFastcgi } from '../route/router.js';

/** The script a request runs, with the names its params use. */
export interface Script {
  /** $fastcgi_script_name: the script's path under root, decoded (`/index.php`). */
  readonly scriptName: string;
  /** $fastcgi_path_info: what split_path_info left after the script ('' when none). */
  readonly pathInfo: string;
  /** $uri: the decoded, normalized request path. */
  readonly uri: string;
  /** SCRIPT_FILENAME: root + scriptName (as nginx's $document_root$fastcgi_script_name, symlinks unresolved). */
  readonly filename: string;
}

export type ScriptResult = { readonly ok: true; readonly script: Script } | { readonly ok: false; readonly reason: string };

/**
 * A found script is remembered this long (ms), like nginx open_file_cache: a hot script costs no file system
 * call per request. Misses are not remembered (a new script is seen at once; a removed one within this time).
 */
const FOUND_TTL_MS = 1000;
/** Entries kept at most; the cache is emptied when full (scripts are few; a scan of random paths never enters). */
const FOUND_MAX = 4096;
const found = new Map<string, number>();
/**
 * Per route: request paths whose script was found, with the script and until when (FOUND_TTL_MS), so that a
 * hot path costs one lookup and no promise (knownScript). Bounded like `found`; a reload compiles a new route.
 */
const known = new WeakMap<CompiledFastcgi, Map<string, { readonly script: Script; readonly until: number }>>();
/** Real paths of document roots, kept as long as found scripts. */
const realRoots = new Map<string, { readonly real: string; readonly until: number }>();

/**
 * Percent-decodes a path that wire/path.ts normalized (it refused %2F, %5C, %00 and encoded dots already), as
 * UTF-8; null when the bytes are not UTF-8 or decode to a control character (no such file name is served).
 */
export function decodePath(p: string): string | null {
  let out: string;
  if (p.indexOf('%') === -1) out = p;
  else {
    try {
      out = decodeURIComponent(p);
    } catch {
      return null;
    }
  }
  for (let i = 0; i < out.length; i++) {
    const c = out.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return null;
  }
  return out;
}

/**
 * The script name and PATH_INFO of a decoded path: split_path_info's groups when it matches (nginx), else the
 * whole path; a name ending in `/` gets the index. Pure (no file system).
 */
export function splitScript(uri: string, f: CompiledFastcgi): { scriptName: string; pathInfo: string } {
  let scriptName = uri;
  let pathInfo = '';
  if (f.split !== null) {
    const m = f.split.exec(uri);
    if (m !== null && m[1] !== undefined) {
      scriptName = m[1];
      pathInfo = m[2] ?? '';
    }
  }
  if (scriptName.endsWith('/')) scriptName += f.index;
  return { scriptName, pathInfo };
}

async function realRoot(root: string, now: number): Promise<string> {
  const hit = realRoots.get(root);
  if (hit !== undefined && hit.until > now) return hit.real;
  const real = await realpath(root);
  realRoots.set(root, { real, until: now + FOUND_TTL_MS });
  return real;
}

/** The script of `normalizedPath` when it was found within FOUND_TTL_MS, else null (then ask resolveScript). */
export function knownScript(normalizedPath: string, f: CompiledFastcgi): Script | null {
  const hit = known.get(f)?.get(normalizedPath);
  return hit !== undefined && hit.until > Date.now() ? hit.script : null;
}

/** Resolves the script of `normalizedPath` (a wire/path.ts result) under the route's root. Never rejects. */
export async function resolveScript(normalizedPath: string, f: CompiledFastcgi): Promise<ScriptResult> {
  const uri = decodePath(normalizedPath);
  if (uri === null || !uri.startsWith('/')) return { ok: false, reason: 'path is not a file name' };
  const { scriptName, pathInfo } = splitScript(uri, f);
  // the normalized path has no dot segments; a split regex could still cut one out of the middle of a name
  if (scriptName.includes('/../') || scriptName.includes('/./') || scriptName.endsWith('/..') || scriptName.endsWith('/.')) return { ok: false, reason: 'dot segment in script name' };
  const filename = f.root === '/' ? scriptName : f.root + scriptName;
  const script: Script = { scriptName, pathInfo, uri, filename };
  const now = Date.now();
  const until = found.get(filename);
  if (until !== undefined && until > now) return { ok: true, script };
  try {
    const [root, real] = await Promise.all([realRoot(f.root, now), realpath(filename)]);
    // a symlink (or the script itself) leading out of root is not served
    if (real !== root && !real.startsWith(root === '/' ? '/' : root + path.sep)) return { ok: false, reason: 'script resolves outside root' };
    const st = await stat(real);
    if (!st.isFile()) return { ok: false, reason: 'script is not a regular file' };
  } catch (err) {
    return { ok: false, reason: `script not found (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  if (found.size >= FOUND_MAX) found.clear();
  found.set(filename, now + FOUND_TTL_MS);
  let paths = known.get(f);
  if (paths === undefined) known.set(f, (paths = new Map()));
  if (paths.size >= FOUND_MAX) paths.clear();
  paths.set(normalizedPath, { script, until: now + FOUND_TTL_MS });
  return { ok: true, script };
}
