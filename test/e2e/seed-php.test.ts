// The contract's seed-php.yaml as it is written, in one running instance: the only changes are the listener on a
// free port, the upstream targets pointed at this test's php-fpm and chat backend, and its relative paths (its
// certificate, the roots) resolved against its own folder as `portico start -c seed-php.yaml` would. Every block
// answers on the one TLS port: the chat WebSocket terminated (its max_message_size applied), the PHP route with its
// cors block, and the static root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { startChatBackend } from '../helpers/chat-backend.js';
import { echo, openWebSocket, closed, request } from '../helpers/clients.js';
import { SHARED_CONTRACT } from '../helpers/paths.js';
import { needPeer } from '../helpers/peers.js';
import { hasPhpFpm, startPhpFpm } from '../helpers/php-fpm.js';
import { startPortico } from '../helpers/portico.js';

interface SeedPhp {
  listeners: Array<{ address: string; tls: { certificates: Array<{ cert: string; key: string }> } }>;
  upstreams: Record<string, { targets: string[] }>;
  routes: Array<{ fastcgi?: { root: string }; static?: { root: string } }>;
}

test("seed-php.yaml as written: terminated WSS chat, PHP with cross-origin grants and static files on one TLS port", { timeout: 90_000 }, async (t) => {
  if (!needPeer(t, 'php-fpm', hasPhpFpm())) return;
  const fpm = await startPhpFpm(t);
  const chat = await startChatBackend(t);
  const seed = parse(readFileSync(path.join(SHARED_CONTRACT, 'seed-php.yaml'), 'utf8')) as SeedPhp;
  const here = (p: string): string => path.resolve(SHARED_CONTRACT, p);
  for (const l of seed.listeners) {
    l.address = '127.0.0.1:0';
    for (const c of l.tls.certificates) Object.assign(c, { cert: here(c.cert), key: here(c.key) });
  }
  seed.upstreams.chat.targets = [`127.0.0.1:${chat.port}`];
  seed.upstreams.php.targets = [fpm.target];
  for (const r of seed.routes) {
    if (r.fastcgi !== undefined) r.fastcgi.root = here(r.fastcgi.root);
    if (r.static !== undefined) r.static.root = here(r.static.root);
  }
  const portico = await startPortico(t, stringify(seed));
  const port = portico.tlsPort;
  const ca = readFileSync(here('certs/site.crt'));
  const get = (p: string, headers: Record<string, string> = {}, method = 'GET'): ReturnType<typeof request> => request(`https://localhost:${port}${p}`, { headers, ca, method });

  await t.test('WSS /wss: terminated in Portico, messages relayed to the chat upstream, 1009 over the seed\'s 64 KiB', async () => {
    const ws = await openWebSocket(t, `wss://localhost:${port}/wss`, { ca });
    assert.equal(await echo(ws, 'hello chat'), 'hello chat');
    assert.equal(chat.upgrades.length, 1, 'the chat upstream got one WebSocket of its own');
    const code = closed(ws);
    ws.send(Buffer.alloc(64 * 1024 + 1));
    assert.equal(await code, 1009, 'max_message_size: 64KiB is Portico\'s (a tunnel would not close with 1009)');
  });

  await t.test('PHP: the seed page runs on php-fpm with the grant for an allowed origin, none for another; a preflight answered', async () => {
    const r = await get('/index.php?x=1', { origin: 'https://app.example.test' });
    assert.equal(r.status, 200, r.body.toString());
    const j = JSON.parse(r.body.toString()) as Record<string, string>;
    assert.equal(j.script, here('html/index.php'));
    assert.equal(j.query, 'x=1');
    assert.equal(r.headers['access-control-allow-origin'], 'https://app.example.test');
    assert.equal(r.headers['access-control-allow-credentials'], 'true');
    const other = await get('/index.php', { origin: 'https://elsewhere.test' });
    assert.equal(other.status, 200);
    assert.equal(other.headers['access-control-allow-origin'], undefined);
    const pre = await get('/index.php', { origin: 'https://m.example.test', 'access-control-request-method': 'POST' }, 'OPTIONS');
    assert.equal(pre.status, 204, 'the preflight is answered by Portico');
    assert.equal(pre.headers['access-control-allow-origin'], 'https://m.example.test');
  });

  await t.test('static: / serves the seed\'s html/index.html', async () => {
    const r = await get('/');
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), readFileSync(here('html/index.html'), 'utf8'));
    assert.match(String(r.headers['content-type']), /^text\/html/);
  });
});
