// Property tests, under a time budget, of the header parsers of static files and compression: parseRange
// (src/wire/range.ts) and chooseEncoding (src/wire/accept-encoding.ts) never throw, a single range always lies
// inside the file, a chosen coding was offered and not refused with q=0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseRange, etagListMatches, ifRangeHolds } from '../../src/wire/range.js';
import { chooseEncoding, type Coding } from '../../src/wire/accept-encoding.js';

const BUDGET_MS = 500;
const opts = { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)] };

const RANGE_PIECES = ['bytes=', 'BYTES =', '0', '1', '9', '10', '99999999999999999', '-', ',', ' ', '=', 'a', '', '-0', '5-', '-5', '7-3'];
const rangeArb = fc.oneof(fc.array(fc.constantFrom(...RANGE_PIECES), { maxLength: 12 }).map((p) => p.join('')), fc.string({ maxLength: 40 }));

test('parseRange: never throws; a single range is inside the file and ordered', () => {
  fc.assert(
    fc.property(rangeArb, fc.integer({ min: 0, max: 1e12 }), (value, size) => {
      const r = parseRange(value, size);
      if (r.kind === 'single') {
        assert.ok(r.start >= 0 && r.start <= r.end && r.end < size, `${value} on ${size}: ${JSON.stringify(r)}`);
      }
    }),
    opts,
  );
});

test('etagListMatches and ifRangeHolds never throw on any input', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 60 }), fc.string({ maxLength: 20 }), fc.integer({ min: 0, max: 2 ** 40 }), (list, etag, mtime) => {
      etagListMatches(list, `"${etag}"`);
      ifRangeHolds(list, `"${etag}"`, mtime);
    }),
    opts,
  );
});

const AE_PIECES = ['gzip', 'br', 'x-gzip', 'identity', '*', 'deflate', ';q=0', ';q=1', ';q=0.5', ';q=0.001', ';q=2', ';q=', ';x=y', ',', ', ', ' ', 'GZIP', 'Br'];
const aeArb = fc.oneof(fc.array(fc.constantFrom(...AE_PIECES), { maxLength: 14 }).map((p) => p.join('')), fc.string({ maxLength: 60 }));

test('chooseEncoding: never throws; the choice was offered and the header does not refuse it by name', () => {
  fc.assert(
    fc.property(aeArb, fc.subarray(['br', 'gzip'] as Coding[]), (header, offered) => {
      const c = chooseEncoding(header, offered);
      if (c === null) return;
      assert.ok(offered.includes(c));
      assert.ok(!new RegExp(`(^|,)\\s*${c}\\s*;\\s*q\\s*=\\s*0(\\.0*)?\\s*(,|$)`, 'i').test(header) || new RegExp(`(^|,)\\s*${c}\\s*(;\\s*q\\s*=\\s*(0\\.0*[1-9]|1))?\\s*(,|$)`, 'i').test(header), `${header} -> ${c}`);
    }),
    opts,
  );
});
