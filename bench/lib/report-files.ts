// report.md, report.html and report.json of `portico bench` from what a run recorded (and the plan, when asked):
// the conditions, the honesty section (rounds left out, rows marked), Portico's per-core and per-GiB figures, one
// table per load, the idle-memory table, the plan, and (HTML only) SVG charts. Pure: data in, three strings out.
import type { PlanResult } from './plan.js';
import type { IdleSeries, Recorded } from './recorded.js';
import { barChart, colours, esc, lineChart, type BarGroup, type Series } from './svg.js';
import { disturbedRounds, idleCost, markCounts, summarizeRecorded, type LoadSummary, type Row } from './summary.js';
import { NOISY_SHARE } from './rounds.js';

export interface ReportFiles {
  md: string;
  html: string;
  json: string;
}

const int = (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '—' : Math.round(n).toLocaleString('en-US'));
const fix = (n: number | undefined, d: number, suffix = ''): string => (n === undefined || !Number.isFinite(n) ? '—' : `${n.toFixed(d)}${suffix}`);

/** A table as header + rows of cells, rendered to Markdown or HTML by the same data. */
interface Table {
  header: string[];
  rows: string[][];
}

function md(t: Table): string {
  const cell = (c: string): string => c.replace(/\|/g, '\\|');
  return [`| ${t.header.map(cell).join(' | ')} |`, `|${t.header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...t.rows.map((r) => `| ${r.map(cell).join(' | ')} |`)].join('\n');
}

function html(t: Table): string {
  return `<table><thead><tr>${t.header.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${t.rows
    .map((r) => `<tr>${r.map((c, i) => `<td${i > 0 ? ' class="n"' : ''}>${esc(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

function marksText(r: Row): string {
  return r.marks.length === 0 ? '' : r.marks.join(', ');
}

function loadTable(l: LoadSummary): Table {
  const unit = l.load.unit;
  const latency = l.rows.some((r) => r.latencyUs !== undefined);
  return {
    header: [
      'target', `${unit}/s (median)`, 'min..max', 'spread', 'vs nginx', `proxy CPU-µs/${unit} (user + sys)`, `${unit}/s per proxy core`, 'CPU eff. vs nginx',
      'proxy CPU', 'client CPU', 'backend CPU', 'other CPU', ...(latency ? ['p50 / p90 / p99'] : []), 'rounds used / disturbed / failed', 'marks',
    ],
    rows: l.rows.map((r) => {
      if (r.rate === undefined) {
        return [r.label, 'failed', '', '', '', '', '', '', '', '', '', '', ...(latency ? [''] : []), `0 / ${r.disturbed} / ${r.failed}`, `failed: ${r.why[0] ?? ''}`.slice(0, 200)];
      }
      const cpu = r.proxyCpuUsPerUnit === undefined ? '—' : `${fix(r.proxyCpuUsPerUnit, 1)} (${fix(r.proxyUserUsPerUnit, 1)} + ${fix(r.proxySysUsPerUnit, 1)})`;
      return [
        r.label, int(r.rate), `${int(r.rateMin)}..${int(r.rateMax)}`, fix(r.spreadPct, 0, '%'), fix(r.vsNginx, 2, 'x'), cpu, int(r.perCore), fix(r.cpuVsNginx, 2, 'x'),
        fix(r.proxyCpuPct, 0, '%'), fix(r.clientCpuPct, 0, '%'), fix(r.backendCpuPct, 0, '%'), fix(r.otherCpuPct, 0, '%'),
        ...(latency ? [r.latencyUs === undefined ? '—' : `${fix(r.latencyUs.p50 / 1000, 2)} / ${fix(r.latencyUs.p90 / 1000, 2)} / ${fix(r.latencyUs.p99 / 1000, 2)} ms`] : []),
        `${r.used} / ${r.disturbed} / ${r.failed}`, marksText(r),
      ];
    }),
  };
}

function idleTable(idle: readonly IdleSeries[]): Table {
  const counts = [...new Set(idle.flatMap((s) => s.points.map((p) => p.connections)))].sort((a, b) => a - b);
  return {
    header: ['target', 'listener', 'at rest (RSS, fds)', ...counts.map((c) => `${int(c)} idle: RSS`), 'KiB per connection', 'fds per connection', 'connections per GiB'],
    rows: idle.map((s) => {
      const cost = idleCost(s);
      const base = `${fix(s.baseline.rssKiB / 1024, 1)} MiB, ${s.baseline.fds}`;
      if (s.error !== undefined && cost === undefined) return [s.label, s.tls ? 'TLS' : 'plain', base, ...counts.map(() => '—'), `failed: ${s.error}`.slice(0, 160), '', ''];
      return [
        s.label, s.tls ? 'TLS (wss)' : 'plain (ws)', base,
        ...counts.map((c) => {
          const p = s.points.find((q) => q.connections === c);
          return p === undefined ? '—' : `${fix(p.rssKiB / 1024, 1)} MiB`;
        }),
        fix(cost?.kibPerConn, 1), fix(cost?.fdsPerConn, 2), cost === undefined || cost.kibPerConn <= 0 ? '—' : int((1024 * 1024) / cost.kibPerConn),
      ];
    }),
  };
}

/** Portico's own figures, one line per load: the per-core capacity a planner reads. */
function capacityTable(loads: readonly LoadSummary[]): Table {
  const target = loads.some((l) => l.rows.some((r) => r.target === 'portico-user')) ? 'portico-user' : 'portico';
  return {
    header: ['load', 'unit', 'per proxy core (1e6 / CPU-µs)', 'CPU-µs per unit', 'vs nginx by CPU', 'marks'],
    rows: loads.flatMap((l) => {
      const r = l.rows.find((x) => x.target === target);
      if (r === undefined) return [];
      return [[l.load.title, l.load.unit, r.perCore === undefined ? '—' : `${int(r.perCore)} ${l.load.unit}/s`, fix(r.proxyCpuUsPerUnit, 1), fix(r.cpuVsNginx, 2, 'x'), marksText(r)]];
    }),
  };
}

function planTable(p: PlanResult): Table {
  return {
    header: ['traffic', 'rate', 'figure used', 'from', 'busy cores'],
    rows: p.lines.map((l) => [l.what, `${int(l.rate)} ${l.unit}/s`, `${fix(l.figure.value, 1)} ${l.figure.unit}`, `${l.figure.from}${(l.figure.marks ?? []).length > 0 ? ` [${(l.figure.marks ?? []).join(', ')}]` : ''}`, fix(l.cores, 2)]),
  };
}

function planLines(p: PlanResult): string[] {
  return [
    `**${p.cores} core(s)** (busy ${p.busyCores.toFixed(2)} before headroom) = workers: ${p.cores}`,
    `**${fix(p.memoryMiBWithHeadroom / 1024, 1)} GiB of memory** (${int(p.memoryMiB)} MiB before headroom; ${int(p.openConnections)} connections open)`,
    `**${int(p.fdsWithHeadroom)} file descriptors** in total (${int(p.fds)} before headroom): LimitNOFILE of at least ${int(Math.ceil(p.fdsWithHeadroom / p.cores))} per worker`,
    ...p.assumptions.map((a) => `assumed: ${a}`),
    ...(p.figures.idleKiB === undefined ? [] : [`figure: ${fix(p.figures.idleKiB.value, 1)} KiB and ${fix(p.figures.idleFds?.value, 2)} fds per open connection (${p.figures.idleKiB.from})`]),
    ...(p.figures.baseKiB === undefined ? [] : [`figure: ${int((p.figures.baseKiB.value ?? 0) / 1024)} MiB and ${int(p.figures.baseFds?.value)} fds per worker at rest (${p.figures.baseKiB.from})`]),
  ];
}

function conditionLines(rec: Recorded): string[] {
  const c = rec.conditions;
  const la = (v: number[]): string => v.map((x) => x.toFixed(2)).join(' ');
  return [
    `date: ${c.date} to ${c.finishedAt} (${c.command})`,
    `machine: ${c.cpus} CPUs (${c.cpuModel}), ${fix(c.memTotalKiB / 1024 / 1024, 1)} GiB, ${c.kernel}, node ${c.node}, OpenSSL ${c.versions.openssl}`,
    `load average (1 5 15 min): ${la(c.loadAvgBefore)} before, ${la(c.loadAvgAfter)} after`,
    `versions: Portico ${c.versions.portico} (${c.addon}); nginx ${c.versions.nginx ?? 'not installed'}; HAProxy ${c.versions.haproxy ?? 'not installed'}; wrk ${c.versions.wrk ?? 'not installed'}`,
    `pinning: ${c.pinning.enabled ? `proxy alone on CPU ${c.pinning.proxyCpu}; load generators and backends on CPU ${c.pinning.clientCpu}` : `off (${c.pinning.reason})`}`,
    `backends: HTTP = ${c.backends.http}; WebSocket = ${c.backends.ws}`,
    `rounds: ${c.rounds} x ${c.durationS} s per load and target, interleaved (order rotated each round), ${c.warmupS} s warm-up each${c.quick ? ' (--quick: figures are indicative only)' : ''}; medians of the undisturbed rounds`,
    ...rec.loads.map((l) => `load ${l.id}: ${l.title}; ${l.generator}`),
    ...c.notes.map((n) => `note: ${n}`),
  ];
}

function honestyLines(rec: Recorded, loads: readonly LoadSummary[]): string[] {
  const m = markCounts(loads);
  const rows = loads.flatMap((l) => l.rows);
  const leftOut = rows.reduce((n, r) => n + (r.marks.includes('disturbed') ? 0 : r.disturbed), 0);
  const kept = disturbedRounds(rec) - leftOut;
  return [
    `A round is **disturbed** when other processes used more than ${NOISY_SHARE * 100}% of a core during it (or the hypervisor stole over 5%): it is left out of the medians. `
      + `${leftOut} of ${rec.runs.length} rounds were left out; ${kept} disturbed round(s) remain in rows marked disturbed, which had no clean round.`,
    `Rows marked: ${m.disturbed} disturbed (only disturbed rounds remained: figures shown but not to be trusted), ${m['client-bound']} client-bound (the load generator's core was full: the rate is a floor), ${m.partial} partial (some rounds failed), ${m.failed} failed.`,
    'CPU per unit is the proxy\'s whole process tree (utime + stime from /proc) over the units completed; "per proxy core" is 1e6 / that figure: what one fully busy core would carry.',
  ];
}

function charts(rec: Recorded, loads: readonly LoadSummary[]): string[] {
  const names = rec.targets.map((t) => t.label);
  const colour = colours([...names, ...rec.idle.map((s) => `${s.label}, ${s.tls ? 'TLS' : 'plain'}`)]);
  const out: string[] = [];
  // Throughput vs connections: the keep-alive HTTP loads, by their connection count.
  const sweep = [['http-c16', 16], ['http', 64], ['http-c256', 256]] as const;
  const tput: Series[] = rec.targets.map((t) => ({
    name: t.label,
    points: sweep.flatMap(([id, c]) => {
      const r = loads.find((l) => l.load.id === id)?.rows.find((x) => x.target === t.id);
      return r?.rate === undefined ? [] : [[c, r.rate] as [number, number]];
    }),
  })).filter((s) => s.points.length > 0);
  if (tput.length > 0) out.push(lineChart('HTTP keep-alive throughput vs connections', 'connections', 'req/s (median)', tput, colour));
  const rateGroups: BarGroup[] = loads.map((l) => ({
    label: `${l.load.title} (${l.load.unit}/s)`,
    bars: l.rows.filter((r) => r.rate !== undefined).map((r) => ({ series: r.label, value: r.rate ?? 0, text: `${int(r.rate)}${r.marks.length > 0 ? ` [${marksText(r)}]` : ''}`, flagged: r.marks.includes('disturbed') || r.marks.includes('client-bound') })),
  })).filter((g) => g.bars.length > 0);
  if (rateGroups.length > 0) out.push(barChart('Throughput per load (median; pale = disturbed or client-bound)', rateGroups, colour));
  const cpuGroups: BarGroup[] = loads.map((l) => ({
    label: `${l.load.title}: proxy CPU-µs per ${l.load.unit} (lower is better)`,
    bars: l.rows.filter((r) => r.proxyCpuUsPerUnit !== undefined).map((r) => ({ series: r.label, value: r.proxyCpuUsPerUnit ?? 0, text: `${fix(r.proxyCpuUsPerUnit, 1)} µs`, flagged: r.marks.includes('disturbed') })),
  })).filter((g) => g.bars.length > 0);
  if (cpuGroups.length > 0) out.push(barChart('CPU per unit of work, each proxy', cpuGroups, colour));
  const latGroups: BarGroup[] = loads.flatMap((l) => l.rows.filter((r) => r.latencyUs !== undefined).map((r) => ({
    label: `${l.load.title}: ${r.label}`,
    bars: (['p50', 'p90', 'p99'] as const).map((p) => ({ series: r.label, value: r.latencyUs?.[p] ?? 0, text: `${p} ${fix((r.latencyUs?.[p] ?? 0) / 1000, 2)} ms` })),
  })));
  if (latGroups.length > 0) out.push(barChart('Latency percentiles (wrk loads)', latGroups, colour));
  const mem: Series[] = rec.idle.filter((s) => s.points.length > 0).map((s) => ({
    name: `${s.label}, ${s.tls ? 'TLS' : 'plain'}`,
    points: [[0, 0] as [number, number], ...s.points.map((p) => [p.connections, (p.rssKiB - s.baseline.rssKiB) / 1024] as [number, number])],
  }));
  if (mem.length > 0) out.push(lineChart('Memory vs idle WebSocket connections (RSS above rest)', 'idle connections', 'MiB', mem, colour));
  return out;
}

export function renderReport(rec: Recorded, planResult?: PlanResult): ReportFiles {
  const loads = summarizeRecorded(rec);
  const cond = conditionLines(rec);
  const honesty = honestyLines(rec, loads);
  const title = 'Portico capacity report';
  const mdParts: string[] = [
    `# ${title}`, '', ...cond.map((l) => `- ${l}`), '', '## How to read it', '', ...honesty.map((l) => `- ${l}`), '',
    '## Portico per core', '', md(capacityTable(loads)), '',
  ];
  if (rec.idle.length > 0) mdParts.push('## Idle WebSocket connections: memory and descriptors', '', md(idleTable(rec.idle)), '');
  if (planResult !== undefined) mdParts.push('## Plan', '', ...planLines(planResult).map((l) => `- ${l}`), '', md(planTable(planResult)), '');
  mdParts.push('## Loads', '');
  for (const l of loads) {
    mdParts.push(`### ${l.load.title}`, '', `\`${l.load.generator}\``, '', md(loadTable(l)), '');
    for (const r of l.rows) for (const w of r.why) mdParts.push(`- ${r.label}: ${w}`);
    mdParts.push('');
  }
  const strong = (s: string): string => esc(s).replace(/\*\*(.+?)\*\*/g, '<b>$1</b>');
  const htmlParts: string[] = [
    `<h1>${esc(title)}</h1>`, `<ul>${cond.map((l) => `<li>${esc(l)}</li>`).join('')}</ul>`,
    '<h2>How to read it</h2>', `<ul>${honesty.map((l) => `<li>${strong(l)}</li>`).join('')}</ul>`,
    '<h2>Portico per core</h2>', html(capacityTable(loads)),
  ];
  if (rec.idle.length > 0) htmlParts.push('<h2>Idle WebSocket connections: memory and descriptors</h2>', html(idleTable(rec.idle)));
  if (planResult !== undefined) htmlParts.push('<h2>Plan</h2>', `<ul>${planLines(planResult).map((l) => `<li>${strong(l)}</li>`).join('')}</ul>`, html(planTable(planResult)));
  htmlParts.push('<h2>Charts</h2>', ...charts(rec, loads).map((s) => `<figure>${s}</figure>`), '<h2>Loads</h2>');
  for (const l of loads) {
    htmlParts.push(`<h3>${esc(l.load.title)}</h3>`, `<p><code>${esc(l.load.generator)}</code></p>`, html(loadTable(l)));
    const why = l.rows.flatMap((r) => r.why.map((w) => `${r.label}: ${w}`));
    if (why.length > 0) htmlParts.push(`<ul class="why">${why.map((w) => `<li>${esc(w)}</li>`).join('')}</ul>`);
  }
  const style = 'body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}'
    + 'table{border-collapse:collapse;font-size:13px;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 6px}th{background:#f3f3f3}'
    + 'td.n{text-align:right;white-space:nowrap}.why{font-size:13px;color:#8a4b00}figure{margin:1em 0}';
  const page = `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title><style>${style}</style></head><body>\n${htmlParts.join('\n')}\n</body></html>\n`;
  const json = `${JSON.stringify({ ...rec, summary: loads, ...(planResult === undefined ? {} : { plan: planResult }) }, null, 2)}\n`;
  return { md: `${mdParts.join('\n')}\n`, html: page, json };
}
