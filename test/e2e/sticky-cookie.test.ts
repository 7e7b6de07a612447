// The sticky cookie is a keyed hash (HMAC) of the target address: not computable from the address, the same in
// every worker and across reloads (the primary's secret), and the same across instances only with a shared
// `balance.secret`.
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { test } from 'node:test';
import type { ConfigInput } from '../../src/config/schema.js';
import { startHttpBackend } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { plainListener, reloadPortico, startPortico, type Portico } from '../helpers/portico.js';

function config(target: string, secret?: string, extraRoute = false): ConfigInput {
  return {
    workers: 2,
    listeners: [plainListener()],
    upstreams: { sticky: { targets: [target], balance: { policy: 'cookie', name: 'sticky', ...(secret === undefined ? {} : { secret }) } } },
    routes: [...(extraRoute ? [{ match: { path: '/other' }, proxy: 'sticky' }] : []), { match: { path: '/' }, proxy: 'sticky' }],
  };
}

/** The cookie value Portico sets for the one target, read on fresh connections (so both workers answer). */
async function cookieValues(portico: Portico, n = 6): Promise<Set<string>> {
  const values = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = await request(`http://127.0.0.1:${portico.httpPort}/`, { headers: { connection: 'close' } });
    assert.equal(r.status, 200);
    const set = r.headers['set-cookie'];
    assert.ok(Array.isArray(set) && set.length === 1, 'one Set-Cookie');
    values.add(/^sticky=([^;]+);/.exec(set[0])![1]);
  }
  return values;
}

test('the sticky cookie is a keyed hash: not the plain hash of the address; kept by a reload; shared across instances only with balance.secret', { timeout: 90_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const target = `127.0.0.1:${backend.port}`;
  const first = await startPortico(t, config(target));
  const [value, ...others] = [...(await cookieValues(first))];
  assert.deepEqual(others, [], 'every worker sets the same value');
  const unkeyed = createHash('sha256').update(`portico-sticky\u0000${target}`).digest('base64url').slice(0, 12);
  assert.notEqual(value, unkeyed, 'the value is not the unkeyed hash anyone can compute from the address');

  // a reload (another route) keeps the instance secret: the cookie stays valid, no new Set-Cookie
  const reloaded = await reloadPortico(first, config(target, undefined, true));
  assert.equal(reloaded.code, 0, reloaded.stderr);
  assert.deepEqual([...(await cookieValues(first))], [value]);
  const withCookie = await request(`http://127.0.0.1:${first.httpPort}/`, { headers: { cookie: `sticky=${value}` } });
  assert.equal(withCookie.headers['set-cookie'], undefined, 'the cookie is still recognised after the reload');

  // another instance without a configured secret makes another value
  const second = await startPortico(t, config(target));
  assert.notDeepEqual([...(await cookieValues(second))], [value]);

  // with one balance.secret, two instances agree, and the value is the HMAC under that secret
  const secret = 'shared-sticky-secret-0123456789';
  const expected = createHmac('sha256', secret).update(`portico-sticky\u0000${target}`).digest('base64url').slice(0, 12);
  const x = await startPortico(t, config(target, secret));
  const y = await startPortico(t, config(target, secret));
  assert.deepEqual([...(await cookieValues(x))], [expected]);
  assert.deepEqual([...(await cookieValues(y))], [expected]);
  const across = await request(`http://127.0.0.1:${y.httpPort}/`, { headers: { cookie: `sticky=${expected}` } });
  assert.equal(across.headers['set-cookie'], undefined, "one instance's cookie is valid at the other");
});
