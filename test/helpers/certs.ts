// Short-lived self-signed certificates made by a test for itself (selfsigned): a server certificate for a peer
// such as Pebble, a client certificate for mutual TLS. Valid from a day ago to a day ahead, EC P-256.
import { generate, type CertificateExtension } from 'selfsigned';

export interface SelfSigned {
  readonly cert: string;
  readonly key: string;
}

/** A self-signed CA-capable certificate for `commonName`, for TLS servers (`names` as DNS and IP SANs) or clients. */
export async function selfSigned(commonName: string, use: { server: readonly string[] } | 'client'): Promise<SelfSigned> {
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
    notBeforeDate: new Date(now - 86_400_000),
    notAfterDate: new Date(now + 86_400_000),
    extensions: [{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', digitalSignature: true, keyCertSign: true, critical: true }, usage, ...sans],
  });
  return { cert: pems.cert, key: pems.private };
}
