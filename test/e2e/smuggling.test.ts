// Request smuggling, differential: every case of smuggling-corpus.ts goes through a real Portico to a Node
// `http` backend and to nginx, and the backend must parse exactly the requests the client sent as its own
// (method and path, in order): never one hidden in a body, behind a Connection-nominated framing header or
// left over for the next client. Refused cases get their status and a closed connection. What each backend
// parsed is read between two sentinel requests, so no wait depends on time.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startHttpBackend } from '../helpers/backends.js';
import { get } from '../helpers/loops.js';
import { hasNginx, startNginx } from '../helpers/nginx.js';
import { needPeer } from '../helpers/peers.js';
import { plainListener, startPortico } from '../helpers/portico.js';
import { connectPlain, ResponseReader, type WireResponse } from '../helpers/wire.js';
import { CORPUS, type SmugglingCase } from './smuggling-corpus.js';

/** What a backend parsed, in order, as "METHOD /target". */
interface SeenLog {
  /** Every request parsed so far (sentinels included). */
  read(): Promise<string[]>;
}

async function startProxy(t: TestContext, port: number): Promise<number> {
  const portico = await startPortico(t, {
    workers: 1,
    listeners: [plainListener()],
    upstreams: { app: { targets: [`127.0.0.1:${port}`] } },
    routes: [{ proxy: 'app' }],
    timeouts: { head: '5s' },
    log: { level: 'warn', access: false },
  });
  return portico.httpPort;
}

/** The next final response (1xx interim responses, e.g. 100 Continue, are skipped). */
async function finalResponse(reader: ResponseReader): Promise<WireResponse> {
  for (let i = 0; i < 4; i++) {
    const r = await reader.next();
    if (r.status >= 200) return r;
  }
  throw new Error('more than 4 interim responses');
}

/**
 * Writes `bytes` in one write, or (split) in pieces cut one byte past each blank line (the end of a head), each
 * handed to the kernel before the next, so Portico also meets bodies and pipelined heads in later reads.
 */
async function write(socket: Socket, bytes: string, split: boolean): Promise<void> {
  const buf = Buffer.from(bytes, 'latin1');
  if (!split) {
    socket.write(buf);
    return;
  }
  let from = 0;
  for (let at = buf.indexOf('\r\n\r\n'); at >= 0 && from < buf.length; at = buf.indexOf('\r\n\r\n', from)) {
    const cut = Math.min(at + 5, buf.length);
    if (socket.destroyed) return;
    await new Promise<void>((resolve) => socket.write(buf.subarray(from, cut), () => resolve()));
    from = cut;
  }
  if (from < buf.length && !socket.destroyed) socket.write(buf.subarray(from));
}

async function sendPhase(reader: ResponseReader, socket: Socket, bytes: string, answers: number, c: SmugglingCase, split: boolean): Promise<void> {
  await write(socket, bytes, split);
  for (let i = 0; i < answers; i++) {
    const r = await finalResponse(reader);
    assert.equal(r.status, 200, `${c.name}: answer ${i} is the backend's 200, got ${r.status} ${r.body.toString('latin1').slice(0, 200)}`);
  }
}

/**
 * Runs the corpus against one backend through one Portico. `seen` reports what the backend parsed; `sentinel`
 * marks the end of a case: every request of the case was parsed before the first sentinel was.
 */
