// An RL stage with 2 trainer ranks on the local stack: `trainflow run` (Temporal, MinIO, the local launcher)
// starts the job as `torchrun --nproc-per-node=2` (resources.procs_per_node: 2); rank 0 alone runs the inference
// server and the data plane and every rank trains its share of each batch (trainer/trainflow_trainer/rl/ranks.py).
// The stage completes, its checkpoints say 2 ranks trained them, and each step trained new groups, each once.
// (Exactness against one process and the kill -9 test with 2 ranks: trainer/tests/test_rl_ranks.py.)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { repoRoot } from '../../src/pipeline/paths';
import { BUCKET, S3_ENDPOINT, TEMPORAL_ADDRESS, uniqueId, useDataDir } from '../pipeline/helpers';
import { runToEnd } from '../pipeline/run-cli';

const PYTHON = path.join(repoRoot, '.venv/bin/python');
const TRAINER = path.join(repoRoot, 'trainer');
const STEPS = 3;

function config(id: string, dataDir: string): string {
  const cfg = {
    api_version: 'trainflow/v1',
    metadata: { name: 'rl-ranks' },
    storage: { uri: `s3://${BUCKET}/tests/${id}`, endpoint: S3_ENDPOINT, force_path_style: true },
    temporal: { address: TEMPORAL_ADDRESS, task_queue: `q-${id}` },
    defaults: { launcher: 'local', resources: { cpus_per_node: 2, procs_per_node: 2 } },
    model: {
      init: { preset: 'tiny' },
      tokenizer: { path: path.join(dataDir, 'tokenizer.json') },
      dtype: 'fp32',
    },
    stages: [
      {
        name: 'rl',
        kind: 'rl',
        tasks: { family: 'demo', count: 8 },
        rollout: {
          group_size: 2,
          concurrency: 4,
          batch_groups: 2,
          max_turns: 1,
          max_new_tokens: 8,
          max_staleness: 1,
        },
        // a random model solves nothing: keep all-equal groups so batches still form
        sampling: { strategy: 'difficulty', filter_all_equal: false },
        algorithm: { name: 'dapo', clip_low: 0.2, clip_high: 0.28, loss_agg: 'token-mean' },
        packing: { mode: 'trie', max_tokens: 2048 }, // one micro-batch a step: rank 1 runs empty passes
        train: { steps: STEPS, lr: 1e-4 },
        checkpoint: { every: 2 },
      },
    ],
  };
  const file = path.join(dataDir, `${id}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

interface RlState {
  world_size: number;
  step: number;
  history: { step: number; cursor: number; groups: string[]; dropped: string[] }[];
}

async function trainerState(id: string, step: number): Promise<RlState> {
  const s3 = new S3Client({ endpoint: S3_ENDPOINT, forcePathStyle: true, region: 'us-east-1' });
  const key = `tests/${id}/${id}/rl/step-${String(step).padStart(6, '0')}/trainer_state.json`;
  const obj = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return JSON.parse(await obj.Body!.transformToString()) as RlState;
}

describe('an RL stage on 2 trainer ranks', () => {
  let dataDir: string;
  beforeAll(() => {
    useDataDir();
    dataDir = mkdtempSync(path.join(tmpdir(), 'tf-rl-ranks-'));
    execFileSync(PYTHON, ['-m', 'trainflow_trainer.demo_data', dataDir, '--quiet'], { cwd: TRAINER });
  });

  test(
    'completes on the local stack, every checkpoint trained by both ranks, each group once',
    async () => {
      const id = uniqueId('rl-ranks');
      const run = await runToEnd(config(id, dataDir), id);
      expect({ code: run.code, tail: run.code === 0 ? '' : run.tail }).toEqual({ code: 0, tail: '' });
      const mid = await trainerState(id, 2);
      const final = await trainerState(id, STEPS);
      expect([mid.world_size, final.world_size]).toEqual([2, 2]);
      expect(final.history.map((h) => h.step)).toEqual([1, 2, 3]);
      expect(final.history.slice(0, 2)).toEqual(mid.history);
      const trained = final.history.flatMap((h) => h.groups);
      const dropped = final.history.flatMap((h) => h.dropped);
      expect(new Set(trained).size).toBe(trained.length);
      expect(trained.length).toBe(STEPS * 2 - dropped.length);
      final.history.forEach((h, i) => {
        if (i > 0) expect(h.cursor).toBeGreaterThan(final.history[i - 1].cursor);
      });
    },
    15 * 60_000,
  );
});
