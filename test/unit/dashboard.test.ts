// The dashboard's event feed on a real HTTP server: nothing is gathered while no page is open, every open page
// gets the same samples, a page over the limit gets 503, and the ticking stops when the last page closes.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http, { type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import pino from 'pino';
import { DashboardFeed, MAX_WATCHERS } from '../../src/admin/dashboard.js';
import { until } from '../helpers/until.js';

function open(port: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => http.get({ host: '127.0.0.1', port, path: '/dashboard/events', agent: false }, resolve).on('error', reject));
}

/** Resolves with the first `data:` event of a stream. */
function firstEvent(res: IncomingMessage): Promise<{ t: number; status: unknown; metrics: string }> {
  return new Promise((resolve) => {
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (s: string) => {
      buf += s;
      const m = /^data: (.*)$/m.exec(buf);
      if (m !== null) resolve(JSON.parse(m[1]) as { t: number; status: unknown; metrics: string });
    });
  });
}

test('the feed gathers only while a page is open, shares each sample, caps pages, and stops with the last', async (t) => {
  let gathers = 0;
  const source = { metrics: async () => `portico_requests_total{class="2xx"} ${++gathers}\n`, status: async () => ({ pid: 1 }) };
  const feed = new DashboardFeed(source, pino({ level: 'silent' }), 50);
  const server = http.createServer((req, res) => feed.serve(req, res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    feed.close();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(feed.ticks, 0, 'no page: nothing gathered');

  const pages = await Promise.all(Array.from({ length: MAX_WATCHERS }, () => open(port)));
  for (const p of pages) assert.equal(p.headers['content-type'], 'text/event-stream; charset=utf-8');
  const events = await Promise.all(pages.map(firstEvent));
  for (const e of events) assert.deepEqual(e.status, { pid: 1 });
  const over = await open(port);
  assert.equal(over.statusCode, 503);
  over.resume();

  const ticksBefore = feed.ticks;
  await until('ticks go on while pages are open', () => feed.ticks, (n) => n >= ticksBefore + 3, 5_000, 20);
  assert.ok(gathers <= feed.ticks, 'one gather per tick for all pages');
  for (const p of pages) p.destroy();
  await until('every page closed', () => feed.watchers, (n) => n === 0, 5_000, 20);
  const stopped = feed.ticks;
  await new Promise((r) => setTimeout(r, 250));
  assert.equal(feed.ticks, stopped, 'the last page closed: no more gathering');
});
