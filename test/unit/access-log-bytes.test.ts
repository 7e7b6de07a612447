// http/access-log.ts writes a request's line straight into bytes (core/json-line.ts), with the line's opening made
// once per millisecond and runs of fields kept as bytes while their values repeat. These check, on real lines in
// a real file: the time of each line is the clock's when it was written, across millisecond and second edges;
// and lines whose values change from one request to the next (route, target, method, Host, client, User-Agent,
// Referer, request id, status, timings) each say their own values, never the kept bytes of another line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AccessLog, type AccessClient } from '../../src/http/access-log.js';
import { LineWriter } from '../../src/core/line-writer.js';
import type { Exchange } from '../../src/handlers/forward.js';
import type { RequestHead } from '../../src/wire/http-head.js';

function fileLog(t: { after: (fn: () => void) => void }, trusts: (a: string) => boolean = () => false): { log: AccessLog; writer: LineWriter; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-alog-bytes-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'access.log');
  const writer = new LineWriter(file);
  return { log: new AccessLog({ stdout: undefined, file: writer, worker: 2, trusts }), writer, file };
}

async function linesOf(writer: LineWriter, file: string): Promise<Record<string, unknown>[]> {
  await writer.drain();
  writer.close();
  const text = readFileSync(file, 'utf8');
  assert.ok(text.endsWith('\n'));
  return text.slice(0, -1).split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

interface Shape {
  method: string;
  target: string;
  minor: number;
  host: string | undefined;
  ua: string | undefined;
  referer: string | undefined;
  xff: string | undefined;
  route: string;
  pool: string;
  upstream: string | null;
  connectMs: number;
  reused: boolean;
  firstByteMs: number;
  reqId: string | undefined;
  status: number;
  remoteAddr: string;
}

function exchangeOf(s: Shape, i: number): Exchange {
  const headers: string[] = [];
  if (s.host !== undefined) headers.push('Host', s.host);
  if (s.ua !== undefined) headers.push(i % 2 === 0 ? 'User-Agent' : 'user-agent', s.ua);
  if (s.referer !== undefined) headers.push('Referer', s.referer);
  if (s.xff !== undefined) headers.push('X-Forwarded-For', s.xff);
  const head = { method: s.method, target: s.target, versionMinor: s.minor, hostRaw: s.host, headers } as unknown as RequestHead;
  const target = s.upstream === null ? null : { id: s.upstream };
  return {
    head,
    route: { name: s.route },
    pool: { name: s.pool },
    target,
    lastTarget: target,
    connectMs: s.connectMs,
    reusedSocket: s.reused,
    firstByteMs: s.firstByteMs,
    bytesIn: 100 + i,
    bytesOut: 1000 + i,
    startedAt: Date.now(),
    startedHr: performance.now(),
  } as unknown as Exchange;
}

test('access log: each line carries the time it was written, across millisecond and second edges', async (t) => {
  const { log, writer, file } = fileLog(t);
  const client: AccessClient = { id: 1, remoteAddr: '127.0.0.1' };
  const shape: Shape = { method: 'GET', target: '/t', minor: 1, host: 'h', ua: 'u', referer: undefined, xff: undefined, route: 'r', pool: 'p', upstream: '10.0.0.1:80', connectMs: 0.5, reused: false, firstByteMs: 1.25, reqId: 'id', status: 200, remoteAddr: '127.0.0.1' };
  const windows: [number, number][] = [];
  const started = Date.now();
  const seconds = new Set<number>();
  // lines until a second edge is crossed and they were written in 40 distinct milliseconds (a busy machine may
  // deschedule this loop for long stretches: bounded at 10 s), a few per millisecond
  const begun = new Set<number>();
  for (let i = 0; (seconds.size < 2 || begun.size < 40) && Date.now() - started < 10_000; i++) {
    const before = Date.now();
    begun.add(before);
    log.request(client, exchangeOf(shape, i), shape.reqId, 200, undefined);
    const after = Date.now();
    windows.push([before, after]);
    seconds.add(Math.floor(before / 1000));
    if (i % 64 === 63) {
      // let the writer write; a slow disk (a busy machine) must not make the writer drop lines past its bound
      if (writer.buffered > 1 << 20) await writer.drain();
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }
  assert.ok(seconds.size >= 2, 'crossed a second edge');
  const lines = await linesOf(writer, file);
  assert.equal(writer.dropped, 0);
  assert.equal(lines.length, windows.length);
  const millis = new Set<number>();
  lines.forEach((o, i) => {
    const at = Date.parse(o.time as string);
    const [before, after] = windows[i];
    assert.ok(at >= before && at <= after, `line ${i}: time ${o.time as string} not within ${new Date(before).toISOString()}..${new Date(after).toISOString()}`);
    millis.add(at);
  });
  assert.ok(millis.size > 20, `${millis.size} distinct milliseconds`);
});

test('access log: lines whose values change from request to request each say their own (no kept bytes of another line)', async (t) => {
  const { log, writer, file } = fileLog(t, (a) => a === '10.9.9.9');
  const base: Shape = { method: 'GET', target: '/a', minor: 1, host: 'one.example', ua: 'curl/8', referer: 'https://r.example/', xff: undefined, route: 'api', pool: 'api', upstream: '10.0.0.1:80', connectMs: 0.25, reused: true, firstByteMs: 1.5, reqId: 'r-1', status: 200, remoteAddr: '127.0.0.1' };
  const variants: Partial<Shape>[] = [
    {},
    { method: 'POST' },
    { target: '/b?q="x"' },
    { minor: 0 },
    { host: 'two.example' },
    { host: undefined },
    { ua: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36' },
    { ua: undefined },
    { referer: 'https://other.example/é' },
    { referer: undefined },
    { remoteAddr: '10.9.9.9', xff: '203.0.113.7' },
    { remoteAddr: '::1' },
    { route: 'web', pool: 'web' },
    { upstream: '10.0.0.2:80' },
    { upstream: null },
    { connectMs: -1 },
    { reused: false },
    { firstByteMs: -1 },
    { connectMs: -1, firstByteMs: -1 },
    { reqId: undefined },
    { reqId: 'r-"2"' },
    { status: 404 },
    { status: 502 },
  ];
  const client: AccessClient = { id: 9, remoteAddr: base.remoteAddr };
  const sent: Shape[] = [];
  // every variant after the base one and after each other, so a kept run is offered every other value
  for (let round = 0; round < 3; round++) {
    for (const v of variants) {
      for (const s of [base, { ...base, ...v }, { ...base, ...v }, base]) {
        sent.push(s);
        log.request({ ...client, remoteAddr: s.remoteAddr }, exchangeOf(s, sent.length), s.reqId, s.status, undefined);
      }
    }
  }
  const lines = await linesOf(writer, file);
  assert.equal(lines.length, sent.length);
  lines.forEach((o, i) => {
    const s = sent[i];
    const realClient = s.xff !== undefined && s.remoteAddr === '10.9.9.9' ? s.xff : s.remoteAddr;
    const want: Record<string, unknown> = {
      level: 'info',
      time: o.time,
      pid: process.pid,
      worker: 2,
      conn: 9,
      mode: 'http',
      route: s.route,
      pool: s.pool,
      upstream: s.upstream ?? undefined,
      connectMs: s.connectMs >= 0 ? s.connectMs : undefined,
      reused: s.connectMs >= 0 && s.reused ? true : undefined,
      firstByteMs: s.firstByteMs >= 0 ? s.firstByteMs : undefined,
      method: s.method,
      path: s.target,
      proto: `HTTP/1.${s.minor}`,
      host: s.host,
      client: realClient,
      peer: realClient === s.remoteAddr ? undefined : s.remoteAddr,
      ua: s.ua,
      referer: s.referer,
      reqId: s.reqId,
      status: s.status,
      bytesIn: 100 + i + 1,
      bytesOut: 1000 + i + 1,
      durationMs: o.durationMs,
      msg: 'request',
    };
    for (const k of Object.keys(want)) if (want[k] === undefined) delete want[k];
    assert.deepEqual(o, want, `line ${i}`);
    assert.deepEqual(Object.keys(o), Object.keys(want), `line ${i}: field order`);
  });
});
