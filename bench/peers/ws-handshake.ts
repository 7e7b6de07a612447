// WebSocket handshake load client, run in its own process by the harness: one connection at a time, each a new
// TCP connection that sends the RFC 6455 upgrade, waits for the whole 101 head (its Sec-WebSocket-Accept checked),
// then closes; the time from connect() to the 101 head is one handshake's latency. Sequential on purpose: the
// figure is what one handshake costs and waits, not how many a machine can overlap. It reports; it never judges.
// --tls: WSS, each connection a full TLS handshake (no session offered; SNI localhost, certificate not checked), the
// time from connect() to the 101 then includes it.
//
// Usage: node dist/bench/peers/ws-handshake.js --port P [--host 127.0.0.1] [--path /ws] [--duration 10] [--tls]
// stdout: one JSON line {"completed", "elapsedS", "p50Us", "p90Us", "p99Us", "maxUs", "meanUs", "errors"}.
import net from 'node:net';
import tls from 'node:tls';
import { createHash, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { readArgs } from '../lib/args.js';
import { percentile } from '../lib/stats.js';
import { WS_GUID, WS_PATH } from '../lib/shape.js';

const USAGE = 'usage: node dist/bench/peers/ws-handshake.js --port P [--host H] [--path /ws] [--duration S] [--tls]';

/** One handshake: resolves with its latency in µs, or rejects with why it failed. */
function handshake(host: string, port: number, urlPath: string, secure: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const expected = createHash('sha1').update(key + WS_GUID).digest('base64');
    const t0 = performance.now();
    const socket = secure
      ? tls.connect({ host, port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }).setNoDelay(true)
      : net.connect({ host, port, noDelay: true });
    let head = '';
    const timer = setTimeout(() => done(new Error('timeout')), 10_000);
    function done(err?: Error): void {
      clearTimeout(timer);
      socket.destroy();
      if (err !== undefined) reject(err);
      else resolve((performance.now() - t0) * 1000);
    }
    socket.on('error', (err: NodeJS.ErrnoException) => done(new Error(err.code ?? err.message)));
    socket.on(secure ? 'secureConnect' : 'connect', () => socket.write(`GET ${urlPath} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (!head.startsWith('HTTP/1.1 101')) return done(new Error(`status ${head.slice(9, 12)}`));
      if (!new RegExp(`^sec-websocket-accept: *${expected.replace(/[+/=]/g, '\\$&')} *$`, 'im').test(head.slice(0, end))) return done(new Error('bad Sec-WebSocket-Accept'));
      done();
    });
    socket.on('close', () => done(new Error('closed before the 101')));
  });
}

async function main(): Promise<void> {
  const a = readArgs(process.argv.slice(2), { port: 'string', host: 'string', path: 'string', duration: 'string', tls: 'boolean' }, USAGE);
  const secure = a.has('tls');
  const port = Math.round(a.num('port', 0, 1, 65535));
  const host = a.str('host', '127.0.0.1');
  const urlPath = a.str('path', WS_PATH);
  const durationMs = a.num('duration', 10, 0.1, 3600) * 1000;
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  const t0 = performance.now();
  while (performance.now() - t0 < durationMs) {
    try {
      latencies.push(await handshake(host, port, urlPath, secure));
    } catch (err) {
      const why = (err as Error).message;
      errors[why] = (errors[why] ?? 0) + 1;
      if (Object.values(errors).reduce((x, y) => x + y, 0) > 100) break;
    }
  }
  const elapsedS = (performance.now() - t0) / 1000;
  latencies.sort((x, y) => x - y);
  const mean = latencies.length === 0 ? 0 : latencies.reduce((x, y) => x + y, 0) / latencies.length;
  const round = (v: number) => Math.round(v);
  process.stdout.write(
    `${JSON.stringify({
      completed: latencies.length,
      elapsedS,
      p50Us: round(percentile(latencies, 50)),
      p90Us: round(percentile(latencies, 90)),
      p99Us: round(percentile(latencies, 99)),
      maxUs: round(latencies.at(-1) ?? 0),
      meanUs: round(mean),
      errors,
    })}\n`,
  );
}

main().catch((err: Error) => {
  process.stderr.write(`ws-handshake: ${err.message}\n`);
  process.exit(1);
});
