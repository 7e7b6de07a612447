// Benchmark backends, each run in its own process: `backend.js ws` is a uWebSockets.js echo server (C++ does the
// framing, so the backend stays cheap) that answers plain requests with HTTP_BODY; `backend.js http` is the
// node:http fallback used when nginx is missing. Fan-out: a WebSocket on FANOUT_PATH joins topic FANOUT_TOPIC
// (and its 101 names it in X-Portico-Topics for a terminating Portico); `POST /publish` sends its body to them.
// Prints one JSON line {"port": N} once listening on 127.0.0.1; exits on SIGTERM. Knows nothing of proxies.
import http from 'node:http';
import uWS from 'uWebSockets.js';
import { FANOUT_PATH, FANOUT_TOPIC, HTTP_BODY } from '../lib/shape.js';

function announce(port: number): void {
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

function startWsEcho(port: number): void {
  const app = uWS.App().ws<{ fan: boolean }>('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024,
    // 0 disables uWS's idle timeout: a quiet benchmark connection must not be closed between rounds.
    idleTimeout: 0,
    // Fan-out through a tunnelling proxy: a subscriber whose proxy falls behind by more than this misses messages
    // (uWS drops them for that socket); the load generator counts deliveries, not publishes.
    maxBackpressure: 1024 * 1024,
    upgrade: (res, req, context) => {
      const fan = req.getUrl() === FANOUT_PATH;
      const key = req.getHeader('sec-websocket-key');
      const protocol = req.getHeader('sec-websocket-protocol');
      const extensions = req.getHeader('sec-websocket-extensions');
      res.cork(() => {
        // A header before upgrade would make uWS write its implicit 200 first: name the status here.
        if (fan) res.writeStatus('101 Switching Protocols').writeHeader('X-Portico-Topics', FANOUT_TOPIC);
        res.upgrade({ fan }, key, protocol, extensions, context);
      });
    },
    open: (ws) => {
      if (ws.getUserData().fan) ws.subscribe(FANOUT_TOPIC);
    },
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
  });
  app.post('/publish', (res) => {
    const parts: Buffer[] = [];
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    res.onData((chunk, last) => {
      parts.push(Buffer.from(chunk.slice(0)));
      if (!last || aborted) return;
      app.publish(FANOUT_TOPIC, Buffer.concat(parts), true);
      res.cork(() => res.writeStatus('202 Accepted').end('ok'));
    });
  });
  // Plain requests get the HTTP body too, so one backend can stand in for every upstream of a user's config.
  const body = Buffer.from(HTTP_BODY);
  app.any('/*', (res, req) => {
    // An upgrade goes on to the ws handler above (uWS tries routes in turn when one yields).
    if (req.getHeader('upgrade') !== '') {
      req.setYield(true);
      return;
    }
    res.writeHeader('content-type', 'text/plain').end(body);
  });
  app.listen('127.0.0.1', port, (token) => {
    if (!token) {
      process.stderr.write(`uWS could not listen on 127.0.0.1:${port}\n`);
      process.exit(1);
    }
    announce(uWS.us_socket_local_port(token));
  });
}

function startHttp(port: number): void {
  const body = Buffer.from(HTTP_BODY);
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  // The load keeps connections busy; long timeouts keep node from closing them between rounds.
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 130_000;
  server.listen(port, '127.0.0.1', () => {
    const addr = server.address();
    announce(typeof addr === 'object' && addr !== null ? addr.port : port);
  });
}

const kind = process.argv[2];
const port = Number(process.argv[3] ?? 0);
process.on('SIGTERM', () => process.exit(0));
if (kind === 'ws') startWsEcho(port);
else if (kind === 'http') startHttp(port);
else {
  process.stderr.write('usage: backend.js ws|http [port]\n');
  process.exit(2);
}
