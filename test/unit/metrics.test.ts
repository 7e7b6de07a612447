// Metrics: what the data path counts, how the primary adds workers up, and the Prometheus text it serves.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Metrics, emptySnapshot, renderPrometheus, sumSnapshots } from '../../src/core/metrics.js';

test('requests are counted by status class, with their bytes; 499 counts as 4xx', () => {
  const m = new Metrics();
  m.request(200, 100, 1000);
  m.request(204, 10, 0);
  m.request(404, 5, 50);
  m.request(499, 7, 0);
  m.request(502, 1, 2);
  m.request(0, 1, 1); // not a status: bytes still count
  const s = m.snapshot();
  assert.deepEqual(s.requests, { '1xx': 0, '2xx': 2, '3xx': 0, '4xx': 2, '5xx': 1 });
  assert.equal(s.bytesIn, 124);
  assert.equal(s.bytesOut, 1053);
});

test('tunnels open and close; the open gauge never goes below zero', () => {
  const m = new Metrics();
  m.tunnelOpened();
  m.tunnelOpened();
  m.tunnelClosed(10, 20);
  m.tunnelClosed(1, 2);
  m.tunnelClosed(0, 0);
  const s = m.snapshot();
  assert.equal(s.tunnelsOpen, 0);
  assert.equal(s.tunnelsTotal, 2);
  assert.deepEqual([s.bytesIn, s.bytesOut], [11, 22]);
});

test('snapshots of several workers add up field by field, inputs unchanged', () => {
  const a = new Metrics();
  const b = new Metrics();
  a.request(200, 1, 1);
  a.upstreamError('UPSTREAM_CONNECT_REFUSED');
  b.request(200, 2, 2);
  b.upstreamError('UPSTREAM_CONNECT_REFUSED');
  b.upstreamError('UPSTREAM_HEADERS_TIMEOUT');
  b.tlsHandshakeError();
  b.connectionAccepted();
  const sa = a.snapshot();
  const sum = sumSnapshots(sumSnapshots(emptySnapshot(), sa), b.snapshot());
  assert.equal(sum.requests['2xx'], 2);
  assert.deepEqual(sum.upstreamErrors, { UPSTREAM_CONNECT_REFUSED: 2, UPSTREAM_HEADERS_TIMEOUT: 1 });
  assert.equal(sum.tlsHandshakeErrors, 1);
  assert.equal(sum.connections, 1);
  assert.deepEqual(sa.upstreamErrors, { UPSTREAM_CONNECT_REFUSED: 1 });
});

test('Prometheus text: HELP and TYPE per metric, labelled samples, escaped label values, final newline', () => {
  const m = new Metrics();
  m.request(200, 0, 0);
  m.upstreamError('UPSTREAM_RESET');
  const text = renderPrometheus(m.snapshot(), {
    workers: 2,
    workerRestarts: 1,
    connectionsOpen: 3,
    upstreamTargets: [{ upstream: 'app', target: 'a"b\\c\nd:80', available: true, active: 4 }],
  });
  assert.ok(text.endsWith('\n'));
  assert.match(text, /^# HELP portico_requests_total .+\n# TYPE portico_requests_total counter\n/m);
  assert.match(text, /^portico_requests_total\{class="2xx"\} 1$/m);
  assert.match(text, /^portico_upstream_errors_total\{code="UPSTREAM_RESET"\} 1$/m);
  assert.match(text, /^portico_workers 2$/m);
  assert.match(text, /^portico_worker_restarts_total 1$/m);
  assert.ok(text.includes('portico_upstream_target_active{upstream="app",target="a\\"b\\\\c\\nd:80"} 4\n'));
  for (const line of text.trimEnd().split('\n')) assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{.*\})? \d+)$/);
});

test('a worker alone renders its own counters without process gauges', () => {
  const m = new Metrics();
  m.tunnelOpened();
  const text = m.render();
  assert.match(text, /^portico_tunnels_open 1$/m);
  assert.doesNotMatch(text, /portico_workers/);
});

