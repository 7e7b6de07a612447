// The first minutes with Portico: `portico --version`; `check` answers habits from other proxies with Portico's
// spelling, reports one error per mistake, names what a certificate file holds when it is the wrong kind of PEM,
// and warns (exit 0) about expired or not yet valid certificates, as `start` does. Real `portico check` runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { generate } from 'selfsigned';
import { CLI, ROOT } from '../helpers/paths.js';
import { TEST_CERT, TEST_KEY } from '../helpers/portico.js';

type Run = { code: number | null; stdout: string; stderr: string };

function runCli(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd: ROOT, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr });
    });
  });
}

function folder(t: TestContext): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-first-run-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function check(t: TestContext, yaml: string, files: Record<string, string | Buffer> = {}): Promise<Run & { errors: string[] }> {
  const dir = folder(t);
  for (const [name, data] of Object.entries(files)) writeFileSync(path.join(dir, name), data);
  writeFileSync(path.join(dir, 'portico.yaml'), yaml);
  const r = await runCli(['check', '-c', path.join(dir, 'portico.yaml')]);
  return { ...r, errors: r.stderr.split('\n').filter((l) => l.includes('portico.yaml:')) };
}

test('portico --version prints the package version and exits 0', async () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-v']) {
    const r = await runCli([flag]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^portico ${pkg.version.replace(/\./g, '\\.')} \\(node v\\d+`));
  }
});

test('check answers other proxies\' spellings (leastconn, ip_hash, proxy_pass) with Portico\'s, one error each', async (t) => {
  const r = await check(
    t,
    `listeners: [{ address: "127.0.0.1:0" }]
upstreams:
  a: { targets: ["127.0.0.1:9001"], balance: leastconn }
  b: { targets: ["127.0.0.1:9001"], balance: ip_hash }
routes:
  - { match: { path: / }, proxy_pass: a }
`,
  );
  assert.equal(r.code, 1);
  assert.equal(r.errors.length, 3, r.stderr);
  assert.match(r.errors[0], /upstreams\.a\.balance: .*got "leastconn"; HAProxy's leastconn is `balance: least_conn`/);
  assert.match(r.errors[1], /upstreams\.b\.balance: .*nginx's ip_hash is `balance: \{ policy: hash, key: "\$remote_addr" \}`/);
  // the unknown key is the mistake: "a route needs one of: proxy" is not reported beside it
  assert.match(r.errors[2], /routes\[0\]\.proxy_pass: unknown key "proxy_pass" \(nginx's proxy_pass is `proxy: UPSTREAM` in a route\)/);
});

test('check reports one error per mistake: an empty target list, a misspelt required key', async (t) => {
  const empty = await check(t, `listeners: [{ address: "127.0.0.1:0" }]\nupstreams: { app: { targets: [] } }\n`);
  assert.equal(empty.code, 1);
  assert.deepEqual(
    empty.errors.map((l) => l.replace(/^.*portico\.yaml:\d+:\d+ /, '')),
    ['upstreams.app.targets: an upstream needs at least one target'],
  );
  const misspelt = await check(t, `listeners: [{ adress: "127.0.0.1:0" }]\n`);
  assert.equal(misspelt.code, 1);
  assert.deepEqual(
    misspelt.errors.map((l) => l.replace(/^.*portico\.yaml:\d+:\d+ /, '')),
    ['listeners[0].adress: unknown key "adress" (did you mean "address"?)'],
  );
});

test('a certificate file of the wrong kind is named for what it holds', async (t) => {
  const certPem = readFileSync(TEST_CERT, 'utf8');
  const keyPem = readFileSync(TEST_KEY, 'utf8');
  const encrypted = createPrivateKey(keyPem).export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'secret' }) as string;
  const csr = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n';
  const der = new X509Certificate(certPem).raw;
  const cases: Array<{ cert: string | Buffer; key: string | Buffer; field: 'cert' | 'key'; message: RegExp }> = [
    { cert: keyPem, key: certPem, field: 'cert', message: /holds a private key .*not a certificate: are cert and key swapped\?/ },
    { cert: certPem, key: certPem, field: 'key', message: /holds a certificate, not a private key: are cert and key swapped\?/ },
    { cert: csr, key: keyPem, field: 'cert', message: /certificate signing request \(CSR\)/ },
    { cert: certPem, key: encrypted, field: 'key', message: /encrypted private key.*openssl pkey/ },
    { cert: der, key: keyPem, field: 'cert', message: /not a PEM certificate .*openssl x509 -inform der/ },
  ];
  for (const c of cases) {
    const r = await check(t, `listeners: [{ address: "127.0.0.1:0", tls: { certificates: [{ cert: c.pem, key: k.pem }] } }]\n`, { 'c.pem': c.cert, 'k.pem': c.key });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.errors.length, 1, r.stderr);
    assert.match(r.errors[0], new RegExp(`listeners\\[0\\]\\.tls\\.certificates\\[0\\]\\.${c.field}: `));
    assert.match(r.errors[0], c.message);
  }
});

test('check warns about an expired and a not yet valid certificate, and still exits 0', async (t) => {
  const day = 86_400_000;
  const now = Date.now();
  const pair = (from: number, to: number) =>
    generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256', notBeforeDate: new Date(from), notAfterDate: new Date(to) });
  const expired = await pair(now - 30 * day, now - day);
  const future = await pair(now + 10 * day, now + 100 * day);
  const r = await check(
    t,
    `listeners:
  - { address: "127.0.0.1:0", tls: { certificates: [{ cert: old.crt, key: old.key }] } }
  - { address: "127.0.0.2:0", tls: { certificates: [{ cert: new.crt, key: new.key }] } }
`,
    { 'old.crt': expired.cert, 'old.key': expired.private, 'new.crt': future.cert, 'new.key': future.private },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^ok: 2 listeners/);
  const warnings = r.stderr.split('\n').filter((l) => l.startsWith('warning: '));
  assert.equal(warnings.length, 2, r.stderr);
  assert.match(warnings[0], /listeners\[0\]\.tls\.certificates\[0\]\.cert: certificate expired on \d{4}-/);
  assert.match(warnings[1], /listeners\[1\]\.tls\.certificates\[0\]\.cert: certificate is not valid yet: valid from \d{4}-/);
});

test('check refuses an access-log file that cannot be written and a non-boolean request_id, with their YAML paths', async (t) => {
  const r = await check(t, `listeners: [{ address: "127.0.0.1:0" }]\nlog:\n  access_file: no-such-folder/access.log\n  request_id: yes please\n`);
  assert.equal(r.code, 1);
  assert.equal(r.errors.length, 2, r.stderr);
  assert.match(r.errors[0], /portico\.yaml:3:\d+ log\.access_file: cannot create the access log in .*no-such-folder: no such folder/);
  assert.match(r.errors[1], /portico\.yaml:4:\d+ log\.request_id: expected a boolean/);
});
