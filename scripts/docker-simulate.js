#!/usr/bin/env node
// Runs deploy/Dockerfile's steps without a Docker engine (none on the developers' machines or CI), to check what
// can be checked that way: each stage gets a folder standing for its filesystem (/src -> DIR/build/src ...), COPY
// copies from the repository (or from the build stage's folder), RUN runs in the stage's WORKDIR with the same
// paths mapped, and the final stage's ENTRYPOINT is started as the image would start it: `check` on the image's
// config, the default CMD's modules loaded, `start` (ports 0, as an unprivileged user when run as root), the
// HEALTHCHECK command against it, then SIGTERM -> exit 0. NOT checked: the base image (this machine's Node and
// Debian stand in for node:*-bookworm-slim), `apt-get install` (its commands must exist here instead), file
// ownership (--chown is mapped to the unprivileged user only), EXPOSE/STOPSIGNAL as Docker applies them, and
// the image build itself. Usage: node scripts/docker-simulate.js [--keep] [--dir DIR]; exit 0 = every step passed.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const keep = args.includes('--keep');
const dirArg = args.indexOf('--dir');
const base = dirArg >= 0 ? path.resolve(args[dirArg + 1]) : mkdtempSync(path.join(tmpdir(), 'portico-docker-sim-'));
/** The uid/gid standing for the image's `node` user when this runs as root (nobody/nogroup). */
const UNPRIVILEGED = 65534;
const asRoot = process.getuid?.() === 0;
const STEP_TIMEOUT_MS = 600_000;

const say = (line) => process.stdout.write(`docker-simulate: ${line}\n`);
function fail(line) {
  process.stdout.write(`docker-simulate: FAILED: ${line}\n`);
  if (!keep) rmSync(base, { recursive: true, force: true });
  process.exit(1);
}

/** Instructions with continuation lines joined and comments dropped: { op, args, line }. */
function instructions(text) {
  const out = [];
  let cur = null;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith('#') || (cur === null && line === '')) return;
    const body = line.endsWith('\\') ? line.slice(0, -1).trim() : line;
    if (cur === null) {
      const m = /^(\w+)\s+(.*)$/.exec(body);
      if (m === null) fail(`Dockerfile:${i + 1}: not an instruction: ${line}`);
      cur = { op: m[1].toUpperCase(), args: m[2], line: i + 1 };
    } else {
      cur.args += ` ${body}`;
    }
    if (!line.endsWith('\\')) {
      out.push(cur);
      cur = null;
    }
  });
  return out;
}

/** Exec form (JSON array) or shell form -> argv. */
function argv(spec) {
  const s = spec.trim();
  if (s.startsWith('[')) return JSON.parse(s);
  return ['/bin/sh', '-c', s];
}

/** COPY flags and operands: { from, chown, sources, dest }. */
function copyArgs(spec) {
  const words = spec.split(/\s+/);
  const flags = {};
  while (words[0]?.startsWith('--')) {
    const [k, v] = words.shift().slice(2).split('=');
    flags[k] = v;
  }
  const dest = words.pop();
  return { from: flags.from, chown: flags.chown, sources: words, dest };
}

const file = path.join(root, 'deploy', 'Dockerfile');
const ins = instructions(readFileSync(file, 'utf8'));
/** Stage name -> { dir (its filesystem root), workdir, env, user, entrypoint, cmd, healthcheck }. */
const stages = new Map();
let stage = null;
/** Container paths (WORKDIR and COPY destinations) that commands may name; mapped into the stage's folder. */
const roots = new Set();
for (const i of ins) {
  if (i.op === 'WORKDIR') roots.add(i.args.trim());
  if (i.op === 'COPY') {
    const c = copyArgs(i.args);
    if (c.dest.startsWith('/')) roots.add(path.posix.dirname(c.dest.endsWith('/') ? `${c.dest}x` : c.dest));
  }
}
const rootList = [...roots].filter((r) => r !== '/').sort((a, b) => b.length - a.length);
const mapRe = new RegExp(`(^|[\\s"'=])(${rootList.map((r) => r.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})(?=/|$|[\\s"'])`, 'g');
/** Rewrites the container paths in a command to the stage's folder. */
const mapText = (st, text) => text.replace(mapRe, (_, pre, p) => `${pre}${path.join(st.dir, p)}`);
const inStage = (st, p) => path.join(st.dir, p.startsWith('/') ? p : path.posix.join(st.workdir, p));

