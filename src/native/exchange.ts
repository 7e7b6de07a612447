// The addon's native FastCGI exchange (src/native/exchange.{h,cc}), as JS drives it: a current config (the route
// table, the head limits, the routes the addon may start with their params plans, the script cache, the head memos),
// the client connections marked ready between exchanges, and the idle FPM connections the pools lend it. What the
// addon starts comes back as a STARTED event (io.ts NativeStart) that handlers/fastcgi.ts adopts. Off unless
// PORTICO_NATIVE_EXCHANGE=1 (read once), and without native I/O or an addon that has it.
import { native } from './addon.js';
import { nativeIoAvailable, nativeStarted, type NativeSocket } from './io.js';

interface ExchangeAddon {
  exConfig(table: object, limits: [number, number, number], routes: number): number;
  exRoute(config: number, route: number, fixed: Uint8Array, overridden: readonly string[], perRequest: boolean, pool: number): void;
  exDrop(): void;
  exReady(client: number, config: number, trusted: boolean, serverPort: number): void;
  exUnready(client: number): void;
  exScript(config: number, route: number, path: string, pairs: string, untilMs: number): void;
  exScriptForget(config: number, route: number, path: string): void;
  exMemo(config: number, route: number, cgi: Uint8Array | null, head: Uint8Array | null, shape: number, status: number): void;
  exLend(pool: number, target: number, conn: number): void;
  exUnlend(conn: number): number;
  exPoolDrop(pool: number): void;
  exStats(): { declined: number; scripts: number };
}

let addon: ExchangeAddon | null | undefined;

function addonOf(): ExchangeAddon | null {
  if (addon !== undefined) return addon;
  const a = native() as unknown as Partial<ExchangeAddon> | undefined;
  addon = process.env.PORTICO_NATIVE_EXCHANGE === '1' && a?.exConfig !== undefined && nativeIoAvailable() ? (a as ExchangeAddon) : null;
  return addon;
}

/** Whether the addon may start FastCGI exchanges (PORTICO_NATIVE_EXCHANGE=1, native I/O, an addon that has it). */
export function nativeExchangeOn(): boolean {
  return addonOf() !== null;
}

/** A new current config: its routes are none of the addon's until exchangeRoute hands each over. 0 when off. */
export function exchangeConfig(table: object, limits: [number, number, number], routes: number): number {
  return addonOf()?.exConfig(table, limits, routes) ?? 0;
}

export function exchangeRoute(config: number, route: number, fixed: Uint8Array, overridden: readonly string[], perRequest: boolean, pool: number): void {
  addonOf()?.exRoute(config, route, fixed, overridden, perRequest, pool);
}

/** No config is current (the worker swapped its runtime): every read is JS's until a new one is made. */
export function exchangeDrop(): void {
  addonOf()?.exDrop();
}

/** `socket`'s next read may start an exchange under `config` (it is idle between exchanges, nothing buffered). */
export function exchangeReady(socket: NativeSocket, config: number, trusted: boolean, serverPort: number): void {
  addonOf()?.exReady(socket.ioId, config, trusted, serverPort);
}

export function exchangeScript(config: number, route: number, path: string, pairs: string, untilMs: number): void {
  addonOf()?.exScript(config, route, path, pairs, untilMs);
}

export function exchangeScriptForget(config: number, route: number, path: string): void {
  addonOf()?.exScriptForget(config, route, path);
}

/** The route's head memo (null: none the addon may arm an answer with). */
export function exchangeMemo(config: number, route: number, memo: { cgi: Uint8Array; head: Uint8Array; shape: number; status: number } | null): void {
  const a = addonOf();
  if (a === null) return;
  if (memo === null) a.exMemo(config, route, null, null, 0, 0);
  else a.exMemo(config, route, memo.cgi, memo.head, memo.shape, memo.status);
}

/** Lends an idle FPM connection of pool `pool`'s target `target` to the addon. */
export function lendSocket(pool: number, target: number, socket: NativeSocket): void {
  addonOf()?.exLend(pool, target, socket.ioId);
}

/** What unlendSocket found: the connection is JS's again, the addon took it (a STARTED event follows), or it was not lent. */
export const UNLENT = 1;
export const TAKEN = 0;
export const NOT_LENT = 2;

export function unlendSocket(socket: NativeSocket): number {
  const a = addonOf();
  if (a === null || socket.destroyed) return NOT_LENT;
  return a.exUnlend(socket.ioId);
}

export function dropLendingPool(pool: number): void {
  addonOf()?.exPoolDrop(pool);
}

/** Exchanges the addon started (io.cc's count, made after the records were sent), when it may start any. */
export function nativeExchangesStarted(): number | undefined {
  return addonOf() === null ? undefined : nativeStarted();
}

export function nativeExchangeStats(): { declined: number; scripts: number } | undefined {
  return addonOf()?.exStats();
}
