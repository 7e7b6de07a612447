// What `check` says about a certificate/key pair before any handshake needs it: the wrong kind of PEM in a file
// (a key where the certificate goes, a CSR, DER bytes, an encrypted key), a key of another certificate, and
// the dates (expired, not yet valid) as warnings. Reads the text it is given; the files are load.ts's.
import { X509Certificate, createPrivateKey } from 'node:crypto';

/** The PEM block labels (RFC 7468) of a file, in order: "CERTIFICATE", "PRIVATE KEY", ... */
function pemLabels(text: string): string[] {
  return [...text.matchAll(/^-----BEGIN ([A-Z0-9 ]+)-----\s*$/gm)].map((m) => m[1]);
}

const KEY_LABEL = /(^|\s)PRIVATE KEY$/;

/** Names what a file holds when it is not what its field wants, or undefined when it looks right. */
function wrongKind(text: string, want: 'cert' | 'key'): string | undefined {
  const labels = pemLabels(text);
  if (labels.length === 0) {
    return want === 'cert'
      ? 'not a PEM certificate (no "-----BEGIN CERTIFICATE-----" line); if it is DER, convert it with `openssl x509 -inform der -in FILE -out FILE.pem`'
      : 'not a PEM private key (no "-----BEGIN PRIVATE KEY-----" line); if it is DER, convert it with `openssl pkey -inform der -in FILE -out FILE.pem`';
  }
  if (want === 'cert') {
    if (labels.includes('CERTIFICATE')) return undefined;
    if (labels.some((l) => KEY_LABEL.test(l))) return `holds a private key (${labels[0]}), not a certificate: are cert and key swapped?`;
    if (labels.includes('CERTIFICATE REQUEST') || labels.includes('NEW CERTIFICATE REQUEST')) return 'holds a certificate signing request (CSR), not the certificate the CA issued for it';
    return `holds "${labels[0]}", not a certificate ("-----BEGIN CERTIFICATE-----")`;
  }
  if (labels.includes('ENCRYPTED PRIVATE KEY') || /^Proc-Type: 4,ENCRYPTED/m.test(text)) {
    return 'holds an encrypted private key, which Portico cannot use: decrypt it with `openssl pkey -in FILE -out FILE.plain`';
  }
  if (labels.some((l) => KEY_LABEL.test(l))) return undefined;
  if (labels.includes('CERTIFICATE')) return 'holds a certificate, not a private key: are cert and key swapped?';
  return `holds "${labels[0]}", not a private key ("-----BEGIN PRIVATE KEY-----")`;
}

export type PemProblem = { field: 'cert' | 'key'; message: string };

/** Catches at check time what would otherwise fail every TLS handshake: wrong or bad PEM, a key of another cert. */
export function pemProblem(certPem: string, keyPem: string): PemProblem | undefined {
  const certKind = wrongKind(certPem, 'cert');
  if (certKind !== undefined) return { field: 'cert', message: certKind };
  const keyKind = wrongKind(keyPem, 'key');
  if (keyKind !== undefined) return { field: 'key', message: keyKind };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    return { field: 'cert', message: `not a readable PEM certificate: ${(err as Error).message}` };
  }
  try {
    const key = createPrivateKey(keyPem);
    if (!cert.checkPrivateKey(key)) return { field: 'key', message: 'this private key does not belong to the certificate' };
  } catch (err) {
    return { field: 'key', message: `not a usable PEM private key: ${(err as Error).message}` };
  }
  return undefined;
}

/** How long before expiry `check` and `start` warn. */
export const EXPIRY_WARNING_MS = 14 * 24 * 3600 * 1000;

/** A warning about the certificate's dates at `now` (expired, expiring within 14 days, not yet valid), or undefined. */
export function validityWarning(certPem: string, now: number): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    return undefined; // pemProblem reports it
  }
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  if (notBefore.getTime() > now) return `certificate is not valid yet: valid from ${notBefore.toISOString()} (clients will refuse it until then; is the clock right?)`;
  if (notAfter.getTime() < now) return `certificate expired on ${notAfter.toISOString()}: clients will refuse it`;
  if (notAfter.getTime() - now < EXPIRY_WARNING_MS) return `certificate expires soon: ${notAfter.toISOString()}`;
  return undefined;
}
