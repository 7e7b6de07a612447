// Reads an nginx configuration file into a tree of directives, for `portico import-nginx` (nginx-import.ts).
// The grammar is nginx's own (ngx_conf_file.c): words separated by blanks, `;` ends a directive, `{ }` hold a
// block, `#` starts a comment at the start of a word, quotes and backslash escapes group a word. `include` is
// followed relative to the file that names it (globs on the last path part only), at most 16 levels deep.
// No npm parser of nginx configs is maintained today, and this one is small and bounded.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

export interface Directive {
  readonly name: string;
  readonly args: readonly string[];
  /** The file and 1-based line the directive starts on. */
  readonly file: string;
  readonly line: number;
  /** The directives inside `{ }`; undefined for a simple directive. */
  readonly block: Directive[] | undefined;
}

export class NginxParseError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
  ) {
    super(`${file}:${line}: ${message}`);
  }
}

interface Token {
  readonly text: string;
  readonly line: number;
  /** A quoted word: `{`, `;` and `}` inside it are text. */
  readonly quoted: boolean;
}

const MAX_FILE_BYTES = 4 * 1024 * 1024;
const MAX_INCLUDE_DEPTH = 16;
/**
 * What one import may read in all, includes counted each time they are read: globs at several levels multiply
 * (a file per level including 100 others, 16 levels deep), so depth alone does not bound the work.
 */
const MAX_FILES_READ = 1024;
const MAX_TOTAL_BYTES = 32 * 1024 * 1024;

/** What is left of the import's reading budget (MAX_FILES_READ, MAX_TOTAL_BYTES). */
interface Budget {
  files: number;
  bytes: number;
}

const freshBudget = (): Budget => ({ files: MAX_FILES_READ, bytes: MAX_TOTAL_BYTES });

/** Splits one file's text into words and `{` `}` `;` (as words that are not quoted). */
export function tokenize(text: string, file: string): Token[] {
  const tokens: Token[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      i++;
      continue;
    }
    if (c === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (c === '{' || c === '}' || c === ';') {
      tokens.push({ text: c, line, quoted: false });
      i++;
      continue;
    }
    const start = line;
    if (c === '"' || c === "'") {
      let word = '';
      i++;
      for (;;) {
        if (i >= n) throw new NginxParseError(file, start, `unclosed ${c} quote`);
        const d = text[i];
        if (d === c) break;
        if (d === '\\' && i + 1 < n) {
          word += unescape(text[i + 1]);
          i += 2;
          continue;
        }
        if (d === '\n') line++;
        word += d;
        i++;
      }
      i++;
      tokens.push({ text: word, line: start, quoted: true });
      continue;
    }
    let word = '';
    while (i < n) {
      const d = text[i];
      if (d === ' ' || d === '\t' || d === '\r' || d === '\n' || d === ';' || d === '{' || d === '}') break;
      // `${name}` keeps its braces inside a word (nginx's variable form)
      if (d === '$' && text[i + 1] === '{') {
        const close = text.indexOf('}', i);
        if (close < 0) throw new NginxParseError(file, line, 'unclosed ${ in a variable');
        word += text.slice(i, close + 1);
        i = close + 1;
        continue;
      }
      if (d === '\\' && i + 1 < n) {
        word += unescape(text[i + 1]);
        i += 2;
        continue;
      }
      word += d;
      i++;
    }
    tokens.push({ text: word, line: start, quoted: false });
  }
  return tokens;
}

/** nginx unescapes \" \' \\ \t \r \n and keeps any other backslash as written (`\.php$` stays a regex). */
function unescape(c: string): string {
  switch (c) {
    case '"':
    case "'":
    case '\\':
      return c;
    case 't':
      return '\t';
    case 'r':
      return '\r';
    case 'n':
      return '\n';
    default:
      return `\\${c}`;
  }
}

/** Parses `file` (and what it includes) into its top-level directives. */
export function parseNginxFile(file: string): Directive[] {
  return parseFile(path.resolve(file), 0, new Set(), freshBudget());
}

/** Parses a config given as text; `include` resolves against `dir`. */
export function parseNginxText(text: string, file: string, dir = path.dirname(path.resolve(file))): Directive[] {
  return parseTokens(tokenize(text, file), file, dir, 0, new Set(), freshBudget());
}

