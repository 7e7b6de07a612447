// A static route's fallback as parsed once and rendered per request (config/static-fallback.ts): the path stays
// the fallback's, the query is built from the client's query and path as nginx's try_files builds it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseFallback, renderFallbackQuery, type ParsedFallback } from '../../src/config/static-fallback.js';

function parsed(s: string): ParsedFallback {
  const r = parseFallback(s);
  if (!r.ok) assert.fail(`${s}: ${r.message}`);
  return r.fallback;
}

test('a fallback renders its query from the client\'s query ($args, $query_string, $is_args) and path ($uri)', () => {
  const cases: Array<[string, string, string, string, string]> = [
    // fallback, client query, client decoded path (bytes), expected path, expected query
    ['/index.php?$args', '?x=1&y=2', '/blog/2026/hello', '/index.php', '?x=1&y=2'],
    ['/index.php?$args', '', '/blog', '/index.php', ''],
    ['/index.php?$query_string', '?a', '/blog', '/index.php', '?a'],
    ['/index.php$is_args$args', '?x=1', '/blog', '/index.php', '?x=1'],
    ['/index.php$is_args$args', '', '/blog', '/index.php', ''],
    ['/index.php?q=$uri&$args', '?p=2', '/blog/a', '/index.php', '?q=/blog/a&p=2'],
    ['/index.php?q=$uri', '', '/a b#c%d\u00c3\u00a9', '/index.php', '?q=/a%20b%23c%25d%C3%A9'],
    ['/index.html', '?x=1', '/app/route', '/index.html', ''],
    ['/index.php?route=fixed', '?x=1', '/a', '/index.php', '?route=fixed'],
  ];
  for (const [fb, query, uri, path, want] of cases) {
    const f = parsed(fb);
    assert.equal(f.path, path, fb);
    assert.equal(renderFallbackQuery(f.query, { query, uri }), want, `${fb} with ${query} ${uri}`);
  }
});

test('a fallback that is not an absolute, visible-ASCII, normalized path with known variables is refused', () => {
  for (const bad of ['index.php', '', '/a\nb', '/a\x00', '/a b', '/x$uri', '/x?$host', '/../x', '/a/./b', '/a%2Fb', '/x#y', '/x?${uri']) {
    assert.equal(parseFallback(bad).ok, false, JSON.stringify(bad));
  }
});
