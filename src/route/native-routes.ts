// A sealed Router compiled for the addon's route table (src/native/route-table.h), once per config: the host classes
// and path lists in the order Router.route reads them (Router.layout), each path_regex as the literal literal-regex.ts
// proves it is (suffix, prefix, whole path, substring) or as V8's, and per route the "candidate" bit, whether its
// request side could be handed over to the addon (handsOverReason). Step 2 of native-notes/request.md: nothing on the
// request path uses it yet; the differential test and the benchmark call routeTableMatch. Builds bytes and a handle,
// never changes one: a reload compiles a new table, and the old one is freed once nothing holds it.
import type { Config, RouteConfig } from '../config/schema.js';
import { parseHeaderTemplate } from '../config/route-rules.js';
import { native } from '../native/addon.js';
import type { CandidateLayout, PathTableLayout, Router } from './router.js';
import { literalRegex, type LiteralKind } from './literal-regex.js';

/** The addon's side (src/native/io.cc): absent from builds before step 2. */
interface RouteTableAddon {
  routeTableCompile?(bytes: Uint8Array): object;
  routeTableMatch?(table: object, host: string, path: string, method: string): number;
}

/** A table compiled by the addon (an opaque handle its finalizer frees), with the routes it was made from. */
export interface NativeRouteTable {
  readonly handle: object;
  readonly routes: number;
}

/** What the addon's table says about a request: the route Router.route picks, no route (404), or "JS decides". */
export type NativeRouteMatch = { readonly kind: 'route'; readonly route: number; readonly candidate: boolean } | { readonly kind: 'none' } | { readonly kind: 'not-mine' };

/** A header `set` value without variables: the same line for every request. */
function fixedTemplate(value: string): boolean {
  const parsed = parseHeaderTemplate(value);
  return parsed.ok && parsed.parts.every((p) => typeof p === 'string');
}

/**
 * Why route `r` must keep its request side in JavaScript, or undefined when it could be handed over: a `forward`
 * route (proxy action; FastCGI later) with none of the switches the addon does not run per request. Listener-wide and
 * runtime switches (a listener's https_redirect, pending ACME tokens, log.request_id) are not a route's: the caller
 * of the table checks those.
 */
export function handsOverReason(config: Config, r: RouteConfig): string | undefined {
  if (r.proxy === undefined) return 'not a proxy route';
  if (r.cors !== undefined) return 'cors';
  if (r.rate_limit !== undefined) return 'rate_limit';
  if (r.compress !== undefined) return 'compress';
  if (r.websocket?.mode === 'terminate') return 'websocket terminate';
  const pool = config.upstreams[r.proxy.upstream];
  if (pool === undefined) return 'missing upstream';
  if (pool.send_proxy_protocol !== 'off') return 'send_proxy_protocol';
  if (pool.tls !== undefined) return 'upstream tls';
  if (typeof pool.balance !== 'string') return `balance ${pool.balance.policy}`;
  for (const section of ['request_headers', 'response_headers'] as const) {
    for (const value of Object.values(r[section].set)) if (!fixedTemplate(value)) return `${section} set with variables`;
  }
  return undefined;
}

/** Little-endian u32s, u8s, length-prefixed UTF-8 strings and byte strings (route-table.cc Reader). */
class Writer {
  #chunks: Buffer[] = [];
  u8(v: number): void {
    this.#chunks.push(Buffer.of(v));
  }
  u32(v: number): void {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(v >>> 0);
    this.#chunks.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u32(b.length);
    this.#chunks.push(b);
  }
  blob(b: Buffer): void {
    this.u32(b.length);
    this.#chunks.push(b);
  }
  raw(b: Buffer): void {
    this.#chunks.push(b);
  }
  bytes(): Buffer {
    return Buffer.concat(this.#chunks);
  }
}

function writeCandidates(w: Writer, list: readonly CandidateLayout[]): void {
  w.u32(list.length);
  for (const c of list) {
    w.u32(c.route);
    if (c.methods === undefined) {
      w.u8(0);
      continue;
    }
    w.u8(1);
    w.u32(c.methods.length);
    for (const m of c.methods) w.str(m);
  }
}

/** route-table.h RegexKind: 0 is a regex the table does not match. */
const LITERAL_KINDS: Record<LiteralKind, number> = { exact: 1, prefix: 2, suffix: 3, contains: 4 };

function writeTable(w: Writer, t: PathTableLayout): void {
  w.u32(t.exact.length);
  for (const e of t.exact) {
    w.str(e.path);
    writeCandidates(w, e.candidates);
  }
  w.u32(t.regexes.length);
  for (const e of t.regexes) {
    // a literal the C++ matches as V8 would, or 0: from this regex on the class is V8's (when its methods fit)
    const lit = literalRegex(e.source, e.flags);
    w.u8(lit === undefined ? 0 : LITERAL_KINDS[lit.kind]);
    w.str(lit?.text ?? '');
    w.blob(Buffer.from(lit?.fold ?? []));
    writeCandidates(w, e.candidates);
  }
  w.u32(t.prefixes.length);
  for (const e of t.prefixes) {
    w.str(e.prefix);
    w.u8(e.boundary ? 1 : 0);
    writeCandidates(w, e.candidates);
  }
  writeCandidates(w, t.any);
}

/** The bytes route-table.cc ParseRouteTable reads: `router` must have been built from `config`. */
export function routeTableBytes(router: Router, config: Config): Buffer {
  const layout = router.layout();
  const w = new Writer();
  w.raw(Buffer.from('PRT2', 'latin1'));
  w.u32(config.routes.length);
  for (const r of config.routes) w.u8(handsOverReason(config, r) === undefined ? 1 : 0);
  const tables: PathTableLayout[] = [...layout.exactHosts.map((h) => h.table), ...layout.wildcards.map((x) => x.table)];
  if (layout.anyHost !== undefined) tables.push(layout.anyHost);
  w.u32(tables.length);
  for (const t of tables) writeTable(w, t);
  w.u32(layout.exactHosts.length);
  layout.exactHosts.forEach((h, i) => {
    w.str(h.host);
    w.u32(i);
  });
  const wildcardsAt = layout.exactHosts.length;
  w.u32(layout.wildcards.length);
  layout.wildcards.forEach((x, i) => {
    w.str(x.suffix);
    w.u32(wildcardsAt + i);
  });
  w.u32(layout.anyHost === undefined ? 0xffffffff : tables.length - 1);
  return w.bytes();
}

function addon(): RouteTableAddon | undefined {
  const a = native() as unknown as RouteTableAddon | undefined;
  return a?.routeTableCompile === undefined || a.routeTableMatch === undefined ? undefined : a;
}

/** The addon's table for `router` (built from `config`), or undefined without an addon that has one. */
export function compileNativeRoutes(router: Router, config: Config): NativeRouteTable | undefined {
  const a = addon();
  if (a === undefined) return undefined;
  return Object.freeze({ handle: a.routeTableCompile!(routeTableBytes(router, config)), routes: config.routes.length });
}

/** Test and benchmark export: route-table.cc MatchRoute through N-API, decoded. */
export function routeTableMatch(table: NativeRouteTable, host: string, path: string, method: string): NativeRouteMatch {
  const v = addon()!.routeTableMatch!(table.handle, host, path, method);
  if (v === -2) return NOT_MINE;
  if (v === -1) return NONE;
  return { kind: 'route', route: v >>> 1, candidate: (v & 1) === 1 };
}

const NOT_MINE: NativeRouteMatch = Object.freeze({ kind: 'not-mine' });
const NONE: NativeRouteMatch = Object.freeze({ kind: 'none' });
