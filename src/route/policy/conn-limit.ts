// Open client connections per client key (IPv4 address or IPv6 prefix, see client-address.ts) in one worker,
// for `limits.connections_per_ip`. An entry lives while its key has connections open, so the table is bounded
// by the open connections themselves (that is, by the fd limit). Pure counting: the caller refuses and logs.

export class ConnectionsPerClient {
  readonly #open = new Map<string, number>();

  /** Keys with at least one connection counted. */
  get size(): number {
    return this.#open.size;
  }

  /** Connections counted for `key`. */
  count(key: string): number {
    return this.#open.get(key) ?? 0;
  }

  /** Counts a connection of `key` when it has fewer than `max` open; false (nothing counted) when it has not. */
  acquire(key: string, max: number): boolean {
    const n = this.#open.get(key) ?? 0;
    if (n >= max) return false;
    this.#open.set(key, n + 1);
    return true;
  }

  /** A counted connection of `key` closed. */
  release(key: string): void {
    const n = this.#open.get(key);
    if (n === undefined) return;
    if (n <= 1) this.#open.delete(key);
    else this.#open.set(key, n - 1);
  }
}
