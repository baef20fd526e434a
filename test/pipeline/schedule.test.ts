// A schedule triggered by hand starts a pipeline run whose config carries the scheduled time (the data
// snapshot), and `model.init.from_pipeline` takes the final checkpoint of another pipeline's latest success.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { jobName } from '../../src/launchers/types';
import { startPipeline } from '../../src/pipeline/client';
import { createSchedule, scheduleRuns } from '../../src/pipeline/schedules';
import type { JobSpec } from '../../src/contract/job';
import type { PipelineStatus } from '../../src/pipeline/status';
import {
  BUCKET,
  connectTestClient,
  FAKE_JOB,
  makeConfig,
  S3_ENDPOINT,
  startWorkers,
  TEMPORAL_ADDRESS,
  uniqueId,
  useDataDir,
  waitFor,
} from './helpers';

const dataDir = useDataDir();

test('a schedule triggered by hand runs the pipeline with the scheduled time in its config', async () => {
  const taskQueue = uniqueId('tq');
  const storagePrefix = `tests/${uniqueId('sched')}`;
  const client = await connectTestClient();
  // The base pipeline whose latest successful run the scheduled retrain starts from.
  const base = makeConfig({
    name: 'base-model',
    taskQueue,
    storagePrefix,
    stages: [{ name: 'pretrain', steps: 3, every: 3 }],
  });
  const workers = await startWorkers(base);
  const scheduleName = uniqueId('nightly');
  try {
    const baseRun = await (await startPipeline(client, base, { id: uniqueId('base') })).result();

    const file = path.join(dataDir, 'retrain.yaml');
    writeFileSync(
      file,
      stringify({
        api_version: 'trainflow/v1',
        metadata: { name: 'retrain' },
        storage: { uri: `s3://${BUCKET}/${storagePrefix}`, endpoint: S3_ENDPOINT, force_path_style: true },
        temporal: { address: TEMPORAL_ADDRESS, task_queue: taskQueue },
        defaults: { heartbeat_timeout: '5s', retry: { max_attempts: 2, initial_interval: '200ms' } },
        pools: { default: { launcher: 'local', task_queue: `${taskQueue}-jobs` } },
        model: { init: { from_pipeline: 'base-model' } },
        schedule: { cron: '0 3 * * *', overlap: 'skip' },
        stages: [
          {
            name: 'refresh',
            kind: 'midtrain',
            data: { sources: [{ path: `s3://${BUCKET}/snapshots/{{scheduled_date}}/code.jsonl` }] },
            train: { steps: 2 },
            checkpoint: { every: 2 },
            job: { command: FAKE_JOB.command, env: { ...FAKE_JOB.env, FAKE_STEP_MS: '10' } },
          },
        ],
      }),
    );
    await createSchedule(client, { name: scheduleName, configFile: file });
    const triggeredAt = new Date();
    await client.schedule.getHandle(scheduleName).trigger();
    const runId = await waitFor(
      'the schedule to start a run',
      async () => (await scheduleRuns(client, scheduleName))[0],
    );
    expect(runId.startsWith(`${scheduleName}-`)).toBe(true);
    const status = (await client.workflow.getHandle(runId).result()) as PipelineStatus;
    expect(status.state).toBe('completed');
    expect(status.stages[0].inputCheckpoint).toBe(baseRun.stages[0].outputCheckpoint);

    const spec = JSON.parse(
      readFileSync(path.join(dataDir, 'jobs', jobName(runId, 'refresh'), 'spec.json'), 'utf8'),
    ) as JobSpec;
    const sources = (spec.stage.data as { sources: { path: string }[] }).sources;
    expect(sources[0].path).toBe(
      `s3://${BUCKET}/snapshots/${triggeredAt.toISOString().slice(0, 10)}/code.jsonl`,
    );
    expect(spec.input_checkpoint).toBe(baseRun.stages[0].outputCheckpoint);
  } finally {
    await client.schedule
      .getHandle(scheduleName)
      .delete()
      .catch(() => undefined);
    await workers.stop();
    await client.connection.close();
  }
});
