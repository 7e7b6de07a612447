// A bare TCP proxy for the tunnel benchmark: accepts on a port, connects to one upstream, and relays with the
// JS Tunnel or the SpliceTunnel, nothing else (no routing, no logging), so the relay is what gets measured.
// Usage: node dist/bench/peers/tunnel-proxy.js js|splice LISTEN_PORT UPSTREAM_PORT   (prints "ready PORT")
import net from 'node:net';
import { Tunnel } from '../../src/tunnel/relay.js';
import { SpliceTunnel, canSplice, nativeStatus } from '../../src/tunnel/splice.js';

const [mode, listenArg, upstreamArg] = process.argv.slice(2);
if ((mode !== 'js' && mode !== 'splice') || listenArg === undefined || upstreamArg === undefined) {
  process.stderr.write('usage: tunnel-proxy.js js|splice LISTEN_PORT UPSTREAM_PORT\n');
  process.exit(2);
}
if (mode === 'splice' && !nativeStatus().native) {
  process.stderr.write(`splice relay unavailable: ${nativeStatus().reason}\n`);
  process.exit(3);
}
const upstreamPort = Number(upstreamArg);
const timeouts = { idle: 0, lifetime: 0 };

const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (client) => {
  const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort, allowHalfOpen: true, noDelay: true });
  upstream.once('error', () => client.destroy());
  upstream.once('connect', () => {
    if (mode === 'splice' && canSplice(client, upstream)) new SpliceTunnel(client, upstream, timeouts, () => {}).start(null, null);
    else new Tunnel(client, upstream, timeouts, () => {}).start(null, null);
  });
});
server.listen(Number(listenArg), '127.0.0.1', () => {
  process.stdout.write(`ready ${(server.address() as net.AddressInfo).port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
