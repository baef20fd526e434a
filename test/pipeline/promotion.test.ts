// Promotion through a self-chaining scheduled retrain (`model.init: {from_pipeline: <its own name>}`): the first
// run starts from the fallback init; a run is promoted only when its eval stage's pass@1 is at least the promoted
// run's + min_improvement, and `from_pipeline` follows the promoted run, so a worse retrain is not what the next
// one starts from. The fake job stands in for the trainer (its eval reports the pass@1 the test writes).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import type { JobSpec } from '../../src/contract/job';
import { jobName } from '../../src/launchers/types';
import { createSchedule, scheduleRuns } from '../../src/pipeline/schedules';
import type { PipelineStatus } from '../../src/pipeline/status';
import { ManifestStore, type PipelineManifest, type PromotedRun } from '../../src/storage/manifest';
import { ObjectStore } from '../../src/storage/s3';
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

test('a retrain whose eval is worse than the promoted run is not promoted; a better one is; the first starts from the fallback', async () => {
  const taskQueue = uniqueId('tq');
  const storagePrefix = `tests/${uniqueId('promo')}`;
  const storageUri = `s3://${BUCKET}/${storagePrefix}`;
  const name = uniqueId('retrain');
  const metricsFile = path.join(dataDir, 'eval-metrics.json');
  const client = await connectTestClient();
  const workers = await startWorkers(
    makeConfig({ taskQueue, storagePrefix, stages: [{ name: 'x', steps: 1, every: 1 }] }),
  );
  const manifests = new ManifestStore(
    new ObjectStore({ endpoint: S3_ENDPOINT, force_path_style: true }),
    storageUri,
  );
  const job = { command: FAKE_JOB.command, env: { ...FAKE_JOB.env, FAKE_STEP_MS: '10' } };
  const file = path.join(dataDir, 'retrain.yaml');
  writeFileSync(
    file,
    stringify({
      api_version: 'trainflow/v1',
      metadata: { name },
      storage: { uri: storageUri, endpoint: S3_ENDPOINT, force_path_style: true },
      temporal: { address: TEMPORAL_ADDRESS, task_queue: taskQueue },
      defaults: { heartbeat_timeout: '5s', retry: { max_attempts: 2, initial_interval: '200ms' } },
      pools: { default: { launcher: 'local', task_queue: `${taskQueue}-jobs` } },
      model: { init: { from_pipeline: name, fallback: { preset: 'tiny' } } },
      schedule: { cron: '0 3 * * *', overlap: 'skip' },
      promotion: { stage: 'eval', metric: 'pass@1', min_improvement: 0.05 },
      stages: [
        {
          name: 'tune',
          kind: 'midtrain',
          data: { sources: [{ path: 'unused.jsonl' }] },
          train: { steps: 2 },
          checkpoint: { every: 2 },
          job,
        },
        {
          name: 'eval',
          kind: 'eval',
          tasks: { family: 'demo', count: 4 },
          eval: { samples: 4, pass_k: [1, 4] },
          job: { ...job, env: { ...job.env, FAKE_METRICS_FILE: metricsFile } },
        },
      ],
    }),
  );
  const seen = new Set<string>();
  const runWith = async (pass1: number) => {
    writeFileSync(metricsFile, JSON.stringify({ 'pass@1': pass1, 'pass@4': pass1 }));
    await client.schedule.getHandle(name).trigger();
    const runId = await waitFor('the schedule to start a run', async () =>
      (await scheduleRuns(client, name)).find((id) => !seen.has(id)),
    );
    seen.add(runId);
    const status = (await client.workflow.getHandle(runId).result()) as PipelineStatus;
    expect(status.state).toBe('completed');
    const manifest = (await manifests.read(runId)) as PipelineManifest;
    return { runId, status, manifest, promoted: await manifests.readPromotedRun(name) };
  };
  const spec = (runId: string, stage: string) =>
    JSON.parse(
      readFileSync(path.join(dataDir, 'jobs', jobName(runId, stage), 'spec.json'), 'utf8'),
    ) as JobSpec;

  try {
    await createSchedule(client, { name, configFile: file });

    // 1: nothing promoted yet: the fallback preset; the first run with a metric is promoted.
    const first = await runWith(0.5);
    expect(first.status.stages[0].inputCheckpoint).toBeNull();
    expect(spec(first.runId, 'tune').model.init).toMatchObject({ preset: 'tiny' });
    const firstFinal = first.status.stages[0].outputCheckpoint!;
    // the eval stage passes the checkpoint it evaluated on: the run's final checkpoint is the tuned weights
    expect(first.status.stages[1].outputCheckpoint).toBe(firstFinal);
    expect(first.manifest.promotion?.promoted).toBe(true);
    expect(first.promoted).toMatchObject<Partial<PromotedRun>>({
      pipeline_id: first.runId,
      final_checkpoint: firstFinal,
      metric: { stage: 'eval', name: 'pass@1', value: 0.5 },
    });

    // 2: starts from the promoted run; its eval is worse (0.52 < 0.5 + 0.05): not promoted.
    const worse = await runWith(0.52);
    expect(worse.status.stages[0].inputCheckpoint).toBe(firstFinal);
    expect(worse.manifest.promotion).toMatchObject({ promoted: false, value: 0.52, previous: 0.5 });
    expect(worse.promoted?.pipeline_id).toBe(first.runId);
    expect(worse.promoted?.final_checkpoint).toBe(firstFinal);
    // the latest successful run is the worse one, yet from_pipeline does not follow it
    expect((await manifests.readLatestRun(name))?.pipeline_id).toBe(worse.runId);

    // 3: still starts from the first run's checkpoint; better by the margin: promoted.
    const better = await runWith(0.7);
    expect(better.status.stages[0].inputCheckpoint).toBe(firstFinal);
    expect(better.manifest.promotion).toMatchObject({ promoted: true, value: 0.7, previous: 0.5 });
    expect(better.promoted).toMatchObject({
      pipeline_id: better.runId,
      final_checkpoint: better.status.stages[0].outputCheckpoint,
      metric: { stage: 'eval', name: 'pass@1', value: 0.7 },
    });
    expect(better.status.stages[0].outputCheckpoint).not.toBe(firstFinal);
  } finally {
    await client.schedule
      .getHandle(name)
      .delete()
      .catch(() => undefined);
    await workers.stop();
    await client.connection.close();
  }
});
