// Turns a YAML file into a frozen, validated Config, or into every error it has, each with its YAML path and
// line: YAML syntax, schema (schema.ts), and certificate files. Relative paths resolve against the file's folder.
// It starts nothing and keeps no state: reload calls it again and swaps in the new result only if it is ok.
import { X509Certificate } from 'node:crypto';
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, visit } from 'yaml';
import type { Document } from 'yaml';
import type { z } from 'zod';
import { configSchema } from './schema.js';
import type { Config } from './schema.js';
import { validateHeaderTemplates, validateRouteMatches } from './route-rules.js';
import { validateRedirects } from './redirect-target.js';
import { foreignKeyHint, foreignValueHint } from './foreign-names.js';
import { pemProblem, validityWarning } from './pem-check.js';
import { resolveFastcgiRoot } from './fastcgi.js';
import { deepFreeze, isPlainObject } from '../core/util.js';
import { transferProblem } from './transfer.js';
import { acmeFiles, type AcmeConfig } from './acme.js';

type CertificateEntry = NonNullable<Config['listeners'][number]['tls']>['certificates'][number];

export type ConfigError = {
  /** YAML path such as "routes[2].proxy"; "" for the whole file. */
  path: string;
  /** 1-based position of the node at `path` (or of its nearest existing ancestor when the key is missing). */
  line?: number;
  column?: number;
  message: string;
};

/**
 * `text`: the YAML as read, so a reload can hand workers exactly what the primary validated. `warnings`: what
 * works today but deserves a look (a certificate expired, expiring or not valid yet); `check` prints them.
 */
export type LoadResult = { ok: true; config: Config; file: string; text: string; warnings: ConfigError[] } | { ok: false; errors: ConfigError[] };

/** A config is a few KiB; anything this large is a wrong file, not a config. */
const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** PEM chains and keys are a few KiB each. */
const MAX_PEM_BYTES = 1024 * 1024;

type Segment = string | number;
type Issue = z.core.$ZodIssue;

export function loadConfig(file: string): LoadResult {
  const abs = path.resolve(file);
  const text = readConfigText(abs);
  if (typeof text !== 'string') return { ok: false, errors: [text] };
  return loadConfigText(text, abs);
}

/**
 * Validates config `text` as if read from `file` (relative paths resolve against its folder; certificate files
 * are read). Workers load the text the primary sends them this way, never the file, which may have changed.
 */
