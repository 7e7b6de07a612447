// One worker onto one config: the apply message with the sockets it needs (kept, bound by it, or handed over),
// its answer or timeout, and bringing a slot up on the served config (at boot, or when it started mid-reload).
// Whether a config is taken by the instance at all is the reload transaction's decision (reload.ts), not this.
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { planListeners } from '../config/reload.js';
import type { DiscoveredSets } from '../upstream/sticky.js';
import type { ApplyMessage, ListenerAssignment } from '../worker/ipc.js';
import { learnPorts } from './listeners.js';
import type { LoadShare } from './load-share.js';
import type { ApplyResult, PendingApply, PrimaryState, Served, WorkerSlot } from './state.js';
import { send } from './supervisor.js';
import type { Targets } from './targets.js';

/** A worker that has not applied a config this long after it was sent fails the reload (which is rolled back). */
const APPLY_TIMEOUT_MS = 30_000;

export class ConfigApply {
  readonly #state: PrimaryState;
  readonly #targets: Targets;
  readonly #loadShare: LoadShare;
  readonly #ticketKeys = randomBytes(48).toString('base64');
  /** Sticky cookie key for upstreams without `balance.secret`: one per instance, kept across reloads. */
  readonly #stickySecret = randomBytes(32).toString('base64');
  #applySeq = 0;

  constructor(state: PrimaryState, targets: Targets, loadShare: LoadShare) {
    this.#state = state;
    this.#targets = targets;
    this.#loadShare = loadShare;
  }

  /**
   * Sends `slot` the config the instance serves and, when it is applied, brings the slot up (first apply) or
   * to the config a reload committed meanwhile.
   */
  applyServed(slot: WorkerSlot, child: ChildProcess): void {
    const served = this.#state.served;
    void this.apply(slot, child, served, this.#targets.liveSets()).then((result) => {
      if (slot.child !== child) return;
      if (!result.ok) {
        // at boot the worker exits by itself and is restarted; on a later apply it keeps its config
        if (!result.gone && slot.state === 'starting') slot.bootError = result.error;
        if (!result.gone) this.#state.log.error({ worker: slot.id, generation: served.generation, error: result.error }, 'worker did not apply the config');
        return;
      }
      learnPorts(served, result.ports);
      this.#loadShare.sendRemoteLoad(slot, child);
      if (slot.state === 'starting') {
        slot.state = 'ready';
        slot.ready?.resolve();
        this.#state.log.info({ worker: slot.id, workerPid: child.pid }, 'worker ready');
      }
      this.catchUp(slot);
    });
  }

  /** A worker that is not on the served config (it started during a reload) gets it, unless a reload runs. */
  catchUp(slot: WorkerSlot): void {
    const child = slot.child;
    if (child === null || !slot.booted || slot.applying !== null || this.#state.reloading || this.#state.stopping || slot.generation === this.#state.served.generation) return;
    this.applyServed(slot, child);
  }

  /**
   * Asks a worker to serve `target` with the discovered targets `discovered`, and with the sockets it needs: it
   * keeps those whose key it has, binds or receives the others, and closes the rest. Settles when it answered,
   * exited, or after APPLY_TIMEOUT_MS.
   */
  apply(slot: WorkerSlot, child: ChildProcess, target: Served, discovered: DiscoveredSets): Promise<ApplyResult> {
    slot.applying?.finish({ ok: false, gone: false, error: 'superseded by a newer apply', errors: [] });
    const seq = ++this.#applySeq;
    const plan = planListeners(slot.listenerKeys, target.config.listeners);
    const listeners = plan.entries.map((e): ListenerAssignment => {
      if (e.keep) return { index: e.index, key: e.key, via: 'keep' };
      if (this.#state.strategy === 'shared-handle') return { index: e.index, key: e.key, via: 'handle' };
      return { index: e.index, key: e.key, via: 'reuse-port', host: target.config.listeners[e.index].address.host, port: target.listeners[e.index].port };
    });
    const msg: ApplyMessage = {
      type: 'apply', seq, generation: target.generation, file: this.#state.configFile, config: target.config, listeners, ticketKeys: this.#ticketKeys, stickySecret: this.#stickySecret,
      discovered: { ...discovered },
    };
    return new Promise<ApplyResult>((resolve) => {
      const timer = setTimeout(() => pending.finish({ ok: false, gone: false, error: `worker ${slot.id} did not apply the config within ${APPLY_TIMEOUT_MS / 1000}s`, errors: [] }), APPLY_TIMEOUT_MS);
      const pending: PendingApply = {
        seq,
        generation: target.generation,
        keys: new Set(plan.entries.map((e) => e.key)),
        finish(result) {
          clearTimeout(timer);
          if (slot.applying === pending) slot.applying = null;
          resolve(result);
        },
      };
      slot.applying = pending;
      const failed = (err: unknown): void => pending.finish({ ok: false, gone: false, error: `could not send the config to worker ${slot.id}: ${(err as Error).message}`, errors: [] });
      send(child, msg).catch(failed);
      for (const a of listeners) {
        if (a.via !== 'handle') continue;
        const handle = target.listeners[a.index].handle;
        if (handle === null) failed(new Error(`listener ${a.key} has no bound socket`));
        else handle.sendTo(child, { type: 'listen-handle', seq, index: a.index }).catch(failed);
      }
    });
  }
}
