// A launcher worker: the job activity for one pool, on that pool's task queue. Thin: see workers/build.ts.
// Env: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TRAINFLOW_TASK_QUEUE (the pool's queue, default
// trainflow-pool-default), TRAINFLOW_JOB_COMMAND (JSON argv replacing the trainer command, for tests).
// On SIGTERM it stops taking work; jobs it watches keep running and the next attempt re-attaches to them.
import { createLauncherWorker, jobCommandFromEnv } from './build';
import { connectWorker } from '../src/temporal/connection';

async function main(): Promise<void> {
  const connection = await connectWorker();
  const worker = await createLauncherWorker({
    connection,
    namespace: process.env.TEMPORAL_NAMESPACE ?? 'default',
    taskQueue: process.env.TRAINFLOW_TASK_QUEUE ?? 'trainflow-pool-default',
    job: {
      command: jobCommandFromEnv(),
      pollMs: process.env.TRAINFLOW_POLL_MS ? Number(process.env.TRAINFLOW_POLL_MS) : undefined,
      progressMs: process.env.TRAINFLOW_PROGRESS_MS ? Number(process.env.TRAINFLOW_PROGRESS_MS) : undefined,
    },
  });
  process.stdout.write(`launcher worker ready on ${worker.options.taskQueue}\n`);
  await worker.run();
  await connection.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`launcher worker: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
