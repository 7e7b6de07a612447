// Loads uWebSockets.js (the `uWebSockets.js` alias of @based/uws) once per process, without letting a missing or
// incompatible binary crash the process: terminated WebSocket routes need it, nothing else does. `portico check`
// and start refuse a config with such routes when it cannot load (never a silent slow fallback).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as Uws from 'uWebSockets.js';
import type { Config } from '../config/schema.js';

export type UwsModule = typeof Uws;

export type UwsStatus = { ok: true; uws: UwsModule; build: string } | { ok: false; reason: string };

let status: UwsStatus | undefined;

/** The loaded module and its build ("@based/uws 6.0.1 (uws_linux_x64_115.node)"), or why it did not load. */
export function loadUws(): UwsStatus {
  if (status !== undefined) return status;
  // PORTICO_UWS=0 runs as if the binary did not load (tests of the refusal; a platform without a build)
  if (process.env.PORTICO_UWS === '0') return (status = { ok: false, reason: 'disabled by PORTICO_UWS=0' });
  const require = createRequire(import.meta.url);
  try {
    const uws = require('uWebSockets.js') as UwsModule;
    // the package exports no ./package.json: read it beside the entry point
    const pkg = JSON.parse(readFileSync(path.join(path.dirname(require.resolve('uWebSockets.js')), 'package.json'), 'utf8')) as { name?: string; version?: string };
    const binary = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
    status = { ok: true, uws, build: `${pkg.name ?? 'uWebSockets.js'} ${pkg.version ?? '?'} (${binary})` };
  } catch (err) {
    status = { ok: false, reason: err instanceof Error ? err.message.split('\n')[0] : String(err) };
  }
  return status;
}

/** YAML paths of the routes that terminate WebSockets (websocket.mode: terminate). */
export function terminateRoutePaths(config: Config): string[] {
  const out: string[] = [];
  config.routes.forEach((r, i) => {
    if (r.websocket?.mode === 'terminate') out.push(`routes[${i}].websocket.mode`);
  });
  return out;
}

/** Why this config cannot run here (uWebSockets.js does not load but a route needs it), or undefined. */
export function terminateProblem(config: Config): { path: string; message: string } | undefined {
  const paths = terminateRoutePaths(config);
  if (paths.length === 0) return undefined;
  const s = loadUws();
  if (s.ok) return undefined;
  return { path: paths[0], message: `mode terminate needs uWebSockets.js, which cannot load here: ${s.reason} (use mode: tunnel, or install a build for this platform)` };
}
