// TLS to the targets of one upstream (`upstreams.NAME.tls`): one client context per pool, built from the config
// once, and the last session ticket of each target kept so that the next connection resumes instead of paying a
// full handshake (bounded: one entry per target, at most MAX_SESSIONS). upstream-connect.ts and the health
// probes wrap their TCP socket with `wrap`; nothing here opens a socket.
import { readFileSync } from 'node:fs';
import { isIP, type Socket } from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';
import type { UpstreamTlsConfig } from '../config/upstream-tls.js';

const MAX_SESSIONS = 4096;

export class UpstreamTls {
  readonly config: UpstreamTlsConfig;
  readonly #context: SecureContext;
  /** Target id -> its last session (insertion order = age, for the bound). */
  readonly #sessions = new Map<string, Buffer>();

  constructor(config: UpstreamTlsConfig, previous?: UpstreamTls) {
    this.config = config;
    if (previous !== undefined && JSON.stringify(previous.config) === JSON.stringify(config)) for (const [k, v] of previous.#sessions) this.#sessions.set(k, v);
    // paths were checked and made absolute by config/load.ts; a file changed since fails here, at pool build
    this.#context = tls.createSecureContext({
      ca: config.ca === undefined ? undefined : readFileSync(config.ca),
      cert: config.cert === undefined ? undefined : readFileSync(config.cert),
      key: config.key === undefined ? undefined : readFileSync(config.key),
      minVersion: config.min_version,
    });
  }

  /**
   * Starts TLS over `socket` (connected or still connecting: the handshake begins once it connects, after any
   * bytes already written to it, such as a PROXY header). `secureConnect` on the result means usable.
   */
  wrap(socket: Socket, target: { readonly id: string; readonly host: string }): TLSSocket {
    const name = this.config.sni ?? (isIP(target.host) === 0 ? target.host : undefined);
    const session = this.config.session_reuse ? this.#sessions.get(target.id) : undefined;
    const secure = tls.connect({
      socket,
      secureContext: this.#context,
      servername: name,
      // identity is checked against the SNI name, else the target's address (an IP SAN)
      host: name ?? target.host,
      rejectUnauthorized: this.config.verify,
      ALPNProtocols: ['http/1.1'],
      session,
    });
    if (this.config.session_reuse) {
      secure.on('session', (s: Buffer) => {
        this.#sessions.delete(target.id);
        if (this.#sessions.size >= MAX_SESSIONS) this.#sessions.delete(this.#sessions.keys().next().value as string);
        this.#sessions.set(target.id, s);
      });
    }
    return secure;
  }
}
