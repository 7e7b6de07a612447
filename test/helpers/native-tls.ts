// Tests of the addon's TLS (native-tls, native-wss, native-tls-io, idle-memory) run where it is built and loads.
// A run that switches it off on purpose (PORTICO_NATIVE*=0, the JavaScript-path CI step) skips them; anywhere
// else a missing native TLS is a missing peer: a loud skip locally, a failure under PORTICO_REQUIRE_PEERS=1.
import type { TestContext } from 'node:test';
import { nativeStatus } from '../../src/native/addon.js';
import { nativeTlsStatus } from '../../src/native/tls.js';
import { needPeer } from './peers.js';

/** True when the addon terminates TLS here; else the test is skipped (or fails, see above). */
export function needNativeTls(t: TestContext): boolean {
  const status = nativeTlsStatus();
  if (status.available) return true;
  const off = ['PORTICO_NATIVE', 'PORTICO_NATIVE_IO', 'PORTICO_NATIVE_TLS'].find((v) => process.env[v] === '0');
  if (off !== undefined) {
    t.skip(`native TLS switched off by ${off}=0`);
    return false;
  }
  return needPeer(t, `native TLS (${status.reason ?? nativeStatus().reason ?? 'unavailable'})`, false);
}
