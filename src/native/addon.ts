// Loads the optional native addon (build/Release/portico_native.node, built from src/native/*.cc) once, and
// keeps why it is not there. Callers branch on `native()` returning undefined; nothing here throws on a
// missing or broken build. PORTICO_NATIVE=0 disables it. Only this module knows the addon's file and typings.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClosedBy } from '../core/socket.js';

export interface SpliceStats {
  bytesUp: number;
  bytesDown: number;
  /** The pipe holds bytes the destination does not take (backpressure), per direction. */
  upBlocked: boolean;
  downBlocked: boolean;
}

/** The splice relay's pipe pool (one per process, the relay thread's). */
export interface PipePoolStats {
  /** Pipes that exist: free in the pool or holding bytes of a tunnel. */
  open: number;
  /** Pipes holding bytes of a tunnel now. */
  inUse: number;
  /** limits.max_pipes: the most pipes that may exist at once. */
  cap: number;
  /** Reads copied through a small user-space buffer because no pipe could be had (cap reached, pipe2 failed). */
  copies: number;
  /** pipe2 failures (EMFILE, ENFILE, ENOMEM). */
  pipeErrors: number;
}

/** The addon's exports (src/native/addon.cc). */
export interface NativeAddon {
  /** A listening SO_REUSEPORT TCP socket on an IP literal, for `server.listen({ fd })` (Node then owns it). */
  reusePortListen(host: string, port: number, backlog: number): number;
  /** A close-on-exec copy of `fd`; the caller owns it. */
  dup(fd: number): number;
  close(fd: number): void;
  /** Bytes waiting on `fd` without consuming them; empty = FIN; null = nothing yet. */
  recvPeek(fd: number, n: number): Buffer | null;
  /**
   * Takes both fds (also when it throws); `onEnd` runs once on the JS thread after both are closed.
   * `websocket`: the tunnel carries WebSocket frames (`up`/`down`: bytes each way already relayed before).
   */
  spliceStart(
    clientFd: number,
    upstreamFd: number,
    idleMs: number,
    onEnd: (reason: ClosedBy, bytesUp: number, bytesDown: number, errno: number) => void,
    websocket?: { up: Buffer | null; down: Buffer | null },
    /** false: the relay ends at the first FIN either way (listener `half_close: false`); default true. */
    halfClose?: boolean,
    /** Half-closed and silent this long (ms): the relay ends with "half_closed_timeout" (absent or 0: never). */
    halfClosedMs?: number,
  ): number;
  /**
   * Two connections of the native I/O (NativeSocket ioIds) go to the splice relay as they are: their fds leave
   * the I/O unclosed (no dup), with TCP keep-alive after `keepAliveSeconds` of silence when > 0. 0: nothing was
   * taken (not plain connected sockets, bytes still queued natively, or the relay could not start): both are as
   * they were. Else as spliceStart. Absent from addons built before it.
   */
  spliceTakeIo?(
    clientIoId: number,
    upstreamIoId: number,
    idleMs: number,
    keepAliveSeconds: number,
    onEnd: (reason: ClosedBy, bytesUp: number, bytesDown: number, errno: number) => void,
    websocket?: { up: Buffer | null; down: Buffer | null },
    halfClose?: boolean,
    halfClosedMs?: number,
  ): number;
  /** End of the shutdown grace: Close 1001 each way at frame boundaries (a raw relay is closed); false once ended. */
  spliceGoingAway(id: number): boolean;
  /** Asks the relay thread to close; false when the relay has already ended. */
  spliceClose(id: number, reason: ClosedBy): boolean;
  spliceStats(id: number): SpliceStats | null;
  /** A raw relay stops (true) or restarts reading one direction (0 client -> upstream, 1 back); false once ended. Absent from older builds. */
  splicePause?(id: number, direction: 0 | 1, paused: boolean): boolean;
  status(): { active: number; callbacks: number; endsDelivered: number; endWakes: number };
  /** Most pipes the relay's pool may hold at once; above it a tunnel's bytes are copied through a small buffer. */
  setPipeCap(n: number): void;
  pipeStats(): PipePoolStats;
  /** Raises the soft RLIMIT_NOFILE to the hard one; -1 = unlimited. Throws a system error on failure. */
  raiseFdLimit(): { soft: number; hard: number; before: number };
  /** How many of the descriptors 0..below-1 are open (one poll(); JS thread only). */
  countOpenFds(below: number): number;
}

export interface NativeStatus {
  native: boolean;
  /** Why the addon is not in use (disabled, not built, failed to load). */
  reason?: string;
}

const FILE = path.join('build', 'Release', 'portico_native.node');

let loaded: { addon: NativeAddon | undefined; status: NativeStatus } | undefined;

/** The package root: the nearest folder above this module holding package.json (works from src/ and dist/src/). */
function packageRoot(): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}

function load(): { addon: NativeAddon | undefined; status: NativeStatus } {
  if (process.env.PORTICO_NATIVE === '0') return { addon: undefined, status: { native: false, reason: 'disabled by PORTICO_NATIVE=0' } };
  if (process.platform !== 'linux') return { addon: undefined, status: { native: false, reason: `no native addon on ${process.platform} (splice(2) is Linux only)` } };
  const root = packageRoot();
  // PORTICO_NATIVE_ADDON: another build of the same addon (CI's AddressSanitizer build, scripts/asan.sh)
  const file = process.env.PORTICO_NATIVE_ADDON ?? (root === undefined ? undefined : path.join(root, FILE));
  if (file === undefined || !existsSync(file)) {
    return { addon: undefined, status: { native: false, reason: `${FILE} not built (npm install builds it when g++, make and python3 are present; see its output)` } };
  }
  try {
    const addon = createRequire(import.meta.url)(file) as NativeAddon;
    return { addon, status: { native: true } };
  } catch (err) {
    return { addon: undefined, status: { native: false, reason: `${FILE} failed to load: ${err instanceof Error ? err.message : String(err)}` } };
  }
}

/** The addon, or undefined when it is disabled, not built or broken (see nativeStatus()). */
export function native(): NativeAddon | undefined {
  loaded ??= load();
  return loaded.addon;
}

/** Whether the addon is in use, and why not; for the startup warning and the admin status. */
export function nativeStatus(): NativeStatus {
  loaded ??= load();
  return loaded.status;
}
