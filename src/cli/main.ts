// The `portico` command line: parses arguments, loads the config, and hands off. It has no logic of its own.
// `check` and `reload` must start nothing, so process code (primary/) is imported only by `start` and `demo`.
// Exit codes: 0 ok, 1 bad config, refused reload or failure, 2 usage error.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { formatErrors, loadConfig, resolveWorkers } from '../config/load.js';
import { terminateProblem } from '../terminate/uws.js';
import type { Config } from '../config/schema.js';
import { controlPaths, requestReload, requestUpgrade } from '../primary/state-files.js';
import { importNginxCommand } from './import-nginx.js';

/** The package root: this file runs as dist/src/cli/main.js. */
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const DEFAULT_CONFIG = path.join(ROOT, 'config', 'portico.yaml');
/** How long `portico reload` waits for the running primary's verdict (workers apply in milliseconds). */
const RELOAD_TIMEOUT_MS = 60_000;
/** How long `portico upgrade` waits for the new primary to listen (the old one gives it up after 60 s). */
const UPGRADE_TIMEOUT_MS = 90_000;

const USAGE = `usage: portico <command> [options]

commands:
  start [-c FILE]   run Portico in the foreground (default config: config/portico.yaml in the package)
  demo  [-c FILE]   like start, and also start the demo backends the default config points at
  check [-c FILE]   validate FILE: print a one-line summary, or every error with its YAML path and line
  reload [-c FILE]  have the Portico running FILE re-read it (SIGHUP through its pid file in .state/ next
                    to FILE); prints what changed, or every error (the running config keeps serving)
  upgrade [-c FILE] zero-downtime upgrade: the Portico running FILE starts a new one from the code and
                    config on disk now (new version, new worker count) and hands its ports over; it
                    then drains (requests finish, tunnels stay up to timeouts.shutdown_grace) and exits
  schema            print the config file's JSON Schema (for editors: completion and checks; README)
  bench [ARGS...]   the capacity report: standard loads through Portico (and nginx, HAProxy when installed),
                    report.html/.md/.json in --out DIR (default bench-report/); --quick, -c FILE, --plan
                    PLAN.yaml; \`portico bench --help\` for all options (bench/README.md)
  import-nginx FILE [-o OUT]
                    translate an nginx config into Portico YAML (stdout, or OUT); a comment marks each
                    place that was not translated, and stderr lists them

options:
  -c, --config FILE   config file (relative to the current folder)
  -h, --help          show this text
  -v, --version       print the version
`;


function usage(problem?: string): number {
  process.stderr.write(`${problem === undefined ? '' : `portico: ${problem}\n\n`}${USAGE}`);
  return 2;
}

/** Asked-for help is an answer, not an error: stdout, exit 0. */
function help(): number {
  process.stdout.write(USAGE);
  return 0;
}

/** `portico --version`: the package's version and the Node.js it runs on. */
function version(): number {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  process.stdout.write(`portico ${pkg.version} (node ${process.version})\n`);
  return 0;
}

function parseConfigArgs(args: string[]) {
  return parseArgs({
    args,
    options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
    strict: true,
  });
}

type ConfigFile = { shown: string; abs: string };
type ConfigArg = { kind: 'file'; file: ConfigFile } | { kind: 'usage'; problem?: string } | { kind: 'help' };

