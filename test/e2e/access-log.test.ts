// The access log through a real Portico: the fields operators look for (client behind trusted proxies, Host,
// method, target, HTTP version, User-Agent, Referer, request id, upstream target and timings, also on 502 and
// 504 lines), X-Request-Id sent upstream (the client's own passed on, else made), the same lines on stdout and in
// `log.access_file`, and SIGUSR1 reopening the file after logrotate renamed it; the lines of answers Portico makes
// itself (static files, redirects, `return`, CORS preflights), of FastCGI requests and of tunnels (HTTP upgrade,
// L4) go the same way as a forwarded request's, whatever pino's level.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { closedPort, startHttpBackend, startWsEchoBackend, type EchoReply } from '../helpers/backends.js';
import { closed, echo, openWebSocket, request } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { FIXTURES } from '../helpers/paths.js';
import { hasPhpFpm, startPhpFpm } from '../helpers/php-fpm.js';
import { startPortico, type LogLine } from '../helpers/portico.js';
import { until } from '../helpers/until.js';
import { adminUrl } from '../helpers/admin.js';

type Line = Record<string, unknown>;

function fileLines(file: string): Line[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Line);
}

test('access log: fields, X-Request-Id upstream, stdout and file alike, 502/504 lines with target and timings, SIGUSR1 reopen', async (t) => {
  const backend = await startHttpBackend(t);
  const dead = await closedPort();
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: {
      app: { targets: [`127.0.0.1:${backend.port}`] },
      slow: { targets: [`127.0.0.1:${backend.port}`], timeouts: { response_headers: '300ms' } },
      gone: { targets: [`127.0.0.1:${dead}`], retries: { max: 0 } },
    },
    routes: [
      { match: { path: '/slow' }, proxy: { upstream: 'slow', strip_prefix: true } },
      { match: { path: '/gone' }, proxy: 'gone' },
      { name: 'app', match: { path: '/' }, proxy: 'app' },
    ],
    forwarding: { trusted_proxies: ['127.0.0.1/32'] },
    log: { access_file: 'access.log' },
    admin: { address: '127.0.0.1:0' },
  });
  const file = path.join(portico.dir, 'access.log');
  const base = `http://127.0.0.1:${portico.httpPort}`;

  // 1. a request with every field a client can send; it comes through a trusted proxy (127.0.0.1) for 203.0.113.7
  const r1 = await request(`${base}/app/x?y=1`, { headers: { 'User-Agent': 'curl/8.0 "quoted"', Referer: 'https://example.test/from', 'X-Forwarded-For': '203.0.113.7' } });
  assert.equal(r1.status, 200);
  const made = (JSON.parse(r1.body.toString()) as EchoReply).headers['x-request-id'];
  assert.match(String(made), /^[0-9a-f]{12}-[0-9a-z]+$/, 'a request without an id gets one made by Portico');

  // 2. a client's own id is passed on as it is
  const r2 = await request(`${base}/app/y`, { headers: { 'X-Request-Id': 'trace-42' } });
  assert.equal((JSON.parse(r2.body.toString()) as EchoReply).headers['x-request-id'], 'trace-42');

  // 3. 502 (connect refused) and 504 (no response head within 300ms)
  assert.equal((await request(`${base}/gone`)).status, 502);
  assert.equal((await request(`${base}/slow/delay?ms=3000`)).status, 504);

  const isRequest = (l: LogLine) => l.msg === 'request';
  const line1 = await portico.waitForLog((l) => isRequest(l) && l.path === '/app/x?y=1');
  assert.equal(line1.method, 'GET');
  assert.equal(line1.proto, 'HTTP/1.1');
  assert.equal(line1.host, `127.0.0.1:${portico.httpPort}`);
  assert.equal(line1.client, '203.0.113.7', 'the client behind the trusted proxy');
  assert.equal(line1.peer, '127.0.0.1');
  assert.equal(line1.ua, 'curl/8.0 "quoted"');
  assert.equal(line1.referer, 'https://example.test/from');
  assert.equal(line1.reqId, made, 'the id sent upstream is the one logged');
  assert.equal(line1.route, 'app');
  assert.equal(line1.pool, 'app');
  assert.equal(line1.upstream, `127.0.0.1:${backend.port}`);
  assert.equal(line1.status, 200);
  assert.ok(typeof line1.connectMs === 'number' && typeof line1.firstByteMs === 'number' && typeof line1.durationMs === 'number');
  assert.ok((line1.firstByteMs as number) <= (line1.durationMs as number));
  const line2 = await portico.waitForLog((l) => isRequest(l) && l.path === '/app/y');
  assert.equal(line2.reqId, 'trace-42');

  const bad = await portico.waitForLog((l) => isRequest(l) && l.path === '/gone');
  assert.equal(bad.status, 502);
  assert.equal(bad.upstream, `127.0.0.1:${dead}`, 'the 502 line names the target that failed');
  assert.equal((bad.err as Line).code, 'UPSTREAM_CONNECT_REFUSED');
  assert.equal(bad.connectMs, undefined, 'no connection: no connect time');
  const timeout = await portico.waitForLog((l) => isRequest(l) && l.path === '/slow/delay?ms=3000');
  assert.equal(timeout.status, 504);
  assert.equal(timeout.upstream, `127.0.0.1:${backend.port}`);
  assert.equal(typeof timeout.connectMs, 'number', 'the 504 line has the connect time');
  assert.equal(timeout.firstByteMs, undefined, 'and no first byte');
  assert.ok((timeout.durationMs as number) >= 300);

  // the file has the same lines as stdout
  const inFile = await until('the four lines in the access-log file', () => fileLines(file), (ls) => ls.length >= 4);
  const onStdout = portico.logs.filter(isRequest);
  assert.deepEqual(
    inFile.map((l) => [l.path, l.status, l.reqId]),
    onStdout.map((l) => [l.path, l.status, l.reqId]),
  );

  // nothing was dropped, and /metrics says so per destination
  const metrics = (await request(`${adminUrl(portico)}/metrics`)).body.toString();
  assert.match(metrics, /\nportico_log_lines_dropped_total\{to="stdout"\} 0\n/);
  assert.match(metrics, /\nportico_log_lines_dropped_total\{to="file"\} 0\n/);

  // logrotate: the file is renamed, SIGUSR1 to the primary, new lines go to a new file at the same path
  renameSync(file, `${file}.1`);
  portico.kill('SIGUSR1');
  await portico.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('SIGUSR1'));
  let n = 0;
  await until(
    'a line in the reopened file',
    async () => {
      await request(`${base}/app/after-rotate-${++n}`);
      return fileLines(file);
    },
    (ls) => ls.some((l) => String(l.path).startsWith('/app/after-rotate-')),
  );
  const rotated = fileLines(`${file}.1`);
  assert.equal(rotated.length >= 4, true, 'the renamed file keeps its lines');
  assert.equal(rotated.filter((l) => String(l.path).startsWith('/app/after-rotate-')).length <= n, true);
});

