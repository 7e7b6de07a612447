// Finds the native WebSocket load generator (bench/native/ws-load.cc, built into build/bench/ws-load at `npm install`
// by scripts/build-bench-tools.js), rebuilding it first when its source is newer, and says what it can do (wss or
// not) or why it is missing, so a scenario can fall back to the JS client and its report can say so. No load here.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './paths.js';

export interface NativeWsLoad {
  binary: string;
  /** Built with OpenSSL: takes --tls (wss://). */
  tls: boolean;
}

export type NativeWsLoadStatus = { ok: true; tool: NativeWsLoad } | { ok: false; reason: string };

export const WS_LOAD_BINARY = path.join(ROOT, 'build', 'bench', 'ws-load');

/** Builds the tool when missing or stale (`--if-stale`; g++ takes a few seconds), then asks it what it is. */
export function nativeWsLoad(): NativeWsLoadStatus {
  if (process.env.PORTICO_BENCH_JS_CLIENT === '1') return { ok: false, reason: 'PORTICO_BENCH_JS_CLIENT=1' };
  const build = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-bench-tools.js'), '--if-stale'], { encoding: 'utf8', timeout: 240_000 });
  if (!existsSync(WS_LOAD_BINARY)) {
    const said = (build.stderr ?? '').trim().split('\n').at(-1) ?? '';
    return { ok: false, reason: said.replace(/^portico: /, '') || 'build/bench/ws-load was not built' };
  }
  const v = spawnSync(WS_LOAD_BINARY, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (v.status !== 0) return { ok: false, reason: `build/bench/ws-load does not run: ${(v.stderr || v.error?.message || `exit ${v.status}`).trim()}` };
  let tls = false;
  try {
    tls = (JSON.parse(v.stdout) as { tls?: boolean }).tls === true;
  } catch {
    return { ok: false, reason: `build/bench/ws-load --version printed ${JSON.stringify(v.stdout.slice(0, 80))}` };
  }
  return { ok: true, tool: { binary: WS_LOAD_BINARY, tls } };
}
