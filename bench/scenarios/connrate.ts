// L4 connection rate: new TCP connections per second through a `tcp` listener and through TLS passthrough by
// SNI, each connection a whole life (connect, a small request, a 64-byte reply, close), through Portico (1 worker)
// against direct-to-backend, nginx `stream` (1 worker, ssl_preread) and HAProxy (1 thread, req_ssl_sni), in
// interleaved rounds; medians, proxy CPU-µs per connection. Client and backends are bench/native/connrate.cc,
// built here with g++. Every target passes a checked run first. It never asserts a speed; see bench/README.md.
// --proxy-protocol v1|v2: every proxy sits behind a balancer (its listeners read a PROXY header, which the client
// sends before its first bytes: nginx `listen … proxy_protocol`, HAProxy `accept-proxy`, Portico `proxy_protocol`).
// Usage: npm run build && node dist/bench/scenarios/connrate.js [--quick] [--rounds N] [--duration S] [--targets a,b]
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { captureNodeHello } from '../../test/helpers/client-hello-capture.js';
import { buildProxyV1, buildProxyV2 } from '../../src/wire/proxy-protocol.js';
import { TestDnsServer } from '../../test/helpers/dns-server.js';
import { readArgs } from '../lib/args.js';
import { runConnRate, type ConnRateLoad, type Watch } from '../lib/loads.js';
import { ROOT } from '../lib/paths.js';
import {
  benchmarkMain, choosePinning, freePort, hasProc, pinned, spawnProcess, stopTree, versionOf, waitForPort, type BenchmarkScope, type Pinning, type Spawned,
} from '../lib/procs.js';
import { UNIT, formatProcesses, formatTable } from '../lib/report.js';
import { caveats, runPlan } from '../lib/rounds.js';
import type { TargetId } from '../lib/shape.js';
import { nativeStatus } from '../../src/tunnel/splice.js';
import { announcedPort, launchHaproxy, launchPortico, porticoRevision, startNginx } from '../peers/targets.js';

type Load = 'tcp' | 'tls';
const LOADS: readonly Load[] = ['tcp', 'tls'];
type ConnTargetId = Extract<TargetId, 'direct' | 'nginx' | 'haproxy' | 'portico' | 'portico-js'>;
const TARGET_IDS: readonly ConnTargetId[] = ['direct', 'nginx', 'haproxy', 'portico', 'portico-js'];

/** The name the TLS load's ClientHello carries, and the one every proxy passes through. */
const SNI = 'pass.bench';
const REQUEST_BYTES = 64;
const REPLY_BYTES = 64;
/** Connections of the check run before any timing. */
const CHECK_COUNT = 500;

interface Options {
  durationS: number;
  rounds: number;
  warmupS: number;
  loads: Load[];
  concurrency: number;
  sources: number;
  pin: boolean;
  targets: ConnTargetId[] | undefined;
  noisyRetries: number;
  out: string;
  keepTmp: boolean;
  /** Portico's listeners' half_close (on: its default; off: as nginx stream's default, proxy_half_close off). */
  halfClose: boolean;
  /** nginx's proxy_half_close on its tcp server (off: nginx's default; on: the same semantics as Portico's default). */
  nginxHalfClose: boolean;
  /** The PROXY header every connection starts with (the proxies' listeners read it); off: none. */
  proxyProtocol: 'off' | 'v1' | 'v2';
  /** The variable set to 0 for the portico-js row: PORTICO_NATIVE (no addon) or PORTICO_NATIVE_L4 (the JS L4 path). */
  jsSwitch: 'PORTICO_NATIVE' | 'PORTICO_NATIVE_L4';
  /** Portico's upstreams follow DNS names (resolve: true) answered by a DNS server of this process. */
  discovered: boolean;
  /** Portico's limits.connections_per_ip (off: the default); the other proxies run without a limit. */
  connectionsPerIp: number | 'off';
  /** Every proxy balances by the client's address (Portico hash on $remote_addr, nginx hash consistent, HAProxy source). */
  hash: boolean;
}

