// `listeners[].tls.acme`: certificates got and renewed from an ACME CA (RFC 8555; Let's Encrypt by default),
// Caddy-style. The primary orders (src/primary/acme.ts); the certificate lives in the state folder beside the
// config file and is served like a configured one (load.ts adds it to the listener's certificates, marked
// self_signed so that a placeholder exists until the first one is issued).
import path from 'node:path';
import { z } from 'zod';
import { duration } from './units.js';

export const LETS_ENCRYPT = 'https://acme-v02.api.letsencrypt.org/directory';

const DAY_MS = 86_400_000;

/** RFC 8555 §8.3 and RFC 8737: the challenges Portico answers itself. */
export const ACME_CHALLENGES = ['http-01', 'tls-alpn-01'] as const;
export type AcmeChallenge = (typeof ACME_CHALLENGES)[number];
const acmeChallenge = z.enum(ACME_CHALLENGES, { error: 'http-01 or tls-alpn-01 (dns-01 is not built)' });

// what a worker's accept path reads lives in acme-alpn-config.ts, without zod (it is on the worker's start path)
export { ACME_TLS_ALPN, answersTlsAlpn } from './acme-alpn-config.js';

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
    /**
     * How the CA checks this listener answers for the names: http-01 (default) on a plain listener (port 80),
     * tls-alpn-01 (RFC 8737) on this TLS listener (port 443), or a list in order of preference (the first the CA
     * offers is used). Normalised to a list.
     */
    challenge: z
      .union([acmeChallenge, z.array(acmeChallenge).min(1)])
      .default('http-01')
      .transform((v): readonly AcmeChallenge[] => [...new Set(typeof v === 'string' ? [v] : v)]),
    /** tls-alpn-01: the port here the CA's connections arrive on (default 443; set it when a port mapping forwards 443 to another one). */
    tls_alpn_port: z.number().int().min(1).max(65535).default(443),
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

interface ListenerView {
  port: number | undefined;
  plain: boolean;
  terminates: boolean;
  passthrough: readonly string[];
}

/**
 * Where each challenge of one acme block would be answered, or why it cannot be (for `check`, with the path
 * under the acme block): http-01 needs a plain listener; tls-alpn-01 a TLS listener on `tls_alpn_port` (the
 * CA connects to 443, RFC 8737 §3) that terminates the names rather than passing them through.
 */
export function acmeChallengeIssues(acme: { challenge?: unknown; tls_alpn_port?: unknown; domains?: unknown }, listeners: readonly ListenerView[]): { path: string; message: string }[] {
  const out: { path: string; message: string }[] = [];
  const challenges = Array.isArray(acme.challenge) ? acme.challenge : [acme.challenge ?? 'http-01'];
  if (challenges.includes('http-01') && !listeners.some((l) => l.plain)) {
    out.push({ path: 'challenge', message: 'http-01 is answered on a plain listener (port 80 in production) and this config has none: add one, or use challenge: tls-alpn-01' });
  }
  if (challenges.includes('tls-alpn-01')) {
    const port = typeof acme.tls_alpn_port === 'number' ? acme.tls_alpn_port : 443;
    const domains = Array.isArray(acme.domains) ? acme.domains.filter((d): d is string => typeof d === 'string') : [];
    const onPort = listeners.filter((l) => l.terminates && l.port === port);
    const passed = (l: ListenerView): string | undefined => domains.find((d) => l.passthrough.some((p) => p === d || (p.startsWith('*.') && d.endsWith(p.slice(1)) && !d.slice(0, -p.length + 1).includes('.'))));
    if (onPort.length === 0) {
      out.push({ path: 'challenge', message: `tls-alpn-01 is answered by a TLS listener on port ${port} (the port the CA connects to: tls_alpn_port) and this config has none: listen on :${port}, or set tls_alpn_port to this listener's port when a port mapping forwards ${port} to it` });
    } else if (onPort.every((l) => passed(l) !== undefined)) {
      out.push({ path: 'challenge', message: `tls-alpn-01: the TLS listener on port ${port} passes ${passed(onPort[0])} through (tls.passthrough) instead of answering for it` });
    }
  }
  return out;
}
