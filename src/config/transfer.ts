// The validated Config as it travels from the primary to a worker in the 'apply' message (the IPC channel carries
// JSON): which values JSON would not carry as they are (load.ts refuses such a config), and the frozen Config a
// worker serves. A worker never parses or validates a config: it serves what the primary accepted, and so starts
// without yaml and zod. Imports nothing that validates (it is on the worker's start path).
import { deepFreeze, isPlainObject } from '../core/util.js';
import type { Config } from './schema.js';

/** A config is a shallow tree (some 8 levels); deeper is a cycle or a mistake. */
const MAX_DEPTH = 32;

/**
 * The path of the first value in `value` that would not reach a worker as it is, with what it is; undefined when
 * all would. JSON drops a key whose value is undefined: a worker reads that key as absent, which a config's
 * reader cannot tell from undefined. An array slot of undefined (null after JSON), a number that is not finite
 * (null), and anything but a plain object, array, string, number, boolean or null would change.
 */
export function transferProblem(value: unknown, at: ReadonlyArray<string | number> = []): string | undefined {
  const where = (): string => at.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`)).join('') || '(the config)';
  if (at.length > MAX_DEPTH) return `${where()}: nested deeper than ${MAX_DEPTH}`;
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return undefined;
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : `${where()}: ${value} (JSON carries finite numbers only)`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      if (item === undefined) return `${where()}[${i}]: undefined in a list`;
      const problem = transferProblem(item, [...at, i]);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  if (isPlainObject(value)) {
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return `${where()}: a ${(value as { constructor?: { name?: string } }).constructor?.name ?? 'non-plain object'}, not a plain object`;
    for (const [key, v] of Object.entries(value)) {
      if (v === undefined) continue;
      const problem = transferProblem(v, [...at, key]);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  return `${where()}: a ${typeof value}`;
}

/** The config of an 'apply' message (the primary's Config after JSON), frozen like the one load.ts returns. */
export function receivedConfig(value: Config): Config {
  return deepFreeze(value);
}
