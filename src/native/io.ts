// Sockets of the plain-TCP HTTP data path on the addon's native I/O (src/native/io.cc): a NativeSocket speaks
// the part of net.Socket that connection.ts, forward.ts, the pool and the relays use (events data, end, error,
// close, drain, connect; write, end, destroy, pause, resume, cork), without Node's stream machinery, which is
// most of a small proxied request's user-space CPU. One native call per wake-up delivers every socket's reads.
// Listening sockets can be served here too (NativeListener: native accept, accept4 in batches): the accepted
// connection is a NativeSocket from its first byte, no net.Socket is ever made for it.
// This module owns the event dispatch and the fd <-> NativeSocket table; it knows nothing about HTTP.
// Buffer from its module: on Node 20 the global is a getter, called at each use (each chunk delivered)
import { Buffer } from 'node:buffer';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { constants } from 'node:os';
import { isIP } from 'node:net';
import type { ByteSocket } from '../core/socket.js';
import { native, type NativeAddon } from './addon.js';
import { noop } from '../core/util.js';
import { beginBatch, endBatch } from '../core/clock.js';


/** The native half of io: the addon's io* functions. */
interface IoAddon {
  ioInit(onEvents: (count: number) => void): { events: ArrayBuffer; data: ArrayBuffer; maxEvents: number };
  ioAdopt(fd: number): number;
  ioConnect(ip: string, port: number): number;
  /** An AF_UNIX stream connection (`unix:/path` targets); absent from addons built before it: those go through node:net. */
  ioConnectUnix?(path: string): number;
  ioListen(fd: number, mode: number): number;
  ioListenMode(id: number, mode: number): void;
  /** A peek-mode listener's passthrough names, for the decision at accept (io.cc kAcceptTerminate); absent from addons built before it. */
  ioListenPassthrough?(id: number, names: readonly string[] | null): void;
  ioRelease(id: number): number;
  /** Absent from addons built before it: then end() closes at once. */
  ioListenEnd?(id: number): boolean;
  /** Sets or clears TCP_DEFER_ACCEPT (with `on`); the kernel's value in seconds. Absent from addons built before it. */
  ioListenDefer?(id: number, on?: boolean): number;
  /** 1 when a connection on the listener's port is still in a SYN queue (sock_diag), 0 when none, -1 when unknown. Absent from older addons. */
  ioSynQueued?(id: number): number;
  ioWrite(id: number, bytes: Uint8Array): number;
  /** The relayed answer (io.cc ioAnswer, response-head.h); absent from addons built before it: answers then come as data. */
  ioAnswerPlan?(skip: string[]): number;
  ioAnswer?(upstream: number, client: number, plan: number, extra: string, conn: number): boolean;
  ioAnswerOff?(upstream: number, headOnly: boolean): number;
  /** The 101 of a WebSocket upgrade checked and written by the addon (io.cc ioAnswerUpgrade); absent from addons built before it. */
  ioAnswerUpgrade?(upstream: number, client: number, plan: number, extra: string, accept: string): boolean;
  /** The same, given the client's Sec-WebSocket-Key (its accept value computed by the addon, ws-accept.h); absent from addons built before it. */
  ioAnswerUpgradeKey?(upstream: number, client: number, plan: number, extra: string, key: string): boolean;
  /** FastCGI's relayed answer (io.cc ioFcgiAnswer, fcgi-answer.h); absent from addons built before it. */
  ioFcgiAnswer?(upstream: number, client: number, cgi: Uint8Array, head: Uint8Array, requestId: number): boolean;
  ioWriteLatin1(id: number, text: string): number;
  ioRead(id: number, on: boolean): void;
  ioShutdown(id: number): void;
  /** Absent from addons built before it: then a TLS connection never closes at once. */
  ioCloseNotify?(id: number): boolean;
  ioClose(id: number): void;
  ioKeepAlive(id: number, on: boolean, delaySeconds: number): void;
  ioFd(id: number): number;
  ioQueued(id: number): number;
  /** Absent from addons built before it: then static files are read and written. */
  ioSendFile?(id: number, fd: number, offset: number, count: number): number;
  ioAddress(id: number, local: boolean): { address: string; port: number } | null;
  ioStats(): { live: number; accepted: number; acceptBatches: number; answered?: number; upgraded?: number; started?: number; helloTerminated?: number; helloPeeked?: number };
  ioAdoptTls?(fd: number, serverId: number): number;
  ioStartTls?(id: number, serverId: number): void;
  ioTlsInfo?(id: number): NativeTlsInfo | null;
  ioTlsError?(id: number): string | null;
  /** Peek mode (absent from addons built before it: listeners then read). */
  ioCommit?(id: number): void;
  ioPeeking?(id: number): boolean;
  ioPeekSupported?(): boolean;
  ioRewind?(id: number, consumed: number): boolean;
}

/** What a natively terminated TLS connection negotiated (src/native/tls.cc). */
export interface NativeTlsInfo {
  version: string;
  cipher: string | null;
  alpn: string | null;
  servername: string | null;
  /** The client resumed a session (by ticket). */
  resumed: boolean;
}

const DATA = 1;
const EOF = 2;
const ERROR = 3;
const DRAIN = 4;
const CONNECT = 5;
const ACCEPT = 6;
const ACCEPT_ERROR = 7;
/** An ACCEPT whose ClientHello the addon read at accept and passes nothing through: held, to be terminated at once. */
const ACCEPT_TERMINATE = 12;

/**
 * What a listener's accepted connections do first (io.cc kModeRead / kModeHold / kModePeek). 'peek' reads like
 * 'read' without consuming: the connection can be handed whole to uWebSockets.js until commit() (a plain HTTP
 * listener whose config has `handoff: adopt` routes).
 */
export type AcceptMode = 'read' | 'hold' | 'peek';
const MODE: Record<AcceptMode, number> = { read: 0, hold: 1, peek: 2 };
const SECURE = 8;
const LISTEN_END = 9;
const ANSWER = 10;
/** The addon started a FastCGI exchange with a ready client's read (exchange.h): a record, then the head's bytes. */
const STARTED = 11;
/** io.cc kStartedRecord: eight int32s (upstream, route, target, flags, CGI head length, status, records, config). */
const STARTED_RECORD = 32;

/**
 * What the addon's STARTED event says (native/exchange.ts): it wrote FastCGI request records of `records` bytes on
 * `upstream` (a connection the pool lent it: busy from now on) for route `route` of exchange config `config`; with
 * `armed`, the answer is armed as fcgiAnswerTo arms it, with a CGI head of `cgiLength` bytes and status `status`.
 */
export interface NativeStart {
  readonly upstream: NativeSocket;
  readonly route: number;
  readonly target: number;
  readonly armed: boolean;
  readonly cgiLength: number;
  readonly status: number;
  readonly records: number;
  readonly config: number;
}

/** Flags of an answer record (io.cc kAns*): what one read of an armed upstream did. */
export const ANSWER_HEAD = 1;
export const ANSWER_DONE = 2;
export const ANSWER_REUSABLE = 4;
export const ANSWER_EXTRA = 8;
export const ANSWER_CLIENT_GONE = 16;
/** An upgrade's 101 was checked and written by the addon (upgradeTo); the bytes that followed it come with the record. */
export const ANSWER_UPGRADE = 32;
/** An answer record's own bytes (io.cc kAnswerRecord): an upgrade's first bytes down follow them in the event. */
const ANSWER_RECORD = 24;
/** FastCGI: the rest of this read follows as data, from a record's first byte (the exchange's reader takes it). */
export const ANSWER_HANDOVER = 64;
/** The Connection line of a relayed answer's head (response-head.h kConn*). */
export const ANSWER_CONN_NONE = 0;
export const ANSWER_CONN_CLOSE = 1;
export const ANSWER_CONN_KEEP_ALIVE = 2;

const EMPTY = new Uint8Array(0);

