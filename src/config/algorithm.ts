// The RL objective's presets (`algorithm.name`): the one definition of what each name means. A stage's
// `algorithm` block names a preset and may override any of its fields; the resolved block (every field
// explicit) is what `trainflow validate` prints and what the trainer reads, so the trainer holds no defaults.
//
//   grpo           DeepSeekMath (Shao et al. 2024): mean of per-sequence token means, symmetric clip ε = 0.2,
//                  std-normalised group advantages. DeepSeekMath also used a KL penalty (β = 0.04); most
//                  recent GRPO recipes drop it, and so does this preset (set kl_coef to use it).
//   dapo           DAPO (Yu et al. 2025): token-mean over the whole batch, clip-higher (ε_low 0.2, ε_high
//                  0.28), no KL, dynamic sampling (groups whose rewards are all equal are dropped: the
//                  `sampling.filter_all_equal` filter, on by default for every stage).
//   ppo            PPO-clip on group advantages: token-mean, symmetric clip 0.2.
//   decoupled-ppo  AReaL (Fu et al. 2025): DAPO's token-mean and clip-higher with the decoupled objective for
//                  asynchronous RL — the clip is centred on a proximal policy (the policy before this batch's
//                  first optimizer step), the behaviour policy enters only through the importance weight
//                  π_prox/μ, truncated at behav_weight_cap; the batch is split into 4 minibatches (one optimizer
//                  step each) so that the proximal policy differs from the current one and the clip is live.
import { z } from 'zod';

export const ALGORITHMS = ['grpo', 'dapo', 'ppo', 'decoupled-ppo'] as const;
export type AlgorithmName = (typeof ALGORITHMS)[number];

/** Every field a preset fixes; a stage may override each. */
export interface AlgorithmFields {
  clip_low: number;
  clip_high: number;
  loss_agg: 'token-mean' | 'seq-mean';
  kl_coef: number;
  entropy_coef: number;
  normalize_std: boolean;
  advantage_scaling: 'none' | 'difficulty' | 'entropy';
  decoupled: boolean;
  behav_weight_cap: number | null;
  minibatches: number;
}

const COMMON = {
  kl_coef: 0,
  entropy_coef: 0,
  normalize_std: true,
  advantage_scaling: 'none',
  decoupled: false,
  behav_weight_cap: null,
  minibatches: 1,
} as const;

export const ALGORITHM_PRESETS: Record<AlgorithmName, AlgorithmFields> = {
  grpo: { ...COMMON, loss_agg: 'seq-mean', clip_low: 0.2, clip_high: 0.2 },
  dapo: { ...COMMON, loss_agg: 'token-mean', clip_low: 0.2, clip_high: 0.28 },
  ppo: { ...COMMON, loss_agg: 'token-mean', clip_low: 0.2, clip_high: 0.2 },
  'decoupled-ppo': {
    ...COMMON,
    loss_agg: 'token-mean',
    clip_low: 0.2,
    clip_high: 0.28,
    decoupled: true,
    behav_weight_cap: 5,
    minibatches: 4,
  },
};

const positive = () =>
  z.number({ error: 'expected a positive number' }).positive({ error: 'expected a positive number' });
const nonNegative = () =>
  z.number({ error: 'expected a number ≥ 0' }).nonnegative({ error: 'expected a number ≥ 0' });
const preset = '; default: the preset’s';

