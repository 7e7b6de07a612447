// TLS for listeners: every certificate is loaded once into a SecureContext (and, for native termination, into
// the addon's OpenSSL contexts) and chosen per connection by SNI (exact name, then a `*.` wildcard, then the
// first certificate as default), or by a pending TLS-ALPN-01 challenge (acme-alpn.ts); also makes the self-signed pair
// that `npm start` needs. It accepts no sockets and parses no HTTP: worker/accept-paths.ts feeds accepted sockets to the
// tls.Server made here and hands each handshaken socket to the data path.
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { isIP, type Socket } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { ACME_TLS_ALPN } from '../config/acme-alpn-config.js';
import type { Config, ListenerConfig } from '../config/schema.js';
import { NativeTlsServer, type NativeCertificate } from '../native/tls.js';
import { alpnChallenges } from './acme-alpn.js';

export type TlsConfig = NonNullable<ListenerConfig['tls']>;
export type CertificateConfig = TlsConfig['certificates'][number];

/** Process-wide TLS settings the primary hands every worker so they behave as one server. */
export interface TlsSettings {
  /**
   * 48 bytes of session ticket keys shared by all workers: a client resumes its session whichever worker
   * accepts its next connection. Undefined: each process uses its own random keys.
   */
  ticketKeys?: Buffer;
}

export interface LoadedCertificate {
  readonly certFile: string;
  readonly keyFile: string;
  /** Lower-cased SNI names it serves: exact names and `*.suffix` wildcards. */
  readonly names: readonly string[];
  readonly notAfter: Date;
  readonly context: tls.SecureContext;
}

/** ALPN: Portico speaks HTTP/1.1 to clients (WebSocket upgrades need it); h2 is never offered. */
const ALPN = ['http/1.1'];

/**
 * The names a certificate serves: the DNS names of its subjectAltName, else its subject CN (clients that
 * follow RFC 6125 ignore the CN when a SAN exists, so a CN is used only without one). IP SANs are left out:
 * SNI never carries an IP address (RFC 6066 §3).
 */
export function certificateNames(pem: string | Buffer): string[] {
  const x509 = new X509Certificate(pem);
  const san = x509.subjectAltName;
  const names: string[] = [];
  if (san !== undefined) {
    for (const entry of splitSan(san)) {
      if (!entry.startsWith('DNS:')) continue;
      let value = entry.slice(4);
      // Node quotes names holding separators or non-ASCII as JSON strings (CVE-2021-44532 hardening).
      if (value.startsWith('"')) {
        try {
          value = JSON.parse(value) as string;
        } catch {
          continue;
        }
      }
      names.push(normalizeName(value));
    }
  }
  if (names.length === 0) {
    const cn = /^CN=(.+)$/m.exec(x509.subject);
    if (cn !== null) names.push(normalizeName(cn[1]));
  }
  return names;
}

