// An ACME server that lies, for the failure paths Pebble cannot show: over HTTPS (the test certificate) it either
// never answers, or runs an RFC 8555 order through with every authorization already valid (no challenge) and
// hands out the certificate the test chose, whatever the CSR said, or offers a TLS-ALPN-01 challenge for a name
// and never validates it (the challenge stays pending as long as the test needs). It checks no signature: it is
// a liar, not a CA.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { TEST_CERT, TEST_KEY } from './portico.js';

export interface FakeAcme {
  /** The directory URL (https://127.0.0.1:PORT/dir); its certificate is TEST_CERT, for `directory_ca`. */
  readonly directory: string;
  /** Method and path of every request, in order. */
  readonly requests: string[];
}

/**
 * `answer`: 'hang' (accepts, never answers), the PEM handed out as the issued certificate, or
 * `{ pendingTlsAlpn: name }`: one tls-alpn-01 challenge for `name`, accepted and left processing for good.
 */
export async function startFakeAcme(t: TestContext, answer: 'hang' | string | { pendingTlsAlpn: string }): Promise<FakeAcme> {
  const pending = typeof answer === 'object' ? answer.pendingTlsAlpn : undefined;
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  let base = '';
  let nonce = 0;
  const server = https.createServer({ cert: readFileSync(TEST_CERT), key: readFileSync(TEST_KEY) }, (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (answer === 'hang') return; // the socket stays open until the test ends
    req.resume();
    const challenge = (status: string) => ({ type: 'tls-alpn-01', url: `${base}/chall/1`, token: 'fake-token-0123456789abcdefghijklmnop', status });
    req.on('end', () => {
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
          if (pending !== undefined) return send(200, { status: 'pending', identifier: { type: 'dns', value: pending }, challenges: [challenge('pending')] });
          return send(200, { status: 'valid', identifier: { type: 'dns', value: 'fake' }, challenges: [] });
        case '/chall/1':
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
  return { directory: `${base}/dir`, requests };
}