/** The balancer's header: a client of the documentation range to the address it reached (the same on every connection). */
const PROXIED_CLIENT = { address: '192.0.2.10', port: 40000 };
const PROXIED_DESTINATION = { address: '198.51.100.1', port: 443 };

/** The names Portico's upstreams follow with --discovered (both answer 127.0.0.1). */
const NAMES: Record<Load, string> = { tcp: 'tcp.bench', tls: 'tls.bench' };

const USAGE = `usage: node dist/bench/scenarios/connrate.js [options]
  --duration S       seconds per timed run (default 10)
  --rounds N         rounds; each runs every target once per load, order rotated (default 5)
  --warmup S         untimed run per target and load before round 1 (default 2)
  --only tcp|tls     one load only
  --quick            smoke run: defaults --duration 2 --rounds 1 --warmup 1 (flags given win)
  --targets LIST     comma list of direct,nginx,haproxy,portico,portico-js (default: all available;
                     portico-js = Portico with PORTICO_NATIVE=0: the JS relay instead of splice; see --js-switch)
  --concurrency N    connections in flight (default 64)
  --sources N        client source addresses 127.0.0.1..127.0.0.N (default 32)
  --no-pin           do not pin processes to CPUs
  --noisy-retries N  rerun a run up to N times when other processes used >15% of a core in it (default 2)
  --out FILE         JSON result file (default bench/results/connrate.json)
  --keep-tmp         keep the temp folder with generated configs and logs
  --half-close on|off  Portico's listeners' half_close (default on, Portico's default; off closes both sides at
                     the first FIN, as nginx stream does by default: proxy_half_close off)
  --nginx-half-close on|off  nginx stream's proxy_half_close on the tcp server (default off, nginx's default; on
                     passes one side's FIN on and waits for the other's, as Portico's default does: the same work)
  --proxy-protocol off|v1|v2  each connection starts with a PROXY header of that version, as from an L4 balancer; every
                     proxy's listeners read it (nginx proxy_protocol, HAProxy accept-proxy, Portico proxy_protocol
                     trusting 127.0.0.0/8); no direct row (the backend reads none). Default off
  --js-switch PORTICO_NATIVE|PORTICO_NATIVE_L4  the variable set to 0 for the portico-js row (default PORTICO_NATIVE:
                     no addon; PORTICO_NATIVE_L4: the addon's I/O, L4 listeners on the JS path)
  --discovered       Portico's upstreams follow DNS names (\`resolve: true\`, a DNS server of this process answers
                     127.0.0.1, TTL 30 s) instead of naming the backend's address; with PORTICO_NATIVE_L4=0 in the
                     environment its L4 listeners run on the JS path (nginx and HAProxy keep the address)
  --connections-per-ip N  Portico's limits.connections_per_ip (default off): the cost of counting every connection
                     per client; pick N above what one source holds at once (concurrency / sources), or connections
                     are refused and the check run fails. nginx and HAProxy run without a limit
  --hash             every proxy balances by the client's address: Portico \`balance: { policy: hash, key: $remote_addr }\`,
                     nginx \`hash $remote_addr consistent\`, HAProxy \`balance source\` (one target each, as always: the
                     cost of forming and hashing the key per connection, not a spread)`;

