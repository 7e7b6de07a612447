// A client connection whose WebSocket handshake the backend accepted (a valid 101 on the backend leg) is handed
// to the worker's uWebSockets.js app: a unix connection gets a PROXY v2 header (the client's addresses) and a
// handshake head Portico writes itself (the client's key and extension offer, a one-time token), then the bytes
// between the client and uWS move on a relay thread of the addon, never through JavaScript: splice for a plain
// client socket, the TLS relay (decrypt -> unix socket, unix socket -> encrypt) for a client whose TLS the addon
// terminated. Only a client whose TLS Node terminated (native TLS off or not possible) takes the JS relay,
// logged (uws.ts). A route with `handoff: adopt` whose
// client connection was only peeked (nothing consumed: native I/O's peek mode) hands the client's own socket to
// uWS instead (adoptSocket): uWS reads the client's head itself, no hop, no relay. It checks the backend's
// answer, builds the session (session.ts), and reports the end to its owner once.
import net from 'node:net';
import { TLSSocket } from 'node:tls';
import type { ByteSocket } from '../core/socket.js';
import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { WebsocketConfig } from '../config/schema.js';
import { native } from '../native/addon.js';
import { NativeSocket } from '../native/io.js';
import { headerValue } from '../handlers/rewrite.js';
import { Tunnel } from '../tunnel/relay.js';
import { SPLICE_RELAY, SpliceTunnel, canSplice } from '../tunnel/splice.js';
import { TLS_RELAY, tlsRelayUnfit } from '../tunnel/tls-relay.js';
import { buildProxyV2, type ProxyEndpoint } from '../wire/proxy-protocol.js';
import type { RequestHead, ResponseHead } from '../wire/http-head.js';
import type { TerminateApp } from './app.js';
import type { Drainer } from './drain.js';
import { TerminatedSession, type SessionEnd, type TerminateHop } from './session.js';

/** The header of a backend's 101 that names the topics a client joins (edge fan-out); never sent to the client. */
export const TOPICS_HEADER = 'x-portico-topics';
const MAX_TOPICS = 32;

/** What the client connection gives the hand-off. */
export interface TerminateOwner {
  readonly log: Logger;
  readonly remoteAddr: string;
  /** The terminated WebSocket is over (both its relay and its session): the connection is gone. */
  terminatedEnded(end: SessionEnd | undefined): void;
}

/** The worker's services a terminated WebSocket uses. */
export interface TerminateServices {
  readonly app: TerminateApp;
  readonly drainer: Drainer;
  /** Open terminated WebSockets of the worker (a reload that removed their route drains them). */
  readonly open: Set<TerminatedConnection>;
}

export interface HandoffInput {
  readonly client: ByteSocket;
  /** Client bytes read past its head (a client may not send frames before the 101; relayed if it did). */
  readonly clientRest: Buffer | null;
  readonly clientHead: RequestHead;
  /** The client's Sec-WebSocket-Extensions offer (takeExtensionOffer), for uWS's permessage-deflate. */
  readonly extensionOffer: string | undefined;
  /** The client's addresses (a trusted PROXY header's, else the socket's ends). */
  readonly source: ProxyEndpoint | undefined;
  readonly destination: ProxyEndpoint | undefined;
  readonly backend: ByteSocket;
  readonly backendRest: Buffer | null;
  readonly backendAnswer: ResponseHead;
  readonly websocket: WebsocketConfig;
  readonly route: string;
  /** The upstream and the target (its id: the address as written) the backend leg went to. */
  readonly upstream: string;
  readonly target: string;
  /**
   * The route asks for `handoff: adopt` and the connection qualifies (its first request, nothing past the head
   * when it was routed): the client socket goes to uWS whole when it is still unconsumed, else the relay.
   */
  readonly adopt: boolean;
}

/**
 * Why the backend's 101 cannot be given to this client, or undefined. RFC 6455 §4.1: a subprotocol the client
 * did not offer, or an extension (the backend leg offered none), fails the connection.
 */
export function checkBackendAnswer(clientHead: RequestHead, res: ResponseHead): string | undefined {
  const chosen = headerValue(res.headers, 'sec-websocket-protocol');
  if (chosen !== undefined) {
    const offered = (headerValue(clientHead.headers, 'sec-websocket-protocol') ?? '').split(',').map((s) => s.trim());
    if (!offered.includes(chosen)) return `backend chose subprotocol "${chosen}" that the client did not offer`;
  }
  if (headerValue(res.headers, 'sec-websocket-extensions') !== undefined) return 'backend accepted an extension that was not offered';
  return undefined;
}

/**
 * Removes the client's Sec-WebSocket-Extensions from the head forwarded to the backend (the backend leg is
 * uncompressed: its frames are read by wire/ws-codec.ts) and returns the offer, for uWS to answer the client.
 */
