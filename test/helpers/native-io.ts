// Whether a test that needs the addon's native I/O can run here: a loud skip when it cannot, which
// PORTICO_REQUIRE_PEERS=1 (CI) turns into a failure unless native I/O was switched off on purpose.
import type { TestContext } from 'node:test';
import { nativeIoAvailable } from '../../src/native/io.js';
import { nativeStatus } from '../../src/native/addon.js';
import { nativeL4 } from '../../src/native/l4.js';
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

/** The addon's L4 part here, or a loud skip; as needNativeIo, PORTICO_NATIVE_L4=0 counting as a deliberate switch-off. */
export function needNativeL4(t: TestContext): boolean {
  const l4 = nativeL4();
  if (l4.addon !== undefined) return true;
  const off = ['PORTICO_NATIVE', 'PORTICO_NATIVE_IO', 'PORTICO_NATIVE_L4'].find((v) => process.env[v] === '0');
  if (off !== undefined) {
    t.skip(`native L4 switched off by ${off}=0`);
    return false;
  }
  return needPeer(t, `the native addon's L4 part (${l4.reason})`, false);
}
