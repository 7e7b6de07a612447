// Terminated WebSocket with `handoff: adopt` on a plain listener: the client's own socket is handed to
// uWebSockets.js (native I/O's peek mode kept its head unconsumed), no unix hop. Echo, fragments, close codes
// both ways, 1009, 502, subprotocol, headers and the client IP, keepalive pings, drain 1001, topics; what falls
// back to the relay (pipelined bytes) and what stays HTTP on a peeked connection (keep-alive, POST, pipelining);
// a slow backend (1013, bounded memory) and fds back to their baseline after 1,000 adopted connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';
import { closedPort } from '../helpers/backends.js';
import { closeOf, startChatBackend } from '../helpers/chat-backend.js';
import { echo, openWebSocket, request, UnexpectedResponse } from '../helpers/clients.js';
import { adminStatus, adminUrl, statusUntil } from '../helpers/admin.js';
import { until } from '../helpers/until.js';
import { plainListener, startPortico, type LogLine } from '../helpers/portico.js';

const isTerminateLine = (l: LogLine) => l.msg === 'websocket' && l.mode === 'terminate';
const adopt = { mode: 'terminate' as const, handoff: 'adopt' as const };

/** Writes `head` on a fresh connection and resolves with everything read until the server closes (or `until` matches). */
function rawExchange(port: number, bytes: string | Buffer, done: (got: string) => boolean = () => false): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    const parts: Buffer[] = [];
    const timer = setTimeout(() => s.destroy(new Error(`no answer in 10 s: ${Buffer.concat(parts).toString('latin1')}`)), 10_000);
    const finish = () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts).toString('latin1'));
    };
    s.on('data', (d: Buffer) => {
      parts.push(d);
      if (done(Buffer.concat(parts).toString('latin1'))) {
        s.destroy();
        finish();
      }
    });
    s.on('error', reject);
    s.on('close', finish);
  });
}

test('handoff: adopt on a plain listener: the client socket itself goes to uWebSockets.js', { timeout: 120_000 }, async (t) => {
  const backend = await startChatBackend(t);
  const down = await closedPort();
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    admin: { address: '127.0.0.1:0' },
    upstreams: { chat: { targets: [`127.0.0.1:${backend.port}`] }, down: { targets: [`127.0.0.1:${down}`] } },
    routes: [
      { match: { path: '/down' }, proxy: 'down', websocket: adopt },
      { match: { path: '/news' }, proxy: 'chat', websocket: adopt, request_headers: { set: { 'X-Want-Topic': 'news' } } },
      { match: { path: '/wss' }, proxy: 'chat', websocket: { ...adopt, max_message_size: '64KiB', ping_interval: '20s' } },
      { match: { path: '/' }, proxy: 'chat' },
    ],
  });
  const base = `ws://127.0.0.1:${portico.httpPort}`;

  await t.test('echo: text, binary, a fragmented message; the client\'s close code and reason reach the backend', async (t) => {
    const ws = await openWebSocket(t, `${base}/wss`);
    assert.equal(await echo(ws, 'hello'), 'hello');
    const bin = Buffer.from([0, 1, 2, 254, 255]);
    assert.deepEqual(await echo(ws, bin), bin);
    const got = new Promise<Buffer>((resolve) => ws.once('message', (d: Buffer) => resolve(d)));
    ws.send('frag-', { fin: false });
    ws.send('ment-', { fin: false });
    ws.send('ed', { fin: true });
    assert.equal((await got).toString(), 'frag-ment-ed');
    ws.close(4000, 'bye');
    await backend.closesReach(1);
    assert.deepEqual(backend.closes.at(-1), { code: 4000, reason: 'bye' });
    const line = await portico.waitForLog((l) => isTerminateLine(l) && l.closedBy === 'client');
    assert.equal(line.handoff, 'adopt', 'the client socket was adopted, not relayed');
    assert.equal(line.code, 4000);
    assert.equal(line.messagesIn, 3);
  });
});
