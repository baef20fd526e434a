// The Slurm launcher against a real single-node Slurm cluster (Debian's slurm-wlm + munge, started by
// infra/slurm/start-test-cluster.sh in beforeAll when not already up, stopped after if this file started it) and
// the real local stack (Temporal dev server, MinIO): pipelines whose pool uses the slurm launcher, running the
// pipeline tests' fake job through sbatch/srun.
import type { Client } from '@temporalio/client';
import { WorkflowFailedError } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { buildProgram } from '../../src/cli/main';
import type { PipelineConfig } from '../../src/config/schema';
import { SlurmLauncher } from '../../src/launchers/slurm';
import { jobName } from '../../src/launchers/types';
import { startPipeline } from '../../src/pipeline/client';
import type { JobStatus } from '../../src/contract/job';
import type { PipelineStatus } from '../../src/pipeline/status';
import { stagePrefix } from '../../src/storage/manifest';
import { joinUri, ObjectStore } from '../../src/storage/s3';
import {
  connectTestClient,
  makeConfig,
  S3_ENDPOINT,
  startWorkers,
  uniqueId,
  useDataDir,
  waitFor,
  type RunningWorkers,
  type StageSketch,
} from '../pipeline/helpers';
import { ensureSlurmCluster, slurmEnv, slurmJob, stopSlurmCluster } from './slurm-cluster';

const dataDir = useDataDir();
const jobRoot = path.join(dataDir, 'slurm-jobs');
const store = new ObjectStore({ endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true });
let startedCluster = false;
let client: Client;
let workers: RunningWorkers | undefined;

beforeAll(async () => {
  startedCluster = ensureSlurmCluster();
  client = await connectTestClient();
}, 600_000);
afterEach(async () => {
  await workers?.stop();
  workers = undefined;
});
afterAll(async () => {
  await client?.connection.close();
  if (startedCluster) stopSlurmCluster();
});

/** A one-stage pipeline on a pool whose launcher is Slurm, and its launcher worker + control worker. */
async function slurmPipeline(stage: StageSketch, slurm: { time_limit?: number } = {}) {
  const id = uniqueId(`slurm-${stage.name}`);
  const config: PipelineConfig = makeConfig({
    taskQueue: uniqueId('tq'),
    storagePrefix: `tests/${id}`,
    stages: [stage],
  });
  const pool = {
    ...config.pools.default,
    launcher: 'slurm' as const,
    slurm: { extra_sbatch_args: [], ...slurm },
  };
  config.pools.default = pool;
  config.stages[0].resources.gpus_per_node = 2; // scheduled on the cluster's fake GPUs: --gres=gpu:2
  const launcher = new SlurmLauncher({ pool, jobRoot, queryIntervalMs: 300 });
  workers = await startWorkers(config, {
    launcherFor: (kind) => {
      if (kind !== 'slurm') throw new Error(`expected the slurm launcher, got ${kind}`);
      return launcher;
    },
  });
  const name = jobName(id, stage.name);
  const handle = await startPipeline(client, config, { id });
  const statusUri = joinUri(stagePrefix(config.storage.uri, id, stage.name), 'status.json');
  return {
    id,
    name,
    handle,
    statusUri,
    log: () => readFileSync(path.join(jobRoot, name, 'job.log'), 'utf8'),
  };
}

/** Slurm job ids of every submission of a job, in order (from the launcher's log lines). */
function slurmIds(log: string): string[] {
  return [...log.matchAll(/^=== trainflow: slurm job (\d+) on /gm)].map((m) => m[1]);
}

/** The fake job's steps across two attempts: the second resumed from a committed checkpoint and ran the rest. */
function checkResumed(log: string, total: number, every: number): number {
  const resume = /^FAKE_RESUME (\d+) from /m.exec(log);
  expect(resume).not.toBeNull();
  const resumedFrom = Number(resume![1]);
  expect(resumedFrom).toBeGreaterThan(0); // from a checkpoint, not from scratch
  // (A checkpoint every `every` steps, or the one the job saves on SIGTERM, at any step.)
  const steps = (text: string) => [...text.matchAll(/^FAKE_STEP (\d+)$/gm)].map((m) => Number(m[1]));
  const before = steps(log.slice(0, resume!.index));
  const after = steps(log.slice(resume!.index));
  expect(before).toEqual(Array.from({ length: before.length }, (_, k) => k + 1));
  expect(before.length).toBeGreaterThanOrEqual(resumedFrom); // at most the steps since that checkpoint re-run
  expect(before.length - resumedFrom).toBeLessThan(every);
  expect(after).toEqual(Array.from({ length: total - resumedFrom }, (_, k) => resumedFrom + 1 + k));
  return resumedFrom;
}

