// ConnectionRegistry: add and delete in O(1) with every live connection swept, drained and closed once; and a
// connection deleted from it is garbage for the next scavenge (no chain of old tables keeps it alive).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { ConnectionRegistry, type Tracked } from '../../src/core/registry.js';

/**
 * `p`, bounded: the registry's timers are unref'd (they never keep a worker alive), so this ref'd one keeps the
 * test's loop running until `p` settles, and fails it after 5 s.
 */
async function within<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('registry timer never fired')), 5000)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

class Fake implements Tracked {
  registrySlot = -1;
  swept = 0;
  drained = 0;
  forced = 0;
  /** Run during sweep(): a connection that closes itself, or another one, while the registry walks. */
  onSweep: (() => void) | null = null;
  /** What a real connection drags along (socket, buffers, heads). */
  readonly payload: number[];
  constructor(n = 0) {
    this.payload = new Array<number>(32).fill(n);
  }
  sweep(): void {
    this.swept++;
    this.onSweep?.();
  }
  drain(): void {
    this.drained++;
  }
  forceClose(): void {
    this.forced++;
  }
}

test('registry: size follows add and delete; a double add or delete changes nothing; ids are distinct', () => {
  const r = new ConnectionRegistry();
  const a = new Fake();
  const b = new Fake();
  const c = new Fake();
  const ids = new Set([r.add(a), r.add(b), r.add(c)]);
  assert.equal(ids.size, 3);
  assert.equal(r.size, 3);
  r.add(a);
  assert.equal(r.size, 3, 'added twice: one entry');
  r.delete(a);
  r.delete(a);
  assert.equal(r.size, 2, 'deleted twice: one removal');
  assert.equal(a.registrySlot, -1);
  r.delete(new Fake());
  assert.equal(r.size, 2, 'a stranger is not removed in place of anyone');
  r.delete(b);
  r.delete(c);
  assert.equal(r.size, 0);
});

test('registry: the sweep reaches every connection once while those it closes leave the list', async () => {
  const r = new ConnectionRegistry();
  const conns = Array.from({ length: 20 }, () => new Fake());
  for (const c of conns) r.add(c);
  let done!: () => void;
  const swept = new Promise<void>((resolve) => (done = resolve));
  let visits = 0;
  // every even one closes itself during its sweep (the last entry moves into its place)
  for (const [i, c] of conns.entries()) c.onSweep = () => {
    if (i % 2 === 0) r.delete(c);
    if (++visits === conns.length) done();
  };
  await within(swept); // the registry's own interval (every 250 ms)
  for (const c of conns) assert.equal(c.swept, 1, 'swept once');
  assert.equal(r.size, 10);
  for (const c of conns) r.delete(c);
  assert.equal(r.size, 0, 'and the interval stops with the last one');
});

test('registry: drain reaches every connection once, even as the first ones leave during the walk', async () => {
  const r = new ConnectionRegistry();
  const conns = Array.from({ length: 50 }, () => new Fake());
  for (const c of conns) r.add(c);
  // each forced close removes its connection at once (as a tunnel's end does), moving the last one into its place
  for (const c of conns) c.forceClose = function (this: Fake) {
    this.forced++;
    r.delete(this);
  };
  await within(r.drain(20));
  for (const c of conns) {
    assert.equal(c.drained, 1, 'drained once');
    assert.equal(c.forced, 1, 'closed once');
  }
  assert.equal(r.size, 0);
});

test('registry: a connection deleted while another is being closed is not visited after it left', async () => {
  const r = new ConnectionRegistry();
  const conns = Array.from({ length: 10 }, () => new Fake());
  for (const c of conns) r.add(c);
  // the first one visited takes every other one with it
  let first = true;
  for (const c of conns) c.forceClose = function (this: Fake) {
    this.forced++;
    if (first) {
      first = false;
      for (const o of conns) r.delete(o);
    }
  };
  await within(r.drain(10));
  assert.equal(conns.reduce((n, c) => n + c.forced, 0), 1, 'only the first one was still registered when its turn came');
});

test('registry: connections added and deleted one after another are not kept alive through scavenges', () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as (o?: { type: 'minor' | 'major' }) => void;
  const r = new ConnectionRegistry();
  // 16 live at a time, as under a new-connection-per-request load; each one is registered, then deleted. The
  // first ones outlive two scavenges (as any does that stays a while), so the registry's storage is promoted.
  const live: Fake[] = [];
  for (let i = 0; i < 16; i++) {
    live.push(new Fake(i));
    r.add(live[i]);
  }
  gc({ type: 'minor' });
  gc({ type: 'minor' });
  const oldSpace = (): number => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!.space_used_size;
  const before = oldSpace();
  const total = 20_000;
  for (let i = 0; i < total; i++) {
    const c = new Fake(i);
    r.add(c);
    live.push(c);
    if (live.length > 16) r.delete(live.shift()!);
    if (i % 1000 === 999) gc({ type: 'minor' });
  }
  const grown = oldSpace() - before;
  for (const c of live) r.delete(c);
  // each Fake is ~0.3 KiB with its payload: a chain that held them all would promote megabytes
  assert.ok(grown < 1024 * 1024, `old space grew ${grown} bytes over ${total} connections`);
});