export function takeExtensionOffer(head: RequestHead): string | undefined {
  let offer: string | undefined;
  const h = head.headers;
  for (let i = 0; i < h.length; ) {
    if (h[i].toLowerCase() === 'sec-websocket-extensions') {
      offer = offer === undefined ? h[i + 1] : `${offer}, ${h[i + 1]}`;
      h.splice(i, 2);
    } else i += 2;
  }
  return offer;
}

/** The topics a backend's 101 names (comma-separated), bounded in count and length. */
export function topicsOf(res: ResponseHead): string[] {
  const v = headerValue(res.headers, TOPICS_HEADER);
  if (v === undefined) return [];
  return v
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t.length > 0 && t.length <= 256)
    .slice(0, MAX_TOPICS);
}

/** One terminated WebSocket of a client connection: relay (client <-> uWS) and session (uWS <-> backend). */
export class TerminatedConnection {
  readonly session: TerminatedSession;
  readonly startedAt = Date.now();
  #relay: Tunnel | SpliceTunnel | null = null;
  #unix: net.Socket | null = null;
  readonly #client: ByteSocket;
  #relayEnded = false;
  #end: SessionEnd | undefined;
  #sessionEnded = false;
  #target = '';
  readonly #owner: TerminateOwner;
  readonly #svc: TerminateServices;
  readonly #metrics: Metrics;
  #opened = false;
  /** Client bytes read past its head: written to uWS once it opened the WebSocket (see #handOff), then the relay starts. */
  #startAfterOpen: (() => void) | null = null;
  /** The session asked to stop reading the client (a slow backend); applied to the relay once it exists. */
  #heldUp = false;
  /** The route's drain_rate as ms between two closes (drain.ts). */
  readonly drainInterval: number;
  /** The route's name (config `name`, else routes[i]). */
  readonly route: string;
  /** Where the backend leg went: upstream name and target id (a drained target drains its connections). */
  readonly upstream: string;
  readonly target: string;
  /** How the client reached uWS: its socket adopted, or the unix hop and a relay. */
  readonly handoff: 'adopt' | 'relay';
  /** What relays the unix hop (none when adopted); the access line says what did (a failed hand-over falls back to JS). */
  #hop: TerminateHop | undefined;

  constructor(owner: TerminateOwner, svc: TerminateServices, metrics: Metrics, input: HandoffInput) {
    this.#owner = owner;
    this.#svc = svc;
    this.#client = input.client;
    this.#metrics = metrics;
    const ws = input.websocket;
    this.drainInterval = ws.drain_rate;
    const client = input.client;
    // the client's own socket, nothing consumed: uWS will read its head (and any frame sent after it) itself
    // (not when the client sent bytes past its head before our 101: uWS drops what follows an upgrade in one read)
    const fd = input.adopt && input.clientRest === null && client instanceof NativeSocket ? client.takeWhole() : undefined;
    // anything that stays with the relay was read by Portico: reads from here on consume (the splice relay's dup too)
    if (fd === undefined && client instanceof NativeSocket) client.commit();
    this.handoff = fd === undefined ? 'relay' : 'adopt';
    this.session = new TerminatedSession(input.backend, input.backendRest, ws, topicsOf(input.backendAnswer), {
      opened: () => {
        this.#opened = true;
        this.#metrics.terminatedOpened();
        const start = this.#startAfterOpen;
        this.#startAfterOpen = null;
        start?.();
      },
      ended: (_s, end) => this.#sessionDone(end),
      holdClient:
        fd !== undefined
          ? undefined
          : (on) => {
              this.#heldUp = on;
              this.#relay?.holdUp(on);
            },
    });
    const head = input.clientHead;
    const settings = { maxMessage: ws.max_message_size, maxBuffer: ws.max_buffer, compression: ws.compression };
    const pending = {
      session: this.session,
      protocol: headerValue(input.backendAnswer.headers, 'sec-websocket-protocol') ?? '',
      key: headerValue(head.headers, 'sec-websocket-key') ?? '',
      extensions: ws.compression ? (input.extensionOffer ?? '') : '',
    };
    this.route = input.route;
    this.upstream = input.upstream;
    this.target = input.target;
    svc.open.add(this);
    if (fd !== undefined) {
      // no relay: the client's end is uWS's close callback (or, if it never upgrades, the app's pending timeout)
      this.#relayEnded = true;
      if (!svc.app.adopt(settings, pending, fd, owner.remoteAddr)) {
        native()?.close(fd);
        this.session.handoffFailed('uWebSockets.js did not adopt the client socket');
      }
      return;
    }
    this.#target = svc.app.expect(settings, pending);
    this.#handOff(input, this.#target);
  }

