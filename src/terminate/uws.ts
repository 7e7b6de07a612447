// Loads uWebSockets.js (the `uWebSockets.js` alias of @based/uws) once per process, without letting a missing or
// incompatible binary crash the process: terminated WebSocket routes need it, nothing else does. `portico check`
// and start refuse a config with such routes when it cannot load (never a silent slow fallback).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as Uws from 'uWebSockets.js';
import type { Config } from '../config/schema.js';
import { prefaceBeforeTls } from '../accept/preface.js';
import { native, nativeStatus } from '../native/addon.js';

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

/** YAML paths of the terminate routes that ask for `handoff: adopt`. */
export function adoptRoutePaths(config: Config): string[] {
  const out: string[] = [];
  config.routes.forEach((r, i) => {
    if (r.websocket?.mode === 'terminate' && r.websocket.handoff === 'adopt') out.push(`routes[${i}].websocket.handoff`);
  });
  return out;
}

/** uWebSockets.js's adoptSocket: in the binary (App and SSLApp) but not in the package's typings. */
export type AdoptingApp = Uws.TemplatedApp & { adoptSocket?: (fd: number) => Uws.TemplatedApp };

/**
 * Why `handoff: adopt` cannot work on this machine at all, or undefined: the uWS build has no adoptSocket, the
 * native addon is missing or predates peek mode, or the kernel cannot peek TCP at an offset (Linux < 6.10).
 * PORTICO_NATIVE_IO=0 is not a problem here: an operator's switch, logged per listener at start (adoptNotes).
 */
export function adoptUnavailable(uws: UwsModule): string | undefined {
  if (typeof (uws.App() as AdoptingApp).adoptSocket !== 'function') return 'this uWebSockets.js build has no adoptSocket';
  const addon = native() as { ioPeekSupported?: () => boolean } | undefined;
  if (addon === undefined) return `the native addon is not loaded (${nativeStatus().reason ?? 'disabled'})`;
  if (addon.ioPeekSupported === undefined) return 'the native addon predates peek mode (rebuild it: npm run build:native)';
  if (!addon.ioPeekSupported()) return 'this kernel cannot peek TCP at an offset (SO_PEEK_OFF on TCP needs Linux >= 6.10)';
  return undefined;
}

/** Why this config cannot run here (uWebSockets.js does not load but a route needs it, or adopt cannot work), or undefined. */
export function terminateProblem(config: Config): { path: string; message: string } | undefined {
  const paths = terminateRoutePaths(config);
  if (paths.length === 0) return undefined;
  const s = loadUws();
  if (!s.ok) return { path: paths[0], message: `mode terminate needs uWebSockets.js, which cannot load here: ${s.reason} (use mode: tunnel, or install a build for this platform)` };
  const adopt = adoptRoutePaths(config);
  if (adopt.length === 0) return undefined;
  const why = adoptUnavailable(s.uws);
  if (why === undefined) return undefined;
  return { path: adopt[0], message: `handoff: adopt cannot work here: ${why} (use handoff: relay)` };
}

/**
 * The listeners where `handoff: adopt` routes keep the relay hop, each with the reason (logged at start and on
 * each reload, one line per listener): TLS (uWS would need the TLS Portico terminated), a PROXY header (read
 * before routing), a tcp listener, or native I/O turned off.
 */
export function adoptFallbacks(config: Config, nativeIo: boolean): Array<{ listener: number; reason: string }> {
  if (adoptRoutePaths(config).length === 0) return [];
  const out: Array<{ listener: number; reason: string }> = [];
  config.listeners.forEach((l, i) => {
    if (l.mode === 'tcp') return;
    let reason: string | undefined;
    if (l.tls !== undefined) reason = 'TLS listener: Portico terminates TLS, so the relay hop stays';
    else if (l.proxy_protocol !== undefined) reason = 'PROXY protocol listener: the header is read before routing, so the relay hop stays';
    else if (!nativeIo) reason = 'native socket I/O is off (PORTICO_NATIVE_IO=0), so the relay hop stays';
    if (reason !== undefined) out.push({ listener: i, reason });
  });
  return out;
}

/**
 * The TLS listeners whose terminated WebSockets take the JS relay on the hop into uWS, each with the reason
 * (logged at start and on each reload, one line per listener): where Node's TLS terminates the client (native
 * TLS off or unavailable, or a preface read first on a kernel that cannot peek TCP: accept-paths.ts acceptModeOf),
 * the addon's TLS relay cannot take the connection. Elsewhere the hop runs on the addon's threads (handoff.ts); a
 * connection that still cannot is logged once.
 */
export function terminateHopFallbacks(config: Config, nativeTls: { available: boolean; reason?: string }, peek: boolean): Array<{ listener: number; reason: string }> {
  if (terminateRoutePaths(config).length === 0) return [];
  const out: Array<{ listener: number; reason: string }> = [];
  config.listeners.forEach((l, i) => {
    if (l.mode === 'tcp' || l.tls === undefined || (l.tls.certificates.length === 0 && l.tls.acme === undefined)) return;
    const preface = prefaceBeforeTls(l);
    if (!nativeTls.available) out.push({ listener: i, reason: `Node's TLS terminates here (${nativeTls.reason ?? 'native TLS unavailable'}), so the hop into uWebSockets.js is relayed in JavaScript` });
    else if (!peek && preface !== undefined) out.push({ listener: i, reason: `${preface} is read first and this kernel cannot peek TCP: Node's TLS terminates after it, so the hop into uWebSockets.js is relayed in JavaScript` });
  });
  return out;
}
