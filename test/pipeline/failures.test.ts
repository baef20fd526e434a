// Failures on the real local stack: a job killed with SIGKILL resumes from its last committed checkpoint; a
// cancelled pipeline leaves no process of its job behind; bad input fails at once, and `resume` with the fixed
// config finishes without relaunching completed stages (and refuses a changed completed stage).
import { WorkflowFailedError } from '@temporalio/client';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { groupMembers } from '../../src/launchers/local';
import { jobName } from '../../src/launchers/types';
import { resumePipeline, startPipeline } from '../../src/pipeline/client';
import type { JobStatus } from '../../src/contract/job';
import type { PipelineStatus } from '../../src/pipeline/status';
import { ManifestStore, stagePrefix } from '../../src/storage/manifest';
import { joinUri, ObjectStore } from '../../src/storage/s3';
import {
  connectTestClient,
  executedSteps,
  makeConfig,
  S3_ENDPOINT,
  startWorkers,
  uniqueId,
  useDataDir,
  waitFor,
  type RunningWorkers,
} from './helpers';
import type { Client } from '@temporalio/client';

const dataDir = useDataDir();
const store = new ObjectStore({ endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true });
let client: Client;
let workers: RunningWorkers | undefined;

beforeAll(async () => {
  client = await connectTestClient();
});
afterEach(async () => {
  await workers?.stop();
  workers = undefined;
});
afterAll(async () => {
  await client.connection.close();
});

function launches(job: string): number {
  const log = readFileSync(path.join(dataDir, 'jobs', job, 'job.log'), 'utf8');
  return [...log.matchAll(/^=== trainflow: attempt \d+ launching/gm)].length;
}

test('kill -9 of the job mid-stage: the activity retries and the job resumes from the last committed checkpoint', async () => {
  const id = uniqueId('kill-job');
  const config = makeConfig({
    taskQueue: uniqueId('tq'),
    storagePrefix: `tests/${id}`,
    stages: [{ name: 'long', steps: 40, every: 5, stepMs: 60 }],
  });
  workers = await startWorkers(config);
  const handle = await startPipeline(client, config, { id });
  const statusUri = joinUri(stagePrefix(config.storage.uri, id, 'long'), 'status.json');
  // Kill between checkpoints (step 12 or 13: the last commit was step 10).
  const running = await waitFor('the job to pass step 11', async () => {
    const s = await store.getJson<JobStatus>(statusUri);
    return s && s.step >= 11 && s.step % 5 !== 0 ? s : undefined;
  });
  process.kill(running.pid, 'SIGKILL');

  const status = await handle.result();
  expect(status.state).toBe('completed');
  expect(status.stages[0].attempt).toBe(2);
  const steps = executedSteps(dataDir, jobName(id, 'long'));
  // Attempt 1 ran 1..k, attempt 2 resumed after the last committed step c ≤ k and ran c+1..40.
  const resumeAt = steps.findIndex((s, i) => i > 0 && s <= steps[i - 1]);
  expect(resumeAt).toBeGreaterThan(0);
  const killedAfter = steps[resumeAt - 1];
  const resumedFrom = steps[resumeAt] - 1;
  expect(resumedFrom % 5).toBe(0);
  expect(killedAfter - resumedFrom).toBeLessThanOrEqual(5); // at most one checkpoint interval re-run
  expect(steps.slice(resumeAt)).toEqual(
    Array.from({ length: 40 - resumedFrom }, (_, k) => resumedFrom + 1 + k),
  );
  // The resumed run ends with exactly the weights of one that never stopped.
  let w = createHash('sha256').update('init:1234').digest('hex');
  for (let s = 1; s <= 40; s++) w = createHash('sha256').update(`${w}:${s}`).digest('hex');
  expect(
    (await store.getBytes(joinUri(status.stages[0].outputCheckpoint!, 'model.safetensors')))?.toString(),
  ).toBe(w);
});

