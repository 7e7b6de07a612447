// Outside peers (curl, chromium, python websockets, nginx...) may be missing on a developer machine: tests then
// skip loudly. CI sets PORTICO_REQUIRE_PEERS=1, which turns every such skip into a failure.
import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

export const REQUIRE_PEERS = process.env.PORTICO_REQUIRE_PEERS === '1';

/** True when `cmd args` runs and exits 0. */
export function hasCommand(cmd: string, args: string[] = ['--version']): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0;
}

/**
 * Call at the top of a test that needs a peer: returns false (after marking the test skipped with a loud
 * reason) when the peer is missing locally; throws when peers are required (CI).
 */
export function needPeer(t: TestContext, name: string, present: boolean): boolean {
  if (present) return true;
  const reason = `PEER MISSING: ${name} is not installed; this test is skipped locally and required in CI`;
  if (REQUIRE_PEERS) throw new Error(`${reason} (PORTICO_REQUIRE_PEERS=1)`);
  process.stderr.write(`\n*** ${reason} ***\n`);
  t.skip(reason);
  return false;
}

/**
 * A fuzz test of one addon export (`present`: the addon loaded and has it): skipped when PORTICO_NATIVE=0 switched
 * the addon off, else a missing addon is a missing peer (`what` names it).
 */
export function needAddonExport(t: TestContext, present: boolean, what: string): boolean {
  if (present) return true;
  if (process.env.PORTICO_NATIVE === '0') {
    t.skip('the native addon is switched off by PORTICO_NATIVE=0');
    return false;
  }
  return needPeer(t, what, false);
}
