// Building the two kinds of worker, shared by the worker entry points (workers/*.ts), `trainflow worker`, `trainflow
// run` (in-process) and the tests:
// - the control worker, on the config's temporal.task_queue: the workflows and the light control activities;
// - a launcher worker per pool, on the pool's task queue: the job activity (launches and watches GPU jobs).
import { bundleWorkflowCode, NativeConnection, Worker, type WorkflowBundleOption } from '@temporalio/worker';
import type { Duration } from '@temporalio/common';
import path from 'node:path';
import { createControlActivities } from '../activities/control';
import { createJobActivities, type JobActivityOptions } from '../activities/job';
import { repoRoot } from '../src/pipeline/paths';
import { installTemporalLogging } from '../src/temporal/logging';

// The SDK's logs through pino (one line per failed attempt, life cycle at debug): installed before any
// connection is made.
installTemporalLogging();

export const WORKFLOWS_PATH = path.join(repoRoot, 'workflows', 'index.ts');

let bundle: Promise<WorkflowBundleOption> | undefined;

/** Bundles the workflow code once per process (webpack takes seconds; tests share one bundle). */
export function workflowBundle(): Promise<WorkflowBundleOption> {
  bundle ??= bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quietBundlerLogger }).then((b) => b);
  return bundle;
}

const quietBundlerLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string) => process.stderr.write(`workflow bundler: ${message}\n`),
  error: (message: string) => process.stderr.write(`workflow bundler: ${message}\n`),
};

export interface WorkerBase {
  connection: NativeConnection;
  namespace?: string;
  taskQueue: string;
  /** Seconds a shutting-down worker waits for running activities (SIGTERM → finish or hand over). */
  shutdownGraceTime?: Duration;
}

export async function createControlWorker(options: WorkerBase): Promise<Worker> {
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace ?? 'default',
    taskQueue: options.taskQueue,
    workflowBundle: await workflowBundle(),
    activities: createControlActivities(),
    shutdownGraceTime: options.shutdownGraceTime ?? '10s',
  });
}

export async function createLauncherWorker(
  options: WorkerBase & { job?: JobActivityOptions },
): Promise<Worker> {
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace ?? 'default',
    taskQueue: options.taskQueue,
    activities: createJobActivities(options.job),
    // A job activity only watches its job: a handful at once per host is plenty; shutdown leaves jobs running.
    maxConcurrentActivityTaskExecutions: 16,
    shutdownGraceTime: options.shutdownGraceTime ?? '5s',
  });
}

/** The fake-job command override from TRAINFLOW_JOB_COMMAND (JSON argv), for workers started as processes. */
export function jobCommandFromEnv(): JobActivityOptions['command'] {
  const raw = process.env.TRAINFLOW_JOB_COMMAND;
  if (!raw) return undefined;
  const command = JSON.parse(raw) as string[];
  return { command, cwd: process.env.TRAINFLOW_JOB_CWD ?? repoRoot };
}
