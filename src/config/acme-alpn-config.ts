// The part of `listeners[].tls.acme` a worker's accept path reads: the TLS-ALPN-01 protocol name and whether a
// config answers that challenge at all. Kept apart from acme.ts's schema so that a worker starts without zod.

/** RFC 8737 §6.2: the ALPN protocol of a TLS-ALPN-01 validation connection. */
export const ACME_TLS_ALPN = 'acme-tls/1';

/** Whether a config answers TLS-ALPN-01 anywhere: its TLS listeners then look at `acme-tls/1` in ClientHellos. */
export function answersTlsAlpn(listeners: ReadonlyArray<{ tls?: { acme?: { readonly challenge: readonly string[] } } }>): boolean {
  return listeners.some((l) => l.tls?.acme?.challenge.includes('tls-alpn-01') === true);
}
