// Property tests of the hand-built access-log lines (http/access-log.ts) under a time budget: whatever a client
// puts in the target, Host, User-Agent, Referer or X-Request-Id (quotes, backslashes, control characters, the
// latin1 characters that bytes of invalid UTF-8 decode to, lone surrogates), and whatever a config or an error
// puts in names and messages, every line is one valid JSON object whose values round-trip (cut at 512), whose
// timings read as String(Math.round(v * 1000) / 1000) did, and which a LineWriter puts in a file byte for byte.
// Every kind of line: forwarded, refused, HTTP tunnel, answered by Portico (static, redirect...), FastCGI,
// terminated WebSocket, and the named-field lines of L4 tunnels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { assertFor } from '../helpers/fuzz.js';
import { AccessLog, type AccessClient } from '../../src/http/access-log.js';
import { LineWriter } from '../../src/core/line-writer.js';
import type { Exchange } from '../../src/handlers/forward.js';
import type { RequestHead } from '../../src/wire/http-head.js';
import type { ProxyError } from '../../src/core/errors.js';
import type { Tunnel } from '../../src/tunnel/relay.js';
import type { ClientExchange } from '../../src/handlers/client-exchange.js';
import type { SessionEnd } from '../../src/terminate/session.js';

const BUDGET_MS = 1500;
const MAX_FIELD = 512;

/** Characters that break naive JSON: escapes, controls, latin1 (raw bytes), surrogates alone and paired. */
const EDGE = ['"', '\\', '/', '\u0000', '\u0001', '\b', '\t', '\n', '\f', '\r', '\u001f', '\u007f', '\u0080', '\u00ff', '\u00e9', '\u2028', '\u2029', '\ud800', '\udbff', '\udc00', '\udfff', '\ud83d\ude00', '\ufffd', '\ufeff'];
const charArb = fc.oneof(fc.constantFrom(...EDGE), fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), fc.constantFrom('a', 'Z', '0', ' ', '%', '?', '='));
const textArb = fc.oneof(
  fc.string({ unit: charArb, maxLength: 40 }),
  // past the cut: a surrogate pair split at 512 leaves a lone surrogate
  fc.string({ unit: charArb, minLength: 500, maxLength: 700 }),
);
const timingArb = fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1e7, noNaN: true }), fc.integer({ min: 0, max: 1_000_000 }).map((n) => n / 1000));

const requestArb = fc.record({
  method: fc.oneof(fc.constantFrom('GET', 'POST', 'M-SEARCH'), textArb),
  target: textArb,
  host: fc.option(textArb, { nil: undefined }),
  ua: fc.option(textArb, { nil: undefined }),
  referer: fc.option(textArb, { nil: undefined }),
  reqId: fc.option(textArb, { nil: undefined }),
  route: textArb,
  target_id: textArb,
  message: fc.option(textArb, { nil: undefined }),
  connectMs: fc.option(timingArb, { nil: undefined }),
  firstByteMs: fc.option(timingArb, { nil: undefined }),
  remoteAddr: fc.oneof(fc.constantFrom('127.0.0.1', '::1', '2001:db8::7'), textArb),
  kind: fc.constantFrom('request', 'rejected', 'tunnel', 'answer', 'fastcgi', 'terminate', 'l4'),
  answerMode: fc.constantFrom('static', 'redirect', 'return', 'preflight'),
});
type Req = typeof requestArb extends fc.Arbitrary<infer T> ? T : never;

const cut = (v: string) => (v.length > MAX_FIELD ? v.slice(0, MAX_FIELD) : v);
const msText = (v: number) => String(Math.round(v * 1000) / 1000);

function headOf(r: Req): RequestHead {
  const headers: string[] = [];
  if (r.host !== undefined) headers.push('Host', r.host);
  if (r.ua !== undefined) headers.push('User-Agent', r.ua);
  headers.push('Accept', '*/*');
  if (r.referer !== undefined) headers.push('REFERER', r.referer);
  return { method: r.method, target: r.target, versionMinor: 1, hostRaw: r.host, headers } as unknown as RequestHead;
}

