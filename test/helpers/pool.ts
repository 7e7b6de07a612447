// UpstreamPool for unit tests: one built from config (any upstream, or one loopback target) and closed after the
// test, and acquire() as a promise whose sockets are destroyed after the test. No assertions here.
import type { Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { configSchema, type ConfigInput } from '../../src/config/schema.js';
import type { ProxyError } from '../../src/core/errors.js';
import type { Target } from '../../src/upstream/balancer.js';
import { UpstreamPool, type UpstreamClient } from '../../src/upstream/pool.js';

export type UpstreamInput = NonNullable<ConfigInput['upstreams']>[string];

/**
 * A pool named "u" from `upstream` (over the defaults), on the clock `now` when given; closed after the test
 * (t null: a pool the test never lets open a socket).
 */
export function poolFor(t: TestContext | null, upstream: UpstreamInput, now?: () => number): UpstreamPool {
  const config = configSchema.parse({ listeners: [{ address: '127.0.0.1:0' }], upstreams: { u: upstream } });
  const pool = new UpstreamPool('u', config.upstreams.u, {}, now === undefined ? {} : { now });
  t?.after(() => pool.close());
  return pool;
}

/** A pool named "u" with one target, 127.0.0.1:port, and `upstream` over the defaults. */
export function makePool(t: TestContext, port: number, upstream: Partial<UpstreamInput> = {}): { pool: UpstreamPool; target: Target } {
  const pool = poolFor(t, { targets: [`127.0.0.1:${port}`], ...upstream });
  return { pool, target: pool.targets[0] };
}

export interface Acquired {
  err: ProxyError | null;
  socket: Socket;
  reused: boolean;
  /** True when the callback ran before acquire() returned (it must never). */
  sync: boolean;
}

/** acquire() as a promise; sockets handed out are destroyed after the test. */
export function acquire(t: TestContext, pool: UpstreamPool, target: Target, client?: UpstreamClient): Promise<Acquired> {
  return new Promise((resolve) => {
    let returned = false;
    pool.acquire(
      target,
      (err, socket, reused) => {
        if (socket) {
          socket.on('error', () => {});
          t.after(() => socket.destroy());
        }
        resolve({ err, socket: socket as Socket, reused, sync: !returned });
      },
      0,
      client,
    );
    returned = true;
  });
}

/** Open and idle sockets of the pool's first target. */
export function counts(pool: UpstreamPool): { open: number; idle: number } {
  const s = pool.stats()[0];
  return { open: s.open, idle: s.idle };
}
