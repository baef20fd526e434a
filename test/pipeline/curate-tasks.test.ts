// A curate stage in the pipeline: its commit feeds a later stage's tasks.from (workflows/pipeline.ts
// withCuratedTasks), and promotion's final checkpoint is the last training stage's (src/storage/manifest.ts).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseDocument, type YAMLSeq } from 'yaml';
import { parseConfig } from '../../src/config/load';
import { runOf, type ManifestStage, type PipelineManifest } from '../../src/storage/manifest';
import { withCuratedTasks } from '../../workflows/pipeline';

const ROOT = path.resolve(__dirname, '../..');

function demoWithCurate() {
  const file = path.join(ROOT, 'configs', 'demo.yaml');
  const doc = parseDocument(readFileSync(file, 'utf8'));
  const node = doc.createNode({ name: 'curate', kind: 'curate', curate: { packages: ['isodate==0.7.2'] } });
  (doc.get('stages') as YAMLSeq).items.unshift(node);
  doc.setIn(['stages', 5, 'tasks'], doc.createNode({ family: 'swe', from: 'curate' }));
  return parseConfig(doc.toString(), file);
}

test("tasks.from becomes the curate stage's committed tasks.jsonl; other stages are left as they are", () => {
  const config = demoWithCurate();
  const curated = { curate: 's3://bucket/p/curate/step-000001/' };
  const out = withCuratedTasks(config, 5, curated);
  expect(out.stages[5].tasks).toEqual({
    family: 'swe',
    from: 'curate',
    path: 's3://bucket/p/curate/step-000001/tasks.jsonl',
  });
  expect(config.stages[5].tasks?.path).toBeUndefined(); // the input config is not changed
  expect(withCuratedTasks(config, 4, curated)).toBe(config);
  expect(() => withCuratedTasks(config, 5, {})).toThrow(/curate stage curate has no committed output/);
  // resolved: a curate stage takes no packing or sampling defaults, and its block is filled
  expect(config.stages[0]).toMatchObject({
    kind: 'curate',
    curate: { per_package: 20, combine: 4, seed: 0 },
  });
  expect(config.stages[0].packing).toBeUndefined();
});

test("a gold-trajectory source's from becomes the curate stage's tasks.jsonl; other sources are kept", () => {
  const config = parseConfig(
    readFileSync(path.join(ROOT, 'configs', 'swe-demo.yaml'), 'utf8'),
    path.join(ROOT, 'configs', 'swe-demo.yaml'),
  );
  const sft = config.stages.findIndex((s) => s.name === 'sft');
  const rows = { path: '/data/sft.jsonl', kind: 'rows' as const, weight: 2, format: 'jsonl' as const };
  const mixed = {
    ...config,
    stages: config.stages.map((s, i) =>
      i === sft && s.data ? { ...s, data: { ...s.data, sources: [...s.data.sources, rows] } } : s,
    ),
  };
  const curated = { curate: 's3://bucket/p/curate/step-000001' };
  const out = withCuratedTasks(mixed, sft, curated);
  expect(out.stages[sft].data?.sources).toEqual([
    {
      from: 'curate',
      kind: 'gold_trajectories',
      weight: 1,
      format: 'jsonl',
      path: 's3://bucket/p/curate/step-000001/tasks.jsonl',
    },
    rows,
  ]);
  expect(mixed.stages[sft].data?.sources[0].path).toBeUndefined(); // the input config is not changed
  expect(() => withCuratedTasks(mixed, sft, {})).toThrow(
    /stages\.sft\.data\.sources\[0\]\.from: curate stage curate has no committed output/,
  );
  // the rft and rl stages' tasks come from the same commit
  for (const name of ['rft', 'rl']) {
    const i = config.stages.findIndex((s) => s.name === name);
    expect(withCuratedTasks(config, i, curated).stages[i].tasks?.path).toBe(
      's3://bucket/p/curate/step-000001/tasks.jsonl',
    );
  }
});

test("promotion's final checkpoint skips curate stages: their output is a tasks file, not weights", () => {
  const stage = (index: number, kind: string, out: string): ManifestStage => ({
    index,
    kind,
    output_checkpoint: out,
    final_step: 1,
    metrics: {},
    stage_hash: 'h',
    completed_at: '2026-12-01T00:00:00Z',
    run_id: 'r',
  });
  const manifest = (stages: Record<string, ManifestStage>): PipelineManifest => ({
    format: 1,
    pipeline_id: 'p',
    name: 'n',
    config_hash: 'c',
    config: {},
    state: 'completed',
    created_at: '',
    updated_at: '',
    stages,
  });
  const m = manifest({
    sft: stage(0, 'sft', 's3://b/sft/step-000010'),
    curate: stage(1, 'curate', 's3://b/curate/step-000001'),
  });
  expect(runOf(m)?.final_checkpoint).toBe('s3://b/sft/step-000010');
  expect(runOf(m)?.stages.curate).toBe('s3://b/curate/step-000001');
  expect(runOf(manifest({ curate: stage(0, 'curate', 's3://b/c') }))).toBeUndefined();
});
