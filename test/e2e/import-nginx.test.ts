// `portico import-nginx` against the real thing: one nginx config served by nginx, and by Portico from the YAML
// the importer wrote; the same requests must reach the same backend with the same path and headers, the same TCP
// conversations the same backend, the same TLS names the same passthrough backend.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import tls from 'node:tls';
import { ensureSelfSigned } from '../../src/accept/tls.js';
import { parse } from 'yaml';
import { importNginx } from '../../src/config/nginx-import.js';
import { parseNginxText } from '../../src/config/nginx-parse.js';
import { startHttpBackend, type EchoReply } from '../helpers/backends.js';
import { request } from '../helpers/clients.js';
import { hasNginx, hasNginxStream, startNginx } from '../helpers/nginx.js';
import { FIXTURES } from '../helpers/paths.js';
import { needPeer } from '../helpers/peers.js';
import { freePort } from '../helpers/ports.js';
import { startPortico } from '../helpers/portico.js';
import { startTagEcho } from '../helpers/tcp-server.js';

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

/** A TLS server for `names` with a certificate of its own; its fingerprint tells which backend a client reached. */
async function tlsBackend(t: TestContext, dir: string, name: string, names: string[]): Promise<{ port: number; fingerprint: string }> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await ensureSelfSigned(cert, key, names);
  const server = tls.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (s) => {
    s.on('error', () => s.destroy());
    s.once('data', (d: Buffer) => s.end(`${name}:${d.toString()}`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as AddressInfo).port, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

/** TLS naming `servername` to `port`: the certificate that answered and the reply to "hi", or how it failed. */
async function reach(port: number, servername: string): Promise<string> {
  const s = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false });
  try {
    await once(s, 'secureConnect');
    const fp = s.getPeerX509Certificate()?.fingerprint256 ?? '?';
    const reply: Buffer[] = [];
    s.on('data', (d: Buffer) => reply.push(d));
    s.write('hi');
    await once(s, 'end');
    return `${fp} ${Buffer.concat(reply).toString()}`;
  } catch (err) {
    return `failed: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
  } finally {
    s.destroy();
  }
}

/**
 * A TCP conversation with `port`: "ping" sent, the reply read until it ends in "ping" (or the peer closes), then
 * the client's FIN (nginx's `stream` closes both sides at the first FIN by default, so the client speaks last).
 */
async function converse(port: number): Promise<string> {
  const s = net.connect({ host: '127.0.0.1', port });
  let reply = '';
  const closed = once(s, 'close');
  const answered = new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      reply += d.toString();
      if (reply.endsWith('ping')) resolve();
    });
    void closed.then(() => resolve());
  });
  await once(s, 'connect');
  s.write('ping');
  await answered;
  s.end();
  await closed;
  return reply;
}

test('an imported nginx stream {} relays TCP and passes TLS through by name as nginx does', async (t) => {
  if (!needPeer(t, 'nginx with the stream module (libnginx-mod-stream)', hasNginxStream())) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-import-stream-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const db = await startTagEcho(t, 'db:');
  const a = await tlsBackend(t, dir, 'a', ['a.example.test']);
  const b = await tlsBackend(t, dir, 'b', ['b.example.test', '*.b.example.test']);
  const text = (tlsPort: number): string =>
    readFileSync(path.join(FIXTURES, 'nginx', 'stream.conf'), 'utf8')
      .replaceAll('{{TLS_PORT}}', String(tlsPort))
      .replaceAll('{{DB}}', String(db))
      .replaceAll('{{A}}', String(a.port))
      .replaceAll('{{B}}', String(b.port));
  const nginxTls = await freePort();
  const nginx = await startNginx(t, '', { stream: text(nginxTls) });
  const imported = importNginx(parseNginxText(`stream {\n${text(0).replaceAll('{{PORT}}', '0')}\n}`, 'stream.conf'), 'stream.conf');
  // the one difference the importer cannot hide, said where it is: the map's default
  assert.deepEqual(imported.notes.map((n) => n.message), ['map default "a_up": a passthrough-only listener refuses names it does not list (TLS alert); list them, or add certificates to terminate the rest']);
  const portico = await startPortico(t, { ...(parse(imported.yaml) as Record<string, unknown>), workers: 1 } as never);
  const [tcpPort, tlsPort] = portico.ports;

  const viaNginx = await converse(nginx.port);
  assert.equal(viaNginx, 'db:ping', 'nginx relayed to the TCP backend');
  assert.equal(await converse(tcpPort), viaNginx, 'TCP: Portico as nginx');
  for (const name of ['a.example.test', 'b.example.test', 'x.b.example.test', 'A.Example.Test']) {
    const want = await reach(nginxTls, name);
    assert.ok(want.startsWith(name.toLowerCase().endsWith('a.example.test') ? a.fingerprint : b.fingerprint), `nginx passed ${name} through (${want})`);
    assert.equal(await reach(tlsPort, name), want, `${name}: Portico as nginx`);
  }
  // nginx's map default sends other names to a_up; Portico's passthrough-only listener refuses them (the note above)
  assert.ok((await reach(nginxTls, 'other.test')).startsWith(a.fingerprint));
  assert.match(await reach(tlsPort, 'other.test'), /^failed/);
});

/** What a browser concludes from an answer for a page of `origin` (the Fetch standard's CORS check, as far as these configs go). */
function browserMay(res: { status: number; headers: Record<string, string | string[] | undefined> }, origin: string, credentials: boolean): string {
  const acao = res.headers['access-control-allow-origin'];
  const ok = acao === origin || (acao === '*' && !credentials);
  const creds = !credentials || res.headers['access-control-allow-credentials'] === 'true';
  // a blocked answer is a network error to the page whatever its status (nginx's preflight says 204, Portico's 403)
  return ok && creds ? `${res.status} readable` : 'blocked';
}

test('an imported nginx CORS block (add_header Access-Control-*, the preflight `if`) gives browsers the same verdicts', async (t) => {
  if (!needPeer(t, 'nginx', hasNginx())) return;
  const app = await startHttpBackend(t, { name: 'app' });
  const text = `server {
    listen 127.0.0.1:{{PORT}};
    location /api/ {
      if ($request_method = OPTIONS) {
        add_header Access-Control-Allow-Origin "https://app.example.test";
        add_header Access-Control-Allow-Methods "GET, POST, PUT";
        add_header Access-Control-Allow-Headers "Authorization, Content-Type";
        add_header Access-Control-Allow-Credentials true;
        add_header Access-Control-Max-Age 600;
        return 204;
      }
      add_header Access-Control-Allow-Origin "https://app.example.test" always;
      add_header Access-Control-Allow-Credentials true always;
      proxy_pass http://127.0.0.1:${app.port};
    }
  }`;
  const nginx = await startNginx(t, text);
  const imported = importNginx(parseNginxText(text.replaceAll('{{PORT}}', '0'), 'cors.conf'), 'cors.conf');
  assert.equal(imported.notes.length, 0, imported.notes.map((n) => n.message).join('\n'));
  const portico = await startPortico(t, { ...(parse(imported.yaml) as Record<string, unknown>), workers: 1 } as never);
  const preflight = (origin: string, method: string, headers: string): { method: string; headers: Record<string, string> } => ({
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers },
  });
  const cases: [what: string, opts: { method?: string; headers: Record<string, string> }, origin: string][] = [
    ['preflight of the allowed origin', preflight('https://app.example.test', 'PUT', 'content-type'), 'https://app.example.test'],
    ['preflight of another origin', preflight('https://evil.example.test', 'PUT', 'content-type'), 'https://evil.example.test'],
    ['GET from the allowed origin', { headers: { origin: 'https://app.example.test' } }, 'https://app.example.test'],
    ['GET from another origin', { headers: { origin: 'https://evil.example.test' } }, 'https://evil.example.test'],
  ];
  for (const [what, opts, origin] of cases) {
    const want = browserMay(await request(`http://127.0.0.1:${nginx.port}/api/x`, opts), origin, true);
    const got = browserMay(await request(`http://127.0.0.1:${portico.httpPort}/api/x`, opts), origin, true);
    assert.equal(got, want, `${what}: the browser's verdict through Portico as through nginx`);
  }
  const allowed = await request(`http://127.0.0.1:${portico.httpPort}/api/x`, preflight('https://app.example.test', 'PUT', 'content-type'));
  assert.equal(allowed.headers['access-control-max-age'], '600');
  assert.match(String(allowed.headers['access-control-allow-methods']), /PUT/);
});

