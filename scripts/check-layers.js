#!/usr/bin/env node
// Checks the source tree's shape, run by `npm test` before the tests: every import (type-only ones included)
// points down the layers below (a room may import its own files and lower rooms, never a higher one), and no
// file reaches itself through its imports. Exit 1 with every offending import and cycle, else a one-line summary.
// Usage: node scripts/check-layers.js [--root DIR]   (DIR holds src/; default: the repository)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * Rooms from the bottom up; README's "How it works" describes each. A file in room N may import rooms 0..N.
 * Rooms on one line share a rank and must not import each other (they are independent).
 */
export const LAYERS = [
  ['core'], // errors, log, metrics, the byte-socket interface, the connection registry, small helpers
  ['wire'], // pure parsers and encoders over bytes: HTTP head, path, ClientHello, PROXY header, WebSocket frames
  ['config', 'native'], // the config schema and loader; the C++ addon and its bindings
  ['upstream', 'accept'], // pools, balancers, health, discovery; listening sockets, TLS, the first-bytes preface
  ['tunnel', 'route'], // byte relays (JS, splice, L4); the router, its Decision and the policies it applies
  ['handlers'], // what a Decision runs: forward (and the request kinds to come)
  ['terminate'], // terminated WebSocket: the worker's uWebSockets.js app, hand-off, message relay, paced drain
  ['http'], // the client connection: reads heads, asks the router, runs a handler, logs
  ['admin'], // the admin listener
  ['worker'], // a worker process: runtime, IPC, apply a config, wire listeners to connections
  ['primary'], // the primary process: supervise workers, reload, discovery and health fan-out, reports
  ['cli'], // the command line
];

const rankOf = new Map(LAYERS.flatMap((rooms, rank) => rooms.map((room) => [room, rank])));

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/**
 * Relative import specifiers of a TypeScript source, read line by line: a static import or re-export ends on a
 * line `... from './x.js'` (or is `import './x.js'`), a dynamic one is `import('./x.js')`. Comment lines are
 * skipped, so examples in comments don't count.
 */
export function importsOf(source) {
  const specs = [];
  for (const line of source.split('\n')) {
    const t = line.trimStart();
    if (t.startsWith('//') || t.startsWith('*') || t.startsWith('/*')) continue;
    const m = /^(?:(?:import|export)\b.*|.*\}\s*)from\s*['"](\.[^'"]+)['"]/.exec(t) ?? /^import\s*['"](\.[^'"]+)['"]/.exec(t);
    if (m !== null) specs.push(m[1]);
    for (const d of t.matchAll(/\bimport\s*\(\s*['"](\.[^'"]+)['"]\s*\)/g)) specs.push(d[1]);
  }
  return specs;
}

export function check(root) {
  const src = path.join(root, 'src');
  const files = walk(src);
  const known = new Set(files);
  const edges = new Map();
  const problems = [];
  const roomOf = (file) => path.relative(src, file).split(path.sep)[0];
  for (const file of files) {
    const room = roomOf(file);
    if (!rankOf.has(room)) problems.push(`${path.relative(root, file)}: room "${room}" is not in scripts/check-layers.js LAYERS (a file directly under src/, or a new room to place)`);
    const deps = [];
    for (const spec of importsOf(readFileSync(file, 'utf8'))) {
      const target = path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts');
      if (!known.has(target)) continue; // JSON, .node, or outside src/
      deps.push(target);
      const to = roomOf(target);
      if (rankOf.has(room) && rankOf.has(to) && to !== room && rankOf.get(to) >= rankOf.get(room)) {
        problems.push(`${path.relative(root, file)} imports ${path.relative(root, target)}: ${room} may not import ${to} (${rankOf.get(to) === rankOf.get(room) ? 'rooms of one rank are independent' : 'upward'})`);
      }
    }
    edges.set(file, deps);
  }
  // Tarjan's strongly connected components: any component of more than one file (or a self-import) is a cycle.
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const on = new Set();
  const cycles = [];
  const visit = (v) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v)) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const comp = [];
      let w;
      do {
        w = stack.pop();
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || edges.get(v).includes(v)) cycles.push(comp.map((f) => path.relative(root, f)).sort());
    }
  };
  for (const f of files) if (!idx.has(f)) visit(f);
  for (const c of cycles) problems.push(`import cycle (type-only imports count): ${c.join(' <-> ')}`);
  return { files: files.length, imports: [...edges.values()].reduce((n, d) => n + d.length, 0), problems };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const at = process.argv.indexOf('--root');
  const root = at > 0 ? path.resolve(process.argv[at + 1]) : path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
  const r = check(root);
  if (r.problems.length > 0) {
    for (const p of r.problems) console.error(p);
    console.error(`check-layers: ${r.problems.length} problem(s) in ${r.files} files`);
    process.exit(1);
  }
  console.log(`check-layers: ${r.files} files, ${r.imports} imports, no upward import, no cycle`);
}
