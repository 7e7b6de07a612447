// Keys for sticky-tunnel tests: one whose Maglev home (src/upstream/balancer.ts) is a given target among one
// target list and another target among a second list, as a reload or a discovery change would move it.
import { maglevHome, type Target } from '../../src/upstream/balancer.js';

/**
 * A key that hashes to `from` among `before` and elsewhere (not in `avoid`) among `after`; `home` is where.
 * Ids are "127.0.0.1:PORT", in the order the pool has them; every target has weight `weight`.
 */
export function movingKey(before: string[], after: string[], from: string, avoid: readonly string[] = [], weight = 1): { key: string; home: string } {
  const targets = (ids: string[]): Target[] => ids.map((id) => ({ id, host: '127.0.0.1', port: Number(id.split(':')[1]), weight, available: true, active: 0 }));
  const homeBefore = maglevHome(targets(before));
  const homeAfter = maglevHome(targets(after));
  for (let i = 0; i < 10_000; i++) {
    const key = `session-${i}`;
    const home = homeAfter(key);
    if (homeBefore(key) === from && home !== undefined && home !== from && !avoid.includes(home)) return { key, home };
  }
  throw new Error('no key moves in 10000 tries');
}
