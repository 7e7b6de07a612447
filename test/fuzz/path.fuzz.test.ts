// Property tests of normalizePath (src/http/path.ts) with fast-check, under a time budget: never throws, the
// result is normalized (idempotent, no dot segment, no `//`, nothing a backend could decode into a separator or
// a dot segment), agrees with a plain reference on paths without escapes, and keeps the routing promise: a
// forwarded path that matches a prefix still lies under that prefix when a lenient backend decodes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isRefused, normalizePath } from '../../src/wire/path.js';

const BUDGET_MS = 700;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

/** Pieces that sit on the normalizer's decision edges. */
const PIECES = ['/', '//', '.', '..', '%2e', '%2E', '%2f', '%2F', '%5c', '%5C', '\\', ';', '%3b', '%3B', '%00', '%', '%4', '%zz', '%41', '%7e', '%25', '%20', 'a', 'Tomcat', 'manager', '~', '-', '_', 'x.y'];
const pieceArb = fc.array(fc.constantFrom(...PIECES), { maxLength: 14 }).map((ps) => '/' + ps.join(''));
/** Any printable ASCII a request-target may carry (the head parser refuses the rest). */
const asciiArb = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).filter((c) => c !== 0x23 && c !== 0x3f).map((c) => String.fromCharCode(c)), maxLength: 40 }).map((s) => '/' + s);
const pathArb = fc.oneof(pieceArb, asciiArb);

/**
 * How the most lenient backend could read a path: every escape decoded, `\` as `/`, `;params` stripped from
 * each segment, slashes merged, dots resolved (clamped at the root).
 */
function lenient(path: string): string {
  const decoded = path.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))).replace(/\\/g, '/');
  const out: string[] = [];
  for (const raw of decoded.split('/')) {
    const seg = raw.split(';')[0];
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  return '/' + out.join('/');
}

/** RFC 3986 §5.2.4 with merged slashes, for paths without escapes or backslashes. */
function reference(path: string): string | null {
  const out: string[] = [];
  const segs = path.split('/').slice(1);
  for (const seg of segs) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length === 0) return null;
      out.pop();
    } else out.push(seg);
  }
  const last = segs[segs.length - 1];
  const trailing = last === '' || last === '.' || last === '..';
  return out.length === 0 ? '/' : '/' + out.join('/') + (trailing ? '/' : '');
}

function under(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(prefix + '/');
}

test('normalizePath never throws, and what it returns is normalized and stable', () => {
  fc.assert(
    fc.property(pathArb, (p) => {
      const r = normalizePath(p);
      if (isRefused(r)) return;
      assert.equal(r.charCodeAt(0), 0x2f);
      assert.ok(!r.includes('//'), r);
      assert.ok(!r.includes('\\'), r);
      assert.ok(!/%(2f|5c|00)/i.test(r), r);
      for (const seg of r.split('/')) {
        assert.ok(seg !== '.' && seg !== '..', r);
        assert.ok(!/^\.\.?(;|%3b)/i.test(seg), r);
      }
      assert.equal(normalizePath(r), r, 'idempotent');
    }),
    opts,
  );
});

test('normalizePath agrees with RFC 3986 remove_dot_segments (slashes merged) on paths without escapes', () => {
  fc.assert(
    fc.property(pathArb.filter((p) => !p.includes('%') && !p.includes('\\') && !/(^|\/)\.\.?;/.test(p)), (p) => {
      const r = normalizePath(p);
      const want = reference(p);
      if (want === null) assert.ok(isRefused(r), p);
      else assert.equal(r, want, p);
    }),
    opts,
  );
});

test('a forwarded path under a prefix stays under it however leniently the backend decodes it', () => {
  fc.assert(
    fc.property(fc.constantFrom('/Tomcat', '/a', '/api/v1'), pathArb, (prefix, rest) => {
      const r = normalizePath(prefix + rest);
      if (isRefused(r) || !under(r, prefix)) return;
      assert.ok(under(lenient(r), prefix), `${prefix + rest} -> ${r} -> ${lenient(r)}`);
    }),
    opts,
  );
});
