// The wall clock (ms) as the hot path reads it: within one native I/O batch, read once and kept (nginx updates
// its cached time once per event-loop wake-up the same way); outside a batch, Date.now() itself. The batch
// loop (native/io.ts) opens and closes the batch; nothing else here has state. For deadlines, idle times and
// log times, where a batch's length (well under a millisecond to a few) does not matter: never for latencies.

/** Date.now() of this batch, -1 until first read; `inBatch`: a native I/O batch is being dispatched. */
let batchMs = -1;
let inBatch = false;

/** Date.now(), read at most once per native I/O batch. */
export function batchNow(): number {
  if (!inBatch) return Date.now();
  if (batchMs < 0) batchMs = Date.now();
  return batchMs;
}

/** A native I/O batch begins: the first batchNow() in it reads the clock. */
export function beginBatch(): void {
  inBatch = true;
  batchMs = -1;
}

/** The batch's events are handled: batchNow() reads the clock at each call again. */
export function endBatch(): void {
  inBatch = false;
}
