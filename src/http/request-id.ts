// The request id of `log.request_id`: the client's X-Request-Id when it sent a usable one (so a trace that
// began before Portico goes on), else one made here: a random per-process prefix and a counter, unique across
// workers and restarts without a random draw per request. Sent upstream as X-Request-Id (handlers/rewrite.ts).
import { randomBytes } from 'node:crypto';
import type { RequestHead } from '../wire/http-head.js';

const PREFIX = `${randomBytes(6).toString('hex')}-`;
let counter = 0;

/** 1 to 128 printable ASCII characters without spaces: what may be passed on and logged as it is. */
const USABLE = /^[\x21-\x7e]{1,128}$/;

export function requestIdOf(head: RequestHead): string {
  const hs = head.headers;
  for (let i = 0; i < hs.length; i += 2) {
    if (hs[i].length === 12 && hs[i].toLowerCase() === 'x-request-id') {
      const v = hs[i + 1];
      if (USABLE.test(v)) return v;
      break;
    }
  }
  return PREFIX + (++counter).toString(36);
}
