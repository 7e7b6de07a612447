// The two small backends that `npm start` puts behind Portico: an HTTP app (the demo page and /api/info) and a
// WebSocket echo. They stand in for a user's own services, so they only use what a user's service would (node:http,
// ws) and know nothing of Portico's internals. Loopback only; not part of the data path.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import { createLogger } from '../core/log.js';

export interface DemoBackendOptions {
  /** Port of the HTTP app on 127.0.0.1 (default 9081; 0 picks a free one). */
  appPort?: number;
  /** Port of the WebSocket echo on 127.0.0.1 (default 9082; 0 picks a free one). */
  echoPort?: number;
}

export interface DemoBackends {
  /** The ports actually bound (differ from the options when those were 0). */
  readonly appPort: number;
  readonly echoPort: number;
  close(): Promise<void>;
}

const HOST = '127.0.0.1';
/** A demo echo has no business with large frames; ws rejects bigger ones with close code 1009. */
const MAX_MESSAGE_BYTES = 64 * 1024;
/** Above this many bytes queued to a slow client, stop reading from it until the queue drains. */
const ECHO_HIGH_WATER = 1024 * 1024;
const SHOWN_HEADERS = ['x-forwarded-for', 'x-real-ip', 'x-forwarded-proto', 'x-forwarded-host', 'host'] as const;

export async function startDemoBackends(opts: DemoBackendOptions = {}): Promise<DemoBackends> {
  const app = http.createServer(serveApp);
  // A browser keeps connections open; closing the demo must not wait for them.
  app.keepAliveTimeout = 5_000;
  await listen(app, opts.appPort ?? 9081);

  let echo: EchoServer;
  try {
    echo = await startEcho(opts.echoPort ?? 9082);
  } catch (err) {
    await closeHttp(app);
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    appPort: (app.address() as AddressInfo).port,
    echoPort: echo.port,
    close() {
      closing ??= Promise.all([closeHttp(app), echo.close()]).then(() => undefined);
      return closing;
    },
  };
}

function serveApp(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = req.url ?? '/';
  const path = url.split('?', 1)[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { Allow: 'GET, HEAD' });
    return;
  }
  if (path === '/api/info') {
    const info = { method: req.method, url, httpVersion: req.httpVersion, headers: req.headers, remoteAddress: req.socket.remoteAddress };
    send(res, 200, 'application/json; charset=utf-8', `${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  if (path === '/' || path === '/index.html') {
    // A fresh nonce per response lets the page's one inline script run under a CSP that allows nothing else.
    const nonce = randomBytes(16).toString('base64');
    send(res, 200, 'text/html; charset=utf-8', demoPage(req.headers, nonce), {
      'Content-Security-Policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'`,
      'Cache-Control': 'no-store',
    });
    return;
  }
  if (path === '/favicon.ico') {
    send(res, 204, undefined, '');
    return;
  }
  send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
}

function send(res: http.ServerResponse, status: number, type: string | undefined, body: string, extra: Record<string, string> = {}): void {
  const headers: Record<string, string | number> = { ...extra, 'X-Content-Type-Options': 'nosniff' };
  if (type !== undefined) headers['Content-Type'] = type;
  if (status !== 204) headers['Content-Length'] = Buffer.byteLength(body);
  res.writeHead(status, headers);
  res.end(status === 204 ? undefined : body);
}

interface EchoServer {
  port: number;
  close(): Promise<void>;
}

async function startEcho(port: number): Promise<EchoServer> {
  const server = http.createServer((_req, res) => send(res, 426, 'text/plain; charset=utf-8', 'this is a WebSocket endpoint\n', { Upgrade: 'websocket' }));
  const wss = new WebSocketServer({ server, maxPayload: MAX_MESSAGE_BYTES, clientTracking: true });
  wss.on('connection', echoEverything);
  await listen(server, port);
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      // 1001 "going away": the page shows it and offers to reconnect.
      for (const ws of wss.clients) ws.close(1001, 'demo stopping');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      for (const ws of wss.clients) ws.terminate();
      await closeHttp(server);
    },
  };
}

function echoEverything(ws: WebSocket): void {
  ws.on('error', () => ws.terminate());
  // Backpressure: a client that sends faster than it reads stops being read until its echoes are flushed.
  const resumeWhenFlushed = (): void => {
    if (ws.isPaused && ws.bufferedAmount <= ECHO_HIGH_WATER / 2) ws.resume();
  };
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary }, resumeWhenFlushed);
    if (ws.bufferedAmount > ECHO_HIGH_WATER) ws.pause();
  });
}

