// A bad input in a 2-rank trainer job (torchrun, gloo, FSDP2 on CPU) on the real local stack stops the stage at
// once, like a one-process job's (failures.test.ts): torchrun exits 1 whatever its ranks' codes, and trainflow's
// wrapper (trainer/trainflow_trainer/torchrun.py) turns "a rank recorded exit 2" back into the job's exit 2, which
// the job activity fails as non-retryable. Two cases, run side by side:
//   every rank  a data file with an invalid JSON line, through the launcher's own command line
//               (resources.procs_per_node: 2 → `python -m trainflow_trainer.torchrun --standalone ...`);
//   rank 1 only rank 1 reads a broken file, rank 0 the good one (trainer/tests/rank_input_worker.py stands in for
//               ranks on hosts with different disks): rank 0 is left in a collective and ends by torchrun's
//               hand, and still the job exits 2 with rank 1's reason.
// (kill -9 of a rank, which must stay a retried crash: rank-kill.test.ts.)
import { WorkflowFailedError } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipelineConfigSchema, type PipelineConfig } from '../../src/config/schema';
import { jobName } from '../../src/launchers/types';
import { startPipeline } from '../../src/pipeline/client';
import { repoRoot } from '../../src/pipeline/paths';
import type { PipelineStatus } from '../../src/pipeline/status';
import {
  BUCKET,
  connectTestClient,
  S3_ENDPOINT,
  startWorkers,
  uniqueId,
  useDataDir,
  type RunningWorkers,
} from './helpers';
import type { Client } from '@temporalio/client';

const PYTHON = path.join(repoRoot, '.venv/bin/python');
const dataDir = useDataDir();
let client: Client;
let workers: RunningWorkers | undefined;
let demo: string;
let broken: string;

beforeAll(async () => {
  demo = mkdtempSync(path.join(tmpdir(), 'trainflow-rank-bad-'));
  execFileSync(
    PYTHON,
    ['-m', 'trainflow_trainer.demo_data', demo, '--scale', '0.05', '--vocab-size', '512', '--quiet'],
    { cwd: path.join(repoRoot, 'trainer') },
  );
  broken = path.join(demo, 'broken.jsonl');
  writeFileSync(broken, '{"text": "def f(): pass"}\n{"text": "no closing quote}\n');
  client = await connectTestClient();
});
afterAll(async () => {
  await workers?.stop();
  await client.connection.close();
});

function twoRankConfig(
  taskQueue: string,
  id: string,
  data: string,
  job?: { command: string[]; env: Record<string, string> },
): PipelineConfig {
  return pipelineConfigSchema.parse({
    api_version: 'trainflow/v1',
    metadata: { name: 'rank-bad-input' },
    storage: { uri: `s3://${BUCKET}/tests/${id}`, endpoint: S3_ENDPOINT, force_path_style: true },
    temporal: { address: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233', task_queue: taskQueue },
    defaults: {
      heartbeat_timeout: '60s',
      retry: { max_attempts: 3, initial_interval: '200ms', max_interval: '1s', backoff: 1.5 },
    },
    pools: { default: { launcher: 'local', task_queue: `${taskQueue}-jobs` } },
    model: {
      init: {
        preset: 'tiny',
        overrides: {
          hidden_size: 32,
          intermediate_size: 64,
          num_hidden_layers: 1,
          num_attention_heads: 2,
          num_key_value_heads: 1,
        },
      },
      tokenizer: { path: path.join(demo, 'tokenizer.json') },
    },
    stages: [
      {
        name: 'mid',
        kind: 'midtrain',
        data: { sources: [{ path: data }], seq_len: 32 },
        train: { steps: 2, batch_size: 2, micro_batch_size: 1, lr: 1e-3, warmup_steps: 1, seed: 7 },
        checkpoint: { every: 2 },
        // 2 ranks (one thread each) rendered by the launcher, or the job's own command starts them
        ...(job ? { job } : { resources: { procs_per_node: 2, cpus_per_node: 2 } }),
      },
    ],
  });
}

async function failure(config: PipelineConfig, id: string) {
  const handle = await startPipeline(client, config, { id });
  const error = await handle.result().then(
    () => undefined,
    (err: unknown) => err as Error,
  );
  expect(error).toBeInstanceOf(WorkflowFailedError);
  const log = readFileSync(path.join(dataDir, 'jobs', jobName(id, 'mid'), 'job.log'), 'utf8');
  const status = await handle.query<PipelineStatus>('status');
  return { message: String((error as WorkflowFailedError).cause?.message), log, status };
}

test('a bad input on every rank, or on rank 1 only, fails the 2-rank stage at once with its reason', async () => {
  const taskQueue = uniqueId('tq');
  const everyId = uniqueId('rank-bad-every');
  const oneId = uniqueId('rank-bad-one');
  const every = twoRankConfig(taskQueue, everyId, broken);
  const one = twoRankConfig(taskQueue, oneId, path.join(demo, 'midtrain-code.jsonl'), {
    command: [
      PYTHON,
      '-m',
      'trainflow_trainer.torchrun',
      '--standalone',
      '--nproc-per-node=2',
      'tests/rank_input_worker.py',
      '--spec',
      '{spec}',
    ],
    env: {
      RANK_INPUT_RANK: '1',
      RANK_INPUT_PATH: broken,
      PYTHONPATH: path.join(repoRoot, 'trainer'),
      TRAINFLOW_DEVICE: 'cpu',
      OMP_NUM_THREADS: '1',
    },
  });
  workers = await startWorkers(every);
  const [e, o] = await Promise.all([failure(every, everyId), failure(one, oneId)]);

  // every rank: the launcher rendered the wrapper; a rank's reason is reported (both meet the bad input, and which
  // records it before torchrun stops the other is a race: torchrun.py)
  expect(e.log).toContain(
    '"-m","trainflow_trainer.torchrun","--standalone","--nnodes=1","--nproc-per-node=2"',
  );
  expect(
    [0, 1].map((r) => `bad input: ${broken}:2: invalid JSON (Unterminated string starting at) (rank ${r})`),
  ).toContain(e.message);
  // rank 1 only: rank 0 ran on (the good file) until torchrun stopped it; rank 1's reason
  expect(o.message).toBe(`bad input: ${broken}:2: invalid JSON (Unterminated string starting at) (rank 1)`);
  for (const r of [e, o]) {
    expect(r.log).toMatch(/=== trainflow: job exited with code 2 /);
    expect([...r.log.matchAll(/^=== trainflow: attempt \d+ launching/gm)]).toHaveLength(1); // not retried
    expect(r.status.stages[0].state).toBe('failed');
  }
}, 300_000);
