// The accept path's pure parts: the passthrough SNI table, the preface reader over a stream fed in exact
// splits (every offset), and the config keys of L4 routes and PROXY protocol with their errors and YAML paths.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { TLS_ALERT, tlsFatalAlert } from '../../src/wire/client-hello.js';
import { PassthroughTable } from '../../src/tunnel/l4.js';
import { readPreface, type PrefaceOptions, type PrefaceResult } from '../../src/accept/preface.js';
import { buildProxyV1, buildProxyV2 } from '../../src/wire/proxy-protocol.js';
import { loadConfig, type LoadResult } from '../../src/config/load.js';
import { captureNodeHello } from '../helpers/client-hello-capture.js';

test('passthrough table: exact names beat wildcards, the longest wildcard suffix wins, no SNI terminates', () => {
  const table = new PassthroughTable([
    { sni: '*.example.com', upstream: 'wide' },
    { sni: '*.db.example.com', upstream: 'db' },
    { sni: 'main.db.example.com', upstream: 'main' },
    { sni: 'main.db.example.com', upstream: 'ignored-duplicate' },
  ]);
  assert.equal(table.match('main.db.example.com'), 'main');
  assert.equal(table.match('x.db.example.com'), 'db');
  assert.equal(table.match('a.b.example.com'), 'wide');
  assert.equal(table.match('example.com'), undefined, 'a wildcard needs at least one label');
  assert.equal(table.match('notexample.com'), undefined);
  assert.equal(table.match(undefined), undefined);
});

/** A stream standing in for an accepted socket: the test pushes client bytes in the splits it chooses. */
function fakeSocket(): Duplex & { destroyedByReader: boolean } {
  const d = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } }) as Duplex & { destroyedByReader: boolean };
  d.destroyedByReader = false;
  d.on('close', () => (d.destroyedByReader = true));
  return d;
}

function run(chunks: Buffer[], opts: PrefaceOptions): Promise<{ r: PrefaceResult; socket: Duplex }> {
  const socket = fakeSocket();
  return new Promise((resolve) => {
    readPreface(socket as unknown as Socket, opts, (r) => resolve({ r, socket }));
    for (const c of chunks) socket.push(c);
  });
}

const OPTS: PrefaceOptions = { proxy: true, clientHello: true, timeoutMs: 5_000 };

test('preface: PROXY v1 and v2 then a ClientHello give the same result split at every offset, nothing after the header lost', async () => {
  const hello = await captureNodeHello({ servername: 'pass.test' });
  const app = Buffer.from('after-hello');
  for (const header of [buildProxyV1({ address: '203.0.113.7', port: 4000 }, { address: '198.51.100.1', port: 443 }), buildProxyV2({ address: '2001:db8::7', port: 5000 }, { address: '2001:db8::1', port: 443 })]) {
    const whole = Buffer.concat([header, hello, app]);
    for (let cut = 1; cut < whole.length; cut++) {
      const { r } = await run([whole.subarray(0, cut), whole.subarray(cut)], OPTS);
      assert.equal(r.kind, 'done', `cut at ${cut}`);
      if (r.kind !== 'done') return;
      assert.equal(r.hello?.sni, 'pass.test');
      assert.ok(['203.0.113.7', '2001:db8::7'].includes(r.proxy?.source?.address ?? ''), `cut at ${cut}: source`);
      // the bytes after the header are handed back whole: read ahead past the hello too when they came with it
      assert.ok(r.rest !== null && Buffer.concat([hello, app]).subarray(0, r.rest.length).equals(r.rest), `cut at ${cut}: rest is a prefix of hello+app`);
      assert.ok(r.rest.length >= hello.length, `cut at ${cut}: the whole hello is replayed`);
    }
  }
});

test('preface: a PROXY header alone (no ClientHello wanted) hands back the request bytes that came with it', async () => {
  const header = buildProxyV1({ address: '203.0.113.7', port: 4000 }, { address: '198.51.100.1', port: 80 });
  const { r } = await run([Buffer.concat([header, Buffer.from('GET / HTTP/1.1\r\n')])], { proxy: true, clientHello: false, timeoutMs: 5_000 });
  assert.equal(r.kind, 'done');
  if (r.kind !== 'done') return;
  assert.equal(r.proxy?.source?.address, '203.0.113.7');
  assert.equal(r.rest?.toString(), 'GET / HTTP/1.1\r\n');
  const onlyHeader = await run([header], { proxy: true, clientHello: false, timeoutMs: 5_000 });
  assert.equal(onlyHeader.r.kind === 'done' && onlyHeader.r.rest, null);
});

