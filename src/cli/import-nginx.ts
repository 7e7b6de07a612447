// `portico import-nginx FILE [-o OUT]`: nginx config in, Portico YAML out (stdout or OUT), with a comment at
// each place that was not translated and a summary on stderr. Exit 0 when a YAML was written (even with
// notes), 1 when the nginx file could not be read or parsed or nothing in it makes a config (no listener), 2 on a
// usage error.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { importNginx } from '../config/nginx-import.js';
import { NginxParseError, parseNginxFile } from '../config/nginx-parse.js';

export function importNginxCommand(args: string[], usage: (problem?: string) => number): number {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { out: { type: 'string', short: 'o' } }, allowPositionals: true, strict: true });
  } catch (err) {
    return usage((err as Error).message);
  }
  const [file, ...extra] = parsed.positionals;
  if (file === undefined || extra.length > 0) return usage('import-nginx takes one nginx config file');
  let result;
  try {
    result = importNginx(parseNginxFile(file), file);
  } catch (err) {
    process.stderr.write(`portico: ${err instanceof NginxParseError ? err.message : `cannot import ${file}: ${(err as Error).message}`}\n`);
    return 1;
  }
  const { listeners, upstreams, routes } = result.counts;
  const summary = [`portico import-nginx: ${listeners} listeners, ${upstreams} upstreams, ${routes} routes`];
  if (result.notes.length === 0) summary.push('everything was translated');
  else summary.push(`${result.notes.length} notes${result.problems.length === 0 ? ' (each is a comment in the YAML too)' : ''}:`, ...result.notes.map((n) => `  ${n.source}: ${n.message}`));
  if (result.problems.length > 0) {
    // a file `portico check` refuses is no start: say why, write nothing
    summary.push(`portico: nothing written: what could be translated does not make a config (${result.problems.join('; ')})`);
    process.stderr.write(`${summary.join('\n')}\n`);
    return 1;
  }
  if (parsed.values.out === undefined) process.stdout.write(result.yaml);
  else writeFileSync(parsed.values.out, result.yaml);
  process.stderr.write(`${summary.join('\n')}\n`);
  return 0;
}