export function loadConfigText(text: string, file: string): LoadResult {
  const abs = path.resolve(file);
  if (text.length > MAX_CONFIG_BYTES) return { ok: false, errors: [{ path: '', message: `config is ${text.length} characters (at most ${MAX_CONFIG_BYTES})` }] };
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, merge: true, uniqueKeys: true });
  const at = (offset: number | undefined): Pick<ConfigError, 'line' | 'column'> => {
    if (offset === undefined) return {};
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };

  const errors: ConfigError[] = [];
  // Warnings (unknown tags...) are errors too: a config that means something other than it says is refused.
  // Duplicate keys leave the tree intact, so validation still runs and reports the rest; a broken tree does not,
  // and a path guessed from a broken tree would mislead: syntax errors carry their position only.
  let broken = doc.errors.some((e) => e.code !== 'DUPLICATE_KEY');
  let lastSyntaxLine = -1;
  for (const e of [...doc.errors, ...doc.warnings]) {
    // One syntax error usually cascades into several on the same line: the first one explains it.
    const { line } = at(e.pos[0]);
    if (broken && line === lastSyntaxLine) continue;
    lastSyntaxLine = line ?? -1;
    const where = broken ? [] : pathAt(doc, e.pos[0]);
    let message = e.message;
    if (e.code === 'DUPLICATE_KEY' && where.length > 0) {
      const first = at(locate(doc, where)).line;
      message = `duplicate key "${where[where.length - 1]}"${first === undefined ? '' : ` (first set on line ${first})`}`;
    }
    errors.push({ path: formatPath(where), ...at(e.pos[0]), message });
  }
  if (broken) return fail(errors);
  visit(doc, {
    Pair(_, pair) {
      // A list or map as a key has no meaning in a config (and would be stringified by toJS).
      if (isMap(pair.key) || isSeq(pair.key)) {
        broken = true;
        errors.push({ path: '', ...at(pair.key.range?.[0]), message: 'a key must be a plain value, not a list or a map' });
      }
    },
    Alias(_, alias) {
      if (alias.resolve(doc) === undefined) {
        broken = true;
        errors.push({ path: formatPath(pathAt(doc, alias.range?.[0] ?? 0)), ...at(alias.range?.[0]), message: `unknown alias *${alias.source}` });
      }
    },
  });
  if (broken) return fail(errors);

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    errors.push({ path: '', message: `cannot read YAML: ${(err as Error).message}` });
    return fail(errors);
  }
  if (data === null || data === undefined) {
    errors.push({ path: '', ...at(0), message: 'the file is empty: a config needs at least `listeners`' });
    return fail(errors);
  }

  const checked = checkData(data);
  if ('internal' in checked) {
    errors.push({ path: '', message: `internal error while validating: ${checked.internal}` });
    return fail(errors);
  }
  const { parsed, rules } = checked;
  for (const e of checked.schema) errors.push({ path: formatPath(e.path), ...at(locate(doc, e.path)), message: e.message });
  const baseDir = path.dirname(abs);
  const certs = checkCertificateFiles(data, baseDir);
  for (const e of [...certs.errors, ...checkUpstreamTlsFiles(data, baseDir), ...checkAcmeFiles(data, baseDir), ...checkStaticRoots(data, baseDir), ...checkBodyBufferDir(data, baseDir)]) errors.push({ path: formatPath(e.path), ...at(locate(doc, e.path)), message: e.message });
  const logFile = checkAccessFile(data, baseDir);
  if (logFile !== undefined) errors.push({ path: 'log.access_file', ...at(locate(doc, ['log', 'access_file'])), message: logFile });
  const warnings = certs.warnings.map((e) => ({ path: formatPath(e.path), ...at(locate(doc, e.path)), message: e.message }));

  for (const e of rules) errors.push({ path: formatPath(e.path), ...at(locate(doc, e.path)), message: e.message });
  if (errors.length > 0 || !parsed.success) return fail(errors);
  const config = resolvePaths(parsed.data, baseDir);
  // workers get the config over IPC as JSON (transfer.ts): one that would not arrive whole is a bug, refused here
  const untransferable = transferProblem(config);
  if (untransferable !== undefined) return fail([{ path: '', message: `internal error: the validated config cannot be sent to the workers: ${untransferable}` }]);
  return { ok: true, config: deepFreeze(config), file: abs, text, warnings };
}

function validate(data: unknown) {
  return configSchema.safeParse(data, { reportInput: true, error: messageFor });
}

/**
 * Config data against the schema (one error per mistake) and, when the schema passes, the rules the router owns
 * (header templates, host patterns, methods, redirect targets), each with its path; no file is read. `internal`:
 * a bug in a refinement threw, which must surface as a refused config, never as a crash of a running primary on
 * reload.
 */
function checkData(data: unknown): { parsed: ReturnType<typeof validate>; schema: Flat[]; rules: { path: Segment[]; message: string }[] } | { internal: string } {
  try {
    const parsed = validate(data);
    if (!parsed.success) return { parsed, schema: oneErrorPerMistake(parsed.error.issues.flatMap((issue) => flattenIssue(issue, []))), rules: [] };
    const rules = [...validateHeaderTemplates(parsed.data), ...validateRouteMatches(parsed.data), ...validateRedirects(parsed.data)].map((e) => ({ path: [...e.path], message: e.message }));
    return { parsed, schema: [], rules };
  } catch (err) {
    return { internal: (err as Error).message };
  }
}

