// The fixed shape of the end-to-end benchmark, shared by the harness and its child processes: routes, the
// HTTP body every backend returns, the WebSocket handshake constant, the target ids. Values and types only; no I/O,
// no imports.

/** The fixed body every HTTP backend returns; the harness checks it through each target before timing. */
export const HTTP_BODY = 'ok portico bench\n';
/** Path of the keep-alive GET. */
export const HTTP_PATH = '/';
/** Path routed to the WebSocket echo backend (a prefix route in every proxy). */
export const WS_PATH = '/ws';
/** Fan-out: WebSockets on this path join FANOUT_TOPIC (under WS_PATH, so every proxy routes it to the WebSocket backend). */
export const FANOUT_PATH = '/ws/fan';
export const FANOUT_TOPIC = 'fan';
/** RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing into Sec-WebSocket-Accept. */
export const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * Every proxy (or none: direct) a scenario can point load at; portico-js: Portico with the native addon off;
 * portico-terminate: Portico terminating WebSockets in uWebSockets.js (`websocket: { mode: terminate }`), once it exists;
 * portico-terminate-adopt: the same with `handoff: adopt` (the client socket itself handed to uWS, no unix hop);
 * portico-user: Portico on the user's own config (`portico bench -c FILE`).
 * uws-sslapp: the uWebSockets.js SSLApp + adoptSocket TLS front prototype (bench:tls).
 */
export type TargetId = 'direct' | 'nginx' | 'haproxy' | 'portico' | 'portico-access' | 'portico-js' | 'portico-terminate' | 'portico-terminate-adopt' | 'portico-user' | 'uws-sslapp';
