// Micro-benchmark of the accept-path parsers (ClientHello, PROXY v1/v2 header, trusted-sender check), with
// tinybench. The ClientHello is a real one, captured from Node's TLS client on loopback at start-up.
// Checks every result before timing it (STYLE.md 14); not a test, it asserts no speed.
// Run: npm run bench:micro:accept
import { Bench } from 'tinybench';
import { printBatchTable } from './batch-table.js';
import { parseClientHello } from '../../src/wire/client-hello.js';
import { buildProxyV1, buildProxyV2, createCidrMatcher, parseProxyHeader } from '../../src/wire/proxy-protocol.js';
import { captureNodeHello } from '../../test/helpers/client-hello-capture.js';

/** Calls per timed iteration: one parse is far below the timer's resolution and overhead. */
const BATCH = 100;

function check(ok: boolean, what: string): void {
  if (!ok) {
    console.error(`bench precheck failed: ${what}`);
    process.exit(1);
  }
}

const hello = await captureNodeHello({ servername: 'www.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
const h = parseClientHello(hello);
check(h.kind === 'done' && h.hello.sni === 'www.example.com' && h.hello.alpn.length === 2 && h.hello.recordBytes === hello.length, 'real ClientHello');
// The same hello re-cut into 64-byte records: the reassembly path.
const hs = hello.subarray(5);
const fragParts: Buffer[] = [];
for (let at = 0; at < hs.length; at += 64) {
  const n = Math.min(64, hs.length - at);
  fragParts.push(Buffer.of(0x16, 0x03, 0x01, n >> 8, n & 0xff), hs.subarray(at, at + n));
}
const fragmented = Buffer.concat(fragParts);
const hf = parseClientHello(fragmented);
check(hf.kind === 'done' && hf.hello.sni === 'www.example.com' && hf.hello.recordBytes === fragmented.length, 'fragmented ClientHello');
const partial = hello.subarray(0, hello.length >> 1);
check(parseClientHello(partial).kind === 'more', 'partial ClientHello');
const plain = Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n', 'latin1');
check(parseClientHello(plain).kind === 'not_tls', 'plaintext');

const src = { address: '203.0.113.7', port: 51234 };
const dst = { address: '198.51.100.1', port: 443 };
const v1 = Buffer.concat([buildProxyV1(src, dst), plain]);
const p1 = parseProxyHeader(v1);
check(p1.kind === 'done' && p1.header.source?.address === src.address && p1.header.destination?.port === 443, 'v1 TCP4');
const v1six = buildProxyV1({ address: '2001:db8::7', port: 51234 }, { address: '2001:db8::1', port: 443 });
const p6 = parseProxyHeader(v1six);
check(p6.kind === 'done' && p6.header.source?.address === '2001:db8::7', 'v1 TCP6');
const v2 = Buffer.concat([buildProxyV2(src, dst, [{ type: 0x02, value: Buffer.from('www.example.com') }]), hello]);
const p2 = parseProxyHeader(v2);
check(p2.kind === 'done' && p2.header.family === 'tcp4' && p2.header.tlvs.length === 1 && p2.used === v2.length - hello.length, 'v2 TCP4 + TLV');
const v2crc = buildProxyV2(src, dst, [], { crc32c: true });
check(parseProxyHeader(v2crc).kind === 'done', 'v2 with CRC32C');
const trusted = createCidrMatcher(['10.0.0.0/8', '192.168.0.0/16', '2001:db8::/32', '127.0.0.1']);
check(trusted.ok && trusted.match('::ffff:192.168.7.1') && !trusted.match('203.0.113.7'), 'CIDR matcher');
const match = trusted.ok ? trusted.match : (): boolean => false;

let sink = 0;
const bench = new Bench({ name: 'accept parsers', time: 1000, warmupTime: 200 });
bench
  .add(`ClientHello, real Node hello (${hello.length} B, 1 record)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseClientHello(hello);
      if (r.kind === 'done') sink += r.hello.recordBytes;
    }
  })
  .add(`ClientHello, same in 64 B records (${fragmented.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseClientHello(fragmented);
      if (r.kind === 'done') sink += r.hello.recordBytes;
    }
  })
  .add(`ClientHello, half received (-> more)`, () => {
    for (let i = 0; i < BATCH; i++) if (parseClientHello(partial).kind === 'more') sink++;
  })
  .add(`ClientHello, plaintext HTTP (-> not_tls)`, () => {
    for (let i = 0; i < BATCH; i++) if (parseClientHello(plain).kind === 'not_tls') sink++;
  })
  .add(`PROXY v1 TCP4 (${v1.length - plain.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseProxyHeader(v1);
      if (r.kind === 'done') sink += r.used;
    }
  })
  .add(`PROXY v1 TCP6 (${v1six.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseProxyHeader(v1six);
      if (r.kind === 'done') sink += r.used;
    }
  })
  .add(`PROXY v2 TCP4 + 1 TLV (${v2.length - hello.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseProxyHeader(v2);
      if (r.kind === 'done') sink += r.used;
    }
  })
  .add(`PROXY v2 TCP4 + CRC32C (${v2crc.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const r = parseProxyHeader(v2crc);
      if (r.kind === 'done') sink += r.used;
    }
  })
  .add('PROXY v2 build TCP4', () => {
    for (let i = 0; i < BATCH; i++) sink += buildProxyV2(src, dst).length;
  })
  .add('trusted-sender check, 4 CIDRs, IPv4-mapped address', () => {
    for (let i = 0; i < BATCH; i++) if (match('::ffff:192.168.7.1')) sink++;
  });

await bench.run();

printBatchTable('accept parsers micro-benchmark', bench, BATCH);
if (sink === -1) console.log(sink); // keeps the results observable
