// Benchmark backends, each run in its own process: `backend.js ws` is a uWebSockets.js echo server (C++ does the
// framing, so the backend stays cheap) that answers plain requests with HTTP_BODY; `backend.js http` is the
// node:http fallback used when nginx is missing.
// Prints one JSON line {"port": N} once listening on 127.0.0.1; exits on SIGTERM. Knows nothing of proxies.
import http from 'node:http';
import uWS from 'uWebSockets.js';
import { HTTP_BODY } from '../lib/shape.js';

function announce(port: number): void {
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

function startWsEcho(port: number): void {
  const app = uWS.App().ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024,
    // 0 disables uWS's idle timeout: a quiet benchmark connection must not be closed between rounds.
    idleTimeout: 0,
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
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