  /** Connects to the app's unix socket, writes PROXY v2 + the hand-off head, then relays client <-> uWS. */
  #handOff(input: HandoffInput, target: string): void {
    const unix = net.connect(this.#svc.app.socketPath);
    this.#unix = unix;
    const client = input.client;
    const fail = (): void => this.#relayClosed();
    // until the relay attaches its own: the connection's listeners are gone, an 'error' must still land somewhere
    unix.on('error', fail);
    client.on('error', fail);
    client.on('close', fail);
    const startRelay = (): void => {
      unix.removeListener('error', fail);
      unix.removeListener('close', fail);
      client.removeListener('error', fail);
      client.removeListener('close', fail);
      if (this.#relayEnded) return;
      // the session keeps the idle timeout and the keepalive: the hop has none of its own
      const timeouts = { idle: 0, lifetime: 0 };
      // a raw relay (not `websocket`): the first bytes down are uWS's HTTP 101, and at shutdown the session closes
      // the WebSocket itself (paced Close frames through uWS); the relay is cut only at the deadline
      const unfit = canSplice(client, unix) ? undefined : tlsRelayUnfit(client, unix);
      if (unfit === undefined) {
        this.#hop = client instanceof NativeSocket && client.encrypted ? 'tls-relay' : 'splice';
        this.#relay = new SpliceTunnel(client, unix, timeouts, this.#relayClosed, false, this.#hop === 'tls-relay' ? TLS_RELAY : SPLICE_RELAY);
      } else {
        this.#hop = 'js';
        if (client instanceof TLSSocket || (client instanceof NativeSocket && client.encrypted)) jsHopSaid(this.#owner.log, unfit);
        this.#relay = new Tunnel(client, unix, timeouts, this.#relayClosed, false);
      }
      // the relay owns the unix socket from here (and destroys it at its end): not kept, an idle connection
      // whose hop went to the addon's thread then holds no net.Socket
      this.#unix = null;
      this.#relay.start(null, null);
      if (this.#heldUp) this.#relay.holdUp(true);
    };
    unix.once('connect', () => {
      if (client.destroyed) {
        unix.destroy();
        this.#relayClosed();
        return;
      }
      const ext = input.websocket.compression ? input.extensionOffer : undefined;
      unix.write(Buffer.concat([buildProxyV2(input.source, input.destination), Buffer.from(handoffHead(target, input.clientHead, ext), 'latin1')]));
      const rest = input.clientRest;
      if (rest === null) {
        startRelay();
        return;
      }
      // frames the client sent before its 101: uWS drops bytes that follow an upgrade head in the same read, so
      // they go once uWS has opened the WebSocket (its 101 waits in the unix socket until the relay starts)
      unix.on('close', fail);
      this.#startAfterOpen = () => {
        if (this.#relayEnded) return;
        unix.write(rest);
        startRelay();
      };
    });
  }

  #relayClosed = (): void => {
    if (this.#relayEnded) return;
    this.#relayEnded = true;
    // a hand-over to the addon that failed (EMFILE and the like) went on in the JS relay
    if (this.#relay instanceof SpliceTunnel && !this.#relay.spliced) this.#hop = 'js';
    this.#unix?.destroy();
    // no relay yet (the unix hop failed, or the client left first): the client socket is still ours to close
    if (this.#relay === null) this.#client.destroy();
    if (!this.#opened) {
      // the client (or the unix hop) went away before uWS upgraded it: no close callback will come
      this.#svc.app.cancel(this.#target);
      this.session.handoffFailed('client connection closed during the hand-off');
    }
    this.#maybeDone();
  };

  #sessionDone(end: SessionEnd): void {
    this.#sessionEnded = true;
    this.#end = end;
    this.#svc.drainer.forget(this);
    if (this.#opened) this.#metrics.terminatedClosed(end);
    this.#maybeDone();
  }

  #maybeDone(): void {
    if (!this.#relayEnded || !this.#sessionEnded) return;
    this.#svc.open.delete(this);
    this.#owner.terminatedEnded(this.#end === undefined ? undefined : { ...this.#end, handoff: this.handoff, hop: this.#hop });
  }

  sweep(now: number): void {
    this.session.sweep(now);
  }

  /** Shutdown began (1001 going away) or its route left the config (1012 service restart): a paced Close. */
  drain(code = 1001, by: 'shutdown' | 'reload' | 'target_drained' = 'shutdown'): void {
    this.#svc.drainer.add(this, code, code === 1012 ? 'service restart' : 'going away', by);
  }

  /** The deadline: close what is left now. */
  forceClose(): void {
    this.session.forceClose();
    if (!this.#opened) this.#relay?.close('shutdown');
  }
}

/** A TLS client's hop relayed in JavaScript: said once per worker and reason (listeners where it always is are logged at start: uws.ts). */
const saidJsHop = new Set<string>();
function jsHopSaid(log: Logger, reason: string): void {
  if (saidJsHop.has(reason) || saidJsHop.size >= 8) return;
  saidJsHop.add(reason);
  log.info({ reason }, 'terminated WebSocket: the hop into uWebSockets.js is relayed in JavaScript');
}

/** The head uWS reads: only what its upgrade needs, and the token in the target. */
function handoffHead(target: string, head: RequestHead, ext: string | undefined): string {
  const key = headerValue(head.headers, 'sec-websocket-key') ?? '';
  return (
    `GET ${target} HTTP/1.1\r\nHost: portico\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${ext !== undefined ? `Sec-WebSocket-Extensions: ${ext}\r\n` : ''}\r\n`
  );
}
