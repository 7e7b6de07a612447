// Captures the raw first flight a real TLS client sends: a plain TCP server on loopback (no TLS) records the
// bytes until the ClientHello parser stops asking for more, then drops the connection. Used by the
// ClientHello unit, fuzz and micro-benchmark files so they all start from bytes real clients produce.
import net from 'node:net';
import tls from 'node:tls';
import { parseClientHello } from '../../src/wire/client-hello.js';

/** Upper bound on the bytes recorded and on the wait for them. */
const CAPTURE_MAX_BYTES = 64 * 1024;
const CAPTURE_TIMEOUT_MS = 10_000;

export interface Capture {
  port: number;
  /** Resolves with every byte received up to the end of the ClientHello (or the error / close). */
  bytes: Promise<Buffer>;
  close(): void;
}

/** Listens on 127.0.0.1:0 for one connection; the caller then points a client at `port`. */
export async function startCapture(): Promise<Capture> {
  const sockets = new Set<net.Socket>();
  let resolve!: (b: Buffer) => void;
  let reject!: (e: Error) => void;
  const bytes = new Promise<Buffer>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const chunks: Buffer[] = [];
    let total = 0;
    const finish = (): void => {
      resolve(Buffer.concat(chunks));
      socket.destroy();
    };
    socket.on('error', () => finish());
    socket.on('close', () => finish());
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      total += d.length;
      if (total >= CAPTURE_MAX_BYTES || parseClientHello(Buffer.concat(chunks), CAPTURE_MAX_BYTES).kind !== 'more') finish();
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const timer = setTimeout(() => reject(new Error('no ClientHello captured in time')), CAPTURE_TIMEOUT_MS);
  timer.unref();
  void bytes.then(
    () => clearTimeout(timer),
    () => clearTimeout(timer),
  );
  return {
    port: (server.address() as net.AddressInfo).port,
    bytes,
    close: (): void => {
      clearTimeout(timer);
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** The ClientHello Node's own TLS client sends with these options (connecting to a capture server). */
export async function captureNodeHello(opts: Omit<tls.ConnectionOptions, 'host' | 'port'>): Promise<Buffer> {
  const cap = await startCapture();
  const client = tls.connect({ ...opts, host: '127.0.0.1', port: cap.port });
  client.on('error', () => {}); // the capture server hangs up mid-handshake by design
  try {
    return await cap.bytes;
  } finally {
    client.destroy();
    cap.close();
  }
}
