// The control worker: workflows and light activities, on the control task queue. Thin: see workers/build.ts.
// Env: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TRAINFLOW_TASK_QUEUE (default trainflow). Stops on SIGTERM/SIGINT
// after finishing in-flight tasks (Worker.run handles the signals).
import { createControlWorker } from './build';
import { connectWorker } from '../src/temporal/connection';

async function main(): Promise<void> {
  const connection = await connectWorker();
  const worker = await createControlWorker({
    connection,
    namespace: process.env.TEMPORAL_NAMESPACE ?? 'default',
    taskQueue: process.env.TRAINFLOW_TASK_QUEUE ?? 'trainflow',
  });
  await worker.run();
  await connection.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`control worker: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
