// The report page: one self-contained HTML file (ECharts and the data inline, nothing fetched when it is viewed)
// with a table of every run's stages, the stage timeline, and a chart per stage and curve family in which the
// runs given are compared; the page's script is view.js.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { PipelineReport, StageReport } from './collect';

/** Curves drawn together in one chart (the trainer's metric names); every other curve gets its own chart. */
export const CHART_FAMILIES: { title: string; metrics: string[] }[] = [
  { title: 'loss', metrics: ['loss', 'actor/pg_loss'] },
  { title: 'reward and pass rate', metrics: ['reward_mean', 'pass_rate', 'critic/score/mean'] },
  { title: 'throughput tokens/s', metrics: ['tokens_per_s', 'avg_tokens_per_s', 'perf/throughput'] },
  { title: 'turns per episode', metrics: ['turns_mean', 'num_turns/mean'] },
  { title: 'parallel tool calls', metrics: ['parallel_call_share'] },
  { title: 'no signal and staleness', metrics: ['no_signal_fraction', 'staleness_mean'] },
  { title: 'importance ratio π/μ', metrics: ['ratio_mean', 'ratio_max', 'behav_weight_mean'] },
  { title: 'clip fraction', metrics: ['clip_frac_low', 'clip_frac_high'] },
  { title: 'KL to reference', metrics: ['kl_ref'] },
  { title: 'tokens dropped as stale', metrics: ['dropped_stale_tokens'] },
];

const ECHARTS = require.resolve('echarts/dist/echarts.min.js');
const VIEW = path.join(__dirname, 'view.js');

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** JSON that can sit inside a <script> element (no `</script>` or `<!--` can appear). */
const scriptJson = (v: unknown): string => JSON.stringify(v).replace(/</g, '\\u003c');

function fmt(v: number): string {
  return Math.abs(v) >= 100 || v === Math.round(v) ? v.toFixed(0) : v.toPrecision(4);
}

const TABLE_METRICS = [
  'loss',
  'reward_mean',
  'pass_rate',
  'tokens_per_s',
  'turns_mean',
  'parallel_call_share',
];

function stageRow(s: StageReport): string {
  const m = TABLE_METRICS.map((k) => `<td>${s.metrics[k] === undefined ? '' : fmt(s.metrics[k])}</td>`).join(
    '',
  );
  const steps = `${s.step}${s.totalSteps ? ` / ${s.totalSteps}` : ''}`;
  return `<tr><td>${esc(s.name)}</td><td>${esc(s.kind)}</td><td>${esc(s.state)}</td><td>${s.attempt ?? ''}</td><td>${steps}</td>${m}<td><code>${esc(s.checkpoint ?? '')}</code></td></tr>`;
}

function runTable(r: PipelineReport): string {
  return `<h2>${esc(r.name)} — ${esc(r.pipelineId)}</h2>
<p>state: <b>${esc(r.state)}</b>, created ${esc(r.createdAt)}</p>
<table><tr><th>stage</th><th>kind</th><th>state</th><th>attempts</th><th>step</th><th>loss</th><th>reward</th><th>pass rate</th><th>tokens/s</th><th>turns</th><th>parallel calls</th><th>checkpoint</th></tr>
${r.stages.map(stageRow).join('\n')}
</table>`;
}

/** Writes DIR/index.html for one or more pipeline runs (compared on every chart); returns the page's path. */
export function writeReport(runs: PipelineReport[], dir: string): string {
  mkdirSync(dir, { recursive: true });
  const title = runs.map((r) => r.pipelineId).join(', ');
  const html = `<!doctype html>
<html><head><meta charset="utf-8"><title>trainflow report: ${esc(title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:nth-child(-n+3){text-align:left}
.chart{width:min(100%,900px);margin:12px 0;border:1px solid #eee}
#controls{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #eee}
</style>
</head><body>
<h1>trainflow report</h1>
${runs.map(runTable).join('\n')}
<div id="controls"><label>smoothing <input id="smoothing" type="range" min="0" max="0.99" step="0.01" value="0.6">
<span id="smoothing-value">0.60</span></label> (exponential moving average; raw points faint)</div>
<div id="charts"></div>
<script type="application/json" id="report-data">${scriptJson({ runs, families: CHART_FAMILIES })}</script>
<script>${readFileSync(ECHARTS, 'utf8')}</script>
<script>${readFileSync(VIEW, 'utf8')}</script>
</body></html>
`;
  const page = path.join(dir, 'index.html');
  writeFileSync(page, html);
  return page;
}
