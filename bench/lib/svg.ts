// Inline SVG charts for report.html: grouped horizontal bars (each group on its own scale, values printed) and
// line charts (x and y from zero). Strings in, a self-contained <svg> string out: no scripts, no fonts, no I/O.

const PALETTE = ['#1b6ca8', '#d1495b', '#edae49', '#00798c', '#6a4c93', '#66a182', '#8d6e63', '#30638e', '#e07a5f', '#3d405b', '#81b29a', '#b5838d'];

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A stable colour per series name, in the order the names are first given. */
export function colours(names: readonly string[]): Map<string, string> {
  return new Map(names.map((n, i) => [n, PALETTE[i % PALETTE.length]]));
}

export interface Bar {
  series: string;
  value: number;
  /** Printed after the bar (e.g. "41,200 req/s"); a mark such as "disturbed" is appended in the caller's words. */
  text: string;
  /** Drawn hatched-pale: a figure a reader must not trust as is (disturbed, client-bound). */
  flagged?: boolean;
}

export interface BarGroup {
  label: string;
  bars: Bar[];
}

/** Horizontal bars, one group per label, each group scaled to its own largest value (units differ between groups). */
export function barChart(title: string, groups: readonly BarGroup[], colour: Map<string, string>): string {
  const width = 760;
  const labelW = 230;
  const barH = 14;
  const gap = 4;
  const groupGap = 14;
  const plotW = width - labelW - 170;
  let y = 28;
  const parts: string[] = [];
  for (const g of groups) {
    parts.push(`<text x="4" y="${y + 11}" font-size="12" font-weight="600">${esc(g.label)}</text>`);
    y += 16;
    const max = Math.max(0, ...g.bars.map((b) => b.value));
    for (const b of g.bars) {
      const w = max > 0 ? Math.max(1, (b.value / max) * plotW) : 0;
      const fill = colour.get(b.series) ?? '#888';
      parts.push(`<text x="${labelW - 6}" y="${y + barH - 3}" font-size="11" text-anchor="end">${esc(b.series)}</text>`);
      parts.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${fill}"${b.flagged === true ? ' fill-opacity="0.35" stroke="' + fill + '" stroke-dasharray="3 2"' : ''}/>`);
      parts.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${y + barH - 3}" font-size="11">${esc(b.text)}</text>`);
      y += barH + gap;
    }
    y += groupGap;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" role="img" aria-label="${esc(title)}">`
    + `<text x="4" y="16" font-size="14" font-weight="700">${esc(title)}</text>${parts.join('')}</svg>`;
}

export interface Series {
  name: string;
  points: Array<[number, number]>;
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function tickText(v: number): string {
  return Math.abs(v) >= 1000 ? `${(v / 1000).toLocaleString('en-US', { maximumFractionDigits: 1 })}k` : v.toLocaleString('en-US', { maximumFractionDigits: 1 });
}

/** Lines through each series' points (x ascending), axes from zero, 5 ticks each, a legend below. */
export function lineChart(title: string, xLabel: string, yLabel: string, series: readonly Series[], colour: Map<string, string>): string {
  const width = 760;
  const height = 300;
  const left = 64;
  const right = 20;
  const top = 30;
  const bottom = 44;
  const legendH = 18 * Math.ceil(series.length / 2);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const xMax = niceMax(Math.max(0, ...xs));
  const yMax = niceMax(Math.max(0, ...ys));
  const pw = width - left - right;
  const ph = height - top - bottom;
  const X = (v: number): number => left + (v / xMax) * pw;
  const Y = (v: number): number => top + ph - (Math.max(0, v) / yMax) * ph;
  const parts: string[] = [`<text x="4" y="16" font-size="14" font-weight="700">${esc(title)}</text>`];
  for (let i = 0; i <= 5; i++) {
    const yv = (yMax * i) / 5;
    const xv = (xMax * i) / 5;
    parts.push(`<line x1="${left}" x2="${left + pw}" y1="${Y(yv).toFixed(1)}" y2="${Y(yv).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${(Y(yv) + 4).toFixed(1)}" font-size="10" text-anchor="end">${tickText(yv)}</text>`);
    parts.push(`<text x="${X(xv).toFixed(1)}" y="${top + ph + 14}" font-size="10" text-anchor="${i === 5 ? 'end' : 'middle'}">${tickText(xv)}</text>`);
  }
  parts.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + ph}" stroke="#444"/><line x1="${left}" x2="${left + pw}" y1="${top + ph}" y2="${top + ph}" stroke="#444"/>`);
  parts.push(`<text x="${left + pw / 2}" y="${top + ph + 32}" font-size="11" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(`<text x="12" y="${top + ph / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 ${top + ph / 2})">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const c = colour.get(s.name) ?? PALETTE[i % PALETTE.length];
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    if (pts.length > 1) parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) parts.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3" fill="${c}"/>`);
    const lx = left + (i % 2) * 360;
    const ly = height + 4 + Math.floor(i / 2) * 18;
    parts.push(`<rect x="${lx}" y="${ly}" width="12" height="10" fill="${c}"/><text x="${lx + 16}" y="${ly + 9}" font-size="11">${esc(s.name)}</text>`);
  });
  const h = height + legendH + 8;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h}" viewBox="0 0 ${width} ${h}" role="img" aria-label="${esc(title)}">${parts.join('')}</svg>`;
}
