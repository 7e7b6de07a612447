// Routing on the normalized path, through the real `portico start` to backends that report the path they got:
// `..` resolved before the route is chosen (and the resolved path forwarded), encoded separators and dot
// segments refused with 400 before any backend sees them, the query left untouched. Raw sockets, since HTTP
// clients (curl, Node) clean paths themselves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { connectPlain, ResponseReader } from '../helpers/wire.js';

test('routes match the normalized path; what escapes a prefix goes where its resolved path routes, or is refused', { timeout: 60_000 }, async (t) => {
  const tomcat = await startHttpBackend(t, { name: 'tomcat' });
  const api = await startHttpBackend(t, { name: 'api' });
  const other = await startHttpBackend(t, { name: 'other' });
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: {
      tomcat: { targets: [`127.0.0.1:${tomcat.port}`] },
      api: { targets: [`127.0.0.1:${api.port}`] },
      other: { targets: [`127.0.0.1:${other.port}`] },
    },
    routes: [
      { match: { path: '/Tomcat' }, proxy: 'tomcat' },
      { match: { path: '/api' }, proxy: { upstream: 'api', strip_prefix: true } },
      { match: { path: '/' }, proxy: 'other' },
    ],
  });

  /** One request on its own connection: the status, and the backend and path that served it (if any). */
  const send = async (target: string): Promise<{ status: number; backend?: string; url?: string }> => {
    const socket = await connectPlain(t, portico.httpPort);
    const reader = new ResponseReader(socket);
    socket.write(`GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
    const res = await reader.next();
    socket.destroy();
    if (res.status !== 200) return { status: res.status };
    const echo = JSON.parse(res.body.toString()) as EchoReply;
    return { status: res.status, backend: echo.backend, url: echo.url };
  };

  const served: Array<[string, string, string]> = [
    ['/Tomcat/x', 'tomcat', '/Tomcat/x'],
    ['/Tomcat/../manager/html', 'other', '/manager/html'],
    ['/Tomcat/a/../../manager/html', 'other', '/manager/html'],
    ['/Tomcat//a/./b/?q=/../%2e%2e', 'tomcat', '/Tomcat/a/b/?q=/../%2e%2e'],
    ['/%54omcat/%7Ex', 'tomcat', '/Tomcat/~x'],
    ['/Tomcatx/../Tomcat', 'tomcat', '/Tomcat'],
    ['/api/v1/../v2/users', 'api', '/v2/users'],
    ['/api/../x', 'other', '/x'],
    ['/other/..', 'other', '/'],
  ];
  for (const [target, backend, url] of served) {
    assert.deepEqual(await send(target), { status: 200, backend, url }, target);
  }

  const before = tomcat.requests.length + api.requests.length + other.requests.length;
  for (const target of ['/Tomcat/%2e%2e/x', '/Tomcat/.%2E/manager', '/Tomcat/..%2Fx', '/Tomcat/..%2fmanager/html', '/Tomcat/..;/manager/html', '/Tomcat/..%3B/manager', '/Tomcat/..\\manager', '/Tomcat/..%5Cmanager', '/Tomcat/%00', '/..', '/Tomcat/../../x', '/Tomcat/%zz']) {
    assert.deepEqual(await send(target), { status: 400 }, target);
  }
  assert.equal(tomcat.requests.length + api.requests.length + other.requests.length, before, 'no refused request reached a backend');
  const refusedLine = await portico.waitForLog((l) => l.path === '/Tomcat/..%2Fx');
  assert.equal(refusedLine.status, 400);
  assert.match(String((refusedLine.err as { message: string }).message), /%2F/);
});