/**
 * What `portico check` would refuse in config data, files aside (certificates, roots and folders are not read):
 * each mistake with its path as segments. `portico import-nginx` settles what it writes with it.
 */
export function dataProblems(data: unknown): { path: Segment[]; message: string }[] {
  const checked = checkData(data);
  if ('internal' in checked) return [{ path: [], message: `internal error while validating: ${checked.internal}` }];
  return [...checked.schema, ...checked.rules];
}

/** Worker count to fork: "auto" means one per core the process may use. */
export function resolveWorkers(config: Config): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers;
}

/** One line per error: `FILE:LINE:COL routes[2].proxy: message` (position and path only when known). */
export function formatErrors(file: string, errors: readonly ConfigError[]): string {
  return errors
    .map((e) => {
      const where = e.line === undefined ? file : `${file}:${e.line}:${e.column ?? 1}`;
      return `${where}${e.path === '' ? '' : ` ${e.path}`}: ${e.message}`;
    })
    .join('\n');
}

/** ["routes", 2, "proxy"] -> "routes[2].proxy"; keys that are not plain words are quoted: upstreams["a b"]. */
export function formatPath(segments: readonly Segment[]): string {
  let out = '';
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

function fail(errors: ConfigError[]): LoadResult {
  // File-level errors first, then in reading order; sort is stable, so same-line errors keep schema order.
  const key = (e: ConfigError) => (e.line ?? 0) * 1e6 + (e.column ?? 0);
  return { ok: false, errors: [...errors].sort((a, b) => key(a) - key(b)) };
}

function readConfigText(file: string): string | ConfigError {
  try {
    const st = statSync(file);
    if (!st.isFile()) return { path: '', message: `cannot read config: ${file} is not a file` };
    if (st.size > MAX_CONFIG_BYTES) return { path: '', message: `cannot read config: ${file} is ${st.size} bytes (at most ${MAX_CONFIG_BYTES})` };
    return readFileSync(file, 'utf8');
  } catch (err) {
    return { path: '', message: `cannot read config: ${describeFsError(err, file)}` };
  }
}

function describeFsError(err: unknown, file: string): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `${file} does not exist`;
  if (code === 'EACCES' || code === 'EPERM') return `${file} is not readable (permission denied)`;
  return `${file}: ${(err as Error).message}`;
}

// ---- zod issues -> messages and YAML paths ----

/** Marks zod's generic union message, so flattenIssue can replace it with the branch that explains the problem. */
const UNION_DEFAULT = '\u0000union';

/** Per-parse messages; messages written in schema.ts take precedence over these. */
function messageFor(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type':
      return issue.input === undefined ? 'is required' : `expected ${typeName(issue.expected)}, got ${describeValue(issue.input)}`;
    case 'invalid_value':
      return `expected ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${describeValue(issue.input)}`;
    case 'too_small':
      return boundMessage('at least', issue.origin, Number(issue.minimum), issue.inclusive !== false);
    case 'too_big':
      return boundMessage('at most', issue.origin, Number(issue.maximum), issue.inclusive !== false);
    case 'invalid_format':
      if (issue.format === 'starts_with' && 'prefix' in issue) return `must start with "${String(issue.prefix)}"`;
      if (issue.format === 'regex' && 'pattern' in issue) return `must match ${String(issue.pattern)}`;
      return undefined;
    case 'invalid_union':
      return UNION_DEFAULT;
    default:
      return undefined;
  }
}

function boundMessage(word: 'at least' | 'at most', origin: string, n: number, inclusive: boolean): string | undefined {
  const bound = inclusive ? n : word === 'at least' ? n + 1 : n - 1;
  if (origin === 'number') return inclusive ? `must be ${word} ${n}` : `must be ${word === 'at least' ? 'above' : 'below'} ${n}`;
  if (origin === 'array') return `needs ${word} ${bound} item${bound === 1 ? '' : 's'}`;
  if (origin === 'string') return bound === 1 && word === 'at least' ? 'must not be empty' : `needs ${word} ${bound} characters`;
  return undefined;
}

