// The seed scenario (test/fixtures/seed/seed.yaml, only its addresses moved to free ports) end to end with real
// clients: curl, `ws` and Python `websockets` through ONE TLS listener, and the same routes over plain HTTP.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { startHttpBackend, startWsEchoBackend, type EchoReply, type HttpBackend, type WsEchoBackend } from '../helpers/backends.js';
import { curl, echo, hasCurl, hasPythonWebsockets, openWebSocket, parseCurlOutput, PYTHON, PYTHON_WSS_CLIENT, request, run } from '../helpers/clients.js';
import { FIXTURES } from '../helpers/paths.js';
import { needPeer } from '../helpers/peers.js';
import { startPortico, TEST_CERT, TEST_KEY, type Portico } from '../helpers/portico.js';

interface Seed {
  portico: Portico;
  tomcat: HttpBackend[];
  chat: WsEchoBackend[];
}

/**
 * The seed file as it is, except: listeners on port 0 (TLS first, as in the seed), the test certificate, and
 * each upstream target pointed at a real backend (weights and balance kept).
 */
async function startSeed(t: TestContext): Promise<Seed> {
  const tomcat = [await startHttpBackend(t, { name: 'tomcat-a' }), await startHttpBackend(t, { name: 'tomcat-b' })];
  const chat = [await startWsEchoBackend(t), await startWsEchoBackend(t)];
  const seed = parse(readFileSync(path.join(FIXTURES, 'seed', 'seed.yaml'), 'utf8')) as {
    listeners: { address: string; tls?: { certificates: { cert: string; key: string }[] } }[];
    upstreams: Record<string, { targets: (string | { address: string; weight?: number })[] }>;
  };
  for (const l of seed.listeners) {
    l.address = '127.0.0.1:0';
    if (l.tls !== undefined) l.tls.certificates = [{ cert: TEST_CERT, key: TEST_KEY }];
  }
  const retarget = (targets: (string | { address: string; weight?: number })[], ports: number[]) =>
    targets.map((tg, i) => (typeof tg === 'string' ? `127.0.0.1:${ports[i]}` : { ...tg, address: `127.0.0.1:${ports[i]}` }));
  seed.upstreams.chat.targets = retarget(seed.upstreams.chat.targets, chat.map((b) => b.port));
  seed.upstreams.tomcat.targets = retarget(seed.upstreams.tomcat.targets, tomcat.map((b) => b.port));
  const portico = await startPortico(t, stringify(seed));
  assert.equal(portico.listeners.length, 2, 'the seed has one TLS and one plain listener');
  return { portico, tomcat, chat };
}

