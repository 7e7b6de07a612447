// The `redirect.to` template of a redirect route, compiled once: nginx's variables (route-rules.ts header
// templates: $scheme, $host, $request_uri, $server_port, $remote_addr) plus the captures $1..$9 of the route's
// path_regex. Pure; the loader reports its issues with their YAML paths and the router compiles with it.
import type { Config } from './schema.js';
import { parseHeaderTemplate, type RequestVars, type RouterIssue } from './route-rules.js';

/** Renders a Location from the request's variables and the path_regex match (null when the route has no regex). */
export type RedirectRenderer = (vars: RequestVars, captures: RegExpExecArray | null) => string;

type Piece = string | number | ((v: RequestVars) => string);

/** Capture groups of a regex source (0 when it has none). */
function groupCount(source: string): number {
  return (new RegExp(`${source}|`).exec('')?.length ?? 1) - 1;
}

/**
 * Compiles `to`. `$N` (one digit) is capture N of `regexSource`; `$$` stays a literal `$`; the rest goes to the
 * header template parser. A capture the regex does not have is an error, so is any capture without a regex.
 */
export function compileRedirectTarget(to: string, regexSource: string | undefined): { ok: true; render: RedirectRenderer } | { ok: false; message: string } {
  const groups = regexSource === undefined ? 0 : groupCount(regexSource);
  const pieces: Piece[] = [];
  let text = '';
  const flush = (): string | undefined => {
    if (text === '') return undefined;
    const t = parseHeaderTemplate(text);
    text = '';
    if (!t.ok) return t.message;
    for (const p of t.parts) if (p !== '') pieces.push(p);
    return undefined;
  };
  for (let i = 0; i < to.length; i++) {
    const c = to[i];
    if (c === '$' && to[i + 1] === '$') {
      text += '$$';
      i++;
    } else if (c === '$' && to[i + 1] !== undefined && to[i + 1] >= '1' && to[i + 1] <= '9') {
      const n = Number(to[i + 1]);
      if (n > groups) return { ok: false, message: regexSource === undefined ? `$${n} needs a match.path_regex with capture groups` : `$${n}: the path_regex has ${groups} capture group(s)` };
      const problem = flush();
      if (problem !== undefined) return { ok: false, message: problem };
      pieces.push(n);
      i++;
    } else text += c;
  }
  const problem = flush();
  if (problem !== undefined) return { ok: false, message: problem };
  const frozen = Object.freeze(pieces);
  return {
    ok: true,
    render: (vars, captures) => {
      let out = '';
      for (let i = 0; i < frozen.length; i++) {
        const p = frozen[i];
        out += typeof p === 'string' ? p : typeof p === 'number' ? (captures?.[p] ?? '') : p(vars);
      }
      return out;
    },
  };
}

/** Every `redirect.to` that does not compile, with its path. */
export function validateRedirects(config: Config): RouterIssue[] {
  const issues: RouterIssue[] = [];
  config.routes.forEach((r, i) => {
    if (r.redirect === undefined) return;
    const c = compileRedirectTarget(r.redirect.to, r.match.path_regex);
    // the short form `redirect: URL` has no `to` node: the loader then points at `redirect` itself
    if (!c.ok) issues.push({ path: ['routes', i, 'redirect', 'to'], message: c.message });
  });
  return issues;
}
