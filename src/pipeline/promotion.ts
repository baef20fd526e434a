// Promotion: whether a completed run's final checkpoint becomes the one `model.init: {from_pipeline: NAME}`
// takes. Without a `promotion` block every completed run is promoted (the latest success, as before promotion
// existed); with one, only a run whose eval metric is at least the promoted run's plus `min_improvement`, so a
// recurring retrain never ships a regression. The record is `<storage.uri>/_promoted/<name>.json`.
import type { PipelineConfig } from '../config/schema';
import {
  runOf,
  type ManifestStore,
  type PipelineManifest,
  type PromotedRun,
  type PromotionDecision,
} from '../storage/manifest';

type PromotionRule = NonNullable<PipelineConfig['promotion']>;

/** The decision alone (no I/O): this run's stages' metrics against the promoted run's record. */
export function decidePromotion(
  rule: PromotionRule | undefined,
  stages: PipelineManifest['stages'],
  previous: PromotedRun | undefined,
): PromotionDecision {
  if (!rule) return { promoted: true, reason: 'no promotion rule: every successful run is promoted' };
  const value = stages[rule.stage]?.metrics[rule.metric];
  const what = `${rule.stage}.${rule.metric}`;
  if (typeof value !== 'number' || !Number.isFinite(value))
    return { promoted: false, reason: `${what} was not reported` };
  const before = previous?.metric;
  if (!previous) return { promoted: true, reason: `first promoted run (${what} = ${value})`, value };
  if (!before || before.stage !== rule.stage || before.name !== rule.metric) {
    return {
      promoted: true,
      reason: `the promoted run ${previous.pipeline_id} has no ${what} to compare with`,
      value,
    };
  }
  const promoted = value - before.value >= rule.min_improvement;
  const reason = `${what} = ${value} ${promoted ? '≥' : '<'} ${before.value} (run ${previous.pipeline_id}) + min_improvement ${rule.min_improvement}`;
  return { promoted, reason, value, previous: before.value };
}

/** Decides on a completed run, writes the promoted pointer when it wins, records the decision in its manifest. */
export async function promoteRun(
  manifests: ManifestStore,
  config: PipelineConfig,
  manifest: PipelineManifest,
): Promise<PromotionDecision> {
  const run = runOf(manifest);
  if (!run) return { promoted: false, reason: 'the run has no completed stage' };
  const rule = config.promotion;
  const previous = await manifests.readPromotedRun(manifest.name);
  const decision = decidePromotion(rule, manifest.stages, previous);
  if (decision.promoted) {
    await manifests.writePromotedRun(manifest.name, {
      ...run,
      // the Temporal run that finished the last stage (a resumed pipeline's earlier stages may be older)
      run_id:
        Object.values(manifest.stages)
          .sort((a, b) => a.index - b.index)
          .at(-1)?.run_id ?? '',
      promoted_at: new Date().toISOString(),
      metric:
        rule && decision.value !== undefined
          ? { stage: rule.stage, name: rule.metric, value: decision.value }
          : null,
    });
  }
  await manifests.write({ ...manifest, promotion: decision });
  return decision;
}