function assertForwarded(reply: EchoReply, scheme: 'http' | 'https', host: string): void {
  assert.match(reply.backend, /^tomcat-/, 'reached the tomcat pool');
  assert.equal(reply.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(reply.headers['x-real-ip'], '127.0.0.1');
  assert.equal(reply.headers['x-forwarded-proto'], scheme);
  assert.equal(reply.headers['x-forwarded-host'], host);
}

test('seed scenario: HTTPS and WSS on one TLS port, plain HTTP on the same routes', { timeout: 120_000 }, async (t) => {
  const { portico, tomcat, chat } = await startSeed(t);
  const tls = portico.tlsPort;
  const plain = portico.httpPort;

  await t.test('curl over HTTPS: GET /Tomcat/x reaches the tomcat pool with X-Forwarded-For/-Proto/-Host and X-Real-IP', async (t) => {
    if (!needPeer(t, 'curl', hasCurl())) return;
    const r = await curl(`https://localhost:${tls}/Tomcat/x?y=1`);
    assert.equal(r.code, 0, r.stderr);
    const res = parseCurlOutput(r.stdout);
    assert.equal(res.status, 200);
    const reply = JSON.parse(res.body) as EchoReply;
    assert.equal(reply.url, '/Tomcat/x?y=1', 'path and query reach the backend unchanged');
    assertForwarded(reply, 'https', `localhost:${tls}`);
    assert.equal(res.headers['x-backend'], reply.backend, 'response headers come back from the backend');
  });

  await t.test('curl over plain HTTP: GET /Tomcat/x reaches the tomcat pool with X-Forwarded-Proto http', async (t) => {
    if (!needPeer(t, 'curl', hasCurl())) return;
    const r = await curl(`http://127.0.0.1:${plain}/Tomcat/x`);
    assert.equal(r.code, 0, r.stderr);
    const res = parseCurlOutput(r.stdout);
    assert.equal(res.status, 200);
    assertForwarded(JSON.parse(res.body) as EchoReply, 'http', `127.0.0.1:${plain}`);
  });

  await t.test('an untrusted client\'s X-Forwarded-For is replaced by its address (no forwarding.trusted_proxies in the seed)', async (t) => {
    if (!needPeer(t, 'curl', hasCurl())) return;
    const r = await curl(`https://localhost:${tls}/Tomcat/xff`, ['-H', 'X-Forwarded-For: 203.0.113.7', '-H', 'X-Real-IP: 198.51.100.1']);
    const reply = JSON.parse(parseCurlOutput(r.stdout).body) as EchoReply;
    assert.equal(reply.headers['x-forwarded-for'], '127.0.0.1', 'a client cannot spoof X-Forwarded-For');
    assert.equal(reply.headers['x-real-ip'], '127.0.0.1', 'a client cannot spoof X-Real-IP');
  });

  await t.test('host route: api.example.test on / reaches the tomcat pool; another host there gets 404', async (t) => {
    if (!needPeer(t, 'curl', hasCurl())) return;
    const hit = parseCurlOutput((await curl(`https://localhost:${tls}/anything`, ['-H', 'Host: api.example.test'])).stdout);
    assert.equal(hit.status, 200);
    assert.match((JSON.parse(hit.body) as EchoReply).backend, /^tomcat-/);
    const miss = parseCurlOutput((await curl(`https://localhost:${tls}/anything`)).stdout);
    assert.equal(miss.status, 404, 'no route matches -> 404');
  });

  await t.test('tomcat pool: every request lands on one of its targets, with its X-Real-IP rule applied', async () => {
    const before = tomcat[0].requests.length + tomcat[1].requests.length;
    for (let i = 0; i < 4; i++) {
      const res = await request(`https://localhost:${tls}/Tomcat/count/${i}`);
      assert.equal(res.status, 200);
      assert.equal((JSON.parse(res.body.toString()) as EchoReply).headers['x-real-ip'], '127.0.0.1');
    }
    assert.equal(tomcat[0].requests.length + tomcat[1].requests.length, before + 4);
  });

  await t.test('ws over WSS: /wss reaches the chat pool with forwarding headers and echoes text and binary', async (t) => {
    const upgradesBefore = chat[0].upgrades.length + chat[1].upgrades.length;
    const ws = await openWebSocket(t, `wss://localhost:${tls}/wss`);
    assert.equal(await echo(ws, 'hello over wss'), 'hello over wss');
    const bin = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    assert.deepEqual(await echo(ws, bin), bin);
    const upgrades = [...chat[0].upgrades, ...chat[1].upgrades];
    assert.equal(upgrades.length, upgradesBefore + 1, 'one upgrade reached the chat pool');
    const h = upgrades[upgrades.length - 1];
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h['x-forwarded-proto'], 'https');
    assert.equal(h.upgrade?.toLowerCase(), 'websocket');
    ws.close(1000);
  });

  await t.test('ws over plain HTTP: /wss echoes', async (t) => {
    const ws = await openWebSocket(t, `ws://127.0.0.1:${plain}/wss`);
    assert.equal(await echo(ws, 'hello over ws'), 'hello over ws');
    ws.close(1000);
  });

  await t.test('Python websockets over WSS: text, a 70 kB text and binary messages echo', async (t) => {
    if (!needPeer(t, 'python3-websockets', hasPythonWebsockets())) return;
    const r = await run(PYTHON, [PYTHON_WSS_CLIENT, `wss://localhost:${tls}/wss`, TEST_CERT], 40_000);
    assert.equal(r.code, 0, `python client failed: ${r.stdout} ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout.trim()), { ok: true, echoes: 3, matched: [true, true, true] });
  });
});
