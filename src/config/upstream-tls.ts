// `upstreams.NAME.tls`: Portico speaks TLS to the targets of an upstream (nginx `proxy_pass https://` with
// proxy_ssl_verify on, Caddy's `transport http { tls }`). Verification is on by default; file paths are
// checked and resolved by load.ts; src/upstream/upstream-tls.ts builds one client context per pool.
import { z } from 'zod';

const settings = z
  .object({
    /**
     * Name sent as SNI and checked against the target's certificate (default: the target's host when it is a
     * DNS name; an IP target is checked against the certificate's IP addresses and gets no SNI).
     */
    sni: z
      .string()
      .regex(/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/, 'sni must be a DNS name (letters, digits, dots, dashes)')
      .optional(),
    /** Check the target's certificate chain and name (default true). false is for tests and labs only: logged at start. */
    verify: z.boolean().default(true),
    /** PEM file of the CAs to trust instead of the default list (Node's bundled Mozilla roots + NODE_EXTRA_CA_CERTS). */
    ca: z.string().min(1).optional(),
    /** Client certificate (PEM) sent to targets that ask for one (mutual TLS); needs `key`. */
    cert: z.string().min(1).optional(),
    /** The client certificate's private key (PEM, unencrypted). */
    key: z.string().min(1).optional(),
    min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
    /** Resume TLS sessions (tickets) on new connections to the same target (default true: no full handshake per connection). */
    session_reuse: z.boolean().default(true),
  })
  .strict()
  .superRefine((t, ctx) => {
    if ((t.cert === undefined) !== (t.key === undefined)) ctx.addIssue({ code: 'custom', path: [t.cert === undefined ? 'cert' : 'key'], message: 'a client certificate needs both `cert` and `key`' });
  });

/** `tls: true` (defaults), `tls: false` (off, as when absent), or the settings. */
export const upstreamTls = z.union([z.literal(true).transform(() => settings.parse({})), z.literal(false).transform(() => undefined), settings]);

export type UpstreamTlsConfig = z.output<typeof settings>;
