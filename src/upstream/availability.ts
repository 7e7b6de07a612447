// Which targets of a pool take new work: health inputs, fullness and backup role folded into each `Target.available`
// bit the balancers read, slow start ramps begun, and panic when nothing is usable. Pure over the slots it is
// given; it opens nothing and keeps no state of its own (the pool calls it and reports panic flips).
import type { Target } from './balancer.js';
import type { TargetSlot } from './target-slot.js';

/** Usable by health, drain and weight (fullness aside). */
export function slotUsable(slot: TargetSlot, now: number): boolean {
  return slot.target.weight > 0 && !slot.draining && slot.healthy && !slot.passive.isDown(now);
}

/**
 * Recomputes every target's `available` (Caddy: Available = Healthy && !Full). usable = weight > 0, not
 * draining, healthy, not passively down. Available: the usable primaries that are not full; else (every
 * primary down or full) the usable backups that are not full (nginx `backup`); else, when every usable
 * target is full, the usable ones of the first tier that has any, so the request waits in their queue.
 * When no target is usable, every non-drained target with a weight is made available (panic, like nginx
 * trying its peers again when all are marked failed): a check can be wrong, and trying beats 503 for all.
 * A target that becomes usable again (not at start) gets a slow start ramp.
 * Returns whether the pool is in panic. `moveOut`: tells an out-of-rotation target's waiters to pick again.
 */
export function refreshAvailability(slots: ReadonlyMap<Target, TargetSlot>, now: number, slowStart: number, moveOut: (slot: TargetSlot, why: string) => void): boolean {
  let usablePrimaries = 0;
  let usableBackups = 0;
  let freePrimaries = 0;
  let freeBackups = 0;
  for (const slot of slots.values()) {
    const usable = slotUsable(slot, now);
    if (usable && !slot.up && slowStart > 0) slot.target.rampUntil = now + slowStart;
    slot.up = usable;
    if (!usable) continue;
    if (slot.target.backup === true) {
      usableBackups++;
      if (!slot.full) freeBackups++;
    } else {
      usablePrimaries++;
      if (!slot.full) freePrimaries++;
    }
  }
  // No target at all (discovery has not answered yet) is not a panic: there is nothing to try anyway.
  const panic = slots.size > 0 && usablePrimaries + usableBackups === 0;
  // Which tier serves, and whether only targets with room count.
  const backupTier = freePrimaries === 0 && (freeBackups > 0 || usablePrimaries === 0);
  const needRoom = freePrimaries > 0 || freeBackups > 0;
  for (const slot of slots.values()) {
    const t = slot.target;
    if (panic) t.available = t.weight > 0 && !slot.draining;
    else t.available = (t.backup === true) === backupTier && slot.up && (!needRoom || !slot.full);
    // Out of rotation (down, drained, weight 0), not merely full: its waiters would only time out there.
    if (!t.available && !slot.up && slot.waitHead < slot.waiters.length) moveOut(slot, slot.draining ? 'was drained' : 'went down');
  }
  return panic;
}
