// The worker's uWebSockets.js app for terminated WebSocket: one plain App on a unix socket in a private folder
// (0700), fed by handoff.ts with a PROXY v2 header and a handshake head Portico wrote itself. Each head names a
// pending session by a one-time token; the upgrade answers with the subprotocol the backend chose. It owns the
// uWS app, its listen socket and the token table; the sessions own their connections (session.ts). Adopted
// client sockets (`handoff: adopt`) go to one more App per behaviour settings, whose upgrade finds the pending
// session by the client's Sec-WebSocket-Key and address (the head uWS reads is the client's own).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, WebSocketBehavior, us_listen_socket, us_socket_context_t } from 'uWebSockets.js';
import type { AdoptingApp, UwsModule } from './uws.js';
import type { TerminatedSession } from './session.js';

/** What a session waiting for its client's upgrade gives the app. */
export interface PendingUpgrade {
  readonly session: TerminatedSession;
  /** The subprotocol the backend chose ('' = none). */
  readonly protocol: string;
  /** The client's Sec-WebSocket-Key and Sec-WebSocket-Extensions offer ('' = none). */
  readonly key: string;
  readonly extensions: string;
}

/** The uWS settings of a route (one `.ws()` pattern per distinct set, registered on first use). */
export interface BehaviourSettings {
  readonly maxMessage: number;
  readonly maxBuffer: number;
  readonly compression: boolean;
}

interface UserData {
  session: TerminatedSession;
}

/** How long a token waits for its head (the hand-off is local: milliseconds). */
const PENDING_MS = 10_000;

export class TerminateApp {
  readonly build: string;
  /** The unix socket handoff.ts connects to. */
  readonly socketPath: string;
  readonly #uws: UwsModule;
  readonly #app: TemplatedApp;
  readonly #dir: string;
  #listen: us_listen_socket | null = null;
  readonly #pending = new Map<string, { p: PendingUpgrade; timer: NodeJS.Timeout }>();
  readonly #patterns = new Set<string>();
  /** Apps that adopt client sockets, one per behaviour settings (uWS settings are per route pattern: all is /*). */
  readonly #adopters = new Map<string, AdoptingApp>();
  /** Sessions waiting for an adopted socket's upgrade, by "address key" (a list: a client may reuse its key). */
  readonly #adopted = new Map<string, Array<{ p: PendingUpgrade; timer: NodeJS.Timeout }>>();

