#!/usr/bin/env node
// Runs every compiled test file (dist/test/{unit,fuzz,component,e2e}/**/*.test.js) with node's test runner.
// component: relays and sockets driven directly (no Portico process); e2e: Portico end to end; soak and bench
// (`portico bench --quick` end to end) run only when named, as .ci/run does.
// Usage: node scripts/run-tests.js [unit|fuzz|component|e2e|soak|bench ...] [--except GROUP/FILE.test.js ...]
// (default: unit fuzz component e2e; --except leaves a file out, as .ci/run's second pass does for a file that never
// reads the switch that pass turns). Files run two at once; the longest ones (SLOW_FIRST) start first, so that no
// long file starts late and runs on alone at the end while the other slot is idle.
import { readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const except = new Set(args.flatMap((a, i) => (args[i - 1] === '--except' ? [a] : [])));
const named = args.filter((a, i) => a !== '--except' && args[i - 1] !== '--except');
const groups = named.length > 0 ? named : ['unit', 'fuzz', 'component', 'e2e'];
/**
 * The files that take longest in the plain run (seconds, 2-core machine, the CI of 2026-12-06 19:47 UTC): started first.
 * tunnel-idle is one test that waits past a 60 s idle limit; the others are many tests of a few seconds each.
 */
const SLOW_FIRST = [
  'e2e/tunnel-idle.test.js', // 66
  'e2e/l4-native.test.js', // 50
  'e2e/native-fcgi-answer.test.js', // 30
  'e2e/native-upgrade.test.js', // 28
  'e2e/fastcgi.test.js', // 24
  'e2e/reload.test.js', // 21
  'e2e/terminate.test.js', // 21
  'e2e/native-tls.test.js', // 20
];

function walk(dir) {
  let out = [];
  let entries = [];
  try { entries = readdirSync(dir); } catch { return out; }
  for (const name of entries.sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const rel = (f) => path.relative(path.join(root, 'dist', 'test'), f);
const found = groups.flatMap((g) => walk(path.join(root, 'dist', 'test', g)));
for (const e of except) {
  if (!found.some((f) => rel(f) === e)) {
    console.error(`--except ${e}: no such file in ${groups.join(' ')} (dist/test/GROUP/NAME.test.js, given as GROUP/NAME.test.js)`);
    process.exit(1);
  }
}
const kept = found.filter((f) => !except.has(rel(f)));
const rank = (f) => { const i = SLOW_FIRST.indexOf(rel(f)); return i < 0 ? SLOW_FIRST.length : i; };
const files = kept.map((f, i) => [f, i]).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1]).map(([f]) => f);
if (files.length === 0) {
  console.error('no test files found under dist/test: run `npm run build` first');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
