// The request-body stall rule shared by the handlers that stream a body upstream (forward.ts, fastcgi.ts): the
// client gets `timeouts.body` between reads (CLIENT_BODY_TIMEOUT, never the target's failure), an upstream that
// stopped taking the body gets `timeouts.idle`. The clock restarts whenever bytes move or the waiting side changes.
import { ProxyError } from '../core/errors.js';

export type BodyWaiter = 'client' | 'upstream' | null;

export class BodyStallWatch {
  #mark = -1;
  #markAt = 0;
  #waitsOn: BodyWaiter = null;

  /** The error to fail with once `waitsOn` made no progress past its limit (0 = off), else null. `upstream` names it in the message. */
  check(bytesIn: number, waitsOn: BodyWaiter, now: number, clientLimit: number, upstreamLimit: number, upstream: string): ProxyError | null {
    if (bytesIn !== this.#mark || waitsOn !== this.#waitsOn) {
      this.#mark = bytesIn;
      this.#markAt = now;
      this.#waitsOn = waitsOn;
      return null;
    }
    if (waitsOn === null) return null;
    const limit = waitsOn === 'client' ? clientLimit : upstreamLimit;
    if (limit <= 0 || now - this.#markAt < limit) return null;
    return waitsOn === 'client'
      ? new ProxyError('CLIENT_BODY_TIMEOUT', `no request body bytes from the client for ${limit}ms`)
      : new ProxyError('UPSTREAM_IDLE_TIMEOUT', `${upstream} took no request body bytes for ${limit}ms`);
  }
}
