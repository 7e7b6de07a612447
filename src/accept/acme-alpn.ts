// TLS-ALPN-01 (RFC 8737) challenge certificates of the primary's pending ACME orders, held by this worker: name
// -> SecureContext for Node's TLS, mirrored into the addon for native TLS. Both TLS paths serve one to a
// handshake that names it by SNI and offers `acme-tls/1`, then close the connection (it never reaches HTTP).
// It decides nothing else: which listeners look at `acme-tls/1` at all is config/acme.ts's answersTlsAlpn.
import tls from 'node:tls';
import { setNativeAlpnChallenge } from '../native/tls.js';

/** Challenge certificates held at most (a CA validates a few names per order; the primary sends no more). */
const MAX_CHALLENGES = 256;

class AlpnChallenges {
  readonly #contexts = new Map<string, tls.SecureContext>();

  /** Names with a pending challenge (0: every ClientHello is served as if ACME did not exist). */
  get size(): number {
    return this.#contexts.size;
  }

  get(name: string | undefined | false): tls.SecureContext | undefined {
    return typeof name === 'string' ? this.#contexts.get(name.toLowerCase()) : undefined;
  }

  /** Serves `cert` for `name` to `acme-tls/1` handshakes; false (nothing changed) for an unusable pair or past the bound. */
  set(name: string, cert: string, key: string): boolean {
    if (!this.#contexts.has(name) && this.#contexts.size >= MAX_CHALLENGES) return false;
    let context: tls.SecureContext;
    try {
      context = tls.createSecureContext({ cert, key });
    } catch {
      return false;
    }
    if (!setNativeAlpnChallenge(name, cert, key)) return false;
    this.#contexts.set(name, context);
    return true;
  }

  delete(name: string): void {
    this.#contexts.delete(name);
    setNativeAlpnChallenge(name, null, null);
  }
}

/** This worker's pending challenges (one table: the addon's is process-wide too). */
export const alpnChallenges = new AlpnChallenges();