test('an imported nginx gzip setup compresses the same answers', async (t) => {
  if (!needPeer(t, 'nginx', hasNginx())) return;
  const app = await startHttpBackend(t, { name: 'app' });
  const text = `gzip on; gzip_types application/json; gzip_min_length 1;
    server { listen 127.0.0.1:{{PORT}}; location / { proxy_pass http://127.0.0.1:${app.port}; } location /plain { gzip off; proxy_pass http://127.0.0.1:${app.port}; } }`;
  const nginx = await startNginx(t, text);
  const imported = importNginx(parseNginxText(`http { ${text.replaceAll('{{PORT}}', '0')} }`, 'gzip.conf'), 'gzip.conf');
  assert.equal(imported.notes.length, 0, imported.notes.map((n) => n.message).join('\n'));
  const portico = await startPortico(t, { ...(parse(imported.yaml) as Record<string, unknown>), workers: 1 } as never);
  for (const [target, accept] of [['/x', 'gzip'], ['/x', 'identity'], ['/plain', 'gzip']] as const) {
    const ask = async (port: number): Promise<string> => {
      const res = await request(`http://127.0.0.1:${port}${target}`, { headers: { 'accept-encoding': accept } });
      return `${res.status} ${String(res.headers['content-encoding'] ?? 'none')}`;
    };
    const want = await ask(nginx.port);
    if (target === '/x' && accept === 'gzip') assert.equal(want, '200 gzip', 'nginx compressed the JSON answer');
    assert.equal(await ask(portico.httpPort), want, `${target} with Accept-Encoding ${accept}: Portico as nginx`);
  }
});

