// Real clients for e2e tests, each bounded in time: curl, Node's https/http with the test certificate, `ws`,
// and the Python `websockets` script in test/fixtures/clients. They report what they saw; tests assert.
import { execFile, spawnSync } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { WebSocket, type ClientOptions } from 'ws';
import { FIXTURES } from './paths.js';
import { hasCommand } from './peers.js';
import { TEST_CERT } from './portico.js';
import { testCaCert } from './wire.js';

export const PYTHON = '/usr/bin/python3';
export const PYTHON_WSS_CLIENT = path.join(FIXTURES, 'clients', 'wss-echo.py');

export function hasCurl(): boolean {
  return hasCommand('curl', ['--version']);
}

export function hasPythonWebsockets(): boolean {
  return spawnSync(PYTHON, ['-c', 'import websockets'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command with a hard time limit; never rejects (the result says how it went). */
export function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * curl against Portico: https URLs use host `localhost` resolved to 127.0.0.1 and trust only the test
 * certificate. `-sS` quiet with errors, `-i` includes the response head in stdout.
 */
export function curl(url: string, extra: string[] = []): Promise<ExecResult> {
  const u = new URL(url);
  const args = ['-sS', '-i', '--max-time', '20', '--http1.1'];
  if (u.protocol === 'https:') args.push('--cacert', TEST_CERT, '--resolve', `${u.hostname}:${u.port}:127.0.0.1`);
  return run('curl', [...args, ...extra, url], 30_000);
}

/** Splits `curl -i` output into status, lower-cased headers and body (skips interim 1xx heads). */
export function parseCurlOutput(out: string): { status: number; headers: Record<string, string>; body: string } {
  let rest = out;
  for (let i = 0; i < 5; i++) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) throw new Error(`no response head in curl output: ${JSON.stringify(out.slice(0, 300))}`);
    const lines = rest.slice(0, end).split('\r\n');
    const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(lines[0])?.[1]);
    rest = rest.slice(end + 4);
    if (status >= 100 && status < 200) continue;
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const c = line.indexOf(':');
      headers[line.slice(0, c).toLowerCase()] = line.slice(c + 1).trim();
    }
    return { status, headers, body: rest };
  }
  throw new Error('too many interim responses in curl output');
}

export interface SimpleResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request with Node's client to Portico (https: SNI localhost, the test CA or `ca`); the body is read whole. A plain-HTTP `agent` keeps connections alive (default: none, `Connection: close`). */
export function request(url: string, opts: { method?: string; headers?: http.OutgoingHttpHeaders; body?: Buffer | string; timeoutMs?: number; agent?: http.Agent; ca?: Buffer } = {}): Promise<SimpleResponse> {
  const u = new URL(url);
  const { body, timeoutMs = 20_000, method = 'GET', headers = {}, agent = false, ca = testCaCert() } = opts;
  // a name (localhost, a test host) is reached at 127.0.0.1 with its Host header; an address literal at itself
  const literal = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const common = { host: isIP(literal) === 0 ? '127.0.0.1' : literal, port: u.port, path: `${u.pathname}${u.search}`, method, agent, headers: { host: u.host, ...headers } };
  return new Promise((resolve, reject) => {
    const onResponse = (res: http.IncomingMessage): void => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    };
    const req = u.protocol === 'https:' ? https.request({ ...common, servername: 'localhost', ca }, onResponse) : http.request(common, onResponse);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no response within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Opens a `ws` client (wss: SNI localhost, test CA). Rejects with the status when the server answered without 101. */
export function openWebSocket(t: TestContext, url: string, opts: ClientOptions = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ca: testCaCert(), handshakeTimeout: 10_000, ...opts });
    t.after(() => ws.terminate());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => reject(new UnexpectedResponse(res.statusCode ?? 0, Buffer.concat(parts).toString())));
      res.on('error', reject);
    });
    ws.once('open', () => {
      ws.off('error', reject);
      resolve(ws);
    });
  });
}

export class UnexpectedResponse extends Error {
  readonly status: number;
  readonly body: string;
  constructor(status: number, body: string) {
    super(`server answered ${status} instead of 101`);
    this.status = status;
    this.body = body;
  }
}

/** Sends `data` and resolves with the next message (as text for text frames), bounded in time. */
export function echo(ws: WebSocket, data: string | Buffer, timeoutMs = 10_000): Promise<string | Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no echo within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (msg: Buffer, isBinary: boolean): void => {
      cleanup();
      resolve(isBinary ? msg : msg.toString());
    };
    const onClose = (code: number): void => {
      cleanup();
      reject(new Error(`WebSocket closed (${code}) while waiting for an echo`));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
    };
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.send(data, { binary: typeof data !== 'string' });
  });
}

/** Resolves with the close code once the WebSocket is closed; rejects after `timeoutMs`. */
export function closed(ws: WebSocket, timeoutMs = 10_000): Promise<number> {
  if (ws.readyState === ws.CLOSED) return Promise.resolve(1006);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`WebSocket still open after ${timeoutMs} ms`)), timeoutMs);
    ws.once('close', (code: number) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}
