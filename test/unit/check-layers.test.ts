// scripts/check-layers.js on small trees made for the test: it must fail on an upward import, on an import
// between two rooms of one rank, on a cycle (type-only imports too) and on a file outside every room, and pass
// a tree that points down only. The real tree is checked by `npm test` itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT } from '../helpers/paths.js';

const SCRIPT = path.join(ROOT, 'scripts', 'check-layers.js');

function tree(t: { after(fn: () => void): void }, files: Record<string, string>): string {
  const root = mkdtempSync(path.join(tmpdir(), 'portico-layers-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) {
    const p = path.join(root, 'src', name);
    mkdirSync(path.dirname(p), { recursive: true });
    writeFileSync(p, text);
  }
  return root;
}

function run(root: string): { code: number; out: string } {
  const r = spawnSync(process.execPath, [SCRIPT, '--root', root], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}

const GOOD = {
  'core/errors.ts': "export const E = 1;\n",
  'wire/head.ts': "import { E } from '../core/errors.js';\nexport const H = E;\n",
  'http/connection.ts': "import { H } from '../wire/head.js';\n// import { X } from '../cli/main.js'; (a comment: not an import)\nexport const C = H;\n",
  'cli/main.ts': "import { C } from '../http/connection.js';\nconst m = await import('../http/connection.js');\nexport const M = C + m.C;\n",
};

test('check-layers: a tree whose imports point down passes', (t) => {
  const r = run(tree(t, GOOD));
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /no upward import, no cycle/);
});

test('check-layers: an upward import fails, naming the file and both rooms', (t) => {
  const r = run(tree(t, { ...GOOD, 'wire/head.ts': "import type { C } from '../http/connection.js';\nexport const H = 1;\n" }));
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /src\/wire\/head\.ts imports src\/http\/connection\.ts: wire may not import http \(upward\)/);
});

test('check-layers: rooms of one rank may not import each other', (t) => {
  const r = run(tree(t, { ...GOOD, 'upstream/pool.ts': "import { A } from '../accept/listener.js';\nexport const P = A;\n", 'accept/listener.ts': 'export const A = 1;\n' }));
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /upstream may not import accept \(rooms of one rank are independent\)/);
});

test('check-layers: a cycle fails, type-only imports included', (t) => {
  const r = run(tree(t, { ...GOOD, 'core/a.ts': "import type { B } from './b.js';\nexport type A = B | 1;\n", 'core/b.ts': "import type { A } from './a.js';\nexport type B = A | 2;\n" }));
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /import cycle .*src\/core\/a\.ts <-> src\/core\/b\.ts/);
});

test('check-layers: a file outside every room fails', (t) => {
  const r = run(tree(t, { ...GOOD, 'loose.ts': 'export const L = 1;\n' }));
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /src\/loose\.ts: room "loose\.ts" is not in/);
});