/**
 * The empty list every NativeSocket list starts as (held chunks, write and finish callbacks, corked writes): a
 * connection that never needs one allocates none; a push replaces it with a list of the socket's own first.
 */
const NONE: never[] = Object.freeze([]) as unknown as never[];

/** NativeSocket's delivery of what it held while paused, a tick later, without a closure per socket. */
function flushHeld(socket: NativeSocket): void {
  socket._flushHeld();
}

/** destroy()'s deferred half, without a closure per socket. */
function closed(socket: NativeSocket, cbs: Array<(err?: Error | null) => void>, error: Error | undefined): void {
  socket._closed(cbs, error);
}

/**
 * A socket's one owner (an HTTP client connection), called in place of listeners: data, end and drain go to it
 * alone; error and close to it first, then to any listeners. `socketError` comes before `socketClose`.
 */
export interface SocketOwner {
  socketData(chunk: Buffer): void;
  /** The addon started a FastCGI exchange with this read (`head`: its bytes); absent: never marked ready. */
  socketStarted?(start: NativeStart, head: Buffer): void;
  socketEnd(): void;
  socketDrain(): void;
  socketError(err: Error): void;
  socketClose(): void;
}

/**
 * Takes a socket's 'data' in place of its 'data' listeners when it has no owner (setDataReceiver): a pooled
 * upstream socket's bytes reach the exchange that uses it in one call, not through emit() and each listener.
 */
export interface DataReceiver {
  socketData(chunk: Buffer): void;
  /**
   * One read of an armed upstream, relayed to its client by the addon (answerTo): `flags` ANSWER_*; `status` and
   * `headBytes` with ANSWER_HEAD; `bodyBytes` of the body this read relayed; `clientQueued` bytes left in the
   * client's queue (for its answerQueued).
   */
  socketAnswer?(status: number, flags: number, headBytes: number, bodyBytes: number, clientQueued: number, sentDown: Buffer | null): void;
}

/** As net.Socket: write() says false once this much waits in the native queue. */
const HIGH_WATER_MARK = 16 * 1024;

const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

function errnoError(syscall: string, errno: number): NodeJS.ErrnoException {
  const code = ERRNO_NAMES.get(errno) ?? 'EUNKNOWN';
  const err: NodeJS.ErrnoException = new Error(`${syscall} ${code}`);
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  return err;
}

interface Io {
  addon: IoAddon;
  events: Int32Array;
  data: Buffer;
  /** The same bytes as a plain Uint8Array: its subarray() is a plain view (a Buffer's makes a Buffer). */
  bytes: Uint8Array;
  /** By the addon's id (small integers, reused after a close): an array, no hashing per event or connection. */
  sockets: Array<NativeSocket | undefined>;
  listeners: Map<number, NativeListener>;
  /** The batch being dispatched: its event count (0 between batches) and the index of the event being handled. */
  batch: number;
  at: number;
}

let io: Io | null | undefined;

/** The native I/O, set up on first use; null when the addon is missing, disabled, or has no io functions. */
function ioOf(): Io | null {
  if (io !== undefined) return io;
  const addon = native() as (NativeAddon & Partial<IoAddon>) | undefined;
  if (addon?.ioInit === undefined || process.env.PORTICO_NATIVE_IO === '0') {
    io = null;
    return io;
  }
  const sockets: Array<NativeSocket | undefined> = [];
  const listeners = new Map<number, NativeListener>();
  let state: Io | undefined;
  const shared = addon.ioInit((count) => dispatch(state!, count));
  state = { addon: addon as IoAddon, events: new Int32Array(shared.events), data: Buffer.from(shared.data), bytes: new Uint8Array(shared.data), sockets, listeners, batch: 0, at: 0 };
  io = state;
  return io;
}

/** Whether sockets can go native (the addon is loaded and has its io part); PORTICO_NATIVE_IO=0 turns it off. */
export function nativeIoAvailable(): boolean {
  return ioOf() !== null;
}

/** Connections accepted natively so far and the batches (wake-ups) they came in; undefined without native I/O. */
export function nativeAcceptStats(): { accepted: number; batches: number } | undefined {
  if (io === undefined || io === null) return undefined;
  const s = io.addon.ioStats();
  return { accepted: s.accepted, batches: s.acceptBatches };
}

/**
 * Connections of listeners with passthrough names (NativeListener.passthrough): decided at accept to be terminated,
 * and peeked (left to the JS preface reader); undefined without native I/O or an addon without the decision.
 */
export function nativeHelloStats(): { terminated: number; peeked: number } | undefined {
  if (io === undefined || io === null) return undefined;
  const s = io.addon.ioStats();
  return s.helloTerminated === undefined || s.helloPeeked === undefined ? undefined : { terminated: s.helloTerminated, peeked: s.helloPeeked };
}

/** Whether accepted connections can be peeked (the addon has peek mode and the kernel SO_PEEK_OFF on TCP, Linux >= 6.10). */
export function nativePeekAvailable(): boolean {
  // asked without starting native I/O: the primary says what its listeners will do
  const addon = native() as (NativeAddon & Partial<IoAddon>) | undefined;
  return addon?.ioInit !== undefined && process.env.PORTICO_NATIVE_IO !== '0' && addon.ioPeekSupported?.() === true;
}

/**
 * A route's response side for NativeSocket.answerTo: the lower-case field names its head rewrite drops. -1 when the
 * addon cannot relay answers (then nothing is armed).
 */
export function answerPlan(skip: string[]): number {
  const state = ioOf();
  return state?.addon.ioAnswerPlan?.(skip) ?? -1;
}

/**
 * The addon may relay answers (PORTICO_NATIVE_ANSWER=0 turns it off: every answer then comes to its exchange as data,
 * as without the addon). Read once, by forward.ts and fastcgi.ts alike.
 */
export const NATIVE_ANSWER = process.env.PORTICO_NATIVE_ANSWER !== '0';

/** Answers the addon relayed itself (NativeSocket.answerTo, fcgiAnswerTo) so far; undefined without native I/O or an addon without it. */
export function nativeAnswered(): number | undefined {
  if (io === undefined || io === null) return undefined;
  return io.addon.ioStats().answered;
}

/** WebSocket 101s the addon checked and wrote itself (NativeSocket.upgradeTo) so far; undefined without native I/O or support. */
export function nativeUpgraded(): number | undefined {
  if (io === undefined || io === null) return undefined;
  return io.addon.ioStats().upgraded;
}

/** FastCGI exchanges the addon started itself (exchange.h), counted once their records were sent; undefined without native I/O. */
export function nativeStarted(): number | undefined {
  if (io === undefined || io === null) return undefined;
  return io.addon.ioStats().started;
}

/** Native sockets open now (for the admin status and leak checks). */
export function nativeIoLive(): number {
  return io?.addon.ioStats().live ?? 0;
}

/**
 * Functions to run once the batch being dispatched is handled (afterBatch): after its last event, before the
 * `process.nextTick` queue that runs when the addon's callback returns.
 */
let batchDone: Array<() => void> = [];

/**
 * Runs `fn` after the rest of the native I/O batch being dispatched, without a `process.nextTick` (whose queue
 * entry, an object literal with symbol keys, takes a V8 runtime call each). False when no batch is being
 * dispatched (a caller outside one, or without native I/O): the caller defers its own way then.
 */
export function afterBatch(fn: () => void): boolean {
  if (io === undefined || io === null || io.batch === 0) return false;
  batchDone.push(fn);
  return true;
}

function dispatch(state: Io, count: number): void {
  state.batch = count;
  beginBatch();
  try {
    dispatchEvents(state, count);
  } finally {
    // also when an event's handler threw: what was deferred to the batch's end is not left waiting for another
    state.batch = 0;
    endBatch();
    if (batchDone.length > 0) runBatchDone();
  }
}

