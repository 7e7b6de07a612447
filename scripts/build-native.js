#!/usr/bin/env node
// `npm install` hook: builds the optional native addon (binding.gyp -> build/Release/portico_native.node) with
// node-gyp. It never fails the install: without a compiler, headers or Linux, Portico runs on its JS paths and
// says so at startup (`native: false` and why in the admin status). PORTICO_NATIVE=0 skips the build.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const say = (line) => process.stderr.write(`portico: ${line}\n`);

function nodeGyp() {
  // npm puts its bundled node-gyp on PATH for lifecycle scripts; npm_config_node_gyp names it exactly.
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return [process.execPath, fromNpm];
  try {
    const require = createRequire(import.meta.url);
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js')];
  } catch {
    // run by hand: the node-gyp bundled with npm, next to this node binary
  }
  const bundled = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  return existsSync(bundled) ? [process.execPath, bundled] : ['node-gyp'];
}

function main() {
  if (process.env.PORTICO_NATIVE === '0') return say('PORTICO_NATIVE=0: native addon not built (JS relay and shared listening handle)');
  if (process.platform !== 'linux') return say(`native addon not built: ${process.platform} has no splice(2); using the JS paths`);
  const [cmd, ...pre] = nodeGyp();
  const args = [...pre, 'rebuild', '--release'];
  // Under npm, npm_config_nodedir carries the user's setting to node-gyp. Run by hand, use the headers that
  // ship with this very node (a distro or tarball install has them) rather than downloading them.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  // node-gyp's output is noise on success; on failure its last lines say why.
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
  const built = path.join(root, 'build', 'Release', 'portico_native.node');
  if (r.status === 0 && existsSync(built)) return say(`native addon built: ${path.relative(root, built)}`);
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-25).join('\n');
  if (output !== '') process.stderr.write(`${output}\n`);
  const why = r.error ? r.error.message : r.signal ? `killed by ${r.signal}` : `node-gyp exited with ${r.status}`;
  say(`native addon NOT built (${why}); Portico will use its JS relay and shared listening handle. ` +
    'Install g++, make and python3, then run `npm run build:native`.');
}

try {
  main();
} catch (err) {
  say(`native addon NOT built (${err instanceof Error ? err.message : String(err)}); using the JS paths`);
}
process.exit(0);
