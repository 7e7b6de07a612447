#!/usr/bin/env node
// `npm install` hook: builds the optional native addon (binding.gyp -> build/Release/portico_native.node) with
// node-gyp. It never fails the install: without a compiler, headers or Linux, Portico runs on its JS paths and
// says so at startup (`native: false` and why in the admin status). PORTICO_NATIVE=0 skips the build.
// `--if-stale` (the install hook) builds only when the addon is missing, older than binding.gyp or a file of
// src/native/, or was built for another Node, ABI, architecture or node-addon-api: `npx portico` in a checkout runs
// this hook each time npm links the checkout into its cache, and a node-gyp rebuild there took ~35 s before every
// command. `npm run build:native` always rebuilds.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
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

const built = path.join(root, 'build', 'Release', 'portico_native.node');
const stampFile = path.join(root, 'build', 'Release', 'portico-build.json');

/** What the addon was built for: a change of any of these needs a rebuild. */
function buildStamp() {
  let addonApi = '';
  try {
    const require = createRequire(import.meta.url);
    addonApi = JSON.parse(readFileSync(require.resolve('node-addon-api/package.json'), 'utf8')).version;
  } catch {
    // not installed: the build below says why it fails
  }
  return JSON.stringify({ node: process.version, modules: process.versions.modules, arch: process.arch, addonApi });
}

/** The addon exists, is newer than its sources and was built for this Node (buildStamp). */
function upToDate() {
  if (!existsSync(built) || !existsSync(stampFile) || readFileSync(stampFile, 'utf8') !== buildStamp()) return false;
  const at = statSync(built).mtimeMs;
  const dir = path.join(root, 'src', 'native');
  const sources = [path.join(root, 'binding.gyp'), ...readdirSync(dir).map((f) => path.join(dir, f))];
  return sources.every((f) => statSync(f).mtimeMs <= at);
}

function main() {
  if (process.env.PORTICO_NATIVE === '0') return say('PORTICO_NATIVE=0: native addon not built (JS relay and shared listening handle)');
  if (process.platform !== 'linux') return say(`native addon not built: ${process.platform} has no splice(2); using the JS paths`);
  if (process.argv.includes('--if-stale') && upToDate()) return;
  const [cmd, ...pre] = nodeGyp();
  const args = [...pre, 'rebuild', '--release'];
  // Under npm, npm_config_nodedir carries the user's setting to node-gyp. Run by hand, use the headers that
  // ship with this very node (a distro or tarball install has them) rather than downloading them.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  // node-gyp's output is noise on success; on failure its last lines say why.
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
  if (r.status === 0 && existsSync(built)) {
    writeFileSync(stampFile, buildStamp());
    return say(`native addon built: ${path.relative(root, built)}`);
  }
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
