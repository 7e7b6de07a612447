// Locations tests need, resolved from the compiled file (dist/test/helpers/paths.js) back to the repo root.
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const ROOT = path.resolve(fileURLToPath(new URL('../../..', import.meta.url)));
export const CLI = path.join(ROOT, 'bin', 'portico.js');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');
/** The contract folder beside the checkout (as in CI), else the copy kept in fixtures. */
export const SHARED_CONTRACT = path.resolve(ROOT, '..', 'shared', 'contract');
