// Short-lived self-signed certificates made by a test for itself (selfsigned): a server certificate for a peer
// such as Pebble, a client certificate for mutual TLS, a certificate for a given key. EC P-256 unless a key is given.
import { generate, type CertificateExtension } from 'selfsigned';

export interface SelfSigned {
  readonly cert: string;
  readonly key: string;
}

export interface CertOptions {
  /** Validity (default: from a day ago to a day ahead). */
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** The key pair to certify (PEM); default a new one. */
  readonly keyPair?: { readonly privateKey: string; readonly publicKey: string };
}

/** A self-signed CA-capable certificate for `commonName`, for TLS servers (`names` as DNS and IP SANs) or clients. */
export async function selfSigned(commonName: string, use: { server: readonly string[] } | 'client', opts: CertOptions = {}): Promise<SelfSigned> {
  const now = Date.now();
  const usage: CertificateExtension = use === 'client' ? { name: 'extKeyUsage', clientAuth: true } : { name: 'extKeyUsage', serverAuth: true };
  const sans: CertificateExtension[] =
    use === 'client'
      ? []
      : [{ name: 'subjectAltName', altNames: use.server.map((n) => (/^[\d.]+$|:/.test(n) ? { type: 7, ip: n } : { type: 2, value: n })) }];
  const pems = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: opts.notBefore ?? new Date(now - 86_400_000),
    notAfterDate: opts.notAfter ?? new Date(now + 86_400_000),
    ...(opts.keyPair !== undefined ? { keyPair: { ...opts.keyPair } } : {}),
    extensions: [{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', digitalSignature: true, keyCertSign: true, critical: true }, usage, ...sans],
  });
  return { cert: pems.cert, key: pems.private };
}
