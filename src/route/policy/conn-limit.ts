// Open client connections per client key (IPv4 address or IPv6 prefix, see client-address.ts) in one worker,
// for `limits.connections_per_ip`. An entry lives while its key has connections open, so the table is bounded
// by the open connections themselves (that is, by the fd limit). Pure counting: the caller refuses and logs.
// Where the addon is loaded the table is the addon's (src/native/clients.ts): its L4 listeners count their
// connections in the same one (its id: `nativeTable`); else a Map here.
import { nativeClients, type ClientTableAddon } from '../../native/clients.js';

export class ConnectionsPerClient {
  readonly #open = new Map<string, number>();
  readonly #addon: ClientTableAddon | undefined;
  /** The addon's table these connections count in (an L4 compile's `limit.table`); undefined: the Map. */
  readonly nativeTable: number | undefined;

  /** `native: false` keeps the count in JavaScript even where the addon is loaded. */
  constructor(options: { native?: boolean } = {}) {
    this.#addon = options.native === false ? undefined : nativeClients();
    this.nativeTable = this.#addon?.clientTable();
  }

  /** Keys with at least one connection counted. */
  get size(): number {
    if (this.nativeTable !== undefined) return this.#addon!.clientSize(this.nativeTable);
    return this.#open.size;
  }

  /** Connections counted for `key`. */
  count(key: string): number {
    if (this.nativeTable !== undefined) return this.#addon!.clientCount(this.nativeTable, key);
    return this.#open.get(key) ?? 0;
  }

  /** Counts a connection of `key` when it has fewer than `max` open; false (nothing counted) when it has not. */
  acquire(key: string, max: number): boolean {
    if (this.nativeTable !== undefined) return this.#addon!.clientAcquire(this.nativeTable, key, max);
    const n = this.#open.get(key) ?? 0;
    if (n >= max) return false;
    this.#open.set(key, n + 1);
    return true;
  }

  /** A counted connection of `key` closed. */
  release(key: string): void {
    if (this.nativeTable !== undefined) return this.#addon!.clientRelease(this.nativeTable, key);
    const n = this.#open.get(key);
    if (n === undefined) return;
    if (n <= 1) this.#open.delete(key);
    else this.#open.set(key, n - 1);
  }
}
