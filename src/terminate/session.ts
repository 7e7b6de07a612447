// One terminated WebSocket: the client's side lives in uWebSockets.js (app.ts), the backend's is a WebSocket of
// Portico's own over an upstream socket (frames by wire/ws-codec.ts). Messages are relayed whole, text and
// binary kept; close codes and reasons go both ways; each side's backlog is bounded (max_buffer), the slow
// side pausing the other (a slow client: the backend socket stops being read; a slow backend: the owner stops
// reading the client before uWS, since uWS.js cannot pause a WebSocket; an adopted client socket cannot be held,
// so there a slow backend closes it with 1013). Keepalive pings, the idle timeout and the message rate are checked by the owner's
// sweep and on each message (no timer per connection). It owns the backend socket; uWS owns the client's.
import type { WebSocket } from 'uWebSockets.js';
import type { ByteSocket, ClosedBy } from '../core/socket.js';
import type { WebsocketConfig } from '../config/schema.js';
import { FrameReader, OP_BINARY, OP_PONG, OP_TEXT, encodeClose, encodeFrame, isUtf8, isValidCloseCode, type WsEvent } from '../wire/ws-codec.js';

/** Why and how a terminated WebSocket ended, for the log and the metrics. */
export interface SessionEnd {
  readonly closedBy: TerminateClosedBy;
  /** The close code the client side ended with (1006: no Close frame). */
  readonly code: number;
  readonly reason: string;
  readonly messagesIn: number;
  readonly messagesOut: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly pingsMissed: number;
  readonly drops: number;
  readonly durationMs: number;
  /** How the client reached uWS (handoff.ts): its own socket adopted, or the relay hop. */
  readonly handoff?: 'adopt' | 'relay';
  /** What relayed the hop (handoff `relay`): splice or the TLS relay on the addon's threads, or JavaScript. */
  readonly hop?: TerminateHop;
}

/** What carried the bytes between the client and uWS on the relay hop (handoff.ts). */
export type TerminateHop = 'splice' | 'tls-relay' | 'js';

export type TerminateClosedBy = ClosedBy | 'ping_timeout' | 'message_too_big' | 'message_rate' | 'protocol_error' | 'handoff_failed' | 'reload' | 'target_drained' | 'backend_slow';

/** What a session reports to its owner (handoff.ts / the client connection). */
export interface SessionHooks {
  /** The client's WebSocket is open in uWS (the 101 went out). */
  opened(session: TerminatedSession): void;
  /** Both sides are done (called once). */
  ended(session: TerminatedSession, end: SessionEnd): void;
  /**
   * Stop (true) or restart (false) reading the client's bytes before they reach uWS: the backend is slow.
   * Absent when the client cannot be held (an adopted socket: uWS reads it): a slow backend then closes 1013.
   */
  holdClient?(on: boolean): void;
}

/** How long the backend gets to answer our Close before its socket is destroyed. */
const BACKEND_CLOSE_LINGER_MS = 2000;

/**
 * What may still reach uWS after the client is held (the relay's pipe and the unix socket's buffer, both
 * smaller than this): a backend leg holding more than max_buffer + max_message_size + this is closed (1013).
 */
export const HOP_SLACK = 1024 * 1024;

type Ws = WebSocket<unknown>;

export class TerminatedSession {
  readonly startedAt = Date.now();
  readonly #backend: ByteSocket;
  readonly #cfg: WebsocketConfig;
  readonly #hooks: SessionHooks;
  readonly #reader: FrameReader;
  /** Topics the backend's 101 named: joined when the client's WebSocket opens. */
  readonly #topics: readonly string[];
  #ws: Ws | null = null;
  #upstreamRest: Buffer | null;
  #closedBy: TerminateClosedBy | undefined;
  /** Client-side close code and reason, once known. */
  #code = 1006;
  #reason = '';
  #clientGone = false;
  #backendGone = false;
  #backendClosing = false;
  #ended = false;
  #lingerTimer: NodeJS.Timeout | null = null;
  // counters
  messagesIn = 0;
  messagesOut = 0;
  bytesIn = 0;
  bytesOut = 0;
  #pingsMissed = 0;
  #drops = 0;
  // keepalive and idle: last time the client was heard (any frame), last ping sent, last message either way
  #heardAt = Date.now();
  #pingAt = 0;
  #messageAt = Date.now();
  /** message_rate: theoretical arrival time of the next message (GCRA), ms. */
  #tat = 0;
  #backendPaused = false;
  /** The client is held (not read) because the backend leg holds more than max_buffer. */
  #clientHeld = false;