test('log.request_id: false sends no X-Request-Id and logs none; the client\'s header is relayed untouched', async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    log: { request_id: false },
  });
  const base = `http://127.0.0.1:${portico.httpPort}`;
  const plain = JSON.parse((await request(`${base}/a`)).body.toString()) as EchoReply;
  assert.equal(plain.headers['x-request-id'], undefined);
  const own = JSON.parse((await request(`${base}/b`, { headers: { 'X-Request-Id': 'x y' } })).body.toString()) as EchoReply;
  assert.equal(own.headers['x-request-id'], 'x y');
  const line = await portico.waitForLog((l) => l.msg === 'request' && l.path === '/a');
  assert.equal(line.reqId, undefined);
});

test('a clean stop loses no line: SIGTERM while requests are in flight, every answered request has its line on stdout and in the file', async (t) => {
  const backend = await startHttpBackend(t);
  const portico = await startPortico(t, {
    workers: 2,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: { app: { targets: [`127.0.0.1:${backend.port}`] } },
    routes: [{ match: { path: '/' }, proxy: 'app' }],
    log: { access_file: 'access.log' },
  });
  const file = path.join(portico.dir, 'access.log');
  const N = 800;
  // keep-alive connections, many requests in flight: lines are made during the drain, up to the last turn
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  t.after(() => agent.destroy());
  const answered: string[] = [];
  let stopping: Promise<number | NodeJS.Signals> | undefined;
  const get = (i: number) =>
    new Promise<void>((resolve) => {
      const p = `/stop/${i}`;
      const req = http.get({ host: '127.0.0.1', port: portico.httpPort, path: p, agent }, (res) => {
        res.resume();
        res.on('end', () => {
          answered.push(p);
          // half-way: SIGTERM with the rest of the requests in flight or not yet sent
          if (answered.length === N / 2) stopping = portico.stop('SIGTERM');
          resolve();
        });
        res.on('error', () => resolve());
      });
      req.setTimeout(20_000, () => req.destroy(new Error('no answer')));
      req.on('error', () => resolve()); // refused or closed by the drain: no answer, no line needed
    });
  await Promise.all(Array.from({ length: N }, (_, i) => get(i)));
  agent.destroy();
  assert.ok(stopping !== undefined);
  assert.equal(await stopping, 0);
  assert.ok(answered.length >= N / 2);
  const lines = fileLines(file).filter((l) => l.msg === 'request');
  const inFile = new Set(lines.map((l) => l.path));
  const onStdout = new Set(portico.logs.filter((l) => l.msg === 'request').map((l) => l.path));
  const missing = answered.filter((p) => !inFile.has(p));
  assert.deepEqual(missing, [], `answered requests without a line in the file (${answered.length} answered)`);
  assert.deepEqual(answered.filter((p) => !onStdout.has(p)), [], 'answered requests without a line on stdout');
  assert.equal(lines.length, inFile.size, 'no line twice');
});