function parseOptions(argv: string[]): Options {
  const a = readArgs(
    argv,
    {
      duration: 'string', rounds: 'string', warmup: 'string', quick: 'boolean', only: 'string', targets: 'string', concurrency: 'string', sources: 'string',
      'no-pin': 'boolean', 'noisy-retries': 'string', out: 'string', 'keep-tmp': 'boolean', 'half-close': 'string',
      'nginx-half-close': 'string', 'proxy-protocol': 'string', 'js-switch': 'string', discovered: 'boolean', 'connections-per-ip': 'string', hash: 'boolean',
    },
    USAGE,
  );
  // --quick changes the defaults; a flag given with it still wins (`--quick --duration 3`).
  const quick = a.has('quick');
  const only = a.oneOf<Load>('only', LOADS, undefined);
  return {
    durationS: a.int('duration', quick ? 2 : 10, 1, 3600),
    rounds: a.int('rounds', quick ? 1 : 5, 1, 100),
    warmupS: a.int('warmup', quick ? 1 : 2, 0, 600),
    loads: only === undefined ? [...LOADS] : [only],
    concurrency: a.int('concurrency', 64, 1, 4000),
    sources: a.int('sources', 32, 1, 250),
    pin: !a.has('no-pin'),
    targets: a.list('targets', TARGET_IDS),
    noisyRetries: a.int('noisy-retries', 2, 0, 10),
    out: path.resolve(a.str('out', path.join(ROOT, 'bench', 'results', 'connrate.json'))),
    keepTmp: a.has('keep-tmp'),
    halfClose: a.oneOf('half-close', ['on', 'off'] as const, 'on') === 'on',
    nginxHalfClose: a.oneOf('nginx-half-close', ['on', 'off'] as const, 'off') === 'on',
    proxyProtocol: a.oneOf('proxy-protocol', ['off', 'v1', 'v2'] as const, 'off'),
    jsSwitch: a.oneOf('js-switch', ['PORTICO_NATIVE', 'PORTICO_NATIVE_L4'] as const, 'PORTICO_NATIVE'),
    discovered: a.has('discovered'),
    // absent: 0 (the default is not held to the bounds), that is off
    connectionsPerIp: a.int('connections-per-ip', 0, 1, 10_000_000) || 'off',
    hash: a.has('hash'),
  };
}

interface ConnTarget {
  id: ConnTargetId;
  label: string;
  ports: Record<Load, number>;
  /** The proxy's process tree root; none for direct. */
  proc?: Spawned;
  error?: string;
}

/** g++ builds the load generator into `dir`; throws with the compiler's message when it cannot. */
function buildConnrate(dir: string): string {
  const out = path.join(dir, 'connrate');
  const src = path.join(ROOT, 'bench', 'native', 'connrate.cc');
  const r = spawnSync('g++', ['-O2', '-std=c++17', '-o', out, src], { encoding: 'utf8', timeout: 120_000 });
  if (r.error !== undefined) throw new Error(`g++ not usable (${r.error.message}): apt-get install g++`);
  if (r.status !== 0) throw new Error(`g++ failed on ${src}:\n${r.stderr.trim().slice(-2000)}`);
  return out;
}

/** TIME_WAIT sockets in this network namespace (/proc/net/sockstat `tw`), to watch port and bucket pressure. */
function timeWait(): number {
  const m = /^TCP:.*\btw (\d+)/m.exec(readFileSync('/proc/net/sockstat', 'utf8'));
  return m === null ? -1 : Number(m[1]);
}

function sysctl(name: string): string {
  try {
    return readFileSync(`/proc/sys/${name.replaceAll('.', '/')}`, 'utf8').trim().replace(/\s+/g, ' ');
  } catch {
    return '?';
  }
}

async function startBackend(bin: string, requestFile: string, cpus: string | undefined): Promise<{ proc: Spawned; port: number }> {
  const [cmd, args] = pinned(cpus, bin, ['server', '--request', requestFile, '--reply-bytes', String(REPLY_BYTES)]);
  const proc = spawnProcess(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    return { proc, port: await announcedPort(proc, 'connrate') };
  } catch (err) {
    await stopTree(proc);
    throw err;
  }
}

