// The command line end to end, as a user runs it (`node bin/trainflow.js …` as subprocesses) on the local
// stack: `run` a two-stage pipeline with the fake job, then `status --json`, `list`, `logs`; and the one-sentence
// errors for an unreachable Temporal server or S3 endpoint.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { repoRoot } from '../../src/pipeline/paths';
import type { PipelineStatus } from '../../src/pipeline/status';
import { BUCKET, FAKE_JOB, S3_ENDPOINT, TEMPORAL_ADDRESS, uniqueId, useDataDir } from './helpers';

const dataDir = useDataDir();

function trainflow(...args: string[]) {
  const run = spawnSync(process.execPath, [path.join(repoRoot, 'bin/trainflow.js'), ...args], {
    cwd: repoRoot,
    env: {
      ...process.env,
      TRAINFLOW_DATA_DIR: dataDir,
      TEMPORAL_ADDRESS,
      NODE_NO_WARNINGS: '1',
      TRAINFLOW_LOG_LEVEL: 'warn',
    },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}

function writeConfig(opts: { taskQueue: string; storageEndpoint?: string; address?: string }): string {
  const file = path.join(dataDir, `${uniqueId('cfg')}.yaml`);
  writeFileSync(
    file,
    stringify({
      api_version: 'trainflow/v1',
      metadata: { name: 'cli-demo' },
      storage: {
        uri: `s3://${BUCKET}/tests/${uniqueId('cli')}`,
        endpoint: opts.storageEndpoint ?? S3_ENDPOINT,
        force_path_style: true,
      },
      temporal: { address: opts.address ?? TEMPORAL_ADDRESS, task_queue: opts.taskQueue },
      defaults: { heartbeat_timeout: '10s' },
      pools: { default: { launcher: 'local', task_queue: `${opts.taskQueue}-jobs` } },
      model: { init: { preset: 'tiny' } },
      stages: ['one', 'two'].map((name) => ({
        name,
        kind: 'midtrain',
        data: { sources: [{ path: 's3://trainflow/unused.jsonl' }] },
        train: { steps: 3 },
        checkpoint: { every: 2 },
        job: { command: FAKE_JOB.command, env: { ...FAKE_JOB.env, FAKE_STEP_MS: '10' } },
      })),
    }),
  );
  return file;
}

test('run, status --json, list and logs', () => {
  const id = uniqueId('cli-run');
  const file = writeConfig({ taskQueue: uniqueId('tq') });
  const run = trainflow('run', file, '--id', id);
  expect(run.stderr).toContain(`started pipeline ${id}`);
  expect({
    code: run.code,
    stderr: run.stderr.split('\n').filter((l) => l.startsWith('trainflow:')),
  }).toEqual({ code: 0, stderr: [] });
  expect(run.stdout).toContain(`pipeline ${id} (cli-demo): completed`);

  const status = trainflow('status', id, '--json');
  expect({ code: status.code, stderr: status.stderr }).toEqual({ code: 0, stderr: '' });
  const parsed = JSON.parse(status.stdout) as PipelineStatus;
  expect(parsed.stages.map((s) => [s.name, s.state, s.step])).toEqual([
    ['one', 'completed', 3],
    ['two', 'completed', 3],
  ]);
  const human = trainflow('status', id);
  expect(human.stdout).toMatch(/✓ one\s+midtrain\s+█+\s+3\/3/);
  expect(human.stdout).toContain(`/namespaces/default/workflows/${id}`);

  expect(trainflow('list', '--limit', '200').stdout).toMatch(new RegExp(`${id}\\s+cli-demo\\s+completed`));
  const logs = trainflow('logs', id, 'two');
  expect(logs.stdout).toMatch(/^FAKE_STEP 3$/m);
});

test('an unreachable Temporal server or S3 endpoint is one sentence with the fix', () => {
  const noTemporal = trainflow('status', 'nothing', '--address', '127.0.0.1:1');
  expect(noTemporal.code).toBe(1);
  expect(noTemporal.stderr.trim()).toBe(
    'Temporal is unreachable at 127.0.0.1:1: start it with `trainflow dev up`',
  );

  const noS3 = trainflow(
    'start',
    writeConfig({ taskQueue: 'unused', storageEndpoint: 'http://127.0.0.1:1' }),
  );
  expect(noS3.code).toBe(1);
  expect(noS3.stderr.trim()).toBe(
    'S3 is unreachable at http://127.0.0.1:1: start it with `trainflow dev up` (or fix storage.endpoint in the config).',
  );
});