function dispatchEvents(state: Io, count: number): void {
  const { sockets, events, bytes } = state;
  for (let i = 0; i < count; i++) {
    state.at = i;
    const at = i * 4;
    const kind = events[at + 1]!;
    if (kind === ACCEPT || kind === ACCEPT_TERMINATE) {
      accepted(state, events[at]!, events[at + 2]!, events[at + 3]!, kind === ACCEPT_TERMINATE);
      continue;
    }
    if (kind === ACCEPT_ERROR) {
      state.listeners.get(events[at]!)?._onAcceptError(events[at + 2]!);
      continue;
    }
    if (kind === LISTEN_END) {
      state.listeners.get(events[at]!)?._onEnd();
      continue;
    }
    const socket = sockets[events[at]!];
    // a socket closed earlier in this batch: its event is stale (ids are not reused within a batch)
    if (socket === undefined) continue;
    if (kind === DATA) {
      const off = events[at + 2]!;
      const len = events[at + 3]!;
      // the shared buffer is overwritten by the next batch: the chunk gets bytes of its own (TypedArray set of a
      // plain view: what copy() does after its argument handling)
      const chunk = Buffer.allocUnsafe(len);
      chunk.set(bytes.subarray(off, off + len));
      socket._onData(chunk);
    } else if (kind === EOF) socket._onEof();
    else if (kind === DRAIN) socket._onDrain();
    else if (kind === CONNECT) socket._onConnect(events[at + 2]!);
    else if (kind === ANSWER) {
      const off = events[at + 2]!;
      const len = events[at + 3]!;
      const data = state.data;
      // an upgrade's first bytes down (written to the client with the 101) follow the record: a copy of their own
      let sentDown: Buffer | null = null;
      if (len > ANSWER_RECORD) {
        sentDown = Buffer.allocUnsafe(len - ANSWER_RECORD);
        sentDown.set(bytes.subarray(off + ANSWER_RECORD, off + len));
      }
      socket._onAnswer(data.readInt32LE(off), data.readInt32LE(off + 4), data.readInt32LE(off + 8), data.readDoubleLE(off + 16), data.readInt32LE(off + 12), sentDown);
    } else if (kind === STARTED) {
      const off = events[at + 2]!;
      const len = events[at + 3]!;
      const data = state.data;
      const head = Buffer.allocUnsafe(len - STARTED_RECORD);
      head.set(bytes.subarray(off + STARTED_RECORD, off + len));
      const upstream = sockets[data.readInt32LE(off)];
      if (upstream === undefined) socket._onData(head); // (never: a taken connection is not closed before this)
      else {
        const flags = data.readInt32LE(off + 12);
        socket._onStarted(
          { upstream, route: data.readInt32LE(off + 4), target: data.readInt32LE(off + 8), armed: (flags & 1) !== 0, cgiLength: data.readInt32LE(off + 16), status: data.readInt32LE(off + 20), records: data.readInt32LE(off + 24), config: data.readInt32LE(off + 28) },
          head,
        );
      }
    } else if (kind === SECURE) socket._onSecure();
    else if (kind === ERROR) socket._onError(errnoError('read', events[at + 2]!));
  }
}

/** The batch's afterBatch functions, in the order given; outside the batch now (what they defer goes its own way). */
function runBatchDone(): void {
  const due = batchDone;
  batchDone = [];
  runFrom(due, 0);
}

/** Runs due[from..]; should one throw, the rest still run (on the next tick) before the error goes on. */
function runFrom(due: Array<() => void>, from: number): void {
  let i = from;
  try {
    for (; i < due.length; i++) due[i]();
  } finally {
    if (i < due.length - 1) process.nextTick(runFrom, due, i + 1);
  }
}

/** Whether the batch being dispatched still has an event for connection `id` after the one being handled. */
function laterInBatch(state: Io, id: number): boolean {
  const events = state.events;
  for (let i = state.at + 1; i < state.batch; i++) {
    if (events[i * 4] === id) return true;
  }
  return false;
}

/**
 * An ACCEPT event: connection `id`, its record at data[off, off + len) (listener id, fd, port, address);
 * `terminate`: the addon read its ClientHello at accept and passes it nothing through (held, nothing read).
 */
function accepted(state: Io, id: number, off: number, len: number, terminate: boolean): void {
  const data = state.data;
  const listener = state.listeners.get(data.readInt32LE(off));
  if (listener === undefined) {
    // its listener closed earlier in this batch: nobody owns the connection
    state.addon.ioClose(id);
    return;
  }
  const port = data.readUInt16LE(off + 8);
  const address = data.toString('latin1', off + 10, off + len);
  const socket = new NativeSocket(state, id, address, port, false, LISTENED, terminate || listener.mode === 'hold');
  socket._fdNumber = data.readInt32LE(off + 4);
  if (terminate) socket._terminateAtAccept = true;
  else if (listener.mode === 'peek') socket._peeking = true;
  listener._onAccept(socket);
}

/** Accepted connections keep their writable side when the client half-closes (half-close is forwarded). */
const LISTENED: NativeSocketOptions = Object.freeze({ allowHalfOpen: true });

export interface NativeSocketOptions {
  /** As net.Socket's: false ends our side when the peer's FIN arrives. */
  allowHalfOpen: boolean;
  /**
   * connectNative: the caller attaches its 'connect' listener before connectNative returns, so a connection
   * established inside connect(2) says so in a nextTick (no setImmediate and its own callback into JS).
   */
  connectListenerNow?: boolean;
}

/**
 * A TCP socket on native I/O. Events and flags follow net.Socket's order: 'data'*, 'end', then 'close' once
 * both directions are done; 'error' then 'close' on failure; 'drain' after write() returned false.
 */
export class NativeSocket extends EventEmitter implements ByteSocket {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  /**
   * connectNative: the connection was established inside connect(2) (its 'connect' is on its way, no event of
   * the addon). Writes go out at once from here (the addon sends them), before 'connect' is emitted.
   */
  connectedNow = false;
  /** TLS is terminated by the addon on this socket (set at adoption, or by startTls()). */
  #encrypted: boolean;
  #io: Io;
  #id: number;
  #allowHalfOpen: boolean;
  #connecting: boolean;
  #destroyed = false;
  #paused = false;
  /** Chunks (and the FIN, as null) that arrived while paused. The lists below start as NONE (shared, empty). */
  #held: Array<Buffer | null> = NONE;
  #heldBytes = 0;
  #readableEnded = false;
  #writableEnded = false;
  #writableFinished = false;
  #queued = 0;
  #needDrain = false;
  #writeCbs: Array<(err?: Error | null) => void> = NONE;
  #corked = 0;
  #corkedChunks: Uint8Array[] = NONE;
  #corkedCbs: Array<(err?: Error | null) => void> = NONE;
  #corkedBytes = 0;
  #finishCbs: Array<() => void> = NONE;
  /** Takes the events in place of listeners (setOwner); null = listeners. */
  #owner: SocketOwner | null = null;
  /** Takes 'data' in place of its listeners when there is no owner (setDataReceiver); null = listeners. */
  #dataTo: DataReceiver | null = null;