async function runCorpus(t: TestContext, proxyPort: number, seen: SeenLog, split = false): Promise<void> {
  let from = 0;
  const failures: string[] = [];
  for (let n = 0; n < CORPUS.length; n++) {
    const c = CORPUS[n];
    const own = [...c.own, ...(c.after?.own ?? [])];
    const answered = c.answered ?? own.length;
    const socket = await connectPlain(t, proxyPort);
    const reader = new ResponseReader(socket);
    try {
      if (c.after === undefined) {
        await sendPhase(reader, socket, c.send, Math.min(answered, c.own.length), c, split);
      } else {
        await sendPhase(reader, socket, c.send, c.own.length, c, split);
        await sendPhase(reader, socket, c.after.send, c.after.own.length, c, split);
      }
      if (c.refused !== undefined) {
        const r = await finalResponse(reader);
        assert.equal(r.status, c.refused, `${c.name}: refused with ${c.refused}`);
        await reader.rest();
        assert.ok(reader.ended, `${c.name}: connection closed after the refusal`);
      }
    } catch (err) {
      failures.push(`#${n} ${c.name}: client side: ${(err as Error).message}`);
    } finally {
      socket.destroy();
    }
    // Two sentinels one after the other: once the second is answered, the backend has finished the first,
    // and with it everything this case made it parse.
    const a = await get('127.0.0.1', proxyPort, `/sentinel-${n}-a`);
    const b = await get('127.0.0.1', proxyPort, `/sentinel-${n}-b`);
    assert.equal(a.status, 200, `sentinel after #${n} ${c.name}`);
    assert.equal(b.status, 200, `sentinel after #${n} ${c.name}`);
    const all = await seen.read();
    const end = all.indexOf(`GET /sentinel-${n}-a`, from);
    assert.ok(end >= 0, `#${n} ${c.name}: sentinel parsed by the backend; it parsed ${JSON.stringify(all.slice(from))}`);
    const parsed = all.slice(from, end).filter((l) => !l.startsWith('GET /sentinel-'));
    from = end + 1;
    // The client's own requests that were answered, in order; a refused request whose head was already
    // forwarded may show up too (its body cut short), but never anything else.
    const ok =
      JSON.stringify(parsed.slice(0, answered)) === JSON.stringify(own.slice(0, answered)) &&
      (parsed.length === answered || (c.refused !== undefined && parsed.length === answered + 1 && parsed[answered] === own[answered]));
    if (!ok) failures.push(`#${n} ${c.name}: backend parsed ${JSON.stringify(parsed)}, the client sent ${JSON.stringify(own)} (${answered} answered)`);
  }
  assert.deepEqual(failures, [], `${failures.length} of ${CORPUS.length} cases failed:\n${failures.join('\n')}`);
}

test('the corpus has at least 60 cases, each with a distinct name', () => {
  assert.ok(CORPUS.length >= 60, `${CORPUS.length} cases`);
  assert.equal(new Set(CORPUS.map((c) => c.name)).size, CORPUS.length);
});

test('smuggling corpus through Portico to a Node http backend: it parses only the client\'s own requests', { timeout: 180_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const port = await startProxy(t, backend.port);
  await runCorpus(t, port, { read: async () => backend.requests.map((r) => `${r.method} ${r.url}`) });
});

test('smuggling corpus, each head and body in its own write, to a Node http backend: the same requests only', { timeout: 180_000 }, async (t) => {
  const backend = await startHttpBackend(t);
  const port = await startProxy(t, backend.port);
  await runCorpus(t, port, { read: async () => backend.requests.map((r) => `${r.method} ${r.url}`) }, true);
});

test('smuggling corpus through Portico to nginx: it parses only the client\'s own requests', { timeout: 180_000 }, async (t) => {
  if (!needPeer(t, 'nginx', hasNginx())) return;
  const dir = await mkdtemp(path.join(tmpdir(), 'portico-smuggle-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const log = path.join(dir, 'access.log');
  const nginx = await startNginx(
    t,
    `log_format smuggle '$request_method $request_uri';
     keepalive_requests 100000;
     server {
       listen 127.0.0.1:{{PORT}};
       access_log ${log} smuggle;
       location / { return 200 "ok\\n"; }
     }`,
  );
  const port = await startProxy(t, nginx.port);
  await runCorpus(t, port, {
    read: async () =>
      (await readFile(log, 'latin1').catch(() => ''))
        .split('\n')
        .filter((l) => l !== ''),
  });
});