/** Splits "DNS:a, DNS:\"b, c\", IP Address:1.2.3.4" on the commas outside quotes. */
function splitSan(san: string): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < san.length; i++) {
    const c = san[i];
    if (c === '\\' && quoted) i++;
    else if (c === '"') quoted = !quoted;
    else if (c === ',' && !quoted) {
      out.push(san.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(san.slice(start).trim());
  return out;
}

/** Lower case, no trailing dot: "Example.COM." and "example.com" are one name. */
function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read TLS ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/**
 * Options every context of a listener shares. honorCipherOrder off: the client's order picks among Node's default
 * ciphers, as on the native path (tls.cc NewContext) and nginx's default.
 */
function contextOptions(tlsConfig: TlsConfig, settings: TlsSettings): tls.SecureContextOptions {
  const opts: tls.SecureContextOptions = { minVersion: tlsConfig.min_version, honorCipherOrder: false };
  if (settings.ticketKeys !== undefined) opts.ticketKeys = settings.ticketKeys;
  return opts;
}

/** Reads and checks every certificate of a listener once; throws with the file name on any problem. */
export function loadCertificates(tlsConfig: TlsConfig, settings: TlsSettings = {}): LoadedCertificate[] {
  const shared = contextOptions(tlsConfig, settings);
  return tlsConfig.certificates.map((c) => {
    const cert = readPem(c.cert, 'certificate');
    const key = readPem(c.key, 'key');
    let context: tls.SecureContext;
    let notAfter: Date;
    let names: string[];
    try {
      notAfter = new Date(new X509Certificate(cert).validTo);
      names = c.hosts !== undefined && c.hosts.length > 0 ? c.hosts.map(normalizeName) : certificateNames(cert);
      context = tls.createSecureContext({ ...shared, cert, key });
    } catch (err) {
      throw new Error(`cannot use TLS certificate ${c.cert} with key ${c.key}: ${(err as Error).message}`, { cause: err });
    }
    return { certFile: c.cert, keyFile: c.key, names, notAfter, context };
  });
}

/**
 * SNI name -> SecureContext, built once. Exact names first, then a wildcard covering exactly one leftmost
 * label (RFC 6125 §6.4.3: "*.example.com" matches "a.example.com", not "example.com" nor "a.b.example.com"),
 * then the first certificate. When two certificates claim one name, the earlier in the config wins.
 */
export class SniSelector {
  readonly default: LoadedCertificate;
  #exact = new Map<string, LoadedCertificate>();
  #wildcard = new Map<string, LoadedCertificate>();

  constructor(certs: readonly LoadedCertificate[]) {
    if (certs.length === 0) throw new Error('a TLS listener needs at least one certificate');
    this.default = certs[0];
    for (const cert of certs) {
      for (const name of cert.names) {
        const map = name.startsWith('*.') ? this.#wildcard : this.#exact;
        const key = name.startsWith('*.') ? name.slice(2) : name;
        if (!map.has(key)) map.set(key, cert);
      }
    }
  }

  select(servername: string): LoadedCertificate {
    const name = normalizeName(servername);
    const exact = this.#exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const wild = this.#wildcard.get(name.slice(dot + 1));
      if (wild !== undefined) return wild;
    }
    return this.default;
  }
}

export interface TlsServerOptions extends TlsSettings {
  /** Keep the writable side open when the client half-closes (see accept/listener.ts). */
  allowHalfOpen: boolean;
  /** The config answers TLS-ALPN-01 (config/acme.ts answersTlsAlpn): serve challenge certificates to acme-tls/1. */
  acmeAlpn?: boolean;
}

/** Handshakes whose ALPN callback chose a TLS-ALPN-01 challenge: their SNI callback serves its certificate. */
const challenged = new WeakSet<tls.TLSSocket>();
/** Handshakes whose certificate was chosen already (TLS 1.2: before ALPN): too late for a challenge. */
const certChosen = new WeakSet<tls.TLSSocket>();

/**
 * SNI and ALPN for a listener that answers TLS-ALPN-01 (RFC 8737 §3) on Node's TLS. Node calls both as methods
 * of the TLSSocket (_tls_wrap.js: `socket[kALPNCallback](...)`, `owner._SNICallback(...)`), which is how the
 * ALPN choice reaches the certificate choice. OpenSSL runs the ALPN callback before the certificate one in
 * TLS 1.3 only, so a validation here needs TLS 1.3 (every CA offers it; an acme-tls/1 TLS 1.2 handshake fails
 * rather than get a normal certificate). The challenge certificate needs TLS 1.3 anyway (primary/acme.ts).
 */
function acmeAlpnCallbacks(selector: SniSelector): Pick<tls.TlsOptions, 'SNICallback' | 'ALPNCallback'> {
  return {
    ALPNCallback(this: tls.TLSSocket, { servername, protocols }: { servername: string; protocols: string[] }): string | undefined {
      // TLS 1.2 chose the certificate first: never acme-tls/1 over a normal certificate (RFC 8737 §3), it fails below
      if (alpnChallenges.size > 0 && protocols.includes(ACME_TLS_ALPN) && !certChosen.has(this) && alpnChallenges.get(servername) !== undefined) {
        challenged.add(this);
        return ACME_TLS_ALPN;
      }
      // as ALPNProtocols: ['http/1.1'] answers: http/1.1, else no_application_protocol (RFC 7301 §3.2)
      return protocols.includes(ALPN[0]) ? ALPN[0] : undefined;
    },
    SNICallback(this: tls.TLSSocket, servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void {
      certChosen.add(this);
      const challenge = challenged.has(this) ? alpnChallenges.get(servername) : undefined;
      cb(null, challenge ?? selector.select(servername).context);
    },
  };
}

/** tls.Server options for a listener: TLS 1.2+ (or 1.3), SNI selection, ALPN http/1.1, handshake timeout. */
export function createTlsOptions(tlsConfig: TlsConfig, opts: TlsServerOptions, certs = loadCertificates(tlsConfig, opts)): tls.TlsOptions {
  const selector = new SniSelector(certs);
  const first = tlsConfig.certificates[0];
  return {
    ...contextOptions(tlsConfig, opts),
    // The server's own context (used when the client sends no SNI) is the default certificate.
    cert: readPem(first.cert, 'certificate'),
    key: readPem(first.key, 'key'),
    ...(opts.acmeAlpn === true ? acmeAlpnCallbacks(selector) : { SNICallback: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => cb(null, selector.select(servername).context), ALPNProtocols: ALPN }),
    // 0 ("off") gets Node's own bound (120 s): an unbounded handshake would be a free slot for slowloris.
    handshakeTimeout: tlsConfig.handshake_timeout,
    allowHalfOpen: opts.allowHalfOpen,
  };
}

/**
 * A tls.Server that never listens: feed it accepted sockets with `server.emit('connection', socket)`.
 * Handshake failures and timeouts arrive as 'tlsClientError'; the socket is destroyed here first, because
 * Node only reports a handshake timeout and would leave the connection open for good.
 */
export function createTlsServer(tlsConfig: TlsConfig, opts: TlsServerOptions, onSecureConnection: (socket: tls.TLSSocket) => void): tls.Server {
  const server = tls.createServer(createTlsOptions(tlsConfig, opts), (socket) => {
    // half-open from here on, as the listener says (a client's FIN after its request still gets the answer)
    socket.allowHalfOpen = opts.allowHalfOpen;
    // TLS 1.2 client-initiated renegotiation costs the server a handshake per request and serves a proxy
    // nothing (TLS 1.3 has none): refused outright rather than rate-limited.
    socket.disableRenegotiation();
    // a TLS-ALPN-01 validation carries nothing after its handshake (RFC 8737 §3): closed, never routed
    if (socket.alpnProtocol === ACME_TLS_ALPN) return void socket.end();
    onSecureConnection(socket);
  });
  server.prependListener('tlsClientError', (_err: Error, socket: tls.TLSSocket) => socket.destroy());
  // During the handshake a FIN from the client ends the connection: the TLSSocket takes allowHalfOpen from the
  // socket it wraps, and half-open it would wait for the rest of a ClientHello that cannot come until the
  // handshake timeout. The secure-connection callback above makes it half-open again.
  server.prependListener('connection', (raw: Socket) => void (raw.allowHalfOpen = false));
  return server;
}

/**
 * The listener's certificates as the addon's OpenSSL contexts (native TLS termination), selected by SNI with
 * SniSelector's rules (the same names: `hosts`, else the certificate's). Throws with the file on any problem.
 */
export function createNativeTlsServer(tlsConfig: TlsConfig, acmeAlpn = false): NativeTlsServer {
  const certs: NativeCertificate[] = tlsConfig.certificates.map((c) => {
    const cert = readPem(c.cert, 'certificate');
    const key = readPem(c.key, 'key');
    return { cert, key, names: c.hosts !== undefined && c.hosts.length > 0 ? c.hosts.map(normalizeName) : certificateNames(cert) };
  });
  try {
    return new NativeTlsServer(certs, tlsConfig.min_version, acmeAlpn);
  } catch (err) {
    throw new Error(`cannot use TLS certificates natively: ${(err as Error).message}`, { cause: err });
  }
}

/** Default names of a generated certificate when the config lists no `hosts`. */
export const SELF_SIGNED_DEFAULT_HOSTS = ['localhost', '127.0.0.1', '::1'] as const;
const DAY_MS = 86_400_000;

/**
 * Makes a self-signed certificate (EC P-256, SHA-256, valid one year) for `hosts` (DNS names and IP
 * addresses, all in its subjectAltName) when neither file exists. Returns false when both already exist;
 * throws when only one does (a pair is never half-overwritten). The key is written with mode 0600; each
 * file is written beside its target and renamed, so a crash never leaves a truncated PEM.
 */
export async function ensureSelfSigned(certPath: string, keyPath: string, hosts: readonly string[] = []): Promise<boolean> {
  const haveCert = existsSync(certPath);
  const haveKey = existsSync(keyPath);
  if (haveCert && haveKey) return false;
  if (haveCert || haveKey) {
    const [have, missing] = haveCert ? [certPath, keyPath] : [keyPath, certPath];
    throw new Error(`self_signed: ${have} exists but ${missing} does not; provide both, or remove ${have} to generate a new pair`);
  }
  const names = hosts.length > 0 ? hosts : SELF_SIGNED_DEFAULT_HOSTS;
  const altNames = names.map((h) => (isIP(h) !== 0 ? { type: 7 as const, ip: h } : { type: 2 as const, value: h }));
  const commonName = names.find((h) => isIP(h) === 0) ?? names[0];
  const now = Date.now();
  // loaded here, not at start: selfsigned (node-forge) costs a process ~16 MiB that only this needs
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    // A day of slack for clients whose clock lags.
    notBeforeDate: new Date(now - DAY_MS),
    notAfterDate: new Date(now + 365 * DAY_MS),
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  await writeAtomically(keyPath, pems.private, 0o600);
  await writeAtomically(certPath, pems.cert, 0o644);
  return true;
}

async function writeAtomically(file: string, data: string, mode: number): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new Error(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/** Before workers start: generates every missing `self_signed` pair; returns the certificate files written. */
export async function ensureSelfSignedCertificates(config: Config): Promise<string[]> {
  const written: string[] = [];
  for (const listener of config.listeners) {
    for (const c of listener.tls?.certificates ?? []) {
      if (c.self_signed && (await ensureSelfSigned(c.cert, c.key, c.hosts ?? []))) written.push(c.cert);
    }
  }
  return written;
}