async function startTargets(tmp: string, o: Options, backend: Record<Load, number>, versions: { nginx?: string; haproxy?: string }, cpus: string | undefined, started: Spawned[], dnsPort?: number): Promise<ConnTarget[]> {
  const wanted = (id: ConnTargetId): boolean => o.targets === undefined || o.targets.includes(id);
  const out: ConnTarget[] = [];
  const ports = async (): Promise<Record<Load, number>> => ({ tcp: await freePort(), tls: await freePort() });
  const pp = o.proxyProtocol !== 'off';
  if (wanted('direct')) {
    if (pp) console.log('--proxy-protocol: no direct row (the backend reads no PROXY header)');
    else out.push({ id: 'direct', label: 'direct (connrate backend)', ports: backend });
  }
  if (wanted('nginx')) {
    if (versions.nginx === undefined) console.log('nginx is not installed: no nginx row');
    else {
      const p = await ports();
      const t: ConnTarget = { id: 'nginx', label: `nginx ${versions.nginx} stream (1 worker)`, ports: p };
      const dir = path.join(tmp, 'nginx');
      const conf = `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
stream {${o.nginxHalfClose ? '\n    proxy_half_close on;' : ''}
${o.hash ? `    upstream tcp_backend { hash $remote_addr consistent; server 127.0.0.1:${backend.tcp}; }\n    upstream tls_backend { hash $remote_addr consistent; server 127.0.0.1:${backend.tls}; }\n` : ''}    server { listen 127.0.0.1:${p.tcp}${pp ? ' proxy_protocol' : ''}; proxy_pass ${o.hash ? 'tcp_backend' : `127.0.0.1:${backend.tcp}`}; }
    map $ssl_preread_server_name $tls_upstream { ${SNI} ${o.hash ? 'tls_backend' : `127.0.0.1:${backend.tls}`}; default 127.0.0.1:1; }
    server { listen 127.0.0.1:${p.tls}${pp ? ' proxy_protocol' : ''}; ssl_preread on; proxy_pass $tls_upstream; }
}
`;
      try {
        t.proc = await startNginx(dir, conf, p.tcp, cpus);
        started.push(t.proc);
        await waitForPort('127.0.0.1', p.tls, 15_000, t.proc);
      } catch (err) {
        t.error = (err as Error).message;
      }
      out.push(t);
    }
  }
  if (wanted('haproxy')) {
    if (versions.haproxy === undefined) console.log('HAProxy is not installed: no HAProxy row');
    else {
      const p = await ports();
      const cfg = `global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tcp_in
    bind 127.0.0.1:${p.tcp}${pp ? ' accept-proxy' : ''}
    default_backend tcp_backend
frontend tls_in
    bind 127.0.0.1:${p.tls}${pp ? ' accept-proxy' : ''}
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend tls_backend if { req_ssl_sni -i ${SNI} }
backend tcp_backend${o.hash ? '\n    balance source' : ''}
    server s1 127.0.0.1:${backend.tcp}
backend tls_backend${o.hash ? '\n    balance source' : ''}
    server s1 127.0.0.1:${backend.tls}
`;
      const launched = await launchHaproxy(path.join(tmp, 'haproxy'), cfg, [p.tcp, p.tls], cpus);
      if (launched.proc !== undefined) started.push(launched.proc);
      out.push({ id: 'haproxy', label: `HAProxy ${versions.haproxy} (1 thread)`, ports: p, proc: launched.proc, error: launched.error });
    }
  }
  for (const id of ['portico', 'portico-js'] as const) {
    if (!wanted(id)) continue;
    const p = await ports();
    const balance = o.hash ? ', balance: { policy: hash, key: $remote_addr }' : '';
    const yaml = [
      '# Written by bench/scenarios/connrate.ts: one worker, a tcp listener and a passthrough-only TLS listener.',
      'workers: 1',
      'listeners:',
      `  - { address: "127.0.0.1:${p.tcp}", mode: tcp, upstream: tcp_backend${o.halfClose ? '' : ', half_close: false'}${pp ? ', proxy_protocol: { trusted: ["127.0.0.0/8"] }' : ''} }`,
      `  - address: "127.0.0.1:${p.tls}"`,
      ...(o.halfClose ? [] : ['    half_close: false']),
      ...(pp ? ['    proxy_protocol: { trusted: ["127.0.0.0/8"] }'] : []),
      `    tls: { passthrough: [{ sni: ${SNI}, upstream: tls_backend }] }`,
      'upstreams:',
      ...(dnsPort === undefined
        ? [`  tcp_backend: { targets: ["127.0.0.1:${backend.tcp}"]${balance} }`, `  tls_backend: { targets: ["127.0.0.1:${backend.tls}"]${balance} }`]
        : [
            `  tcp_backend: { targets: [{ address: "${NAMES.tcp}:${backend.tcp}", resolve: true }]${balance} }`,
            `  tls_backend: { targets: [{ address: "${NAMES.tls}:${backend.tls}", resolve: true }]${balance} }`,
            `resolver: { servers: ["127.0.0.1:${dnsPort}"], family: ipv4 }`,
          ]),
      'log: { level: warn, access: false }',
      'timeouts: { shutdown_grace: 2s }',
      ...(o.connectionsPerIp === 'off' ? [] : [`limits: { connections_per_ip: ${o.connectionsPerIp} }`]),
      '',
    ].join('\n');
    const launched = await launchPortico(path.join(tmp, id), yaml, [p.tcp, p.tls], cpus, id === 'portico-js' ? { [o.jsSwitch]: '0' } : undefined);
    if (launched.proc !== undefined) started.push(launched.proc);
    const jsLabel = o.jsSwitch === 'PORTICO_NATIVE' ? 'JS relay: PORTICO_NATIVE=0' : 'JS L4 path: PORTICO_NATIVE_L4=0';
    const label = id === 'portico' ? `Portico (1 worker, ${nativeStatus().native ? 'splice relay' : 'JS relay: addon not built'})` : `Portico (1 worker, ${jsLabel})`;
    out.push({ id, label, ports: p, proc: launched.proc, error: launched.error });
  }
  return out;
}

