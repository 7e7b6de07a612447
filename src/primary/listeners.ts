// The primary's side of listening: checks certificates before anything starts, refuses a port another process
// listens on, binds new listeners (shared-handle) or leaves them to the workers (reuse-port), keeps those a
// reload does not change, and learns the ports workers bound for port 0. It never accepts a connection.
import { bindShared, defaultBacklog, type ListenStrategy } from '../accept/listener.js';
import { describeConflict, findListenConflict, parentOf } from '../accept/port-owner.js';
import { loadCertificates } from '../accept/tls.js';
import { readFileSync } from 'node:fs';
import { validityWarning } from '../config/pem-check.js';
import { listenerKeys } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import type { ListenerState, Served } from './state.js';

/** Whose sockets are not a conflict: this process, its workers, and a primary it takes over from. */
export interface PortOwners {
  readonly strategy: ListenStrategy;
  /** The pids of this instance's worker processes now. */
  workerPids(): number[];
  readonly handoverFrom: number | undefined;
}

/**
 * Throws (one line: the port and who holds it) when another process listens where `host:port` would bind:
 * SO_REUSEPORT would otherwise let this instance share the port with it and take part of its traffic.
 */
function refuseTakenPort(host: string, port: number, owners: PortOwners): void {
  const own = new Set<number>([process.pid, ...owners.workerPids()]);
  const handover = owners.handoverFrom;
  const mine = (pid: number) => own.has(pid) || (handover !== undefined && (pid === handover || parentOf(pid) === handover));
  const conflict = findListenConflict(host, port, mine);
  if (conflict !== undefined) throw new Error(describeConflict(host, port, conflict));
}

/**
 * Throws (with the file name) when a certificate of `config` cannot be used; warns (at start and on reload, as
 * `check` does) about expired, expiring and not yet valid ones.
 */
export function checkCertificates(config: Config, log: Logger): void {
  for (const listener of config.listeners) {
    if (listener.tls === undefined) continue;
    for (const cert of loadCertificates(listener.tls)) {
      const warning = validityWarning(readFileSync(cert.certFile, 'utf8'), Date.now());
      if (warning !== undefined) log.warn({ cert: cert.certFile, notAfter: cert.notAfter.toISOString() }, warning);
    }
  }
}

/**
 * The listeners of `config`: those whose key (address) is in `running` keep their state (the primary's bound
 * socket, the resolved port); new ones are bound now (shared-handle) or left to the workers (reuse-port).
 * On failure, what was bound here is closed again.
 */
export async function prepareListeners(config: Config, running: readonly ListenerState[], owners: PortOwners): Promise<{ states: ListenerState[]; fresh: ListenerState[] }> {
  const byKey = new Map(running.map((l) => [l.key, l]));
  const keys = listenerKeys(config.listeners);
  const states: ListenerState[] = [];
  const fresh: ListenerState[] = [];
  try {
    for (const [i, listener] of config.listeners.entries()) {
      const tls = listener.tls !== undefined;
      const kept = byKey.get(keys[i]);
      if (kept !== undefined) {
        states.push({ key: kept.key, handle: kept.handle, address: kept.address, port: kept.port, tls });
        continue;
      }
      refuseTakenPort(listener.address.host, listener.address.port, owners);
      let state: ListenerState;
      if (owners.strategy === 'shared-handle') {
        const handle = await bindShared(listener.address.host, listener.address.port);
        state = { key: keys[i], handle, address: handle.bound.address, port: handle.bound.port, tls };
      } else {
        state = { key: keys[i], handle: null, address: listener.address.host, port: listener.address.port, tls };
      }
      fresh.push(state);
      states.push(state);
    }
  } catch (err) {
    await Promise.all(fresh.map((l) => l.handle?.close()));
    throw err;
  }
  return { states, fresh };
}

/** reuse-port: ports the first worker bound for port-0 listeners; the next workers join them. */
export function learnPorts(served: Served, ports: readonly number[]): void {
  served.listeners.forEach((l, i) => {
    if (l.port === 0 && ports[i] !== undefined) l.port = ports[i];
  });
}

/** The listeners as the `listening` line, reloads and /status show them. */
export function listenerReport(served: Served): Array<{ address: string; port: number; tls: boolean; backlog: number }> {
  const configured = served.config.listeners;
  return served.listeners.map((l, i) => ({ address: l.address, port: l.port, tls: l.tls, backlog: configured[i]?.backlog ?? defaultBacklog() }));
}
