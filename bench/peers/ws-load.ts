// WebSocket ping-pong load client, run in its own process by the harness: N raw TCP connections each do the
// RFC 6455 upgrade themselves, then keep exactly one masked frame in flight (send, wait for the echo, resend).
// Built to stay out of the way: one pre-masked frame per connection, a fast path for a whole echo per read,
// payload checks on the first echo and then every --verify-every. It reports; it never judges a proxy.
// --tls speaks wss (TLS reads arrive as 'data' chunks, fed through the same parser); --mode upgrade opens,
// checks and closes WebSockets back to back (handshakes per second); --mode idle opens them, has each echo one
// message, and holds them until told (the memory of idle connections).
//
// Usage: node dist/bench/peers/ws-load.js --port P [--host 127.0.0.1] [--path /ws] [--connections 100] [--size 32]
//        [--duration 10] [--verify-every 1024] [--connect-timeout 10] [--sync] [--tls] [--mode echo|upgrade|idle]
//        [--authority NAME]   (Host header and TLS server name, when not the address connected to)
// stdout, one JSON line each: {"event":"ready"} once connected, {"event":"start"} when timing begins,
// {"event":"stop"} when it ends, then {"event":"result", ...}. With --sync it waits for a "go" line on stdin
// after "ready" and a "done" line after "stop" (idle: only "done" after "ready"). Exit 0 when the run completed
// (errors are in the result).
import net from 'node:net';
import tls from 'node:tls';
import { createHash, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { readArgs } from '../lib/args.js';
import { WS_GUID, WS_PATH } from '../lib/shape.js';

interface Options {
  host: string;
  port: number;
  path: string;
  connections: number;
  size: number;
  durationMs: number;
  verifyEvery: number;
  connectTimeoutMs: number;
  /** Wait for "go" / "done" lines on stdin around the timed window (the harness's CPU snapshots). */
  sync: boolean;
  tls: boolean;
  mode: 'echo' | 'upgrade' | 'idle';
  /** Host header and TLS server name; default the address and port connected to. */
  authority?: string;
}

export interface WsLoadResult {
  event: 'result';
  connections: number;
  connected: number;
  /** Up to 5 distinct reasons connections failed to open. */
  connectErrors: string[];
  messages: number;
  elapsedMs: number;
  msgPerSec: number;
  /** Mean round trip by Little's law: connections in flight / throughput. */
  meanRttUs: number;
  verified: number;
  mismatches: number;
  /** Connections that closed or failed during the timed window. */
  lost: number;
  protocolErrors: number;
  cpuUserUs: number;
  cpuSystemUs: number;
}

const USAGE = `usage: node dist/bench/peers/ws-load.js --port P [--host 127.0.0.1] [--path /ws] [--connections 100] [--size 32]
       [--duration 10] [--verify-every 1024] [--connect-timeout 10] [--sync] [--tls] [--mode echo|upgrade|idle] [--authority NAME]`;

function parseOptions(argv: string[]): Options {
  const a = readArgs(
    argv,
    {
      host: 'string', port: 'string', path: 'string', connections: 'string', size: 'string', duration: 'string', 'verify-every': 'string',
      'connect-timeout': 'string', sync: 'boolean', tls: 'boolean', mode: 'string', authority: 'string',
    },
    USAGE,
  );
  const port = a.int('port', 0, 1, 65535);
  if (port === 0) throw new Error(`--port is required\n${USAGE}`);
  return {
    host: a.str('host', '127.0.0.1'),
    port,
    path: a.str('path', WS_PATH),
    connections: a.int('connections', 100, 1, 20_000),
    // Two-byte extended length at most: the client never needs 64-bit frame lengths.
    size: a.int('size', 32, 1, 65_535),
    durationMs: a.num('duration', 10, 0.001, 3600) * 1000,
    verifyEvery: a.int('verify-every', 1024, 1, Number.MAX_SAFE_INTEGER),
    connectTimeoutMs: a.num('connect-timeout', 10, 0.001, 3600) * 1000,
    sync: a.has('sync'),
    tls: a.has('tls'),
    mode: a.oneOf('mode', ['echo', 'upgrade', 'idle'] as const, 'echo'),
    authority: a.str('authority', '') || undefined,
  };
}

/** A complete client frame (FIN + binary, masked): RFC 6455 §5.2. Built once per connection, resent as is. */
function maskedFrame(payload: Buffer): Buffer {
  const ext = payload.length < 126 ? 0 : 2;
  const frame = Buffer.allocUnsafe(2 + ext + 4 + payload.length);
  frame[0] = 0x82;
  if (ext === 0) frame[1] = 0x80 | payload.length;
  else {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(payload.length, 2);
  }
  const maskAt = 2 + ext;
  randomBytes(4).copy(frame, maskAt);
  for (let i = 0; i < payload.length; i++) frame[maskAt + 4 + i] = payload[i] ^ frame[maskAt + (i & 3)];
  return frame;
}

/** A masked Close frame with status 1000 (RFC 6455 §5.5.1), sent when the timed window ends. */
function closeFrame(): Buffer {
  const payload = Buffer.from([0x03, 0xe8]);
  const frame = Buffer.allocUnsafe(2 + 4 + 2);
  frame[0] = 0x88;
  frame[1] = 0x80 | 2;
  randomBytes(4).copy(frame, 2);
  for (let i = 0; i < 2; i++) frame[6 + i] = payload[i] ^ frame[2 + i];
  return frame;
}

const MAX_HANDSHAKE_BYTES = 16 * 1024;

/**
 * One read buffer for every connection (net `onread`): reads land here and are handled synchronously, which
 * spares a Buffer allocation and a stream 'data' event per echo. Partial frames are copied out.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

class Stats {
  messages = 0;
  verified = 0;
  mismatches = 0;
  lost = 0;
  protocolErrors = 0;
  running = false;
}

/** One client connection: the upgrade, then ping-pong. Its socket's reads all come through onRead. */
class Conn {
  socket: net.Socket | undefined;
  readonly #frame: Buffer;
  readonly #expected: Buffer;
  /** Length of the server's echo of our payload: unmasked header (2 or 4 bytes) + payload. */
  readonly #echoLength: number;
  /** Second header byte of that echo: unmasked, the 7-bit length or 126. */
  readonly #echoByte1: number;
  readonly #stats: Stats;
  readonly #verifyEvery: number;
  readonly #accept: string;
  #head: Buffer | null = Buffer.alloc(0);
  #onOpen: ((err?: Error) => void) | undefined;
  #received = 0;
  #pending: Buffer | null = null;
  #done = false;

  constructor(payload: Buffer, accept: string, stats: Stats, verifyEvery: number, onOpen: (err?: Error) => void) {
    this.#expected = payload;
    this.#frame = maskedFrame(payload);
    this.#echoLength = (payload.length < 126 ? 2 : 4) + payload.length;
    this.#echoByte1 = payload.length < 126 ? payload.length : 126;
    this.#accept = accept;
    this.#stats = stats;
    this.#verifyEvery = verifyEvery;
    this.#onOpen = onOpen;
  }

  /** net's onread callback: `nread` fresh bytes at the start of READ_BUFFER. Never pauses the socket. */
  readonly onRead = (nread: number): boolean => {
    if (this.#done) return true; // after our Close: the server's Close and late echoes are not part of the run
    const buf = READ_BUFFER;
    if (this.#head !== null) this.#onHeadBytes(buf.subarray(0, nread));
    // Fast path: exactly one whole unfragmented binary echo in this read, the steady state of ping-pong.
    else if (this.#pending === null && nread === this.#echoLength && buf[0] === 0x82 && buf[1] === this.#echoByte1) {
      this.#onMessage(buf.subarray(0, nread), nread - this.#expected.length);
    } else this.#onFrameBytes(buf.subarray(0, nread));
    return true;
  };

  send(): void {
    if (!this.#done) this.socket?.write(this.#frame);
  }

  /** Ends the timed run on this connection: a Close frame, then FIN. */
  finish(close: Buffer): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#head === null && this.socket !== undefined && !this.socket.destroyed) this.socket.end(close);
  }

  /** The socket failed or closed: during the handshake that fails the open, during the run it is a loss. */
  lose(reason: string): void {
    if (this.#onOpen !== undefined) {
      const cb = this.#onOpen;
      this.#onOpen = undefined;
      cb(new Error(reason));
    }
    if (this.#done) return;
    this.#done = true;
    if (this.#stats.running) this.#stats.lost++;
  }

  #onHeadBytes(chunk: Buffer): void {
    const head = Buffer.concat([this.#head ?? Buffer.alloc(0), chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) {
      this.#head = head;
      if (head.length > MAX_HANDSHAKE_BYTES) this.#fail('handshake response head too large');
      return;
    }
    this.#head = null;
    const text = head.subarray(0, end).toString('latin1');
    const statusLine = text.split('\r\n', 1)[0];
    if (!/^HTTP\/1\.1 101\b/.test(statusLine)) return this.#fail(`upgrade refused: ${statusLine.slice(0, 80)}`);
    const got = /\r\nsec-websocket-accept:[ \t]*([^\r\n]*?)[ \t]*(?:\r\n|$)/i.exec(text)?.[1];
    if (got !== this.#accept) return this.#fail('bad Sec-WebSocket-Accept');
    const cb = this.#onOpen;
    this.#onOpen = undefined;
    cb?.();
    if (head.length > end + 4) this.#onFrameBytes(Buffer.from(head.subarray(end + 4)));
  }

  #fail(reason: string): void {
    this.lose(reason);
    this.socket?.destroy();
  }

  #onFrameBytes(chunk: Buffer): void {
    let buf = this.#pending === null ? chunk : Buffer.concat([this.#pending, chunk]);
    this.#pending = null;
    // Each pass consumes one frame or stops, so the loop ends within buf.length passes.
    while (buf.length >= 2) {
      const b0 = buf[0];
      const b1 = buf[1];
      if ((b1 & 0x80) !== 0 || (b0 & 0x70) !== 0) return this.#protocolError(); // server frames are unmasked, no RSV
      let len = b1 & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) break;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) return this.#protocolError(); // larger than anything this client sends
      if (buf.length < at + len) break;
      const opcode = b0 & 0x0f;
      if (opcode === 0x1 || opcode === 0x2) {
        if ((b0 & 0x80) === 0) return this.#protocolError(); // an echo of a 32-byte message is never fragmented
        this.#onMessage(buf.subarray(0, at + len), at);
      } else if (opcode === 0x8) {
        return this.#protocolError(); // the server closed during the run
      } else if (opcode !== 0x9 && opcode !== 0xa) {
        return this.#protocolError();
      }
      buf = buf.subarray(at + len);
    }
    // A copy: `buf` may point into READ_BUFFER, which the next read overwrites.
    if (buf.length > 0) this.#pending = Buffer.from(buf);
  }

  #onMessage(frame: Buffer, payloadAt: number): void {
    const n = ++this.#received;
    if (n === 1 || n % this.#verifyEvery === 0) {
      const ok = frame.length - payloadAt === this.#expected.length && this.#expected.compare(frame, payloadAt) === 0;
      if (ok) this.#stats.verified++;
      else this.#stats.mismatches++;
    }
    if (this.#stats.running) {
      this.#stats.messages++;
      this.send();
    }
  }

  #protocolError(): void {
    this.#stats.protocolErrors++;
    this.lose('protocol error');
    this.socket?.destroy();
  }
}

