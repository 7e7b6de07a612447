// The config's routes compiled once into matchers: (host, method, path) -> Decision.
// Everything above the router parses, everything below executes; Decision is the typed hand-off.
// Also compiles header set/remove rules with nginx-style variables into cheap templates.
import type { Config, TunnelConfig } from './config/schema.js';
import type { ErrorCode } from './errors.js';

/** Values a header template may use (nginx names and meaning). */
export interface RequestVars {
  remoteAddr: string; // $remote_addr
  host: string; // $host: Host header without port, lower-cased, else the listener's address
  scheme: 'http' | 'https'; // $scheme
  requestUri: string; // $request_uri: the original target with query
  serverPort: number; // $server_port
}

export interface CompiledHeaderOps {
  /** Lower-cased names to drop. */
  remove: ReadonlySet<string>;
  /** Headers to set (replace): name as written in config, and a renderer over the request's variables. */
  set: ReadonlyArray<{ name: string; lower: string; render: (v: RequestVars) => string }>;
}

export interface CompiledRoute {
  index: number;
  /** config name or "routes[i]" */
  name: string;
  upstream: string;
  /** The path prefix to remove before forwarding ('' when strip_prefix is off or the match is not a prefix). */
  stripPrefix: string;
  requestHeaders: CompiledHeaderOps;
  responseHeaders: CompiledHeaderOps;
  tunnel: TunnelConfig;
}

export type Decision =
  | { kind: 'proxy'; route: CompiledRoute }
  | { kind: 'reject'; code: ErrorCode };

export declare class Router {
  constructor(config: Config);
  /** host: lower-cased, no port (undefined when the request has none); path: without query. */
  route(host: string | undefined, method: string, path: string): Decision;
}