function formatConditions(o: Options, c: { pinning: Pinning; nginx?: string; haproxy?: string; helloBytes: number; portico: string }): string {
  const pin = c.pinning.enabled
    ? `taskset: proxy on CPU ${c.pinning.proxyCpu} alone; connrate client and both backends on CPU ${c.pinning.clientCpu}`
    : `off (${c.pinning.reason}): every process floats over all CPUs`;
  return [
    `date:       ${new Date().toISOString()}  (node dist/bench/scenarios/connrate.js ${process.argv.slice(2).join(' ')})`.trimEnd(),
    `machine:    ${os.availableParallelism()} CPUs (${os.cpus()[0]?.model.trim() ?? 'unknown'}), ${os.type()} ${os.release()}, node ${process.version}`,
    `peers:      nginx ${c.nginx ?? 'not installed'} (stream, ssl_preread, proxy_half_close ${o.nginxHalfClose ? 'on' : 'off (its default)'}), HAProxy ${c.haproxy ?? 'not installed'} (mode tcp, req_ssl_sni)`,
    `PROXY:      ${o.proxyProtocol === 'off' ? 'none' : `a ${o.proxyProtocol} header before each connection's first bytes, read by every proxy's listener`}; portico-js row: ${o.jsSwitch}=0`,
    `portico:    ${c.portico}; 1 worker; tcp listener + TLS listener with passthrough only (no certificate); log level warn, access off; half_close ${o.halfClose ? 'on (default)' : 'off (as nginx stream)'}`,
    ...(o.connectionsPerIp === 'off' ? [] : [`            limits.connections_per_ip ${o.connectionsPerIp} (every connection counted per client address; nginx and HAProxy: no limit)`]),
    ...(o.hash ? ['            balance by client address: Portico hash on $remote_addr, nginx hash $remote_addr consistent, HAProxy balance source (one target each)'] : []),
    ...(o.discovered ? [`            upstreams follow DNS names (resolve: true, a DNS server in the bench process, TTL 30 s); PORTICO_NATIVE_L4=${process.env.PORTICO_NATIVE_L4 ?? '(unset)'}`] : []),
    `pinning:    ${pin}`,
    `client:     bench/native/connrate.cc (g++ -O2, one epoll thread), ${o.concurrency} connections in flight, from ${o.sources} source addresses 127.0.0.1..127.0.0.${o.sources}`,
    `connection: tcp = connect, ${REQUEST_BYTES} B request, ${REPLY_BYTES} B reply, backend closes, client closes; tls = the same with a ${c.helloBytes} B`,
    `            TLS ClientHello (Node ${process.version}'s, SNI ${SNI}) as the request: proxies route on it, no handshake is completed`,
    `kernel:     tcp_tw_reuse ${sysctl('net.ipv4.tcp_tw_reuse')}, ip_local_port_range ${sysctl('net.ipv4.ip_local_port_range')}, tcp_max_tw_buckets ${sysctl('net.ipv4.tcp_max_tw_buckets')}, somaxconn ${sysctl('net.core.somaxconn')}`,
    `rounds:     ${o.rounds} x ${o.durationS} s (each target once per load per round, order rotated); ${o.warmupS} s untimed warm-up each; medians shown`,
    'CPU:        utime+stime from /proc/PID/stat of each proxy tree (nginx master + worker, Portico primary + worker); client: its getrusage',
  ].join('\n');
}