test('every kind of line (static 200/304/404, redirect, return, preflight 204, FastCGI 200/502, tunnel, L4) once, on stdout and in the file alike, at log.level warn', { timeout: 120_000 }, async (t) => {
  if (!needPeer(t, 'php-fpm', hasPhpFpm())) return;
  const fpm = await startPhpFpm(t, { children: 1 });
  const backend = await startHttpBackend(t);
  const ws = await startWsEchoBackend(t);
  const dead = await closedPort();
  const root = mkdtempSync(path.join(tmpdir(), 'portico-alog-static-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(path.join(root, 'files'));
  writeFileSync(path.join(root, 'files', 'a.txt'), 'static file\n');
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [{ address: '127.0.0.1:0' }, { address: '127.0.0.1:0', mode: 'tcp', upstream: 'raw' }],
    upstreams: {
      app: { targets: [`127.0.0.1:${backend.port}`] },
      raw: { targets: [`127.0.0.1:${backend.port}`] },
      ws: { targets: [`127.0.0.1:${ws.port}`] },
      php: { targets: [fpm.target] },
      php_dead: { targets: [`127.0.0.1:${dead}`], retries: { max: 0 } },
    },
    routes: [
      { name: 'files', match: { path: '/files' }, static: { root } },
      { name: 'old', match: { path_exact: '/old' }, redirect: { to: '/new', status: 301 } },
      { name: 'health', match: { path_exact: '/health' }, return: { status: 200, body: 'ok\n' } },
      { name: 'api', match: { path: '/api' }, proxy: 'app', cors: { origins: ['https://app.example.test'] } },
      // the script exists (a missing one is a 404 before any connect); its upstream does not answer
      { name: 'php_dead', match: { path_exact: '/env.php/dead' }, fastcgi: { upstream: 'php_dead', root: path.join(FIXTURES, 'php'), split_path_info: '^(.+\\.php)(/.*)$' } },
      { name: 'php', match: { path_exact: '/env.php' }, fastcgi: { upstream: 'php', root: path.join(FIXTURES, 'php') } },
      { name: 'ws', match: { path: '/ws' }, proxy: 'ws' },
    ],
    // pino's level does not gate the access log: log.access and log.access_file do, for every kind of line
    log: { level: 'warn', access: true, access_file: 'access.log' },
  });
  const file = path.join(portico.dir, 'access.log');
  const base = `http://127.0.0.1:${portico.httpPort}`;
  // a client string that needs escaping, on every line
  const ua = 'probe "q" \\ \u00e9';
  const headers = { 'User-Agent': ua };

  const ok = await request(`${base}/files/a.txt`, { headers });
  assert.equal(ok.status, 200);
  const etag = String(ok.headers.etag);
  assert.equal((await request(`${base}/files/a.txt?again`, { headers: { ...headers, 'If-None-Match': etag } })).status, 304);
  assert.equal((await request(`${base}/files/missing.txt`, { headers })).status, 404);
  assert.equal((await request(`${base}/old`, { headers })).status, 301);
  assert.equal((await request(`${base}/health`, { headers })).status, 200);
  const pre = await request(`${base}/api/x`, { method: 'OPTIONS', headers: { ...headers, Origin: 'https://app.example.test', 'Access-Control-Request-Method': 'PUT' } });
  assert.equal(pre.status, 204);
  const php = await request(`${base}/env.php?x=1`, { headers });
  assert.equal(php.status, 200, php.body.toString());
  assert.equal((await request(`${base}/env.php/dead`, { headers })).status, 502);
  const sock = await openWebSocket(t, `ws://127.0.0.1:${portico.httpPort}/ws`, { headers });
  assert.equal(String(await echo(sock, 'hi')), 'hi');
  sock.close(1000);
  await closed(sock);
  const l4 = net.connect(portico.ports[1], '127.0.0.1');
  l4.on('error', () => {});
  await once(l4, 'connect');
  l4.end();
  await once(l4, 'close');

  type Want = { mode: string; status?: number; route?: string; msg: string; path?: string; err?: string };
  const wants: Want[] = [
    { mode: 'static', status: 200, route: 'files', msg: 'request', path: '/files/a.txt' },
    { mode: 'static', status: 304, route: 'files', msg: 'request', path: '/files/a.txt?again' },
    { mode: 'static', status: 404, route: 'files', msg: 'request', path: '/files/missing.txt' },
    { mode: 'redirect', status: 301, route: 'old', msg: 'request', path: '/old' },
    { mode: 'return', status: 200, route: 'health', msg: 'request', path: '/health' },
    { mode: 'preflight', status: 204, route: 'api', msg: 'request', path: '/api/x' },
    { mode: 'fastcgi', status: 200, route: 'php', msg: 'request', path: '/env.php?x=1' },
    { mode: 'fastcgi', status: 502, route: 'php_dead', msg: 'request', path: '/env.php/dead', err: 'UPSTREAM_CONNECT_REFUSED' },
    { mode: 'tunnel', status: 101, route: 'ws', msg: 'tunnel', path: '/ws' },
    { mode: 'tcp', msg: 'tcp' },
  ];
  const isAccess = (l: LogLine) => typeof l.mode === 'string' && typeof l.conn === 'number' && l.level !== undefined && l.msg !== undefined;
  const inFile = await until('every line in the access-log file', () => fileLines(file).filter(isAccess), (ls) => ls.length >= wants.length);
  await until('every line on stdout', () => portico.logs.filter(isAccess), (ls) => ls.length >= wants.length);
  const onStdout = portico.logs.filter(isAccess);
  assert.deepEqual(inFile, onStdout, 'the same lines in the file and on stdout');
  assert.equal(inFile.length, wants.length, `one line per request or tunnel: ${JSON.stringify(inFile.map((l) => [l.mode, l.path]))}`);
  for (const w of wants) {
    const found: Line[] = inFile.filter((l) => l.mode === w.mode && (w.path === undefined || l.path === w.path));
    assert.equal(found.length, 1, `one ${w.mode} line for ${w.path ?? ''}`);
    const l = found[0];
    assert.equal(l.msg, w.msg);
    assert.equal(l.level, 'info');
    assert.equal(typeof l.time, 'string');
    assert.equal(typeof l.pid, 'number');
    assert.equal(typeof l.durationMs, 'number');
    assert.equal(typeof l.bytesOut, 'number');
    if (w.mode === 'tcp') {
      assert.ok(l.closedBy === 'client' || l.closedBy === 'upstream', String(l.closedBy));
      assert.equal(l.target, `127.0.0.1:${backend.port}`);
      continue;
    }
    assert.equal(l.status, w.status);
    assert.equal(l.route, w.route);
    assert.equal(l.ua, ua, 'the escaped User-Agent reads back as sent');
    assert.equal(l.client, '127.0.0.1');
    assert.equal(l.proto, 'HTTP/1.1');
    assert.equal(l.host, `127.0.0.1:${portico.httpPort}`);
    assert.match(String(l.reqId), /^[0-9a-f]{12}-[0-9a-z]+$/);
    assert.equal((l.err as Line | undefined)?.code, w.err);
  }
  const fcgi = inFile.find((l) => l.mode === 'fastcgi' && l.status === 200) as Line;
  assert.equal(fcgi.upstream, fpm.target);
  assert.equal(typeof fcgi.bytesIn, 'number');
  assert.equal((inFile.find((l) => l.mode === 'fastcgi' && l.status === 502) as Line).upstream, `127.0.0.1:${dead}`);
});