function exchangeOf(r: Req, head: RequestHead): Exchange {
  const target = { id: r.target_id };
  return {
    head,
    route: { name: r.route },
    pool: { name: r.route },
    target: null,
    lastTarget: target,
    connectMs: r.connectMs ?? -1,
    reusedSocket: false,
    firstByteMs: r.firstByteMs ?? -1,
    bytesIn: 11,
    bytesOut: 22,
    startedAt: Date.now(),
    startedHr: performance.now(),
  } as unknown as Exchange;
}

/** Writes r's line to `log`; what a reader must find in it. */
function logOne(log: AccessLog, r: Req): void {
  const c: AccessClient = { id: 7, remoteAddr: r.remoteAddr };
  const head = headOf(r);
  const ex = exchangeOf(r, head);
  const err = r.message === undefined ? undefined : ({ code: 'UPSTREAM_CONNECT_REFUSED', message: r.message } as ProxyError);
  if (r.kind === 'request') log.request(c, ex, r.reqId, 502, err);
  else if (r.kind === 'rejected') log.rejected(c, head, r.reqId, 400, 'CLIENT_BAD_REQUEST', r.message ?? 'bad');
  else if (r.kind === 'tunnel') log.tunnel(c, log.tunnelFields(c, ex, r.reqId), { bytesUp: 1, bytesDown: 2, startedAt: Date.now(), closedBy: 'client' } as unknown as Tunnel);
  else if (r.kind === 'answer') log.answer(c, r.answerMode, r.route, head, r.reqId, 404, 33, Date.now(), err);
  else if (r.kind === 'fastcgi') log.exchange(c, { ...ex, mode: 'fastcgi' } as unknown as ClientExchange, r.reqId, 502, err);
  else if (r.kind === 'terminate') log.terminated(c, ex, { closedBy: 'client', code: 1000, reason: r.message ?? '', messagesIn: 1, messagesOut: 2, bytesIn: 11, bytesOut: 22, pingsMissed: 0, drops: 0, durationMs: 5 } as SessionEnd);
  else log.line(7, r.message === undefined ? 'info' : 'warn', { mode: 'passthrough', sni: r.host, remoteAddr: r.remoteAddr, upstream: r.route, target: r.target_id, bytesIn: 11, bytesOut: 22, closedBy: 'client', err: err === undefined ? undefined : { code: err.code, message: err.message } }, r.method);
}

/** The named-field lines (L4, terminated WebSocket): no request fields, their own names. */
function checkNamed(r: Req, o: Record<string, unknown>): void {
  assert.equal(o.conn, 7);
  assert.equal(o.bytesIn, 11);
  assert.equal(o.bytesOut, 22);
  assert.equal(o.closedBy, 'client');
  if (r.kind === 'terminate') {
    assert.equal(o.msg, 'websocket');
    assert.equal(o.path, cut(r.target));
    assert.equal(o.remoteAddr, cut(r.remoteAddr));
    assert.equal(o.route, cut(r.route));
    assert.equal(o.upstream, undefined, 'no target held');
    assert.equal(o.reason, r.message === undefined || r.message === '' ? undefined : cut(r.message));
    return;
  }
  assert.equal(o.msg, cut(r.method));
  assert.equal(o.level, r.message === undefined ? 'info' : 'warn');
  assert.equal(o.sni, r.host === undefined ? undefined : cut(r.host));
  assert.equal(o.remoteAddr, cut(r.remoteAddr));
  assert.equal(o.upstream, cut(r.route));
  assert.equal(o.target, cut(r.target_id));
  assert.deepEqual(o.err, r.message === undefined ? undefined : { code: 'UPSTREAM_CONNECT_REFUSED', message: cut(r.message) });
}