function main(): void {
  const o = parseOptions(process.argv.slice(2));
  if (!hasProc) throw new Error('this benchmark reads CPU time from /proc: run it on Linux');
  benchmarkMain('connrate', o.keepTmp, (scope) => bench(o, scope));
}

async function bench(o: Options, { tmp, started, stopped }: BenchmarkScope): Promise<void> {
  const pinning = choosePinning(o.pin, os.availableParallelism());
  const pin = pinning.enabled ? pinning : undefined;
  const versions = {
    nginx: /nginx\/(\S+)/.exec(versionOf('nginx', ['-v']) ?? '')?.[1],
    haproxy: /version (\d+\.\d+\.\d+)/.exec(versionOf('haproxy', ['-v']) ?? '')?.[1],
  };
  const bin = buildConnrate(tmp);
  const requests: Record<Load, string> = { tcp: path.join(tmp, 'request-tcp.bin'), tls: path.join(tmp, 'request-tls.bin') };
  writeFileSync(requests.tcp, Buffer.alloc(REQUEST_BYTES, 'q'));
  const hello = await captureNodeHello({ servername: SNI });
  writeFileSync(requests.tls, hello);
  // what the client sends through a proxy: the balancer's PROXY header, then the request the backend expects
  const header = o.proxyProtocol === 'v1' ? buildProxyV1(PROXIED_CLIENT, PROXIED_DESTINATION) : o.proxyProtocol === 'v2' ? buildProxyV2(PROXIED_CLIENT, PROXIED_DESTINATION) : undefined;
  const sent: Record<Load, string> = { ...requests };
  if (header !== undefined) {
    for (const l of LOADS) {
      sent[l] = path.join(tmp, `sent-${l}.bin`);
      writeFileSync(sent[l], Buffer.concat([header, readFileSync(requests[l])]));
    }
  }
  const conditions = formatConditions(o, { pinning, ...versions, helloBytes: hello.length, portico: porticoRevision() });
  console.log(`L4 connection-rate benchmark\n${conditions}\n`);

  // one backend per load, each expecting its own request bytes; registered as soon as started
  const tcpBackend = await startBackend(bin, requests.tcp, pin?.backendCpu);
  started.push(tcpBackend.proc);
  const tlsBackend = await startBackend(bin, requests.tls, pin?.backendCpu);
  started.push(tlsBackend.proc);
  let dnsPort: number | undefined;
  if (o.discovered) {
    // answers Portico's primary for the whole run (unref'd: it keeps nothing alive)
    const socket = createSocket('udp4');
    socket.bind(0, '127.0.0.1');
    await once(socket, 'listening');
    socket.unref();
    const dns = new TestDnsServer(socket);
    for (const name of Object.values(NAMES)) dns.set(name, { A: [{ address: '127.0.0.1', ttl: 30 }] });
    dnsPort = dns.port;
  }
  const targets = await startTargets(tmp, o, { tcp: tcpBackend.port, tls: tlsBackend.port }, versions, pin?.proxyCpu, started, dnsPort);
  const watchOf = (t: ConnTarget): Watch => ({ proxy: t.proc?.pid, backend: [tcpBackend.proc.pid, tlsBackend.proc.pid] });
  const loadOf = (t: ConnTarget, l: Load, concurrency: number): ConnRateLoad => ({
    binary: bin, port: t.ports[l], requestFile: sent[l], replyBytes: REPLY_BYTES, concurrency, sources: o.sources,
  });
  let maxTimeWait = timeWait();
  const { runs, summaries } = await runPlan<ConnTarget, Load>({
    targets,
    loads: o.loads,
    rounds: o.rounds,
    warmupS: o.warmupS,
    durationS: o.durationS,
    noisyRetries: o.noisyRetries,
    // CHECK_COUNT whole connections, every reply byte compared, no failure allowed
    check: async (t, l) => void (await runConnRate(loadOf(t, l, 16), { count: CHECK_COUNT }, watchOf(t), pin?.clientCpu)),
    load: (t, l, durationS) => runConnRate(loadOf(t, l, o.concurrency), { durationS }, watchOf(t), pin?.clientCpu),
    note: () => {
      const tw = timeWait();
      maxTimeWait = Math.max(maxTimeWait, tw);
      return `TIME_WAIT ${tw}`;
    },
    stopped,
  });

  const titles: Record<Load, string> = {
    tcp: `New connections through a tcp listener (${o.concurrency} in flight, ${REQUEST_BYTES} B up, ${REPLY_BYTES} B down, ${o.durationS} s x ${o.rounds} rounds)`,
    tls: `New connections through TLS passthrough by SNI (${o.concurrency} in flight, ${hello.length} B ClientHello up, ${REPLY_BYTES} B down, ${o.durationS} s x ${o.rounds} rounds)`,
  };
  const report = [
    '',
    '== Results ==',
    conditions,
    ...summaries.flatMap(({ scenario, rows }) => ['', titles[scenario], formatTable(scenario, rows)]),
    '',
    "CPU per process in each row's median run (% of one core over the timed window):",
    ...summaries.flatMap(({ scenario, rows }) => [`${scenario}:`, formatProcesses(rows)]),
    '',
    `vs nginx / vs direct: ratio of median rates. proxy CPU-µs/${UNIT.tcp}: CPU of the proxy's process tree / connections completed;`,
    "user + sys: its user-space and kernel parts. CPU eff. vs nginx: nginx's CPU-µs per connection / this row's.",
    `TIME_WAIT sockets (machine-wide) peaked at ${maxTimeWait} after a run (tcp_max_tw_buckets ${sysctl('net.ipv4.tcp_max_tw_buckets')}).`,
    ...caveats(runs, pinning),
  ];
  console.log(report.join('\n'));
  mkdirSync(path.dirname(o.out), { recursive: true });
  writeFileSync(o.out, `${JSON.stringify({ options: o, pinning, versions, helloBytes: hello.length, summary: summaries, runs }, null, 2)}\n`);
  console.log(`\nwrote ${path.relative(process.cwd(), o.out) || o.out}`);
}

try {
  main();
} catch (err) {
  console.error(`connrate: ${(err as Error).message}`);
  process.exit(1);
}
