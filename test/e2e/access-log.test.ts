// The access log through a real Portico: the fields operators look for (client behind trusted proxies, Host,
// method, target, HTTP version, User-Agent, Referer, request id, upstream target and timings, also on 502 and
// 504 lines), X-Request-Id sent upstream (the client's own passed on, else made), the same lines on stdout and in
// `log.access_file`, and SIGUSR1 reopening the file after logrotate renamed it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { closedPort, startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
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