// the unprivileged user must reach the final stage's folder (mkdtemp makes it 0700)
mkdirSync(base, { recursive: true });
chmodSync(base, 0o755);
say(`stages in ${base}${keep ? ' (kept)' : ''}`);
for (const i of ins) {
  const where = `Dockerfile:${i.line} ${i.op}`;
  switch (i.op) {
    case 'FROM': {
      const [image, as, name] = i.args.split(/\s+/);
      const id = as?.toUpperCase() === 'AS' ? name : `stage${stages.size}`;
      stage = { name: id, image, dir: path.join(base, id), workdir: '/', env: { ...process.env }, user: 'root', entrypoint: [], cmd: [], healthcheck: null };
      mkdirSync(stage.dir, { recursive: true });
      stages.set(id, stage);
      say(`${where} ${image}: stands in: node ${process.version} of this machine (not the image's)`);
      break;
    }
    case 'WORKDIR':
      stage.workdir = i.args.trim();
      mkdirSync(inStage(stage, stage.workdir), { recursive: true });
      break;
    case 'ENV': {
      const m = /^(\w+)[=\s](.*)$/.exec(i.args.trim());
      stage.env[m[1]] = m[2];
      break;
    }
    case 'COPY': {
      const c = copyArgs(i.args);
      const from = c.from === undefined ? null : stages.get(c.from);
      if (c.from !== undefined && from === undefined) fail(`${where}: no stage ${c.from}`);
      for (const src of c.sources) {
        const abs = from === null ? path.join(root, src) : path.join(from.dir, src);
        if (!existsSync(abs)) fail(`${where}: ${src} does not exist${from === null ? ' in the repository' : ` in stage ${c.from}`}`);
        const destIsDir = c.dest.endsWith('/') || c.sources.length > 1;
        const dest = inStage(stage, destIsDir ? path.posix.join(c.dest, path.posix.basename(src)) : c.dest);
        mkdirSync(path.dirname(dest), { recursive: true });
        // without `dereference`, node_modules' .bin links stay links (as docker copies them)
        cpSync(abs, dest, { recursive: true, verbatimSymlinks: true });
        if (c.chown !== undefined && asRoot) spawnSync('chown', ['-R', `${UNPRIVILEGED}:${UNPRIVILEGED}`, dest]);
      }
      say(`${where} ${c.sources.join(' ')} -> ${c.dest}${c.from === undefined ? '' : ` (from ${c.from})`}`);
      break;
    }
    case 'RUN': {
      if (/apt-get install/.test(i.args)) {
        // not run (it would change this machine): the packages' commands must be here instead
        const pkgs = /install\s+(?:-\S+\s+)*([^&]+)/.exec(i.args)[1].trim().split(/\s+/).filter((w) => !w.startsWith('-'));
        const missing = pkgs.filter((p) => spawnSync('sh', ['-c', `command -v ${p === 'g++' ? 'g++' : p}`]).status !== 0);
        if (missing.length > 0) fail(`${where}: this machine lacks ${missing.join(', ')} (apt-get install is not run here)`);
        say(`${where}: apt-get not run; ${pkgs.join(', ')} present here`);
        break;
      }
      const cmd = mapText(stage, i.args).replace(/\bchown\s+(\S+):(\S+)/g, asRoot ? `chown ${UNPRIVILEGED}:${UNPRIVILEGED}` : 'true');
      say(`${where}: ${cmd.length > 160 ? `${cmd.slice(0, 160)}…` : cmd}`);
      const r = spawnSync('/bin/sh', ['-c', cmd], { cwd: inStage(stage, stage.workdir), env: stage.env, stdio: ['ignore', 'inherit', 'inherit'], timeout: STEP_TIMEOUT_MS });
      if (r.status !== 0) fail(`${where}: exit ${r.status ?? r.signal}`);
      break;
    }
    case 'USER':
      stage.user = i.args.trim();
      break;
    case 'ENTRYPOINT':
      stage.entrypoint = argv(i.args);
      break;
    case 'CMD':
      stage.cmd = argv(i.args);
      break;
    case 'HEALTHCHECK': {
      const m = /\bCMD\s+(.*)$/.exec(i.args);
      stage.healthcheck = m === null ? null : argv(m[1]);
      break;
    }
    default:
      say(`${where}: not simulated (${i.args})`);
  }
}

const final = stage;
if (final.user === 'root' || final.user === '0') fail('the final stage runs as root');
const mapArgs = (list) => list.map((a) => mapText(final, a));
const entry = mapArgs(final.entrypoint);
const cmd = mapArgs(final.cmd);
const cwd = inStage(final, final.workdir);
/** Runs as the image would: the unprivileged user when this runs as root (setpriv), else as this user. */
const wrap = (list) => (asRoot ? ['setpriv', `--reuid=${UNPRIVILEGED}`, `--regid=${UNPRIVILEGED}`, '--clear-groups', ...list] : list);
const runSync = (list, opts) => spawnSync(list[0], list.slice(1), opts);
const configIndex = cmd.indexOf('-c');
if (configIndex < 0) fail('the CMD names no config (-c FILE)');
const config = cmd[configIndex + 1];