  constructor(backend: ByteSocket, upstreamRest: Buffer | null, cfg: WebsocketConfig, topics: readonly string[], hooks: SessionHooks) {
    this.#backend = backend;
    this.#upstreamRest = upstreamRest;
    this.#cfg = cfg;
    this.#topics = topics;
    this.#hooks = hooks;
    this.#reader = new FrameReader(cfg.max_message_size);
    backend.on('error', this.#onBackendError);
    backend.on('close', this.#onBackendClose);
    backend.on('end', this.#onBackendEnd);
    backend.on('data', this.#onBackendData);
    backend.on('drain', this.#onBackendDrain);
    backend.setTimeout(0);
    // no backend byte is read until the client's side exists (a message then has somewhere to go)
    backend.pause();
  }

  get closedBy(): TerminateClosedBy | undefined {
    return this.#closedBy;
  }

  // ---- client side (uWS callbacks through app.ts) ----------------------------------------------------------

  clientOpened(ws: Ws): void {
    this.#ws = ws;
    for (const t of this.#topics) ws.subscribe(t);
    this.#hooks.opened(this);
    if (this.#backendGone || this.#ended) {
      // the backend left during the hand-off: the client gets its close now
      this.#endClient(this.#code === 1006 ? 1011 : this.#code, this.#reason);
      return;
    }
    const rest = this.#upstreamRest;
    this.#upstreamRest = null;
    if (rest !== null && rest.length > 0) this.#onBackendData(rest);
    if (!this.#backendPaused && !this.#ended) this.#backend.resume();
  }

  clientMessage(msg: ArrayBuffer, binary: boolean): void {
    const now = Date.now();
    this.#heardAt = now;
    this.#messageAt = now;
    if (this.#cfg.message_rate > 0 && !this.#admit(now)) {
      this.#drops++;
      this.#closeBoth('message_rate', 1008, 'message rate exceeded');
      return;
    }
    if (this.#closedBy !== undefined) return;
    if (msg.byteLength > this.#cfg.max_message_size) {
      this.#closeBoth('message_too_big', 1009, 'message too big', 1001);
      return;
    }
    this.messagesIn++;
    this.bytesIn += msg.byteLength;
    if (this.#backend.write(encodeFrame(binary ? OP_BINARY : OP_TEXT, new Uint8Array(msg)))) return;
    // write said false, so 'drain' will come. uWS.js v20.51 cannot pause reading a WebSocket: over max_buffer
    // the owner stops reading the client before uWS; what was already on its way still arrives (HOP_SLACK)
    const queued = this.#backend.writableLength;
    // no hold (adopted socket): one message past max_buffer is all the backend leg may hold
    const slack = this.#hooks.holdClient === undefined ? 0 : HOP_SLACK;
    if (queued > this.#cfg.max_buffer + this.#cfg.max_message_size + slack) {
      this.#drops++;
      this.#closeBoth('backend_slow', 1013, 'backend too slow');
    } else if (!this.#clientHeld && queued > this.#cfg.max_buffer && this.#hooks.holdClient !== undefined) {
      this.#clientHeld = true;
      this.#hooks.holdClient(true);
    }
  }

  /** The backend leg's queue is empty again: the client is read again. */
  #onBackendDrain = (): void => {
    this.#releaseClient();
  };

  #releaseClient(): void {
    if (!this.#clientHeld) return;
    this.#clientHeld = false;
    this.#hooks.holdClient?.(false);
  }

  /** GCRA with a burst of one second of the rate. */
  #admit(now: number): boolean {
    const interval = this.#cfg.message_rate;
    const burst = Math.max(1, Math.round(1000 / interval)) * interval;
    const tat = Math.max(this.#tat, now) + interval;
    if (tat - now > burst) return false;
    this.#tat = tat;
    return true;
  }

  clientDrained(): void {
    const ws = this.#ws;
    if (ws === null || !this.#backendPaused) return;
    if (ws.getBufferedAmount() <= this.#cfg.max_buffer / 2) {
      this.#backendPaused = false;
      this.#backend.resume();
    }
  }

  /** A ping or pong from the client: it is alive. */
  clientHeard(): void {
    this.#heardAt = Date.now();
  }

  clientDropped(): void {
    this.#drops++;
  }

  /** uWS closed the client's WebSocket (its Close, ours, or the connection lost: 1006). */
  clientClosed(code: number, msg: ArrayBuffer): void {
    this.#clientGone = true;
    this.#ws = null;
    this.#releaseClient();
    if (this.#closedBy === undefined) {
      // the client's own Close (or a lost connection, or uWS's limit: 1009 for a message over max_message_size)
      this.#code = code;
      this.#reason = Buffer.from(msg).toString('utf8');
      this.#closedBy = code === 1009 ? 'message_too_big' : code === 1006 ? 'client_error' : 'client';
      this.#closeBackend(code, this.#reason);
    } else if (this.#code === 1006 && code !== 1006) {
      this.#code = code;
      this.#reason = Buffer.from(msg).toString('utf8');
    }
    this.#maybeEnded();
  }

  // ---- backend side ----------------------------------------------------------------------------------------

  #onBackendData = (chunk: Buffer): void => {
    if (this.#ws === null) {
      // the client's side is not open yet (or is gone): hold what arrived (bounded by max_buffer)
      if (!this.#clientGone) {
        this.#upstreamRest = this.#upstreamRest === null ? chunk : Buffer.concat([this.#upstreamRest, chunk]);
        if (this.#upstreamRest.length > this.#cfg.max_buffer) this.#backend.pause();
      }
      return;
    }
    const events = this.#reader.push(chunk);
    if (events.length === 1) this.#backendEvent(events[0]);
    // several messages in one read: uWS writes them to the client in one syscall (outside its own callbacks,
    // uWS sends each message at once unless corked)
    else if (events.length > 1) this.#ws.cork(() => this.#backendEvents(events));
  };

  #backendEvents(events: WsEvent[]): void {
    for (let i = 0; i < events.length; i++) this.#backendEvent(events[i]);
  }

  #backendEvent(e: WsEvent): void {
    const ws = this.#ws;
    switch (e.kind) {
      case 'message': {
        if (ws === null || this.#closedBy !== undefined) return;
        if (!e.binary && !isUtf8(e.data)) {
          this.#closeBoth('protocol_error', 1011, 'backend sent invalid UTF-8', 1007);
          return;
        }
        this.messagesOut++;
        this.bytesOut += e.data.length;
        this.#messageAt = Date.now();
        const r = ws.send(e.data, e.binary, this.#cfg.compression);
        if (r === 2) this.#drops++;
        if (!this.#backendPaused && ws.getBufferedAmount() > this.#cfg.max_buffer) {
          this.#backendPaused = true;
          this.#backend.pause();
        }
        return;
      }
      case 'ping':
        if (!this.#backendGone) this.#backend.write(encodeFrame(OP_PONG, e.data));
        return;
      case 'pong':
        return;
      case 'close':
        // the backend's Close: answered (RFC 6455 §5.5.1), then relayed to the client with its code and reason
        if (this.#closedBy === undefined) {
          this.#closedBy = 'upstream';
          this.#closeBackend(e.code, e.reason);
          this.#endClient(e.code === 1005 ? 1000 : e.code, e.reason);
        } else {
          // the answer to our Close
          this.#backend.end();
        }
        return;
      case 'error':
        this.#closeBoth('protocol_error', 1011, `backend: ${e.reason}`, e.code);
        return;
    }
  }


  #onBackendEnd = (): void => {
    // FIN without a Close frame (or after ours): the client's side ends too
    if (this.#closedBy === undefined) {
      this.#closedBy = 'upstream';
      this.#endClient(1011, 'backend closed the connection');
    }
    this.#backend.end();
  };

  #onBackendError = (): void => {
    if (this.#closedBy === undefined) {
      this.#closedBy = 'upstream_error';
      this.#endClient(1011, 'backend connection failed');
    }
  };

  #onBackendClose = (): void => {
    this.#backendGone = true;
    if (this.#lingerTimer !== null) clearTimeout(this.#lingerTimer);
    this.#lingerTimer = null;
    if (this.#closedBy === undefined) {
      this.#closedBy = 'upstream';
      this.#endClient(1011, 'backend connection lost');
    }
    this.#maybeEnded();
  };

  // ---- closing ---------------------------------------------------------------------------------------------

  /** A Close frame to the client (uWS answers and closes); the code is what the client will see. */
  #endClient(code: number, reason: string): void {
    // the client's answer to our Close (and its FIN) must be read
    this.#releaseClient();
    const ws = this.#ws;
    if (this.#code === 1006) {
      this.#code = code;
      this.#reason = reason;
    }
    if (ws === null) return;
    ws.end(isValidCloseCode(code) ? code : 1011, reason);
  }

  /** A Close frame to the backend (masked), then FIN; destroyed if it does not close in time. */
  #closeBackend(code: number, reason: string): void {
    if (this.#backendGone || this.#backendClosing) return;
    this.#backendClosing = true;
    const c = code === 1005 ? 1005 : isValidCloseCode(code) ? code : 1001;
    this.#backend.write(encodeClose(c, code === 1006 ? 'client connection lost' : reason));
    this.#backend.end();
    this.#lingerTimer = setTimeout(() => this.#backend.destroy(), BACKEND_CLOSE_LINGER_MS);
    this.#lingerTimer.unref();
  }

  /** Portico ends both sides: the client gets `code`, the backend `backendCode` (default the same). */
  #closeBoth(by: TerminateClosedBy, code: number, reason: string, backendCode = code): void {
    if (this.#closedBy !== undefined) return;
    this.#closedBy = by;
    this.#endClient(code, reason);
    this.#closeBackend(isValidCloseCode(backendCode) ? backendCode : 1011, reason);
  }

  /** Drain (shutdown, reload, target drained): Close `code` (1001 going away, 1012 service restart) both ways. */
  goAway(code: number, reason: string, by: TerminateClosedBy = 'shutdown'): void {
    this.#closeBoth(by, code, reason);
  }

  /** The deadline passed: whatever is left is cut now. */
  forceClose(): void {
    if (this.#closedBy === undefined) this.#closeBoth('shutdown', 1001, 'going away');
    this.#ws?.close();
    this.#backend.destroy();
  }

  /** The hand-off to uWS failed (the client connection or the unix socket): only the backend is left to close. */
  handoffFailed(reason: string): void {
    if (this.#closedBy === undefined) {
      this.#closedBy = 'handoff_failed';
      this.#reason = reason;
    }
    this.#clientGone = true;
    this.#closeBackend(1001, 'client connection lost');
    this.#maybeEnded();
  }

  /** Keepalive and idle checks, once per sweep of the owner. */
  sweep(now: number): void {
    const ws = this.#ws;
    if (ws === null || this.#closedBy !== undefined) return;
    const every = this.#cfg.ping_interval;
    // a held client cannot be heard (its pongs wait unread behind its messages): silence is ours, not its
    if (this.#clientHeld) this.#heardAt = now;
    if (every > 0) {
      const silent = now - this.#heardAt;
      if (silent >= 2 * every) {
        // mobile clients vanish without a FIN: two intervals without a frame from the client and it is gone
        this.#closedBy = 'ping_timeout';
        this.#pingsMissed++;
        this.#code = 1006;
        this.#reason = 'no answer to ping';
        this.#closeBackend(1001, 'client did not answer pings');
        ws.close();
        return;
      }
      if (silent >= every && now - this.#pingAt >= every) {
        if (this.#pingAt > this.#heardAt) this.#pingsMissed++;
        this.#pingAt = now;
        ws.ping();
      }
    }
    const idle = this.#cfg.idle_timeout;
    if (idle > 0 && now - this.#messageAt >= idle) this.#closeBoth('idle_timeout', 1001, 'idle timeout');
  }

  #maybeEnded(): void {
    if (this.#ended || !this.#clientGone || !this.#backendGone) return;
    this.#ended = true;
    this.#hooks.ended(this, {
      closedBy: this.#closedBy ?? 'client',
      code: this.#code,
      reason: this.#reason,
      messagesIn: this.messagesIn,
      messagesOut: this.messagesOut,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      pingsMissed: this.#pingsMissed,
      drops: this.#drops,
      durationMs: Date.now() - this.startedAt,
    });
  }
}
