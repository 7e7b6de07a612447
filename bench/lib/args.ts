// Command-line options of every bench entry point and child program: one strict parser (node:util parseArgs),
// so each declares its flags once and reads them with bounds; an unknown flag or a bad value throws with the
// usage text before anything starts. `--help`/`-h` prints the usage and exits 0. No defaults of any scenario here.
import { parseArgs } from 'node:util';

/** The flags an entry point takes, by long name (without `--`): a value, or a bare switch. */
export type FlagSpec = Record<string, 'string' | 'boolean'>;

export class Args {
  readonly #values: Record<string, string | boolean | undefined>;
  readonly #usage: string;

  constructor(values: Record<string, string | boolean | undefined>, usage: string) {
    this.#values = values;
    this.#usage = usage;
  }

  /** True when the switch `name` was given. */
  has(name: string): boolean {
    return this.#values[name] === true;
  }

  str(name: string, dflt: string): string {
    const v = this.#values[name];
    return typeof v === 'string' ? v : dflt;
  }

  /** A number in [min, max]; `integer` also refuses fractions. */
  num(name: string, dflt: number, min: number, max: number, integer = false): number {
    const v = this.#values[name];
    if (typeof v !== 'string') return dflt;
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw this.#bad(`--${name} needs ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got "${v}"`);
    }
    return n;
  }

  int(name: string, dflt: number, min: number, max: number): number {
    return this.num(name, dflt, min, max, true);
  }

  /** One of `allowed`, or `dflt` when absent. */
  oneOf<T extends string>(name: string, allowed: readonly T[], dflt: T): T;
  oneOf<T extends string>(name: string, allowed: readonly T[], dflt: undefined): T | undefined;
  oneOf<T extends string>(name: string, allowed: readonly T[], dflt: T | undefined): T | undefined {
    const v = this.#values[name];
    if (typeof v !== 'string') return dflt;
    if (!(allowed as readonly string[]).includes(v)) throw this.#bad(`--${name} takes ${allowed.join(' or ')}, got "${v}"`);
    return v as T;
  }

  /** A comma list of names from `allowed` (at least one), or undefined when the flag is absent. */
  list<T extends string>(name: string, allowed: readonly T[]): T[] | undefined {
    const v = this.#values[name];
    if (typeof v !== 'string') return undefined;
    const items = v.split(',').filter((s) => s !== '');
    const bad = items.filter((s) => !(allowed as readonly string[]).includes(s));
    if (items.length === 0 || bad.length > 0) throw this.#bad(`--${name}: unknown ${bad.join(', ') || '(empty)'}; use ${allowed.join(',')}`);
    return items as T[];
  }

  #bad(message: string): Error {
    return new Error(`${message}\n${this.#usage}`);
  }
}

/** Parses `argv` (process.argv.slice(2)) against `flags`; throws on anything else, with `usage` in the message. */
export function readArgs(argv: readonly string[], flags: FlagSpec, usage: string): Args {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, type] of Object.entries(flags)) options[name] = { type };
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${usage}`);
  }
  if (values.help === true) {
    console.log(usage);
    process.exit(0);
  }
  return new Args(values, usage);
}
