// Pure parts of terminated WebSocket: the backend answer checks (subprotocol the client offered, no extension),
// the topics a 101 names, the extension offer taken off the backend's request, the paced drainer (one close per
// jittered interval, a connection that ended by itself leaves the queue), and the ws metrics (summed, rendered).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Metrics, renderPrometheus, sumSnapshots, closeCodeLabel } from '../../src/core/metrics.js';
import { Drainer, type Drainable } from '../../src/terminate/drain.js';
import { checkBackendAnswer, takeExtensionOffer, topicsOf } from '../../src/terminate/handoff.js';
import { parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from '../../src/wire/http-head.js';

const LIMITS = { headerSize: 16384, uriSize: 8192, headers: 100 };

function req(extra: string): RequestHead {
  const r = parseRequestHead(Buffer.from(`GET /wss HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`), LIMITS);
  assert.equal(r.kind, 'done');
  return (r as { head: RequestHead }).head;
}

function res(extra: string): ResponseHead {
  const r = parseResponseHead(Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n${extra}\r\n`), LIMITS, 'GET');
  assert.equal(r.kind, 'done');
  return (r as { head: ResponseHead }).head;
}

test('backend answer: a subprotocol the client offered passes; one it did not, or any extension, is refused', () => {
  const head = req('Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n');
  assert.equal(checkBackendAnswer(head, res('Sec-WebSocket-Protocol: chat.v2\r\n')), undefined);
  assert.equal(checkBackendAnswer(head, res('')), undefined, 'no subprotocol chosen is allowed');
  assert.match(checkBackendAnswer(head, res('Sec-WebSocket-Protocol: admin\r\n')) ?? '', /did not offer/);
  assert.match(checkBackendAnswer(req(''), res('Sec-WebSocket-Protocol: chat.v1\r\n')) ?? '', /did not offer/);
  assert.match(checkBackendAnswer(head, res('Sec-WebSocket-Extensions: permessage-deflate\r\n')) ?? '', /extension/);
});

test('topics of a 101: comma-separated, trimmed, empty and over-long ones dropped, at most 32', () => {
  assert.deepEqual(topicsOf(res('X-Portico-Topics: news, room-42 ,,\r\n')), ['news', 'room-42']);
  assert.deepEqual(topicsOf(res('')), []);
  assert.deepEqual(topicsOf(res(`X-Portico-Topics: ${'a'.repeat(257)}, ok\r\n`)), ['ok']);
  assert.equal(topicsOf(res(`X-Portico-Topics: ${Array.from({ length: 40 }, (_, i) => `t${i}`).join(',')}\r\n`)).length, 32);
});

test('takeExtensionOffer removes every Sec-WebSocket-Extensions field and returns the offer', () => {
  const head = req('Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nX-A: 1\r\nsec-websocket-extensions: x-other\r\n');
  assert.equal(takeExtensionOffer(head), 'permessage-deflate; client_max_window_bits, x-other');
  assert.ok(!head.headers.some((h) => h.toLowerCase() === 'sec-websocket-extensions'));
  assert.ok(head.headers.includes('X-A'), 'other fields stay');
  assert.equal(takeExtensionOffer(req('')), undefined);
});

test('Drainer: one close per jittered interval, in order; a connection that ended by itself leaves the queue', async () => {
  const closed: Array<{ id: number; code: number; at: number }> = [];
  const make = (id: number): Drainable => ({ drainInterval: 20, session: { goAway: (code) => void closed.push({ id, code, at: performance.now() }) } });
  const d = new Drainer(() => 0); // jitter pinned to its low end: every gap is 0.5 x 20 ms
  const conns = [1, 2, 3, 4, 5].map(make);
  const start = performance.now();
  for (const c of conns) d.add(c, 1001, 'going away');
  d.add(conns[0], 1012, 'again'); // already queued: keeps its place and code
  d.forget(conns[2]);
  assert.equal(d.queued, 4);
  await new Promise<void>((resolve) => {
    const check = (): void => (closed.length === 4 ? resolve() : void setTimeout(check, 5));
    check();
  });
  assert.deepEqual(closed.map((c) => c.id), [1, 2, 4, 5]);
  assert.ok(closed.every((c) => c.code === 1001));
  for (let i = 0; i < closed.length; i++) assert.ok(closed[i].at - start >= (i + 1) * 8, `close ${i} not before its slot (timers may round a millisecond early)`);
  assert.equal(d.queued, 0);
});

test('ws metrics: counted per worker, summed over workers, rendered with bounded close-code labels', () => {
  assert.deepEqual([1000, 1009, 1015, 3001, 4001, 1016, 2000].map(closeCodeLabel), ['1000', '1009', '1015', '3xxx', '4xxx', 'other', 'other']);
  const a = new Metrics();
  const b = new Metrics();
  assert.equal(a.snapshot().terminated, undefined, 'absent until a terminated WebSocket opened');
  const end = { messagesIn: 2, messagesOut: 3, bytesIn: 20, bytesOut: 30, pingsMissed: 1, drops: 0 };
  a.terminatedOpened();
  a.terminatedOpened();
  a.terminatedClosed({ ...end, code: 1000 });
  b.terminatedOpened();
  b.terminatedClosed({ ...end, code: 4001 });
  const sum = sumSnapshots(a.snapshot(), b.snapshot());
  assert.deepEqual(sum.terminated, { open: 1, total: 3, messagesIn: 4, messagesOut: 6, bytesIn: 40, bytesOut: 60, pingsMissed: 2, drops: 0, closeCodes: { '1000': 1, '4xxx': 1 } });
  const text = renderPrometheus(sum);
  assert.match(text, /^portico_ws_terminated_open 1$/m);
  assert.match(text, /^portico_ws_messages_total\{direction="out"\} 6$/m);
  assert.match(text, /^portico_ws_closes_total\{code="4xxx"\} 1$/m);
});
