#!/usr/bin/env node
// `npm install` hook (after the addon) and `portico bench`'s own first step: builds the native WebSocket load
// generator bench/native/ws-load.cc into build/bench/ws-load with g++, with OpenSSL (wss://) when libssl links,
// else ws:// only. It never fails the install: without g++ the benchmark uses its JS client and its report says so.
// `--if-stale` builds only when the binary is missing or older than its source. PORTICO_NATIVE=0 skips it.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'bench', 'native', 'ws-load.cc');
const out = path.join(root, 'build', 'bench', 'ws-load');
const say = (line) => process.stderr.write(`portico: ${line}\n`);

function compile(flags) {
  const tmp = `${out}.${process.pid}.tmp`;
  const r = spawnSync('g++', ['-O2', '-std=c++17', '-o', tmp, ...flags.pre, src, ...flags.post], { encoding: 'utf8', timeout: 180_000 });
  if (r.status === 0) {
    renameSync(tmp, out); // atomic: a bench running the old binary keeps it
    return { ok: true };
  }
  rmSync(tmp, { force: true });
  return { ok: false, why: r.error ? r.error.message : (r.stderr ?? '').trim().split('\n').slice(-5).join('\n') };
}

function main() {
  if (process.env.PORTICO_NATIVE === '0') return say('PORTICO_NATIVE=0: native ws-load not built (portico bench uses its JS client)');
  if (process.platform !== 'linux') return say(`native ws-load not built: it uses epoll, ${process.platform} has none (portico bench uses its JS client)`);
  if (process.argv.includes('--if-stale') && existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return;
  mkdirSync(path.dirname(out), { recursive: true });
  const withTls = compile({ pre: ['-DWSLOAD_TLS'], post: ['-lssl', '-lcrypto'] });
  if (withTls.ok) return say(`native ws-load built with TLS: ${path.relative(root, out)}`);
  const plain = compile({ pre: [], post: [] });
  if (plain.ok) return say(`native ws-load built WITHOUT TLS (OpenSSL not linkable: ${withTls.why.split('\n').at(-1)}); wss loads use the JS client. apt-get install libssl-dev, then npm run build:bench-tools`);
  say(`native ws-load NOT built (${plain.why.split('\n').at(-1)}); portico bench uses its JS client. Install g++, then npm run build:bench-tools`);
}

try {
  main();
} catch (err) {
  say(`native ws-load NOT built (${err instanceof Error ? err.message : String(err)}); portico bench uses its JS client`);
}
process.exit(0);
