// `portico import-nginx`: an nginx config (nginx-parse.ts) translated into Portico's YAML. What has a Portico
// equivalent is written as such; what does not, or differs in meaning, gets a comment at the place it would
// go, and one line in the summary. The output is meant to pass `portico check`; the comments say what to read.
// Pure: no file is written here, and the translation never starts anything.
import { isIP } from 'node:net';
import path from 'node:path';
import { Document, isNode } from 'yaml';
import { checkOrigin } from './cors.js';
import { dataProblems, formatPath } from './load.js';
import { scriptIndexes } from './schema.js';
import { parseFallback } from './static-fallback.js';
import type { Directive } from './nginx-parse.js';

export interface ImportNote {
  /** Where in the nginx config ("file:line"). */
  readonly source: string;
  readonly message: string;
}

export interface ImportResult {
  readonly yaml: string;
  /** Why `portico check` would still refuse the YAML (nothing left to listen on); empty when it loads, files aside. */
  readonly problems: readonly string[];
  readonly notes: readonly ImportNote[];
  readonly counts: { listeners: number; upstreams: number; routes: number };
}

type Json = string | number | boolean | null | Json[] | { [k: string]: Json | undefined };
type Obj = { [k: string]: Json | undefined };
type OutPath = (string | number)[];

/** Variables Portico's header and redirect templates know, by nginx's names; others are reported. */
const KNOWN_VARS = new Set(['remote_addr', 'host', 'scheme', 'request_uri', 'server_port', 'args', 'is_args', 'request_id']);
/** proxy_set_header lines Portico's defaults already cover (README: X-Forwarded-*, X-Real-IP, Upgrade). */
const DEFAULT_HEADERS: Readonly<Record<string, RegExp>> = {
  host: /^\$(host|http_host)$/,
  'x-real-ip': /^\$remote_addr$/,
  'x-forwarded-for': /^\$(proxy_add_x_forwarded_for|remote_addr)$/,
  'x-forwarded-proto': /^\$scheme$/,
  'x-forwarded-host': /^\$(host|http_host)$/,
  upgrade: /^\$http_upgrade$/,
  connection: /^("?upgrade"?|\$connection_upgrade)$/i,
};
/** Directives with no effect on what Portico does, or whose job Portico does by itself: no comment needed. */
const SILENT = new Set([
  'proxy_http_version',
  'sendfile',
  'tcp_nopush',
  'tcp_nodelay',
  'default_type',
  'types_hash_max_size',
  'server_tokens',
  'proxy_buffering',
  'proxy_redirect',
]);
/** fastcgi_param lines Portico sends with nginx's meaning by itself (fastcgi_params + SCRIPT_FILENAME). */
const BUILTIN_FASTCGI_PARAMS = new Set([
  'SCRIPT_FILENAME',
  'QUERY_STRING',
  'REQUEST_METHOD',
  'CONTENT_TYPE',
  'CONTENT_LENGTH',
  'SCRIPT_NAME',
  'REQUEST_URI',
  'DOCUMENT_URI',
  'DOCUMENT_ROOT',
  'SERVER_PROTOCOL',
  'REQUEST_SCHEME',
  'HTTPS',
  'GATEWAY_INTERFACE',
  'SERVER_SOFTWARE',
  'REMOTE_ADDR',
  'REMOTE_PORT',
  'SERVER_ADDR',
  'SERVER_PORT',
  'SERVER_NAME',
  'REDIRECT_STATUS',
  'PATH_INFO',
]);

interface ListenSpec {
  address: string;
  tls: boolean;
  /** `backlog=N`: the listen queue (listeners[].backlog). */
  backlog?: number;
  /** `proxy_protocol`: a PROXY header comes first (the caller says what it makes of it). */
  proxyProtocol: boolean;
  /** The `listen` (or, for the implied one, the `server`) it comes from. */
  from: Directive;
}

interface ServerOut {
  readonly from: Directive;
  listens: ListenSpec[];
  names: string[] | undefined;
  certs: { cert: string; key: string }[];
  /** The listeners of the output it is served on, and its routes (a server left without listeners loses them). */
  readonly listeners: Set<object>;
  readonly routes: object[];
}

/** Translates parsed nginx directives; `source` names the file for the header comment. */
export function importNginx(directives: readonly Directive[], source: string): ImportResult {
  return new Importer(source).run(directives);
}

class Importer {
  readonly #source: string;
  readonly #notes: (ImportNote & { at: OutPath })[] = [];
  readonly #out: { workers?: Json; listeners: Obj[]; upstreams: Record<string, Obj>; routes: Obj[]; limits?: Obj; timeouts?: Obj } = { listeners: [], upstreams: {}, routes: [] };
  /** upstream name -> the timeouts set on it, and where, so a clash between two locations is reported. */
  readonly #timeoutSource = new Map<string, Map<string, string>>();
  #bodySize: { value: string; at: string } | undefined;
  /** Each server's listen addresses (servers that only redirect to HTTPS left out). */
  readonly #serverListens: { d: Directive; listens: string }[] = [];
  /** limit_req_zone by name: the Portico rate and key of each. */
  readonly #reqZones = new Map<string, { rate: string; key: string }>();
  /** limit_conn_zone names keyed by the client address (the only limit_conn Portico has: connections_per_ip). */
  readonly #connZones = new Set<string>();
  /** limit_conn's lowest number, and where (one limits.connections_per_ip for the whole config). */
  #connLimit: { n: number; d: Directive } | undefined;
  /** limit_req as http {} sets it for every server. */
  #httpLimitReq: LimitReq | undefined;
  /** gzip as http {} sets it for every server. */
  readonly #httpGzip: GzipOut = { on: false, types: [] };
  /** Static routes' settings with the index directive they took (checked against the fastcgi routes at the end). */
  readonly #staticIndexes: { action: Obj; d: Directive }[] = [];
  /** Upstreams of stream {} (L4 relays): never shared with routes. */
  readonly #l4Upstreams = new Set<string>();
  /** Prefix locations ending in "/" served by a proxy: nginx redirects the path without the slash (added last). */
  readonly #trailingSlash: { server: ServerOut; path: string; d: Directive }[] = [];
  /** The directive each listener, route and upstream of the output was made from (for the notes of what settling drops). */
  readonly #origin = new Map<object, Directive>();
  /** The http servers, with the listeners and routes each was given. */
  readonly #servers: ServerOut[] = [];
  /** The worker_processes line `workers` comes from (its note, should the checker refuse it). */
  #workersFrom: Directive | undefined;
  /** Routes #settle made answer 503 (refused again, they go). */
  readonly #closed = new Set<object>();

  constructor(source: string) {
    this.#source = source;
  }

