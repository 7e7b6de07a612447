// Words of other proxies' configs (nginx, HAProxy, Caddy, Traefik, Envoy) that people carry over, with what
// Portico calls the same thing: `check` appends the hint to its "unknown key" or "expected ..." error. Only
// names here; no rule of the config lives in this file.

type Segment = string | number;

/** Key written by habit -> what Portico takes instead. */
const FOREIGN_KEYS: Readonly<Record<string, string>> = {
  proxy_pass: 'nginx\'s proxy_pass is `proxy: UPSTREAM` in a route',
  reverse_proxy: 'Caddy\'s reverse_proxy is `proxy: UPSTREAM` in a route',
  location: 'nginx\'s location is a route: `match: { path: /prefix }`',
  server_name: 'nginx\'s server_name is a route\'s `match: { host: [...] }`',
  listen: 'nginx\'s listen is `listeners: [{ address: "host:port" }]`',
  server: 'nginx\'s upstream `server` lines are `targets: ["host:port", ...]`',
  servers: 'the backends of an upstream are `targets: ["host:port", ...]`',
  backends: 'the backends of an upstream are `targets: ["host:port", ...]`',
  lb_policy: 'Caddy\'s lb_policy is `balance`',
  loadbalancer: 'Traefik\'s loadBalancer is an entry of `upstreams` with `targets` and `balance`',
  ssl_certificate: 'nginx\'s ssl_certificate is `tls: { certificates: [{ cert: FILE, key: FILE }] }` on a listener',
  ssl_certificate_key: 'nginx\'s ssl_certificate_key is `key:` beside `cert:` in `tls.certificates`',
  proxy_set_header: 'nginx\'s proxy_set_header is `request_headers: { set: { Name: value } }` in a route',
  add_header: 'nginx\'s add_header is `response_headers: { set: { Name: value } }` in a route',
  client_max_body_size: 'nginx\'s client_max_body_size is `limits: { body_size: 1MiB }`',
  proxy_connect_timeout: 'nginx\'s proxy_connect_timeout is an upstream\'s `timeouts: { connect: 5s }`',
  proxy_read_timeout: 'nginx\'s proxy_read_timeout is an upstream\'s `timeouts: { response_headers: 60s, idle: 60s }`',
  keepalive_timeout: 'nginx\'s keepalive_timeout is `timeouts: { keepalive: 75s }`',
  worker_processes: 'nginx\'s worker_processes is `workers: auto` (or a number)',
  access_log: 'the access log is `log: { access: true, file: PATH }`',
  error_log: 'the process log is JSON on stdout; its level is `log: { level: info }`',
};

/** Balancing words of other proxies -> Portico's `balance`. */
const FOREIGN_BALANCE: Readonly<Record<string, string>> = {
  leastconn: 'HAProxy\'s leastconn is `balance: least_conn`',
  least_connections: 'write `balance: least_conn`',
  leastrequest: 'Envoy\'s LEAST_REQUEST is `balance: least_conn`',
  least_request: 'Envoy\'s LEAST_REQUEST is `balance: least_conn`',
  roundrobin: 'HAProxy\'s roundrobin is `balance: round_robin`',
  'round-robin': 'write `balance: round_robin`',
  wrr: 'weighted round robin is `balance: round_robin` with `weight` on targets',
  ip_hash: 'nginx\'s ip_hash is `balance: { policy: hash, key: "$remote_addr" }`',
  source: 'HAProxy\'s balance source is `balance: { policy: hash, key: "$remote_addr" }`',
  hash: 'hashing needs a key: `balance: { policy: hash, key: "$remote_addr" }` (or "header:NAME", "cookie:NAME", "query:NAME")',
  random: 'write `balance: random_two` (the lighter of two random targets)',
  ring_hash: 'consistent hashing is `balance: { policy: hash, key: ... }` (Maglev)',
  maglev: 'consistent hashing is `balance: { policy: hash, key: ... }` (Maglev)',
  sticky: 'sticky sessions are `balance: { policy: cookie }`',
  cookie: 'cookie stickiness is `balance: { policy: cookie }`',
};

/** The hint for an unknown key written where `parent` points, if another proxy uses that word. */
export function foreignKeyHint(_parent: readonly Segment[], key: string): string | undefined {
  const k = key.toLowerCase();
  return Object.hasOwn(FOREIGN_KEYS, k) ? FOREIGN_KEYS[k] : undefined;
}

/** The hint for a refused string value at `at`, if another proxy spells that setting this way. */
export function foreignValueHint(at: readonly Segment[], value: string): string | undefined {
  const v = value.trim().toLowerCase();
  if (at[at.length - 1] === 'balance' && Object.hasOwn(FOREIGN_BALANCE, v)) return FOREIGN_BALANCE[v];
  return undefined;
}