test('connections refused before routing are counted by reason, summed over workers and rendered as a counter', () => {
  const a = new Metrics();
  const b = new Metrics();
  a.connectionRefused('untrusted');
  a.connectionRefused('proxy_invalid');
  b.connectionRefused('untrusted');
  const sum = sumSnapshots(a.snapshot(), b.snapshot());
  assert.deepEqual(sum.refused, { untrusted: 2, proxy_invalid: 1 });
  const text = renderPrometheus(sum);
  assert.match(text, /^# TYPE portico_connections_refused_total counter$/m);
  assert.match(text, /^portico_connections_refused_total\{reason="proxy_invalid"\} 1\nportico_connections_refused_total\{reason="untrusted"\} 2$/m);
});

test('PROXY refusals have their own counter with every reason present, zeros included, summed over workers', () => {
  const a = new Metrics();
  const b = new Metrics();
  a.connectionRefused('untrusted');
  a.connectionRefused('proxy_timeout');
  b.connectionRefused('proxy_missing');
  b.connectionRefused('proxy_missing');
  b.connectionRefused('not_tls'); // not a PROXY refusal: only in portico_connections_refused_total
  const text = renderPrometheus(sumSnapshots(a.snapshot(), b.snapshot()));
  assert.match(text, /^# TYPE portico_proxy_protocol_refused_total counter$/m);
  const rows = text.split('\n').filter((l) => l.startsWith('portico_proxy_protocol_refused_total{'));
  assert.deepEqual(rows, [
    'portico_proxy_protocol_refused_total{reason="untrusted"} 1',
    'portico_proxy_protocol_refused_total{reason="missing"} 2',
    'portico_proxy_protocol_refused_total{reason="invalid"} 0',
    'portico_proxy_protocol_refused_total{reason="timeout"} 1',
  ]);
  assert.match(renderPrometheus(emptySnapshot()), /^portico_proxy_protocol_refused_total\{reason="invalid"\} 0$/m);
});

test('upstream queue and retry counters render per upstream: queued as a gauge, the rest as counters', () => {
  const text = renderPrometheus(emptySnapshot(), {
    workers: 2,
    workerRestarts: 0,
    connectionsOpen: 0,
    upstreamTargets: [],
    upstreamLimits: [
      { upstream: 'app', queued: 3, queueRejected: 4, queueTimeouts: 5, retriesTotal: 6, retriesDenied: 7 },
      { upstream: 'api', queued: 0, queueRejected: 0, queueTimeouts: 0, retriesTotal: 0, retriesDenied: 1 },
    ],
  });
  assert.match(text, /^# TYPE portico_upstream_queued gauge$/m);
  assert.match(text, /^portico_upstream_queued\{upstream="app"\} 3$/m);
  for (const [name, value] of [['queue_rejected', 4], ['queue_timeouts', 5], ['retries', 6], ['retries_denied', 7]] as const) {
    assert.match(text, new RegExp(`^# TYPE portico_upstream_${name}_total counter$`, 'm'));
    assert.match(text, new RegExp(`^portico_upstream_${name}_total\\{upstream="app"\\} ${value}$`, 'm'));
  }
  assert.match(text, /^portico_upstream_retries_denied_total\{upstream="api"\} 1$/m);
});

test('rate-limit refusals are counted per route and limit, summed over workers, rendered with route and limit labels', () => {
  const a = new Metrics();
  const b = new Metrics();
  a.rateLimited('requests api v1');
  a.rateLimited('requests api v1');
  b.rateLimited('requests api v1');
  b.rateLimited('handshakes chat');
  const sum = sumSnapshots(a.snapshot(), b.snapshot());
  assert.deepEqual(sum.rateLimited, { 'requests api v1': 3, 'handshakes chat': 1 });
  const text = renderPrometheus(sum);
  assert.match(text, /^# TYPE portico_rate_limited_total counter$/m);
  assert.match(text, /^portico_rate_limited_total\{route="api v1",limit="requests"\} 3$/m);
  assert.match(text, /^portico_rate_limited_total\{route="chat",limit="handshakes"\} 1$/m);
});

test('log lines dropped (stdout, file) add up over workers and render as a counter, zeros before any drop', () => {
  const a = { ...emptySnapshot(), logDropped: { stdout: 2, file: 0 } };
  const b = { ...emptySnapshot(), logDropped: { stdout: 1, file: 5 } };
  const sum = sumSnapshots(sumSnapshots(a, b), emptySnapshot());
  assert.deepEqual(sum.logDropped, { stdout: 3, file: 5 });
  const text = renderPrometheus(sum);
  assert.match(text, /# TYPE portico_log_lines_dropped_total counter\n/);
  assert.match(text, /\nportico_log_lines_dropped_total\{to="stdout"\} 3\n/);
  assert.match(text, /\nportico_log_lines_dropped_total\{to="file"\} 5\n/);
  assert.match(renderPrometheus(emptySnapshot()), /\nportico_log_lines_dropped_total\{to="file"\} 0\n/);
});

test('the static-file caches add up over workers: entries and bytes as gauges, lookups by hit and miss', () => {
  const a = { ...emptySnapshot(), staticCache: { entries: 3, bytes: 100, hits: 7, misses: 2 } };
  const b = { ...emptySnapshot(), staticCache: { entries: 1, bytes: 20, hits: 1, misses: 4 } };
  const sum = sumSnapshots(sumSnapshots(a, b), emptySnapshot());
  assert.deepEqual(sum.staticCache, { entries: 4, bytes: 120, hits: 8, misses: 6 });
  const text = renderPrometheus(sum);
  assert.match(text, /\n# TYPE portico_static_cache_entries gauge\nportico_static_cache_entries 4\n/);
  assert.match(text, /\nportico_static_cache_bytes 120\n/);
  assert.match(text, /\nportico_static_cache_lookups_total\{result="hit"\} 8\n/);
  assert.match(text, /\nportico_static_cache_lookups_total\{result="miss"\} 6\n/);
  assert.doesNotMatch(renderPrometheus(emptySnapshot()), /portico_static_cache/, 'no cache figures from a snapshot without them');
});