function typeName(expected: string): string {
  if (expected === 'object' || expected === 'record') return 'a map';
  if (expected === 'array') return 'a list';
  return `a ${expected}`;
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'string') return `"${v.length > 60 ? `${v.slice(0, 57)}...` : v}"`;
  return `${typeof v} ${String(v)}`;
}

/** A union branch that failed only because the value has another type says nothing useful about the value. */
function isTypeMismatch(branch: readonly Issue[]): boolean {
  return branch.every((i) => i.path.length === 0 && (i.code === 'invalid_type' || i.code === 'invalid_value'));
}

/** One message at one path; `kind` lets oneErrorPerMistake drop what an unknown key already explains. */
type Flat = { path: Segment[]; message: string; kind: 'unknown-key' | 'required' | 'rule' | 'other' };

function flattenIssue(issue: Issue, prefix: readonly Segment[]): Flat[] {
  const at: Segment[] = [...prefix, ...issue.path.map(toSegment)];
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((k) => ({ path: [...at, k], message: unknownKeyMessage(k, at), kind: 'unknown-key' }));
    case 'invalid_key':
      return [{ path: at, message: issue.issues.map((i) => i.message).join('; '), kind: 'other' }];
    case 'invalid_union': {
      if (issue.message !== UNION_DEFAULT) return [{ path: at, message: withValueHint(issue.message, at, issue.input), kind: 'other' }];
      const useful = issue.errors.find((b) => !isTypeMismatch(b));
      if (useful !== undefined) return useful.flatMap((i) => flattenIssue(i, at));
      const expected = issue.errors.flatMap((b) =>
        b.map((i) => (i.code === 'invalid_type' ? typeName(i.expected) : i.code === 'invalid_value' ? i.values.map((v) => JSON.stringify(v)).join(' or ') : '')),
      );
      const message = `expected ${[...new Set(expected.filter((e) => e !== ''))].join(' or ')}, got ${describeValue(issue.input)}`;
      return [{ path: at, message: withValueHint(message, at, issue.input), kind: 'other' }];
    }
    case 'invalid_type':
      return [{ path: at, message: issue.message, kind: issue.input === undefined ? 'required' : 'other' }];
    case 'invalid_value':
      return [{ path: at, message: withValueHint(issue.message, at, issue.input), kind: 'other' }];
    case 'custom':
      return [{ path: at, message: issue.message, kind: 'rule' }];
    default:
      return [{ path: at, message: issue.message, kind: 'other' }];
  }
}

/** A value another proxy spells this way (`leastconn`, `ip_hash`) gets Portico's spelling appended. */
function withValueHint(message: string, at: readonly Segment[], input: unknown): string {
  const hint = typeof input === 'string' ? foreignValueHint(at, input) : undefined;
  return hint === undefined ? message : `${message}; ${hint}`;
}

const samePath = (a: readonly Segment[], b: readonly Segment[]) => a.length === b.length && a.every((s, i) => s === b[i]);

/**
 * A misspelt key is one mistake, however many rules it breaks: in a map with an unknown key, "is required" of a
 * sibling and the map's own rules ("a route needs one of: proxy") are what the unknown key explains, so only the
 * unknown key is reported. Likewise one path reports one message for one rule broken several ways.
 */
