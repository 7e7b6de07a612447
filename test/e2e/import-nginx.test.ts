// `portico import-nginx` against the real thing: one nginx config served by nginx, and by Portico from the YAML
// the importer wrote; the same requests must reach the same backend with the same path and headers.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { importNginx } from '../../src/config/nginx-import.js';
import { parseNginxText } from '../../src/config/nginx-parse.js';
import { startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { hasNginx, startNginx } from '../helpers/nginx.js';
import { FIXTURES } from '../helpers/paths.js';
import { needPeer } from '../helpers/peers.js';
import { startPortico } from '../helpers/portico.js';

interface Seen {
  status: number;
  backend: string | undefined;
  url: string | undefined;
  custom: string | undefined;
  location: string | undefined;
}

async function ask(port: number, host: string, target: string): Promise<Seen> {
  const res = await request(`http://127.0.0.1:${port}${target}`, { headers: { host } });
  const backend = res.headers['x-backend'];
  const echo = backend !== undefined && res.headers['content-type']?.includes('json') ? (JSON.parse(res.body.toString()) as EchoReply) : undefined;
  const custom = echo?.headers['x-custom'];
  return { status: res.status, backend: typeof backend === 'string' ? backend : undefined, url: echo?.url, custom: typeof custom === 'string' ? custom : undefined, location: res.headers.location?.replace(/^https?:\/\/[^/]+/, '') };
}

test('an imported nginx config routes every request as nginx does', async (t) => {
  if (!needPeer(t, 'nginx', hasNginx())) return;
  const app = await startHttpBackend(t, { name: 'app' });
  const api = await startHttpBackend(t, { name: 'api' });
  const text = readFileSync(path.join(FIXTURES, 'nginx', 'compare.conf'), 'utf8').replaceAll('{{APP}}', String(app.port)).replaceAll('{{API}}', String(api.port));
  const nginx = await startNginx(t, text);
  const imported = importNginx(parseNginxText(text.replaceAll('{{PORT}}', '0'), 'compare.conf'), 'compare.conf');
  assert.equal(imported.notes.length, 0, `everything in compare.conf translates:\n${imported.notes.map((n) => n.message).join('\n')}`);
  const config = parse(imported.yaml) as Record<string, unknown>;
  const portico = await startPortico(t, { ...config, workers: 1 } as never);

  const cases: [host: string, target: string][] = [
    ['example.test', '/app/x?q=1'],
    ['example.test', '/api/y?q=2'],
    ['example.test', '/api'],
    ['example.test', '/api?q=3&r=4'],
    ['example.test', '/exact'],
    ['example.test', '/exact/more'],
    ['example.test', '/img/A.JPG'],
    ['example.test', '/img/a.gif'],
    ['example.test', '/'],
    ['other.test', '/'],
    ['other.test', '/app/x'],
    ['OTHER.test', '/z'],
  ];
  for (const [host, target] of cases) {
    const want = await ask(nginx.port, host, target);
    const got = await ask(portico.httpPort, host, target);
    assert.ok(want.backend !== undefined || want.status === 301, `nginx proxied or redirected ${host}${target} (${want.status})`);
    assert.deepEqual(got, want, `${host}${target}: Portico as nginx`);
  }
});
