// `listeners[].tls.acme`: certificates got and renewed from an ACME CA (RFC 8555; Let's Encrypt by default),
// Caddy-style. The primary orders (src/primary/acme.ts); the certificate lives in the state folder beside the
// config file and is served like a configured one (load.ts adds it to the listener's certificates, marked
// self_signed so that a placeholder exists until the first one is issued).
import path from 'node:path';
import { z } from 'zod';
import { duration } from './units.js';

export const LETS_ENCRYPT = 'https://acme-v02.api.letsencrypt.org/directory';

const DAY_MS = 86_400_000;

const dnsName = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

export const acmeSchema = z
  .object({
    /** Names the certificate is for (DNS names this listener is reached by; no wildcards: those need DNS-01). */
    domains: z
      .array(
        z
          .string()
          .transform((v) => v.trim().toLowerCase())
          .refine((v) => dnsName.test(v), 'a DNS name with at least one dot (no wildcard, no IP address: ACME HTTP-01 and TLS-ALPN-01 validate names)'),
      )
      .min(1),
    /** Contact address given to the CA (expiry notices); optional. */
    email: z.string().regex(/^[^\s@]+@[^\s@]+$/, 'an e-mail address').optional(),
    /** ACME directory URL (default Let's Encrypt production; its staging: https://acme-staging-v02.api.letsencrypt.org/directory). */
    directory: z
      .string()
      .regex(/^https:\/\/[^\s/]+(\/\S*)?$/, 'the directory URL must be https://HOST/PATH')
      .refine((u) => URL.canParse(u), 'not a valid URL')
      .default(LETS_ENCRYPT),
    /** PEM file of the CA that signs the directory's own HTTPS certificate (a private ACME server); default: public roots. */
    directory_ca: z.string().min(1).optional(),
    /** http-01 (the default and, in this version, the only one): answered on this config's plain listeners (port 80 in production). */
    challenge: z.literal('http-01', { error: 'challenge: only "http-01" is built in this version (tls-alpn-01 is not yet)' }).default('http-01'),
    /** Time limit of each request to the CA (default 30s): a CA that stops answering fails the order, which is retried later. */
    request_timeout: duration('30s').refine((ms) => ms > 0 && ms <= 600_000, 'above 0 and at most 10m'),
    /** Renew this long before expiry (default 30d; days allowed up to 365d). */
    renew_before: z
      .string()
      .default('30d')
      .transform((v, ctx) => {
        const m = /^(\d+)\s*(d|h|m)$/.exec(v.trim());
        const ms = m === null ? NaN : Number(m[1]) * (m[2] === 'd' ? DAY_MS : m[2] === 'h' ? 3_600_000 : 60_000);
        if (!(ms > 0) || ms > 365 * DAY_MS) {
          ctx.addIssue({ code: 'custom', message: 'a duration such as "30d", "12h" (above 0, at most 365d)' });
          return z.NEVER;
        }
        return ms;
      }),
  })
  .strict();

export type AcmeConfig = z.output<typeof acmeSchema>;

/** Where the state of one ACME listener lives: `<config dir>/.state/acme/<first domain>/`. */
export function acmeFiles(configDir: string, acme: Pick<AcmeConfig, 'domains'>): { dir: string; cert: string; key: string } {
  const dir = path.join(configDir, '.state', 'acme', acme.domains[0]);
  return { dir, cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
}

/** The account key of one directory + contact, shared by the listeners that use both. */
export function acmeAccountFile(configDir: string, directory: string, email: string | undefined): string {
  const id = `${new URL(directory).host}-${(email ?? 'anonymous').replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  return path.join(configDir, '.state', 'acme', 'accounts', `${id}.key`);
}
