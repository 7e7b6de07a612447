// The FastCGI pieces without sockets: the record codec (wire/fastcgi.ts), the CGI response head
// (wire/cgi-head.ts), the params a request gets (handlers/fastcgi-params.ts) and which script it runs
// (handlers/fastcgi-script.ts, against a real temp folder with symlinks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  FCGI_END_REQUEST,
  FCGI_STDERR,
  FCGI_STDOUT,
  RecordReader,
  decodePairs,
  encodeBeginRequest,
  encodeParams,
  encodeRequestStart,
  encodeStdin,
  readManagementReply,
  type RecordSink,
} from '../../src/wire/fastcgi.js';
import { parseCgiHead } from '../../src/wire/cgi-head.js';
import { parseRequestHead, type RequestHead } from '../../src/wire/http-head.js';
import { fixedParams, requestParams, realClient } from '../../src/handlers/fastcgi-params.js';
import { decodePath, knownScript, resolveScript, splitScript } from '../../src/handlers/fastcgi-script.js';
import { compileForwarding } from '../../src/route/forwarding.js';
import type { CompiledFastcgi } from '../../src/route/router.js';
import { parseParamTemplate } from '../../src/config/fastcgi.js';
import type { Config } from '../../src/config/schema.js';

/** One record as an application writes it. */
export function record(type: number, id: number, content: Buffer, padding = 0): Buffer {
  const h = Buffer.alloc(8);
  h[0] = 1;
  h[1] = type;
  h.writeUInt16BE(id, 2);
  h.writeUInt16BE(content.length, 4);
  h[6] = padding;
  return Buffer.concat([h, content, Buffer.alloc(padding, 0xee)]);
}

export function endRequest(id: number, appStatus = 0, protocolStatus = 0): Buffer {
  const c = Buffer.alloc(8);
  c.writeUInt32BE(appStatus, 0);
  c[4] = protocolStatus;
  return record(FCGI_END_REQUEST, id, c);
}

interface Collected {
  stdout: Buffer[];
  stderr: Buffer[];
  end: Array<[number, number]>;
}

export function collector(): { sink: RecordSink; got: Collected } {
  const got: Collected = { stdout: [], stderr: [], end: [] };
  return { got, sink: { stdout: (b) => got.stdout.push(Buffer.from(b)), stderr: (b) => got.stderr.push(Buffer.from(b)), end: (a, p) => got.end.push([a, p]) } };
}

function headOf(raw: string): RequestHead {
  const r = parseRequestHead(Buffer.from(raw, 'latin1'), { headerSize: 65536, uriSize: 8192, headers: 100 });
  assert.equal(r.kind, 'done');
  return (r as { head: RequestHead }).head;
}

const FCGI: CompiledFastcgi = { root: '/srv/www', index: 'index.php', split: /^(.+\.php)(\/.*)$/, params: [] };

/** The records of `buf` in order: type, request id and content. */
function recordsOf(buf: Buffer): Array<{ type: number; id: number; content: Buffer }> {
  const out: Array<{ type: number; id: number; content: Buffer }> = [];
  for (let o = 0; o < buf.length; ) {
    assert.ok(o + 8 <= buf.length, 'a whole record header');
    const len = buf.readUInt16BE(o + 4);
    out.push({ type: buf[o + 1], id: buf.readUInt16BE(o + 2), content: buf.subarray(o + 8, o + 8 + len) });
    o += 8 + len + buf[o + 6];
  }
  return out;
}

/** The params FPM reads from a request's opening (encodeRequestStart), as a map; every name must come once. */
function paramsSent(f: CompiledFastcgi, pairs: string): Map<string, string> {
  const params = recordsOf(encodeRequestStart(1, true, fixedParams(f), pairs, true)).filter((r) => r.type === 4);
  const content = Buffer.concat(params.map((r) => r.content));
  const out = new Map<string, string>();
  for (let i = 0; i < content.length; ) {
    const len = (): number => (content[i] < 128 ? content[i++] : ((i += 4), content.readUInt32BE(i - 4) & 0x7fffffff));
    const nl = len();
    const vl = len();
    const name = content.toString('latin1', i, i + nl);
    assert.equal(out.has(name), false, `${name} sent once`);
    out.set(name, content.toString('latin1', i + nl, i + nl + vl));
    i += nl + vl;
  }
  return out;
}

