// A three-stage pipeline on the real local stack: completes, chains outputs, commits every checkpoint and the
// manifest; the status query reports every stage.
import { createHash } from 'node:crypto';
import { stageHash } from '../../src/pipeline/identity';
import { jobName } from '../../src/launchers/types';
import { CheckpointStore } from '../../src/storage/checkpoints';
import { ManifestStore, stagePrefix } from '../../src/storage/manifest';
import { joinUri, ObjectStore } from '../../src/storage/s3';
import { trainingPipeline } from '../../workflows';
import {
  connectTestClient,
  executedSteps,
  jobThreads,
  makeConfig,
  S3_ENDPOINT,
  startWorkers,
  uniqueId,
  useDataDir,
} from './helpers';

const dataDir = useDataDir();
const store = new ObjectStore({ endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true });

test('a three-stage pipeline completes, chains outputs and commits manifest and checkpoints', async () => {
  const id = uniqueId('three');
  const config = makeConfig({
    taskQueue: uniqueId('tq'),
    storagePrefix: `tests/${id}`,
    stages: [
      { name: 'mid-1', steps: 6, every: 3 },
      { name: 'mid-2', steps: 4, every: 2, cpus: 3 },
      { name: 'sft', steps: 3, every: 2 },
    ],
  });
  const client = await connectTestClient();
  const workers = await startWorkers(config);
  try {
    const handle = await client.workflow.start(trainingPipeline, {
      workflowId: id,
      taskQueue: config.temporal.task_queue,
      args: [{ config }],
    });
    const status = await handle.result();
    expect(status.state).toBe('completed');
    expect(status.stages.map((s) => s.state)).toEqual(['completed', 'completed', 'completed']);
    const query = await handle.query<typeof status>('status');
    expect(query.stages.map((s) => s.outputCheckpoint)).toEqual(status.stages.map((s) => s.outputCheckpoint));

    // Outputs chain: each stage's input is the previous output; the first starts from the preset (null).
    expect(status.stages[0].inputCheckpoint).toBeNull();
    expect(status.stages[1].inputCheckpoint).toBe(status.stages[0].outputCheckpoint);
    expect(status.stages[2].inputCheckpoint).toBe(status.stages[1].outputCheckpoint);
    const checkpoints = new CheckpointStore(store);
    const steps = [6, 4, 3];
    let weights = createHash('sha256').update('init:1234').digest('hex');
    for (const [i, stage] of config.stages.entries()) {
      const prefix = stagePrefix(config.storage.uri, id, stage.name);
      expect(status.stages[i].outputCheckpoint).toBe(`${prefix}/step-${String(steps[i]).padStart(6, '0')}`);
      const latest = await checkpoints.latest(prefix, 'full');
      expect(latest?.final).toBe(true);
      // The fake job's weights are a hash chain through every step of every stage: chaining is exact.
      for (let s = 1; s <= steps[i]; s++)
        weights = createHash('sha256').update(`${weights}:${s}`).digest('hex');
      const bytes = await store.getBytes(joinUri(latest!.uri, 'model.safetensors'));
      expect(bytes?.toString()).toBe(weights);
      // Each stage ran exactly once through its steps.
      expect(executedSteps(dataDir, jobName(id, stage.name))).toEqual(
        Array.from({ length: steps[i] }, (_, k) => k + 1),
      );
      // Retention (keep_last 2): only committed steps remain, at most 2 of them, the final among them.
      const { committed, uncommitted } = await checkpoints.scan(prefix);
      expect(uncommitted).toEqual([]);
      expect(committed.length).toBeLessThanOrEqual(2);
      expect(committed.at(-1)).toBe(steps[i]);
    }

    // resources.cpus_per_node sets the job's CPU threads (OMP_NUM_THREADS, read by PyTorch).
    expect(jobThreads(dataDir, jobName(id, 'mid-2'))).toEqual(['3']);

    const manifest = await new ManifestStore(store, config.storage.uri).read(id);
    expect(manifest?.state).toBe('completed');
    expect(Object.keys(manifest!.stages).sort()).toEqual(['mid-1', 'mid-2', 'sft']);
    for (const [i, stage] of config.stages.entries()) {
      expect(manifest!.stages[stage.name].output_checkpoint).toBe(status.stages[i].outputCheckpoint);
      expect(manifest!.stages[stage.name].stage_hash).toBe(stageHash(config, i));
    }
  } finally {
    await workers.stop();
    await client.connection.close();
  }
});
