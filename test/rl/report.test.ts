// `trainflow report`: a pipeline laid out in a local storage folder (manifest, status objects, checkpoints'
// trainer_state.json) becomes index.html plus valid PNG charts of the curves the trainer recorded.
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inflateSync } from 'node:zlib';
import { collectReport, JsonReader } from '../../src/report/collect';
import { writeReport } from '../../src/report/html';

function put(file: string, obj: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(obj));
}

/** Decodes an RGB PNG written by src/report/png.ts: checks the signature and every chunk's CRC is present. */
function decodePng(buf: Buffer): { w: number; h: number; pixels: Buffer } {
  expect(buf.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  let pos = 8;
  let w = 0;
  let h = 0;
  const idat: Buffer[] = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.subarray(pos + 4, pos + 8).toString('ascii');
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') [w, h] = [data.readUInt32BE(0), data.readUInt32BE(4)];
    if (type === 'IDAT') idat.push(data);
    pos += 12 + len;
  }
  const pixels = inflateSync(Buffer.concat(idat));
  expect(pixels.length).toBe((w * 3 + 1) * h);
  return { w, h, pixels };
}

test('report: HTML page and PNG charts from a pipeline in storage', async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'tf-report-'));
  const id = 'demo-1';
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
        reward_mean: 0.2 * step,
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
  const report = await collectReport(new JsonReader({}), root, id);
  expect(report.stages.map((s) => [s.name, s.state, s.step])).toEqual([
    ['sft', 'completed', 4],
    ['rl', 'completed', 3],
  ]);
  expect(report.stages[1].curves.reward_mean).toEqual([
    [1, 0.2],
    [2, 0.4],
    [3, 0.6000000000000001],
  ]);
  const page = writeReport(report, path.join(root, 'out'));
  const html = readFileSync(page, 'utf8');
  for (const png of [
    'timeline.png',
    'sft-loss.png',
    'rl-loss.png',
    'rl-reward_mean.png',
    'rl-turns_mean.png',
    'rl-parallel_call_share.png',
    // the objective's curves (rl/objective.py)
    'rl-ratio_mean.png',
    'rl-clip_frac_low.png',
    'rl-kl_ref.png',
    'rl-dropped_stale_tokens.png',
  ]) {
    expect(html).toContain(`src="${png}"`);
    const { w, h, pixels } = decodePng(readFileSync(path.join(root, 'out', png)));
    expect(w).toBeGreaterThan(100);
    expect(h).toBeGreaterThan(50);
    expect(pixels.some((b, i) => i % (w * 3 + 1) !== 0 && b < 200)).toBe(true); // something was drawn
  }
  expect(existsSync(path.join(root, 'out', 'sft-reward_mean.png'))).toBe(false); // no such curve for sft
  await expect(collectReport(new JsonReader({}), root, 'nope')).rejects.toThrow(/no pipeline nope/);
});
