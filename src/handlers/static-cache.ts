// The per-worker cache of static-file lookups (nginx's open_file_cache): a candidate path -> what resolving it
// found (a regular file inside the root with its validators, type and, when small, its bytes and compressed
// forms; a folder; or a refusal), used for `valid` ms, then looked up again; least recently used dropped past
// `entries` or `memory` bytes. It does no I/O and holds no file descriptors (static-open.ts opens files).
import type { StaticCacheConfig } from '../config/static-cache.js';
import type { FileIdentity } from './static-open.js';

export interface CachedFile extends FileIdentity {
  readonly kind: 'file';
  /** Whole seconds of the mtime (what Last-Modified and If-Modified-Since compare). */
  readonly mtime: number;
  readonly contentType: string;
  /** `mtime-size` in hex, as nginx: the ETag without quotes and coding suffix. */
  readonly etagCore: string;
  readonly lastModified: string;
  /** The file's bytes when it is at most file_size, else null (read per request). */
  readonly body: Buffer | null;
  /** Memory this entry holds (body, compressed forms, ready answers), in bytes. */
  bytes: number;
  /** Compressed forms of `body`, by "coding:level"; a null value: compressing did not pay (not smaller). */
  variants: Map<string, Buffer | null> | null;
  /** Handler-owned memo of the last answer built from this entry (a ready head+body), counted in `bytes`. */
  memo: unknown;
  expires: number;
}

export interface CachedFolder {
  readonly kind: 'folder';
  readonly real: string;
  bytes: number;
  expires: number;
}

export interface CachedRefusal {
  readonly kind: 'refused';
  readonly status: 403 | 404;
  bytes: number;
  expires: number;
}

export type CacheEntry = CachedFile | CachedFolder | CachedRefusal;

export type CacheLimits = Pick<StaticCacheConfig, 'entries' | 'valid' | 'errors' | 'file_size' | 'memory'>;

export class StaticCache {
  readonly limits: CacheLimits;
  readonly #now: () => number;
  /** Insertion order is recency order: a hit moves its key to the end, eviction takes from the front. */
  readonly #map = new Map<string, CacheEntry>();
  #bytes = 0;
  /** Lookups answered by a valid entry, and the others (for metrics). */
  hits = 0;
  misses = 0;

  constructor(limits: CacheLimits, now: () => number = Date.now) {
    this.limits = limits;
    this.#now = now;
  }

  /** Entries held now. */
  get size(): number {
    return this.#map.size;
  }

  /** Bytes of file contents and compressed forms held now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The entry for `key` while it is valid (and now the most recently used), else undefined. */
  get(key: string): CacheEntry | undefined {
    const e = this.#map.get(key);
    if (e === undefined || e.expires <= this.#now()) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.#map.delete(key);
    this.#map.set(key, e);
    return e;
  }

  /** The expired entry for `key`, removed: a revalidation may keep its bytes when the file is unchanged. */
  takeStale(key: string): CacheEntry | undefined {
    const e = this.#map.get(key);
    if (e === undefined || e.expires > this.#now()) return undefined;
    this.#drop(key, e);
    return e;
  }

  /** Remembers `e` for `valid` ms from now (refusals only with `errors`); returns whether it is held. */
  put(key: string, e: CacheEntry): boolean {
    const old = this.#map.get(key);
    if (old !== undefined) this.#drop(key, old);
    if (this.limits.entries === 0 || (e.kind === 'refused' && !this.limits.errors) || e.bytes > this.limits.memory) return false;
    e.expires = this.#now() + this.limits.valid;
    this.#map.set(key, e);
    this.#bytes += e.bytes;
    this.#trim();
    return this.#map.get(key) === e;
  }

  /** Forgets `key` (its file changed under a cached lookup). */
  delete(key: string): void {
    const e = this.#map.get(key);
    if (e !== undefined) this.#drop(key, e);
  }

  /** `e` (held under `key`) now holds `delta` more bytes; false when it is no longer held (the caller keeps nothing). */
  charge(key: string, e: CacheEntry, delta: number): boolean {
    if (this.#map.get(key) !== e) return false;
    e.bytes += delta;
    this.#bytes += delta;
    this.#trim();
    return this.#map.get(key) === e;
  }

  /** Drops every entry (a reload with another cache config). */
  clear(): void {
    this.#map.clear();
    this.#bytes = 0;
  }

  #trim(): void {
    while (this.#map.size > this.limits.entries || this.#bytes > this.limits.memory) {
      const first = this.#map.entries().next();
      if (first.done === true) return;
      this.#drop(first.value[0], first.value[1]);
    }
  }

  #drop(key: string, e: CacheEntry): void {
    this.#map.delete(key);
    this.#bytes -= e.bytes;
  }
}
