// A network namespace a test makes for itself, for traffic loopback cannot carry (spoofed sources whose replies go
// nowhere): `ip netns add`, a veth pair addressed from 198.18.0.0/15 (RFC 2544's benchmarking range), a route that
// sends the replies to a spoofed range out to a neighbour that does not exist, and all of it removed in t.after.
// Root runs ip directly, another user through `sudo -n` (.ci/run's SUDO rule). Knows nothing of Portico.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';
import { needPeer } from './peers.js';

/** How this process runs privileged commands: itself as root, else `sudo -n` (never a password prompt). */
export const SUDO: readonly string[] = process.getuid?.() === 0 ? [] : ['sudo', '-n'];

export interface Netns {
  readonly name: string;
  /** This process's side of the veth (198.18.N.1): clients, backends and the flood send from here. */
  readonly hostAddr: string;
  /** The namespace's side (198.18.N.2): what runs inside listens here. */
  readonly nsAddr: string;
  /** Three octets (198.19.N): sources whose replies the namespace routes to a neighbour that does not exist. */
  readonly spoofPrefix: string;
  /** The veth's two ends: this side's interface and the namespace's. */
  readonly hostIf: string;
  readonly nsIf: string;
  /**
   * The command a process runs under to live in the namespace (startPortico's `wrap`): `ip netns exec NAME`, and for
   * a non-root user under sudo, back to that user (setpriv) with the PORTICO_ and NODE_ environment passed on.
   */
  readonly wrap: string[];
  /** Runs `argv` in the namespace (privileged), bounded in time; its stdout. */
  exec(argv: string[], timeoutMs?: number): Promise<string>;
  /** Runs `argv` on this side (privileged), bounded in time; its stdout. */
  execHost(argv: string[], timeoutMs?: number): Promise<string>;
}

/**
 * This process's environment without LD_PRELOAD, for the tools run here (ip, ss, the flood): under scripts/asan.sh
 * it preloads AddressSanitizer for the addon, and iproute2's own code trips it (as curl hangs with it).
 */
export function toolEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.LD_PRELOAD;
  return env;
}

function run(argv: string[], timeoutMs = 10_000): Promise<string> {
  const [cmd, ...args] = [...SUDO, ...argv];
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', env: toolEnv() }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${[cmd, ...args].join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/**
 * Why namespaces cannot be made here, or undefined when they can be tried: without root or `sudo -n` the test
 * cannot run on this machine at all (CI always has one of them), which is a skip even where peers are required.
 */
function privilegeMissing(): string | undefined {
  if (SUDO.length === 0) return undefined;
  const r = spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0 ? undefined : 'network namespaces need root or `sudo -n` (neither here)';
}

/**
 * Makes a namespace with a veth pair, or undefined after a loud skip: no privilege skips; with the privilege, a
 * missing `ip` or a kernel that refuses namespaces fails under PORTICO_REQUIRE_PEERS=1 (CI can run it).
 */
export async function makeNetns(t: TestContext): Promise<Netns | undefined> {
  const noPrivilege = privilegeMissing();
  if (noPrivilege !== undefined) {
    const reason = `NETNS UNAVAILABLE: ${noPrivilege}; this test is skipped`;
    process.stderr.write(`\n*** ${reason} ***\n`);
    t.skip(reason);
    return undefined;
  }
  if (!needPeer(t, 'iproute2 (`ip`, `ss`)', spawnSync('ip', ['-V'], { stdio: 'ignore' }).status === 0)) return undefined;
  const tag = process.pid % 100_000;
  const name = `portico-floods-${process.pid}`;
  const hostIf = `pfl${tag}h`;
  const nsIf = `pfl${tag}n`;
  // a /24 of 198.18.0.0/16 that no route of this machine uses yet
  const routes = await run(['ip', '-4', 'route', 'show', 'table', 'all']);
  const free = Array.from({ length: 254 }, (_, i) => i + 1).filter((n) => !routes.includes(`198.18.${n}.`) && !routes.includes(`198.19.${n}.`));
  assert.ok(free.length > 0, 'no free /24 in 198.18.0.0/16');
  const n = free[Math.floor(Math.random() * free.length)];
  const ns: Netns = {
    name,
    hostAddr: `198.18.${n}.1`,
    nsAddr: `198.18.${n}.2`,
    spoofPrefix: `198.19.${n}`,
    hostIf,
    nsIf,
    wrap: [...preload('off'), ...SUDO, 'ip', 'netns', 'exec', name, ...(SUDO.length === 0 ? preload('on') : dropToUser())],
    exec: (argv, timeoutMs) => run(['ip', 'netns', 'exec', name, ...argv], timeoutMs),
    execHost: (argv, timeoutMs) => run(argv, timeoutMs),
  };
  // removed even when a step below fails: the namespace takes its veth end (and so the pair) with it. What still runs
  // in it was started by this test (under sudo a SIGKILL to sudo would not reach its child): ended first, by pid.
  t.after(async () => {
    const pids = (await run(['ip', 'netns', 'pids', name]).catch(() => '')).split('\n').filter((p) => /^\d+$/.test(p));
    if (pids.length > 0) await run(['kill', '-KILL', ...pids]).catch(() => {});
    await run(['ip', 'netns', 'del', name]).catch(() => {});
    await run(['ip', 'link', 'del', hostIf]).catch(() => {});
  });
  const gateway = `198.18.${n}.254`;
  try {
    await run(['ip', 'netns', 'add', name]);
    await run(['ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', name]);
    await run(['ip', 'addr', 'add', `${ns.hostAddr}/24`, 'dev', hostIf]);
    await run(['ip', 'link', 'set', hostIf, 'up']);
    await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    await run(['ip', '-n', name, 'addr', 'add', `${ns.nsAddr}/24`, 'dev', nsIf]);
    await run(['ip', '-n', name, 'link', 'set', nsIf, 'up']);
    // Replies to the spoofed range leave the namespace for a neighbour whose MAC no interface has: this side's veth
    // drops them (another host's frame), so each spoofed SYN stays half-open. Without a route the kernel would
    // free the request at once (no route for its SYN-ACK), and a real flood is not that.
    await run(['ip', '-n', name, 'neigh', 'add', gateway, 'lladdr', '02:00:00:00:00:fe', 'dev', nsIf, 'nud', 'permanent']);
    await run(['ip', '-n', name, 'route', 'add', `${ns.spoofPrefix}.0/24`, 'via', gateway, 'dev', nsIf]);
  } catch (err) {
    if (!needPeer(t, `network namespaces with veth (${(err as Error).message})`, false)) return undefined;
  }
  return ns;
}

/** An LD_PRELOAD of this process (asan.sh) is off for `ip` itself and on again for the program it runs. */
function preload(state: 'off' | 'on'): string[] {
  const lib = process.env.LD_PRELOAD;
  if (lib === undefined) return [];
  return state === 'off' ? ['env', '-u', 'LD_PRELOAD'] : ['env', `LD_PRELOAD=${lib}`];
}

/** Under sudo: back to this process's user inside the namespace, with the environment sudo does not pass. */
function dropToUser(): string[] {
  const env = Object.entries(process.env).filter(([k, v]) => v !== undefined && (k.startsWith('PORTICO_') || k.startsWith('NODE_') || k.startsWith('ASAN_') || k === 'LD_PRELOAD' || k === 'PATH' || k === 'HOME'));
  return ['setpriv', `--reuid=${process.getuid?.()}`, `--regid=${process.getgid?.()}`, '--clear-groups', 'env', ...env.map(([k, v]) => `${k}=${v}`)];
}