function check(r: Req, line: string): void {
  assert.ok(line.endsWith('}\n') && line.indexOf('\n') === line.length - 1, 'one line');
  const o = JSON.parse(line) as Record<string, unknown>;
  if (r.kind === 'terminate' || r.kind === 'l4') return checkNamed(r, o);
  assert.equal(o.method, cut(r.method));
  assert.equal(o.path, cut(r.target));
  assert.equal(o.host, r.host === undefined ? undefined : cut(r.host));
  assert.equal(o.client, cut(r.remoteAddr));
  assert.equal(o.ua, r.ua === undefined ? undefined : cut(r.ua));
  assert.equal(o.referer, r.referer === undefined ? undefined : cut(r.referer));
  assert.equal(o.reqId, r.reqId === undefined ? undefined : cut(r.reqId));
  assert.equal(o.proto, 'HTTP/1.1');
  if (r.kind === 'rejected') {
    assert.deepEqual(o.err, { code: 'CLIENT_BAD_REQUEST', message: cut(r.message ?? 'bad') });
    return;
  }
  assert.equal(o.route, cut(r.route));
  const err = r.message === undefined ? undefined : { code: 'UPSTREAM_CONNECT_REFUSED', message: cut(r.message) };
  if (r.kind === 'answer') {
    assert.deepEqual([o.mode, o.status, o.bytesOut, o.pool, o.upstream], [r.answerMode, 404, 33, undefined, undefined]);
    assert.deepEqual(o.err, err);
    return;
  }
  if (r.kind === 'fastcgi') {
    assert.deepEqual([o.mode, o.status, o.bytesIn, o.bytesOut, o.upstream], ['fastcgi', 502, 11, 22, cut(r.target_id)]);
    assert.deepEqual(o.err, err);
    return;
  }
  assert.equal(o.pool, cut(r.route));
  assert.equal(o.upstream, cut(r.target_id));
  for (const k of ['connectMs', 'firstByteMs'] as const) {
    const v = r[k];
    if (v === undefined) {
      assert.equal(o[k], undefined);
    } else {
      // the same text as before the integer formatting: a reader comparing old and new lines sees no change
      assert.ok(line.includes(`"${k}":${msText(v)}${k === 'connectMs' ? ',' : ','}`), `${k} ${v} written as ${msText(v)}: ${line}`);
      assert.equal(o[k], Math.round(v * 1000) / 1000);
    }
  }
  assert.equal(typeof o.durationMs, 'number');
  if (r.kind === 'request') assert.deepEqual(o.err, r.message === undefined ? undefined : { code: 'UPSTREAM_CONNECT_REFUSED', message: cut(r.message) });
  else assert.equal(o.closedBy, 'client');
}

test('access-log lines: any client string or name gives one valid JSON line whose values round-trip; the file holds the same bytes', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-alog-fuzz-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // the property runs without a turn of the event loop, so nothing is written until it ends: room for it all
  const file = new LineWriter(path.join(dir, 'access.log'), 1 << 30);
  const seen: string[] = [];
  // a writer that keeps each line as text, given as a string (tunnels, named fields) or as bytes (requests); the file
  // is the writer lines are written into (claim), the capture gets a copy; noted lines are written by log.flush()
  const capture = { write: (l: string) => seen.push(l), writeBytes: (b: Uint8Array) => seen.push(Buffer.from(b).toString('utf8')), defer: () => {}, undefer: () => {} };
  const log = new AccessLog({ stdout: capture as unknown as LineWriter, file, worker: 1, trusts: () => false });
  const reqs: Req[] = [];
  let runs = 0;
  assertFor(
    fc.property(requestArb, (r) => {
      runs++;
      reqs.push(r);
      const before = seen.length;
      logOne(log, r);
      log.flush();
      assert.equal(seen.length, before + 1);
      check(r, seen[seen.length - 1]);
    }),
    BUDGET_MS,
    () => runs > 50, // at least that many requests logged and checked, however busy the machine
  );
  await file.drain();
  file.close();
  assert.equal(file.dropped, 0);
  // what a reader of the file gets: UTF-8 that must decode back to the same values (a lone surrogate written
  // unescaped would come back as U+FFFD)
  const bytes = readFileSync(path.join(dir, 'access.log'));
  assert.ok(bytes.equals(Buffer.from(seen.join(''))), 'file bytes = the lines as UTF-8');
  const lines = bytes.toString('utf8').split('\n');
  assert.equal(lines.pop(), '');
  assert.equal(lines.length, reqs.length);
  lines.forEach((l, i) => check(reqs[i], `${l}\n`));
});
