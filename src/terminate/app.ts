// The worker's uWebSockets.js app for terminated WebSocket: one plain App on a unix socket in a private folder
// (0700), fed by handoff.ts with a PROXY v2 header and a handshake head Portico wrote itself. Each head names a
// pending session by a one-time token; the upgrade answers with the subprotocol the backend chose. It owns the
// uWS app, its listen socket and the token table; the sessions own their connections (session.ts).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, us_listen_socket, us_socket_context_t } from 'uWebSockets.js';
import type { UwsModule } from './uws.js';
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
    return this.#app.publish(topic, data, binary);
  }

  numSubscribers(topic: string): number {
    return this.#app.numSubscribers(topic);
  }

  close(): void {
    if (this.#listen !== null) this.#uws.us_listen_socket_close(this.#listen);
    this.#listen = null;
    for (const e of this.#pending.values()) clearTimeout(e.timer);
    this.#pending.clear();
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
    const uws = this.#uws;
    this.#app.ws<UserData>(pattern, {
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
      upgrade: this.#upgrade,
      open: (ws: WebSocket<UserData>) => ws.getUserData().session.clientOpened(ws),
      message: (ws: WebSocket<UserData>, msg: ArrayBuffer, binary: boolean) => ws.getUserData().session.clientMessage(msg, binary),
      drain: (ws: WebSocket<UserData>) => ws.getUserData().session.clientDrained(),
      close: (ws: WebSocket<UserData>, code: number, msg: ArrayBuffer) => ws.getUserData().session.clientClosed(code, msg),
      ping: (ws: WebSocket<UserData>) => ws.getUserData().session.clientHeard(),
      pong: (ws: WebSocket<UserData>) => ws.getUserData().session.clientHeard(),
      dropped: (ws: WebSocket<UserData>) => ws.getUserData().session.clientDropped(),
    });
    return pattern;
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
