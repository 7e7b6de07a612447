// `portico bench -c FILE`: the user's own config under the standard loads. The file is validated as `portico check`
// would, then rewritten for the run (and the report says so): every listener onto a free 127.0.0.1 port, every
// upstream's targets onto the synthetic backend (uWebSockets.js: HTTP 200 on any path, WebSocket echo), one worker,
// certificate paths made absolute. Its routes, TLS certificates and header rules are kept as written.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { formatErrors, loadConfig } from '../../src/config/load.js';
import { freePort } from '../lib/procs.js';
import { launchPortico, type Backends, type Target } from './targets.js';

export interface UserTarget extends Target {
  /** The first plain HTTP listener, if the config has one (TLS loads use tlsPort). */
  plainPort: number | undefined;
  /** Where the loads go: a path each for GETs and WebSockets, and the Host (and TLS name) a route needs. */
  paths: { httpPath?: string; wsPath?: string; host?: string };
  /** What was rewritten, for the report's conditions. */
  notes: string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The first route that proxies, preferring one with a plain path prefix; its path and an exact host, if any. */
function pickRoute(routes: unknown[], want: (r: Obj) => boolean): { path?: string; host?: string } | undefined {
  for (const r of routes) {
    if (!isObj(r) || !isObj(r.match) || r.proxy === undefined || !want(r)) continue;
    const p = typeof r.match.path === 'string' ? r.match.path : undefined;
    const hosts = Array.isArray(r.match.host) ? r.match.host : [r.match.host];
    const host = hosts.find((h): h is string => typeof h === 'string' && !h.includes('*'));
    return { path: p, host };
  }
  return undefined;
}

export async function startUserPortico(tmp: string, file: string, b: Backends, cpus: string | undefined): Promise<UserTarget> {
  const loaded = loadConfig(file);
  if (!loaded.ok) throw new Error(`-c ${file} does not pass \`portico check\`:\n${formatErrors(file, loaded.errors)}`);
  const baseDir = path.dirname(path.resolve(file));
  const data = parseYaml(readFileSync(file, 'utf8')) as Obj;
  const notes: string[] = [];
  const backend = `127.0.0.1:${b.wsPort}`;
  let plainPort: number | undefined;
  let tlsPort: number | undefined;
  const ports: number[] = [];
  const listeners = Array.isArray(data.listeners) ? data.listeners : [];
  for (const l of listeners) {
    if (!isObj(l)) continue;
    const port = await freePort();
    const was = String(l.address);
    l.address = `127.0.0.1:${port}`;
    ports.push(port);
    const tls = isObj(l.tls) ? l.tls : undefined;
    const certs = tls !== undefined && Array.isArray(tls.certificates) ? tls.certificates : [];
    for (const c of certs) {
      if (!isObj(c)) continue;
      for (const k of ['cert', 'key'] as const) if (typeof c[k] === 'string' && !path.isAbsolute(c[k])) c[k] = path.resolve(baseDir, c[k]);
    }
    const l4 = l.kind === 'tcp' || (tls !== undefined && certs.length === 0);
    if (!l4 && certs.length > 0 && tlsPort === undefined) tlsPort = port;
    if (!l4 && tls === undefined && plainPort === undefined) plainPort = port;
    notes.push(`listener ${was} -> 127.0.0.1:${port}${certs.length > 0 ? ' (TLS, your certificates)' : ''}`);
  }
  const upstreams = isObj(data.upstreams) ? data.upstreams : {};
  for (const [name, u] of Object.entries(upstreams)) {
    if (!isObj(u)) continue;
    delete u.discovery;
    u.targets = [backend];
    notes.push(`upstream ${name}: targets -> the synthetic backend ${backend}`);
  }
  data.workers = 1;
  if (isObj(data.admin)) data.admin.address = `127.0.0.1:${await freePort()}`;
  const routes = Array.isArray(data.routes) ? data.routes : [];
  const looksWs = (r: Obj): boolean => r.websocket !== undefined || (isObj(r.match) && typeof r.match.path === 'string' && /ws/i.test(r.match.path));
  const http = pickRoute(routes, (r) => !looksWs(r)) ?? pickRoute(routes, () => true);
  const ws = pickRoute(routes, (r) => r.websocket !== undefined) ?? pickRoute(routes, (r) => isObj(r.match) && typeof r.match.path === 'string' && /ws/i.test(r.match.path)) ?? http;
  const paths = { httpPath: http?.path, wsPath: ws?.path, host: http?.host ?? ws?.host };
  notes.push(
    `measured your config ${file} (${path.resolve(file)}) rewritten for the run: workers: 1 (per-core figures), listeners on 127.0.0.1, `
      + `every upstream on one synthetic backend (uWebSockets.js: HTTP 200 "ok portico bench" on any path, WebSocket echo); routes, certificates and header rules as written`,
    `loads sent to GET ${paths.httpPath ?? '/'} and WebSocket ${paths.wsPath ?? '/ws'}${paths.host === undefined ? '' : ` with Host ${paths.host}`}`,
  );
  const t: UserTarget = {
    id: 'portico-user', label: `Portico, your config (${path.basename(file)})`, httpPort: plainPort ?? tlsPort ?? 0, wsPort: plainPort ?? tlsPort ?? 0,
    plainPort, tlsPort, paths, notes,
  };
  if (plainPort === undefined && tlsPort === undefined) {
    t.error = 'the config has no HTTP listener (plain or TLS with certificates) to send the loads to';
    return t;
  }
  const started = await launchPortico(path.join(tmp, 'portico-user'), `# portico bench -c ${file}, rewritten (bench/peers/user-config.ts)\n${stringify(data)}`, ports, cpus);
  t.proc = started.proc;
  t.error = started.error;
  t.logFile = started.logFile;
  return t;
}
