// What the benchmark points load at: the two backends (HTTP: nginx or node:http; WebSocket: uWS echo) and the
// targets in front of them (direct, nginx, HAProxy, Portico), each started from a config written into a temp
// folder, pinned as asked, and stopped at the end. A target that fails to start is kept with its reason, so
// its row says why. No load and no timing here (lib/loads.ts, scenarios/).
import { spawnSync } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { BENCH_DIST, FIXTURES, ROOT } from '../lib/paths.js';
import { freePort, pinned, spawnProcess, stopTree, waitForPort, type Spawned } from '../lib/procs.js';
import { HTTP_BODY, type TargetId } from '../lib/shape.js';

const START_TIMEOUT_MS = 15_000;

/** The Portico revision under test, for the conditions block: short commit, and whether the tree differs. */
export function porticoRevision(): string {
  const rev = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  if (rev.status !== 0) return 'unknown revision';
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' });
  return `commit ${rev.stdout.trim()}${dirty.stdout.trim() !== '' ? ' + uncommitted changes' : ''}`;
}

export interface Backends {
  httpKind: 'nginx' | 'node';
  httpPort: number;
  wsPort: number;
  http: Spawned;
  ws: Spawned;
}

export interface Target {
  id: TargetId;
  /** Row label, e.g. "nginx 1.22.1 (1 worker)". */
  label: string;
  /** Where load goes: the proxy's listener, or the backend itself for direct. */
  httpPort: number;
  wsPort: number;
  /** The proxy's TLS listener (same routes), when it was started with one (portico bench). */
  tlsPort?: number;
  /** Portico's admin listener, when started with one (the fan-out load publishes through it). */
  adminPort?: number;
  /** The proxy process (root of its tree: nginx master, Portico primary); none for direct. */
  proc?: Spawned;
  /** Set when the target could not start or failed its check; its rows print this. */
  error?: string;
  /** Truncated after each run: Portico's stdout (access log lines when on). */
  logFile?: string;
  /** Portico started with its inspector open (`inspect`): what its processes said of it on stderr, for a full GC. */
  inspector?: () => string;
}

function fill(template: string, vars: Record<string, string | number>): string {
  return readFileSync(path.join(FIXTURES, template), 'utf8').replace(/\{\{([A-Z_]+)\}\}/g, (m, key: string) => {
    if (!Object.hasOwn(vars, key)) throw new Error(`${template}: no value for ${m}`);
    return String(vars[key]);
  });
}

/** nginx in the foreground as a child: its own prefix, pid and error log in `dir`; nothing system-wide. */
export async function startNginx(dir: string, conf: string, port: number, cpus: string | undefined): Promise<Spawned> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  const [cmd, args] = pinned(cpus, 'nginx', ['-e', path.join(dir, 'error.log'), '-p', dir, '-c', file, '-g', 'daemon off;']);
  const proc = spawnProcess(cmd, args);
  try {
    await waitForPort('127.0.0.1', port, START_TIMEOUT_MS, proc);
  } catch (err) {
    await stopTree(proc);
    throw err;
  }
  return proc;
}

