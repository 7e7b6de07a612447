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
const known = new WeakMap<CompiledFastcgi, Map<string, KnownScript>>();
interface KnownScript {
  readonly script: Script;
  readonly until: number;
  /** A re-check of this entry is under way (see REFRESH_AHEAD_MS). */
  rechecking: boolean;
}
/**
 * A hit this close to the end of its FOUND_TTL_MS starts one re-check of the file in the background while the
 * hit is served (it is still within its time): a script in steady use never expires, so no request waits on the
 * file system for it and the requests arriving at its expiry do not each start a lookup. A failed re-check
 * forgets the entry (a removed script is a 404 as before, within FOUND_TTL_MS of its last check).
 */
const REFRESH_AHEAD_MS = 250;
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

/**
 * Until when (Date.now() ms) the known script of `normalizedPath` holds without a re-check: its FOUND_TTL_MS less
 * REFRESH_AHEAD_MS, so that a request in the last part of its time comes to knownScript, which starts the re-check
 * (the native exchange's script cache keeps entries this long: fastcgi-native.ts). 0 when not known.
 */
export function knownUntil(normalizedPath: string, f: CompiledFastcgi): number {
  const hit = known.get(f)?.get(normalizedPath);
  return hit === undefined ? 0 : hit.until - REFRESH_AHEAD_MS;
}

/** Told when a known script is forgotten because its re-check failed (the native script cache drops it too). */
let forgotten: ((f: CompiledFastcgi, normalizedPath: string) => void) | null = null;

export function onScriptForgotten(fn: (f: CompiledFastcgi, normalizedPath: string) => void): void {
  forgotten = fn;
}

/** Told when a script is found (again): its time starts anew (the native script cache renews its entry). */
let foundHook: ((f: CompiledFastcgi, normalizedPath: string, script: Script) => void) | null = null;

export function onScriptFound(fn: (f: CompiledFastcgi, normalizedPath: string, script: Script) => void): void {
  foundHook = fn;
}

/** The script of `normalizedPath` when it was found within FOUND_TTL_MS, else null (then ask resolveScript). */
export function knownScript(normalizedPath: string, f: CompiledFastcgi): Script | null {
  const hit = known.get(f)?.get(normalizedPath);
  if (hit === undefined) return null;
  const left = hit.until - Date.now();
  if (left <= 0) return null;
  if (left < REFRESH_AHEAD_MS && !hit.rechecking) recheck(normalizedPath, f, hit);
  return hit.script;
}

/** Checks a known script's file again (see REFRESH_AHEAD_MS): found, its time starts anew; else it is forgotten. */
function recheck(normalizedPath: string, f: CompiledFastcgi, hit: KnownScript): void {
  hit.rechecking = true;
  const forget = (): void => {
    const paths = known.get(f);
    if (paths?.get(normalizedPath) === hit) paths.delete(normalizedPath);
    forgotten?.(f, normalizedPath);
  };
  resolveScript(normalizedPath, f, true).then((r) => {
    if (!r.ok) forget();
  }, forget);
}

/**
 * Resolves the script of `normalizedPath` (a wire/path.ts result) under the route's root. Never rejects.
 * `recheck`: the file system is asked even when the file was found within FOUND_TTL_MS.
 */
export async function resolveScript(normalizedPath: string, f: CompiledFastcgi, recheck = false): Promise<ScriptResult> {
  const uri = decodePath(normalizedPath);
  if (uri === null || !uri.startsWith('/')) return { ok: false, reason: 'path is not a file name' };
  const { scriptName, pathInfo } = splitScript(uri, f);
  // the normalized path has no dot segments; a split regex could still cut one out of the middle of a name
  if (scriptName.includes('/../') || scriptName.includes('/./') || scriptName.endsWith('/..') || scriptName.endsWith('/.')) return { ok: false, reason: 'dot segment in script name' };
  const filename = f.root === '/' ? scriptName : f.root + scriptName;
  // the same path of the same route always gives the same script: a known one keeps its object (params made from
  // it are cached by it, fastcgi-params.ts)
  const script: Script = known.get(f)?.get(normalizedPath)?.script ?? { scriptName, pathInfo, uri, filename };
  const now = Date.now();
  const until = found.get(filename);
  if (!recheck && until !== undefined && until > now) return { ok: true, script };
  const refused = await checkFile(f.root, filename, now);
  if (refused !== null) {
    found.delete(filename); // what a re-check finds wrong holds for every path to this file
    return { ok: false, reason: refused };
  }
  if (found.size >= FOUND_MAX) found.clear();
  found.set(filename, now + FOUND_TTL_MS);
  let paths = known.get(f);
  if (paths === undefined) known.set(f, (paths = new Map()));
  if (paths.size >= FOUND_MAX) paths.clear();
  paths.set(normalizedPath, { script, until: now + FOUND_TTL_MS, rechecking: false });
  foundHook?.(f, normalizedPath, script);
  return { ok: true, script };
}

/** Why `filename` is not served (missing, not a regular file, resolving outside root), or null when it is. */
async function checkFile(rootDir: string, filename: string, now: number): Promise<string | null> {
  try {
    const [root, real] = await Promise.all([realRoot(rootDir, now), realpath(filename)]);
    // a symlink (or the script itself) leading out of root is not served
    if (real !== root && !real.startsWith(root === '/' ? '/' : root + path.sep)) return 'script resolves outside root';
    const st = await stat(real);
    return st.isFile() ? null : 'script is not a regular file';
  } catch (err) {
    return `script not found (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
  }
}
