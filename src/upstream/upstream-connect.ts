// Opens one connection to a target for a pool: native I/O when it can, else node:net, within the connect
// timeout, and writes the PROXY header first when the upstream wants one; with `tls` the TLS handshake follows
// (after the header) and counts in the same timeout. It reports the target's connect
// failures through `onFailure` and hands the socket to `cb`; it keeps no socket and decides nothing about reuse.
import { connect } from 'node:net';
import { buildProxyV1, buildProxyV2 } from '../wire/proxy-protocol.js';
import type { ByteSocket } from '../core/socket.js';
import { connectNative } from '../native/io.js';
import { ProxyError, connectError, type ErrorCode } from '../core/errors.js';
import type { Target } from './balancer.js';
import type { UpstreamTls } from './upstream-tls.js';
import { netAddress } from './target.js';
import type { AcquireCallback, UpstreamClient } from './acquire-request.js';
import { PooledSocket, type TargetSlot } from './target-slot.js';

/**
 * Connects to `slot`'s target and answers `cb` once (socket, or a connect error after `onFailure` saw it, so a
 * retry already finds the target out). `who`: whom the PROXY header names (undefined: no header). `first`: the
 * acquirer's first bytes (latin1), written at once when the connection was established inside connect(2) and no
 * PROXY header or TLS handshake must go first (then `cb` says `firstSent`); otherwise the acquirer writes them
 * itself. Returns the socket's bookkeeping, already counted in `slot.open`, for the pool to index.
 */
export function connectTarget(
  slot: TargetSlot,
  cb: AcquireCallback,
  who: UpstreamClient | undefined,
  connectMs: number,
  proxyHeader: 'off' | 'v1' | 'v2',
  onFailure: (target: Target, code: ErrorCode) => void,
  secure?: UpstreamTls,
  first?: string,
): PooledSocket {
  const { target } = slot;
  const header = who === undefined ? undefined : proxyHeader === 'v1' ? buildProxyV1(who.source, who.destination) : buildProxyV2(who.source, who.destination);
  let socket: ByteSocket;
  let firstSent = false;
  if (secure !== undefined) {
    // TLS is Node's: a node:net socket under it, the PROXY header queued first so that it precedes the ClientHello
    const raw = connect({ ...netAddress(target), noDelay: true });
    if (header !== undefined) raw.write(header);
    socket = secure.wrap(raw, target);
  } else {
    // native I/O when the addon has it and the target is an IP literal or a Unix socket: no stream machinery per request
    const native = connectNative(target.host, target.port, NATIVE_OPTIONS);
    socket = native ?? connect({ ...netAddress(target), noDelay: true });
    // established already (loopback, Unix): the request leaves now, before any bookkeeping or the connect's tick
    if (first !== undefined && header === undefined && native?.connectedNow === true) {
      native.write(first, 'latin1');
      firstSent = true;
    }
  }
  const ready = secure !== undefined ? 'secureConnect' : 'connect';
  const pooled = new PooledSocket(socket, slot, who?.key);
  pooled.spoke = firstSent;
  let settled = false;
  let timer: NodeJS.Timeout | undefined;

  // Stays attached after a failure so that nothing a dying socket emits can go unhandled.
  const onError = (err: NodeJS.ErrnoException): void => {
    if (settled) return;
    settled = true;
    if (timer !== undefined) clearTimeout(timer);
    socket.off(ready, onConnect);
    socket.destroy();
    pooled.forget();
    const error = secure !== undefined && isTlsFailure(err) ? new ProxyError('UPSTREAM_TLS', `TLS to ${target.id} failed: ${err.message}`, { retryable: true, cause: err }) : connectError(err);
    onFailure(target, error.code); // before cb: a retry must already see the target out
    cb(error, null, false);
  };
  const onConnect = (): void => {
    if (settled) return;
    settled = true;
    if (timer !== undefined) clearTimeout(timer);
    socket.off('error', onError); // from here on the caller's 'error' listener owns failures
    pooled.state = 'busy';
    // the header is the connection's first bytes: written before the caller can write anything
    if (header !== undefined && secure === undefined) socket.write(header);
    cb(null, socket, false, undefined, firstSent);
  };
  socket.once(ready, onConnect);
  socket.on('error', onError);
  if (connectMs > 0) {
    timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      socket.off(ready, onConnect);
      socket.destroy();
      pooled.forget();
      onFailure(target, 'UPSTREAM_CONNECT_TIMEOUT');
      cb(new ProxyError('UPSTREAM_CONNECT_TIMEOUT', `upstream connect to ${target.id} timed out after ${connectMs}ms`, { retryable: true }), null, false);
    }, connectMs).unref();
  }
  return pooled;
}

/** An upstream connection ends with its peer's FIN; its 'connect' listener is attached below, before any tick. */
const NATIVE_OPTIONS = Object.freeze({ allowHalfOpen: false, connectListenerNow: true });

/** A failure of the TLS layer (certificate, name, protocol alert) rather than of the TCP connection under it. */
function isTlsFailure(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || /CERT|SELF_SIGNED|UNABLE_TO|HOSTNAME|DEPTH_ZERO/.test(code) || err.message.includes('alert');
}
