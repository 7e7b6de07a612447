// Header rewriting for forwarded requests and responses (RFC 9110 §7.6.1 hop-by-hop, X-Forwarded-*, route rules).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema } from '../../src/config/schema.js';
import { buildRequestHead, buildResponseHead, websocketAccept, headerValue } from '../../src/http/forward.js';
import { parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from '../../src/http/head.js';
import { Router, type CompiledRoute, type RequestVars } from '../../src/router.js';

const LIMITS = { headerSize: 32768, uriSize: 8192, headers: 100 };

function req(raw: string): RequestHead {
  const r = parseRequestHead(Buffer.from(raw, 'latin1'), LIMITS);
  assert.equal(r.kind, 'done', `request parses: ${JSON.stringify(r)}`);
  return (r as { head: RequestHead }).head;
}

function res(raw: string, method = 'GET'): ResponseHead {
  const r = parseResponseHead(Buffer.from(raw, 'latin1'), LIMITS, method);
  assert.equal(r.kind, 'done');
  return (r as { head: ResponseHead }).head;
}

function routeFor(routeCfg: Record<string, unknown>, path = '/'): CompiledRoute {
  const config = configSchema.parse({
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { app: { targets: ['127.0.0.1:9'] } },
    routes: [{ proxy: 'app', ...routeCfg }],
  });
  const d = new Router(config).route('example.test', 'GET', path);
  assert.equal(d.kind, 'proxy');
  return (d as { route: CompiledRoute }).route;
}

const vars: RequestVars = { remoteAddr: '10.1.2.3', host: 'example.test', scheme: 'https', requestUri: '/a?b=1', serverPort: 8443 };

/** Parses a built head back into [lower-name, value] pairs to assert on. */
function fields(head: string): Array<[string, string]> {
  const lines = head.split('\r\n');
  const out: Array<[string, string]> = [];
  for (const l of lines.slice(1)) {
    if (l === '') continue;
    const i = l.indexOf(':');
    out.push([l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()]);
  }
  return out;
}

test('request: hop-by-hop fields and Connection-named fields are dropped, end-to-end ones kept', () => {
  const h = req('GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n');
  const out = buildRequestHead(h, routeFor({}), vars, false);
  assert.ok(out.startsWith('GET /a?b=1 HTTP/1.1\r\n'));
  const names = fields(out).map(([n]) => n);
  for (const gone of ['connection', 'keep-alive', 'x-secret', 'te', 'proxy-connection']) assert.ok(!names.includes(gone), `${gone} dropped`);
  assert.ok(names.includes('accept') && names.includes('host'));
  assert.ok(out.endsWith('\r\n\r\n'));
});

test('request: X-Forwarded-For is appended to, X-Forwarded-Proto/Host and X-Real-IP replace client copies', () => {
  const h = req('GET / HTTP/1.1\r\nHost: Example.test:8443\r\nX-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\n\r\n');
  const f = fields(buildRequestHead(h, routeFor({}), vars, false));
  const get = (n: string) => f.filter(([k]) => k === n).map(([, v]) => v);
  assert.deepEqual(get('x-forwarded-for'), ['1.1.1.1, 10.1.2.3']);
  assert.deepEqual(get('x-real-ip'), ['10.1.2.3']);
  assert.deepEqual(get('x-forwarded-proto'), ['https']);
  assert.deepEqual(get('x-forwarded-host'), ['Example.test:8443']);
});

test('request: route header rules set with variables and remove, replacing defaults without duplicates', () => {
  const route = routeFor({ request_headers: { set: { 'X-Real-IP': '$remote_addr', 'X-Where': '$scheme://$host$request_uri' }, remove: ['Accept', 'X-Forwarded-Host'] } });
  const h = req('GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\nX-Where: spoof\r\n\r\n');
  const f = fields(buildRequestHead(h, route, vars, false));
  const get = (n: string) => f.filter(([k]) => k === n).map(([, v]) => v);
  assert.deepEqual(get('x-real-ip'), ['10.1.2.3']);
  assert.deepEqual(get('x-where'), ['https://example.test/a?b=1']);
  assert.deepEqual(get('accept'), []);
  assert.deepEqual(get('x-forwarded-host'), []);
});

test('request: strip_prefix removes the matched prefix and keeps the query', () => {
  const route = routeFor({ match: { path: '/api' }, proxy: { upstream: 'app', strip_prefix: true } }, '/api/users');
  assert.ok(buildRequestHead(req('GET /api/users?x=1 HTTP/1.1\r\nHost: a\r\n\r\n'), route, vars, false).startsWith('GET /users?x=1 HTTP/1.1\r\n'));
  assert.ok(buildRequestHead(req('GET /api?x=1 HTTP/1.1\r\nHost: a\r\n\r\n'), route, vars, false).startsWith('GET /?x=1 HTTP/1.1\r\n'));
});

test('request: a tunnel asks the upstream to upgrade; HTTP/1.0 asks for keep-alive', () => {
  const ws = req('GET /wss HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  const out = buildRequestHead(ws, routeFor({}), vars, true);
  const f = fields(out);
  assert.deepEqual(f.filter(([k]) => k === 'connection'), [['connection', 'Upgrade']]);
  assert.deepEqual(f.filter(([k]) => k === 'upgrade'), [['upgrade', 'websocket']]);
  assert.deepEqual(f.filter(([k]) => k === 'sec-websocket-key'), [['sec-websocket-key', 'dGhlIHNhbXBsZSBub25jZQ==']]);
  const old = buildRequestHead(req('GET / HTTP/1.0\r\n\r\n'), routeFor({}), vars, false);
  assert.ok(old.startsWith('GET / HTTP/1.0\r\n'));
  assert.ok(old.includes('\r\nConnection: keep-alive\r\n'));
});

test('response: hop-by-hop dropped, framing kept, Connection chosen by the proxy, route rules applied', () => {
  const r = res('HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\nX-Internal: 1\r\nTransfer-Encoding: chunked\r\nServer: app\r\n\r\n');
  const route = routeFor({ response_headers: { set: { 'X-Served-By': 'portico' }, remove: ['Server'] } });
  const out = buildResponseHead(r, route.responseHeaders, vars, 'close');
  assert.ok(out.startsWith('HTTP/1.1 200 OK\r\n'));
  const f = fields(out);
  assert.deepEqual(f, [['transfer-encoding', 'chunked'], ['x-served-by', 'portico'], ['connection', 'close']]);
});

test('response: a 101 keeps Upgrade and Connection', () => {
  const r = res('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n');
  const out = buildResponseHead(r, routeFor({}).responseHeaders, vars, 'upgrade');
  const f = fields(out);
  assert.deepEqual(f, [['sec-websocket-accept', 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='], ['connection', 'Upgrade'], ['upgrade', 'websocket']]);
});

test('websocketAccept matches RFC 6455 §1.3 example; headerValue is case-insensitive', () => {
  assert.equal(websocketAccept('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  assert.equal(headerValue(['Sec-WebSocket-Key', 'k', 'Host', 'h'], 'sec-websocket-key'), 'k');
  assert.equal(headerValue(['Host', 'h'], 'sec-websocket-key'), undefined);
});