test('params records: name-value pairs with 1- and 4-byte lengths decode back, then the empty PARAMS record', () => {
  const long = 'v'.repeat(300);
  const buf = encodeParams(1, ['A', 'b', 'LONG', long, 'EMPTY', '']);
  assert.equal(buf[0], 1);
  assert.equal(buf[1], 4);
  const len = buf.readUInt16BE(4);
  const pairs = decodePairs(buf.subarray(8, 8 + len));
  assert.deepEqual(pairs, new Map([['A', 'b'], ['LONG', long], ['EMPTY', '']]));
  assert.deepEqual([...buf.subarray(8 + len)], [1, 4, 0, 1, 0, 0, 0, 0], 'the stream ends with an empty PARAMS record');
});

test('params larger than one record are split at 65535 content bytes', () => {
  const big = 'x'.repeat(70_000);
  const buf = encodeParams(1, ['BIG', big]);
  const first = buf.readUInt16BE(4);
  assert.equal(first, 65535);
  const second = buf.readUInt16BE(8 + first + 4);
  const joined = Buffer.concat([buf.subarray(8, 8 + first), buf.subarray(16 + first, 16 + first + second)]);
  assert.equal(decodePairs(joined)?.get('BIG'), big);
});

test('BEGIN_REQUEST asks for the responder role and FCGI_KEEP_CONN only when told', () => {
  assert.deepEqual([...encodeBeginRequest(1, true)], [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
  assert.equal(encodeBeginRequest(1, false)[10], 0);
});

test('STDIN: data split at 65535 bytes without copying, and the empty record ends the stream', () => {
  const data = Buffer.alloc(70_000, 7);
  const parts = encodeStdin(1, data);
  assert.equal(parts.length, 4);
  assert.equal(parts[0].readUInt16BE(4), 65535);
  assert.equal(parts[1].buffer, data.buffer, 'the body bytes are a view, not a copy');
  assert.equal(parts[2].readUInt16BE(4), 70_000 - 65535);
  assert.deepEqual([...encodeStdin(1, Buffer.alloc(0))[0]], [1, 5, 0, 1, 0, 0, 0, 0]);
});

test('reader: STDOUT, STDERR and END_REQUEST with padding, whole or split at every offset, give the same calls', () => {
  const stream = Buffer.concat([
    record(FCGI_STDERR, 1, Buffer.from('warn\n'), 3),
    record(FCGI_STDOUT, 1, Buffer.from('Status: 200\r\n\r\nhello'), 5),
    record(FCGI_STDOUT, 1, Buffer.alloc(0)),
    endRequest(1, 0, 0),
  ]);
  const whole = collector();
  assert.equal(new RecordReader(1, whole.sink).push(stream), null);
  assert.equal(Buffer.concat(whole.got.stdout).toString(), 'Status: 200\r\n\r\nhello');
  assert.equal(Buffer.concat(whole.got.stderr).toString(), 'warn\n');
  assert.deepEqual(whole.got.end, [[0, 0]]);
  for (let cut = 1; cut < stream.length; cut++) {
    const c = collector();
    const r = new RecordReader(1, c.sink);
    assert.equal(r.push(stream.subarray(0, cut)), null);
    assert.equal(r.push(stream.subarray(cut)), null);
    assert.equal(Buffer.concat(c.got.stdout).toString(), 'Status: 200\r\n\r\nhello', `cut at ${cut}`);
    assert.deepEqual(c.got.end, [[0, 0]]);
    assert.ok(r.ended);
  }
});

test('reader refuses what a responder must not send: wrong version, other request id, unknown types, bad END_REQUEST, bytes after the end', () => {
  const bad = (buf: Buffer): string | null => new RecordReader(1, collector().sink).push(buf);
  const v2 = record(FCGI_STDOUT, 1, Buffer.from('x'));
  v2[0] = 2;
  assert.match(bad(v2) ?? '', /version 2/);
  assert.match(bad(record(FCGI_STDOUT, 2, Buffer.from('x'))) ?? '', /request 2/);
  assert.match(bad(record(5 /* STDIN */, 1, Buffer.from('x'))) ?? '', /type 5/);
  assert.match(bad(record(99, 1, Buffer.from('x'))) ?? '', /type 99/);
  assert.match(bad(record(FCGI_END_REQUEST, 1, Buffer.alloc(4))) ?? '', /END_REQUEST of 4 bytes/);
  assert.match(bad(Buffer.concat([endRequest(1), Buffer.from([1])])) ?? '', /after FCGI_END_REQUEST/);
  const r = new RecordReader(1, collector().sink);
  r.push(v2);
  assert.match(r.push(record(FCGI_STDOUT, 1, Buffer.from('ok'))) ?? '', /version 2/, 'a failed reader stays failed');
});

test('management reply: GET_VALUES_RESULT pairs, UNKNOWN_TYPE refused, partial = more', () => {
  const content = encodeParams(0, ['FCGI_MPXS_CONNS', '0'], 10).subarray(8);
  const reply = record(10, 0, content);
  const r = readManagementReply(reply);
  assert.equal(r.kind, 'ok');
  assert.equal(r.kind === 'ok' && r.values.get('FCGI_MPXS_CONNS'), '0');
  assert.equal(readManagementReply(reply.subarray(0, 10)).kind, 'more');
  assert.equal(readManagementReply(record(11, 0, Buffer.alloc(8))).kind, 'error');
  assert.equal(decodePairs(Buffer.from([5, 1, 65])), null, 'a length past the end is refused');
});

test('CGI head: Status, Location without Status = 302, framing fields dropped, Content-Length kept apart', () => {
  const r = parseCgiHead(Buffer.from('Status: 404 Nope\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc'), { headerSize: 1024, headers: 10 });
  assert.equal(r.kind, 'done');
  if (r.kind !== 'done') return;
  assert.equal(r.head.status, 404);
  assert.equal(r.head.reason, 'Nope');
  assert.deepEqual(r.head.headers, ['Content-Type', 'text/plain']);
  assert.equal(r.head.contentLength, 3);
  assert.equal(r.used, r.used);
  const loc = parseCgiHead(Buffer.from('Location: /x\n\n'), { headerSize: 1024, headers: 10 });
  assert.equal(loc.kind === 'done' && loc.head.status, 302);
  const plain = parseCgiHead(Buffer.from('X-A: 1\r\n\r\n'), { headerSize: 1024, headers: 10 });
  assert.equal(plain.kind === 'done' && plain.head.status, 200);
  assert.equal(parseCgiHead(Buffer.from('X-A: 1\r\n'), { headerSize: 1024, headers: 10 }).kind, 'more');
});

test('CGI head: malformed lines, control characters, bad Status, conflicting lengths and size limits are errors', () => {
  const lim = { headerSize: 64, headers: 3 };
  for (const raw of ['no colon\r\n\r\n', 'X-A: a\x01b\r\n\r\n', 'Status: abc\r\n\r\n', 'Status: 100\r\n\r\n', 'Status: 200\r\nStatus: 200\r\n\r\n', 'Content-Length: 1\r\nContent-Length: 2\r\n\r\n', 'Content-Length: -1\r\n\r\n', 'A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n', ' X: 1\r\n\r\n']) {
    assert.equal(parseCgiHead(Buffer.from(raw, 'latin1'), lim).kind, 'error', JSON.stringify(raw));
  }
  assert.equal(parseCgiHead(Buffer.alloc(64, 0x41), lim).kind, 'error', 'no end within headerSize');
});

test('params: nginx fastcgi_params meaning, HTTP_* from headers, no HTTP_PROXY, no underscore names, extra params last', () => {
  const head = headOf('POST /app/index.php/extra/path?a=1&b=2 HTTP/1.1\r\nHost: example.test:8443\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\nProxy: http://evil:1\r\nX-Custom: c\r\nX_Custom: spoof\r\nCookie: a=1\r\nCookie: b=2\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n');
  const forwarding = compileForwarding({ forwarding: { trusted_proxies: [], x_forwarded_for: 'replace', forwarded: false } } as unknown as Config);
  const script = { ...splitScript('/app/index.php/extra/path', FCGI), uri: '/app/index.php/extra/path', filename: '/srv/www/app/index.php' };
  const f: CompiledFastcgi = { ...FCGI, params: [{ name: 'APP_SCRIPT', parts: parseParamTemplate('$document_root$fastcgi_script_name') as never }, { name: 'SERVER_SOFTWARE', parts: parseParamTemplate('mine') as never }] };
  const pairs = requestParams(head, script, f, { vars: { remoteAddr: '10.1.2.3', host: 'example.test', scheme: 'https', requestUri: head.target, serverPort: 8443, trustedPeer: false }, remotePort: '5555', serverAddr: '127.0.0.1', forwarding });
  const p = paramsSent(f, pairs);
  assert.equal(p.get('SCRIPT_FILENAME'), '/srv/www/app/index.php');
  assert.equal(p.get('SCRIPT_NAME'), '/app/index.php');
  assert.equal(p.get('PATH_INFO'), '/extra/path');
  assert.equal(p.get('DOCUMENT_ROOT'), '/srv/www');
  assert.equal(p.get('REQUEST_URI'), '/app/index.php/extra/path?a=1&b=2');
  assert.equal(p.get('QUERY_STRING'), 'a=1&b=2');
  assert.equal(p.get('REQUEST_METHOD'), 'POST');
  assert.equal(p.get('CONTENT_TYPE'), 'application/x-www-form-urlencoded');
  assert.equal(p.get('CONTENT_LENGTH'), '3');
  assert.equal(p.get('HTTPS'), 'on');
  assert.equal(p.get('REMOTE_ADDR'), '10.1.2.3');
  assert.equal(p.get('REMOTE_PORT'), '5555');
  assert.equal(p.get('SERVER_PORT'), '8443');
  assert.equal(p.get('SERVER_NAME'), 'example.test');
  assert.equal(p.get('HTTP_HOST'), 'example.test:8443');
  assert.equal(p.get('HTTP_X_CUSTOM'), 'c', 'X_Custom (underscore) does not overwrite X-Custom');
  assert.equal(p.get('HTTP_COOKIE'), 'a=1; b=2');
  assert.equal(p.has('HTTP_PROXY'), false, 'httpoxy');
  assert.equal(p.has('HTTP_CONTENT_TYPE'), false);
  assert.equal(p.has('HTTP_X_FORWARDED_FOR'), false, 'an untrusted client\'s forwarding headers are dropped');
  assert.equal(p.get('APP_SCRIPT'), '/srv/www/app/index.php');
  assert.equal(p.get('SERVER_SOFTWARE'), 'mine', 'an extra param replaces a standard one');
});

test('request opening: BEGIN_REQUEST, PARAMS (route pairs, then the request\'s), the empty PARAMS and, without a body, the empty STDIN in one buffer', () => {
  const fixed = Buffer.from([1, 1, 0x41, 0x42]);
  const withEnd = recordsOf(encodeRequestStart(1, true, fixed, '\x01\x01CD', true));
  assert.deepEqual(withEnd.map((r) => r.type), [1, 4, 4, 5]);
  assert.deepEqual([...withEnd[0].content], [0, 1, 1, 0, 0, 0, 0, 0], 'responder role, FCGI_KEEP_CONN');
  assert.deepEqual(decodePairs(withEnd[1].content), new Map([['A', 'B'], ['C', 'D']]));
  assert.equal(withEnd[2].content.length + withEnd[3].content.length, 0);
  const noKeep = recordsOf(encodeRequestStart(1, false, fixed, '', false));
  assert.deepEqual(noKeep.map((r) => r.type), [1, 4, 4], 'a body follows: STDIN is not ended');
  assert.equal(noKeep[0].content[2], 0);
  assert.deepEqual(recordsOf(encodeRequestStart(1, true, Buffer.alloc(0), '', true)).map((r) => r.type), [1, 4, 5], 'no pairs: only the closing PARAMS record');
  const big = 'x'.repeat(70_000);
  const split = recordsOf(encodeRequestStart(1, true, fixed, '\x01' + String.fromCharCode(0x80, 0x01, 0x11, 0x70) + 'Y' + big, true));
  assert.deepEqual(split.map((r) => [r.type, r.content.length]), [[1, 8], [4, 65535], [4, 4 + 6 + 70_000 - 65535], [4, 0], [5, 0]]);
  assert.ok(decodePairs(Buffer.concat([split[1].content, split[2].content]))?.get('Y') === big, 'pairs past 64 KiB span records');
});

test('params: header values and the request target go as the bytes the client sent; decoded paths and config text as UTF-8', () => {
  const forwarding = compileForwarding({ forwarding: { trusted_proxies: [], x_forwarded_for: 'replace', forwarded: false } } as unknown as Config);
  const head = headOf('GET /caf%C3%A9.php HTTP/1.1\r\nHost: a\r\nX-Name: Jos\xe9\r\n\r\n');
  const script = { scriptName: '/café.php', pathInfo: '', uri: '/café.php', filename: '/srv/wwwé/café.php' };
  const f: CompiledFastcgi = { ...FCGI, root: '/srv/wwwé', params: [{ name: 'APP', parts: parseParamTemplate('é$fastcgi_script_name') as never }] };
  const p = paramsSent(f, requestParams(head, script, f, { vars: { remoteAddr: '10.1.2.3', host: 'a', scheme: 'http', requestUri: head.target, serverPort: 80, trustedPeer: false }, remotePort: '1', serverAddr: '', forwarding }));
  const utf8 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');
  assert.equal(p.get('HTTP_X_NAME'), 'Jos\xe9', 'the raw byte 0xE9, not its UTF-8 form (nginx passes bytes)');
  assert.equal(p.get('REQUEST_URI'), '/caf%C3%A9.php');
  assert.equal(p.get('SCRIPT_NAME'), utf8('/café.php'));
  assert.equal(p.get('SCRIPT_FILENAME'), utf8('/srv/wwwé/café.php'));
  assert.equal(p.get('DOCUMENT_ROOT'), utf8('/srv/wwwé'));
  assert.equal(p.get('APP'), utf8('é/café.php'));
});

test('params: an extra param replaces the header of its name, fixed or per request; repeated headers are one', () => {
  const forwarding = compileForwarding({ forwarding: { trusted_proxies: [], x_forwarded_for: 'replace', forwarded: false } } as unknown as Config);
  const head = headOf('GET /index.php?q=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nX-B: b\r\n\r\n');
  const script = { scriptName: '/index.php', pathInfo: '', uri: '/index.php', filename: '/srv/www/index.php' };
  const f: CompiledFastcgi = { ...FCGI, params: [{ name: 'HTTP_HOST', parts: parseParamTemplate('fixed.test') as never }, { name: 'HTTP_X_B', parts: parseParamTemplate('$args') as never }, { name: 'ROOTED', parts: parseParamTemplate('$document_root/x') as never }] };
  const p = paramsSent(f, requestParams(head, script, f, { vars: { remoteAddr: '10.1.2.3', host: 'a', scheme: 'http', requestUri: head.target, serverPort: 80, trustedPeer: false }, remotePort: '1', serverAddr: '', forwarding }));
  assert.equal(p.get('HTTP_HOST'), 'fixed.test');
  assert.equal(p.get('HTTP_X_B'), 'q=1');
  assert.equal(p.get('HTTP_X_A'), '1, 2');
  assert.equal(p.get('ROOTED'), '/srv/www/x');
  assert.equal(p.has('HTTPS'), false);
});

test('params: REMOTE_ADDR is the real client behind trusted proxies (rightmost untrusted X-Forwarded-For entry)', () => {
  const forwarding = compileForwarding({ forwarding: { trusted_proxies: ['10.0.0.0/8'], x_forwarded_for: 'replace', forwarded: false } } as unknown as Config);
  const head = headOf('GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 203.0.113.9, 10.0.0.2\r\n\r\n');
  const vars = { remoteAddr: '10.0.0.1', host: 'a', scheme: 'http' as const, requestUri: '/', serverPort: 80, trustedPeer: true };
  assert.equal(realClient(head, vars, forwarding), '203.0.113.9');
  assert.equal(realClient(head, { ...vars, trustedPeer: false, remoteAddr: '198.51.100.1' }, forwarding), '198.51.100.1', 'an untrusted peer is the client, whatever it claims');
  const junk = headOf('GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: nonsense\r\n\r\n');
  assert.equal(realClient(junk, vars, forwarding), '10.0.0.1');
});

test('script split: split_path_info groups, the index for a directory, decoding', () => {
  assert.deepEqual(splitScript('/a/b.php/x/y', FCGI), { scriptName: '/a/b.php', pathInfo: '/x/y' });
  assert.deepEqual(splitScript('/a/b.php', FCGI), { scriptName: '/a/b.php', pathInfo: '' });
  assert.deepEqual(splitScript('/dir/', FCGI), { scriptName: '/dir/index.php', pathInfo: '' });
  assert.deepEqual(splitScript('/a/b.php/x', { ...FCGI, split: null }), { scriptName: '/a/b.php/x', pathInfo: '' });
  assert.equal(decodePath('/caf%C3%A9.php'), '/café.php');
  assert.equal(decodePath('/bad%C3.php'), null, 'not UTF-8');
  assert.equal(decodePath('/a%0Ab.php'), null, 'a control character');
});

test('a known script is re-checked near the end of its time while still served: kept while its file exists, forgotten once it is gone', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-fcgi-unit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'kept.php'), '<?php');
  await writeFile(path.join(dir, 'gone.php'), '<?php');
  const f: CompiledFastcgi = { root: dir, index: 'index.php', split: null, params: [] };
  const T = 5_000_000;
  t.mock.timers.enable({ apis: ['Date'], now: T });
  assert.ok((await resolveScript('/kept.php', f)).ok);
  assert.ok((await resolveScript('/gone.php', f)).ok);
  const kept = knownScript('/kept.php', f);
  assert.ok(kept !== null && knownScript('/gone.php', f) !== null, 'found: known for a while');
  await rm(path.join(dir, 'gone.php'));
  t.mock.timers.setTime(T + 800); // within its second, in the last quarter: served, and its file is checked again
  assert.equal(knownScript('/kept.php', f), kept);
  assert.ok(knownScript('/gone.php', f) !== null, 'still within the time of its last check');
  // the re-checks run on the file system (no event says when they are done): read what they left, at a time past
  // the first check's second, a bounded number of times
  const at = (ms: number, p: string): ReturnType<typeof knownScript> => {
    t.mock.timers.setTime(ms);
    const s = knownScript(p, f);
    t.mock.timers.setTime(T + 800);
    return s;
  };
  for (let i = 0; i < 200 && (at(T + 1500, '/kept.php') === null || at(T + 800, '/gone.php') !== null); i++) await new Promise((r) => setTimeout(r, 25));
  assert.equal(at(T + 1500, '/kept.php'), kept, 'found again: known past the first second, the same script');
  assert.equal(at(T + 800, '/gone.php'), null, 'its file is gone: forgotten before its second is over');
  assert.equal((await resolveScript('/gone.php', f)).ok, false);
});

