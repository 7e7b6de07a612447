// Building blocks shared by the parser fuzz tests: byte-level mutations of valid seeds, and a view of the input
// inside a larger junk buffer (a parser that reads past `length` sees junk and gives itself away).
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