function parseFile(file: string, depth: number, seen: Set<string>, budget: Budget): Directive[] {
  if (seen.has(file)) throw new NginxParseError(file, 0, 'includes itself');
  if (--budget.files < 0) throw new NginxParseError(file, 0, `more than ${MAX_FILES_READ} files read through include (globs multiply at each level)`);
  let text: string;
  try {
    const buf = readFileSync(file);
    if (buf.length > MAX_FILE_BYTES) throw new NginxParseError(file, 0, `larger than ${MAX_FILE_BYTES} bytes`);
    budget.bytes -= buf.length;
    if (budget.bytes < 0) throw new NginxParseError(file, 0, `more than ${MAX_TOTAL_BYTES} bytes read through include in all`);
    text = buf.toString('utf8');
  } catch (err) {
    if (err instanceof NginxParseError) throw err;
    throw new NginxParseError(file, 0, `cannot read: ${(err as Error).message}`);
  }
  const inner = new Set(seen).add(file);
  return parseTokens(tokenize(text, file), file, path.dirname(file), depth, inner, budget);
}

function parseTokens(tokens: Token[], file: string, dir: string, depth: number, seen: Set<string>, budget: Budget): Directive[] {
  let pos = 0;
  const block = (closing: boolean, openLine: number): Directive[] => {
    const out: Directive[] = [];
    for (;;) {
      if (pos >= tokens.length) {
        if (closing) throw new NginxParseError(file, openLine, 'unclosed { (missing })');
        return out;
      }
      const first = tokens[pos];
      if (!first.quoted && first.text === '}') {
        if (!closing) throw new NginxParseError(file, first.line, 'unexpected }');
        pos++;
        return out;
      }
      if (!first.quoted && (first.text === '{' || first.text === ';')) throw new NginxParseError(file, first.line, `unexpected "${first.text}"`);
      pos++;
      const args: string[] = [];
      for (;;) {
        if (pos >= tokens.length) throw new NginxParseError(file, first.line, `directive "${first.text}" has no ending ";" or "{"`);
        const t = tokens[pos++];
        if (!t.quoted && t.text === ';') {
          out.push(...expand({ name: first.text, args, file, line: first.line, block: undefined }, dir, depth, seen, budget));
          break;
        }
        if (!t.quoted && t.text === '{') {
          out.push({ name: first.text, args, file, line: first.line, block: block(true, t.line) });
          break;
        }
        if (!t.quoted && t.text === '}') throw new NginxParseError(file, t.line, `directive "${first.text}" has no ending ";"`);
        args.push(t.text);
      }
    }
  };
  return block(false, 0);
}

/** `include` is replaced by the directives of the files it names; other directives stay as they are. */
function expand(d: Directive, dir: string, depth: number, seen: Set<string>, budget: Budget): Directive[] {
  if (d.name !== 'include' || d.args.length !== 1) return [d];
  const pattern = path.resolve(dir, d.args[0]);
  let files: string[];
  try {
    files = matchFiles(pattern);
  } catch (err) {
    throw new NginxParseError(d.file, d.line, `include "${d.args[0]}": ${(err as Error).message}`); // an unreadable folder
  }
  // nginx's own parameter files (fastcgi_params, mime.types...) are usually not beside a copied config; the
  // importer knows their meaning, so a missing include stays a directive for it to judge.
  if (files.length === 0) return [d];
  if (depth + 1 > MAX_INCLUDE_DEPTH) throw new NginxParseError(d.file, d.line, `includes nested deeper than ${MAX_INCLUDE_DEPTH}`);
  return files.flatMap((f) => parseFile(f, depth + 1, seen, budget));
}

/** The files a glob names (sorted, as nginx reads them). */
function matchFiles(pattern: string): string[] {
  const base = path.basename(pattern);
  if (!/[*?[]/.test(base)) return existsSync(pattern) ? [pattern] : [];
  const folder = path.dirname(pattern);
  if (!existsSync(folder)) return [];
  const re = globRegExp(base);
  return readdirSync(folder)
    .filter((f) => re.test(f))
    .sort()
    .map((f) => path.join(folder, f));
}

/** glob(3) for one path part: `*`, `?`, `[...]` and `[!...]`; a `[` without its `]` is itself. */
function globRegExp(glob: string): RegExp {
  const literal = (c: string) => c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else if (c === '[') {
      let k = i + 1;
      if (glob[k] === '!' || glob[k] === '^') k++;
      if (glob[k] === ']') k++; // a leading ] is a member
      while (k < glob.length && glob[k] !== ']') k++;
      if (k >= glob.length) {
        out += '\\[';
        continue;
      }
      const negated = glob[i + 1] === '!' || glob[i + 1] === '^';
      const members = glob.slice(i + 1 + (negated ? 1 : 0), k);
      out += `[${negated ? '^' : ''}${members.replace(/[\\\]^]/g, '\\$&')}]`;
      i = k;
    } else out += literal(c);
  }
  return new RegExp(`^${out}$`);
}