/** Opens one connection and performs the upgrade; resolves with the open Conn or rejects with a reason. */
function connect(o: Options, index: number, stats: Stats): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
    const payload = Buffer.alloc(o.size);
    for (let i = 0; i < o.size; i++) payload[i] = (index * 31 + i * 7) & 0xff;
    if (o.size >= 4) payload.writeUInt32BE(index, 0); // distinct per connection: a crossed echo is a mismatch
    const timer = setTimeout(() => conn.lose('handshake timeout'), o.connectTimeoutMs);
    const conn = new Conn(payload, accept, stats, o.verifyEvery, (err) => {
      clearTimeout(timer);
      if (err === undefined) return resolve(conn);
      socket.destroy();
      reject(err);
    });
    // TLS sockets take no `onread`: their chunks are copied into READ_BUFFER, in slices of its size.
    const socket = o.tls
      ? tls.connect({ host: o.host, port: o.port, rejectUnauthorized: false, ...(net.isIP(o.authority ?? o.host) === 0 ? { servername: o.authority ?? o.host } : {}) })
      : net.connect({ host: o.host, port: o.port, noDelay: true, onread: { buffer: READ_BUFFER, callback: conn.onRead } });
    if (o.tls) {
      socket.setNoDelay(true);
      socket.on('data', (chunk: Buffer) => {
        for (let at = 0; at < chunk.length; at += READ_BUFFER.length) conn.onRead(chunk.copy(READ_BUFFER, 0, at, at + READ_BUFFER.length));
      });
    }
    conn.socket = socket;
    socket.on('error', (err: NodeJS.ErrnoException) => conn.lose(err.code ?? err.message));
    socket.on('close', () => conn.lose('closed'));
    socket.write(
      `GET ${o.path} HTTP/1.1\r\nHost: ${o.authority ?? `${o.host}:${o.port}`}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
  });
}

/** Connections opened at once at most (the rest wait for the batch before them). */
const CONNECT_BATCH = 500;

/**
 * --mode upgrade: `connections` loops, each opening a WebSocket (101 and Sec-WebSocket-Accept checked), closing it
 * with a Close frame and FIN, and opening the next, for the timed window. `messages` counts the handshakes.
 */
async function upgrades(o: Options, stats: Stats, waitFor: ((word: string, timeoutMs: number) => Promise<void>) | undefined, cpu0: NodeJS.CpuUsage): Promise<void> {
  const reasons = new Set<string>();
  let handshakes = 0;
  let failed = 0;
  let running = true;
  const close = closeFrame();
  emit({ event: 'ready', connected: o.connections });
  await waitFor?.('go', 30_000);
  emit({ event: 'start' });
  const t0 = performance.now();
  const loop = async (slot: number): Promise<void> => {
    // Bounded by the window: `running` turns false when it ends.
    for (let i = 0; running; i++) {
      try {
        const c = await connect(o, slot + i * o.connections, stats);
        if (running) handshakes++;
        c.finish(close);
      } catch (err) {
        if (!running) break;
        failed++;
        if (reasons.size < 5) reasons.add((err as Error).message);
      }
    }
  };
  const loops = Array.from({ length: o.connections }, (_, slot) => loop(slot));
  await new Promise((r) => setTimeout(r, o.durationMs));
  running = false;
  const elapsedMs = performance.now() - t0;
  emit({ event: 'stop' });
  await waitFor?.('done', 10_000);
  await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 5000))]);
  const cpu = process.cpuUsage(cpu0);
  const rate = elapsedMs > 0 ? (handshakes * 1000) / elapsedMs : 0;
  const result: WsLoadResult = {
    event: 'result', connections: o.connections, connected: o.connections, connectErrors: [...reasons], messages: handshakes,
    elapsedMs: Math.round(elapsedMs), msgPerSec: Math.round(rate), meanRttUs: rate > 0 ? Math.round((o.connections / rate) * 1e6) : 0,
    verified: handshakes, mismatches: 0, lost: failed, protocolErrors: stats.protocolErrors, cpuUserUs: cpu.user, cpuSystemUs: cpu.system,
  };
  emit(result);
}

function emit(obj: object): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** With --sync: waits for `word` on a stdin line, so the harness reads CPU counters at the exact edges of the window. */
function stdinWaiter(): (word: string, timeoutMs: number) => Promise<void> {
  const seen: string[] = [];
  let wake: (() => void) | undefined;
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (l) => {
    seen.push(l.trim());
    wake?.();
  });
  lines.on('close', () => {
    seen.push('<eof>');
    wake?.();
  });
  return async (word, timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    while (!seen.includes(word)) {
      if (seen.includes('<eof>')) throw new Error(`stdin closed while waiting for "${word}"`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no "${word}" on stdin within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  };
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const waitFor = o.sync ? stdinWaiter() : undefined;
  const stats = new Stats();
  const cpu0 = process.cpuUsage();
  const conns: Conn[] = [];
  const reasons = new Set<string>();
  if (o.mode === 'upgrade') return upgrades(o, stats, waitFor, cpu0);
  // In batches, so that thousands of connects never overflow a listen backlog at once.
  for (let i = 0; i < o.connections; i += CONNECT_BATCH) {
    const batch = Array.from({ length: Math.min(CONNECT_BATCH, o.connections - i) }, (_, k) => connect(o, i + k, stats));
    for (const s of await Promise.allSettled(batch)) {
      if (s.status === 'fulfilled') conns.push(s.value);
      else if (reasons.size < 5) reasons.add((s.reason as Error).message);
    }
  }
  let messages = 0;
  let elapsedMs = 0;
  if (o.mode === 'idle' && conns.length > 0) {
    // Each tunnel carries one message end to end before it counts as open and idle.
    for (const c of conns) c.send();
    const deadline = Date.now() + o.connectTimeoutMs;
    while (stats.verified + stats.mismatches < conns.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    emit({ event: 'ready', connected: conns.length, echoed: stats.verified + stats.mismatches });
    await waitFor?.('done', 3_600_000);
  } else if (conns.length > 0) {
    emit({ event: 'ready', connected: conns.length });
    await waitFor?.('go', 30_000);
    emit({ event: 'start' });
    stats.running = true;
    const t0 = performance.now();
    for (const c of conns) c.send();
    await new Promise((r) => setTimeout(r, o.durationMs));
    stats.running = false;
    elapsedMs = performance.now() - t0;
    messages = stats.messages;
    emit({ event: 'stop' });
    await waitFor?.('done', 10_000);
  }
  const close = closeFrame();
  for (const c of conns) c.finish(close);
  // Let the Close frames go out, bounded: whatever has not closed within 2 s is destroyed.
  const open = conns.map((c) => c.socket).filter((s): s is net.Socket => s !== undefined && !s.destroyed);
  await Promise.race([Promise.all(open.map((s) => new Promise((r) => s.once('close', r)))), new Promise((r) => setTimeout(r, 2000))]);
  for (const s of open) s.destroy();
  const cpu = process.cpuUsage(cpu0);
  const msgPerSec = elapsedMs > 0 ? (messages * 1000) / elapsedMs : 0;
  const result: WsLoadResult = {
    event: 'result',
    connections: o.connections,
    connected: conns.length,
    connectErrors: [...reasons],
    messages,
    elapsedMs: Math.round(elapsedMs),
    msgPerSec: Math.round(msgPerSec),
    meanRttUs: msgPerSec > 0 ? Math.round((conns.length / msgPerSec) * 1e6) : 0,
    verified: stats.verified,
    mismatches: stats.mismatches,
    lost: stats.lost,
    protocolErrors: stats.protocolErrors,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
  };
  emit(result);
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`ws-load: ${err.message}\n`);
    process.exit(2);
  },
);
