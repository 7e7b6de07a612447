// The limits a tunnel's owner reads off its byte counters at each sweep (tunnel/relay.ts TunnelClock): idle,
// half-closed (from the first sweep that sees one side ended: the end counts as activity) and lifetime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TunnelClock } from '../../src/tunnel/relay.js';

test('idle: silence since the last sweep that saw bytes move', () => {
  const clock = new TunnelClock({ idle: 1000, lifetime: 0 }, 0);
  assert.equal(clock.due(0, 0), undefined);
  assert.equal(clock.due(999, 0), undefined);
  assert.equal(clock.due(1000, 0), 'idle_timeout');
  assert.equal(clock.due(1500, 10), undefined, 'bytes moved: the silence starts again');
  assert.equal(clock.due(2499, 10), undefined);
  assert.equal(clock.due(2500, 10), 'idle_timeout');
});

test('half-closed: the bound counts from the sweep that first sees the tunnel half-closed, however long it was silent before', () => {
  const clock = new TunnelClock({ idle: 0, lifetime: 0, halfClosed: 1000 }, 0);
  assert.equal(clock.due(0, 5), undefined);
  assert.equal(clock.due(60_000, 5), undefined, 'no idle bound: a silent open tunnel stays');
  assert.equal(clock.due(60_250, 5, true), undefined, 'the end is activity: not closed at once');
  assert.equal(clock.due(61_249, 5, true), undefined);
  assert.equal(clock.due(61_250, 5, true), 'half_closed_timeout');
});

test('half-closed: bytes the open way keep the tunnel; silence after them ends it', () => {
  const clock = new TunnelClock({ idle: 0, lifetime: 0, halfClosed: 1000 }, 0);
  assert.equal(clock.due(0, 0, true), undefined);
  assert.equal(clock.due(800, 10, true), undefined);
  assert.equal(clock.due(1600, 20, true), undefined);
  assert.equal(clock.due(2599, 20, true), undefined);
  assert.equal(clock.due(2600, 20, true), 'half_closed_timeout');
});

test('half-closed with an idle bound too: the shorter one ends it, each named', () => {
  const shorterFin = new TunnelClock({ idle: 5000, lifetime: 0, halfClosed: 1000 }, 0);
  assert.equal(shorterFin.due(0, 0), undefined);
  assert.equal(shorterFin.due(100, 0, true), undefined);
  assert.equal(shorterFin.due(1100, 0, true), 'half_closed_timeout');
  const shorterIdle = new TunnelClock({ idle: 1000, lifetime: 0, halfClosed: 60_000 }, 0);
  assert.equal(shorterIdle.due(0, 0, true), undefined);
  assert.equal(shorterIdle.due(1000, 0, true), 'idle_timeout');
});

test('half-closed bound off (0 or absent): only the other limits apply', () => {
  for (const halfClosed of [0, undefined]) {
    const clock = new TunnelClock({ idle: 0, lifetime: 0, halfClosed }, 0);
    assert.equal(clock.due(0, 0, true), undefined);
    assert.equal(clock.due(3_600_000, 0, true), undefined);
  }
  const lifetime = new TunnelClock({ idle: 0, lifetime: 2000 }, 0);
  assert.equal(lifetime.due(1999, 0, true), undefined);
  assert.equal(lifetime.due(2000, 0, true), 'lifetime');
});
