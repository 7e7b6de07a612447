// The docs as a first-time reader uses them: every relative link of README.md, CONTRIBUTING.md, bench/ and deploy/
// reaches an existing file and heading, a link whose label names a file points at that file, and every YAML
// example in README is either a whole config that `portico check` accepts or says it is a fragment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { formatErrors, loadConfig } from '../../src/config/load.js';
import { FIXTURES, ROOT } from '../helpers/paths.js';

const DOCS = ['README.md', 'CONTRIBUTING.md', path.join('bench', 'README.md'), path.join('deploy', 'README.md')];

/** GitHub's heading anchors: lower case, punctuation dropped (but `-` and `_`), spaces to `-`. */
function anchorsOf(markdown: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = fenced ? null : /^#{1,6}\s+(.*)$/.exec(line);
    if (m === null) continue;
    const base = m[1]
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Markdown links outside code fences and code spans: [label](target). */
function linksOf(markdown: string): Array<{ label: string; target: string; line: number }> {
  const out: Array<{ label: string; target: string; line: number }> = [];
  let fenced = false;
  markdown.split('\n').forEach((line, i) => {
    if (line.startsWith('```')) fenced = !fenced;
    if (fenced) return;
    for (const m of line.matchAll(/\[((?:`[^`]*`|[^\]`])+)\]\(([^)\s]+)\)/g)) out.push({ label: m[1], target: m[2], line: i + 1 });
  });
  return out;
}

test('relative links in the docs reach an existing file and heading, and a file-named label names its target', () => {
  for (const doc of DOCS) {
    const file = path.join(ROOT, doc);
    const text = readFileSync(file, 'utf8');
    for (const { label, target, line } of linksOf(text)) {
      if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
      const where = `${doc}:${line} [${label}](${target})`;
      const [rel, anchor] = target.split('#');
      const dest = rel === '' ? file : path.resolve(path.dirname(file), rel);
      assert.ok(existsSync(dest), `${where}: ${path.relative(ROOT, dest)} does not exist`);
      if (anchor !== undefined && anchor !== '') {
        assert.ok(statSync(dest).isFile() && dest.endsWith('.md'), `${where}: an anchor into a file that is not Markdown`);
        assert.ok(anchorsOf(readFileSync(dest, 'utf8')).has(anchor), `${where}: no heading #${anchor} in ${path.relative(ROOT, dest)}`);
      }
      // a label that is a file name in a code span must be where the link goes
      const named = /^`([^`\s]+\.(?:md|ya?ml|ts|js|json|cc|h|sh))`$/.exec(label);
      if (named !== null && rel !== '') assert.equal(path.basename(named[1]), path.basename(rel), `${where}: the label names another file than the link`);
    }
  }
});

/** ```yaml blocks of README with their first line number. */
function yamlBlocks(markdown: string): Array<{ text: string; line: number }> {
  const out: Array<{ text: string; line: number }> = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```yaml') continue;
    const start = i + 1;
    while (i + 1 < lines.length && lines[i + 1].trim() !== '```') i++;
    out.push({ text: lines.slice(start, i + 1).join('\n'), line: start + 1 });
    i++;
  }
  return out;
}

test('every YAML example in README is a whole config that portico check accepts, or says "# fragment"', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-readme-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // examples name ./certs/site.crt and ./certs/site.key, as the seed does
  cpSync(path.join(FIXTURES, 'seed', 'certs'), path.join(dir, 'certs'), { recursive: true });
  const blocks = yamlBlocks(readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  assert.ok(blocks.length > 0);
  let whole = 0;
  for (const b of blocks) {
    if (/^#.*\bfragment\b/i.test(b.text.split('\n')[0])) continue;
    whole++;
    const file = path.join(dir, `readme-${b.line}.yaml`);
    writeFileSync(file, b.text);
    const r = loadConfig(file);
    assert.ok(r.ok, `README.md:${b.line}: a YAML example that is not marked "# fragment" must pass check:\n${r.ok ? '' : formatErrors(file, r.errors)}`);
  }
  assert.ok(whole > 0, 'at least one whole config in README');
});
