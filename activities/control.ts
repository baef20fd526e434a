// Light activities of the control worker: all of the pipeline's I/O that is not the job itself — reading the
// config (for scheduled runs), the manifest in S3, resolving the init checkpoint, retention. Workflows stay
// free of I/O and call these.
import { ApplicationFailure } from '@temporalio/activity';
import { dirname, resolve } from 'node:path';
import { parseConfig, resolveLocalPaths, substituteVariables } from '../src/config/load';
import type { PipelineConfig } from '../src/config/schema';
import { UserError } from '../src/errors';
import { hashJson } from '../src/pipeline/canonical';
import { completedStageChanges, formatStageChanges, stageHash } from '../src/pipeline/identity';
import { CheckpointStore } from '../src/storage/checkpoints';
import { promoteRun } from '../src/pipeline/promotion';
import {
  ManifestStore,
  stagePrefix,
  type PipelineManifest,
  type PromotionDecision,
} from '../src/storage/manifest';
import { ObjectStore, type StorageEndpoint } from '../src/storage/s3';

export function storageEndpoint(config: PipelineConfig): StorageEndpoint {
  return {
    endpoint: config.storage.endpoint,
    region: config.storage.region,
    force_path_style: config.storage.force_path_style,
  };
}

export interface PrepareInput {
  pipelineId: string;
  runId: string;
  /** A resolved config (from `start`/`resume`), or the YAML source to parse now (a schedule's run). */
  config?: PipelineConfig;
  source?: { yaml: string; file: string };
  /** ISO time the schedule fired at: fills `{{scheduled_time}}` and `{{scheduled_date}}` in the source. */
  scheduledTime?: string | null;
  resume?: { fromStage?: string; force?: boolean } | null;
}

export interface CompletedStage {
  outputCheckpoint: string;
  step: number;
  metrics: Record<string, number>;
}

export interface PreparedPipeline {
  config: PipelineConfig;
  configHash: string;
  completed: Record<string, CompletedStage>;
  /** The first stage's input: a checkpoint URI, or null to start from model.init (a preset). */
  initCheckpoint: string | null;
}

export interface RecordStageInput {
  config: PipelineConfig;
  pipelineId: string;
  runId: string;
  stageIndex: number;
  outputCheckpoint: string;
  step: number;
  metrics: Record<string, number>;
}

function nonRetryable(err: unknown): never {
  if (err instanceof UserError) throw ApplicationFailure.nonRetryable(err.message, 'BadInput');
  throw err;
}

type Init = PipelineConfig['model']['init'];

/**
 * The first stage's input checkpoint (null: the job builds model.init's preset). `from_pipeline` takes that
 * pipeline's promoted run, else (runs from before promotion existed) its latest successful one, else its
 * `fallback` — which then stands for model.init in the jobs' config (`fallback` set in the result).
 */
async function resolveInit(
  manifests: ManifestStore,
  config: PipelineConfig,
): Promise<{ checkpoint: string | null; fallback?: Exclude<Init, { from_pipeline: string }> }> {
  const init = config.model.init;
  if ('checkpoint' in init) return { checkpoint: init.checkpoint };
  if (!('from_pipeline' in init)) return { checkpoint: null };
  const run =
    (await manifests.readPromotedRun(init.from_pipeline)) ??
    (await manifests.readLatestRun(init.from_pipeline));
  const uri = run && (init.stage ? run.stages[init.stage] : run.final_checkpoint);
  if (uri) return { checkpoint: uri };
  if (init.fallback) {
    return {
      checkpoint: 'checkpoint' in init.fallback ? init.fallback.checkpoint : null,
      fallback: init.fallback,
    };
  }
  throw ApplicationFailure.nonRetryable(
    `model.init.from_pipeline: no successful run of pipeline ${init.from_pipeline}${init.stage ? ` with a stage ${init.stage}` : ''} under ${config.storage.uri}; give model.init a fallback ({from_pipeline: ${init.from_pipeline}, fallback: {preset: ...}}) for a first run`,
    'BadInput',
  );
}

