// An ACME server that lies, for the failure paths Pebble cannot show: over HTTPS (the test certificate) it either
// never answers, or runs an RFC 8555 order through with every authorization already valid (no challenge) and
// hands out the certificate the test chose, whatever the CSR said, or offers a TLS-ALPN-01 or HTTP-01 challenge for
// a name and never validates it (the challenge stays pending as long as the test needs). For HTTP-01 it fetches
// the token from the address the test names at the moment it is told to validate, as Pebble does with its
// validation sleeps off, and keeps what it got. It checks no signature: it is a liar, not a CA.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { TEST_CERT, TEST_KEY } from './portico.js';

export interface FakeAcme {
  /** The directory URL (https://127.0.0.1:PORT/dir); its certificate is TEST_CERT, for `directory_ca`. */
  readonly directory: string;
  /** Method and path of every request, in order. */
  readonly requests: string[];
  /** The token of the pending challenge. */
  readonly token: string;
  /** HTTP-01: what the check made when the client said "validate now" (status and body), one per such request. */
  readonly validations: Array<{ status: number; body: string }>;
  /** HTTP-01: where the CA fetches the token (`http://127.0.0.1:PORT`) when told to validate; no check until set. */
  checkAt(base: string): void;
  /** Answers the held authorization request (`holdAuthz`). */
  release(): void;
}

/** One challenge for `name`, accepted and left processing for good. */
export interface PendingChallenge {
  readonly pending: string;
  readonly type: 'tls-alpn-01' | 'http-01';
  /** The authorization is answered only after `release()`. */
  readonly holdAuthz?: boolean;
}

const TOKEN = 'fake-token-0123456789abcdefghijklmnop';

/** One GET of the HTTP-01 token, bounded by 5 s (a refused or timed-out fetch is status 0). */
function fetchToken(base: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.get(`${base}/.well-known/acme-challenge/${TOKEN}`, { timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
  });
}

/** The payload of a flattened JWS body (RFC 7515 §7.2.2), decoded: '' for a POST-as-GET (RFC 8555 §6.3). */
function jwsPayload(body: string): string {
  try {
    const jws = JSON.parse(body) as { payload?: unknown };
    return typeof jws.payload === 'string' ? Buffer.from(jws.payload, 'base64url').toString() : '';
  } catch {
    return '';
  }
}

/**
 * `answer`: 'hang' (accepts, never answers), the PEM handed out as the issued certificate, or
 * `{ pendingTlsAlpn: name }` (a tls-alpn-01 challenge), or a PendingChallenge.
 */
export async function startFakeAcme(t: TestContext, answer: 'hang' | string | { pendingTlsAlpn: string } | PendingChallenge): Promise<FakeAcme> {
  const spec: PendingChallenge | undefined =
    typeof answer !== 'object' ? undefined : 'pendingTlsAlpn' in answer ? { pending: answer.pendingTlsAlpn, type: 'tls-alpn-01' } : answer;
  const pending = spec?.pending;
  const validations: Array<{ status: number; body: string }> = [];
  let checkBase: string | undefined;
  let release = (): void => {};
  const authzGate = spec?.holdAuthz === true ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve();
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  let base = '';
  let nonce = 0;
  const server = https.createServer({ cert: readFileSync(TEST_CERT), key: readFileSync(TEST_KEY) }, (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (answer === 'hang') return; // the socket stays open until the test ends
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    const challenge = (status: string) => ({ type: spec?.type ?? 'tls-alpn-01', url: `${base}/chall/1`, token: TOKEN, status });
    req.on('end', async () => {
      const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        const text = typeof body === 'string' ? body : JSON.stringify(body);
        const type = typeof body === 'string' ? 'application/pem-certificate-chain' : 'application/json';
        res.writeHead(status, { 'Content-Type': type, 'Replay-Nonce': `n${++nonce}`, ...headers }).end(req.method === 'HEAD' ? undefined : text);
      };
      switch (req.url) {
        case '/dir':
          return send(200, { newNonce: `${base}/nonce`, newAccount: `${base}/account`, newOrder: `${base}/order` });
        case '/nonce':
          return send(200, '');
        case '/account':
          return send(201, { status: 'valid' }, { Location: `${base}/acct/1` });
        case '/order':
          return send(201, { status: 'pending', authorizations: [`${base}/authz/1`], finalize: `${base}/finalize/1` }, { Location: `${base}/order/1` });
        case '/authz/1':
          if (pending === undefined) return send(200, { status: 'valid', identifier: { type: 'dns', value: 'fake' }, challenges: [] });
          await authzGate;
          return send(200, { status: 'pending', identifier: { type: 'dns', value: pending }, challenges: [challenge('pending')] });
        case '/chall/1':
          // a POST is the client's "validate now" (RFC 8555 §7.5.1); a POST-as-GET asks for the state
          if (checkBase !== undefined && jwsPayload(body) !== '') validations.push(await fetchToken(checkBase));
          return send(200, challenge('processing'));
        case '/finalize/1':
        case '/order/1':
          return send(200, { status: 'valid', certificate: `${base}/cert/1` });
        case '/cert/1':
          return send(200, typeof answer === 'string' ? answer : '');
        default:
          return send(404, { type: 'urn:ietf:params:acme:error:malformed', detail: 'no such resource' });
      }
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { directory: `${base}/dir`, requests, token: TOKEN, validations, checkAt: (b) => void (checkBase = b), release: () => release() };
}
