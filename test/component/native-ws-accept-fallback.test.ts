// When Node's OpenSSL gives the addon no SHA-1 (src/native/ws-accept.h: here FIPS mode without a FIPS provider, where
// the digest's fetch fails), the accept value is not computed and io.cc's ioAnswerUpgradeKey arms nothing, so the
// backend's 101 comes to JavaScript as data (forward.ts #onUpgrade checks it, as for any answer the addon does not
// take), and no worker crashes. Runs in a child process (FIPS mode is process-wide) on two connected NativeSockets
// on loopback; once FIPS mode is off again the same sockets arm, so the refusal came from the hash. Skipped (loudly)
// where native I/O is not built; PORTICO_REQUIRE_PEERS=1 (CI) turns that into a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { needNativeIo } from '../helpers/native-io.js';

const CHILD = `
import crypto from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
const { connectNative, answerPlan } = await import(process.argv[1]);
const addon = (await import(process.argv[2])).native();
const held = [];
const server = net.createServer((s) => held.push(s));
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const { port } = server.address();
const upstream = connectNative('127.0.0.1', port, { allowHalfOpen: true });
const client = connectNative('127.0.0.1', port, { allowHalfOpen: true });
await Promise.all([once(upstream, 'connect'), once(client, 'connect')]);
const key = 'dGhlIHNhbXBsZSBub25jZQ==';
let askedJs = 0;
const acceptOf = () => { askedJs++; return ''; };
const plan = answerPlan([]);
crypto.setFips(true);
const fips = { accept: addon.wsAccept(key), armed: upstream.upgradeTo(client, plan, '', key, acceptOf) };
crypto.setFips(false);
const after = { accept: addon.wsAccept(key), armed: upstream.upgradeTo(client, plan, '', key, acceptOf) };
upstream.answerOff();
upstream.destroy();
client.destroy();
for (const s of held) s.destroy();
server.close();
process.stdout.write(JSON.stringify({ plan, fips, after, askedJs }));
`;

test('no SHA-1 from OpenSSL (FIPS mode, no FIPS provider): the addon arms no 101 check and says null, no crash', { timeout: 30_000 }, async (t) => {
  if (!needNativeIo(t)) return;
  const io = new URL('../../src/native/io.js', import.meta.url).href;
  const addon = new URL('../../src/native/addon.js', import.meta.url).href;
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, io, addon], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  assert.equal(signal, null, 'the child was not killed');
  assert.equal(code, 0, `the child exited cleanly: ${out}`);
  const r = JSON.parse(out) as { plan: number; fips: { accept: string | null; armed: boolean }; after: { accept: string | null; armed: boolean }; askedJs: number };
  assert.ok(r.plan >= 0, 'the addon takes answer plans');
  assert.deepEqual(r.fips, { accept: null, armed: false }, 'without SHA-1: no value, nothing armed');
  assert.deepEqual(r.after, { accept: 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', armed: true }, 'with SHA-1 again: the value, armed');
  assert.equal(r.askedJs, 0, 'the addon with ioAnswerUpgradeKey never asks JavaScript for the value');
});
