// What the primary's parts share: the served config and its listeners, the worker slots, the instance's
// lifecycle flags, and the types of an apply in flight. Types, the one state object and the announce logger:
// no I/O, no timers (each part owns its own state; this is what more than one of them reads or writes).
import type { ChildProcess } from 'node:child_process';
import type { ListenStrategy, SharedHandle } from '../accept/listener.js';
import type { AdminServer } from '../admin/server.js';
import type { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import type { Deferred } from '../core/util.js';
import type { WorkerStats } from '../worker/ipc.js';

export type SlotState = 'starting' | 'ready' | 'restarting' | 'stopping' | 'exited';

/** What a worker said about an apply; `gone`: it exited first (its replacement gets the current config). */
export type ApplyResult = { ok: true; ports: number[] } | { ok: false; gone: boolean; error: string; errors: ConfigError[] };

/** An apply sent to a worker and not answered yet. */
export interface PendingApply {
  readonly seq: number;
  readonly generation: number;
  /** Listener keys the worker has open once it applied. */
  readonly keys: ReadonlySet<string>;
  finish(result: ApplyResult): void;
}

/** One listener of the running (or the next) config, as the primary holds it. */
export interface ListenerState {
  readonly key: string;
  /** shared-handle: the primary's bound socket; null with reuse-port (each worker binds its own). */
  readonly handle: SharedHandle | null;
  readonly address: string;
  /** reuse-port with port 0: resolved by the first worker that binds it. */
  port: number;
  readonly tls: boolean;
}

/** A config the workers are (to be) on. */
export interface Served {
  readonly generation: number;
  readonly config: Config;
  readonly listeners: readonly ListenerState[];
}

/** One worker position (id 1..N); its process changes on every restart. */
export interface WorkerSlot {
  readonly id: number;
  child: ChildProcess | null;
  state: SlotState;
  booted: boolean;
  startedAt: number;
  restarts: number;
  backoffMs: number;
  restartTimer: NodeJS.Timeout | null;
  /** Settled when this process accepts on every listener, or exits first. */
  ready: Deferred | null;
  /** Why its first apply failed (a port it could not bind...): the reason a start fails, said in one line. */
  bootError: string | null;
  pendingStats: Map<number, (stats: WorkerStats | null) => void>;
  lastStats: WorkerStats | null;
  /** This process's last load report (its own open requests + tunnels per target); null before the first. */
  load: Map<string, number[]> | null;
  /** The config generation `load` counts positions of. */
  loadGeneration: number;
  /** The other workers' load as last sent to this process, serialized with its generation; '' = none. */
  remoteSent: string;
  /** The config generation this process serves (0 before its first apply). */
  generation: number;
  /** Listener keys this process has sockets for. */
  listenerKeys: ReadonlySet<string>;
  applying: PendingApply | null;
}

/** The instance's shared state, one object the Primary creates and hands to each of its parts. */
export interface PrimaryState {
  /** The config every worker serves (or gets when it starts); replaced as a whole by a reload. */
  served: Served;
  readonly configFile: string;
  log: Logger;
  /** Built-in reusePort (Node >= 22.12), the addon's SO_REUSEPORT socket, else a handle shared by the primary. */
  readonly strategy: ListenStrategy;
  admin: AdminServer | null;
  /** Certificates, sockets, admin and sidecars exist (or failed): shutdown may finish only after this. */
  prepared: boolean;
  started: boolean;
  stopping: boolean;
  /** A reload transaction runs (workers may be on two configs). */
  reloading: boolean;
}

/** Lines tools rely on (listening, reloads) are written even when log.level is above info. */
export function announce(state: PrimaryState): Logger {
  const log = state.log;
  return log.isLevelEnabled('info') || state.served.config.log.level === 'silent' ? log : log.child({}, { level: 'info' });
}