test('preface: missing or malformed PROXY header, plaintext where TLS is expected, a stalled or closed client are failures and destroy the socket', async () => {
  const cases: Array<[string, Buffer[], PrefaceOptions, string]> = [
    ['missing header', [Buffer.from('GET / HTTP/1.1\r\n\r\n')], OPTS, 'proxy_missing'],
    ['malformed v1', [Buffer.from('PROXY TCP4 1.2.3.999 1.1.1.1 1 2\r\n')], OPTS, 'proxy_invalid'],
    ['plaintext on TLS', [Buffer.from('GET / HTTP/1.1\r\n\r\n')], { proxy: false, clientHello: true, timeoutMs: 5_000 }, 'not_tls'],
    ['stalled in the PROXY header', [Buffer.from('PROXY TCP4')], { ...OPTS, timeoutMs: 30 }, 'proxy_timeout'],
    ['stalled in the ClientHello', [Buffer.from([0x16, 0x03, 0x01])], { proxy: false, clientHello: true, timeoutMs: 30 }, 'timeout'],
  ];
  // the reader's timer is unref'd (a listener keeps a worker alive); here the test holds the loop open
  const hold = setTimeout(() => {}, 10_000);
  for (const [name, chunks, opts, reason] of cases) {
    const { r, socket } = await run(chunks, opts);
    assert.deepEqual(r.kind === 'failed' && r.reason, reason, name);
    assert.ok(socket.destroyed, `${name}: destroyed`);
  }
  const socket = fakeSocket();
  const closed = new Promise<PrefaceResult>((resolve) => readPreface(socket as unknown as Socket, OPTS, resolve));
  socket.push(null);
  assert.equal((await closed).kind, 'failed');
  clearTimeout(hold);
});

function load(t: TestContext, yaml: string): LoadResult {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-l4-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'portico.yaml'), yaml);
  return loadConfig(path.join(dir, 'portico.yaml'));
}

function errors(r: LoadResult): Record<string, string> {
  if (r.ok) return assert.fail('expected the config to be refused');
  return Object.fromEntries(r.errors.map((e) => [e.path, e.message]));
}

test('config: the L4 and PROXY protocol keys load with their defaults', (t) => {
  const r = load(
    t,
    `
listeners:
  - address: 127.0.0.1:0
    mode: tcp
    upstream: db
    proxy_protocol: { trusted: [10.0.0.0/8, "2001:db8::/32", 127.0.0.1] }
  - address: 127.0.0.1:0
upstreams:
  db: { targets: [127.0.0.1:5432], send_proxy_protocol: v2 }
  web: { targets: [127.0.0.1:8080] }
routes:
  - proxy: web
`,
  );
  if (!r.ok) return assert.fail(JSON.stringify(r.errors));
  assert.equal(r.config.listeners[0].mode, 'tcp');
  assert.equal(r.config.listeners[1].mode, 'http');
  assert.deepEqual(r.config.listeners[0].proxy_protocol?.trusted, ['10.0.0.0/8', '2001:db8::/32', '127.0.0.1']);
  assert.equal(r.config.upstreams.db.send_proxy_protocol, 'v2');
  assert.equal(r.config.upstreams.web.send_proxy_protocol, 'off');
});

