// Shared set-up of the pipeline integration tests: the real local stack (Temporal dev server, MinIO) from the
// environment, configs built through the real schema, the fake job as every stage's command, and in-process
// workers on a unique task queue per test.
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pipelineConfigSchema, type PipelineConfig } from '../../src/config/schema';
import { repoRoot } from '../../src/pipeline/paths';
import { createControlWorker, createLauncherWorker } from '../../workers/build';
import type { JobActivityOptions } from '../../activities/job';

export const TEMPORAL_ADDRESS = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
export const S3_ENDPOINT = process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000';
export const BUCKET = process.env.TRAINFLOW_BUCKET ?? 'trainflow';
process.env.AWS_ACCESS_KEY_ID ??= 'trainflow';
process.env.AWS_SECRET_ACCESS_KEY ??= 'trainflow-secret';
// Jobs log through the launcher's file; keep the worker log quiet unless asked.
process.env.TRAINFLOW_LOG_LEVEL ??= 'warn';
// The SDK logs every failed workflow and activity at WARN; the tests provoke those on purpose.
try {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
} catch {
  // Already installed by another test module in this process.
}

/** A fresh data dir (job records, logs) per test file, so parallel runs and reruns never meet. */
export function useDataDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'trainflow-test-'));
  process.env.TRAINFLOW_DATA_DIR = dir;
  return dir;
}

export function uniqueId(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

export const FAKE_JOB: NonNullable<JobActivityOptions['command']> = {
  command: [
    process.execPath,
    '--require',
    require.resolve('tsx/cjs'),
    path.join(repoRoot, 'test/fixtures/fake-job.ts'),
    '--spec',
    '{spec}',
  ],
  cwd: repoRoot,
  env: { NODE_NO_WARNINGS: '1' },
};

export interface StageSketch {
  name: string;
  steps: number;
  every: number;
  stepMs?: number;
  env?: Record<string, string>;
  gates?: { metric: string; min?: number; max?: number }[];
  maxAttempts?: number;
  /** resources.cpus_per_node */
  cpus?: number;
}

/** A pipeline config through the real schema: midtrain stages running the fake job with the given knobs. */
export function makeConfig(opts: {
  name?: string;
  taskQueue: string;
  storagePrefix: string;
  stages: StageSketch[];
  heartbeatTimeout?: string;
  init?: Record<string, unknown>;
  /** the Temporal server (default: the shared stack's) */
  address?: string;
}): PipelineConfig {
  const raw = {
    api_version: 'trainflow/v1',
    metadata: { name: opts.name ?? 'pipetest' },
    storage: { uri: `s3://${BUCKET}/${opts.storagePrefix}`, endpoint: S3_ENDPOINT, force_path_style: true },
    temporal: { address: opts.address ?? TEMPORAL_ADDRESS, task_queue: opts.taskQueue },
    defaults: {
      heartbeat_timeout: opts.heartbeatTimeout ?? '5s',
      retry: { max_attempts: 4, initial_interval: '200ms', max_interval: '1s', backoff: 1.5 },
    },
    pools: { default: { launcher: 'local', task_queue: `${opts.taskQueue}-jobs` } },
    model: { init: opts.init ?? { preset: 'tiny' } },
    stages: opts.stages.map((s) => ({
      name: s.name,
      kind: 'midtrain',
      data: { sources: [{ path: 'unused.jsonl' }] },
      train: { steps: s.steps },
      checkpoint: { every: s.every, keep_last: 2 },
      gates: s.gates ?? [],
      ...(s.maxAttempts ? { retry: { max_attempts: s.maxAttempts } } : {}),
      ...(s.cpus ? { resources: { cpus_per_node: s.cpus } } : {}),
      job: {
        command: FAKE_JOB.command,
        env: { ...FAKE_JOB.env, FAKE_STEP_MS: String(s.stepMs ?? 20), FAKE_STATUS_MS: '300', ...s.env },
      },
    })),
  };
  return pipelineConfigSchema.parse(raw);
}

export async function connectTestClient(address = TEMPORAL_ADDRESS): Promise<Client> {
  try {
    const connection = await Connection.connect({ address, connectTimeout: 5000 });
    return new Client({ connection });
  } catch (err) {
    throw new Error(
      `the pipeline tests need the local stack: Temporal is unreachable at ${address} (run \`trainflow dev up\` or \`make test\`): ${String(err)}`,
    );
  }
}

export interface RunningWorkers {
  control: Worker;
  launcher: Worker;
  connection: NativeConnection;
  stop(): Promise<void>;
}

/** A control worker and a launcher worker (fast polls) in this process, on the config's task queues. */
export async function startWorkers(
  config: PipelineConfig,
  job: JobActivityOptions = {},
): Promise<RunningWorkers> {
  const connection = await NativeConnection.connect({ address: config.temporal.address });
  const control = await createControlWorker({
    connection,
    taskQueue: config.temporal.task_queue,
    shutdownGraceTime: '2s',
  });
  const launcher = await startLauncherWorker(connection, config, job);
  const runs = [control.run(), launcher.run()];
  return {
    control,
    launcher,
    connection,
    async stop() {
      for (const w of [control, launcher]) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(runs);
      await connection.close();
    },
  };
}

export function startLauncherWorker(
  connection: NativeConnection,
  config: PipelineConfig,
  job: JobActivityOptions = {},
): Promise<Worker> {
  return createLauncherWorker({
    connection,
    taskQueue: config.pools.default.task_queue,
    shutdownGraceTime: '2s',
    job: { pollMs: 100, statusPollMs: 500, progressMs: 300, cancelGraceMs: 3000, ...job },
  });
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** The OMP_NUM_THREADS each attempt of the fake job saw (from the job's log file). */
export function jobThreads(dataDir: string, jobName: string): string[] {
  const log = readFileSync(path.join(dataDir, 'jobs', jobName, 'job.log'), 'utf8');
  return [...log.matchAll(/^FAKE_THREADS (\S+)$/gm)].map((m) => m[1]);
}

/** Steps the fake job executed, in order, across every attempt (from the job's log file). */
export function executedSteps(dataDir: string, jobName: string): number[] {
  const log = readFileSync(path.join(dataDir, 'jobs', jobName, 'job.log'), 'utf8');
  return [...log.matchAll(/^FAKE_STEP (\d+)$/gm)].map((m) => Number(m[1]));
}
