// `trainflow report`: pipelines laid out in a local storage folder (manifest, status objects, checkpoints'
// trainer_state.json) become one self-contained interactive page, loaded here in a real headless Chromium
// (Debian's, driven by playwright-core): no console errors, every chart has data, two runs on one page.
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { collectReport, JsonReader } from '../../src/report/collect';
import { writeReport } from '../../src/report/html';

function put(file: string, obj: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(obj));
}

/** A two-stage pipeline (sft, rl) in storage folder `root`; `lift` shifts the RL rewards so runs differ. */
function writePipeline(root: string, id: string, lift: number): void {
  const sft = path.join(root, id, 'sft', 'step-000004');
  const rl = path.join(root, id, 'rl', 'step-000003');
  put(path.join(root, id, 'manifest.json'), {
    format: 1,
    pipeline_id: id,
    name: 'demo',
    config_hash: 'x',
    state: 'completed',
    created_at: '2026-11-29T06:00:00Z',
    updated_at: '2026-11-29T06:10:00Z',
    config: {
      stages: [
        { name: 'sft', kind: 'sft' },
        { name: 'rl', kind: 'rl' },
      ],
    },
    stages: {
      sft: {
        index: 0,
        kind: 'sft',
        output_checkpoint: sft,
        final_step: 4,
        metrics: { loss: 1.5 },
        stage_hash: 'a',
        completed_at: '2026-11-29T06:04:00Z',
        run_id: 'r',
      },
      rl: {
        index: 1,
        kind: 'rl',
        output_checkpoint: rl,
        final_step: 3,
        metrics: { reward_mean: 0.6 },
        stage_hash: 'b',
        completed_at: '2026-11-29T06:10:00Z',
        run_id: 'r',
      },
    },
  });
  put(path.join(sft, 'trainer_state.json'), { loss_history: [3, 2.5, 2, 1.5], metrics: { loss: 1.5 } });
  put(path.join(rl, 'trainer_state.json'), {
    history: [1, 2, 3].map((step) => ({
      step,
      metrics: {
        loss: 0.1 / step,
        reward_mean: 0.2 * step + lift,
        pass_rate: 0.2 * step,
        turns_mean: 2,
        parallel_call_share: 0.1,
        tokens_per_s: 100,
        ratio_mean: 1 + 0.01 * step,
        ratio_max: 1.2 + 0.1 * step,
        clip_frac_low: 0.01 * step,
        clip_frac_high: 0.02 * step,
        kl_ref: 0.001 * step,
        dropped_stale_tokens: 10 * step,
      },
    })),
  });
  put(path.join(root, id, 'rl', 'status.json'), { state: 'done', step: 3, total_steps: 3, attempt: 2 });
}

test('report: collected from storage, stages in order with their curves and attempts', async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'tf-report-'));
  writePipeline(root, 'demo-1', 0);
  const report = await collectReport(new JsonReader({}), root, 'demo-1');
  expect(report.stages.map((s) => [s.name, s.state, s.step, s.attempt])).toEqual([
    ['sft', 'completed', 4, null],
    ['rl', 'completed', 3, 2],
  ]);
  expect(report.stages[1].curves.reward_mean).toEqual([
    [1, 0.2],
    [2, 0.4],
    [3, 0.6000000000000001],
  ]);
  await expect(collectReport(new JsonReader({}), root, 'nope')).rejects.toThrow(/no pipeline nope/);
});

describe('the page in headless Chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      // as root, and with no network to reach: no sandbox, no background traffic
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
  }, 60_000);
  afterAll(async () => browser?.close());

  test('two runs compare on one self-contained page with no console errors; screenshot written', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'tf-report-'));
    writePipeline(root, 'demo-1', 0);
    writePipeline(root, 'demo-2', 0.1);
    const reader = new JsonReader({});
    const runs = [await collectReport(reader, root, 'demo-1'), await collectReport(reader, root, 'demo-2')];
    const file = writeReport(runs, path.join(root, 'out'));
    expect(readFileSync(file, 'utf8')).not.toMatch(/<script[^>]+src=|<link[^>]+href=/); // nothing fetched

    const page = await browser.newPage();
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => {
      errors.push(String(e));
    });
    page.on('request', (r) => {
      requests.push(r.url());
    });
    await page.setViewportSize({ width: 1000, height: 900 });
    await page.goto(`file://${file}`, { waitUntil: 'load' });
    const charts = await page.evaluate(() =>
      (
        globalThis as unknown as {
          trainflowReport: {
            charts: { id: string; kind: string; title: string; series: { name: string; points: number }[] }[];
          };
        }
      ).trainflowReport.charts.map((c) => ({ id: c.id, kind: c.kind, title: c.title, series: c.series })),
    );
    expect(errors).toEqual([]);
    expect(requests.filter((u) => !u.startsWith('file://') && !u.startsWith('data:'))).toEqual([]);
    expect(charts.map((c) => c.title)).toEqual(
      expect.arrayContaining([
        'stage timeline',
        'sft: loss',
        'rl: loss',
        'rl: reward and pass rate',
        'rl: turns per episode',
        'rl: importance ratio π/μ',
        'rl: clip fraction',
        'rl: KL to reference',
        'rl: tokens dropped as stale',
      ]),
    );
    for (const c of charts) {
      expect(c.series.length).toBeGreaterThan(0);
      for (const s of c.series) expect(s.points).toBeGreaterThan(0);
    }
    const reward = charts.find((c) => c.title === 'rl: reward and pass rate')!;
    expect(reward.series.map((s) => s.name)).toEqual(
      expect.arrayContaining(['demo-1 · reward_mean', 'demo-2 · reward_mean']),
    );
    // the drawn SVG has the series as paths; the export is a real SVG document
    const svg = await page.evaluate(() =>
      (
        globalThis as unknown as { trainflowReport: { charts: { svg: () => string }[] } }
      ).trainflowReport.charts[1].svg(),
    );
    expect(decodeURIComponent(svg.replace(/^data:image\/svg\+xml;charset=UTF-8,/, ''))).toMatch(
      /<svg[\s\S]*<path/,
    );
    // smoothing redraws without errors
    await page.fill('#smoothing', '0'); // a range input: fill sets its value and fires `input`
    expect(errors).toEqual([]);
    const shot = path.join(root, 'out', 'report.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(readFileSync(shot).subarray(1, 4).toString('ascii')).toBe('PNG');
    if (process.env.TRAINFLOW_REPORT_SCREENSHOT)
      writeFileSync(process.env.TRAINFLOW_REPORT_SCREENSHOT, readFileSync(shot));
  }, 120_000);
});
