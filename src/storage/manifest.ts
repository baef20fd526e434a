// The pipeline manifest, `<storage.uri>/<pipeline id>/manifest.json`: the durable record of what a pipeline has
// finished — each completed stage's output checkpoint and the hash of the stage block that produced it, plus the
// whole config — which `resume` reads to skip completed stages and to refuse silent changes to them.
// Beside it, `<storage.uri>/_latest/<pipeline name>.json` points at the newest successful run of a pipeline
// name, and `<storage.uri>/_promoted/<pipeline name>.json` at its promoted run (src/pipeline/promotion.ts), whose
// final checkpoint another pipeline (a scheduled retrain) takes as init.
import { joinUri, ObjectStore } from './s3';

export interface ManifestStage {
  index: number;
  kind: string;
  output_checkpoint: string;
  final_step: number;
  metrics: Record<string, number>;
  stage_hash: string;
  completed_at: string;
  run_id: string;
}

export interface PipelineManifest {
  format: 1;
  pipeline_id: string;
  name: string;
  config_hash: string;
  config: unknown;
  state: 'running' | 'completed' | 'failed' | 'cancelled';
  created_at: string;
  updated_at: string;
  stages: Record<string, ManifestStage>;
  /** Whether the completed run was promoted, and why (absent before the run completes). */
  promotion?: PromotionDecision;
}

export interface PromotionDecision {
  promoted: boolean;
  reason: string;
  /** the promotion rule's metric in this run, and in the run promoted before it */
  value?: number;
  previous?: number;
}

export interface LatestRun {
  pipeline_id: string;
  completed_at: string;
  final_checkpoint: string;
  stages: Record<string, string>;
}

/** A promoted run: what `from_pipeline` takes, with the metric it was promoted on (none without a rule). */
export interface PromotedRun extends LatestRun {
  run_id: string;
  promoted_at: string;
  metric: { stage: string; name: string; value: number } | null;
}

/**
 * A completed manifest's run: its last stage's output is the final checkpoint — of the stages that pass weights
 * on: a curate stage's output is a tasks file (stages/curate.py), and the weights flow past it.
 */
export function runOf(manifest: PipelineManifest): LatestRun | undefined {
  const stages = Object.entries(manifest.stages).sort(([, a], [, b]) => a.index - b.index);
  const last = stages.filter(([, s]) => s.kind !== 'curate').at(-1);
  if (!last) return undefined;
  return {
    pipeline_id: manifest.pipeline_id,
    completed_at: manifest.updated_at,
    final_checkpoint: last[1].output_checkpoint,
    stages: Object.fromEntries(stages.map(([n, s]) => [n, s.output_checkpoint])),
  };
}

export function pipelinePrefix(storageUri: string, pipelineId: string): string {
  return joinUri(storageUri, pipelineId);
}

export function stagePrefix(storageUri: string, pipelineId: string, stage: string): string {
  return joinUri(storageUri, pipelineId, stage);
}

export function manifestUri(storageUri: string, pipelineId: string): string {
  return joinUri(storageUri, pipelineId, 'manifest.json');
}

export function latestRunUri(storageUri: string, pipelineName: string): string {
  return joinUri(storageUri, '_latest', `${pipelineName}.json`);
}

export function promotedRunUri(storageUri: string, pipelineName: string): string {
  return joinUri(storageUri, '_promoted', `${pipelineName}.json`);
}

export class ManifestStore {
  constructor(
    readonly store: ObjectStore,
    readonly storageUri: string,
  ) {}

  read(pipelineId: string): Promise<PipelineManifest | undefined> {
    return this.store.getJson<PipelineManifest>(manifestUri(this.storageUri, pipelineId));
  }

  async write(manifest: PipelineManifest): Promise<void> {
    await this.store.putJson(manifestUri(this.storageUri, manifest.pipeline_id), manifest);
  }

  /** Creates the manifest on first use, or refreshes its config and state on a resume; keeps completed stages. */
  async open(init: {
    pipelineId: string;
    name: string;
    configHash: string;
    config: unknown;
  }): Promise<PipelineManifest> {
    const now = new Date().toISOString();
    const existing = await this.read(init.pipelineId);
    const manifest: PipelineManifest = existing
      ? { ...existing, config_hash: init.configHash, config: init.config, state: 'running', updated_at: now }
      : {
          format: 1,
          pipeline_id: init.pipelineId,
          name: init.name,
          config_hash: init.configHash,
          config: init.config,
          state: 'running',
          created_at: now,
          updated_at: now,
          stages: {},
        };
    await this.write(manifest);
    return manifest;
  }

  async recordStage(pipelineId: string, name: string, stage: ManifestStage): Promise<PipelineManifest> {
    const manifest = await this.read(pipelineId);
    if (!manifest) throw new Error(`no manifest for pipeline ${pipelineId} under ${this.storageUri}`);
    manifest.stages[name] = stage;
    manifest.updated_at = new Date().toISOString();
    await this.write(manifest);
    return manifest;
  }

  async setState(
    pipelineId: string,
    state: PipelineManifest['state'],
  ): Promise<PipelineManifest | undefined> {
    const manifest = await this.read(pipelineId);
    if (!manifest) return undefined;
    manifest.state = state;
    manifest.updated_at = new Date().toISOString();
    await this.write(manifest);
    const latest = state === 'completed' ? runOf(manifest) : undefined;
    if (latest) await this.store.putJson(latestRunUri(this.storageUri, manifest.name), latest);
    return manifest;
  }

  readLatestRun(pipelineName: string): Promise<LatestRun | undefined> {
    return this.store.getJson<LatestRun>(latestRunUri(this.storageUri, pipelineName));
  }

  readPromotedRun(pipelineName: string): Promise<PromotedRun | undefined> {
    return this.store.getJson<PromotedRun>(promotedRunUri(this.storageUri, pipelineName));
  }

  async writePromotedRun(pipelineName: string, run: PromotedRun): Promise<void> {
    await this.store.putJson(promotedRunUri(this.storageUri, pipelineName), run);
  }
}
