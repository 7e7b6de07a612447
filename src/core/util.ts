// Small generic helpers that several rooms used to copy: a promise settled from outside, a no-op listener, a
// plain-object check, a deep freeze, an address/port pair. Nothing here knows about Portico; no I/O, no state.

/** A promise with its resolve and reject, settled from outside. */
export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
  return { promise, resolve, reject };
}

/** An 'error' (or 'data') listener that only keeps the event from being unhandled. */
export function noop(): void {}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Freezes `value` and everything it holds (a config: its readers can never change it); returns it. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** A socket's address and port as one value; none when either is unknown (a closed socket). */
export function endpointOf(address: string | undefined, port: number | undefined): { address: string; port: number } | undefined {
  return address === undefined || port === undefined ? undefined : { address, port };
}

/**
 * Takes `item`, found at index `i`, out of an unordered list whose entries know their own index: the last entry
 * fills the hole and `moved` records its new index. O(1) and allocation-free, unlike a Set with one add and one
 * delete per entry (see ConnectionRegistry). False, with nothing changed, when `item` is not at `i`.
 */
export function removeUnordered<T>(list: T[], i: number, item: T, moved: (entry: T, at: number) => void): boolean {
  if (i < 0 || list[i] !== item) return false;
  const last = list.pop()!;
  if (last !== item) {
    list[i] = last;
    moved(last, i);
  }
  return true;
}

/**
 * An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, as libuv writes one) as its IPv4 text; any other address as it
 * is (a reserved `::ffff:0:1:0:0:ffff` keeps its first part: only the mapped form has the dotted quad).
 */
export function unmapIPv4(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