/** Reads the {"port": N} line a backend (backend.js, the connrate server) prints once listening. */
export async function announcedPort(proc: Spawned, kind: string): Promise<number> {
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${kind} backend did not start within ${START_TIMEOUT_MS} ms: ${proc.tail()}`)), START_TIMEOUT_MS);
    proc.child.stdout?.on('data', (chunk: Buffer) => {
      out = (out + chunk.toString('utf8')).slice(-4096);
      const m = /\{"port":(\d+)\}/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    void proc.exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`${kind} backend exited (code ${code}): ${proc.tail()}`));
    });
  });
  proc.child.stdout?.resume();
  return port;
}

/** backend.js, stopping the process when it does not come up. */
async function startBackendProcess(kind: 'http' | 'ws', cpus: string | undefined): Promise<{ proc: Spawned; port: number }> {
  const [cmd, args] = pinned(cpus, process.execPath, [path.join(BENCH_DIST, 'peers', 'backend.js'), kind, '0']);
  const proc = spawnProcess(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    return { proc, port: await announcedPort(proc, kind) };
  } catch (err) {
    await stopTree(proc);
    throw err;
  }
}

export async function startBackends(tmp: string, useNginx: boolean, cpus: string | undefined): Promise<Backends> {
  const ws = await startBackendProcess('ws', cpus);
  if (useNginx) {
    const httpPort = await freePort();
    // nginx's `return` takes a quoted string; the body has no quotes, only a newline to escape.
    const conf = fill('nginx-backend.conf', { DIR: path.join(tmp, 'backend-nginx'), PORT: httpPort, BODY: HTTP_BODY.replace(/\n/g, '\\n') });
    try {
      const http = await startNginx(path.join(tmp, 'backend-nginx'), conf, httpPort, cpus);
      return { httpKind: 'nginx', httpPort, wsPort: ws.port, http, ws: ws.proc };
    } catch (err) {
      await stopTree(ws.proc);
      throw err;
    }
  }
  try {
    const http = await startBackendProcess('http', cpus);
    return { httpKind: 'node', httpPort: http.port, wsPort: ws.port, http: http.proc, ws: ws.proc };
  } catch (err) {
    await stopTree(ws.proc);
    throw err;
  }
}

/**
 * One nginx (1 worker) answering HTTP_BODY on each of `ports`: the health-overhead scenario's three targets, and
 * (`tls`) HTTPS on more ports with a certificate (the HTTPS-upstream scenario's backend). Started and pinned like
 * the other backends; up once every port accepts.
 */
export async function startNginxBackends(dir: string, ports: number[], cpus: string | undefined, tls?: { ports: number[]; cert: string; key: string }): Promise<Spawned> {
  const answer = `location / { return 200 ${JSON.stringify(HTTP_BODY)}; }`;
  const servers = [
    ...ports.map((p) => `server { listen 127.0.0.1:${p}; ${answer} }`),
    ...(tls?.ports ?? []).map((p) => `server { listen 127.0.0.1:${p} ssl; ssl_certificate ${tls!.cert}; ssl_certificate_key ${tls!.key}; ssl_session_tickets on; ssl_session_cache shared:bench:1m; ${answer} }`),
  ].join('\n  ');
  const conf = `worker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n  client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;\n  ${servers}\n}\n`;
  const proc = await startNginx(dir, conf, ports[0], cpus);
  try {
    for (const port of [...ports.slice(1), ...(tls?.ports ?? [])]) await waitForPort('127.0.0.1', port, START_TIMEOUT_MS, proc);
  } catch (err) {
    await stopTree(proc);
    throw err;
  }
  return proc;
}

/** A certificate and key for the proxies' TLS listeners (`pem`: both in one file, as HAProxy reads them) and its port. */
export interface TlsListener {
  port: number;
  cert: string;
  key: string;
  pem: string;
}

export function directTarget(b: Backends): Target {
  return { id: 'direct', label: `direct (${b.httpKind === 'nginx' ? 'nginx' : 'node:http'} / uWS backends)`, httpPort: b.httpPort, wsPort: b.wsPort };
}

export async function startNginxProxy(tmp: string, b: Backends, version: string, cpus: string | undefined, tls?: TlsListener): Promise<Target> {
  const port = await freePort();
  const t: Target = { id: 'nginx', label: `nginx ${version} (1 worker)`, httpPort: port, wsPort: port, tlsPort: tls?.port };
  const dir = path.join(tmp, 'nginx-proxy');
  // ssl_protocols as Portico's and HAProxy's defaults: nginx 1.22 leaves TLS 1.3 off unless told (1.23.4 turned it
  // on), and its TLS 1.2 ticket resumption skips the key exchange a TLS 1.3 one makes: not the same load.
  const tlsListen = tls === undefined ? '' : `listen 127.0.0.1:${tls.port} ssl; ssl_certificate ${tls.cert}; ssl_certificate_key ${tls.key}; ssl_protocols TLSv1.2 TLSv1.3;`;
  try {
    t.proc = await startNginx(dir, fill('nginx-proxy.conf', { DIR: dir, PORT: port, HTTP_PORT: b.httpPort, WS_PORT: b.wsPort, TLS_LISTEN: tlsListen }), port, cpus);
    if (tls !== undefined) await waitForPort('127.0.0.1', tls.port, START_TIMEOUT_MS, t.proc);
  } catch (err) {
    t.error = (err as Error).message;
  }
  return t;
}

export async function startHaproxy(tmp: string, b: Backends, version: string, cpus: string | undefined, tls?: TlsListener): Promise<Target> {
  const port = await freePort();
  const t: Target = { id: 'haproxy', label: `HAProxy ${version} (1 thread)`, httpPort: port, wsPort: port, tlsPort: tls?.port };
  const tlsBind = tls === undefined ? '' : `bind 127.0.0.1:${tls.port} ssl crt ${tls.pem}`;
  const ports = tls === undefined ? [port] : [port, tls.port];
  const started = await launchHaproxy(path.join(tmp, 'haproxy'), fill('haproxy.cfg', { PORT: port, HTTP_PORT: b.httpPort, WS_PORT: b.wsPort, TLS_BIND: tlsBind }), ports, cpus);
  t.proc = started.proc;
  t.error = started.error;
  return t;
}

/** A started proxy process, or why it did not come up (the process, if any, is still to be stopped). */
export interface Launched {
  proc?: Spawned;
  error?: string;
}

/** Environment for a Portico whose processes each open the V8 inspector on a free loopback port (a full GC from outside). */
const INSPECT_ENV = { NODE_OPTIONS: '--inspect=127.0.0.1:0' };

/** HAProxy in the foreground (-db) on config text `cfg`, written into `dir`; up once every port in `ports` accepts. */
export async function launchHaproxy(dir: string, cfg: string, ports: number[], cpus: string | undefined): Promise<Launched> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'haproxy.cfg');
  writeFileSync(file, cfg);
  const [cmd, args] = pinned(cpus, 'haproxy', ['-f', file, '-db']);
  const out: Launched = {};
  try {
    out.proc = spawnProcess(cmd, args);
    for (const port of ports) await waitForPort('127.0.0.1', port, START_TIMEOUT_MS, out.proc);
  } catch (err) {
    out.error = (err as Error).message;
  }
  return out;
}

/**
 * Portico with 1 worker; `accessLog` adds the per-request log line (written to a file, as in production); `tls`
 * adds a TLS listener with the same routes; `terminate` ends WebSockets in uWebSockets.js instead of tunnelling (`adopt`: with `handoff: adopt`).
 */
export async function startPortico(
  tmp: string, b: Backends, accessLog: boolean, cpus: string | undefined, more: { tls?: TlsListener; terminate?: boolean; adopt?: boolean; admin?: boolean; inspect?: boolean } = {},
): Promise<Target> {
  const port = await freePort();
  const { tls, terminate = false } = more;
  const adminPort = more.admin === true ? await freePort() : undefined;
  const adopt = terminate && more.adopt === true;
  const id: TargetId = adopt ? 'portico-terminate-adopt' : terminate ? 'portico-terminate' : accessLog ? 'portico-access' : 'portico';
  const label = adopt ? 'Portico (1 worker, WebSocket terminate, handoff adopt)' : terminate ? 'Portico (1 worker, WebSocket terminate)' : `Portico (1 worker, access log ${accessLog ? 'on' : 'off'})`;
  const t: Target = { id, label, httpPort: port, wsPort: port, tlsPort: tls?.port, adminPort };
  const started = await launchPortico(
    path.join(tmp, id),
    [
      '# Written by bench/peers/targets.ts: one worker, the benchmark routes, logs as the row label says.',
      'workers: 1',
      'listeners:',
      `  - address: 127.0.0.1:${port}`,
      ...(tls === undefined ? [] : [`  - address: 127.0.0.1:${tls.port}`, `    tls: { certificates: [{ cert: ${JSON.stringify(tls.cert)}, key: ${JSON.stringify(tls.key)} }] }`]),
      'upstreams:',
      '  http:',
      `    targets: [127.0.0.1:${b.httpPort}]`,
      '    keepalive: { max_idle: 64 }',
      '  ws:',
      `    targets: [127.0.0.1:${b.wsPort}]`,
      'routes:',
      '  - match: { path: /ws }',
      '    proxy: ws',
      ...(terminate ? [`    websocket: { mode: terminate${adopt ? ', handoff: adopt' : ''} }`] : []),
      '  - match: { path: / }',
      '    proxy: http',
      `log: { level: ${accessLog ? 'info' : 'warn'}, access: ${accessLog} }`,
      'timeouts: { shutdown_grace: 2s }  # the harness stops it at the end; nothing to drain',
      ...(adminPort === undefined ? [] : [`admin: { address: 127.0.0.1:${adminPort} }`]),
      '',
    ].join('\n'),
    [port, ...(tls === undefined ? [] : [tls.port]), ...(adminPort === undefined ? [] : [adminPort])],
    cpus,
    more.inspect === true ? INSPECT_ENV : undefined,
  );
  t.proc = started.proc;
  t.error = started.error;
  t.logFile = started.logFile;
  t.inspector = started.inspector;
  return t;
}

/**
 * `portico start` on the YAML text `yaml`, written into `dir`; up once every port in `ports` accepts. Its stdout
 * goes to a file (`logFile`), not a pipe: the harness must not spend CPU reading access logs during a run.
 */
export async function launchPortico(dir: string, yaml: string, ports: number[], cpus: string | undefined, env?: Record<string, string>): Promise<Launched & { logFile: string; inspector?: () => string }> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'portico.yaml');
  writeFileSync(file, yaml);
  const logFile = path.join(dir, 'stdout.log');
  const out: Launched & { logFile: string; inspector?: () => string } = { logFile };
  const fd = openSync(logFile, 'a');
  const [cmd, args] = pinned(cpus, process.execPath, [path.join(ROOT, 'bin', 'portico.js'), 'start', '-c', file]);
  try {
    out.proc = spawnProcess(cmd, args, { cwd: ROOT, stdio: ['ignore', fd, 'pipe'], env: env === undefined ? undefined : { ...process.env, ...env } });
    if (env?.NODE_OPTIONS?.includes('--inspect') === true) {
      // every process (primary, workers) says where its inspector listens, once, at start
      let said = '';
      out.proc.child.stderr?.on('data', (c: Buffer) => {
        for (const line of c.toString('utf8').split('\n')) if (line.startsWith('Debugger listening on ')) said += `${line}\n`;
      });
      out.inspector = () => said;
    }
    for (const port of ports) await waitForPort('127.0.0.1', port, START_TIMEOUT_MS, out.proc);
  } catch (err) {
    out.error = `${(err as Error).message}${tailOf(logFile)}`;
  } finally {
    closeSync(fd);
  }
  return out;
}

function tailOf(file: string): string {
  try {
    const text = readFileSync(file, 'utf8').trim();
    return text === '' ? '' : ` | stdout: ${text.split('\n').slice(-3).join(' | ').slice(0, 400)}`;
  } catch {
    return '';
  }
}

/** Keeps a target's log file from growing across runs (the writer opened it with O_APPEND). */
export function truncateLog(t: Target): void {
  if (t.logFile === undefined) return;
  try {
    truncateSync(t.logFile, 0);
  } catch {
    // the file is only a sink
  }
}

/** True when the target's process tree is still alive (a proxy that died mid-bench fails its next runs). */
export function alive(t: Target): boolean {
  return t.proc === undefined || (t.proc.child.exitCode === null && t.proc.child.signalCode === null);
}
