// The benchmark's one option parser (bench/lib/args.ts): strict flags, bounded numbers, lists from a known set,
// and the usage text in every refusal, so a typo stops a benchmark before it starts anything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readArgs } from '../../bench/lib/args.js';

const USAGE = 'usage: bench [--rounds N] [--duration S] [--quick] [--targets LIST] [--only http|ws]';
const FLAGS = { rounds: 'string', duration: 'string', quick: 'boolean', targets: 'string', only: 'string' } as const;

test('values and switches are read with their defaults when absent', () => {
  const a = readArgs(['--rounds', '3', '--quick'], FLAGS, USAGE);
  assert.equal(a.int('rounds', 5, 1, 100), 3);
  assert.equal(a.num('duration', 10, 1, 3600), 10);
  assert.equal(a.has('quick'), true);
  assert.equal(a.list('targets', ['nginx', 'portico']), undefined);
  assert.equal(a.oneOf('only', ['http', 'ws'], undefined), undefined);
  const b = readArgs(['--duration=2.5', '--targets', 'portico,nginx', '--only', 'ws'], FLAGS, USAGE);
  assert.equal(b.num('duration', 10, 1, 3600), 2.5);
  assert.deepEqual(b.list('targets', ['nginx', 'portico']), ['portico', 'nginx']);
  assert.equal(b.oneOf('only', ['http', 'ws'], undefined), 'ws');
});

test('an unknown flag, a missing value or a stray argument is refused with the usage text', () => {
  assert.throws(() => readArgs(['--round', '3'], FLAGS, USAGE), (e: Error) => e.message.includes("'--round'") && e.message.includes(USAGE));
  assert.throws(() => readArgs(['--rounds'], FLAGS, USAGE), (e: Error) => e.message.includes(USAGE));
  assert.throws(() => readArgs(['extra'], FLAGS, USAGE), (e: Error) => e.message.includes(USAGE));
});

test('numbers out of bounds, fractions where an integer is due, and junk are refused', () => {
  const bad = (argv: string[], read: (a: ReturnType<typeof readArgs>) => unknown, re: RegExp): void => {
    assert.throws(() => read(readArgs(argv, FLAGS, USAGE)), (e: Error) => re.test(e.message) && e.message.includes(USAGE));
  };
  bad(['--rounds', '0'], (a) => a.int('rounds', 5, 1, 100), /--rounds needs an integer in \[1, 100\], got "0"/);
  bad(['--rounds', '2.5'], (a) => a.int('rounds', 5, 1, 100), /--rounds needs an integer/);
  bad(['--rounds', '3x'], (a) => a.int('rounds', 5, 1, 100), /got "3x"/);
  bad(['--rounds', ''], (a) => a.int('rounds', 5, 1, 100), /got ""/);
  bad(['--duration', 'Infinity'], (a) => a.num('duration', 10, 1, 3600), /--duration needs a number/);
  bad(['--targets', 'nginx,apache'], (a) => a.list('targets', ['nginx', 'portico']), /--targets: unknown apache; use nginx,portico/);
  bad(['--targets', ','], (a) => a.list('targets', ['nginx', 'portico']), /unknown \(empty\)/);
  bad(['--only', 'tcp'], (a) => a.oneOf('only', ['http', 'ws'], undefined), /--only takes http or ws, got "tcp"/);
});
