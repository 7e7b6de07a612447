// The template syntax of header values, redirect targets and FastCGI params, in one scanner: `$name`, `${name}`,
// `$$` for a literal `$`, and a lone `$` taken literally. What a name means is the caller's (resolve).

const isNameStart = (c: number): boolean => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95; // a-z A-Z _
const isNameChar = (c: number): boolean => isNameStart(c) || (c >= 48 && c <= 57);

/**
 * The template syntax of header values, redirect targets and FastCGI params: `$name`, `${name}`, `$$` (a literal
 * `$`), a lone `$` literal. `resolve` turns a variable name into its part, or says why the name is refused.
 */
export function scanTemplate<T>(value: string, resolve: (name: string) => T | { readonly refused: string }): { ok: true; parts: Array<string | T> } | { ok: false; message: string } {
  const parts: Array<string | T> = [];
  let text = '';
  let i = 0;
  while (i < value.length) {
    const dollar = value.indexOf('$', i);
    if (dollar === -1) {
      text += value.slice(i);
      break;
    }
    text += value.slice(i, dollar);
    const next = value.charCodeAt(dollar + 1); // NaN past the end
    let name: string;
    if (next === 36 /* $ */) {
      text += '$';
      i = dollar + 2;
      continue;
    } else if (next === 123 /* { */) {
      const close = value.indexOf('}', dollar + 2);
      if (close === -1) return { ok: false, message: `unterminated \${ at offset ${dollar}` };
      name = value.slice(dollar + 2, close);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        return { ok: false, message: `invalid variable name \${${name}} at offset ${dollar}` };
      }
      i = close + 1;
    } else if (isNameStart(next)) {
      let end = dollar + 2;
      while (end < value.length && isNameChar(value.charCodeAt(end))) end++;
      name = value.slice(dollar + 1, end);
      i = end;
    } else {
      text += '$'; // a lone `$` (end of value, before a space or a digit) is literal
      i = dollar + 1;
      continue;
    }
    const part = resolve(name);
    if (typeof part === 'object' && part !== null && 'refused' in part) return { ok: false, message: part.refused };
    if (text !== '') parts.push(text);
    text = '';
    parts.push(part);
  }
  if (text !== '' || parts.length === 0) parts.push(text);
  return { ok: true, parts };
}
