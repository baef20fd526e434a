// kill -9 of the launcher worker mid-stage: the job (its own process group) lives on; after the heartbeat
// timeout the activity is retried on another worker, which re-attaches to the live job instead of launching a
// second copy, and the stage completes with every step run exactly once.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { jobName } from '../../src/launchers/types';
import { startPipeline } from '../../src/pipeline/client';
import { repoRoot } from '../../src/pipeline/paths';
import type { PipelineStatus } from '../../src/pipeline/status';
import { createControlWorker } from '../../workers/build';
import {
  connectTestClient,
  executedSteps,
  makeConfig,
  startLauncherWorker,
  TEMPORAL_ADDRESS,
  uniqueId,
  useDataDir,
  waitFor,
} from './helpers';

const dataDir = useDataDir();

function spawnLauncherWorker(taskQueue: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--require', require.resolve('tsx/cjs'), path.join(repoRoot, 'workers/launcher.ts')],
    {
      env: {
        ...process.env,
        TRAINFLOW_TASK_QUEUE: taskQueue,
        TEMPORAL_ADDRESS,
        TRAINFLOW_POLL_MS: '100',
        TRAINFLOW_PROGRESS_MS: '300',
        NODE_NO_WARNINGS: '1',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('launcher worker ready')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`launcher worker exited early with code ${code}`)));
  });
}

test('kill -9 of the launcher worker mid-stage: another worker takes the stage over and it completes', async () => {
  const id = uniqueId('kill-worker');
  const config = makeConfig({
    taskQueue: uniqueId('tq'),
    storagePrefix: `tests/${id}`,
    heartbeatTimeout: '3s',
    stages: [{ name: 'long', steps: 80, every: 10, stepMs: 100 }],
  });
  const client = await connectTestClient();
  const connection = await NativeConnection.connect({ address: TEMPORAL_ADDRESS });
  const control = await createControlWorker({
    connection,
    taskQueue: config.temporal.task_queue,
    shutdownGraceTime: '2s',
  });
  const controlRun = control.run();
  const doomed = await spawnLauncherWorker(config.pools.default.task_queue);
  let replacement: Worker | undefined;
  let replacementRun: Promise<void> | undefined;
  try {
    const handle = await startPipeline(client, config, { id });
    await waitFor(
      'the job to reach step 10',
      async () => (await handle.query<PipelineStatus>('status')).stages[0].step >= 10 || undefined,
    );
    doomed.kill('SIGKILL');
    await new Promise((resolve) => doomed.once('exit', resolve));
    const record = JSON.parse(
      readFileSync(path.join(dataDir, 'jobs', jobName(id, 'long'), 'job.json'), 'utf8'),
    ) as { pgid: number };
    // The job survives its worker.
    expect(() => process.kill(-record.pgid, 0)).not.toThrow();

    replacement = await startLauncherWorker(connection, config);
    replacementRun = replacement.run();
    const status = await handle.result();
    expect(status.state).toBe('completed');
    expect(status.stages[0].attempt).toBe(2); // the second attempt, on the replacement worker
    const log = readFileSync(path.join(dataDir, 'jobs', jobName(id, 'long'), 'job.log'), 'utf8');
    expect([...log.matchAll(/launching/g)].length).toBe(1); // re-attached: never a second copy
    expect(executedSteps(dataDir, jobName(id, 'long'))).toEqual(Array.from({ length: 80 }, (_, k) => k + 1));
  } finally {
    if (!doomed.killed) doomed.kill('SIGKILL');
    replacement?.shutdown();
    control.shutdown();
    await Promise.allSettled([controlRun, replacementRun]);
    await connection.close();
    await client.connection.close();
  }
});
