// A loopback port for peers that cannot listen on port 0 and report the port they got (nginx, php-fpm, Pebble).
import net from 'node:net';

/** A port on 127.0.0.1 that was free a moment ago (another process may take it before the peer binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
