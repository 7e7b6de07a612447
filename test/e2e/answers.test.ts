// Answers Portico gives from config alone, through a real `portico start`, checked with curl -w: `redirect`
// (status, $host/$request_uri, path_regex captures), `return` (status, body, HEAD, 204), and a plain listener's
// `https_redirect` followed by curl to the TLS listener; keep-alive is kept after a local answer, and a request
// body that is not read closes the connection after the answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { curl, hasCurl, parseCurlOutput, run } from '../helpers/clients.js';
import { needPeer } from '../helpers/peers.js';
import { TEST_CERT, plainListener, startPortico, tlsListener } from '../helpers/portico.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';

test('redirect, return and https_redirect answer without a backend', { timeout: 90_000 }, async (t) => {
  if (!needPeer(t, 'curl', hasCurl())) return;
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [tlsListener(), plainListener(), { address: '127.0.0.1:0', https_redirect: true }],
    routes: [
      { match: { path_exact: '/old' }, redirect: { to: '$scheme://$host:$server_port/new$request_uri', status: 301 } },
      { match: { path_regex: '^/u/(\\w+)/(\\d+)$' }, redirect: { to: '/user/$1?id=$2', status: 308 } },
      { match: { path: '/short' }, redirect: 'https://example.test/' },
      { match: { path: '/health' }, return: { status: 200, body: 'ok\n' } },
      { match: { path: '/gone' }, return: { status: 410, body: '{"gone":true}', content_type: 'application/json' }, response_headers: { set: { 'X-Why': 'moved-to-$host' } } },
      { match: { path: '/empty' }, return: { status: 204 } },
    ],
  });
  const plain = `http://127.0.0.1:${portico.httpPort}`;
  const redirectPort = portico.ports[2];
  const w = async (url: string, extra: string[] = []): Promise<string> => {
    const r = await run('curl', ['-sS', '-o', '/dev/null', '--max-time', '10', '-w', '%{http_code} %{redirect_url} %{content_type}', ...extra, url]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };

  await t.test('redirect: status and Location from $scheme, $host, $server_port, $request_uri', async () => {
    assert.equal(await w(`${plain}/old?x=1`), `301 http://127.0.0.1:${portico.httpPort}/new/old?x=1 text/plain; charset=utf-8`);
    assert.equal(await w(`http://localhost:${portico.httpPort}/old`), `301 http://localhost:${portico.httpPort}/new/old text/plain; charset=utf-8`);
  });

  await t.test('redirect: path_regex captures $1 $2, 308; the short form is a 302', async () => {
    assert.equal(await w(`${plain}/u/bob/42`), `308 ${plain}/user/bob?id=42 text/plain; charset=utf-8`);
    assert.equal(await w(`${plain}/u/bob/x`), '404  text/plain; charset=utf-8');
    assert.equal(await w(`${plain}/short/a`), '302 https://example.test/ text/plain; charset=utf-8');
  });

  await t.test('return: status, body, content type, route response headers; HEAD gets the length without the body; 204 has no body', async () => {
    const ok = parseCurlOutput((await curl(`${plain}/health`)).stdout);
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'ok\n');
    assert.equal(ok.headers['content-length'], '3');
    assert.ok(ok.headers.date !== undefined);
    const gone = parseCurlOutput((await curl(`${plain}/gone`)).stdout);
    assert.equal(gone.status, 410);
    assert.equal(gone.body, '{"gone":true}');
    assert.equal(gone.headers['content-type'], 'application/json');
    assert.equal(gone.headers['x-why'], 'moved-to-127.0.0.1');
    const head = await curl(`${plain}/health`, ['-I']);
    const h = parseCurlOutput(head.stdout);
    assert.equal(h.headers['content-length'], '3');
    assert.equal(h.body, '');
    const empty = parseCurlOutput((await curl(`${plain}/empty`)).stdout);
    assert.equal(empty.status, 204);
    assert.equal(empty.headers['content-length'], undefined);
  });

  await t.test('https_redirect: 301 for GET to the TLS listener, 308 for POST; curl -L then reaches the TLS route', async () => {
    const get = await w(`http://localhost:${redirectPort}/health?a=b`);
    assert.equal(get, `301 https://localhost:${portico.tlsPort}/health?a=b text/plain; charset=utf-8`);
    assert.equal(await w(`http://localhost:${redirectPort}/form`, ['-X', 'POST', '-d', 'x=1']), `308 https://localhost:${portico.tlsPort}/form text/plain; charset=utf-8`);
    const followed = await run('curl', ['-sS', '-L', '--max-time', '10', '--cacert', TEST_CERT, '-w', ' %{http_code} %{num_redirects}', `http://localhost:${redirectPort}/health`]);
    assert.equal(followed.code, 0, followed.stderr);
    assert.equal(followed.stdout, 'ok\n 200 1');
  });

  await t.test('keep-alive after a local answer (one connection, pipelined too); an unread body closes after the answer', async () => {
    const two = await run('curl', ['-sS', '--max-time', '10', '-o', '/dev/null', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\n', `${plain}/health`, `${plain}/old`]);
    assert.equal(two.stdout, '200 1\n301 0\n');
    const socket = await connectPlain(t, portico.httpPort);
    const reader = new ResponseReader(socket);
    socket.write('GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /gone HTTP/1.1\r\nHost: a\r\n\r\nPOST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello');
    assert.equal((await reader.next()).status, 200);
    assert.equal((await reader.next()).status, 410);
    const third = await reader.next();
    assert.equal(third.status, 200);
    assert.equal(third.headers.connection, 'close');
    await new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve())));
  });
});
