// The /proc/net/tcp reader and the overlap rule behind "refuse a port another process listens on".
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { overlaps, parseListenEntries, type ListenEntry } from '../../src/accept/port-owner.js';

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 20 4 30 10 -1
   3: garbage
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5252 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5353 1 0000000000000000 100 0 0 10 0
`;

test('LISTEN entries are read from /proc/net/tcp and tcp6 (other states and malformed lines skipped)', () => {
  assert.deepEqual(parseListenEntries(TCP, 4), [
    { family: 4, address: '127.0.0.1', port: 8080, inode: 4242 },
    { family: 4, address: '0.0.0.0', port: 443, inode: 4343 },
  ]);
  assert.deepEqual(parseListenEntries(TCP6, 6), [
    { family: 6, address: '::1', port: 8080, inode: 5151 },
    { family: 6, address: '::', port: 80, inode: 5252 },
    { family: 6, address: '::ffff:127.0.0.1', port: 81, inode: 5353 },
  ]);
});

test('an address collides with the same address, a wildcard of its family, and "::"', () => {
  const e = (family: 4 | 6, address: string): ListenEntry => ({ family, address, port: 1, inode: 1 });
  const yes: [string, ListenEntry][] = [
    ['127.0.0.1', e(4, '127.0.0.1')], ['127.0.0.1', e(4, '0.0.0.0')], ['0.0.0.0', e(4, '10.0.0.1')], ['', e(4, '127.0.0.1')],
    ['127.0.0.1', e(6, '::')], ['127.0.0.1', e(6, '::ffff:127.0.0.1')], ['::', e(4, '127.0.0.1')], ['::1', e(6, '::1')],
    ['0:0:0:0:0:0:0:1', e(6, '::1')], ['localhost', e(4, '127.0.0.1')], ['some.name', e(4, '10.9.9.9')],
  ];
  const no: [string, ListenEntry][] = [
    ['127.0.0.2', e(4, '127.0.0.1')], ['::1', e(4, '127.0.0.1')], ['127.0.0.1', e(6, '::1')], ['::1', e(6, '::2')], ['127.0.0.1', e(6, '::ffff:127.0.0.2')],
  ];
  for (const [host, entry] of yes) assert.equal(overlaps(host, entry), true, `${host} vs ${entry.address}`);
  for (const [host, entry] of no) assert.equal(overlaps(host, entry), false, `${host} vs ${entry.address}`);
});
