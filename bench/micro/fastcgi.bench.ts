// Micro-benchmark of the FastCGI codec on the per-request path (wire/fastcgi.ts, wire/cgi-head.ts), with
// tinybench: params encoding (the flat list as it was, and a request's opening as the handler builds it now: the
// route's pairs encoded once, the request's as one binary string, one buffer), reading a PHP response's records,
// parsing its CGI head. Checks every result before
// timing it (STYLE.md 14); not a test, it asserts no speed. Run: npm run bench:micro:fastcgi
import { Bench } from 'tinybench';
import { printBatchTable } from './batch-table.js';
import { RecordReader, decodePairs, encodeParams, encodeRequestStart, type RecordSink } from '../../src/wire/fastcgi.js';
import { parseCgiHead } from '../../src/wire/cgi-head.js';
import { parseRequestHead, type RequestHead } from '../../src/wire/http-head.js';
import { fixedParams, requestParams, type ParamContext } from '../../src/handlers/fastcgi-params.js';
import { compileForwarding } from '../../src/route/forwarding.js';
import type { CompiledFastcgi } from '../../src/route/router.js';
import type { Config } from '../../src/config/schema.js';

/** Calls per timed iteration: one call is far below the timer's resolution and overhead. */
const BATCH = 100;

/** What nginx's fastcgi_params plus a browser's headers make: ~30 params. */
const PARAMS = [
  'GATEWAY_INTERFACE', 'CGI/1.1', 'SERVER_SOFTWARE', 'portico', 'QUERY_STRING', 'lang=en&v=3', 'REQUEST_METHOD', 'GET',
  'CONTENT_TYPE', '', 'CONTENT_LENGTH', '', 'SCRIPT_FILENAME', '/srv/www/html/index.php', 'SCRIPT_NAME', '/index.php',
  'PATH_INFO', '', 'REQUEST_URI', '/index.php?lang=en&v=3', 'DOCUMENT_URI', '/index.php', 'DOCUMENT_ROOT', '/srv/www/html',
  'SERVER_PROTOCOL', 'HTTP/1.1', 'REQUEST_SCHEME', 'https', 'HTTPS', 'on', 'REMOTE_ADDR', '203.0.113.7', 'REMOTE_PORT', '53122',
  'SERVER_ADDR', '10.0.0.1', 'SERVER_PORT', '443', 'SERVER_NAME', 'www.example.com', 'REDIRECT_STATUS', '200',
  'HTTP_HOST', 'www.example.com', 'HTTP_USER_AGENT', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  'HTTP_ACCEPT', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', 'HTTP_ACCEPT_ENCODING', 'gzip, deflate, br',
  'HTTP_ACCEPT_LANGUAGE', 'en-US,en;q=0.9', 'HTTP_COOKIE', 'session=3f1c2a9b7d; theme=dark',
];

function record(type: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([1, type, 0, 1, content.length >> 8, content.length & 255, 0, 0]), content]);
}
const head = 'X-Powered-By: PHP/8.2.36\r\nContent-type: text/html; charset=UTF-8\r\nSet-Cookie: PHPSESSID=abc; path=/\r\n\r\n';
const response = Buffer.concat([record(6, Buffer.from(head + 'x'.repeat(2000))), record(6, Buffer.alloc(0)), record(3, Buffer.alloc(8))]);
const headBuf = Buffer.from(head + 'body');

function check(ok: boolean, what: string): void {
  if (!ok) {
    console.error(`bench precheck failed: ${what}`);
    process.exit(1);
  }
}

let sink = 0;
const counting: RecordSink = { stdout: (b) => (sink += b.length), stderr: () => {}, end: () => sink++ };
const enc = encodeParams(1, PARAMS);
check(enc.length > 600 && enc[1] === 4, 'params encoded');
const r = new RecordReader(1, counting);
check(r.push(response) === null && r.ended, 'response read');
const h = parseCgiHead(headBuf, { headerSize: 65536, headers: 200 });
check(h.kind === 'done' && h.head.status === 200 && h.head.headers.length === 6, 'CGI head');

// the same request as PARAMS, as the handler sees it
const parsed = parseRequestHead(
  Buffer.from('GET /index.php?lang=en&v=3 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: session=3f1c2a9b7d; theme=dark\r\n\r\n', 'latin1'),
  { headerSize: 65536, uriSize: 8192, headers: 100 },
);
check(parsed.kind === 'done', 'request head');
const reqHead = (parsed as { head: RequestHead }).head;
const route: CompiledFastcgi = { root: '/srv/www/html', index: 'index.php', split: null, params: [] };
const script = { scriptName: '/index.php', pathInfo: '', uri: '/index.php', filename: '/srv/www/html/index.php' };
const ctx: ParamContext = {
  vars: { remoteAddr: '203.0.113.7', host: 'www.example.com', scheme: 'https', requestUri: reqHead.target, serverPort: 443, trustedPeer: false },
  remotePort: '53122',
  serverAddr: '10.0.0.1',
  forwarding: compileForwarding({ forwarding: { trusted_proxies: [], x_forwarded_for: 'replace', forwarded: false } } as unknown as Config),
};
const opening = encodeRequestStart(1, true, fixedParams(route), requestParams(reqHead, script, route, ctx), true);
const sent = decodePairs(opening.subarray(24, 24 + opening.readUInt16BE(20)));
check(sent !== null && sent.size === PARAMS.length / 2 && sent.get('HTTP_COOKIE') === 'session=3f1c2a9b7d; theme=dark', 'request opening carries the same params');

const bench = new Bench({ name: 'fastcgi codec', time: 1000, warmupTime: 200 });
bench
  .add(`encode ${PARAMS.length / 2} params (${enc.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) sink += encodeParams(1, PARAMS).length;
  })
  .add(`a request's opening: BEGIN + the same params + ends (${opening.length} B, one buffer)`, () => {
    for (let i = 0; i < BATCH; i++) sink += encodeRequestStart(1, true, fixedParams(route), requestParams(reqHead, script, route, ctx), true).length;
  })
  .add(`read a response's records (${response.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) if (new RecordReader(1, counting).push(response) === null) sink++;
  })
  .add(`parse a CGI head (${head.length} B)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const x = parseCgiHead(headBuf, { headerSize: 65536, headers: 200 });
      if (x.kind === 'done') sink += x.used;
    }
  });

await bench.run();

printBatchTable('fastcgi codec micro-benchmark', bench, BATCH);
if (sink === -1) console.log(sink); // keeps the results observable