test('script lookup: existing file found; missing, directory, the /uploads/x.jpg/.php trap and symlinks out of root refused', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-fcgi-unit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const root = path.join(dir, 'root');
  await mkdir(path.join(root, 'uploads'), { recursive: true });
  await mkdir(path.join(root, 'dir.php'));
  await writeFile(path.join(root, 'index.php'), '<?php');
  await writeFile(path.join(root, 'uploads', 'x.jpg'), 'jpeg');
  await writeFile(path.join(dir, 'outside.php'), '<?php');
  await symlink(path.join(dir, 'outside.php'), path.join(root, 'out.php'));
  await symlink(dir, path.join(root, 'up'));
  await symlink(path.join(root, 'index.php'), path.join(root, 'in.php'));
  const f: CompiledFastcgi = { root, index: 'index.php', split: null, params: [] };
  const ok = await resolveScript('/index.php', f);
  assert.ok(ok.ok && ok.script.filename === path.join(root, 'index.php'));
  assert.ok((await resolveScript('/', f)).ok, 'the index of /');
  assert.ok((await resolveScript('/in.php', f)).ok, 'a symlink inside root is served');
  for (const p of ['/missing.php', '/dir.php', '/uploads/x.jpg/.php', '/out.php', '/up/outside.php']) {
    assert.equal((await resolveScript(p, f)).ok, false, p);
  }
  const split: CompiledFastcgi = { ...f, split: /^(.+\.php)(\/.*)$/ };
  const trap = await resolveScript('/uploads/x.jpg/.php', split);
  assert.equal(trap.ok, false, 'with split_path_info too');
  const pi = await resolveScript('/index.php/more', split);
  assert.ok(pi.ok && pi.script.pathInfo === '/more');
});
