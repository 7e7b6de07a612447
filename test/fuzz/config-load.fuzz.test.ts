// Property tests of the config loader (src/config/load.ts) under a time budget: whatever a config file holds, the
// loader answers with a config or with errors, each a message at a path (and a line when the node exists), and
// never throws; the primary runs it on every reload, so a throw would be a crash of a running instance. Inputs: the
// contract's seeds and the repository's example configs, changed as a tree (a value replaced by one of another kind
// or by an edge of its own kind, a key deleted, an unknown key added, a list emptied or repeated) and as text
// (bytes inserted, deleted or changed, biased to what YAML treats specially). No "internal error" may come out:
// that is the loader's guard against a refinement that threw, and it firing is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { parse, stringify } from 'yaml';
import { assertFor, mutate, mutationArb } from '../helpers/fuzz.js';
import { FIXTURES, ROOT, SHARED_CONTRACT } from '../helpers/paths.js';
import { loadConfigText, type LoadResult } from '../../src/config/load.js';

const BUDGET_MS = 1500;

/** The seeds, each loaded from its own folder (relative certificate and root paths resolve there). */
const SEEDS: { file: string; text: string }[] = [
  path.join(FIXTURES, 'seed', 'seed.yaml'),
  path.join(SHARED_CONTRACT, 'seed-php.yaml'),
  path.join(ROOT, 'config', 'portico.yaml'),
  ...['dns-discovery', 'load-balancing', 'rate-limits', 'seed-nginx-equivalent', 'websocket-timeouts'].map((n) => path.join(ROOT, 'config', 'examples', `${n}.yaml`)),
]
  .filter((f) => existsSync(f))
  .map((file) => ({ file, text: readFileSync(file, 'utf8') }));

/** What a value may become: other kinds, and the edges of each kind. */
const EDGE_VALUES: unknown[] = [
  null, true, false, 0, -1, 1, 0.5, 1e21, -1e21, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, NaN, Infinity, -Infinity,
  '', ' ', '0', '-1', 'on', 'off', 'yes', 'auto', 'x'.repeat(5000), '\u0000', '\ud800', 'é', '$host', '${x}', '%',
  '127.0.0.1:0', '127.0.0.1:65536', '[::1]:80', ':80', 'unix:', 'unix:/tmp/x.sock', '/', '//', '../..', '/etc/passwd',
  '1s', '0s', '-1s', '1y', '99999999999d', '1KiB', '0B', '1TiB', '10x', '^(', '(?<a>x)', '.*', '*', '*.', '*.example.com',
  [], [null], ['x'], [1, 2], {}, { x: 1 }, { address: '127.0.0.1:1' }, { __proto__: { polluted: true } }, { constructor: 1 }, { toString: 'x' },
];
const edgeArb = fc.constantFrom(...EDGE_VALUES);

type Edit = { kind: 'set' | 'delete' | 'add' | 'repeat'; at: number; value: unknown; key: string };
const editArb: fc.Arbitrary<Edit> = fc.record({
  kind: fc.constantFrom('set', 'set', 'delete', 'add', 'repeat'),
  at: fc.nat(),
  value: fc.oneof(edgeArb, fc.string({ maxLength: 12 }), fc.integer(), fc.double()),
  key: fc.constantFrom('x', 'address', 'targets', 'tls', 'match', 'proxy', '__proto__', 'constructor', 'prototype', 'weight', ''),
});

/** Every container and key of a tree, in document order: where an edit may land. */
function places(root: unknown): { parent: Record<string, unknown> | unknown[]; key: string | number }[] {
  const out: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach((v, i) => (out.push({ parent: node, key: i }), walk(v)));
    else if (typeof node === 'object' && node !== null) for (const [k, v] of Object.entries(node)) (out.push({ parent: node as Record<string, unknown>, key: k }), walk(v));
  };
  walk(root);
  return out;
}

function edit(root: unknown, e: Edit): void {
  const all = places(root);
  if (all.length === 0) return;
  const { parent, key } = all[e.at % all.length];
  const p = parent as Record<string | number, unknown>;
  if (e.kind === 'set') p[key] = e.value;
  else if (e.kind === 'delete') {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete p[key];
  } else if (e.kind === 'add') {
    const target = p[key];
    if (Array.isArray(target)) target.push(e.value);
    else if (typeof target === 'object' && target !== null) Object.defineProperty(target, e.key, { value: e.value, enumerable: true, writable: true, configurable: true });
    else p[key] = { [e.key]: e.value };
  } else {
    const target = p[key];
    if (Array.isArray(target) && target.length > 0) target.push(...Array.from({ length: 1 + (e.at % 40) }, () => structuredClone(target[0])));
  }
}

/** The loader's answer is a config or errors that each say something at a path; never an internal error. */
function wellFormed(r: LoadResult, input: string): void {
  if (r.ok) return;
  assert.ok(r.errors.length > 0, 'refused without an error');
  for (const e of r.errors) {
    assert.equal(typeof e.path, 'string');
    assert.ok(typeof e.message === 'string' && e.message.length > 0, `an empty message at "${e.path}"`);
    assert.doesNotMatch(e.message, /internal error/, `${e.path}: ${e.message}\n--- input ---\n${input.slice(0, 4000)}`);
    if (e.line !== undefined) assert.ok(Number.isInteger(e.line) && e.line >= 1, `line ${e.line}`);
  }
}

test('the seeds load as they are (the fuzz tests start from configs that work)', () => {
  assert.ok(SEEDS.length >= 5, `only ${SEEDS.length} seeds found`);
  for (const s of SEEDS) {
    const r = loadConfigText(s.text, s.file);
    assert.ok(r.ok, `${s.file}: ${r.ok ? '' : r.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`);
  }
});

test('a config changed as a tree loads or is refused with errors at their paths, never a throw or an internal error', () => {
  let refused = 0;
  let loaded = 0;
  assertFor(
    fc.property(fc.nat(), fc.array(editArb, { minLength: 1, maxLength: 4 }), (which, edits) => {
      const seed = SEEDS[which % SEEDS.length];
      const tree = parse(seed.text) as unknown;
      for (const e of edits) edit(tree, e);
      let text: string;
      try {
        text = stringify(tree, { aliasDuplicateObjects: false });
      } catch {
        return; // a tree YAML cannot write (a lone surrogate key): nothing a file could hold
      }
      const r = loadConfigText(text, seed.file);
      wellFormed(r, text);
      if (r.ok) loaded++;
      else refused++;
    }),
    BUDGET_MS,
    () => refused >= 100 && loaded >= 20,
  );
});

const YAML_EDGE = [...':-?[]{},#&*!|>\'"%@`\n\t \r\u0000\\'].map((c) => c.charCodeAt(0)).concat([0xef, 0xbb, 0xbf, 0xc3, 0xff, 0x80]);

test('a config changed as text loads or is refused with errors at their paths, never a throw or an internal error', () => {
  let refused = 0;
  assertFor(
    fc.property(fc.nat(), fc.array(mutationArb(YAML_EDGE), { minLength: 1, maxLength: 6 }), (which, mutations) => {
      const seed = SEEDS[which % SEEDS.length];
      const text = mutate(Buffer.from(seed.text), mutations).toString('utf8');
      const r = loadConfigText(text, seed.file);
      wellFormed(r, text);
      if (!r.ok) refused++;
    }),
    BUDGET_MS,
    () => refused >= 100,
  );
});