export function createControlActivities() {
  async function preparePipeline(input: PrepareInput): Promise<PreparedPipeline> {
    let config: PipelineConfig;
    try {
      if (input.config) config = input.config;
      else if (input.source) {
        const when = input.scheduledTime ? new Date(input.scheduledTime) : new Date();
        const vars = { scheduled_time: when.toISOString(), scheduled_date: when.toISOString().slice(0, 10) };
        const parsed = parseConfig(substituteVariables(input.source.yaml, vars), input.source.file);
        config = resolveLocalPaths(parsed, dirname(resolve(input.source.file)));
      } else throw new UserError('the pipeline input has neither a config nor a config source');
    } catch (err) {
      return nonRetryable(err);
    }
    const endpoint = storageEndpoint(config);
    const manifests = new ManifestStore(new ObjectStore(endpoint), config.storage.uri);
    const configHash = hashJson(config);
    const existing = await manifests.read(input.pipelineId);

    const completed: Record<string, CompletedStage> = {};
    if (existing && !input.resume && Object.keys(existing.stages).length > 0) {
      throw ApplicationFailure.nonRetryable(
        `pipeline ${input.pipelineId} already has completed stages in ${config.storage.uri}; continue it with \`trainflow resume ${input.pipelineId}\` or start with another --id`,
        'BadInput',
      );
    }
    if (existing && input.resume) {
      const fromIndex = input.resume.fromStage
        ? config.stages.findIndex((s) => s.name === input.resume!.fromStage)
        : -1;
      if (input.resume.fromStage && fromIndex < 0) {
        throw ApplicationFailure.nonRetryable(
          `--from ${input.resume.fromStage}: no such stage in the config`,
          'BadInput',
        );
      }
      const keep = (index: number) => fromIndex < 0 || index < fromIndex;
      const done = Object.entries(existing.stages).filter(([name]) => {
        const index = config.stages.findIndex((s) => s.name === name);
        return index >= 0 && keep(index);
      });
      const changes = completedStageChanges(
        existing.config as PipelineConfig,
        config,
        done.map(([name]) => name),
      );
      if (changes.length > 0 && !input.resume.force) {
        throw ApplicationFailure.nonRetryable(
          `the config changed for completed stage(s); rerun them with --from STAGE or pass --force:\n${formatStageChanges(changes)}`,
          'ConfigChanged',
        );
      }
      for (const [name, stage] of done) {
        completed[name] = {
          outputCheckpoint: stage.output_checkpoint,
          step: stage.final_step,
          metrics: stage.metrics,
        };
      }
      // Stages rerun from --from start over: their old checkpoints would otherwise be resumed (and are final).
      if (fromIndex >= 0) {
        const checkpoints = new CheckpointStore(manifests.store);
        for (const stage of config.stages.slice(fromIndex)) {
          await checkpoints.store.deletePrefix(stagePrefix(config.storage.uri, input.pipelineId, stage.name));
          delete existing.stages[stage.name];
        }
        await manifests.write(existing);
      }
    }
    await manifests.open({ pipelineId: input.pipelineId, name: config.metadata.name, configHash, config });

    const init = await resolveInit(manifests, config);
    if (init.fallback) config = { ...config, model: { ...config.model, init: init.fallback } };
    return { config, configHash, completed, initCheckpoint: init.checkpoint };
  }

  async function recordStage(input: RecordStageInput): Promise<void> {
    const { config } = input;
    const manifests = new ManifestStore(new ObjectStore(storageEndpoint(config)), config.storage.uri);
    const stage = config.stages[input.stageIndex];
    await manifests.recordStage(input.pipelineId, stage.name, {
      index: input.stageIndex,
      kind: stage.kind,
      output_checkpoint: input.outputCheckpoint,
      final_step: input.step,
      metrics: input.metrics,
      stage_hash: stageHash(config, input.stageIndex),
      completed_at: new Date().toISOString(),
      run_id: input.runId,
    });
  }

  /** Records the run's outcome; a completed run is then promoted or not (src/pipeline/promotion.ts). */
  async function finishPipeline(input: {
    config: PipelineConfig;
    pipelineId: string;
    state: PipelineManifest['state'];
  }): Promise<PromotionDecision | null> {
    const manifests = new ManifestStore(
      new ObjectStore(storageEndpoint(input.config)),
      input.config.storage.uri,
    );
    const manifest = await manifests.setState(input.pipelineId, input.state);
    if (input.state !== 'completed' || !manifest) return null;
    return promoteRun(manifests, input.config, manifest);
  }

  async function applyRetention(input: {
    config: PipelineConfig;
    pipelineId: string;
    stageIndex: number;
  }): Promise<string[]> {
    const { config } = input;
    const stage = config.stages[input.stageIndex];
    const keepLast = stage.checkpoint.keep_last;
    const checkpoints = new CheckpointStore(new ObjectStore(storageEndpoint(config)));
    return checkpoints.applyRetention(
      stagePrefix(config.storage.uri, input.pipelineId, stage.name),
      keepLast,
    );
  }

  return { preparePipeline, recordStage, finishPipeline, applyRetention };
}
