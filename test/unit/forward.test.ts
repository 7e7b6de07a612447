// Header rewriting for forwarded requests and responses (RFC 9110 §7.6.1 hop-by-hop, X-Forwarded-*, route rules).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema } from '../../src/config/schema.js';
import { buildRequestHead, buildResponseHead, websocketAccept, headerValue } from '../../src/handlers/rewrite.js';
import { parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from '../../src/wire/http-head.js';
import { Router, type CompiledRoute, type RequestVars } from '../../src/route/router.js';

const LIMITS = { headerSize: 32768, uriSize: 8192, headers: 100 };

function req(raw: string, limits = LIMITS): RequestHead {
  const r = parseRequestHead(Buffer.from(raw, 'latin1'), limits);
  assert.equal(r.kind, 'done', `request parses: ${JSON.stringify(r)}`);
  return (r as { head: RequestHead }).head;
}

function res(raw: string, method = 'GET', limits = LIMITS): ResponseHead {
  const r = parseResponseHead(Buffer.from(raw, 'latin1'), limits, method);
  assert.equal(r.kind, 'done');
  return (r as { head: ResponseHead }).head;
}

function routeFor(routeCfg: Record<string, unknown>, path = '/', forwarding: Record<string, unknown> = {}): CompiledRoute {
  const config = configSchema.parse({
    listeners: [{ address: '127.0.0.1:0' }],
    forwarding,
    upstreams: { app: { targets: ['127.0.0.1:9'] } },
    routes: [{ proxy: 'app', ...routeCfg }],
  });
  const d = new Router(config).route('example.test', 'GET', path);
  assert.equal(d.kind, 'forward');
  return (d as { route: CompiledRoute }).route;
}

const vars: RequestVars = { remoteAddr: '10.1.2.3', host: 'example.test', scheme: 'https', requestUri: '/a?b=1', serverPort: 8443, trustedPeer: false };

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

test('request from an untrusted peer: X-Forwarded-*, X-Real-IP and Forwarded are Portico\'s, client copies dropped', () => {
  const h = req('GET / HTTP/1.1\r\nHost: Example.test:8443\r\nX-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\nForwarded: for=1.1.1.1\r\n\r\n');
  const f = fields(buildRequestHead(h, routeFor({}), vars, false));
  const get = (n: string) => f.filter(([k]) => k === n).map(([, v]) => v);
  assert.deepEqual(get('x-forwarded-for'), ['10.1.2.3']);
  assert.deepEqual(get('x-real-ip'), ['10.1.2.3']);
  assert.deepEqual(get('x-forwarded-proto'), ['https']);
  assert.deepEqual(get('x-forwarded-host'), ['Example.test:8443']);
  assert.deepEqual(get('x-forwarded-port'), ['8443']);
  assert.deepEqual(get('forwarded'), []);
});

test('request from an untrusted peer: forwarding.x_forwarded_for append keeps the client list; forwarded adds RFC 7239', () => {
  const h = req('GET / HTTP/1.1\r\nHost: a.test:8443\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\nForwarded: for=1.1.1.1\r\n\r\n');
  const route = routeFor({}, '/', { x_forwarded_for: 'append', forwarded: true });
  const f = fields(buildRequestHead(h, route, vars, false));
  const get = (n: string) => f.filter(([k]) => k === n).map(([, v]) => v);
  assert.deepEqual(get('x-forwarded-for'), ['1.1.1.1, 2.2.2.2, 10.1.2.3']);
  assert.deepEqual(get('forwarded'), ['for=10.1.2.3;host="a.test:8443";proto=https']);
  const v6 = fields(buildRequestHead(req('GET / HTTP/1.1\r\nHost: a\r\n\r\n'), route, { ...vars, remoteAddr: '2001:db8::1' }, false));
  assert.deepEqual(v6.filter(([k]) => k === 'forwarded'), [['forwarded', 'for="[2001:db8::1]";host=a;proto=https']]);
});

test('request from a trusted proxy: forwarding fields kept, X-Forwarded-For and Forwarded appended to', () => {
  const h = req('GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: outer.test\r\nX-Forwarded-Port: 443\r\nForwarded: for=1.1.1.1\r\n\r\n');
  const route = routeFor({}, '/', { trusted_proxies: ['10.0.0.0/8'], forwarded: true });
  assert.equal(route.forwarding.trusts('10.1.2.3'), true);
  assert.equal(route.forwarding.trusts('::ffff:10.1.2.3'), true);
  assert.equal(route.forwarding.trusts('11.1.2.3'), false);
  const f = fields(buildRequestHead(h, route, { ...vars, scheme: 'http', serverPort: 80, trustedPeer: true }, false));
  const get = (n: string) => f.filter(([k]) => k === n).map(([, v]) => v);
  assert.deepEqual(get('x-forwarded-for'), ['1.1.1.1, 10.1.2.3']);
  assert.deepEqual(get('x-real-ip'), ['1.1.1.1']);
  assert.deepEqual(get('x-forwarded-proto'), ['https']);
  assert.deepEqual(get('x-forwarded-host'), ['outer.test']);
  assert.deepEqual(get('x-forwarded-port'), ['443']);
  assert.deepEqual(get('forwarded'), ['for=1.1.1.1, for=10.1.2.3;host=inner;proto=http']);
});

test('request: Connection cannot remove Host or the framing; framing is written from the parsed head', () => {
  const body = 'GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n';
  const cl = req(`POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\nConnection: Content-Length, host, X-Drop\r\nX-Drop: 1\r\n\r\n`);
  assert.deepEqual(cl.connection, ['x-drop']);
  const f = fields(buildRequestHead(cl, routeFor({}), vars, false));
  const get = (n: string) => f.filter(([k]) => k === n).map(([, v]) => v);
  assert.deepEqual(get('content-length'), [String(body.length)]);
  assert.deepEqual(get('host'), ['a']);
  assert.deepEqual(get('x-drop'), []);
  // a head whose Connection list names the framing anyway (built by hand, past the parser) still keeps it
  const te = req('POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n');
  const forged = { ...te, connection: ['transfer-encoding', 'host'] };
  const g = fields(buildRequestHead(forged, routeFor({}), vars, false));
  assert.deepEqual(g.filter(([k]) => k === 'transfer-encoding'), [['transfer-encoding', 'chunked']]);
  assert.equal(g.filter(([k]) => k === 'content-length').length, 0);
  const forgedCl = { ...cl, connection: ['content-length'] };
  assert.deepEqual(fields(buildRequestHead(forgedCl, routeFor({}), vars, false)).filter(([k]) => k === 'content-length'), [['content-length', String(body.length)]]);
});

test('response: a backend\'s Connection cannot remove its framing fields', () => {
  const r = res('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length, Transfer-Encoding\r\n\r\n');
  assert.deepEqual(r.connection, []);
  const f = fields(buildResponseHead({ ...r, connection: ['content-length'] }, routeFor({}).responseHeaders, vars, ''));
  assert.deepEqual(f, [['content-length', '5']]);
  const c = res('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n');
  const g = fields(buildResponseHead({ ...c, connection: ['transfer-encoding'] }, routeFor({}).responseHeaders, vars, 'close'));
  assert.deepEqual(g, [['transfer-encoding', 'gzip, chunked'], ['connection', 'close']]);
  const head = res('HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n', 'HEAD');
  assert.deepEqual(fields(buildResponseHead(head, routeFor({}).responseHeaders, vars, '')), [['content-length', '1234']]);
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

test('request: set Host replaces the client\'s Host (proxy_set_header Host), exactly one Host line', () => {
  const route = routeFor({ request_headers: { set: { Host: 'backend.internal' } } });
  const h = req('GET /a HTTP/1.1\r\nHost: example.test\r\nConnection: Host\r\n\r\n');
  const f = fields(buildRequestHead(h, route, vars, false));
  assert.deepEqual(f.filter(([k]) => k === 'host').map(([, v]) => v), ['backend.internal']);
  assert.deepEqual(f.filter(([k]) => k === 'x-forwarded-host').map(([, v]) => v), ['example.test']);
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

const MANY_FIELDS = { ...LIMITS, headers: 1000 };

/** Spellings of a name a peer may send: field names are case-insensitive (RFC 9110 §5.1). */
function spellings(lower: string): string[] {
  const title = lower.replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase());
  const alternate = [...lower].map((c, i) => (i % 2 === 0 ? c.toUpperCase() : c)).join('');
  const lastUpper = lower.slice(0, -1) + lower.slice(-1).toUpperCase();
  return [...new Set([lower, lower.toUpperCase(), title, alternate, lastUpper])];
}

// Names a response copy drops (hop-by-hop, framing, the route's own, Connection-named, CORS) and names beside them
// that share a first letter and a length with one of them, or differ from one in one character: all kept.
const DROPPED_BY_RESPONSE = ['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'http2-settings', 'content-length', 'transfer-encoding', 'server', 'x-served-by', 'x-hop', 'access-control-allow-origin', 'access-control-'];
const KEPT_BY_RESPONSE = ['content-type', 'connectiox', 'keep-alivf', 'tf', 'upgrad_', 'content-lengtH0', 'servers', 'serveR~', 'x-served-bz', 'x-hops', 'x-hoq', 'access-control', 'accesscontrol-allow', 'date', 'etag', 'vary', 'x-request-id', 'x-forwarded-for', 'kontent-length', '_onnection', '^onnection', 'content-length-'];

test('response: a field is dropped or copied by its name in any case, and a copied name keeps its case', () => {
  const route = routeFor({ response_headers: { set: { 'X-Served-By': 'portico' }, remove: ['Server'] } });
  for (const cors of [undefined, 'Access-Control-Allow-Origin: https://a.test\r\n']) {
    const lines: string[] = [];
    const expected: string[] = [];
    for (const lower of [...DROPPED_BY_RESPONSE, ...KEPT_BY_RESPONSE]) {
      for (const name of spellings(lower)) {
        if (/^(content-length|transfer-encoding)$/.test(lower)) continue; // framing: covered above, one per head
        lines.push(`${name}: v-${name}`);
        const dropped = DROPPED_BY_RESPONSE.includes(lower) && (cors !== undefined || !lower.startsWith('access-control-'));
        if (!dropped) expected.push(`${name}: v-${name}`);
      }
    }
    const r = res(`HTTP/1.1 200 OK\r\nConnection: X-Hop\r\n${lines.join('\r\n')}\r\nContent-Length: 0\r\n\r\n`, 'GET', MANY_FIELDS);
    const out = buildResponseHead(r, route.responseHeaders, vars, '', undefined, cors);
    const copied = out.split('\r\n').slice(1).filter((l) => l.includes(': v-'));
    assert.deepEqual(copied, expected, `cors ${cors === undefined ? 'off' : 'on'}`);
    // Portico's own lines, whatever the upstream sent
    assert.ok(out.includes('\r\nX-Served-By: portico\r\n') && out.includes('\r\nContent-Length: 0\r\n'));
  }
});

// Names a request copy drops or replaces (hop-by-hop, framing, forwarding fields of an untrusted peer, the
// request id Portico chose, the route's own, Connection-named) and names beside them: all kept.
const DROPPED_BY_REQUEST = ['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'http2-settings', 'x-forwarded-for', 'x-real-ip', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-request-id', 'accept', 'x-where', 'x-secret'];
const KEPT_BY_REQUEST = ['host', 'user-agent', 'accept-encoding', 'cookie', 'x-forwarded-foo', 'x-real-ipv', 'forwardee', 'x-request-ix', 'accepts', 'x-where2', 'x-secrets', 'referer', 'tf', 'x-forwarded-port0', 'connection-'];

test('request: a field is dropped or copied by its name in any case, and a copied name keeps its case', () => {
  const route = routeFor({ request_headers: { set: { 'X-Where': '$scheme' }, remove: ['Accept'] } });
  const lines: string[] = [];
  const expected: string[] = [];
  for (const lower of [...DROPPED_BY_REQUEST, ...KEPT_BY_REQUEST]) {
    for (const name of spellings(lower)) {
      if (lower === 'host' && name !== 'Host') continue; // one Host only
      lines.push(`${name}: v-${name}`);
      if (!DROPPED_BY_REQUEST.includes(lower)) expected.push(`${name}: v-${name}`);
    }
  }
  const h = req(`GET / HTTP/1.1\r\nConnection: X-Secret\r\n${lines.join('\r\n')}\r\n\r\n`, MANY_FIELDS);
  const out = buildRequestHead(h, route, { ...vars, requestId: 'id-1' }, false);
  // (Portico's own X-Forwarded-Host carries the Host value)
  const copied = out.split('\r\n').slice(1).filter((l) => l.includes(': v-') && l !== 'X-Forwarded-Host: v-Host');
  assert.deepEqual(copied, expected);
  const f = fields(out);
  assert.deepEqual(f.filter(([k]) => k === 'x-request-id'), [['x-request-id', 'id-1']]);
  assert.deepEqual(f.filter(([k]) => k === 'x-forwarded-for'), [['x-forwarded-for', '10.1.2.3']]);
  assert.deepEqual(f.filter(([k]) => k === 'x-where'), [['x-where', 'https']]);
});
