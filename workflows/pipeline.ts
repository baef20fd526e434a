// trainingPipeline: one run of a pipeline. Prepares the run (config, manifest, init checkpoint), then runs the
// stages in order as child stageWorkflows, each taking the previous stage's output checkpoint as input.
// Keeps a status object for the `status` query, kept current by the job activity's `stageProgress` signals.
// Does no I/O itself; activities do.
import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  ChildWorkflowFailure,
  defineQuery,
  defineSignal,
  executeChild,
  isCancellation,
  patched,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { ControlActivities } from '../activities';
import type { PipelineConfig } from '../src/config/schema';
import { PIPELINE_ATTRIBUTE, STAGE_ATTRIBUTE, STATE_ATTRIBUTE } from '../src/pipeline/search-attributes';
import type { PipelineState, PipelineStatus, StageProgress, StageStatus } from '../src/pipeline/status';
import { NON_RETRYABLE, stageWorkflow } from './stage';

export interface PipelineInput {
  /** A resolved config (start, resume), or the YAML source to parse at run time (schedules). */
  config?: PipelineConfig;
  source?: { yaml: string; file: string };
  resume?: { fromStage?: string; force?: boolean } | null;
}

export const statusQuery = defineQuery<PipelineStatus>('status');
export const stageProgressSignal = defineSignal<[StageProgress]>('stageProgress');

const control = proxyActivities<ControlActivities>({
  startToCloseTimeout: '2 minutes',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: {
    maximumAttempts: 10,
    initialInterval: '1s',
    maximumInterval: '30s',
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
});

/** The time a schedule fired this run at (Temporal sets the TemporalScheduledStartTime search attribute). */
function scheduledTime(): string | null {
  const attrs = workflowInfo().searchAttributes as Record<string, unknown[] | undefined> | undefined;
  const value = attrs?.TemporalScheduledStartTime?.[0];
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'string') return value;
  return null;
}

/**
 * Keeps the run's TrainflowStage/TrainflowState search attributes current — only for a run started with them
 * (a namespace without them registered would fail every workflow task on the upsert) and behind patched(), so
 * histories recorded before the attributes replay without the upserts.
 */
function searchAttributeUpdater(): {
  stage(name: string): void;
  state(state: PipelineState): void;
} {
  const enabled =
    patched('search-attributes') &&
    workflowInfo().typedSearchAttributes.get(PIPELINE_ATTRIBUTE) !== undefined;
  return {
    stage: (name) => enabled && upsertSearchAttributes([{ key: STAGE_ATTRIBUTE, value: name }]),
    state: (state) => enabled && upsertSearchAttributes([{ key: STATE_ATTRIBUTE, value: state }]),
  };
}

function describe(err: unknown): string {
  let e: unknown = err;
  // Unwrap ChildWorkflowFailure → ActivityFailure → ApplicationFailure to the message a user can act on.
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(err);
}