test('config: L4 mistakes are refused with their YAML paths, all at once', (t) => {
  const e = errors(
    load(
      t,
      `
listeners:
  - address: 127.0.0.1:0
    mode: tcp
  - address: 127.0.0.1:0
    upstream: web
    proxy_protocol: { trusted: [10.0.0.0/8, 10.0.0.1/8, nonsense] }
    tls:
      certificates: [{ cert: /nonexistent.crt, key: /nonexistent.key }]
      passthrough:
        - { sni: "*.ok.example", upstream: missing }
        - { sni: "bad name", upstream: web }
  - address: 127.0.0.1:0
    mode: tcp
    upstream: web
upstreams:
  web: { targets: [127.0.0.1:8080], send_proxy_protocol: v1 }
routes:
  - proxy: web
`,
    ),
  );
  assert.match(e['listeners[0].upstream'], /a tcp listener needs `upstream`/);
  assert.match(e['listeners[1].upstream'], /tcp listeners only/);
  assert.match(e['listeners[1].proxy_protocol.trusted[1]'], /bits set after/);
  assert.match(e['listeners[1].proxy_protocol.trusted[2]'], /not an IPv4 or IPv6 address/);
  assert.match(e['listeners[1].tls.passthrough[0].upstream'], /unknown upstream "missing"/);
  assert.match(e['listeners[1].tls.passthrough[1].sni'], /DNS name/);
  assert.match(e['listeners[2].upstream'], /also serves HTTP routes/);
  // HTTP routes may send PROXY headers to their upstream: no error there
  assert.equal(e['upstreams.web.send_proxy_protocol'], undefined);
});

test('config: an L4 listener\'s upstream balanced by a request key or a sticky cookie is refused at its balance, naming the listener; $remote_addr loads', (t) => {
  const e = errors(
    load(
      t,
      `
listeners:
  - address: 127.0.0.1:0
    mode: tcp
    upstream: byheader
  - address: 127.0.0.1:0
    tls:
      passthrough:
        - { sni: a.example, upstream: bycookie }
        - { sni: b.example, upstream: byquery }
        - { sni: c.example, upstream: byaddr }
upstreams:
  byheader: { targets: [127.0.0.1:8080], balance: { policy: hash, key: "header:X-User" } }
  bycookie: { targets: [127.0.0.1:8080], balance: { policy: cookie } }
  byquery: { targets: [127.0.0.1:8080], balance: { policy: hash, key: "query:sid" } }
  byaddr: { targets: [127.0.0.1:8080], balance: { policy: hash, key: $remote_addr } }
`,
    ),
  );
  assert.match(e['upstreams.byheader.balance.key'], /hashes a request's "header:X-User", but listeners\[0\]\.upstream relays raw bytes.*\$remote_addr/);
  assert.match(e['upstreams.bycookie.balance'], /sticky cookie, but listeners\[1\]\.tls\.passthrough\[0\]\.upstream relays raw bytes/);
  assert.match(e['upstreams.byquery.balance.key'], /"query:sid"/);
  assert.equal(e['upstreams.byaddr.balance.key'], undefined);
  assert.equal(e['upstreams.byaddr.balance'], undefined);
  assert.equal(Object.keys(e).length, 3, JSON.stringify(e));
});

test('config: a TLS listener that only passes names through needs no certificate; one with neither is refused with its line', (t) => {
  const r = load(
    t,
    `
listeners:
  - address: 127.0.0.1:0
    tls:
      passthrough: [{ sni: db.example.com, upstream: db }]
upstreams:
  db: { targets: [127.0.0.1:5432] }
`,
  );
  if (!r.ok) return assert.fail(JSON.stringify(r.errors));
  assert.deepEqual(r.config.listeners[0].tls?.certificates, []);

  for (const tls of ['{ certificates: [] }', '{ min_version: TLSv1.3 }', '{ certificates: [], passthrough: [] }']) {
    const bad = load(t, `listeners:\n  - address: 127.0.0.1:0\n    tls: ${tls}\n`);
    if (bad.ok) return assert.fail(`${tls}: expected the config to be refused`);
    const e = bad.errors.find((x) => x.path === 'listeners[0].tls.certificates');
    assert.match(e?.message ?? '', /needs at least one certificate, unless it only passes TLS through/, tls);
    assert.equal(e?.line, 3, `${tls}: the error points at the tls line or below`);
  }
});

test('tlsFatalAlert: one fatal alert record (RFC 8446 §5.1, §6)', () => {
  assert.deepEqual([...tlsFatalAlert(TLS_ALERT.unrecognizedName)], [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112]);
  assert.deepEqual([...tlsFatalAlert(TLS_ALERT.missingExtension)], [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 109]);
});
