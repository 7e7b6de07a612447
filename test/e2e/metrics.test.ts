// /metrics of a real Portico with 2 workers under real traffic: latency histograms (request duration by route and
// status class, upstream connect, first byte, TLS handshake, tunnel duration) summed over workers, responses per
// target by class (502 included), per-worker event-loop delay and memory; and the Grafana dashboard in deploy/
// queries only metrics that exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { adminUrl } from '../helpers/admin.js';
import { closedPort, startHttpBackend, startWsEchoBackend } from '../helpers/backends.js';
import { closed, echo, openWebSocket, request } from '../helpers/clients.js';
import { ROOT } from '../helpers/paths.js';
import { startPortico, tlsListener } from '../helpers/portico.js';
import { until } from '../helpers/until.js';

/** Sample lines of /metrics: `name{labels} value` -> value, by the whole series text. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

/** Metric names a scrape declares (# TYPE), histograms with their _bucket, _sum and _count series. */
function declared(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]);
    if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m[1] + s);
  }
  return names;
}

function httpsGet(port: number, urlPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: urlPath, rejectUnauthorized: false, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

test('/metrics: histograms by bounded labels, responses per target, worker event loop and heap; the Grafana dashboard queries only these', async (t) => {
  const backend = await startHttpBackend(t);
  const ws = await startWsEchoBackend(t);
  const dead = await closedPort();
  const portico = await startPortico(t, {
    workers: 2,
    listeners: [{ address: '127.0.0.1:0' }, tlsListener()],
    upstreams: {
      app: { targets: [`127.0.0.1:${backend.port}`] },
      chat: { targets: [`127.0.0.1:${ws.port}`] },
      gone: { targets: [`127.0.0.1:${dead}`], retries: { max: 0 } },
    },
    routes: [
      { name: 'chat', match: { path: '/ws' }, proxy: 'chat' },
      { name: 'gone', match: { path: '/gone' }, proxy: 'gone' },
      { name: 'app', match: { path: '/' }, proxy: 'app' },
    ],
    admin: { address: '127.0.0.1:0' },
  });
  const base = `http://127.0.0.1:${portico.httpPort}`;
  for (let i = 0; i < 20; i++) assert.equal((await request(`${base}/x/${i}`)).status, 200);
  assert.equal((await request(`${base}/gone`)).status, 502);
  assert.equal(await httpsGet(portico.tlsPort, '/tls'), 200);
  const sock = await openWebSocket(t, `ws://127.0.0.1:${portico.httpPort}/ws`);
  assert.equal(String(await echo(sock, 'hi')), 'hi');
  sock.close(1000);
  await closed(sock);

  const appTarget = `127.0.0.1:${backend.port}`;
  const scrape = async () => (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  // the tunnel's end reaches its worker's counters a moment after the client saw the close
  const text = await until('the tunnel counted in /metrics', scrape, (s) => /portico_tunnel_duration_seconds_count\{kind="websocket",upstream="chat"\} 1\b/.test(s));
  const m = samples(text);

  // request duration: 21 answered by the app route (20 plain + 1 over TLS), the 502 under its own route
  assert.equal(m.get('portico_request_duration_seconds_count{route="app",class="2xx"}'), 21);
  assert.equal(m.get('portico_request_duration_seconds_bucket{route="app",class="2xx",le="+Inf"}'), 21);
  assert.equal(m.get('portico_request_duration_seconds_count{route="gone",class="5xx"}'), 1);
  const buckets = [...m.entries()].filter(([k]) => k.startsWith('portico_request_duration_seconds_bucket{route="app",class="2xx"'));
  assert.equal(buckets.length, 17, '16 bounds and +Inf');
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i][1] >= buckets[i - 1][1], 'cumulative buckets');
  assert.ok((m.get('portico_request_duration_seconds_sum{route="app",class="2xx"}') ?? 0) > 0);

  // a connect per new connection (keep-alive reuses them: fewer than requests), first byte per answered request
  const connects = m.get(`portico_upstream_connect_seconds_count{upstream="app",target="${appTarget}"}`) ?? 0;
  assert.ok(connects >= 1 && connects < 21, `connects ${connects}`);
  assert.equal(m.get(`portico_upstream_first_byte_seconds_count{upstream="app",target="${appTarget}"}`), 21);
  assert.equal(m.get('portico_tls_handshake_seconds_count'), 1);
  assert.equal(m.get(`portico_upstream_responses_total{upstream="app",target="${appTarget}",class="2xx"}`), 21);
  assert.equal(m.get(`portico_upstream_responses_total{upstream="gone",target="127.0.0.1:${dead}",class="5xx"}`), 1, 'the 502 counts against the target that failed');

  // per worker: event-loop delay and memory, labelled by worker id only
  for (const w of ['1', '2']) {
    assert.ok((m.get(`portico_worker_heap_used_bytes{worker="${w}"}`) ?? 0) > 1e6, `heap of worker ${w}`);
    assert.ok((m.get(`portico_worker_resident_bytes{worker="${w}"}`) ?? 0) > 1e6);
    assert.ok(m.has(`portico_worker_event_loop_delay_p99_seconds{worker="${w}"}`));
  }
  // bounded labels: no series names a path or a client address
  assert.doesNotMatch(text, /\/x\/\d|remote|client=/);

  // the Grafana dashboard's queries name only metrics this scrape declares
  const names = declared(text);
  const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'deploy', 'grafana', 'portico-dashboard.json'), 'utf8')) as { panels: Array<{ title: string; targets?: Array<{ expr: string }> }> };
  let queried = 0;
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) {
      for (const [name] of target.expr.matchAll(/\bportico_[a-z0-9_]+/g)) {
        queried++;
        assert.ok(names.has(name), `panel "${panel.title}" queries ${name}, which /metrics does not have`);
      }
    }
  }
  assert.ok(queried >= 10, `the dashboard queries ${queried} metrics`);
});
