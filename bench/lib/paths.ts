// Where the benchmark's files are: the repository root, the compiled bench/ tree (child programs are started
// from there) and the config fixtures. Paths only; nothing here reads or starts anything.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root, from dist/bench/lib/paths.js. */
export const ROOT = path.resolve(fileURLToPath(new URL('../../..', import.meta.url)));
/** The compiled bench/ tree: `node` runs child programs from here (dist/bench/peers/*.js). */
export const BENCH_DIST = path.join(ROOT, 'dist', 'bench');
/** Config templates and the wrk report script (bench/fixtures/, not compiled). */
export const FIXTURES = path.join(ROOT, 'bench', 'fixtures');
