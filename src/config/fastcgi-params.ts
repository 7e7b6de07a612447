// The `params` templates of a `fastcgi:` route: the variables they may use (nginx's names) and their parser.
// Kept apart from fastcgi.ts's schema so that the router, which compiles them, loads without zod in a worker.
import { scanTemplate } from './template.js';

/**
 * Variables `params` values may use: nginx's names and meaning. `$document_root` is `root`;
 * `$fastcgi_script_name` and `$fastcgi_path_info` are split_path_info's two parts (the script, the rest);
 * `$uri` is the decoded, normalized path; `$args` the query without `?`.
 */
export const FASTCGI_VARIABLES = [
  'remote_addr',
  'remote_port',
  'host',
  'scheme',
  'request_uri',
  'request_method',
  'server_port',
  'server_addr',
  'document_root',
  'fastcgi_script_name',
  'fastcgi_path_info',
  'uri',
  'args',
  'query_string',
] as const;
export type FastcgiVariable = (typeof FASTCGI_VARIABLES)[number];

/** A params template: literal text and variable names, in order. */
export type TemplatePart = { readonly text: string } | { readonly variable: FastcgiVariable };

const KNOWN = new Set<string>(FASTCGI_VARIABLES);

/** A params value as a template, with the header templates' syntax (scanTemplate); a string says what is wrong. */
export function parseParamTemplate(value: string): TemplatePart[] | string {
  const r = scanTemplate<TemplatePart>(value, (name) =>
    KNOWN.has(name) ? { variable: name as FastcgiVariable } : { refused: `unknown variable $${name} (known: ${FASTCGI_VARIABLES.map((v) => `$${v}`).join(', ')}; write $$ for a literal $)` },
  );
  if (!r.ok) return r.message;
  return r.parts.map((p) => (typeof p === 'string' ? { text: p } : p));
}