function listen(server: http.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function closeHttp(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

function demoPage(headers: http.IncomingHttpHeaders, nonce: string): string {
  const rows = SHOWN_HEADERS.map((name) => {
    const raw = headers[name];
    const value = raw === undefined ? '' : Array.isArray(raw) ? raw.join(', ') : raw;
    const shown = value === '' ? '<span class="none">(not set)</span>' : escapeHtml(value);
    return `<tr><th>${name}</th><td data-header="${name}">${shown}</td></tr>`;
  }).join('\n          ');

  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Portico demo</title>
  <link rel="icon" href="data:,">
  <style>
    :root { color-scheme: light dark; --accent: #2f6fdb; --muted: #777; }
    body { font: 16px/1.5 system-ui, sans-serif; margin: 0; padding: 2rem 1rem; }
    main { max-width: 44rem; margin: 0 auto; }
    h1 { margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; }
    p.lead { margin: 0; color: var(--muted); }
    table { border-collapse: collapse; width: 100%; }
    th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid color-mix(in srgb, currentColor 15%, transparent); }
    th { font-weight: 500; font-family: ui-monospace, monospace; font-size: .9rem; width: 12rem; }
    td { font-family: ui-monospace, monospace; font-size: .9rem; word-break: break-all; }
    .none { color: var(--muted); }
    #state { font-weight: 600; } #state[data-state="open"] { color: #1a8f3c; } #state[data-state="closed"] { color: #c0392b; }
    form { display: flex; gap: .5rem; margin: .75rem 0; }
    input { flex: 1; font: inherit; padding: .4rem .6rem; }
    button { font: inherit; padding: .4rem .9rem; border: 0; border-radius: 4px; background: var(--accent); color: #fff; cursor: pointer; }
    button:disabled { opacity: .5; cursor: default; }
    #log { list-style: none; padding: 0; margin: 0; font-family: ui-monospace, monospace; font-size: .9rem; }
    #log li { padding: .15rem 0; } #log .sent::before { content: "→ "; } #log .echo::before { content: "← "; }
    #log .info { color: var(--muted); }
  </style>
</head>
<body>
  <main>
    <h1>Portico</h1>
    <p class="lead">This page came from the demo app through Portico. The WebSocket below shares its port.</p>

    <h2>What the app received</h2>
    <table>
      <tbody>
          ${rows}
      </tbody>
    </table>

    <h2>WebSocket echo</h2>
    <p>State: <span id="state" data-state="connecting">connecting</span> · <code id="url"></code></p>
    <form id="send">
      <input id="message" autocomplete="off" placeholder="Type a message" value="hello through Portico" maxlength="1000">
      <button id="send-button" type="submit" disabled>Send</button>
      <button id="reconnect" type="button" hidden>Reconnect</button>
    </form>
    <ol id="log" aria-live="polite"></ol>
  </main>
  <script nonce="${nonce}">
    'use strict';
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/wss';
    const $ = (id) => document.getElementById(id);
    const state = $('state'), log = $('log'), input = $('message'), sendButton = $('send-button'), reconnect = $('reconnect');
    let ws;
    $('url').textContent = url;

    function setState(s) { state.textContent = s; state.dataset.state = s; sendButton.disabled = s !== 'open'; reconnect.hidden = s !== 'closed'; }
    function append(kind, text) {
      const li = document.createElement('li');
      li.className = kind;
      li.textContent = text;
      log.append(li);
      while (log.children.length > 50) log.firstElementChild.remove();
    }

    function connect() {
      setState('connecting');
      ws = new WebSocket(url);
      ws.onopen = () => setState('open');
      ws.onmessage = (e) => append('echo', typeof e.data === 'string' ? e.data : '(binary message)');
      ws.onclose = (e) => { setState('closed'); append('info', 'closed (code ' + e.code + (e.reason ? ', ' + e.reason : '') + ')'); };
    }

    $('send').addEventListener('submit', (e) => {
      e.preventDefault();
      if (ws.readyState !== WebSocket.OPEN || input.value === '') return;
      ws.send(input.value);
      append('sent', input.value);
    });
    reconnect.addEventListener('click', connect);
    connect();
  </script>
</body>
</html>
`;
}

// `node dist/src/cli/demo.js` runs the backends alone (e.g. behind another proxy, to compare).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const log = createLogger('info', { component: 'demo' });
  const backends = await startDemoBackends();
  log.info({ app: `http://${HOST}:${backends.appPort}/`, echo: `ws://${HOST}:${backends.echoPort}/` }, 'demo backends listening');
  const stop = (signal: NodeJS.Signals) => {
    log.info({ signal }, 'demo backends stopping');
    void backends.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