function oneErrorPerMistake(flat: readonly Flat[]): Flat[] {
  const withUnknown = flat.filter((e) => e.kind === 'unknown-key').map((e) => e.path.slice(0, -1));
  const explained = (e: Flat): boolean => {
    if (e.kind === 'rule') return withUnknown.some((p) => samePath(p, e.path));
    if (e.kind === 'required') return withUnknown.some((p) => samePath(p, e.path.slice(0, -1)));
    return false;
  };
  const seen = new Set<string>();
  return flat.filter((e) => {
    if (explained(e)) return false;
    const key = `${formatPath(e.path)}\u0000${e.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function toSegment(k: PropertyKey): Segment {
  return typeof k === 'number' ? k : String(k);
}

function unknownKeyMessage(key: string, parent: readonly Segment[]): string {
  const foreign = foreignKeyHint(parent, key);
  if (foreign !== undefined) return `unknown key "${key}" (${foreign})`;
  const near = closest(key, knownKeys(parent));
  return `unknown key "${key}"${near === undefined ? '' : ` (did you mean "${near}"?)`}`;
}

// The schema is walked only to suggest a spelling for an unknown key; zod exposes its structure on `_zod.def`.
type SchemaNode = { _zod: { def: SchemaDef } };
type SchemaDef = {
  type: string;
  shape?: Record<string, SchemaNode>;
  innerType?: SchemaNode;
  in?: SchemaNode;
  out?: SchemaNode;
  options?: readonly SchemaNode[];
  element?: SchemaNode;
  valueType?: SchemaNode;
};

/** Keys of every object schema that can sit at `at` (unions contribute all their branches). */
function knownKeys(at: readonly Segment[]): string[] {
  let nodes: SchemaNode[] = [configSchema as unknown as SchemaNode];
  for (const seg of at) nodes = objectsOf(nodes).flatMap((n) => childOf(n, seg));
  return [...new Set(objectsOf(nodes).flatMap((n) => Object.keys(n._zod.def.shape ?? {})))];
}

/** Unwraps defaults, optionals, pipes and unions down to the schemas that actually hold a value. */
function objectsOf(nodes: readonly SchemaNode[], depth = 0): SchemaNode[] {
  if (depth > 16) return [];
  return nodes.flatMap((n) => {
    const d = n._zod.def;
    const inner = [d.innerType, d.in, ...(d.type === 'union' ? (d.options ?? []) : [])].filter((x): x is SchemaNode => x !== undefined);
    return inner.length > 0 && d.type !== 'object' ? objectsOf(inner, depth + 1) : [n];
  });
}

function childOf(n: SchemaNode, seg: Segment): SchemaNode[] {
  const d = n._zod.def;
  if (d.type === 'object' && typeof seg === 'string' && d.shape !== undefined && Object.hasOwn(d.shape, seg)) return [d.shape[seg]];
  if (d.type === 'array' && typeof seg === 'number' && d.element !== undefined) return [d.element];
  if (d.type === 'record' && d.valueType !== undefined) return [d.valueType];
  return [];
}

/** The known key within a small edit distance of `key`, if exactly one is nearest. */
function closest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.min(3, Math.max(1, Math.floor(key.length / 3)) + 1);
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3 || a.length > 64 || b.length > 64) return Infinity;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

// ---- YAML positions ----

type YamlNode = NonNullable<Document['contents']>;

function deref(doc: Document, node: unknown): unknown {
  return isAlias(node) ? node.resolve(doc) : node;
}

function keyText(key: unknown): string | undefined {
  return isScalar(key) ? String(key.value) : undefined;
}

/** Offset of the node at `segments`: a map entry is located by its key, a list item by its start. */
function locate(doc: Document, segments: readonly Segment[]): number | undefined {
  let node: unknown = doc.contents;
  let offset = (node as YamlNode | null)?.range?.[0];
  for (const seg of segments) {
    const step = stepInto(doc, deref(doc, node), seg, 0);
    if (step === undefined) break;
    offset = step.offset ?? offset;
    node = step.value;
  }
  return offset;
}

function stepInto(doc: Document, node: unknown, seg: Segment, depth: number): { offset: number | undefined; value: unknown } | undefined {
  if (isMap(node)) {
    const pair = node.items.find((p) => keyText(p.key) === String(seg));
    if (pair !== undefined) return { offset: (pair.key as YamlNode | null)?.range?.[0], value: pair.value };
    // A key brought in by a `<<` merge is found where it is written, inside the anchored map.
    if (depth > 8) return undefined;
    for (const p of node.items) {
      if (keyText(p.key) !== '<<') continue;
      const sources = deref(doc, p.value);
      for (const src of isSeq(sources) ? sources.items : [sources]) {
        const found = stepInto(doc, deref(doc, src), seg, depth + 1);
        if (found !== undefined) return found;
      }
    }
    return undefined;
  }
  if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
    const item = node.items[seg];
    return { offset: (item as YamlNode | null)?.range?.[0], value: item };
  }
  return undefined;
}

/** The path of the innermost key or item whose source range holds `offset` (for YAML errors). */
function pathAt(doc: Document, offset: number): Segment[] {
  const out: Segment[] = [];
  const within = (n: unknown) => {
    const r = (n as YamlNode | null)?.range;
    return r !== undefined && r !== null && offset >= r[0] && offset < Math.max(r[2], r[0] + 1);
  };
  let node: unknown = doc.contents;
  for (let depth = 0; depth < 64; depth++) {
    let next: unknown;
    if (isMap(node)) {
      for (const p of node.items) {
        const k = keyText(p.key);
        if (k === undefined) continue;
        if (within(p.key)) return [...out, k];
        if (within(p.value)) {
          out.push(k);
          next = p.value;
          break;
        }
      }
    } else if (isSeq(node)) {
      const i = node.items.findIndex(within);
      if (i >= 0) {
        out.push(i);
        next = node.items[i];
      }
    }
    if (next === undefined) break;
    node = next;
  }
  return out;
}

// ---- certificates and paths ----

/**
 * Checks the raw data (not the parsed Config) so missing files are reported together with schema errors.
 * A certificate marked self_signed may be missing: it is generated at start.
 */
function checkCertificateFiles(data: unknown, baseDir: string): { errors: { path: Segment[]; message: string }[]; warnings: { path: Segment[]; message: string }[] } {
  const errors: { path: Segment[]; message: string }[] = [];
  const warnings: { path: Segment[]; message: string }[] = [];
  if (!isPlainObject(data) || !Array.isArray(data.listeners)) return { errors, warnings };
  const now = Date.now();
  data.listeners.forEach((l: unknown, i) => {
    const certs = isPlainObject(l) && isPlainObject(l.tls) && Array.isArray(l.tls.certificates) ? l.tls.certificates : [];
    certs.forEach((c: unknown, j) => {
      if (!isPlainObject(c) || c.self_signed === true) return;
      const at: Segment[] = ['listeners', i, 'tls', 'certificates', j];
      const cert = typeof c.cert === 'string' && c.cert !== '' ? readPem(path.resolve(baseDir, c.cert)) : undefined;
      const key = typeof c.key === 'string' && c.key !== '' ? readPem(path.resolve(baseDir, c.key)) : undefined;
      if (typeof cert === 'object') errors.push({ path: [...at, 'cert'], message: cert.error });
      if (typeof key === 'object') errors.push({ path: [...at, 'key'], message: key.error });
      if (typeof cert !== 'string' || typeof key !== 'string') return;
      const problem = pemProblem(cert, key);
      if (problem !== undefined) errors.push({ path: [...at, problem.field], message: problem.message });
      const warning = validityWarning(cert, now);
      if (warning !== undefined) warnings.push({ path: [...at, 'cert'], message: warning });
    });
  });
  return { errors, warnings };
}

/** The access-log file must be writable where it is (or creatable in its folder): workers open it at start. */
function checkAccessFile(data: unknown, baseDir: string): string | undefined {
  const file = isPlainObject(data) && isPlainObject(data.log) && typeof data.log.access_file === 'string' && data.log.access_file !== '' ? path.resolve(baseDir, data.log.access_file) : undefined;
  if (file === undefined) return undefined;
  try {
    const st = statSync(file);
    if (!st.isFile()) return `${file} is not a file`;
    accessSync(file, fsConstants.W_OK);
    return undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return `cannot write the access log: ${describeFsError(err, file)}`;
  }
  const dir = path.dirname(file);
  try {
    if (!statSync(dir).isDirectory()) return `cannot create the access log: ${dir} is not a folder`;
    accessSync(dir, fsConstants.W_OK);
  } catch (err) {
    return `cannot create the access log in ${dir}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such folder' : 'not writable'}`;
  }
  return undefined;
}

/** An ACME listener's `directory_ca` must be a readable PEM certificate. */
function checkAcmeFiles(data: unknown, baseDir: string): { path: Segment[]; message: string }[] {
  const out: { path: Segment[]; message: string }[] = [];
  if (!isPlainObject(data) || !Array.isArray(data.listeners)) return out;
  data.listeners.forEach((l: unknown, i) => {
    const acme = isPlainObject(l) && isPlainObject(l.tls) && isPlainObject(l.tls.acme) ? l.tls.acme : undefined;
    if (acme === undefined || typeof acme.directory_ca !== 'string' || acme.directory_ca === '') return;
    const pem = readPem(path.resolve(baseDir, acme.directory_ca));
    if (typeof pem === 'object') out.push({ path: ['listeners', i, 'tls', 'acme', 'directory_ca'], message: pem.error });
    else if (!/-----BEGIN CERTIFICATE-----/.test(pem)) out.push({ path: ['listeners', i, 'tls', 'acme', 'directory_ca'], message: 'holds no PEM certificate' });
  });
  return out;
}

/** A static route's root must be a folder Portico can read (resolved against the config file's folder). */
function checkStaticRoots(data: unknown, baseDir: string): { path: Segment[]; message: string }[] {
  const out: { path: Segment[]; message: string }[] = [];
  if (!isPlainObject(data) || !Array.isArray(data.routes)) return out;
  data.routes.forEach((r: unknown, i) => {
    const root = isPlainObject(r) && isPlainObject(r.static) ? r.static.root : undefined;
    if (typeof root !== 'string' || root === '') return;
    const dir = path.resolve(baseDir, root);
    try {
      if (!statSync(dir).isDirectory()) out.push({ path: ['routes', i, 'static', 'root'], message: `${dir} is not a folder` });
      else accessSync(dir, fsConstants.R_OK | fsConstants.X_OK);
    } catch (err) {
      out.push({ path: ['routes', i, 'static', 'root'], message: describeFsError(err, dir) });
    }
  });
  return out;
}

/**
 * body_buffer.temp_dir must be a folder Portico can create files in (workers open unnamed temp files there for
 * chunked bodies to FastCGI routes). The default, the OS temp folder, is checked only when a FastCGI route uses it.
 */
function checkBodyBufferDir(data: unknown, baseDir: string): { path: Segment[]; message: string }[] {
  if (!isPlainObject(data)) return [];
  const set = isPlainObject(data.body_buffer) && typeof data.body_buffer.temp_dir === 'string' && data.body_buffer.temp_dir !== '' ? data.body_buffer.temp_dir : undefined;
  const fastcgi = Array.isArray(data.routes) && data.routes.some((r: unknown) => isPlainObject(r) && r.fastcgi !== undefined);
  if (set === undefined && !fastcgi) return [];
  const dir = set === undefined ? tmpdir() : path.resolve(baseDir, set);
  const at: Segment[] = ['body_buffer', 'temp_dir'];
  try {
    if (!statSync(dir).isDirectory()) return [{ path: at, message: `${dir} is not a folder` }];
    accessSync(dir, fsConstants.W_OK | fsConstants.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return [{ path: at, message: code === 'EACCES' || code === 'EPERM' ? `${dir} is not writable (temp files of chunked FastCGI bodies go there)` : describeFsError(err, dir) }];
  }
  return [];
}

/** An upstream's `tls.ca` must hold at least one certificate; `cert` and `key` must be a pair (as for listeners). */
function checkUpstreamTlsFiles(data: unknown, baseDir: string): { path: Segment[]; message: string }[] {
  const out: { path: Segment[]; message: string }[] = [];
  if (!isPlainObject(data) || !isPlainObject(data.upstreams)) return out;
  for (const [name, u] of Object.entries(data.upstreams)) {
    const t = isPlainObject(u) && isPlainObject(u.tls) ? u.tls : undefined;
    if (t === undefined) continue;
    const at: Segment[] = ['upstreams', name, 'tls'];
    if (typeof t.ca === 'string' && t.ca !== '') {
      const ca = readPem(path.resolve(baseDir, t.ca));
      if (typeof ca === 'object') out.push({ path: [...at, 'ca'], message: ca.error });
      else if (!/-----BEGIN CERTIFICATE-----/.test(ca)) out.push({ path: [...at, 'ca'], message: 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)' });
      else {
        try {
          new X509Certificate(ca);
        } catch (err) {
          out.push({ path: [...at, 'ca'], message: `not a PEM certificate: ${(err as Error).message}` });
        }
      }
    }
    if (typeof t.cert === 'string' && t.cert !== '' && typeof t.key === 'string' && t.key !== '') {
      const cert = readPem(path.resolve(baseDir, t.cert));
      const key = readPem(path.resolve(baseDir, t.key));
      if (typeof cert === 'object') out.push({ path: [...at, 'cert'], message: cert.error });
      if (typeof key === 'object') out.push({ path: [...at, 'key'], message: key.error });
      if (typeof cert === 'string' && typeof key === 'string') {
        const problem = pemProblem(cert, key);
        if (problem !== undefined) out.push({ path: [...at, problem.field], message: problem.message });
      }
    }
  }
  return out;
}

function readPem(file: string): string | { error: string } {
  try {
    const st = statSync(file);
    if (!st.isFile()) return { error: `${file} is not a file` };
    if (st.size > MAX_PEM_BYTES) return { error: `${file} is ${st.size} bytes (at most ${MAX_PEM_BYTES})` };
    accessSync(file, fsConstants.R_OK);
    return readFileSync(file, 'utf8');
  } catch (err) {
    return { error: describeFsError(err, file) };
  }
}

/**
 * The certificate an ACME listener serves: in the state folder, self_signed so that a placeholder for its
 * domains is made at start until the CA issued the real one (primary/acme.ts writes it there).
 */
function managedCertificate(baseDir: string, acme: AcmeConfig): CertificateEntry {
  const files = acmeFiles(baseDir, acme);
  return { cert: files.cert, key: files.key, hosts: acme.domains, self_signed: true };
}

function resolvePaths(config: Config, baseDir: string): Config {
  const abs = (p: string | undefined): string | undefined => (p === undefined ? undefined : path.resolve(baseDir, p));
  return {
    ...config,
    upstreams: Object.fromEntries(
      Object.entries(config.upstreams).map(([name, u]) => [name, u.tls === undefined ? u : { ...u, tls: { ...u.tls, ca: abs(u.tls.ca), cert: abs(u.tls.cert), key: abs(u.tls.key) } }]),
    ),
    routes: config.routes.map((r) => resolveFastcgiRoot(r.static === undefined ? r : { ...r, static: { ...r.static, root: path.resolve(baseDir, r.static.root) } }, baseDir)),
    body_buffer: config.body_buffer.temp_dir === undefined ? config.body_buffer : { ...config.body_buffer, temp_dir: path.resolve(baseDir, config.body_buffer.temp_dir) },
    log: config.log.access_file === undefined ? config.log : { ...config.log, access_file: path.resolve(baseDir, config.log.access_file) },
    listeners: config.listeners.map((l) =>
      l.tls === undefined
        ? l
        : {
            ...l,
            tls: {
              ...l.tls,
              certificates: [
                ...l.tls.certificates.map((c) => ({ ...c, cert: path.resolve(baseDir, c.cert), key: path.resolve(baseDir, c.key) })),
                ...(l.tls.acme === undefined ? [] : [managedCertificate(baseDir, l.tls.acme)]),
              ],
              acme: l.tls.acme === undefined ? undefined : { ...l.tls.acme, directory_ca: abs(l.tls.acme.directory_ca) },
            },
          },
    ),
  };
}
