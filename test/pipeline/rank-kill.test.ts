// kill -9 of ONE rank of a 2-rank trainer job (torchrun, gloo, FSDP2 on CPU) on the real local stack: torchrun
// ends the whole job (the surviving rank too) with a failure exit code, the job activity retries, the second
// attempt resumes from the last committed checkpoint (sharded DCP training state on MinIO) and the stage ends
// bitwise identical to an uninterrupted 2-rank run of the same config (run beside it).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipelineConfigSchema, type PipelineConfig } from '../../src/config/schema';
import type { JobStatus } from '../../src/contract/job';
import { jobName } from '../../src/launchers/types';
import { startPipeline } from '../../src/pipeline/client';
import { repoRoot } from '../../src/pipeline/paths';
import type { CommitRecord } from '../../src/storage/checkpoints';
import { stagePrefix } from '../../src/storage/manifest';
import { joinUri, ObjectStore } from '../../src/storage/s3';
import {
  BUCKET,
  connectTestClient,
  S3_ENDPOINT,
  startWorkers,
  uniqueId,
  useDataDir,
  waitFor,
  type RunningWorkers,
} from './helpers';
import type { Client } from '@temporalio/client';

const PYTHON = path.join(repoRoot, '.venv/bin/python');
const STEPS = 12;
const EVERY = 4;
const dataDir = useDataDir();
const store = new ObjectStore({ endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true });
let client: Client;
let workers: RunningWorkers | undefined;
let demo: string;

beforeAll(() => {
  demo = mkdtempSync(path.join(tmpdir(), 'trainflow-rank-kill-'));
  // The demo corpora at 1/20 scale and a 512-token tokenizer (what the trainer tests use)
  execFileSync(
    PYTHON,
    ['-m', 'trainflow_trainer.demo_data', demo, '--scale', '0.05', '--vocab-size', '512', '--quiet'],
    { cwd: path.join(repoRoot, 'trainer') },
  );
});
beforeAll(async () => {
  client = await connectTestClient();
});
afterAll(async () => {
  await workers?.stop();
  await client.connection.close();
});

/** One midtrain stage of the real trainer under torchrun with 2 CPU ranks, on a tiny model. */
function twoRankConfig(taskQueue: string, id: string): PipelineConfig {
  return pipelineConfigSchema.parse({
    api_version: 'trainflow/v1',
    metadata: { name: 'rank-kill' },
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
          hidden_size: 64,
          intermediate_size: 128,
          num_hidden_layers: 2,
          num_attention_heads: 4,
          num_key_value_heads: 2,
        },
      },
      tokenizer: { path: path.join(demo, 'tokenizer.json') },
    },
    stages: [
      {
        name: 'mid',
        kind: 'midtrain',
        data: {
          sources: [
            { path: path.join(demo, 'midtrain-code.jsonl'), weight: 0.4 },
            { path: path.join(demo, 'midtrain-tools.jsonl'), weight: 0.6 },
          ],
          seq_len: 64,
        },
        train: { steps: STEPS, batch_size: 4, micro_batch_size: 2, lr: 3e-3, warmup_steps: 1, seed: 7 },
        checkpoint: { every: EVERY },
        job: {
          // torchrun's defaults are what we rely on: --max-restarts 0, so a dead rank ends the job and the
          // activity (not torchrun) retries it, resuming from S3. Under trainflow's wrapper, as every launcher
          // runs a multi-rank trainer job: a killed rank records no protocol code, so it stays a retried crash.
          command: [
            PYTHON,
            '-m',
            'trainflow_trainer.torchrun',
            '--standalone',
            '--nproc-per-node',
            '2',
            '-m',
            'trainflow_trainer.job',
            '--spec',
            '{spec}',
          ],
          env: { TRAINFLOW_DEVICE: 'cpu', OMP_NUM_THREADS: '1' },
        },
      },
    ],
  });
}

/** The pid of the rank-`rank` worker beside the job process `pid` (both children of one torchrun). */
function siblingRank(pid: number, rank: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const torchrun = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  for (const task of readdirSync(`/proc/${torchrun}/task`)) {
    const children = readFileSync(`/proc/${torchrun}/task/${task}/children`, 'utf8').split(' ');
    for (const child of children.filter(Boolean)) {
      const env = readFileSync(`/proc/${child}/environ`, 'utf8').split('\0');
      if (env.includes(`RANK=${rank}`)) return Number(child);
    }
  }
  throw new Error(`no rank ${rank} beside pid ${pid}`);
}

function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]);
  } catch {
    return false;
  }
}

async function finalCommit(config: PipelineConfig, id: string): Promise<CommitRecord> {
  const uri = joinUri(stagePrefix(config.storage.uri, id, 'mid'), `step-${String(STEPS).padStart(6, '0')}`);
  const commit = await store.getJson<CommitRecord>(joinUri(uri, 'COMMIT.json'));
  expect(commit?.final).toBe(true);
  return commit!;
}

test('kill -9 of one rank: the whole job fails, the activity retries, the resumed 2-rank run ends bitwise identical', async () => {
  const taskQueue = uniqueId('tq');
  const killedId = uniqueId('rank-kill');
  const straightId = uniqueId('rank-straight');
  const config = twoRankConfig(taskQueue, killedId);
  const straightConfig = twoRankConfig(taskQueue, straightId);
  workers = await startWorkers(config);
  const killed = await startPipeline(client, config, { id: killedId });
  const straight = await startPipeline(client, straightConfig, { id: straightId });

  // Mid-stage: after the first commit (step 4), before the next.
  const statusUri = joinUri(stagePrefix(config.storage.uri, killedId, 'mid'), 'status.json');
  const running = await waitFor(
    'the 2-rank job past its first commit',
    async () => {
      const s = await store.getJson<JobStatus>(statusUri);
      return s && s.state === 'running' && (s.last_checkpoint_step ?? 0) >= EVERY ? s : undefined;
    },
    240_000,
  );
  const survivor = running.pid; // rank 0 writes the status
  const victim = siblingRank(survivor, 1);
  process.kill(victim, 'SIGKILL');
  await waitFor('the surviving rank to end', () => !pidAlive(survivor) || undefined, 60_000);

  const [k, s] = await Promise.all([killed.result(), straight.result()]);
  expect(k.state).toBe('completed');
  expect(s.state).toBe('completed');
  expect(k.stages[0].attempt).toBe(2);
  expect(s.stages[0].attempt).toBe(1);
  const log = readFileSync(path.join(dataDir, 'jobs', jobName(killedId, 'mid'), 'job.log'), 'utf8');
  expect(log).toMatch(/=== trainflow: job exited with code [1-9]\d* /); // the first attempt failed as a whole
  expect(log).toMatch(/resuming from s3:\/\/\S+\/step-0000(0[4-9]|1[01])/);

  // Bitwise: the same bytes for the served weights and for every rank's DCP shard of the training state.
  const a = await finalCommit(config, killedId);
  const b = await finalCommit(straightConfig, straightId);
  const digests = (c: CommitRecord) =>
    Object.fromEntries(
      c.files
        .filter((f) => f.path === 'model.safetensors' || f.path.endsWith('.distcp'))
        .map((f) => [f.path, f.sha256]),
    );
  expect(Object.keys(digests(a)).sort()).toEqual([
    'model.safetensors',
    'train_state/__0_0.distcp',
    'train_state/__1_0.distcp',
  ]);
  expect(digests(a)).toEqual(digests(b));
}, 600_000);
