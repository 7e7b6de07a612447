// Request heads shared by the micro-benchmarks (head.bench.ts, request-head.bench.ts): what a browser sends.

/** A browser's navigation: 453 bytes, eight fields, a cookie. */
export const browserGet = Buffer.from(
  [
    'GET /Tomcat/app/index.html?lang=en&v=3 HTTP/1.1',
    'Host: www.example.com',
    'Connection: keep-alive',
    'Upgrade-Insecure-Requests: 1',
    'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
    'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8',
    'Accept-Encoding: gzip, deflate, br, zstd',
    'Accept-Language: en-US,en;q=0.9',
    'Cookie: session=3f1c2a9b7d; theme=dark',
    '',
    '',
  ].join('\r\n'),
  'latin1',
);
