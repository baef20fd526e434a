// The report page: one PNG chart per curve family and stage, a stage table and the stage timeline, written
// to a folder (index.html + *.png) that opens without a server.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { PipelineReport, StageReport } from './collect';
import { lineChart, type Series } from './png';

/** Which curves each chart shows (the metric names the trainer writes). */
const CHARTS: { title: string; metrics: string[] }[] = [
  { title: 'loss', metrics: ['loss'] },
  { title: 'reward and pass rate', metrics: ['reward_mean', 'pass_rate'] },
  { title: 'throughput tokens/s', metrics: ['tokens_per_s'] },
  { title: 'turns per episode', metrics: ['turns_mean'] },
  { title: 'parallel tool calls', metrics: ['parallel_call_share'] },
  { title: 'no signal and staleness', metrics: ['no_signal_fraction', 'staleness_mean'] },
  { title: 'importance ratio π/μ', metrics: ['ratio_mean', 'ratio_max', 'behav_weight_mean'] },
  { title: 'clip fraction', metrics: ['clip_frac_low', 'clip_frac_high'] },
  { title: 'KL to reference', metrics: ['kl_ref'] },
  { title: 'tokens dropped as stale', metrics: ['dropped_stale_tokens'] },
];

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function timelineChart(r: PipelineReport): Buffer | null {
  const t0 = Date.parse(r.createdAt);
  const series: Series[] = r.stages
    .filter((s) => s.startedAt && s.completedAt)
    .map((s, i) => ({
      name: s.name,
      points: [
        [(Date.parse(s.startedAt!) - t0) / 60000, i + 1],
        [(Date.parse(s.completedAt!) - t0) / 60000, i + 1],
      ],
    }));
  return series.length ? lineChart('stage timeline (minutes)', series, 640, 60 + 24 * series.length) : null;
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 || v === Math.round(v) ? v.toFixed(0) : v.toPrecision(4);
}

/** Writes DIR/index.html and the PNG charts; returns the page's path. */
export function writeReport(r: PipelineReport, dir: string): string {
  mkdirSync(dir, { recursive: true });
  const images: string[] = [];
  const png = (file: string, data: Buffer, alt: string): void => {
    writeFileSync(path.join(dir, file), data);
    images.push(`<figure><img src="${file}" alt="${esc(alt)}"><figcaption>${esc(alt)}</figcaption></figure>`);
  };
  const timeline = timelineChart(r);
  if (timeline) png('timeline.png', timeline, 'stage timeline');
  for (const s of r.stages) {
    for (const c of CHARTS) {
      const series = c.metrics
        .filter((m) => s.curves[m]?.length)
        .map((m) => ({ name: m, points: s.curves[m] }));
      if (series.length === 0) continue;
      const file = `${s.name}-${c.metrics[0]}.png`.replace(/[^A-Za-z0-9._-]/g, '_');
      png(file, lineChart(`${s.name}: ${c.title}`, series), `${s.name}: ${c.title}`);
    }
  }
  const row = (s: StageReport): string => {
    const keys = ['loss', 'reward_mean', 'pass_rate', 'tokens_per_s', 'turns_mean', 'parallel_call_share'];
    const m = keys.map((k) => `<td>${s.metrics[k] === undefined ? '' : fmt(s.metrics[k])}</td>`).join('');
    const steps = `${s.step}${s.totalSteps ? ` / ${s.totalSteps}` : ''}`;
    return `<tr><td>${esc(s.name)}</td><td>${esc(s.kind)}</td><td>${esc(s.state)}</td><td>${steps}</td>${m}<td><code>${esc(s.checkpoint ?? '')}</code></td></tr>`;
  };
  const html = `<!doctype html>
<html><head><meta charset="utf-8"><title>trainflow report: ${esc(r.pipelineId)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}figure{display:inline-block;margin:8px}</style>
</head><body>
<h1>${esc(r.name)} — ${esc(r.pipelineId)}</h1>
<p>state: <b>${esc(r.state)}</b>, created ${esc(r.createdAt)}</p>
<table><tr><th>stage</th><th>kind</th><th>state</th><th>step</th><th>loss</th><th>reward</th><th>pass rate</th><th>tokens/s</th><th>turns</th><th>parallel calls</th><th>checkpoint</th></tr>
${r.stages.map(row).join('\n')}
</table>
${images.join('\n')}
</body></html>
`;
  const page = path.join(dir, 'index.html');
  writeFileSync(page, html);
  return page;
}