// 1. the default CMD's command and every module it loads exist in the final stage (dev dependencies are pruned)
const command = cmd[0];
const modules = { start: ['primary/primary.js'], demo: ['primary/primary.js', 'cli/demo.js'] }[command];
if (modules === undefined) fail(`CMD ${command}: not a command this script knows how to check`);
for (const m of modules) {
  const r = runSync(wrap([process.execPath, '-e', `import(${JSON.stringify(path.join(cwd, 'dist', 'src', m))}).then(() => process.exit(0), (e) => { console.error(String(e)); process.exit(1); })`]), { cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) fail(`CMD ${command}: dist/src/${m} does not load in the final stage: ${r.stderr.trim()}`);
}
say(`CMD ${command}: its modules load in the final stage`);

// 2. `check` on the image's config, as ENTRYPOINT check -c CONFIG
const check = runSync(wrap([...entry, 'check', '-c', config]), { cwd, env: final.env, encoding: 'utf8', timeout: 60_000 });
if (check.status !== 0) fail(`ENTRYPOINT check -c ${config}: exit ${check.status}: ${check.stdout}${check.stderr}`);
say(`ENTRYPOINT check: ${check.stdout.trim().split('\n')[0]}`);

// 3. start it (every listener and admin on 127.0.0.1:0: no fixed port on a shared machine), HEALTHCHECK, SIGTERM
const text = parse(readFileSync(config, 'utf8'));
for (const l of text.listeners ?? []) l.address = '127.0.0.1:0';
if (text.admin === undefined) fail('the image config has no admin listener: the HEALTHCHECK has nothing to ask');
const healthPort = /:(\d+)\//.exec(final.healthcheck?.join(' ') ?? '')?.[1];
if (healthPort === undefined || !String(text.admin.address).endsWith(`:${healthPort}`)) fail(`the HEALTHCHECK asks port ${healthPort}, the config's admin is ${text.admin.address}`);
text.admin.address = '127.0.0.1:0';
text.workers = 1;
const simConfig = path.join(path.dirname(config), 'portico-sim.yaml');
writeFileSync(simConfig, stringify(text));
if (asRoot) chownSync(simConfig, UNPRIVILEGED, UNPRIVILEGED);
const child = spawn(wrap([...entry, 'start', '-c', simConfig])[0], wrap([...entry, 'start', '-c', simConfig]).slice(1), { cwd, env: final.env, stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
let err = '';
child.stderr.on('data', (c) => (err += c));
const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
const adminPort = await new Promise((resolve) => {
  const timer = setTimeout(() => resolve(null), 60_000);
  child.stdout.on('data', (c) => {
    out += c;
    // the primary's `listening` line names every bound port, the admin listener's among them
    for (const line of out.split('\n')) {
      if (!line.includes('"msg":"listening"')) continue;
      const port = JSON.parse(line).admin?.port;
      if (typeof port === 'number') {
        clearTimeout(timer);
        resolve(port);
      }
    }
  });
  void exited.then(() => resolve(null));
});
if (adminPort === null) {
  child.kill('SIGKILL');
  fail(`ENTRYPOINT start: no listening line with the admin port within 60 s\n${out.slice(-2000)}${err.slice(-2000)}`);
}
say(`ENTRYPOINT start -c ${path.basename(simConfig)}: running, admin on port ${adminPort}${asRoot ? ` as uid ${UNPRIVILEGED}` : ''}`);
const health = spawnSync(final.healthcheck[0], final.healthcheck.slice(1).map((a) => a.replaceAll(`:${healthPort}/`, `:${adminPort}/`)), { encoding: 'utf8', timeout: 10_000 });
if (health.status !== 0) {
  child.kill('SIGKILL');
  fail(`HEALTHCHECK: exit ${health.status}: ${health.stderr}`);
}
say('HEALTHCHECK: exit 0');
child.kill('SIGTERM');
const code = await Promise.race([exited, new Promise((resolve) => setTimeout(() => resolve('timeout'), 60_000))]);
if (code !== 0) {
  child.kill('SIGKILL');
  fail(`SIGTERM: exit ${code}\n${err.slice(-2000)}`);
}
say('SIGTERM: drained and exited 0');
if (!keep) rmSync(base, { recursive: true, force: true });
say('every step passed');