export async function trainingPipeline(input: PipelineInput): Promise<PipelineStatus> {
  const info = workflowInfo();
  const pipelineId = info.workflowId;
  const status: PipelineStatus = {
    pipelineId,
    name: input.config?.metadata.name ?? '',
    runId: info.runId,
    state: 'running',
    configHash: '',
    startedAt: new Date().toISOString(),
    endedAt: null,
    error: null,
    stages: (input.config?.stages ?? []).map((s) => emptyStage(s.name, s.kind)),
  };
  const searchAttributes = searchAttributeUpdater();
  setHandler(statusQuery, () => status);
  setHandler(stageProgressSignal, (p) => {
    const stage = status.stages.find((s) => s.name === p.stage);
    if (!stage || stage.state !== 'running') return;
    stage.attempt = p.attempt;
    stage.step = p.step;
    stage.totalSteps = p.totalSteps;
    stage.metrics = p.metrics;
    stage.lastCheckpoint = p.lastCheckpoint;
    stage.jobName = p.jobName;
  });

  let config: PipelineConfig | undefined;
  try {
    const prepared = await control.preparePipeline({
      pipelineId,
      runId: info.runId,
      config: input.config,
      source: input.source,
      scheduledTime: scheduledTime(),
      resume: input.resume ?? null,
    });
    config = prepared.config;
    status.name = config.metadata.name;
    status.configHash = prepared.configHash;
    status.stages = config.stages.map((s) => emptyStage(s.name, s.kind));

    let previous = prepared.initCheckpoint;
    // curate stages' commits by stage name: what a later stage's tasks.from reads; weights flow past them
    const curated: Record<string, string> = {};
    const passOn = (kind: string, name: string, output: string) => {
      if (kind === 'curate') curated[name] = output;
      else previous = output;
    };
    for (const [index, stageConfig] of config.stages.entries()) {
      const stage = status.stages[index];
      stage.inputCheckpoint = previous;
      const done = prepared.completed[stageConfig.name];
      if (done) {
        // Completed by an earlier run of this pipeline (resume): no job, its recorded output carries on.
        Object.assign(stage, {
          state: 'skipped',
          step: done.step,
          totalSteps: done.step,
          metrics: done.metrics,
        });
        stage.outputCheckpoint = done.outputCheckpoint;
        passOn(stageConfig.kind, stageConfig.name, done.outputCheckpoint);
        continue;
      }
      stage.state = 'running';
      searchAttributes.stage(stageConfig.name);
      stage.startedAt = new Date().toISOString();
      stage.totalSteps = stageConfig.train?.steps ?? 1;
      try {
        const result = await executeChild(stageWorkflow, {
          workflowId: `${pipelineId}--${stageConfig.name}`,
          args: [
            {
              config: withCuratedTasks(config, index, curated),
              pipelineId,
              runId: info.runId,
              pipelineWorkflowId: pipelineId,
              stageIndex: index,
              inputCheckpoint: previous,
            },
          ],
        });
        Object.assign(stage, {
          state: 'completed',
          step: result.step,
          metrics: result.metrics,
          attempt: result.attempt,
        });
        stage.outputCheckpoint = result.outputCheckpoint;
        stage.lastCheckpoint = result.outputCheckpoint;
        stage.endedAt = new Date().toISOString();
        passOn(stageConfig.kind, stageConfig.name, result.outputCheckpoint);
      } catch (err) {
        stage.state = isCancellation(err) ? 'cancelled' : 'failed';
        stage.error = describe(err);
        stage.endedAt = new Date().toISOString();
        throw err;
      }
    }
    status.state = 'completed';
    status.endedAt = new Date().toISOString();
    await control.finishPipeline({ config, pipelineId, state: 'completed' });
    searchAttributes.state('completed');
    return status;
  } catch (err) {
    status.state = isCancellation(err) ? 'cancelled' : 'failed';
    status.error = describe(err);
    status.endedAt = new Date().toISOString();
    const finalConfig = config;
    if (finalConfig) {
      // Record the outcome even when cancelled: a cancelled scope cannot schedule activities, so detach.
      await CancellationScope.nonCancellable(() =>
        control.finishPipeline({ config: finalConfig, pipelineId, state: status.state }),
      );
    }
    searchAttributes.state(status.state);
    if (isCancellation(err)) throw err;
    if (err instanceof ChildWorkflowFailure || err instanceof ApplicationFailure) {
      throw ApplicationFailure.nonRetryable(status.error, 'PipelineFailed');
    }
    throw err;
  }
}

/**
 * The config a stage's job is rendered from: what names a curate stage NAME — `tasks: {family: swe, from: NAME}`
 * and `data.sources[]: {kind: gold_trajectories, from: NAME}` — gets path = NAME's committed tasks.jsonl
 * (validate checked NAME is an earlier curate stage, so it has run). The trainer fetches that commit, verified,
 * before the stage starts (stages/curate.py resolve_curated_tasks).
 */
export function withCuratedTasks(
  config: PipelineConfig,
  index: number,
  curated: Record<string, string>,
): PipelineConfig {
  const stage = config.stages[index];
  const tasksFrom = stage.tasks?.from;
  const sources = stage.data?.sources ?? [];
  if (tasksFrom === undefined && !sources.some((s) => s.from !== undefined)) return config;
  const tasksFile = (from: string, field: string) => {
    const commit = curated[from];
    if (commit === undefined) {
      throw ApplicationFailure.nonRetryable(
        `stages.${stage.name}.${field}: curate stage ${from} has no committed output in this run`,
        'BadInput',
      );
    }
    return `${commit.replace(/\/+$/, '')}/tasks.jsonl`;
  };
  const tasks =
    stage.tasks && tasksFrom !== undefined
      ? { ...stage.tasks, path: tasksFile(tasksFrom, 'tasks.from') }
      : stage.tasks;
  const data = stage.data && {
    ...stage.data,
    sources: sources.map((src, j) =>
      src.from === undefined ? src : { ...src, path: tasksFile(src.from, `data.sources[${j}].from`) },
    ),
  };
  const stages = config.stages.map((s, i) => (i === index ? { ...s, tasks, data } : s));
  return { ...config, stages };
}

function emptyStage(name: string, kind: string): StageStatus {
  return {
    name,
    kind,
    state: 'pending',
    attempt: 0,
    step: 0,
    totalSteps: 0,
    metrics: {},
    inputCheckpoint: null,
    lastCheckpoint: null,
    outputCheckpoint: null,
    jobName: null,
    startedAt: null,
    endedAt: null,
    error: null,
  };
}
