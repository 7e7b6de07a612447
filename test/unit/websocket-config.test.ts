// A route's `websocket` section (src/config/websocket.ts): defaults, the seed's values, `portico check` refusing
// bad values with their YAML path and line, a websocket section on a route that does not proxy, and `terminate`
// refused (with its path) when uWebSockets.js cannot load (PORTICO_UWS=0 stands for a platform without a build).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configSchema } from '../../src/config/schema.js';
import { Router } from '../../src/route/router.js';
import { CLI } from '../helpers/paths.js';

const BASE = { listeners: [{ address: '127.0.0.1:0' }], upstreams: { chat: { targets: ['127.0.0.1:9001'] } } };

function check(t: TestContext, yaml: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-ws-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'c.yaml');
  writeFileSync(file, yaml);
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'check', '-c', file], { env: { ...process.env, ...env }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr }),
    );
  });
}

const ROUTE = (ws: string) => `listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  chat: { targets: [127.0.0.1:9001] }\nroutes:\n  - match: { path: /wss }\n    proxy: chat\n    websocket: ${ws}\n`;

test('websocket: tunnel by default; the seed-php values parse; a terminate route hands out a terminate decision', () => {
  const plain = configSchema.parse({ ...BASE, routes: [{ match: { path: '/wss' }, proxy: 'chat', websocket: {} }] }).routes[0].websocket!;
  assert.equal(plain.mode, 'tunnel');
  assert.equal(plain.max_message_size, 1024 * 1024);
  assert.equal(plain.ping_interval, 30_000);
  assert.equal(plain.idle_timeout, 0);
  assert.equal(plain.message_rate, 0);
  assert.equal(plain.compression, false);
  const config = configSchema.parse({ ...BASE, routes: [{ match: { path: '/wss' }, proxy: 'chat', websocket: { mode: 'terminate', max_message_size: '64KiB', ping_interval: '20s', message_rate: '10/s', drain_rate: '100/s' } }] });
  const ws = config.routes[0].websocket!;
  assert.deepEqual([ws.mode, ws.max_message_size, ws.ping_interval, ws.message_rate, ws.drain_rate], ['terminate', 65536, 20_000, 100, 10]);
  const router = new Router(config);
  assert.equal(router.route('x', 'GET', '/wss', true).kind, 'terminate');
  assert.equal(router.route('x', 'GET', '/wss', false).kind, 'forward', 'a plain request on the route is forwarded');
});

test('portico check refuses bad websocket values with their YAML path and line', async (t) => {
  const r = await check(t, ROUTE('{ mode: splice, max_message_size: 10B, ping_interval: 20, message_rate: fast }'));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /c\.yaml:8:\d+ routes\[0\]\.websocket\.mode: /);
  assert.match(r.stderr, /routes\[0\]\.websocket\.max_message_size: must be between 125B and 256MiB/);
  assert.match(r.stderr, /routes\[0\]\.websocket\.ping_interval: duration 20 has no unit/);
  assert.match(r.stderr, /routes\[0\]\.websocket\.message_rate: invalid rate "fast"/);
});

test('portico check refuses a websocket section on a route that does not proxy', async (t) => {
  const r = await check(t, ROUTE('{ mode: terminate }').replace('    proxy: chat\n', ''));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /routes\[0\]\.websocket: websocket applies to proxy routes only/);
});

test('portico check refuses mode terminate when uWebSockets.js cannot load; tunnel routes still pass', async (t) => {
  const r = await check(t, ROUTE('{ mode: terminate }'), { PORTICO_UWS: '0' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /routes\[0\]\.websocket\.mode: mode terminate needs uWebSockets\.js, which cannot load here: disabled by PORTICO_UWS=0/);
  const tunnel = await check(t, ROUTE('{ mode: tunnel }'), { PORTICO_UWS: '0' });
  assert.equal(tunnel.code, 0, tunnel.stderr);
  const ok = await check(t, ROUTE('{ mode: terminate }'));
  assert.equal(ok.code, 0, ok.stderr);
});
