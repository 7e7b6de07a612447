// Building blocks shared by the parser fuzz tests: byte-level mutations of valid seeds, and a view of the input
// inside a larger junk buffer (a parser that reads past `length` sees junk and gives itself away).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';

export interface Mutation {
  at: number;
  op: 'insert' | 'delete' | 'set';
  byte: number;
}

/** Mutations biased toward the bytes a parser treats specially (`edge`), else any byte. */
export function mutationArb(edge: readonly number[]): fc.Arbitrary<Mutation> {
  return fc.record({
    at: fc.nat(),
    op: fc.constantFrom('insert' as const, 'delete' as const, 'set' as const),
    byte: fc.oneof(fc.constantFrom(...edge), fc.integer({ min: 0, max: 255 })),
  });
}

export function mutate(base: Buffer, mutations: readonly Mutation[]): Buffer {
  const out = Array.from(base);
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : m.at % (out.length + (m.op === 'insert' ? 1 : 0));
    if (m.op === 'insert') out.splice(at, 0, m.byte);
    else if (out.length > 0 && m.op === 'delete') out.splice(at, 1);
    else if (out.length > 0) out[at] = m.byte;
  }
  return Buffer.from(out);
}

/** The same bytes as a view into a larger buffer filled with `junk` (`slack` bytes around it). */
export function inJunk(buf: Buffer, junk: number, slack = 64): Buffer {
  const big = Buffer.alloc(buf.length + slack, junk);
  buf.copy(big, 16);
  return big.subarray(16, 16 + buf.length);
}

/**
 * Response heads written as string literals in the repository's tests ('…' or "…", starting with a status line whose
 * code matches `status`, a regular expression source such as `\\d{3}`), unescaped: seeds for the head fuzz tests.
 */
export function responseHeadLiterals(status: string): Buffer[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = path.resolve(here, '..', '..', '..', 'test');
  const literal = new RegExp(`(['"])(HTTP\\/1\\.[01] ${status}(?:\\\\.|(?!\\1)[^\\\\\\n])*)\\1`, 'g');
  const out: Buffer[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.ts')) {
        for (const m of readFileSync(p, 'utf8').matchAll(literal)) {
          const text = m[2].replace(/\\(r|n|t|0|\\|'|"|x[0-9a-fA-F]{2})/g, (_, e: string) =>
            e === 'r' ? '\r' : e === 'n' ? '\n' : e === 't' ? '\t' : e === '0' ? '\0' : e[0] === 'x' ? String.fromCharCode(parseInt(e.slice(1), 16)) : e,
          );
          out.push(Buffer.from(text, 'latin1'));
        }
      }
    }
  };
  walk(root);
  return out;
}

/** `buf` cut at `cuts` (each modulo its length, duplicates dropped): split delivery; a cut at 0 gives an empty first piece. */
export function split(buf: Buffer, cuts: readonly number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => (buf.length === 0 ? 0 : c % buf.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const c of at) {
    out.push(buf.subarray(from, c));
    from = c;
  }
  out.push(buf.subarray(from));
  return out;
}

/**
 * Checks `property` for `budgetMs`, then, when `enough()` is still false (a loaded machine ran too few cases in the
 * budget), in steps of 100 more runs until it holds or `maxRuns` more have run: the test's own share assertion
 * (cases taken, hand-overs, runs) then judges what the code does, not how busy the machine was. Bounded in time
 * when the machine is quick, in count when it is not.
 */
export function assertFor<Ts>(property: fc.IRawProperty<Ts>, budgetMs: number, enough: () => boolean, maxRuns = 20_000): void {
  fc.assert(property, { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(budgetMs)] });
  for (let more = 0; !enough() && more < maxRuns; more += 100) fc.assert(property, { numRuns: 100 });
}