  private constructor(uws: UwsModule, build: string) {
    this.#uws = uws;
    this.build = build;
    this.#dir = mkdtempSync(path.join(os.tmpdir(), 'portico-uws-'));
    this.socketPath = path.join(this.#dir, 'ws.sock');
    this.#app = uws.App();
    // anything that is not a hand-off head (nothing else can reach a 0700 folder's socket, but be strict)
    this.#app.any('/*', (res) => void res.writeStatus('404 Not Found').end());
  }

  /** Starts the app on its unix socket. */
  static start(uws: UwsModule, build: string): Promise<TerminateApp> {
    const app = new TerminateApp(uws, build);
    return new Promise((resolve, reject) => {
      app.#app.listen_unix((ls) => {
        if (ls === false || ls === undefined || ls === null) {
          rmSync(app.#dir, { recursive: true, force: true });
          reject(new Error(`uWebSockets.js could not listen on ${app.socketPath}`));
          return;
        }
        app.#listen = ls;
        // the private folder goes with the process, however it exits (process.exit after a drain included)
        process.once('exit', app.#removeFolder);
        resolve(app);
      }, app.socketPath);
    });
  }

  /** The request target of a hand-off head for these settings and a new token (registered until used or PENDING_MS). */
  expect(settings: BehaviourSettings, p: PendingUpgrade): string {
    const pattern = this.#pattern(settings);
    const token = randomBytes(12).toString('hex');
    const timer = setTimeout(() => {
      if (this.#pending.delete(token)) p.session.handoffFailed('the hand-off head did not reach uWebSockets.js in time');
    }, PENDING_MS);
    timer.unref();
    this.#pending.set(token, { p, timer });
    return `${pattern.slice(0, -1)}${token}`;
  }

  /**
   * Hands client socket `fd` (nothing of it consumed: uWS reads the client's own head) to the adopting app for
   * these settings; its upgrade is matched to `p` by the client's key and address `peer`. False when uWS did
   * not take the fd (the caller still owns it).
   */
  adopt(settings: BehaviourSettings, p: PendingUpgrade, fd: number, peer: string): boolean {
    const app = this.#adopter(settings);
    const key = `${plainAddress(peer)} ${p.key}`;
    const entry = {
      p,
      timer: setTimeout(() => {
        if (this.#dropAdopted(key, entry)) p.session.handoffFailed('the adopted connection did not upgrade in time');
      }, PENDING_MS),
    };
    entry.timer.unref();
    const list = this.#adopted.get(key);
    if (list === undefined) this.#adopted.set(key, [entry]);
    else list.push(entry);
    try {
      app.adoptSocket!(fd);
    } catch {
      clearTimeout(entry.timer);
      this.#dropAdopted(key, entry);
      return false;
    }
    return true;
  }

  #dropAdopted(key: string, entry: { p: PendingUpgrade; timer: NodeJS.Timeout }): boolean {
    const list = this.#adopted.get(key);
    const i = list?.indexOf(entry) ?? -1;
    if (list === undefined || i < 0) return false;
    list.splice(i, 1);
    if (list.length === 0) this.#adopted.delete(key);
    return true;
  }

  /** Forgets a token whose hand-off failed before its head was read. */
  cancel(target: string): void {
    const token = target.slice(target.lastIndexOf('/') + 1);
    const e = this.#pending.get(token);
    if (e === undefined) return;
    clearTimeout(e.timer);
    this.#pending.delete(token);
  }

  /** Sends a message to every subscriber of `topic` in this worker; false when it has none. */
  publish(topic: string, data: Buffer, binary: boolean): boolean {
    // topics are per uWS app: the hop's and each adopting app's subscribers
    let any = this.#app.publish(topic, data, binary);
    for (const app of this.#adopters.values()) any = app.publish(topic, data, binary) || any;
    return any;
  }

  numSubscribers(topic: string): number {
    let n = this.#app.numSubscribers(topic);
    for (const app of this.#adopters.values()) n += app.numSubscribers(topic);
    return n;
  }

  close(): void {
    if (this.#listen !== null) this.#uws.us_listen_socket_close(this.#listen);
    this.#listen = null;
    for (const e of this.#pending.values()) clearTimeout(e.timer);
    this.#pending.clear();
    for (const list of this.#adopted.values()) for (const e of list) clearTimeout(e.timer);
    this.#adopted.clear();
    process.removeListener('exit', this.#removeFolder);
    this.#removeFolder();
  }

  #removeFolder = (): void => {
    rmSync(this.#dir, { recursive: true, force: true });
  };

  #pattern(s: BehaviourSettings): string {
    const pattern = `/h/${s.maxMessage}-${s.maxBuffer}-${s.compression ? 1 : 0}/*`;
    if (this.#patterns.has(pattern)) return pattern;
    this.#patterns.add(pattern);
    this.#app.ws<UserData>(pattern, this.#behaviour(s, this.#upgrade));
    return pattern;
  }

  /** The app that adopts client sockets for settings `s`: every URL is a WebSocket of those settings. */
  #adopter(s: BehaviourSettings): AdoptingApp {
    const name = `${s.maxMessage}-${s.maxBuffer}-${s.compression ? 1 : 0}`;
    let app = this.#adopters.get(name);
    if (app !== undefined) return app;
    app = this.#uws.App() as AdoptingApp;
    app.ws<UserData>('/*', this.#behaviour(s, this.#adoptedUpgrade));
    // Portico routed this head as a WebSocket handshake: anything else here means uWS parsed it otherwise
    app.any('/*', (res) => void res.writeStatus('400 Bad Request').writeHeader('Connection', 'close').end('', true));
    this.#adopters.set(name, app);
    return app;
  }

  #adoptedUpgrade = (res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void => {
    const key = `${plainAddress(Buffer.from(res.getRemoteAddressAsText()).toString('latin1'))} ${req.getHeader('sec-websocket-key')}`;
    const list = this.#adopted.get(key);
    const e = list?.shift();
    if (e === undefined) {
      res.writeStatus('403 Forbidden').end('', true);
      return;
    }
    if (list!.length === 0) this.#adopted.delete(key);
    clearTimeout(e.timer);
    const p = e.p;
    res.upgrade<UserData>({ session: p.session }, p.key, p.protocol, p.extensions, context);
  };

  #behaviour(s: BehaviourSettings, upgrade: (res: HttpResponse, req: HttpRequest, context: us_socket_context_t) => void): WebSocketBehavior<UserData> {
    const uws = this.#uws;
    return {
      // uWS drops a connection whose message is over this without a Close frame: twice the limit lets the
      // session answer messages up to 2x max_message_size with a proper 1009 (memory per connection stays bounded)
      maxPayloadLength: Math.min(2 * s.maxMessage, 512 * 1024 ** 2),
      // messages are never dropped for backpressure: the session pauses the backend well before this bound
      maxBackpressure: 2 * s.maxBuffer + 2 * s.maxMessage,
      closeOnBackpressureLimit: false,
      // keepalive and idle are the session's own (ping_interval below uWS's 8 s minimum works too)
      idleTimeout: 0,
      sendPingsAutomatically: false,
      compression: s.compression ? uws.SHARED_COMPRESSOR : uws.DISABLED,
      upgrade,
      open: (ws: WebSocket<UserData>) => ws.getUserData().session.clientOpened(ws),
      message: (ws: WebSocket<UserData>, msg: ArrayBuffer, binary: boolean) => ws.getUserData().session.clientMessage(msg, binary),
      drain: (ws: WebSocket<UserData>) => ws.getUserData().session.clientDrained(),
      close: (ws: WebSocket<UserData>, code: number, msg: ArrayBuffer) => ws.getUserData().session.clientClosed(code, msg),
      ping: (ws: WebSocket<UserData>) => ws.getUserData().session.clientHeard(),
      pong: (ws: WebSocket<UserData>) => ws.getUserData().session.clientHeard(),
      dropped: (ws: WebSocket<UserData>) => ws.getUserData().session.clientDropped(),
    };
  }

  #upgrade = (res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void => {
    const url = req.getUrl();
    const token = url.slice(url.lastIndexOf('/') + 1);
    const e = this.#pending.get(token);
    if (e === undefined) {
      res.writeStatus('403 Forbidden').end();
      return;
    }
    clearTimeout(e.timer);
    this.#pending.delete(token);
    const p = e.p;
    res.upgrade<UserData>({ session: p.session }, p.key, p.protocol, p.extensions, context);
  };
}

/**
 * An address as both sides spell it: uWS writes IPv6 in full (and IPv4 on a dual-stack socket as ::ffff:a.b.c.d),
 * inet_ntop compresses. IPv4-mapped becomes the IPv4 text; other IPv6 the compressed form.
 */
export function plainAddress(text: string): string {
  const t = text.toLowerCase();
  if (t.indexOf(':') < 0) return t;
  let canonical: string;
  try {
    canonical = new URL(`http://[${t}]/`).hostname.slice(1, -1);
  } catch {
    return t;
  }
  // WHATWG writes ::ffff:a.b.c.d as ::ffff:xxxx:xxxx
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (m === null) return canonical;
  const hi = parseInt(m[1], 16);
  const lo = parseInt(m[2], 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}