test("an imported config sends the add_header lines nginx sends: a location with its own does not inherit the server's", async (t) => {
  if (!needPeer(t, 'nginx', hasNginx())) return;
  const app = await startHttpBackend(t, { name: 'app' });
  const text = `server { listen 127.0.0.1:{{PORT}}; add_header X-Server s;
    location /own { add_header X-Loc l; proxy_pass http://127.0.0.1:${app.port}; }
    location / { proxy_pass http://127.0.0.1:${app.port}; } }`;
  const nginx = await startNginx(t, text);
  const imported = importNginx(parseNginxText(text.replaceAll('{{PORT}}', '0'), 'headers.conf'), 'headers.conf');
  assert.equal(imported.notes.length, 1, 'the dropped server header is said');
  const portico = await startPortico(t, { ...(parse(imported.yaml) as Record<string, unknown>), workers: 1 } as never);
  for (const target of ['/own', '/other']) {
    const ask = async (port: number): Promise<string> => {
      const res = await request(`http://127.0.0.1:${port}${target}`);
      return `${res.status} server=${String(res.headers['x-server'])} loc=${String(res.headers['x-loc'])}`;
    };
    const want = await ask(nginx.port);
    assert.equal(await ask(portico.httpPort), want, `${target}: Portico as nginx`);
  }
});

test('an imported limit_req lets the same burst through and refuses the same request after it', async (t) => {
  if (!needPeer(t, 'nginx', hasNginx())) return;
  const app = await startHttpBackend(t, { name: 'app' });
  // one request a minute: nothing refills during the test, so the counts are exact
  const text = `limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m; limit_req_status 429;
    server { listen 127.0.0.1:{{PORT}}; location / { limit_req zone=one burst=3 nodelay; proxy_pass http://127.0.0.1:${app.port}; } }`;
  const nginx = await startNginx(t, text);
  const imported = importNginx(parseNginxText(`http { ${text.replaceAll('{{PORT}}', '0')} }`, 'limit.conf'), 'limit.conf');
  assert.equal(imported.notes.length, 0, imported.notes.map((n) => n.message).join('\n'));
  const portico = await startPortico(t, { ...(parse(imported.yaml) as Record<string, unknown>), workers: 1 } as never);
  const statuses = async (port: number): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < 6; i++) out.push((await request(`http://127.0.0.1:${port}/x${i}`)).status);
    return out;
  };
  const want = await statuses(nginx.port);
  assert.deepEqual(want, [200, 200, 200, 200, 429, 429], 'nginx: one at the rate and a burst of three');
  assert.deepEqual(await statuses(portico.httpPort), want);
});