test('cancel: the job’s whole process group is gone within seconds', async () => {
  const id = uniqueId('cancel');
  const config = makeConfig({
    taskQueue: uniqueId('tq'),
    storagePrefix: `tests/${id}`,
    stages: [{ name: 'forever', steps: 100000, every: 1000, stepMs: 50 }],
  });
  workers = await startWorkers(config);
  const handle = await startPipeline(client, config, { id });
  const recordPath = path.join(dataDir, 'jobs', jobName(id, 'forever'), 'job.json');
  const record = await waitFor('the job to start', () => {
    try {
      return JSON.parse(readFileSync(recordPath, 'utf8')) as { pgid: number };
    } catch {
      return undefined;
    }
  });
  await waitFor(
    'the job to be running',
    async () => (await handle.query<PipelineStatus>('status')).stages[0].step > 2 || undefined,
  );
  expect(groupMembers(record.pgid).length).toBeGreaterThanOrEqual(2); // the wrapper and the job
  const cancelledAt = Date.now();
  await handle.cancel();
  await expect(handle.result()).rejects.toThrow(WorkflowFailedError);
  // The workflow reports cancelled only after the activity stopped the group (WAIT_CANCELLATION_COMPLETED).
  expect(groupMembers(record.pgid)).toEqual([]);
  expect(Date.now() - cancelledAt).toBeLessThan(10_000);
  const manifest = await new ManifestStore(store, config.storage.uri).read(id);
  expect(manifest?.state).toBe('cancelled');
  const status = await handle.query<PipelineStatus>('status');
  expect(status.state).toBe('cancelled');
  expect(status.stages[0].state).toBe('cancelled');
});

test('bad input fails the pipeline at once; resume after the fix launches no job for completed stages', async () => {
  const id = uniqueId('bad-input');
  const base = { taskQueue: uniqueId('tq'), storagePrefix: `tests/${id}` };
  const broken = makeConfig({
    ...base,
    stages: [
      { name: 'first', steps: 4, every: 2 },
      {
        name: 'second',
        steps: 6,
        every: 2,
        env: { FAKE_BAD_INPUT: 'data shard 7 is missing' },
        maxAttempts: 5,
      },
      { name: 'third', steps: 3, every: 3 },
    ],
  });
  workers = await startWorkers(broken);
  const started = Date.now();
  const failed = await startPipeline(client, broken, { id });
  const error = await failed.result().then(
    () => undefined,
    (err: unknown) => err as Error,
  );
  expect(error).toBeInstanceOf(WorkflowFailedError);
  expect(String((error as WorkflowFailedError).cause?.message)).toContain(
    'bad input: data shard 7 is missing',
  );
  expect(Date.now() - started).toBeLessThan(30_000);
  expect(launches(jobName(id, 'second'))).toBe(1); // no retries
  const failedStatus = await failed.query<PipelineStatus>('status');
  expect(failedStatus.stages.map((s) => s.state)).toEqual(['completed', 'failed', 'pending']);

  // A changed completed stage is refused, with the difference shown.
  const changed = makeConfig({
    ...base,
    stages: [
      { name: 'first', steps: 5, every: 2 },
      { name: 'second', steps: 6, every: 2 },
      { name: 'third', steps: 3, every: 3 },
    ],
  });
  await expect(resumePipeline(client, id, { config: changed })).rejects.toThrow(
    /stage first:\n.*stage\.train\.steps: 4 → 5/,
  );

  const fixed = makeConfig({
    ...base,
    stages: [
      { name: 'first', steps: 4, every: 2 },
      { name: 'second', steps: 6, every: 2 },
      { name: 'third', steps: 3, every: 3 },
    ],
  });
  const resumed = await resumePipeline(client, id, { config: fixed });
  const status = await resumed.result();
  expect(status.state).toBe('completed');
  expect(status.stages.map((s) => s.state)).toEqual(['skipped', 'completed', 'completed']);
  expect(launches(jobName(id, 'first'))).toBe(1); // the completed stage launched no job on resume
  expect(launches(jobName(id, 'second'))).toBe(2);
  expect(status.stages[1].inputCheckpoint).toBe(status.stages[0].outputCheckpoint);
  const manifest = await new ManifestStore(store, fixed.storage.uri).read(id);
  expect(manifest?.state).toBe('completed');
  expect(Object.keys(manifest!.stages).sort()).toEqual(['first', 'second', 'third']);
});
