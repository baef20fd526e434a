// Group advantages (GRPO) and the optional scaling of them by group difficulty or rollout entropy
// (`algorithm.advantage_scaling`: none | difficulty | entropy). Pure functions over one batch of groups.
//
// The scalings are relative to the batch, so the batch's overall advantage scale stays near 1:
//   difficulty  s_g = (1 − p_g) / (1 − p̄): groups harder than the batch's average (lower in-group pass rate
//               p_g) are amplified, easier ones damped.
//   entropy     s_g = H_g / H̄ with H_g the group's mean token entropy: high-exploration groups amplified,
//               low-exploration (confident) ones damped, as KAT-Dev's difficulty-aware policy optimisation
//               describes (its exact formula is not public; this is the simplest form of that idea).
// Every scale is clipped to [minScale, maxScale]. `none` returns the advantages unchanged (plain GRPO).
import type { StageConfig } from '../config/schema';
import { UserError } from '../errors';

/** `algorithm.advantage_scaling` of the resolved stage config. */
export type AdvantageScaling = NonNullable<StageConfig['algorithm']>['advantage_scaling'];

export interface Group {
  /** Rewards of the group's rollouts. */
  rewards: readonly number[];
  /** Mean token entropy of the group's generated tokens (needed by `entropy`). */
  entropy?: number;
}

export interface ScalingOptions {
  minScale?: number;
  maxScale?: number;
}

/** GRPO: reward minus the group mean, divided by the group's standard deviation when `normalizeStd`. */
export function groupAdvantages(rewards: readonly number[], normalizeStd = true, eps = 1e-6): number[] {
  if (rewards.length === 0) return [];
  const mean = rewards.reduce((a, r) => a + r, 0) / rewards.length;
  const centred = rewards.map((r) => r - mean);
  if (!normalizeStd) return centred;
  const std = Math.sqrt(centred.reduce((a, c) => a + c * c, 0) / rewards.length);
  return centred.map((c) => c / (std + eps));
}

/** Per-group scale factors for a batch (all 1 for `none`). */
export function advantageScales(
  groups: readonly Group[],
  mode: AdvantageScaling,
  { minScale = 0.5, maxScale = 2 }: ScalingOptions = {},
): number[] {
  if (!(minScale > 0 && minScale <= 1 && maxScale >= 1))
    throw new UserError('advantage scaling: expected 0 < minScale ≤ 1 ≤ maxScale');
  const clip = (s: number) => Math.min(maxScale, Math.max(minScale, s));
  if (mode === 'none' || groups.length === 0) return groups.map(() => 1);
  if (mode === 'difficulty') {
    const rates = groups.map(
      (g) => g.rewards.reduce((a, r) => a + Math.min(1, Math.max(0, r)), 0) / g.rewards.length,
    );
    const meanFail = 1 - rates.reduce((a, p) => a + p, 0) / rates.length;
    if (meanFail <= 0) return groups.map(() => 1);
    return rates.map((p) => clip((1 - p) / meanFail));
  }
  if (mode === 'entropy') {
    const hs = groups.map((g, i) => {
      if (g.entropy === undefined || !Number.isFinite(g.entropy) || g.entropy < 0)
        throw new UserError(`advantage scaling entropy: group ${i} has no valid mean token entropy`);
      return g.entropy;
    });
    const mean = hs.reduce((a, h) => a + h, 0) / hs.length;
    if (mean <= 0) return groups.map(() => 1);
    return hs.map((h) => clip(h / mean));
  }
  throw new UserError(
    `algorithm.advantage_scaling: expected none | difficulty | entropy, got ${JSON.stringify(mode)}`,
  );
}

/** Each group's GRPO advantages times its scale. */
export function scaledAdvantages(
  groups: readonly Group[],
  mode: AdvantageScaling,
  normalizeStd = true,
  options: ScalingOptions = {},
): number[][] {
  const scales = advantageScales(groups, mode, options);
  return groups.map((g, i) => groupAdvantages(g.rewards, normalizeStd).map((a) => a * scales[i]));
}
