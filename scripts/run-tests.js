#!/usr/bin/env node
// Runs every compiled test file (dist/test/{unit,fuzz,component,e2e}/**/*.test.js) with node's test runner.
// component: relays and sockets driven directly (no Portico process); e2e: Portico end to end; soak and bench
// (`portico bench --quick` end to end) run only when named, as .ci/run does.
// Usage: node scripts/run-tests.js [unit|fuzz|component|e2e|soak|bench ...]   (default: unit fuzz component e2e)
import { readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const groups = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['unit', 'fuzz', 'component', 'e2e'];

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

const files = groups.flatMap((g) => walk(path.join(root, 'dist', 'test', g)));
if (files.length === 0) {
  console.error('no test files found under dist/test: run `npm run build` first');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