async function runningJob(name: string, statusUri: string, minStep: number): Promise<string> {
  await waitFor(`the job to pass step ${minStep}`, async () => {
    const s = await store.getJson<JobStatus>(statusUri);
    return s && s.step >= minStep ? s : undefined;
  });
  return (JSON.parse(readFileSync(path.join(jobRoot, name, 'job.json'), 'utf8')) as { jobId: string }).jobId;
}

test('a stage runs through Slurm end to end (sbatch with gres, srun, exit code, checkpoint)', async () => {
  const p = await slurmPipeline({ name: 'train', steps: 6, every: 3 });
  const status = await p.handle.result();
  expect(status.state).toBe('completed');
  expect(status.stages[0].outputCheckpoint).toMatch(/step-000006$/);
  const log = p.log();
  const [id] = slurmIds(log);
  expect(id).toBeDefined();
  const job = slurmJob(id);
  expect(job.JobName).toBe(p.name); // so a retry finds it with squeue --name
  expect(job.JobState).toBe('COMPLETED');
  expect(job.ExitCode).toBe('0:0');
  expect(job.TresPerNode).toBe('gres:gpu:2');
  expect(log).toMatch(/master vm:29500|master \S+:29500/);
  expect(log).toContain('FAKE_STEP 6');
  // Released: a later attach finds nothing, and the batch script recorded the exit code before.
  expect(await new SlurmLauncher({ jobRoot }).attach(p.name)).toBeUndefined();
  // `trainflow logs` finds the Slurm job's log (the job folder under the data dir, as the worker wrote it).
  const out: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  try {
    await buildProgram().parseAsync(['node', 'trainflow', 'logs', p.id, 'train']);
  } finally {
    spy.mockRestore();
  }
  expect(out.join('')).toContain(`=== trainflow: slurm job ${id} on `);
  expect(out.join('')).toContain('FAKE_STEP 6');
});

test('scancel from outside is seen as a failure, retried, and the retry resumes from the checkpoint', async () => {
  const p = await slurmPipeline({ name: 'scancelled', steps: 40, every: 5, stepMs: 100 });
  const first = await runningJob(p.name, p.statusUri, 7);
  execFileSync('scancel', [first], { env: slurmEnv() });
  const status = await p.handle.result();
  expect(status.state).toBe('completed');
  expect(status.stages[0].attempt).toBe(2);
  expect(slurmJob(first).JobState).toBe('CANCELLED');
  const log = p.log();
  expect(log).toContain(`trainflow: slurm job ${first} CANCELLED from outside trainflow`);
  const ids = slurmIds(log);
  expect(ids).toHaveLength(2);
  expect(ids[1]).not.toBe(first);
  checkResumed(log, 40, 5);
});

test('cancelling the pipeline removes its Slurm job', async () => {
  const p = await slurmPipeline({ name: 'forever', steps: 100000, every: 1000, stepMs: 50 });
  const id = await runningJob(p.name, p.statusUri, 3);
  expect(slurmJob(id).JobState).toBe('RUNNING');
  await p.handle.cancel();
  await expect(p.handle.result()).rejects.toThrow(WorkflowFailedError);
  // Reported cancelled only once the job is gone from the queue (WAIT_CANCELLATION_COMPLETED + launcher.cancel).
  const live = execFileSync('squeue', ['-h', '-j', id, '-t', 'PD,R,CG,CF,S'], {
    encoding: 'utf8',
    env: slurmEnv(),
  }).trim();
  expect(live).toBe('');
  expect(['FAILED', 'CANCELLED', 'COMPLETED']).toContain(slurmJob(id).JobState);
  const status = await p.handle.query<PipelineStatus>('status');
  expect(status.stages[0].state).toBe('cancelled');
});

test('a job killed at its time limit is classified as a timeout and the pipeline resumes from its checkpoint', async () => {
  // Slurm's smallest limit is one minute; the first attempt needs ~75 s, so Slurm kills it, the retry resumes
  // from the last committed step and finishes well inside its own minute.
  const p = await slurmPipeline(
    { name: 'timed', steps: 150, every: 10, stepMs: 500 },
    { time_limit: 60_000 },
  );
  const first = await runningJob(p.name, p.statusUri, 1);
  expect(slurmJob(first).TimeLimit).toBe('00:01:00');
  const status = await p.handle.result();
  expect(status.state).toBe('completed');
  expect(status.stages[0].attempt).toBe(2);
  expect(slurmJob(first).JobState).toBe('TIMEOUT');
  const log = p.log();
  expect(log).toContain(
    `trainflow: slurm job ${first} TIMEOUT: Slurm killed the job at its time limit (timeout;`,
  );
  const resumedFrom = checkResumed(log, 150, 10);
  expect(resumedFrom).toBeGreaterThanOrEqual(80);
}, 240_000);
