// What workers must know of each other to balance as one: least_conn load (each worker's open requests and
// tunnels per target, summed and sent to the others, at most once per flush window) and sticky pins (open
// tunnels per hash key across workers, upstream/sticky.ts). It aggregates and sends; it decides no route.
import type { ChildProcess } from 'node:child_process';
import { StickyAggregate, type PinUpdate } from '../upstream/sticky.js';
import type { TargetLoad } from '../worker/ipc.js';
import type { PrimaryState, WorkerSlot } from './state.js';
import { send, type Supervisor } from './supervisor.js';

/**
 * Load reports arriving within this window are summed and fanned out once: with N workers each reporting at
 * most every 100 ms, the primary sends at most N messages per window instead of N per report.
 */
const LOAD_FLUSH_MS = 25;

export class LoadShare {
  readonly #state: PrimaryState;
  readonly #supervisor: Supervisor;
  /** Open tunnels per hash key across workers, and the pins they cause (upstream/sticky.ts). */
  readonly #sticky = new StickyAggregate();
  #loadFlush: NodeJS.Timeout | null = null;

  constructor(state: PrimaryState, supervisor: Supervisor) {
    this.#state = state;
    this.#supervisor = supervisor;
  }

  get sticky(): StickyAggregate {
    return this.#sticky;
  }

  sendPins(child: ChildProcess, updates: PinUpdate[]): void {
    if (updates.length === 0) return;
    send(child, { type: 'pins', updates }).catch((err: unknown) => this.#state.log.debug({ err }, 'could not send sticky pins to a worker'));
  }

  broadcastPins(updates: PinUpdate[]): void {
    if (updates.length > 0) this.#supervisor.broadcast({ type: 'pins', updates });
  }

  scheduleLoadFlush(): void {
    if (this.#loadFlush !== null || this.#state.stopping) return;
    this.#loadFlush = setTimeout(() => {
      this.#loadFlush = null;
      for (const slot of this.#supervisor.slots) if (slot.child !== null && slot.booted) this.sendRemoteLoad(slot, slot.child);
    }, LOAD_FLUSH_MS);
    this.#loadFlush.unref();
  }

  /**
   * Sends `slot` the sum of every other live worker's load, per upstream and target, when it changed. Counts
   * are positions in target lists: only workers on the same config generation are added up.
   */
  sendRemoteLoad(slot: WorkerSlot, child: ChildProcess): void {
    const generation = slot.generation;
    if (generation === 0) return;
    const remote = new Map<string, number[]>();
    for (const other of this.#supervisor.slots) {
      if (other === slot || other.child === null || other.load === null || other.loadGeneration !== generation) continue;
      for (const [upstream, counts] of other.load) {
        let sum = remote.get(upstream);
        if (sum === undefined) remote.set(upstream, (sum = []));
        for (let i = 0; i < counts.length; i++) sum[i] = (sum[i] ?? 0) + counts[i];
      }
    }
    // fromEntries defines own properties: an upstream named "__proto__" stays data.
    const load: TargetLoad = Object.fromEntries(remote);
    const text = `${generation}:${JSON.stringify(load)}`;
    if (text === slot.remoteSent) return;
    slot.remoteSent = text;
    send(child, { type: 'remote-load', generation, load }).catch((err: unknown) => this.#state.log.debug({ err, worker: slot.id }, 'could not send the remote load to a worker'));
  }

  /** A worker exited: its tunnels no longer hold pins, and the others stop counting its requests and tunnels. */
  workerExited(slot: WorkerSlot): void {
    // its tunnels are gone with it: their keys no longer hold pins
    this.broadcastPins(this.#sticky.dropWorker(slot.id));
    // Its requests and tunnels are gone with it: the other workers stop counting them.
    if (slot.load !== null) {
      slot.load = null;
      this.scheduleLoadFlush();
    }
  }

  stop(): void {
    if (this.#loadFlush !== null) clearTimeout(this.#loadFlush);
    this.#loadFlush = null;
  }
}