  run(directives: readonly Directive[]): ImportResult {
    this.#main(directives);
    const sets = new Set(this.#serverListens.map((x) => x.listens));
    if (sets.size > 1) {
      const d = this.#serverListens[0].d;
      this.#note(d, `the servers listen on different addresses (${[...sets].join(' | ')}); Portico's routes apply to every listener: a request on one port can now reach another server's routes`);
    }
    for (const { server, path: p, d } of this.#trailingSlash) {
      const exact = p.slice(0, -1);
      if (this.#out.routes.some((r) => (r.match as Obj).path_exact === exact)) continue;
      this.#route(d, server, { path_exact: exact }, { redirect: { to: `${p}$is_args$args`, status: 301 } });
    }
    this.#scriptIndexes();
    if (this.#bodySize !== undefined) this.#out.limits = { body_size: this.#bodySize.value };
    if (this.#connLimit !== undefined) {
      this.#out.limits = { ...this.#out.limits, connections_per_ip: this.#connLimit.n };
      this.#note(this.#connLimit.d, 'limit_conn: Portico counts a client\'s open connections per worker, on every listener (nginx per zone, across workers)', ['limits']);
    }
    const problems = this.#settle();
    const doc = new Document(this.#plain());
    doc.commentBefore = ` Made by \`portico import-nginx ${path.basename(this.#source)}\`. Read every comment: each marks something nginx did\n that this file does differently or not at all. Then: npx portico check -c THIS_FILE`;
    for (const n of this.#notes) {
      const node = n.at.length === 0 ? undefined : doc.getIn(n.at, true);
      const line = ` ${n.source}: ${n.message}`;
      if (isNode(node)) {
        node.commentBefore = node.commentBefore ? `${node.commentBefore}\n${line}` : line;
      } else {
        doc.comment = doc.comment ? `${doc.comment}\n${line}` : line;
      }
    }
    return {
      yaml: doc.toString({ lineWidth: 0 }),
      notes: this.#notes.map(({ source, message }) => ({ source, message })),
      counts: { listeners: this.#out.listeners.length, upstreams: Object.keys(this.#out.upstreams).length, routes: this.#out.routes.length },
      problems,
    };
  }

  /**
   * nginx's `index index.php` sends a folder to /index.php, which its PHP location runs; a static route would send
   * that file as it is: the script's source to anyone. Index files a fastcgi route takes (schema.ts scriptIndexes,
   * the rule `portico check` holds configs to) leave the static route's index; with try_files' fallback to
   * /index.php, a folder without another index still reaches it.
   */
  #scriptIndexes(): void {
    const drop = new Map<number, Set<string>>();
    for (const { route, file } of scriptIndexes(this.#out.routes)) drop.set(route, (drop.get(route) ?? new Set()).add(file));
    for (const [i, files] of drop) {
      const action = this.#out.routes[i].static as Obj;
      const index = typeof action.index === 'string' ? [action.index] : (action.index as string[]);
      const kept = index.filter((f) => !files.has(f));
      action.index = kept.length === 1 ? kept[0] : kept;
      const d = this.#staticIndexes.find((x) => x.action === action)?.d;
      if (d !== undefined) this.#note(d, `index ${[...files].join(', ')}: not a static route's index (it would send the script's source); ${action.fallback !== undefined ? 'a folder without another index reaches it through the fallback' : 'request the script itself, or add try_files $uri $uri/ /index.php?$args (a fallback)'}`, ['routes']);
    }
  }

  /**
   * Makes the output pass `portico check` (files aside): each piece the checker refuses is left out with a note
   * naming its nginx directive and the checker's reason, and the check runs again, until nothing is refused. Nothing
   * is left out in a way that widens what nginx did: a listener goes whole (a TLS listener never becomes a
   * plain one); a route refused in its match goes whole (it never matches more than nginx's location), one refused
   * in its action keeps its match and answers 503 (its requests never reach another route's backend); an upstream
   * whose TLS settings or target list are refused goes whole (its traffic never goes out in plain text); a refused
   * target leaves its upstream, any other refused setting just itself. What no longer loads for lack of it (a
   * route to a dropped upstream) is refused in the next round. Returns what cannot be left out.
   */
  #settle(): string[] {
    // each round removes at least one piece, so the rounds end; the bound is for a checker that would not agree
    for (let round = 0; ; round++) {
      const problems = dataProblems(this.#plain());
      const unfixable = (): string[] => problems.map((x) => `${formatPath(x.path) || 'the config'}: ${x.message}`);
      if (problems.length === 0) return [];
      if (round === MAX_SETTLE_ROUNDS) return unfixable();
      const drops = new Map<string, { at: Segment[]; problem: string; close: boolean }>();
      for (const p of problems) {
        const at = settleDrop(p.path);
        const existing = at === undefined ? undefined : deepestExisting(this.#out, at);
        if (existing === undefined) return unfixable();
        // a route refused in its action (or as a whole) keeps its match and answers 503; refused again, or in its match, it goes
        const route = p.path[0] === 'routes' && existing.length === 2 ? this.#out.routes[existing[1] as number] : undefined;
        const close = route !== undefined && p.path[2] !== 'match' && !this.#closed.has(route);
        const key = JSON.stringify(existing);
        // said from the piece left out: "match.path: must start with …" of a location's route
        const inside = formatPath(p.path.slice(existing.length));
        if (!drops.has(key)) drops.set(key, { at: existing, problem: inside === '' ? p.message : `${inside}: ${p.message}`, close });
      }
      // a piece inside another one dropped this round goes with it
      const all = [...drops.values()];
      const kept = all.filter((x) => !all.some((y) => y !== x && y.at.length < x.at.length && y.at.every((seg, i) => seg === x.at[i])));
      const touched = new Set<object>();
      for (const { at, problem, close } of kept) {
        if (close) this.#close(at[1] as number, problem);
        else touched.add(this.#drop(at, problem));
      }
      sweep(this.#out, touched);
    }
  }

  /**
   * Route `index` keeps its match and answers 503 in place of what `portico check` refused: its requests would
   * otherwise reach another route (nginx's `location /private/` falling through to `/`'s backend).
   */
  #close(index: number, problem: string): void {
    const route = this.#out.routes[index];
    if (route === DROPPED) return; // its server lost its listeners this round
    for (const k of Object.keys(route)) if (k !== 'match') delete route[k];
    route.return = { status: 503 };
    this.#closed.add(route);
    // every route is made by #route, which names its directive
    this.#skip(this.#origin.get(route) as Directive, `\`portico check\` refuses it: ${problem}; in its place the route answers 503, so that its requests reach no other route`, ['routes']);
  }

  /** Leaves out the piece at `at` (marked in a list, deleted from a map) and says so where it came from; returns its container. */
  #drop(at: Segment[], problem: string): object {
    const parents: unknown[] = [this.#out];
    for (const seg of at.slice(0, -1)) {
      const next = (parents[parents.length - 1] as Record<string | number, unknown>)[seg];
      if (typeof next !== 'object' || next === null || next === DROPPED) return this.#out; // gone with its server this round
      parents.push(next);
    }
    const container = parents[parents.length - 1] as Record<string | number, unknown> | unknown[];
    const last = at[at.length - 1];
    const piece = (container as Record<string | number, unknown>)[last];
    if (piece === DROPPED) return container; // gone with its server this round
    const from = [piece, ...[...parents].reverse()].find((x): x is object => typeof x === 'object' && x !== null && this.#origin.has(x));
    const section: OutPath = [at[0]];
    const why = `\`portico check\` refuses it: ${problem}`;
    const d = from === undefined ? (at[0] === 'workers' ? this.#workersFrom : undefined) : this.#origin.get(from);
    // inside a route, the part is named from the route (the directive's line names the location): a route's list
    // position changes as others are left out
    const part = at[0] === 'routes' && from !== undefined ? formatPath(at.slice(parents.indexOf(from))) : formatPath(at);
    if (d !== undefined && from === piece) this.#skip(d, why, section);
    else if (d !== undefined) this.#note(d, `${part} left out (${why})`, section);
    else this.#notes.push({ source: path.basename(this.#source), message: `${formatPath(at)} left out (${why})`, at: section });
    if (Array.isArray(container)) container[last as number] = DROPPED;
    else delete (container as Record<string | number, unknown>)[last];
    if (at.length === 2 && at[0] === 'listeners' && typeof piece === 'object' && piece !== null) this.#listenerGone(piece);
    return container;
  }

  /** A server left without listeners by #settle loses its routes: on the other listeners they would be new. */
  #listenerGone(listener: object): void {
    for (const server of this.#servers) {
      if (!server.listeners.delete(listener) || server.listeners.size > 0) continue;
      const gone = server.routes.map((r) => this.#out.routes.indexOf(r as Obj)).filter((i) => i >= 0);
      for (const i of gone) this.#out.routes[i] = DROPPED as Obj;
      if (gone.length > 0) this.#note(server.from, 'no listener of this server is left: its locations are left out', ['routes']);
    }
  }

  #plain(): Obj {
    const o: Obj = {};
    if (this.#out.workers !== undefined) o.workers = this.#out.workers;
    o.listeners = this.#out.listeners;
    o.upstreams = this.#out.upstreams;
    o.routes = this.#out.routes;
    if (this.#out.limits !== undefined) o.limits = this.#out.limits;
    if (this.#out.timeouts !== undefined) o.timeouts = this.#out.timeouts;
    return o;
  }

  #note(d: Directive, message: string, at: OutPath = []): void {
    this.#notes.push({ source: `${path.basename(d.file)}:${d.line}`, message, at });
  }

  #skip(d: Directive, why: string, at: OutPath = []): void {
    this.#note(d, `not translated: \`${render(d)}\` (${why})`, at);
  }

  #main(ds: readonly Directive[]): void {
    // a file holding only server/upstream blocks (a conf.d snippet): read those as the inside of http {}
    const bare = ds.filter((d) => d.name === 'server' || d.name === 'upstream' || d.name === 'location');
    if (bare.length > 0) this.#http(bare);
    const streams: Directive[] = [];
    for (const d of ds) {
      switch (d.name) {
        case 'worker_processes':
          this.#workersFrom = d;
          this.#out.workers = d.args[0] === 'auto' ? 'auto' : Number(d.args[0]) > 0 ? Number(d.args[0]) : 'auto';
          break;
        case 'http':
          this.#http(d.block ?? []);
          break;
        case 'stream':
          streams.push(d); // after http {}: its upstream names are taken first, wherever the blocks stand
          break;
        case 'events':
        case 'user':
        case 'pid':
        case 'error_log':
        case 'worker_rlimit_nofile':
        case 'load_module':
          break;
        case 'server':
        case 'upstream':
        case 'location':
          break;
        default:
          this.#skip(d, 'no Portico equivalent at the top level');
      }
    }
    for (const d of streams) this.#stream(d.block ?? []);
  }

  #http(ds: readonly Directive[]): void {
    // upstreams first: servers refer to them by name wherever they are written
    for (const d of ds) if (d.name === 'upstream') this.#upstream(d);
    for (const d of ds) if (d.name === 'limit_req_zone' || d.name === 'limit_conn_zone') this.#limitZone(d);
    for (const d of ds) {
      switch (d.name) {
        case 'upstream':
          break;
        case 'server':
          this.#server(d, ds);
          break;
        case 'client_max_body_size':
          this.#setBodySize(d);
          break;
        case 'ssl_certificate':
        case 'ssl_certificate_key':
          break; // read by each server that sets none of its own (#server)
        case 'include':
          if (/mime\.types$/.test(d.args[0] ?? '')) break;
          this.#skip(d, 'the file was not found beside the config');
          break;
        case 'access_log':
          if (d.args[0] === 'off') this.#note(d, 'access_log off: set `log: { access: false }` to match');
          break;
        case 'limit_req_zone':
        case 'limit_conn_zone':
          break;
        case 'keepalive_timeout':
        case 'client_header_timeout':
        case 'client_body_timeout': {
          // the client side's timeouts: one set for the whole instance in Portico, as http {} sets them in nginx
          const ms = d.args[0] === '0' ? undefined : this.#duration(d, d.args[0]);
          const key = { keepalive_timeout: 'keepalive', client_header_timeout: 'head', client_body_timeout: 'body' }[d.name as 'keepalive_timeout'];
          if (ms !== undefined) this.#out.timeouts = { ...this.#out.timeouts, [key]: ms };
          else if (d.args[0] === '0') this.#skip(d, 'Portico always offers keep-alive (timeouts.keepalive is how long an idle one stays)');
          break;
        }
        case 'limit_req':
          this.#httpLimitReq = this.#limitReq(d, []);
          break;
        case 'limit_conn':
          this.#limitConn(d, []);
          break;
        case 'limit_req_status':
        case 'limit_conn_status':
          if (d.args[0] !== '429' && d.args[0] !== '503') this.#note(d, `${d.name}: Portico answers 429 with Retry-After`);
          break;
        case 'map':
          // the usual `map $http_upgrade $connection_upgrade` feeds a Connection header Portico sets by itself
          if (d.args[0] === '$http_upgrade') break;
          this.#skip(d, 'no Portico equivalent in http {}');
          break;
        default:
          if (this.#gzipDirective(d, this.#httpGzip, [])) break;
          if (!SILENT.has(d.name) && !d.name.startsWith('log_format') && !/^(keepalive_requests|client_body_buffer_size|server_names_hash_bucket_size)$/.test(d.name)) {
            this.#skip(d, 'no Portico equivalent in http {}');
          }
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------
  // upstream { }

  /**
   * An `upstream` block as upstream `name` (its own by default); false when it cannot be one. `stream`: a block of
   * stream {} (its connections have no HTTP request: a hash key read from one is left out).
   */
  #upstream(d: Directive, name = d.args[0], stream = false): boolean {
    if (name === undefined || !/^[A-Za-z0-9_.-]+$/.test(name)) {
      this.#skip(d, 'upstream names in Portico use letters, digits, _ . -');
      return false;
    }
    const u: Obj = { targets: [] };
    this.#out.upstreams[name] = u;
    this.#origin.set(u, d);
    const at: OutPath = ['upstreams', name];
    const targets = u.targets as Json[];
    for (const s of d.block ?? []) {
      switch (s.name) {
        case 'server': {
          const t = this.#target(s, at);
          if (t !== undefined) targets.push(t);
          break;
        }
        case 'least_conn':
          u.balance = 'least_conn';
          break;
        case 'ip_hash':
          if (stream) this.#note(s, 'ip_hash is not a stream {} directive (nginx refuses it there): read as hash $remote_addr', [...at, 'balance']);
          u.balance = { policy: 'hash', key: '$remote_addr' };
          this.#note(s, 'ip_hash hashes the first three bytes of an IPv4 address; Portico hashes the whole address (Maglev)', [...at, 'balance']);
          break;
        case 'hash': {
          const key = hashKey(s.args[0] ?? '');
          if (key === undefined) this.#skip(s, stream ? 'Portico hashes L4 connections on $remote_addr only' : 'Portico hashes on $remote_addr, $http_NAME, $cookie_NAME or $arg_NAME only', at);
          else if (stream && key !== '$remote_addr') this.#skip(s, 'a stream connection has no HTTP request to read this key from: Portico hashes L4 connections on $remote_addr only', at);
          else {
            u.balance = { policy: 'hash', key };
            if (s.args[1] !== 'consistent') this.#note(s, 'Portico always hashes consistently (Maglev)', [...at, 'balance']);
          }
          break;
        }
        case 'random':
          u.balance = 'random_two';
          if (s.args[0] !== 'two') this.#note(s, '`random` without `two`: Portico picks the lighter of two random targets', [...at, 'balance']);
          break;
        case 'keepalive':
          u.keepalive = { ...(u.keepalive as Obj | undefined), max_idle: Number(s.args[0]) || 0 };
          break;
        case 'keepalive_timeout': {
          const ms = this.#duration(s, s.args[0]);
          if (ms !== undefined) u.keepalive = { ...(u.keepalive as Obj | undefined), idle_timeout: ms };
          break;
        }
        case 'zone': // state nginx's workers share; Portico's primary shares health and load by itself
          break;
        default:
          this.#skip(s, 'no Portico equivalent in upstream {}', at);
      }
    }
    if (targets.length === 0) this.#note(d, 'this upstream has no `server`: add targets', at);
    return true;
  }

  #target(s: Directive, at: OutPath): Json | undefined {
    const raw = s.args[0];
    if (raw === undefined) {
      this.#skip(s, 'server without an address', at);
      return undefined;
    }
    const address = targetAddress(raw);
    let weight: number | undefined;
    let backup = false;
    for (const p of s.args.slice(1)) {
      const [k, v] = p.split('=');
      if (k === 'weight') weight = Number(v);
      else if (k === 'backup') backup = true;
      else if (k === 'down') weight = 0;
      else if (k === 'max_fails' || k === 'fail_timeout') {
        const u = this.#out.upstreams[String(at[1])];
        const health = (u.health as Obj | undefined) ?? {};
        const passive = (health.passive as Obj | undefined) ?? {};
        if (k === 'max_fails') passive.max_fails = Number(v);
        else {
          const ms = this.#duration(s, v);
          if (ms !== undefined) passive.fail_timeout = ms;
        }
        u.health = { ...health, passive };
        this.#note(s, `${k} is one setting per upstream in Portico (health.passive), not per server`, [...at, 'health']);
      } else this.#skip(s, `server parameter "${p}" has no Portico equivalent`, at);
    }
    if (weight === 0 && s.args.includes('down')) this.#note(s, '`down`: weight 0 drains the target (no new work)', at);
    if (weight === undefined && !backup) return address;
    const t: Obj = { address };
    if (weight !== undefined) t.weight = weight;
    if (backup) t.backup = true;
    return t;
  }

  // -------------------------------------------------------------------------------------------------------
  // stream { }: L4 listeners (mode: tcp) and TLS passthrough by SNI (ssl_preread + a map of server names)

  #stream(ds: readonly Directive[]): void {
    // nginx's stream upstreams are a namespace of their own: a name http {} took gets a suffix
    const upstreams = new Map<string, string>();
    for (const d of ds) {
      if (d.name !== 'upstream' || d.args[0] === undefined) continue;
      let name = d.args[0];
      for (let i = 1; Object.hasOwn(this.#out.upstreams, name); i++) name = `${d.args[0]}_tcp${i === 1 ? '' : i}`;
      if (name !== d.args[0]) this.#note(d, `stream upstream "${d.args[0]}" is "${name}" here: http {} has an upstream of that name`, ['upstreams', name]);
      if (this.#upstream(d, name, true)) {
        upstreams.set(d.args[0], name);
        this.#l4Upstreams.add(name);
      }
    }
    const maps = new Map<string, Directive>();
    const trusted: string[] = [];
    for (const d of ds) {
      switch (d.name) {
        case 'upstream':
        case 'server':
          break;
        case 'map':
          if (d.args[0] === '$ssl_preread_server_name' && d.args[1]?.startsWith('$') === true) maps.set(d.args[1], d);
          else this.#skip(d, 'in stream {}, only a map of $ssl_preread_server_name (TLS passthrough by name) is translated', ['listeners']);
          break;
        case 'set_real_ip_from':
          if (d.args[0] !== undefined) trusted.push(d.args[0]);
          break;
        case 'access_log':
        case 'error_log':
        case 'log_format':
        case 'tcp_nodelay':
          break;
        default:
          this.#skip(d, 'no Portico equivalent in stream {}', ['listeners']);
      }
    }
    for (const d of ds) if (d.name === 'server') this.#streamServer(d, upstreams, maps, trusted);
  }

  #streamServer(d: Directive, upstreams: ReadonlyMap<string, string>, maps: ReadonlyMap<string, Directive>, streamTrusted: readonly string[]): void {
    const ds = d.block ?? [];
    let pass: Directive | undefined;
    let preread = false;
    let connect: string | undefined;
    let sendProxy = false;
    let halfClose: boolean | undefined;
    const trusted = [...streamTrusted];
    for (const s of ds) {
      switch (s.name) {
        case 'listen':
          break;
        case 'proxy_pass':
          pass = s;
          break;
        case 'ssl_preread':
          preread = s.args[0] === 'on';
          break;
        case 'proxy_connect_timeout':
          connect = this.#duration(s, s.args[0]);
          break;
        case 'proxy_timeout':
          this.#note(s, 'proxy_timeout: Portico\'s L4 relays have no idle timeout (nginx closes a connection idle for proxy_timeout, 10m by default)', ['listeners']);
          break;
        case 'proxy_protocol':
          sendProxy = s.args[0] === 'on';
          break;
        case 'proxy_half_close':
          // nginx's default (off) closes both sides at the first FIN; Portico's default forwards it
          halfClose = s.args[0] === 'on' ? undefined : false;
          break;
        case 'set_real_ip_from':
          if (s.args[0] !== undefined) trusted.push(s.args[0]);
          break;
        case 'access_log':
        case 'error_log':
        case 'tcp_nodelay':
          break;
        default:
          this.#skip(s, 'no Portico equivalent in a stream server', ['listeners']);
      }
    }
    if (pass === undefined) {
      this.#note(d, 'stream server without proxy_pass: nothing to translate', ['listeners']);
      return;
    }
    const raw = pass.args[0] ?? '';
    let relay: { upstream: string } | { passthrough: Obj[] } | undefined;
    if (raw.startsWith('$')) {
      const map = maps.get(raw);
      if (map === undefined || !preread) this.#skip(pass, 'proxy_pass with a variable: only a map of $ssl_preread_server_name with `ssl_preread on` is translated (as TLS passthrough)', ['listeners']);
      else relay = { passthrough: this.#passthroughOf(map, upstreams) };
    } else {
      const upstream = upstreams.get(raw) ?? this.#streamUpstreamFor(raw, pass);
      if (upstream !== undefined) relay = { upstream };
    }
    if (relay === undefined) return;
    if ('passthrough' in relay && relay.passthrough.length === 0) {
      this.#note(pass, 'no server name of the map could be passed through: nothing to translate', ['listeners']);
      return;
    }
    const used = 'upstream' in relay ? [relay.upstream] : relay.passthrough.map((p) => String(p.upstream));
    for (const name of new Set(used)) {
      const u = this.#out.upstreams[name];
      if (connect !== undefined) u.timeouts = { ...(u.timeouts as Obj | undefined), connect };
      if (sendProxy) u.send_proxy_protocol = 'v1';
    }
    for (const s of ds) {
      if (s.name !== 'listen' || s.args[0] === undefined) continue;
      const params = s.args.slice(1);
      if (params.includes('udp')) {
        this.#skip(s, 'Portico relays TCP only', ['listeners']);
        continue;
      }
      if (params.includes('ssl')) {
        this.#skip(s, 'TLS terminated in stream {}: Portico\'s tcp listeners relay bytes as they are (terminate TLS on an http listener, or pass it through by name)', ['listeners']);
        continue;
      }
      const l = this.#listen(s);
      if (l === undefined) continue;
      const address = l.address;
      // (port 0, any free port, is never the same socket twice)
      if (!address.endsWith(':0') && this.#out.listeners.some((x) => x.address === address)) {
        this.#skip(s, `${address} is already a listener of this config`, ['listeners']);
        continue;
      }
      const entry: Obj = { address };
      if ('upstream' in relay) {
        entry.mode = 'tcp';
        entry.upstream = relay.upstream;
      } else entry.tls = { passthrough: relay.passthrough };
      if (l.backlog !== undefined) entry.backlog = l.backlog;
      if (l.proxyProtocol) {
        if (trusted.length > 0) entry.proxy_protocol = { trusted: [...new Set(trusted)] };
        else this.#note(s, 'proxy_protocol: list the balancers that send the header in `proxy_protocol: { trusted: [CIDRs] }` (nginx\'s set_real_ip_from); not set here', ['listeners']);
      }
      if (halfClose !== undefined) entry.half_close = halfClose;
      this.#out.listeners.push(entry);
      this.#origin.set(entry, s);
    }
  }

  /** The passthrough entries of a `map $ssl_preread_server_name $var { NAME upstream; ... }`. */
  #passthroughOf(map: Directive, upstreams: ReadonlyMap<string, string>): Obj[] {
    const ds = map.block ?? [];
    const hostnames = ds.some((e) => e.name === 'hostnames' && e.args.length === 0);
    const out: Obj[] = [];
    for (const e of ds) {
      if (e.name === 'hostnames') continue;
      const value = e.args[0];
      if (value === undefined || e.args.length > 1) {
        this.#skip(e, 'a map entry is `NAME VALUE;`', ['listeners']);
        continue;
      }
      if (e.name === 'default') {
        this.#note(e, `map default "${value}": a passthrough-only listener refuses names it does not list (TLS alert); list them, or add certificates to terminate the rest`, ['listeners']);
        continue;
      }
      let names: string[];
      if (e.name.startsWith('~')) {
        this.#skip(e, 'a regular expression of server names: list the names or a "*.suffix" wildcard', ['listeners']);
        continue;
      } else if (hostnames && e.name.startsWith('.')) names = [e.name.slice(1), `*${e.name}`];
      else if (hostnames && e.name.startsWith('*.')) names = [e.name];
      else if (/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(e.name)) names = [e.name];
      else {
        this.#skip(e, `server name "${e.name}"`, ['listeners']);
        continue;
      }
      const upstream = upstreams.get(value) ?? this.#streamUpstreamFor(value, e);
      if (upstream === undefined) continue;
      for (const n of names) if (!out.some((x) => x.sni === n.toLowerCase())) out.push({ sni: n.toLowerCase(), upstream });
    }
    return out;
  }

  /** An L4 upstream for an address written in proxy_pass or a map (never one that serves routes). */
  #streamUpstreamFor(raw: string, s: Directive): string | undefined {
    if (!/^(unix:.+|[^\s:]+:\d+|\[[0-9a-fA-F:.]+\]:\d+)$/.test(raw)) {
      this.#skip(s, `"${raw}" is neither a stream upstream nor HOST:PORT`, ['listeners']);
      return undefined;
    }
    const existing = [...this.#l4Upstreams].find((n) => {
      const t = this.#out.upstreams[n].targets;
      return Array.isArray(t) && t.length === 1 && t[0] === raw;
    });
    if (existing !== undefined) return existing;
    let label = `tcp_${addressLabel(raw)}`;
    for (let i = 2; Object.hasOwn(this.#out.upstreams, label); i++) label = `${label}_${i}`;
    this.#out.upstreams[label] = { targets: [raw] };
    this.#origin.set(this.#out.upstreams[label], s);
    this.#l4Upstreams.add(label);
    return label;
  }

  // -------------------------------------------------------------------------------------------------------
  // server { }

  #server(d: Directive, siblings: readonly Directive[]): void {
    const ds = d.block ?? [];
    const server: ServerOut = { from: d, listens: [], names: undefined, certs: [], listeners: new Set(), routes: [] };
    this.#servers.push(server);
    // a server without its own certificate takes http {}'s, as nginx inherits it
    let cert = siblings.findLast((s) => s.name === 'ssl_certificate')?.args[0];
    let key = siblings.findLast((s) => s.name === 'ssl_certificate_key')?.args[0];
    for (const s of ds) {
      if (s.name === 'listen') {
        const l = this.#listen(s);
        if (l?.proxyProtocol === true) this.#note(s, 'proxy_protocol: set `proxy_protocol: { trusted: [CIDRs] }` on this listener', ['listeners']);
        if (l !== undefined) server.listens.push(l);
      } else if (s.name === 'server_name') server.names = this.#serverNames(s);
      else if (s.name === 'ssl_certificate') cert = s.args[0];
      else if (s.name === 'ssl_certificate_key') key = s.args[0];
    }
    // nginx's implied `listen 80` is for a server without any listen, not one whose listens were all left out
    if (!ds.some((s) => s.name === 'listen')) server.listens.push({ address: '0.0.0.0:80', tls: false, proxyProtocol: false, from: d });
    if (server.listens.length === 0) {
      // nginx served these locations on sockets Portico does not open: on Portico's listeners they would be new
      this.#note(d, 'no listen of this server could be translated: its locations are left out', ['routes']);
      return;
    }
    if (cert !== undefined && key !== undefined) server.certs.push({ cert: relative(cert), key: relative(key) });
    const firstRoute = this.#out.routes.length;

    // `return 301 https://$host$request_uri` in a plain server: https_redirect on its listeners
    const ret = ds.find((s) => s.name === 'return');
    const redirectsAll = ret !== undefined && isHttpsRedirect(ret.args) && server.listens.every((l) => !l.tls) && ds.every((s) => s.name !== 'location');
    for (const l of server.listens) this.#listener(l, server, redirectsAll);
    if (redirectsAll) return;
    this.#serverListens.push({ d, listens: server.listens.map((l) => l.address).sort().join(' ') });
    if (server.names !== undefined && this.#isDefault(siblings, d)) {
      this.#note(d, `server_name ${server.names.join(' ')}: the default server, so its routes take any host (as in nginx)`, ['routes']);
      server.names = undefined;
    }

    const ctx: LocationCtx = { root: undefined, index: undefined, headers: [], hide: [], addHeaders: [], gzip: { ...this.#httpGzip }, limitReq: this.#httpLimitReq };
    for (const s of ds) this.#serverLevel(s, ctx);
    for (const s of ds) if (s.name === 'location') this.#location(s, server, { ...ctx, headers: [...ctx.headers], hide: [...ctx.hide], addHeaders: [...ctx.addHeaders] });
    if (ret !== undefined) this.#route(ret, server, { path: '/' }, this.#returnAction(ret, undefined));
    else if (!ds.some((s) => s.name === 'location') && ctx.root !== undefined) this.#optionsInto(this.#route(d, server, { path: '/' }, { static: staticOf(ctx) }, ctx).route, ctx);
    if (this.#out.routes.length === firstRoute) this.#note(d, 'this server has no location Portico could translate', ['listeners']);
  }

  /**
   * nginx sends a request whose Host no server_name matches to the default server (`default_server`, else the
   * first one): its routes are written without `match.host`, so that they take any host in Portico too.
   */
  #isDefault(siblings: readonly Directive[], self: Directive): boolean {
    const servers = siblings.filter((s) => s.name === 'server');
    const explicit = servers.filter((sv) => (sv.block ?? []).some((s) => s.name === 'listen' && s.args.includes('default_server')));
    return explicit.length > 0 ? explicit.includes(self) : servers[0] === self;
  }

  #listen(s: Directive): ListenSpec | undefined {
    const raw = s.args[0];
    if (raw === undefined || raw.startsWith('unix:')) {
      this.#skip(s, 'Portico listens on TCP addresses only', ['listeners']);
      return undefined;
    }
    const address = listenAddress(raw);
    let backlog: number | undefined;
    for (const p of s.args.slice(1)) {
      // deferred: Portico's listeners defer accept by default (listeners[].defer_accept)
      if (p === 'ssl' || p === 'default_server' || p === 'default' || p === 'reuseport' || p === 'deferred') continue;
      if (p.startsWith('backlog=')) {
        const n = /^backlog=\d{1,5}$/.test(p) ? Number(p.slice(8)) : 0;
        if (n >= 1 && n <= 65535) backlog = n;
        else this.#skip(s, `listen parameter "${p}": a backlog is 1 to 65535`, ['listeners']);
      } else if (p === 'http2' || p === 'quic') this.#note(s, `${p}: Portico serves HTTP/1.1 (and WebSocket over it) only`, ['listeners']);
      else if (p !== 'proxy_protocol' && !/^(rcvbuf|sndbuf|ipv6only|so_keepalive|bind|fastopen)(=|$)/.test(p)) this.#skip(s, `listen parameter "${p}"`, ['listeners']);
    }
    return { address, tls: s.args.includes('ssl'), proxyProtocol: s.args.includes('proxy_protocol'), from: s, ...(backlog === undefined ? {} : { backlog }) };
  }

  #serverNames(s: Directive): string[] | undefined {
    const names: string[] = [];
    for (const n of s.args) {
      if (n === '_' || n === '' || n === 'localhost') continue;
      if (n.startsWith('~')) this.#skip(s, `regular-expression server_name "${n}": list the names or a "*.suffix" wildcard`, ['routes']);
      else if (n.startsWith('.')) names.push(n.slice(1), `*${n}`);
      else if (n.endsWith('.*')) this.#skip(s, `server_name "${n}": Portico's wildcards are "*.suffix" only`, ['routes']);
      else names.push(n.toLowerCase());
    }
    return names.length > 0 ? [...new Set(names)] : undefined;
  }

  #listener(l: ListenSpec, server: ServerOut, httpsRedirect: boolean): void {
    // nginx's `listen 443` and `listen [::]:443` are two sockets; Portico's `[::]:443` takes both families. Beside a
    // wildcard, nginx binds no socket for `listen 127.0.0.1:443` either (it tells the two apart by the local
    // address); Portico's routes apply to every listener, so that is the wildcard's socket too.
    const same = (a: string): boolean => a === l.address || (isWildcard(a) && isWildcard(l.address) && samePort(a, l.address)) || covers(a, l.address) || covers(l.address, a);
    let entry = this.#out.listeners.find((x) => same(String(x.address)));
    if (entry === undefined) {
      entry = { address: l.address };
      this.#out.listeners.push(entry);
      this.#origin.set(entry, l.from);
    } else if (entry.address !== l.address) {
      const was = String(entry.address);
      if (l.address.startsWith('[::]') || covers(l.address, was)) entry.address = l.address;
      if (!isWildcard(was) || !isWildcard(l.address)) this.#note(l.from, `listen ${l.address} and ${was} are one listener here, ${String(entry.address)} (nginx binds the wildcard only, and tells them apart by local address; Portico's routes apply to every listener)`, ['listeners']);
    }
    if (l.tls) {
      const tls = (entry.tls as Obj | undefined) ?? { certificates: [] };
      const certs = tls.certificates as Json[];
      for (const c of server.certs) if (!certs.some((x) => (x as Obj).cert === c.cert)) certs.push(c);
      entry.tls = tls;
    }
    server.listeners.add(entry);
    if (httpsRedirect) entry.https_redirect = true;
    if (l.backlog !== undefined) entry.backlog = Math.max(l.backlog, typeof entry.backlog === 'number' ? entry.backlog : 0);
  }

  #serverLevel(s: Directive, ctx: LocationCtx): void {
    switch (s.name) {
      case 'listen':
      case 'server_name':
      case 'ssl_certificate':
      case 'ssl_certificate_key':
      case 'location':
      case 'return':
        return;
      case 'ssl_protocols':
      case 'ssl_ciphers':
      case 'ssl_prefer_server_ciphers':
      case 'ssl_session_cache':
      case 'ssl_session_timeout':
      case 'ssl_session_tickets':
        this.#note(s, `${s.name}: Portico's TLS defaults (TLS 1.2 and 1.3, modern ciphers, tickets) apply; see listeners[].tls`, ['listeners']);
        return;
      default:
        this.#common(s, ctx, ['routes']);
    }
  }

  // -------------------------------------------------------------------------------------------------------
  // location { }

  #location(d: Directive, server: ServerOut, ctx: LocationCtx): void {
    const match = this.#match(d);
    if (match === undefined) return;
    const ds = d.block ?? [];
    // nginx inherits the server's add_header lines only into a location that has none of its own
    const own = ds.find((s) => s.name === 'add_header');
    if (own !== undefined && (ctx.addHeaders.length > 0 || ctx.cors !== undefined)) {
      const names = [...ctx.addHeaders.map(([n]) => n), ...(ctx.cors === undefined ? [] : ['Access-Control-*'])];
      this.#note(own, `this location has add_header lines of its own, so nginx does not send the server's (${names.join(', ')}) here; neither does this route: add them if they were meant`, ['routes']);
      ctx.addHeaders = [];
      ctx.cors = undefined;
    }
    let action: Obj | undefined;
    let actionDirective: Directive | undefined;
    let timeouts: { name: string; ms: string; d: Directive }[] = [];
    let fastcgi: Obj | undefined;
    let upgrade = false;
    let denyAll: Directive | undefined;
    const allows: Directive[] = [];
    for (const s of ds) {
      switch (s.name) {
        case 'proxy_pass': {
          const proxy = this.#proxyPass(s, match);
          if (proxy !== undefined) {
            action = { proxy };
            actionDirective = s;
          }
          break;
        }
        case 'fastcgi_pass': {
          const upstream = this.#upstreamFor(s.args[0] ?? '', s, 'php');
          if (upstream !== undefined) {
            fastcgi = { upstream, ...(fastcgi ?? {}) };
            action = { fastcgi };
            actionDirective = s;
          }
          break;
        }
        case 'fastcgi_index':
          fastcgi = { ...(fastcgi ?? {}), index: s.args[0] ?? 'index.php' };
          if (action?.fastcgi !== undefined) action = { fastcgi };
          break;
        case 'fastcgi_split_path_info':
          fastcgi = { ...(fastcgi ?? {}), split_path_info: s.args[0] ?? '' };
          if (action?.fastcgi !== undefined) action = { fastcgi };
          break;
        case 'fastcgi_param': {
          const [name, value] = s.args;
          if (name === undefined || value === undefined) break;
          if (BUILTIN_FASTCGI_PARAMS.has(name)) break;
          const bad = unknownVars(value);
          if (bad.length > 0) this.#skip(s, `variables ${bad.join(', ')} are not known to Portico`, ['routes']);
          else fastcgi = { ...(fastcgi ?? {}), params: { ...((fastcgi?.params as Obj | undefined) ?? {}), [name]: value } };
          if (action?.fastcgi !== undefined) action = { fastcgi };
          break;
        }
        case 'include':
          if (/fastcgi(_params|\.conf)$/.test(s.args[0] ?? '')) break; // Portico sends these params itself
          if (/proxy_params$/.test(s.args[0] ?? '')) break; // Host, X-Real-IP, X-Forwarded-*: Portico's defaults
          this.#skip(s, 'the file was not found beside the config', ['routes']);
          break;
        case 'return':
          action = this.#returnAction(s, match);
          actionDirective = s;
          break;
        case 'rewrite': {
          const r = this.#rewrite(s);
          if (r !== undefined) {
            action = r;
            actionDirective = s;
          }
          break;
        }
        case 'proxy_read_timeout':
        case 'proxy_connect_timeout':
        case 'proxy_send_timeout':
        case 'fastcgi_read_timeout':
        case 'fastcgi_connect_timeout': {
          const ms = this.#duration(s, s.args[0]);
          if (ms !== undefined) timeouts.push({ name: s.name, ms, d: s });
          break;
        }
        case 'proxy_set_header':
          if ((s.args[0] ?? '').toLowerCase() === 'upgrade') upgrade = true;
          this.#common(s, ctx, ['routes']);
          break;
        case 'location':
          this.#skip(s, 'nested locations: write them as routes of their own', ['routes']);
          break;
        case 'if':
          if (isPreflightTest(s.args)) this.#preflight(s, ctx);
          else this.#common(s, ctx, ['routes']);
          break;
        case 'deny':
          if (s.args[0] === 'all') denyAll = s;
          else allows.push(s);
          break;
        case 'allow':
          allows.push(s);
          break;
        default:
          this.#common(s, ctx, ['routes']);
      }
    }
    // nginx's access phase comes before any content: `deny all` answers 403 whatever the location serves. Portico
    // has no address lists per route, so a location that allows some addresses is closed to all (never opened to all)
    if (denyAll !== undefined) {
      action = { return: { status: 403 } };
      actionDirective = denyAll;
      for (const a of allows) this.#skip(a, 'Portico has no address lists per route: this route answers 403 to every client (put the allowed clients behind their own listener, or restrict them before Portico)', ['routes']);
    } else {
      for (const a of allows) this.#skip(a, 'Portico has no address lists per route', ['routes']);
    }
    if (action === undefined && ctx.root !== undefined) {
      action = { static: staticOf(ctx) };
      actionDirective = d;
    }
    if (action?.fastcgi !== undefined) {
      const f = action.fastcgi as Obj;
      if (ctx.root === undefined) this.#note(d, 'fastcgi without `root`: set `root` (SCRIPT_FILENAME = root + script path)', ['routes']);
      action = { fastcgi: { upstream: f.upstream, root: ctx.root ?? './html', ...(f.index !== undefined ? { index: f.index } : {}), ...(f.split_path_info !== undefined ? { split_path_info: f.split_path_info } : {}), ...(f.params !== undefined ? { params: f.params } : {}) } };
    }
    if (action === undefined) {
      this.#note(d, `location ${d.args.join(' ')}: nothing Portico could serve (no proxy_pass, fastcgi_pass, root or return)`, ['routes']);
      return;
    }
    // `expires` on what is not a file from disk: nginx adds its Cache-Control to the proxied answer (2xx and 3xx only)
    if (ctx.cacheControl !== undefined && action.static === undefined && action.return === undefined && action.redirect === undefined) {
      ctx.addHeaders.push(['Cache-Control', ctx.cacheControl.value]);
      this.#note(ctx.cacheControl.d, 'expires: Portico sets this Cache-Control on every answer of the route (nginx on 2xx and 3xx only)', ['routes']);
    }
    const { route, index } = this.#route(d, server, match, action, ctx);
    void actionDirective;
    if (ctx.cors !== undefined) this.#corsInto(route, ctx.cors);
    // nginx answers a prefix location "/x/" served by proxy_pass or fastcgi_pass with a 301 to "/x/" for the
    // request "/x" (its "special processing"); without the redirect "/x" would reach another route here.
    const prefix = typeof match.path === 'string' ? match.path : undefined;
    if (prefix !== undefined && prefix.length > 1 && prefix.endsWith('/') && (action.proxy !== undefined || action.fastcgi !== undefined)) {
      this.#trailingSlash.push({ server, path: prefix, d });
    }
    if (action.proxy !== undefined) {
      const upstream = typeof action.proxy === 'string' ? action.proxy : String((action.proxy as Obj).upstream);
      this.#applyTimeouts(upstream, timeouts, index, upgrade);
    } else if (action.fastcgi !== undefined) {
      this.#applyTimeouts(String((action.fastcgi as Obj).upstream), timeouts, index, false);
    } else if (timeouts.length > 0) timeouts = [];
    this.#optionsInto(route, ctx);
  }

  #match(d: Directive): Obj | undefined {
    const [a, b] = d.args;
    if (a === undefined) return undefined;
    if (b === undefined) {
      if (a.startsWith('@')) {
        this.#skip(d, 'named locations are reached by try_files/error_page, which Portico does not have', ['routes']);
        return undefined;
      }
      return { path: a };
    }
    switch (a) {
      case '=':
        return { path_exact: b };
      case '^~':
        this.#note(d, '`^~`: in Portico regular-expression routes are tried before prefixes; check that no regex route takes these paths', ['routes']);
        return { path: b };
      case '~':
        return checkRegex(b) ? { path_regex: b } : (this.#skip(d, 'the regular expression does not compile in JavaScript', ['routes']), undefined);
      case '~*': {
        const ci = caseless(b);
        return checkRegex(ci) ? { path_regex: ci } : (this.#skip(d, 'the regular expression does not compile in JavaScript', ['routes']), undefined);
      }
      default:
        this.#skip(d, `location modifier "${a}"`, ['routes']);
        return undefined;
    }
  }

  #proxyPass(s: Directive, match: Obj): Json | undefined {
    const raw = s.args[0] ?? '';
    const m = /^(https?):\/\/([^/]+)(\/.*)?$/.exec(raw);
    if (m === null || raw.includes('$')) {
      this.#skip(s, raw.includes('$') ? 'proxy_pass with variables' : 'proxy_pass takes http://HOST[:PORT][/URI] here', ['routes']);
      return undefined;
    }
    const upstream = this.#upstreamFor(m[2], s, labelOf(match));
    if (upstream === undefined) return undefined;
    if (m[1] === 'https') {
      // nginx does not verify an upstream's certificate unless proxy_ssl_verify is on; Portico does by default
      const u = this.#out.upstreams[upstream];
      if (u.tls === undefined) {
        u.tls = true;
        this.#note(s, 'proxy_pass https://: Portico verifies the targets\' certificates (nginx does not by default): set tls.ca / tls.sni, or tls: { verify: false }', ['upstreams', upstream, 'tls']);
      }
    }
    const uri = m[3];
    if (uri === undefined) return upstream;
    const prefix = typeof match.path === 'string' ? match.path : undefined;
    // `location /api/ { proxy_pass http://b/; }` replaces the prefix with "/": Portico's strip_prefix
    if (uri === '/' && prefix !== undefined) return { upstream, strip_prefix: true };
    this.#skip(s, `the URI part "${uri}" of proxy_pass (Portico strips the matched prefix, or keeps the path)`, ['routes']);
    return upstream;
  }

  /** An upstream by name (a defined `upstream` block) or by address: a new single-target upstream. */
  #upstreamFor(hostPort: string, s: Directive, preferred: string | undefined): string | undefined {
    const name = hostPort.replace(/^http:\/\//, '');
    if (Object.hasOwn(this.#out.upstreams, name)) return name;
    if (!/^(unix:.+|[^\s:]+:\d+|\[[0-9a-fA-F:.]+\]:\d+|[^\s:/]+)$/.test(name)) {
      this.#skip(s, `address "${hostPort}"`, ['routes']);
      return undefined;
    }
    const address = targetAddress(name);
    const existing = Object.entries(this.#out.upstreams).find(([, u]) => Array.isArray(u.targets) && u.targets.length === 1 && u.targets[0] === address);
    if (existing !== undefined) return existing[0];
    let label = preferred ?? addressLabel(address);
    for (let i = 2; Object.hasOwn(this.#out.upstreams, label); i++) label = `${preferred ?? 'upstream'}${i}`;
    this.#out.upstreams[label] = { targets: [address] };
    this.#origin.set(this.#out.upstreams[label], s);
    return label;
  }

  #returnAction(s: Directive, match: Obj | undefined): Obj {
    const [first, second] = s.args;
    const code = Number(first);
    if (!Number.isInteger(code)) return { redirect: { to: this.#template(s, first ?? '/', match), status: 302 } };
    if ([301, 302, 303, 307, 308].includes(code)) return { redirect: { to: this.#template(s, second ?? '/', match), status: code } };
    const r: Obj = { status: code };
    // a 204 or 304 has no body: nginx sends none, whatever `return` says
    if (second !== undefined && code !== 204 && code !== 304) r.body = second;
    if (code === 444) this.#note(s, 'return 444: nginx closes the connection without an answer; Portico answers with status 444', ['routes']);
    return { return: r };
  }

  #rewrite(s: Directive): Obj | undefined {
    const [re, to, flag] = s.args;
    if (re === undefined || to === undefined || !/^https?:\/\//.test(to) || (flag !== 'permanent' && flag !== 'redirect')) {
      this.#skip(s, 'only `rewrite REGEX http(s)://... permanent|redirect` is translated (as a redirect)', ['routes']);
      return undefined;
    }
    if (re !== '^' && re !== '^(.*)$' && re !== '^/(.*)$') {
      this.#skip(s, 'rewrite with a regular expression: make it the route\'s path_regex and use $1.. in redirect.to', ['routes']);
      return undefined;
    }
    const target = re === '^' ? to : to.replace(re === '^/(.*)$' ? /\/?\$1/ : /\$1/, '$request_uri');
    return { redirect: { to: this.#template(s, target, undefined), status: flag === 'permanent' ? 301 : 302 } };
  }

  #template(s: Directive, value: string, match: Obj | undefined): string {
    const bad = unknownVars(value).filter((v) => !(/^\$\d$/.test(v) && match?.path_regex !== undefined));
    if (bad.length > 0) this.#note(s, `variables ${bad.join(', ')} are not known to Portico's templates: edit this value`, ['routes']);
    return value;
  }

  /** What may appear in server {} and location {} alike. */
  #common(s: Directive, ctx: LocationCtx, at: OutPath): void {
    switch (s.name) {
      case 'root':
        ctx.root = relative(s.args[0] ?? '.');
        return;
      case 'index':
        // static.index tries the files in order, as nginx does; an index that is a path or a variable is nginx's only
        ctx.indexAt = s;
        ctx.index = s.args.filter((f) => /^[^/\\$]+$/.test(f));
        if (ctx.index.length < s.args.length) this.#skip(s, 'an index is a file name (no path, no variable); the others are kept', at);
        if (ctx.index.length === 0) ctx.index = undefined;
        return;
      case 'alias':
        this.#skip(s, 'alias: use `static.root` on a route with `proxy`-style prefix stripping', at);
        return;
      case 'limit_req': {
        const l = this.#limitReq(s, at);
        if (l !== undefined) ctx.limitReq = l;
        return;
      }
      case 'limit_conn':
        this.#limitConn(s, at);
        return;
      case 'limit_req_status':
      case 'limit_conn_status':
        return;
      case 'expires': {
        const value = cacheControlOf(s.args);
        if (value === null) ctx.cacheControl = undefined;
        else if (value === undefined) this.#skip(s, 'only `expires TIME|max|epoch|off` is translated (as Cache-Control)', at);
        else ctx.cacheControl = { value, d: s };
        return;
      }
      case 'try_files': {
        // `$uri [$uri/] =404` is a static route as it is; `$uri [$uri/] URI` its fallback (the PHP front controller)
        const m = /^\$uri( \$uri\/)? (\S+)$/.exec(s.args.join(' '));
        const last = m?.[2];
        if (last === '=404') return;
        const parsed = last === undefined ? undefined : parseFallback(last);
        if (parsed?.ok === true && last !== undefined) {
          ctx.fallback = last;
          if (m?.[1] === undefined) this.#note(s, 'try_files without $uri/: Portico\'s static route also serves a folder\'s index', at);
        } else {
          this.#skip(s, parsed?.ok === false ? `the fallback URI: ${parsed.message}` : 'Portico serves the file, its folder\'s index, then one fallback URI or 404 (try_files $uri $uri/ /index.php?$args)', at);
        }
        return;
      }
      case 'proxy_set_header': {
        const [name, value] = s.args;
        if (name === undefined || value === undefined) return;
        const dflt = DEFAULT_HEADERS[name.toLowerCase()];
        if (dflt?.test(value)) return; // Portico does this by default (README: "What Portico sends upstream")
        const bad = unknownVars(value);
        if (bad.length > 0) this.#skip(s, `variables ${bad.join(', ')} are not known to Portico (known: ${[...KNOWN_VARS].map((v) => `$${v}`).join(', ')})`, at);
        else if (['content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive'].includes(name.toLowerCase())) this.#skip(s, 'Portico owns framing and hop-by-hop headers', at);
        else ctx.headers.push([name, value]);
        return;
      }
      case 'proxy_hide_header':
        if (s.args[0] !== undefined) ctx.hide.push(s.args[0]);
        return;
      case 'add_header': {
        const [name, value] = s.args;
        // nginx adds no header whose value is empty (the line still stops the server's add_header lines here)
        if (name === undefined || value === undefined || value === '') return;
        if (/^access-control-/i.test(name)) {
          this.#corsHeader(s, name.toLowerCase(), value, ctx, at);
          return;
        }
        const bad = unknownVars(value);
        if (bad.length > 0) this.#skip(s, `variables ${bad.join(', ')} are not known to Portico`, at);
        else ctx.addHeaders.push([name, value]);
        return;
      }
      case 'client_max_body_size':
        this.#setBodySize(s);
        return;
      case 'access_log':
        if (s.args[0] === 'off') this.#note(s, 'access_log off here: Portico logs per instance (`log.access`)', at);
        return;
      default: {
        const gzip: GzipOut = { ...(ctx.gzip ?? { on: false, types: [] }) };
        if (this.#gzipDirective(s, gzip, at)) ctx.gzip = gzip;
        else if (!SILENT.has(s.name)) this.#skip(s, 'no Portico equivalent', at);
      }
    }
  }

  /** `limit_req_zone KEY zone=NAME:SIZE rate=R` / `limit_conn_zone KEY zone=NAME:SIZE`. */
  #limitZone(d: Directive): void {
    const zone = /^zone=([^:]+):/.exec(d.args.find((a) => a.startsWith('zone=')) ?? '')?.[1];
    const key = d.args[0] === undefined ? undefined : hashKey(d.args[0]);
    if (zone === undefined || key === undefined) {
      this.#skip(d, 'Portico keys limits by $remote_addr, $http_NAME, $cookie_NAME or $arg_NAME', ['routes']);
      return;
    }
    if (d.name === 'limit_conn_zone') {
      if (key === '$remote_addr') this.#connZones.add(zone);
      else this.#skip(d, 'Portico limits open connections per client address only (limits.connections_per_ip)', ['limits']);
      return;
    }
    const rate = /^rate=(\d+)r\/(s|m)$/.exec(d.args.find((a) => a.startsWith('rate=')) ?? '');
    if (rate === null) {
      this.#skip(d, 'a rate is Nr/s or Nr/m', ['routes']);
      return;
    }
    this.#reqZones.set(zone, { rate: `${rate[1]}/${rate[2]}`, key });
  }

  /** `limit_req zone=NAME [burst=N] [nodelay | delay=N]` as a route's rate_limit.requests. */
  #limitReq(d: Directive, at: OutPath): LimitReq | undefined {
    const name = d.args.find((a) => a.startsWith('zone='))?.slice(5);
    const zone = name === undefined ? undefined : this.#reqZones.get(name);
    if (zone === undefined) {
      this.#skip(d, 'its limit_req_zone was not translated', at);
      return undefined;
    }
    const burst = Number(d.args.find((a) => a.startsWith('burst='))?.slice(6) ?? '0');
    // nginx passes one request at the rate plus `burst` more; Portico's burst counts them all
    const limit: Obj = { rate: zone.rate, burst: (Number.isInteger(burst) && burst >= 0 ? burst : 0) + 1 };
    if (zone.key !== '$remote_addr') limit.key = zone.key;
    if (!d.args.includes('nodelay') && burst > 0) this.#note(d, 'limit_req without nodelay: nginx delays the requests of a burst to the rate; Portico lets the burst through at once and answers 429 beyond it', at);
    return { limit };
  }

  #limitConn(d: Directive, at: OutPath): void {
    const n = Number(d.args[1]);
    if (d.args[0] === undefined || !this.#connZones.has(d.args[0]) || !Number.isInteger(n) || n < 1) {
      this.#skip(d, 'only limit_conn on a zone keyed by the client address is translated (limits.connections_per_ip)', at);
      return;
    }
    if (this.#connLimit === undefined || n < this.#connLimit.n) this.#connLimit = { n, d };
  }

  /** gzip and its settings (http, server or location level) into `g`; false for a directive that is not one of them. */
  #gzipDirective(s: Directive, g: GzipOut, at: OutPath): boolean {
    const [v] = s.args;
    switch (s.name) {
      case 'gzip':
        g.on = v === 'on';
        return true;
      case 'brotli':
        g.brotli = v === 'on';
        return true;
      case 'gzip_types':
      case 'brotli_types':
        if (s.args.includes('*')) g.anyType = true;
        else {
          const types = s.args.map((x) => x.toLowerCase());
          const bad = types.filter((x) => !/^[a-z0-9!#$&^_.+-]+\/(\*|[a-z0-9!#$&^_.+-]+)$/.test(x));
          if (bad.length > 0) this.#skip(s, `media types ${bad.join(', ')}`, at);
          g.types = [...new Set([...(s.name === 'brotli_types' ? g.types : []), ...types.filter((x) => !bad.includes(x))])];
        }
        return true;
      case 'gzip_comp_level':
      case 'brotli_comp_level': {
        const n = Number(v);
        if (Number.isInteger(n) && n >= 1 && n <= 9) g.level = n;
        else if (s.name === 'gzip_comp_level') this.#skip(s, 'a level is 1 to 9', at);
        return true;
      }
      case 'gzip_min_length':
      case 'brotli_min_length': {
        const size = nginxSize(v ?? '');
        if (size !== undefined && size !== 'off') g.minSize = size;
        return true;
      }
      case 'gzip_vary': // Portico always sends Vary: Accept-Encoding with a compressed answer
      case 'gzip_proxied':
      case 'gzip_buffers':
      case 'gzip_http_version':
      case 'gzip_disable':
      case 'brotli_static':
      case 'gzip_static': // Portico's static routes serve .gz/.br siblings by default (static.precompressed)
        return true;
      default:
        return false;
    }
  }

  /** One `add_header Access-Control-NAME VALUE` line into the route's cors policy. */
  #corsHeader(s: Directive, name: string, value: string, ctx: LocationCtx, at: OutPath): void {
    const cors: CorsOut = { ...(ctx.cors ?? { d: s }) };
    const list = (v: string): string[] => v.split(/[\s,]+/).filter((x) => x !== '');
    switch (name) {
      case 'access-control-allow-origin': {
        const origin = value === '*' ? '*' : value.toLowerCase().replace(/\/$/, '');
        if (value.includes('$')) {
          // `$http_origin` answers every origin: the import lists none rather than open the route to all
          this.#skip(s, 'an origin from a variable allows every origin: list the allowed ones in the route\'s cors.origins', at);
          return;
        }
        if (checkOrigin(origin) !== undefined) {
          this.#skip(s, `origin "${value}"`, at);
          return;
        }
        cors.origins = [...new Set([...(cors.origins ?? []), origin])];
        break;
      }
      case 'access-control-allow-credentials':
        cors.credentials = value.toLowerCase() === 'true';
        break;
      case 'access-control-allow-methods':
        cors.methods = list(value).map((m) => m.toUpperCase());
        break;
      case 'access-control-allow-headers':
        cors.headers = list(value);
        break;
      case 'access-control-expose-headers':
        cors.expose = list(value);
        break;
      case 'access-control-max-age':
        if (/^\d{1,9}$/.test(value)) cors.max_age = `${value}s`;
        else this.#skip(s, 'Access-Control-Max-Age is a number of seconds', at);
        break;
      default:
        this.#skip(s, 'Portico writes the CORS headers itself from the route\'s `cors:` policy', at);
        return;
    }
    ctx.cors = cors;
  }

  /** `if ($request_method = OPTIONS) { add_header Access-Control-...; return 204; }`: the preflight Portico answers. */
  #preflight(d: Directive, ctx: LocationCtx): void {
    for (const s of d.block ?? []) {
      if (s.name === 'add_header' && /^access-control-/i.test(s.args[0] ?? '')) this.#common(s, ctx, ['routes']);
      else if (s.name === 'add_header' && /^(content-type|content-length)$/i.test(s.args[0] ?? '')) continue;
      else if (s.name === 'return' && /^(200|204)$/.test(s.args[0] ?? '')) continue;
      else this.#skip(s, 'in a preflight `if`, Portico answers with its cors policy', ['routes']);
    }
  }

  #corsInto(route: Obj, c: CorsOut): void {
    if (c.origins === undefined) {
      this.#note(c.d, 'Access-Control-* headers without an Access-Control-Allow-Origin Portico could take: no cors policy written (browsers keep cross-origin reads blocked)', ['routes']);
      return;
    }
    const cors: Obj = { origins: c.origins };
    if (c.credentials === true) {
      if (c.origins.includes('*')) this.#note(c.d, 'Access-Control-Allow-Credentials with origin "*": browsers refuse the pair, so nginx\'s answers were never readable with credentials; written without credentials', ['routes']);
      else cors.credentials = true;
    }
    for (const k of ['methods', 'headers', 'expose'] as const) {
      const v = c[k];
      if (v === undefined) continue;
      const kept = v.filter((x) => /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(x) && !(x === '*' && cors.credentials === true));
      if (kept.length !== v.length) this.#note(c.d, `cors.${k}: ${v.filter((x) => !kept.includes(x)).join(', ')} left out (not a token, or "*" with credentials)`, ['routes']);
      if (kept.length > 0 || k === 'expose') cors[k] = kept;
    }
    if (c.max_age !== undefined) cors.max_age = c.max_age;
    route.cors = cors;
  }

  /** What the route gets from the directives around its action: header rules and compression. */
  #optionsInto(route: Obj, ctx: LocationCtx): void {
    if (ctx.limitReq !== undefined) route.rate_limit = { requests: { ...ctx.limitReq.limit } };
    const gzip = ctx.gzip;
    if (gzip?.on === true && (route.proxy !== undefined || route.static !== undefined || route.fastcgi !== undefined)) {
      const c: Obj = { brotli: gzip.brotli === true, types: [...new Set(['text/html', ...gzip.types])] };
      if (gzip.anyType) delete c.types; // `gzip_types *`: Portico's list of compressible types
      if (gzip.level !== undefined) c.level = gzip.level;
      if (gzip.minSize !== undefined) c.min_size = gzip.minSize;
      route.compress = c;
    }
    // nginx passes no header whose proxy_set_header value is empty (the way to keep a client's Authorization from a backend)
    const set = ctx.headers.filter(([, v]) => v !== '');
    const remove = ctx.headers.filter(([, v]) => v === '').map(([n]) => n);
    if (set.length > 0 || remove.length > 0) route.request_headers = { ...(set.length > 0 ? { set: Object.fromEntries(set) } : {}), ...(remove.length > 0 ? { remove } : {}) };
    if (ctx.addHeaders.length > 0 || ctx.hide.length > 0) {
      const rh: Obj = {};
      if (ctx.addHeaders.length > 0) rh.set = Object.fromEntries(ctx.addHeaders);
      if (ctx.hide.length > 0) rh.remove = ctx.hide;
      route.response_headers = rh;
    }
  }

  /** Adds a route of `server` (its names become `match.host`); header rules and tunnel settings come after. */
  #route(from: Directive, server: ServerOut, match: Obj, action: Obj, ctx?: LocationCtx): { route: Obj; index: number } {
    if (action.static !== undefined && ctx?.indexAt !== undefined) this.#staticIndexes.push({ action: action.static as Obj, d: ctx.indexAt });
    const m = { ...match };
    if (server.names !== undefined) m.host = server.names.length === 1 ? server.names[0] : server.names;
    const route: Obj = { match: orderedMatch(m), ...action };
    this.#out.routes.push(route);
    server.routes.push(route);
    this.#origin.set(route, from);
    return { route, index: this.#out.routes.length - 1 };
  }

  #applyTimeouts(upstream: string, timeouts: { name: string; ms: string; d: Directive }[], routeIndex: number, upgrade: boolean): void {
    const u = this.#out.upstreams[upstream];
    if (u === undefined) return;
    const seen = this.#timeoutSource.get(upstream) ?? new Map<string, string>();
    this.#timeoutSource.set(upstream, seen);
    for (const t of timeouts) {
      const keys = t.name.endsWith('connect_timeout') ? ['connect'] : t.name === 'proxy_send_timeout' ? ['idle'] : ['response_headers', 'idle'];
      const tt = (u.timeouts as Obj | undefined) ?? {};
      for (const k of keys) {
        const before = seen.get(k);
        if (before !== undefined && before !== t.ms) this.#note(t.d, `${t.name} ${t.ms} differs from another location of upstream "${upstream}" (${before}): Portico has one value per upstream; the last one is kept`, ['upstreams', upstream]);
        seen.set(k, t.ms);
        tt[k] = t.ms;
      }
      u.timeouts = tt;
      // nginx cuts a WebSocket after proxy_read_timeout of silence; a Portico tunnel has no idle timeout by default
      if (upgrade && t.name === 'proxy_read_timeout') {
        const route = this.#out.routes[routeIndex];
        route.tunnel = { idle_timeout: t.ms };
        this.#note(t.d, 'nginx closes an idle WebSocket after proxy_read_timeout; kept as tunnel.idle_timeout (Portico\'s default is no idle timeout: remove it to keep WebSockets open)', ['routes', routeIndex, 'tunnel']);
      }
    }
  }

  #setBodySize(d: Directive): void {
    const v = nginxSize(d.args[0] ?? '');
    if (v === undefined) {
      this.#skip(d, 'size not understood');
      return;
    }
    const at = `${path.basename(d.file)}:${d.line}`;
    if (this.#bodySize !== undefined && this.#bodySize.value !== v) this.#note(d, `client_max_body_size ${d.args[0]} differs from ${this.#bodySize.at}: Portico has one limits.body_size; the largest is kept`, ['limits']);
    if (this.#bodySize === undefined || sizeBytes(v) > sizeBytes(this.#bodySize.value)) this.#bodySize = { value: v, at };
  }

  #duration(d: Directive, raw: string | undefined): string | undefined {
    const ms = nginxDurationMs(raw ?? '');
    if (ms === undefined) {
      this.#skip(d, `duration "${raw}" not understood`);
      return undefined;
    }
    return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
  }
}

/** nginx's gzip (and the brotli module's) settings where they apply: a route's `compress:` when on. */
interface GzipOut {
  on: boolean;
  /** gzip_types beyond text/html (which nginx always compresses). */
  types: string[];
  anyType?: boolean;
  brotli?: boolean;
  level?: number;
  minSize?: string;
}

/** A route's `cors:` gathered from add_header Access-Control-* lines (and a preflight `if`). */
interface CorsOut {
  origins?: string[];
  credentials?: boolean;
  methods?: string[];
  headers?: string[];
  expose?: string[];
  max_age?: string;
  /** The first Access-Control-* line (where the notes go). */
  d: Directive;
}

/** A limit_req in force: the route's rate_limit.requests. */
interface LimitReq {
  limit: Obj;
}

interface LocationCtx {
  /** try_files' last URI: the static route's fallback. */
  fallback?: string;
  limitReq?: LimitReq;
  gzip?: GzipOut;
  cors?: CorsOut;
  /** `expires` as a Cache-Control value, and where it was written. */
  cacheControl?: { value: string; d: Directive };
  root: string | undefined;
  /** Index files, in the order nginx tries them, and the directive that named them. */
  index: string[] | undefined;
  indexAt?: Directive;
  headers: [string, string][];
  hide: string[];
  addHeaders: [string, string][];
}

/** A readable upstream name for an address written in proxy_pass: the location's first path segment. */
function labelOf(match: Obj): string | undefined {
  const p = typeof match.path === 'string' ? match.path : typeof match.path_exact === 'string' ? match.path_exact : undefined;
  const seg = p?.split('/').find((x) => /^[A-Za-z0-9_.-]+$/.test(x));
  return seg?.toLowerCase();
}

/** `if ($request_method = OPTIONS)` (also `~ ^OPTIONS$`, quoted): a preflight's own answer. */
function isPreflightTest(args: readonly string[]): boolean {
  return /^\(\$request_method(=|~)\^?OPTIONS\$?\)$/.test(args.join('').replace(/\s+/g, ''));
}

function staticOf(ctx: LocationCtx): Obj {
  const s: Obj = { root: ctx.root ?? '.' };
  if (ctx.index !== undefined) s.index = ctx.index.length === 1 ? ctx.index[0] : [...ctx.index];
  if (ctx.cacheControl !== undefined) s.cache_control = ctx.cacheControl.value;
  if (ctx.fallback !== undefined) s.fallback = ctx.fallback;
  return s;
}

/**
 * nginx `expires` as the Cache-Control it sends: a time -> max-age in seconds, `max` -> ten years, `epoch` or a
 * negative time -> no-cache; null for `off` (nothing sent); undefined for the forms not translated (`modified`,
 * `@time` of day, a variable).
 */
function cacheControlOf(args: readonly string[]): string | null | undefined {
  const [v] = args;
  if (v === undefined || args.length > 1) return undefined;
  if (v === 'off') return null;
  if (v === 'max') return 'max-age=315360000';
  if (v === 'epoch') return 'no-cache';
  const negative = v.startsWith('-');
  const ms = nginxDurationMs(negative || v.startsWith('+') ? v.slice(1) : v);
  if (ms === undefined) return undefined;
  return negative ? 'no-cache' : `max-age=${Math.floor(ms / 1000)}`;
}

function orderedMatch(m: Obj): Obj {
  const o: Obj = {};
  for (const k of ['host', 'path', 'path_exact', 'path_regex', 'method']) if (m[k] !== undefined) o[k] = m[k];
  return o;
}

/** nginx reads a relative path against its prefix; Portico against the config file's folder. */
function relative(p: string): string {
  return path.isAbsolute(p) || p.startsWith('./') || p.startsWith('../') ? p : `./${p}`;
}

/** An upstream name made of a target's address: "127.0.0.1:9000" -> "127.0.0.1_9000", "unix:/run/x.sock" -> "run_x.sock". */
function addressLabel(address: string): string {
  return address.replace(/^unix:/, '').replace(/[^A-Za-z0-9_.-]+/g, '_').replace(/^_+|_+$/g, '');
}

/** A `listen` address as Portico writes it: "8080" -> "0.0.0.0:8080", "*:80" -> "0.0.0.0:80", no port -> 80. */
function listenAddress(raw: string): string {
  if (/^\d+$/.test(raw)) return `0.0.0.0:${raw}`;
  if (/^\[[0-9a-fA-F:.]+\]$/.test(raw)) return `${raw}:80`;
  if (/^\[[0-9a-fA-F:.]+\]:\d+$/.test(raw)) return raw;
  if (/:\d+$/.test(raw)) return raw.replace(/^\*:/, '0.0.0.0:');
  return `${raw}:80`;
}

function isWildcard(address: string): boolean {
  return address.startsWith('0.0.0.0:') || address.startsWith('[::]:');
}

function samePort(a: string, b: string): boolean {
  return a.slice(a.lastIndexOf(':')) === b.slice(b.lastIndexOf(':'));
}

/** A wildcard listen that takes `specific`'s connections: `[::]` any IP address, `0.0.0.0` an IPv4 one, same port. */
function covers(wildcard: string, specific: string): boolean {
  if (!samePort(wildcard, specific) || isWildcard(specific)) return false;
  const host = specific.slice(0, specific.lastIndexOf(':'));
  if (wildcard.startsWith('[::]:')) return isIP(host) === 4 || (host.startsWith('[') && isIP(host.slice(1, -1)) === 6);
  return wildcard.startsWith('0.0.0.0:') && isIP(host) === 4;
}

function isHttpsRedirect(args: readonly string[]): boolean {
  return (args[0] === '301' || args[0] === '302' || args[0] === '308') && /^https:\/\/\$(host|server_name)\$request_uri$/.test(args[1] ?? '');
}

function targetAddress(raw: string): string {
  if (raw.startsWith('unix:')) return raw;
  if (/^\[[0-9a-fA-F:.]+\]$/.test(raw)) return `${raw}:80`;
  return /:\d+$/.test(raw) ? raw : `${raw}:80`;
}

function hashKey(v: string): string | undefined {
  if (v === '$remote_addr' || v === '$binary_remote_addr') return '$remote_addr';
  let m = /^\$http_([a-z0-9_]+)$/i.exec(v);
  if (m) return `header:${m[1].replace(/_/g, '-')}`;
  m = /^\$cookie_([A-Za-z0-9_]+)$/.exec(v);
  if (m) return `cookie:${m[1]}`;
  m = /^\$arg_([A-Za-z0-9_]+)$/.exec(v);
  if (m) return `query:${m[1]}`;
  return undefined;
}

function unknownVars(value: string): string[] {
  const out: string[] = [];
  for (const m of value.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*|\d)\}?/g)) if (!KNOWN_VARS.has(m[1])) out.push(`$${m[1]}`);
  return out;
}

function checkRegex(source: string): boolean {
  try {
    new RegExp(source);
    return true;
  } catch {
    return false;
  }
}

/** `~*` (case-insensitive): JavaScript has no inline (?i), so each ASCII letter becomes a class of both cases. */
function caseless(source: string): string {
  let out = '';
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') {
      out += c + (source[i + 1] ?? '');
      i++;
      continue;
    }
    if (c === '[') inClass = true;
    else if (c === ']') inClass = false;
    const lower = c.toLowerCase();
    const upper = c.toUpperCase();
    if (lower !== upper && /[a-z]/i.test(c)) out += inClass ? lower + upper : `[${lower}${upper}]`;
    else out += c;
  }
  return out;
}

/** nginx durations: "60", "60s", "1m30s", "500ms", "1h", "1d" -> milliseconds. */
export function nginxDurationMs(raw: string): number | undefined {
  if (/^\d+$/.test(raw)) return Number(raw) * 1000;
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
  let total = 0;
  let rest = raw;
  if (rest === '') return undefined;
  while (rest.length > 0) {
    const m = /^(\d+)(ms|s|m|h|d|w)/.exec(rest);
    if (m === null) return undefined;
    total += Number(m[1]) * units[m[2]];
    rest = rest.slice(m[0].length);
  }
  return total;
}

/** nginx sizes: "1024", "8k", "10m", "1g" (powers of 1024) -> Portico's "KiB"/"MiB" forms; "0" -> "off". */
export function nginxSize(raw: string): string | undefined {
  const m = /^(\d+)([kKmMgG]?)$/.exec(raw);
  if (m === null) return undefined;
  if (m[1] === '0') return 'off';
  const unit = { '': 'B', k: 'KiB', m: 'MiB', g: 'GiB' }[m[2].toLowerCase()];
  return `${m[1]}${unit}`;
}

function sizeBytes(v: string): number {
  if (v === 'off') return Infinity;
  const m = /^(\d+)(B|KiB|MiB|GiB)$/.exec(v);
  if (m === null) return 0;
  return Number(m[1]) * { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2] as 'B'];
}

function render(d: Directive): string {
  return `${d.name}${d.args.length > 0 ? ' ' : ''}${d.args.map((a) => (/[\s;{}#"']/.test(a) || a === '' ? JSON.stringify(a) : a)).join(' ')}${d.block !== undefined ? ' { ... }' : ';'}`;
}

type Segment = string | number;

const MAX_SETTLE_ROUNDS = 1000;

/** A list item left out by #settle, removed from its list once the round's drops are all marked. */
const DROPPED: Json = { dropped: true };
/** A route refused in one of these goes whole: without it, it would match more, or serve something else. */
const WHOLE_ROUTE = new Set(['match', 'proxy', 'fastcgi', 'static', 'redirect', 'return', 'terminate', 'websocket', 'tunnel']);

/** What #settle leaves out for a problem at `at` (see there); undefined: nothing can be (the sections themselves). */
function settleDrop(at: readonly Segment[]): Segment[] | undefined {
  const [top, name, field, item] = at;
  if (name === undefined) return top === 'listeners' || top === 'routes' || top === 'upstreams' || top === undefined ? undefined : [top];
  if (top === 'listeners') return ['listeners', name];
  if (top === 'routes') return field === undefined || WHOLE_ROUTE.has(String(field)) ? ['routes', name] : [...at];
  if (top === 'upstreams') {
    if (field === 'targets' && item !== undefined) return ['upstreams', name, 'targets', item];
    return field === undefined || field === 'targets' || field === 'tls' ? ['upstreams', name] : [...at];
  }
  return [...at];
}

/** The longest start of `at` that names something in `root` (a missing key's owner), never the root or a section. */
function deepestExisting(root: unknown, at: readonly Segment[]): Segment[] | undefined {
  let node = root;
  let depth = 0;
  for (const seg of at) {
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, seg)) break;
    node = (node as Record<string | number, unknown>)[seg];
    depth++;
  }
  const top = at[0];
  if (depth === 0 || (depth === 1 && (top === 'listeners' || top === 'routes' || top === 'upstreams'))) return undefined;
  return at.slice(0, depth);
}

/**
 * Removes the pieces #drop marked from every list under `node`, and inside a route a list or map that dropping left
 * empty (`set: {}` of request_headers says nothing; an upstream's emptied `targets` stays, for the checker to name).
 * `touched`: the containers something was dropped from. Returns whether `node` is one, left empty, inside a route.
 */
function sweep(node: unknown, touched: Set<object>, depth = 0, inRoute = false): boolean {
  if (typeof node !== 'object' || node === null) return false;
  if (Array.isArray(node)) {
    for (let i = node.length - 1; i >= 0; i--) if (node[i] === DROPPED) node.splice(i, 1);
  }
  const entries = Object.entries(node);
  for (let i = entries.length - 1; i >= 0; i--) {
    const [k, v] = entries[i];
    if (!sweep(v, touched, depth + 1, inRoute || (depth === 0 && k === 'routes')) || depth < 2) continue;
    if (Array.isArray(node)) node.splice(Number(k), 1);
    else delete (node as Record<string, unknown>)[k];
    touched.add(node);
  }
  return inRoute && touched.has(node) && Object.keys(node).length === 0;
}
