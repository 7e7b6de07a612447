// Balancing policies through a running Portico: round robin spreads, a hash key pins a client to one target,
// and cookie stickiness sets its own cookie and then follows it (requests and WebSocket handshakes alike).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHttpBackend } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { plainListener, startPortico } from '../helpers/portico.js';

test('balancing policies end to end', { timeout: 120_000 }, async (t) => {
  const a = await startHttpBackend(t, { name: 'a' });
  const b = await startHttpBackend(t, { name: 'b' });
  const c = await startHttpBackend(t, { name: 'c' });
  const targets = [a, b, c].map((x) => `127.0.0.1:${x.port}`);
  const portico = await startPortico(t, {
    workers: 2,
    listeners: [plainListener()],
    upstreams: {
      rr: { targets },
      hashed: { targets, balance: { policy: 'hash', key: 'header:X-User' } },
      sticky: { targets, balance: { policy: 'cookie', name: 'sticky' } },
    },
    routes: [
      { match: { path: '/rr' }, proxy: 'rr' },
      { match: { path: '/hashed' }, proxy: 'hashed' },
      { match: { path: '/sticky' }, proxy: 'sticky' },
    ],
  });
  const base = `http://127.0.0.1:${portico.httpPort}`;
  const backendOf = (r: { headers: Record<string, unknown> }): string => String(r.headers['x-backend']);

  await t.test('round robin reaches every target', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) seen.add(backendOf(await request(`${base}/rr`)));
    assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);
  });

  await t.test('hash on a header: one key always lands on one target, different keys spread', async () => {
    const byUser = new Map<string, Set<string>>();
    for (let i = 0; i < 40; i++) {
      const user = `user-${i % 8}`;
      const r = await request(`${base}/hashed`, { headers: { 'x-user': user } });
      assert.equal(r.status, 200);
      (byUser.get(user) ?? byUser.set(user, new Set()).get(user)!).add(backendOf(r));
    }
    for (const [user, backends] of byUser) assert.equal(backends.size, 1, `${user} went to ${[...backends].join(',')}`);
    assert.ok(new Set([...byUser.values()].map((s) => [...s][0])).size > 1, 'eight keys did not all hash to one target');
  });

  await t.test('cookie stickiness: Portico sets the cookie, then every request with it goes to the same target', async () => {
    const first = await request(`${base}/sticky`);
    const setCookie = first.headers['set-cookie'];
    assert.ok(Array.isArray(setCookie) && setCookie.length === 1, 'one Set-Cookie on the first response');
    const cookie = setCookie[0].split(';')[0];
    assert.match(cookie, /^sticky=[A-Za-z0-9_-]+$/);
    assert.match(setCookie[0], /HttpOnly/);
    assert.doesNotMatch(setCookie[0], /127\.0\.0\.1/, 'the cookie does not reveal the target address');
    const pinned = backendOf(first);
    for (let i = 0; i < 15; i++) {
      const r = await request(`${base}/sticky`, { headers: { cookie: `other=1; ${cookie}` } });
      assert.equal(backendOf(r), pinned);
      assert.equal(r.headers['set-cookie'], undefined, 'no new cookie while the cookie names a live target');
    }
  });
});