/** `-c FILE` (or one positional FILE); `shown` is the name as the user wrote it, for error lines. */
function configArg(args: string[]): ConfigArg {
  let parsed: ReturnType<typeof parseConfigArgs>;
  try {
    parsed = parseConfigArgs(args);
  } catch (err) {
    return { kind: 'usage', problem: (err as Error).message };
  }
  if (parsed.values.help === true) return { kind: 'help' };
  if (parsed.positionals.length > 1 || (parsed.positionals.length === 1 && parsed.values.config !== undefined)) {
    return { kind: 'usage', problem: `unexpected argument ${JSON.stringify(parsed.positionals.at(-1))}` };
  }
  const given = parsed.values.config ?? parsed.positionals[0];
  if (given === undefined) return { kind: 'file', file: { shown: path.relative(process.cwd(), DEFAULT_CONFIG) || DEFAULT_CONFIG, abs: DEFAULT_CONFIG } };
  return { kind: 'file', file: { shown: given, abs: path.resolve(given) } };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function summary(config: Config): string {
  const upstreams = Object.values(config.upstreams);
  const tls = config.listeners.filter((l) => l.tls !== undefined).length;
  const targets = upstreams.reduce((n, u) => n + u.targets.length, 0);
  const names = upstreams.reduce((n, u) => n + u.discover.length, 0);
  const workers = config.workers === 'auto' ? `auto (${resolveWorkers(config)})` : String(config.workers);
  const discovered = names === 0 ? '' : ` + ${plural(names, 'DNS name')} to follow`;
  return `ok: ${plural(config.listeners.length, 'listener')} (${tls} TLS), ${plural(upstreams.length, 'upstream')} (${plural(targets, 'target')}${discovered}), ${plural(config.routes.length, 'route')}, workers ${workers}`;
}

/** Loads and validates; on errors prints every one of them and returns undefined. */
function load(file: ConfigFile): { config: Config; text: string } | undefined {
  const result = loadConfig(file.abs);
  // a terminate route needs uWebSockets.js here: refused now, never a silent slow fallback
  const problem = result.ok ? terminateProblem(result.config) : undefined;
  if (result.ok && problem === undefined) {
    if (result.warnings.length > 0) process.stderr.write(`${formatErrors(file.shown, result.warnings).replace(/^/gm, 'warning: ')}\n`);
    return result;
  }
  const errors = result.ok ? [problem!] : result.errors;
  process.stderr.write(`${formatErrors(file.shown, errors)}\n`);
  process.stderr.write(`portico: ${plural(errors.length, 'error')} in ${file.shown}; nothing was started\n`);
  return undefined;
}

async function run(args: string[], demo: boolean): Promise<number> {
  const arg = configArg(args);
  if (arg.kind === 'help') return help();
  if (arg.kind === 'usage') return usage(arg.problem);
  const loaded = load(arg.file);
  if (loaded === undefined) return 1;
  // Imported here, not at the top: `check` and `reload` load no process code.
  const { runPrimary } = await import('../primary/primary.js');
  const sidecars = demo ? async () => (await import('./demo.js')).startDemoBackends() : undefined;
  await runPrimary({ configFile: arg.file.abs, config: loaded.config, sidecars });
  return 0;
}

function check(args: string[]): number {
  const arg = configArg(args);
  if (arg.kind === 'help') return help();
  if (arg.kind === 'usage') return usage(arg.problem);
  const loaded = load(arg.file);
  if (loaded === undefined) return 1;
  process.stdout.write(`${summary(loaded.config)}\n`);
  return 0;
}

/**
 * Signals the primary running FILE and prints its verdict. It validates the file itself (the running config
 * is the judge), so a refused config is also in its log and in /status.
 */
async function reload(args: string[]): Promise<number> {
  const arg = configArg(args);
  if (arg.kind === 'help') return help();
  if (arg.kind === 'usage') return usage(arg.problem);
  const r = await requestReload(arg.file.abs, RELOAD_TIMEOUT_MS);
  if (r.kind === 'not-running') {
    process.stderr.write(`portico: ${r.reason}\n`);
    return 1;
  }
  if (r.kind === 'timeout') {
    process.stderr.write(`portico: process ${r.pid} gave no reload outcome within ${RELOAD_TIMEOUT_MS / 1000}s (see its log; outcome file ${controlPaths(arg.file.abs).outcome})\n`);
    return 1;
  }
  const o = r.outcome;
  if (o.ok) {
    process.stdout.write(`reloaded ${arg.file.shown}: generation ${o.generation}: ${o.summary}\n`);
    for (const w of o.warnings) process.stderr.write(`portico: warning: ${w}\n`);
    return 0;
  }
  if (o.errors.length > 0) process.stderr.write(`${formatErrors(arg.file.shown, o.errors)}\n`);
  process.stderr.write(`portico: reload refused: ${o.error}; generation ${o.generation} keeps serving\n`);
  return 1;
}

/**
 * Zero-downtime upgrade: checks FILE here first (a bad file never reaches the running instance), then has the
 * primary running FILE start a new one from the code and config on disk now and hand over to it (SIGUSR2;
 * primary/upgrade.ts). Exit 0 once the new primary listens; the old one then drains and exits by itself.
 */
async function upgrade(args: string[]): Promise<number> {
  const arg = configArg(args);
  if (arg.kind === 'help') return help();
  if (arg.kind === 'usage') return usage(arg.problem);
  const loaded = load(arg.file);
  if (loaded === undefined) {
    process.stderr.write('portico: upgrade refused: the running instance keeps serving\n');
    return 1;
  }
  const r = await requestUpgrade(arg.file.abs, UPGRADE_TIMEOUT_MS);
  if (r.kind === 'not-running') {
    process.stderr.write(`portico: ${r.reason}\n`);
    return 1;
  }
  if (r.kind === 'timeout') {
    process.stderr.write(`portico: process ${r.pid} gave no upgrade outcome within ${UPGRADE_TIMEOUT_MS / 1000}s (see its log; outcome file ${controlPaths(arg.file.abs).upgrade})\n`);
    return 1;
  }
  const o = r.outcome;
  if (!o.ok) {
    process.stderr.write(`portico: upgrade failed: ${o.error}; process ${o.pid} keeps serving\n`);
    return 1;
  }
  const grace = loaded.config.timeouts.shutdown_grace;
  process.stdout.write(`upgraded ${arg.file.shown}: new primary ${o.newPid} with ${o.workers} worker(s) is listening; old primary ${o.pid} stopped accepting and drains (requests finish, tunnels stay up to ${grace / 1000}s)\n`);
  return 0;
}

/** The JSON Schema of the config file, on stdout (`portico schema > portico.schema.json`). */
async function schema(args: string[]): Promise<number> {
  if (args.includes('-h') || args.includes('--help')) return help();
  if (args.length > 0) return usage(`unexpected argument ${JSON.stringify(args[0])}`);
  const { configJsonSchema } = await import('../config/json-schema.js');
  process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
  return 0;
}

/** Runs the compiled capacity benchmark (bench/scenarios/capacity.ts) with the remaining arguments, passing signals through. */
function bench(args: string[]): Promise<number> {
  const script = path.join(ROOT, 'dist', 'bench', 'scenarios', 'capacity.js');
  if (!existsSync(script)) {
    process.stderr.write(`portico: ${script} not found (run \`npm run build\` first)\n`);
    return Promise.resolve(1);
  }
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: 'inherit' });
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    process.on('SIGINT', forward).on('SIGTERM', forward);
    child.on('error', (err) => {
      process.stderr.write(`portico: cannot run the benchmark: ${err.message}\n`);
      resolve(1);
    });
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward).off('SIGTERM', forward);
      resolve(code ?? 128 + (signal === null ? 0 : (osConstants.signals[signal] ?? 0)));
    });
  });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'check':
      return check(rest);
    case 'reload':
      return reload(rest);
    case 'upgrade':
      return upgrade(rest);
    case 'start':
      return run(rest, false);
    case 'demo':
      return run(rest, true);
    case 'schema':
      return schema(rest);
    case 'bench':
      return bench(rest);
    case 'import-nginx':
      return importNginxCommand(rest, usage);
    case undefined:
      return usage();
    case '-h':
    case '--help':
    case 'help':
      return help();
    case '-v':
    case '--version':
    case 'version':
      return version();
    default:
      return usage(`unknown command ${JSON.stringify(command)}`);
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`portico: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