  /** @internal use adoptNative(), connectNative() or a NativeListener */
  constructor(io: Io, id: number, remoteAddress: string | undefined, remotePort: number | undefined, connecting: boolean, opts: NativeSocketOptions, paused = false, encrypted = false) {
    super();
    this.#paused = paused;
    this.#encrypted = encrypted;
    this.#io = io;
    this.#id = id;
    this.remoteAddress = remoteAddress;
    this.remotePort = remotePort;
    this.#connecting = connecting;
    this.#allowHalfOpen = opts.allowHalfOpen;
    io.sockets[id] = this;
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  get allowHalfOpen(): boolean {
    return this.#allowHalfOpen;
  }

  set allowHalfOpen(on: boolean) {
    this.#allowHalfOpen = on;
  }

  get connecting(): boolean {
    return this.#connecting;
  }

  get readable(): boolean {
    return !this.#destroyed && !this.#readableEnded;
  }

  get writable(): boolean {
    return !this.#destroyed && !this.#writableEnded;
  }

  get readableEnded(): boolean {
    return this.#readableEnded;
  }

  get writableEnded(): boolean {
    return this.#writableEnded;
  }

  get readableLength(): number {
    return this.#heldBytes;
  }

  get writableLength(): number {
    return this.#queued;
  }

  get localAddress(): string | undefined {
    return this.#local()?.address;
  }

  get localPort(): number | undefined {
    return this.#local()?.port;
  }

  #localCache: { address: string; port: number } | null = null;

  #local(): { address: string; port: number } | null {
    if (this.#localCache === null && !this.#destroyed && !this.#connecting) this.#localCache = this.#io.addon.ioAddress(this.#id, true);
    return this.#localCache;
  }

  /** TLS is terminated by the addon on this socket: 'secure' comes first, then plaintext. */
  get encrypted(): boolean {
    return this.#encrypted;
  }

  /**
   * A natively accepted connection that nothing read from (a hold-mode listener's) starts the server side of a
   * TLS handshake in the addon with the contexts of tls server `serverId`: 'secure' (or 'error') follows, then
   * plaintext. False when it cannot (no native TLS in the addon, the connection is not fresh, OpenSSL refused):
   * the socket is unchanged.
   */
  startTls(serverId: number): boolean {
    const start = this.#io.addon.ioStartTls;
    if (start === undefined || this.#destroyed || this.#encrypted || this.#readableEnded || this.#held.length > 0 || this.#queued > 0) return false;
    try {
      start.call(this.#io.addon, this.#id, serverId);
    } catch {
      return false;
    }
    this.#encrypted = true;
    return true;
  }

  /** @internal Accepted by a peek-mode listener and not committed yet (the addon says so in takeWhole()). */
  _peeking = false;

  /** @internal The addon decided at accept that this connection is terminated (NativeListener.passthrough). */
  _terminateAtAccept = false;

  /**
   * Accepted held (nothing read) by a listener with passthrough names, whose whole ClientHello the addon read at
   * accept and found naming nothing passed through: the accept path starts its TLS handshake at once.
   */
  get terminateAtAccept(): boolean {
    return this._terminateAtAccept;
  }

  /** Nothing this connection sent is consumed yet: it can still be handed whole to a new owner (takeWhole). */
  get peeking(): boolean {
    return this._peeking;
  }

  /**
   * A peeking connection stays with JavaScript: the bytes delivered so far leave the kernel's queue and reads go
   * on as on any connection. Anything written to it (an answer) commits it first.
   */
  commit(): void {
    if (!this._peeking) return;
    this._peeking = false;
    if (!this.#destroyed) this.#io.addon.ioCommit?.(this.#id);
  }

  /**
   * A peeking connection stays with JavaScript, but only its first `consumed` bytes (a PROXY header; 0 for none)
   * leave the kernel's queue: everything delivered past them is dropped here and read again by the connection's
   * next reader (startTls: the addon's TLS reads the ClientHello that was peeked at). Paused as it was. False
   * (nothing changed) when it cannot: not peeking, its FIN or an error seen, an event of it still in the batch.
   */
  rewind(consumed: number): boolean {
    const addon = this.#io.addon;
    if (!this._peeking || this.#destroyed || this.#readableEnded || this.#queued > 0 || this.#writableEnded || this.inBatch || this.#held.includes(null)) return false;
    if (addon.ioRewind?.(this.#id, consumed) !== true) return false;
    this._peeking = false;
    this.#held = NONE;
    this.#heldBytes = 0;
    return true;
  }

  /**
   * Gives up a peeking connection with everything it received still queued in the kernel (nothing consumed,
   * nothing written): the fd is the caller's, this socket is done ('close' follows, nothing is closed).
   * Undefined when it cannot (committed, wrote, closed, or the kernel could not peek it).
   */
  takeWhole(): number | undefined {
    const addon = this.#io.addon;
    if (!this._peeking || this.#destroyed || this.#queued > 0 || this.#writableEnded || addon.ioPeeking?.(this.#id) !== true) return undefined;
    this._peeking = false;
    this.#destroyed = true;
    this.#io.sockets[this.#id] = undefined;
    const fd = addon.ioRelease(this.#id);
    this.#held = NONE;
    this.#heldBytes = 0;
    process.nextTick(closed, this, NONE, undefined);
    return fd;
  }

  /**
   * Nothing of this connection waits in JavaScript (no held bytes or undelivered events of the batch being
   * dispatched, no queued, corked or unconfirmed writes), and it is connected, plain, committed and its writing
   * side open: it can change hands as it stands (the splice relay takes it by id, spliceTakeIo).
   */
  get settled(): boolean {
    return !this.#destroyed && !this.#connecting && !this.#encrypted && !this._peeking && !this.#writableEnded &&
      this.#held.length === 0 && this.#queued === 0 && this.#corked === 0 && this.#writeCbs.length === 0 && !this.inBatch;
  }

  /**
   * The batch being dispatched still holds an event of this connection (bytes the addon read, a FIN, an error)
   * after the one being handled: it is delivered before the batch ends (a tick from now at the latest).
   */
  get inBatch(): boolean {
    return laterInBatch(this.#io, this.#id);
  }

  /** @internal The addon's id of this connection (the TLS relay takes it over by id). */
  get ioId(): number {
    return this.#id;
  }

  /**
   * @internal The addon took this connection over (fd and TLS session, for the TLS relay): this object is done,
   * as after destroy(), but closes nothing ('close' follows).
   */
  released(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#io.sockets[this.#id] = undefined;
    this.#held = NONE;
    this.#heldBytes = 0;
    process.nextTick(closed, this, NONE, undefined);
  }

  /** @internal accept4's descriptor number (-1: not accepted natively), as the ACCEPT event carried it. */
  _fdNumber = -1;

  /**
   * The descriptor's number for counting descriptors (the worker's fd budget), without a call into the addon;
   * not for I/O on it (`fd` is: the addon then knows the fd may be shared).
   */
  get fdNumber(): number {
    if (this.#destroyed) return -1;
    return this._fdNumber >= 0 ? this._fdNumber : this.fd;
  }

  /** The kernel fd, still owned by this socket (the splice relay takes a dup, then destroys this). */
  get fd(): number {
    return this.#destroyed ? -1 : this.#io.addon.ioFd(this.#id);
  }

  // --- events from dispatch() ---

  /** @internal */
  _onData(chunk: Buffer): void {
    if (this.#paused || this.#held.length > 0) {
      (this.#held === NONE ? (this.#held = []) : this.#held).push(chunk);
      this.#heldBytes += chunk.length;
      return;
    }
    this.#deliver(chunk);
  }

  /** A chunk to whoever takes 'data': the owner, else the data receiver, else the 'data' listeners. */
  #deliver(chunk: Buffer): void {
    if (this.#owner !== null) this.#owner.socketData(chunk);
    else if (this.#dataTo !== null) this.#dataTo.socketData(chunk);
    else this.emit('data', chunk);
  }

  /**
   * @internal A STARTED event: to the owner that takes it; otherwise (never: only such an owner marks its socket
   * ready) the upstream request is dropped and the head is data as any read.
   */
  _onStarted(start: NativeStart, head: Buffer): void {
    const owner = this.#owner;
    if (owner?.socketStarted !== undefined && !this.#paused && this.#held.length === 0) {
      owner.socketStarted(start, head);
      return;
    }
    start.upstream.destroy();
    this._onData(head);
  }

  /** @internal An answer record (see DataReceiver.socketAnswer); an armed upstream is never paused by JS. */
  _onAnswer(status: number, flags: number, headBytes: number, bodyBytes: number, clientQueued: number, sentDown: Buffer | null): void {
    this.#dataTo?.socketAnswer?.(status, flags, headBytes, bodyBytes, clientQueued, sentDown);
  }

  /**
   * The addon wrote to this socket for an armed upstream (answerTo) and `queued` bytes wait in its queue now: what
   * writableLength says, so that an end or a close waits for them ('drain' comes when they are out).
   */
  answerQueued(queued: number): void {
    if (!this.#destroyed) this.#queued = queued;
  }

  /**
   * Arms this upstream socket: its next read is tried by the addon as the answer to relay to `client` (a plain or
   * natively terminated NativeSocket), rewritten with route plan `plan` (answerPlan), `extra` header lines and the
   * Connection line `conn` (ANSWER_CONN_*). Taken, it reaches the data receiver as socketAnswer records; not taken,
   * as data, as always. False: not armed (no addon support, or a socket that cannot take part).
   */
  answerTo(client: NativeSocket, plan: number, extra: string, conn: number): boolean {
    const arm = this.#io.addon.ioAnswer;
    if (arm === undefined || !this.#armableFor(client)) return false;
    return arm.call(this.#io.addon, this.#id, client.#id, plan, extra, conn);
  }

  /** Neither socket is closed, this one holds no bytes JS has not seen, and JS is not batching writes to the client. */
  #armableFor(client: NativeSocket): boolean {
    return !this.#destroyed && !this.#paused && this.#held.length === 0 && !client.#destroyed && client.#corked === 0;
  }

  /**
   * Arms this FastCGI upstream socket (answerTo's for FastCGI): an answer of request `requestId` whose first STDOUT
   * bytes are `cgi` (a route's remembered CGI head) goes to `client` as `head` and chunks, read and framed by the
   * addon (fcgi-answer.h), and reaches the data receiver as socketAnswer records; any other comes as data. False:
   * not armed.
   */
  fcgiAnswerTo(client: NativeSocket, cgi: Uint8Array, head: Uint8Array, requestId: number): boolean {
    const arm = this.#io.addon.ioFcgiAnswer;
    if (arm === undefined || !this.#armableFor(client)) return false;
    return arm.call(this.#io.addon, this.#id, client.#id, cgi, head, requestId);
  }

  /**
   * Arms this upstream socket, which was sent a WebSocket upgrade with the Sec-WebSocket-Key `key`: its next read is
   * tried by the addon as the 101 (response-head.h RewriteUpgrade: its Sec-WebSocket-Accept must be the value `key`
   * asks for, computed by the addon, or by `acceptOf` for an addon without ioAnswerUpgradeKey); taken, the 101 JS
   * would write (route plan `plan`, `extra` header lines) and the bytes behind it go to `client` at once, and one
   * socketAnswer record with ANSWER_UPGRADE and those bytes follows; not taken, the bytes come as data, as always.
   * False: not armed.
   */
  upgradeTo(client: NativeSocket, plan: number, extra: string, key: string, acceptOf: (key: string) => string): boolean {
    const addon = this.#io.addon;
    if ((addon.ioAnswerUpgradeKey === undefined && addon.ioAnswerUpgrade === undefined) || !this.#armableFor(client)) return false;
    if (addon.ioAnswerUpgradeKey !== undefined) return addon.ioAnswerUpgradeKey(this.#id, client.#id, plan, extra, key);
    return addon.ioAnswerUpgrade!(this.#id, client.#id, plan, extra, acceptOf(key));
  }

  /**
   * Disarms (answerTo, fcgiAnswerTo, upgradeTo): 0 it was not armed, 1 armed with nothing taken, 2 relaying a body. `headOnly`: only before
   * the head was taken (a body being relayed goes on, and 2 says so).
   */
  answerOff(headOnly = false): number {
    if (this.#destroyed) return 0;
    return this.#io.addon.ioAnswerOff?.(this.#id, headOnly) ?? 0;
  }

  /** @internal */
  _onEof(): void {
    if (this.#paused || this.#held.length > 0) {
      (this.#held === NONE ? (this.#held = []) : this.#held).push(null);
      return;
    }
    this.#ended();
  }

  #ended(): void {
    if (this.#readableEnded || this.#destroyed) return;
    this.#readableEnded = true;
    if (this.#owner !== null) this.#owner.socketEnd();
    else this.emit('end');
    if (this.#destroyed) return;
    if (!this.#allowHalfOpen && !this.#writableEnded) this.end();
    else this.#maybeClose();
  }

  /** @internal */
  _onDrain(): void {
    // the event was collected before this batch's handlers ran: a write since then may have queued more
    const left = this.#io.addon.ioQueued(this.#id);
    if (left > 0) {
      this.#queued = left;
      return; // the native side keeps waiting for POLLOUT and reports the real drain later
    }
    this.#queued = 0;
    this.#flushed();
  }

  /** Everything written so far is in the kernel: write callbacks, a pending end, 'drain'. */
  #flushed(): void {
    const cbs = this.#writeCbs;
    this.#writeCbs = NONE;
    for (const cb of cbs) cb(null);
    if (this.#writableEnded) this.#finished();
    if (this.#needDrain && !this.#destroyed) {
      this.#needDrain = false;
      this.#emitDrain();
    }
  }

  /** @internal */
  _onConnect(errno: number): void {
    this.#connecting = false;
    if (errno !== 0) {
      this.destroy(errnoError('connect', errno));
      return;
    }
    this.emit('connect');
    // nothing was queued while connecting (or only empty writes): no DRAIN follows, so settle here
    if (!this.#destroyed && this.#queued === 0) this.#flushed();
  }

  /** @internal */
  _onSecure(): void {
    this.emit('secure');
  }

  /** What the TLS handshake negotiated; null before it completed, after destroy, or without TLS. */
  tlsInfo(): NativeTlsInfo | null {
    if (!this.encrypted || this.#destroyed) return null;
    return this.#io.addon.ioTlsInfo?.(this.#id) ?? null;
  }

  /** @internal */
  _onError(err: Error): void {
    // OpenSSL's own words for a TLS failure, while the session still exists
    if (this.encrypted) {
      const why = this.#io.addon.ioTlsError?.(this.#id);
      if (why) err.message = `${err.message}: ${why}`;
    }
    this.destroy(err);
  }

  // --- the net.Socket surface ---

  write(data: Uint8Array | string, encodingOrCb?: BufferEncoding | ((err?: Error | null) => void), cb?: (err?: Error | null) => void): boolean {
    const callback = typeof encodingOrCb === 'function' ? encodingOrCb : cb;
    if (this._peeking) this.commit();
    if (this.#destroyed || this.#writableEnded) {
      if (callback !== undefined) process.nextTick(callback, new Error(this.#destroyed ? 'write after destroy' : 'write after end'));
      return false;
    }
    if (typeof data === 'string' && encodingOrCb === 'latin1' && this.#corked === 0) return this.#send(data, callback);
    const bytes = typeof data === 'string' ? Buffer.from(data, typeof encodingOrCb === 'string' ? encodingOrCb : 'utf8') : data;
    if (this.#corked > 0) {
      (this.#corkedChunks === NONE ? (this.#corkedChunks = []) : this.#corkedChunks).push(bytes);
      this.#corkedBytes += bytes.length;
      // kept apart: a drain of earlier bytes must not run them before their own bytes were sent
      if (callback !== undefined) (this.#corkedCbs === NONE ? (this.#corkedCbs = []) : this.#corkedCbs).push(callback);
      if (this.#queued + this.#corkedBytes < HIGH_WATER_MARK) return true;
      this.#needDrain = true;
      return false;
    }
    return this.#send(bytes, callback);
  }

  /** `bytes` as a string: one byte per character (latin1), as HTTP heads are built. */
  #send(bytes: Uint8Array | string, callback: ((err?: Error | null) => void) | undefined): boolean {
    if (bytes.length === 0 && this.#queued === 0 && !this.#connecting) {
      if (callback !== undefined) process.nextTick(callback, null);
      return true;
    }
    const r = typeof bytes === 'string' ? this.#io.addon.ioWriteLatin1(this.#id, bytes) : this.#io.addon.ioWrite(this.#id, bytes);
    if (r < 0) {
      const err = errnoError('write', -r);
      if (callback !== undefined) process.nextTick(callback, err);
      process.nextTick(() => this.destroy(err));
      return false;
    }
    this.#queued = r;
    if (callback !== undefined) {
      if (r === 0 && !this.#connecting) process.nextTick(callback, null);
      else (this.#writeCbs === NONE ? (this.#writeCbs = []) : this.#writeCbs).push(callback);
    }
    if (r >= HIGH_WATER_MARK) {
      this.#needDrain = true;
      return false;
    }
    return true;
  }

  cork(): void {
    this.#corked++;
  }

  /** Whether sendFile() works on this socket (the addon has it; not through a TLS session). */
  get canSendFile(): boolean {
    return this.#io.addon.ioSendFile !== undefined && !this.#encrypted;
  }

  /**
   * Sends `count` bytes of the open file `fd` from `offset` with sendfile(2). Returns the bytes the kernel took:
   * fewer than `count` means the socket is full and 'drain' follows; negative is -errno (the socket is then
   * destroyed; -ENODATA: the file ended before `offset`).
   */
  sendFile(fd: number, offset: number, count: number): number {
    if (this._peeking) this.commit();
    if (this.#destroyed || this.#writableEnded || this.#corked > 0) return -(constants.errno.EPIPE ?? 32);
    const r = this.#io.addon.ioSendFile!(this.#id, fd, offset, count);
    if (r < 0) {
      if (r !== -(constants.errno.ENODATA ?? 61)) process.nextTick(() => this.destroy(errnoError('sendfile', -r)));
      return r;
    }
    if (r < count) this.#needDrain = true;
    return r;
  }

  uncork(): void {
    if (this.#corked === 0 || --this.#corked > 0) return;
    const chunks = this.#corkedChunks;
    const cbs = this.#corkedCbs;
    this.#corkedChunks = NONE;
    this.#corkedCbs = NONE;
    this.#corkedBytes = 0;
    if (this.#destroyed) return;
    // one callback for the corked writes: settled like any write (now, on the drain, or with the error)
    const settle = cbs.length === 0 ? undefined : (err?: Error | null) => {
      for (const cb of cbs) cb(err);
    };
    if (chunks.length > 0) this.#send(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), settle);
    else if (settle !== undefined) this.#send(EMPTY, settle);
    // a corked write said false but the kernel took everything: no native drain will come, so say it here
    if (this.#needDrain && this.#queued === 0 && !this.#connecting && !this.#destroyed) {
      this.#needDrain = false;
      process.nextTick(() => {
        if (!this.#destroyed) this.#emitDrain();
      });
    }
  }

  /**
   * TLS: sends close_notify now when nothing is queued; true when it left whole, so destroy() may follow at once
   * (the FIN comes after it). False otherwise (plain, bytes queued, a full socket): end() as usual.
   */
  closeNotify(): boolean {
    return this.encrypted && !this.#destroyed && !this.#writableEnded && !this._peeking && this.#queued === 0 && this.#corked === 0 && this.#io.addon.ioCloseNotify?.(this.#id) === true;
  }

  end(dataOrCb?: Uint8Array | string | (() => void), cb?: () => void): this {
    const callback = typeof dataOrCb === 'function' ? dataOrCb : cb;
    if (dataOrCb !== undefined && typeof dataOrCb !== 'function') this.write(dataOrCb);
    if (callback !== undefined) (this.#finishCbs === NONE ? (this.#finishCbs = []) : this.#finishCbs).push(callback);
    if (this._peeking) this.commit();
    if (this.#writableEnded || this.#destroyed) return this;
    if (this.#corked > 0) {
      this.#corked = 1;
      this.uncork();
    }
    this.#writableEnded = true;
    this.#io.addon.ioShutdown(this.#id);
    if (this.#queued === 0 && !this.#connecting) this.#finished();
    return this;
  }

  #finished(): void {
    if (this.#writableFinished) return;
    this.#writableFinished = true;
    const cbs = this.#finishCbs;
    this.#finishCbs = NONE;
    for (const cb of cbs) process.nextTick(cb);
    this.emit('finish');
    this.#maybeClose();
  }

  /** Both directions done: close (net.Socket's autoDestroy). */
  #maybeClose(): void {
    if (this.#readableEnded && this.#writableFinished) this.destroy();
  }

  destroySoon(): void {
    if (!this.#writableEnded) this.end();
    if (this.#writableFinished) this.destroy();
    else (this.#finishCbs === NONE ? (this.#finishCbs = []) : this.#finishCbs).push(() => this.destroy());
  }

  destroy(error?: Error): this {
    if (this.#destroyed) return this;
    this.#destroyed = true;
    this.#io.sockets[this.#id] = undefined;
    this.#io.addon.ioClose(this.#id);
    this.#held = NONE;
    this.#heldBytes = 0;
    const cbs = this.#writeCbs.length === 0 && this.#corkedCbs.length === 0 ? NONE : this.#writeCbs.concat(this.#corkedCbs);
    this.#writeCbs = NONE;
    this.#corkedCbs = NONE;
    this.#corkedChunks = NONE;
    process.nextTick(closed, this, cbs, error);
    return this;
  }

  /** @internal destroy()'s second half, a tick later (as net.Socket): write callbacks fail, then 'error', 'close'. */
  _closed(cbs: Array<(err?: Error | null) => void>, error: Error | undefined): void {
    for (const cb of cbs) cb(error ?? new Error('socket destroyed'));
    const owner = this.#owner;
    if (owner !== null) {
      if (error !== undefined) owner.socketError(error);
      owner.socketClose();
      // anyone else listening (the owner takes data, end and drain alone; close and error are everyone's)
      if (error !== undefined && this.listenerCount('error') > 0) this.emit('error', error);
    } else if (error !== undefined) this.emit('error', error);
    this.emit('close', error !== undefined);
  }

  /**
   * Delivers data, end and drain to `owner` alone, and error and close to it first, instead of listeners (a
   * connection's handlers without a listener or closure per connection); null gives them back to listeners.
   */
  setOwner(owner: SocketOwner | null): void {
    this.#owner = owner;
  }

  /**
   * Delivers 'data' to `receiver` alone instead of 'data' listeners (an owner, when set, still comes first);
   * the receiver may emit it to the listeners itself. null gives 'data' back to listeners.
   */
  setDataReceiver(receiver: DataReceiver | null): void {
    this.#dataTo = receiver;
  }

  #emitDrain(): void {
    if (this.#owner !== null) this.#owner.socketDrain();
    else this.emit('drain');
  }

  pause(): this {
    if (this.#paused || this.#destroyed) return this;
    this.#paused = true;
    this.#io.addon.ioRead(this.#id, false);
    return this;
  }

  isPaused(): boolean {
    return this.#paused;
  }

  read(): Buffer | null {
    const chunk = this.#held[0];
    if (chunk === undefined || chunk === null) return null;
    // a non-empty list is never NONE
    this.#held.shift();
    this.#heldBytes -= chunk.length;
    return chunk;
  }

  resume(): this {
    if (!this.#paused || this.#destroyed) return this;
    this.#paused = false;
    if (!this.#readableEnded) this.#io.addon.ioRead(this.#id, true);
    if (this.#held.length > 0) process.nextTick(flushHeld, this);
    return this;
  }

  /** Puts `chunk` back in front of what is still to be delivered (peeking never loses a byte). */
  unshift(chunk: Buffer): void {
    if (this.#destroyed || chunk.length === 0) return;
    (this.#held === NONE ? (this.#held = []) : this.#held).unshift(chunk);
    this.#heldBytes += chunk.length;
    if (!this.#paused) process.nextTick(flushHeld, this);
  }

  /**
   * Hands the connection to Node as a paused net.Socket (the seam where Node's TLS takes a natively accepted
   * connection) and gives up this socket: what it read and did not deliver goes back in front of the net.Socket.
   * Only for a connection that wrote nothing. Undefined when it is already closed.
   */
  toNetSocket(): net.Socket | undefined {
    if (this.#destroyed) return undefined;
    this.commit(); // what was delivered is in `held` below, not to be read twice
    const held = this.#held.filter((c): c is Buffer => c !== null);
    this.#destroyed = true;
    this.#io.sockets[this.#id] = undefined;
    const fd = this.#io.addon.ioRelease(this.#id);
    this.#held = NONE;
    this.#heldBytes = 0;
    let socket: net.Socket;
    try {
      // pauseOnCreate: as a net.Server's pauseOnConnect, nothing is read until its new owner resumes it
      socket = new net.Socket({ fd, allowHalfOpen: this.#allowHalfOpen, readable: true, writable: true, pauseOnCreate: true } as net.SocketConstructorOpts);
    } catch {
      (this.#io.addon as IoAddon & NativeAddon).close(fd);
      return undefined;
    }
    // a FIN already read is read again by libuv (a TCP socket keeps answering 0 after it)
    for (let i = held.length - 1; i >= 0; i--) socket.unshift(held[i]!);
    return socket;
  }

  /** @internal Delivers what arrived while paused, in order, until paused again. */
  _flushHeld(): void {
    while (!this.#paused && !this.#destroyed && this.#held.length > 0) {
      const chunk = this.#held.shift()!;
      if (chunk === null) {
        this.#ended();
        continue;
      }
      this.#heldBytes -= chunk.length;
      this.#deliver(chunk);
    }
  }


  setNoDelay(): this {
    return this; // always on (io.cc sets TCP_NODELAY)
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    if (!this.#destroyed) this.#io.addon.ioKeepAlive(this.#id, enable, Math.floor(initialDelay / 1000));
    return this;
  }

  setTimeout(timeout: number): this {
    // Portico never uses socket timers (deadlines are swept); 0 is the only value its callers pass
    if (timeout !== 0) throw new Error('NativeSocket has no socket timer; use the connection registry deadlines');
    return this;
  }
}

/**
 * A listening socket served by native I/O: the addon accepts in batches and each connection reaches `onConnection`
 * as a NativeSocket, paused when the mode is 'hold' (nothing read: the bytes stay in the kernel for splice or
 * Node's TLS), else reading. `close()` stops accepting at once and closes the socket (the kernel resets what
 * waited in its queue, as closing a net.Server does); `end()` accepts that queue first.
 */
export class NativeListener extends EventEmitter {
  readonly #io: Io;
  readonly #id: number;
  #mode: AcceptMode;
  #defer = false;
  #closed = false;
  #ended: Promise<void> | undefined;
  #onEnded: (() => void) | undefined;
  /** end()'s timer: the deferral grace's end, then the bound (the socket closes even if its queue never emptied). */
  #endTimer: NodeJS.Timeout | undefined;
  #resumeTimer: NodeJS.Timeout | undefined;
  onConnection: (socket: NativeSocket) => void;
  readonly #address: { address: string; port: number; family: 'IPv4' | 'IPv6' };

  /** @internal use listenNative() */
  constructor(io: Io, fd: number, mode: AcceptMode, onConnection: (socket: NativeSocket) => void, deferAccept: boolean) {
    super();
    this.#io = io;
    this.#mode = mode;
    this.onConnection = onConnection;
    this.#id = io.addon.ioListen(fd, MODE[mode]);
    io.listeners.set(this.#id, this);
    const a = io.addon.ioAddress(this.#id, true);
    this.#address = { address: a?.address ?? '', port: a?.port ?? 0, family: isIP(a?.address ?? '') === 6 ? 'IPv6' : 'IPv4' };
    this.deferAccept = deferAccept;
  }

  get mode(): AcceptMode {
    return this.#mode;
  }

  /** What the next accepted connections do first. */
  set mode(mode: AcceptMode) {
    if (this.#closed || mode === this.#mode) return;
    this.#mode = mode;
    this.#io.addon.ioListenMode(this.#id, MODE[mode]);
  }

  /**
   * The `sni` names a peek-mode TLS listener passes through (certificates beside them, no PROXY header), or
   * undefined. With them, the addon reads each new connection's ClientHello at accept: a whole one that names none
   * of them comes as a held socket with `terminateAtAccept` (no peek, no preface in JS); every other connection is
   * peeked as before. Replaced by a reload; false when the addon cannot decide at accept (older build): all peeked.
   */
  setPassthrough(names: readonly string[] | undefined): boolean {
    if (this.#closed || this.#io.addon.ioListenPassthrough === undefined) return false;
    this.#io.addon.ioListenPassthrough(this.#id, names === undefined || names.length === 0 ? null : names);
    return true;
  }

  /**
   * Accept a connection only once its first bytes came (TCP_DEFER_ACCEPT), so its accept and its first read take
   * one wake-up: for listeners whose clients speak first (an HTTP request, a PROXY header, a ClientHello), never for
   * one whose server may speak first. A client that stays silent is accepted ~1 s after its handshake (io.cc
   * kDeferAcceptS). An addon without it, or a kernel that refuses it, accepts at the handshake as before.
   */
  get deferAccept(): boolean {
    return this.#defer;
  }

  set deferAccept(on: boolean) {
    if (this.#closed || on === this.#defer || this.#io.addon.ioListenDefer === undefined) return;
    try {
      this.#io.addon.ioListenDefer(this.#id, on);
      this.#defer = on;
    } catch {
      // refused by the kernel: connections are accepted at the handshake, as without the option
    }
  }

  /** TCP_DEFER_ACCEPT as the kernel has it on this socket, in seconds (0: accepted at the handshake; undefined: closed). */
  deferAcceptSeconds(): number | undefined {
    if (this.#closed || this.#io.addon.ioListenDefer === undefined) return this.#closed ? undefined : 0;
    return this.#io.addon.ioListenDefer(this.#id);
  }

  address(): { address: string; port: number; family: 'IPv4' | 'IPv6' } {
    return this.#address;
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#resumeTimer);
    this.#io.listeners.delete(this.#id);
    this.#io.addon.ioClose(this.#id);
  }

  /**
   * Stops accepting without resetting the clients already in the kernel's accept queue (a hand-over, a
   * shutdown): they are accepted and reach onConnection as usual, then the socket closes. Resolves once closed.
   * A client whose handshake is still in flight when it closes is reset (net.ipv4.tcp_migrate_req=1 moves those
   * to another listener of the same SO_REUSEPORT group instead).
   *
   * A deferring listener's clients that completed their handshake but whose first bytes had not come yet wait in
   * the SYN queue, not the accept queue: closing once the accept queue is empty would reset them. So it first
   * clears TCP_DEFER_ACCEPT (a handshake completing from now on is queued for accept at once), then goes on
   * accepting while the kernel still lists connections of its port in a SYN queue that may be clients (ioSynQueued,
   * looked at every SYN_QUEUE_POLL_MS), for DEFER_END_GRACE_MS at most: by then every connection whose SYN came
   * before the end is in the accept queue (its bytes came, or its request's first timer sent the SYN-ACK again and
   * the client's ACK completed it). Only then does it stop as a listener that never deferred does (bounded by
   * LISTEN_END_MAX_MS from there). With no such connection (a quiet port) that is at once, as before; so too when the
   * port holds only a SYN flood's requests older than their first SYN-ACK resend (io.cc SynQueued passes over them).
   * A flood's younger requests cannot be told from held clients (the kernel's record has no "ACKed" bit): while
   * some are there, the end waits for them, DEFER_END_GRACE_MS at most.
   */
  end(): Promise<void> {
    if (this.#closed) return this.#ended ?? Promise.resolve();
    const addon = this.#io.addon;
    if (addon.ioListenEnd === undefined) {
      this.close();
      return (this.#ended = Promise.resolve());
    }
    const deferred = this.#defer;
    this.deferAccept = false;
    this.#closed = true;
    clearTimeout(this.#resumeTimer);
    // kept in io.listeners until LISTEN_END: the connections accepted before it still find their listener
    this.#ended = new Promise((resolve) => {
      this.#onEnded = resolve;
    });
    if (deferred) this.#endAfterSynQueue(performance.now() + DEFER_END_GRACE_MS);
    else this.#endQueue();
    return this.#ended;
  }

  /**
   * Whether a connection of this listener's port waits in a SYN queue (handshake in flight, or held back by
   * TCP_DEFER_ACCEPT): 1 yes, 0 no, -1 unknown (the kernel's list could not be read, or the addon is older).
   */
  synQueued(): number {
    if (this.#closed && this.#onEnded === undefined) return -1;
    return this.#io.addon.ioSynQueued?.(this.#id) ?? -1;
  }

  /** end() of a deferring listener: the accept-queue rule once no connection of its port waits in a SYN queue. */
  #endAfterSynQueue(deadline: number): void {
    const queued = this.synQueued();
    if (queued === 0 || performance.now() >= deadline) {
      this.#endQueue();
      return;
    }
    // -1 (the kernel's list could not be read): the whole grace
    const wait = queued < 0 ? deadline - performance.now() : Math.min(SYN_QUEUE_POLL_MS, deadline - performance.now());
    this.#endTimer = setTimeout(() => this.#endAfterSynQueue(deadline), wait).unref();
  }

  /** end()'s second part: accept what the accept queue holds, then close (at once when it is empty). */
  #endQueue(): void {
    if (this.#io.addon.ioListenEnd!(this.#id)) {
      this._onEnd();
      return;
    }
    // clients arriving as fast as they are accepted would keep the queue from ever being empty: bounded
    this.#endTimer = setTimeout(() => {
      if (this.#onEnded === undefined) return;
      this.#io.addon.ioClose(this.#id);
      this._onEnd();
    }, LISTEN_END_MAX_MS).unref();
  }

  /** @internal LISTEN_END: the queue end() left was accepted and the socket closed. */
  _onEnd(): void {
    clearTimeout(this.#endTimer);
    this.#io.listeners.delete(this.#id);
    this.#onEnded?.();
    this.#onEnded = undefined;
  }

  /** Stops accepting and hands the listening socket's fd (still open, still listening, not deferring) to the caller. */
  release(): number {
    if (this.#closed) throw new Error('listener already closed');
    this.#closed = true;
    clearTimeout(this.#resumeTimer);
    this.#io.listeners.delete(this.#id);
    return this.#io.addon.ioRelease(this.#id);
  }

  /** @internal */
  _onAccept(socket: NativeSocket): void {
    this.onConnection(socket);
  }

  /**
   * @internal accept4 failed for want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM): the addon paused this
   * listener (a level-triggered queue it cannot drain would spin); it resumes after a short pause.
   */
  _onAcceptError(errno: number): void {
    if (this.#closed) return;
    this.emit('error', errnoError('accept', errno));
    clearTimeout(this.#resumeTimer);
    this.#resumeTimer = setTimeout(() => {
      if (!this.#closed) this.#io.addon.ioRead(this.#id, true);
    }, ACCEPT_PAUSE_MS).unref();
  }
}

/** How long a listener pauses after accept4 ran out of a resource (libuv retries at once and spins; nginx waits 500 ms). */
const ACCEPT_PAUSE_MS = 100;
/** How long end() accepts a queue that never empties before it closes the socket anyway. */
const LISTEN_END_MAX_MS = 1000;
/**
 * How long a deferring listener's end() goes on accepting before the rule above applies: a connection whose SYN came
 * before the end is promoted to the accept queue by its first bytes or, silent, by its request's first timer (1 s
 * after the SYN: the SYN-ACK retransmit it ACKs), so 1 s, plus 250 ms for the timer wheel's slack and that ACK's
 * round trip.
 */
const DEFER_END_GRACE_MS = 1250;
/** How often a deferring listener's end() looks whether connections of its port still wait in a SYN queue. */
const SYN_QUEUE_POLL_MS = 25;
/** The longest a listener's end() takes (a deferring one's grace, then the queue's bound): the drain waits for it. */
export const LISTEN_END_BOUND_MS = DEFER_END_GRACE_MS + LISTEN_END_MAX_MS;

/**
 * Serves listening socket `fd` (bound, listening, owned by the caller until this returns) with native accept
 * (`deferAccept`: see NativeListener.deferAccept); undefined when native I/O is not available (PORTICO_NATIVE_IO=0,
 * no addon): the caller keeps Node's net.Server.
 */
export function listenNative(fd: number, mode: AcceptMode, onConnection: (socket: NativeSocket) => void, deferAccept = false): NativeListener | undefined {
  const state = ioOf();
  if (state === null) return undefined;
  return new NativeListener(state, fd, mode, onConnection, deferAccept);
}

/**
 * Moves a freshly accepted net.Socket that has not read anything onto native I/O: the fd is duplicated, the
 * net.Socket destroyed (libuv closes its copy). Undefined when native I/O is not available or it cannot move.
 */
export function adoptNative(socket: net.Socket, opts: NativeSocketOptions, tlsServerId?: number): NativeSocket | undefined {
  const state = ioOf();
  if (state === null) return undefined;
  if (tlsServerId !== undefined && state.addon.ioAdoptTls === undefined) return undefined;
  const handle = (socket as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0 || socket.readableLength > 0 || socket.destroyed) return undefined;
  const addon = state.addon as IoAddon & NativeAddon;
  let copy: number;
  try {
    copy = addon.dup(fd);
  } catch {
    return undefined; // EMFILE: the net.Socket keeps serving
  }
  let id: number;
  try {
    id = tlsServerId === undefined ? addon.ioAdopt(copy) : addon.ioAdoptTls!(copy, tlsServerId);
  } catch {
    addon.close(copy);
    return undefined;
  }
  const remoteAddress = socket.remoteAddress;
  const remotePort = socket.remotePort;
  socket.on('error', noop);
  socket.destroy();
  return new NativeSocket(state, id, remoteAddress, remotePort, false, opts, false, tlsServerId !== undefined);
}

/**
 * A native TCP connection to an IP literal, or a Unix stream socket's for a `unix:/path` target (`host` the path,
 * `port` 0, as target.ts netAddress reads them); 'connect' or 'error' follows (a loopback or Unix one is mostly
 * established when this returns: its 'connect' comes in the same turn of the loop, without a wake-up). Undefined
 * when native I/O is not available, `host` is a name (resolving names is net.connect's job), the addon has no
 * Unix connect, or the connect failed at once (a Unix one never fails later: refused, ENOENT, EACCES, a full
 * backlog's EAGAIN): net.connect then tries it and reports the failure as it always has.
 * A Unix socket's remoteAddress and remotePort are undefined, as a node:net pipe's.
 */
export function connectNative(host: string, port: number, opts: NativeSocketOptions): NativeSocket | undefined {
  const state = ioOf();
  if (state === null) return undefined;
  const unix = port === 0 && host.startsWith('/');
  if (unix ? state.addon.ioConnectUnix === undefined : isIP(host) === 0) return undefined;
  const r = unix ? state.addon.ioConnectUnix!(host) : state.addon.ioConnect(host, port);
  // failed at once (EMFILE, no route...): net.connect reports the same failure the usual way
  if (r < 0) return undefined;
  const address = unix ? undefined : host;
  const remotePort = unix ? undefined : port;
  if (r < CONNECTED_NOW) return new NativeSocket(state, r, address, remotePort, true, opts);
  // established inside connect(2) (loopback): 'connect' once the current callback and its promise jobs are done
  // (setImmediate, not nextTick: a caller may attach its listener after an await, as with the event)
  const socket = new NativeSocket(state, r - CONNECTED_NOW, address, remotePort, true, opts);
  socket.connectedNow = true;
  if (opts.connectListenerNow === true) process.nextTick(connectedNow, socket);
  else setImmediate(connectedNow, socket);
  return socket;
}

/** ioConnect's flag for a connection established at once (io.cc kConnectedNow): no CONNECT event comes for it. */
const CONNECTED_NOW = 1 << 30;

function connectedNow(socket: NativeSocket): void {
  if (!socket.destroyed) socket._onConnect(0);
}