// The block's fields: a preset name and optional overrides.
const algorithmFields = z.strictObject({
  name: z
    .enum(ALGORITHMS, { error: `expected ${ALGORITHMS.join(' | ')}` })
    .default('grpo')
    .describe(
      'Objective preset: grpo (seq-mean, clip 0.2/0.2), dapo (token-mean, clip-higher 0.2/0.28), ppo (token-mean, clip 0.2/0.2), decoupled-ppo (AReaL: dapo + decoupled clip, behav_weight_cap 5, 4 minibatches). Every other field overrides the preset.',
    ),
  clip_low: positive().optional().describe(`Lower clip ε of the ratio${preset}.`),
  clip_high: positive()
    .optional()
    .describe(`Upper clip ε of the ratio (clip-higher when above clip_low)${preset}.`),
  loss_agg: z
    .enum(['token-mean', 'seq-mean'], { error: 'expected token-mean or seq-mean' })
    .optional()
    .describe(`Loss aggregation: mean over all tokens, or mean of per-sequence means${preset}.`),
  kl_coef: nonNegative()
    .optional()
    .describe(`Coefficient of the k3 KL penalty to the reference policy (see kl_reference)${preset}.`),
  kl_reference: z
    .string({ error: 'expected a checkpoint location' })
    .min(1, { error: 'must not be empty' })
    .optional()
    .describe(
      "Checkpoint the KL is measured against; default the stage's input checkpoint (or its initial weights). Fixed for the stage: a resumed attempt reloads it and checks its weights hash.",
    ),
  entropy_coef: nonNegative().optional().describe(`Coefficient of the entropy bonus${preset}.`),
  advantage_scaling: z
    .enum(['none', 'difficulty', 'entropy'], { error: 'expected none | difficulty | entropy' })
    .optional()
    .describe(`Per-group advantage scale relative to the batch${preset}.`),
  normalize_std: z
    .boolean()
    .optional()
    .describe(`Divide group-centred rewards by the group's standard deviation${preset}.`),
  decoupled: z
    .boolean()
    .optional()
    .describe(
      `Decoupled PPO (AReaL): clip π_θ/π_prox, weight by π_prox/π_behaviour; coupled clips π_θ/π_behaviour${preset}.`,
    ),
  behav_weight_cap: positive()
    .nullable()
    .optional()
    .describe(`Decoupled: truncate the weight π_prox/π_behaviour at this value (null: no cap)${preset}.`),
  minibatches: z
    .number({ error: 'expected a positive integer' })
    .int({ error: 'expected a positive integer' })
    .positive({ error: 'expected a positive integer' })
    .optional()
    .describe(
      `Optimizer steps per batch (the batch split into this many minibatches); above 1 the PPO clip acts within a batch${preset}.`,
    ),
});

/** The resolved block (every field explicit but kl_reference): what the job spec carries. Not for parsing. */
export const resolvedAlgorithmSchema = algorithmFields.required({
  clip_low: true,
  clip_high: true,
  loss_agg: true,
  kl_coef: true,
  entropy_coef: true,
  advantage_scaling: true,
  normalize_std: true,
  decoupled: true,
  behav_weight_cap: true,
  minibatches: true,
});

/** The `algorithm` block: a preset name and optional overrides, resolved to every field explicit. */
export const algorithmSchema = algorithmFields
  .superRefine((a, ctx) => {
    // every field changes the objective or is rejected: these two only act with another one on
    const decoupled = a.decoupled ?? ALGORITHM_PRESETS[a.name].decoupled;
    if (!decoupled && a.behav_weight_cap != null)
      ctx.addIssue({
        code: 'custom',
        path: ['behav_weight_cap'],
        input: a.behav_weight_cap,
        message: 'applies to decoupled PPO only: set decoupled: true (or name: decoupled-ppo), or remove it',
      });
    const kl = a.kl_coef ?? ALGORITHM_PRESETS[a.name].kl_coef;
    if (kl === 0 && a.kl_reference !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['kl_reference'],
        input: a.kl_reference,
        message: 'has no effect with kl_coef 0: set kl_coef > 0, or remove it',
      });
  })
  .transform((a) => {
    const base = ALGORITHM_PRESETS[a.name];
    const pick = <K extends keyof AlgorithmFields>(k: K): AlgorithmFields[K] =>
      (a[k] === undefined ? base[k] : a[k]) as AlgorithmFields[K];
    const fields = Object.fromEntries(
      (Object.keys(base) as (keyof AlgorithmFields)[]).map((k) => [k, pick(k)]),
    ) as unknown as AlgorithmFields;
    return {
      name: a.name,
      ...fields,
      ...(a.kl_reference === undefined ? {} : { kl_reference: a.kl_reference }),
    };
  });

export type AlgorithmConfig = z.output<typeof algorithmSchema>;
