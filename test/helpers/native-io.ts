// Whether a test that needs the addon's native I/O can run here: a loud skip when it cannot, which
// PORTICO_REQUIRE_PEERS=1 (CI) turns into a failure unless native I/O was switched off on purpose.
import type { TestContext } from 'node:test';
import { nativeIoAvailable } from '../../src/native/io.js';
import { nativeStatus } from '../../src/native/addon.js';
import { needPeer } from './peers.js';

/** Native I/O here, or a loud skip; a missing build fails under PORTICO_REQUIRE_PEERS=1, a deliberate switch-off does not. */
export function needNativeIo(t: TestContext): boolean {
  if (nativeIoAvailable()) return true;
  const off = process.env.PORTICO_NATIVE === '0' ? 'PORTICO_NATIVE=0' : process.env.PORTICO_NATIVE_IO === '0' ? 'PORTICO_NATIVE_IO=0' : undefined;
  if (off !== undefined) {
    t.skip(`native I/O switched off by ${off}`);
    return false;
  }
  const why = nativeStatus().native ? 'the loaded addon has no io functions (rebuild it)' : nativeStatus().reason;
  return needPeer(t, `native I/O (${why})`, false);
}
