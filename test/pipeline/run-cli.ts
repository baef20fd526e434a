// `trainflow run` as a user runs it — `node bin/trainflow.js run FILE` as a subprocess, its output piped (not a
// terminal) — for tests that act on the stack while it runs.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { dataDir, repoRoot } from '../../src/pipeline/paths';
import { BUCKET, FAKE_JOB, S3_ENDPOINT, TEMPORAL_ADDRESS, uniqueId } from './helpers';

export interface RunStage {
  name: string;
  steps: number;
  every: number;
  stepMs: number;
  env?: Record<string, string>;
}

/** A pipeline config file running the fake job, written under `dir`. */
export function writeRunConfig(
  dir: string,
  opts: {
    name: string;
    taskQueue: string;
    storagePrefix: string;
    stages: RunStage[];
    heartbeat?: string;
    /** the Temporal server (default: the shared stack's) */
    address?: string;
  },
): string {
  const file = path.join(dir, `${uniqueId('cfg')}.yaml`);
  writeFileSync(
    file,
    stringify({
      api_version: 'trainflow/v1',
      metadata: { name: opts.name },
      storage: { uri: `s3://${BUCKET}/${opts.storagePrefix}`, endpoint: S3_ENDPOINT, force_path_style: true },
      temporal: { address: opts.address ?? TEMPORAL_ADDRESS, task_queue: opts.taskQueue },
      defaults: {
        heartbeat_timeout: opts.heartbeat ?? '10s',
        retry: { max_attempts: 4, initial_interval: '1s', max_interval: '5s', backoff: 2 },
      },
      pools: { default: { launcher: 'local', task_queue: `${opts.taskQueue}-jobs` } },
      model: { init: { preset: 'tiny' } },
      stages: opts.stages.map((s) => ({
        name: s.name,
        kind: 'midtrain',
        data: { sources: [{ path: 's3://trainflow/unused.jsonl' }] },
        train: { steps: s.steps },
        checkpoint: { every: s.every },
        job: {
          command: FAKE_JOB.command,
          env: { ...FAKE_JOB.env, FAKE_STEP_MS: String(s.stepMs), FAKE_STATUS_MS: '300', ...s.env },
        },
      })),
    }),
  );
  return file;
}

export interface RunningCli {
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
  kill(): void;
}

/** Starts `trainflow run FILE --id ID` with piped output; `exited` resolves to its exit code. */
export function spawnRun(file: string, id: string, dataDir: string, env: NodeJS.ProcessEnv = {}): RunningCli {
  const child = spawn(process.execPath, [path.join(repoRoot, 'bin/trainflow.js'), 'run', file, '--id', id], {
    cwd: repoRoot,
    env: {
      ...process.env,
      TRAINFLOW_DATA_DIR: dataDir,
      TEMPORAL_ADDRESS,
      NODE_NO_WARNINGS: '1',
      TRAINFLOW_LOG_LEVEL: 'info',
      TRAINFLOW_LOG_FORMAT: 'pretty',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      // Kept beside the run's job logs, to read when a test fails.
      writeFileSync(path.join(dataDir, `${id}.stdout`), out);
      writeFileSync(path.join(dataDir, `${id}.stderr`), err);
      resolve(code);
    }),
  );
  return {
    stdout: () => out,
    stderr: () => err,
    exited,
    kill: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/** `trainflow run FILE --id ID` to its end, warnings only: its exit code and the tail of its output. */
export async function runToEnd(file: string, id: string): Promise<{ code: number | null; tail: string }> {
  const run = spawnRun(file, id, dataDir(), { TRAINFLOW_LOG_LEVEL: 'warn' });
  const code = await run.exited;
  return { code, tail: (run.stdout() + run.stderr()).slice(-8000) };
}
