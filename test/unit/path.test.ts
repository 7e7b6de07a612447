// normalizePath (src/http/path.ts): what routes see and what is forwarded, what is refused, and that an
// ordinary path comes back as the very same string (the fast path allocates nothing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PATH_ABOVE_ROOT,
  PATH_BACKSLASH,
  PATH_BAD_ESCAPE,
  PATH_DOT_PARAMS,
  PATH_ENCODED_DOT,
  PATH_ENCODED_SLASH,
  PATH_NUL,
  normalizePath,
} from '../../src/wire/path.js';

test('normalized: dot segments resolved (RFC 3986 §5.2.4), slashes merged, unreserved escapes decoded', () => {
  const cases: Array<[string, string]> = [
    ['/', '/'],
    ['/a/b', '/a/b'],
    ['/a/b/', '/a/b/'],
    ['/Tomcat/../manager/html', '/manager/html'],
    ['/a/./b', '/a/b'],
    ['/a/.', '/a/'],
    ['/a/..', '/'],
    ['/a/b/../c/./d/..', '/a/c/'],
    ['/a//b///c', '/a/b/c'],
    ['//', '/'],
    ['//a', '/a'],
    ['/a//', '/a/'],
    ['/%41%7e%2D%5f%30', '/A~-_0'],
    ['/%2e%2ehtaccess', '/..htaccess'],
    ['/file%2etxt', '/file.txt'],
    ['/a%3f%3Fb%20c', '/a%3F%3Fb%20c'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['/.well-known/acme', '/.well-known/acme'],
    ['/a/..b/.c', '/a/..b/.c'],
    ['/a;b=c/d', '/a;b=c/d'],
  ];
  for (const [input, want] of cases) assert.equal(normalizePath(input), want, input);
});

test('refused (400): encoded "/" or "\\", NUL, encoded dot segments, dot segments with params, ".." above the root, bad escapes', () => {
  const cases: Array<[string, object]> = [
    ['/Tomcat/..%2Fx', PATH_ENCODED_SLASH],
    ['/a%2fb', PATH_ENCODED_SLASH],
    ['/Tomcat/%2e%2e/x', PATH_ENCODED_DOT],
    ['/Tomcat/.%2E/x', PATH_ENCODED_DOT],
    ['/a/%2e/b', PATH_ENCODED_DOT],
    ['/Tomcat/..;/manager/html', PATH_DOT_PARAMS],
    ['/Tomcat/.;x/y', PATH_DOT_PARAMS],
    ['/Tomcat/..%3b/manager', PATH_DOT_PARAMS],
    ['/Tomcat/%2e%2e;/manager', PATH_DOT_PARAMS],
    ['/..', PATH_ABOVE_ROOT],
    ['/../x', PATH_ABOVE_ROOT],
    ['/a/../..', PATH_ABOVE_ROOT],
    ['/a\\..\\b', PATH_BACKSLASH],
    ['/a%5cb', PATH_BACKSLASH],
    ['/a%00', PATH_NUL],
    ['/%', PATH_BAD_ESCAPE],
    ['/%4', PATH_BAD_ESCAPE],
    ['/%zz', PATH_BAD_ESCAPE],
    ['/a%g0', PATH_BAD_ESCAPE],
  ];
  for (const [input, want] of cases) assert.equal(normalizePath(input), want, input);
});

test('paths that are not origin-form (OPTIONS *, CONNECT) are left alone', () => {
  assert.equal(normalizePath('*'), '*');
  assert.equal(normalizePath(''), '');
});

test('an ordinary path comes back as the same string (no copy made)', () => {
  const ordinary = ['/', '/api/v1/users/42', '/static/app.min.js', '/a/b/', '/x..y/z.', '/a-b_c~d;e=f'];
  for (const p of ordinary) assert.ok(Object.is(normalizePath(p), p), p);
});
