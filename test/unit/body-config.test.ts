// Request body settings: timeouts.body in the config (default, accepted forms, `portico check` refusing a
// bad value with its YAML path and line) and the chunked byte count limits.body_size is checked against.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configSchema } from '../../src/config/schema.js';
import { CLI } from '../helpers/paths.js';

const BASE = { listeners: [{ address: '127.0.0.1:0' }], upstreams: { app: { targets: ['127.0.0.1:9001'] } }, routes: [{ match: { path: '/' }, proxy: 'app' }] };

test('timeouts.body: 60s by default, durations and "off" accepted', () => {
  assert.equal(configSchema.parse(BASE).timeouts.body, 60_000);
  assert.equal(configSchema.parse({ ...BASE, timeouts: { body: '5s' } }).timeouts.body, 5_000);
  assert.equal(configSchema.parse({ ...BASE, timeouts: { body: 'off' } }).timeouts.body, 0);
});

test('portico check refuses a bad timeouts.body with its YAML path and line', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-body-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(file, 'listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  app: { targets: [127.0.0.1:9001] }\nroutes:\n  - { match: { path: / }, proxy: app }\ntimeouts:\n  body: soon\n');
  const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, [CLI, 'check', '-c', file], (err, _stdout, stderr) => resolve({ code: typeof err?.code === 'number' ? err.code : 0, stderr }));
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`bad\\.yaml:8:\\d+ timeouts\\.body: invalid duration "soon"`));
});

test('ChunkedScanner.dataBytes counts each chunk size once its line ends, before its data arrives', async () => {
  const { ChunkedScanner } = await import('../../src/wire/http-head.js');
  const s = new ChunkedScanner();
  assert.equal(s.push(Buffer.from('a\r\n01234'), 0), 8);
  assert.equal(s.dataBytes, 10, 'announced, half received');
  s.push(Buffer.from('56789\r\n1'), 0);
  assert.equal(s.dataBytes, 10, 'a size line not yet ended counts nothing');
  s.push(Buffer.from('0;x=y\r\n'), 0);
  assert.equal(s.dataBytes, 26);
});
