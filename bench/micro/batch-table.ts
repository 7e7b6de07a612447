// The result table of a tinybench run whose tasks each call the code under test `batch` times per sample:
// per-call ns (median and mean of the samples) and ops/s, with the machine named. Shared by the micro-benchmarks.
import os from 'node:os';
import type { Bench } from 'tinybench';

export function printBatchTable(title: string, bench: Bench, batch: number): void {
  console.log(`# ${title} — node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${os.platform()}`);
  console.log(`# each sample runs the call ${batch} times; ns/op and ops/s are per single call`);
  const rows = bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') return { task: t.name, 'ns/op': r.state, 'ops/s': '', samples: 0 };
    const nsPerOp = (r.latency.p50 * 1e6) / batch;
    return {
      task: t.name,
      'ns/op (median)': nsPerOp.toFixed(0),
      'ns/op (mean)': ((r.latency.mean * 1e6) / batch).toFixed(0),
      'ops/s': Math.round(1e9 / nsPerOp).toLocaleString('en-US'),
      samples: r.latency.samplesCount,
    };
  });
  console.table(rows);
}
