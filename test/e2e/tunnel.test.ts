// WebSocket tunnels end to end through one TLS listener, with backends that misbehave: one refuses the upgrade,
// one answers 101 with a wrong Sec-WebSocket-Accept, one dies mid-tunnel; and a route whose tunnel idle timeout
// closes a silent tunnel and says so in its log line. A plain tunnel (the splice relay) gets TCP keep-alive on both
// of its sockets once it lived a second.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { startBadAcceptBackend, startRefusingUpgradeBackend, startWsEchoBackend } from '../helpers/backends.js';
import { closed, echo, openWebSocket, UnexpectedResponse } from '../helpers/clients.js';
import { plainListener, startPortico, tlsListener, type LogLine } from '../helpers/portico.js';
import { tcpTimer, tcpTimersTo } from '../helpers/proc-stats.js';
import { until } from '../helpers/until.js';
import { connectPlain, connectTls, ResponseReader } from '../helpers/wire.js';

/** The one access-log line a tunnel writes when it closes. */
const isTunnelLine = (path: string) => (l: LogLine) => l.msg === 'tunnel' && l.path === path;

test('WebSocket tunnels through one TLS listener', { timeout: 120_000 }, async (t) => {
  const echoBackend = await startWsEchoBackend(t);
  const refusing = await startRefusingUpgradeBackend(t);
  const badAccept = await startBadAcceptBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener()],
    upstreams: {
      echo: { targets: [`127.0.0.1:${echoBackend.port}`] },
      refusing: { targets: [`127.0.0.1:${refusing.port}`] },
      bad_accept: { targets: [`127.0.0.1:${badAccept.port}`] },
    },
    routes: [
      { match: { path: '/refuse' }, proxy: 'refusing' },
      { match: { path: '/bad-accept' }, proxy: 'bad_accept' },
      { match: { path: '/short-idle' }, proxy: 'echo', tunnel: { idle_timeout: '2s' } },
      { match: { path: '/wss' }, proxy: 'echo' },
    ],
  });
  const base = `wss://localhost:${portico.tlsPort}`;

  await t.test('a backend that refuses the upgrade: the client gets its 403 and body as an ordinary response', async (t) => {
    const err = await openWebSocket(t, `${base}/refuse`).then(
      () => assert.fail('the upgrade must not succeed'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof UnexpectedResponse, `expected an HTTP answer, got ${String(err)}`);
    assert.equal(err.status, 403);
    assert.equal(err.body, refusing.body);
    assert.equal(refusing.refused, 1, 'the upgrade request reached the backend');
  });

  await t.test('a 101 with a wrong Sec-WebSocket-Accept: the client gets 502 and never a 101', async (t) => {
    const socket = await connectTls(t, portico.tlsPort);
    const reader = new ResponseReader(socket);
    const key = randomBytes(16).toString('base64');
    socket.write(
      `GET /bad-accept HTTP/1.1\r\nHost: localhost:${portico.tlsPort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    const res = await reader.next();
    assert.equal(res.status, 502);
    const rest = await reader.rest();
    const all = Buffer.concat([res.raw, rest]).toString('latin1');
    assert.doesNotMatch(all, /101 Switching/i);
    assert.doesNotMatch(all, /leak!/, 'no byte the backend sent after its 101 reaches the client');
    assert.equal(badAccept.heads.length, 1, 'the upgrade request reached the backend');
    assert.match(badAccept.heads[0], new RegExp(`Sec-WebSocket-Key: ${key.replace(/[+/=]/g, '\\$&')}`, 'i'), 'the client key is passed on unchanged');
  });

  await t.test('a backend that dies mid-tunnel: the client socket ends and the tunnel line says the upstream closed', async (t) => {
    const ws = await openWebSocket(t, `${base}/wss/dying`);
    assert.equal(await echo(ws, 'before'), 'before');
    ws.send('kill'); // the backend destroys its socket without a Close frame
    const code = await closed(ws);
    assert.equal(code, 1006, 'closed without a Close frame: the TCP connection ended');
    const line = await portico.waitForLog(isTunnelLine('/wss/dying'));
    assert.match(String(line.closedBy), /^upstream/);
  });

  await t.test('a route with tunnel idle_timeout 2s closes a silent tunnel and logs closedBy', async (t) => {
    const ws = await openWebSocket(t, `${base}/short-idle`);
    assert.equal(await echo(ws, 'ping'), 'ping');
    await closed(ws, 15_000);
    const line = await portico.waitForLog(isTunnelLine('/short-idle'));
    assert.equal(line.closedBy, 'idle_timeout');
  });

  await t.test('a tunnel closed normally logs one line with closedBy and byte counts', async (t) => {
    const ws = await openWebSocket(t, `${base}/wss/normal`);
    for (let i = 0; i < 5; i++) assert.equal(await echo(ws, `m${i}`), `m${i}`);
    ws.close(1000);
    assert.equal(await closed(ws), 1000);
    const line = await portico.waitForLog(isTunnelLine('/wss/normal'));
    // RFC 6455 §7.1.1: after the Close handshake the server closes TCP first, so either side may end the tunnel.
    assert.ok(line.closedBy === 'client' || line.closedBy === 'upstream', `closedBy ${String(line.closedBy)}`);
    assert.ok(Number(line.bytesIn) > 0 && Number(line.bytesOut) > 0, 'byte counts both ways');
    assert.equal(portico.logs.filter(isTunnelLine('/wss/normal')).length, 1, 'one line per tunnel');
  });
});

// The relay thread arms TCP keep-alive on a tunnel's two sockets once it has lived a second (a short tunnel makes no
// setsockopt at all, none is made in the hand-over): one that stays open must have it on both, as the JS relay does.
test('a plain WebSocket tunnel open past a second has TCP keep-alive armed on its client and upstream sockets', { timeout: 60_000 }, async (t) => {
  const backend = await startWsEchoBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { echo: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/ws' }, proxy: 'echo' }],
  });
  const port = portico.ports[0]!;
  const socket = await connectPlain(t, port);
  const reader = new ResponseReader(socket);
  socket.write(
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  assert.equal((await reader.next()).status, 101);
  await until('keep-alive on the client socket (the proxy\'s end)', () => tcpTimer(port, socket.localPort!), (tr) => tr === 2, 10_000);
  await until('keep-alive on the upstream socket', () => tcpTimersTo(backend.port), (trs) => trs.length === 1 && trs[0] === 2, 10_000);
  // the tunnel still relays: a masked text frame "ping" comes back unmasked
  const mask = randomBytes(4);
  socket.write(Buffer.concat([Buffer.from([0x81, 0x84]), mask, Buffer.from('ping').map((b, i) => b ^ mask[i % 4]!)]));
  let got = Buffer.alloc(0);
  while (got.length < 6) got = Buffer.concat([got, (await once(socket, 'data'))[0] as Buffer]);
  assert.deepEqual(got.subarray(0, 6), Buffer.from([0x81, 0x04, ...Buffer.from('ping')]));
});
