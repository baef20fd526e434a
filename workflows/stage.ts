// stageWorkflow: one stage of a pipeline — run its job on the stage's pool (launcher task queue), check its
// gates, record its output in the manifest, apply retention. Its own history, so a long pipeline's history
// stays small and each stage can be inspected on its own.
import {
  ActivityCancellationType,
  ApplicationFailure,
  patched,
  proxyActivities,
  workflowInfo,
} from '@temporalio/workflow';
import type { ControlActivities, JobActivities, StageJobResult } from '../activities';
import type { PipelineConfig } from '../src/config/schema';

export interface StageWorkflowInput {
  config: PipelineConfig;
  pipelineId: string;
  runId: string;
  pipelineWorkflowId: string;
  stageIndex: number;
  inputCheckpoint: string | null;
}

/** The bad-input failure types: retrying cannot help, so the activity is not retried. */
export const NON_RETRYABLE = ['BadInput', 'ConfigChanged'];

/** Gate check: every gate's metric present and within [min, max]; the failures as sentences. */
export function gateFailures(
  gates: { metric: string; min?: number; max?: number }[],
  metrics: Record<string, number>,
): string[] {
  const out: string[] = [];
  for (const gate of gates) {
    const value = metrics[gate.metric];
    if (value === undefined) out.push(`${gate.metric} was not reported`);
    else if (gate.min !== undefined && value < gate.min)
      out.push(`${gate.metric} = ${value} < min ${gate.min}`);
    else if (gate.max !== undefined && value > gate.max)
      out.push(`${gate.metric} = ${value} > max ${gate.max}`);
  }
  return out;
}

export async function stageWorkflow(input: StageWorkflowInput): Promise<StageJobResult> {
  const { config, stageIndex } = input;
  const stage = config.stages[stageIndex];
  const pool = config.pools[stage.resources.pool];

  // The job activity's options come from the config, so its proxy is built here rather than at module level.
  // WAIT_CANCELLATION_COMPLETED: a cancelled stage is only reported cancelled once the activity has stopped the
  // job's process group — never while a GPU job may still be running.
  const { runStageJob } = proxyActivities<JobActivities>({
    taskQueue: pool.task_queue,
    startToCloseTimeout: stage.start_to_close_timeout,
    heartbeatTimeout: stage.heartbeat_timeout,
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: {
      maximumAttempts: stage.retry.max_attempts,
      initialInterval: stage.retry.initial_interval,
      backoffCoefficient: stage.retry.backoff,
      maximumInterval: stage.retry.max_interval,
      nonRetryableErrorTypes: NON_RETRYABLE,
    },
  });
  // Control activities: short S3 bookkeeping on this workflow's own (control) task queue.
  const control = proxyActivities<ControlActivities>({
    taskQueue: workflowInfo().taskQueue,
    startToCloseTimeout: '2 minutes',
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: {
      maximumAttempts: 10,
      initialInterval: '1s',
      maximumInterval: '30s',
      nonRetryableErrorTypes: NON_RETRYABLE,
    },
  });

  const result = await runStageJob({
    pipelineId: input.pipelineId,
    runId: input.runId,
    pipelineWorkflowId: input.pipelineWorkflowId,
    stageIndex,
    pipelineName: config.metadata.name,
    stage: stage,
    model: config.model,
    tracking: config.tracking,
    storageUri: config.storage.uri,
    storage: {
      endpoint: config.storage.endpoint,
      region: config.storage.region,
      force_path_style: config.storage.force_path_style,
    },
    inputCheckpoint: input.inputCheckpoint,
    launcher: pool.launcher,
  });

  const failures = gateFailures(stage.gates, result.metrics);
  if (failures.length > 0) {
    throw ApplicationFailure.nonRetryable(
      `stage ${stage.name} failed its gates: ${failures.join('; ')}`,
      'GateFailed',
    );
  }
  await control.recordStage({
    config,
    pipelineId: input.pipelineId,
    runId: input.runId,
    stageIndex,
    outputCheckpoint: result.outputCheckpoint,
    step: result.step,
    metrics: result.metrics,
  });
  // Workflow changes go behind patched() (this step is the template): a run whose history was written by
  // code without the step replays without it; the replay test over test/histories guards the rest.
  if (patched('stage-retention')) {
    await control.applyRetention({ config, pipelineId: input.pipelineId, stageIndex });
  }
  return result;
}
