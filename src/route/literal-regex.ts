// A `path_regex` recognized as a literal the addon's route table can match with exactly V8's meaning (route-table.cc
// MatchRegex): `\.php$` is a suffix, `^/api/` a prefix, `^/x$` a whole path, `/x` a substring. Pure; it accepts only
// what it can prove equal on an ASCII path and says "not literal" (undefined) for everything else, which keeps the
// host class JavaScript's from that regex on. Not a regex engine: no classes but a letter's two cases, no quantifier,
// no alternation, no `.`, no lookaround, no backreference, no flag but `i`.

/** Where the literal must sit in the path: `^…$`, `^…`, `…$`, or anywhere. */
export type LiteralKind = 'exact' | 'prefix' | 'suffix' | 'contains';

/**
 * A literal regex: `text` is ASCII, one byte per path byte; `fold` is as long, 0x20 where the regex takes both cases
 * of a letter (the byte in `text` is then the lower-case letter) and 0 elsewhere: a path byte c matches text byte t
 * under mask f when (c | f) === t, which for a lower-case t and f = 0x20 is exactly t and its upper case.
 */
export interface LiteralRegex {
  readonly kind: LiteralKind;
  readonly text: string;
  readonly fold: readonly number[];
}

/** Characters that mean something unescaped (ECMA-262 SyntaxCharacter); escaped, each is itself. `-` and `/` escape to themselves too. */
const SYNTAX = '^$\\.*+?()[]{}|';
const ESCAPED_SELF = `${SYNTAX}/-`;

function lowerLetter(c: string): boolean {
  return c >= 'a' && c <= 'z';
}

/**
 * The literal `new RegExp(source, flags)` is, or undefined when it is anything else. Accepted, and nothing more: `^`
 * first, `$` last; printable ASCII that is not a SyntaxCharacter; `\` before a SyntaxCharacter, `/` or `-`; `[xX]` or
 * `[Xx]` (one ASCII letter's two cases); one level of `(` or `(?:` groups around such atoms (a group is only
 * grouping here: nothing after it can repeat it, since quantifiers are refused); flags '' or 'i' (with `i`, every
 * letter takes both cases: without the `u` flag V8 folds an ASCII letter only to its other ASCII case).
 */
export function literalRegex(source: string, flags: string): LiteralRegex | undefined {
  if (flags !== '' && flags !== 'i') return undefined; // g and y make test() stateful; m moves ^ and $; u, s, d, v: not proven
  const foldAll = flags === 'i';
  let text = '';
  const fold: number[] = [];
  const push = (c: string): void => {
    const lower = c.toLowerCase();
    const folds = foldAll && lowerLetter(lower);
    text += folds ? lower : c;
    fold.push(folds ? 0x20 : 0);
  };
  let start = false;
  let end = false;
  let group = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    const code = c.charCodeAt(0);
    if (code < 0x20 || code > 0x7e) return undefined;
    if (c === '^') {
      if (i !== 0) return undefined;
      start = true;
    } else if (c === '$') {
      if (i !== source.length - 1) return undefined;
      end = true;
    } else if (c === '\\') {
      const next = source[++i];
      if (next === undefined || !ESCAPED_SELF.includes(next)) return undefined; // \d \w \b \1 \x41 \u… \c… \k<…>…
      push(next);
    } else if (c === '[') {
      const a = source[i + 1];
      const b = source[i + 2];
      if (a === undefined || b === undefined || source[i + 3] !== ']') return undefined;
      const lower = a.toLowerCase();
      if (!lowerLetter(lower) || a === b || b.toLowerCase() !== lower) return undefined;
      text += lower;
      fold.push(0x20);
      i += 3;
    } else if (c === '(') {
      if (group) return undefined;
      group = true;
      if (source[i + 1] === '?') {
        if (source[i + 2] !== ':') return undefined; // lookarounds, named groups, modifiers
        i += 2;
      }
    } else if (c === ')') {
      if (!group) return undefined;
      group = false;
    } else if (SYNTAX.includes(c)) {
      return undefined; // . * + ? { } | ]
    } else {
      push(c);
    }
  }
  if (group) return undefined;
  const kind: LiteralKind = start && end ? 'exact' : start ? 'prefix' : end ? 'suffix' : 'contains';
  return Object.freeze({ kind, text, fold: Object.freeze(fold) });
}
